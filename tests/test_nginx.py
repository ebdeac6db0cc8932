"""Through a real reverse proxy: nginx, started by the test, in front of FakeDataFast.

While a few thousand goals go through nginx, the test kills and restarts the upstream (nginx
answers its real 502 page), makes it hang past nginx's read timeout (504), drops connections
(502 again), and kills and restarts nginx itself (resets, refused connections). What a user
relies on must hold all along: each goal ends once, with the right error when it fails; the
counters balance at every moment; and a goal is recorded twice only after an attempt whose
answer did not come from DataFast.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datafast_async import (
    DataFast,
    DataFastError,
    Goal,
    GoalResult,
    RetryPolicy,
    ServerError,
    ShutdownError,
    Stats,
    TransportError,
)
from datafast_async._kinds.goals import is_success
from datafast_async._outcome import Answer
from datafast_async._transport import AiohttpTransport, Transport
from datafast_async.testing import FakeDataFast

from ._fakes import VISITOR
from ._netservers import NGINX, Nginx, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        NGINX is None,
        reason="nginx is not installed (.ci/run installs it with apt-get install nginx)",
    ),
]

KEY = "df_nginxtest_0123456789abcdef4321"
GOALS = 2_300  # delivered through the faults
LAST = 200  # tracked at the end, while the upstream hangs: cut by aclose()'s deadline
CONCURRENCY = 8
READ_TIMEOUT = 1.0  # nginx's proxy_read_timeout: a hang past it is a 504
REACH_TIMEOUT = 20.0  # seconds any one phase may take, at most


class Witness:
    """The client's real transport, wrapped: what each attempt got, by visitor id, as the
    client saw it."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.attempts: collections.Counter[str] = collections.Counter()
        #: Attempts whose answer did not come from DataFast: nginx's own pages, resets,
        #: refused connections, timeouts, requests cut by the shutdown.
        self.unanswered: collections.Counter[str] = collections.Counter()
        self.successes: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.transport_errors: collections.Counter[str] = collections.Counter()
        self.cut = 0
        self.pages: dict[int, bytes] = {}

    async def send(self, method: str, target: str, body: bytes | None) -> Answer:
        assert body is not None
        visitor = json.loads(body)["datafast_visitor_id"]
        self.attempts[visitor] += 1
        try:
            answer = await self.inner.send(method, target, body)
        except TransportError as exc:
            self.unanswered[visitor] += 1
            self.transport_errors[_kind(exc)] += 1
            raise
        except BaseException:  # cut by aclose()'s deadline: it may have reached the server
            self.unanswered[visitor] += 1
            self.cut += 1
            raise
        status, raw, _, _ = answer
        self.statuses[status] += 1
        if status == 200 and is_success(raw):
            self.successes[visitor] += 1
        elif not raw.lstrip().startswith(b"{"):  # not DataFast's JSON: nginx's HTML page
            self.unanswered[visitor] += 1
            self.pages.setdefault(status, raw)
        return answer

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def gateway_pages(self) -> int:
        return self.statuses[502] + self.statuses[504]

    @property
    def failed_attempts(self) -> int:
        return sum(self.unanswered.values())


def _kind(error: TransportError) -> str:
    text = str(error)
    if "cannot connect" in text:
        return "refused"
    if "timeout" in text:
        return "timeout"
    return "reset"


async def reach(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REACH_TIMEOUT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {REACH_TIMEOUT:g} s: {what}")
        await asyncio.sleep(0.005)


def balances(stats: Stats) -> bool:
    in_spool = getattr(stats, "spooled", 0)
    return stats.enqueued == stats.delivered + stats.failed + stats.queued + stats.in_flight + (
        in_spool
    )


async def test_goals_through_nginx_end_once_while_upstream_and_nginx_fail(
    tmp_path: Path,
) -> None:
    fake = FakeDataFast(api_key=KEY)
    await fake.start()
    nginx = Nginx(tmp_path / "nginx", int(fake.base_url.rsplit(":", 1)[1]), read_timeout=1.0)
    successes: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    errors: list[DataFastError] = []
    witnesses: list[Witness] = []
    faults: collections.Counter[str] = collections.Counter()
    samples: list[Stats] = []
    unbalanced: list[Stats] = []

    def on_success(goal: Goal, result: GoalResult) -> None:
        successes[goal.visitor_id] += 1

    def on_failure(goal: Goal, error: DataFastError) -> None:
        failures[goal.visitor_id] += 1
        errors.append(error)

    try:
        await nginx.start()
        df: DataFast

        def witness() -> Transport:
            settings = df._options.settings
            transport = Witness(
                AiohttpTransport(
                    settings.base_url, settings.headers, timeout=3.0, concurrency=CONCURRENCY
                )
            )
            witnesses.append(transport)
            return transport

        df = DataFast(
            KEY,
            base_url=nginx.base_url,
            concurrency=CONCURRENCY,
            timeout=3.0,  # longer than nginx's read timeout: its 504 comes first
            retry=RetryPolicy(max_attempts=6, initial_delay=0.005, max_delay=0.05),
            on_success=on_success,
            on_failure=on_failure,
            _transport_factory=witness,
        )

        async def sample() -> None:
            while True:
                stats = df.stats()
                samples.append(stats)
                if not balances(stats):
                    unbalanced.append(stats)
                await asyncio.sleep(0.002)

        await df.start()
        sampler = asyncio.ensure_future(sample())
        seen = witnesses[0]

        def delivered(count: int) -> Callable[[], bool]:
            return lambda: df.stats().delivered >= count

        def failed_with(kind: type[DataFastError]) -> int:
            return sum(isinstance(error, kind) for error in errors)

        deliveries = [df.track_nowait(f"visitor-{i:05d}", "checkout") for i in range(GOALS)]

        async def feed() -> None:
            # Goals never run out while a fault waits to be seen: during an outage they burn
            # through their attempts fast, and a phase with none left would see no request.
            while True:
                if sum(not d.done() for d in deliveries[-400:]) < 200:
                    start = len(deliveries)
                    deliveries.extend(
                        df.track_nowait(f"visitor-{start + i:05d}", "checkout") for i in range(200)
                    )
                await asyncio.sleep(0.005)

        feeder = asyncio.ensure_future(feed())

        # 1. The upstream hangs past nginx's read timeout: 504s (and the goals, recorded
        # late, are duplicates of their retries).
        await reach(delivered(200), "200 goals delivered")
        fake.fail_next(delay=READ_TIMEOUT * 2.5, times=6)
        faults["upstream hangs"] += 6
        await reach(lambda: seen.statuses[504] >= 6, "six 504s from nginx")

        # 2. The upstream is killed, then restarted on the same port: 502s meanwhile, until
        # a few goals have run out of attempts on them.
        await reach(delivered(600), "600 goals delivered")
        before = seen.statuses[502]
        await fake.close()
        faults["upstream kills"] += 1
        await reach(lambda: seen.statuses[502] >= before + 30, "thirty 502s from nginx")
        await reach(lambda: failed_with(ServerError) >= 5, "five goals failed on 502s")
        await fake.start()

        # 3. nginx itself is killed (SIGKILL) and restarted: resets, refused connections,
        # until a few goals have run out of attempts on them.
        await reach(delivered(1_000), "1,000 goals delivered")
        before = sum(seen.transport_errors.values())
        await nginx.kill()
        faults["nginx kills"] += 1
        await reach(
            lambda: sum(seen.transport_errors.values()) >= before + 20, "twenty transport errors"
        )
        await reach(lambda: failed_with(TransportError) >= 3, "three goals failed unanswered")
        await nginx.start()

        # 4. The upstream drops connections without answering: nginx's 502 again.
        await reach(delivered(1_400), "1,400 goals delivered")
        before = seen.statuses[502]
        fake.fail_next(disconnect=True, times=10)
        faults["upstream disconnects"] += 10
        await reach(lambda: seen.statuses[502] >= before + 10, "ten more 502s")

        # 5. Killed and restarted twice more, the second time with hangs queued for when it
        # is back.
        await reach(delivered(1_700), "1,700 goals delivered")
        before = seen.statuses[502]
        await fake.close()
        faults["upstream kills"] += 1
        await reach(lambda: seen.statuses[502] >= before + 30, "thirty more 502s")
        await fake.start()
        await reach(delivered(1_900), "1,900 goals delivered")
        before = seen.statuses[502]
        await fake.close()
        faults["upstream kills"] += 1
        await reach(lambda: seen.statuses[502] >= before + 30, "thirty more 502s")
        fake.fail_next(delay=READ_TIMEOUT * 2.5, times=4)
        faults["upstream hangs"] += 4
        await fake.start()

        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await reach(lambda: all(d.done() for d in deliveries), "every goal settled")

        # 6. The upstream hangs; the last goals are still out at aclose()'s deadline.
        fake.pause()
        fed = len(deliveries)
        last = [df.track_nowait(f"visitor-{fed + i:05d}", "checkout") for i in range(LAST)]
        await fake.wait_held(1, timeout=REACH_TIMEOUT)
        faults["upstream pauses"] += 1
        final = await df.aclose(timeout=0.3)
        sampler.cancel()
        deliveries += last
    finally:
        await fake.close()  # held and delayed requests are dropped, never recorded
        await nginx.stop()

    total = len(deliveries)
    # Every goal ended once: its Delivery, one callback, the counters.
    assert all(d.done() for d in deliveries)
    assert final.enqueued == total
    assert final.delivered + final.failed == total
    assert final.queued == final.in_flight == 0
    assert sum(d.result is not None for d in deliveries) == final.delivered
    assert sum(d.error is not None for d in deliveries) == final.failed
    assert set(successes.values()) <= {1}
    assert set(failures.values()) <= {1}
    assert not set(successes) & set(failures)
    assert len(successes) == final.delivered
    assert len(failures) == final.failed
    # The counters balanced at every sample.
    assert unbalanced == []
    assert len(samples) > 100
    # Each failed goal has the error that says what happened.
    kinds: collections.Counter[str] = collections.Counter()
    for error in errors:
        if isinstance(error, ServerError):
            assert error.status in (502, 504)
            assert "nginx" in error.message
            assert ("Bad Gateway" if error.status == 502 else "Gateway Time-out") in error.message
            assert "<" not in error.message
            kinds[f"ServerError {error.status}"] += 1
        elif isinstance(error, TransportError):
            kinds["TransportError"] += 1
        else:
            assert isinstance(error, ShutdownError), repr(error)
            kinds["ShutdownError"] += 1
    assert kinds["ServerError 502"] >= 5
    assert kinds["TransportError"] >= 3
    # The last goals could not be delivered: cut, or never sent, at the deadline.
    assert kinds["ShutdownError"] >= LAST
    assert all(isinstance(d.error, ShutdownError) for d in last)
    assert any(d.error.maybe_delivered for d in last if isinstance(d.error, ShutdownError))
    # What the client saw: nginx's real pages, resets and refused connections.
    seen = witnesses[0]
    assert set(seen.statuses) <= {200, 502, 504}
    assert seen.statuses[504] >= 6
    assert seen.statuses[502] >= 100
    assert sum(seen.transport_errors.values()) >= 20
    assert b"nginx" in seen.pages[502]
    assert b"nginx" in seen.pages[504]
    # Every delivered goal is at the server; a goal is there more than once only after
    # attempts whose answer did not come from DataFast, never more often than those.
    recorded = collections.Counter(goal.visitor_id for goal in fake.goals)
    for delivery in deliveries:
        visitor = delivery.goal.visitor_id
        if delivery.result is not None:
            assert recorded[visitor] >= 1
            assert seen.successes[visitor] == 1
        assert recorded[visitor] <= seen.successes[visitor] + seen.unanswered[visitor], visitor
    assert set(recorded) <= {d.goal.visitor_id for d in deliveries}
    duplicates = sum(count - 1 for count in recorded.values() if count > 1)
    assert duplicates <= seen.failed_attempts
    assert final.retries >= seen.failed_attempts - final.failed

    figures: dict[str, Any] = {
        "goals": total,
        "delivered": final.delivered,
        "failed": dict(kinds),
        "faults injected": dict(faults),
        "nginx starts": nginx.starts,
        "attempts": sum(seen.attempts.values()),
        "retries": final.retries,
        "statuses": dict(seen.statuses),
        "transport errors": dict(seen.transport_errors),
        "cut at the deadline": seen.cut,
        "unanswered attempts": seen.failed_attempts,
        "recorded at the server": len(fake.goals),
        "duplicates": duplicates,
        "stats samples": len(samples),
    }
    print("\nthrough nginx: " + json.dumps(figures, indent=1))


async def test_a_goal_the_api_recorded_but_nginx_answered_504_may_have_been_delivered(
    tmp_path: Path,
) -> None:
    """The API records the goal but answers after nginx's read timeout: nginx answers 504.
    The goal failed (one attempt), and its error says DataFast may have recorded it, for a
    queued goal and for ``send()``."""
    fake = FakeDataFast(api_key=KEY, latency=1.2)  # recorded after 1.2 s; nginx waits 0.4 s
    await fake.start()
    try:
        upstream = int(fake.base_url.rsplit(":", 1)[1])
        async with (
            Nginx(tmp_path / "nginx", upstream, read_timeout=0.4) as nginx,
            DataFast(
                KEY, base_url=nginx.base_url, retry=RetryPolicy(max_attempts=1), timeout=5
            ) as df,
        ):
            late = df.track_nowait(VISITOR, "late")
            with pytest.raises(ServerError) as raised:
                await late.wait(10)
            await reach(lambda: len(fake.goals) == 1, "the API recorded the goal")
            with pytest.raises(ServerError) as sent_raised:
                await df.send(VISITOR, "late_too")
            await reach(lambda: len(fake.goals) == 2, "the API recorded both")
    finally:
        await fake.close()
    error = raised.value
    assert error.status == 504
    assert error.maybe_delivered is True
    assert sent_raised.value.status == 504
    assert sent_raised.value.maybe_delivered is True
    assert {goal.name for goal in fake.goals} == {"late", "late_too"}  # both recorded


async def test_a_502_from_nginx_may_have_been_delivered(tmp_path: Path) -> None:
    """nginx's 502 (here: nothing listens upstream) says the request may have reached the
    API: a gateway cannot tell the client how far it got."""
    gone = Nginx(tmp_path / "nginx", free_port(), read_timeout=0.4, connect_timeout=0.4)
    async with (
        gone as nginx,
        DataFast(KEY, base_url=nginx.base_url, retry=RetryPolicy(max_attempts=1), timeout=5) as df,
    ):
        with pytest.raises(ServerError) as raised:
            await df.track_nowait(VISITOR, "nobody_upstream").wait(10)
    assert raised.value.status == 502
    assert raised.value.maybe_delivered is True


OUTAGE = 2.6  # seconds the upstream is gone: a restart, a deploy
OUTAGE_GOALS = 3_000


@pytest.mark.parametrize("then", ["keep running", "aclose at once"])
async def test_a_short_upstream_outage_behind_nginx_costs_seconds_with_a_spool(
    tmp_path: Path, then: str
) -> None:
    """3,000 goals through nginx, with a spool and the default circuit cool-down (30 s); the
    upstream is gone for 2.6 s (nginx answers 502), then back. Goals run out of attempts
    meanwhile and wait on disk; once the API is back they are all delivered within seconds
    (they waited out a 30 s cool-down: 34 s), and an ``aclose(10)`` called the moment it is
    back delivers them all too (it delivered none, keeping them on disk)."""
    fake = FakeDataFast(api_key=KEY)
    await fake.start()
    upstream = int(fake.base_url.rsplit(":", 1)[1])
    try:
        async with Nginx(tmp_path / "nginx", upstream, read_timeout=1.0) as nginx:
            df = DataFast(
                KEY,
                base_url=nginx.base_url,
                spool_path=tmp_path / "spool",
                concurrency=16,
                timeout=3.0,
                retry=RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5),
            )
            await df.start()
            deliveries = [
                df.track_nowait(f"visitor-{i:05d}", "checkout") for i in range(OUTAGE_GOALS)
            ]
            await reach(lambda: df.stats().delivered >= 300, "300 goals delivered")
            await fake.close()
            await asyncio.sleep(OUTAGE)
            await fake.start()
            loop = asyncio.get_running_loop()
            back = loop.time()
            if then == "keep running":
                await reach(lambda: df.stats().delivered == OUTAGE_GOALS, "every goal delivered")
                took = loop.time() - back
                stats = await df.aclose(10)
            else:
                stats = await df.aclose(10)
                took = loop.time() - back
    finally:
        await fake.close()
    print(f"\n{OUTAGE:g} s outage ({then}): all delivered {took:.1f} s after the API was back")
    assert stats.delivered == OUTAGE_GOALS, stats
    assert stats.failed == stats.spooled == 0
    assert all(d.error is None for d in deliveries)
    assert len({goal.visitor_id for goal in fake.goals}) >= OUTAGE_GOALS - 300
    assert took < 10.0
