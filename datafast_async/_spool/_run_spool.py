"""The client's side of the durable spool (``spool_path``): which request is on disk, and when.

``Journal`` writes and reads the files; ``RunSpool`` decides what goes there, for one run of a
client, for requests of every kind alike (each journaled with its endpoint's path, by which it
is rebuilt when read back: ``Kind.rebuild``):

- every goal accepted into memory is handed to the journal's writer thread (``accept``: a
  deque append on ``track``'s path; the thread encodes the body, the bytes the sender sends,
  and journals it within about 0.1 s);
- a goal beyond ``max_queue_size`` (or behind goals already waiting on disk) goes to disk only
  (``spill``); so does a goal parked while the API is down or refuses every request (``park``);
  ``read_back`` brings them back, oldest first, as the queue drains;
- a settled goal is acknowledged (``settled``); a goal settled before its turn to be journaled
  is never written; one kept at the shutdown deadline stays journaled (``keep``).

``_fate.Fate`` calls ``settled``, ``park`` and ``keep``: the spool never settles a request itself.

A ``Delivery``'s ``_spool`` slot says where the goal is in this: ``None`` (in memory, waiting
for the writer), ``SPILL`` (to be journaled as held on disk only), ``SKIP`` (settled before it
was written), ``MEMORY`` (it could not be journaled: memory only), or its journal id.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .._delivery import Delivery, pending
from .._kinds import KINDS, counted, for_path
from .._reporting import logger
from ._journal import Append, Journal
from ._records import Record

__all__ = ["MEMORY", "SKIP", "SPILL", "RunSpool", "kind_index", "record_cost"]

SPILL = object()
SKIP = object()
MEMORY = object()
# A journaled record's size as track() guesses it (the journal counts exactly when it writes):
# goals go to disk only while the journal has room for them.
_RECORD_GUESS = 400
# What a request's record takes in the journal besides its body (the line's id, path, time
# and framing, and the room reserved for its acknowledgement: about 140 bytes), rounded up:
# requests accepted before the run starts are kept for the spool while it would take them.
_RECORD_OVERHEAD = 200
# Seconds before reading back again when goals counted on disk could not be read (a record
# that a full disk keeps from being written).
_STALLED_RETRY = 1.0
# Seconds past its own bound the journal's close is waited for.
_CLOSE_GRACE = 0.25
# The writer is woken early each time this many goals (a power of two) wait for it.
_WAKE_MASK = 1023


class RunSpool:
    """The durable spool of one run of a client, bound to its loop.

    ``targets``: each kind's endpoint path with its query, by ``Kind.index`` (what a record
    says it was sent to); ``on_refill``: requests back from disk join the queue;
    ``on_damaged(index, count)``: records of a kind that are not valid requests.
    """

    def __init__(
        self,
        journal: Journal,
        targets: Sequence[str],
        loop: asyncio.AbstractEventLoop,
        *,
        on_refill: Callable[[list[Delivery[Any]]], None],
        on_damaged: Callable[[int, int], None],
    ) -> None:
        self.journal = journal
        self._targets = targets
        self._loop = loop
        self._on_refill = on_refill
        self._on_damaged = on_damaged
        self._intake: deque[Delivery[Any]] = deque()
        # Guards a goal's ``_spool`` slot between the loop and the writer thread.
        self._lock = threading.Lock()
        #: Goals on disk only whose ``Delivery`` the app may still hold (weakly).
        self._held: weakref.WeakValueDictionary[str, Delivery[Any]] = weakref.WeakValueDictionary()
        #: The journal is open (its files taken over): goals may go to disk only.
        self.opened = False
        #: Nothing goes to the journal any more (it could not be opened, or it is closed).
        self.off = False
        self.reading = False
        #: The sender has stopped: goals read back from now on stay pending in the journal
        #: (kept for the next start), not in the queue.
        self.halted = False
        self._open_task: asyncio.Task[None] | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        journal.before_step = self._drain

    def __repr__(self) -> str:
        return f"<RunSpool {self.journal.directory!r} opened={self.opened} off={self.off}>"

    # -- opening ----------------------------------------------------------------------------

    def open(self, on_adopted: Callable[[list[int]], None]) -> None:
        """Open the journal in a thread (it takes over the files an earlier run left);
        ``on_adopted(counts)`` (how many of each kind, by index) then runs in the loop."""
        self._open_task = self._loop.create_task(self._open(on_adopted), name="datafast-spool")

    async def _open(self, on_adopted: Callable[[list[int]], None]) -> None:
        try:
            adoption = await anyio.to_thread.run_sync(self.journal.open)
        except Exception:
            logger.exception("the spool could not be opened: goals are kept in memory only")
            self._turn_off()
            return
        if not self.journal.journaling:
            self._turn_off()  # the journal said why (one ERROR)
            return
        self.opened = True
        counts = [0] * len(KINDS)
        for record in adoption.records:
            counts[kind_index(record.path)] += 1
        adoption.records = []  # read back from the files as the queue drains, not kept here
        if sum(counts):
            logger.warning(
                "%s not yet delivered by an earlier run were found in the spool at %s: "
                "they are sent first",
                ", ".join(f"{n} {k.plural}" for k, n in zip(KINDS, counts, strict=True) if n),
                self.journal.directory,
            )
        on_adopted(counts)

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for the journal to be open."""
        task = self._open_task
        if task is not None and not task.done():
            with anyio.move_on_after(timeout):
                await asyncio.shield(task)

    def _turn_off(self) -> None:
        back: list[Delivery[Any]] = []
        with self._lock:
            self.off = True  # under the lock: a spill() in another thread sees it (spill)
            waiting = list(self._intake)
            self._intake.clear()
            for delivery in waiting:
                if delivery._spool is SPILL:
                    back.append(delivery)  # accepted onto disk while it was opening
                if delivery._spool is None or delivery._spool is SPILL:
                    delivery._spool = MEMORY
        if back:
            # The spool cannot take them after all: they go to memory, past the queue's bound.
            self._on_refill(back)

    # -- intake (any thread) ----------------------------------------------------------------

    def accept(self, delivery: Delivery[Any]) -> None:
        """A goal accepted into memory: the writer journals it within about 0.1 s."""
        if not self.off:
            self._intake.append(delivery)

    def can_spill(self) -> bool:
        """Whether a goal may go to disk only now (the journal is open, or opening, writes,
        and has room)."""
        if self.off:
            return False
        if not self.opened:
            # Still opening (a lazy start: the first goals come before the files are taken
            # over): the writer journals them once it is open.
            return len(self._intake) * _RECORD_GUESS < self.journal.max_bytes
        journal = self.journal
        return (
            journal.journaling
            and journal.size + (len(self._intake) + 1) * _RECORD_GUESS <= journal.max_bytes
        )

    def spill(self, delivery: Delivery[Any]) -> None:
        """A goal accepted onto disk only (``can_spill`` said yes). From any thread: if the
        spool was turned off meanwhile, the goal goes to memory instead (past the bound)."""
        intake = self._intake
        with self._lock:
            if not self.off:
                delivery._spool = SPILL
                intake.append(delivery)
                stranded = False
            else:
                stranded = True
        if stranded:
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                self._loop.call_soon_threadsafe(self._on_refill, [delivery])
            return
        if len(intake) & _WAKE_MASK == 0:
            # Goals bound for disk wait here as whole objects until the writer's step: a
            # burst wakes it early, so that they do not pile up in memory.
            self.journal.wake()

    # -- the writer's thread ----------------------------------------------------------------

    def _drain(self) -> None:
        """Journal the goals accepted since the last step (in the writer's thread)."""
        intake, journal, targets, lock = self._intake, self.journal, self._targets, self._lock
        handed_back: list[Delivery[Any]] = []
        while True:
            try:
                delivery = intake.popleft()
            except IndexError:
                break
            body = delivery._body()  # the sender's bytes, if it encoded them first
            with lock:
                mark = delivery._spool
                if mark is not None and mark is not SPILL:
                    continue  # settled before its turn (SKIP), or journaled already
                spilled = mark is SPILL
                goal_id = journal.new_id(spilled=spilled)
                done = journal.append(goal_id, targets[delivery._kind.index], body)
                if done is Append.JOURNALED:
                    delivery._wire = body
                    delivery._spool = goal_id
                    if spilled:
                        self._held[goal_id] = delivery
                else:
                    delivery._spool = MEMORY
                    if spilled:
                        handed_back.append(delivery)
        if handed_back and not self._loop.is_closed():
            # Accepted onto disk, but the journal could not take them after all (a write
            # failed, or it filled up): they go to memory, past the queue's bound.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_refill, handed_back)

    # -- settling and parking (the loop) ----------------------------------------------------

    def settled(self, delivery: Delivery[Any], outcome: str) -> None:
        """A goal delivered (``"delivered"``) or finally failed (``"failed"``)."""
        mark = delivery._spool
        if type(mark) is str:  # journaled: only the loop changes it from now on
            self.journal.ack(mark, outcome)
            return
        with self._lock:
            mark = delivery._spool
            if mark is None:
                delivery._spool = SKIP  # not written yet: it never will be
            elif type(mark) is str:
                self.journal.ack(mark, outcome)

    def park(self, delivery: Delivery[Any]) -> bool:
        """Move a goal from memory to disk only, to be read back later (behind the goals
        already there); ``False`` if it cannot be (the spool is off, failing or full)."""
        if self.off or not self.opened:
            return False
        with self._lock:
            mark = delivery._spool
            if mark is None:
                delivery._spool = SPILL  # the writer has not reached it: it journals it so
                return True
            if type(mark) is not str:
                return False
            journal = self.journal
            if not journal.journaling:
                return False
            body = delivery._body()
            goal_id = journal.new_id(spilled=True)
            target = self._targets[delivery._kind.index]
            if journal.append(goal_id, target, body) is not Append.JOURNALED:
                return False
            journal.ack(mark, "parked")  # written after the new record (newest file first)
            delivery._wire = body
            delivery._spool = goal_id
            self._held[goal_id] = delivery
            return True

    def keep(self, delivery: Delivery[Any]) -> bool:
        """At the shutdown deadline: whether the goal stays journaled for the next start."""
        with self._lock:
            mark = delivery._spool
            if mark is None:
                # Not journaled yet: journal it now rather than trust the writer to as it
                # closes (a full spool would refuse it there, and it would be lost while
                # counted as kept).
                journal = self.journal
                if self.off or not journal.journaling:
                    return False
                body = delivery._body()
                goal_id = journal.new_id()
                target = self._targets[delivery._kind.index]
                if journal.append(goal_id, target, body) is not Append.JOURNALED:
                    return False
                delivery._wire = body
                delivery._spool = goal_id
                return True
            if mark is SPILL:
                return not self.off and self.journal.journaling  # the writer journals it
            # Journaled, but while writes fail (a full disk) its record may still be in the
            # journal's buffer, not on disk: never claim it kept then. It fails, reported; if
            # its record did reach the disk, the next start sends it again (a resend).
            return type(mark) is str and self.journal.journaling

    # -- reading back (the loop) ------------------------------------------------------------

    def read_back(self, limit: int, on_done: Callable[[int], None]) -> None:
        """Read up to ``limit`` goals back from disk into the queue (``on_refill``), in a
        thread; then ``on_done(count)`` in the loop. One read at a time."""
        if self.reading or self.off or self.halted or not self.opened:
            return
        self.reading = True
        # Owned here (one read at a time): closing the spool waits for it, or ends it.
        self._read_task = self._loop.create_task(
            self._read(limit, on_done), name="datafast-spool-read"
        )

    async def _read(self, limit: int, on_done: Callable[[int], None]) -> None:
        count = 0
        try:
            records = await anyio.to_thread.run_sync(self.journal.read_back, limit)
            count = len(records)
            if not self.halted:
                self._bring_back(records)
        except Exception:
            logger.exception("reading goals back from the spool failed; trying again in 1 s")
            count = 0
        finally:
            self.reading = False
        on_done(count)

    def _bring_back(self, records: list[Record]) -> None:
        back: list[Delivery[Any]] = []
        damaged = [0] * len(KINDS)
        for record in records:
            with self._lock:
                delivery = self._held.pop(record.id, None)
            if delivery is None or delivery.done():
                delivery = _rebuilt(record)
                if delivery is None:
                    damaged[kind_index(record.path)] += 1
                    self.journal.ack(record.id, "damaged")
                    continue
            delivery._wire = record.body
            delivery._spool = record.id
            back.append(delivery)
        if sum(damaged):
            logger.warning(
                "%d requests read back from the spool at %s are not valid requests (edited or "
                "damaged records): they are dropped and counted as failed",
                sum(damaged),
                self.journal.directory,
            )
            for index, count in enumerate(damaged):
                if count:
                    self._on_damaged(index, count)
        if back:
            self._on_refill(back)

    def retry_later(self, again: Callable[[], None]) -> None:
        """Read back again in a second (records counted on disk could not be read yet)."""
        if self._stall_timer is None:

            def fire() -> None:
                self._stall_timer = None
                again()

            self._stall_timer = self._loop.call_later(_STALLED_RETRY, fire)

    # -- closing ----------------------------------------------------------------------------

    def take_held(self) -> list[Delivery[Any]]:
        """At the end of the run: the requests on disk only whose ``Delivery`` the app holds
        (``Fate.held_at_end`` settles them)."""
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        return held

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is buffered, fsync, and let go of the files (blocking: a thread), in at
        most about ``timeout`` seconds."""
        with self._lock:
            self.off = True
        return self.journal.close(timeout=timeout)

    def close_at_exit(self, pending: dict[str, int]) -> bool:
        """The process exits with this run not closed: journal what is waiting and close;
        ``True`` (after one WARNING) if the requests pending (per kind) are kept for the next
        start."""
        if self.off or not self.opened:
            return False
        closed = self.close()
        if closed and any(pending.values()):
            logger.warning(
                "the process is exiting with %s pending in a DataFast client that was not "
                "closed: they are kept in the spool at %s; the next start sends them",
                counted(pending),
                self.journal.directory,
            )
        return closed

    async def aclose(self, timeout: float) -> bool:
        """``close`` off the loop, within about ``timeout`` seconds, whatever the disk does:
        the scan at start and a read back still running are waited for only that long, and so
        is the journal's last write and fsync (it says what it could not finish). ``False``
        when it could not close in time (its files stay locked until the process exits)."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        loop = self._loop
        deadline = loop.time() + timeout
        for task in (self._open_task, self._read_task):
            if task is not None and not task.done():
                with anyio.move_on_after(max(0.0, deadline - loop.time())):
                    with contextlib.suppress(Exception):
                        await asyncio.shield(task)
        task = self._open_task
        if task is not None and not task.done():
            logger.error(
                "the spool at %s was still taking over earlier files at the shutdown deadline: "
                "its files stay locked until the process exits; the next start sends them",
                self.journal.directory,
            )
            return False
        left = max(0.0, deadline - loop.time())
        with anyio.move_on_after(left + _CLOSE_GRACE):
            # The journal's own bound is ``left``; a thread still running past it is left to
            # end (abandoned, never waited for: the WARNING above it says what it kept).
            return await anyio.to_thread.run_sync(self.close, left, abandon_on_cancel=True)
        logger.error(
            "the spool at %s did not close within the shutdown deadline: its last records may "
            "not be on disk yet",
            self.journal.directory,
        )
        return False

    def abandon_after_fork(self) -> None:
        """In a forked child: close the inherited journal files without unlocking them."""
        self._lock = threading.Lock()
        self._intake = deque()
        self.off = True
        self.journal.abandon_after_fork()


def record_cost(delivery: Delivery[Any]) -> int:
    """What a request's record would take in the journal (its bytes and its
    acknowledgement's reservation), estimated from its body: a little more, never less."""
    return len(delivery._body()) + _RECORD_OVERHEAD


def kind_index(path: str) -> int:
    """The index of the kind a record's path belongs to. A path no kind serves (an edited
    record) counts with the first kind until it is read back and dropped as damaged."""
    kind = for_path(path)
    return 0 if kind is None else kind.index


def _rebuilt(record: Record) -> Delivery[Any] | None:
    """A ``Delivery`` for a request read back from disk whose ``Delivery`` nobody holds (from
    an earlier run, or dropped by the app), rebuilt by the kind its path names; ``None`` if the
    record is not a valid request of that kind."""
    kind = for_path(record.path)
    if kind is None:
        return None
    fields = kind.rebuild(record.body)
    if fields is None:
        return None
    return pending(kind, fields)
