"""The sceptic's tests of ``aclose()``'s deadline (issue 14), as a user would try them.

The contract: at ``aclose()``'s deadline every request not yet settled, wherever it is (queued,
in flight, waiting for a retry, read back from disk, parked), is kept in the spool when there is
one, else failed with ``ShutdownError``; one WARNING gives the total and the count per kind.
``aclose(timeout)`` returns within ``timeout`` plus at most about 1 s of grace, whatever a
callback, the journal, the transport or a hung API is doing.

Each test puts goals in one of those places with real sockets on 127.0.0.1 (a port nobody
listens on, a server that reads and never answers, ``FakeDataFast`` with scripted faults), calls
``aclose()`` and looks only at what a user sees: every ``Delivery`` settled, the callbacks,
``stats()``, the log, and (with a spool) a new client on the same directory delivering every
kept goal exactly once to a healthy API. Each runs with a spool and without one where both
make sense.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datafast_async import (
    DataFast,
    DataFastError,
    Delivery,
    Goal,
    GoalResult,
    RetryPolicy,
    ShutdownError,
    Stats,
)
from datafast_async.testing import FakeDataFast

from ._fakes import balances

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="the spool needs POSIX locks"),
]

KEY = "df_shutdown_deadline_key_5e1c"
OTHER_KEY = "df_not_the_clients_key_90ab"
VISITOR = "5b0d3c1e-8f7a-4a8e-9d2b-6c4f1a2e3b7d"
STRANGER = "0e9a7c55-1d2b-4c3e-8f6a-7b8c9d0e1f2a"  # a visitor the API does not know (404)
GRACE = 1.5  # seconds aclose() may take beyond its timeout (the contract: about 1 s)
DEADLINE_LINE = "still undelivered at the shutdown deadline"
PATIENT = RetryPolicy(max_attempts=20, initial_delay=0.2)
QUICK = RetryPolicy(max_attempts=6, initial_delay=0.0, max_delay=0.0)

SPOOL_OR_NOT = pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])


@pytest.fixture(autouse=True)
def _no_spool_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATAFAST_SPOOL_PATH", "DATAFAST_BASE_URL", "DATAFAST_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="datafast_async")


# -- what the API does --------------------------------------------------------------------------


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A base URL on 127.0.0.1 whose port is bound but not listening: connections are
    refused at once, for as long as the block runs (nobody else can take the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class SilentAPI:
    """A real server on 127.0.0.1 that accepts connections, reads each request and never
    answers (a hung API). ``bodies`` holds the JSON bodies it read."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> SilentAPI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(match.group(1))) if match else b""
                with contextlib.suppress(ValueError):
                    self.bodies.append(json.loads(body))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# -- what the user holds ------------------------------------------------------------------------


class Seen:
    """The callbacks' calls, by the goal's metadata id."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, DataFastError]] = []
        self.successes: list[str] = []

    def on_failure(self, goal: Goal, error: DataFastError) -> None:
        self.failures.append((ident(goal), error))

    def on_success(self, goal: Goal, result: GoalResult) -> None:
        self.successes.append(ident(goal))


def ident(goal: Goal) -> str:
    assert goal.metadata is not None
    return goal.metadata["id"]


def client(base_url: str, seen: Seen, spool: Path | None, **kwargs: Any) -> DataFast:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("on_failure", seen.on_failure)
    kwargs.setdefault("on_success", seen.on_success)
    return DataFast(base_url=base_url, spool_path=spool, **kwargs)


def spool_dir(tmp_path: Path, spooled: bool) -> Path | None:
    return tmp_path / "spool" if spooled else None


def track(df: DataFast, prefix: str, count: int, visitor: str = VISITOR) -> list[Delivery[Any]]:
    return [
        df.track_nowait(visitor, "signup", metadata={"id": f"{prefix}-{i}"}) for i in range(count)
    ]


def ids_of(deliveries: list[Delivery[Any]]) -> list[str]:
    return [ident(d.goal) for d in deliveries]


async def eventually(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    """Wait (polling, without spinning the shared CPU) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def timed_close(df: DataFast, timeout: float, deliveries: list[Delivery[Any]]) -> Stats:
    """``aclose(timeout)``, asserting it returned within ``timeout`` plus the grace, with
    every ``Delivery`` settled by then."""
    started = time.monotonic()
    stats = await df.aclose(timeout=timeout)
    elapsed = time.monotonic() - started
    pending = [d for d in deliveries if not d.done()]
    assert elapsed <= timeout + GRACE, (
        f"aclose({timeout}) took {elapsed:.2f} s (at most {timeout + GRACE:.1f} s allowed)"
    )
    assert not pending, f"{len(pending)} of {len(deliveries)} deliveries unsettled at aclose()"
    return stats


# -- what the user sees -------------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("datafast_async") and r.levelno == logging.WARNING
    ]


def per_goal_shutdown_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Lines of the failure log ("goal 'x' failed: ...", "N more goals failed the same way")
    about the shutdown: the deadline's goals must be said once, in one line, not one by one."""
    return [
        m
        for m in warnings_of(caplog)
        if (re.match(r"goal '[^']*' failed", m) or "more goals failed the same way" in m)
        and "shutdown" in m.lower()
    ]


def deadline_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNING lines that sum up the goals left at the deadline."""
    return [
        m
        for m in warnings_of(caplog)
        if DEADLINE_LINE in m
        and not re.match(r"goal '[^']*' failed", m)
        and "more goals failed the same way" not in m
    ]


def says_number(message: str, count: int) -> bool:
    return re.search(rf"(?<![\w./-]){count}(?![\w.])", message) is not None


def assert_one_deadline_warning(caplog: pytest.LogCaptureFixture, count: int) -> None:
    lines = deadline_lines(caplog)
    per_goal = per_goal_shutdown_lines(caplog)
    assert not per_goal, f"the deadline's goals were logged one by one: {per_goal[:3]}"
    assert len(lines) == 1, f"expected one WARNING with the total, got {lines}"
    assert says_number(lines[0], count), f"the WARNING does not say {count}: {lines[0]!r}"


def assert_all_settled(deliveries: list[Delivery[Any]]) -> None:
    pending = [d for d in deliveries if not d.done()]
    assert not pending, f"{len(pending)} of {len(deliveries)} deliveries never settled"


def describe(errors: list[DataFastError | None]) -> Counter[str]:
    return Counter(
        f"{type(e).__name__}(spooled={getattr(e, 'spooled', None)}): {str(e)[:80]}" for e in errors
    )


# Requests whose connection attempt was still under way when the deadline cut it: the SDK
# cannot tell whether such a request left, so it flags them maybe_delivered (at most one per
# slot of the limit).
CUT_AT_MOST = 64


def assert_flags(errors: list[ShutdownError], maybe_delivered: bool) -> None:
    """Every error's ``maybe_delivered`` is ``maybe_delivered``; where that is ``False``, the
    few requests cut while connecting may say ``True``."""
    flags = [e.maybe_delivered for e in errors]
    if maybe_delivered:
        assert all(flags), flags
    else:
        assert sum(flags) <= CUT_AT_MOST, flags


def assert_kept(
    deliveries: list[Delivery[Any]],
    seen: Seen,
    stats: Stats,
    caplog: pytest.LogCaptureFixture,
    *,
    maybe_delivered: bool | None = None,
) -> None:
    """With a spool: every goal left at the deadline stays on disk for the next start."""
    assert_all_settled(deliveries)
    errors = [d.error for d in deliveries]
    kept = [e for e in errors if isinstance(e, ShutdownError) and e.spooled]
    assert len(kept) == len(deliveries), f"not all kept in the spool: {describe(errors)}"
    if maybe_delivered is not None:
        assert_flags(kept, maybe_delivered)
    called = Counter(type(e).__name__ for _, e in seen.failures)
    assert not seen.failures, f"on_failure was called for goals kept in the spool: {called}"
    assert stats.spooled == len(deliveries), stats
    assert stats.failed == 0, stats
    assert balances(stats), stats
    assert_one_deadline_warning(caplog, len(deliveries))


def assert_failed_at_deadline(
    deliveries: list[Delivery[Any]],
    seen: Seen,
    stats: Stats,
    caplog: pytest.LogCaptureFixture,
    *,
    maybe_delivered: bool | None = None,
) -> None:
    """Without a spool: every goal left at the deadline fails with ``ShutdownError``,
    reported once each, and one WARNING says how many."""
    assert_all_settled(deliveries)
    errors = [d.error for d in deliveries]
    assert all(isinstance(e, ShutdownError) and not e.spooled for e in errors), describe(errors)
    if maybe_delivered is not None:
        assert_flags([e for e in errors if isinstance(e, ShutdownError)], maybe_delivered)
    reported = Counter(i for i, e in seen.failures if isinstance(e, ShutdownError))
    assert reported == Counter(ids_of(deliveries)), (
        f"on_failure: {sum(reported.values())} ShutdownError calls for {len(deliveries)} goals"
    )
    assert stats.spooled == 0, stats
    assert stats.failed == len(deliveries), stats
    assert balances(stats), stats
    assert_one_deadline_warning(caplog, len(deliveries))


async def assert_next_start_delivers(spool: Path, expected: list[str]) -> None:
    """A new client on the same spool, against a healthy API, delivers each kept goal once."""
    seen = Seen()
    async with FakeDataFast(api_key=KEY) as fake:
        df = client(fake.base_url, seen, spool, retry=QUICK)
        try:
            await df.start()
            # (A goal that never arrives is reported below, with the others.)
            with contextlib.suppress(AssertionError):
                await eventually(lambda: len(fake.goals) >= len(expected), timeout=5)
            await df.flush(timeout=5)
        finally:
            stats = await df.aclose(timeout=5)
        delivered = Counter(ident(goal) for goal in fake.goals)
    missing = set(expected) - set(delivered)
    extra = set(delivered) - set(expected)
    twice = {i: n for i, n in delivered.items() if n > 1}
    assert not missing, f"{len(missing)} kept goals never delivered, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} goals delivered that were not kept: {sorted(extra)[:3]}"
    assert not twice, f"goals delivered more than once: {dict(list(twice.items())[:3])}"
    assert stats.delivered == len(expected), stats
    assert stats.spooled == 0, stats
    assert not seen.failures, Counter(type(e).__name__ for _, e in seen.failures)


# -- 1. queued: never taken before the deadline ---------------------------------------------


@SPOOL_OR_NOT
async def test_goals_still_queued_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool
) -> None:
    total = 40
    spool = spool_dir(tmp_path, spooled)
    seen = Seen()
    async with SilentAPI() as api:
        df = client(api.base_url, seen, spool, concurrency=1, timeout=30)
        await df.start()
        deliveries = track(df, "queued", total)
        # One goal is out (the API holds it), every other one waits in the queue.
        await eventually(lambda: len(api.bodies) == 1)
        before = df.stats()
        assert before.in_flight == 1, before
        assert before.queued == total - 1, before
        out = api.bodies[0]["metadata"]["id"]
        stats = await timed_close(df, 0.5, deliveries)

    # The one the API held may have been recorded; the queued ones never left.
    flags = {ident(d.goal): getattr(d.error, "maybe_delivered", None) for d in deliveries}
    assert flags == {i: i == out for i in ids_of(deliveries)}, flags
    if spooled:
        assert spool is not None
        assert_kept(deliveries, seen, stats, caplog)
        await assert_next_start_delivers(spool, ids_of(deliveries))
    else:
        assert_failed_at_deadline(deliveries, seen, stats, caplog)


# -- 2. in flight: the API holds the request past the deadline -------------------------------


@SPOOL_OR_NOT
async def test_requests_in_flight_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool
) -> None:
    total = 5
    spool = spool_dir(tmp_path, spooled)
    seen = Seen()
    async with FakeDataFast(api_key=KEY) as fake:
        # Each request is held far longer than the deadline (and than the client's timeout
        # is relevant): the request has left, no answer comes back.
        fake.fail_next(delay=60.0, times=total)
        df = client(fake.base_url, seen, spool)
        await df.start()
        deliveries = track(df, "inflight", total)
        await eventually(lambda: fake.in_flight == total)
        before = df.stats()
        assert before.in_flight == total, before
        assert before.queued == 0, before
        stats = await timed_close(df, 0.5, deliveries)

    if spooled:
        assert spool is not None
        assert_kept(deliveries, seen, stats, caplog, maybe_delivered=True)
        await assert_next_start_delivers(spool, ids_of(deliveries))
    else:
        assert_failed_at_deadline(deliveries, seen, stats, caplog, maybe_delivered=True)


# -- 3. waiting for a retry ------------------------------------------------------------------


@SPOOL_OR_NOT
async def test_goals_waiting_to_retry_a_refused_connection_with_the_default_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool
) -> None:
    """The reported bug: the API refuses connections, the default policy's backoff reaches
    past a 1 s deadline; every goal waiting for its retry was failed, spool or not."""
    total = 500
    spool = spool_dir(tmp_path, spooled)
    seen = Seen()
    with refusing_url() as url:
        # The default backoff. Without a spool, enough attempts that no goal can use them all
        # up within the second (with 6, a lucky draw of the jitter sometimes does, and that
        # goal then fails with its own TransportError, rightly, before the deadline).
        policy = None if spooled else RetryPolicy(max_attempts=1000)
        df = client(url, seen, spool, retry=policy)
        await df.start()
        deliveries = track(df, "refused", total)
        await eventually(lambda: df.stats().queued == 0 and df.stats().retries > 0)
        before = df.stats()
        assert before.in_flight == total, before  # each tried once, waiting to retry
        stats = await timed_close(df, 1.0, deliveries)

    if spooled:
        assert spool is not None
        # Never connected: nothing can have reached the API.
        assert_kept(deliveries, seen, stats, caplog, maybe_delivered=False)
        await assert_next_start_delivers(spool, ids_of(deliveries))
    else:
        assert_failed_at_deadline(deliveries, seen, stats, caplog, maybe_delivered=False)


@SPOOL_OR_NOT
async def test_goals_waiting_to_retry_a_503_with_a_patient_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool
) -> None:
    total = 50
    spool = spool_dir(tmp_path, spooled)
    seen = Seen()
    async with FakeDataFast(api_key=KEY) as fake:
        fake.fail_next(503, times=100_000)
        df = client(fake.base_url, seen, spool, retry=PATIENT)
        await df.start()
        deliveries = track(df, "busy", total)
        await eventually(lambda: df.stats().queued == 0 and df.stats().retries > 0)
        before = df.stats()
        assert before.in_flight == total, before
        assert before.failed == 0, before
        stats = await timed_close(df, 1.0, deliveries)

    if spooled:
        assert spool is not None
        assert_kept(deliveries, seen, stats, caplog)
        await assert_next_start_delivers(spool, ids_of(deliveries))
    else:
        assert_failed_at_deadline(deliveries, seen, stats, caplog)


@SPOOL_OR_NOT
async def test_goals_waiting_out_a_retry_after_longer_than_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool
) -> None:
    """A 429 with ``Retry-After: 30``: the goals that got it wait to retry, the others wait
    in the queue behind the paused sender."""
    total = 30
    spool = spool_dir(tmp_path, spooled)
    seen = Seen()
    async with FakeDataFast(api_key=KEY) as fake:
        fake.fail_next(429, retry_after=30, times=100_000)
        df = client(fake.base_url, seen, spool)
        await df.start()
        deliveries = track(df, "later", total)
        await eventually(lambda: any(r.status == 429 for r in fake.requests))
        await eventually(lambda: df.stats().in_flight == len(fake.requests))
        before = df.stats()
        assert before.in_flight > 0, before
        assert before.failed == 0, before
        stats = await timed_close(df, 0.5, deliveries)

    if spooled:
        assert spool is not None
        assert_kept(deliveries, seen, stats, caplog, maybe_delivered=False)
        await assert_next_start_delivers(spool, ids_of(deliveries))
    else:
        assert_failed_at_deadline(deliveries, seen, stats, caplog, maybe_delivered=False)


# -- 4. read back from disk (spool only) -----------------------------------------------------


async def test_goals_spilled_to_disk_and_being_read_back_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond ``max_queue_size`` goals wait on disk and are read back as a slow API drains
    the queue; at the deadline some are in memory again, some still on disk only."""
    total, room = 300, 20
    spool = tmp_path / "spool"
    seen = Seen()
    async with FakeDataFast(api_key=KEY, latency=0.05) as fake:
        df = client(fake.base_url, seen, spool, concurrency=4, max_queue_size=room)
        await df.start()
        deliveries = track(df, "spilled", total)
        assert df.stats().dropped == 0
        # More delivered than fit in memory: goals have been read back from disk.
        await eventually(lambda: df.stats().delivered > room + 10)
        before = df.stats()
        assert before.spooled > 0, before  # still on disk only
        assert before.queued > 0, before  # read back into memory, waiting to be sent
        stats = await timed_close(df, 0.5, deliveries)

    assert_all_settled(deliveries)
    delivered = [d for d in deliveries if d.result is not None]
    left = [d for d in deliveries if d.result is None]
    assert delivered, "nothing was delivered before the deadline"
    assert left, "everything was delivered before the deadline: the test proves nothing"
    assert sorted(seen.successes) == sorted(ids_of(delivered))
    assert stats.delivered == len(delivered), stats
    assert_kept(left, seen, stats, caplog)
    await assert_next_start_delivers(spool, ids_of(left))


async def test_goals_adopted_from_an_earlier_run_and_being_read_back_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The next start takes over an earlier run's goals and reads them back from disk as a
    slow API drains the queue; its deadline comes before they are all sent."""
    total = 200
    spool = tmp_path / "spool"

    # The earlier run: a hung API, so every goal is left in the spool at its deadline.
    async with SilentAPI() as api:
        earlier = client(api.base_url, Seen(), spool, concurrency=1, timeout=30)
        await earlier.start()
        track(earlier, "adopted", total)
        await eventually(lambda: len(api.bodies) == 1)
        left = await earlier.aclose(timeout=0.2)
    assert left.spooled == total, f"setup: the earlier run did not keep its goals: {left}"
    caplog.clear()

    seen = Seen()
    async with FakeDataFast(api_key=KEY, latency=0.05) as fake:
        df = client(fake.base_url, seen, spool, concurrency=4, max_queue_size=20)
        await df.start()
        await eventually(lambda: df.stats().enqueued == total)  # the scan has finished
        await eventually(lambda: df.stats().delivered > 30)
        before = df.stats()
        assert before.spooled > 0, before  # still on disk only
        assert before.queued > 0, before  # read back into memory, waiting to be sent
        stats = await timed_close(df, 0.5, [])  # nobody holds adopted goals' Delivery

    assert stats.enqueued == total, stats
    assert stats.delivered == len(seen.successes), stats
    assert 0 < stats.delivered < total, stats
    called = Counter(type(e).__name__ for _, e in seen.failures)
    assert not seen.failures, f"on_failure was called for goals kept in the spool: {called}"
    assert stats.spooled == total - stats.delivered, stats
    assert stats.failed == 0, stats
    assert balances(stats), stats
    assert_one_deadline_warning(caplog, stats.spooled)
    rest = sorted({f"adopted-{i}" for i in range(total)} - set(seen.successes))
    await assert_next_start_delivers(spool, rest)


# -- 5. parked on disk behind an open circuit (spool only) ------------------------------------


@pytest.mark.parametrize("why", ["refused-key", "down"])
async def test_goals_parked_behind_an_open_circuit_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, why: str
) -> None:
    """The API refuses the key (401: the circuit opens), or stays down until the goals run
    out of attempts (503: with a spool they wait on disk, the API treated as down)."""
    total = 100
    spool = tmp_path / "spool"
    seen = Seen()
    api_key = OTHER_KEY if why == "refused-key" else KEY
    async with FakeDataFast(api_key=api_key) as fake:
        if why == "down":
            fake.fail_next(503, times=100_000)
        retry = (
            RetryPolicy()
            if why == "refused-key"
            else RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
        )
        df = client(fake.base_url, seen, spool, retry=retry)
        await df.start()
        deliveries = track(df, why, total)
        # Every goal still pending is parked on disk: flush() says so instead of waiting.
        assert await df.flush(timeout=8) is False
        before = df.stats()
        assert before.spooled == total, before
        stats = await timed_close(df, 0.5, deliveries)

    assert_kept(deliveries, seen, stats, caplog)
    await assert_next_start_delivers(spool, ids_of(deliveries))


# -- 6. callbacks that hang ------------------------------------------------------------------


@SPOOL_OR_NOT
@pytest.mark.parametrize("stubborn", [False, True], ids=["hangs", "ignores-cancel"])
async def test_async_callbacks_that_never_return_do_not_hold_aclose(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spooled: bool, stubborn: bool
) -> None:
    """``on_success`` and ``on_failure`` are coroutines that never return (or even ignore
    being cancelled, until the test lets them go after aclose()): aclose still returns within
    its timeout plus the grace, and every goal is settled."""
    spool = spool_dir(tmp_path, spooled)
    released = asyncio.Event()
    started: list[str] = []

    async def hang(goal: Goal, outcome: object) -> None:
        started.append(ident(goal))
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                if not stubborn:
                    raise

    failures: list[tuple[str, DataFastError]] = []

    async def on_failure(goal: Goal, error: DataFastError) -> None:
        failures.append((ident(goal), error))
        await hang(goal, error)

    early, late = 5, 30
    try:
        async with FakeDataFast(api_key=KEY, known_visitors={VISITOR}) as fake:
            # The first requests are answered at once (a success, or a 404 for a visitor the
            # API does not know: both callbacks start, and hang); later ones are held.
            fake.fail_next(delay=0.0, times=2 * early)
            fake.fail_next(delay=60.0, times=100_000)
            df = client(
                fake.base_url,
                Seen(),
                spool,
                on_success=hang,
                on_failure=on_failure,
                concurrency=4,
            )
            await df.start()
            answered = track(df, "ok", early) + track(df, "unknown", early, visitor=STRANGER)
            await eventually(lambda: len(started) == 2 * early)
            held = track(df, "held", late)
            await eventually(lambda: fake.in_flight > 0)
            stats = await timed_close(df, 0.5, answered + held)
    finally:
        released.set()
        await asyncio.sleep(0.05)  # the stubborn callbacks end

    assert_all_settled(answered + held)
    assert all(d.result is not None for d in answered[:early])
    assert all(not isinstance(d.error, ShutdownError) for d in answered[early:])
    errors = [d.error for d in held]
    assert all(isinstance(e, ShutdownError) for e in errors), describe(errors)
    shut = Counter(i for i, e in failures if isinstance(e, ShutdownError))
    assert balances(stats), stats
    if spooled:
        assert all(isinstance(e, ShutdownError) and e.spooled for e in errors), describe(errors)
        assert not shut, "on_failure was called for goals kept in the spool"
        assert stats.spooled == late, stats
    else:
        assert shut == Counter(ids_of(held)), f"{sum(shut.values())} ShutdownError reports"
        assert stats.spooled == 0, stats
    assert_one_deadline_warning(caplog, late)
