"""The wire format: a goal becomes a request body; a response becomes a result or an error.

This is the one place where an HTTP status and body become a ``GoalResult`` or an ``APIError``
(``_transport`` is the one place where the HTTP library's exceptions become ``TransportError``).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping

import attrs

from ._errors import APIError, error_for_status
from ._models import Goal, GoalResult, new_result

__all__ = [
    "Request",
    "Response",
    "encode_fields",
    "encode_goal",
    "outcome_of",
    "parse_retry_after",
    "read_result",
]

# JSON-quotes a str exactly as json.dumps(..., ensure_ascii=False) does (C-accelerated).
_quote: Callable[[str], str] = json.encoder.encode_basestring

_BODY_LIMIT = 4096  # characters of an error body kept on APIError.body
_MESSAGE_LIMIT = 300  # characters of a non-JSON body used as the message
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_SECONDS_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
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


@attrs.frozen
class Request:
    """One request as a transport sends it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@attrs.frozen
class Response:
    """What came back: status, reason phrase, the ``Retry-After`` header and the body."""

    status: int
    body: bytes = b""
    reason: str = ""
    retry_after: str | None = None


def encode_goal(goal: Goal) -> bytes:
    """The JSON body for one goal; absent optional fields are left out."""
    return encode_fields(goal.visitor_id, goal.name, goal.description, goal.metadata)


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


def outcome_of(status: int, body: bytes, reason: str, retry_after: str | None) -> bytes | APIError:
    """What an answer means, without reading a success: its body for a 2xx (``read_result``
    turns it into the ``GoalResult`` when somebody asks), the matching ``APIError`` otherwise.
    """
    if 200 <= status < 300:
        return body
    text = body.decode("utf-8", "replace")
    return error_for_status(
        status,
        _error_message(text, status, reason),
        text[:_BODY_LIMIT],
        retry_after=parse_retry_after(retry_after),
    )


def read_result(body: bytes) -> GoalResult:
    """The ``GoalResult`` in a 2xx body (its ``data[0]``)."""
    # The goal was recorded whatever the body says; an unreadable body must not cause a
    # retry (and so a duplicate), it only leaves the event id unknown.
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
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return GoalResult(event_id=None, message=None)
    if not isinstance(event_id, str):
        event_id = None
    message = _KNOWN_MESSAGES.get(message, message) if isinstance(message, str) else None
    return GoalResult(event_id=event_id, message=message)


def _error_message(text: str, status: int, reason: str) -> str:
    """The API's own message from its error envelope, or a readable digest of any other body."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])
            for candidate in (error, data.get("message")):
                if isinstance(candidate, str) and candidate:
                    return candidate
    # A gateway's HTML page or plain text: keep its words, drop the markup.
    words = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", _SCRIPT_RE.sub(" ", text))).strip()
    phrase = reason or _reason_phrase(status)
    if not words:
        return phrase or f"HTTP {status}"
    if len(words) > _MESSAGE_LIMIT:
        words = words[: _MESSAGE_LIMIT - 3] + "..."
    return f"{phrase}: {words}" if phrase and phrase not in words else words


def _reason_phrase(status: int) -> str:
    try:
        from http import HTTPStatus

        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date, else ``None``.

    An HTTP date is turned into a delay once, here, against the wall clock (the only use of
    wall-clock time in the SDK: the header itself is wall-clock time). Past dates give 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _SECONDS_RE.fullmatch(value):
        # A number too large for a float is infinite: longer than any max_retry_after.
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are GMT (RFC 9110)
        when = when.replace(tzinfo=datetime.timezone.utc)
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)
