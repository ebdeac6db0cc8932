"""FastAPI and Starlette integration: a lifespan, two dependencies, and flushing for serverless.

::

    from fastapi import Depends, FastAPI

    from datafast_async import DataFast
    from datafast_async.starlette import get_client, lifespan, visitor_id

    app = FastAPI(lifespan=lifespan())  # builds DataFast() from the environment at start-up

    @app.post("/signup")
    async def signup(df: DataFast = Depends(get_client), vid: str | None = Depends(visitor_id)):
        if vid:
            await df.track(vid, "signup")

The module needs Starlette (FastAPI is built on it) and imports nothing from FastAPI; the
package itself never imports this module, so Starlette is not a dependency of the SDK.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ._client import DataFast
from ._config import check_positive
from ._errors import ConfigurationError

__all__ = ["FlushAfterResponse", "VISITOR_COOKIE", "get_client", "lifespan", "visitor_id"]

VISITOR_COOKIE = "datafast_visitor_id"
"""The cookie DataFast's script sets in the browser: the visitor id ``track`` wants."""

_STATE_ATTRIBUTE = "datafast"
_NO_CLIENT = (
    "no DataFast client on app.state.datafast: the datafast_async.starlette lifespan has not "
    "run for this app. Pass lifespan=lifespan(...) to FastAPI()/Starlette() (or enter "
    "`async with lifespan(client)(app):` in your own lifespan); in tests, enter the app's "
    "lifespan with `with TestClient(app) as client:`"
)

_LIFESPAN_ENDED = (
    "the DataFast client on app.state.datafast is closed: the datafast_async.starlette "
    "lifespan is not running for this request (it ran and ended, for example in an earlier "
    "`with TestClient(app)` block). In tests, enter the app's lifespan with "
    "`with TestClient(app) as client:` in this test too; a closed client starts again at each "
    "lifespan start-up"
)

logger = logging.getLogger("datafast_async")

# Whether the lifespan of each app it ran for is running now (True) or has ended (False).
# Kept here rather than on app.state, so that iterating app.state shows only what users put
# there; weak, so an app can be garbage-collected.
_lifespan_running: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()


def lifespan(
    client: DataFast | None = None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan that runs a DataFast client for as long as the app runs.

    At start-up it starts the client in the app's event loop and stores it as
    ``app.state.datafast`` (where ``get_client`` finds it); at shutdown it calls
    ``client.aclose()``, which delivers what is still queued within the client's
    ``shutdown_timeout`` and reports the rest to ``on_failure``. The closed client stays on
    ``app.state.datafast``, so a test can read its final ``stats()`` after the app stopped.

    The same app (and the same client) may go through any number of lifespan runs, each in a
    new event loop if need be, as a test suite does when it enters ``TestClient(app)`` again
    and again: each run starts the client afresh. Give each client one app at a time; the first
    app to shut down closes it.

    It composes with an app's own lifespan::

        @contextlib.asynccontextmanager
        async def app_lifespan(app):
            async with lifespan(client)(app):
                ...  # app.state.datafast is running here
                yield

    Args:
        client: The client to run. ``None`` builds ``DataFast()`` from the environment
            (``DATAFAST_API_KEY``, …) at each start-up, so importing and building the app needs
            no key.

    Returns:
        What ``FastAPI(lifespan=...)`` and ``Starlette(lifespan=...)`` take: a callable from the
        app to an async context manager.

    Raises:
        ConfigurationError: At start-up, when ``client`` is ``None`` and the environment does
            not configure a client (for example, ``DATAFAST_API_KEY`` is missing).
    """
    if client is not None and not isinstance(client, DataFast):
        raise ConfigurationError(
            f"lifespan() takes a DataFast client or None, got {type(client).__name__}"
        )

    @contextlib.asynccontextmanager
    async def datafast_lifespan(app: Starlette) -> AsyncIterator[None]:
        datafast = DataFast() if client is None else client
        await datafast.start()
        try:
            setattr(app.state, _STATE_ATTRIBUTE, datafast)
            _set_lifespan_running(app, True)
            yield
        finally:
            _set_lifespan_running(app, False)
            await datafast.aclose()

    return datafast_lifespan


def _set_lifespan_running(app: object, running: bool) -> None:
    with contextlib.suppress(TypeError):  # an app that takes no weak reference: not tracked
        _lifespan_running[app] = running


def _lifespan_has_ended(scope: Scope) -> bool:
    """Whether this lifespan put the client on the request's app and has ended since, which
    closed the client: ``get_client`` then explains, instead of handing out a closed client
    whose ``track`` raises ``ClientClosedError``.

    It reads the lifespan's own record, not the client's state, so it depends on nothing
    private in the client. An app whose ``app.state.datafast`` was set by hand, without the
    lifespan, is not judged here.
    """
    try:
        return _lifespan_running.get(scope.get("app")) is False
    except TypeError:  # no app, or one that takes no weak reference
        return False


def _client_of(scope: Scope) -> DataFast | None:
    state = getattr(scope.get("app"), "state", None)
    client = getattr(state, _STATE_ATTRIBUTE, None)
    return client if isinstance(client, DataFast) else None


def get_client(request: HTTPConnection) -> DataFast:
    """The client that ``lifespan`` put on ``app.state.datafast``.

    A FastAPI dependency (``df: DataFast = Depends(get_client)``, for HTTP routes and
    websockets alike) and a plain function (``get_client(request)``) in Starlette endpoints.
    FastAPI runs plain-function dependencies in its thread pool; in a hot path, take
    ``request: Request`` and call ``get_client(request)`` to skip that hop.

    Args:
        request: The ``Request`` or ``WebSocket`` (any ``HTTPConnection``).

    Returns:
        The app's ``DataFast`` client.

    Raises:
        ConfigurationError: The app has no running client: its lifespan did not run (no
            ``lifespan=...``, or a ``TestClient`` used without ``with``), or it ran and has
            ended, which closed the client (a ``TestClient`` used without ``with`` after
            another one was used with it).
    """
    client = _client_of(request.scope)
    if client is None:
        raise ConfigurationError(_NO_CLIENT)
    if _lifespan_has_ended(request.scope):
        raise ConfigurationError(_LIFESPAN_ENDED)
    return client


def visitor_id(request: HTTPConnection) -> str | None:
    """The visitor's id from the ``datafast_visitor_id`` cookie, or ``None`` without one.

    A FastAPI dependency (``vid: str | None = Depends(visitor_id)``) and a plain function
    (``visitor_id(request)``). An empty cookie counts as no cookie.

    Args:
        request: The ``Request`` or ``WebSocket`` (any ``HTTPConnection``).

    Returns:
        The cookie's value, or ``None``.
    """
    return request.cookies.get(VISITOR_COOKIE) or None


class FlushAfterResponse:
    """Pure ASGI middleware for serverless hosts: flush the client after each HTTP response.

    On AWS Lambda, Cloud Run without always-on CPU, Vercel and the like, the process may be
    frozen as soon as a response is out, with goals still in the queue. With this middleware
    each HTTP request runs to the end, the response is sent in full (background tasks
    included), and then ``client.flush(timeout)`` waits until the goals queued so far are
    delivered (or finally failed) before the request cycle ends. The response is not delayed;
    only the end of the cycle is, by at most ``timeout`` seconds. Adapters that buffer the
    whole response (Mangum on Lambda) hand it over when the cycle ends, after the flush, which
    is what lets the goals leave before the freeze.

    Goals that are still pending at the deadline stay queued, to be delivered later or at
    shutdown. ``flush`` waits for every goal queued before it, including other requests'
    goals on a server that runs many requests at once. If the app raises, the flush runs
    before the exception propagates (and Starlette sends its 500). Websocket and lifespan
    traffic passes through untouched.

    Add it to the app: ``app.add_middleware(FlushAfterResponse, timeout=2.0)`` or
    ``Starlette(middleware=[Middleware(FlushAfterResponse, timeout=2.0)], ...)``.

    Args:
        app: The ASGI app to wrap.
        timeout: The most seconds to wait after each response.
        client: The client to flush; ``None`` flushes the app's ``app.state.datafast``, set by
            ``lifespan``.

    Raises:
        ConfigurationError: ``timeout`` is not a positive number; at request time, ``client``
            is ``None`` and the app's lifespan did not put a client on ``app.state``.
    """

    def __init__(
        self, app: ASGIApp, *, timeout: float = 2.0, client: DataFast | None = None
    ) -> None:
        if client is not None and not isinstance(client, DataFast):
            raise ConfigurationError(
                f"client must be a DataFast client or None, got {type(client).__name__}"
            )
        self.app = app
        self.timeout = check_positive("timeout", timeout)
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            client = self._find_client(scope)
            if client is not None:
                await self._flush(client)
            raise
        client = self._find_client(scope)
        if client is None:
            raise ConfigurationError(_NO_CLIENT)
        await self._flush(client)

    def _find_client(self, scope: Scope) -> DataFast | None:
        # Looked up after the call: Starlette sets scope["app"] when the request enters it.
        return self.client if self.client is not None else _client_of(scope)

    async def _flush(self, client: DataFast) -> None:
        if not await client.flush(self.timeout):
            stats = client.stats()
            logger.debug(
                "flush after response: %d goals still pending after %g s",
                stats.queued + stats.in_flight,
                self.timeout,
            )
