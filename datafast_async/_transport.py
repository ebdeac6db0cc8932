"""Transports: how one request body reaches the API.

The sender talks to ``Transport.send(body) -> Response``. ``AiohttpTransport`` is the real one
and the *only* place where aiohttp's exceptions are caught and turned into ``TransportError``.
``MockTransport`` runs a handler function instead, so most tests need no socket.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp
import attrs

from ._errors import TransportError

__all__ = ["AiohttpTransport", "MockTransport", "Request", "Response", "Transport"]

_READ_LIMIT = 64 * 1024  # bytes of a response body read at most


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


class Transport(Protocol):
    """Sends one request body; raises ``TransportError`` when no HTTP answer came."""

    async def send(self, body: bytes) -> Response: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """One pooled keep-alive aiohttp session, owned or borrowed.

    Args:
        url: The full goals URL (with ``?websiteId=`` for account tokens).
        headers: Headers for every request, built once.
        timeout: Seconds for one attempt, connection and body included.
        concurrency: The most connections kept to the API.
        session: A session the caller owns (and closes); ``None`` to own one.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        concurrency: int,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = url
        self._headers: dict[str, str] | None = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._owned = session is None
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=concurrency,
                limit_per_host=concurrency,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                # Our headers as the session's own: aiohttp then merges no per-request
                # headers (a measurable share of its work per request).
                headers=self._headers,
                # Only what we set: no automatic Accept/Accept-Encoding/User-Agent work.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                raise_for_status=False,
            )
            self._headers = None
        self._session = session

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    async def send(self, body: bytes) -> Response:
        try:
            # Awaited, then released, rather than ``async with``: the context manager's two
            # extra coroutines are a measurable share of the client's work per request.
            response = await self._session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                # Whatever a session of the user's says: statuses are ours to read (_wire).
                raise_for_status=False,
            )
            try:
                length = response.content_length  # a property that parses the header
                if length is not None and length <= _READ_LIMIT:
                    raw = await response.read()
                else:
                    raw = await _read_capped(response.content)
            finally:
                response.release()
            # Positional: attrs' __init__ takes keywords at a measurable extra cost.
            return Response(
                response.status,
                raw,
                response.reason or "",
                response.headers.get("Retry-After"),
            )
        except asyncio.TimeoutError as exc:
            raise TransportError(f"no answer within {self._timeout_seconds:g} s (timeout)") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(_describe(exc)) from exc
        except OSError as exc:
            raise TransportError(f"network error: {exc}") from exc
        except RuntimeError as exc:
            if self._session.closed:  # aiohttp's "Session is closed"
                raise TransportError("the HTTP session is closed") from exc
            raise

    async def aclose(self) -> None:
        if self._owned and not self._session.closed:
            await self._session.close()


async def _read_capped(stream: aiohttp.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _READ_LIMIT:
        chunk = await stream.read(_READ_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """A transport that calls ``handler(request)`` instead of the network.

    The handler returns a ``Response`` (or an awaitable of one), or raises ``TransportError``
    to stand for a connection failure.
    """

    def __init__(self, handler: Handler, *, url: str = "https://datafa.st/api/v1/goals") -> None:
        self._handler = handler
        self._url = url
        self.headers: dict[str, str] = {}
        self.closed = False

    async def send(self, body: bytes) -> Response:
        result = self._handler(Request("POST", self._url, self.headers, body))
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, Response)
        return result

    async def aclose(self) -> None:
        self.closed = True
