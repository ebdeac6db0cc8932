"""The deletes' filters, queries and answers, held to the contract text rather than to the code.

The oracle below is written from ``datafast-api.md`` ("Deleting goals", "Deleting payments")
and ``public-api.md`` ("Decided for turn 3", "Deletes"), not from ``_kinds/deletes.py``:

- a call with no filter at all is refused (nothing is deleted by accident);
- ``start`` and ``end`` go together, both aware datetimes, ``start < end``; with neither visitor
  nor name (nor transaction) a range is required; with a visitor or a name and no range, the
  delete is across all time (no range is sent);
- ``name`` is normalised as for ``track``: lowercased, spaces turned into ``_``, then
  ``^[a-z0-9_:-]{1,64}$`` and not ``identify``;
- ``visitor_id`` a non-empty ``str``, sent as ``datafast_visitor_id``; ``transaction_id`` as
  for ``track_payment`` (non-empty, at most 255 characters);
- the range is sent as both ``start``/``end`` and ``startAt``/``endAt``, with the same values,
  ISO 8601 in UTC.

One rule is the SDK's own and the oracle follows it (the text says a ``transaction_id`` "wins
over every other filter"): ``delete_payments`` refuses a ``transaction_id`` given with other
filters, and says why. As everywhere, texts must be sendable as UTF-8.

An aware datetime whose instant is outside ``datetime``'s range once in UTC must be refused,
not crash.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import zoneinfo
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafast_async import DeleteResult, NotFoundError, ValidationError
from datafast_async._kinds.deletes import (
    DELETE_GOALS,
    DELETE_PAYMENTS,
    encoded,
    goals_query,
    payments_query,
)

SETTINGS = settings(max_examples=300, deadline=None)
UTC = datetime.timezone.utc
VID = "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd"
NAME_RE = re.compile(r"\A[a-z0-9_:-]{1,64}\Z")
ISO_UTC = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)\Z")
MS = datetime.timedelta(milliseconds=1)
RANGE_NAMES = ("start", "end", "startAt", "endAt")
T0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime.datetime(2026, 2, 1, tzinfo=UTC)

Args = tuple[Any, Any, Any, Any]
Query = list[tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# The oracle


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return json.loads(json.dumps(value, ensure_ascii=False))  # type: ignore[no-any-return]


def _sendable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utc_instant(moment: datetime.datetime) -> datetime.datetime:
    offset = moment.utcoffset()
    assert offset is not None
    return moment.replace(tzinfo=None) - offset


@dataclasses.dataclass(frozen=True)
class Expected:
    filters: dict[str, str]  # every parameter but the range's
    start: datetime.datetime | None  # the range's instants, naive, in UTC
    end: datetime.datetime | None


def _to_ms(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def _up_to_ms(moment: datetime.datetime) -> datetime.datetime:
    extra = moment.microsecond % 1000
    return moment + datetime.timedelta(microseconds=1000 - extra) if extra else moment


def _range(start: object, end: object, broken: set[str]) -> tuple[Any, Any]:
    if start is None and end is None:
        return None, None
    if start is None or end is None:
        broken.update({"start", "end"})
        return None, None
    instants = []
    for field, moment in (("start", start), ("end", end)):
        if not isinstance(moment, datetime.datetime) or moment.utcoffset() is None:
            broken.add(field)
            continue
        try:
            instants.append(utc_instant(moment))
        except OverflowError:  # no such datetime in UTC: it cannot be sent
            broken.add(field)
    # As sent (to the millisecond, inside what was asked: the start up, the end down): start
    # must come before end.
    if len(instants) == 2 and not _up_to_ms(instants[0]) < _to_ms(instants[1]):
        broken.update({"start", "end"})
    return (instants[0], instants[1]) if len(instants) == 2 else (None, None)


def _visitor(visitor_id: object, broken: set[str], filters: dict[str, str]) -> None:
    if visitor_id is None:
        return
    text = _text(visitor_id)
    if text is None or text == "" or not _sendable(text):
        broken.add("visitor_id")
    else:
        filters["datafast_visitor_id"] = text


def goals_oracle(args: Args) -> tuple[set[str], Expected | None]:
    visitor_id, name, start, end = args
    broken: set[str] = set()
    filters: dict[str, str] = {}
    _visitor(visitor_id, broken, filters)
    if name is not None:
        raw = _text(name)
        normalized = None if raw is None else raw.lower().replace(" ", "_")
        if normalized is None or NAME_RE.match(normalized) is None or normalized == "identify":
            broken.add("name")
        else:
            filters["name"] = normalized
    first, last = _range(start, end, broken)
    if visitor_id is None and name is None and start is None and end is None:
        broken.add("filter")
    if broken:
        return broken, None
    return broken, Expected(filters, first, last)


def payments_oracle(args: Args) -> tuple[set[str], Expected | None]:
    transaction_id, visitor_id, start, end = args
    broken: set[str] = set()
    filters: dict[str, str] = {}
    if transaction_id is not None:
        text = _text(transaction_id)
        if text is None or not 1 <= len(text) <= 255 or not _sendable(text):
            broken.add("transaction_id")
        else:
            filters["transaction_id"] = text
        if visitor_id is not None or start is not None or end is not None:
            broken.add("transaction_id")  # the SDK's rule: it names one payment, alone
    _visitor(visitor_id, broken, filters)
    first, last = _range(start, end, broken)
    if transaction_id is None and visitor_id is None and start is None and end is None:
        broken.add("filter")
    if broken:
        return broken, None
    return broken, Expected(filters, first, last)


def instant_of(text: str) -> datetime.datetime:
    assert ISO_UTC.match(text), f"{text!r} is not ISO 8601 in UTC"
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == datetime.timedelta(0)
    return moment.replace(tzinfo=None)


def check_query(query: Query, expected: Expected) -> None:
    names = [name for name, _ in query]
    assert len(names) == len(set(names)), f"a parameter twice: {query}"
    assert all(type(name) is str and type(value) is str for name, value in query)
    sent = dict(query)
    span = {name: sent.pop(name) for name in RANGE_NAMES if name in sent}
    assert sent == expected.filters
    if expected.start is None:
        assert span == {}
    else:
        assert expected.end is not None
        assert set(span) == set(RANGE_NAMES)
        assert span["start"] == span["startAt"]
        assert span["end"] == span["endAt"]
        assert abs(instant_of(span["start"]) - expected.start) < MS
        assert abs(instant_of(span["end"]) - expected.end) < MS
    # The query string reads back as the same parameters.
    assert parse_qsl(encoded(query), keep_blank_values=True, strict_parsing=True) == query


def attempt(build: Callable[..., Query], args: Args) -> tuple[Query | None, ValidationError | None]:
    try:
        return build(*args), None
    except ValidationError as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------
# Strategies


class Sub(str):
    def __repr__(self) -> str:
        return f"Sub({str.__repr__(self)})"


@dataclasses.dataclass(frozen=True)
class AsSub:
    text: str

    def __repr__(self) -> str:
        return f"Sub({self.text!r})"


def realize(recipe: object) -> Any:
    return Sub(recipe.text) if isinstance(recipe, AsSub) else recipe


fixed_offsets = st.builds(
    datetime.timezone,
    st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ),
)
zones = st.one_of(st.just(UTC), fixed_offsets, st.timezones())
aware = st.datetimes(
    min_value=datetime.datetime.min,
    max_value=datetime.datetime.max,
    timezones=zones,
)
moments = st.one_of(
    aware,
    st.datetimes(min_value=datetime.datetime.min, max_value=datetime.datetime.max),
    st.sampled_from([datetime.date(2026, 1, 1), "2026-01-01T00:00:00Z", 1_767_225_600]),
)
# An ordered pair: the same instant or later, by a microsecond to years, in any zones.
ordered = st.builds(
    lambda start, delta, zone: (start, (start + delta).astimezone(zone)),
    st.datetimes(
        min_value=datetime.datetime(1, 1, 2),
        max_value=datetime.datetime(9990, 1, 1),
        timezones=zones,
    ),
    st.one_of(
        st.sampled_from([datetime.timedelta(0), datetime.timedelta(microseconds=1), MS]),
        st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=3000)),
    ),
    zones,
)
ranges = st.one_of(
    st.just((None, None)),
    ordered,
    ordered.map(lambda pair: (pair[1], pair[0])),  # reversed
    st.tuples(moments, moments),
    st.tuples(st.none(), moments),
    st.tuples(moments, st.none()),
)
texts = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["Sign Up", "signup", "checkout:step-2", "identify", "IDENTIFY", "a.b"]),
    st.sampled_from(["x" * 64, "x" * 65, "", "\ud800", "a&b=c?d#e", " ", "é"]),
    st.sampled_from(["x" * 255, "x" * 256]),
)
optional = st.one_of(st.none(), texts, st.builds(AsSub, texts), st.sampled_from([7, b"v"]))
# Usual filters too (None, or a value that passes), so that the range is reached and checked.
usual = st.one_of(
    st.none(), st.sampled_from([VID, "signup", "Sign Up", "ch_1"]), st.builds(AsSub, st.just("v"))
)


def deletes(first: st.SearchStrategy[object]) -> st.SearchStrategy[Args]:
    """Recipes of the four arguments (``realize`` them in the test)."""
    return st.builds(
        lambda one, two, span: (one, two, *span),
        st.one_of(usual, first),
        st.one_of(usual, optional),
        st.one_of(ordered, ranges),
    )


def realized(recipe: Args) -> Args:
    one, two, start, end = recipe
    return realize(one), realize(two), start, end


# ---------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(deletes(optional))
def test_a_goals_delete_is_accepted_exactly_when_the_rules_allow_it(recipe: Args) -> None:
    args = realized(recipe)
    broken, expected = goals_oracle(args)
    query, error = attempt(goals_query, args)
    if error is not None:
        assert broken, f"refused ({error.field}: {error}) but the rules allow it"
        assert error.field in broken, f"{error.field!r} is not among the broken {broken}"
        assert "nothing" in str(error) or error.field != "filter"
        return
    assert not broken, f"accepted, but it breaks {broken}"
    assert query is not None
    assert expected is not None
    check_query(query, expected)


@SETTINGS
@given(deletes(st.one_of(st.none(), st.none(), optional)))
def test_a_payments_delete_is_accepted_exactly_when_the_rules_allow_it(recipe: Args) -> None:
    args = realized(recipe)
    broken, expected = payments_oracle(args)
    query, error = attempt(payments_query, args)
    if error is not None:
        assert broken, f"refused ({error.field}: {error}) but the rules allow it"
        assert error.field in broken, f"{error.field!r} is not among the broken {broken}"
        return
    assert not broken, f"accepted, but it breaks {broken}"
    assert query is not None
    assert expected is not None
    check_query(query, expected)


# ---------------------------------------------------------------------------------------------
# No filter, one filter, all time


@pytest.mark.parametrize("build", [goals_query, payments_query])
def test_a_delete_with_no_filter_at_all_is_refused(build: Callable[..., Query]) -> None:
    with pytest.raises(ValidationError) as info:
        build(None, None, None, None)
    assert info.value.field == "filter"
    assert "nothing was deleted" in str(info.value)


def test_a_visitor_s_goals_are_deleted_across_all_time() -> None:
    assert goals_query(VID, None, None, None) == [("datafast_visitor_id", VID)]


def test_a_name_s_goals_are_deleted_across_all_time_under_the_normalised_name() -> None:
    assert goals_query(None, "Newsletter Signup", None, None) == [("name", "newsletter_signup")]
    assert goals_query(None, Sub("Sign Up"), None, None) == [("name", "sign_up")]
    assert type(goals_query(None, Sub("x"), None, None)[0][1]) is str


@pytest.mark.parametrize("name", ["identify", "IDENTIFY", "", "sign.up", "x" * 65, "café", 3])
def test_a_name_a_goal_could_not_have_is_refused(name: object) -> None:
    with pytest.raises(ValidationError) as info:
        goals_query(VID, name, None, None)
    assert info.value.field == "name"


@pytest.mark.parametrize("build", [goals_query, payments_query])
@pytest.mark.parametrize("visitor_id", ["", 7, b"v", "\ud800"])
def test_a_bad_visitor_is_refused(build: Callable[..., Query], visitor_id: object) -> None:
    args = (
        (None, visitor_id, None, None)
        if build is payments_query
        else (visitor_id, None, None, None)
    )
    with pytest.raises(ValidationError) as info:
        build(*args)
    assert info.value.field == "visitor_id"


def test_a_delete_s_visitor_is_any_non_empty_str() -> None:
    # The text asks no UUID of a delete's visitor (identify's does): the SDK sends any.
    assert goals_query("visitor-1", None, None, None) == [("datafast_visitor_id", "visitor-1")]


# ---------------------------------------------------------------------------------------------
# The range


def test_the_range_is_sent_under_both_spellings_with_the_same_values() -> None:
    query = goals_query(None, None, T0, T1)
    assert query == [
        ("start", "2026-01-01T00:00:00.000Z"),
        ("end", "2026-02-01T00:00:00.000Z"),
        ("startAt", "2026-01-01T00:00:00.000Z"),
        ("endAt", "2026-02-01T00:00:00.000Z"),
    ]
    assert payments_query(None, None, T0, T1) == query
    assert encoded(query) == (
        "start=2026-01-01T00%3A00%3A00.000Z&end=2026-02-01T00%3A00%3A00.000Z"
        "&startAt=2026-01-01T00%3A00%3A00.000Z&endAt=2026-02-01T00%3A00%3A00.000Z"
    )


def test_a_range_in_other_zones_is_sent_in_utc() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    start = datetime.datetime(2026, 7, 1, 2, 0, tzinfo=paris)  # CEST: 00:00Z
    end = datetime.datetime(2026, 7, 1, 18, 30, 0, 250_000, tzinfo=tokyo)  # 09:30:00.250Z
    assert dict(goals_query(VID, None, start, end)) == {
        "datafast_visitor_id": VID,
        "start": "2026-07-01T00:00:00.000Z",
        "end": "2026-07-01T09:30:00.250Z",
        "startAt": "2026-07-01T00:00:00.000Z",
        "endAt": "2026-07-01T09:30:00.250Z",
    }


def test_start_before_end_is_by_instant_not_by_wall_clock() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    start = datetime.datetime(2026, 1, 1, 10, tzinfo=plus_two)  # 08:00Z
    end = datetime.datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert dict(goals_query(None, None, start, end))["start"] == "2026-01-01T08:00:00.000Z"
    with pytest.raises(ValidationError):
        goals_query(None, None, end, start)
    plus_three = datetime.timezone(datetime.timedelta(hours=3))
    same = datetime.datetime(2026, 1, 1, 11, tzinfo=plus_three)  # 08:00Z too
    with pytest.raises(ValidationError):
        goals_query(None, None, start, same)


@pytest.mark.parametrize("build", [goals_query, payments_query])
@pytest.mark.parametrize(("start", "end"), [(T0, None), (None, T1)])
def test_start_and_end_go_together(build: Callable[..., Query], start: object, end: object) -> None:
    with pytest.raises(ValidationError) as info:
        build(None, VID if build is payments_query else None, start, end)
    assert info.value.field in ("start", "end")
    assert "together" in str(info.value)
    with pytest.raises(ValidationError):  # a visitor does not make half a range whole
        build(*((VID, None) if build is goals_query else (None, VID)), start, end)


@pytest.mark.parametrize("build", [goals_query, payments_query])
@pytest.mark.parametrize(("start", "end"), [(T0, T0), (T1, T0)])
def test_start_must_be_before_end(build: Callable[..., Query], start: object, end: object) -> None:
    with pytest.raises(ValidationError) as info:
        build(None, None, start, end)
    assert info.value.field in ("start", "end")


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (datetime.datetime(2026, 1, 1), T1, "start"),
        (T0, datetime.datetime(2026, 2, 1), "end"),
        (datetime.date(2026, 1, 1), T1, "start"),
        (T0, "2026-02-01T00:00:00Z", "end"),
        (1_767_225_600, T1, "start"),
    ],
)
def test_the_range_is_of_aware_datetimes(start: object, end: object, field: str) -> None:
    for build in (goals_query, payments_query):
        with pytest.raises(ValidationError) as info:
            build(None, None, start, end)
        assert info.value.field == field


def test_filters_and_a_range_are_sent_together() -> None:
    query = dict(goals_query(VID, "signup", T0, T1))
    assert query["datafast_visitor_id"] == VID
    assert query["name"] == "signup"
    assert query["start"] == query["startAt"]
    query = dict(payments_query(None, VID, T0, T1))
    assert set(query) == {"datafast_visitor_id", *RANGE_NAMES}


# ---------------------------------------------------------------------------------------------
# delete_payments: the transaction


def test_a_transaction_is_deleted_by_its_id_alone() -> None:
    assert payments_query("ch_1", None, None, None) == [("transaction_id", "ch_1")]
    assert payments_query(Sub("ch_1"), None, None, None) == [("transaction_id", "ch_1")]


@pytest.mark.parametrize(
    ("visitor_id", "start", "end"), [(VID, None, None), (None, T0, T1), (VID, T0, T1)]
)
def test_a_transaction_with_other_filters_is_refused_saying_why(
    visitor_id: object, start: object, end: object
) -> None:
    # The text: transaction_id "wins over every other filter". The SDK refuses the mix rather
    # than send filters the API would ignore; the message says so.
    with pytest.raises(ValidationError) as info:
        payments_query("ch_1", visitor_id, start, end)
    assert info.value.field == "transaction_id"
    message = str(info.value)
    assert "alone" in message
    assert "ignores every other filter" in message
    assert "nothing was deleted" in message


@pytest.mark.parametrize("transaction_id", ["", "x" * 256, 123, b"ch_1", "ch\ud800"])
def test_a_bad_transaction_id_is_refused(transaction_id: object) -> None:
    with pytest.raises(ValidationError) as info:
        payments_query(transaction_id, None, None, None)
    assert info.value.field == "transaction_id"


def test_payments_without_a_transaction_need_a_visitor_or_a_range() -> None:
    assert payments_query(None, VID, None, None) == [("datafast_visitor_id", VID)]
    assert len(payments_query(None, None, T0, T1)) == 4


def test_parameters_are_escaped_in_the_query_string() -> None:
    query = payments_query("ch 1&x=2?#/é", None, None, None)
    assert parse_qsl(encoded(query), strict_parsing=True) == [("transaction_id", "ch 1&x=2?#/é")]
    assert "&x=" not in encoded(query)


# ---------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize("deletion", [DELETE_GOALS, DELETE_PAYMENTS])
def test_a_delete_success_keeps_the_api_s_data_as_it_came(deletion: Any) -> None:
    data = [{"message": "Deleted 3 goals", "deleted": 3, "filters": {"name": "signup"}}]
    body = json.dumps({"status": "success", "data": data}).encode()
    assert deletion.is_success(body)
    result = deletion.read_result(body)
    assert result.message == "Deleted 3 goals"
    assert result.raw == data
    assert result == DeleteResult("Deleted 3 goals")  # raw is not compared


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"message": "Deleted"}, "Deleted"),  # an object tolerated
        ([], None),
        ([1, {"message": "x"}], None),
        ([{"message": 5}], None),
        (None, None),
        ("deleted", None),
    ],
)
def test_a_delete_success_of_another_shape_is_read_tolerantly(
    data: object, message: object
) -> None:
    body = json.dumps({"status": "success", "data": data}).encode()
    assert DELETE_GOALS.is_success(body)
    result = DELETE_GOALS.read_result(body)
    assert result.message == message
    assert result.raw == data


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>504 Gateway Time-out</html>",
        b"{}",
        b"[]",
        b"null",
        b'{"status": "error", "error": {"code": 504, "message": "timed out"}}',
        b'{"message": "Deleted 3 payments"}',
        b'{"status": "SUCCESS", "data": []}',
        b'[{"status": "success"}]',
        b"\xff",
        b"[" * 100_000,
    ],
)
def test_anything_else_is_not_a_delete_success(body: bytes) -> None:
    assert not DELETE_GOALS.is_success(body)
    assert not DELETE_PAYMENTS.is_success(body)


def test_the_delete_endpoints() -> None:
    assert (DELETE_GOALS.method, DELETE_GOALS.path) == ("DELETE", "/api/v1/goals")
    assert (DELETE_PAYMENTS.method, DELETE_PAYMENTS.path) == ("DELETE", "/api/v1/payments")
    # A 404 of a delete means nothing matched (no such transaction), not a missing visitor.
    assert DELETE_PAYMENTS.not_found is NotFoundError


@pytest.mark.parametrize("build", [goals_query, payments_query])
def test_a_range_that_cannot_be_put_in_utc_is_refused(build: Callable[..., Query]) -> None:
    start = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    with pytest.raises(ValidationError) as info:
        build(None, None, start, T1)
    assert info.value.field == "start"
    end = datetime.datetime.max.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=-1)))
    with pytest.raises(ValidationError) as info:
        build(None, None, T0, end)
    assert info.value.field == "end"


def test_a_range_before_the_year_1000_is_sent_as_iso_8601_or_refused() -> None:
    start = datetime.datetime(999, 1, 1, tzinfo=UTC)
    try:
        query = dict(goals_query(None, None, start, T1))
    except ValidationError:
        return
    instant_of(query["start"])


class ClaimsDatetime:
    """An object whose ``__class__`` claims ``datetime`` (as ``unittest.mock``'s ``spec=``
    objects do): ``isinstance`` believes it, ``type()`` does not."""

    __class__ = property(lambda self: datetime.datetime)


@pytest.mark.parametrize("build", [goals_query, payments_query])
def test_an_object_that_only_claims_datetime_is_refused(build: Callable[..., Query]) -> None:
    with pytest.raises(ValidationError) as info:
        build(None, None, ClaimsDatetime(), T1)
    assert info.value.field == "start"


class OffsetAsInt(datetime.tzinfo):
    """A broken tzinfo (an application's own): its offset is not a timedelta."""

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return 3600  # type: ignore[return-value]

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return None

    def tzname(self, dt: datetime.datetime | None) -> str | None:
        return None


@pytest.mark.parametrize("build", [goals_query, payments_query])
def test_a_range_whose_zone_is_broken_is_refused(build: Callable[..., Query]) -> None:
    with pytest.raises(ValidationError) as info:
        build(None, None, T0, datetime.datetime(2026, 3, 1, tzinfo=OffsetAsInt()))
    assert info.value.field == "end"


# ---------------------------------------------------------------------------------------------
# Found by these tests, and fixed


@pytest.mark.parametrize("build", [goals_query, payments_query])
def test_the_range_sent_has_its_start_before_its_end(build: Callable[..., Query]) -> None:
    start = datetime.datetime(2026, 1, 1, 12, 0, 0, 100, tzinfo=UTC)
    end = start.replace(microsecond=900)
    try:
        query = dict(build(None, None, start, end))
    except ValidationError:
        return  # refusing a range narrower than what is sent is right too
    assert instant_of(query["start"]) < instant_of(query["end"])
