"""Deletes (GDPR requests): ``DELETE /api/v1/goals`` and ``DELETE /api/v1/payments``.

Direct calls, never queued: the caller waits for the answer (what was deleted). They are not
kinds of request (nothing of them is counted, journaled or read back), only endpoints the
sender calls with the retry policy, the limiter and the circuits (a delete is idempotent:
deleting again deletes nothing more). Here: the rules of their filters, the query, DataFast's
success answer and the ``DeleteResult``.

The range's parameter names differ between copies of DataFast's documentation (``start``/
``end`` and ``startAt``/``endAt``): the range is sent under both, with the same values, so that
either reading deletes exactly that range.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, cast
from urllib.parse import urlencode

import attrs

from .._errors import APIError, NotFoundError, ValidationError
from .._validation import check_visitor_id, normalize_name, type_name
from .payments import _transaction_id, format_timestamp

__all__ = [
    "DELETE_GOALS",
    "DELETE_PAYMENTS",
    "DeleteResult",
    "Deletion",
    "goals_query",
    "payments_query",
]

Query = list[tuple[str, str]]


@attrs.frozen(weakref_slot=False)
class DeleteResult:
    """What the API answered for a delete.

    Attributes:
        message: The API's message (its ``data[0].message``), ``"disabled"`` when the client
            is disabled.
        raw: The API's ``data`` as it came (the filters it echoed, counts when it gives them).
    """

    message: str | None
    raw: Any = attrs.field(default=None, eq=False)


class Deletion:
    """A delete endpoint: what the sender needs to call it and read its answer."""

    method = "DELETE"
    idempotent = True  # deleting again deletes nothing more
    index = -1  # not a kind: no ledger column, no target of its own
    #: A 404 here means that nothing matched (no such transaction), not a missing visitor.
    not_found: type[APIError] = NotFoundError

    def __init__(self, path: str, plural: str) -> None:
        self.path = path
        self.plural = plural

    def is_success(self, body: bytes) -> bool:
        return _data(body) is not _NOT_SUCCESS

    def read_result(self, body: bytes) -> DeleteResult:
        data = _data(body)
        if data is _NOT_SUCCESS:
            data = None
        first = data[0] if isinstance(data, list) and data else data
        message = first.get("message") if isinstance(first, dict) else None
        return DeleteResult(message=message if isinstance(message, str) else None, raw=data)

    def __repr__(self) -> str:
        return f"<Deletion {self.method} {self.path}>"


_NOT_SUCCESS = object()


def _data(body: bytes) -> Any:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_SUCCESS
    if not isinstance(answer, dict) or answer.get("status") != "success":
        return _NOT_SUCCESS
    return answer.get("data")


DELETE_GOALS = Deletion("/api/v1/goals", "goals")
DELETE_PAYMENTS = Deletion("/api/v1/payments", "payments")


def _moment(field: str, value: object) -> datetime.datetime:
    if not issubclass(type(value), datetime.datetime):
        raise ValidationError(
            field, f"{field} must be a datetime (aware: with a time zone), got {type_name(value)}"
        )
    moment = cast(datetime.datetime, value)
    try:
        offset = None if moment.tzinfo is None else moment.utcoffset()
    except Exception as exc:  # an application's own tzinfo that fails
        raise ValidationError(
            field, f"{field}'s time zone could not give its offset: {exc!r}"
        ) from None
    if offset is None:
        raise ValidationError(
            field,
            f"{field} must be an aware datetime (with a time zone, such as "
            "datetime.timezone.utc): a naive one would be read in an unknown zone",
        )
    try:
        return moment.astimezone(datetime.timezone.utc)
    except (OverflowError, ValueError):
        raise ValidationError(
            field, f"{field} {moment!r} is out of range once converted to UTC"
        ) from None
    except Exception as exc:
        raise ValidationError(field, f"{field} could not be converted to UTC: {exc!r}") from None


def _range(start: object, end: object) -> Query:
    """The range under both spellings of its names, or nothing; ``start`` and ``end`` go
    together, aware, ``start < end``."""
    if start is None and end is None:
        return []
    if start is None or end is None:
        missing = "start" if start is None else "end"
        raise ValidationError(missing, "start and end go together: give both, or neither")
    first, last = _moment("start", start), _moment("end", end)
    # To the millisecond, inside what was asked: the start rounded up, the end down.
    if first.microsecond % 1000:
        first += datetime.timedelta(microseconds=1000 - first.microsecond % 1000)
    since, until = format_timestamp(first), format_timestamp(last)
    # Compared as sent (to the millisecond): a range narrower than that would be empty.
    if not since < until:
        raise ValidationError(
            "end", f"end must be after start, to the millisecond ({until} is not after {since})"
        )
    return [("start", since), ("end", until), ("startAt", since), ("endAt", until)]


def goals_query(visitor_id: object, name: object, start: object, end: object) -> Query:
    """The query of ``DELETE /api/v1/goals``; ``ValidationError`` for a call with no filter
    at all (nothing is deleted by accident), or a broken rule."""
    query: Query = []
    if visitor_id is not None:
        query.append(("datafast_visitor_id", check_visitor_id(visitor_id)))
    if name is not None:
        query.append(("name", normalize_name(name)))
    span = _range(start, end)
    if not query and not span:
        raise ValidationError(
            "filter",
            "delete_goals() needs a filter: a visitor_id, a name, or a start and end (with "
            "neither visitor nor name, a range is required); nothing was deleted",
        )
    return query + span


def payments_query(transaction_id: object, visitor_id: object, start: object, end: object) -> Query:
    """The query of ``DELETE /api/v1/payments``; ``ValidationError`` for a call with no
    filter, or a transaction id given with other filters (DataFast would ignore them)."""
    span = _range(start, end)
    if transaction_id is not None:
        if visitor_id is not None or span:
            raise ValidationError(
                "transaction_id",
                "transaction_id names one payment: give it alone (DataFast ignores every other "
                "filter beside it); nothing was deleted",
            )
        return [("transaction_id", _transaction_id(transaction_id))]
    query: Query = []
    if visitor_id is not None:
        query.append(("datafast_visitor_id", check_visitor_id(visitor_id)))
    if not query and not span:
        raise ValidationError(
            "filter",
            "delete_payments() needs a filter: a transaction_id, a visitor_id, or a start and "
            "end; nothing was deleted",
        )
    return query + span


def encoded(query: Query) -> str:
    """The query string (``urlencode``d)."""
    return urlencode(query)
