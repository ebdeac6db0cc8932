"""Identify: ``POST /api/v1/identify``, the kind ``identify`` / ``identify_nowait`` /
``send_identify`` send: it links a visitor to the app's own user id, after signup or login.

The rules (``validate``, shared with ``Identify()``), the body (the visitor, the user id and the
traits as top-level fields), DataFast's success answer (``{"status": "success", "data":
{"message": ..., "profileId": ...}}``: ``data`` an object here, a list tolerated) and its
``IdentifyResult``, and how a journaled body becomes an identify again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from .._delivery import FieldsDelivery
from .._errors import ValidationError
from .._validation import MAX_METADATA_ENTRIES, check_text, shown, type_name
from ._kind import Fields, Kind

__all__ = [
    "IDENTIFY",
    "Identify",
    "IdentifyDelivery",
    "IdentifyKind",
    "IdentifyResult",
    "RESERVED_TRAITS",
    "encode_fields",
    "validate",
]

#: A trait's value: sent as the JSON value it is.
Trait = str | int | float | bool

MAX_USER_ID_LENGTH = 255
#: Trait names that are not traits: the request's own fields (``visitorId`` is the API's alias
#: of ``datafast_visitor_id``).
RESERVED_TRAITS = frozenset({"user_id", "datafast_visitor_id", "visitorId"})
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# An int of this many bits or more has more than 255 digits: refused by its size, never printed.
_INT_BITS_LIMIT = 849
_quote = json.encoder.encode_basestring
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _visitor_id(visitor_id: object) -> str:
    if type(visitor_id) is str and len(visitor_id) == 36 and _UUID_RE.fullmatch(visitor_id):
        return visitor_id
    if not issubclass(type(visitor_id), str):
        raise ValidationError(
            "visitor_id",
            f"visitor_id must be a str (the datafast_visitor_id cookie, a UUID), got "
            f"{type_name(visitor_id)}",
        )
    text = str.__str__(visitor_id)
    if _UUID_RE.fullmatch(text) is None:
        raise ValidationError(
            "visitor_id",
            f"visitor_id must be a UUID (the datafast_visitor_id cookie, such as "
            f"'3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f'), got {shown(text)}",
        )
    return text


def _user_id(user_id: object) -> str:
    if not issubclass(type(user_id), str):
        raise ValidationError(
            "user_id", f"user_id must be a str (your own user id), got {type_name(user_id)}"
        )
    text = str.__str__(user_id)
    if not text:
        raise ValidationError("user_id", "user_id must not be empty")
    if len(text) > MAX_USER_ID_LENGTH:
        raise ValidationError(
            "user_id",
            f"user_id must be at most {MAX_USER_ID_LENGTH} characters, got {len(text)}: "
            f"{shown(text)}",
        )
    return check_text("user_id", text)


def _trait(key: str, value: object) -> Trait:
    kind = type(value)
    if kind is bool:
        return value  # type: ignore[return-value]
    if issubclass(kind, str):
        return check_text(f"traits.{key}", str.__str__(value))
    if issubclass(kind, int):
        number = int.__index__(value)  # type: ignore[arg-type]
        if number.bit_length() >= _INT_BITS_LIMIT:
            raise ValidationError(f"traits.{key}", f"traits.{key} is an int too large")
        return number
    if issubclass(kind, float):
        number_f = float.__float__(value)  # type: ignore[arg-type]
        if not math.isfinite(number_f):
            raise ValidationError(
                f"traits.{key}", f"traits.{key} must be a finite number, got {number_f!r}"
            )
        return number_f
    raise ValidationError(
        f"traits.{key}",
        f"traits.{key} must be a str, int, float or bool (None leaves it out), got "
        f"{type_name(value)}",
    )


def _traits(traits: object) -> dict[str, Trait] | None:
    if traits is None:
        return None
    if not isinstance(traits, Mapping):
        raise ValidationError(
            "traits", f"traits must be a mapping (or None), got {type_name(traits)}"
        )
    try:
        size = len(traits)
    except Exception as exc:
        raise ValidationError("traits", f"traits could not be read: {exc!r}") from None
    if size > MAX_METADATA_ENTRIES:
        raise ValidationError(
            "traits", f"traits may hold at most {MAX_METADATA_ENTRIES} entries, got {size}"
        )
    try:
        items = list(traits.items())
    except Exception as exc:
        raise ValidationError("traits", f"traits could not be read: {exc!r}") from None
    out: dict[str, Trait] = {}
    for item in items[:MAX_METADATA_ENTRIES]:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise ValidationError(
                "traits", f"traits.items() must give (key, value) pairs, got {type_name(item)}"
            ) from None
        if not issubclass(type(key), str):
            raise ValidationError("traits", f"traits keys must be str, got {type_name(key)}")
        name = check_text("traits", str.__str__(key))
        if not name:
            raise ValidationError("traits", "a traits key must not be empty")
        if name in RESERVED_TRAITS:
            raise ValidationError(
                "traits",
                f"traits may not set {name!r}: it is a field of the request itself (pass it "
                "as the argument)",
            )
        if value is None:
            continue
        out[name] = _trait(name, value)
    return out or None


def validate(visitor_id: object, user_id: object, traits: object = None) -> Fields:
    """An identify's fields validated, in ``Identify``'s order; ``ValidationError`` (with
    ``.field``) for the first broken rule."""
    return (_visitor_id(visitor_id), _user_id(user_id), _traits(traits))


def encode_fields(visitor_id: str, user_id: str, traits: Mapping[str, Trait] | None) -> bytes:
    """The JSON body: the visitor, the user id, then each trait as a top-level field."""
    head = f'{{"datafast_visitor_id":{_quote(visitor_id)},"user_id":{_quote(user_id)}'
    if not traits:
        return (head + "}").encode()
    rest = _dumps(dict(traits))  # "{...}": validated values, all JSON-ready
    return f"{head},{rest[1:]}".encode()


class _Traits(dict[str, Trait]):
    """An identify's traits: a ``dict`` that cannot be changed (an ``Identify`` sends exactly
    what was validated)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("an Identify's traits are read-only; copy them with dict(traits)")

    __setitem__ = __delitem__ = __ior__ = __init__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Trait]]]:
        return (_traits_of, (dict(self),))

    def __copy__(self) -> _Traits:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _Traits:
        return self


def _traits_of(items: dict[str, Trait]) -> _Traits:
    """A read-only copy of ``items`` (its ``__init__`` refuses: it would change it)."""
    traits: _Traits = dict.__new__(_Traits)
    dict.update(traits, items)
    return traits


@attrs.frozen(init=False, weakref_slot=False)
class Identify:
    """One identify: a visitor linked to the app's own user id, validated as
    ``DataFast.identify`` does.

    Args:
        visitor_id: The visitor's ``datafast_visitor_id`` cookie, a UUID (the API refuses
            anything else).
        user_id: Your own user id, 1 to 255 characters.
        traits: Optional mapping of ``str`` keys (not ``user_id``, ``datafast_visitor_id`` or
            ``visitorId``) to ``str``/``int``/``float``/``bool`` values, stored on the user's
            profile (``email``, ``name``, ``plan``, ...; not for secrets). ``None`` values are
            left out; they are sent as top-level fields of the body. Kept as a read-only copy.

    Raises:
        ValidationError: A rule is broken; ``.field`` names the field.
    """

    visitor_id: str
    user_id: str
    traits: Mapping[str, Trait] | None = attrs.field(default=None, hash=False)

    def __init__(
        self, visitor_id: str, user_id: str, traits: Mapping[str, object] | None = None
    ) -> None:
        _fill(self, validate(visitor_id, user_id, traits))


_set_visitor_id = Identify.__dict__["visitor_id"].__set__
_set_user_id = Identify.__dict__["user_id"].__set__
_set_traits = Identify.__dict__["traits"].__set__
_new_object = object.__new__


def _fill(identify: Identify, fields: Fields) -> None:
    visitor_id, user_id, traits = fields
    _set_visitor_id(identify, visitor_id)
    _set_user_id(identify, user_id)
    _set_traits(identify, None if traits is None else _traits_of(traits))


@attrs.frozen(weakref_slot=False)
class IdentifyResult:
    """What the API answered for one identify.

    Attributes:
        message: The API's message (``"disabled"`` when the client is disabled).
        profile_id: The user profile's id, when the answer had one.
    """

    message: str | None
    profile_id: str | None


def _data(body: bytes) -> Mapping[str, object] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("status") != "success":
        return None
    inner = data.get("data")
    if isinstance(inner, list):  # tolerated: the goals' shape
        inner = inner[0] if inner else None
    return inner if isinstance(inner, dict) else {}


class IdentifyDelivery(FieldsDelivery[IdentifyResult]):
    """An identify's ``Delivery``: its validated fields, as a tuple."""

    __slots__ = ()


class IdentifyKind(Kind[Identify, IdentifyResult]):
    """The identify endpoint."""

    name = "identify"
    noun = "identify"
    plural = "identifies"
    path = "/api/v1/identify"
    value_type = Identify

    def pending(self, fields: Fields) -> IdentifyDelivery:
        return IdentifyDelivery.holding(self, fields)  # type: ignore[return-value]

    def build(self, fields: Fields) -> Identify:
        identify: Identify = _new_object(Identify)
        _fill(identify, fields)
        return identify

    def fields_of(self, value: Identify) -> Fields:
        traits = value.traits
        return (value.visitor_id, value.user_id, None if traits is None else dict(traits))

    def encode(self, fields: Fields) -> bytes:
        return encode_fields(*fields)

    def is_success(self, body: bytes) -> bool:
        return _data(body) is not None

    def read_result(self, body: bytes) -> IdentifyResult:
        data = _data(body) or {}
        message, profile = data.get("message"), data.get("profileId")
        return IdentifyResult(
            message=message if isinstance(message, str) else None,
            profile_id=profile if isinstance(profile, str) else None,
        )

    def rebuild(self, body: bytes) -> Fields | None:
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                return None
            visitor_id = data.pop("datafast_visitor_id", None)
            user_id = data.pop("user_id", None)
            return validate(visitor_id, user_id, data or None)
        except (ValueError, TypeError, RecursionError):
            return None  # ValidationError is a ValueError

    def disabled(self) -> IdentifyResult:
        return _DISABLED

    def describe(self, fields: Fields) -> str:
        return f"identify of user {fields[1]!r}"


_DISABLED = IdentifyResult(message="disabled", profile_id=None)

#: The one instance: every identify's ``Delivery`` points at it.
IDENTIFY = IdentifyKind()
