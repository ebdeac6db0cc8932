"""What ``import --kind`` reads on a line: goals, payments or identifies.

Each kind turns the JSON object on a line into one call of the client (``track``,
``track_payment``, ``identify``), and a request of its kind back into a line (for
``--failed-out`` when the line it came from is not known: with ``--spool``). The checks here are
those of the line's shape (unknown or missing fields, a timestamp that is not ISO 8601 with a
zone); the values' rules are the SDK's (``ValidationError`` from the call).

    goals      {"datafast_visitor_id": "...", "name": "signup", "description": "...",
                "metadata": {...}}                        (visitorId: an alias)
    payments   {"amount": 49.99, "currency": "USD", "transaction_id": "ch_123",
                "datafast_visitor_id": "...", "email": "...", "name": "...",
                "customer_id": "...", "renewal": false, "refunded": false,
                "is_free_trial": false, "timestamp": "2024-03-01T12:00:00Z"}
                                                          (visitor_id, customer_email and
                                                          customer_name: aliases)
    identify   {"datafast_visitor_id": "...", "user_id": "user_42", "plan": "pro", ...}
                (visitor_id, visitorId: aliases; every other field is a trait, as in the
                API's body; or the traits in one object: "traits": {"plan": "pro"})

Fields starting with ``_`` are ignored on every kind, so a ``--failed-out`` file (its
``"_error"``) imports again as it is.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from .._client import DataFast
from .._delivery import Delivery
from .._kinds.identify import Identify
from .._kinds.payments import Payment, format_timestamp, parse_timestamp
from .._models import Goal

__all__ = [
    "KINDS",
    "LineError",
    "LineKind",
    "event_object",
    "json_default",
    "read_object",
]

#: One line's call of the client: ``await track(client)`` is the request's ``Delivery``.
Track = Callable[[DataFast], Awaitable[Delivery[Any]]]

TIME_FIELDS = frozenset({"timestamp", "time", "date", "datetime", "ts", "created", "when"})


class LineError(Exception):
    """A line that is not a request of its kind. ``obj`` is the parsed object, or ``None``
    when the line is not a JSON object; it is then written to --failed-out as
    ``{"_line": text}``."""

    def __init__(self, reason: str, obj: dict[str, Any] | None = None, text: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.obj = obj
        self.text = text


def read_object(raw: bytes | str, *, exact_numbers: bool = False) -> dict[str, Any]:
    """The JSON object on a line. A ``{"_line": "..."}`` object (a line that was not JSON,
    from an earlier --failed-out) is read as the text it holds, so a line fixed by hand in
    that file goes through. ``exact_numbers``: numbers with a fraction or an exponent are
    read as ``Decimal`` (an amount is sent as it was written).

    Raises:
        LineError: The line is not a JSON object.
    """
    try:
        obj = json.loads(raw, parse_float=Decimal) if exact_numbers else json.loads(raw)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError
        raise LineError(f"not JSON: {exc}", text=_line_text(raw)) from None
    if not isinstance(obj, dict):
        raise LineError(f"not a JSON object (a JSON {_json_type(obj)})", text=_line_text(raw))
    fields = [key for key in obj if not key.startswith("_")]
    if not fields and isinstance(obj.get("_line"), str):
        return read_object(obj["_line"], exact_numbers=exact_numbers)
    return obj


def json_default(value: object) -> object:
    """``json.dumps``' ``default`` for a line written back: a ``Decimal`` read from it."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _line_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")


def _fields(obj: dict[str, Any]) -> list[str]:
    return [key for key in obj if not key.startswith("_")]


def _aliased(obj: dict[str, Any], *names: str) -> Any:
    """The value of the one of ``names`` the line gives (``None`` for none); two of them
    make the line invalid (which one would be meant?)."""
    given = [name for name in names if name in obj]
    if len(given) > 1:
        raise LineError(f"give one of {' and '.join(map(repr, given))}: they are aliases", obj)
    return obj[given[0]] if given else None


class LineKind:
    """How one kind of request is read from a line and written back to one."""

    #: ``--kind``'s value, and the key of ``Stats.by_kind``.
    name = "goals"
    noun = "goal"
    plural = "goals"
    #: The permission a ``dft_`` token needs for it.
    permission = "goals:write"
    #: Read fractional numbers as ``Decimal`` (amounts).
    exact_numbers = False
    #: The fields a line may have (the others make it invalid), when there is such a list.
    fields: frozenset[str] = frozenset(
        {"datafast_visitor_id", "visitorId", "name", "description", "metadata"}
    )
    #: What a line of this kind has, for the message of a line with an unknown field.
    shape = (
        "a goal has datafast_visitor_id (or visitorId), name, description and metadata; "
        "fields starting with '_' are ignored"
    )

    def parse(self, obj: dict[str, Any]) -> Track:
        """The client's call for the object on a line.

        Raises:
            LineError: An unknown field, or a required one missing.
        """
        self._check_fields(obj)
        visitor_id = obj.get("datafast_visitor_id", obj.get("visitorId"))
        if visitor_id is None:
            raise LineError("missing datafast_visitor_id", obj)
        if "name" not in obj:
            raise LineError("missing name", obj)
        name, description, metadata = obj["name"], obj.get("description"), obj.get("metadata")

        def track(client: DataFast) -> Awaitable[Delivery[Any]]:
            return client.track(visitor_id, name, description=description, metadata=metadata)

        return track

    def _check_fields(self, obj: dict[str, Any]) -> None:
        unknown = [key for key in _fields(obj) if key not in self.fields]
        if unknown:
            raise LineError(
                f"unknown field {unknown[0]!r}{self._hint(unknown[0])}: {self.shape}", obj
            )

    def _hint(self, field: str) -> str:
        if field.lower() in TIME_FIELDS or field.lower().endswith("_at"):
            return " (the API has no timestamp field: goals are recorded when they are sent)"
        return ""


class PaymentLines(LineKind):
    name = "payments"
    noun = "payment"
    plural = "payments"
    permission = "payments:write"
    exact_numbers = True
    fields = frozenset(
        {
            "amount",
            "currency",
            "transaction_id",
            "datafast_visitor_id",
            "visitor_id",
            "email",
            "customer_email",
            "name",
            "customer_name",
            "customer_id",
            "renewal",
            "refunded",
            "is_free_trial",
            "timestamp",
        }
    )
    shape = (
        "a payment has amount, currency, transaction_id, datafast_visitor_id (or visitor_id), "
        "email, name, customer_id, renewal, refunded, is_free_trial and timestamp; fields "
        "starting with '_' are ignored"
    )

    def _hint(self, field: str) -> str:
        if field.lower() in TIME_FIELDS or field.lower().endswith("_at"):
            return " (the payment's time goes in 'timestamp', ISO 8601 with a zone)"
        return ""

    def parse(self, obj: dict[str, Any]) -> Track:
        self._check_fields(obj)
        for required in ("amount", "currency", "transaction_id"):
            if required not in obj:
                raise LineError(f"missing {required}", obj)
        amount = obj["amount"]
        if isinstance(amount, str):
            raise LineError(
                f"amount must be a JSON number (major units: 49.99), got the string {amount!r}",
                obj,
            )
        visitor_id = _aliased(obj, "datafast_visitor_id", "visitor_id")
        email = _aliased(obj, "email", "customer_email")
        name = _aliased(obj, "name", "customer_name")
        timestamp = _line_timestamp(obj)
        currency, transaction_id = obj["currency"], obj["transaction_id"]
        customer_id = obj.get("customer_id")
        renewal, refunded = obj.get("renewal"), obj.get("refunded")
        is_free_trial = obj.get("is_free_trial")

        def track(client: DataFast) -> Awaitable[Delivery[Any]]:
            return client.track_payment(
                amount,
                currency,
                transaction_id,
                visitor_id=visitor_id,
                email=email,
                name=name,
                customer_id=customer_id,
                renewal=renewal,
                refunded=refunded,
                is_free_trial=is_free_trial,
                timestamp=timestamp,
            )

        return track


def _line_timestamp(obj: dict[str, Any]) -> datetime.datetime | None:
    text = obj.get("timestamp")
    if text is None:
        return None
    if not isinstance(text, str):
        raise LineError(
            f"timestamp must be ISO 8601 text with a zone (2024-03-01T12:00:00Z), got a JSON "
            f"{_json_type(text)}",
            obj,
        )
    try:
        return parse_timestamp(text)
    except ValueError:
        raise LineError(
            f"timestamp {text!r} is not ISO 8601 with a zone (such as 2024-03-01T12:00:00Z or "
            "2024-03-01T13:00:00+01:00): a time without one would be read in an unknown zone",
            obj,
        ) from None


class IdentifyLines(LineKind):
    name = "identify"
    noun = "identify"
    plural = "identifies"
    permission = "identify:write"
    fields = frozenset()  # every field but the visitor and the user is a trait
    shape = ""

    def parse(self, obj: dict[str, Any]) -> Track:
        visitor_id = _aliased(obj, "datafast_visitor_id", "visitor_id", "visitorId")
        if visitor_id is None:
            raise LineError("missing datafast_visitor_id", obj)
        if "user_id" not in obj:
            raise LineError("missing user_id", obj)
        user_id = obj["user_id"]
        named = {"datafast_visitor_id", "visitor_id", "visitorId", "user_id", "traits"}
        traits = {key: obj[key] for key in _fields(obj) if key not in named}
        grouped = obj.get("traits")
        if grouped is not None:
            if not isinstance(grouped, dict):
                raise LineError(
                    f'traits must be an object ({{"plan": "pro"}}), got a JSON '
                    f"{_json_type(grouped)}; or give each trait as a field of its own",
                    obj,
                )
            both = sorted(set(grouped) & set(traits))
            if both:
                raise LineError(f"trait {both[0]!r} is given twice (in traits and beside it)", obj)
            traits.update(grouped)
        given = traits or None

        def track(client: DataFast) -> Awaitable[Delivery[Any]]:
            return client.identify(visitor_id, user_id, traits=given)

        return track


GOALS = LineKind()
KINDS: dict[str, LineKind] = {kind.name: kind for kind in (GOALS, PaymentLines(), IdentifyLines())}


def describe(event: object) -> str:
    """A request, in the words of a line's report (never its visitor id)."""
    if isinstance(event, Goal):
        return f"goal {event.name!r}"
    if isinstance(event, Payment):
        return f"payment {event.transaction_id!r}"
    if isinstance(event, Identify):
        return f"identify of user {event.user_id!r}"
    return type(event).__name__


def event_object(event: object) -> dict[str, Any]:
    """A request as a line of its kind (for --failed-out, when its line is not known)."""
    obj: dict[str, Any]
    if isinstance(event, Goal):
        obj = {"datafast_visitor_id": event.visitor_id, "name": event.name}
        if event.description is not None:
            obj["description"] = event.description
        if event.metadata is not None:
            obj["metadata"] = dict(event.metadata)
        return obj
    if isinstance(event, Payment):
        obj = {
            "amount": event.amount,
            "currency": event.currency,
            "transaction_id": event.transaction_id,
        }
        optional = {
            "datafast_visitor_id": event.visitor_id,
            "email": event.email,
            "name": event.name,
            "customer_id": event.customer_id,
            "renewal": event.renewal,
            "refunded": event.refunded,
            "is_free_trial": event.is_free_trial,
        }
        obj.update((key, value) for key, value in optional.items() if value is not None)
        if event.timestamp is not None:
            obj["timestamp"] = format_timestamp(event.timestamp)
        return obj
    if isinstance(event, Identify):
        obj = {"datafast_visitor_id": event.visitor_id, "user_id": event.user_id}
        obj.update(event.traits or {})
        return obj
    return {"_event": repr(event)}
