"""``DataFast``: the thin public client that wires the queue, the sender and the transport."""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Literal

import aiohttp
import anyio

from ._config import check_count, check_positive, mask_key, resolve_settings
from ._delivery import Delivery, pending
from ._errors import ClientClosedError, ConfigurationError, DataFastError, QueueFullError
from ._limiter import Limiter
from ._models import Goal, GoalResult, Stats
from ._queue import GoalQueue
from ._reporting import FailureCallback, Reporter, SuccessCallback, logger
from ._retry import RetryPolicy
from ._sender import Sender
from ._transport import AiohttpTransport, Transport
from ._validation import validate_goal

__all__ = ["DataFast"]

OnFull = Literal["drop", "block", "raise"]
_ON_FULL = ("drop", "block", "raise")
_DISABLED = GoalResult(event_id=None, message="disabled")
_DROP_LOG_INTERVAL = 10.0  # seconds between two "queue full" warnings
_CALLBACK_GRACE = 1.0  # seconds async callbacks get after the shutdown deadline
_CLOSE_TRANSPORT_TIMEOUT = 5.0
_ORPHAN_CLOSE_TIMEOUT = 1.0  # seconds to close the session while the loop is ending
# The running loop of this thread (None outside one): the hot path's one check, in C.
_get_running_loop = asyncio._get_running_loop
_NO_LOOP = object()  # a run's intake while it accepts nothing

_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"


class _Run:
    """One life of a client, from ``start()`` to ``aclose()``, bound to one event loop.

    It never refers back to the client, so a client that is dropped without ``aclose()`` can
    be garbage-collected (and warn) while its workers still run.
    """

    def __init__(self, max_queue_size: int) -> None:
        self.queue = GoalQueue(max_queue_size)
        self.state = _NEW
        # The run's loop while it accepts goals (else _NO_LOOP): the hot path compares it
        # with the running loop, so another thread, or a new loop in this thread, takes the
        # slow path.
        self.intake: object = _NO_LOOP
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sender: Sender | None = None
        self.transport: Transport | None = None
        self.reporter: Reporter | None = None
        self.close_task: asyncio.Task[Stats] | None = None
        self.final_stats: Stats | None = None
        self.orphaned = False
        self.warned = False

    def loop_is_gone(self) -> bool:
        """The loop this run was bound to has ended (closed, or stopped running)."""
        loop = self.loop
        if loop is None:
            return False
        if loop.is_closed():
            return True
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return current is not loop and not loop.is_running()


class DataFast:
    """The DataFast goals client: validate now, queue in memory, deliver in the background.

    Args:
        api_key: A ``df_`` website key or a ``dft_`` account token; ``None`` reads
            ``DATAFAST_API_KEY``. Never shown whole in ``repr()``, logs or errors.
        website_id: The website's id, required with a ``dft_`` token; ``None`` reads
            ``DATAFAST_WEBSITE_ID``.
        base_url: ``None`` reads ``DATAFAST_BASE_URL``, else ``https://datafa.st``.
        concurrency: The most requests in flight at once (queue and ``send`` together).
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

    Raises:
        ConfigurationError: A setting is missing or wrong.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        website_id: str | None = None,
        base_url: str | None = None,
        concurrency: int = 8,
        max_queue_size: int = 10_000,
        on_full: OnFull = "drop",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        shutdown_timeout: float = 10.0,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        enabled: bool | None = None,
        session: aiohttp.ClientSession | None = None,
        _transport_factory: Callable[[], Transport] | None = None,
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
        self._transport_factory = _transport_factory
        self._next_drop_log = 0.0
        self._dropped_logged = 0
        # Built once: a full queue may refuse every goal of a busy app.
        self._full_message = f"the queue is full ({self._max_queue_size} goals)"
        self._run = _Run(self._max_queue_size)

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"DataFast(api_key={mask_key(s.api_key)!r}, website_id={s.website_id!r}, "
            f"base_url={s.base_url!r}, enabled={s.enabled!r}, state={self._run.state!r})"
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
            _orphan(run)
        if run.state == _CLOSING and run.close_task is not None:
            await _await_uncancellable(run.close_task)
        self._current_run(start=True)

    def _current_run(self, *, start: bool) -> _Run:
        """The run that serves the running loop, started if needed (in the loop's thread)."""
        loop = asyncio.get_running_loop()
        run = self._run
        if run.state == _RUNNING and run.loop is loop:
            return run
        if run.state in (_RUNNING, _CLOSING) and run.loop_is_gone():
            _orphan(run)
        if run.state == _CLOSED and (start or run.orphaned):
            run = self._run = _Run(self._max_queue_size)
        if run.state == _NEW:
            self._bind(run, loop)
            return run
        if run.state == _RUNNING:
            raise DataFastError(
                "this DataFast client runs in another event loop; use it there, or aclose() it "
                "first"
            )
        raise ClientClosedError("the DataFast client is closed; call start() to use it again")

    def _bind(self, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        if self._transport_factory is not None:
            transport = self._transport_factory()
        else:
            transport = AiohttpTransport(
                self._settings.url,
                self._settings.headers,
                timeout=self._timeout,
                concurrency=self._concurrency,
                session=self._session,
            )
        reporter = Reporter(self._on_success, self._on_failure)
        run.transport = transport
        run.reporter = reporter
        run.loop = loop
        run.sender = Sender(
            queue=run.queue,
            transport=transport,
            policy=self._retry,
            limiter=Limiter(self._concurrency, loop),
            reporter=reporter,
            loop=loop,
            workers=self._concurrency,
            on_orphaned=lambda: _orphan_in_loop(run),
        )
        run.state = _RUNNING
        run.intake = loop
        run.sender.start()

    # -- intake ---------------------------------------------------------------------------

    def track_nowait(
        self,
        visitor_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Delivery:
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
        delivery = pending(*validate_goal(visitor_id, name, description, metadata))
        if not self._enabled:
            delivery._settle(_DISABLED)
            return delivery
        run = self._run
        if run.intake is _get_running_loop():
            if run.queue.offer(delivery):
                sender = run.sender
                if sender.idle:  # type: ignore[union-attr]
                    sender.notify()  # type: ignore[union-attr]
                return delivery
            return self._refuse(delivery)
        return self._track_elsewhere(delivery)

    def _track_elsewhere(self, delivery: Delivery) -> Delivery:
        """track_nowait off the hot path: start lazily, or hand over from another thread."""
        running = _get_running_loop()
        run = self._run
        if running is not None and (run.state == _NEW or run.orphaned or run.loop_is_gone()):
            run = self._current_run(start=False)
        if run.state not in (_NEW, _RUNNING) or (run.loop is not None and run.loop.is_closed()):
            raise ClientClosedError("the DataFast client is closed; call start() to use it again")
        # offer() raises ClientClosedError once aclose() has stopped intake, under the queue's
        # own lock: a goal can never slip into a run that is being closed.
        if not run.queue.offer(delivery):
            return self._refuse(delivery)
        sender, loop = run.sender, run.loop
        if sender is not None and loop is not None:
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
    ) -> Delivery:
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
        delivery = pending(*validate_goal(visitor_id, name, description, metadata))
        if not self._enabled:
            delivery._settle(_DISABLED)
            return delivery
        run = self._current_run(start=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not run.queue.offer(delivery):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self._refuse(delivery, waited=True)
            room = run.queue.room_waiter(loop)
            try:
                await asyncio.wait((room,), timeout=remaining)
            finally:
                run.queue.discard_room_waiter(room)
            if run.state != _RUNNING:
                raise ClientClosedError("the DataFast client was closed while track() waited")
        run.sender.notify()  # type: ignore[union-attr]
        return delivery

    def _refuse(self, delivery: Delivery, *, waited: bool = False) -> Delivery:
        """A goal that found the queue full: count it, then drop it or raise."""
        dropped = self._run.queue.record_drop()
        self._log_drops(dropped)
        if waited:
            message = (
                f"the queue stayed full ({self._max_queue_size} goals) for {self._timeout:g} s"
            )
        else:
            message = self._full_message
        error = QueueFullError(message)
        if self._on_full == "drop":
            delivery._settle(error)
            return delivery
        raise error

    def _log_drops(self, dropped: int) -> None:
        now = time.monotonic()
        if now < self._next_drop_log:
            return
        self._next_drop_log = now + _DROP_LOG_INTERVAL
        count, self._dropped_logged = dropped - self._dropped_logged, dropped
        logger.warning(
            "queue full (max_queue_size=%d): %d goals dropped since the last warning",
            self._max_queue_size,
            count,
        )

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
        goal = Goal(visitor_id, name, description, metadata)
        if not self._enabled:
            return _DISABLED
        run = self._current_run(start=False)
        assert run.sender is not None
        return await run.sender.send_now(goal)

    # -- waiting --------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every goal accepted before this call is delivered or has finally failed.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as that takes.

        Returns:
            ``True`` when they all ended, ``False`` if the timeout came first.
        """
        if timeout is not None:
            timeout = check_positive("timeout", timeout, allow_zero=True)
        run = self._run
        if not self._enabled or run.state == _CLOSED or (run.state == _NEW and not len(run.queue)):
            return True
        if run.state != _CLOSING:
            run = self._current_run(start=False)
        future = run.queue.flush_waiter(asyncio.get_running_loop())
        if future is None:
            return True
        try:
            with anyio.move_on_after(timeout):
                await future
                return True
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
            _orphan(run)
        if run.state == _CLOSED:
            return run.final_stats or run.queue.snapshot()
        if run.state == _NEW:
            if not len(run.queue) or not self._enabled:
                run.state = _CLOSED
                run.final_stats = run.queue.snapshot()
                return run.final_stats
            self._current_run(start=False)  # goals handed over before start: deliver them
        if run.close_task is None:
            seconds = (
                self._shutdown_timeout
                if timeout is None
                else check_positive("timeout", timeout, allow_zero=True)
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            # Intake stops now, before any await: a worker cancelled in the same step (the
            # loop's teardown cancelling everything at once) sees that aclose() has begun.
            run.state = _CLOSING
            run.intake = _NO_LOOP
            run.queue.close_intake()
            assert run.sender is not None
            run.sender.begin_close(deadline)
            run.close_task = loop.create_task(
                self._shutdown(run, deadline, seconds), name="datafast-aclose"
            )
        return await _await_uncancellable(run.close_task)

    async def _shutdown(self, run: _Run, deadline: float, seconds: float) -> Stats:
        loop = asyncio.get_running_loop()
        sender, reporter, transport = run.sender, run.reporter, run.transport
        assert sender is not None
        assert reporter is not None
        assert transport is not None
        try:
            run.queue.abandon_room_waiters()
            drained = run.queue.flush_waiter(loop)
            if drained is not None:
                try:
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        await asyncio.wait((drained,), timeout=remaining)
                finally:
                    run.queue.discard_flush_waiter(drained)
            await sender.stop()
            lost = sender.abandon_all(
                f"goal still undelivered at the shutdown deadline ({seconds:g} s)"
            )
            if lost:
                logger.warning("%d goals were still undelivered at the shutdown deadline", lost)
            await reporter.aclose(max(deadline - loop.time(), _CALLBACK_GRACE))
            reporter.failure_log.summarise_all()
            self._log_drops_at_close(run)
            try:
                await asyncio.wait_for(transport.aclose(), timeout=_CLOSE_TRANSPORT_TIMEOUT)
            except (asyncio.TimeoutError, OSError, aiohttp.ClientError) as exc:
                logger.warning("closing the HTTP session failed: %r", exc)
            run.state = _CLOSED
            run.final_stats = run.queue.snapshot()
            return run.final_stats
        except asyncio.CancelledError:
            # The loop is ending under aclose() (its teardown cancels every task): what is not
            # delivered fails now, counted and warned about, as when a loop ends without it.
            sender.halt()
            _orphan(run)
            raise

    def _log_drops_at_close(self, run: _Run) -> None:
        dropped = run.queue.snapshot().dropped
        if dropped > self._dropped_logged:
            self._next_drop_log = 0.0
            self._log_drops(dropped)
        self._dropped_logged = 0
        self._next_drop_log = 0.0

    # -- reading --------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters of the current (or last) run."""
        return self._run.queue.snapshot()

    def __del__(self) -> None:
        run: _Run | None = getattr(self, "_run", None)
        if run is None or run.state == _CLOSED or run.warned:
            return
        pending = run.queue.pending
        if pending:
            run.warned = True
            warnings.warn(
                f"DataFast client garbage-collected without aclose() with {pending} goals "
                "pending; they may be lost",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )


def _orphan(run: _Run) -> None:
    """The run's loop ended without aclose(): count, report and warn about what it held."""
    if run.state == _CLOSED:
        return
    run.state = _CLOSED
    run.orphaned = True
    run.intake = _NO_LOOP
    run.queue.close_intake()
    pending = run.queue.pending
    if run.sender is not None and run.reporter is not None:
        run.reporter.async_allowed = False
        run.sender.abandon_all("the event loop ended before the goal was delivered (no aclose())")
    run.final_stats = run.queue.snapshot()
    if pending and not run.warned:
        run.warned = True
        warnings.warn(
            f"the event loop of a DataFast client ended before aclose() with {pending} goals "
            "pending; they were not delivered",
            ResourceWarning,
            stacklevel=2,
        )


async def _orphan_in_loop(run: _Run) -> None:
    """``_orphan`` from a worker cancelled as the loop ends: also close the HTTP session."""
    _orphan(run)
    if run.transport is not None:
        with contextlib.suppress(asyncio.TimeoutError, OSError, aiohttp.ClientError):
            await asyncio.wait_for(run.transport.aclose(), _ORPHAN_CLOSE_TIMEOUT)


async def _await_uncancellable(task: asyncio.Task[Stats]) -> Stats:
    """Wait for ``task`` (which has its own deadline) even while being cancelled; then
    re-raise the cancellation."""
    cancelled: asyncio.CancelledError | None = None
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError as exc:
                if task.done() and task.cancelled():
                    raise
                cancelled = exc
    if cancelled is not None:
        raise cancelled
    return task.result()
