"""Payments, identify and deletes through the client's one pipeline, on an in-process API
(``MockTransport``): what a user sees of each verb, the per-kind counters, the callbacks, the
circuits (a 403 is an endpoint's own; a 401 every endpoint's), disabled clients, and the
deadline with and without a spool."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from datafast_async import (
    APIError,
    AuthenticationError,
    DataFast,
    DataFastError,
    DeleteResult,
    Goal,
    GoalResult,
    Identify,
    IdentifyResult,
    NotFoundError,
    Payment,
    PaymentResult,
    PermissionDeniedError,
    RetryPolicy,
    ShutdownError,
    TransportError,
    ValidationError,
    VisitorNotFoundError,
)
from datafast_async._circuit import CircuitState
from datafast_async._transport import MockTransport, Request, Response

from ._fakes import (
    FAST_SPOOL,
    NO_WAIT,
    NO_WAIT_NO_PROBE,
    NO_WAIT_QUICK_PROBE,
    NO_WAIT_TWO_TRIES,
    VISITOR,
    balances,
    error,
    ok,
    until,
)

UTC = datetime.timezone.utc
PAID = {"message": "Payment recorded and attributed successfully"}
IDENTIFIED = {
    "status": "success",
    "data": {"message": "User profile created successfully", "profileId": "prof_1"},
}
DELETED = {"status": "success", "data": [{"message": "Goals deleted", "deleted": 3}]}

Answer = Callable[[Request], Response]


def payment_ok(request: Request) -> Response:
    body = json.loads(request.body)
    return Response(200, json.dumps({**PAID, "transaction_id": body["transaction_id"]}).encode())


def json_answer(data: object, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode())


class Routes:
    """An in-process DataFast: an answer per path (the goals', payments', identify's success
    answers by default), recording every request (method, path, query, body)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {
            "/api/v1/goals": lambda request: (
                ok() if request.method == "POST" else json_answer(DELETED)
            ),
            "/api/v1/payments": lambda request: (
                payment_ok(request) if request.method == "POST" else json_answer(DELETED)
            ),
            "/api/v1/identify": lambda request: json_answer(IDENTIFIED),
        }
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []

    def __call__(self, request: Request) -> Response:
        parts = urlsplit(request.url)
        body = json.loads(request.body) if request.body else None
        self.requests.append((request.method, parts.path, parse_qs(parts.query), body))
        return self.answers[parts.path](request)

    def factory(self) -> MockTransport:
        return MockTransport(self)

    def sent(self, path: str, method: str = "POST") -> list[Any]:
        return [body for m, p, _, body in self.requests if p == path and m == method]

    def queries(self, path: str) -> list[dict[str, list[str]]]:
        return [query for m, p, query, _ in self.requests if p == path and m == "DELETE"]


@pytest.fixture
def routes() -> Routes:
    return Routes()


@pytest.fixture
def client(routes: Routes) -> Callable[..., DataFast]:
    def make(**kwargs: Any) -> DataFast:
        kwargs.setdefault("api_key", "df_write_api_key_0001")
        kwargs.setdefault("retry", NO_WAIT)
        return DataFast(_transport_factory=routes.factory, **kwargs)

    return make


# -- payments --------------------------------------------------------------------------------


async def test_a_payment_is_delivered_with_its_result_counted_as_a_payment(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    paid = datetime.datetime(
        2025, 3, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    async with client() as df:
        delivery = await df.track_payment(
            amount=Decimal("49.99"),
            currency="usd",
            transaction_id="ch_3Nx1",
            visitor_id=VISITOR,
            email="a@b.co",
            renewal=False,
            timestamp=paid,
        )
        result = await delivery.wait(5)
        stats = await df.aclose()
    assert result == PaymentResult(PAID["message"], "ch_3Nx1", duplicate=False)
    assert isinstance(delivery.event, Payment)
    assert delivery.event.currency == "USD"
    assert delivery.kind == "payments"
    assert routes.sent("/api/v1/payments") == [
        {
            "amount": 49.99,
            "currency": "USD",
            "transaction_id": "ch_3Nx1",
            "datafast_visitor_id": VISITOR,
            "email": "a@b.co",
            "renewal": False,
            "timestamp": "2025-03-01T10:30:00.000Z",  # UTC, as ISO 8601
        }
    ]
    assert (stats.enqueued, stats.delivered) == (1, 1)
    assert stats.by_kind["payments"].delivered == 1
    assert stats.by_kind["goals"].enqueued == 0
    assert balances(stats)


async def test_a_duplicate_answer_is_a_success_that_says_so(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/payments"] = lambda request: json_answer(
        {"message": "Duplicate transaction: already recorded", "transaction_id": "ch_1"}
    )
    async with client() as df:
        queued = await df.track_payment_nowait(10, "EUR", "ch_1").wait(5)
        direct = await df.send_payment(10, "EUR", "ch_1")
        stats = await df.aclose()
    assert queued.duplicate
    assert direct.duplicate
    assert stats.delivered == 1
    assert stats.failed == 0


@pytest.mark.parametrize(
    "answer",
    [
        Response(200, b"<html><body>Welcome to the hotel wifi</body></html>"),
        json_answer({}),
        json_answer({"status": "error", "message": "nope"}),
        json_answer([{"transaction_id": "x"}]),
    ],
    ids=["html", "empty-object", "status-error", "a-list"],
)
async def test_a_2xx_that_is_not_the_payments_answer_fails_and_opens_every_circuit(
    client: Callable[..., DataFast], routes: Routes, answer: Response
) -> None:
    """A 2xx that is not DataFast's answer for payments (a portal, a wrong host) shares the
    host with goals: the client's circuit opens, for goals too."""
    routes.answers["/api/v1/payments"] = lambda request: answer
    async with client(retry=NO_WAIT_NO_PROBE) as df:
        with pytest.raises(APIError, match="not DataFast's"):
            await df.track_payment_nowait(1, "USD", "tx").wait(5)
        assert df._run.sender.circuit.state is CircuitState.OPEN
        with pytest.raises(APIError):
            await df.track_nowait(VISITOR, "signup").wait(5)
    assert routes.sent("/api/v1/goals") == []  # failed at once, not sent


async def test_the_goals_envelope_is_tolerated_as_a_payments_success(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/payments"] = lambda request: json_answer(
        {"status": "success", "data": [{"message": "ok", "transaction_id": "tx"}]}
    )
    async with client() as df:
        assert await df.send_payment(1, "USD", "tx") == PaymentResult("ok", "tx")


async def test_a_payment_cut_without_an_answer_is_retried_and_never_flagged_maybe_delivered(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    """A payment whose answer was lost is sent again (the transaction id makes it safe); its
    final error never says maybe_delivered, which only warns of a duplicate."""
    sent = Counter[str]()

    def reset(request: Request) -> Response:
        sent[json.loads(request.body)["transaction_id"]] += 1
        raise TransportError("connection reset", maybe_delivered=True)

    routes.answers["/api/v1/payments"] = reset
    async with client(retry=NO_WAIT_TWO_TRIES) as df:
        delivery = df.track_payment_nowait(5, "USD", "tx_lost")
        with pytest.raises(TransportError) as queued:
            await delivery.wait(5)
        with pytest.raises(TransportError) as direct:
            await df.send_payment(5, "USD", "tx_direct")
    assert sent == {"tx_lost": 2, "tx_direct": 2}
    assert queued.value.maybe_delivered is False
    assert direct.value.maybe_delivered is False


async def test_send_payment_retries_a_503_then_returns_the_result(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    answers = iter([error(503, "busy"), error(502, "gateway")])
    routes.answers["/api/v1/payments"] = lambda request: next(answers, None) or payment_ok(request)
    async with client() as df:
        result = await df.send_payment(0, "usd", "trial_1", is_free_trial=True)
        stats = df.stats()
    assert result.transaction_id == "trial_1"
    assert len(routes.sent("/api/v1/payments")) == 3
    assert stats.enqueued == 0  # send() leaves the queue's counters alone


async def test_payment_rules_are_checked_at_call_time(client: Callable[..., DataFast]) -> None:
    async with client() as df:
        calls: list[tuple[Callable[[], object], str]] = [
            (lambda: df.track_payment_nowait(-1, "USD", "t"), "amount"),
            (lambda: df.track_payment_nowait(True, "USD", "t"), "amount"),
            (lambda: df.track_payment_nowait(float("nan"), "USD", "t"), "amount"),
            (lambda: df.track_payment_nowait(1, "US", "t"), "currency"),
            (lambda: df.track_payment_nowait(1, "USD", ""), "transaction_id"),
            (lambda: df.track_payment_nowait(1, "USD", "t", renewal=1), "renewal"),  # type: ignore[arg-type]
            (
                lambda: df.track_payment_nowait(
                    1, "USD", "t", timestamp=datetime.datetime(2025, 1, 1)
                ),
                "timestamp",
            ),
        ]
        for call, field in calls:
            with pytest.raises(ValidationError) as caught:
                call()
            assert caught.value.field == field
        assert df.stats().enqueued == 0


# -- identify --------------------------------------------------------------------------------


async def test_identify_sends_traits_as_top_level_fields_and_reads_the_profile(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    async with client() as df:
        delivery = await df.identify(
            VISITOR, "user_42", traits={"email": "a@b.co", "plan": "pro", "seats": 3, "x": None}
        )
        result = await delivery.wait(5)
        direct = await df.send_identify(VISITOR, "user_43")
        stats = await df.aclose()
    assert result == IdentifyResult("User profile created successfully", "prof_1")
    assert direct.profile_id == "prof_1"
    assert delivery.event == Identify(
        VISITOR, "user_42", {"email": "a@b.co", "plan": "pro", "seats": 3}
    )
    assert routes.sent("/api/v1/identify") == [
        {
            "datafast_visitor_id": VISITOR,
            "user_id": "user_42",
            "email": "a@b.co",
            "plan": "pro",
            "seats": 3,
        },
        {"datafast_visitor_id": VISITOR, "user_id": "user_43"},
    ]
    assert stats.by_kind["identify"].delivered == 1


async def test_identify_of_a_visitor_without_a_pageview_fails_alone(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/identify"] = lambda request: error(404, "Visitor not found")
    async with client() as df:
        with pytest.raises(VisitorNotFoundError, match="Visitor not found"):
            await df.identify_nowait(VISITOR, "u1").wait(5)
        with pytest.raises(VisitorNotFoundError):
            await df.send_identify(VISITOR, "u1")
        assert (await df.track_nowait(VISITOR, "signup").wait(5)).event_id is not None
        assert df._run.sender.circuit.closed


async def test_identify_refuses_a_visitor_that_is_not_a_uuid(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    async with client() as df:
        with pytest.raises(ValidationError) as caught:
            df.identify_nowait("not-a-uuid", "u1")
        assert caught.value.field == "visitor_id"
        with pytest.raises(ValidationError) as caught:
            await df.send_identify(VISITOR, "u1", traits={"user_id": "other"})
        assert caught.value.field == "traits"
    assert routes.requests == []


# -- every kind through the same callbacks and counters --------------------------------------


async def test_callbacks_get_every_kind_and_a_goal_callback_keeps_working(
    client: Callable[..., DataFast],
) -> None:
    seen: list[tuple[type, type]] = []
    goals: list[str] = []

    def on_success(event: object, result: object) -> None:
        seen.append((type(event), type(result)))
        if isinstance(event, Goal):
            goals.append(event.name)

    async with client(on_success=on_success) as df:
        df.track_nowait(VISITOR, "signup")
        df.track_payment_nowait(9, "USD", "tx_9")
        df.identify_nowait(VISITOR, "u9")
        assert await df.flush(5)
        stats = df.stats()
    assert sorted(seen, key=str) == sorted(
        [(Goal, GoalResult), (Payment, PaymentResult), (Identify, IdentifyResult)], key=str
    )
    assert goals == ["signup"]
    assert {name: kind.delivered for name, kind in stats.by_kind.items()} == {
        "goals": 1,
        "payments": 1,
        "identify": 1,
    }
    assert stats.delivered == 3
    assert balances(stats)
    for kind in stats.by_kind.values():
        assert (
            kind.enqueued
            == kind.delivered + kind.failed + kind.queued + kind.in_flight + kind.spooled
        )


async def test_a_disabled_client_sends_nothing_for_any_verb(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    async with client(enabled=False) as df:
        assert (await df.track_payment_nowait(1, "USD", "t").wait(1)).message == "disabled"
        assert (await df.identify_nowait(VISITOR, "u").wait(1)).message == "disabled"
        assert (await df.send_payment(1, "USD", "t")).message == "disabled"
        assert (await df.send_identify(VISITOR, "u")).message == "disabled"
        assert (await df.delete_goals(visitor_id=VISITOR)).message == "disabled"
        assert (await df.delete_payments(transaction_id="t")).message == "disabled"
    assert routes.requests == []


# -- the circuits: a 403 is its endpoint's, a 401 every endpoint's ---------------------------


async def test_a_403_on_payments_fails_payments_and_goals_go_on(
    client: Callable[..., DataFast], routes: Routes, caplog: pytest.LogCaptureFixture
) -> None:
    routes.answers["/api/v1/payments"] = lambda request: error(
        403, "This token lacks the payments:write permission"
    )
    async with client(retry=NO_WAIT_NO_PROBE, concurrency=1) as df:
        payments = [df.track_payment_nowait(1, "USD", f"tx{i}") for i in range(50)]
        goals = [df.track_nowait(VISITOR, f"g{i}") for i in range(50)]
        assert await df.flush(5)
        with pytest.raises(PermissionDeniedError):
            await df.send_payment(1, "USD", "direct")  # failed at once: not sent
        stats = df.stats()
        sender = df._run.sender
        assert sender.endpoint_circuits["/api/v1/payments"].state is CircuitState.OPEN
        assert sender.circuit.closed
    assert all(isinstance(p.error, PermissionDeniedError) for p in payments)
    assert all(g.result is not None for g in goals)
    assert len(routes.sent("/api/v1/payments")) == 1  # one answer opened it
    assert stats.by_kind["payments"].failed == 50
    assert stats.by_kind["goals"].delivered == 50
    opened = [r.getMessage() for r in caplog.records if "refuses every request" in r.getMessage()]
    assert len(opened) == 1
    assert opened[0].startswith("/api/v1/payments refuses")


async def test_the_payments_circuit_probes_payments_and_closes_on_their_answer(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/payments"] = lambda request: error(403, "lacks payments:write")
    async with client(retry=NO_WAIT_QUICK_PROBE) as df:
        with pytest.raises(PermissionDeniedError):
            await df.track_payment_nowait(1, "USD", "before").wait(5)
        circuit = df._run.sender.endpoint_circuits["/api/v1/payments"]
        routes.answers["/api/v1/payments"] = payment_ok
        await until(lambda: circuit.refresh() is CircuitState.HALF_OPEN)
        assert (await df.track_payment_nowait(1, "USD", "probe").wait(5)).transaction_id == "probe"
        assert circuit.state is CircuitState.CLOSED
        assert (await df.send_payment(1, "USD", "after")).transaction_id == "after"
    assert [b["transaction_id"] for b in routes.sent("/api/v1/payments")] == [
        "before",
        "probe",
        "after",
    ]


async def test_a_401_on_payments_opens_the_circuit_of_every_endpoint(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/payments"] = lambda request: error(401, "Invalid API key")
    async with client(retry=NO_WAIT_NO_PROBE) as df:
        with pytest.raises(AuthenticationError):
            await df.track_payment_nowait(1, "USD", "t").wait(5)
        with pytest.raises(AuthenticationError):
            await df.track_nowait(VISITOR, "signup").wait(5)
        with pytest.raises(AuthenticationError):
            await df.delete_goals(visitor_id=VISITOR)
    assert [p for _, p, _, _ in routes.requests] == ["/api/v1/payments"]


async def test_with_a_spool_payments_refused_by_their_endpoint_wait_and_are_kept_at_the_deadline(
    tmp_path: Path, routes: Routes
) -> None:
    """With a spool, payments refused by a 403 are not failed: they wait in memory for their
    endpoint's circuit (goals go on), and at aclose()'s deadline they stay in the spool; the
    next run, with the permission granted, records each once."""
    routes.answers["/api/v1/payments"] = lambda request: error(403, "lacks payments:write")
    failures: list[object] = []
    df = DataFast(
        api_key="df_write_api_key_0001",
        spool_path=tmp_path,
        retry=NO_WAIT_NO_PROBE,
        _spool_options=FAST_SPOOL,
        _transport_factory=routes.factory,
        on_failure=lambda event, error: failures.append(event),
    )
    async with df:
        payments = [df.track_payment_nowait(2, "USD", f"tx{i}") for i in range(20)]
        goals = [df.track_nowait(VISITOR, f"g{i}") for i in range(20)]
        await until(lambda: all(g.done() for g in goals))
        assert not any(p.done() for p in payments)
        # Everything pending waits for an endpoint that refuses: flush() says so at once.
        assert await df.flush() is False
    stats = df.stats()
    assert failures == []
    assert all(isinstance(p.error, ShutdownError) for p in payments)
    assert all(p.error.spooled for p in payments if isinstance(p.error, ShutdownError))
    assert stats.by_kind["payments"].spooled == 20
    assert stats.by_kind["goals"].delivered == 20
    assert balances(stats)

    routes.answers["/api/v1/payments"] = payment_ok
    routes.requests.clear()
    again = DataFast(
        api_key="df_write_api_key_0001",
        spool_path=tmp_path,
        retry=NO_WAIT,
        _spool_options=FAST_SPOOL,
        _transport_factory=routes.factory,
    )
    async with again:
        assert await again.flush(10)
        stats2 = again.stats()
    sent = Counter(b["transaction_id"] for b in routes.sent("/api/v1/payments"))
    assert sent == {f"tx{i}": 1 for i in range(20)}
    assert stats2.by_kind["payments"].delivered == 20


# -- the deadline ------------------------------------------------------------------------------


async def test_the_shutdown_warning_counts_each_kind(
    client: Callable[..., DataFast], routes: Routes, caplog: pytest.LogCaptureFixture
) -> None:
    for path in ("/api/v1/goals", "/api/v1/payments", "/api/v1/identify"):
        routes.answers[path] = lambda request: error(503, "down")
    caplog.set_level(logging.WARNING, "datafast_async")
    df = client(retry=RetryPolicy(max_attempts=1000, initial_delay=5, max_delay=5))
    async with df:
        for i in range(3):
            df.track_nowait(VISITOR, f"g{i}")
        for i in range(2):
            df.track_payment_nowait(1, "USD", f"t{i}")
        df.identify_nowait(VISITOR, "u")
        await until(lambda: len(routes.requests) == 6)
        stats = await df.aclose(0.1)
    assert stats.failed == 6
    lines = [r.getMessage() for r in caplog.records if "shutdown deadline" in r.getMessage()]
    assert len(lines) == 1
    assert "6 requests" in lines[0]
    assert "3 goals" in lines[0]
    assert "2 payments" in lines[0]
    assert "1 identif" in lines[0]


# -- deletes -----------------------------------------------------------------------------------


async def test_delete_goals_sends_its_filters_and_the_range_in_both_spellings(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    start = datetime.datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime.datetime(2025, 2, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    async with client() as df:
        result = await df.delete_goals(visitor_id=VISITOR, name="Sign Up", start=start, end=end)
        stats = df.stats()
    assert result == DeleteResult("Goals deleted", DELETED["data"])
    assert result.raw == [{"message": "Goals deleted", "deleted": 3}]
    assert routes.queries("/api/v1/goals") == [
        {
            "datafast_visitor_id": [VISITOR],
            "name": ["sign_up"],
            "start": ["2025-01-01T00:00:00.000Z"],
            "end": ["2025-02-01T00:00:00.000Z"],
            "startAt": ["2025-01-01T00:00:00.000Z"],
            "endAt": ["2025-02-01T00:00:00.000Z"],
        }
    ]
    assert stats.enqueued == 0  # never queued


async def test_a_delete_with_an_account_token_carries_the_website(routes: Routes) -> None:
    async with DataFast(
        api_key="dft_account_token_01", website_id="site 1", _transport_factory=routes.factory
    ) as df:
        await df.delete_payments(transaction_id="ch_1")
    assert routes.queries("/api/v1/payments") == [
        {"websiteId": ["site 1"], "transaction_id": ["ch_1"]}
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda df: df.delete_goals(),
        lambda df: df.delete_payments(),
        lambda df: df.delete_goals(start=datetime.datetime(2025, 1, 1, tzinfo=UTC)),
        lambda df: df.delete_goals(
            start=datetime.datetime(2025, 1, 2, tzinfo=UTC),
            end=datetime.datetime(2025, 1, 1, tzinfo=UTC),
        ),
        lambda df: df.delete_goals(
            start=datetime.datetime(2025, 1, 1), end=datetime.datetime(2025, 1, 2)
        ),
        lambda df: df.delete_payments(transaction_id="t", visitor_id=VISITOR),
    ],
    ids=[
        "goals-no-filter",
        "payments-no-filter",
        "start-alone",
        "reversed",
        "naive",
        "tx-and-more",
    ],
)
async def test_a_delete_that_could_delete_by_accident_is_refused_before_any_request(
    client: Callable[..., DataFast], routes: Routes, call: Callable[[DataFast], Any]
) -> None:
    async with client() as df:
        with pytest.raises(ValidationError):
            await call(df)
    assert routes.requests == []


async def test_a_delete_that_times_out_is_retried_and_a_missing_transaction_raises(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    answers = iter([error(504, "The delete timed out"), json_answer(DELETED)])
    routes.answers["/api/v1/goals"] = lambda request: next(answers)
    routes.answers["/api/v1/payments"] = lambda request: error(404, "Transaction not found")
    async with client() as df:
        assert (await df.delete_goals(name="signup")).message == "Goals deleted"
        with pytest.raises(NotFoundError, match="Transaction not found") as caught:
            await df.delete_payments(transaction_id="nope")
    assert not isinstance(caught.value, VisitorNotFoundError)
    assert len(routes.queries("/api/v1/goals")) == 2
    assert len(routes.queries("/api/v1/payments")) == 1  # a 404 is final


async def test_a_403_on_a_goals_delete_refuses_goals_too(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    """Deleting goals needs goals:write, the permission that creating them needs: a 403 to
    the delete opens the goals endpoint's circuit, payments go on."""
    routes.answers["/api/v1/goals"] = lambda request: error(403, "lacks goals:write")
    async with client(retry=NO_WAIT_NO_PROBE) as df:
        with pytest.raises(PermissionDeniedError):
            await df.delete_goals(visitor_id=VISITOR)
        with pytest.raises(PermissionDeniedError):
            await df.track_nowait(VISITOR, "signup").wait(5)
        assert (await df.send_payment(1, "USD", "tx")).transaction_id == "tx"
    assert len(routes.queries("/api/v1/goals")) == 1


async def test_errors_of_every_kind_are_typed_datafast_errors(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    routes.answers["/api/v1/identify"] = lambda request: error(400, "user_id too long")
    async with client() as df:
        with pytest.raises(DataFastError, match="user_id too long"):
            await df.send_identify(VISITOR, "u")


# -- found in review: the two circuits together ------------------------------------------------


async def test_a_request_its_endpoint_refuses_never_stays_the_clients_probe(
    client: Callable[..., DataFast], routes: Routes
) -> None:
    """The client's circuit half-open, the first request at hand a payment whose endpoint
    refuses (a 403): it is not sent, so it cannot probe; a goal probes instead and the client
    sends again. Before the fix the client's circuit waited for that probe for ever."""
    routes.answers["/api/v1/payments"] = lambda request: error(403, "lacks payments:write")
    async with client(retry=NO_WAIT_QUICK_PROBE, concurrency=1) as df:
        with pytest.raises(PermissionDeniedError):
            await df.track_payment_nowait(1, "USD", "first").wait(5)
        sender = df._run.sender
        payments_circuit = sender.endpoint_circuits["/api/v1/payments"]
        payments_circuit.until = asyncio.get_running_loop().time() + 60  # stays open
        answers = iter([error(401, "Invalid API key")])
        routes.answers["/api/v1/goals"] = lambda request: next(answers, None) or ok()
        with pytest.raises(AuthenticationError):
            await df.track_nowait(VISITOR, "refused").wait(5)
        await until(lambda: sender.circuit.refresh() is CircuitState.HALF_OPEN)
        payment = df.track_payment_nowait(1, "USD", "second")  # first in line: the probe
        goals = [df.track_nowait(VISITOR, f"g{i}") for i in range(5)]
        results = [await g.wait(5) for g in goals]
        assert sender.circuit.closed
    assert all(r.event_id for r in results)
    assert isinstance(payment.error, PermissionDeniedError)


async def test_with_a_spool_requests_an_endpoint_refuses_never_fill_the_bound(
    tmp_path: Path, routes: Routes, caplog: pytest.LogCaptureFixture
) -> None:
    """With a spool and a 403 on payments, at most half of max_queue_size payments wait in
    memory; beyond that they fail with the 403 (said once), so goals and identifies still
    find room and go. Before the fix 200 held payments filled a bound of 20 and every goal
    after them stayed on disk, unsent, with flush() waiting for ever."""
    routes.answers["/api/v1/payments"] = lambda request: error(403, "lacks payments:write")
    df = DataFast(
        api_key="df_write_api_key_0001",
        spool_path=tmp_path,
        max_queue_size=20,
        retry=NO_WAIT_NO_PROBE,
        _spool_options=FAST_SPOOL,
        _transport_factory=routes.factory,
    )
    async with df:
        payments = [df.track_payment_nowait(2, "USD", f"tx{i}") for i in range(200)]
        goals = [df.track_nowait(VISITOR, f"g{i}") for i in range(20)]
        identifies = [df.identify_nowait(VISITOR, f"u{i}") for i in range(5)]
        await until(lambda: all(d.done() for d in goals + identifies), timeout=10)
        assert await df.flush(5) is False  # what is left waits for the refusing endpoint
        held = df.stats().by_kind["payments"].in_flight
        assert held <= 10
    stats = df.stats()
    assert all(g.result is not None for g in goals)
    assert all(i.result is not None for i in identifies)
    kept = [p for p in payments if isinstance(p.error, ShutdownError) and p.error.spooled]
    failed = [p for p in payments if isinstance(p.error, PermissionDeniedError)]
    assert len(kept) + len(failed) == 200
    assert 0 < len(kept) <= 10
    assert balances(stats)
    said = [r for r in caplog.records if "wait for endpoints that refuse" in r.getMessage()]
    assert len(said) == 1
