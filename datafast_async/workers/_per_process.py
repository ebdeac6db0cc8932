"""One ``BackgroundClient`` per worker process, for the sync task queues (Celery, Dramatiq).

Their workers run tasks in plain threads of forked processes, with no event loop: each process
gets its own ``BackgroundClient``, built on first use (or at the process's start, so that a
spool left by a killed worker is taken over at once) from the settings given once. A forked
child never uses its parent's client: it builds its own.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._background import BackgroundClient
from .._client import DataFast
from .._config import check_positive
from .._errors import ClientClosedError, ConfigurationError
from .._models import Stats

__all__ = ["PerProcess", "check_timeouts", "import_error"]

logger = logging.getLogger("datafast_async.workers")

# A timed-out flush is said at once, then at most once per this many seconds (with a count).
_WARN_EVERY = 60.0


def import_error(module: str, library: str, exc: ImportError) -> ImportError | None:
    """The ImportError to raise for ``exc`` when ``library`` itself is missing (naming the
    extra to install); ``None`` when something else failed to import (re-raise that)."""
    if (exc.name or "").split(".")[0] != library:
        return None
    error = ImportError(
        f"datafast_async.workers.{module} needs {library}: pip install 'datafast-async[{module}]'"
    )
    error.name = library
    return error


def check_timeouts(flush_timeout: float, close_timeout: float | None) -> tuple[float, float | None]:
    """The integrations' own two settings, checked (``ConfigurationError`` otherwise)."""
    flush = check_positive("flush_timeout", flush_timeout, allow_zero=True)
    if close_timeout is None:
        return flush, None
    return flush, check_positive("close_timeout", close_timeout, allow_zero=True)


class PerProcess:
    """This process's ``BackgroundClient``, built from ``settings`` on first use."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        if settings.get("session") is not None:
            raise ConfigurationError(
                "a worker's client runs its own event loop: leave session= out"
            )
        known = set(inspect.signature(DataFast.__init__).parameters) - {"self"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigurationError(f"unknown DataFast settings: {', '.join(unknown)}")
        self._settings = dict(settings)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._client: BackgroundClient | None = None
        self._timed_out = 0  # flushes that timed out since the last WARNING
        self._warned_at: float | None = None

    def _here(self) -> None:
        """In a forked child: forget the parent's client (never used here) and its lock."""
        pid = os.getpid()
        if self._pid != pid:
            self._pid = pid
            self._lock = threading.Lock()
            self._client = None
            self._timed_out = 0
            self._warned_at = None

    def client(self) -> BackgroundClient:
        """This process's client (built now if it is not yet; it starts on first use).

        Raises:
            ConfigurationError: A setting is missing or wrong (``DATAFAST_API_KEY`` unset, ...).
        """
        self._here()
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = BackgroundClient(**self._settings)
            return self._client

    def existing(self) -> BackgroundClient | None:
        """This process's client if it was built, else ``None``."""
        self._here()
        return self._client

    def start(self) -> None:
        """Build and start this process's client now: its thread, loop and session, and with a
        spool the files an earlier worker left are taken over and sent first."""
        self.client().start()

    def flush(self, after: str, timeout: float) -> bool:
        """Flush this process's client within ``timeout`` seconds after ``after`` (a task, a
        message). A flush that times out is said in a WARNING (the first at once, then at most
        one a minute, counting the others), never raised: the requests go on in the
        background. ``True`` when everything accepted before was delivered or finally failed."""
        client = self.existing()
        if client is None:
            return True
        try:
            if client.flush(timeout):
                return True
        except ClientClosedError:
            return True  # closed: its close() delivered, kept or said everything
        self._said_timeout(after, timeout, client.stats())
        return False

    def _said_timeout(self, after: str, timeout: float, stats: Stats) -> None:
        with self._lock:
            self._timed_out += 1
            now = time.monotonic()
            if self._warned_at is not None and now - self._warned_at < _WARN_EVERY:
                return
            count, self._timed_out, self._warned_at = self._timed_out, 0, now
        others = ""
        if count > 1:
            others = f" ({count - 1} more flushes timed out since the last such WARNING)"
        logger.warning(
            "the flush after %s did not end within %g s: %d requests still pending (%d queued, "
            "%d in flight, %d in the spool); they go on in the background and are delivered, "
            "kept in the spool, or said at the worker's shutdown%s",
            after,
            timeout,
            stats.queued + stats.in_flight + stats.spooled,
            stats.queued,
            stats.in_flight,
            stats.spooled,
            others,
        )

    def close(self, timeout: float | None) -> Stats | None:
        """Close this process's client within ``timeout`` seconds (``None``: its
        ``shutdown_timeout``): what cannot be delivered by then is kept in the spool or said in
        the shutdown WARNING. ``None`` if this process never built one."""
        client = self.existing()
        if client is None:
            return None
        return client.close(timeout)
