"""What an answer means: the only reader of DataFast's answers.

A transport gives back what came over the wire (status, body, reason phrase, headers);
``outcome_of`` turns it into the request's outcome, once, for any kind of request: the API's
success body (which the request's kind reads into its result only when somebody asks), or the
``APIError`` it means, with ``opens_circuit`` set when every later request would get the same
answer.

- A 2xx counts only when its body is DataFast's success answer for that endpoint (the kind
  says: ``Kind.is_success``); anything else (a captive portal's page, a wrong host) is final.
- A 3xx is never followed (the key must not reach another host): final, naming where it pointed.
- 401, 403, 407, and any other 4xx whose body is not DataFast's error envelope, open the
  circuit: every request would get them. Not 408 and 429, nor 413, 414 and 431, which are about
  the one request (its size): that goal fails alone.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time
from collections.abc import Mapping
from http import HTTPStatus

from ._errors import APIError, error_for_status
from ._kinds import Endpoint

__all__ = ["Answer", "outcome_of", "parse_retry_after"]

#: What a transport gives back: status, body (capped), reason phrase, headers.
Answer = tuple[int, bytes, str, Mapping[str, str]]

_BODY_LIMIT = 4096  # characters of an error body kept on APIError.body
_MESSAGE_LIMIT = 300  # characters of a non-JSON body used as the message
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
# 4xx statuses about the one request, not every request: a timeout, the rate, a body or URL or
# headers too large (one oversized goal must not fail every goal with it).
_THIS_REQUEST = frozenset({408, 413, 414, 429, 431})
# A gateway's own failure to get the upstream's answer: 502 (the upstream reset or sent
# garbage), 504 (it did not answer in time). Not 503: a gateway says it before it forwards.
_GATEWAY = frozenset({502, 504})
_SECONDS_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")


def outcome_of(
    kind: Endpoint, status: int, body: bytes, reason: str, headers: Mapping[str, str]
) -> bytes | APIError:
    """What an answer to a request of ``kind`` means: its body for DataFast's success answer
    for that endpoint (the kind reads its result from it when somebody asks), the matching
    ``APIError`` otherwise."""
    if 200 <= status < 300:
        if kind.is_success(body):
            return body
        return _not_datafast(status, body, reason, headers)
    text = body.decode("utf-8", "replace")
    if 300 <= status < 400:
        where = headers.get("Location")
        error = APIError(
            status,
            f"{reason or _reason_phrase(status) or 'redirect'} to {where!r}: redirects are not "
            "followed, so that the key never reaches another host; check base_url"
            if where
            else f"a redirect ({reason or _reason_phrase(status)}) without a Location: "
            "redirects are not followed; check base_url",
            text[:_BODY_LIMIT],
        )
        error.opens_circuit = True
        return error
    said, enveloped = _message_of(text)
    error = error_for_status(
        status,
        said if said is not None else _digest(text, status, reason),
        text[:_BODY_LIMIT],
        retry_after=parse_retry_after(headers.get("Retry-After")),
        not_found=getattr(kind, "not_found", None),
    )
    if status in (401, 403, 407) or (
        status < 500 and status not in _THIS_REQUEST and not enveloped and not error.retriable
    ):
        error.opens_circuit = True
    elif status in _GATEWAY:
        # A gateway's answer (nginx, a load balancer, a CDN): the request may have reached
        # the API, which may have recorded it, before the gateway gave up on its answer.
        error.maybe_delivered = True
    return error


def _not_datafast(status: int, body: bytes, reason: str, headers: Mapping[str, str]) -> APIError:
    text = body.decode("utf-8", "replace")
    kind = headers.get("Content-Type") or "no Content-Type"
    shown = _digest(text, 0, "") if text.strip() else "an empty body"
    error = APIError(
        status,
        f"the answer was not DataFast's ({kind}, {len(body)} bytes: {shown}); the request "
        "was probably not recorded: check base_url, and any proxy or captive portal in between",
        text[:_BODY_LIMIT],
    )
    error.opens_circuit = True
    return error


def _message_of(text: str) -> tuple[str | None, bool]:
    """The message in a JSON error body, and whether the body is DataFast's error envelope
    (``{"status": "error", "error": {"code": ..., "message": ...}}``). Looser JSON shapes
    (``{"error": "..."}``, ``{"message": "..."}``) give their message but are not the envelope.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None, False
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return None, False
    if not isinstance(data, dict):
        return None, False
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"]), True
    for candidate in (error, data.get("message")):
        if isinstance(candidate, str) and candidate:
            return candidate, False
    return None, False


def _digest(text: str, status: int, reason: str) -> str:
    """A readable digest of a body that is not DataFast's: a gateway's HTML page or plain
    text keeps its words, not its markup."""
    words = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", _SCRIPT_RE.sub(" ", text))).strip()
    phrase = reason or _reason_phrase(status)
    if not words:
        return phrase or f"HTTP {status}"
    if len(words) > _MESSAGE_LIMIT:
        words = words[: _MESSAGE_LIMIT - 3] + "..."
    return f"{phrase}: {words}" if phrase and phrase not in words else words


def _reason_phrase(status: int) -> str:
    try:
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
