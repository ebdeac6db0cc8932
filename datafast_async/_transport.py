"""Transports: how one request body reaches the API, and what its answer means.

The sender awaits ``Transport.send(body)``, which gives the API's 2xx body or the ``APIError``
its answer means (``_wire.outcome_of`` decides), and raises ``TransportError`` when no answer
came. ``AiohttpTransport`` is the real one and the *only* place where aiohttp's exceptions are
caught and turned into ``TransportError``. ``MockTransport`` runs a handler function instead,
so most tests need no socket.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp

from ._errors import APIError, TransportError
from ._wire import Request, Response, outcome_of

__all__ = ["AiohttpTransport", "MockTransport", "Request", "Response", "Transport"]

_READ_LIMIT = 64 * 1024  # bytes of a response body read at most


class Transport(Protocol):
    """Sends one request body: the API's 2xx body, or the ``APIError`` its answer means;
    raises ``TransportError`` when no HTTP answer came."""

    async def send(self, body: bytes) -> bytes | APIError: ...

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

    async def send(self, body: bytes) -> bytes | APIError:
        # The sender awaits this coroutine directly, once per goal: every await between the
        # worker and aiohttp is a frame that each wake-up of the request passes through.
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
                # What is buffered, up to the cap, in one call: the whole body of nearly every
                # answer (cheaper than response.read(), which reads until EOF chunk by chunk).
                stream = response.content
                raw = await stream.read(_READ_LIMIT)
                if not stream.at_eof():
                    raw += await _read_capped(stream, _READ_LIMIT - len(raw))
            finally:
                response.release()
            status = response.status
            if 200 <= status < 300:
                return raw  # the usual answer: no reason phrase or header read
            return outcome_of(
                status, raw, response.reason or "", response.headers.get("Retry-After")
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


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The rest of a body, up to ``limit`` bytes (the rest of a longer one is not read)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
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

    async def send(self, body: bytes) -> bytes | APIError:
        result = self._handler(Request("POST", self._url, self.headers, body))
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, Response)
        return outcome_of(result.status, result.body, result.reason, result.retry_after)

    async def aclose(self) -> None:
        self.closed = True
