"""The adaptive in-flight limit: it grows under a backlog, shrinks on congestion, and stays
between 1 and the ``concurrency`` ceiling (a mock transport; no real time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from datafast_async import DataFast, RetryPolicy, TransportError
from datafast_async._limiter import DECREASE, Limiter
from datafast_async._transport import Request, Response
from datafast_async.testing import FakeDataFast

from ._fakes import NO_WAIT, Recorder, error, ok, until


class Server:
    """A handler that answers after the test lets it, counting requests in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.high_water = 0
        self.answer: Callable[[Request], Response] = lambda r: ok()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: Request) -> Response:
        self.in_flight += 1
        self.high_water = max(self.high_water, self.in_flight)
        try:
            await asyncio.sleep(0)  # a round trip: every request in flight overlaps
            await self.release.wait()
            return self.answer(request)
        finally:
            self.in_flight -= 1


def client(server: Server, **kwargs: object) -> DataFast:
    recorder = Recorder(server)
    kwargs.setdefault("retry", NO_WAIT)
    return DataFast(
        "df_unit_test_key_0001",
        _transport_factory=recorder.factory,
        max_queue_size=20_000,
        **kwargs,  # type: ignore[arg-type]
    )


# -- the limiter alone --------------------------------------------------------------------------


def fill(limiter: Limiter) -> None:
    """Workers with goals waiting take every free slot."""
    while limiter.try_acquire():
        pass


def round_trip(limiter: Limiter) -> None:
    """Every request out is answered with a success while goals wait; each freed slot (and
    each new one) is taken again at once, as the sender's workers do under a backlog."""
    fill(limiter)
    for _ in range(limiter.in_use):
        epoch = limiter.epoch
        limiter.release()
        limiter.succeeded(epoch, backlog=True)
        fill(limiter)


async def test_the_limit_starts_at_eight_or_the_ceiling_below_it() -> None:
    loop = asyncio.get_running_loop()
    assert Limiter(64, loop).limit == 8
    assert Limiter(3, loop).limit == 3
    assert Limiter(64, loop, adaptive=False).limit == 64


async def test_slow_start_doubles_the_limit_once_per_round_trip() -> None:
    limiter = Limiter(64, asyncio.get_running_loop())
    for expected in (16, 32, 64, 64):  # never above the ceiling
        round_trip(limiter)
        assert limiter.limit == expected


async def test_without_a_backlog_or_a_full_limit_the_limit_does_not_grow() -> None:
    limiter = Limiter(64, asyncio.get_running_loop())
    for _ in range(100):
        limiter.succeeded(limiter.epoch, backlog=False)  # nothing waits
    assert limiter.try_acquire()
    for _ in range(100):
        limiter.succeeded(limiter.epoch, backlog=True)  # one request out of eight allowed
    assert limiter.limit == 8


async def test_congestion_shrinks_once_per_round_trip_then_growth_is_additive() -> None:
    limiter = Limiter(64, asyncio.get_running_loop())
    round_trip(limiter)
    round_trip(limiter)
    assert limiter.limit == 32
    sent_in = limiter.epoch
    for _ in range(32):  # every request of that round trip is refused: one decrease
        limiter.congested(sent_in)
    assert limiter.limit == int(32 * DECREASE)
    after = limiter.limit
    round_trip(limiter)  # one round trip of successes after the decrease: +1, not x2
    assert limiter.limit == after + 1


async def test_the_limit_never_falls_below_one() -> None:
    limiter = Limiter(64, asyncio.get_running_loop())
    for _ in range(100):
        limiter.congested(limiter.epoch)
    assert limiter.limit == 1


async def test_a_fixed_limit_ignores_the_signals() -> None:
    limiter = Limiter(8, asyncio.get_running_loop(), adaptive=False)
    limiter.congested(limiter.epoch)
    limiter.succeeded(limiter.epoch, backlog=True)
    assert limiter.limit == 8


async def test_a_caller_waiting_first_gets_the_next_slot() -> None:
    limiter = Limiter(1, asyncio.get_running_loop(), adaptive=False)
    assert limiter.try_acquire()
    order: list[str] = []

    async def take(name: str, first: bool) -> None:
        await limiter.acquire(first=first)
        order.append(name)
        limiter.release()

    worker = asyncio.create_task(take("worker", False))
    await asyncio.sleep(0)
    caller = asyncio.create_task(take("send", True))
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(worker, caller)
    assert order == ["send", "worker"]


# -- through the client -------------------------------------------------------------------------


async def test_a_backlog_raises_the_limit_to_the_ceiling_and_never_past_it() -> None:
    server = Server()
    async with client(server, concurrency=40) as df:
        assert df.stats().concurrency_limit == 8
        for i in range(3_000):
            df.track_nowait(f"v{i}", "signup")
        assert await df.flush(10)
        assert df.stats().delivered == 3_000
        assert df.stats().concurrency_limit == 40
    assert 8 < server.high_water <= 40


async def test_429s_503s_and_timeouts_lower_the_limit() -> None:
    for congestion in (
        lambda r: error(429, "slow down"),
        lambda r: Response(503, b"<html>busy</html>"),
        "timeout",
    ):
        server = Server()
        async with client(server, concurrency=64) as df:
            for i in range(2_000):
                df.track_nowait(f"v{i}", "signup")
            await until(lambda df=df: df.stats().concurrency_limit == 64)  # type: ignore[misc]
            grown = df.stats().delivered

            def refuse(request: Request, how: object = congestion) -> Response:
                if how == "timeout":
                    raise TransportError("no answer within 10 s (timeout)", timed_out=True)
                assert callable(how)
                return how(request)  # type: ignore[no-any-return]

            server.answer = refuse
            await until(lambda df=df: df.stats().concurrency_limit < 64)  # type: ignore[misc]
            server.answer = lambda r: ok()
            assert await df.flush(10)
        stats = df.stats()
        assert grown < 2_000
        assert stats.delivered + stats.failed == 2_000


async def test_a_burst_of_refusals_lowers_the_limit_once() -> None:
    """Signals from requests sent before the last decrease are ignored: 64 requests refused
    together shrink the limit by one factor, not 64 times."""
    server = Server()
    async with client(server, concurrency=64) as df:
        for i in range(2_000):
            df.track_nowait(f"v{i}", "signup")
        await until(lambda: df.stats().concurrency_limit == 64)
        server.release.clear()
        await until(lambda: server.in_flight == 64)
        refused = 0

        def refuse_this_round_trip(request: Request) -> Response:
            nonlocal refused
            if refused < 64:
                refused += 1
                return error(429, "slow down")
            return ok()

        server.answer = refuse_this_round_trip
        server.release.set()
        await until(lambda: refused == 64 and df.stats().retries >= 64)
        limit = df.stats().concurrency_limit
        # One decrease (51), then additive growth at most: never a second decrease (40).
        assert int(64 * DECREASE) <= limit <= int(64 * DECREASE) + 1
        assert await df.flush(10)


async def test_send_counts_against_the_limit() -> None:
    server = Server()
    async with client(server, concurrency=4) as df:
        server.release.clear()
        for i in range(4):
            df.track_nowait(f"v{i}", "signup")
        await until(lambda: server.in_flight == 4)
        sending = asyncio.create_task(df.send("v-send", "signup"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert server.in_flight == 4  # the send waits for a slot like any request
        assert not sending.done()
        server.release.set()
        assert (await sending).event_id is not None
    assert server.high_water == 4


async def test_the_fixed_limit_switch_keeps_the_ceiling() -> None:
    server = Server()
    async with client(server, concurrency=8, _adaptive=False) as df:
        for i in range(500):
            df.track_nowait(f"v{i}", "signup")
        server.answer = lambda r: error(429, "slow down")
        await until(lambda: df.stats().retries > 50)
        assert df.stats().concurrency_limit == 8
        server.answer = lambda r: ok()
        assert await df.flush(10)


@pytest.mark.parametrize("ceiling", [1, 2, 8])
async def test_a_small_ceiling_is_the_limit_from_the_start(ceiling: int) -> None:
    server = Server()
    async with client(server, concurrency=ceiling) as df:
        for i in range(200):
            df.track_nowait(f"v{i}", "signup")
        assert await df.flush(10)
        assert df.stats().concurrency_limit == ceiling
    assert server.high_water <= ceiling


# -- against a real server on 127.0.0.1 ---------------------------------------------------------


@pytest.mark.integration
async def test_the_limit_never_passes_the_ceiling_at_a_real_server() -> None:
    """The high-water mark of requests in flight, seen by the server, stays at the ceiling
    while the limit grows past its start to meet a backlog."""
    async with FakeDataFast(latency=0.02, jitter=0.5) as fake:
        async with DataFast(
            fake.api_key, base_url=fake.base_url, concurrency=24, max_queue_size=5_000
        ) as df:
            for i in range(2_000):
                df.track_nowait(f"v{i}", "signup")
            assert await df.flush(30)
            assert df.stats().concurrency_limit == 24
        assert df.stats().delivered == 2_000
        assert 8 < fake.max_concurrent <= 24


@pytest.mark.integration
@pytest.mark.parametrize("over", [429, 503])
async def test_a_server_at_capacity_brings_the_limit_down_and_every_goal_through(
    over: int,
) -> None:
    async with FakeDataFast(latency=0.02, capacity=6, over_capacity=over) as fake:
        async with DataFast(
            fake.api_key,
            base_url=fake.base_url,
            retry=RetryPolicy(max_attempts=50, initial_delay=0.001, max_delay=0.01),
            max_queue_size=5_000,
        ) as df:
            for i in range(600):
                df.track_nowait(f"v{i}", "signup")
            assert await df.flush(60)
            limit = df.stats().concurrency_limit
        stats = df.stats()
        assert stats.delivered == 600
        assert fake.over_capacity_answers > 0
        assert limit < 64  # it backed off from the ceiling
        # It settles near the capacity: most requests get through.
        assert fake.over_capacity_answers < stats.delivered
