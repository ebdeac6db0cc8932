"""Chaos: thousands of goals through every kind of fault at once, and every goal ends once.

A modelled DataFast server sits behind the transport: it records a goal when it answers
success, and also when it records it and then the answer is lost (a reset or a timeout after
the goal was stored). The client cannot tell those from a reset before the goal was stored, so
it retries; the duplicates the server ends up with are exactly the answers the client lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import aiohttp.web
import pytest

from datafast_async import (
    APIError,
    BadRequestError,
    DataFast,
    DataFastError,
    Goal,
    GoalResult,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Stats,
    TransportError,
    VisitorNotFoundError,
)
from datafast_async._delivery import Delivery
from datafast_async._transport import MockTransport, Request, Response

from ._fakes import balances, ok, until

GATEWAY = (500, 502, 503, 504)
# Kinds of answer, with their weight per attempt (out of 10,000).
WEIGHTS = {
    "5xx": 800,
    "429": 200,
    "429-retry-after": 200,
    "reset": 300,  # before the server stored the goal
    "reset-lost": 300,  # after: the goal is recorded, its answer lost
    "refused": 300,
    "timeout": 200,
    "timeout-lost": 200,
    "400": 100,
    "404": 100,
    "portal": 5,  # a captive portal's 200 HTML page: opens the circuit
}
LOST = {"reset-lost", "timeout-lost"}  # recorded, answer lost
NO_ANSWER_AFTER_SENDING = {"reset", "reset-lost", "timeout", "timeout-lost"}
RETRIABLE = {"5xx", "429", "429-retry-after", "reset", "reset-lost", "refused", "timeout"}
RETRIABLE |= {"timeout-lost"}
CHAOS_POLICY = RetryPolicy(
    max_attempts=4,
    initial_delay=0.0,
    max_delay=0.0,
    circuit_cooldown=0.002,
    max_circuit_cooldown=0.01,
)


def gateway_page(status: int) -> Response:
    title = f"{status} {HTTPStatus(status).phrase}"
    html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
    html += "<hr><center>nginx</center></body></html>"
    return Response(status, html.encode(), "", None, {"Content-Type": "text/html"})


def envelope(status: int, message: str) -> Response:
    body = {"status": "error", "error": {"code": status, "message": message}}
    return Response(status, json.dumps(body).encode(), "")


PORTAL = Response(
    200,
    b"<html><body><form action='/login'>Welcome to the hotel Wi-Fi</form></body></html>",
    "OK",
    None,
    {"Content-Type": "text/html"},
)


class ChaosServer:
    """A MockTransport handler: DataFast behind a network that fails in every way, at random
    (seeded), with a record of what it stored and of every injected fault per goal."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.kinds = list(WEIGHTS)
        self.weights = list(WEIGHTS.values())
        self.weights.append(10_000 - sum(self.weights))
        self.kinds.append("success")
        #: Per goal (its visitor id), the kind of answer each attempt got, in order.
        self.attempts: defaultdict[str, list[str]] = defaultdict(list)
        #: Per goal, how many times the server stored it.
        self.recorded: Counter[str] = Counter()
        #: Per goal, attempts answered 502 or 504 (``maybe_delivered``, as after a reset).
        self.gatewayed: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.on_request: list[Any] = []  # checks to run while a request is out
        self.requests = 0

    async def __call__(self, request: Request) -> Response:
        visitor = json.loads(request.body)["datafast_visitor_id"]
        for check in self.on_request:
            check()
        self.requests += 1
        # The 1,000th request meets a portal whatever the dice say: the circuit opens at least
        # once per run.
        kind = (
            "portal" if self.requests == 1_000 else self.random.choices(self.kinds, self.weights)[0]
        )
        self.attempts[visitor].append(kind)
        self.faults[kind] += 1
        # Answers come back out of order: each takes 0 to 2 turns of the loop.
        for _ in range(self.random.randint(0, 2)):
            await asyncio.sleep(0)
        if kind == "success":
            self.recorded[visitor] += 1
            return ok(f"{len(self.recorded):024x}")
        if kind == "5xx":
            status = self.random.choice(GATEWAY)
            if status in (502, 504):  # a gateway's: the request may have reached the API
                self.gatewayed[visitor] += 1
            return gateway_page(status)
        if kind == "429":
            return envelope(429, "Too many requests")
        if kind == "429-retry-after":
            body = json.dumps({"status": "error", "error": {"code": 429, "message": "slow"}})
            return Response(429, body.encode(), "", self.random.choice(("0", "0.001")))
        if kind in ("reset", "reset-lost"):
            if kind == "reset-lost":
                self.recorded[visitor] += 1
            raise TransportError("ClientOSError: [Errno 104] Connection reset by peer")
        if kind == "refused":
            raise TransportError(
                "cannot connect to datafa.st:443: Connection refused", maybe_delivered=False
            )
        if kind in ("timeout", "timeout-lost"):
            if kind == "timeout-lost":
                self.recorded[visitor] += 1
            raise TransportError("no answer within 10 s (timeout)")
        if kind == "400":
            return envelope(400, "Invalid goal name")
        if kind == "404":
            return envelope(404, "Visitor has no pageviews on this website")
        assert kind == "portal"
        return PORTAL


class Watch:
    """Samples the ledger's invariant from wherever it is called, and what each goal was told."""

    def __init__(self) -> None:
        self.df: DataFast | None = None
        self.samples = 0
        self.broken: list[Stats] = []
        self.successes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.reported: dict[str, GoalResult | DataFastError] = {}

    def check(self) -> None:
        if self.df is None:
            return
        stats = self.df.stats()
        self.samples += 1
        if not balances(stats):
            self.broken.append(stats)

    def on_success(self, goal: Goal, result: GoalResult) -> None:
        self.check()
        self.successes[goal.visitor_id] += 1
        self.reported[goal.visitor_id] = result

    def on_failure(self, goal: Goal, error: DataFastError) -> None:
        self.check()
        self.failures[goal.visitor_id] += 1
        self.reported[goal.visitor_id] = error

    async def sample_forever(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(0)


def circuit_lines(caplog: pytest.LogCaptureFixture, start: str) -> int:
    return sum(
        1
        for record in caplog.records
        if getattr(record, "datafast_event", None) == "circuit"
        and record.getMessage().startswith(start)
    )


@pytest.mark.parametrize("seed", [7, 2026])
async def test_every_goal_ends_once_through_every_kind_of_fault(
    seed: int, settle_counts: Counter[int], caplog: pytest.LogCaptureFixture
) -> None:
    goals = 5_000
    server = ChaosServer(seed)
    watch = Watch()
    server.on_request.append(watch.check)
    df = DataFast(
        "df_chaos_test_key_0001",
        retry=CHAOS_POLICY,
        on_success=watch.on_success,
        on_failure=watch.on_failure,
        _transport_factory=lambda: MockTransport(server),
    )
    watch.df = df
    deliveries: dict[str, Delivery[Any]] = {}
    with caplog.at_level(logging.WARNING, logger="datafast_async"):
        async with df:
            sampler = asyncio.create_task(watch.sample_forever())
            for i in range(goals):
                visitor = f"visitor-{i:05d}"
                deliveries[visitor] = df.track_nowait(visitor, "chaos")
                if df.stats().queued >= 64:
                    # The app keeps sending while the sender works: a short queue, so that an
                    # open circuit fails what is waiting, not every goal of the run.
                    await until(lambda: df.stats().queued < 32)
            assert await df.flush(timeout=10)
            sampler.cancel()
            final = await df.aclose()

    # Every goal ended exactly once: one settle, one callback, and the counters agree.
    assert final.enqueued == goals == final.delivered + final.failed
    assert final.queued == final.in_flight == final.dropped == 0
    assert watch.broken == [], f"{len(watch.broken)} of {watch.samples} samples unbalanced"
    assert all(settle_counts[id(d)] == 1 for d in deliveries.values())
    assert sum(watch.successes.values()) == final.delivered
    assert sum(watch.failures.values()) == final.failed
    assert set(watch.successes) | set(watch.failures) == set(deliveries)
    assert not set(watch.successes) & set(watch.failures)
    assert max((watch.successes + watch.failures).values()) == 1
    # Every attempt is a goal's first or a counted retry.
    sent = sum(len(kinds) for kinds in server.attempts.values())
    assert sent == len(server.attempts) + final.retries

    # Each goal's fate is what its attempts tell.
    portal_messages = {
        str(deliveries[visitor].error)
        for visitor, kinds in server.attempts.items()
        if kinds[-1] == "portal"
    }
    own_errors = {id(d.error) for d in deliveries.values() if d.error is not None}
    by_circuit = 0
    lost_flagged = 0
    for visitor, delivery in deliveries.items():
        kinds = server.attempts.get(visitor, [])
        error = delivery.error
        assert watch.reported[visitor] is (delivery.result if error is None else error)
        if error is None:
            assert delivery.result is not None
            assert kinds[-1] == "success"
            assert "success" not in kinds[:-1]
            continue
        cause = error.__cause__
        if (
            cause is not None
            and id(cause) not in own_errors  # the circuit's detached copy, no goal's own
            and str(cause) in portal_messages
        ):
            # Failed by the open circuit: its own copy of the portal's error.
            by_circuit += 1
            assert type(error) is APIError
            assert str(error) == str(error.__cause__)
            assert "success" not in kinds
            continue
        last = kinds[-1]
        assert "success" not in kinds
        assert all(kind in RETRIABLE for kind in kinds[:-1])
        if last in RETRIABLE:
            assert len(kinds) == CHAOS_POLICY.max_attempts
        if last == "5xx":
            assert type(error) is ServerError
            assert error.status in GATEWAY
            maybe = any(kind in NO_ANSWER_AFTER_SENDING for kind in kinds)
            assert error.maybe_delivered is (maybe or server.gatewayed[visitor] > 0), kinds
            assert f"{error.status} {HTTPStatus(error.status).phrase} nginx" in error.message
        elif last.startswith("429"):
            assert type(error) is RateLimitError
        elif last in NO_ANSWER_AFTER_SENDING or last == "refused":
            assert type(error) is TransportError
            maybe = any(kind in NO_ANSWER_AFTER_SENDING for kind in kinds)
            maybe = maybe or server.gatewayed[visitor] > 0
            assert error.maybe_delivered is maybe, kinds
            lost_flagged += any(kind in LOST for kind in kinds)
        elif last == "400":
            assert type(error) is BadRequestError
        elif last == "404":
            assert type(error) is VisitorNotFoundError
        else:
            assert last == "portal"
            assert type(error) is APIError
            assert error.status == 200
            assert error.opens_circuit
            assert "not DataFast's" in error.message

    # The server's duplicates are exactly the answers the client lost, never more.
    lost = {v: sum(kind in LOST for kind in kinds) for v, kinds in server.attempts.items()}
    for visitor, delivery in deliveries.items():
        assert server.recorded[visitor] == lost.get(visitor, 0) + (delivery.result is not None)
    duplicates = sum(max(0, count - 1) for count in server.recorded.values())
    assert duplicates <= sum(lost.values())
    # Goals reported failed that the server did store (an earlier answer was lost).
    failed_but_stored = sum(
        1 for v, d in deliveries.items() if d.error is not None and server.recorded[v]
    )

    openings = circuit_lines(caplog, "every request would fail")
    closings = circuit_lines(caplog, "DataFast answered the probe")
    # Each portal answer opens the circuit, but one that a probe gets (it opens again for
    # longer) or that arrives while it is open; the last opening may still be open at the end.
    assert 1 <= openings <= server.faults["portal"]
    assert openings - 1 <= closings <= openings
    print(
        f"\nchaos seed={seed}: {goals} goals, {sent} attempts, {final.retries} retries; "
        f"delivered {final.delivered}, failed {final.failed} ({by_circuit} by the open "
        f"circuit); faults {dict(sorted(server.faults.items()))}; server duplicates "
        f"{duplicates} <= lost answers {sum(lost.values())}; {failed_but_stored} goals "
        f"reported failed were stored, {lost_flagged} of them ended with a TransportError "
        f"flagged maybe_delivered; circuit opened {openings}, closed "
        f"{closings}; {watch.samples} ledger samples"
    )


# -- over a real socket ------------------------------------------------------------------------

SOCKET_WEIGHTS = {
    "5xx": 600,
    "429": 100,
    "disconnect": 300,  # the connection dropped before the goal was stored
    "disconnect-lost": 300,  # stored, then the connection dropped
    "slow": 150,  # an answer slower than the client's timeout
    "slow-lost": 150,  # stored, then slower than the client's timeout
    "400": 100,
    "404": 100,
}
SOCKET_LOST = {"disconnect-lost", "slow-lost"}
SOCKET_RETRIABLE = {"5xx", "429", "disconnect", "disconnect-lost", "slow", "slow-lost"}
# A normal answer takes a millisecond; on a loaded machine much more, so the client's timeout
# leaves room for it: an answer taken for lost that was not would break the bookkeeping.
CLIENT_TIMEOUT = 0.5
SLOW = 1.0  # seconds a slow answer takes: twice the client's timeout


class SocketChaosServer:
    """A small aiohttp server on 127.0.0.1 that stores goals and fails at random (seeded):
    dropped connections, answers past the client's timeout, gateway pages, a portal page."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.kinds = [*SOCKET_WEIGHTS, "success"]
        self.weights = [*SOCKET_WEIGHTS.values(), 10_000 - sum(SOCKET_WEIGHTS.values())]
        self.attempts: defaultdict[str, list[str]] = defaultdict(list)
        self.recorded: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.base_url = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        visitor = (await request.json())["datafast_visitor_id"]
        self.requests += 1
        # The 300th request meets a captive portal: the circuit opens once.
        kind = (
            "portal" if self.requests == 300 else self.random.choices(self.kinds, self.weights)[0]
        )
        self.attempts[visitor].append(kind)
        self.faults[kind] += 1
        if kind in ("success", "disconnect-lost", "slow-lost"):
            self.recorded[visitor] += 1
        if kind.startswith("disconnect"):
            assert request.transport is not None
            request.transport.close()
            return aiohttp.web.Response()  # never sent: the connection is gone
        if kind.startswith("slow"):
            await asyncio.sleep(SLOW)  # the client gave up long ago
        if kind in ("success", "slow-lost"):
            success = {"status": "success", "data": [{"message": "ok", "eventId": "0" * 24}]}
            return aiohttp.web.json_response(success)
        if kind in ("5xx", "slow"):
            status = self.random.choice(GATEWAY)
            html = f"<html><body><h1>{status} {HTTPStatus(status).phrase}</h1></body></html>"
            return aiohttp.web.Response(status=status, text=html, content_type="text/html")
        if kind == "portal":
            return aiohttp.web.Response(text=PORTAL.body.decode(), content_type="text/html")
        status = int(kind)
        body: dict[str, object] = {
            "status": "error",
            "error": {"code": status, "message": f"refused ({kind})"},
        }
        headers = {"Retry-After": "0"} if status == 429 else None
        return aiohttp.web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def socket_chaos() -> AsyncIterator[SocketChaosServer]:
    server = SocketChaosServer(seed=11)
    app = aiohttp.web.Application()
    app.router.add_post("/api/v1/goals", server.handle)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_every_goal_ends_once_through_faults_over_a_real_socket(
    socket_chaos: SocketChaosServer,
    settle_counts: Counter[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    goals = 1_000
    server = socket_chaos
    watch = Watch()
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0, circuit_cooldown=0.005)
    df = DataFast(
        "df_chaos_test_key_0001",
        base_url=server.base_url,
        timeout=CLIENT_TIMEOUT,
        retry=policy,
        on_success=watch.on_success,
        on_failure=watch.on_failure,
    )
    watch.df = df
    deliveries: dict[str, Delivery[Any]] = {}
    with caplog.at_level(logging.WARNING, logger="datafast_async"):
        async with df:
            sampler = asyncio.create_task(watch.sample_forever())
            for i in range(goals):
                visitor = f"visitor-{i:05d}"
                deliveries[visitor] = df.track_nowait(visitor, "chaos")
                if df.stats().queued >= 32:
                    await until(lambda: df.stats().queued < 16, timeout=10)
            assert await df.flush(timeout=30)
            sampler.cancel()
            final = await df.aclose()

    assert final.enqueued == goals == final.delivered + final.failed
    assert final.queued == final.in_flight == 0
    assert watch.broken == [], f"{len(watch.broken)} of {watch.samples} samples unbalanced"
    assert all(settle_counts[id(d)] == 1 for d in deliveries.values())
    assert sum(watch.successes.values()) == final.delivered
    assert sum(watch.failures.values()) == final.failed
    assert max((watch.successes + watch.failures).values()) == 1
    sent = sum(len(kinds) for kinds in server.attempts.values())
    assert sent == len(server.attempts) + final.retries  # no request retried behind our back

    by_circuit = 0
    unanswered = 0
    for visitor, delivery in deliveries.items():
        kinds = server.attempts.get(visitor, [])
        error = delivery.error
        if error is None:
            assert kinds[-1] == "success"
            assert kinds.count("success") == 1
            continue
        assert "success" not in kinds
        cause = error.__cause__
        if isinstance(cause, APIError) and cause.status == 200 and cause is not error:
            by_circuit += 1
            assert type(error) is APIError
            assert error.opens_circuit
            continue
        last = kinds[-1]
        if last in SOCKET_RETRIABLE:
            assert len(kinds) == policy.max_attempts
        if last == "5xx":
            assert type(error) is ServerError
        elif last == "429":
            assert type(error) is RateLimitError
        elif last.startswith(("disconnect", "slow")):
            # A dropped connection or a timeout: the request may have been stored (and for
            # some it was).
            unanswered += 1
            assert type(error) is TransportError
            assert error.maybe_delivered
        elif last == "400":
            assert type(error) is BadRequestError
        elif last == "404":
            assert type(error) is VisitorNotFoundError
        else:
            assert last == "portal"
            assert type(error) is APIError
            assert error.status == 200
    lost = {v: sum(kind in SOCKET_LOST for kind in kinds) for v, kinds in server.attempts.items()}
    for visitor, delivery in deliveries.items():
        assert server.recorded[visitor] == lost.get(visitor, 0) + (delivery.result is not None)
    duplicates = sum(max(0, count - 1) for count in server.recorded.values())
    assert duplicates <= sum(lost.values())
    assert server.faults["portal"] == 1
    assert circuit_lines(caplog, "every request would fail") == 1
    assert circuit_lines(caplog, "DataFast answered the probe") == 1
    print(
        f"\nsocket chaos: {goals} goals, {sent} requests, {final.retries} retries; delivered "
        f"{final.delivered}, failed {final.failed} ({by_circuit} by the open circuit, "
        f"{unanswered} with no answer, flagged maybe_delivered); faults "
        f"{dict(sorted(server.faults.items()))}; server duplicates {duplicates} <= lost "
        f"answers {sum(lost.values())}; circuit opened and closed once; {watch.samples} "
        "ledger samples"
    )
