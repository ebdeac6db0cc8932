"""The suite's shared fakes and helpers (not a test module: nothing here is collected).

- answers: ``ok()``, ``error()``, and ``Recorder``, a ``MockTransport`` handler that records
  each request's body and answers through a function the test sets;
- ``Gate``: a handler that holds every request until the test opens it;
- zero-delay retry policies: ``NO_WAIT`` and its friends, with the circuit's cool-downs the
  tests need;
- ``until()``: yield to the loop until a condition holds (no fixed sleeps);
- accounting: ``balances()`` (the ledger's invariant) and ``counting_settles()``;
- the spool's in-process API: ``API``, whose answers the test switches (up, down, refusing,
  bad, or holding every request until ``release()``), ``spool_client()`` wired to it, and
  helpers that read the journal's files.

conftest.py builds its fixtures (``recorder``, ``make_client``, ``settle_counts``) on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from datafast_async import DataFast, RetryPolicy, Stats
from datafast_async._delivery import Delivery
from datafast_async._spool import Journal
from datafast_async._transport import MockTransport, Request, Response

# -- answers -------------------------------------------------------------------------------------

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


class Gate:
    """A handler that holds every request until ``open`` is set, then answers through
    ``answer``, counting those it holds (and the most it held at once)."""

    def __init__(self, answer: Callable[[Request], Response] = lambda r: ok()) -> None:
        self.open = asyncio.Event()
        self.waiting = 0
        self.peak = 0
        self.answer = answer

    async def __call__(self, request: Request) -> Response:
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        return self.answer(request)


# -- retry policies without waits ----------------------------------------------------------------

# Retries at once, six attempts (the default), the circuit's default cool-downs.
NO_WAIT = RetryPolicy(max_attempts=6, initial_delay=0.0, max_delay=0.0)
# Retries at once; an open circuit stays open for the test (no probe for a minute).
NO_WAIT_NO_PROBE = RetryPolicy(initial_delay=0, max_delay=0, circuit_cooldown=60)
# Retries at once; an open circuit probes after 5 ms (at most 40 ms after failed probes).
NO_WAIT_QUICK_PROBE = RetryPolicy(
    initial_delay=0, max_delay=0, circuit_cooldown=0.005, max_circuit_cooldown=0.04
)
# Two attempts, at once; an open circuit probes after 50 ms (at most 100 ms).
NO_WAIT_TWO_TRIES = RetryPolicy(
    max_attempts=2,
    initial_delay=0.0,
    max_delay=0.0,
    circuit_cooldown=0.05,
    max_circuit_cooldown=0.1,
)


# -- waiting -------------------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (no fixed sleeps), or fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0)


# -- accounting ----------------------------------------------------------------------------------


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

    def counting(self: Delivery[Any], outcome: Any) -> bool:
        counts[id(self)] += 1
        return settle(self, outcome)

    Delivery._settle = counting  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Delivery._settle = settle  # type: ignore[method-assign]


# -- the spool's in-process API ------------------------------------------------------------------

SPOOL_KEY = "df_spool_client_key_7f3a9c21"
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
FAST_SPOOL = {"write_interval": 0.01, "sync_interval": 0.05}


class API:
    """The API as the test sets it: ``mode`` is ``"up"`` (DataFast's success), ``"down"``
    (503), ``"refused"`` (401: the circuit opens), ``"bad"`` (400: the goal fails finally)
    or ``"hold"`` (no answer until ``release()``, then the mode then in force)."""

    def __init__(self, mode: str = "up") -> None:
        self.mode = mode
        self.delivered: Counter[str] = Counter()  # metadata "i" of goals answered 200
        self.refused: Counter[str] = Counter()  # ... answered 400
        self.requests = 0
        self._released: asyncio.Event | None = None

    def factory(self) -> MockTransport:
        return MockTransport(self)

    def __call__(self, request: Request) -> Response | Any:
        self.requests += 1
        if self.mode == "hold":
            return self._held(request)
        return self._answer(request)

    async def _held(self, request: Request) -> Response:
        if self._released is None:
            self._released = asyncio.Event()
        while self.mode == "hold":
            await self._released.wait()
        return self._answer(request)

    def release(self, mode: str = "up") -> None:
        self.mode = mode
        if self._released is not None:
            self._released.set()
            self._released = None

    def _answer(self, request: Request) -> Response:
        mode = self.mode
        if mode == "up":
            self.delivered[number_of(request)] += 1
            return success_for(request)
        if mode == "bad":
            self.refused[number_of(request)] += 1
            return error(400, "bad goal")
        if mode == "refused":
            return error(401, "Invalid API key")
        return error(503, "unavailable")


def spool_client(path: Path | str, api: API, **kwargs: Any) -> DataFast:
    """A client with its spool at ``path``, sending to ``api``, with small intervals and
    ``NO_WAIT_TWO_TRIES``; keyword arguments go to DataFast."""
    kwargs.setdefault("retry", NO_WAIT_TWO_TRIES)
    kwargs.setdefault("_spool_options", FAST_SPOOL)
    kwargs.setdefault("api_key", SPOOL_KEY)
    return DataFast(spool_path=path, _transport_factory=api.factory, **kwargs)


def track(df: DataFast, start: int, count: int, kind: str = "goals") -> list[Any]:
    """``count`` requests of ``kind`` numbered from ``start`` (a goal's metadata ``"i"``, a
    payment's ``transaction_id`` ``"tx<i>"``, an identify's ``user_id`` ``"u<i>"``); their
    deliveries."""
    numbers = range(start, start + count)
    if kind == "payments":
        return [df.track_payment_nowait(1, "usd", f"tx{i}", visitor_id=VISITOR) for i in numbers]
    if kind == "identify":
        return [df.identify_nowait(VISITOR, f"u{i}") for i in numbers]
    return [df.track_nowait(VISITOR, "signup", metadata={"i": str(i)}) for i in numbers]


def number_of(request: Request) -> str:
    """The number ``track`` gave the request (any kind), as a str."""
    body = json.loads(request.body)
    path = urlsplit(request.url).path
    if path.endswith("/payments"):
        return str(body["transaction_id"][2:])
    if path.endswith("/identify"):
        return str(body["user_id"][1:])
    return str(body["metadata"]["i"])


def success_for(request: Request) -> Response:
    """DataFast's success answer for the request's endpoint."""
    path = urlsplit(request.url).path
    if path.endswith("/payments"):
        paid = {
            "message": "Payment recorded and attributed successfully",
            "transaction_id": json.loads(request.body)["transaction_id"],
        }
        return Response(200, json.dumps(paid).encode(), "OK")
    if path.endswith("/identify"):
        body = {"status": "success", "data": {"message": "User profile created", "profileId": "p"}}
        return Response(200, json.dumps(body).encode(), "OK")
    return ok()


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """The SDK's log lines of exactly ``level``."""
    return [
        r.getMessage() for r in caplog.records if r.name == "datafast_async" and r.levelno == level
    ]


def journal_of(df: DataFast) -> Journal:
    spool = df._run.spool
    assert spool is not None
    return spool.journal


def read_dir(path: Path) -> dict[str, bytes]:
    """Every journal file's bytes (a blocking read: call it in a thread from a loop)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


async def on_disk(path: Path) -> dict[str, bytes]:
    return await anyio.to_thread.run_sync(read_dir, path)


def records_in(files: dict[str, bytes]) -> list[dict[str, Any]]:
    out = []
    for data in files.values():
        for line in data.split(b"\n"):
            if line.startswith(b'{"id":'):
                out.append(json.loads(line))
    return out


def pending_ids(files: dict[str, bytes]) -> set[str]:
    """The metadata "i" of goals journaled and not acknowledged, over every file."""
    goals: dict[str, str] = {}
    acked: set[str] = set()
    for data in files.values():
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "body" in entry:
                body = entry["body"]
                if isinstance(body, str):
                    body = json.loads(body)
                goals[entry["id"]] = body["metadata"]["i"]
            elif "ack" in entry or "outcome" in entry:
                acked.add(entry.get("ack") or entry.get("id"))
    return {i for goal_id, i in goals.items() if goal_id not in acked}
