"""The fake server serves every write endpoint with the API's rules and answers, over a real
socket: payments (idempotent by ``transaction_id``), identify, the deletes of goals and
payments, a ``dft_`` token's permissions and ``fail_next(..., path=...)``. First with aiohttp
alone (the wire), then through the SDK's own client."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest

from datafast_async import (
    DataFast,
    Goal,
    Identify,
    IdentifyResult,
    NotFoundError,
    Payment,
    PaymentResult,
    PermissionDeniedError,
    RetryPolicy,
    VisitorNotFoundError,
)
from datafast_async.testing import FakeDataFast, ThreadedFakeDataFast

pytestmark = pytest.mark.integration

GOALS = "/api/v1/goals"
PAYMENTS = "/api/v1/payments"
IDENTIFY = "/api/v1/identify"
VID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
VID2 = "0b6f6c62-1f1e-4c53-9c0a-5b1d3f0e2a77"
PAYMENT = {"amount": 49.99, "currency": "usd", "transaction_id": "ch_123"}
IDENTIFY_BODY = {"datafast_visitor_id": VID, "user_id": "user_42"}
UTC = datetime.timezone.utc
NO_WAIT = RetryPolicy(initial_delay=0, max_delay=0)
PAID = "Payment recorded and attributed successfully"
DUPLICATE = "Payment already recorded (duplicate transaction_id)"


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def message(self) -> str:
        """The message of DataFast's error envelope, which the answer must be."""
        body = self.json
        assert body == {"status": "error", "error": {"code": self.status, "message": ANY_STR}}
        return str(body["error"]["message"])

    @property
    def deleted(self) -> dict[str, Any]:
        """The ``data[0]`` of a delete's success answer, which the answer must be."""
        assert self.status == 200, self.text
        body = self.json
        assert set(body) == {"status", "data"}
        assert body["status"] == "success"
        [data] = body["data"]
        assert isinstance(data["message"], str)
        return dict(data)


class _AnyStr:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __hash__(self) -> int:
        return 0


ANY_STR: Any = _AnyStr()


async def call(
    fake: FakeDataFast | ThreadedFakeDataFast,
    path: str,
    body: object = None,
    *,
    method: str = "POST",
    params: Mapping[str, str] | None = None,
    token: str | None = None,
    content_type: str | None = "application/json",
) -> Answer:
    """One request to the fake; a ``None`` body sends no body (a delete), ``bytes`` go as
    they are."""
    headers = {"Authorization": f"Bearer {token or fake.api_key}"}
    if content_type is not None and body is not None:
        headers["Content-Type"] = content_type
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            fake.base_url + path,
            data=data,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=5),
        ) as response,
    ):
        return Answer(response.status, dict(response.headers), await response.text())


async def delete(
    fake: FakeDataFast | ThreadedFakeDataFast, path: str, token: str | None = None, **query: str
) -> Answer:
    return await call(fake, path, method="DELETE", params=query, token=token)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def at(day: int, month: int = 1) -> datetime.datetime:
    return datetime.datetime(2026, month, day, tzinfo=UTC)


def client(fake: FakeDataFast | ThreadedFakeDataFast, **kwargs: Any) -> DataFast:
    kwargs.setdefault("api_key", fake.api_key)
    kwargs.setdefault("retry", NO_WAIT)
    return DataFast(base_url=fake.base_url, **kwargs)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast() as server:
        yield server


def without(body: Mapping[str, object], **changes: object) -> dict[str, object]:
    """``body`` with ``changes``; a change to ``...`` leaves the field out."""
    merged: dict[str, object] = {**body, **changes}
    return {key: value for key, value in merged.items() if value is not ...}


# -- payments -----------------------------------------------------------------------------------


async def test_a_payment_gets_the_bare_success_object_and_is_recorded(fake: FakeDataFast) -> None:
    answer = await call(fake, PAYMENTS, {**PAYMENT, "datafast_visitor_id": VID})

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json == {"message": PAID, "transaction_id": "ch_123"}  # no status wrapper
    assert fake.payments == [Payment(49.99, "USD", "ch_123", visitor_id=VID)]
    assert fake.goals == []
    assert fake.identities == []


async def test_every_payment_field_is_kept_and_the_aliases_are_read(fake: FakeDataFast) -> None:
    full = {
        "amount": 0,
        "currency": "EUR",
        "transaction_id": "sub_1",
        "datafast_visitor_id": VID,
        "customer_email": "a@b.co",
        "customer_name": "Ada",
        "customer_id": "cus_9",
        "renewal": True,
        "refunded": False,
        "is_free_trial": True,
        "timestamp": "2026-01-31T14:00:00.123+02:00",
    }
    both = {**PAYMENT, "transaction_id": "ch_2", "email": "x@y.z", "customer_email": "no@no.no"}

    assert (await call(fake, PAYMENTS, full)).status == 200
    assert (await call(fake, PAYMENTS, both)).status == 200

    stamp = datetime.datetime(2026, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
    assert fake.payments == [
        Payment(0, "EUR", "sub_1", VID, "a@b.co", "Ada", "cus_9", True, False, True, stamp),
        Payment(49.99, "USD", "ch_2", email="x@y.z"),  # the plain name wins over its alias
    ]
    assert fake.payments[0].timestamp == stamp


async def test_a_payment_without_a_known_visitor_is_recorded_but_not_attributed() -> None:
    async with FakeDataFast(known_visitors={VID}) as fake:
        bare = await call(fake, PAYMENTS, PAYMENT)
        stranger = await call(
            fake, PAYMENTS, {**PAYMENT, "transaction_id": "ch_2", "datafast_visitor_id": VID2}
        )
        known = await call(
            fake, PAYMENTS, {**PAYMENT, "transaction_id": "ch_3", "datafast_visitor_id": VID}
        )

    assert [bare.status, stranger.status, known.status] == [200, 200, 200]  # no 404 for payments
    assert "attributed successfully" not in bare.json["message"]
    assert "attributed successfully" not in stranger.json["message"]
    assert known.json["message"] == PAID
    assert [p.transaction_id for p in fake.payments] == ["ch_123", "ch_2", "ch_3"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(without(PAYMENT, amount=...), "amount is required", id="no-amount"),
        pytest.param(without(PAYMENT, amount=None), "amount is required", id="null-amount"),
        pytest.param(without(PAYMENT, amount="49.99"), "amount must be a number", id="str-amount"),
        pytest.param(without(PAYMENT, amount=True), "amount must be a number", id="bool-amount"),
        pytest.param(without(PAYMENT, amount=-0.01), "0 or more", id="negative-amount"),
        pytest.param(without(PAYMENT, currency=...), "currency is required", id="no-currency"),
        pytest.param(without(PAYMENT, currency=840), "currency must be a string", id="int-cur"),
        pytest.param(without(PAYMENT, currency="US"), "three letters", id="short-currency"),
        pytest.param(without(PAYMENT, currency="U$D"), "three letters", id="currency-chars"),
        pytest.param(
            without(PAYMENT, transaction_id=...), "transaction_id is required", id="no-tx"
        ),
        pytest.param(without(PAYMENT, transaction_id=""), "must not be empty", id="empty-tx"),
        pytest.param(without(PAYMENT, transaction_id=7), "must be a string", id="int-tx"),
        pytest.param(without(PAYMENT, transaction_id="t" * 256), "at most 255", id="long-tx"),
        pytest.param(without(PAYMENT, datafast_visitor_id=""), "not be empty", id="empty-vid"),
        pytest.param(without(PAYMENT, datafast_visitor_id=None), "not be null", id="null-vid"),
        pytest.param(without(PAYMENT, email=5), "email must be a str", id="int-email"),
        pytest.param(without(PAYMENT, customer_name=None), "customer_name", id="null-alias"),
        pytest.param(without(PAYMENT, renewal="yes"), "renewal must be a bool", id="str-renewal"),
        pytest.param(without(PAYMENT, refunded=1), "refunded must be a bool", id="int-refunded"),
        pytest.param(without(PAYMENT, timestamp="yesterday"), "ISO 8601", id="bad-timestamp"),
        pytest.param(
            without(PAYMENT, timestamp="2026-01-31T12:00:00"), "with a zone", id="naive-timestamp"
        ),
        pytest.param(without(PAYMENT, timestamp=1767225600), "ISO 8601", id="int-timestamp"),
        pytest.param([PAYMENT], "Invalid JSON body", id="json-array"),
    ],
)
async def test_each_broken_payment_rule_gets_400(
    fake: FakeDataFast, body: object, message: str
) -> None:
    answer = await call(fake, PAYMENTS, body)

    assert answer.status == 400
    assert message in answer.message
    assert fake.payments == []


async def test_an_amount_too_large_for_a_float_gets_400(fake: FakeDataFast) -> None:
    raw = b'{"amount": 1e400, "currency": "USD", "transaction_id": "ch_1"}'
    answer = await call(fake, PAYMENTS, raw)

    assert answer.status == 400
    assert "finite" in answer.message
    assert fake.payments == []


async def test_the_payment_limits_themselves_are_accepted(fake: FakeDataFast) -> None:
    edge = {"amount": 0, "currency": "usd", "transaction_id": "t" * 255}
    assert (await call(fake, PAYMENTS, edge)).status == 200
    assert fake.payments == [Payment(0, "USD", "t" * 255)]


async def test_a_payment_not_sent_as_json_gets_400(fake: FakeDataFast) -> None:
    answer = await call(fake, PAYMENTS, PAYMENT, content_type="text/plain")

    assert answer.status == 400
    assert "Content-Type" in answer.message
    assert fake.payments == []


async def test_a_repeated_transaction_is_a_duplicate_that_records_nothing(
    fake: FakeDataFast,
) -> None:
    first = await call(fake, PAYMENTS, PAYMENT)
    again = await call(fake, PAYMENTS, PAYMENT)
    changed = await call(fake, PAYMENTS, {**PAYMENT, "amount": 1, "currency": "EUR"})

    assert first.status == 200
    assert "duplicate" not in first.json["message"].lower()
    for repeat in (again, changed):
        assert repeat.status == 200
        assert repeat.json == {"message": DUPLICATE, "transaction_id": "ch_123"}
    assert fake.payments == [Payment(49.99, "USD", "ch_123")]  # the first one, once
    assert len(fake.received_payments) == 1


async def test_a_deleted_transaction_may_be_recorded_again(fake: FakeDataFast) -> None:
    await call(fake, PAYMENTS, PAYMENT)
    assert (await delete(fake, PAYMENTS, transaction_id="ch_123")).deleted["deleted"] == 1

    answer = await call(fake, PAYMENTS, {**PAYMENT, "amount": 10})

    assert (
        answer.json["message"] == "Payment recorded successfully (not attributed: no known visitor)"
    )
    assert fake.payments == [Payment(10, "USD", "ch_123")]


# -- identify -----------------------------------------------------------------------------------


async def test_an_identify_gets_the_profile_answer_and_its_traits_are_recorded(
    fake: FakeDataFast,
) -> None:
    body = {**IDENTIFY_BODY, "email": "a@b.co", "plan": "pro", "seats": 3, "beta": True}

    answer = await call(fake, IDENTIFY, body)

    assert answer.status == 200
    assert answer.json == {
        "status": "success",
        "data": {"message": "User profile created successfully", "profileId": ANY_STR},
    }
    traits = {"email": "a@b.co", "plan": "pro", "seats": 3, "beta": True}
    assert fake.identities == [Identify(VID, "user_42", traits)]
    assert fake.identities[0].traits == traits


async def test_a_users_later_identifies_update_the_same_profile(fake: FakeDataFast) -> None:
    first = await call(fake, IDENTIFY, IDENTIFY_BODY)
    second = await call(fake, IDENTIFY, {**IDENTIFY_BODY, "plan": "team"})
    other = await call(fake, IDENTIFY, {**IDENTIFY_BODY, "user_id": "user_43"})

    assert second.json["data"]["message"] == "User profile updated successfully"
    assert second.json["data"]["profileId"] == first.json["data"]["profileId"]
    assert other.json["data"]["profileId"] != first.json["data"]["profileId"]
    assert [(i.user_id, i.traits) for i in fake.identities] == [
        ("user_42", None),
        ("user_42", {"plan": "team"}),
        ("user_43", None),
    ]


async def test_identify_reads_the_visitorid_alias(fake: FakeDataFast) -> None:
    answer = await call(fake, IDENTIFY, {"visitorId": VID.upper(), "user_id": "u"})

    assert answer.status == 200
    assert fake.identities == [Identify(VID.upper(), "u")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"user_id": "u"}, "datafast_visitor_id is required", id="no-visitor"),
        pytest.param(
            without(IDENTIFY_BODY, datafast_visitor_id="visitor-1"), "UUID", id="not-uuid"
        ),
        pytest.param(without(IDENTIFY_BODY, datafast_visitor_id=VID[:-1]), "UUID", id="short-uuid"),
        pytest.param(without(IDENTIFY_BODY, datafast_visitor_id=7), "UUID", id="int-visitor"),
        pytest.param(
            without(IDENTIFY_BODY, datafast_visitor_id=VID.replace("-", "")), "UUID", id="no-dash"
        ),
        pytest.param(without(IDENTIFY_BODY, user_id=...), "user_id is required", id="no-user"),
        pytest.param(without(IDENTIFY_BODY, user_id=""), "must not be empty", id="empty-user"),
        pytest.param(without(IDENTIFY_BODY, user_id="u" * 256), "at most 255", id="long-user"),
        pytest.param(without(IDENTIFY_BODY, user_id=42), "user_id must be a string", id="int-user"),
        pytest.param(without(IDENTIFY_BODY, plan=None), "plan must not be null", id="null-trait"),
        pytest.param(without(IDENTIFY_BODY, tags=["a"]), "tags must be a string", id="list-trait"),
        pytest.param(without(IDENTIFY_BODY, addr={"c": "x"}), "addr must be", id="object-trait"),
        pytest.param("user_42", "Invalid JSON body", id="json-string"),
    ],
)
async def test_each_broken_identify_rule_gets_400(
    fake: FakeDataFast, body: object, message: str
) -> None:
    answer = await call(fake, IDENTIFY, body)

    assert answer.status == 400
    assert message in answer.message
    assert fake.identities == []


async def test_a_user_id_of_255_characters_is_accepted(fake: FakeDataFast) -> None:
    assert (await call(fake, IDENTIFY, {**IDENTIFY_BODY, "user_id": "u" * 255})).status == 200
    assert fake.identities == [Identify(VID, "u" * 255)]


async def test_identify_of_a_visitor_without_a_pageview_gets_404() -> None:
    async with FakeDataFast(known_visitors={VID}) as fake:
        known = await call(fake, IDENTIFY, IDENTIFY_BODY)
        unknown = await call(fake, IDENTIFY, {**IDENTIFY_BODY, "datafast_visitor_id": VID2})
        fake.known_visitors = None
        now_known = await call(fake, IDENTIFY, {**IDENTIFY_BODY, "datafast_visitor_id": VID2})

    assert known.status == 200
    assert unknown.status == 404
    assert unknown.message == "Visitor has no pageviews on this website"
    assert now_known.status == 200
    assert [i.visitor_id for i in fake.identities] == [VID, VID2]


async def test_a_bad_identify_is_400_before_the_visitor_is_looked_up() -> None:
    async with FakeDataFast(known_visitors=set()) as fake:
        answer = await call(fake, IDENTIFY, {**IDENTIFY_BODY, "user_id": ""})
    assert answer.status == 400


# -- deleting goals -----------------------------------------------------------------------------


async def post_goals(fake: FakeDataFast, *goals: tuple[str, str]) -> None:
    for visitor, name in goals:
        answer = await call(fake, GOALS, {"datafast_visitor_id": visitor, "name": name})
        assert answer.status == 200, answer.text


async def test_deleting_a_visitors_goals_removes_those_only(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "signup"), ("v2", "signup"), ("v1", "purchase"))

    data = (await delete(fake, GOALS, datafast_visitor_id="v1")).deleted

    assert data["deleted"] == 2
    assert data["datafast_visitor_id"] == "v1"
    assert fake.goals == [Goal("v2", "signup")]
    assert (await delete(fake, GOALS, datafast_visitor_id="v1")).deleted["deleted"] == 0


async def test_deleting_by_name_normalises_it_as_create_does(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "Sign Up"), ("v2", "sign_up"), ("v1", "signup"))

    data = (await delete(fake, GOALS, name="SIGN UP")).deleted

    assert (data["deleted"], data["name"]) == (2, "sign_up")
    assert fake.goals == [Goal("v1", "signup")]


async def test_visitor_and_name_together_delete_their_intersection(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "signup"), ("v2", "signup"), ("v1", "purchase"))

    data = (await delete(fake, GOALS, datafast_visitor_id="v1", name="signup")).deleted

    assert data["deleted"] == 1
    assert {key: data[key] for key in ("datafast_visitor_id", "name")} == {
        "datafast_visitor_id": "v1",
        "name": "signup",
    }
    assert fake.goals == [Goal("v2", "signup"), Goal("v1", "purchase")]


async def three_goals_apart(fake: FakeDataFast) -> list[datetime.datetime]:
    """Goals a, b and c, received at least a millisecond apart; their receive times."""
    for name in "abc":
        await post_goals(fake, ("v1", name))
        await asyncio.sleep(0.003)
    times = [received for _, received in fake.received_goals]
    assert times == sorted(set(times))
    assert all(t.tzinfo is not None and t.microsecond % 1000 == 0 for t in times)
    return times


@pytest.mark.parametrize("names", [("start", "end"), ("startAt", "endAt"), ("both", "both")])
async def test_a_range_includes_its_start_and_excludes_its_end(
    fake: FakeDataFast, names: tuple[str, str]
) -> None:
    first, second, third = await three_goals_apart(fake)
    if names == ("both", "both"):
        query = {"start": iso(second), "startAt": iso(second), "end": iso(third)}
        query["endAt"] = iso(third)
    else:
        query = {names[0]: iso(second), names[1]: iso(third)}

    data = (await delete(fake, GOALS, **query)).deleted

    assert data["deleted"] == 1
    assert {key: data[key] for key in query} == query  # the range echoed under its names
    assert [(goal.name, received) for goal, received in fake.received_goals] == [
        ("a", first),
        ("c", third),  # at exactly the end: kept
    ]


async def test_a_range_with_an_offset_or_a_date_alone_is_read_in_utc(fake: FakeDataFast) -> None:
    _, second, _ = await three_goals_apart(fake)
    shifted = second.astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
    until = second + datetime.timedelta(microseconds=1000)

    one = await delete(fake, GOALS, start=shifted.isoformat(), end=iso(until))
    assert one.deleted["deleted"] == 1
    assert one.deleted["start"] == iso(second)
    assert [goal.name for goal in fake.goals] == ["a", "c"]

    rest = await delete(fake, GOALS, start="2000-01-01", end="2100-01-01")
    assert rest.deleted["deleted"] == 2
    assert fake.goals == []


async def test_a_range_combines_with_a_visitor(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "a"), ("v2", "a"))
    span = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}

    data = (await delete(fake, GOALS, datafast_visitor_id="v2", **span)).deleted

    assert data["deleted"] == 1
    assert fake.goals == [Goal("v1", "a")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param({}, "needs a range", id="no-filter"),
        pytest.param({"websiteId": "w"}, "needs a range", id="no-filter-but-website"),
        pytest.param({"start": "2026-01-01T00:00:00Z"}, "both ends", id="start-alone"),
        pytest.param({"endAt": "2026-01-01T00:00:00Z"}, "both ends", id="end-alone"),
        pytest.param({"start": "2026-02-01", "end": "2026-01-01"}, "after start", id="reversed"),
        pytest.param({"start": "2026-01-01", "end": "2026-01-01"}, "after start", id="empty"),
        pytest.param({"start": "last week", "end": "2026-01-01"}, "ISO 8601", id="not-a-time"),
        pytest.param(
            {"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00"},
            "with a zone",
            id="naive",
        ),
        pytest.param(
            {"start": "2026-01-01", "startAt": "2026-01-02", "end": "2026-02-01"},
            "must be equal",
            id="spellings-disagree",
        ),
        pytest.param({"name": "sign/up"}, "may only contain", id="bad-name"),
        pytest.param({"name": "identify"}, "reserved", id="reserved-name"),
        pytest.param({"datafast_visitor_id": ""}, "must not be empty", id="empty-visitor"),
    ],
)
async def test_a_goals_delete_with_a_broken_filter_gets_400_and_deletes_nothing(
    fake: FakeDataFast, query: dict[str, str], message: str
) -> None:
    await post_goals(fake, ("v1", "signup"))

    answer = await delete(fake, GOALS, **query)

    assert answer.status == 400
    assert message in answer.message
    assert fake.goals == [Goal("v1", "signup")]


async def test_a_delete_needs_no_content_type_and_ignores_a_body(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "signup"))
    answer = await call(
        fake,
        GOALS,
        {"ignored": True},
        method="DELETE",
        params={"name": "signup"},
        content_type=None,
    )
    assert answer.deleted["deleted"] == 1


# -- deleting payments --------------------------------------------------------------------------


async def post_payments(fake: FakeDataFast, *payments: dict[str, object]) -> None:
    for payment in payments:
        answer = await call(fake, PAYMENTS, payment)
        assert answer.status == 200, answer.text


def payment(transaction_id: str, **fields: object) -> dict[str, object]:
    return {"amount": 10, "currency": "USD", "transaction_id": transaction_id, **fields}


async def test_a_transaction_id_deletes_that_payment_and_wins_over_other_filters(
    fake: FakeDataFast,
) -> None:
    await post_payments(
        fake,
        payment("ch_1", datafast_visitor_id=VID, timestamp="2026-01-05T00:00:00Z"),
        payment("ch_2", datafast_visitor_id=VID2, timestamp="2026-03-05T00:00:00Z"),
    )
    # The other filters name ch_2 only: ignored beside the transaction.
    query = {"datafast_visitor_id": VID2, "start": "2026-03-01", "end": "2026-04-01"}

    data = (await delete(fake, PAYMENTS, transaction_id="ch_1", **query)).deleted

    assert data["deleted"] == 1
    assert data["transaction_id"] == "ch_1"
    assert [p.transaction_id for p in fake.payments] == ["ch_2"]


async def test_deleting_an_unknown_transaction_gets_404(fake: FakeDataFast) -> None:
    await post_payments(fake, payment("ch_1"))

    answer = await delete(fake, PAYMENTS, transaction_id="ch_nope")

    assert answer.status == 404
    assert "ch_nope" in answer.message
    assert [p.transaction_id for p in fake.payments] == ["ch_1"]


async def test_deleting_a_visitors_payments_removes_those_only(fake: FakeDataFast) -> None:
    await post_payments(
        fake,
        payment("ch_1", datafast_visitor_id=VID),
        payment("ch_2", datafast_visitor_id=VID2),
        payment("ch_3"),
        payment("ch_4", datafast_visitor_id=VID),
    )

    data = (await delete(fake, PAYMENTS, datafast_visitor_id=VID)).deleted

    assert (data["deleted"], data["datafast_visitor_id"]) == (2, VID)
    assert [p.transaction_id for p in fake.payments] == ["ch_2", "ch_3"]


async def test_a_payments_range_reads_their_timestamps(fake: FakeDataFast) -> None:
    await post_payments(
        fake,
        payment("jan", timestamp=iso(at(1))),
        payment("feb", timestamp=iso(at(1, 2))),
        payment("feb-end", timestamp=iso(at(1, 3) - datetime.timedelta(milliseconds=1))),
        payment("mar", timestamp=iso(at(1, 3))),
    )

    data = (await delete(fake, PAYMENTS, start=iso(at(1, 2)), end=iso(at(1, 3)))).deleted

    assert data["deleted"] == 2
    assert [p.transaction_id for p in fake.payments] == ["jan", "mar"]  # end excluded


async def test_a_payment_without_a_timestamp_is_matched_on_its_receive_time(
    fake: FakeDataFast,
) -> None:
    await post_payments(fake, payment("now"), payment("old", timestamp="2020-06-01T00:00:00Z"))
    [(_, received), (old, _)] = fake.received_payments
    assert old.timestamp == datetime.datetime(2020, 6, 1, tzinfo=UTC)
    one_ms = datetime.timedelta(milliseconds=1)

    data = (
        await delete(fake, PAYMENTS, startAt=iso(received), endAt=iso(received + one_ms))
    ).deleted

    assert data["deleted"] == 1
    assert [p.transaction_id for p in fake.payments] == ["old"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param({}, "needs a filter", id="no-filter"),
        pytest.param({"transaction_id": ""}, "must not be empty", id="empty-transaction"),
        pytest.param({"start": "2026-01-01"}, "both ends", id="start-alone"),
        pytest.param({"datafast_visitor_id": ""}, "must not be empty", id="empty-visitor"),
    ],
)
async def test_a_payments_delete_with_a_broken_filter_gets_400(
    fake: FakeDataFast, query: dict[str, str], message: str
) -> None:
    await post_payments(fake, payment("ch_1"))

    answer = await delete(fake, PAYMENTS, **query)

    assert answer.status == 400
    assert message in answer.message
    assert len(fake.payments) == 1


# -- paths, methods, permissions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", PAYMENTS, "POST, DELETE"),
        ("PUT", GOALS, "POST, DELETE"),
        ("DELETE", IDENTIFY, "POST"),
        ("GET", IDENTIFY, "POST"),
    ],
)
async def test_other_methods_get_405_with_allow(
    fake: FakeDataFast, method: str, path: str, allow: str
) -> None:
    answer = await call(fake, path, method=method)

    assert answer.status == 405
    assert answer.headers["Allow"] == allow
    assert method in answer.message


async def test_the_other_endpoints_need_the_token_too(fake: FakeDataFast) -> None:
    for path, body in ((PAYMENTS, PAYMENT), (IDENTIFY, IDENTIFY_BODY)):
        answer = await call(fake, path, body, token="df_wrong")
        assert answer.status == 401
    assert (await delete(fake, GOALS, token="df_wrong", name="signup")).status == 401
    assert fake.payments == []
    assert fake.identities == []


ACCOUNT = "dft_account_token_0001"
SITE = {"websiteId": "site-1"}


async def test_a_token_without_payments_write_records_goals_but_gets_403_for_payments() -> None:
    async with FakeDataFast(
        api_key=ACCOUNT, website_id="site-1", permissions={"goals:write"}
    ) as fake:
        goal = await call(fake, GOALS, {"datafast_visitor_id": "v1", "name": "a"}, params=SITE)
        paid = await call(fake, PAYMENTS, PAYMENT, params=SITE)
        identified = await call(fake, IDENTIFY, IDENTIFY_BODY, params=SITE)
        deleted_payments = await delete(fake, PAYMENTS, transaction_id="ch_123", **SITE)
        deleted_goals = await delete(fake, GOALS, name="zzz", **SITE)

        assert goal.status == 200
        assert (paid.status, identified.status, deleted_payments.status) == (403, 403, 403)
        assert "lacks payments:write" in paid.message
        assert "lacks identify:write" in identified.message
        assert "lacks payments:write" in deleted_payments.message
        assert deleted_goals.deleted["deleted"] == 0
        assert fake.goals == [Goal("v1", "a")]
        assert fake.payments == []
        assert fake.identities == []

        fake.permissions = {"goals:write", "payments:write"}  # granted while running
        assert (await call(fake, PAYMENTS, PAYMENT, params=SITE)).status == 200
        assert fake.permissions == frozenset({"goals:write", "payments:write"})
        fake.permissions = None
        assert (await call(fake, IDENTIFY, IDENTIFY_BODY, params=SITE)).status == 200


async def test_the_website_is_checked_before_the_permission() -> None:
    async with FakeDataFast(api_key=ACCOUNT, permissions=()) as fake:
        missing = await call(fake, PAYMENTS, PAYMENT)
        refused = await call(fake, PAYMENTS, PAYMENT, params=SITE)
        wrong = await call(fake, PAYMENTS, PAYMENT, params=SITE, token="dft_other")

    assert missing.status == 400
    assert "websiteId" in missing.message
    assert refused.status == 403
    assert wrong.status == 401


async def test_an_account_token_has_every_permission_by_default() -> None:
    async with FakeDataFast(api_key=ACCOUNT) as fake:
        assert fake.permissions == {"goals:write", "payments:write", "identify:write"}
        for path, body in ((GOALS, {"datafast_visitor_id": "v", "name": "a"}), (PAYMENTS, PAYMENT)):
            assert (await call(fake, path, body, params=SITE)).status == 200
        assert (await call(fake, IDENTIFY, IDENTIFY_BODY, params=SITE)).status == 200


async def test_a_website_key_has_every_permission_whatever_permissions_says() -> None:
    async with FakeDataFast(permissions={"goals:write"}) as fake:
        assert (await call(fake, PAYMENTS, PAYMENT)).status == 200
        assert (await call(fake, IDENTIFY, IDENTIFY_BODY)).status == 200


@pytest.mark.parametrize("permissions", ["goals:write", [1]])
def test_permissions_must_be_a_collection_of_strings(permissions: Any) -> None:
    with pytest.raises(ValueError, match="permissions"):
        FakeDataFast(permissions=permissions)


# -- fail_next(..., path=...) -------------------------------------------------------------------


async def test_a_fault_scripted_for_one_path_leaves_the_others_alone(fake: FakeDataFast) -> None:
    fake.fail_next(503, retry_after=2, path=PAYMENTS)

    goal = await call(fake, GOALS, {"datafast_visitor_id": "v1", "name": "a"})
    identified = await call(fake, IDENTIFY, IDENTIFY_BODY)
    refused = await call(fake, PAYMENTS, PAYMENT)
    paid = await call(fake, PAYMENTS, PAYMENT)

    assert (goal.status, identified.status) == (200, 200)  # not consumed by them
    assert (refused.status, refused.headers["Retry-After"]) == (503, "2")
    assert "<html>" in refused.text
    assert paid.status == 200
    assert [p.transaction_id for p in fake.payments] == ["ch_123"]
    assert [r.status for r in fake.requests] == [200, 200, 503, 200]


async def test_each_request_takes_the_oldest_fault_that_applies_to_it(fake: FakeDataFast) -> None:
    fake.fail_next(500, path=PAYMENTS)
    fake.fail_next(429, times=2, path=IDENTIFY)
    fake.fail_next(502)  # every path

    goal = await call(fake, GOALS, {"datafast_visitor_id": "v1", "name": "a"})  # takes the 502
    identify = [await call(fake, IDENTIFY, IDENTIFY_BODY) for _ in range(3)]
    paid = [await call(fake, PAYMENTS, PAYMENT) for _ in range(2)]
    goal_after = await call(fake, GOALS, {"datafast_visitor_id": "v1", "name": "a"})

    assert goal.status == 502
    assert [a.status for a in identify] == [429, 429, 200]
    assert [a.status for a in paid] == [500, 200]
    assert goal_after.status == 200


async def test_a_fault_for_a_path_applies_to_its_deletes_too(fake: FakeDataFast) -> None:
    await post_goals(fake, ("v1", "a"))
    fake.fail_next(500, path=GOALS)
    fake.fail_next(disconnect=True, times=2, path=GOALS)  # aiohttp retries a DELETE once

    failed = await delete(fake, GOALS, name="a")
    with pytest.raises(aiohttp.ClientError):
        await delete(fake, GOALS, name="a")

    assert failed.status == 500
    assert fake.goals == [Goal("v1", "a")]  # a failed or dropped request deletes nothing
    assert [r.status for r in fake.requests[1:]] == [500, None, None]
    assert (await delete(fake, GOALS, name="a")).deleted["deleted"] == 1


@pytest.mark.parametrize("path", ["/api/v1/payment", "api/v1/payments", "/api/v1/goals?x=1", 5])
def test_fail_next_refuses_a_path_that_is_not_an_endpoint(path: Any) -> None:
    with pytest.raises(ValueError, match="path"):
        FakeDataFast().fail_next(503, path=path)


async def test_reset_forgets_payments_identities_and_path_faults(fake: FakeDataFast) -> None:
    await post_payments(fake, payment("ch_1"))
    await call(fake, IDENTIFY, IDENTIFY_BODY)
    fake.fail_next(500, path=PAYMENTS)

    fake.reset()

    assert (fake.payments, fake.identities, fake.received_goals) == ([], [], [])
    answer = await call(fake, PAYMENTS, payment("ch_1"))
    assert answer.json == {"message": ANY_STR, "transaction_id": "ch_1"}
    assert "duplicate" not in answer.json["message"]
    created = await call(fake, IDENTIFY, IDENTIFY_BODY)
    assert created.json["data"]["message"] == "User profile created successfully"


# -- through the SDK ----------------------------------------------------------------------------


async def test_the_sdk_records_a_payment_once_however_often_it_is_sent(fake: FakeDataFast) -> None:
    fake.fail_next(503, retry_after=0, path=PAYMENTS)
    moment = datetime.datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    async with client(fake) as df:
        queued = await df.track_payment(
            49.99, "usd", "ch_1", visitor_id=VID, email="a@b.co", timestamp=moment
        )
        goal = await df.track("v1", "signup")  # unaffected by the payments' fault
        first = await queued.wait(5)
        again = await df.send_payment(49.99, "usd", "ch_1", visitor_id=VID)
        await goal.wait(5)

    assert first == PaymentResult(PAID, "ch_1", duplicate=False)
    assert again == PaymentResult(DUPLICATE, "ch_1", duplicate=True)
    assert fake.payments == [
        Payment(49.99, "USD", "ch_1", visitor_id=VID, email="a@b.co", timestamp=moment)
    ]
    assert fake.payments[0].timestamp == moment.replace(microsecond=123000)
    assert fake.goals == [Goal("v1", "signup")]
    statuses = [(r.path, r.status) for r in fake.requests]
    assert statuses.count((PAYMENTS, 503)) == 1
    assert statuses.count((GOALS, 200)) == 1


async def test_the_sdk_identifies_through_the_fake() -> None:
    async with FakeDataFast(known_visitors={VID}) as fake, client(fake) as df:
        delivery = await df.identify(VID, "user_42", traits={"plan": "pro", "seats": 3})
        result = await delivery.wait(5)
        again = await df.send_identify(VID, "user_42")
        with pytest.raises(VisitorNotFoundError):
            await df.send_identify(VID2, "user_43")

    assert result == IdentifyResult("User profile created successfully", ANY_STR)
    assert again == IdentifyResult("User profile updated successfully", result.profile_id)
    assert fake.identities == [
        Identify(VID, "user_42", {"plan": "pro", "seats": 3}),
        Identify(VID, "user_42"),
    ]


async def test_the_sdk_deletes_goals_by_visitor_name_and_range(fake: FakeDataFast) -> None:
    async with client(fake) as df:
        for visitor, name in (("v1", "signup"), ("v2", "Sign Up"), ("v2", "purchase")):
            await df.send(visitor, name)
            await asyncio.sleep(0.003)
        by_visitor = await df.delete_goals(visitor_id="v1")
        [(_, purchase_at)] = [(g, t) for g, t in fake.received_goals if g.name == "purchase"]
        # end exclusive: a range that ends at the goal's time keeps it ...
        before = await df.delete_goals(
            start=purchase_at - datetime.timedelta(seconds=60), end=purchase_at, name="purchase"
        )
        # ... and one that starts at it deletes it.
        at_start = await df.delete_goals(
            start=purchase_at, end=purchase_at + datetime.timedelta(milliseconds=1)
        )
        by_name = await df.delete_goals(name="SIGN UP")

    assert by_visitor.raw[0]["deleted"] == 1
    assert by_visitor.message == "1 goal deleted successfully"
    assert before.raw[0]["deleted"] == 0
    assert at_start.raw[0]["deleted"] == 1
    assert by_name.raw[0]["deleted"] == 1
    assert by_name.raw[0]["name"] == "sign_up"
    assert fake.goals == []
    # The SDK sends the range under both spellings, with equal values.
    sent = [r.query for r in fake.requests if r.method == "DELETE" and "start" in r.query]
    assert all(q["start"] == q["startAt"] and q["end"] == q["endAt"] for q in sent)


async def test_the_sdk_deletes_payments(fake: FakeDataFast) -> None:
    async with client(fake) as df:
        await df.send_payment(10, "usd", "ch_1", visitor_id=VID, timestamp=at(5))
        await df.send_payment(10, "usd", "ch_2", visitor_id=VID2, timestamp=at(5, 2))
        await df.send_payment(10, "usd", "ch_3", visitor_id=VID2, timestamp=at(5, 3))
        by_id = await df.delete_payments(transaction_id="ch_1")
        with pytest.raises(NotFoundError):
            await df.delete_payments(transaction_id="ch_1")
        by_range = await df.delete_payments(start=at(1, 2), end=at(5, 3))
        by_visitor = await df.delete_payments(visitor_id=VID2)

    assert by_id.raw[0]["deleted"] == 1
    assert by_range.raw[0]["deleted"] == 1  # ch_3 is at the end: kept
    assert by_visitor.raw[0]["deleted"] == 1
    assert fake.payments == []


async def test_with_a_token_without_payments_write_goals_go_on_and_payments_fail() -> None:
    async with (
        FakeDataFast(api_key=ACCOUNT, website_id="site-1", permissions={"goals:write"}) as fake,
        client(fake, website_id="site-1") as df,
    ):
        paid = await df.track_payment(10, "usd", "ch_1")
        goal = await df.track("v1", "signup")
        with pytest.raises(PermissionDeniedError):
            await paid.wait(5)
        await goal.wait(5)
        later = await df.track("v1", "purchase")
        await later.wait(5)

    assert [g.name for g in fake.goals] == ["signup", "purchase"]
    assert fake.payments == []
    assert isinstance(paid.error, PermissionDeniedError)
    assert "lacks payments:write" in str(paid.error)


# -- the threaded fake and the fixture ----------------------------------------------------------


def test_the_threaded_fake_serves_the_write_api_to_a_synchronous_caller() -> None:
    with ThreadedFakeDataFast(api_key=ACCOUNT, permissions={"payments:write"}) as fake:
        fake.fail_next(500, path=PAYMENTS)
        refused = asyncio.run(call(fake, PAYMENTS, PAYMENT, params=SITE))
        paid = asyncio.run(call(fake, PAYMENTS, PAYMENT, params=SITE))
        no_goal = asyncio.run(
            call(fake, GOALS, {"datafast_visitor_id": "v", "name": "a"}, params=SITE)
        )
        fake.permissions = None
        identified = asyncio.run(call(fake, IDENTIFY, IDENTIFY_BODY, params=SITE))
        asyncio.run(call(fake, GOALS, {"datafast_visitor_id": "v", "name": "a"}, params=SITE))
        gone = asyncio.run(delete(fake, GOALS, name="a", **SITE))

        assert [refused.status, paid.status, no_goal.status] == [500, 200, 403]
        assert identified.status == 200
        assert gone.deleted["deleted"] == 1
        assert fake.payments == [Payment(49.99, "USD", "ch_123")]
        assert [(p.transaction_id, t.tzinfo) for p, t in fake.received_payments] == [
            ("ch_123", UTC)
        ]
        assert fake.identities == [Identify(VID, "user_42")]
        assert fake.goals == []
        assert fake.received_goals == []
        assert fake.permissions == {"goals:write", "payments:write", "identify:write"}
        fake.reset()
        assert fake.payments == []
        assert fake.identities == []


async def test_the_fixture_serves_payments_and_deletes(datafast_fake: ThreadedFakeDataFast) -> None:
    async with client(datafast_fake) as df:
        result = await df.send_payment(5, "usd", "ch_fixture")
        await df.send("v1", "signup")
        deleted = await df.delete_goals(visitor_id="v1")

    assert result.transaction_id == "ch_fixture"
    assert [p.transaction_id for p in datafast_fake.payments] == ["ch_fixture"]
    assert deleted.raw[0]["deleted"] == 1
    assert datafast_fake.goals == []


async def test_concurrent_repeats_of_a_transaction_record_it_once(fake: FakeDataFast) -> None:
    async with aiohttp.ClientSession() as session:

        async def post() -> str:
            headers = {"Authorization": f"Bearer {fake.api_key}"}
            async with session.post(fake.base_url + PAYMENTS, json=PAYMENT, headers=headers) as r:
                assert r.status == 200
                return str((await r.json())["message"])

        messages = await asyncio.gather(*(post() for _ in range(20)))

    assert messages.count(DUPLICATE) == 19
    assert len(fake.payments) == 1
