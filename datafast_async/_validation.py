"""The API's rules for one goal, applied at call time.

These functions run on the caller's hot path (``track_nowait``), so the common case (a valid
``str`` name seen before, string metadata values, keys seen before) costs a few dictionary
look-ups. Everything else takes the slow path, which is also the one that explains failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import cast

from ._errors import ValidationError

__all__ = [
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "RESERVED_NAMES",
    "check_description",
    "check_text",
    "check_visitor_id",
    "normalize_metadata",
    "normalize_name",
    "shown",
    "type_name",
    "validate_goal",
]

MAX_NAME_LENGTH = 64
MAX_METADATA_KEYS = 10
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 255
# A metadata mapping of more entries than this is refused before it is read. None values are
# left out before the 10-key rule, so a mapping may rightly hold more than 10 entries (optional
# fields left as None); a thousand is a hundred times the rule, far past any real goal, and it
# bounds the work on any input to about a thousand cheap steps (tens of microseconds) instead
# of holding the caller's loop for as long as the mapping is large. Reading also stops at the
# 11th value that is not None, so the usual overflow costs 11 steps, not the mapping's size.
MAX_METADATA_ENTRIES = 1000
RESERVED_NAMES = frozenset({"identify"})

_NAME_RE = re.compile(r"[a-z0-9_:-]{1,64}")
_KEY_RE = re.compile(r"[a-z0-9_-]{1,64}")

# Goal names and metadata keys come from a small set in any real application. Remembering the
# ones already checked makes the hot path a dictionary look-up and lets every queued goal share
# one normalised name string. The caches stop growing at a fixed size, so a stream of unique
# names costs the slow path, never unbounded memory.
_CACHE_LIMIT = 4096

# An int of this many bits or more has at least 256 digits (2**848 > 10**255), so it breaks the
# 255-character rule: it is refused by its size, never printed (printing it may be slow, or
# refused by CPython's int-to-str digit limit). Anything smaller prints in well under 4300 digits.
_INT_BITS_LIMIT = 849
_TYPE_NAME = type.__dict__["__name__"].__get__
_NOT_FINITE = frozenset({"nan", "inf", "-inf"})
_SHOWN_AS_IS = (int, bool, float, type(None))  # exact types whose repr is short and safe
_names: dict[str, str] = {}
_keys: set[str] = set()


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message; never raises."""
    kind = type(value)
    if issubclass(kind, str):
        text = repr(str.__str__(value)[:limit])  # not the whole of a huge string
    elif kind in _SHOWN_AS_IS and _bits(value) < _INT_BITS_LIMIT:
        text = repr(value)
    else:  # another repr may fail (a huge int), be slow or lie: name the type only
        return f"a {_type_name(value)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bits(number: object) -> int:
    """``int.bit_length`` of an ``int`` (of a subclass too, whatever it overrides), else 0."""
    return int.bit_length(cast(int, number)) if issubclass(type(number), int) else 0


def _type_name(value: object) -> str:
    """The name of ``value``'s type, read past any metaclass that redefines ``__name__``."""
    name: str = _TYPE_NAME(type(value))
    return name


def _check_text(field: str, text: str) -> str:
    """``text`` if it can be sent as UTF-8 (a lone surrogate cannot), else ``ValidationError``."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                field, f"{field} is not valid Unicode text (it holds a lone surrogate): {exc}"
            ) from None
    return text


def check_visitor_id(visitor_id: object) -> str:
    """Return ``visitor_id`` as a plain ``str`` if it is a non-empty string, else raise
    ``ValidationError``."""
    if issubclass(type(visitor_id), str):
        text = str.__str__(visitor_id)  # a subclass is read as its characters
        if text:
            return _check_text("visitor_id", text)
        raise ValidationError("visitor_id", "visitor_id must not be empty")
    raise ValidationError(
        "visitor_id",
        f"visitor_id must be a str (the datafast_visitor_id cookie), got {_type_name(visitor_id)}",
    )


def normalize_name(name: object) -> str:
    """Normalise a goal name as the API does, then check it.

    Lowercases, turns spaces into ``_`` (nothing else is changed), then requires 1 to 64
    characters of ``a-z 0-9 _ - :`` and refuses the reserved ``identify``.
    """
    if type(name) is str:
        cached = _names.get(name)
        if cached is not None:
            return cached
    return _normalize_name_slow(name)


def _normalize_name_slow(name: object) -> str:
    if not issubclass(type(name), str):
        raise ValidationError("name", f"name must be a str, got {_type_name(name)}")
    raw = str.__str__(name)  # a subclass is read as its characters
    normalized = raw.lower().replace(" ", "_")
    if not normalized:
        raise ValidationError("name", "name must not be empty")
    if len(normalized) > MAX_NAME_LENGTH:
        raise ValidationError(
            "name",
            f"name must be at most {MAX_NAME_LENGTH} characters, got {len(normalized)}: "
            f"{_shown(raw)}",
        )
    if _NAME_RE.fullmatch(normalized) is None:
        bad = sorted({c for c in normalized if _NAME_RE.fullmatch(c) is None})
        raise ValidationError(
            "name",
            "name may only contain a-z, 0-9, '_', '-' and ':' after lowercasing and turning "
            f"spaces into '_'; {_shown(raw)} has {', '.join(map(repr, bad))}",
        )
    if normalized in RESERVED_NAMES:
        raise ValidationError("name", f"name {normalized!r} is reserved by DataFast")
    if len(_names) < _CACHE_LIMIT:
        _names[raw] = normalized
    return normalized


def check_description(description: object) -> str | None:
    """Return ``description`` (a plain ``str``) if it is ``None`` or a string, else raise
    ``ValidationError``."""
    if description is None:
        return None
    if issubclass(type(description), str):
        return _check_text("description", str.__str__(description))
    raise ValidationError(
        "description", f"description must be a str or None, got {_type_name(description)}"
    )


def validate_goal(
    visitor_id: object, name: object, description: object, metadata: object
) -> tuple[str, str, str | None, dict[str, str] | None]:
    """Every rule for one goal: ``(visitor_id, normalised name, description, metadata copy)``.

    The one place both ``Goal()`` and ``track_nowait`` validate through, so they cannot differ.
    The common case of each check is inlined; anything else takes the functions below.
    """
    if type(visitor_id) is not str or not visitor_id or not visitor_id.isascii():
        visitor_id = check_visitor_id(visitor_id)
    normalized = _names.get(name) if type(name) is str else None
    if normalized is None:
        normalized = normalize_name(name)
    if description is not None and (type(description) is not str or not description.isascii()):
        description = check_description(description)
    if metadata is None:
        return visitor_id, normalized, description, None
    if type(metadata) is dict and len(metadata) <= MAX_METADATA_KEYS:
        # The common case, inline: a plain dict of short ASCII str values under str keys seen
        # before, copied in C, then checked. Anything else (None values, numbers, new keys,
        # str subclasses) takes normalize_metadata, which also explains failures. The key's
        # type is checked before the cache: a subclass equal to a cached key must not pass
        # (the copy would hold it), nor run its own __hash__.
        copy: dict[str, str] = metadata.copy()
        for key in copy:  # cheaper than .items() for the usual one to three keys
            value = copy[key]
            if (
                type(value) is not str
                or len(value) > MAX_METADATA_VALUE_LENGTH
                or type(key) is not str
                or key not in _keys
                or not value.isascii()
            ):
                break
        else:
            return visitor_id, normalized, description, copy
    return visitor_id, normalized, description, normalize_metadata(metadata)


def normalize_metadata(metadata: object) -> dict[str, str] | None:
    """Check metadata and return a fresh ``dict[str, str]`` for the wire (``validate_goal``
    checks the common case inline and calls this for anything else).

    ``None`` values are left out; ``bool``, ``int`` and ``float`` values become their JSON text;
    then at most 10 keys matching ``^[a-z0-9_-]{1,64}$``, each value at most 255 characters.
    A mapping of more than ``MAX_METADATA_ENTRIES`` entries is refused before it is read.
    """
    if metadata is None:
        return None
    if type(metadata) is dict:  # nothing of the caller's runs while a plain dict is read
        size = len(metadata)
        if size > MAX_METADATA_ENTRIES:
            raise _too_many(size)
        entries: Iterable[tuple[object, object]] = metadata.items()
    else:
        size, entries = _read_mapping(metadata)
    out: dict[str, str] = {}
    for key, value in entries:
        if value is None:  # left out before any rule applies
            continue
        if len(out) == MAX_METADATA_KEYS:  # the 11th: stop here, whatever the rest holds
            raise _too_many(size)
        if type(key) is not str:
            if not issubclass(type(key), str):
                raise ValidationError(
                    "metadata",
                    f"metadata keys must be str, got {_type_name(key)}: {_shown(key)}",
                )
            key = str.__str__(key)  # a subclass is read (and sent) as its characters
        if key not in _keys:
            _check_key(key)
        if key in out:  # two keys that compare unequal but are the same text
            raise ValidationError(
                f"metadata.{key}", f"metadata has the key {_shown(key)} twice (as two objects)"
            )
        if type(value) is not str:
            value = _value_text(key, value)
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise ValidationError(
                f"metadata.{key}",
                f"metadata value for {key!r} must be at most {MAX_METADATA_VALUE_LENGTH} "
                f"characters, got {len(value)}",
            )
        out[key] = _check_text(f"metadata.{key}", value)
    return out


def _too_many(size: int) -> ValidationError:
    return ValidationError(
        "metadata",
        f"metadata may have at most {MAX_METADATA_KEYS} keys (None values are left out first); "
        f"got a mapping of {size} entries"
        + (
            f", more than {MAX_METADATA_KEYS} of them not None"
            if size <= MAX_METADATA_ENTRIES
            else ""
        ),
    )


def _read_mapping(metadata: object) -> tuple[int, list[tuple[object, object]]]:
    """Any other mapping's size and its first entries whose value is not ``None`` (11 at most,
    enough to tell that there are too many), read once, with whatever its own code raises
    turned into ``ValidationError``. The size is its ``len()``, which it may misreport, so
    reading also stops after ``MAX_METADATA_ENTRIES`` entries."""
    try:
        # type(): isinstance would ask the object's __class__, which may claim anything.
        is_mapping = issubclass(type(metadata), Mapping)
    except Exception:  # a metaclass's own check failed: not a mapping we can read
        is_mapping = False
    if not is_mapping:
        raise ValidationError(
            "metadata", f"metadata must be a mapping or None, got {_type_name(metadata)}"
        )
    mapping = cast("Mapping[object, object]", metadata)
    try:
        size = len(mapping)
    except Exception as exc:
        raise ValidationError(
            "metadata", f"metadata could not be read: len() raised {_reason(exc)}"
        ) from exc
    if size > MAX_METADATA_ENTRIES:
        raise _too_many(size)
    entries: list[tuple[object, object]] = []
    read = 0
    try:
        for key, value in mapping.items():
            read += 1
            if read > MAX_METADATA_ENTRIES:
                break
            if value is not None:
                entries.append((key, value))
                if len(entries) > MAX_METADATA_KEYS:
                    break
    except Exception as exc:
        raise ValidationError("metadata", f"metadata could not be read: {_reason(exc)}") from exc
    if read > MAX_METADATA_ENTRIES:
        raise ValidationError(
            "metadata",
            f"metadata may have at most {MAX_METADATA_KEYS} keys (None values are left out "
            f"first); got a mapping of more than {MAX_METADATA_ENTRIES} entries (its len() "
            f"said {size})",
        )
    return size, entries


def _reason(exc: BaseException) -> str:
    """``"Type: message"`` for an exception from the caller's code; never raises."""
    try:
        text = str.__str__(str(exc))[:200]
    except Exception:  # its __str__ failed too
        text = ""
    return f"{_type_name(exc)}: {text}" if text else _type_name(exc)


def _check_key(key: str) -> None:
    if _KEY_RE.fullmatch(key) is None:
        raise ValidationError(
            f"metadata.{key}",
            f"metadata key {_shown(key)} must be 1 to {MAX_METADATA_KEY_LENGTH} characters of "
            "a-z, 0-9, '_' and '-'",
        )
    if len(_keys) < _CACHE_LIMIT:
        _keys.add(key)


def _value_text(key: str, value: object) -> str:
    """A metadata value's text: a ``str`` as its characters, a number as its JSON text.

    Types are read with ``type()``, not ``isinstance``, which an object can answer falsely
    (through ``__class__``), and each value is printed by its base type's own method.
    """
    kind = type(value)
    if issubclass(kind, str):
        return str.__str__(value)
    if kind is bool:
        return "true" if value else "false"
    if issubclass(kind, int):
        bits = _bits(value)
        if bits >= _INT_BITS_LIMIT:
            raise ValidationError(
                f"metadata.{key}",
                f"metadata value for {key!r} must be at most {MAX_METADATA_VALUE_LENGTH} "
                f"characters, got an int of {bits} bits (more than 255 digits)",
            )
        return int.__repr__(value)
    if issubclass(kind, float):
        text = float.__repr__(value)
        if text in _NOT_FINITE:
            raise ValidationError(
                f"metadata.{key}", f"metadata value for {key!r} must be a finite number"
            )
        return text
    raise ValidationError(
        f"metadata.{key}",
        f"metadata value for {key!r} must be str, bool, int, float or None, got "
        f"{_type_name(value)}",
    )


# For the other kinds' rules (``_kinds``): the same checks and the same safe messages.
check_text = _check_text
shown = _shown
type_name = _type_name
