"""``DataFast``: the thin public facade. Settings in (``_options``), verbs out: requests to
``_intake`` (each kind's rules in ``_kinds``; payments, identify, deletes in ``_write_api``),
``send`` and the life cycle to ``_run.Life``."""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from ._config import check_positive, mask_key
from ._delivery import Delivery
from ._intake import Intake
from ._kinds import GOALS, goals
from ._models import GoalResult, Stats
from ._options import OnFull, resolve_options
from ._reporting import FailureCallback, SuccessCallback
from ._retry import RetryPolicy
from ._run import Life, Run
from ._transport import Transport
from ._write_api import WriteAPI

__all__ = ["DataFast"]

_DISABLED = GOALS.disabled()
# The running loop of this thread (None outside one): the hot path's one check, in C.
_get_running_loop = asyncio._get_running_loop


class DataFast(WriteAPI):
    """The DataFast client (goals here; payments, identify and deletes from ``WriteAPI``):
    validate now, queue in memory, deliver in the background.

    Args:
        api_key: A ``df_`` website key or a ``dft_`` account token; ``None`` reads
            ``DATAFAST_API_KEY``. Never shown whole in ``repr()``, logs or errors.
        website_id: The website's id, required with a ``dft_`` token; ``None`` reads
            ``DATAFAST_WEBSITE_ID``.
        base_url: ``None`` reads ``DATAFAST_BASE_URL``, else ``https://datafa.st``.
        concurrency: The most requests in flight at once (queue and ``send`` together): the
            ceiling of the adaptive limit, which starts at ``min(8, concurrency)``, grows
            while goals wait and answers succeed, and shrinks on 429s, 503s and timeouts
            (``stats().concurrency_limit``).
        max_queue_size: The most goals waiting in memory.
        on_full: What ``track`` does when the queue is full: ``"drop"`` the goal (its
            ``Delivery`` settles with ``QueueFullError``), ``"block"`` until there is room
            (at most ``timeout`` seconds), or ``"raise"`` ``QueueFullError``.
        timeout: Seconds for one HTTP attempt (and the most ``track`` blocks).
        retry: The ``RetryPolicy``.
        shutdown_timeout: The default deadline of ``aclose()``, in seconds.
        on_success: Called with ``(goal, result)`` once per delivered goal; sync or async.
        on_failure: Called with ``(goal, error)`` once per accepted goal that finally failed;
            sync or async.
        enabled: ``False``: validate goals and send nothing. ``None`` (the default) reads
            ``DATAFAST_ENABLED`` (``0``/``false``/``no``/``off`` disable), else ``True``.
        session: An ``aiohttp.ClientSession`` to use; you then close it yourself.
        ssl: An ``ssl.SSLContext`` for the client's own session: a private CA, a client
            certificate. (With ``session=``, configure your session instead.)
        spool_path: A directory for the durable spool (created 0700 if needed); ``None``
            reads ``DATAFAST_SPOOL_PATH``, else no spool. With a spool every accepted goal is
            journaled there until it settles: a restart, a crash or a long outage loses none
            (see docs/guarantees.md, "Durability"); goals beyond ``max_queue_size`` wait on disk.
        spool_max_bytes: The most bytes the spool's files of this client may hold; goals are
            refused (``on_full``) only past it.

    Proxies come from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, as with requests and httpx;
    a plain-``http://`` base URL (loopback only) goes through a proxy only on loopback too.

    Raises:
        ConfigurationError: A setting is missing or wrong.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        website_id: str | None = None,
        base_url: str | None = None,
        concurrency: int = 64,
        max_queue_size: int = 10_000,
        on_full: OnFull = "drop",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        shutdown_timeout: float = 10.0,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        enabled: bool | None = None,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 64 * 2**20,
        _transport_factory: Callable[[], Transport] | None = None,
        _adaptive: bool = True,
        _spool_options: Mapping[str, Any] | None = None,
    ) -> None:
        # fmt: off
        self._options = options = resolve_options(
            api_key, website_id, base_url, concurrency, max_queue_size, on_full, timeout, retry,
            shutdown_timeout, on_success, on_failure, enabled, session, ssl, spool_path,
            spool_max_bytes, _transport_factory, _adaptive, _spool_options,
        )
        # fmt: on
        self._life = Life(options)
        self._intake = Intake(options, self._life)

    @property
    def _run(self) -> Run:  # the current run (tests and the command line look at it)
        return self._life.run

    def _without_spool(self) -> None:
        """Ignore ``DATAFAST_SPOOL_PATH`` (``import`` without ``--spool``), before any use."""
        self._options.spool_path = None
        self._life = Life(self._options)
        self._intake = Intake(self._options, self._life)

    def __repr__(self) -> str:
        s = self._options.settings
        return (
            f"DataFast(api_key={mask_key(s.api_key)!r}, website_id={s.website_id!r}, "
            f"base_url={s.base_url!r}, enabled={s.enabled!r}, state={self._run.state.value!r})"
        )

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> DataFast:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the sender in the running loop; a no-op when it already runs.

        A closed client starts again with a fresh queue, counters and HTTP session, in this
        loop or another one.
        """
        if self._options.enabled:
            await self._life.start()

    # -- intake ---------------------------------------------------------------------------

    def track_nowait(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Delivery[GoalResult]:
        """Validate a goal and queue it; never waits and never touches the network.

        May be called from any thread: the goal is handed to the client's loop thread-safely.

        Returns:
            The goal's ``Delivery``. When the queue is full and ``on_full="drop"``, it is
            already settled with a ``QueueFullError``.

        Raises:
            ValidationError: The goal breaks one of the API's rules.
            QueueFullError: The queue is full and ``on_full`` is ``"raise"`` or ``"block"``.
            ClientClosedError: The client was closed.
        """
        # Validated here, in the caller's thread; the Goal object itself is built later, and
        # only if somebody asks for it (a callback, delivery.goal).
        delivery = GOALS.pending(goals.validate(visitor_id, name, description, metadata))
        if not self._options.enabled:
            delivery._settle(_DISABLED)
            return delivery
        # The hot path, inline: the client's own loop, no spool, room in the queue.
        run = self._life.run
        if run.intake is _get_running_loop():
            spool = run.spool
            if spool is not None:
                return self._intake.spooled(run, spool, delivery)
            if run.queue.offer(delivery):
                sender = run.sender
                if sender.idle:
                    sender.notify()
                return delivery
            return self._intake.refuse(delivery)
        return self._intake.elsewhere(delivery)

    async def track(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Delivery[GoalResult]:
        """Validate a goal and queue it; never waits on the network.

        With ``on_full="block"`` it waits for room in a full queue, at most ``timeout``
        seconds.

        Returns:
            The goal's ``Delivery``.

        Raises:
            ValidationError: The goal breaks one of the API's rules.
            QueueFullError: The queue is full and ``on_full`` is ``"raise"``, or it stayed
                full for ``timeout`` seconds with ``on_full="block"``.
            ClientClosedError: The client was closed.
        """
        if self._options.on_full != "block":
            return self.track_nowait(visitor_id, name, description=description, metadata=metadata)
        delivery = GOALS.pending(goals.validate(visitor_id, name, description, metadata))
        if not self._options.enabled:
            delivery._settle(_DISABLED)
            return delivery
        return await self._intake.blocking(delivery)

    # -- sending now ----------------------------------------------------------------------

    async def send(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> GoalResult:
        """Deliver one goal now, without the queue, with the retry policy.

        It shares the ``concurrency`` limit and any ``Retry-After`` pause with the queue, and
        leaves the queue's counters and the callbacks alone.

        Returns:
            The API's answer (``GoalResult(None, "disabled")`` when disabled).

        Raises:
            ValidationError: The goal breaks one of the API's rules.
            APIError: The API refused the goal (the matching subclass), or kept failing.
            TransportError: No answer came, attempt after attempt.
            ClientClosedError: The client was closed.
        """
        fields = goals.validate(visitor_id, name, description, metadata)
        result: GoalResult = await self._life.send_now(GOALS, GOALS.encode(fields))
        return result

    # -- waiting --------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every goal accepted before this call is delivered or has finally failed.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as that takes.

        With a spool, goals waiting on disk count (those beyond ``max_queue_size``, and those
        an earlier run left, once taken over); it returns ``False`` as soon as every goal still
        pending is parked on disk behind an API that is down or refuses every request.

        Returns:
            ``True`` when they all ended, ``False`` if the timeout came first (or, with a
            spool, when everything pending is parked on disk).
        """
        if timeout is not None:
            timeout = check_positive("timeout", timeout, allow_zero=True)
        if not self._options.enabled:
            return True
        return await self._life.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> Stats:
        """Stop accepting requests, deliver what can be delivered by one deadline, then stop.

        Requests still undelivered at the deadline stay in the spool (with one), else fail
        with ``ShutdownError`` (``on_failure``); every ``Delivery`` settles and one WARNING
        counts them. It returns within ``timeout`` plus about 1 s, completes even when the
        calling task is being cancelled (then re-raises), and again returns the same ``Stats``.

        Args:
            timeout: Seconds until the deadline; ``None`` uses ``shutdown_timeout``.
        """
        return await self._life.aclose(timeout)

    # -- reading --------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters of the current (or last) run."""
        return self._life.run.stats()

    def _circuit_states(self) -> dict[str, str]:  # for datafast_async.metrics; any thread
        return self._life.run.circuit_states()

    def __del__(self) -> None:
        life: Life | None = getattr(self, "_life", None)
        if life is not None:
            life.collected(self)
