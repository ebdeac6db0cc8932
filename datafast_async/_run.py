"""One life of a client, from ``start()`` to ``aclose()``, bound to one event loop.

``Run`` holds the life cycle's state (a ``RunState``), the queue, and, once bound to a loop,
all of its parts at once (loop, transport, reporter, sender): code that sees a bound run never
checks for a missing part. It also knows how a life ends: ``aclose()``'s shutdown with one
deadline, a loop that ends without ``aclose()`` (orphaned), and a process forked from the one
that owns it (the child keeps the parent's run untouched and starts afresh).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Protocol

import aiohttp
import anyio

from . import _delivery
from ._durable import Spool
from ._models import Stats
from ._queue import GoalQueue
from ._reporting import DropLog, Reporter, logger
from ._sender import Sender
from ._transport import Transport

__all__ = ["NO_LOOP", "Run", "RunState", "await_uncancellable", "inherit", "watch"]

_CALLBACK_GRACE = 1.0  # seconds async callbacks get after the shutdown deadline
_CLOSE_TRANSPORT_TIMEOUT = 5.0
_ORPHAN_CLOSE_TIMEOUT = 1.0  # seconds to close the session while the loop is ending
NO_LOOP = object()  # a run's intake while it accepts nothing


class RunState(enum.Enum):
    NEW = "new"  # built; goals handed over from another thread wait in its queue
    RUNNING = "running"  # bound to a loop; the sender runs
    CLOSING = "closing"  # aclose() has begun: intake is closed, the sender drains
    CLOSED = "closed"  # ended (aclose() returned, or the loop ended without it)


class Run:
    """One life of a client. It never refers back to the client, so a client dropped without
    ``aclose()`` can be garbage-collected (and warn) while its workers still run."""

    # The parts set by ``bind``, all at once.
    loop: asyncio.AbstractEventLoop
    transport: Transport
    reporter: Reporter
    sender: Sender

    def __init__(self, max_queue_size: int, drops: DropLog, initial_limit: int) -> None:
        self.queue = GoalQueue(max_queue_size)
        self._initial_limit = initial_limit
        self.drops = drops
        self.state = RunState.NEW
        # The run's loop while it accepts goals (else NO_LOOP): the hot path compares it with
        # the running loop, so another thread, or a new loop in this thread, takes the slow
        # path.
        self.intake: object = NO_LOOP
        self.close_task: asyncio.Task[Stats] | None = None
        self.final_stats: Stats | None = None
        self.orphaned = False
        self.warned = False
        #: Whether ``bind`` gave the run its parts (a run closed while NEW never had them).
        self.bound = False
        #: The durable spool (``spool_path``), set by ``bind``.
        self.spool: Spool | None = None

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Transport,
        reporter: Reporter,
        make_sender: Callable[[Run], Sender],
        spool: Spool | None = None,
    ) -> None:
        """Bind the run to ``loop`` with all its parts, and start the sender (and open the
        spool, in a thread)."""
        self.loop = loop
        self.transport = transport
        self.reporter = reporter
        self.spool = spool
        self.sender = make_sender(self)
        self.bound = True
        self.state = RunState.RUNNING
        self.intake = loop
        if spool is not None:
            for delivery in self.queue.items():  # handed over before the run had a loop
                spool.accept(delivery)
            spool.open(self._adopted)
        self.sender.start()

    def _adopted(self, count: int) -> None:
        """The spool is open: ``count`` goals of an earlier run wait on disk, to send first."""
        if self.state is not RunState.RUNNING:
            return
        if count:
            self.queue.adopt(count)
        if self.queue.spooled:
            self.sender.notify()  # goals wait on disk (adopted, or spilled while it opened)

    def stats(self) -> Stats:
        """A snapshot of the run's counters and its in-flight limit."""
        limit = self.sender.limiter.limit if self.bound else self._initial_limit
        return self.queue.snapshot(limit)

    def loop_is_gone(self) -> bool:
        """The loop this run was bound to has ended (closed, or stopped running)."""
        if not self.bound:
            return False
        loop = self.loop
        if loop.is_closed():
            return True
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return current is not loop and not loop.is_running()

    # -- aclose() ---------------------------------------------------------------------------

    def begin_close(self, seconds: float) -> asyncio.Task[Stats]:
        """Stop intake now (before any await) and start the shutdown with one deadline."""
        if self.close_task is None:
            loop = self.loop
            deadline = loop.time() + seconds
            # A worker cancelled in the same step (the loop's teardown cancelling everything
            # at once) sees that aclose() has begun.
            self.state = RunState.CLOSING
            self.intake = NO_LOOP
            self.queue.close_intake()
            self.sender.begin_close(deadline)
            self.close_task = loop.create_task(
                self._shutdown(deadline, seconds), name="datafast-aclose"
            )
        return self.close_task

    async def _shutdown(self, deadline: float, seconds: float) -> Stats:
        loop, sender, reporter, queue = self.loop, self.sender, self.reporter, self.queue
        try:
            queue.abandon_room_waiters()
            drained = queue.flush_waiter(loop)
            if drained is not None:
                try:
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        await asyncio.wait((drained,), timeout=remaining)
                finally:
                    queue.discard_flush_waiter(drained)
            await sender.stop()
            reason = f"goal still undelivered at the shutdown deadline ({seconds:g} s)"
            lost = sender.abandon_all(reason)
            spool = self.spool
            if spool is not None:
                # After the close: its last step journals the goals parked before the writer
                # reached them, and only then are they held (their Delivery settles here).
                try:
                    await spool.aclose()
                finally:
                    spool.settle_held(reason)
            kept = queue.spooled
            if lost and kept:
                logger.warning(
                    "%d goals were still undelivered at the shutdown deadline (%g s): %d are "
                    "kept in the spool at %s for the next start; %d could not be kept and "
                    "failed with ShutdownError (reported to on_failure)",
                    lost + kept,
                    seconds,
                    kept,
                    spool.journal.directory if spool is not None else "",
                    lost,
                )
            elif kept:
                logger.warning(
                    "%d goals were still undelivered at the shutdown deadline (%g s): they "
                    "are kept in the spool at %s; the next start sends them",
                    kept,
                    seconds,
                    spool.journal.directory if spool is not None else "",
                )
            elif lost:
                logger.warning(
                    "%d goals were still undelivered at the shutdown deadline (%g s): they "
                    "failed with ShutdownError (reported to on_failure)",
                    lost,
                    seconds,
                )
            queue.release_flush_waiters(False)
            await reporter.aclose(max(deadline - loop.time(), _CALLBACK_GRACE))
            reporter.failure_log.summarise_all()
            self.drops.at_close(queue.snapshot().dropped)
            try:
                await asyncio.wait_for(self.transport.aclose(), timeout=_CLOSE_TRANSPORT_TIMEOUT)
            except (asyncio.TimeoutError, OSError, aiohttp.ClientError) as exc:
                logger.warning("closing the HTTP session failed: %r", exc)
            self.state = RunState.CLOSED
            self.final_stats = self.stats()
            return self.final_stats
        except asyncio.CancelledError:
            # The loop is ending under aclose() (its teardown cancels every task): what is not
            # delivered fails now, counted and warned about, as when a loop ends without it.
            sender.halt()
            self.orphan()
            raise

    # -- ending without aclose() ------------------------------------------------------------

    def orphan(self) -> None:
        """The run's loop ended without aclose(): count, report and warn about what it held."""
        if self.state is RunState.CLOSED:
            return
        was_bound = self.bound
        self.state = RunState.CLOSED
        self.orphaned = True
        self.intake = NO_LOOP
        self.queue.close_intake()
        pending = self.queue.pending
        if was_bound:
            self.reporter.async_allowed = False
            reason = "the event loop ended before the goal was delivered (no aclose())"
            lost = self.sender.abandon_all(reason)
            spool = self.spool
            if spool is not None:
                # Off the (ending) loop: the files are written, synced and let go; then the
                # goals on disk only settle (the close's last drain may add some).
                def close_spool(spool: Spool = spool) -> None:
                    spool.close()
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        spool.settle_held(reason)

                threading.Thread(target=close_spool, name="datafast-spool-close").start()
                pending = lost
                kept = self.queue.spooled
                if kept:
                    logger.warning(
                        "the event loop of a DataFast client ended before aclose() with %d "
                        "goals pending: they are kept in the spool at %s; the next start "
                        "sends them",
                        kept,
                        spool.journal.directory,
                    )
        self.final_stats = self.stats()
        if pending and not self.warned:
            self.warned = True
            message = (
                f"the event loop of a DataFast client ended before aclose() with {pending} "
                "goals pending; they were not delivered"
            )
            logger.warning("%s", message)
            warnings.warn(message, ResourceWarning, stacklevel=2)

    async def orphan_in_loop(self) -> None:
        """``orphan`` from a worker cancelled as the loop ends: also close the HTTP session."""
        self.orphan()
        if self.bound:
            with contextlib.suppress(asyncio.TimeoutError, OSError, aiohttp.ClientError):
                await asyncio.wait_for(self.transport.aclose(), _ORPHAN_CLOSE_TIMEOUT)


async def await_uncancellable(task: asyncio.Task[Stats]) -> Stats:
    """Wait for ``task`` (which has its own deadline) even while being cancelled; then
    re-raise the cancellation."""
    cancelled: asyncio.CancelledError | None = None
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError as exc:
                if task.done() and task.cancelled():
                    raise
                cancelled = exc
    if cancelled is not None:
        raise cancelled
    return task.result()


# -- processes: fork and exit -----------------------------------------------------------------


class Owner(Protocol):
    """What the process-wide hooks need of a client."""

    def _after_fork(self) -> None: ...

    def _pending_at_exit(self) -> int: ...


_owners: weakref.WeakSet[Owner] = weakref.WeakSet()
# A forked child's copies of its parent's runs: kept, never used, never closed (their queue,
# session and sockets are the parent's), so that collecting them cannot touch the parent's.
_inherited: list[object] = []


def watch(owner: Owner) -> None:
    """Follow ``owner`` across forks and to the process's exit."""
    _owners.add(owner)


def inherit(run: Run) -> None:
    """Keep a parent's run alive in a forked child, untouched."""
    _inherited.append(run)


def _after_fork_in_child() -> None:
    # Locks another thread of the parent may have held at the fork: new ones first.
    _delivery.after_fork()
    for owner in list(_owners):
        owner._after_fork()


def _at_exit() -> None:
    lost = sum(owner._pending_at_exit() for owner in list(_owners))
    if lost:
        logger.warning(
            "the process is exiting with %d goals still pending in DataFast clients that were "
            "not closed: they are lost. Close the client before exit: `async with "
            "DataFast(...)`, `await df.aclose()`, or the datafast_async.starlette lifespan",
            lost,
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
