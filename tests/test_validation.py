"""Goal validation and normalisation: exactly the API's rules, at call time."""

from __future__ import annotations

import enum
import json
import string
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from datafast_async import DataFast, Goal, ValidationError
from datafast_async._kinds.goals import encode_goal

VID = "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("signup", "signup"),
        ("Sign Up", "sign_up"),
        ("NEWSLETTER signup", "newsletter_signup"),
        ("checkout:step-2", "checkout:step-2"),
        ("a", "a"),
        ("x" * 64, "x" * 64),
        ("  lead  ", "__lead__"),
    ],
)
def test_names_are_normalised_like_the_api(raw: str, normalized: str) -> None:
    assert Goal(VID, raw).name == normalized


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("x" * 65, "at most 64 characters"),
        ("sign.up", "'.'"),
        ("sign\tup", "'\\t'"),
        ("café", "'é'"),
        ("identify", "reserved"),
        ("IDENTIFY", "reserved"),
        (42, "must be a str"),
        (None, "must be a str"),
    ],
)
def test_bad_names_are_refused_with_the_rule(name: object, rule: str) -> None:
    with pytest.raises(ValidationError, match="name") as info:
        Goal(VID, name)  # type: ignore[arg-type]
    assert info.value.field == "name"
    assert rule in str(info.value)


def test_only_spaces_are_turned_into_underscores() -> None:
    with pytest.raises(ValidationError):
        Goal(VID, "sign\u00a0up")  # a non-breaking space is not a space


def test_a_trailing_newline_is_not_accepted() -> None:
    with pytest.raises(ValidationError):
        Goal(VID, "signup\n")


@pytest.mark.parametrize("visitor_id", ["", None, 7, b"abc"])
def test_visitor_id_must_be_a_non_empty_str(visitor_id: object) -> None:
    with pytest.raises(ValidationError) as info:
        Goal(visitor_id, "signup")  # type: ignore[arg-type]
    assert info.value.field == "visitor_id"


def test_description_must_be_a_str_or_none() -> None:
    assert Goal(VID, "x", "from the form").description == "from the form"
    with pytest.raises(ValidationError) as info:
        Goal(VID, "x", 3)  # type: ignore[arg-type]
    assert info.value.field == "description"


def test_metadata_values_become_json_text_and_none_is_left_out() -> None:
    class Plan(str, enum.Enum):
        PRO = "pro"

    goal = Goal(
        VID,
        "x",
        metadata={"a": True, "b": False, "c": 42, "d": 1.5, "e": None, "f": "s", "g": Plan.PRO},
    )
    assert goal.metadata == {"a": "true", "b": "false", "c": "42", "d": "1.5", "f": "s", "g": "pro"}


def test_metadata_is_copied() -> None:
    source = {"plan": "pro"}
    goal = Goal(VID, "x", metadata=source)
    source["plan"] = "free"
    assert goal.metadata == {"plan": "pro"}


def test_a_goals_metadata_cannot_be_changed_after_validation() -> None:
    goal = Goal(VID, "x", metadata={"plan": "pro"})
    assert goal.metadata is not None
    for change in (
        lambda m: m.__setitem__("Bad Key", "x"),
        lambda m: m.update({"plan": "x" * 300}),
        lambda m: m.pop("plan"),
        lambda m: m.clear(),
        lambda m: m.setdefault("k", "v"),
        lambda m: m.popitem(),
        lambda m: m.__delitem__("plan"),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change(goal.metadata)  # type: ignore[no-untyped-call]
    assert goal.metadata == {"plan": "pro"}
    changed = dict(goal.metadata)  # the way to a copy that can change
    changed["tier"] = "gold"
    assert goal.metadata == {"plan": "pro"}
    assert {**goal.metadata, "tier": "gold"} == changed


def test_a_goal_survives_pickling_and_copying_with_its_metadata() -> None:
    import copy
    import pickle

    goal = Goal(VID, "x", "d", {"plan": "pro", "n": 3})
    for twin in (pickle.loads(pickle.dumps(goal)), copy.deepcopy(goal), copy.copy(goal)):
        assert twin == goal
        assert twin.metadata == {"plan": "pro", "n": "3"}
        with pytest.raises(TypeError):
            twin.metadata["plan"] = "free"  # type: ignore[index]
    assert json.loads(json.dumps(goal.metadata)) == {"plan": "pro", "n": "3"}
    assert attrs.asdict(goal)["metadata"] == {"plan": "pro", "n": "3"}


@pytest.mark.parametrize(
    ("metadata", "field", "rule"),
    [
        ({f"k{i}": "v" for i in range(11)}, "metadata", "at most 10 keys"),
        ({"Plan": "pro"}, "metadata.Plan", "must be 1 to 64 characters"),
        ({"a b": "pro"}, "metadata.a b", "must be 1 to 64"),
        ({"a:b": "pro"}, "metadata.a:b", "must be 1 to 64"),
        ({"": "pro"}, "metadata.", "must be 1 to 64"),
        ({"k" * 65: "v"}, "metadata." + "k" * 65, "must be 1 to 64"),
        ({"plan": "x" * 256}, "metadata.plan", "at most 255 characters"),
        ({"plan": ["pro"]}, "metadata.plan", "must be str, bool, int, float or None"),
        ({"plan": float("nan")}, "metadata.plan", "finite"),
        ({1: "pro"}, "metadata", "keys must be str"),
        (["plan"], "metadata", "must be a mapping"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(metadata: object, field: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        Goal(VID, "x", metadata=metadata)  # type: ignore[arg-type]
    assert info.value.field == field
    assert rule in str(info.value)


def test_ten_keys_and_255_characters_are_allowed() -> None:
    metadata = {f"k{i}": "v" * 255 for i in range(10)}
    assert Goal(VID, "x", metadata=metadata).metadata == metadata


def test_none_values_do_not_count_towards_the_ten_keys() -> None:
    metadata: dict[str, object] = {f"k{i}": "v" for i in range(10)}
    metadata["extra"] = None
    assert len(Goal(VID, "x", metadata=metadata).metadata or {}) == 10


def test_goal_is_frozen_comparable_and_hashable() -> None:
    goal = Goal(VID, "Sign Up", metadata={"plan": "pro"})
    assert goal == Goal(VID, "sign_up", metadata={"plan": "pro"})
    assert hash(goal) == hash(Goal(VID, "sign_up", metadata={"plan": "pro"}))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        goal.name = "other"  # type: ignore[misc]
    assert attrs.has(Goal)


def test_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Goal(VID, "identify")


async def test_track_validates_before_anything_is_queued() -> None:
    df = DataFast(enabled=False)
    with pytest.raises(ValidationError) as info:
        df.track_nowait(VID, "bad name!")
    assert info.value.field == "name"
    assert df.stats().enqueued == 0


_ALLOWED = string.ascii_lowercase + string.digits + "_-:"


@given(st.text(alphabet=_ALLOWED + string.ascii_uppercase + " ", min_size=1, max_size=64))
def test_any_name_of_allowed_characters_is_accepted_and_stable(name: str) -> None:
    normalized = name.lower().replace(" ", "_")
    if normalized == "identify":
        return
    goal = Goal(VID, name)
    assert goal.name == normalized
    assert Goal(VID, goal.name).name == goal.name


@given(st.text(min_size=1, max_size=80))
def test_a_name_is_accepted_exactly_when_the_api_would_accept_it(name: str) -> None:
    normalized = name.lower().replace(" ", "_")
    api_accepts = (
        1 <= len(normalized) <= 64
        and all(c in _ALLOWED for c in normalized)
        and normalized != "identify"
    )
    try:
        Goal(VID, name)
    except ValidationError:
        assert not api_accepts
    else:
        assert api_accepts


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"visitor_id": "v\ud800"}, "visitor_id"),
        ({"description": "bad \udcff text"}, "description"),
        ({"metadata": {"plan": "pro\ud800"}}, "metadata.plan"),
    ],
)
def test_text_that_cannot_be_sent_as_utf8_is_refused_at_call_time(
    kwargs: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {"visitor_id": VID, "name": "x", **kwargs}
    with pytest.raises(ValidationError, match="lone surrogate") as info:
        Goal(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


def test_non_ascii_text_is_kept_as_is() -> None:
    goal = Goal("visiteur-é", "x", "Café ☕", {"city": "Zürich"})
    assert (goal.visitor_id, goal.description, goal.metadata) == (
        "visiteur-é",
        "Café ☕",
        {"city": "Zürich"},
    )


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"a": 10**5000}, "metadata.a"),  # past CPython's int-to-str digit limit
        ({"a": -(10**5000)}, "metadata.a"),
        ({"a": 10**256}, "metadata.a"),  # 257 digits, under that limit
        ({10**5000: "x"}, "metadata"),  # a key that cannot even be shown
    ],
)
def test_an_integer_too_large_to_print_is_a_validation_error(
    metadata: dict[object, object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Goal(VID, "x", metadata=metadata)  # type: ignore[arg-type]
    assert info.value.field == field


def test_an_integer_of_255_digits_is_accepted_and_256_is_not() -> None:
    assert Goal(VID, "x", metadata={"n": 10**254}).metadata == {"n": "1" + "0" * 254}
    assert Goal(VID, "x", metadata={"n": -(10**253)}).metadata == {"n": "-1" + "0" * 253}
    with pytest.raises(ValidationError, match="at most 255 characters") as info:
        Goal(VID, "x", metadata={"n": -(10**254)})
    assert info.value.field == "metadata.n"


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="no digit limit")
def test_a_huge_integer_is_refused_by_its_size_with_the_digit_limit_lifted() -> None:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(ValidationError, match="at most 255 characters") as info:
            Goal(VID, "x", metadata={"n": 10**20000})
    finally:
        sys.set_int_max_str_digits(before)
    assert info.value.field == "metadata.n"


class _Key(str):
    """A str subclass as an application might use for its keys."""


class _Tricky(str):
    """A str subclass whose methods all disagree with its characters."""

    def __str__(self) -> str:
        return "not-this"

    def __repr__(self) -> str:
        raise RuntimeError("repr is not how a str subclass is read")

    def __len__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 7

    def lower(self) -> str:
        return "NOT-THIS"

    def isascii(self) -> bool:
        return True

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"not-this"


class _Plan(str, enum.Enum):
    PRO = "pro"
    SIGN_UP = "Sign Up"
    KEY = "plan_tier"


def _exact(goal: Goal) -> None:
    """Every text a goal holds is a plain str, never the caller's subclass."""
    assert type(goal.visitor_id) is str
    assert type(goal.name) is str
    assert goal.description is None or type(goal.description) is str
    for key, value in (goal.metadata or {}).items():
        assert (type(key), type(value)) == (str, str)


def test_a_str_subclass_key_is_accepted_whatever_was_seen_before() -> None:
    # A key no other test uses, so the first call is the first time it is seen.
    first = Goal(VID, "x", metadata={_Key("subclass-key-first"): "pro"})
    plain = Goal(VID, "x", metadata={"subclass-key-first": "pro"})
    again = Goal(VID, "x", metadata={_Key("subclass-key-first"): "pro"})
    assert first == plain == again
    for goal in (first, plain, again):
        assert goal.metadata == {"subclass-key-first": "pro"}
        _exact(goal)


def test_a_str_enum_is_sent_as_its_value_not_its_str() -> None:
    assert str(_Plan.PRO) != "pro"  # what str() of a (str, Enum) member gives is not its value
    goal = Goal(_Plan.PRO, _Plan.SIGN_UP, _Plan.PRO, {_Plan.KEY: _Plan.PRO})
    assert goal == Goal("pro", "sign_up", "pro", {"plan_tier": "pro"})
    _exact(goal)
    assert json.loads(encode_goal(goal)) == {
        "datafast_visitor_id": "pro",
        "name": "sign_up",
        "description": "pro",
        "metadata": {"plan_tier": "pro"},
    }


@pytest.mark.skipif(sys.version_info < (3, 11), reason="enum.StrEnum is new in Python 3.11")
def test_a_strenum_member_is_read_as_its_value() -> None:
    plan = enum.StrEnum("plan", {"PRO": "Pro Plan", "KEY": "tier"})  # type: ignore[attr-defined,unused-ignore]
    goal = Goal(VID, plan.PRO, metadata={plan.KEY: plan.PRO})
    assert goal == Goal(VID, "pro_plan", metadata={"tier": "Pro Plan"})
    _exact(goal)


def test_a_str_subclass_is_read_as_its_characters_whatever_it_overrides() -> None:
    goal = Goal(
        _Tricky("visitor"),
        _Tricky("Sign Up"),
        _Tricky("café"),
        {_Tricky("tricky-key"): _Tricky("Zürich"), "plain": _Tricky("v")},
    )
    assert goal == Goal("visitor", "sign_up", "café", {"tricky-key": "Zürich", "plain": "v"})
    _exact(goal)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"visitor_id": _Tricky("")}, "visitor_id"),
        ({"visitor_id": _Tricky("v\ud800")}, "visitor_id"),
        ({"name": _Tricky("bad name!")}, "name"),
        ({"name": _Tricky("identify")}, "name"),
        ({"description": _Tricky("\udcff")}, "description"),
        ({"metadata": {_Tricky("Bad Key"): "v"}}, "metadata.Bad Key"),
        ({"metadata": {"k": _Tricky("x" * 256)}}, "metadata.k"),
        ({"metadata": {"k": _Tricky("\ud800")}}, "metadata.k"),
    ],
)
def test_a_str_subclass_breaking_a_rule_is_refused_by_its_characters(
    kwargs: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {"visitor_id": VID, "name": "x", **kwargs}
    with pytest.raises(ValidationError) as info:
        Goal(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


def test_two_keys_with_the_same_characters_are_refused() -> None:
    # _Tricky("plan") is a different dict key from "plan", but both would be sent as "plan".
    with pytest.raises(ValidationError, match="twice") as info:
        Goal(VID, "x", metadata={"plan": "a", _Tricky("plan"): "b"})
    assert info.value.field == "metadata.plan"


class _Counted(Mapping[str, object]):
    """A mapping that counts how many of its entries were read, and may misreport its size."""

    def __init__(self, entries: dict[str, object], size: int | None = None) -> None:
        self.entries = entries
        self.size = len(entries) if size is None else size
        self.read = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[str]:
        for key in self.entries:
            self.read += 1
            yield key

    def __getitem__(self, key: str) -> object:
        return self.entries[key]


def test_a_huge_metadata_mapping_is_refused_before_it_is_read() -> None:
    huge = _Counted({}, size=1_000_000)
    with pytest.raises(ValidationError, match="got a mapping of 1000000 entries") as info:
        Goal(VID, "x", metadata=huge)
    assert info.value.field == "metadata"
    assert "at most 10 keys (None values are left out first)" in str(info.value)
    assert huge.read == 0


def test_a_plain_dict_of_more_than_a_thousand_entries_is_refused_even_if_all_none() -> None:
    with pytest.raises(ValidationError, match="got a mapping of 1001 entries") as info:
        Goal(VID, "x", metadata=dict.fromkeys((f"k{i}" for i in range(1001)), None))
    assert info.value.field == "metadata"
    # A thousand entries, all but ten of them None, are a goal of ten keys.
    metadata: dict[str, object] = dict.fromkeys((f"k{i}" for i in range(1000)), None)
    metadata.update({f"k{i}": "v" for i in range(10)})
    assert Goal(VID, "x", metadata=metadata).metadata == {f"k{i}": "v" for i in range(10)}


def test_reading_metadata_stops_at_the_eleventh_key_that_is_not_none() -> None:
    entries: dict[str, object] = {f"k{i}": "v" for i in range(11)}
    entries.update({f"none{i}": None for i in range(500)})
    counted = _Counted(entries)
    with pytest.raises(ValidationError, match="at most 10 keys") as info:
        Goal(VID, "x", metadata=counted)
    assert info.value.field == "metadata"
    assert counted.read == 11


def test_a_mapping_that_yields_more_entries_than_it_says_is_refused() -> None:
    lying = _Counted({f"k{i}": None for i in range(5000)}, size=3)
    with pytest.raises(ValidationError, match="more than 1000 entries") as info:
        Goal(VID, "x", metadata=lying)
    assert info.value.field == "metadata"
    assert lying.read == 1001


class _Broken(Mapping[str, object]):
    def __init__(self, fail: str) -> None:
        self.fail = fail

    def __len__(self) -> int:
        if self.fail == "len":
            raise RuntimeError("len broke")
        if self.fail == "huge len":
            return sys.maxsize + 1  # len() cannot answer it
        return 2

    def __iter__(self) -> Iterator[str]:
        yield "plan"
        if self.fail == "iter":
            raise RuntimeError("iteration broke")
        yield "tier"

    def __getitem__(self, key: str) -> object:
        if self.fail == "getitem":
            raise KeyError(key)
        return "v"


class _BrokenItems(dict[str, object]):
    def items(self) -> Any:
        raise RuntimeError("items broke")


class _PosingAsDict:
    """An object whose __class__ says dict (so isinstance(x, Mapping) is True) but is none."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return dict


class _ClassRaises:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("no class")


class _NotAMapping:
    def items(self) -> list[tuple[str, str]]:
        return [("plan", "pro")]


_UNREADABLE: dict[str, Callable[[], object]] = {
    "len raises": lambda: _Broken("len"),
    "len too large for an index": lambda: _Broken("huge len"),
    "iteration raises": lambda: _Broken("iter"),
    "getitem raises": lambda: _Broken("getitem"),
    "items raises": lambda: _BrokenItems(plan="pro"),
    "__class__ says dict": _PosingAsDict,
    "__class__ raises": _ClassRaises,
    "has items() but is no mapping": _NotAMapping,
    "a str": lambda: "plan=pro",
    "a list of pairs": lambda: [("plan", "pro")],
}


@pytest.mark.parametrize("make", _UNREADABLE.values(), ids=_UNREADABLE.keys())
def test_metadata_that_cannot_be_read_as_a_mapping_is_a_validation_error(
    make: Callable[[], object],
) -> None:
    with pytest.raises(ValidationError) as info:
        Goal(VID, "x", metadata=make())  # type: ignore[arg-type]
    assert info.value.field == "metadata"
