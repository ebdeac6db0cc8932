"""The rules of each endpoint's request, as ``FakeDataFast`` applies them.

Pure functions from a parsed body to the value the fake records (``Goal``, ``Payment``,
``Identify``), or from a delete's query to its filter. A broken rule raises ``ValidationError``
with a wire-level message, which the fake answers as a 400 in DataFast's error envelope. The
value types' own rules (``Goal()``, ``Payment()``, ``Identify()``) check and normalise the rest,
so the fake can never record a value the SDK could not build.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._config import GOALS_PATH
from .._errors import ValidationError
from .._kinds.identify import Identify
from .._kinds.payments import Payment, format_timestamp, parse_timestamp
from .._models import Goal
from .._validation import normalize_name

__all__ = [
    "ALL_PERMISSIONS",
    "GOALS_PATH",
    "IDENTIFY_PATH",
    "METHODS",
    "PAYMENTS_PATH",
    "PERMISSIONS",
    "GoalsFilter",
    "PaymentsFilter",
    "goal_from_body",
    "goals_filter",
    "identify_from_body",
    "payment_from_body",
    "payments_filter",
]

PAYMENTS_PATH = "/api/v1/payments"
IDENTIFY_PATH = "/api/v1/identify"

#: The methods each endpoint answers (any other gets 405).
METHODS: Mapping[str, tuple[str, ...]] = {
    GOALS_PATH: ("POST", "DELETE"),
    PAYMENTS_PATH: ("POST", "DELETE"),
    IDENTIFY_PATH: ("POST",),
}
#: The permission a ``dft_`` token needs for each endpoint (whatever the method).
PERMISSIONS: Mapping[str, str] = {
    GOALS_PATH: "goals:write",
    PAYMENTS_PATH: "payments:write",
    IDENTIFY_PATH: "identify:write",
}
ALL_PERMISSIONS = frozenset(PERMISSIONS.values())

_UTC = datetime.timezone.utc
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_USER_ID = 255
# Identify's own fields; every other top-level field of its body is a trait.
_IDENTIFY_FIELDS = frozenset({"datafast_visitor_id", "visitorId", "user_id"})


def _leave_out(field: str) -> ValidationError:
    return ValidationError(field, f"{field} must not be null (leave it out when there is none)")


# -- goals --------------------------------------------------------------------------------------


def goal_from_body(body: dict[str, Any]) -> Goal:
    """The goal a ``POST /api/v1/goals`` body describes.

    ``datafast_visitor_id`` (or its alias ``visitorId``) must be a non-empty string, ``name``
    is required, ``description`` and ``metadata`` are optional but never ``null``; metadata
    values may be strings, numbers or booleans (stored as their JSON text); ``Goal`` checks and
    normalises the rest.
    """
    visitor = body.get("datafast_visitor_id", body.get("visitorId"))
    if not isinstance(visitor, str) or not visitor:
        raise ValidationError(
            "visitor_id", "datafast_visitor_id is required and must be a non-empty string"
        )
    if "name" not in body:
        raise ValidationError("name", "name is required")
    description = body.get("description")
    if "description" in body and not isinstance(description, str):
        raise ValidationError(
            "description", "description must be a string (leave it out when there is none)"
        )
    metadata = body.get("metadata")
    if "metadata" in body:
        if not isinstance(metadata, dict):
            raise ValidationError(
                "metadata", "metadata must be an object (leave it out when there is none)"
            )
        for key, value in metadata.items():
            if not isinstance(value, (str, int, float)):  # bool is an int
                raise ValidationError(
                    f"metadata.{key}",
                    f"metadata value for {key!r} must be a string, number or boolean",
                )
    return Goal(visitor, body["name"], description, metadata)


# -- payments -----------------------------------------------------------------------------------


def _aliased(body: Mapping[str, Any], field: str, alias: str) -> Any:
    """``body[field]``, else ``body[alias]`` (``None`` when neither is there); ``null`` refused."""
    for name in (field, alias):
        if name in body:
            if body[name] is None:
                raise _leave_out(name)
            return body[name]
    return None


def _optional(body: Mapping[str, Any], field: str) -> Any:
    if field in body and body[field] is None:
        raise _leave_out(field)
    return body.get(field)


def payment_from_body(body: dict[str, Any]) -> Payment:
    """The payment a ``POST /api/v1/payments`` body describes.

    ``amount`` (a number of 0 or more, in major units), ``currency`` (three letters, stored
    upper-cased) and ``transaction_id`` (1 to 255 characters) are required. The optional
    fields are never ``null``: ``datafast_visitor_id`` (a non-empty string), ``email`` and
    ``name`` (``customer_email`` and ``customer_name`` are their aliases; the plain name wins
    when both are sent), ``customer_id``, the booleans ``renewal``, ``refunded`` and
    ``is_free_trial``, and ``timestamp`` (ISO 8601 with a zone, kept in UTC to the
    millisecond). Other fields are ignored. The payment is recorded as sent: ``is_free_trial``
    is not inferred from an amount of 0.
    """
    for field in ("amount", "currency", "transaction_id"):
        if body.get(field) is None:
            raise ValidationError(field, f"{field} is required")
    amount = body["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ValidationError("amount", "amount must be a number (major units: 49.99)")
    for field in ("currency", "transaction_id"):
        if not isinstance(body[field], str):
            raise ValidationError(field, f"{field} must be a string")
    stamp = _optional(body, "timestamp")
    moment: datetime.datetime | None = None
    if stamp is not None:
        if not isinstance(stamp, str):
            raise ValidationError("timestamp", "timestamp must be an ISO 8601 string")
        try:
            moment = parse_timestamp(stamp)
        except ValueError:
            raise ValidationError(
                "timestamp",
                f"timestamp must be ISO 8601 with a zone (2026-01-31T12:00:00Z), got {stamp!r}",
            ) from None
    return Payment(
        amount,
        body["currency"],
        body["transaction_id"],
        visitor_id=_optional(body, "datafast_visitor_id"),
        email=_aliased(body, "email", "customer_email"),
        name=_aliased(body, "name", "customer_name"),
        customer_id=_optional(body, "customer_id"),
        renewal=_optional(body, "renewal"),
        refunded=_optional(body, "refunded"),
        is_free_trial=_optional(body, "is_free_trial"),
        timestamp=moment,
    )


# -- identify -----------------------------------------------------------------------------------


def identify_from_body(body: dict[str, Any]) -> Identify:
    """The identify a ``POST /api/v1/identify`` body describes.

    ``datafast_visitor_id`` (or its alias ``visitorId``) must be a UUID; ``user_id`` a
    non-empty string of at most 255 characters. Every other top-level field is a trait: a
    string, a number or a boolean (never ``null``, an object or a list).
    """
    visitor = body.get("datafast_visitor_id", body.get("visitorId"))
    if visitor is None:
        raise ValidationError("visitor_id", "datafast_visitor_id is required")
    if not isinstance(visitor, str) or _UUID_RE.fullmatch(visitor) is None:
        raise ValidationError(
            "visitor_id", f"datafast_visitor_id must be a UUID, got {str(visitor)[:80]!r}"
        )
    user_id = body.get("user_id")
    if user_id is None:
        raise ValidationError("user_id", "user_id is required")
    if not isinstance(user_id, str):
        raise ValidationError("user_id", "user_id must be a string")
    if not user_id:
        raise ValidationError("user_id", "user_id must not be empty")
    if len(user_id) > _MAX_USER_ID:
        raise ValidationError(
            "user_id", f"user_id must be at most {_MAX_USER_ID} characters, got {len(user_id)}"
        )
    traits = {key: value for key, value in body.items() if key not in _IDENTIFY_FIELDS}
    for key, value in traits.items():
        if value is None:
            raise _leave_out(key)
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise ValidationError(
                f"traits.{key}", f"{key} must be a string, number or boolean (a profile field)"
            )
    return Identify(visitor, user_id, traits or None)


# -- deletes ------------------------------------------------------------------------------------


def _moment(name: str, text: str) -> datetime.datetime:
    """A query's time: ISO 8601 with a zone, or a date alone (midnight UTC, as JavaScript
    reads ``2026-01-31``); a date and time without a zone is refused."""
    try:
        if _DATE_RE.fullmatch(text):
            day = datetime.date.fromisoformat(text)
            return datetime.datetime(day.year, day.month, day.day, tzinfo=_UTC)
        return parse_timestamp(text)
    except ValueError:
        raise ValidationError(
            name, f"{name} must be ISO 8601 with a zone (2026-01-31T12:00:00Z), got {text!r}"
        ) from None


def _bound(query: Mapping[str, str], name: str, alias: str) -> datetime.datetime | None:
    """One end of the range, under either of its names; both given must agree."""
    moments = {key: _moment(key, query[key]) for key in (name, alias) if key in query}
    if len(set(moments.values())) > 1:
        raise ValidationError(
            name, f"{name} and {alias} name the same bound and must be equal: {dict(query)!r}"
        )
    return next(iter(moments.values()), None)


@attrs.frozen
class Span:
    """A time range: ``start`` included, ``end`` excluded."""

    start: datetime.datetime
    end: datetime.datetime

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime.datetime) and self.start <= moment < self.end


def _span(query: Mapping[str, str]) -> tuple[Span | None, dict[str, str]]:
    """The range a delete's query names (``start``/``end`` or ``startAt``/``endAt``), and the
    names it came under with their values, normalised (to echo them)."""
    start = _bound(query, "start", "startAt")
    end = _bound(query, "end", "endAt")
    if start is None and end is None:
        return None, {}
    if start is None or end is None:
        raise ValidationError(
            "start", "a range needs both ends: start and end (or startAt and endAt)"
        )
    if not start < end:
        raise ValidationError("end", "end must be after start")
    echoed = {
        key: format_timestamp(start if key.startswith("start") else end)
        for key in ("start", "end", "startAt", "endAt")
        if key in query
    }
    return Span(start, end), echoed


def _visitor(query: Mapping[str, str]) -> str | None:
    visitor = query.get("datafast_visitor_id")
    if visitor is not None and not visitor:
        raise ValidationError("visitor_id", "datafast_visitor_id must not be empty")
    return visitor


@attrs.frozen
class GoalsFilter:
    """What ``DELETE /api/v1/goals`` removes: the goals that match every filter given."""

    visitor_id: str | None
    name: str | None
    span: Span | None
    echoed: dict[str, str]

    def matches(self, goal: Goal, received: datetime.datetime) -> bool:
        """Whether ``goal``, received at ``received``, is to be deleted."""
        return (
            (self.visitor_id is None or goal.visitor_id == self.visitor_id)
            and (self.name is None or goal.name == self.name)
            and (self.span is None or received in self.span)
        )


def goals_filter(query: Mapping[str, str]) -> GoalsFilter:
    """The filter a ``DELETE /api/v1/goals`` query names.

    ``datafast_visitor_id`` (non-empty), ``name`` (normalised and checked as for a new goal:
    lowercased, spaces to ``_``) and a range (``start``/``end`` or ``startAt``/``endAt``;
    both spellings may be sent, with equal values; start included, end excluded; ISO 8601
    with a zone, or a date alone for midnight UTC). With a visitor or a name and no range,
    across all time; a delete with neither visitor nor name must have a range.
    """
    visitor = _visitor(query)
    raw_name = query.get("name")
    name = None if raw_name is None else normalize_name(raw_name)
    span, echoed_span = _span(query)
    if visitor is None and name is None and span is None:
        raise ValidationError(
            "start",
            "a delete with neither datafast_visitor_id nor name needs a range: start and end "
            "(or startAt and endAt)",
        )
    echoed: dict[str, str] = {}
    if visitor is not None:
        echoed["datafast_visitor_id"] = visitor
    if name is not None:
        echoed["name"] = name
    return GoalsFilter(visitor, name, span, {**echoed, **echoed_span})


@attrs.frozen
class PaymentsFilter:
    """What ``DELETE /api/v1/payments`` removes: one transaction, or the payments that match
    every other filter given."""

    transaction_id: str | None
    visitor_id: str | None
    span: Span | None
    echoed: dict[str, str]

    def matches(self, payment: Payment, received: datetime.datetime) -> bool:
        """Whether ``payment`` (received at ``received``) is to be deleted: the range is
        read on its ``timestamp``, else on the time it was received."""
        if self.transaction_id is not None:
            return payment.transaction_id == self.transaction_id
        return (self.visitor_id is None or payment.visitor_id == self.visitor_id) and (
            self.span is None or (payment.timestamp or received) in self.span
        )


def payments_filter(query: Mapping[str, str]) -> PaymentsFilter:
    """The filter a ``DELETE /api/v1/payments`` query names.

    ``transaction_id`` wins over every other filter (they are then ignored, unread);
    otherwise ``datafast_visitor_id`` and a range as for goals, at least one of them.
    """
    transaction = query.get("transaction_id")
    if transaction is not None:
        if not transaction:
            raise ValidationError("transaction_id", "transaction_id must not be empty")
        return PaymentsFilter(transaction, None, None, {"transaction_id": transaction})
    visitor = _visitor(query)
    span, echoed_span = _span(query)
    if visitor is None and span is None:
        raise ValidationError(
            "filter",
            "a delete of payments needs a filter: transaction_id, datafast_visitor_id, or "
            "start and end (or startAt and endAt)",
        )
    echoed = {} if visitor is None else {"datafast_visitor_id": visitor}
    return PaymentsFilter(None, visitor, span, {**echoed, **echoed_span})
