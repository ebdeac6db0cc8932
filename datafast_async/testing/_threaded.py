"""``ThreadedFakeDataFast``: ``FakeDataFast`` on a daemon thread, for synchronous tests.

The server runs in its own event loop on its own thread, so it answers while the test's thread
blocks (a sync test, or an async test under any async plugin). Everything that touches the
server's loop is handed to it thread-safely; the rest goes through the fake's lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import ssl as ssl_module
import threading
from collections.abc import Callable, Collection
from types import TracebackType
from typing import TypeVar

from .._kinds.identify import Identify
from .._kinds.payments import Payment
from .._models import Goal
from ._fake import FakeDataFast, FakeRequest

__all__ = ["ThreadedFakeDataFast"]

_T = TypeVar("_T")

_THREAD_TIMEOUT = 10.0  # seconds the server thread gets to start or stop


class ThreadedFakeDataFast:
    """``FakeDataFast`` on a daemon thread with its own event loop, for any kind of test.

    It takes the same arguments and exposes the same attributes and methods; all of them may
    be called from any thread. Use it as a context manager, or call ``start()`` and
    ``close()``; ``close()`` returns within a few seconds even with requests held or
    keep-alive connections open.

    Example:
        >>> with ThreadedFakeDataFast() as fake:  # doctest: +SKIP
        ...     fake.fail_next(503, retry_after=0)
        ...     run_my_app(base_url=fake.base_url, api_key=fake.api_key)
        ...     assert [g.name for g in fake.goals] == ["signup"]
        ...     assert [p.transaction_id for p in fake.payments] == ["ch_1"]
    """

    def __init__(
        self,
        *,
        api_key: str = "df_test",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float | Callable[[], float] = 0.0,
        known_visitors: Collection[str] | None = None,
        website_id: str | None = None,
        fail_rate: float = 0.0,
        seed: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
        jitter: float = 0.0,
        capacity: int | None = None,
        rate_limit: float | None = None,
        over_capacity: int = 429,
        permissions: Collection[str] | None = None,
    ) -> None:
        self._fake = FakeDataFast(
            api_key=api_key,
            host=host,
            port=port,
            latency=latency,
            known_visitors=known_visitors,
            website_id=website_id,
            fail_rate=fail_rate,
            seed=seed,
            ssl=ssl,
            jitter=jitter,
            capacity=capacity,
            rate_limit=rate_limit,
            over_capacity=over_capacity,
            permissions=permissions,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"Threaded{self._fake!r}"

    def __enter__(self) -> ThreadedFakeDataFast:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the server thread and wait until it listens.

        Raises:
            RuntimeError: It already runs, or did not start in time.
            OSError: The address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("ThreadedFakeDataFast is already running")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=asyncio.run, args=(self._serve(ready),), name="datafast-fake", daemon=True
        )
        thread.start()
        try:
            ready.result(timeout=_THREAD_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise RuntimeError("the fake DataFast server did not start in time") from None
        except BaseException:
            thread.join(_THREAD_TIMEOUT)
            raise
        self._thread = thread

    def close(self) -> None:
        """Stop the server and its thread (within a few seconds). Idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        self._thread = None
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join(_THREAD_TIMEOUT)
        self._loop = None

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._fake.start()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await self._fake.close()

    def _in_loop(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` in the server's loop and return its result."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return function()

        async def call() -> _T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(_THREAD_TIMEOUT)

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (``https://`` with ``ssl``)."""
        return self._fake.base_url

    @property
    def api_key(self) -> str:
        """The token the server accepts."""
        return self._fake.api_key

    @property
    def website_id(self) -> str | None:
        """The website a ``dft_`` token may write to (``None``: any)."""
        return self._fake.website_id

    @property
    def known_visitors(self) -> frozenset[str] | None:
        """Visitor ids with a pageview; ``None`` accepts all. Settable at any time."""
        return self._fake.known_visitors

    @known_visitors.setter
    def known_visitors(self, visitors: Collection[str] | None) -> None:
        self._fake.known_visitors = visitors

    @property
    def permissions(self) -> frozenset[str]:
        """The permissions of a ``dft_`` token (all three by default). Settable at any time
        (``None``: all three again)."""
        return self._fake.permissions

    @permissions.setter
    def permissions(self, permissions: Collection[str] | None) -> None:
        self._fake.permissions = permissions

    @property
    def goals(self) -> list[Goal]:
        """A copy of the accepted goals (less the deleted ones), in order."""
        return self._fake.goals

    @property
    def received_goals(self) -> list[tuple[Goal, datetime.datetime]]:
        """``goals``, each with the time the fake received it (UTC, to the millisecond)."""
        return self._fake.received_goals

    @property
    def payments(self) -> list[Payment]:
        """A copy of the recorded payments (less the deleted ones), once per transaction."""
        return self._fake.payments

    @property
    def received_payments(self) -> list[tuple[Payment, datetime.datetime]]:
        """``payments``, each with the time the fake received it (UTC, to the millisecond)."""
        return self._fake.received_payments

    @property
    def identities(self) -> list[Identify]:
        """A copy of the accepted identifies, in order."""
        return self._fake.identities

    @property
    def requests(self) -> list[FakeRequest]:
        """A copy of the most recent requests answered, oldest first."""
        return self._fake.requests

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        return self._fake.in_flight

    @property
    def max_concurrent(self) -> int:
        """The most requests handled at once since start (or ``reset()``)."""
        return self._fake.max_concurrent

    @property
    def connections(self) -> int:
        """Distinct TCP connections that sent a request since start (or ``reset()``)."""
        return self._fake.connections

    @property
    def over_capacity_answers(self) -> int:
        """Requests answered ``over_capacity`` (beyond ``capacity`` or ``rate_limit``)."""
        return self._fake.over_capacity_answers

    def fail_next(
        self,
        status: int | None = None,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        disconnect: bool = False,
        delay: float = 0.0,
        path: str | None = None,
        lose_answer: bool = False,
    ) -> None:
        """Script the next answers (only for ``path``'s endpoint, when given; ``lose_answer``:
        record, then drop the connection unanswered); see ``FakeDataFast.fail_next``.

        Raises:
            ValueError: An argument is out of range.
        """
        self._fake.fail_next(
            status,
            times=times,
            retry_after=retry_after,
            disconnect=disconnect,
            delay=delay,
            path=path,
            lose_answer=lose_answer,
        )

    def reset(self) -> None:
        """Forget the goals, payments, identities, requests, scripted answers and connection
        counters."""
        self._fake.reset()

    def pause(self) -> None:
        """Hold every new request at the server until ``resume()`` (at most 30 s each)."""
        self._in_loop(self._fake.pause)

    def resume(self) -> None:
        """Let held requests, and new ones, through."""
        self._in_loop(self._fake.resume)

    def wait_held(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Block until at least ``count`` requests are held by ``pause()``.

        Raises:
            TimeoutError: Fewer were held after ``timeout`` seconds.
            RuntimeError: The server is not running.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("ThreadedFakeDataFast is not started")
        future = asyncio.run_coroutine_threadsafe(
            self._fake.wait_held(count, timeout=timeout), loop
        )
        future.result()
