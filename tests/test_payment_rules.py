"""Payments' rules, body and answers, held to the contract text rather than to the code.

The oracle below is written from ``datafast-api.md`` ("Payments: POST /api/v1/payments") and
``public-api.md`` ("Decided for turn 3", "Payments"), not from ``_kinds/payments.py``:

- ``amount``: a finite ``int``/``float``/``Decimal`` of 0 or more, not a ``bool`` (a subclass
  counts as its value); sent as a JSON number equal to it;
- ``currency``: three ASCII letters, sent upper-cased;
- ``transaction_id``: a non-empty ``str`` of at most 255 characters;
- ``visitor_id``: a non-empty ``str`` when given, sent as ``datafast_visitor_id``;
- ``email``, ``name``, ``customer_id``: a ``str`` when given, sent under those names (not the
  ``customer_email``/``customer_name`` aliases);
- ``renewal``, ``refunded``, ``is_free_trial``: a ``bool`` when given (not ``1``/``0``);
- ``timestamp``: an aware ``datetime`` (naive refused), sent as ISO 8601 in UTC;
- ``None`` fields are left out of the body; ``ValidationError.field`` names the field.

Rules the text does not state, which the oracle takes from the SDK's documented choices:
every text must be sendable as UTF-8 (no lone surrogates, as for goals); an amount must be a
finite number for a JSON reader (an ``int`` or ``Decimal`` past about 1.8e308 is refused); the
timestamp is sent to the millisecond.

An aware timestamp whose instant is outside ``datetime``'s range once in UTC (year 1 with a
positive offset, year 9999 with a negative one) must be refused, not crash.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import json
import math
import operator
import pickle
import re
import string
import zoneinfo
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any
from unittest import mock

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafast_async import Payment, PaymentResult, ValidationError
from datafast_async._kinds import payments as payments_module
from datafast_async._kinds.payments import PAYMENTS, encode_fields, format_timestamp, validate

SETTINGS = settings(max_examples=300, deadline=None)
UTC = datetime.timezone.utc
VID = "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd"
FIELDS = (
    "amount",
    "currency",
    "transaction_id",
    "visitor_id",
    "email",
    "name",
    "customer_id",
    "renewal",
    "refunded",
    "is_free_trial",
    "timestamp",
)
TEXTS = ("email", "name", "customer_id")
BOOLEANS = ("renewal", "refunded", "is_free_trial")
# ISO 8601, in UTC ("Z" or "+00:00"), with an optional fraction of a second.
ISO_UTC = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)\Z")
MS = datetime.timedelta(milliseconds=1)

Args = dict[str, Any]
USUAL: Args = {"amount": 1, "currency": "usd", "transaction_id": "ch_1"}


# ---------------------------------------------------------------------------------------------
# The oracle


def _text(value: object) -> str | None:
    """The characters of a string (a subclass's too, as ``json.dumps`` writes them)."""
    if not isinstance(value, str):
        return None
    return json.loads(json.dumps(value, ensure_ascii=False))  # type: ignore[no-any-return]


def _sendable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _amount(value: object) -> float | Decimal | None:
    """The number the API should receive: a ``float`` (compared as that float) or an exact
    ``Decimal``; ``None`` when the rules refuse the amount."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        number = float(value)
        return number if math.isfinite(number) and number >= 0 else None
    if isinstance(value, int):
        exact = Decimal(operator.index(value))
    elif isinstance(value, Decimal):
        exact = Decimal(value)
        if not exact.is_finite():
            return None
    else:
        return None
    if exact < 0 or not math.isfinite(float(exact)):  # the SDK's rule: finite for a JSON reader
        return None
    if exact and not float(exact):  # the SDK's rule: not so small a JSON reader sees 0
        return None
    return exact


@dataclasses.dataclass(frozen=True)
class Expected:
    """What the rules say the API receives for a payment they accept."""

    amount: float | Decimal
    body: dict[str, object]  # every field but the amount and the timestamp, as JSON gives it
    instant: datetime.datetime | None  # the timestamp's instant, naive, in UTC


def oracle(args: Args) -> tuple[set[str], Expected | None]:
    """The fields a payment breaks, and what the API should receive when it breaks none."""
    broken: set[str] = set()
    body: dict[str, object] = {}

    amount = _amount(args.get("amount"))
    if amount is None:
        broken.add("amount")

    currency = _text(args.get("currency"))
    if currency is None or len(currency) != 3 or not set(currency) <= set(string.ascii_letters):
        broken.add("currency")
    else:
        body["currency"] = currency.upper()

    transaction_id = _text(args.get("transaction_id"))
    if (
        transaction_id is None
        or not 1 <= len(transaction_id) <= 255
        or not _sendable(transaction_id)
    ):
        broken.add("transaction_id")
    else:
        body["transaction_id"] = transaction_id

    if args.get("visitor_id") is not None:
        visitor_id = _text(args["visitor_id"])
        if visitor_id is None or visitor_id == "" or not _sendable(visitor_id):
            broken.add("visitor_id")
        else:
            body["datafast_visitor_id"] = visitor_id

    for field in TEXTS:
        if args.get(field) is not None:
            text = _text(args[field])
            if text is None or not _sendable(text):
                broken.add(field)
            else:
                body[field] = text

    for field in BOOLEANS:
        if args.get(field) is not None:
            if type(args[field]) is not bool:
                broken.add(field)
            else:
                body[field] = args[field]

    instant = None
    stamp = args.get("timestamp")
    if stamp is not None:
        offset = stamp.utcoffset() if isinstance(stamp, datetime.datetime) else None
        if offset is None:  # not a datetime, or a naive one
            broken.add("timestamp")
        else:
            try:
                instant = utc_instant(stamp)
            except OverflowError:  # no such datetime in UTC: it cannot be sent
                broken.add("timestamp")

    if broken:
        return broken, None
    assert amount is not None
    return broken, Expected(amount, body, instant)


def _refuse_constant(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")


def parsed(body: bytes) -> dict[str, Any]:
    """The body as a strict JSON reader gets it: UTF-8, no NaN/Infinity; numbers exact."""
    data = json.loads(
        body.decode("utf-8", "strict"),
        parse_float=Decimal,
        parse_int=Decimal,
        parse_constant=_refuse_constant,
    )
    assert isinstance(data, dict)
    return data


def typed(value: object) -> object:
    """``value`` with each leaf's type beside it (``True == 1`` must not pass)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    return (type(value).__name__, value)


def instant_of(text: object) -> datetime.datetime:
    """An ISO 8601 UTC text's instant, naive, in UTC."""
    assert isinstance(text, str)
    assert ISO_UTC.match(text), f"{text!r} is not ISO 8601 in UTC"
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == datetime.timedelta(0)
    return moment.replace(tzinfo=None)


def utc_instant(stamp: datetime.datetime) -> datetime.datetime:
    """An aware datetime's instant, naive, in UTC (by its offset, not by astimezone)."""
    offset = stamp.utcoffset()
    assert offset is not None
    return stamp.replace(tzinfo=None) - offset


def same_number(got: object, wanted: float | Decimal) -> bool:
    if isinstance(wanted, float):
        return isinstance(got, (int, float, Decimal)) and float(got) == wanted
    return isinstance(got, (int, Decimal)) and Decimal(got) == wanted


def check_body(body: bytes, expected: Expected) -> None:
    data = parsed(body)
    amount = data.pop("amount")
    assert same_number(amount, expected.amount), f"amount {amount!r} != {expected.amount!r}"
    stamp = data.pop("timestamp", None)
    if expected.instant is None:
        assert stamp is None
    else:
        assert abs(instant_of(stamp) - expected.instant) < MS
    assert typed(data) == typed(expected.body)


def attempt(args: Args) -> tuple[Any, ValidationError | None]:
    try:
        return validate(**args), None
    except ValidationError as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------
# Strategies (recipes: Hypothesis must not see instances of subclasses among what it draws)


class Sub(str):
    def __repr__(self) -> str:
        return f"Sub({str.__repr__(self)})"


class Cents(int):
    pass


class Price(float):
    pass


class Money(Decimal):
    """A plain Decimal subclass, as a money library might define (no method overridden)."""


class Level(enum.IntEnum):
    ZERO = 0
    ONE = 1
    NEGATIVE = -5
    HUGE = 2**1100


class Code(str, enum.Enum):
    USD = "usd"
    EUR = "EUR"
    BAD = "US"


@dataclasses.dataclass(frozen=True)
class As:
    """Stands for ``kind(value)``."""

    kind: Callable[[Any], object]
    value: object

    def __repr__(self) -> str:
        return f"{getattr(self.kind, '__name__', self.kind)}({self.value!r})"


def realize(recipe: object) -> Any:
    return recipe.kind(recipe.value) if isinstance(recipe, As) else recipe


# Around float's largest value: ints at 2**1024 - 2**970 and up round to infinity.
BIG_INTS = [
    10**308,
    2**1024 - 2**970 - 1,
    2**1024 - 2**970,
    2**1024,
    10**400,
    10**5000,  # past CPython's int-to-str digit limit
    -(10**400),
]
amounts = st.one_of(
    st.integers(min_value=-3, max_value=10**6),
    st.integers(),
    st.sampled_from(range(len(BIG_INTS))).map(BIG_INTS.__getitem__),
    st.floats(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            Decimal("-0"),
            Decimal("-0.00"),
            Decimal("1E+400"),
            Decimal("-1E-1000"),
            Decimal("1E-1000"),
            Decimal("sNaN"),
            True,
            False,
            None,
            "49.99",
            b"1",
            Fraction(1, 3),
            complex(1, 0),
        ]
    ),
    st.builds(As, st.just(Cents), st.integers(min_value=-2, max_value=10**9)),
    st.builds(As, st.just(Price), st.floats()),
    st.builds(As, st.just(Money), st.decimals(allow_nan=False, allow_infinity=False)),
    st.builds(As, st.just(Level), st.sampled_from([0, 1, -5, 2**1100])),
)
LETTERS_AND_ODD = string.ascii_letters + "é\u212aİßÉ \uff10$1\x00"
str_texts = st.one_of(
    st.text(max_size=5),
    st.text(st.sampled_from(LETTERS_AND_ODD), max_size=4),
    st.builds(
        operator.mul,
        st.sampled_from(["a", "é", " ", "\ud800"]),
        st.sampled_from([0, 1, 3, 254, 255, 256]),
    ),
)
currencies = st.one_of(
    st.text(st.sampled_from(LETTERS_AND_ODD), min_size=2, max_size=4),
    st.sampled_from(
        ["usd", "USD", "Eur", "\uff35\uff33\uff24", "\u212aRW", "ÉUR", "us$", "u d", "\ud800ab"]
    ),
    st.builds(As, st.just(Sub), st.text(st.sampled_from(string.ascii_letters), max_size=4)),
    st.builds(As, st.just(Code), st.sampled_from(["usd", "EUR", "US"])),
    st.sampled_from([None, 840, b"USD"]),
)
ids = st.one_of(
    str_texts,
    st.builds(As, st.just(Sub), str_texts),
    st.sampled_from([None, 123, b"ch_1", ["ch_1"]]),
)
optional_texts = st.one_of(
    st.none(), str_texts, st.builds(As, st.just(Sub), str_texts), st.sampled_from([5, b"x"])
)
booleans = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, "true", 1.0]))
fixed_offsets = st.builds(
    datetime.timezone,
    st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ),
)
timestamps = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime.datetime.min,
        max_value=datetime.datetime.max,
        timezones=st.one_of(st.none(), st.just(UTC), fixed_offsets, st.timezones()),
    ),
    st.sampled_from(
        [datetime.date(2026, 1, 1), "2026-01-01T00:00:00Z", 1_767_225_600, datetime.time(1)]
    ),
)
# Usual payments, so that later fields get checked too; and anything in any field.
usual_payments = st.fixed_dictionaries(
    {
        "amount": st.one_of(
            st.integers(min_value=0, max_value=10**6),
            st.floats(min_value=0, max_value=1e6),
            st.decimals(min_value=0, max_value=10**6, places=2),
        ),
        "currency": st.sampled_from(["usd", "EUR", "gbp"]),
        "transaction_id": st.text(min_size=1, max_size=20).filter(_sendable),
    },
    optional={
        "visitor_id": optional_texts,
        "email": optional_texts,
        "name": optional_texts,
        "customer_id": optional_texts,
        "renewal": booleans,
        "refunded": booleans,
        "is_free_trial": booleans,
        "timestamp": timestamps,
    },
)
any_payments = st.fixed_dictionaries(
    {"amount": amounts, "currency": currencies, "transaction_id": ids},
    optional={
        "visitor_id": optional_texts,
        "email": optional_texts,
        "name": optional_texts,
        "customer_id": optional_texts,
        "renewal": booleans,
        "refunded": booleans,
        "is_free_trial": booleans,
        "timestamp": timestamps,
    },
)
payments = st.one_of(usual_payments, any_payments)


def payment_of(recipe: Args) -> Args:
    return {field: realize(value) for field, value in recipe.items()}


# ---------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(payments)
def test_a_payment_is_accepted_exactly_when_the_rules_allow_it(recipe: Args) -> None:
    args = payment_of(recipe)
    broken, expected = oracle(args)
    fields, error = attempt(args)
    if error is not None:
        assert broken, f"refused ({error.field}: {error}) but the rules allow it"
        assert error.field in broken, f"{error.field!r} is not among the broken {broken}"
        assert str(error)
        with pytest.raises(ValidationError) as info:
            Payment(**args)
        assert info.value.field == error.field
        return
    assert not broken, f"accepted, but it breaks {broken}"
    assert expected is not None

    # The validated fields: plain types, the rules' values.
    assert len(fields) == len(FIELDS)
    by_name = dict(zip(FIELDS, fields, strict=True))
    assert same_number(by_name["amount"], expected.amount)
    assert not isinstance(by_name["amount"], bool)
    assert type(by_name["currency"]) is type(by_name["transaction_id"]) is str
    wire_names = {"visitor_id": "datafast_visitor_id"}
    for field in ("currency", "transaction_id", "visitor_id", *TEXTS, *BOOLEANS):
        wanted = expected.body.get(wire_names.get(field, field))
        assert typed(by_name[field]) == typed(wanted), field
    stamp = by_name["timestamp"]
    if expected.instant is None:
        assert stamp is None
    else:
        assert isinstance(stamp, datetime.datetime)
        assert stamp.utcoffset() == datetime.timedelta(0)
        assert abs(stamp.replace(tzinfo=None) - expected.instant) < MS

    # The body: valid JSON holding exactly those values, nothing more.
    body = encode_fields(*fields)
    check_body(body, expected)
    assert PAYMENTS.encode(fields) == body

    # Payment() validates through the same rules.
    payment = Payment(**args)
    assert PAYMENTS.fields_of(payment) == fields
    assert PAYMENTS.build(fields) == payment


@SETTINGS
@given(payments)
def test_a_body_read_back_gives_the_same_payment(recipe: Args) -> None:
    fields, error = attempt(payment_of(recipe))
    if error is not None:
        return
    body = encode_fields(*fields)
    rebuilt = PAYMENTS.rebuild(body)
    assert rebuilt is not None, f"the SDK's own body {body!r} is not read back"
    # The amount comes back as JSON reads the number sent (see
    # test_a_float_amount_reads_back_as_a_float).
    assert same_number(rebuilt[0], json.loads(body)["amount"])
    assert rebuilt[1:] == fields[1:]
    assert parsed(encode_fields(*rebuilt)) == parsed(body)


@SETTINGS
@given(payments, st.sampled_from(FIELDS))
def test_leaving_out_an_optional_field_is_the_same_as_none(recipe: Args, field: str) -> None:
    if field in ("amount", "currency", "transaction_id"):
        return
    args = payment_of(recipe)
    with_none = {**args, field: None}
    left_out = {key: value for key, value in args.items() if key != field}
    first, error_1 = attempt(with_none)
    second, error_2 = attempt(left_out)
    assert (error_1 is None) == (error_2 is None)
    if error_1 is None:
        assert first == second
        wire_name = "datafast_visitor_id" if field == "visitor_id" else field
        assert wire_name not in parsed(encode_fields(*first))


def outcome(args: Args) -> tuple[object, ...]:
    """What a caller sees: the fields with their exact types, or the refusal."""
    fields, error = attempt(args)
    if error is not None:
        return ("refused", error.field, str(error))
    return ("accepted", fields, tuple(type(field) for field in fields))


@SETTINGS
@given(payments, st.lists(currencies, max_size=4), st.booleans())
def test_results_do_not_depend_on_earlier_calls(
    recipe: Args, other_currencies: list[object], clear: bool
) -> None:
    # The SDK remembers the currency codes it has seen (its hot path): that must not change
    # what any later call gets.
    args = payment_of(recipe)
    if clear:
        getattr(payments_module, "_CURRENCIES", {}).clear()
    first = outcome(args)
    for other in other_currencies:
        attempt({**USUAL, "currency": realize(other)})
    if "currency" in args and isinstance(args["currency"], str):
        attempt({**args, "currency": str.__str__(args["currency"])})  # its plain twin
    assert outcome(args) == first


# ---------------------------------------------------------------------------------------------
# amount


def body_of(**args: Any) -> dict[str, Any]:
    return parsed(encode_fields(*validate(**{"currency": "usd", "transaction_id": "ch_1", **args})))


def refused(**args: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate(**{"amount": 1, "currency": "usd", "transaction_id": "ch_1", **args})
    return info.value


@pytest.mark.parametrize(
    ("amount", "number"),
    [
        (49.99, Decimal("49.99")),
        (0, Decimal(0)),
        (0.0, Decimal(0)),
        (49, Decimal(49)),
        (Decimal("49.99"), Decimal("49.99")),
        (Decimal("0.10"), Decimal("0.10")),
        (Decimal("1E+2"), Decimal(100)),
        (10**308, Decimal(10**308)),
        (2**1024 - 2**970 - 1, Decimal(2**1024 - 2**970 - 1)),  # rounds to float's largest
        (1.7976931348623157e308, Decimal("1.7976931348623157E+308")),
        (5e-324, Decimal("5E-324")),
        (1e16, Decimal("1E+16")),
        (Cents(4999), Decimal(4999)),
        (Price(49.5), Decimal("49.5")),
        (Money("49.99"), Decimal("49.99")),
        (Level.ONE, Decimal(1)),
        (Level.ZERO, Decimal(0)),
    ],
)
def test_amounts_the_rules_allow_are_sent_as_that_number(amount: object, number: Decimal) -> None:
    sent = body_of(amount=amount)["amount"]
    assert sent == number
    fields = validate(amount, "usd", "ch_1")
    assert not isinstance(fields[0], bool)
    assert isinstance(fields[0], (int, float, Decimal))


@pytest.mark.parametrize("zero", [Decimal("-0"), Decimal("-0.000"), -0.0, Decimal("0E-7")])
def test_a_negative_zero_is_zero_and_sent_without_its_sign(zero: object) -> None:
    fields = validate(zero, "usd", "ch_1")
    assert fields[0] == 0
    body = encode_fields(*fields)
    assert b'"amount":-' not in body
    assert parsed(body)["amount"] == 0


@pytest.mark.parametrize(
    ("amount", "rule"),
    [
        (-1, "0 or more"),
        (-0.01, "0 or more"),
        (Decimal("-0.01"), "0 or more"),
        (Decimal("-1E-1000"), "0 or more"),
        (Decimal("1E-1000"), "too small"),
        (Cents(-1), "0 or more"),
        (Level.NEGATIVE, "0 or more"),
        (-(10**400), "0 or more"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        (Price("nan"), "finite"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (Decimal("-Infinity"), "finite"),
        (True, "bool"),
        (False, "bool"),
        (None, "NoneType"),
        ("49.99", "str"),
        (Fraction(1, 2), "Fraction"),
        (complex(1, 0), "complex"),
        (b"1", "bytes"),
    ],
)
def test_amounts_the_rules_refuse_name_the_amount(amount: object, rule: str) -> None:
    error = refused(amount=amount)
    assert error.field == "amount"
    assert rule in str(error)


@pytest.mark.parametrize(
    "amount",
    [2**1024 - 2**970, 2**1024, 10**400, 10**5000, Level.HUGE, Decimal("1E+400")],
    ids=["2**1024-2**970", "2**1024", "10**400", "10**5000", "Level.HUGE", "Decimal(1E+400)"],
)
def test_amounts_past_a_json_number_are_refused_without_printing_them(amount: object) -> None:
    # The text says "finite": an int this large is Infinity for a JSON reader (DataFast's is
    # JavaScript). The message must not print a 5000-digit int (CPython refuses to).
    error = refused(amount=amount)
    assert error.field == "amount"
    assert "too large" in str(error)
    assert len(str(error)) < 200


# ---------------------------------------------------------------------------------------------
# currency, transaction_id, visitor_id, customer fields, booleans


@pytest.mark.parametrize(
    ("currency", "sent"),
    [("usd", "USD"), ("USD", "USD"), ("Eur", "EUR"), ("gBp", "GBP"), (Sub("jpy"), "JPY")],
)
def test_a_currency_is_three_letters_sent_upper_cased(currency: object, sent: str) -> None:
    fields = validate(1, currency, "ch_1")
    assert fields[1] == sent
    assert type(fields[1]) is str
    assert body_of(amount=1, currency=currency)["currency"] == sent


def test_a_str_enum_currency_is_read_as_its_value() -> None:
    assert validate(1, Code.USD, "ch_1")[1] == "USD"
    assert type(validate(1, Code.EUR, "ch_1")[1]) is str


@pytest.mark.parametrize(
    "currency",
    [
        "US",
        "USDD",
        "",
        "U$D",
        "US1",
        "u d",
        "ÉUR",  # a letter, not ASCII
        "\u212aRW",  # the Kelvin sign: upper-cases... and lower-cases to an ASCII k
        "\uff35\uff33\uff24",  # full-width letters
        "ußd",
        "USD\n",
        "\ud800AB",
        Code.BAD,
        None,
        840,
        b"USD",
        ["USD"],
    ],
)
def test_anything_but_three_ascii_letters_is_not_a_currency(currency: object) -> None:
    assert refused(currency=currency).field == "currency"


@pytest.mark.parametrize("transaction_id", ["c", "ch_3Nx" + "x" * 249, "x" * 255, Sub("ch_1")])
def test_a_transaction_id_of_1_to_255_characters_is_sent_as_it_is(transaction_id: str) -> None:
    assert body_of(amount=1, transaction_id=transaction_id)["transaction_id"] == transaction_id
    assert type(validate(1, "usd", transaction_id)[2]) is str


@pytest.mark.parametrize(
    ("transaction_id", "rule"),
    [
        ("", "empty"),
        ("x" * 256, "at most 255"),
        ("é" * 256, "at most 255"),
        (None, "str"),
        (123, "str"),
        (b"ch_1", "str"),
        ("ch_\ud800", "surrogate"),
    ],
)
def test_a_bad_transaction_id_is_refused(transaction_id: object, rule: str) -> None:
    error = refused(transaction_id=transaction_id)
    assert error.field == "transaction_id"
    assert rule in str(error)


def test_a_transaction_id_of_spaces_is_not_empty() -> None:
    # The text says "non-empty": the SDK neither strips nor refuses blank ids (its choice).
    assert validate(1, "usd", " ")[2] == " "


def test_a_255_character_id_counts_characters_not_bytes() -> None:
    assert validate(1, "usd", "é" * 255)[2] == "é" * 255


@pytest.mark.parametrize("visitor_id", [VID, "v", "not-a-uuid", Sub("v")])
def test_a_payment_s_visitor_is_any_non_empty_str_sent_as_datafast_visitor_id(
    visitor_id: str,
) -> None:
    body = body_of(amount=1, visitor_id=visitor_id)
    assert body["datafast_visitor_id"] == visitor_id
    assert "visitor_id" not in body
    assert "visitorId" not in body


@pytest.mark.parametrize("visitor_id", ["", 7, b"v", ["v"], "\udfff"])
def test_a_bad_payment_visitor_is_refused(visitor_id: object) -> None:
    assert refused(visitor_id=visitor_id).field == "visitor_id"


@pytest.mark.parametrize("field", TEXTS)
def test_customer_fields_are_str_when_given(field: str) -> None:
    assert body_of(amount=1, **{field: "Ada"})[field] == "Ada"
    assert body_of(amount=1, **{field: Sub("Ada")})[field] == "Ada"
    assert body_of(amount=1, **{field: ""})[field] == ""  # a str: the text asks no more
    for bad in (5, b"x", ["a"], "\ud800"):
        assert refused(**{field: bad}).field == field


def test_the_customer_is_sent_as_email_and_name_not_their_aliases() -> None:
    body = body_of(amount=1, email="a@b.co", name="Ada", customer_id="cus_1")
    assert {"email", "name", "customer_id"} <= body.keys()
    assert "customer_email" not in body
    assert "customer_name" not in body


@pytest.mark.parametrize("field", BOOLEANS)
def test_the_flags_are_bool_when_given(field: str) -> None:
    assert body_of(amount=1, **{field: True})[field] is True
    assert body_of(amount=1, **{field: False})[field] is False
    for bad in (1, 0, 1.0, "true", "false", Decimal(1)):
        error = refused(**{field: bad})
        assert error.field == field
        assert "bool" in str(error)


def test_a_zero_amount_does_not_add_is_free_trial() -> None:
    # The API infers the free trial from 0; the SDK sends only what it was given.
    assert "is_free_trial" not in body_of(amount=0)


def test_none_fields_are_left_out_of_the_body() -> None:
    body = encode_fields(*validate(1, "usd", "ch_1", None, None, None, None, None, None, None))
    assert json.loads(body) == {"amount": 1, "currency": "USD", "transaction_id": "ch_1"}
    assert b"null" not in body


def test_every_field_is_sent_under_its_api_name() -> None:
    stamp = datetime.datetime(2026, 12, 7, 15, 21, tzinfo=UTC)
    body = json.loads(
        encode_fields(
            *validate(49.99, "usd", "ch_1", VID, "a@b.co", "Ada", "cus_1", True, False, True, stamp)
        )
    )
    assert body == {
        "amount": 49.99,
        "currency": "USD",
        "transaction_id": "ch_1",
        "datafast_visitor_id": VID,
        "email": "a@b.co",
        "name": "Ada",
        "customer_id": "cus_1",
        "renewal": True,
        "refunded": False,
        "is_free_trial": True,
        "timestamp": "2026-12-07T15:21:00.000Z",
    }


def test_text_is_escaped_in_the_body() -> None:
    text = 'a"b\\c\n\u2028☕\x00'
    body = body_of(amount=1, transaction_id=text, email=text, name=text, customer_id=text)
    assert body["transaction_id"] == body["email"] == body["name"] == body["customer_id"] == text


def test_the_first_broken_rule_is_reported_in_the_fields_order() -> None:
    error = refused(amount=-1, currency="x", transaction_id="")
    assert error.field == "amount"
    assert refused(currency="x", transaction_id="").field == "currency"


# ---------------------------------------------------------------------------------------------
# timestamp


NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("stamp", "sent"),
    [
        (datetime.datetime(2026, 12, 7, 15, 21, tzinfo=UTC), "2026-12-07T15:21:00.000Z"),
        (
            datetime.datetime(
                2026, 12, 7, 16, 21, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
            ),
            "2026-12-07T15:21:00.000Z",
        ),
        (
            datetime.datetime(
                2026,
                12,
                7,
                23,
                59,
                59,
                999_999,
                tzinfo=datetime.timezone(-datetime.timedelta(hours=9, minutes=30)),
            ),
            "2026-12-08T09:29:59.999Z",
        ),
        (datetime.datetime(2026, 7, 1, 12, tzinfo=NEW_YORK), "2026-07-01T16:00:00.000Z"),  # EDT
        (datetime.datetime(2026, 1, 1, 12, tzinfo=NEW_YORK), "2026-01-01T17:00:00.000Z"),  # EST
        (
            datetime.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK),  # the second 01:30
            "2026-11-01T06:30:00.000Z",
        ),
        (datetime.datetime(2026, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC), "2026-01-01T00:00:00.123Z"),
        (datetime.datetime(1000, 1, 1, tzinfo=UTC), "1000-01-01T00:00:00.000Z"),
        (datetime.datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "9999-12-31T23:59:00.000Z"),
    ],
)
def test_an_aware_timestamp_is_sent_as_iso_8601_in_utc(stamp: datetime.datetime, sent: str) -> None:
    fields = validate(1, "usd", "ch_1", timestamp=stamp)
    text = body_of(amount=1, timestamp=stamp)["timestamp"]
    assert text == sent  # the SDK's form: milliseconds, then Z (JavaScript's toISOString)
    assert abs(instant_of(text) - utc_instant(stamp)) < MS
    assert fields[10].tzinfo is UTC
    assert format_timestamp(stamp) == sent


def test_the_validated_timestamp_is_the_instant_sent_to_the_millisecond() -> None:
    stamp = datetime.datetime(2026, 1, 1, 0, 0, 0, 123_999, tzinfo=NEW_YORK)
    kept = Payment(1, "usd", "ch_1", timestamp=stamp).timestamp
    assert kept == datetime.datetime(2026, 1, 1, 5, 0, 0, 123_000, tzinfo=UTC)  # truncated
    assert kept is not None
    assert kept.tzinfo is UTC


class NoOffset(datetime.tzinfo):
    """A tzinfo that does not know its offset: the datetime is naive for Python."""

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return None

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return None

    def tzname(self, dt: datetime.datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    "stamp",
    [
        datetime.datetime(2026, 1, 1),
        datetime.datetime(2026, 1, 1, tzinfo=NoOffset()),
        datetime.date(2026, 1, 1),
        "2026-01-01T00:00:00Z",
        1_767_225_600,
        1_767_225_600.5,
        datetime.time(12, tzinfo=UTC),
    ],
)
def test_anything_but_an_aware_datetime_is_not_a_timestamp(stamp: object) -> None:
    error = refused(timestamp=stamp)
    assert error.field == "timestamp"
    assert "aware" in str(error)


# ---------------------------------------------------------------------------------------------
# The value


def test_a_payment_is_frozen_and_holds_the_normalised_fields() -> None:
    payment = Payment(Decimal("49.99"), "usd", "ch_1", visitor_id=VID, renewal=True)
    assert payment.currency == "USD"
    assert payment.amount == Decimal("49.99")
    assert payment.email is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        payment.amount = 1  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(payment)) == payment
    assert copy.deepcopy(payment) == payment
    assert hash(payment) == hash(Payment(Decimal("49.99"), "USD", "ch_1", VID, renewal=True))


def test_payment_refuses_what_validate_refuses_with_the_same_field() -> None:
    with pytest.raises(ValidationError) as info:
        Payment(True, "usd", "ch_1")
    assert info.value.field == "amount"
    with pytest.raises(ValidationError) as info:
        Payment(1, "usd", "ch_1", timestamp=datetime.datetime(2026, 1, 1))
    assert info.value.field == "timestamp"


def test_a_float_amount_reads_back_as_a_float() -> None:
    # The SDK's choice: a journaled body's amount is read as JSON reads it (a float), so a
    # payment replayed from the spool is the float it was; the bytes sent are the journaled ones.
    fields = validate(49.99, "usd", "ch_1")
    rebuilt = PAYMENTS.rebuild(encode_fields(*fields))
    assert rebuilt is not None
    assert rebuilt[0] == fields[0]
    assert type(rebuilt[0]) is float
    assert encode_fields(*rebuilt) == encode_fields(*fields)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"currency": "USD", "transaction_id": "ch_1"}',  # no amount
        b'{"amount": -1, "currency": "USD", "transaction_id": "ch_1"}',
        b'{"amount": true, "currency": "USD", "transaction_id": "ch_1"}',
        b'{"amount": 1, "currency": "USD", "transaction_id": "ch_1", "renewal": 1}',
        b'{"amount": 1, "currency": "USD", "transaction_id": "ch_1", "timestamp": "yesterday"}',
        b'{"amount": 1, "currency": "USD", "transaction_id": "ch_1",'
        b' "timestamp": "2026-01-01T00:00:00"}',  # naive
        b'{"amount": 1, "currency": "USD", "transaction_id": "ch_1", "timestamp": 5}',
        b'{"amount": NaN, "currency": "USD", "transaction_id": "ch_1"}',
        b'{"amount": 1, "currency": "USD", "transaction_id": ""}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_a_body_that_is_not_a_valid_payment_is_not_read_back(body: bytes) -> None:
    assert PAYMENTS.rebuild(body) is None


def test_a_lower_case_currency_in_a_journal_is_read_back_upper_cased() -> None:
    rebuilt = PAYMENTS.rebuild(b'{"amount": 1, "currency": "usd", "transaction_id": "ch_1"}')
    assert rebuilt is not None
    assert rebuilt[1] == "USD"


# ---------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize(
    ("body", "result"),
    [
        (
            b'{"message": "Payment recorded and attributed successfully",'
            b' "transaction_id": "ch_123"}',
            PaymentResult("Payment recorded and attributed successfully", "ch_123", False),
        ),
        (b'{"transaction_id": "ch_123"}', PaymentResult(None, "ch_123", False)),
        (b'{"message": "Payment recorded"}', PaymentResult("Payment recorded", None, False)),
        (
            b'{"message": "Duplicate payment: already recorded", "transaction_id": "ch_1"}',
            PaymentResult("Duplicate payment: already recorded", "ch_1", True),
        ),
        (b'{"message": "duplicate"}', PaymentResult("duplicate", None, True)),
        (
            b'{"message": "DUPLICATE TRANSACTION"}',
            PaymentResult("DUPLICATE TRANSACTION", None, True),
        ),
        (
            b'{"message": "Transaction is a dUpLiCaTe"}',
            PaymentResult("Transaction is a dUpLiCaTe", None, True),
        ),
        (
            b'{"message": "Payment already recorded"}',
            PaymentResult("Payment already recorded", None, False),
        ),
        (b'{"message": "dup"}', PaymentResult("dup", None, False)),
        # Not strings: the answer is a success, its values unread.
        (b'{"message": null, "transaction_id": 5}', PaymentResult(None, None, False)),
        (b'{"message": ["duplicate"]}', PaymentResult(None, None, False)),
        # Extra fields, and a status that is not "error".
        (b'{"message": "ok", "status": "success", "x": 1}', PaymentResult("ok", None, False)),
        ('{"message": "enregistré"}'.encode(), PaymentResult("enregistré", None, False)),
    ],
)
def test_a_bare_object_with_a_transaction_id_or_a_message_is_a_success(
    body: bytes, result: PaymentResult
) -> None:
    assert PAYMENTS.is_success(body)
    assert PAYMENTS.read_result(body) == result


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b"{}",
        b"[]",
        b'[{"transaction_id": "ch_1"}]',
        b'"transaction_id"',
        b"null",
        b"42",
        b'{"status": "error", "error": {"code": 400, "message": "amount is required"}}',
        b'{"status": "error", "message": "bad", "transaction_id": "ch_1"}',
        b'{"error": {"code": 500}}',
        b'{"ok": true}',
        b'{"message": "ok"',  # cut short
        b"\xff\xfe\x00",
        b"[" * 100_000,
        b'{"transaction_id": "ch_1", "transaction_id": 1, "status": "error"}',
    ],
)
def test_anything_else_is_not_a_payment_success(body: bytes) -> None:
    assert not PAYMENTS.is_success(body)


def test_the_goals_envelope_is_tolerated_for_payments() -> None:
    # Beyond the text (which asks for a top-level transaction_id or message): the code also
    # takes DataFast's {"status": "success", "data": ...} envelope as a success.
    body = b'{"status": "success", "data": [{"message": "Duplicate", "transaction_id": "ch_1"}]}'
    assert PAYMENTS.is_success(body)
    assert PAYMENTS.read_result(body) == PaymentResult("Duplicate", "ch_1", True)
    body = b'{"status": "success", "data": {"message": "ok"}}'
    assert PAYMENTS.read_result(body) == PaymentResult("ok", None, False)
    # ... and, with no data at all, a bare {"status": "success"}, which the text's rule
    # ("a JSON object with a transaction_id (or a message)") does not make a success.
    assert PAYMENTS.is_success(b'{"status": "success"}')
    assert PAYMENTS.is_success(b'{"status": "success", "data": "x"}')


answers = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.sampled_from(["error", "success", "duplicate", "Duplicate!", "ch_1"]),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["status", "message", "transaction_id", "data", "error", "x"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=8,
)


@SETTINGS
@given(answers)
def test_success_is_exactly_the_text_s_rule_for_any_answer(answer: object) -> None:
    body = json.dumps(answer).encode()
    # The text: "a JSON object with a transaction_id (or a message) and no "status": "error"".
    by_text = (
        isinstance(answer, dict)
        and answer.get("status") != "error"
        and ("transaction_id" in answer or "message" in answer)
    )
    # The code's tolerance (test_the_goals_envelope_is_tolerated_for_payments).
    envelope = isinstance(answer, dict) and answer.get("status") == "success"
    assert PAYMENTS.is_success(body) == (by_text or envelope)
    if by_text:
        assert isinstance(answer, dict)
        result = PAYMENTS.read_result(body)
        message = answer.get("message")
        transaction_id = answer.get("transaction_id")
        assert result.message == (message if isinstance(message, str) else None)
        assert result.transaction_id == (
            transaction_id if isinstance(transaction_id, str) else None
        )
        assert result.duplicate == (isinstance(message, str) and "duplicate" in message.lower())


def test_a_disabled_client_s_result() -> None:
    assert PAYMENTS.disabled() == PaymentResult("disabled", None, False)


def test_payments_are_the_idempotent_kind() -> None:
    assert PAYMENTS.idempotent is True
    assert PAYMENTS.method == "POST"
    assert PAYMENTS.path == "/api/v1/payments"


@pytest.mark.parametrize("year", [1, 5, 999])
def test_a_timestamp_before_the_year_1000_is_sent_as_iso_8601_or_refused(year: int) -> None:
    stamp = datetime.datetime(year, 6, 1, tzinfo=UTC)
    fields, error = attempt({**USUAL, "timestamp": stamp})
    if error is not None:
        assert error.field == "timestamp"
        return
    body = encode_fields(*fields)
    instant_of(parsed(body)["timestamp"])
    assert PAYMENTS.rebuild(body) == fields


@pytest.mark.parametrize(
    "stamp",
    [
        datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        datetime.datetime.max.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=-1))),
    ],
)
def test_a_timestamp_that_cannot_be_put_in_utc_is_refused(stamp: datetime.datetime) -> None:
    error = refused(timestamp=stamp)
    assert error.field == "timestamp"


# ---------------------------------------------------------------------------------------------
# The application's own objects: read by their value, refused with a ValidationError


class OffsetAsInt(datetime.tzinfo):
    """A broken tzinfo (an application's own): its offset is not a timedelta."""

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return 3600  # type: ignore[return-value]

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta | None:
        return None

    def tzname(self, dt: datetime.datetime | None) -> str | None:
        return None


def test_a_timestamp_whose_zone_is_broken_is_refused() -> None:
    error = refused(timestamp=datetime.datetime(2026, 1, 1, tzinfo=OffsetAsInt()))
    assert error.field == "timestamp"


class Dollars(Decimal):
    """A money type that prints itself with its sign, as such types do."""

    def __str__(self) -> str:
        return "$" + Decimal.__str__(self)


def test_a_decimal_subclass_is_sent_as_its_value() -> None:
    fields = validate(Dollars("49.99"), "usd", "ch_1")
    assert type(fields[0]) is Decimal
    assert parsed(encode_fields(*fields))["amount"] == Decimal("49.99")
    assert Payment(Dollars("49.99"), "usd", "ch_1").amount == Decimal("49.99")


class ClaimsDecimal:
    """An object whose ``__class__`` claims ``Decimal``, as ``unittest.mock``'s ``spec=``
    objects do: ``isinstance`` believes it, ``type()`` does not."""

    __class__ = property(lambda self: Decimal)


class ClaimsDatetime:
    __class__ = property(lambda self: datetime.datetime)


@pytest.mark.parametrize(
    "args",
    [
        {"amount": ClaimsDecimal()},
        {"timestamp": ClaimsDatetime()},
        {"timestamp": mock.Mock(spec=datetime.datetime)},
        {"timestamp": mock.MagicMock(spec=datetime.datetime)},
    ],
    ids=["claims-Decimal", "claims-datetime", "Mock-datetime", "MagicMock-datetime"],
)
def test_an_object_that_only_claims_a_type_is_refused(args: Args) -> None:
    # Refused by its real type (MagicMock(spec=datetime) was once accepted, then failed to
    # encode), with a ValidationError naming the field, not the error of a missing method.
    error = refused(**args)
    assert error.field == next(iter(args))


# ---------------------------------------------------------------------------------------------
# Found by these tests, and fixed


class SaysPositive(Decimal):
    """A Decimal subclass whose own predicates say what its value is not."""

    def is_signed(self) -> bool:
        return False

    def is_finite(self) -> bool:
        return True


class NoEquality(Decimal):
    """A Decimal subclass whose == fails (an application's own)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("not comparable")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("not comparable")

    __hash__ = Decimal.__hash__


@pytest.mark.parametrize(
    ("amount", "accepted"), [(SaysPositive("-5"), False), (NoEquality("1"), True)]
)
def test_a_decimal_subclass_is_checked_by_its_value(amount: Decimal, accepted: bool) -> None:
    fields, error = attempt({**USUAL, "amount": amount})
    if accepted:
        assert error is None
        assert parsed(encode_fields(*fields))["amount"] == Decimal(amount)
    else:
        assert error is not None
        assert error.field == "amount"


@pytest.mark.parametrize(
    "amount", [Decimal("49.990"), Decimal("12345678901234567.89"), 49.99, 7, Decimal("1E+2")]
)
def test_an_amount_read_back_from_the_spool_is_the_value_it_was(amount: float | Decimal) -> None:
    """A payment replayed from the spool reaches the callbacks with the amount it had: a
    float as that float, a Decimal with all its digits (found in review: 12345678901234567.89
    came back as 1.2345678901234568e+16)."""
    fields = validate(amount, "usd", "ch_1")
    rebuilt = PAYMENTS.rebuild(encode_fields(*fields))
    assert rebuilt is not None
    assert rebuilt[0] == fields[0]
    assert encode_fields(*rebuilt) == encode_fields(*fields)
