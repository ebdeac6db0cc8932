"""``DataFast``: the thin public client that wires the queue, the sender and the transport."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as ssl_module
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio

from ._config import check_count, check_positive, mask_key, resolve_settings
from ._delivery import Delivery, pending
from ._errors import ClientClosedError, ConfigurationError, DataFastError, QueueFullError
from ._kinds import GOALS, KINDS, goals
from ._limiter import Limiter
from ._models import GoalResult, Stats
from ._reporting import DropLog, FailureCallback, Reporter, SuccessCallback, logger
from ._retry import RetryPolicy
from ._run import Run, RunState, await_uncancellable, inherit, watch
from ._sender import Sender
from ._spool import Journal, RunSpool, available, namespace
from ._transport import AiohttpTransport, Transport, proxy_for

__all__ = ["DataFast"]

OnFull = Literal["drop", "block", "raise"]
_ON_FULL = ("drop", "block", "raise")
_DISABLED = GoalResult(event_id=None, message="disabled")
# Seconds start() waits for the spool's files to be taken over (a large spool's scan takes
# longer: about 2 s for 100,000 goals).
_START_WAIT = 1.0
# The running loop of this thread (None outside one): the hot path's one check, in C.
_get_running_loop = asyncio._get_running_loop

_OTHER_LOOP = (
    "this DataFast client runs in another event loop, which is still running: call track, "
    "send, flush and aclose in that loop"
)
_NEW, _RUNNING, _CLOSING, _CLOSED = (
    RunState.NEW,
    RunState.RUNNING,
    RunState.CLOSING,
    RunState.CLOSED,
)


class DataFast:
    """The DataFast goals client: validate now, queue in memory, deliver in the background.

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
            (see the README's "Durability"); goals beyond ``max_queue_size`` wait on disk.
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
        self._settings = resolve_settings(api_key, website_id, base_url, enabled)
        self._enabled = self._settings.enabled
        self._concurrency = check_count("concurrency", concurrency)
        self._max_queue_size = check_count("max_queue_size", max_queue_size)
        if on_full not in _ON_FULL:
            raise ConfigurationError(f"on_full must be one of {_ON_FULL}, got {on_full!r}")
        self._on_full: OnFull = on_full
        self._timeout = check_positive("timeout", timeout)
        self._shutdown_timeout = check_positive(
            "shutdown_timeout", shutdown_timeout, allow_zero=True
        )
        if retry is None:
            retry = RetryPolicy()
        elif not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._retry = retry
        for label, callback in (("on_success", on_success), ("on_failure", on_failure)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{label} must be callable or None")
        self._on_success = on_success
        self._on_failure = on_failure
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigurationError("session must be an aiohttp.ClientSession")
        self._session = session
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise ConfigurationError("ssl must be an ssl.SSLContext or None")
        if ssl is not None and session is not None:
            raise ConfigurationError(
                "ssl= and session= together: configure the SSL context on your own session "
                "(its connector) instead"
            )
        self._ssl = ssl
        self._spool_path = self._check_spool(spool_path)
        self._spool_max_bytes = check_count("spool_max_bytes", spool_max_bytes)
        self._spool_options = dict(_spool_options or {})
        self._transport_factory = _transport_factory
        self._adaptive = _adaptive
        spooled = self._spool_path is not None
        self._drops = DropLog(
            self._max_queue_size, spool_max_bytes=self._spool_max_bytes if spooled else None
        )
        # Built once: a full queue may refuse every goal of a busy app.
        self._full_message = (
            f"the queue ({self._max_queue_size} goals) and the spool "
            f"({self._spool_max_bytes} bytes) are full, or the spool cannot be written"
            if spooled
            else f"the queue is full ({self._max_queue_size} goals)"
        )
        self._run = self._new_run()
        self._warned_lazy = False
        self._forked_from: int | None = None  # goals the parent's run held, said once here
        watch(self)

    def _check_spool(self, spool_path: str | os.PathLike[str] | None) -> str | None:
        if spool_path is None:
            spool_path = os.environ.get("DATAFAST_SPOOL_PATH") or None
        if spool_path is None or not self._enabled:
            return None
        try:
            path = os.fspath(spool_path)
        except TypeError:
            raise ConfigurationError(
                f"spool_path must be a str or a path, got {type(spool_path).__name__}"
            ) from None
        if not isinstance(path, str) or not path.strip():
            raise ConfigurationError(f"spool_path must be a directory's path, got {path!r}")
        if not available():
            raise ConfigurationError(
                "spool_path needs POSIX file locks (fcntl.flock), which this platform does not "
                "have: leave spool_path and DATAFAST_SPOOL_PATH unset here"
            )
        path = os.path.expanduser(path)
        # An absolute path (the usual one) is made absolute without a getcwd() call: the
        # client is often built in a coroutine (a lifespan), where that is a blocking call.
        return os.path.normpath(path) if os.path.isabs(path) else os.path.abspath(path)

    def __repr__(self) -> str:
        s = self._settings
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
        if not self._enabled:
            return
        run = self._run
        if run.state in (_RUNNING, _CLOSING) and run.loop_is_gone():
            run.orphan()
        if run.state is _CLOSING and run.close_task is not None:
            await await_uncancellable(run.close_task)
        run = self._current_run(start=True)
        if run.spool is not None:
            # The files of an earlier run are taken over in a thread: start() waits for that
            # (goals tracked from then on go behind theirs), but an app's start-up is not held
            # for a large spool's scan: past _START_WAIT it goes on in the background, and
            # flush() waits for it.
            await run.spool.wait_open(_START_WAIT)

    def _current_run(self, *, start: bool) -> Run:
        """The run that serves the running loop, started if needed (in the loop's thread).

        ``start``: called by ``start()`` (not lazily by ``track``/``send``/``flush``).
        """
        loop = asyncio.get_running_loop()
        run = self._run
        if run.state is _RUNNING and run.loop is loop:
            return run
        if self._forked_from is not None:
            self._say_forked()
            run = self._run
        if run.state in (_RUNNING, _CLOSING) and run.loop_is_gone():
            run.orphan()
        if run.state is _CLOSED and (start or run.orphaned):
            run = self._run = self._new_run()
        if run.state is _NEW:
            if not start:
                self._warn_lazy_start()
            self._bind(run, loop)
            return run
        if run.state is _RUNNING:
            raise DataFastError(_OTHER_LOOP)
        raise ClientClosedError("the DataFast client is closed; call start() to use it again")

    def _new_run(self) -> Run:
        initial = min(8, self._concurrency) if self._adaptive else self._concurrency
        return Run(self._max_queue_size, self._drops, initial)

    def _warn_lazy_start(self) -> None:
        if self._warned_lazy:
            return
        self._warned_lazy = True
        logger.warning(
            "the DataFast client was started lazily by its first goal: close it so that goals "
            "still queued are delivered before the process exits (`async with DataFast(...)`, "
            "`await df.aclose()`, or the datafast_async.starlette lifespan); goals still queued "
            "at exit are lost"
        )

    def _bind(self, run: Run, loop: asyncio.AbstractEventLoop) -> None:
        transport: Transport
        settings = self._settings
        if self._transport_factory is not None:
            transport = self._transport_factory()
        else:
            transport = AiohttpTransport(
                settings.base_url,
                settings.headers,
                timeout=self._timeout,
                concurrency=self._concurrency,
                session=self._session,
                ssl=self._ssl,
                proxy=None if self._session is not None else proxy_for(settings.url),
            )
        targets = [settings.target(kind.path) for kind in KINDS]
        spool = self._new_spool(run, loop, targets)
        run.bind(
            loop,
            transport,
            Reporter(self._on_success, self._on_failure),
            lambda bound: Sender(
                queue=bound.queue,
                transport=bound.transport,
                policy=self._retry,
                limiter=Limiter(self._concurrency, loop, adaptive=self._adaptive),
                fate=bound.fate,
                loop=loop,
                workers=self._concurrency,
                targets=targets,
                on_orphaned=bound.orphan_in_loop,
                spool=spool,
            ),
            spool,
        )

    def _new_spool(
        self, run: Run, loop: asyncio.AbstractEventLoop, targets: list[str]
    ) -> RunSpool | None:
        """The run's spool (``spool_path``), opened in a thread from now on."""
        if self._spool_path is None:
            return None
        settings = self._settings
        assert settings.api_key is not None  # resolve_settings requires it when enabled
        options = dict(self._spool_options)
        # The CLI's `spool DIR --replay --namespace NS`: another key's goals (a rotated or
        # revoked key), sent with this one because the user asked for it.
        space = options.pop("namespace", None) or namespace(settings.api_key, settings.website_id)
        journal = Journal(self._spool_path, space, max_bytes=self._spool_max_bytes, **options)
        # Records keep the path they are sent to below the base URL's own path (which is not
        # part of the namespace either): a record is rebuilt by the kind its path names.
        prefix = urlsplit(settings.base_url).path
        return RunSpool(
            journal,
            [prefix + target for target in targets],
            loop,
            on_refill=lambda deliveries: run.sender.refill.refill(deliveries),
            on_damaged=run.fate.damaged,
        )

    # -- processes ------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: the parent's run (queue, session, journal) stays the parent's;
        this client starts afresh on first use and says so once."""
        run = self._run
        run.queue.after_fork()
        if run.state is _NEW and not len(run.queue):
            return
        if run.state is _CLOSED and not run.queue.pending:
            return
        inherit(run)
        if run.spool is not None:
            run.spool.abandon_after_fork()  # the parent's files: closed here, still locked
        self._forked_from = run.queue.pending
        self._run = self._new_run()

    def _say_forked(self) -> None:
        count, self._forked_from = self._forked_from, None
        logger.warning(
            "this process was forked from one whose DataFast client was in use (%d goals "
            "pending there): they belong to the parent process and are not sent from here; "
            "this client starts afresh. Create clients after the fork (gunicorn --preload: "
            "in the app's lifespan) to avoid this",
            count,
        )

    def _pending_at_exit(self) -> int:
        """The goals still pending as the process exits; the exit WARNING says them, so the
        client's garbage collection in the interpreter's teardown does not say them again."""
        run = self._run
        if run.state is _CLOSED or not self._enabled:
            return 0
        pending = run.queue.pending
        if run.spool is not None and run.spool.close_at_exit(pending):
            run.warned = True
            return 0  # journaled: the next start sends them (said by close_at_exit)
        if pending:
            run.warned = True
        return pending

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
        delivery = pending(GOALS, goals.validate(visitor_id, name, description, metadata))
        if not self._enabled:
            delivery._settle(_DISABLED)
            return delivery
        run = self._run
        if run.intake is _get_running_loop():
            spool = run.spool
            if spool is not None:
                return self._track_spooled(run, spool, delivery)
            if run.queue.offer(delivery):
                sender = run.sender
                if sender.idle:
                    sender.notify()
                return delivery
            return self._refuse(delivery)
        return self._track_elsewhere(delivery)

    def _track_spooled(
        self, run: Run, spool: RunSpool, delivery: Delivery[GoalResult]
    ) -> Delivery[GoalResult]:
        """With a spool: into memory and the journal, or (beyond the queue's bound, or behind
        goals already waiting on disk) onto disk only; refused only when the spool is full
        (or cannot be written) and the queue is full too. From any thread."""
        if not self._offer_spooled(run, spool, delivery):
            return self._refuse(delivery)
        sender, loop = run.sender, run.loop
        if loop is _get_running_loop():
            if sender.idle:
                sender.notify()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(sender.notify)
        return delivery

    @staticmethod
    def _offer_spooled(run: Run, spool: RunSpool, delivery: Delivery[GoalResult]) -> bool:
        """Into memory and the journal, or onto disk only; ``False`` if neither has room."""
        queue = run.queue
        if not queue.spooled and queue.offer(delivery):
            spool.accept(delivery)
        elif spool.can_spill():
            queue.spill(delivery)
            spool.spill(delivery)
        elif queue.offer(delivery):  # the spool cannot take it now: memory, as without one
            spool.accept(delivery)
        else:
            return False
        return True

    def _track_elsewhere(self, delivery: Delivery[GoalResult]) -> Delivery[GoalResult]:
        """track_nowait off the hot path: start lazily, or hand over from another thread."""
        running = _get_running_loop()
        run = self._run
        # (After a fork the run is a fresh NEW one: _current_run also says so, once.)
        if running is not None and (run.state is _NEW or run.orphaned or run.loop_is_gone()):
            run = self._current_run(start=False)
        if run.state not in (_NEW, _RUNNING) or (run.bound and run.loop.is_closed()):
            raise ClientClosedError("the DataFast client is closed; call start() to use it again")
        if run.bound and run.spool is not None and run.state is _RUNNING:
            return self._track_spooled(run, run.spool, delivery)
        # offer() raises ClientClosedError once aclose() has stopped intake, under the queue's
        # own lock: a goal can never slip into a run that is being closed.
        if not run.queue.offer(delivery):
            return self._refuse(delivery)
        if run.spool is not None:
            # bind() ran meanwhile (in the loop's thread), after this thread looked: its
            # snapshot of the queue may have missed this goal (accepting it twice is harmless).
            run.spool.accept(delivery)
        if run.bound:
            sender, loop = run.sender, run.loop
            if loop is running:
                sender.notify()
            else:
                # RuntimeError: the loop closed meanwhile; the goal stays counted as queued.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(sender.notify)
        # Not started yet (no loop): the goal waits in the queue for start().
        return delivery

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
        if self._on_full != "block":
            return self.track_nowait(visitor_id, name, description=description, metadata=metadata)
        delivery = pending(GOALS, goals.validate(visitor_id, name, description, metadata))
        if not self._enabled:
            delivery._settle(_DISABLED)
            return delivery
        run = self._current_run(start=False)
        spool = run.spool
        if spool is not None:
            # With a spool, a full queue is no reason to wait: the goal goes to disk. Only a
            # spool that is full (or cannot be written) makes track() wait for room.
            if not self._offer_spooled(run, spool, delivery):
                delivery = await self._wait_for_room(run, delivery)
                spool.accept(delivery)
            run.sender.notify()
            return delivery
        return await self._wait_for_room(run, delivery)

    async def _wait_for_room(
        self, run: Run, delivery: Delivery[GoalResult]
    ) -> Delivery[GoalResult]:
        """``on_full="block"``: wait for room in the queue (at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not run.queue.offer(delivery):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self._refuse(delivery, waited=True)
            room = run.queue.room_waiter(loop)
            try:
                await asyncio.wait((room,), timeout=remaining)
            except BaseException:
                if room.done() and not room.cancelled():
                    run.queue.pass_on_room()  # woken for room it will not use: the next goes
                raise
            finally:
                run.queue.discard_room_waiter(room)
            if run.state is not _RUNNING:
                raise ClientClosedError("the DataFast client was closed while track() waited")
        run.sender.notify()
        return delivery

    def _refuse(
        self, delivery: Delivery[GoalResult], *, waited: bool = False
    ) -> Delivery[GoalResult]:
        """A goal that found the queue full: count it, then drop it or raise."""
        if waited:
            message = (
                f"the queue stayed full ({self._max_queue_size} goals) for {self._timeout:g} s"
            )
        else:
            message = self._full_message
        error = QueueFullError(message)
        drop = self._on_full == "drop"
        self._run.fate.refused(delivery, error, settle=drop)
        if drop:
            return delivery
        raise error

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
        if not self._enabled:
            return _DISABLED
        result: GoalResult = await self._current_run(start=False).sender.send_now(GOALS, fields)
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
        run = self._run
        if not self._enabled or run.state is _CLOSED or (run.state is _NEW and not len(run.queue)):
            return True
        if run.state is not _CLOSING:
            run = self._current_run(start=False)
        spool = run.spool
        if spool is not None:
            # Goals an earlier run left in the spool count once it is open (taken over).
            loop = asyncio.get_running_loop()
            started = loop.time()
            await spool.wait_open(timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (loop.time() - started))
            if run.sender.all_parked():
                return False  # every goal pending waits on disk for an API that is down
        future = run.queue.flush_waiter(asyncio.get_running_loop())
        if future is None:
            return True
        try:
            with anyio.move_on_after(timeout):
                # False: every goal still pending was parked on disk meanwhile (a spool).
                return await future
            return False
        finally:
            run.queue.discard_flush_waiter(future)

    async def aclose(self, timeout: float | None = None) -> Stats:
        """Stop accepting goals, deliver what can be delivered by one deadline, then stop.

        Goals still undelivered at the deadline are reported to ``on_failure`` with a
        ``ShutdownError`` and their ``Delivery`` settles with it; the client's own HTTP session
        is closed. It completes even when the calling task is being cancelled (and then
        re-raises the cancellation), and calling it again returns the same ``Stats``.

        Args:
            timeout: Seconds until the deadline; ``None`` uses ``shutdown_timeout``.

        Returns:
            The final ``Stats``.
        """
        run = self._run
        if run.state in (_RUNNING, _CLOSING) and run.loop_is_gone():
            run.orphan()
        if run.state is _CLOSED:
            return run.final_stats or run.stats()
        if run.bound and run.loop is not asyncio.get_running_loop():
            # Its loop still runs (in another thread): its tasks cannot be touched from here.
            raise DataFastError(_OTHER_LOOP)
        if run.state is _NEW:
            if not len(run.queue) or not self._enabled:
                run.state = _CLOSED
                run.final_stats = run.stats()
                return run.final_stats
            self._current_run(start=True)  # goals handed over before start: deliver them
        seconds = (
            self._shutdown_timeout
            if timeout is None
            else check_positive("timeout", timeout, allow_zero=True)
        )
        return await await_uncancellable(run.begin_close(seconds))

    # -- reading --------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters of the current (or last) run."""
        return self._run.stats()

    def __del__(self) -> None:
        run: Run | None = getattr(self, "_run", None)
        if run is None or run.state is _CLOSED or run.warned:
            return
        pending = run.queue.pending
        if pending:
            run.warned = True
            message = (
                f"DataFast client garbage-collected without aclose() with {pending} goals "
                "pending; they may be lost"
            )
            logger.warning("%s", message)
            warnings.warn(message, ResourceWarning, source=self, stacklevel=2)
