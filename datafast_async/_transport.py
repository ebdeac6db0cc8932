"""Transports: how one request body reaches the API, and what came back.

The sender awaits ``Transport.send(method, target, body)`` (``target``: the endpoint's path
with its query, below the base URL), which gives the answer as it came (status, body, reason
phrase, headers: an ``Answer``; ``_outcome.outcome_of`` says what it means), and raises
``TransportError`` when no answer came. Transports know nothing of kinds of request.
``AiohttpTransport`` is the real one and the *only* place where aiohttp's exceptions are
caught and turned into ``TransportError``.
``MockTransport`` runs a handler function instead, so most tests need no socket.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import os
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

from ._config import is_loopback
from ._errors import TransportError
from ._outcome import Answer
from ._reporting import logger
from ._wire import Request, Response

__all__ = [
    "AiohttpTransport",
    "Answer",
    "MockTransport",
    "Request",
    "Response",
    "Transport",
    "is_loopback",
    "proxy_for",
]

_READ_LIMIT = 64 * 1024  # bytes of a response body read at most


class Transport(Protocol):
    """Sends one request and gives back the answer as it came; raises ``TransportError``
    when no HTTP answer came. ``target`` is a path below the base URL, with its query."""

    async def send(self, method: str, target: str, body: bytes | None) -> Answer: ...

    async def aclose(self) -> None: ...


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, either
    case, minus the hosts in ``NO_PROXY``), as requests and httpx read it; ``None`` for a
    direct connection.

    A plain-``http://`` URL (which the settings allow only on loopback) goes through a proxy
    only if that proxy is on loopback too: the key never leaves the machine in clear text.
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme, host = parts.scheme, (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    proxy = _env(env, f"{scheme}_proxy") or _env(env, "all_proxy")
    if not proxy or _bypassed(host, port, _env(env, "no_proxy")):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    proxy_scheme = urlsplit(proxy).scheme.lower()
    if proxy_scheme != "http":
        _warn_unusable_proxy(proxy_scheme)
        return None
    if scheme == "http" and not is_loopback(urlsplit(proxy).hostname):
        return None
    return proxy


_warned_schemes: set[str] = set()


def _warn_unusable_proxy(scheme: str) -> None:
    if scheme not in _warned_schemes:
        _warned_schemes.add(scheme)
        logger.warning(
            "the proxy in the environment is a %s:// proxy, which the client cannot use (it "
            "speaks to http:// proxies only); it connects directly",
            scheme,
        )


def _env(env: Mapping[str, str], name: str) -> str:
    """An environment variable by its lower-case name, else its upper-case one (as curl)."""
    return (env.get(name) or env.get(name.upper()) or "").strip()


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated hosts, domain suffixes, ``*``; an entry with a
    ``:port`` covers that port only) covers ``host`` and ``port``."""
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port = ""
        if entry.startswith("[") and "]" in entry:  # [::1]:8080
            entry, entry_port = entry[1 : entry.index("]")], entry[entry.index("]") + 2 :]
        elif entry.count(":") == 1:  # host:port
            entry, entry_port = entry.split(":", 1)
        if entry_port and entry_port != str(port):
            continue
        entry = entry.lstrip("*").lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


class AiohttpTransport:
    """One pooled keep-alive aiohttp session, owned or borrowed.

    Args:
        base_url: The API's base URL (``https://datafa.st``); each request names its target
            below it.
        headers: Headers for every request, built once.
        timeout: Seconds for one attempt, connection and body included (``_Deadline``: an
            answer that arrived while the process did not run is read, not cut).
        concurrency: The most connections kept to the API.
        session: A session the caller owns (and closes); ``None`` to own one.
        ssl: An ``ssl.SSLContext`` for the owned session (a private CA, a client certificate).
        proxy: A proxy URL (``http://user:pass@host:port``); ``None`` connects directly.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        concurrency: int,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        proxy: str | None = None,
    ) -> None:
        self._base_url = url = base_url
        #: Each target's whole URL, built once (a handful of endpoints).
        self._urls: dict[str, str] = {}
        own: dict[str, str] = dict(headers)
        # A connection that cannot be made in 90% of the time fails as such (aiohttp's
        # ConnectionTimeoutError): its request never left, so maybe_delivered is False. The
        # whole attempt's timeout is ours (_Deadline), not aiohttp's total: that one fires in
        # the step of the loop that reads an answer arrived during a stall, and cuts it.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout * 0.9)
        self._timeout_seconds = timeout
        self._owned = session is None
        self._proxy, proxy_authorization = _split_proxy(proxy)
        # The proxy's credentials: on the CONNECT of an https:// URL (proxy_headers), on the
        # request itself for a plain-http:// one (which aiohttp sends to the proxy as is).
        self._proxy_headers: dict[str, str] | None = None
        if proxy_authorization is not None:
            self._proxy_headers = {"Proxy-Authorization": proxy_authorization}
            if urlsplit(url).scheme == "http":
                own["Proxy-Authorization"] = proxy_authorization
        self._headers: dict[str, str] | None = own
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=concurrency,
                limit_per_host=concurrency,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
                ssl=ssl if ssl is not None else True,
            )
            # Our headers as the session's own: aiohttp then merges no per-request headers (a
            # measurable share of its work per request). Not through a proxy: aiohttp sends a
            # session's own headers to the proxy as well, in the clear CONNECT of an https://
            # URL, and turns their Authorization (the key) into Proxy-Authorization.
            own_headers = self._proxy is None
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers if own_headers else None,
                # Only what we set: no automatic Accept/Accept-Encoding/User-Agent work.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                raise_for_status=False,
                # The proxy is read from the environment once, here (proxy_for); aiohttp's
                # trust_env would read it again in a thread for every request.
                trust_env=False,
            )
            if own_headers:
                self._headers = None
        self._session = session
        # The request coroutine itself, not session.post(): post() wraps it in
        # ``_RequestContextManager``, a subscripted generic (``_BaseRequestContextManager[
        # ClientResponse]`` in aiohttp 3.14), so every request goes through typing's alias
        # call, which tries and fails to set ``__orig_class__`` on the slotted instance (an
        # AttributeError raised and caught): ~5% of the instructions per request. Only where
        # post() is aiohttp's own: a session class of the user's that overrides it keeps it.
        #
        # Looked up on the session at each request (``_direct``), not bound once: a test's
        # mock that patches ``ClientSession._request`` after the client started
        # (aioresponses) is honoured.
        self._request: Callable[..., Awaitable[aiohttp.ClientResponse]] = session.request
        self._direct = False
        request = getattr(session, "_request", None)
        if getattr(session.request, "__func__", None) is aiohttp.ClientSession.request and (
            getattr(session.post, "__func__", None) is aiohttp.ClientSession.post
            and callable(request)
        ):
            self._direct = True
        elif getattr(session.post, "__func__", None) is not aiohttp.ClientSession.post:
            # A session class of the user's that overrides post(): its POSTs go through it.
            self._request = functools.partial(_through_post, session)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    async def send(self, method: str, target: str, body: bytes | None) -> Answer:
        unchained: TransportError
        url = self._urls.get(target)
        if url is None:
            url = self._urls[target] = self._base_url + target
        # The sender awaits this coroutine directly, once per goal: every await between the
        # worker and aiohttp is a frame that each wake-up of the request passes through.
        deadline = _Deadline(asyncio.get_running_loop(), self._timeout_seconds)
        try:
            # Awaited, then released, rather than ``async with``: the context manager's two
            # extra coroutines are a measurable share of the client's work per request.
            response = await (self._session._request if self._direct else self._request)(
                method,
                url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                # Whatever a session of the user's says: statuses are ours to read (_outcome).
                raise_for_status=False,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
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
            return response.status, raw, response.reason or "", response.headers
        except asyncio.CancelledError:
            if not deadline.took_back():
                raise  # from outside (aclose's deadline, the caller): not a timeout
            unchained = TransportError(
                f"no answer within {self._timeout_seconds:g} s (timeout)",
                maybe_delivered=True,
                timed_out=True,
            )
            unchained.__cause__ = asyncio.TimeoutError()
        except asyncio.TimeoutError as exc:
            raise TransportError(
                f"no answer within {self._timeout_seconds:g} s (timeout)",
                maybe_delivered=not isinstance(exc, _CONNECT_TIMEOUT),
                timed_out=True,
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransportError(
                f"the TLS certificate of {exc.host} did not verify ({exc.certificate_error}); "
                "retrying cannot fix it. For a private CA set SSL_CERT_FILE or pass "
                "ssl=ssl.create_default_context(cafile=...)",
                maybe_delivered=False,
                retriable=False,
                opens_circuit=True,
            ) from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise TransportError(
                f"cannot connect to the proxy {_shown_proxy(self._proxy)}: {exc}",
                maybe_delivered=False,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}",
                maybe_delivered=False,
            ) from exc
        except aiohttp.ClientHttpProxyError as exc:
            # The proxy refused the tunnel: not DataFast's answer, and never sent on. A 4xx
            # (407, or 401 and 403 for bad credentials or a policy) is what every request
            # would get: the circuit opens (with a spool, requests wait on disk); a 5xx (the
            # proxy cannot reach the API) may pass.
            refused = 400 <= exc.status < 500
            unchained = TransportError(
                f"the proxy {_shown_proxy(self._proxy)} refused the tunnel to the API: it "
                f"answered {exc.status} {exc.message}".rstrip()
                if refused
                else f"the proxy {_shown_proxy(self._proxy)} answered {exc.status}: {exc.message}",
                maybe_delivered=False,
                retriable=not refused,
                opens_circuit=refused,
            )
        except aiohttp.ServerDisconnectedError as exc:
            raise TransportError("the server closed the connection without answering") from exc
        except aiohttp.ClientResponseError as exc:
            # A malformed answer.
            unchained = TransportError(f"{type(exc).__name__}: {exc.message or exc.status}")
        except aiohttp.ClientError as exc:
            text = str(exc) or type(exc).__name__
            raise TransportError(f"{type(exc).__name__}: {text}") from exc
        except OSError as exc:
            raise TransportError(f"network error: {exc}") from exc
        except RuntimeError as exc:
            if self._session.closed:  # aiohttp's "Session is closed"
                raise TransportError("the HTTP session is closed", maybe_delivered=False) from exc
            raise
        finally:
            deadline.close()
        # Raised here, outside the handler, so that neither __cause__ nor __context__ holds
        # aiohttp's exception (its request_info holds the request's headers, the key among
        # them), nor the CancelledError that our own deadline turned into a timeout.
        raise unchained

    async def aclose(self) -> None:
        if self._owned and not self._session.closed:
            await _close_idle_in_steps(self._session.connector)
            await self._session.close()


# After a stall of the process (the app blocking its loop, a SIGSTOP, a paused VM), the timer of
# a request's deadline runs late, in the same step of the loop as the socket's readable event
# of an answer that arrived meanwhile (asyncio), or even before that event is read (uvloop:
# libuv runs timers before polling). A deadline that runs more than _LATE s late (the loop did
# not run meanwhile: a timer is otherwise late by a millisecond or two) is given _GRACE s
# more, so that what arrived is read first (the next step of the loop reads it); at most
# _GRACES times in a row, so that a loop that stays that slow still times a hung request out.
_LATE = 0.05
_GRACE = 0.1
_GRACES = 3


class _Deadline:
    """One attempt's deadline: ``timeout`` seconds of the loop's clock from its start, then
    the task sending it is cancelled (``took_back`` turns that into a timeout); a timer that
    runs late, the process having stalled, gives what arrived meanwhile a short grace first.

    One timer per request, as aiohttp's own total timeout was (which it replaces). Python
    3.11+ counts a task's cancellations: ours is told from one from outside in the same step
    (aclose's deadline, the caller's cancel), as ``asyncio.timeout()`` does. 3.10 cannot: there
    a cancellation from outside in the very step of the timeout is taken for the timeout (as
    aiohttp's own was).
    """

    __slots__ = ("_cancelling", "_graces", "_handle", "_loop", "_task", "_when", "fired")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a request must be sent from a task")
        self._loop = loop
        self._task = task
        self._cancelling = 0
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self._graces = 0
        self.fired = False
        self._when = when = loop.time() + timeout
        self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        loop = self._loop
        now = loop.time()
        if now - self._when > _LATE and self._graces < _GRACES:
            self._graces += 1
            self._when = when = now + _GRACE
            self._handle = loop.call_at(when, self._fire)
            return
        task = self._task
        if sys.version_info >= (3, 11) and task.cancelling() > self._cancelling:
            return  # a cancellation from outside is on its way: it is not a timeout
        self.fired = True
        task.cancel()

    def took_back(self) -> bool:
        """Whether the ``CancelledError`` being handled is this deadline's and this deadline's
        alone (then it is taken back from the task's count): a timeout."""
        if not self.fired:
            return False
        self.fired = False
        if sys.version_info >= (3, 11):
            return self._task.uncancel() <= self._cancelling
        return True

    def close(self) -> None:
        self._handle.cancel()
        if self.fired:
            # It fired, but the request ended otherwise (the cancellation was swallowed): the
            # task's count of cancellations is left as it was.
            self.fired = False
            if sys.version_info >= (3, 11):
                self._task.uncancel()


# Idle connections closed per step of the loop at shutdown: closing 64 at once holds the loop
# for ~5 ms (~28 ms under asyncio's debug mode).
_CLOSE_STEP = 8


async def _close_idle_in_steps(connector: aiohttp.BaseConnector | None) -> None:
    """Close the pool's idle keep-alive connections a few per step of the loop, so that closing
    the session (which closes the rest at once) never holds the loop for long. It reads the
    connector's pool, which aiohttp does not publish: if that changes, the session's own close
    does it all at once, as before."""
    pool = getattr(connector, "_conns", None)
    if not isinstance(pool, dict):
        return
    try:
        for key in list(pool):
            idle = pool.get(key)
            while idle:
                for _ in range(_CLOSE_STEP):
                    if not idle:
                        break
                    protocol = idle.pop()[0]
                    protocol.close()
                await asyncio.sleep(0)
    except (AttributeError, TypeError, ValueError, IndexError, RuntimeError):
        return


# aiohttp >= 3.10 tells a connection that timed out before it was made from one that timed
# out waiting for an answer.
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(aiohttp, "ConnectionTimeoutError", None),) if cls is not None
)


def _split_proxy(proxy: str | None) -> tuple[str | None, str | None]:
    """A proxy URL without its credentials, and the ``Proxy-Authorization`` value for them."""
    if proxy is None:
        return None, None
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None
    # Basic credentials (RFC 7617, UTF-8), written out: aiohttp.BasicAuth is deprecated.
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), authorization


def _through_post(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> Awaitable[aiohttp.ClientResponse]:
    """A request through a session whose ``post()`` its class overrides (POSTs only go
    there: that is what such a class means to intercept)."""
    if method == "POST":
        return session.post(url, **kwargs)  # type: ignore[arg-type,unused-ignore]
    return session.request(method, url, **kwargs)  # type: ignore[arg-type,unused-ignore]


def _shown_proxy(proxy: str | None) -> str:
    return repr(proxy)  # already without its credentials (_split_proxy)


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


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """A transport that calls ``handler(request)`` instead of the network.

    The handler returns a ``Response`` (or an awaitable of one), or raises ``TransportError``
    to stand for a connection failure. ``request.url`` is the whole URL: ``url`` (the base URL;
    a URL with a path keeps only its origin and any path before ``/api/``) and the target.
    """

    def __init__(self, handler: Handler, *, url: str = "https://datafa.st") -> None:
        self._handler = handler
        cut = url.find("/api/")
        self._base_url = (url if cut < 0 else url[:cut]).rstrip("/")
        self.headers: dict[str, str] = {}
        self.closed = False

    async def send(self, method: str, target: str, body: bytes | None) -> Answer:
        request = Request(method, self._base_url + target, self.headers, body or b"")
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Response):
            raise TypeError(f"a MockTransport handler must return a Response, got {result!r}")
        headers = dict(result.headers)
        if result.retry_after is not None:
            headers["Retry-After"] = result.retry_after
        return result.status, result.body, result.reason, headers

    async def aclose(self) -> None:
        self.closed = True
