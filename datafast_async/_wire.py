"""The wire format: a goal becomes a request body; a response becomes a result or an error.

This is the one place where an HTTP status and body become a ``GoalResult`` or an ``APIError``
(``_transport`` is the one place where the HTTP library's exceptions become ``TransportError``).
"""

from __future__ import annotations

import email.utils
import json
import re
import time

from ._errors import APIError, error_for_status
from ._models import Goal, GoalResult
from ._transport import Response

__all__ = ["decode_response", "encode_goal", "parse_retry_after"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode

_BODY_LIMIT = 4096  # characters of an error body kept on APIError.body
_MESSAGE_LIMIT = 300  # characters of a non-JSON body used as the message
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
# json.loads makes a new string per response; the confirmation message is nearly always the
# same, so results share one copy.
_KNOWN_MESSAGES = {"Custom event created successfully": "Custom event created successfully"}


def encode_goal(goal: Goal) -> bytes:
    """The JSON body for one goal; absent optional fields are left out."""
    body: dict[str, object] = {"datafast_visitor_id": goal.visitor_id, "name": goal.name}
    if goal.description is not None:
        body["description"] = goal.description
    if goal.metadata:
        body["metadata"] = goal.metadata
    return _encode(body).encode()


def decode_response(response: Response) -> GoalResult | APIError:
    """What a response means: the API's answer for a 2xx, the matching ``APIError`` otherwise."""
    status = response.status
    if 200 <= status < 300:
        return _success(response.body)
    text = response.body.decode("utf-8", "replace")
    return error_for_status(
        status,
        _error_message(text, status, response.reason),
        text[:_BODY_LIMIT],
        retry_after=parse_retry_after(response.retry_after),
    )


def _success(body: bytes) -> GoalResult:
    # The goal was recorded whatever the body says; an unreadable body must not cause a
    # retry (and so a duplicate), it only leaves the event id unknown.
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
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)
