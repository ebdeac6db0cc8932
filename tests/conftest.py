"""Shared helpers: a client wired to a MockTransport whose handler each test scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import blockbuster.blockbuster
import pytest
from blockbuster import BlockingError, blockbuster_ctx

from datafast_async import DataFast, RetryPolicy, Stats
from datafast_async._delivery import Delivery
from datafast_async._transport import MockTransport, Request, Response

NO_WAIT = RetryPolicy(max_attempts=6, initial_delay=0.0, max_delay=0.0)
EVENT_ID = "67f8b9b5c320277df9a9d681"


def ok(event_id: str = EVENT_ID) -> Response:
    body = {
        "status": "success",
        "data": [{"message": "Custom event created successfully", "eventId": event_id}],
    }
    return Response(200, json.dumps(body).encode(), "OK")


def error(status: int, message: str = "nope", retry_after: str | None = None) -> Response:
    body = {"status": "error", "error": {"code": status, "message": message}}
    return Response(status, json.dumps(body).encode(), "", retry_after)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class Recorder:
    """A MockTransport handler that records bodies and answers through ``answer``."""

    def __init__(self, answer: Handler | None = None) -> None:
        self.answer = answer or (lambda request: ok())
        self.bodies: list[dict[str, Any]] = []
        self.transports: list[MockTransport] = []

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        self.bodies.append(json.loads(request.body))
        return self.answer(request)

    def factory(self) -> MockTransport:
        transport = MockTransport(self)
        self.transports.append(transport)
        return transport

    @property
    def names(self) -> list[str]:
        return [body["name"] for body in self.bodies]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_client(recorder: Recorder) -> Callable[..., DataFast]:
    """Build a client on the recorder's MockTransport; keyword arguments go to DataFast."""

    def make(**kwargs: Any) -> DataFast:
        kwargs.setdefault("api_key", "df_unit_test_key_0001")
        kwargs.setdefault("retry", NO_WAIT)
        return DataFast(_transport_factory=recorder.factory, **kwargs)

    return make


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (no fixed sleeps), or fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0)


# -- no blocking call in the event loop ------------------------------------------------------


class _Blocked(BlockingError):
    """blockbuster's error, also recorded: the SDK may catch it (a callback's or a transport's
    exception is logged, not raised), and the test must fail all the same."""

    seen: ClassVar[list[str]] = []

    def __init__(self, func: str) -> None:
        super().__init__(func)
        self.seen.append(f"{func} in thread {threading.current_thread().name}")


@pytest.fixture(autouse=True)
def no_blocking_in_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test when the SDK makes a blocking call in a running event loop.

    blockbuster patches the blocking functions (``time.sleep``, file and socket I/O, a
    ``threading.Lock`` held elsewhere, ...) and raises ``BlockingError`` when one is called in
    a running loop with a ``datafast_async`` frame on the stack, in any thread (sync tests run
    loops with ``asyncio.run`` too). Its testing package is left out of the scan:
    ``ThreadedFakeDataFast`` runs its own loop on a thread and shares its lock with the test's
    thread; it is scaffolding, not the SDK. A logging handler's own writes are allowed: where
    the SDK's log lines go (pytest's log file handler, here) is the application's choice, and
    so is Hypothesis's tracing of every line after a failure (to explain it). The queue's lock
    is allowed too, in every method that takes it (other threads share them: ``track_nowait``
    may be called from any thread, ``stats()`` read from one); each holds it for a few
    operations, never for I/O. So
    are the spool's locks, which the loop shares with the journal's writer thread (the same:
    a few operations, never I/O).
    Every such error is also recorded, so that one the SDK caught and logged still fails the
    test.
    """
    monkeypatch.setattr(blockbuster.blockbuster, "BlockingError", _Blocked)
    _Blocked.seen.clear()
    with blockbuster_ctx(
        scanned_modules=["datafast_async"], excluded_modules=["datafast_async.testing"]
    ) as buster:
        for function in buster.functions.values():
            function.can_block_in("logging/__init__.py", {"emit", "flush"})
            # Hypothesis's explain phase traces every line after a failure, ours included.
            function.can_block_in("hypothesis/internal/scrutineer.py", {"trace", "trace_line"})
        lock = buster.functions["threading.Lock.acquire"]
        # The queue's lock, in every method that takes it: other threads share them (a
        # track_nowait from a worker thread, a metrics exporter reading stats()).
        lock.can_block_in(
            "datafast_async/_queue.py",
            {
                "offer", "record_drop", "take", "unpark", "finish", "park", "take_all",
                "spill", "adopt", "refill", "discard", "to_disk", "items", "pending",
                "snapshot", "active", "flush_waiter", "release_flush_waiters", "_check_flush",
                "push_front", "close_intake",
            },
        )  # fmt: skip
        # The spool's locks, shared with its writer thread, held for a few operations and
        # never across I/O: the journal's buffers, and a goal's place in the journal.
        lock.can_block_in("datafast_async/_spool/_journal.py", {"append", "ack", "faults"})
        lock.can_block_in(
            "datafast_async/_spool/_run_spool.py",
            {"settled", "park", "keep", "spill", "_turn_off", "_bring_back", "take_held"},
        )
        yield
    seen, _Blocked.seen[:] = list(_Blocked.seen), []
    assert not seen, f"blocking calls in the event loop: {seen}"


# -- accounting ------------------------------------------------------------------------------


def balances(stats: Stats) -> bool:
    """The ledger's invariant: every accepted goal is delivered, failed, queued or in flight
    (or, with a spool, held on disk)."""
    held = stats.queued + stats.in_flight + getattr(stats, "spooled", 0)
    return stats.enqueued == stats.delivered + stats.failed + held


@contextlib.contextmanager
def counting_settles() -> Iterator[Counter[int]]:
    """How many times each ``Delivery`` was settled while the block runs (by ``id``; keep the
    deliveries alive): the first call wins and later ones are silently ignored, so only a
    count shows them."""
    counts: Counter[int] = Counter()
    settle = Delivery._settle

    def counting(self: Delivery, outcome: Any) -> bool:
        counts[id(self)] += 1
        return settle(self, outcome)

    Delivery._settle = counting  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Delivery._settle = settle  # type: ignore[method-assign]


@pytest.fixture
def settle_counts() -> Iterator[Counter[int]]:
    """``counting_settles()`` for the whole test."""
    with counting_settles() as counts:
        yield counts
