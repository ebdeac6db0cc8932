"""One ``DataFast`` per worker, in the worker's own event loop, for the async task queues (arq,
taskiq): made when the worker starts (never at import: the sending side of a queue, and the
import of a worker's module, need no key), flushed after each job, closed at the shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from .._client import DataFast
from .._config import check_positive
from .._errors import ConfigurationError

__all__ = ["ClientSource", "InLoop", "import_error"]

logger = logging.getLogger("datafast_async.workers")

#: What an integration is given: a client, a function that builds one, or ``None`` (each
#: worker builds ``DataFast(**settings)`` when it starts, reading ``DATAFAST_*`` then).
ClientSource = DataFast | Callable[[], DataFast] | None

# A flush that did not end is said at once, then at most once per this many seconds (with a
# count): an API down for an hour is not one WARNING per job.
_WARN_EVERY = 60.0


def import_error(module: str, library: str, exc: ImportError) -> ImportError | None:
    """The ImportError to raise for ``exc`` when ``library`` itself is missing (naming the
    extra to install); ``None`` when ``exc`` is about something else (re-raise that)."""
    if (exc.name or "").split(".")[0] != library:
        return None
    return ImportError(
        f"datafast_async.workers.{module} needs {library}: pip install 'datafast-async[{module}]'"
    )


def _timeout(name: str, value: float | None) -> float | None:
    return None if value is None else check_positive(name, value, allow_zero=True)


class InLoop:
    """How a worker's client is made, flushed and closed (the client itself is kept by the
    integration: in arq's ``ctx``, on taskiq's middleware)."""

    def __init__(
        self,
        client: ClientSource,
        settings: dict[str, Any],
        flush_timeout: float | None,
        close_timeout: float | None,
    ) -> None:
        if client is not None and settings:
            raise ConfigurationError(
                "pass a client (or a function that builds one) or DataFast settings, not both "
                f"(got client= and {', '.join(sorted(settings))})"
            )
        if client is not None and not (isinstance(client, DataFast) or callable(client)):
            raise ConfigurationError(
                "client must be a DataFast, a function returning one, or None; got "
                f"{type(client).__name__}"
            )
        if settings:
            try:  # the names now; the values (and the environment) when the worker starts
                inspect.signature(DataFast).bind(**settings)
            except TypeError as exc:
                raise ConfigurationError(f"not a DataFast setting: {exc}") from None
        self._client = client
        self._settings = settings
        self.flush_timeout = _timeout("flush_timeout", flush_timeout)
        self.close_timeout = _timeout("close_timeout", close_timeout)
        self._not_out = 0  # flushes that did not end since the last WARNING
        self._warned_at: float | None = None

    async def start(self) -> DataFast:
        """Make the client and start it in the running loop (a spool that earlier workers
        left is taken over: its requests are sent first)."""
        source = self._client
        if source is None:
            client = DataFast(**self._settings)
        elif isinstance(source, DataFast):
            client = source
        else:
            client = source()
            if not isinstance(client, DataFast):
                raise ConfigurationError(
                    f"the client function returned {type(client).__name__}, not a DataFast"
                )
        await client.start()
        return client

    async def flush(self, client: DataFast, after: str) -> bool:
        """``client.flush(flush_timeout)`` after a job; one that does not end is said in a
        WARNING (the first at once, then at most one a minute, counting the others), never
        raised: the requests go on in the background. Returns flush's answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if await client.flush(self.flush_timeout):
                return True
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the flush after %s failed", after)
            return False
        self._said_not_out(after, loop.time() - started, client)
        return False

    def _said_not_out(self, after: str, waited: float, client: DataFast) -> None:
        self._not_out += 1
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < _WARN_EVERY:
            return
        count, self._not_out, self._warned_at = self._not_out, 0, now
        timeout = self.flush_timeout
        why = (
            f"did not end within {timeout:g} s"
            if timeout is not None and waited >= timeout
            else "ended with every request pending parked in the spool (the API is down)"
        )
        stats = client.stats()
        logger.warning(
            "the flush after %s %s: %d requests still pending (%d queued, %d in flight, %d in "
            "the spool); they go on in the background and are delivered, kept in the spool, or "
            "said at the worker's shutdown%s",
            after,
            why,
            stats.queued + stats.in_flight + stats.spooled,
            stats.queued,
            stats.in_flight,
            stats.spooled,
            f" ({count - 1} more flushes since the last such WARNING)" if count > 1 else "",
        )

    async def close(self, client: DataFast) -> None:
        """``client.aclose(close_timeout)``: what is undelivered at the deadline stays in the
        spool (with one) or fails with ``ShutdownError``, said in one WARNING."""
        await client.aclose(self.close_timeout)
