"""The journal: every accepted request written to disk, acknowledged when it settles.

``Journal`` is owned by one client and used from its event loop: ``append`` and ``ack`` only
put bytes in a buffer (no I/O, no JSON encoding: the body is already bytes) under a lock that
is never held across I/O. A writer thread of the journal's own writes the buffer out about
every ``write_interval`` (0.05 s) and fsyncs about every ``sync_interval`` (1 s). So a process
killed loses at most the goals of the last ~0.1 s, a machine that crashes those of the last
~1 s; a goal settled but not yet acknowledged on disk comes back after a crash (the duplicate
window).

Files (segments) are rotated at ``segment_bytes``. An acknowledgement is written to the file
that holds its goal's record, so each file stands alone: a file whose goals are all
acknowledged is deleted (the file being written to is deleted when it is rotated out, or at
``close``), and what ``inspect`` reads in one file is the whole truth about it. A goal
acknowledged before its record was written is not written at all.

Goals held on disk only (beyond the client's queue, or parked while the API is down) get a
spilled id (``new_id(spilled=True)``): the journal keeps nothing of them in memory, and
``read_back`` finds them again by their id's prefix, oldest first, through a cursor over the
files (those taken over at ``open`` first, whose pending goals all count as held on disk).
A goal read back is pending like any other from then on. The writer writes the newest file
first, so a goal journaled anew is on disk before the acknowledgement of its old record.
The client hands over what it accepted through ``before_step``, called in the writer's
thread at each step (and once more at ``close``).

``max_bytes`` caps every byte of every file the journal holds (records, acknowledgements,
files taken over at ``open``) plus what is buffered, and room for each pending goal's
acknowledgement is reserved when it is appended: acknowledgements never pass the cap. Only
files taken over at ``open`` (and goals written again after their file was lost) can put the
journal over it; appends are then refused until acknowledgements free room.

Faults of the spool never raise out of ``append``/``ack`` and never stop the writer: each is
one WARNING or ERROR line on the ``datafast_async`` logger and a count in ``faults``:

- the directory cannot be created or written at ``open`` (or ``flock`` does not work there):
  ERROR, and the journal runs disabled: ``append`` answers ``Append.MEMORY_ONLY``;
- a write fails (ENOSPC, EIO, a file that cannot be created): WARNING, once per episode. What
  was already accepted stays in memory and is written again every step until it goes through;
  meanwhile ``append`` answers ``Append.MEMORY_ONLY`` (the caller keeps new goals in memory
  only) so that memory stays bounded; one more WARNING when writing works again;
- a file deleted or made unreadable under the running journal (checked before each write to
  the current file and for every file at each sync): WARNING; its pending goals, read back
  through the descriptor still open, are written again to a new file (in a directory made
  again if it was removed);
- torn or corrupt lines and unknown acknowledgements in files taken over: one WARNING with
  the counts. Files of other namespaces: one WARNING, left alone.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable

import attrs

from .._errors import ConfigurationError
from .._reporting import logger
from ._ownership import (
    Adopted,
    Adoption,
    Held,
    abandon,
    adopt,
    available,
    check_directory,
    create,
    delete,
    make_directory,
    read_all,
    release,
    still_ours,
)
from ._records import (
    ACK_RESERVE_BASE,
    Record,
    ack_line,
    check_id,
    check_outcome,
    quote_path,
    read_lines,
    record_line,
)

__all__ = ["Append", "Journal", "hand_over"]

_NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_CAP_LOG_WINDOW = 60.0
_READ_CHUNK = 1 << 20  # bytes read_back reads at once


class Append(enum.Enum):
    """What ``Journal.append`` did with a goal."""

    #: Accepted and journaled: ``ack`` it when it settles.
    JOURNALED = "journaled"
    #: Accepted, not journaled (the spool is disabled, broken or closed): the caller keeps the
    #: goal in memory only; there is nothing to acknowledge.
    MEMORY_ONLY = "memory_only"
    #: Refused: the journal would pass ``max_bytes``. The caller refuses the goal.
    REFUSED = "refused"

    def __bool__(self) -> bool:
        """Whether the goal was accepted (journaled or not)."""
        return self is not Append.REFUSED


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    DISABLED = "disabled"
    CLOSING = "closing"
    CLOSED = "closed"
    ABANDONED = "abandoned"


@attrs.define(eq=False)
class _Segment:
    """A file the journal holds, as the writer sees it."""

    held: Held
    #: Bytes in the file plus bytes assigned to it and not yet written.
    size: int
    #: Goals whose record is in it (or assigned to it) and not acknowledged.
    pending: int
    #: Goal records written or assigned to it.
    records: int
    #: Assigned, not yet written.
    out: bytearray = attrs.field(factory=bytearray)
    #: Written since the last fsync.
    dirty: bool = False
    #: Its goals are all acknowledged but deleting it failed: tried again at each sync.
    doomed: bool = False
    #: Taken over at ``open``: every goal pending in it is waiting to be read back.
    adopted: bool = False
    #: Its place in the order files are read back in (taken over first, then created).
    seq: int = 0


_MISSING = object()


class Journal:
    """The on-disk journal of one client, in ``directory``, for ``namespace``.

    Use it from one event loop: ``append``/``ack`` never block. ``open`` and ``close`` block
    (run them in a thread). Intervals and sizes are settable for tests; ``background=False``
    runs no writer thread (the test calls ``flush``).

    Raises:
        ConfigurationError: This platform has no ``fcntl.flock`` (the spool is POSIX only).
        ValueError: ``namespace`` is not 1 to 120 of ``A-Z a-z 0-9 _ -``, or a size or
            interval is not positive.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        namespace: str,
        *,
        max_bytes: int = 64 * 2**20,
        segment_bytes: int = 256 * 2**10,
        write_interval: float = 0.05,
        sync_interval: float = 1.0,
        background: bool = True,
    ) -> None:
        if not available():
            raise ConfigurationError(
                "spool_path needs POSIX file locks (fcntl.flock), which this platform does "
                "not have; leave spool_path unset here"
            )
        if not namespace or len(namespace) > 120 or not set(namespace) <= _NAMESPACE_CHARS:
            raise ValueError(f"a journal namespace is 1 to 120 of A-Z a-z 0-9 _ -: {namespace!r}")
        for name, value in (("max_bytes", max_bytes), ("segment_bytes", segment_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, interval in (
            ("write_interval", write_interval),
            ("sync_interval", sync_interval),
        ):
            if not interval > 0:
                raise ValueError(f"{name} must be > 0, got {interval!r}")
        directory = os.fspath(directory)
        # No getcwd() for an absolute path: the client builds its journal in the event loop.
        self._directory = (
            os.path.normpath(directory) if os.path.isabs(directory) else os.path.abspath(directory)
        )
        self._namespace = namespace
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._write_interval = write_interval
        self._sync_interval = sync_interval
        self._background = background
        prefix = os.urandom(6).hex()
        self._id_prefix = prefix + "-"
        #: Ids of goals held on disk only (overflow, parked): ``read_back`` finds them by it.
        self._spill_prefix = prefix + "s"
        self._id_counter = itertools.count(1)
        self._paths: dict[str, bytes] = {}
        self._outcomes: set[str] = set()

        # The loop's side, and what the writer swaps out: under _lock, never held across I/O.
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._ids: list[str] = []
        self._lines: list[bytes | None] = []
        self._unwritten: dict[str, int] = {}  # id -> index in _lines, for records not swapped
        self._acks: list[tuple[str, bytes]] = []
        self._known: dict[str, int] = {}  # pending id -> bytes reserved for its ack
        self._size = 0
        self._failing = False  # writes fail: new goals are not journaled until they work
        self._faults: dict[str, int] = {}
        self._refused = 0
        self._cap_logged_at: float | None = None
        #: Spilled goals journaled and not read back yet (they are in no dict).
        self._spilled = 0
        #: Goals taken over at ``open`` and not read back yet.
        self._adopted_unread = 0
        # Where ``read_back`` goes on: a file (by ``seq``) and a byte offset in it.
        self._cursor = (0, 0)
        self._seq = itertools.count()

        # The writer's side: under _step_lock.
        self._step_lock = threading.Lock()
        self._segments: list[_Segment] = []  # oldest first
        self._current: _Segment | None = None
        self._where: dict[str, _Segment | None] = {}  # id -> its file (None: not placed yet)
        self._unplaced: list[tuple[str, bytes]] = []
        self._dir_dirty = False
        self._write_error: OSError | None = None
        self._sync_failing = False
        self._internal_logged_at: float | None = None
        self._segment_counter = itertools.count()
        self._last_segment_ns = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = False
        #: Called in the writer's thread at the start of each step (before the buffers are
        #: swapped): the client hands over the goals it accepted since the last step.
        self.before_step: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Journal {self._directory!r} namespace={self._namespace!r} "
            f"state={self._state.value} pending={len(self._known)} size={self._size}>"
        )

    # -- what it shows --------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def size(self) -> int:
        """Bytes counted against ``max_bytes``: the files held, what is buffered, and the
        room reserved for the pending goals' acknowledgements."""
        return self._size

    @property
    def pending(self) -> int:
        """Goals journaled (or taken over) and not acknowledged."""
        return len(self._known) + self._spilled

    @property
    def unread(self) -> int:
        """Goals on disk only, waiting for ``read_back``: spilled, and taken over at ``open``."""
        return self._spilled + self._adopted_unread

    @property
    def faults(self) -> dict[str, int]:
        """The spool's own faults so far, by kind (``"write"``, ``"torn"``, ...)."""
        with self._lock:
            return dict(self._faults)

    @property
    def refused(self) -> int:
        """Goals refused because the journal would have passed ``max_bytes``."""
        return self._refused

    @property
    def files(self) -> list[str]:
        """The paths of the files the journal holds, oldest first."""
        return [segment.held.path for segment in list(self._segments)]

    @property
    def journaling(self) -> bool:
        """Whether ``append`` journals goals now (open, and writes work)."""
        return self._state is _State.OPEN and not self._failing

    # -- the loop's side ------------------------------------------------------------------

    def new_id(self, *, spilled: bool = False) -> str:
        """A goal id unique across processes and restarts (a random prefix and a counter).

        ``spilled``: for a goal held on disk only (beyond the queue's bound, or parked while
        the API is down), which ``read_back`` returns later; the journal keeps nothing of it
        in memory until then.
        """
        prefix = self._spill_prefix if spilled else self._id_prefix
        return f"{prefix}{next(self._id_counter):x}"

    def append(self, goal_id: str, path: str, body: bytes) -> Append:
        """Journal one request: ``body`` (its JSON, one line) for the endpoint ``path``.

        Never blocks and never raises for a fault of the spool (see ``Append``).

        Raises:
            ValueError: A caller's mistake: a malformed id (see ``new_id``), an id already
                pending, a path that is not one, a body with a newline in it.
            RuntimeError: ``open`` was not called.
        """
        quoted = self._paths.get(path)
        if quoted is None:
            quoted = self._paths[path] = quote_path(path)
        check_id(goal_id)
        if 10 in body:  # b"\n" as an int: memchr, ten times faster than a bytes needle
            raise ValueError("a journaled body is JSON on one line (it holds a newline)")
        line = record_line(goal_id, quoted, time.time(), body)
        reserve = ACK_RESERVE_BASE + len(goal_id)
        cost = len(line) + reserve
        lock = self._lock
        lock.acquire()
        try:
            state = self._state
            if state is not _State.OPEN or self._failing:
                if state is _State.NEW:
                    raise RuntimeError("Journal.open() was not called")
                return Append.MEMORY_ONLY
            known = self._known
            if goal_id in known:
                raise ValueError(f"goal {goal_id!r} is already in the journal")
            if self._size + cost > self._max_bytes:
                self._refused += 1
                refused = True
            else:
                refused = False
                self._size += cost
                if goal_id.startswith(self._spill_prefix):
                    self._spilled += 1  # nothing of it in memory until read back
                else:
                    known[goal_id] = reserve
                    self._unwritten[goal_id] = len(self._lines)
                self._ids.append(goal_id)
                self._lines.append(line)
        finally:
            lock.release()
        if refused:
            self._log_cap()
            return Append.REFUSED
        return Append.JOURNALED

    def ack(self, goal_id: str, outcome: str) -> bool:
        """Acknowledge a settled goal (``outcome``: ``"delivered"``, ``"failed"``, ... 1 to 16
        of ``a-z _``); ``False`` if the journal does not hold it. Never blocks.

        Raises:
            ValueError: ``outcome`` is malformed.
        """
        if outcome not in self._outcomes:
            check_outcome(outcome)
            self._outcomes.add(outcome)
        lock = self._lock
        lock.acquire()
        try:
            reserve = self._known.pop(goal_id, None)
            if reserve is None:
                return False
            index = self._unwritten.pop(goal_id, None)
            if index is not None:  # not written yet: it never will be
                record = self._lines[index]
                self._lines[index] = None
                assert record is not None
                self._size -= len(record) + reserve
                return True
            line = ack_line(goal_id, outcome)
            self._size += len(line) - reserve
            self._acks.append((goal_id, line))
        finally:
            lock.release()
        return True

    def _log_cap(self) -> None:
        now = time.monotonic()
        if self._cap_logged_at is not None and now - self._cap_logged_at < _CAP_LOG_WINDOW:
            return
        self._cap_logged_at = now
        logger.warning(
            "the spool at %s is full (spool_max_bytes=%d, %d goals pending): new goals are "
            "refused until delivered goals free room (%d refused so far)",
            self._directory,
            self._max_bytes,
            len(self._known),
            self._refused,
        )

    def wake(self) -> None:
        """Have the writer step now rather than at its next interval (a large backlog)."""
        self._wake.set()

    # -- life cycle (blocking: run these in a thread) -------------------------------------

    def open(self) -> Adoption:
        """Create the directory (0700) if needed, refuse one that another user could write
        to, take over this user's own files of this namespace that no live client holds,
        start the writer. Returns what was taken over: its ``records``
        are the goals to send first (oldest first, each once); they are pending in this
        journal, to ``ack`` like any other (never ``append`` them again); the files they are
        in belong to the journal now (``Adoption.files`` is emptied).

        Never raises for a fault of the spool: a directory that cannot be created or written,
        or that is not the process's user's own or is writable by its group or others, is one
        ERROR and the journal runs disabled (``append`` answers ``MEMORY_ONLY``).
        Raises ``RuntimeError`` if called twice.
        """
        with self._lock:
            if self._state is not _State.NEW:
                raise RuntimeError("Journal.open() was already called")
        try:
            make_directory(self._directory)
            check_directory(self._directory)
            adoption = adopt(self._directory, self._namespace, max_bytes=self._max_bytes)
        except OSError as exc:
            self._disable(exc)
            return Adoption()
        with self._step_lock:
            try:
                first = self._create()
            except OSError as exc:
                adoption.release()
                self._disable(exc)
                return Adoption()
            reserved = 0
            for adopted in adoption.files:
                self._take(adopted)
                reserved += sum(ACK_RESERVE_BASE + len(goal_id) for goal_id in adopted.pending)
            first.seq = next(self._seq)  # after the files taken over: read back after them
            self._segments.append(first)
            self._current = first
            self._dir_dirty = True
        with self._lock:
            self._size = sum(segment.size for segment in self._segments) + reserved
            self._known = {
                record.id: ACK_RESERVE_BASE + len(record.id) for record in adoption.records
            }
            self._adopted_unread = len(adoption.records)
            self._state = _State.OPEN
        self._report_adoption(adoption)
        adoption.files = []  # held by the journal now: not the caller's to release
        if self._background:
            self._thread = threading.Thread(
                target=self._run, name="datafast-spool-writer", daemon=True
            )
            self._thread.start()
        return adoption

    def _take(self, adopted: Adopted) -> None:
        segment = _Segment(adopted.held, adopted.size, len(adopted.pending), len(adopted.pending))
        segment.adopted = True
        segment.seq = next(self._seq)
        if not adopted.ends_clean:  # its last record lacks its newline: add it first
            segment.out += b"\n"
            segment.size += 1
        self._segments.append(segment)
        for goal_id in adopted.pending:
            self._where[goal_id] = segment

    def _disable(self, exc: OSError) -> None:
        with self._lock:
            self._state = _State.DISABLED
            self._faults["directory"] = self._faults.get("directory", 0) + 1
        logger.error(
            "the spool directory %s cannot be used (%s): goals are kept in memory only, as "
            "without spool_path",
            self._directory,
            _describe(exc),
        )

    def _report_adoption(self, adoption: Adoption) -> None:
        counts = {
            "torn": adoption.torn,
            "garbage": adoption.garbage,
            "unknown_ack": adoption.unknown_acks,
            "duplicate": adoption.duplicates,
            "unreadable": len(adoption.unreadable),
            "foreign": len(adoption.foreign),
        }
        with self._lock:
            for kind, count in counts.items():
                if count:
                    self._faults[kind] = self._faults.get(kind, 0) + count
        if adoption.damaged or adoption.duplicates:
            logger.warning(
                "skipped %d damaged lines in the spool at %s (%d cut short by a crash "
                "mid-write, %d unreadable as records, %d acknowledgements of unknown goals, "
                "%d goals journaled twice)",
                adoption.damaged + adoption.duplicates,
                self._directory,
                adoption.torn,
                adoption.garbage,
                adoption.unknown_acks,
                adoption.duplicates,
            )
        if adoption.unreadable:
            logger.warning(
                "cannot read %d journal files in the spool at %s, left alone: %s",
                len(adoption.unreadable),
                self._directory,
                ", ".join(f"{name} ({why})" for name, why in adoption.unreadable),
            )
        if adoption.foreign:
            logger.error(
                "refused %d journal files in the spool at %s that are not this user's own "
                "private files (another user may have planted them): left alone, never sent: %s",
                len(adoption.foreign),
                self._directory,
                ", ".join(f"{name} ({why})" for name, why in adoption.foreign),
            )
        if adoption.left:
            logger.warning(
                "%d journal files in the spool at %s are left for a later start: taking "
                "them over now would pass spool_max_bytes=%d",
                len(adoption.left),
                self._directory,
                self._max_bytes,
            )
        if adoption.others:
            namespaces = sorted({name.split(".", 1)[0] for name in adoption.others})
            logger.warning(
                "the spool at %s also holds %d journal files of other keys or websites (%s): "
                "they are left alone; `datafast-async spool %s` lists them",
                self._directory,
                len(adoption.others),
                ", ".join(namespaces),
                self._directory,
            )
        if adoption.records:
            logger.info(
                "took over %d goals not yet delivered from %d files in the spool at %s",
                len(adoption.records),
                len(adoption.files),
                self._directory,
            )

    def flush(self, *, sync: bool = True, timeout: float | None = None) -> bool:
        """Write everything buffered now (and fsync, with ``sync``), in the calling thread;
        ``True`` if it all went to disk. Blocking; the writer thread does this on its own.
        ``False`` as well if the writer was busy for longer than ``timeout`` seconds."""
        if self._state not in (_State.OPEN, _State.CLOSING):
            return False
        return self._step(sync=sync, timeout=timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Write and fsync what is buffered, delete the files whose goals are all
        acknowledged, and let go of the others (unlocked) for the next start. Idempotent.

        Returns ``True`` if every goal accepted is on disk or acknowledged; ``False`` (after
        one ERROR line) if some could not be written, or if the writer was still busy (a
        write that hangs) after ``timeout`` seconds: its files then stay locked until a later
        ``close`` finishes the job or the process exits.
        """
        deadline = time.monotonic() + timeout
        hook = self.before_step
        if (
            hook is not None
            and self._state is _State.OPEN
            # Not beside the writer's step: a goal it took from the client would be refused
            # once appends stop, below (and lost).
            and self._step_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        ):
            # What the client handed over last is journaled while appends are still taken.
            try:
                hook()
            except Exception:
                self._fault("internal")
                logger.exception("the spool writer failed unexpectedly")
            finally:
                self._step_lock.release()
        with self._lock:
            state = self._state
            if state in (_State.CLOSED, _State.ABANDONED):
                return True
            if state in (_State.NEW, _State.DISABLED):
                self._state = _State.CLOSED
                return True
            self._state = _State.CLOSING  # appends answer MEMORY_ONLY from now on
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
        if (thread is not None and thread.is_alive()) or not self._step_lock.acquire(
            timeout=max(0.0, deadline - time.monotonic())
        ):
            logger.error(
                "the spool writer is still busy after %.1f s: its files in %s stay locked "
                "until close() is called again or the process exits",
                timeout,
                self._directory,
            )
            return False
        try:
            if self._state is _State.CLOSED:  # another close() finished meanwhile
                return True
            return self._finish()
        finally:
            self._step_lock.release()

    def _finish(self) -> bool:
        ok = self._step_locked(sync=True)
        unwritten = len(self._unplaced) + sum(
            _count_records(segment.out) for segment in self._segments
        )
        for segment in self._segments:
            try:
                if segment.pending == 0:
                    delete(segment.held)
                else:
                    release(segment.held)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    release(segment.held)
                logger.warning("could not delete %s: %s", segment.held.path, _describe(exc))
        self._segments = []
        self._current = None
        self._where = {}
        self._unplaced = []
        with self._lock:
            self._state = _State.CLOSED
            self._known = {}
            self._size = 0
            self._spilled = self._adopted_unread = 0
        if not ok and unwritten:
            logger.error(
                "%d goals could not be written to the spool at %s before it closed (%s): "
                "they are not kept for the next start",
                unwritten,
                self._directory,
                _describe(self._write_error),
            )
            return False
        return True

    def abandon_after_fork(self) -> None:
        """In a forked child: close the files inherited from the parent without unlocking
        them (the lock belongs to the open file, which the parent still uses), forget
        everything, take no lock (a thread may have held one at the fork) and write nothing.
        The journal then answers ``MEMORY_ONLY``."""
        segments, self._segments = self._segments, []
        for segment in segments:
            with contextlib.suppress(OSError):
                abandon(segment.held)
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._state = _State.ABANDONED
        self._thread = None
        self._current = None
        self._where = {}
        self._unplaced = []
        self._known = {}
        self._ids, self._lines, self._unwritten, self._acks = [], [], {}, []
        self._size = 0
        self._spilled = self._adopted_unread = 0

    def read_back(self, limit: int) -> list[Record]:
        """Up to ``limit`` goals held on disk only, oldest first, each once: those taken over
        at ``open``, then the spilled ones (``new_id(spilled=True)``) in the order they were
        appended. From now on they are pending in memory like any other goal: ``ack`` them.

        Blocking (it reads files): run it in a thread. Records still buffered are written
        first; a spilled record that cannot be written yet (a full disk) is read back once it
        is. Never raises for a fault of the spool: a file that cannot be read is skipped (the
        writer journals its goals again, see ``_recover``).
        """
        if limit < 1:
            return []
        with self._step_lock:
            if self._state not in (_State.OPEN, _State.CLOSING):
                return []
            self._step_locked(sync=False)  # what is buffered goes to its file first
            if not (self._spilled or self._adopted_unread):
                return []
            found: list[tuple[Record, _Segment]] = []
            seq, offset = self._cursor
            for segment in list(self._segments):
                if segment.seq < seq:
                    continue
                if segment.seq > seq:
                    seq, offset = segment.seq, 0
                offset = self._read_segment(segment, offset, limit, found)
                if len(found) >= limit:
                    break
            self._cursor = (seq, offset)
            spill = self._spill_prefix
            spilled = adopted = 0
            for record, segment in found:
                if record.id.startswith(spill):
                    self._where[record.id] = segment
                    spilled += 1
                else:
                    adopted += 1
            with self._lock:
                for record, _ in found:
                    if record.id.startswith(spill):
                        self._known[record.id] = ACK_RESERVE_BASE + len(record.id)
                self._spilled -= spilled
                self._adopted_unread -= adopted
        return [record for record, _ in found]

    def _read_segment(
        self, segment: _Segment, offset: int, limit: int, found: list[tuple[Record, _Segment]]
    ) -> int:
        """Read back from ``segment`` at ``offset`` into ``found``; the offset to go on at."""
        spill = self._spill_prefix
        adopted = segment.adopted
        where = self._where
        chunk = _READ_CHUNK
        while len(found) < limit:
            try:
                data = os.pread(segment.held.fd, chunk, offset)
            except OSError:
                return offset  # read again later; _check_lost sees to a lost file
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) < chunk:
                    return offset  # nothing more, or a last line not whole yet
                chunk *= 2  # a line longer than the chunk
                continue
            start = 0
            while start < end and len(found) < limit:
                stop = data.index(b"\n", start)
                line = data[start:stop]
                start = stop + 1
                if not line.startswith(b'{"id":"'):
                    continue  # an acknowledgement (or a damaged line, counted at open)
                goal_id = line[7 : line.find(b'"', 7)].decode("ascii", "replace")
                if adopted:
                    if where.get(goal_id) is not segment:
                        continue  # acknowledged in the file, or already pending elsewhere
                elif not goal_id.startswith(spill):
                    continue  # a goal that was kept in memory
                parsed = read_lines(line + b"\n")
                if parsed.records:
                    found.append((parsed.records[0], segment))
            offset += start
            if len(data) < chunk and start >= end:
                return offset
        return offset

    # -- the writer -----------------------------------------------------------------------

    def _run(self) -> None:
        next_sync = time.monotonic() + self._sync_interval
        while not self._stopping:
            self._wake.wait(self._write_interval)
            if self._stopping:
                return
            self._wake.clear()  # woken early (wake()): the next wait is a whole interval
            now = time.monotonic()
            sync = now >= next_sync
            if sync:
                next_sync = now + self._sync_interval
            self._step(sync=sync)

    def _step(self, *, sync: bool, timeout: float | None = None) -> bool:
        if not self._step_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            if self._state not in (_State.OPEN, _State.CLOSING):
                return False
            return self._step_locked(sync=sync)
        finally:
            self._step_lock.release()

    def _step_locked(self, *, sync: bool) -> bool:
        try:
            hook = self.before_step
            if hook is not None:
                hook()
            with self._lock:
                ids, lines, acks = self._ids, self._lines, self._acks
                self._ids, self._lines, self._unwritten, self._acks = [], [], {}, []
            for goal_id, line in zip(ids, lines, strict=True):
                if line is not None:
                    self._route_record(goal_id, line)
            for goal_id, line in acks:
                self._route_ack(goal_id, line)
            self._check_lost(self._segments if sync else self._current_if_writing())
            ok = self._write()
            if sync:
                self._sync()
                self._retry_doomed()
        except Exception:  # a bug must not stop the writer: say it, count it, go on
            self._fault("internal")
            now = time.monotonic()
            if self._internal_logged_at is None or now - self._internal_logged_at > 60.0:
                self._internal_logged_at = now
                logger.exception("the spool writer failed unexpectedly (said once a minute)")
            ok = False
        self._set_failing(not ok)
        return ok

    def _current_if_writing(self) -> list[_Segment]:
        current = self._current
        return [current] if current is not None and current.out else []

    def _route_record(self, goal_id: str, line: bytes) -> None:
        if self._unplaced or not self._place(goal_id, line):
            self._unplaced.append((goal_id, line))
            if not goal_id.startswith(self._spill_prefix):
                self._where[goal_id] = None

    def _place(self, goal_id: str, line: bytes) -> bool:
        segment = self._current
        if segment is None or (segment.records and segment.size + len(line) > self._segment_bytes):
            segment = self._rotate()
            if segment is None:
                return False
        segment.out += line
        segment.size += len(line)
        segment.pending += 1
        segment.records += 1
        if not goal_id.startswith(self._spill_prefix):  # found by read_back instead
            self._where[goal_id] = segment
        return True

    def _route_ack(self, goal_id: str, line: bytes) -> None:
        segment = self._where.pop(goal_id, _MISSING)
        if segment is _MISSING:  # its file was lost and could not be read back
            self._adjust(-len(line))
            return
        if segment is None:  # its record was never placed: neither is written
            for index, (unplaced_id, record) in enumerate(self._unplaced):
                if unplaced_id == goal_id:
                    del self._unplaced[index]
                    self._adjust(-len(record) - len(line))
                    break
            return
        assert isinstance(segment, _Segment)
        segment.out += line
        segment.size += len(line)
        segment.pending -= 1
        if segment.pending == 0 and segment is not self._current:
            self._retire(segment)

    def _create(self) -> _Segment:
        now = max(time.time_ns(), self._last_segment_ns + 1)
        self._last_segment_ns = now
        args = (self._directory, self._namespace, now, os.getpid(), next(self._segment_counter))
        try:
            held = create(*args)
        except FileNotFoundError:
            if self._state is _State.NEW:
                raise
            # The directory was removed under the running journal: make it again (0700).
            make_directory(self._directory)
            check_directory(self._directory)
            held = create(*args)
        return _Segment(held, 0, 0, 0)

    def _rotate(self) -> _Segment | None:
        try:
            segment = self._create()
        except OSError as exc:
            self._write_error = exc
            return None
        old, self._current = self._current, segment
        segment.seq = next(self._seq)
        self._segments.append(segment)
        self._dir_dirty = True
        if old is not None and old.pending == 0:
            self._retire(old)
        return segment

    def _retire(self, segment: _Segment) -> None:
        """Delete a file whose goals are all acknowledged (its unwritten acks go with it)."""
        try:
            delete(segment.held)
        except OSError as exc:
            if not segment.doomed:
                segment.doomed = True
                self._fault("delete")
                logger.warning(
                    "cannot delete %s, whose goals are all delivered (%s): tried again "
                    "every second; if it stays, it is replayed as nothing",
                    segment.held.path,
                    _describe(exc),
                )
            return
        self._forget(segment)
        self._adjust(-segment.size)

    def _forget(self, segment: _Segment) -> None:
        self._segments = [other for other in self._segments if other is not segment]
        if self._current is segment:
            self._current = None
        self._dir_dirty = True

    def _retry_doomed(self) -> None:
        for segment in [s for s in self._segments if s.doomed and s.pending == 0]:
            if segment is not self._current:
                self._retire(segment)

    def _write(self) -> bool:
        unplaced, self._unplaced = self._unplaced, []
        for index, (goal_id, line) in enumerate(unplaced):
            if not self._place(goal_id, line):
                self._unplaced = unplaced[index:]
                break
        ok = not self._unplaced
        # Newest file first: a goal's record (always in the newest file) is on disk before an
        # acknowledgement written in the same step to an older one (a goal parked again is
        # journaled anew, then its old record acknowledged: never the other way round).
        for segment in reversed(self._segments):
            out = segment.out
            if not out:
                continue
            try:
                while out:
                    written = os.write(segment.held.fd, out)
                    del out[:written]
                    segment.dirty = True
                # A new buffer: one emptied from the front keeps its largest size allocated
                # (a file's worth, for every file the journal holds).
                segment.out = bytearray()
            except OSError as exc:
                self._write_error = exc
                ok = False
        return ok

    def _sync(self) -> None:
        failed: OSError | None = None
        for segment in self._segments:
            if segment.dirty:
                try:
                    os.fsync(segment.held.fd)
                except OSError as exc:
                    failed = exc
                else:
                    segment.dirty = False
        if self._dir_dirty:
            try:
                fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                failed = exc
            else:
                self._dir_dirty = False
        if failed is None:
            self._sync_failing = False
        elif not self._sync_failing:
            self._sync_failing = True
            self._fault("sync")
            logger.warning(
                "the spool at %s cannot be flushed to disk (%s): what was written in the last "
                "seconds may not survive the machine crashing",
                self._directory,
                _describe(failed),
            )

    def _check_lost(self, segments: Iterable[_Segment]) -> None:
        for segment in list(segments):
            try:
                ours = still_ours(segment.held)
            except OSError:
                continue  # cannot tell (the directory is unreadable): keep writing
            if not ours:
                self._recover(segment)

    def _recover(self, segment: _Segment) -> None:
        """A held file was deleted or made unreadable under the journal: read its pending
        goals back through the descriptor still open and write them to a new file."""
        try:
            data = read_all(segment.held.fd)
        except OSError:
            data = b""
        data += bytes(segment.out)
        spill = self._spill_prefix
        records = [
            record
            for record in read_lines(data).pending
            if self._where.get(record.id, _MISSING) is segment
            # A spilled goal not read back yet (one read back is in _where).
            or (record.id.startswith(spill) and record.id not in self._where)
        ]
        lost = [goal_id for goal_id, where in self._where.items() if where is segment]
        self._forget(segment)
        try:
            delete(segment.held)  # its name may still lead to it (made unreadable)
        except OSError:
            abandon(segment.held)
        self._adjust(-segment.size)
        for goal_id in lost:
            del self._where[goal_id]
        for record in records:
            self._adjust(len(record.line))
            self._route_record(record.id, record.line)
        self._fault("lost")
        missing = len(lost) - len(records)
        logger.warning(
            "the journal file %s was deleted or made unreadable while in use: its %d goals "
            "not yet delivered are journaled again in a new file%s",
            segment.held.path,
            len(records),
            f"; {missing} could not be read back and are no longer on disk" if missing else "",
        )

    def _set_failing(self, failing: bool) -> None:
        if failing == self._failing:
            return
        with self._lock:
            self._failing = failing
            if failing:
                self._faults["write"] = self._faults.get("write", 0) + 1
        if failing:
            logger.warning(
                "the spool at %s cannot be written (%s): goals already accepted are kept in "
                "memory and written when it works again; new goals are kept in memory only",
                self._directory,
                _describe(self._write_error),
            )
        else:
            logger.warning("the spool at %s is written again", self._directory)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1

    def _adjust(self, delta: int) -> None:
        with self._lock:
            self._size += delta


def _count_records(out: bytearray) -> int:
    return out.count(b'{"id":')


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- requests no running journal holds ----------------------------------------------------------

# Numbers the files hand_over creates within one process (with its pid and the time: unique).
_handed_over = itertools.count()


def hand_over(directory: str, namespace: str, requests: Iterable[tuple[str, bytes]]) -> str:
    """Journal ``requests`` (each an endpoint's path and its body) that no journal holds, in
    a new file of ``namespace`` in ``directory``, at once and in the calling thread: written,
    fsynced, then unlocked, so that the next journal of the namespace to ``open`` takes it
    over and sends them (a client that was never started in this process: its forked
    workers, or its own next start). The same format as ``Journal``'s files, 0600 in a
    directory made 0700. Returns the file's path.

    Blocking. Raises ``OSError`` (nothing is left behind then), or ``ValueError`` for a body
    with a newline in it.
    """
    make_directory(directory)
    check_directory(directory)  # never write for others to read (or into their directory)
    now = time.time()
    prefix = os.urandom(6).hex() + "-"
    quoted: dict[str, bytes] = {}
    lines = []
    for number, (path, body) in enumerate(requests, 1):
        if 10 in body:
            raise ValueError("a journaled body is JSON on one line (it holds a newline)")
        quoted_path = quoted.get(path)
        if quoted_path is None:
            quoted_path = quoted[path] = quote_path(path)
        lines.append(record_line(f"{prefix}{number:x}", quoted_path, now, body))
    data = memoryview(b"".join(lines))
    held = create(directory, namespace, time.time_ns(), os.getpid(), next(_handed_over))
    try:
        while data:
            data = data[os.write(held.fd, data) :]
        os.fsync(held.fd)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # its name (the rename in create) survives a crash too
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            delete(held)
        raise
    release(held)
    return held.path
