"""Identify's rules, body and answers, held to the contract text rather than to the code.

The oracle below is written from ``datafast-api.md`` ("Identify: POST /api/v1/identify") and
``public-api.md`` ("Decided for turn 3", "Identify"), not from ``_kinds/identify.py``:

- ``visitor_id``: a UUID (the API answers 400 for one that is not): a ``str`` in the UUID's
  string form, 8-4-4-4-12 hexadecimal digits, in either case; sent as ``datafast_visitor_id``;
- ``user_id``: a non-empty ``str`` of at most 255 characters;
- ``traits``: ``None`` or a mapping of ``str`` keys (not ``user_id``, not
  ``datafast_visitor_id``) to ``str``/``int``/``float``/``bool`` values; ``None`` values are
  left out; the rest are sent as top-level fields of the body, as the JSON values they are;
- ``ValidationError.field`` names the field (``"traits.<key>"`` for a value).

Rules the text does not state, which the oracle takes from the SDK's documented choices:
texts must be sendable as UTF-8 (no lone surrogates); a float must be finite (JSON has no NaN);
a key may not be empty nor ``visitorId`` (the API's alias of ``datafast_visitor_id``); an
``int`` of 849 bits or more is refused (as for goals' metadata); a mapping of more than
``MAX_METADATA_ENTRIES`` entries is refused; a reserved key is refused even when its value is
``None``. A ``str`` subclass counts as its characters.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import json
import math
import operator
import pickle
import re
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafast_async import Identify, IdentifyResult, ValidationError
from datafast_async._kinds.identify import IDENTIFY, encode_fields, validate
from datafast_async._validation import MAX_METADATA_ENTRIES

SETTINGS = settings(max_examples=300, deadline=None)
VID = "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd"
UUID_RE = re.compile(r"\A[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\Z")
RESERVED = {"user_id", "datafast_visitor_id"}  # the text's
RESERVED_BY_THE_SDK = {"visitorId", ""}  # the SDK's own (see the module's docstring)

Args = tuple[Any, Any, Any]


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


def _trait(value: object) -> tuple[bool, object]:
    """Whether a trait value is allowed, and the JSON value it is sent as."""
    if isinstance(value, bool):
        return True, bool(value)
    if isinstance(value, str):
        text = _text(value)
        assert text is not None
        return _sendable(text), text
    if isinstance(value, int):
        number = operator.index(value)
        return abs(number).bit_length() < 849, number
    if isinstance(value, float):
        number_f = float(value)
        return math.isfinite(number_f), number_f
    return False, None


def oracle(args: Args) -> tuple[set[str], dict[str, object] | None]:
    """The fields an identify breaks, and the body the API should receive when it breaks none."""
    visitor_id, user_id, traits = args
    broken: set[str] = set()

    vid = _text(visitor_id)
    if vid is None or UUID_RE.match(vid) is None:
        broken.add("visitor_id")

    uid = _text(user_id)
    if uid is None or not 1 <= len(uid) <= 255 or not _sendable(uid):
        broken.add("user_id")

    sent: dict[str, object] = {}
    if traits is not None:
        if not isinstance(traits, Mapping) or len(traits) > MAX_METADATA_ENTRIES:
            broken.add("traits")
        else:
            for key, value in traits.items():
                name = _text(key)
                if (
                    name is None
                    or name in RESERVED
                    or name in RESERVED_BY_THE_SDK
                    or not _sendable(name)
                ):
                    broken.add("traits")
                    continue
                if value is None:
                    continue
                allowed, wire = _trait(value)
                if not allowed:
                    broken.add(f"traits.{name}")
                else:
                    sent[name] = wire

    if broken:
        return broken, None
    return broken, {"datafast_visitor_id": vid, "user_id": uid, **sent}


def typed(value: object) -> object:
    """``value`` with each leaf's type beside it (``True == 1`` must not pass)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    return (type(value).__name__, value)


def _refuse_constant(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")


def parsed(body: bytes) -> dict[str, Any]:
    data = json.loads(body.decode("utf-8", "strict"), parse_constant=_refuse_constant)
    assert isinstance(data, dict)
    return data


def attempt(args: Args) -> tuple[Any, ValidationError | None]:
    try:
        return validate(*args), None
    except ValidationError as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------
# Strategies (recipes: Hypothesis must not see instances of subclasses among what it draws)


class Sub(str):
    def __repr__(self) -> str:
        return f"Sub({str.__repr__(self)})"


class Plan(str, enum.Enum):
    PRO = "pro"
    USER_ID = "user_id"


class Seats(enum.IntEnum):
    ONE = 1
    HUGE = 2**900


class Ratio(float):
    pass


@dataclasses.dataclass(frozen=True)
class As:
    kind: Callable[[Any], object]
    value: object

    def __repr__(self) -> str:
        return f"{getattr(self.kind, '__name__', self.kind)}({self.value!r})"


@dataclasses.dataclass(frozen=True)
class AsMapping:
    kind: Callable[[dict[Any, Any]], Mapping[Any, Any]]
    items: tuple[tuple[object, object], ...]
    padding: int = 0

    def __repr__(self) -> str:
        shown = f"{self.kind.__name__}({dict(self.items)!r})"
        return f"{shown} + {self.padding} entries of None" if self.padding else shown


def realize(recipe: object) -> Any:
    if isinstance(recipe, As):
        return recipe.kind(realize(recipe.value))
    if isinstance(recipe, AsMapping):
        entries = {realize(key): realize(value) for key, value in recipe.items}
        entries.update(dict.fromkeys((f"pad{i}" for i in range(recipe.padding)), None))
        return recipe.kind(entries)
    return recipe


def identify_of(recipe: Args) -> Args:
    visitor_id, user_id, traits = map(realize, recipe)
    return visitor_id, user_id, traits


uuids = st.uuids().map(str)
visitor_ids = st.one_of(
    uuids,
    uuids.map(str.upper),
    st.builds(As, st.just(Sub), uuids),
    st.builds(operator.add, uuids, st.sampled_from(["\n", " ", "0", "-"])),
    st.builds(operator.add, st.sampled_from(["{", " ", "urn:uuid:"]), uuids),
    uuids.map(lambda text: text.replace("-", "")),
    uuids.map(lambda text: text[:-1]),
    uuids.map(lambda text: text.replace("a", "g").replace("b", "\u0661")),
    st.text(st.sampled_from("0123456789abcdefABCDEF-"), max_size=40),
    st.sampled_from(["", "v", "\ud800", None, 7, b"x", uuid.UUID(VID)]),
)
texts = st.one_of(
    st.text(max_size=5),
    st.builds(
        operator.mul,
        st.sampled_from(["u", "é", " ", "\ud800"]),
        st.sampled_from([0, 1, 254, 255, 256]),
    ),
)
user_ids = st.one_of(texts, st.builds(As, st.just(Sub), texts), st.sampled_from([None, 42, b"u"]))
keys = st.one_of(
    st.sampled_from(
        ["email", "name", "plan", "image", "Plan", "a b", "", "user_id", "datafast_visitor_id"]
    ),
    st.sampled_from(["visitorId", "\ud800", "k\udfff"]),
    st.text(max_size=4),
    st.builds(As, st.just(Sub), st.sampled_from(["plan", "user_id", ""])),
    st.builds(As, st.just(Plan), st.sampled_from(["pro", "user_id"])),
    st.integers(-2, 2),
    st.sampled_from([None, b"plan", ("plan",)]),
)
huge = st.builds(
    operator.mul,
    st.sampled_from([1, -1]),
    st.builds(
        operator.sub,
        st.builds(pow, st.just(2), st.sampled_from([848, 849, 5000])),
        st.sampled_from([0, 1]),
    ),
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge,
    st.floats(),
    st.text(max_size=5),
    st.sampled_from(["\ud800", "a\x00b", '"<script>']),
    st.builds(As, st.just(Sub), st.text(max_size=3)),
    st.builds(As, st.just(Seats), st.sampled_from([1, 2**900])),
    st.builds(As, st.just(Ratio), st.floats()),
    st.builds(As, st.just(Plan), st.just("pro")),
    st.sampled_from([[1], {"a": 1}, (1,), b"x", complex(1, 1), object()]),
    st.decimals(allow_nan=False, allow_infinity=False),
)


def mappings(
    entries: st.SearchStrategy[dict[Any, Any]],
    kinds: st.SearchStrategy[Callable[[dict[Any, Any]], Mapping[Any, Any]]] | None = None,
    padding: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[AsMapping]:
    return st.builds(
        AsMapping,
        st.just(dict) if kinds is None else kinds,
        entries.map(lambda d: tuple(d.items())),
        st.just(0) if padding is None else padding,
    )


usual_traits = mappings(
    st.dictionaries(
        st.sampled_from(["email", "name", "plan", "seats", "trial"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        max_size=5,
    )
)
traits = st.one_of(
    st.none(),
    usual_traits,
    mappings(st.dictionaries(keys, values, max_size=6)),
    mappings(
        st.dictionaries(keys, values, max_size=3),
        kinds=st.sampled_from([types.MappingProxyType, collections.OrderedDict]),
    ),
    mappings(
        st.dictionaries(st.sampled_from(["plan", "seats"]), values, max_size=2),
        padding=st.sampled_from([1, 997, 998, 999]),  # 1000 entries at most (the SDK's bound)
    ),
    st.sampled_from([[("plan", "pro")], "plan=pro", 42, b"plan"]),
)
identifies = st.one_of(
    st.tuples(uuids, st.text(min_size=1, max_size=10).filter(_sendable), usual_traits),
    st.tuples(uuids, st.text(min_size=1, max_size=10).filter(_sendable), traits),
    st.tuples(visitor_ids, user_ids, traits),
)


# ---------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(identifies)
def test_an_identify_is_accepted_exactly_when_the_rules_allow_it(recipe: Args) -> None:
    args = identify_of(recipe)
    broken, expected = oracle(args)
    fields, error = attempt(args)
    if error is not None:
        assert broken, f"refused ({error.field}: {error}) but the rules allow it"
        assert error.field in broken, f"{error.field!r} is not among the broken {broken}"
        with pytest.raises(ValidationError) as info:
            Identify(*args)
        assert info.value.field == error.field
        return
    assert not broken, f"accepted, but it breaks {broken}"
    assert expected is not None

    visitor_id, user_id, sent_traits = fields
    assert type(visitor_id) is type(user_id) is str
    assert visitor_id == expected["datafast_visitor_id"]
    assert user_id == expected["user_id"]
    wanted_traits = {
        key: value
        for key, value in expected.items()
        if key not in ("datafast_visitor_id", "user_id")
    }
    assert typed(dict(sent_traits or {})) == typed(wanted_traits)

    body = encode_fields(*fields)
    assert typed(parsed(body)) == typed(expected)
    assert IDENTIFY.encode(fields) == body

    value = Identify(*args)
    assert IDENTIFY.fields_of(value) == fields
    assert IDENTIFY.build(fields) == value
    assert typed(dict(value.traits or {})) == typed(wanted_traits)


@SETTINGS
@given(identifies)
def test_a_body_read_back_gives_the_same_identify(recipe: Args) -> None:
    fields, error = attempt(identify_of(recipe))
    if error is not None:
        return
    body = encode_fields(*fields)
    rebuilt = IDENTIFY.rebuild(body)
    assert rebuilt is not None, f"the SDK's own body {body!r} is not read back"
    assert typed(rebuilt[:2]) == typed(fields[:2])
    assert typed(dict(rebuilt[2] or {})) == typed(dict(fields[2] or {}))
    assert encode_fields(*rebuilt) == body


# ---------------------------------------------------------------------------------------------
# visitor_id


@pytest.mark.parametrize(
    "visitor_id",
    [
        VID,
        VID.upper(),
        "A3ab2331-989F-4cfa-91c6-2461c9e3c6bd",
        "00000000-0000-0000-0000-000000000000",  # no version or variant is asked for
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        str(uuid.uuid1()),
        Sub(VID),
    ],
)
def test_a_uuid_in_its_string_form_is_a_visitor_id(visitor_id: str) -> None:
    fields = validate(visitor_id, "user_42")
    assert fields[0] == visitor_id
    assert type(fields[0]) is str
    assert parsed(encode_fields(*fields))["datafast_visitor_id"] == visitor_id


@pytest.mark.parametrize(
    "visitor_id",
    [
        "",
        "v",
        VID.replace("-", ""),
        "{" + VID + "}",
        "urn:uuid:" + VID,
        VID + "\n",
        " " + VID,
        VID[:-1],
        VID + "0",
        VID.replace("a", "g"),
        VID.replace("3", "\u0663"),  # an Arabic-Indic digit: a digit, not a hex digit
        VID.replace("a", "\uff41"),  # a full-width letter
        "a3ab2331-989f4-cfa-91c6-2461c9e3c6bd",  # the groups in the wrong places
        VID.replace("-", "_"),
        None,
        7,
        VID.encode(),
        uuid.UUID(VID),  # a UUID object: the SDK asks for the cookie's text
        "\ud800" * 36,
    ],
)
def test_anything_else_is_not_a_visitor_id(visitor_id: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate(visitor_id, "user_42")
    assert info.value.field == "visitor_id"


def test_a_refused_visitor_id_says_a_uuid_is_needed() -> None:
    with pytest.raises(ValidationError, match="UUID") as info:
        Identify("visitor-1", "user_42")
    assert "visitor-1" in str(info.value)


# ---------------------------------------------------------------------------------------------
# user_id


@pytest.mark.parametrize("user_id", ["u", "user_42", "x" * 255, "é" * 255, " ", Sub("user_42")])
def test_a_user_id_of_1_to_255_characters_is_sent_as_it_is(user_id: str) -> None:
    fields = validate(VID, user_id)
    assert type(fields[1]) is str
    assert parsed(encode_fields(*fields))["user_id"] == user_id


@pytest.mark.parametrize(
    ("user_id", "rule"),
    [
        ("", "empty"),
        ("x" * 256, "at most 255"),
        ("é" * 256, "at most 255"),
        (None, "str"),
        (42, "str"),
        (b"u", "str"),
        ("u\ud800", "surrogate"),
    ],
)
def test_a_bad_user_id_is_refused(user_id: object, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, user_id)
    assert info.value.field == "user_id"
    assert rule in str(info.value)


def test_a_user_id_that_is_too_long_is_not_printed_whole() -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "x" * 100_000)
    assert len(str(info.value)) < 300


# ---------------------------------------------------------------------------------------------
# traits


def body_of(traits: object) -> dict[str, Any]:
    return parsed(encode_fields(*validate(VID, "user_42", traits)))


def test_traits_are_top_level_fields_sent_as_their_json_values() -> None:
    body = body_of({"email": "a@b.co", "plan": "pro", "seats": 3, "ratio": 0.5, "trial": True})
    assert typed(body) == typed(
        {
            "datafast_visitor_id": VID,
            "user_id": "user_42",
            "email": "a@b.co",
            "plan": "pro",
            "seats": 3,
            "ratio": 0.5,
            "trial": True,
        }
    )
    assert "traits" not in body


def test_none_traits_are_left_out() -> None:
    assert body_of({"email": None, "plan": "pro"}) == {
        "datafast_visitor_id": VID,
        "user_id": "user_42",
        "plan": "pro",
    }
    assert b"null" not in encode_fields(*validate(VID, "u", {"email": None}))


@pytest.mark.parametrize("traits", [None, {}, {"email": None, "name": None}])
def test_no_traits_is_a_body_of_the_visitor_and_the_user(traits: object) -> None:
    fields = validate(VID, "user_42", traits)
    assert fields[2] is None  # the SDK's choice: nothing left is None, not {}
    assert body_of(traits) == {"datafast_visitor_id": VID, "user_id": "user_42"}
    assert Identify(VID, "user_42", traits).traits is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (True, True),
        (False, False),
        (0, 0),
        (-7, -7),
        (2**848 - 1, 2**848 - 1),
        (1.5, 1.5),
        (-0.0, -0.0),
        (1e300, 1e300),
        ("", ""),
        ("<b>pro</b>", "<b>pro</b>"),
        (Sub("pro"), "pro"),
        (Plan.PRO, "pro"),
        (Seats.ONE, 1),
        (Ratio(0.25), 0.25),
    ],
)
def test_a_trait_value_is_sent_as_the_json_value_it_is(value: object, sent: object) -> None:
    got = body_of({"k": value})["k"]
    assert typed(got) == typed(sent)
    kept = validate(VID, "u", {"k": value})[2]["k"]
    assert type(kept) in (str, int, float, bool)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        Ratio("nan"),
        [1],
        {"a": 1},
        (1,),
        b"pro",
        complex(1, 0),
        object(),
        "\ud800",
    ],
)
def test_a_trait_value_of_another_type_is_refused_naming_its_key(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", {"plan": value})
    assert info.value.field == "traits.plan"


def test_a_decimal_trait_is_refused() -> None:
    # The text lists str/int/float/bool: a Decimal is none of them (the SDK does not convert).
    from decimal import Decimal

    with pytest.raises(ValidationError) as info:
        validate(VID, "u", {"price": Decimal("9.99")})
    assert info.value.field == "traits.price"


@pytest.mark.parametrize(
    "value",
    [2**848, -(2**848), 2**5000, Seats.HUGE],
    ids=["2**848", "-(2**848)", "2**5000", "Seats.HUGE"],
)
def test_an_int_trait_of_849_bits_or_more_is_refused_without_printing_it(value: int) -> None:
    # The SDK's bound (the text is silent): as for goals' metadata, past 255 digits.
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", {"n": value})
    assert info.value.field == "traits.n"
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    "key", ["user_id", "datafast_visitor_id", Sub("user_id"), Plan.USER_ID, "visitorId"]
)
def test_a_trait_may_not_set_the_request_s_own_fields(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", {key: "x"})
    assert info.value.field == "traits"
    assert str.__str__(key) in str(info.value)


def test_a_reserved_key_is_refused_even_with_a_none_value() -> None:
    # The SDK's choice: the key rule comes before "None is left out".
    with pytest.raises(ValidationError):
        validate(VID, "u", {"user_id": None})


@pytest.mark.parametrize("key", ["", 1, None, b"plan", ("plan",), "k\ud800"])
def test_a_trait_key_must_be_a_non_empty_str(key: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", {key: "x"})
    assert info.value.field == "traits"


@pytest.mark.parametrize("key", ["Plan", "a b", "é", "x" * 300, "metadata", "name", "email"])
def test_any_other_key_is_a_trait(key: str) -> None:
    # The text puts no pattern or length on a trait's name (unlike goals' metadata keys).
    assert body_of({key: 1})[key] == 1


@pytest.mark.parametrize("traits", [[("plan", "pro")], "plan=pro", 42, b"plan", {"plan"}])
def test_traits_must_be_a_mapping(traits: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", traits)
    assert info.value.field == "traits"


def test_any_mapping_is_read() -> None:
    for kind in (types.MappingProxyType, collections.OrderedDict, collections.ChainMap):
        assert body_of(kind({"plan": "pro"}))["plan"] == "pro"


def test_a_mapping_of_more_than_the_bound_is_refused_before_it_is_read() -> None:
    entries = dict.fromkeys((f"k{i}" for i in range(MAX_METADATA_ENTRIES)), None)
    assert validate(VID, "u", entries)[2] is None
    entries["one_more"] = None
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", entries)
    assert info.value.field == "traits"


class Broken(Mapping[str, object]):
    """A mapping whose own code fails: reading it must give a ValidationError, nothing else."""

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def __getitem__(self, key: str) -> object:
        if self.fail == "getitem":
            raise KeyError(key)
        return "x"

    def __iter__(self) -> Iterator[str]:
        if self.fail == "iter":
            raise RuntimeError("cannot iterate")
        return iter(["plan"])

    def __len__(self) -> int:
        if self.fail == "len":
            raise RuntimeError("no len")
        return 1


@pytest.mark.parametrize("fail", ["getitem", "iter", "len"])
def test_a_mapping_that_fails_to_be_read_is_a_validation_error(fail: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate(VID, "u", Broken(fail))
    assert info.value.field == "traits"


class Rehashed(str):
    """A str subclass with its own hash: a dict holds it beside the plain str it equals."""

    def __hash__(self) -> int:
        return hash(("rehashed", str.__str__(self)))


def test_two_keys_of_the_same_text_are_one_trait() -> None:
    # The SDK's choice (goals' metadata refuses the same case): the later value wins, so the
    # body has one field of that name.
    fields = validate(VID, "u", {Rehashed("plan"): "a", "plan": "b"})
    assert fields[2] == {"plan": "b"}
    assert encode_fields(*fields).count(b'"plan"') == 1


# ---------------------------------------------------------------------------------------------
# The value: its traits are read-only


def test_an_identify_keeps_a_read_only_copy_of_its_traits() -> None:
    given_traits: dict[str, object] = {"plan": "pro", "seats": 3, "gone": None}
    value = Identify(VID, "user_42", given_traits)
    given_traits["plan"] = "free"
    given_traits["new"] = 1
    assert value.traits == {"plan": "pro", "seats": 3}
    traits = value.traits
    assert isinstance(traits, Mapping)
    assert isinstance(traits, dict)  # read as a dict (json, **), yet not to be changed
    attempts: list[Callable[[Any], object]] = [
        lambda t: t.__setitem__("plan", "free"),
        lambda t: t.__delitem__("plan"),
        lambda t: t.update(plan="free"),
        lambda t: t.pop("plan"),
        lambda t: t.popitem(),
        lambda t: t.clear(),
        lambda t: t.setdefault("new", 1),
        lambda t: t.__ior__({"plan": "free"}),
    ]
    for change in attempts:
        with pytest.raises(TypeError):
            change(traits)
    assert value.traits == {"plan": "pro", "seats": 3}
    assert encode_fields(*IDENTIFY.fields_of(value)) == encode_fields(
        VID, "user_42", {"plan": "pro", "seats": 3}
    )
    mutable = dict(traits)
    mutable["plan"] = "free"  # a copy is the caller's to change
    assert traits["plan"] == "pro"


def test_an_identify_is_frozen_copied_and_pickled_as_itself() -> None:
    value = Identify(VID, "user_42", {"plan": "pro"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        value.user_id = "other"  # type: ignore[misc]
    for copied in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert copied == value
        assert copied.traits is not None
        with pytest.raises(TypeError):
            copied.traits["plan"] = "free"  # type: ignore[index]
    assert hash(value) == hash(Identify(VID, "user_42", {"plan": "free"}))  # traits not hashed
    assert value != Identify(VID, "user_42", {"plan": "free"})


def test_an_identify_s_traits_cannot_be_rewritten_through_init() -> None:
    value = Identify(VID, "user_42", {"plan": "pro"})
    assert value.traits is not None
    with pytest.raises(TypeError):
        value.traits.__init__({"plan": "free"})  # type: ignore[misc]
    assert value.traits == {"plan": "pro"}


# ---------------------------------------------------------------------------------------------
# Journaled bodies


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"user_id": "u"}',
        b'{"datafast_visitor_id": "v", "user_id": "u"}',
        ('{"datafast_visitor_id": "' + VID + '", "user_id": ""}').encode(),
        ('{"datafast_visitor_id": "' + VID + '", "user_id": "u", "plan": [1]}').encode(),
        ('{"datafast_visitor_id": "' + VID + '", "user_id": "u", "visitorId": "x"}').encode(),
        ('{"datafast_visitor_id": "' + VID + '", "user_id": "u", "n": NaN}').encode(),
        b"[" * 100_000,
    ],
)
def test_a_body_that_is_not_a_valid_identify_is_not_read_back(body: bytes) -> None:
    assert IDENTIFY.rebuild(body) is None


def test_a_journaled_body_with_null_traits_reads_back_without_them() -> None:
    body = ('{"datafast_visitor_id": "' + VID + '", "user_id": "u", "plan": null}').encode()
    assert IDENTIFY.rebuild(body) == (VID, "u", None)


# ---------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize(
    ("body", "result"),
    [
        (
            b'{"status": "success", "data": {"message": "User profile created successfully",'
            b' "profileId": "65f0c0ffee"}}',
            IdentifyResult("User profile created successfully", "65f0c0ffee"),
        ),
        (b'{"status": "success", "data": {"message": "ok"}}', IdentifyResult("ok", None)),
        (b'{"status": "success", "data": {}}', IdentifyResult(None, None)),
        (
            b'{"status": "success", "data": {"message": 1, "profileId": 2}}',
            IdentifyResult(None, None),
        ),
        # A list is tolerated (the goals' shape): its first object is read.
        (
            b'{"status": "success", "data": [{"message": "ok", "profileId": "p"}, {}]}',
            IdentifyResult("ok", "p"),
        ),
        (b'{"status": "success", "data": []}', IdentifyResult(None, None)),
        # A cookieless website answers success and stores nothing.
        (
            b'{"status": "success", "data": {"message": "cookieless"}}',
            IdentifyResult("cookieless", None),
        ),
    ],
)
def test_an_identify_success_is_the_status_envelope(body: bytes, result: IdentifyResult) -> None:
    assert IDENTIFY.is_success(body)
    assert IDENTIFY.read_result(body) == result


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"{}",
        b"[]",
        b"null",
        b'"success"',
        b'{"status": "error", "error": {"code": 400, "message": "Invalid UUID"}}',
        b'{"status": "error", "data": {"message": "ok"}}',
        b'{"message": "User profile created successfully", "profileId": "p"}',  # no envelope
        b'{"status": "Success", "data": {}}',
        b'{"status": true, "data": {}}',
        b'[{"status": "success", "data": {}}]',
        b'{"status": "success"',
        b"\xff\xfe\x00",
        b"[" * 100_000,
    ],
)
def test_anything_else_is_not_an_identify_success(body: bytes) -> None:
    assert not IDENTIFY.is_success(body)


def test_an_envelope_without_an_object_in_data_is_still_a_success() -> None:
    # The SDK's tolerance (the text shows data as an object): a success status is enough.
    for body in (
        b'{"status": "success"}',
        b'{"status": "success", "data": null}',
        b'{"status": "success", "data": "ok"}',
    ):
        assert IDENTIFY.is_success(body)
        assert IDENTIFY.read_result(body) == IdentifyResult(None, None)


answers = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(["success", "error", "ok", "p1"]),
        st.text(max_size=4),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["status", "data", "message", "profileId", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=8,
)


@SETTINGS
@given(answers)
def test_success_and_result_for_any_answer(answer: object) -> None:
    body = json.dumps(answer).encode()
    success = isinstance(answer, dict) and answer.get("status") == "success"
    assert IDENTIFY.is_success(body) == success
    if not success:
        return
    assert isinstance(answer, dict)
    data = answer.get("data")
    if isinstance(data, list):
        data = data[0] if data else None
    data = data if isinstance(data, dict) else {}
    message, profile = data.get("message"), data.get("profileId")
    assert IDENTIFY.read_result(body) == IdentifyResult(
        message if isinstance(message, str) else None,
        profile if isinstance(profile, str) else None,
    )


def test_identify_s_kind() -> None:
    assert IDENTIFY.path == "/api/v1/identify"
    assert IDENTIFY.method == "POST"
    assert IDENTIFY.idempotent is False
    assert IDENTIFY.disabled() == IdentifyResult("disabled", None)


def test_traits_whose_items_are_not_pairs_are_a_validation_error() -> None:
    class Odd(dict[str, object]):
        def items(self) -> Any:
            return [("a", 1, 2)]

    with pytest.raises(ValidationError) as caught:
        validate(VID, "u", Odd(a=1))
    assert caught.value.field == "traits"
