"""A request as a transport sends it, and an answer as ``MockTransport``'s handler gives it
(each kind encodes its own bodies: ``_kinds``; ``_outcome`` reads the answers)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["Request", "Response"]


@attrs.frozen
class Request:
    """One request as a transport sends it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@attrs.frozen
class Response:
    """What came back (for ``MockTransport``): status, body, reason phrase, the
    ``Retry-After`` header, and any other headers (``Location``, ``Content-Type``)."""

    status: int
    body: bytes = b""
    reason: str = ""
    retry_after: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
