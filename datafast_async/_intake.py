"""Accepting a request into the client's current run: the bound, ``on_full``, the handover from
other threads, and overflow to the spool.

The client validates a request and builds its ``Delivery``; its hot path (the client's own
loop, no spool, room in the queue) offers it to the queue itself. Everything else comes here:

- with a spool, a request goes into memory and the journal, or (beyond ``max_queue_size``, or
  behind requests already waiting on disk) onto disk only; it is refused only when the spool
  is full (or cannot be written) and the queue is full too;
- from another thread, it is handed over thread-safely and the client's loop is woken;
- before the run starts (no loop yet, from any thread), it waits in the queue; with a spool,
  beyond ``max_queue_size`` it is kept for the spool (counted as on disk, bounded by what
  ``spool_max_bytes`` would take, estimated from its body) and goes to disk when the run
  starts, like any request spilled beyond the bound;
- ``on_full="block"`` waits for room, at most ``timeout`` seconds;
- a refusal goes to ``Fate.refused`` (counted in ``dropped``), then the request is dropped
  (its ``Delivery`` settled with ``QueueFullError``) or the error raised.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from ._delivery import Delivery
from ._errors import ClientClosedError, QueueFullError
from ._options import Options
from ._run import Life, Run, RunState
from ._spool import RunSpool, record_cost

__all__ = ["Intake"]

R = TypeVar("R")
# The running loop of this thread (None outside one), in C.
_get_running_loop = asyncio._get_running_loop


class Intake:
    """The intake policy of one client (its ``Life`` gives the current run)."""

    def __init__(self, options: Options, life: Life) -> None:
        self._life = life
        self._enabled = options.enabled
        self._on_full = options.on_full
        self._timeout = options.timeout
        self._max_queue_size = options.max_queue_size
        #: What the spool takes (``None``: no spool), for requests accepted before start.
        self._spool_max_bytes = options.spool_max_bytes if options.spool_path is not None else None
        # Built once: a full queue may refuse every request of a busy app.
        self._full_message = (
            f"the queue ({options.max_queue_size} requests) and the spool "
            f"({options.spool_max_bytes} bytes) are full, or the spool cannot be written"
            if options.spool_path is not None
            else f"the queue is full ({options.max_queue_size} requests)"
        )

    def accept(self, delivery: Delivery[R]) -> Delivery[R]:
        """Queue a validated request of any kind (``track_nowait``'s path; the client inlines
        it for goals)."""
        if not self._enabled:
            delivery._settle(delivery._kind.disabled())
            return delivery
        run = self._life.run
        if run.intake is _get_running_loop():
            spool = run.spool
            if spool is not None:
                return self.spooled(run, spool, delivery)
            if run.queue.offer(delivery):
                sender = run.sender
                if sender.idle:
                    sender.notify()
                return delivery
            return self.refuse(delivery)
        return self.elsewhere(delivery)

    async def accept_waiting(self, delivery: Delivery[R]) -> Delivery[R]:
        """``track``'s path for any kind: with ``on_full="block"``, wait for room."""
        if self._on_full != "block":
            return self.accept(delivery)
        if not self._enabled:
            delivery._settle(delivery._kind.disabled())
            return delivery
        return await self.blocking(delivery)

    def spooled(self, run: Run, spool: RunSpool, delivery: Delivery[R]) -> Delivery[R]:
        """With a spool, from any thread: into memory and the journal, or onto disk only."""
        if not offer_spooled(run, spool, delivery):
            return self.refuse(delivery)
        sender, loop = run.sender, run.loop
        if loop is _get_running_loop():
            if sender.idle:
                sender.notify()
        else:
            run.wake_from_thread()
        return delivery

    def elsewhere(self, delivery: Delivery[R]) -> Delivery[R]:
        """Off the hot path: start lazily, or hand over from another thread."""
        running = _get_running_loop()
        life = self._life
        while True:
            run = life.run
            # (After a fork the run is a fresh NEW one: Life.current also says so, once.)
            if running is not None and (
                run.state is RunState.NEW or run.orphaned or run.handed_over or run.loop_is_gone()
            ):
                run = life.current(start=False)
            elif run.handed_over:  # journaled for another client: this client goes on afresh
                run = life.renew(run)
            if run.state not in (RunState.NEW, RunState.RUNNING) or (
                run.bound and run.loop.is_closed()
            ):
                if run.handed_over:
                    continue  # handed over since this thread looked: to the fresh run
                raise ClientClosedError(
                    "the DataFast client is closed; call start() to use it again"
                )
            if not run.bound:
                with run.unbound_lock:
                    if run.bound or run.handed_over:
                        continue  # started, or handed over, meanwhile: look again
                    accepted = self._before_start(run, delivery)
                if not accepted:
                    return self.refuse(delivery)
                # Not started yet (no loop): it waits for start(), in the queue or for the
                # spool.
                return delivery
            break
        if run.spool is not None and run.state is RunState.RUNNING:
            return self.spooled(run, run.spool, delivery)
        # offer() raises ClientClosedError once aclose() has stopped intake, under the queue's
        # own lock: a request can never slip into a run that is being closed.
        if not run.queue.offer(delivery):
            return self.refuse(delivery)
        sender, loop = run.sender, run.loop
        if loop is running:
            sender.notify()
        else:
            run.wake_from_thread()
        return delivery

    def _before_start(self, run: Run, delivery: Delivery[Any]) -> bool:
        """A request for a run not started yet (under its ``unbound_lock``): into the queue;
        with a spool, beyond the queue (or behind requests already kept so), kept for the
        spool while their records would fit in ``spool_max_bytes`` (estimated), to go to disk
        once the run starts. ``False``: refused."""
        queue = run.queue
        if self._spool_max_bytes is None:
            return queue.offer(delivery)
        cost = record_cost(delivery)
        fits = run.spool_bytes + cost <= self._spool_max_bytes
        if not queue.spooled and queue.offer(delivery):
            if fits:
                run.spool_bytes += cost  # journaled too, once the run starts
            return True
        if fits and run.for_spool is not None:
            queue.spill(delivery)
            run.for_spool.append(delivery)
            run.spool_bytes += cost
            return True
        return queue.offer(delivery)  # the spool would not take it: memory, as without one

    async def blocking(self, delivery: Delivery[R]) -> Delivery[R]:
        """``on_full="block"``, in the client's loop: wait for room (at most ``timeout``
        seconds). With a spool, a full queue is no reason to wait: the request goes to disk;
        only a spool that is full (or cannot be written) makes it wait."""
        run = self._life.current(start=False)
        spool = run.spool
        if spool is not None:
            if not offer_spooled(run, spool, delivery):
                delivery = await self._wait_for_room(run, delivery)
                spool.accept(delivery)
            run.sender.notify()
            return delivery
        return await self._wait_for_room(run, delivery)

    async def _wait_for_room(self, run: Run, delivery: Delivery[R]) -> Delivery[R]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not run.queue.offer(delivery):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self.refuse(delivery, waited=True)
            room = run.queue.room_waiter(loop)
            try:
                await asyncio.wait((room,), timeout=remaining)
            except BaseException:
                if room.done() and not room.cancelled():
                    run.queue.pass_on_room()  # woken for room it will not use: the next goes
                raise
            finally:
                run.queue.discard_room_waiter(room)
            if run.state is not RunState.RUNNING:
                raise ClientClosedError("the DataFast client was closed while track() waited")
        run.sender.notify()
        return delivery

    def refuse(self, delivery: Delivery[R], *, waited: bool = False) -> Delivery[R]:
        """A request that found the queue (and the spool) full: counted, then dropped (its
        ``Delivery`` settled) or raised, by ``on_full``."""
        if waited:
            message = (
                f"the queue stayed full ({self._max_queue_size} requests) for {self._timeout:g} s"
            )
        else:
            message = self._full_message
        error = QueueFullError(message)
        drop = self._on_full == "drop"
        self._life.run.fate.refused(delivery, error, settle=drop)
        if drop:
            return delivery
        raise error


def offer_spooled(run: Run, spool: RunSpool, delivery: Delivery[Any]) -> bool:
    """Into memory and the journal, or onto disk only; ``False`` if neither has room."""
    queue = run.queue
    if not queue.spooled and queue.offer(delivery):
        spool.accept(delivery)
    elif spool.can_spill():
        queue.spill(delivery)
        spool.spill(delivery)
    elif queue.offer(delivery):  # the spool cannot take it now: memory, as without one
        spool.accept(delivery)
    else:
        return False
    return True
