"""What the commands share: settings from the global options, and stop signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import re
import signal
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

from .._client import DataFast
from .._errors import (
    APIError,
    AuthenticationError,
    DataFastError,
    PermissionDeniedError,
    VisitorNotFoundError,
)
from .._kinds.payments import parse_timestamp
from .._models import Stats
from ._output import EXIT_FAILED, EXIT_USAGE, CLIError

__all__ = [
    "Interruptible",
    "client_settings",
    "is_key_refused",
    "refusal",
    "refusal_exit",
    "request_failed",
    "refusal_hint",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "probability",
    "stop_signals",
]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

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


def refusal(error: DataFastError, plural: str = "goals") -> str | None:
    """What refused the settings, when every later request of the kind ``plural`` with them
    would fail the same way: the API refused the key (401, 403), or a proxy asked for
    credentials (407). ``None`` for any other error. A 403 to another kind than goals is the
    API refusing that kind with this key (a ``dft_`` token may lack its permission and hold
    ``goals:write``)."""
    if isinstance(error, AuthenticationError):
        return "the API refused the key"
    if isinstance(error, PermissionDeniedError):
        return (
            "the API refused the key"
            if plural == "goals"
            else f"the API refuses {plural} with this key"
        )
    if isinstance(error, APIError) and error.status == 407:
        return "the proxy refused the request"
    return None


def refusal_hint(error: DataFastError, permission: str = "goals:write") -> str:
    """What to check after ``refusal(error)``; ``permission``: the one the request needs."""
    if isinstance(error, APIError) and error.status == 407:
        return "check the proxy's credentials (HTTPS_PROXY, HTTP_PROXY)"
    if isinstance(error, PermissionDeniedError):
        what = permission.partition(":")[0]
        if what == "goals":
            return (
                "check that the key may write goals for this website (a dft_ token needs "
                "goals:write) and that tracking is not suspended"
            )
        return (
            f"check the token's permissions: a dft_ token needs {permission} for this "
            "website (goals need goals:write)"
        )
    return "check --api-key or DATAFAST_API_KEY"


def refusal_exit(error: DataFastError, plural: str = "goals") -> int:
    """The exit code of a command the refusal ``refusal(error)`` stopped: 2 (the settings)
    for the key or the proxy; 1 (not delivered) for a 403 to another kind than goals, whose
    permission the token may lack while the key works for the rest."""
    if isinstance(error, PermissionDeniedError) and plural != "goals":
        return EXIT_FAILED
    return EXIT_USAGE


def request_failed(
    error: DataFastError, noun: str, plural: str, permission: str, *, again: str = ""
) -> CLIError:
    """The one line and exit code of a request sent now (``send-payment``, ``identify``)
    that failed finally: the key or the proxy refused (2; a 403 to another kind than goals:
    1), the API refused it (1), or it could not be delivered (1; ``again`` is said then)."""
    refused_by = refusal(error, plural)
    if refused_by is not None:
        return CLIError(
            f"{refused_by}: {error} ({refusal_hint(error, permission)})",
            refusal_exit(error, plural),
        )
    if isinstance(error, VisitorNotFoundError):
        return CLIError(
            f"the API refused the {noun}: {error} (the visitor needs a pageview on this website "
            "first)",
            EXIT_FAILED,
        )
    if isinstance(error, APIError) and not error.retriable:
        return CLIError(f"the API refused the {noun}: {error}", EXIT_FAILED)
    return CLIError(f"the {noun} was not delivered: {error}{again}", EXIT_FAILED)


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


def parse_moment(text: str, *, dates: bool = False) -> datetime.datetime:
    """An argparse type: ISO 8601 with a zone (``2024-03-01T12:00:00Z``) as an aware
    ``datetime`` in UTC; with ``dates``, a date alone too (midnight UTC)."""
    if dates and _DATE.fullmatch(text):
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a date: {text!r}") from None
        return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        also = " or a date alone (2024-03-01: midnight UTC)" if dates else ""
        raise argparse.ArgumentTypeError(
            f"expected ISO 8601 with a zone, such as 2024-03-01T12:00:00Z or "
            f"2024-03-01T13:00:00+01:00{also}; got {text!r} (a time without a zone would be read "
            "in an unknown one)"
        ) from None


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
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
