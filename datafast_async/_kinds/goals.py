"""Goals: ``POST /api/v1/goals``, the kind ``track`` / ``track_nowait`` / ``send`` send.

Everything the pipeline needs to know about a goal, and nothing the pipeline does: the rules
(``validate``, shared with ``Goal()``), the body (put together from JSON-quoted strings, the
same bytes as ``json.dumps`` with compact separators at a third of its cost), DataFast's success
answer (``{"status": "success", "data": [{"message": ..., "eventId": ...}]}``, read without
building a JSON document in the usual case) and its ``GoalResult``, and how a journaled body
becomes a goal again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .._delivery import Delivery
from .._models import Goal, GoalResult, checked_goal, new_result
from .._validation import validate_goal
from ._kind import Fields, Kind

__all__ = ["GOALS", "GoalDelivery", "GoalKind", "encode_fields", "encode_goal", "validate"]

#: ``(visitor_id, name, description, metadata)`` validated and normalised, or the first
#: ``ValidationError``: the one set of rules, for ``track_nowait`` and ``Goal()`` alike.
validate = validate_goal

# JSON-quotes a str exactly as json.dumps(..., ensure_ascii=False) does (C-accelerated).
_quote: Callable[[str], str] = json.encoder.encode_basestring


def encode_fields(
    visitor_id: str, name: str, description: str | None, metadata: Mapping[str, str] | None
) -> bytes:
    """The JSON body for one validated goal's fields; absent optional fields are left out.

    Every field is a validated ``str`` (metadata too), so the body is put together from
    JSON-quoted strings (the C quoting ``json`` itself uses with ``ensure_ascii=False``): the
    same bytes as ``json.dumps`` with compact separators, at a third of its cost on the
    sender's path. The name is only ``a-z 0-9 _ : -`` after validation: nothing to quote.
    """
    head = f'{{"datafast_visitor_id":{_quote(visitor_id)},"name":"{name}"'
    if description is not None:
        head += f',"description":{_quote(description)}'
    if not metadata:
        return (head + "}").encode()
    pairs = []
    for key, value in metadata.items():
        pairs.append(f"{_quote(key)}:{_quote(value)}")
    return f'{head},"metadata":{{{",".join(pairs)}}}}}'.encode()


def encode_goal(goal: Goal) -> bytes:
    """The JSON body for one goal; absent optional fields are left out."""
    return encode_fields(goal.visitor_id, goal.name, goal.description, goal.metadata)


# json.loads makes a new string per response; the confirmation message is nearly always the
# same, so results share one copy.
_KNOWN_MESSAGES = {"Custom event created successfully": "Custom event created successfully"}
# The API's usual answer, read without building a JSON document (json.loads costs several
# times more on the sender's path): first as compact JSON, then with any JSON white space.
# Anything else, escapes included, goes through json.loads.
_TEXT = rb'"([ !#-\[\]-\xff]*)"'  # a JSON string without escapes or control characters
_SUCCESS_TOKENS = (
    rb"\{",
    rb'"status"',
    b":",
    rb'"success"',
    b",",
    rb'"data"',
    b":",
    rb"\[",
    rb"\{",
    rb'"message"',
    b":",
    _TEXT,
    b",",
    rb'"eventId"',
    b":",
    _TEXT,
    rb"\}",
    rb"\]",
    rb"\}",
)
_SUCCESS_COMPACT_RE = re.compile(b"".join(_SUCCESS_TOKENS))
_WS = rb"[ \t\n\r]*"  # JSON's white space
_SUCCESS_SPACED_RE = re.compile(_WS + _WS.join(_SUCCESS_TOKENS) + _WS)


def is_success(body: bytes) -> bool:
    """Whether a 2xx body is DataFast's success answer for a goal: a JSON object whose
    ``status`` is ``"success"`` (its other fields may change)."""
    if _SUCCESS_COMPACT_RE.fullmatch(body) is not None:
        return True  # the API's usual answer, whole: no JSON document built
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("status") == "success"


def read_result(body: bytes) -> GoalResult:
    """The ``GoalResult`` in DataFast's success answer (its ``data[0]``)."""
    # The goal was recorded whatever else the body says; an unreadable data[0] only leaves
    # the event id unknown.
    match = _SUCCESS_COMPACT_RE.fullmatch(body) or _SUCCESS_SPACED_RE.fullmatch(body)
    if match is not None:
        try:
            said, event = match[1].decode(), match[2].decode()
        except UnicodeDecodeError:
            pass
        else:
            return new_result(event, _KNOWN_MESSAGES.get(said, said))
    try:
        data = json.loads(body)
        first = data["data"][0]
        event_id = first.get("eventId")
        message = first.get("message")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return GoalResult(event_id=None, message=None)
    if not isinstance(event_id, str):
        event_id = None
    message = _KNOWN_MESSAGES.get(message, message) if isinstance(message, str) else None
    return GoalResult(event_id=event_id, message=message)


_new_object = object.__new__


class GoalDelivery(Delivery[GoalResult]):
    """A goal's ``Delivery``: its validated fields in slots of its own (the per-goal memory a
    queue of 10,000 holds: no tuple, no ``Goal`` until somebody asks)."""

    __slots__ = ("_description", "_metadata", "_name", "_visitor_id")

    if TYPE_CHECKING:
        _visitor_id: str
        _name: str
        _description: str | None
        _metadata: dict[str, str] | None

    @property
    def _fields(self) -> Fields:
        return (self._visitor_id, self._name, self._description, self._metadata)

    def _body(self) -> bytes:
        wire = self._wire
        if wire is None:
            return encode_fields(self._visitor_id, self._name, self._description, self._metadata)
        return wire


class GoalKind(Kind[Goal, GoalResult]):
    """The goals endpoint."""

    name = "goals"
    noun = "goal"
    plural = "goals"
    path = "/api/v1/goals"
    value_type = Goal
    goal_alias = True

    def pending(self, fields: Fields) -> GoalDelivery:
        # Every slot set here, inline (track_nowait's path: no __init__, no helper call).
        delivery: GoalDelivery = _new_object(GoalDelivery)
        delivery._kind = self
        delivery._event = None
        delivery._outcome = None
        delivery._waiters = None
        delivery._wire = None
        delivery._spool = None
        (
            delivery._visitor_id,
            delivery._name,
            delivery._description,
            delivery._metadata,
        ) = fields
        return delivery

    def build(self, fields: Fields) -> Goal:
        return checked_goal(*fields)

    def fields_of(self, value: Goal) -> Fields:
        # A Goal holds what validate() returned; its metadata is its own read-only copy.
        metadata = value.metadata
        return (
            value.visitor_id,
            value.name,
            value.description,
            None if metadata is None else dict(metadata),
        )

    def encode(self, fields: Fields) -> bytes:
        return encode_fields(*fields)

    def is_success(self, body: bytes) -> bool:
        return is_success(body)

    def read_result(self, body: bytes) -> GoalResult:
        return read_result(body)

    def rebuild(self, body: bytes) -> Fields | None:
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                return None
            return validate(
                data.get("datafast_visitor_id"),
                data.get("name"),
                data.get("description"),
                data.get("metadata"),
            )
        except (ValueError, TypeError, RecursionError):
            return None  # ValidationError is a ValueError

    def disabled(self) -> GoalResult:
        return _DISABLED

    def describe(self, fields: Fields) -> str:
        return f"goal {fields[1]!r}"


_DISABLED = GoalResult(event_id=None, message="disabled")

#: The one instance: every goal's ``Delivery`` points at it.
GOALS = GoalKind()
