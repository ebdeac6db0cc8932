"""Validation against an independent reading of the API's rules, on generated goals.

The oracle below is written from ``datafast-api.md`` and the README's Validation section, not
from ``_validation``: a name is lowercased with spaces turned into ``_``, then must match
``^[a-z0-9_:-]{1,64}$`` and not be ``identify``; metadata leaves out ``None`` values, then has
at most 10 keys matching ``^[a-z0-9_-]{1,64}$``, each value a ``str`` (or a ``bool``, ``int``
or ``float``, sent as its JSON text) of at most 255 characters; the visitor id is a non-empty
``str``; the description ``None`` or a ``str``. A ``str`` subclass counts as its characters
(what ``json.dumps`` writes). Three rules come from the SDK rather than the API: every text
must be sendable as UTF-8 (no lone surrogates), two keys may not be the same text, and a
metadata mapping of more than ``MAX_METADATA_ENTRIES`` entries is refused before it is read.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import json
import math
import operator
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from datafast_async import Goal, ValidationError, _validation
from datafast_async._kinds.goals import encode_fields
from datafast_async._validation import MAX_METADATA_ENTRIES, validate_goal

# The contract's ^...$ patterns, anchored on the whole text (Python's $ also matches before a
# final newline).
NAME_RE = re.compile(r"\A[a-z0-9_:-]{1,64}\Z")
KEY_RE = re.compile(r"\A[a-z0-9_-]{1,64}\Z")
SETTINGS = settings(max_examples=300, deadline=None)

Fields = tuple[Any, Any, Any, Any]  # visitor_id, name, description, metadata


# ---------------------------------------------------------------------------------------------
# The oracle


@contextlib.contextmanager
def _digits_unlimited() -> Iterator[None]:
    """Lift CPython's int-to-str digit limit, so the oracle can print any int it is given."""
    set_limit = getattr(sys, "set_int_max_str_digits", None)
    if set_limit is None:  # a Python without the limit
        yield
        return
    before = sys.get_int_max_str_digits()
    set_limit(0)
    try:
        yield
    finally:
        set_limit(before)


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


def _json_text(value: object) -> str | None:
    """A metadata value as the API receives it, or ``None`` if it has no JSON text."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (bool, int, float)):
        with _digits_unlimited():
            try:
                return json.dumps(value, allow_nan=False)
            except ValueError:  # nan, inf
                return None
    return None


def oracle(fields: Fields) -> tuple[set[str], Fields | None]:
    """The fields a goal breaks, and the values the API should receive when it breaks none."""
    visitor_id, name, description, metadata = fields
    broken: set[str] = set()

    vid = _text(visitor_id)
    if vid is None or vid == "" or not _sendable(vid):
        broken.add("visitor_id")

    raw_name = _text(name)
    normalized = None if raw_name is None else raw_name.lower().replace(" ", "_")
    if normalized is None or NAME_RE.match(normalized) is None or normalized == "identify":
        broken.add("name")

    desc = None if description is None else _text(description)
    if description is not None and (desc is None or not _sendable(desc)):
        broken.add("description")

    sent: dict[str, str] | None = None
    if metadata is not None:
        if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_ENTRIES:
            broken.add("metadata")
        else:
            sent = {}
            kept = [(key, value) for key, value in metadata.items() if value is not None]
            if len(kept) > 10:
                broken.add("metadata")
            for key, value in kept:
                key_text = _text(key)
                if key_text is None:
                    broken.add("metadata")
                    continue
                field = f"metadata.{key_text}"
                if KEY_RE.match(key_text) is None:
                    broken.add(field)
                if key_text in sent:
                    broken.add(field)
                value_text = _json_text(value)
                if value_text is None or len(value_text) > 255 or not _sendable(value_text):
                    broken.add(field)
                    continue
                sent[key_text] = value_text

    if broken:
        return broken, None
    return broken, (vid, normalized, desc, sent)


# ---------------------------------------------------------------------------------------------
# Strategies


class Sub(str):
    """A plain str subclass, as an application might use."""

    def __repr__(self) -> str:  # so that a failing example shows it (the SDK never calls it)
        return f"{type(self).__name__}({str.__repr__(self)})"


class Rehashed(Sub):
    """A str subclass with its own hash: a dict can hold it beside the plain str it equals."""

    def __hash__(self) -> int:
        return hash(("rehashed", str.__str__(self)))


class Choice(str, enum.Enum):
    """A ``(str, Enum)``: its ``str()`` is ``"Choice.PLAN"``, its characters its value."""

    SIGNUP = "signup"
    SIGN_UP = "Sign Up"
    PLAN = "plan"
    TIER = "tier"
    COLON = "a:b"
    BAD = "bad name!"
    IDENTIFY = "IDENTIFY"
    LONG = "k" * 65
    EMPTY = ""
    SURROGATE = "\ud800"


class Level(enum.IntEnum):
    LOW = 1
    HUGE = 10**300  # 301 digits


STR_MEMBERS: list[object] = list(Choice)
if sys.version_info >= (3, 11):
    Plain = enum.StrEnum("Plain", {"PRO": "pro", "SIGN_UP": "Sign Up", "UPPER": "Plan"})  # type: ignore[attr-defined,misc]
    STR_MEMBERS += list(Plain)
MEMBERS = [*STR_MEMBERS, *Level]


# Strategies draw recipes, which the tests turn into goals: Hypothesis must never see an
# instance of a str or int subclass among the values it draws, since its shrinker can put such
# a value back as a choice of its own and then fails on its type (hypothesis 6.170).


@dataclasses.dataclass(frozen=True)
class AsSub:
    """Stands for ``kind(text)``, a str subclass."""

    kind: type[Sub]
    text: str

    def __repr__(self) -> str:
        return f"{self.kind.__name__}({self.text!r})"


@dataclasses.dataclass(frozen=True)
class AsMember:
    """Stands for ``MEMBERS[index]``, an enum member that is a str or an int."""

    index: int

    def __repr__(self) -> str:
        return repr(MEMBERS[self.index])


@dataclasses.dataclass(frozen=True)
class AsMapping:
    """Stands for ``kind(items)``, with ``padding`` more entries whose value is None."""

    kind: Callable[[dict[Any, Any]], Mapping[Any, Any]]
    items: tuple[tuple[object, object], ...]
    padding: int = 0

    def __repr__(self) -> str:
        shown = f"{self.kind.__name__}({dict(self.items)!r})"
        return f"{shown} + {self.padding} entries of None" if self.padding else shown


def realize(recipe: object) -> Any:
    if isinstance(recipe, AsSub):
        return recipe.kind(recipe.text)
    if isinstance(recipe, AsMember):
        return MEMBERS[recipe.index]
    if isinstance(recipe, AsMapping):
        entries = {realize(key): realize(value) for key, value in recipe.items}
        entries.update(dict.fromkeys((f"pad{i}" for i in range(recipe.padding)), None))
        return recipe.kind(entries)
    return recipe


def goal_of(recipe: Fields) -> Fields:
    visitor_id, name, description, metadata = map(realize, recipe)
    return visitor_id, name, description, metadata


VALID = "abcxyz0189_-"
ODD = "ABZ \t\n.é\u212aİß☕\x00\ud800\udfff"  # upper case, space, unicode, lone surrogates
EDGE_LENGTHS = [0, 1, 63, 64, 65, 254, 255, 256]
# Words an application uses, some of them equal to an enum member's value.
WORDS = ["plan", "tier", "signup", "pro", "Plan", "Sign Up", "identify", "a:b", ""]


def texts(alphabet: str) -> st.SearchStrategy[str]:
    """Strings mixing valid and odd characters, and strings of the lengths at the limits."""
    return st.one_of(
        st.sampled_from(WORDS),
        st.text(st.sampled_from(alphabet), max_size=70),
        st.builds(
            operator.mul,
            st.sampled_from(["a", "A", "é", " ", "\ud800"]),
            st.sampled_from(EDGE_LENGTHS),
        ),
        st.builds(
            operator.add,
            st.builds(operator.mul, st.just("a"), st.sampled_from(EDGE_LENGTHS)),
            st.text(st.sampled_from(alphabet), max_size=2),
        ),
    )


def str_like(alphabet: str) -> st.SearchStrategy[object]:
    """Those strings, as plain str, as a str subclass, or an enum member that is a str."""
    return as_str_like(texts(alphabet), STR_MEMBERS)


def as_str_like(base: st.SearchStrategy[str], members: list[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        base,
        st.builds(AsSub, st.sampled_from([Sub, Rehashed]), base),
        st.sampled_from([MEMBERS.index(member) for member in members]).map(AsMember),
    )


# Short valid words, as an application sends them (keys, names and values alike), and enum
# members of the same text.
USUAL_WORDS = ["plan", "tier", "signup", "pro"]
usual = as_str_like(
    st.one_of(
        st.sampled_from(USUAL_WORDS),
        st.text(st.sampled_from(VALID), min_size=1, max_size=8),
    ),
    [member for member in STR_MEMBERS if member in USUAL_WORDS],
)


# Around the 255-character limit (10**254 has 255 digits), the 849-bit line, and past CPython's
# 4300-digit limit for printing an int. Built, not listed: Hypothesis prints what it samples from.
huge_ints = st.builds(
    operator.mul,
    st.sampled_from([1, -1]),
    st.builds(pow, st.sampled_from([2, 10]), st.sampled_from([253, 254, 255, 848, 849, 5000])),
)
NESTED = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.tuples(st.text(max_size=2)),
    st.binary(max_size=3),
    st.complex_numbers(max_magnitude=10),
    st.builds(object),
)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.builds(AsMember, st.integers(len(STR_MEMBERS), len(MEMBERS) - 1)),  # an IntEnum
    st.floats(),  # nan and the infinities included
    str_like(VALID + ODD + ":!<>\"'\\"),
    NESTED,
)
keys = st.one_of(
    str_like(VALID),
    str_like(VALID + ":" + ODD),
    st.integers(),
    huge_ints,
    st.sampled_from([None, b"plan", ("plan",)]),
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


# The common case too, which the SDK checks inline: short ASCII str values under valid keys
# (some of them str subclasses equal to a key seen before).
usual_metadata = mappings(
    st.dictionaries(usual, st.text(st.sampled_from(VALID), max_size=5), max_size=4)
)
metadatas = st.one_of(
    st.none(),
    usual_metadata,
    mappings(st.dictionaries(keys, values, max_size=13)),
    # None values are left out before the 10-key rule; past 1000 entries the SDK refuses.
    mappings(
        st.dictionaries(keys, values, max_size=11),
        padding=st.sampled_from([1, 3, 985, 990, 1000]),
    ),
    mappings(
        st.dictionaries(keys, values, max_size=11),
        kinds=st.sampled_from([types.MappingProxyType, collections.OrderedDict]),
    ),
    st.sampled_from([["plan"], "plan=pro", 42, b"plan"]),
)
goals = st.one_of(
    # Usual fields, so that the checks reach the metadata (usual or not).
    st.tuples(usual, usual, st.one_of(st.none(), usual), st.one_of(usual_metadata, metadatas)),
    # Anything in any field.
    st.tuples(
        st.one_of(str_like(VALID), str_like(VALID + ODD), st.sampled_from([None, 7, b"abc"])),
        st.one_of(str_like(VALID + ":" + ODD), st.sampled_from([None, 42, b"signup"])),
        st.one_of(st.none(), str_like(VALID + ODD), st.sampled_from([3, b"d"])),
        metadatas,
    ),
)


# ---------------------------------------------------------------------------------------------
# Helpers


def attempt(validate: Callable[..., Any], fields: Fields) -> tuple[Any, ValidationError | None]:
    """``validate(*fields)`` and ``None``, or ``None`` and the ``ValidationError`` it raised."""
    try:
        return validate(*fields), None
    except ValidationError as exc:
        return None, exc


def outcome(fields: Fields) -> tuple[object, ...]:
    """What a caller sees: the normalised fields with their exact types, or the error."""
    result, error = attempt(validate_goal, fields)
    if error is not None:
        return ("refused", error.field, str(error))
    vid, name, desc, metadata = result
    pairs = (metadata or {}).items()
    kinds = (type(vid), type(name), type(desc), *(type(part) for pair in pairs for part in pair))
    return ("accepted", result, kinds)


def plain(fields: Fields) -> Fields:
    """The same goal with every str subclass turned into a plain str (what warms the caches)."""

    def unwrap(value: object) -> object:
        return str.__str__(value) if isinstance(value, str) else value

    visitor_id, name, description, metadata = fields
    if isinstance(metadata, Mapping):
        metadata = {unwrap(key): unwrap(value) for key, value in metadata.items()}
    return unwrap(visitor_id), unwrap(name), unwrap(description), metadata


def _clear_caches() -> None:
    _validation._names.clear()
    _validation._keys.clear()


# ---------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(goals)
def test_a_goal_is_accepted_exactly_when_the_rules_as_written_allow_it(recipe: Fields) -> None:
    fields = goal_of(recipe)
    broken, expected = oracle(fields)
    result, error = attempt(validate_goal, fields)
    if error is not None:
        assert broken, f"refused ({error.field}: {error}) but the rules allow it"
        assert error.field in broken, f"{error.field!r} is not among the broken fields {broken}"
        return
    assert not broken, f"accepted, but it breaks {broken}"
    assert result == expected
    vid, name, desc, metadata = result
    assert type(vid) is type(name) is str
    assert desc is None or type(desc) is str
    assert metadata is None or all(
        type(key) is str and type(value) is str for key, value in metadata.items()
    )

    # The body the SDK sends holds exactly those values, and they pass the API's rules.
    body = json.loads(encode_fields(*result).decode("utf-8", "strict"))
    wanted: dict[str, object] = {"datafast_visitor_id": vid, "name": name}
    if desc is not None:
        wanted["description"] = desc
    if metadata:
        wanted["metadata"] = metadata
    assert body == wanted
    assert isinstance(body["datafast_visitor_id"], str)
    assert body["datafast_visitor_id"]
    assert NAME_RE.match(body["name"])
    assert body["name"] != "identify"
    assert isinstance(body.get("description", ""), str)
    sent = body.get("metadata", {})
    assert len(sent) <= 10
    for key, value in sent.items():
        assert KEY_RE.match(key)
        assert isinstance(value, str)
        assert len(value) <= 255

    # A Goal holds the same fields.
    goal = Goal(*fields)
    assert (goal.visitor_id, goal.name, goal.description, goal.metadata) == result


@SETTINGS
@given(goals)
def test_a_refusal_names_a_field_the_rules_say_is_broken(recipe: Fields) -> None:
    fields = goal_of(recipe)
    broken, _ = oracle(fields)
    for validate in (validate_goal, Goal):
        _, error = attempt(validate, fields)
        if error is None:
            assert not broken, f"accepted, but it breaks {broken}"
        else:
            assert error.field in broken, f"{error.field!r} is not among the broken {broken}"


@SETTINGS
@given(goals)
def test_normalising_is_idempotent(recipe: Fields) -> None:
    once, error = attempt(validate_goal, goal_of(recipe))
    if error is None:
        twice = validate_goal(*once)
        assert twice == once
        assert outcome(twice) == outcome(once)  # the same again, with the same (plain) types


@settings(SETTINGS, max_examples=200)  # each example is several goals
@given(
    goals,
    st.lists(goals, max_size=4),
    st.sampled_from(["never", "before", "between"]),
)
def test_results_do_not_depend_on_earlier_calls(
    recipe: Fields, other_recipes: list[Fields], clear: str
) -> None:
    fields = goal_of(recipe)
    others = [goal_of(other) for other in other_recipes]
    if clear == "before":
        _clear_caches()
    first = outcome(fields)
    if clear == "between":
        _clear_caches()
    for other in [*others, plain(fields), *others]:
        outcome(other)
    assert outcome(fields) == first


@SETTINGS
@given(
    mappings(
        st.dictionaries(
            st.text(st.sampled_from(VALID), min_size=1, max_size=64), values, max_size=10
        )
    )
)
def test_metadata_values_are_sent_as_their_json_text(recipe: AsMapping) -> None:
    metadata = realize(recipe)
    result, error = attempt(validate_goal, ("v", "x", None, metadata))
    if error is not None:
        value = metadata[error.field.removeprefix("metadata.")]
        text = _json_text(value)
        assert text is None or len(text) > 255 or not _sendable(text)
        return
    sent = result[3] or {}
    for key, value in metadata.items():
        if value is None:
            assert key not in sent
        else:
            assert sent[key] == _json_text(value)
            if isinstance(value, float):
                assert math.isfinite(value)
                assert float(sent[key]) == value
