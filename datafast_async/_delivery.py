"""``Delivery``: the handle ``track`` returns, settled once with the goal's fate."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import anyio

from ._errors import DataFastError
from ._models import Goal, GoalResult, checked_goal
from ._outcome import read_result
from ._wire import encode_fields

__all__ = ["Delivery", "pending"]


class Delivery:
    """The fate of one goal handed to ``track``/``track_nowait``.

    It settles exactly once: with a ``GoalResult`` when the API accepted the goal, or with the
    final ``DataFastError`` when it failed, was dropped at the door, or was still undelivered at
    ``aclose()``'s deadline. It always settles, at the latest when ``aclose()`` returns. Nobody
    has to await it: an unobserved ``Delivery`` costs one small object and never warns.

    Attributes:
        goal: The validated goal.
    """

    # A plain slotted class: one is built per goal on the hot path, and it is the per-goal
    # memory that a queue of 10,000 goals holds. It keeps the goal's validated fields and
    # builds the ``Goal`` only when somebody asks for it (a callback, ``.goal``): track_nowait
    # then allocates one object, and a queued goal costs one object less. ``_outcome`` is None,
    # a GoalResult, a DataFastError, or the API's 2xx body (bytes), read into a GoalResult
    # only when somebody asks; ``_waiters`` is created only when somebody awaits.
    # With a spool, ``_wire`` keeps the request body once encoded (the bytes journaled are
    # the bytes sent) and ``_spool`` the goal's state in the journal (``_durable``); a weak
    # reference finds a goal the app still holds when it comes back from disk.
    __slots__ = (
        "__weakref__",
        "_description",
        "_goal",
        "_metadata",
        "_name",
        "_outcome",
        "_spool",
        "_visitor_id",
        "_waiters",
        "_wire",
    )

    if TYPE_CHECKING:
        _visitor_id: str
        _name: str
        _description: str | None
        _metadata: dict[str, str] | None
        _goal: Goal | None
        _outcome: GoalResult | DataFastError | bytes | None
        _waiters: list[asyncio.Future[None]] | None
        _wire: bytes | None
        _spool: object

    def __init__(self, goal: Goal) -> None:
        self._visitor_id = goal.visitor_id
        self._name = goal.name
        self._description = goal.description
        self._metadata = goal.metadata  # type: ignore[assignment]  # a dict, made by Goal
        self._goal = goal
        self._outcome = None
        self._waiters = None
        self._wire = None
        self._spool = None

    @property
    def goal(self) -> Goal:
        """The validated goal (the same object every time)."""
        goal = self._goal
        if goal is None:
            # Built once, by whichever thread asks first (the lock only on this slow path, so
            # two threads cannot build two); the fields were validated already.
            with _build_lock:
                goal = self._goal
                if goal is None:
                    goal = self._goal = checked_goal(
                        self._visitor_id, self._name, self._description, self._metadata
                    )
        return goal

    def __repr__(self) -> str:
        outcome = self._outcome
        state = "pending" if outcome is None else repr(self.result or outcome)
        return f"<Delivery {self._name!r} {state}>"

    def _body(self) -> bytes:
        """The goal's request body: the bytes the spool journaled, when it did (encoding is
        deterministic: the same bytes either way); not kept otherwise, so that a goal waiting
        in memory holds no copy of it."""
        wire = self._wire
        if wire is None:
            return encode_fields(self._visitor_id, self._name, self._description, self._metadata)
        return wire

    def done(self) -> bool:
        """Whether the goal's fate is known."""
        return self._outcome is not None

    @property
    def result(self) -> GoalResult | None:
        """The API's answer once the goal was delivered, else ``None``."""
        outcome = self._outcome
        if type(outcome) is bytes:
            # Read once, by whichever thread asks first (the same object for every caller).
            with _build_lock:
                outcome = self._outcome
                if type(outcome) is bytes:
                    outcome = self._outcome = read_result(outcome)
        return outcome if isinstance(outcome, GoalResult) else None

    @property
    def error(self) -> DataFastError | None:
        """The final error once the goal failed or was dropped, else ``None``."""
        outcome = self._outcome
        return outcome if isinstance(outcome, DataFastError) else None

    async def wait(self, timeout: float | None = None) -> GoalResult:
        """Wait for the goal's fate.

        Args:
            timeout: Seconds to wait at most; ``None`` waits until it settles (at the latest
                when the client's ``aclose()`` returns).

        Returns:
            The API's answer.

        Raises:
            DataFastError: The goal's final error (an ``APIError``, ``TransportError``,
                ``QueueFullError`` or ``ShutdownError``).
            TimeoutError: The timeout came first; the goal is still on its way.
        """
        if self._outcome is None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(future)
            try:
                # _settle (maybe in another thread) sets the outcome, then reads the waiters:
                # if it read them before our append, the outcome is already visible here.
                if self._outcome is None:
                    with anyio.fail_after(timeout):
                        await future
            finally:
                waiters = self._waiters
                if waiters is not None and future in waiters:
                    waiters.remove(future)
        result = self.result
        if result is not None:
            return result
        outcome = self._outcome
        assert isinstance(outcome, DataFastError)
        raise outcome

    def _settle(self, outcome: GoalResult | DataFastError | bytes) -> bool:
        """Record the goal's fate; the first call wins. Called in the client's loop."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for future in waiters:
                _wake(future)
        return True


_new_delivery = object.__new__
# Guards the lazy building of a Delivery's Goal and GoalResult (rare, never on the hot path).
_build_lock = threading.Lock()


def after_fork() -> None:
    """In a forked child: a new lock (a thread of the parent may have held this one)."""
    global _build_lock
    _build_lock = threading.Lock()


def pending(
    visitor_id: str, name: str, description: str | None, metadata: dict[str, str] | None
) -> Delivery:
    """A new, unsettled ``Delivery`` for fields that ``validate_goal`` returned (the hot path:
    no ``Goal`` is built until somebody asks for it)."""
    delivery: Delivery = _new_delivery(Delivery)
    delivery._visitor_id = visitor_id
    delivery._name = name
    delivery._description = description
    delivery._metadata = metadata
    delivery._goal = None
    delivery._outcome = None
    delivery._waiters = None
    delivery._wire = None
    delivery._spool = None
    return delivery


def _wake(future: asyncio.Future[None]) -> None:
    loop = future.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        if not future.done():
            future.set_result(None)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_set_if_pending, future)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
