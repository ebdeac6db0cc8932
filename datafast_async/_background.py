"""``BackgroundClient``: the SDK for sync code (Celery prefork workers, Django, Flask, scripts).

One ``DataFast`` running on its own event loop in a daemon thread, started on first use. The
queued verbs (``track_nowait``, ``track_payment_nowait``, ``identify_nowait``) hand the request
to that loop thread-safely and return at once; ``flush`` and ``close`` block, each with one
deadline; the direct calls (``send``, ``send_payment``, ``send_identify``, the deletes) block
until their answer. At the process's exit an unclosed client is closed (within its
``shutdown_timeout`` plus the grace), so a script that forgets ``close()`` still delivers or
reports its requests. In a forked child the client starts afresh (its own thread, loop, queue
and session): the parent's requests stay the parent's.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import datetime
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

from ._client import DataFast
from ._config import check_positive
from ._delivery import Delivery
from ._errors import ClientClosedError, ConfigurationError, DataFastError
from ._kinds.deletes import DeleteResult
from ._kinds.identify import IdentifyResult
from ._kinds.payments import Amount, PaymentResult
from ._models import GoalResult, Stats
from ._reporting import logger
from ._run import GRACE

__all__ = ["BackgroundClient"]

T = TypeVar("T")

# Seconds the loop's thread gets to start and the client to start in it.
_START_TIMEOUT = 10.0
# Seconds, beyond aclose()'s own bound, that close() waits for the loop's thread to end.
_JOIN_TIMEOUT = 2.0


class BackgroundClient:
    """A ``DataFast`` on its own event loop in a daemon thread, for code without a loop.

    Args:
        api_key: As for ``DataFast`` (``None`` reads ``DATAFAST_API_KEY``).
        **settings: Every other ``DataFast`` setting (``website_id``, ``base_url``,
            ``spool_path``, ``on_success``, ``on_failure``, ...; callbacks run in the
            client's thread). Not ``session``: a session belongs to another loop.

    Nothing starts until the first request (or ``start()``, or ``with``). Every method may be
    called from any thread. ``close()`` is final: later requests raise ``ClientClosedError``.

    Raises:
        ConfigurationError: A setting is missing or wrong (when the client is built).
    """

    def __init__(self, api_key: str | None = None, **settings: Any) -> None:
        if settings.get("session") is not None:
            raise ConfigurationError(
                "BackgroundClient runs its own event loop: an aiohttp session of another loop "
                "cannot be used there (leave session= out)"
            )
        self._settings: dict[str, Any] = {"api_key": api_key, **settings}
        self._df = DataFast(**self._settings)  # the settings are checked now
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._final: Stats | None = None
        _live.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread is not None else "new"
        return f"BackgroundClient({self._df!r}, {state})"

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the client's thread and loop now (the first request does otherwise)."""
        self._running()

    def __enter__(self) -> BackgroundClient:
        self._running()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _running(self) -> DataFast:
        """The client, its thread and loop started (once per process)."""
        if self._pid != os.getpid():
            self._forked()
        if self._closed:
            raise ClientClosedError("the BackgroundClient is closed")
        if self._thread is not None:
            return self._df
        with self._lock:
            if self._closed:
                raise ClientClosedError("the BackgroundClient is closed")
            if self._thread is None:
                self._start_locked()
        return self._df

    def _start_locked(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=_serve, args=(loop, ready), name="datafast-background", daemon=True
        )
        thread.start()
        if not ready.wait(_START_TIMEOUT):
            raise DataFastError("the BackgroundClient's thread did not start")
        self._loop = loop
        future = asyncio.run_coroutine_threadsafe(self._df.start(), loop)
        try:
            future.result(_START_TIMEOUT)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        self._thread = thread

    def _forked(self) -> None:
        """In a forked child: the parent's thread is not here; start afresh (a new client,
        loop and thread), leaving the parent's requests to the parent."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._inherited.append(self._df)  # never used or closed here: the parent's
        self._df = DataFast(**self._settings)
        self._loop = None
        self._thread = None

    _inherited: list[DataFast] = []  # noqa: RUF012  (a forked child's copies, kept untouched)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every request accepted before the call is delivered or has finally
        failed, at most ``timeout`` seconds (``None``: as long as that takes); see
        ``DataFast.flush``. ``True`` if they all ended."""
        if timeout is not None:
            timeout = check_positive("timeout", timeout, allow_zero=True)
        if self._thread is None and not self._closed and self._pid == os.getpid():
            return True  # nothing was ever accepted
        df = self._running()
        return self._call(lambda: df.flush(timeout), None if timeout is None else timeout + GRACE)

    def close(self, timeout: float | None = None) -> Stats:
        """Close the client within one deadline (``timeout``, default ``shutdown_timeout``):
        deliver what can be delivered, report (or keep in the spool) the rest, stop the thread.
        Idempotent; returns the final ``Stats``."""
        if self._pid != os.getpid():
            self._forked()
        with self._lock:
            if self._closed:
                return self._final or self._df.stats()
            self._closed = True
            loop, thread = self._loop, self._thread
        _live.discard(self)
        if loop is None or thread is None:
            self._final = self._df.stats()
            return self._final
        if threading.current_thread() is thread:
            raise RuntimeError("BackgroundClient.close() called from its own thread (a callback)")
        seconds = self._df._options.shutdown_timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(self._df.aclose(timeout), loop)
        try:
            self._final = future.result(seconds + GRACE + _JOIN_TIMEOUT)
        except concurrent.futures.TimeoutError:
            logger.error(
                "BackgroundClient.close(): the client did not close within %g s; its thread is "
                "left to end",
                seconds + GRACE + _JOIN_TIMEOUT,
            )
            self._final = self._df.stats()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_JOIN_TIMEOUT)
        return self._final

    def stats(self) -> Stats:
        """A snapshot of the client's counters (``DataFast.stats``)."""
        return self._df.stats()

    # -- queued: they return at once --------------------------------------------------------

    def track_nowait(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Delivery[GoalResult]:
        """``DataFast.track_nowait``: validate a goal now, queue it, return at once."""
        return self._running().track_nowait(
            visitor_id, name, description=description, metadata=metadata
        )

    def track_payment_nowait(
        self,
        amount: Amount,
        currency: str,
        transaction_id: str,
        **fields: Any,
    ) -> Delivery[PaymentResult]:
        """``DataFast.track_payment_nowait``: validate a payment now, queue it."""
        return self._running().track_payment_nowait(amount, currency, transaction_id, **fields)

    def identify_nowait(
        self, visitor_id: str, user_id: str, traits: Mapping[str, object] | None = None
    ) -> Delivery[IdentifyResult]:
        """``DataFast.identify_nowait``: validate an identify now, queue it."""
        return self._running().identify_nowait(visitor_id, user_id, traits)

    # -- direct calls: they block until the answer ------------------------------------------

    def send(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> GoalResult:
        """``DataFast.send``, blocking (at most ``timeout`` seconds, else ``TimeoutError``)."""
        df = self._running()
        return self._call(
            lambda: df.send(visitor_id, name, description=description, metadata=metadata),
            timeout,
        )

    def send_payment(
        self, amount: Amount, currency: str, transaction_id: str, **fields: Any
    ) -> PaymentResult:
        """``DataFast.send_payment``, blocking (``timeout=`` seconds at most)."""
        timeout = fields.pop("timeout", None)
        df = self._running()
        return self._call(
            lambda: df.send_payment(amount, currency, transaction_id, **fields), timeout
        )

    def send_identify(
        self,
        visitor_id: str,
        user_id: str,
        traits: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> IdentifyResult:
        """``DataFast.send_identify``, blocking."""
        df = self._running()
        return self._call(lambda: df.send_identify(visitor_id, user_id, traits), timeout)

    def delete_goals(
        self,
        visitor_id: str | None = None,
        name: str | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> DeleteResult:
        """``DataFast.delete_goals``, blocking."""
        df = self._running()
        return self._call(lambda: df.delete_goals(visitor_id, name, start, end), timeout)

    def delete_payments(
        self,
        transaction_id: str | None = None,
        visitor_id: str | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> DeleteResult:
        """``DataFast.delete_payments``, blocking."""
        df = self._running()
        return self._call(
            lambda: df.delete_payments(transaction_id, visitor_id, start, end), timeout
        )

    def _call(self, make: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        """Run a coroutine of the client in its loop and wait for it (bounded by
        ``timeout``: then the call is cancelled and ``TimeoutError`` raised)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            raise ClientClosedError("the BackgroundClient is closed")
        if threading.current_thread() is thread:
            raise RuntimeError(
                "a blocking BackgroundClient call from its own thread (a callback) would "
                "wait for itself"
            )

        async def run() -> T:
            return await make()

        coroutine: Coroutine[Any, Any, T] = run()
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def _at_exit(self) -> None:
        if self._closed or self._thread is None or self._pid != os.getpid():
            return
        pending = self._df.stats()
        if pending.queued or pending.in_flight:
            logger.warning(
                "BackgroundClient not closed at exit: closing it now (%d requests pending)",
                pending.queued + pending.in_flight,
            )
        self.close()


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    """The client's thread: its loop, until ``close()`` stops it."""
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=_JOIN_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# The clients not closed yet: closed at the process's exit (each within its own deadline).
_live: weakref.WeakSet[BackgroundClient] = weakref.WeakSet()


def _close_at_exit() -> None:
    for client in list(_live):
        try:
            client._at_exit()
        except Exception:
            logger.exception("closing a BackgroundClient at exit failed")


atexit.register(_close_at_exit)
