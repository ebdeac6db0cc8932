"""``Delivery``: the handle ``track`` (and every other queued verb) returns, settled once with
the request's fate."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from ._errors import DataFastError

if TYPE_CHECKING:
    from ._kinds import Fields, Kind
    from ._models import Goal

__all__ = ["Delivery", "FieldsDelivery", "pending"]

R = TypeVar("R")


class Delivery(Generic[R]):
    """The fate of one request handed to ``track``/``track_nowait`` (or another queued verb).

    It settles exactly once: with the result (a ``GoalResult`` for a goal) when the API
    accepted the request, or with the final ``DataFastError`` when it failed, was dropped at
    the door, or was still undelivered at ``aclose()``'s deadline. It always settles, at the
    latest when ``aclose()`` returns. Nobody has to await it: an unobserved ``Delivery`` costs
    one small object and never warns.

    Attributes:
        event: The validated value (a ``Goal``, ...).
        goal: The same, for a goal's ``Delivery`` (the name it had before other kinds).
    """

    # A plain slotted class: one is built per request on the hot path, and it is the
    # per-request memory that a queue of 10,000 holds. Each kind has its own subclass (in its
    # module of ``_kinds``) that keeps the kind's validated fields in slots of its own (no
    # tuple held per request), gives them back as ``_fields``, and builds the value (``Goal``)
    # only when somebody asks for it (a callback, ``.event``). ``_outcome`` is None, a
    # result, a DataFastError, or the API's 2xx body (bytes), read by the kind into its
    # result only when somebody asks; ``_waiters`` is created only when somebody awaits.
    # ``_wire`` keeps the request body once the kind encoded it (with a spool: the bytes
    # journaled are the bytes sent) and ``_spool`` the request's state in the journal
    # (``_spool.RunSpool``); a weak reference finds a request the app still holds when it
    # comes back from disk.
    __slots__ = (
        "__weakref__",
        "_event",
        "_kind",
        "_outcome",
        "_spool",
        "_waiters",
        "_wire",
    )

    if TYPE_CHECKING:
        _kind: Kind[Any, R]
        _event: object
        _outcome: object
        _waiters: list[asyncio.Future[None]] | None
        _wire: bytes | None
        _spool: object

    def __new__(cls, event: object) -> Delivery[Any]:
        """A new, unsettled ``Delivery`` for a validated value (a ``Goal``, ...): of its
        kind's own subclass."""
        from ._kinds import for_value

        kind = for_value(event)
        if kind is None:
            raise TypeError(f"no kind of request takes a {type(event).__name__}")
        delivery = kind.pending(kind.fields_of(event))
        delivery._event = event
        return delivery

    def __init__(self, event: object) -> None:
        pass  # built by __new__

    @property
    def _fields(self) -> Fields:
        """The kind's validated fields (its subclass keeps them)."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """The kind of request: ``"goals"``, ... (the keys of ``Stats.by_kind``)."""
        return self._kind.name

    @property
    def event(self) -> Any:
        """The validated value (the same object every time)."""
        event = self._event
        if event is None:
            # Built once, by whichever thread asks first (the lock only on this slow path, so
            # two threads cannot build two); the fields were validated already.
            with _build_lock:
                event = self._event
                if event is None:
                    event = self._event = self._kind.build(self._fields)
        return event

    @property
    def goal(self) -> Goal:
        """The validated goal (the same object every time); a goal's ``Delivery`` only."""
        if not self._kind.goal_alias:
            noun = self._kind.noun
            article = "an" if noun[:1] in "aeiou" else "a"
            raise AttributeError(f"{article} {noun}'s Delivery has no .goal: use .event")
        goal: Goal = self.event
        return goal

    def __repr__(self) -> str:
        outcome = self._outcome
        state = "pending" if outcome is None else repr(self.result or outcome)
        return f"<Delivery {self._kind.describe(self._fields)} {state}>"

    def _body(self) -> bytes:
        """The request body: the bytes the spool journaled, when it did (the kind's encoding
        is deterministic: the same bytes either way); not kept otherwise, so that a request
        waiting in memory holds no copy of it."""
        wire = self._wire
        if wire is None:
            return self._kind.encode(self._fields)
        return wire

    def done(self) -> bool:
        """Whether the request's fate is known."""
        return self._outcome is not None

    @property
    def result(self) -> R | None:
        """The API's answer once the request was delivered, else ``None``."""
        outcome = self._outcome
        if type(outcome) is bytes:
            # Read once, by whichever thread asks first (the same object for every caller).
            with _build_lock:
                outcome = self._outcome
                if type(outcome) is bytes:
                    outcome = self._outcome = self._kind.read_result(outcome)
        if outcome is None or isinstance(outcome, DataFastError):
            return None
        result: R = outcome  # type: ignore[assignment]
        return result

    @property
    def error(self) -> DataFastError | None:
        """The final error once the request failed or was dropped, else ``None``."""
        outcome = self._outcome
        return outcome if isinstance(outcome, DataFastError) else None

    async def wait(self, timeout: float | None = None) -> R:
        """Wait for the request's fate.

        Args:
            timeout: Seconds to wait at most; ``None`` waits until it settles (at the latest
                when the client's ``aclose()`` returns).

        Returns:
            The API's answer.

        Raises:
            DataFastError: The final error (an ``APIError``, ``TransportError``,
                ``QueueFullError`` or ``ShutdownError``).
            TimeoutError: The timeout came first; the request is still on its way.
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

    def _settle(self, outcome: object) -> bool:
        """Record the fate (a result, the success body, or the final error); the first call
        wins. Only ``_fate`` calls it, in the client's loop."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for future in waiters:
                _wake(future)
        return True


# Guards the lazy building of a Delivery's value and result (rare, never on the hot path).
_build_lock = threading.Lock()


def after_fork() -> None:
    """In a forked child: a new lock (a thread of the parent may have held this one)."""
    global _build_lock
    _build_lock = threading.Lock()


def pending(kind: Kind[Any, R], fields: Fields) -> Delivery[R]:
    """A new, unsettled ``Delivery`` for fields that the kind's validator returned (no value
    is built until somebody asks for it)."""
    return kind.pending(fields)


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


class FieldsDelivery(Delivery[R]):
    """A ``Delivery`` that keeps its kind's validated fields as one tuple (payments,
    identify: kinds whose queues are not the 10,000-goal hot path that goals' slots serve)."""

    __slots__ = ("_values",)

    if TYPE_CHECKING:
        _values: Fields

    @property
    def _fields(self) -> Fields:
        return self._values

    def _body(self) -> bytes:
        wire = self._wire
        if wire is None:
            return self._kind.encode(self._values)
        return wire

    @classmethod
    def holding(cls, kind: Kind[Any, R], fields: Fields) -> FieldsDelivery[R]:
        """A new, unsettled one of ``kind`` holding ``fields`` (every slot set here)."""
        delivery: FieldsDelivery[R] = object.__new__(cls)
        delivery._kind = kind
        delivery._event = None
        delivery._outcome = None
        delivery._waiters = None
        delivery._wire = None
        delivery._spool = None
        delivery._values = fields
        return delivery
