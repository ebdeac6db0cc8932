"""Telling the user what happened: callbacks, and logs that do not storm.

Callbacks may be plain functions or coroutine functions. A plain one runs inline; an awaitable
it returns runs as a task that this reporter owns and awaits (with a deadline) at shutdown. An
exception inside a callback is logged at ERROR with its traceback and never reaches the sender.

While the API is down, thousands of goals fail the same way: the first failure of a kind is
logged, the rest are counted and summed up in one line per window; attempts that fail and are
retried are summed up by status in one rate-limited line.

The package logger has no handler of its own: with no logging configured at all, Python's
last-resort handler still prints its WARNING and ERROR lines to stderr, so a loss is never
silent. An application that configures logging decides where they go.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._errors import DataFastError
from ._kinds import counted, for_value

if TYPE_CHECKING:
    from ._delivery import Delivery

__all__ = ["AttemptLog", "DropLog", "FailureLog", "Reporter", "logger", "report_without_loop"]

logger = logging.getLogger("datafast_async")

#: ``on_success(event, result)``: the validated value (a ``Goal``, ...) and its result (a
#: ``GoalResult``, ...). A callback typed on ``Goal`` keeps working for goals.
SuccessCallback = Callable[[Any, Any], object]
#: ``on_failure(event, error)``, for every kind.
FailureCallback = Callable[[Any, DataFastError], object]


class FailureLog:
    """Logs the first failure of each kind, then one summary line per ``window`` seconds."""

    def __init__(self, window: float = 60.0, *, max_kinds: int = 64) -> None:
        self._window = window
        self._max_kinds = max_kinds
        # kind -> [window start (monotonic), failures suppressed since the last line]
        self._kinds: dict[tuple[object, ...], list[float]] = {}
        self._labels: dict[tuple[object, ...], str] = {}

    def record(self, what: str, plural: str, error: DataFastError) -> None:
        """One request failed: ``what`` describes it (``"goal 'signup'"``), ``plural`` names
        its kind in the summary lines (``"goals"``)."""
        # An answer's kind is its class and status: a gateway's page may differ per request
        # (a request id, a time), and must not make each goal a kind of its own. Other errors
        # are kinds by their message (a refused connection, a timeout, the shutdown).
        status = getattr(error, "status", None)
        kind = (plural, type(error), status, None if status is not None else str(error))
        now = time.monotonic()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry[0] < self._window:
            entry[1] += 1
            return
        if entry is not None:
            self._summarise(kind, entry)
        elif len(self._kinds) >= self._max_kinds:
            self.summarise_all()
        self._kinds[kind] = [now, 0]
        self._labels[kind] = str(error)[:200]  # as the first of its kind said it
        logger.warning("%s failed: %s", what, error)

    def summarise_all(self) -> None:
        for kind, entry in self._kinds.items():
            self._summarise(kind, entry)
        self._kinds.clear()
        self._labels.clear()

    def _summarise(self, kind: tuple[object, ...], entry: list[float]) -> None:
        if entry[1]:
            logger.warning(
                "%d more %s failed the same way (like: %s) %s",
                int(entry[1]),
                kind[0],
                self._labels.get(kind, ""),
                _since(time.monotonic() - entry[0]),
            )
            entry[1] = 0


class DropLog:
    """One WARNING per ``window`` seconds while a full queue refuses requests, with the count
    per kind."""

    def __init__(
        self, max_queue_size: int, window: float = 10.0, spool_max_bytes: int | None = None
    ) -> None:
        self._what = (
            f"queue full (max_queue_size={max_queue_size})"
            if spool_max_bytes is None
            else f"the queue (max_queue_size={max_queue_size}) and the spool "
            f"(spool_max_bytes={spool_max_bytes}) are full, or the spool cannot be written"
        )
        self._window = window
        self._next = 0.0
        #: Refused since the last WARNING, per kind (by name).
        self._unsaid: dict[str, int] = {}

    def record(self, kind: str) -> None:
        """One request of ``kind`` (its name) refused at the door."""
        unsaid = self._unsaid
        unsaid[kind] = unsaid.get(kind, 0) + 1
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._window
        self._say()

    def _say(self) -> None:
        unsaid, self._unsaid = self._unsaid, {}
        logger.warning("%s: %s dropped since the last warning", self._what, counted(unsaid))

    def at_close(self) -> None:
        """The run ends: say what was not said yet, and start again for the next run."""
        if self._unsaid:
            self._say()
        self._next = 0.0


class AttemptLog:
    """One WARNING per ``window`` seconds while attempts keep failing (and are retried), with
    the failures counted by status: a user learns that the API is struggling even when every
    goal is delivered in the end."""

    def __init__(self, window: float = 30.0) -> None:
        self._window = window
        self._next = 0.0
        self._since = 0.0
        self._counts: dict[str, int] = {}

    def record(self, error: DataFastError) -> None:
        status = getattr(error, "status", None)
        kind = str(status) if status is not None else type(error).__name__
        counts = self._counts
        counts[kind] = counts.get(kind, 0) + 1
        now = time.monotonic()
        if now >= self._next:
            self._log(now)

    def _log(self, now: float) -> None:
        counts, self._counts = self._counts, {}
        shown = ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items()))
        if self._next:
            logger.warning(
                "attempts keep failing and are retried: %s %s",
                shown,
                _since(now - self._since),
            )
        else:
            logger.warning("an attempt failed and will be retried: %s", shown)
        self._since = now
        self._next = now + self._window


# Seconds async callbacks cancelled at shutdown get to end.
_CANCEL_WAIT = 0.1


class Reporter:
    """Calls ``on_success``/``on_failure`` and owns the tasks of async callbacks."""

    def __init__(
        self,
        on_success: SuccessCallback | None,
        on_failure: FailureCallback | None,
    ) -> None:
        self._on_success = on_success
        self._on_failure = on_failure
        #: Whether ``delivered`` does anything (the sender then skips building the Goal).
        self.reports_success = on_success is not None
        self._tasks: set[asyncio.Task[object]] = set()
        self.failure_log = FailureLog()
        self.async_allowed = True
        #: ``time.monotonic()`` past which callbacks are no longer called (the shutdown's
        #: grace has run out): each request still settles, and ``said_skipped`` says how many
        #: callbacks were left out, in one ERROR.
        self.cutoff = math.inf
        self._skipped = 0

    def delivered(self, event: object, result: object) -> None:
        if self._on_success is not None:
            self._call(self._on_success, event, result)

    def failed(self, delivery: Delivery[Any], error: DataFastError, *, log: bool = True) -> None:
        """A request failed finally; ``log``: said by the failure log (not at the shutdown
        deadline, which one WARNING says for all)."""
        kind = delivery._kind
        if log:
            self.failure_log.record(kind.describe(delivery._fields), kind.plural, error)
        if self._on_failure is not None:
            self._call(self._on_failure, delivery.event, error)

    def _call(self, callback: Callable[[Any, Any], object], event: object, arg: object) -> None:
        if self.cutoff is not math.inf and time.monotonic() > self.cutoff:
            self._skipped += 1
            return
        try:
            returned = callback(event, arg)
        except Exception:
            logger.exception("the %s callback raised for %s", _name(callback), _what(event))
            return
        if inspect.isawaitable(returned):
            if not self.async_allowed:
                # The loop is ending: the awaitable could never run to completion.
                if inspect.iscoroutine(returned):
                    returned.close()
                logger.error(
                    "the %s callback for %s was not run: the event loop is ending",
                    _name(callback),
                    _what(event),
                )
                return
            task: asyncio.Task[object] = asyncio.ensure_future(_run(callback, returned))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def said_skipped(self) -> None:
        """One ERROR for the callbacks left out past the shutdown's grace, if any."""
        if self._skipped:
            logger.error(
                "%d on_success/on_failure callbacks were not called: the shutdown's deadline "
                "and its grace had passed (slow synchronous callbacks hold aclose(); their "
                "requests settled all the same, each Delivery with its outcome)",
                self._skipped,
            )
            self._skipped = 0

    async def aclose(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for async callbacks, then cancel the rest."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout))
        if late:
            logger.error("%d async callbacks did not finish in time and were cancelled", len(late))
            for task in late:
                task.cancel()
            # A callback that catches its cancellation is not waited for past this.
            await asyncio.wait(late, timeout=_CANCEL_WAIT)


def report_without_loop(
    on_failure: FailureCallback | None,
    failures: list[tuple[object, DataFastError]],
    timeout: float,
) -> None:
    """Report failures where no event loop runs (the process's exit): a plain callback is
    called directly; the awaitables it returns (a coroutine function's) then run to their end
    in a short-lived loop of their own, at most ``timeout`` seconds, and are cancelled
    after that (said in one ERROR)."""
    if on_failure is None:
        return
    awaitables: list[Awaitable[object]] = []
    for event, error in failures:
        try:
            returned = on_failure(event, error)
        except Exception:
            logger.exception("the %s callback raised for %s", _name(on_failure), _what(event))
            continue
        if inspect.isawaitable(returned):
            awaitables.append(returned)
    if not awaitables:
        return
    if asyncio._get_running_loop() is not None:  # cannot nest a loop here: never run
        for awaitable in awaitables:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
        logger.error(
            "%d async %s callbacks were not run: an event loop is running in this thread",
            len(awaitables),
            _name(on_failure),
        )
        return

    async def run_all() -> None:
        tasks = [asyncio.ensure_future(_run(on_failure, a)) for a in awaitables]
        _, late = await asyncio.wait(tasks, timeout=max(0.0, timeout))
        if late:
            logger.error("%d async callbacks did not finish in time and were cancelled", len(late))
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=_CANCEL_WAIT)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run_all())
    finally:
        loop.close()


async def _run(callback: Callable[..., object], awaitable: Awaitable[object]) -> object:
    try:
        return await awaitable
    except Exception:
        logger.exception("the %s callback raised", _name(callback))
        return None


def _since(seconds: float) -> str:
    """When a summed-up line's failures happened: ``just now`` (under 0.1 s), ``in the last
    0.4 s`` (under 10 s), ``in the last 42 s``. A summary at shutdown may come a moment after
    the first failure of its kind: it never says "in the last 0 s"."""
    if seconds < 0.1:
        return "just now"
    if seconds < 9.95:  # what rounds to 10.0 is said as 10
        return f"in the last {seconds:.1f} s"
    return f"in the last {seconds:.0f} s"


def _what(event: object) -> str:
    """A request's value in a log line: ``goal 'signup'`` (its kind describes it)."""
    kind = for_value(event)
    if kind is None:
        return repr(event)[:100]
    return kind.describe(kind.fields_of(event))


def _name(callback: Callable[..., object]) -> str:
    name = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None)
    return name if isinstance(name, str) else repr(callback)
