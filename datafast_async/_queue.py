"""The bounded queue of requests, and the ledger that counts every one of them.

``RequestQueue`` only buffers and counts; it does no I/O and knows nothing of HTTP or of kinds
of request (it counts by ``Kind.index``), so it is tested alone. A request enters with
``offer`` (from any thread), leaves the queue with ``take`` (the sender, in the client's loop)
and ends with ``finish`` (``take_all`` takes every queued request at once, to end them). At
every moment, in total and for each kind::

    enqueued == delivered + failed + queued + in_flight + spooled

where ``queued`` is the queue's length, ``in_flight`` the requests taken and not yet finished
(sending or waiting to retry) and ``spooled`` the requests held on disk only by the durable spool
(beyond the bound, parked while the API is down, taken over from an earlier run, kept at the
shutdown deadline). Every change to those numbers happens under one lock, so a snapshot taken
from any thread is consistent.

The bound counts requests waiting to retry together with the queued ones (``park``/``unpark``), so
however long the API is down, at most ``maxsize`` requests wait and at most one per worker is
being sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar

from ._delivery import Delivery
from ._errors import ClientClosedError
from ._kinds import KINDS
from ._models import KindStats, Stats

__all__ = ["RequestQueue"]

_T = TypeVar("_T")


# The ledger's columns per kind (``_kinds``): queued is what the others leave.
_ENQUEUED, _DELIVERED, _FAILED, _DROPPED, _RETRIES, _IN_FLIGHT, _SPOOLED = range(7)


class RequestQueue:
    """A FIFO of ``Delivery`` objects holding at most ``maxsize``, with the run's counters."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[Delivery[Any]] = deque()
        self._lock = threading.Lock()
        # Goals taken and not finished, in the order they were taken, with their take index:
        # the first value is the smallest, which makes flush's check O(1).
        self._active: dict[Delivery[Any], int] = {}
        self._taken = 0
        self._enqueued = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._retries = 0
        self._parked = 0  # taken requests waiting to retry: they count against maxsize
        self._spooled = 0  # requests on disk only (the durable spool)
        #: The same counters per kind, by ``Kind.index`` (columns: _ENQUEUED, ...).
        self._kinds: list[list[int]] = [[0] * 7 for _ in KINDS]
        self._flush_waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    # -- intake (any thread) --------------------------------------------------------------

    def offer(self, delivery: Delivery[Any]) -> bool:
        """Append a request if there is room; ``False`` (and nothing counted) if full.

        Raises:
            ClientClosedError: ``close_intake()`` was called.
        """
        # acquire/release rather than ``with``: this is track_nowait's path, and the context
        # manager protocol costs more than the rest of this method.
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise ClientClosedError(
                    "the DataFast client is closed; call start() to use it again"
                )
            if len(self._items) + self._parked >= self.maxsize:
                return False
            self._items.append(delivery)
            self._enqueued += 1
            self._kinds[delivery._kind.index][_ENQUEUED] += 1
        finally:
            lock.release()
        return True

    def after_fork(self) -> None:
        """In a forked child: a new lock. Another thread of the parent may have held this one
        at the fork (a metrics exporter reading ``stats()``), and nobody would release it."""
        self._lock = threading.Lock()

    def close_intake(self) -> None:
        """Refuse every later ``offer``: the run is closing (set under the lock, so a request
        handed over by another thread is either in before the sender ends what is left, or
        refused)."""
        with self._lock:
            self._closed = True

    def push_front(self, deliveries: Iterable[Delivery[Any]]) -> int:
        """Put requests ahead of everything queued (a replay at start-up), ignoring the bound."""
        items = list(deliveries)
        with self._lock:
            self._items.extendleft(reversed(items))
            self._enqueued += len(items)
            for delivery in items:
                self._kinds[delivery._kind.index][_ENQUEUED] += 1
            # Flush targets count takes: these requests are taken before the ones waited for.
            self._flush_waiters = [(t + len(items), f) for t, f in self._flush_waiters]
        return len(items)

    def spill(self, delivery: Delivery[Any]) -> None:
        """Count a request accepted straight onto disk (the spool holds it, not the queue).

        Raises:
            ClientClosedError: ``close_intake()`` was called.
        """
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise ClientClosedError(
                    "the DataFast client is closed; call start() to use it again"
                )
            self._enqueued += 1
            self._spooled += 1
            counts = self._kinds[delivery._kind.index]
            counts[_ENQUEUED] += 1
            counts[_SPOOLED] += 1
        finally:
            lock.release()

    def adopt(self, counts: list[int]) -> None:
        """Count requests taken over from an earlier run's spool (how many of each kind, by
        its index): accepted, on disk only."""
        with self._lock:
            for index, count in enumerate(counts):
                self._enqueued += count
                self._spooled += count
                self._kinds[index][_ENQUEUED] += count
                self._kinds[index][_SPOOLED] += count

    def refill(self, deliveries: list[Delivery[Any]]) -> None:
        """Goals read back from disk join the queue (behind what is queued), ignoring the
        bound: the reader asks only for the room there is."""
        with self._lock:
            self._items.extend(deliveries)
            self._spooled -= len(deliveries)
            for delivery in deliveries:
                self._kinds[delivery._kind.index][_SPOOLED] -= 1

    def discard(self, index: int, count: int) -> None:
        """Requests of the kind ``index`` counted on disk that will never be sent (damaged
        records, or ones the journal could not keep after all): failed."""
        with self._lock:
            self._spooled -= count
            self._failed += count
            self._kinds[index][_SPOOLED] -= count
            self._kinds[index][_FAILED] += count
            # They were counted in flush targets as requests still to take: they never will be.
            taken = self._taken
            self._flush_waiters = [
                (t - min(count, t - taken) if t > taken else t, f) for t, f in self._flush_waiters
            ]
        if self._flush_waiters:
            self._check_flush()

    def to_disk(self, delivery: Delivery[Any], *, again: bool = True) -> bool:
        """A request taken earlier leaves memory for the spool: parked while the API is down
        (``again``: it will be read back and taken again), or kept at the shutdown deadline.
        ``False`` if it was not active."""
        with self._lock:
            index = self._active.pop(delivery, None)
            if index is None:
                return False
            self._spooled += 1
            counts = self._kinds[delivery._kind.index]
            counts[_IN_FLIGHT] -= 1
            counts[_SPOOLED] += 1
            if again:
                # Flush targets count takes: this request will be taken once more.
                self._flush_waiters = [
                    (t + 1 if t > index else t, f) for t, f in self._flush_waiters
                ]
        return True

    @property
    def spooled(self) -> int:
        return self._spooled

    def items(self) -> list[Delivery[Any]]:
        """The requests queued now (a copy)."""
        with self._lock:
            return list(self._items)

    def record_drop(self, delivery: Delivery[Any]) -> int:
        """Count one request refused at the door; returns the running total."""
        lock = self._lock
        lock.acquire()  # as in offer(): a full queue may refuse every request of a busy app
        try:
            self._dropped += 1
            self._kinds[delivery._kind.index][_DROPPED] += 1
            return self._dropped
        finally:
            lock.release()

    # -- the sender's side (the client's loop) --------------------------------------------

    def take(self) -> Delivery[Any] | None:
        """The oldest queued request, now in flight; ``None`` when the queue is empty."""
        lock = self._lock
        lock.acquire()
        try:
            if not self._items:
                return None
            delivery = self._items.popleft()
            self._active[delivery] = self._taken
            self._taken += 1
            self._kinds[delivery._kind.index][_IN_FLIGHT] += 1
        finally:
            lock.release()
        if self._room_waiters:
            _wake_first(self._room_waiters)
        return delivery

    def take_all(self) -> list[Delivery[Any]]:
        """Every queued request at once, now in flight (to be failed: shutdown, an open circuit)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            for delivery in items:
                self._active[delivery] = self._taken
                self._taken += 1
                self._kinds[delivery._kind.index][_IN_FLIGHT] += 1
        if self._room_waiters:
            self.abandon_room_waiters()
        return items

    def is_active(self, delivery: Delivery[Any]) -> bool:
        """Whether a request is taken and not finished."""
        return delivery in self._active

    @property
    def active(self) -> list[Delivery[Any]]:
        """The requests taken and not finished, oldest first."""
        with self._lock:
            return list(self._active)

    def park(self) -> None:
        """A taken request waits to retry: it counts against the bound until ``unpark``."""
        with self._lock:
            self._parked += 1

    def unpark(self, delivery: Delivery[Any], *, retry: bool) -> None:
        """A request that waited to retry is sent again (``retry``), or ends while waiting."""
        lock = self._lock
        lock.acquire()
        try:
            self._parked -= 1
            if retry:
                self._retries += 1
                self._kinds[delivery._kind.index][_RETRIES] += 1
        finally:
            lock.release()
        if self._room_waiters:
            _wake_first(self._room_waiters)

    def finish(self, delivery: Delivery[Any], delivered: bool) -> bool:
        """Count a request taken earlier as delivered or failed; ``False`` if it was not active."""
        lock = self._lock
        lock.acquire()
        try:
            if self._active.pop(delivery, None) is None:
                return False
            counts = self._kinds[delivery._kind.index]
            counts[_IN_FLIGHT] -= 1
            if delivered:
                self._delivered += 1
                counts[_DELIVERED] += 1
            else:
                self._failed += 1
                counts[_FAILED] += 1
        finally:
            lock.release()
        waiters = self._flush_waiters
        # Targets only grow, so the first waiter's is the smallest: none is due before every
        # request up to it has been taken.
        if waiters and self._taken >= waiters[0][0]:
            self._check_flush()
        return True

    # -- waiting (the client's loop) ------------------------------------------------------

    def flush_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[bool] | None:
        """A future set once every request queued or in flight now has finished (None: already)."""
        with self._lock:
            target = self._taken + len(self._items) + self._spooled
            if self._flushed(target):
                return None
            future: asyncio.Future[bool] = loop.create_future()
            self._flush_waiters.append((target, future))
        return future

    def release_flush_waiters(self, value: bool) -> None:
        """Resolve every flush waiter with ``value`` (``False``: every request still pending is
        parked on disk, and the API is not taking them)."""
        with self._lock:
            waiters, self._flush_waiters = self._flush_waiters, []
        for _, future in waiters:
            _resolve(future, value)

    def discard_flush_waiter(self, future: asyncio.Future[bool]) -> None:
        self._flush_waiters = [(t, f) for t, f in self._flush_waiters if f is not future]

    def room_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future set when a request leaves the queue (for ``on_full="block"``)."""
        future: asyncio.Future[None] = loop.create_future()
        self._room_waiters.append(future)
        return future

    def discard_room_waiter(self, future: asyncio.Future[None]) -> None:
        if future in self._room_waiters:
            self._room_waiters.remove(future)

    def pass_on_room(self) -> None:
        """A ``track`` woken for room that it will not use (cancelled): wake the next one."""
        if self._room_waiters:
            _wake_first(self._room_waiters)

    def abandon_room_waiters(self) -> None:
        """Wake every ``track`` blocked on a full queue (the client is closing)."""
        while self._room_waiters:
            _wake_first(self._room_waiters)

    def _flushed(self, target: int) -> bool:
        if self._taken < target:
            return False
        return not self._active or next(iter(self._active.values())) >= target

    def _check_flush(self) -> None:
        with self._lock:
            ready = [f for t, f in self._flush_waiters if self._flushed(t)]
            if ready:
                self._flush_waiters = [(t, f) for t, f in self._flush_waiters if f not in ready]
        for future in ready:
            _resolve(future, True)

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending(self) -> int:
        """Goals accepted and not finished: queued plus in flight."""
        with self._lock:
            return len(self._items) + len(self._active)

    def spooled_by_kind(self) -> dict[str, int]:
        """Requests held on disk only, per kind (those with none left out)."""
        with self._lock:
            return {
                kind.name: counts[_SPOOLED]
                for kind, counts in zip(KINDS, self._kinds, strict=True)
                if counts[_SPOOLED]
            }

    def pending_by_kind(self) -> dict[str, int]:
        """Requests accepted and not finished (queued, in flight), per kind (by name; those
        with none left out)."""
        with self._lock:
            out = {}
            for kind, counts in zip(KINDS, self._kinds, strict=True):
                enqueued, delivered, failed, _, _, _, spooled = counts
                pending = enqueued - delivered - failed - spooled
                if pending:
                    out[kind.name] = pending
            return out

    def waiting_of(self, index: int) -> int:
        """Requests of the kind at ``index`` waiting in the queue."""
        with self._lock:
            enqueued, delivered, failed, _, _, in_flight, spooled = self._kinds[index]
            return enqueued - delivered - failed - in_flight - spooled

    def snapshot(self, concurrency_limit: int = 0) -> Stats:
        with self._lock:
            by_kind = {
                kind.name: _kind_stats(counts)
                for kind, counts in zip(KINDS, self._kinds, strict=True)
            }
            return Stats(
                by_kind=by_kind,
                concurrency_limit=concurrency_limit,
                enqueued=self._enqueued,
                delivered=self._delivered,
                failed=self._failed,
                dropped=self._dropped,
                retries=self._retries,
                queued=len(self._items),
                in_flight=len(self._active),
                spooled=self._spooled,
            )


def _kind_stats(counts: list[int]) -> KindStats:
    enqueued, delivered, failed, dropped, retries, in_flight, spooled = counts
    return KindStats(
        enqueued=enqueued,
        delivered=delivered,
        failed=failed,
        dropped=dropped,
        retries=retries,
        queued=enqueued - delivered - failed - in_flight - spooled,
        in_flight=in_flight,
        spooled=spooled,
    )


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        future = waiters.popleft()
        if not future.done():
            _resolve(future, None)
            return


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    """Set a waiter's result from any thread; a waiter whose loop has closed is left alone."""
    loop = future.get_loop()
    if future.done() or loop.is_closed():
        return
    if asyncio._get_running_loop() is loop:
        future.set_result(value)
    else:
        loop.call_soon_threadsafe(_set_if_pending, future, value)


def _set_if_pending(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():
        future.set_result(value)
