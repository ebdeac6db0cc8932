"""``Delivery``: the handle ``track`` returns, settled once with the goal's fate."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import anyio

from ._errors import DataFastError
from ._models import Goal, GoalResult

__all__ = ["Delivery"]


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
    # memory that a queue of 10,000 goals holds. ``_outcome`` is None, a GoalResult or a
    # DataFastError; ``_waiters`` is created only when somebody awaits.
    __slots__ = ("_outcome", "_waiters", "goal")

    if TYPE_CHECKING:
        goal: Goal
        _outcome: GoalResult | DataFastError | None
        _waiters: list[asyncio.Future[None]] | None

    def __init__(self, goal: Goal) -> None:
        self.goal = goal
        self._outcome = None
        self._waiters = None

    def __repr__(self) -> str:
        outcome = self._outcome
        state = "pending" if outcome is None else repr(outcome)
        return f"<Delivery {self.goal.name!r} {state}>"

    def done(self) -> bool:
        """Whether the goal's fate is known."""
        return self._outcome is not None

    @property
    def result(self) -> GoalResult | None:
        """The API's answer once the goal was delivered, else ``None``."""
        outcome = self._outcome
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
                with anyio.fail_after(timeout):
                    await future
            finally:
                waiters = self._waiters
                if waiters is not None and future in waiters:
                    waiters.remove(future)
        outcome = self._outcome
        if isinstance(outcome, GoalResult):
            return outcome
        assert outcome is not None
        raise outcome

    def _settle(self, outcome: GoalResult | DataFastError) -> bool:
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
