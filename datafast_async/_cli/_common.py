"""What the commands share: settings from the global options, and stop signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

from .._client import DataFast
from .._errors import APIError, AuthenticationError, DataFastError, PermissionDeniedError
from .._models import Stats

__all__ = [
    "Interruptible",
    "client_settings",
    "is_key_refused",
    "refusal",
    "refusal_hint",
    "non_negative_float",
    "positive_float",
    "positive_int",
    "probability",
    "stop_signals",
]

# The signals that stop a command gracefully, with the exit code each one ends it with.
STOP_SIGNALS: dict[int, int] = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}


def client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``DataFast``'s settings from ``--api-key``, ``--website-id`` and ``--base-url``; each
    one left out falls back to its ``DATAFAST_*`` environment variable in the client."""
    return {
        "api_key": getattr(args, "api_key", None),
        "website_id": getattr(args, "website_id", None),
        "base_url": getattr(args, "base_url", None),
    }


def refusal(error: DataFastError) -> str | None:
    """What refused the settings, when every later request with them would fail the same way:
    the API refused the key (401, 403), or a proxy asked for credentials (407). ``None`` for
    any other error."""
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return "the API refused the key"
    if isinstance(error, APIError) and error.status == 407:
        return "the proxy refused the request"
    return None


def refusal_hint(error: DataFastError) -> str:
    """What to check after ``refusal(error)``."""
    if isinstance(error, APIError) and error.status == 407:
        return "check the proxy's credentials (HTTPS_PROXY, HTTP_PROXY)"
    if isinstance(error, PermissionDeniedError):
        return (
            "check that the key may write goals for this website (a dft_ token needs "
            "goals:write) and that tracking is not suspended"
        )
    return "check --api-key or DATAFAST_API_KEY"


def is_key_refused(error: DataFastError) -> bool:
    """401, 403, or a proxy's 407: every later request with these settings fails the same way."""
    return refusal(error) is not None


@contextlib.contextmanager
def stop_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_signal(signum)`` in the running loop on SIGINT or SIGTERM, instead of the
    default (a ``KeyboardInterrupt`` raised wherever the code happens to be)."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            # No add_signal_handler (Windows, or not the main thread): a plain handler that
            # hands the signal to the loop.
            def handler(received: int, frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(on_signal, received)

            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        for signum, handler_before in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, handler_before)


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


class Interruptible:
    """What ``import`` and ``demo`` share: a stop signal cancels the work, and the client is
    then closed with a short grace (``stop_grace`` seconds) instead of its full deadline.
    ``halt(grace)`` does the same from inside the job (``import`` when the key is refused)."""

    stop_grace = 3.0

    def __init__(self) -> None:
        self.stopped_by: int | None = None  # the signal that interrupted the job
        self._halt_grace: float | None = None  # set once the work is cut short
        self._work: asyncio.Task[None] | None = None

    def on_stop(self, repeated: bool) -> None:
        """Called for each stop signal (``repeated`` after the first); says nothing by default."""

    def _stop(self, signum: int) -> None:
        self.on_stop(self.stopped_by is not None)
        if self.stopped_by is None:
            self.stopped_by = signum
            self.halt(self.stop_grace)

    def halt(self, grace: float) -> None:
        """Cancel the work now and close the client within ``grace`` seconds (the shortest
        grace asked for wins)."""
        if self._halt_grace is None or grace < self._halt_grace:
            self._halt_grace = grace
        if self._work is not None:
            self._work.cancel()

    async def work_then_close(self, client: DataFast, work: Coroutine[Any, Any, None]) -> Stats:
        """Run ``work`` until it ends or ``halt`` (a stop signal) cancels it, then close the
        client."""
        with stop_signals(self._stop):
            self._work = asyncio.ensure_future(work)
            try:
                await self._work
            except asyncio.CancelledError:
                if self._halt_grace is None:
                    raise
            finally:
                stats = await client.aclose(self._halt_grace)
        return stats
