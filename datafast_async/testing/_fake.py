"""``FakeDataFast``: a real HTTP server on 127.0.0.1 that speaks DataFast's write API.

It serves every endpoint the SDK writes to (goals, payments, identify, and the deletes of goals
and payments), enforces the contract in ``datafast-api.md`` (auth, ``websiteId``, a ``dft_``
token's permissions, each body's rules, unknown visitors, payments idempotent by
``transaction_id``), records what it accepted, and answers scripted or random faults so that a
client's retry, timeout and non-JSON handling can be tested over a real socket.
``ThreadedFakeDataFast`` (in ``_threaded``) runs the same server on a daemon thread, for
synchronous tests. The rules of each request's body and query are in ``_rules``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import itertools
import json
import math
import os
import random
import ssl as ssl_module
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from .._config import mask_key
from .._errors import ValidationError
from .._kinds.identify import Identify
from .._kinds.payments import Payment
from .._models import Goal
from ._rules import (
    ALL_PERMISSIONS,
    GOALS_PATH,
    METHODS,
    PAYMENTS_PATH,
    PERMISSIONS,
    goal_from_body,
    goals_filter,
    identify_from_body,
    payment_from_body,
    payments_filter,
)

__all__ = ["FakeDataFast", "FakeRequest"]

_PAUSE_LIMIT = 30.0  # seconds a request waits at a paused server before it is answered anyway
_SHUTDOWN_TIMEOUT = 2.0  # seconds close() grants handlers before cancelling them
_MAX_BODY = 1024 * 1024  # bytes of a request body read at most (413 beyond)
_GATEWAY_STATUSES = frozenset({502, 503, 504})
_SUCCESS_MESSAGE = "Custom event created successfully"
_PAYMENT_MESSAGE = "Payment recorded and attributed successfully"
_UNATTRIBUTED_MESSAGE = "Payment recorded successfully (not attributed: no known visitor)"
_DUPLICATE_MESSAGE = "Payment already recorded (duplicate transaction_id)"
_NO_PAGEVIEW = "Visitor has no pageviews on this website"
_UTC = datetime.timezone.utc

# ObjectId-like event ids: 4 bytes of time, 5 random bytes per process, a 3-byte counter.
_PROCESS_ID = os.urandom(5).hex()
_COUNTER = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _new_event_id() -> str:
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_PROCESS_ID}{next(_COUNTER) & 0xFFFFFF:06x}"


def _now() -> datetime.datetime:
    """The time in UTC to the millisecond (DataFast's times are JavaScript dates)."""
    now = datetime.datetime.now(_UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def _masked_headers(headers: Mapping[str, str]) -> str:
    shown = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            value = f"{scheme} {mask_key(token)}" if token else mask_key(value)
        shown[key] = value
    return repr(shown)


@attrs.frozen(weakref_slot=False)
class FakeRequest:
    """One request ``FakeDataFast`` received, and how it answered.

    Attributes:
        method: The HTTP method.
        path: The URL path, without the query string.
        query: The query parameters.
        headers: The request headers, named as the client sent them (``repr`` masks the key).
        json: The parsed JSON body, or ``None`` when the body was empty or not JSON.
        status: The status answered, or ``None`` when the connection was dropped instead.
    """

    method: str
    path: str
    query: dict[str, str] = attrs.field(hash=False)
    headers: dict[str, str] = attrs.field(hash=False, repr=_masked_headers)
    json: Any = attrs.field(hash=False)
    status: int | None


@attrs.frozen(weakref_slot=False)
class _Fault:
    """One scripted answer: an error status, a dropped connection, or a delay (or a mix)."""

    status: int | None = None
    retry_after: str | None = None
    disconnect: bool = False
    delay: float = 0.0
    lose_answer: bool = False


_RANDOM_FAULTS = (
    _Fault(500),
    _Fault(502),
    _Fault(503, retry_after="0"),
    _Fault(429, retry_after="0"),
    _Fault(disconnect=True),
)


def _retry_after_text(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"retry_after must be seconds >= 0 or a str, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"retry_after must be finite, got {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _envelope(status: int, message: str, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response(
        {"status": "error", "error": {"code": status, "message": message}},
        status=status,
        headers=headers,
    )


def _fault_response(status: int, retry_after: str | None) -> web.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = f"HTTP {status}"
    if status not in _GATEWAY_STATUSES:
        return _envelope(status, reason, retry_after)
    # What a proxy or load balancer answers: HTML, not DataFast's envelope.
    return web.Response(
        status=status,
        text=f"<html><body><h1>{status} {reason}</h1></body></html>",
        content_type="text/html",
        headers={"Retry-After": retry_after} if retry_after is not None else None,
    )


class FakeDataFast:
    """A real aiohttp server that enforces DataFast's write API contract.

    Endpoints: ``POST /api/v1/goals``, ``POST /api/v1/payments``, ``POST /api/v1/identify``,
    ``DELETE /api/v1/goals`` and ``DELETE /api/v1/payments``. Other paths answer 404 and other
    methods 405 (with ``Allow``). Then, in this order: the ``Authorization: Bearer`` token must
    equal ``api_key`` (else 401). With a ``dft_`` account token the ``websiteId`` query
    parameter is required (400 when it is missing or empty, as a missing required field is)
    and must equal ``website_id`` when that is set (403, the token has no access to that
    website, otherwise), and the token must hold the endpoint's permission in
    ``permissions`` (``goals:write``, ``payments:write``, ``identify:write``, whatever the
    method; 403 "... lacks payments:write ..." otherwise). A ``df_`` website key has every
    permission. A ``POST``'s body must be a JSON object sent as
    ``Content-Type: application/json`` (else 400); a ``DELETE`` reads its query and no body.
    Every error answer uses DataFast's envelope
    ``{"status": "error", "error": {"code": N, "message": "..."}}``; a broken rule is a 400
    whose message says which (the rules are in ``_rules``; the value types ``Goal``,
    ``Payment`` and ``Identify`` check and normalise the rest).

    Goals (``POST /api/v1/goals``): ``datafast_visitor_id`` (or its alias ``visitorId``) a
    non-empty string, ``name`` required, ``description`` and ``metadata`` optional but never
    ``null``; metadata values strings, numbers or booleans (stored as their JSON text). A
    visitor outside ``known_visitors`` (when set) gets 404. Success:
    ``{"status": "success", "data": [{"message": ..., "eventId": <24 hex digits>}]}``. Each
    goal's receive time is kept (UTC, to the millisecond: ``received_goals``) for deletes by
    range.

    Payments (``POST /api/v1/payments``): ``amount`` a number of 0 or more, ``currency``
    three letters (stored upper-cased), ``transaction_id`` 1 to 255 characters, all required;
    optional ``datafast_visitor_id``, ``email``/``name`` (``customer_email``/
    ``customer_name`` are aliases), ``customer_id``, the booleans ``renewal``, ``refunded``,
    ``is_free_trial``, and ``timestamp`` (ISO 8601 with a zone, kept on the ``Payment``);
    none of them ``null``; recorded as sent (an amount of 0 does not set ``is_free_trial``
    on the ``Payment``). Idempotent by ``transaction_id``: a repeat of a recorded
    transaction records nothing and answers 200
    ``{"message": "Payment already recorded (duplicate transaction_id)", "transaction_id": ...}``
    (a deleted transaction may be recorded again). Success is the bare object
    ``{"message": "Payment recorded and attributed successfully", "transaction_id": ...}``
    (no ``status`` wrapper); a payment without a visitor, or with one outside
    ``known_visitors``, is recorded all the same (it is not attributed, and its message says
    so): payments get no 404.

    Identify (``POST /api/v1/identify``): ``datafast_visitor_id`` (or ``visitorId``) a UUID
    and ``user_id`` a non-empty string of at most 255 characters (400 otherwise); every other
    top-level field is a trait (a string, number or boolean; never ``null``, an object or a
    list). A visitor outside ``known_visitors`` (when set) gets 404. Success:
    ``{"status": "success", "data": {"message": ..., "profileId": ...}}`` (``data`` an
    object); a user's first identify creates its profile ("User profile created
    successfully"), later ones update it ("User profile updated successfully") and answer the
    same ``profileId``.

    Deletes (``DELETE /api/v1/goals`` and ``DELETE /api/v1/payments``): the query names the
    filters; what matches every filter given is removed from ``goals`` or ``payments``, and
    the answer is ``{"status": "success", "data": [{"message": ..., "deleted": N, ...the
    filters echoed, normalised...}]}``. A range is ``start``/``end`` or ``startAt``/``endAt``
    (both spellings may be sent, with equal values; both ends are needed and ``end`` must be
    after ``start``), ISO 8601 with a zone or a date alone (midnight UTC); **``start`` is
    included, ``end`` excluded**. Goals: ``datafast_visitor_id``, ``name`` (normalised and
    checked as for a new goal) and the range on each goal's receive time; with a visitor or a
    name and no range, across all time; with neither, a range is required (400). Payments:
    ``transaction_id`` wins over every other filter (404 when no such transaction is
    recorded); otherwise ``datafast_visitor_id`` and the range (on the payment's
    ``timestamp``, else its receive time), at least one of them (400). Nothing matching is a
    success with ``"deleted": 0`` (except for a ``transaction_id``).

    All state is guarded by a lock, so ``goals``, ``payments``, ``identities``, ``requests``,
    ``permissions``, ``known_visitors``, ``fail_next`` and ``reset`` may be used from any
    thread; the other methods belong to the server's event loop.

    Args:
        api_key: The token clients must send; a ``dft_`` prefix makes ``websiteId`` required.
        host: The address to listen on.
        port: The port; ``0`` picks a free one (read ``base_url`` after start).
        latency: Seconds added before every answer: a number, or a function returning the
            seconds for each request (a distribution: ``lambda: random.uniform(0.04, 0.06)``).
        jitter: With a number ``latency``: each answer's latency is drawn uniformly within
            this fraction of it (``0.2``: ±20%).
        capacity: The most requests handled at once, like a real API under load; a request
            beyond it is answered ``over_capacity`` (after the same latency) and records no
            goal. ``None``: no limit.
        rate_limit: Requests per second admitted (a token bucket holding a tenth of a second
            of them); beyond it, ``over_capacity``. ``None``: no limit.
        over_capacity: What a request beyond ``capacity`` or ``rate_limit`` gets: 429 without
            ``Retry-After`` (DataFast's envelope), or a gateway's 503 HTML page.
        known_visitors: Visitor ids that have a pageview; ``None`` accepts every visitor.
        website_id: The website a ``dft_`` token may write to; ``None`` accepts any.
        fail_rate: Probability (0 to 1) of answering a request with a random fault: 500, a
            502 HTML page, 503 or 429 with ``Retry-After: 0``, or a dropped connection.
        seed: Seed of the random generator behind ``fail_rate``.
        ssl: A server-side ``ssl.SSLContext``: the server speaks HTTPS with it, and
            ``base_url`` starts with ``https://``. ``None`` (the default) serves plain HTTP.
        permissions: The permissions of a ``dft_`` account token (strings such as
            ``"goals:write"``, ``"payments:write"``, ``"identify:write"``); ``None`` (the
            default) grants all three. A ``df_`` website key has every permission.

    Raises:
        ValueError: A setting is out of range.

    Example:
        >>> async with FakeDataFast() as fake:  # doctest: +SKIP
        ...     async with DataFast(fake.api_key, base_url=fake.base_url) as df:
        ...         await df.send("visitor-1", "signup")
        ...         await df.send_payment(49.99, "usd", "ch_1")
        ...     assert fake.goals[0].name == "signup"
        ...     assert fake.payments[0].currency == "USD"
    """

    #: How many requests ``requests`` keeps (the most recent ones).
    MAX_REQUESTS = 10_000

    def __init__(
        self,
        *,
        api_key: str = "df_test",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float | Callable[[], float] = 0.0,
        known_visitors: Collection[str] | None = None,
        website_id: str | None = None,
        fail_rate: float = 0.0,
        seed: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
        jitter: float = 0.0,
        capacity: int | None = None,
        rate_limit: float | None = None,
        over_capacity: int = 429,
        permissions: Collection[str] | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty str")
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, got {fail_rate!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise ValueError("ssl must be an ssl.SSLContext or None")
        self._ssl = ssl
        self._api_key = api_key
        self._host = host
        self._port = port
        self._latency: float | Callable[[], float] = (
            latency if callable(latency) else _seconds("latency", latency)
        )
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, got {jitter!r}")
        self._jitter = float(jitter)
        if capacity is not None and (isinstance(capacity, bool) or capacity < 1):
            raise ValueError(f"capacity must be an int >= 1 or None, got {capacity!r}")
        self._capacity = capacity
        if rate_limit is not None and not rate_limit > 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {rate_limit!r}")
        self._rate_limit = rate_limit
        self._tokens = 0.0 if rate_limit is None else max(1.0, rate_limit / 10)
        self._tokens_at = time.monotonic()
        if over_capacity not in (429, 503):
            raise ValueError(f"over_capacity must be 429 or 503, got {over_capacity!r}")
        self._over_capacity = over_capacity
        self._refused = 0
        self.known_visitors = known_visitors
        self.permissions = permissions
        self._website_id = website_id
        self._fail_rate = float(fail_rate)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._goals: list[Goal] = []
        self._goal_times: list[datetime.datetime] = []  # beside _goals: each one's receive time
        # By transaction_id, in the order first recorded: each payment and its receive time.
        self._payments: dict[str, tuple[Payment, datetime.datetime]] = {}
        self._identities: list[Identify] = []
        self._profiles: dict[str, str] = {}  # user_id -> profileId
        self._requests: deque[FakeRequest] = deque(maxlen=self.MAX_REQUESTS)
        self._script: deque[list[Any]] = deque()  # [fault, answers left, path or None]
        self._seen: weakref.WeakSet[object] = weakref.WeakSet()
        self._connections = 0
        self._in_flight = 0
        self._max_concurrent = 0
        self._held = 0
        self._paused = False
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._held_changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._runner is not None else "not started"
        return (
            f"FakeDataFast({where}, api_key={mask_key(self._api_key)!r}, "
            f"goals={len(self._goals)}, payments={len(self._payments)}, "
            f"identities={len(self._identities)}, requests={len(self._requests)})"
        )

    # -- what tests read ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (``https://`` with ``ssl``).

        Raises:
            RuntimeError: The server is not started.
        """
        if self._runner is None:
            raise RuntimeError("FakeDataFast is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl is None else "https"
        return f"{scheme}://{host}:{self._port}"

    @property
    def api_key(self) -> str:
        """The token the server accepts."""
        return self._api_key

    @property
    def website_id(self) -> str | None:
        """The website a ``dft_`` token may write to (``None``: any)."""
        return self._website_id

    @property
    def known_visitors(self) -> frozenset[str] | None:
        """Visitor ids with a pageview; ``None`` accepts all. Settable at any time."""
        return self._known_visitors

    @known_visitors.setter
    def known_visitors(self, visitors: Collection[str] | None) -> None:
        self._known_visitors = None if visitors is None else frozenset(visitors)

    @property
    def permissions(self) -> frozenset[str]:
        """The permissions of a ``dft_`` token (all three by default). Settable at any time
        (``None``: all three again)."""
        return self._permissions

    @permissions.setter
    def permissions(self, permissions: Collection[str] | None) -> None:
        if permissions is None:
            self._permissions = ALL_PERMISSIONS
            return
        if isinstance(permissions, str) or not all(isinstance(p, str) for p in permissions):
            raise ValueError(
                "permissions must be a collection of str (such as {'goals:write'}), got "
                f"{permissions!r}"
            )
        self._permissions = frozenset(permissions)

    @property
    def goals(self) -> list[Goal]:
        """A copy of the accepted goals (less the deleted ones), in the order accepted."""
        with self._lock:
            return list(self._goals)

    @property
    def received_goals(self) -> list[tuple[Goal, datetime.datetime]]:
        """``goals``, each with the time the fake received it (UTC, to the millisecond): the
        time a delete's range is matched against."""
        with self._lock:
            return list(zip(self._goals, self._goal_times, strict=True))

    @property
    def payments(self) -> list[Payment]:
        """A copy of the recorded payments (less the deleted ones), once per transaction, in
        the order first recorded. A duplicate changes nothing here."""
        with self._lock:
            return [payment for payment, _ in self._payments.values()]

    @property
    def received_payments(self) -> list[tuple[Payment, datetime.datetime]]:
        """``payments``, each with the time the fake received it (UTC, to the millisecond);
        a delete's range is matched against the payment's ``timestamp``, else this."""
        with self._lock:
            return list(self._payments.values())

    @property
    def identities(self) -> list[Identify]:
        """A copy of the accepted identifies, in order (a repeat is recorded again)."""
        with self._lock:
            return list(self._identities)

    @property
    def requests(self) -> list[FakeRequest]:
        """A copy of the most recent ``MAX_REQUESTS`` requests answered, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (held by ``pause()`` included)."""
        return self._in_flight

    @property
    def max_concurrent(self) -> int:
        """The most requests handled at once since start (or ``reset()``)."""
        return self._max_concurrent

    @property
    def over_capacity_answers(self) -> int:
        """Requests answered ``over_capacity`` (beyond ``capacity`` or ``rate_limit``)."""
        return self._refused

    @property
    def connections(self) -> int:
        """Distinct TCP connections that sent a request since start (or ``reset()``)."""
        return self._connections

    # -- what tests script --------------------------------------------------------------------

    def fail_next(
        self,
        status: int | None = None,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        disconnect: bool = False,
        delay: float = 0.0,
        path: str | None = None,
        lose_answer: bool = False,
    ) -> None:
        """Script the next ``times`` answers, after those already scripted.

        Each request takes the oldest scripted answer left that applies to it: one scripted
        with no ``path`` applies to every request, one with a ``path`` only to requests to
        that endpoint (any method); a request to another path neither sees nor uses it.
        ``delay`` seconds pass first; then the connection is dropped (``disconnect``), or
        ``status`` is answered (DataFast's envelope, or an HTML page for 502, 503 and 504 as a
        gateway sends), or, with neither, the request is handled normally (a slow success).
        Only that last kind records (or deletes) anything. ``lose_answer``: the request is
        handled normally (recorded), then the connection is dropped without the answer, as
        when a connection breaks after the server recorded a request.

        Args:
            status: An error status (400 to 599) to answer.
            times: How many answers this scripts.
            retry_after: A ``Retry-After`` header for the status: seconds, or a str sent as
                is (an HTTP date, say).
            disconnect: Close the connection without answering.
            delay: Seconds to wait before answering; longer than a client's timeout, a hang.
            path: Only requests to this endpoint's path (``"/api/v1/payments"``; no query)
                take these answers. ``None``: every request.
            lose_answer: Record the request, then drop the connection without answering.

        Raises:
            ValueError: An argument is out of range, ``status`` with ``disconnect``, or
                ``path`` is not one of the fake's endpoints.
        """
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599
        ):
            raise ValueError(f"status must be an error status (400 to 599), got {status!r}")
        if status is not None and disconnect:
            raise ValueError("give status or disconnect=True, not both")
        if lose_answer and (status is not None or disconnect):
            raise ValueError("lose_answer=True handles the request: not with status or disconnect")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an int >= 1, got {times!r}")
        if path is not None and path not in METHODS:
            raise ValueError(f"path must be one of {sorted(METHODS)} or None, got {path!r}")
        fault = _Fault(
            status,
            _retry_after_text(retry_after),
            disconnect,
            _seconds("delay", delay),
            lose_answer,
        )
        with self._lock:
            self._script.append([fault, times, path])

    def reset(self) -> None:
        """Forget the goals, payments, identities (and profiles), requests, scripted answers
        and connection counters. The settings (``known_visitors``, ``permissions``) stay."""
        with self._lock:
            self._goals.clear()
            self._goal_times.clear()
            self._payments.clear()
            self._identities.clear()
            self._profiles.clear()
            self._requests.clear()
            self._script.clear()
            self._seen = weakref.WeakSet()
            self._connections = 0
            self._max_concurrent = self._in_flight
            self._refused = 0

    def pause(self) -> None:
        """Hold every new request at the server until ``resume()`` (at most 30 s each)."""
        self._paused = True
        if self._gate is not None:
            self._gate.clear()

    def resume(self) -> None:
        """Let held requests, and new ones, through."""
        self._paused = False
        if self._gate is not None:
            self._gate.set()

    async def wait_held(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` requests are held by ``pause()``.

        Raises:
            TimeoutError: Fewer were held after ``timeout`` seconds.
            RuntimeError: The server is not started.
        """
        changed = self._held_changed
        if changed is None:
            raise RuntimeError("FakeDataFast is not started")

        async def held() -> None:
            while self._held < count:
                changed.clear()
                await changed.wait()

        try:
            await asyncio.wait_for(held(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"{self._held} request(s) held after {timeout:g} s, expected {count}"
            ) from None

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDataFast:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start listening in the running event loop.

        Raises:
            RuntimeError: The server already runs.
            OSError: The address cannot be bound.
        """
        if self._runner is not None:
            raise RuntimeError("FakeDataFast is already running")
        self._gate = asyncio.Event()
        if not self._paused:
            self._gate.set()
        self._closing = asyncio.Event()
        self._held_changed = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def close(self) -> None:
        """Stop the server; held and delayed requests are dropped. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        assert self._closing is not None
        assert self._gate is not None
        self._closing.set()
        self._gate.set()
        await runner.cleanup()

    # -- serving ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = _now()
        self._count_connection(request)
        self._in_flight += 1
        self._max_concurrent = max(self._max_concurrent, self._in_flight)
        response: web.Response | None = None
        parsed: Any = None
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                response = _envelope(413, f"request body larger than {_MAX_BODY} bytes")
                return response
            try:
                parsed = json.loads(raw, parse_constant=_reject_constant) if raw else None
            except ValueError:
                parsed = None
            over = self._over_capacity_now()
            if await self._hold() and await self._sleep(self._latency_now()):
                if over:
                    response = _fault_response(self._over_capacity, None)
                else:
                    response = await self._answer(request, parsed, arrived)
            if response is None and request.transport is not None:
                request.transport.close()
            # aiohttp ignores an answer to a closed connection.
            return response if response is not None else web.Response()
        finally:
            self._in_flight -= 1
            record = FakeRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=parsed,
                status=response.status if response is not None else None,
            )
            with self._lock:
                self._requests.append(record)

    def _latency_now(self) -> float:
        latency = self._latency
        if callable(latency):
            return max(0.0, float(latency()))
        if self._jitter and latency:
            return latency * self._random.uniform(1.0 - self._jitter, 1.0 + self._jitter)
        return latency

    def _over_capacity_now(self) -> bool:
        """Whether the request that just arrived is beyond the capacity (counted if so)."""
        over = self._capacity is not None and self._in_flight > self._capacity
        rate = self._rate_limit
        if not over and rate is not None:
            now = time.monotonic()
            self._tokens = min(max(1.0, rate / 10), self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
            else:
                over = True
        if over:
            with self._lock:
                self._refused += 1
        return over

    def _count_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        with self._lock:
            if transport not in self._seen:
                self._seen.add(transport)
                self._connections += 1

    async def _hold(self) -> bool:
        """Wait while paused; ``False`` when the server is closing."""
        assert self._gate is not None
        assert self._held_changed is not None
        if not self._gate.is_set():
            self._held += 1
            self._held_changed.set()
            try:
                await asyncio.wait_for(self._gate.wait(), _PAUSE_LIMIT)
            except asyncio.TimeoutError:
                pass
            finally:
                self._held -= 1
                self._held_changed.set()
        return not self._closing_now()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; ``False`` (at once) when the server is closing."""
        assert self._closing is not None
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
        return not self._closing_now()

    def _closing_now(self) -> bool:
        return self._closing is not None and self._closing.is_set()

    def _next_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for index, entry in enumerate(self._script):
                if entry[2] is not None and entry[2] != path:
                    continue
                entry[1] -= 1
                if entry[1] == 0:
                    del self._script[index]
                fault: _Fault = entry[0]
                return fault
            if self._fail_rate and self._random.random() < self._fail_rate:
                return self._random.choice(_RANDOM_FAULTS)
        return None

    async def _answer(
        self, request: web.Request, parsed: Any, arrived: datetime.datetime
    ) -> web.Response | None:
        """The answer to one request; ``None`` to drop the connection."""
        path = request.path
        fault = self._next_fault(path)
        if fault is not None:
            if not await self._sleep(fault.delay) or fault.disconnect:
                return None
            if fault.status is not None:
                return _fault_response(fault.status, fault.retry_after)
        response = self._route(request, parsed, arrived)
        if fault is not None and fault.lose_answer:
            return None  # handled (recorded), and the answer is lost with the connection
        return response

    def _route(self, request: web.Request, parsed: Any, arrived: datetime.datetime) -> web.Response:
        """The endpoint's own answer (its rules, what it records or deletes)."""
        path = request.path
        methods = METHODS.get(path)
        if methods is None:
            return _envelope(404, f"Not found: {path}")
        if request.method not in methods:
            allowed = " or ".join(methods)
            response = _envelope(405, f"Method {request.method} not allowed; use {allowed}")
            response.headers["Allow"] = ", ".join(methods)
            return response
        refusal = self._check_auth(request, PERMISSIONS[path])
        if refusal is not None:
            return refusal
        try:
            if request.method == "DELETE":
                if path == GOALS_PATH:
                    return self._delete_goals(request.query)
                return self._delete_payments(request.query)
            if request.content_type != "application/json":
                return _envelope(400, "Content-Type must be application/json")
            if not isinstance(parsed, dict):
                return _envelope(400, "Invalid JSON body: expected a JSON object")
            if path == GOALS_PATH:
                return self._create_goal(parsed, arrived)
            if path == PAYMENTS_PATH:
                return self._record_payment(parsed, arrived)
            return self._identify(parsed)
        except ValidationError as exc:
            return _envelope(400, str(exc))

    def _create_goal(self, body: dict[str, Any], arrived: datetime.datetime) -> web.Response:
        goal = goal_from_body(body)
        visitors = self._known_visitors
        if visitors is not None and goal.visitor_id not in visitors:
            return _envelope(404, _NO_PAGEVIEW)
        with self._lock:
            self._goals.append(goal)
            self._goal_times.append(arrived)
        data = [{"message": _SUCCESS_MESSAGE, "eventId": _new_event_id()}]
        return web.json_response({"status": "success", "data": data})

    def _record_payment(self, body: dict[str, Any], arrived: datetime.datetime) -> web.Response:
        payment = payment_from_body(body)
        transaction = payment.transaction_id
        with self._lock:
            duplicate = transaction in self._payments
            if not duplicate:
                self._payments[transaction] = (payment, arrived)
        if duplicate:
            message = _DUPLICATE_MESSAGE
        else:
            visitors, visitor = self._known_visitors, payment.visitor_id
            attributed = visitor is not None and (visitors is None or visitor in visitors)
            message = _PAYMENT_MESSAGE if attributed else _UNATTRIBUTED_MESSAGE
        return web.json_response({"message": message, "transaction_id": transaction})

    def _identify(self, body: dict[str, Any]) -> web.Response:
        identify = identify_from_body(body)
        visitors = self._known_visitors
        if visitors is not None and identify.visitor_id not in visitors:
            return _envelope(404, _NO_PAGEVIEW)
        with self._lock:
            self._identities.append(identify)
            profile = self._profiles.get(identify.user_id)
            created = profile is None
            if profile is None:
                profile = self._profiles[identify.user_id] = _new_event_id()
        message = f"User profile {'created' if created else 'updated'} successfully"
        return web.json_response(
            {"status": "success", "data": {"message": message, "profileId": profile}}
        )

    def _delete_goals(self, query: Mapping[str, str]) -> web.Response:
        which = goals_filter(query)
        with self._lock:
            kept = [
                (goal, at)
                for goal, at in zip(self._goals, self._goal_times, strict=True)
                if not which.matches(goal, at)
            ]
            deleted = len(self._goals) - len(kept)
            self._goals[:] = [goal for goal, _ in kept]
            self._goal_times[:] = [at for _, at in kept]
        return _deleted("goal", deleted, which.echoed)

    def _delete_payments(self, query: Mapping[str, str]) -> web.Response:
        which = payments_filter(query)
        with self._lock:
            doomed = [
                transaction
                for transaction, (payment, at) in self._payments.items()
                if which.matches(payment, at)
            ]
            for transaction in doomed:
                del self._payments[transaction]
        if which.transaction_id is not None and not doomed:
            return _envelope(404, f"Payment not found: no transaction {which.transaction_id!r}")
        return _deleted("payment", len(doomed), which.echoed)

    def _check_auth(self, request: web.Request, permission: str) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _envelope(401, "Missing API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(token.strip().encode(), self._api_key.encode()):
            return _envelope(401, "Invalid API key")
        if not self._api_key.startswith("dft_"):
            return None
        website = request.query.get("websiteId", "")
        if not website:
            return _envelope(400, "websiteId query parameter is required with a dft_ token")
        if self._website_id is not None and website != self._website_id:
            return _envelope(403, f"This token has no access to website {website!r}")
        if permission not in self._permissions:
            return _envelope(403, f"This API token lacks {permission} permission")
        return None


def _deleted(noun: str, count: int, echoed: Mapping[str, str]) -> web.Response:
    """A delete's success answer: how many were deleted, and the filters echoed."""
    message = f"{count} {noun}{'' if count == 1 else 's'} deleted successfully"
    data = [{"message": message, "deleted": count, **echoed}]
    return web.json_response({"status": "success", "data": data})
