"""The life cycle of a client: ``Life``, its successive runs, and ``Run``, one of them, from
``start()`` to ``aclose()``, bound to one event loop.

``Run`` holds the life cycle's state (a ``RunState``), the queue, and, once bound to a loop,
all of its parts at once (loop, transport, reporter, sender): code that sees a bound run never
checks for a missing part. It also knows how a life ends: ``aclose()``'s shutdown with one
deadline, a loop that ends without ``aclose()`` (orphaned), and a process forked from the one
that owns it (the child keeps the parent's run untouched and starts afresh).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import anyio

from . import _delivery
from ._config import check_positive
from ._delivery import Delivery
from ._errors import ClientClosedError, DataFastError
from ._fate import Fate, how_many
from ._kinds import KINDS, Endpoint, counted
from ._limiter import Limiter
from ._models import Stats
from ._options import Options
from ._queue import RequestQueue
from ._reporting import DropLog, Reporter, logger, report_without_loop
from ._sender import Sender
from ._spool import Journal, RunSpool, hand_over, namespace
from ._transport import AiohttpTransport, Transport, proxy_for

__all__ = [
    "NO_LOOP",
    "OTHER_LOOP",
    "Life",
    "Run",
    "RunState",
    "await_uncancellable",
    "inherit",
    "watch",
]

# Seconds aclose() may take past its deadline, in all: cutting the requests in flight, the
# journal's last write, async callbacks still running, closing the HTTP session. Each step
# gets what is left of it; what cannot finish in time is said, never waited for.
GRACE = 1.0
# Of which the workers get this long to end once cancelled (they end at their next await).
_STOP_WAIT = 0.25
# The least each later step gets, even when the grace is spent (a step that needs no time
# returns at once).
_STEP_FLOOR = 0.05
# What the grace keeps back from async callbacks (their cancellation's wait, the session's
# close), so that the whole of aclose() stays within it.
_CALLBACK_RESERVE = 0.2
_ORPHAN_CLOSE_TIMEOUT = 1.0  # seconds to close the session while the loop is ending
_EXIT_JOIN = 2.0  # seconds the process's exit waits for a spool closing in a thread
NO_LOOP = object()  # a run's intake while it accepts nothing
# At most this many seconds for async on_failure callbacks at the exit of a process whose
# client never started (and at most shutdown_timeout).
_EXIT_CALLBACKS = 5.0
# Why the requests of a client that never started in this process were not sent from it.
_NEVER_STARTED = "never sent from this process: its DataFast client was never started here"
_NEVER_SENT = (
    "never sent: the DataFast client was never started in this process (no start(), no "
    "event loop ran it) before the process exited"
)


class RunState(enum.Enum):
    NEW = "new"  # built; goals handed over from another thread wait in its queue
    RUNNING = "running"  # bound to a loop; the sender runs
    CLOSING = "closing"  # aclose() has begun: intake is closed, the sender drains
    CLOSED = "closed"  # ended (aclose() returned, or the loop ended without it)


class Run:
    """One life of a client. It never refers back to the client, so a client dropped without
    ``aclose()`` can be garbage-collected (and warn) while its workers still run."""

    # The parts set by ``bind``, all at once.
    loop: asyncio.AbstractEventLoop
    transport: Transport
    reporter: Reporter
    sender: Sender

    def __init__(self, max_queue_size: int, drops: DropLog, initial_limit: int) -> None:
        self.queue = RequestQueue(max_queue_size)
        self._initial_limit = initial_limit
        self.drops = drops
        #: The one place its requests' fates are decided (refusals even before ``bind``).
        self.fate = Fate(self.queue, drops)
        self.state = RunState.NEW
        # The run's loop while it accepts goals (else NO_LOOP): the hot path compares it with
        # the running loop, so another thread, or a new loop in this thread, takes the slow
        # path.
        self.intake: object = NO_LOOP
        self.close_task: asyncio.Task[Stats] | None = None
        self.final_stats: Stats | None = None
        self.orphaned = False
        self.warned = False
        #: Whether ``bind`` gave the run its parts (a run closed while NEW never had them).
        self.bound = False
        #: The durable spool (``spool_path``), set by ``bind``.
        self.spool: RunSpool | None = None
        self._wake_pending = False  # a wake-up from another thread is on its way
        #: Until ``bind``: held by every request accepted into the run (the queue and
        #: ``for_spool``), by ``bind`` as it hands them to the spool, and by a hand-over.
        self.unbound_lock = threading.Lock()
        #: With a spool, before ``bind``: the requests accepted beyond ``max_queue_size``,
        #: counted as on disk (``RequestQueue.spill``), for the spool to journal once the run
        #: starts (``None`` from then on).
        self.for_spool: list[Delivery[Any]] | None = []
        #: What the requests accepted before ``bind`` would take in the spool, estimated.
        self.spool_bytes = 0
        #: Never started, its requests were journaled for another client (``Life.hand_over``):
        #: the run is closed, and the client's next use starts a fresh one.
        self.handed_over = False

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Transport,
        reporter: Reporter,
        make_sender: Callable[[Run], Sender],
        spool: RunSpool | None = None,
    ) -> None:
        """Bind the run to ``loop`` with all its parts, and start the sender (and open the
        spool, in a thread)."""
        self.loop = loop
        self.transport = transport
        self.reporter = reporter
        self.spool = spool
        self.fate.bind(reporter, spool)
        self.sender = make_sender(self)
        with self.unbound_lock:  # no request accepted before start can slip past this
            self.bound = True
            self.state = RunState.RUNNING
            self.intake = loop
            early, self.for_spool = self.for_spool or [], None
            if spool is not None:
                for delivery in self.queue.items():  # handed over before the run had a loop
                    spool.accept(delivery)
                for delivery in early:  # beyond the queue: to disk, as any spilled request
                    spool.spill(delivery)
            elif early:
                self.queue.refill(early)
        if spool is not None:
            spool.open(self._adopted)
        self.sender.start()

    def _adopted(self, counts: list[int]) -> None:
        """The spool is open: ``counts`` requests (of each kind) of an earlier run wait on
        disk, to send first."""
        if self.state is not RunState.RUNNING:
            return
        if sum(counts):
            self.queue.adopt(counts)
        if self.queue.spooled:
            self.sender.notify()  # goals wait on disk (adopted, or spilled while it opened)

    def stats(self) -> Stats:
        """A snapshot of the run's counters and its in-flight limit."""
        limit = self.sender.limiter.limit if self.bound else self._initial_limit
        return self.queue.snapshot(limit)

    def wake_from_thread(self) -> None:
        """From another thread: a request was queued; wake the sender in the run's loop.

        One wake-up at a time: waking a loop writes to its self-pipe (a system call that
        costs more than the rest of ``track_nowait``), so a thread that queues many requests
        while a wake-up is pending adds none. The loop clears the flag before it counts the
        queue, so a request queued before another thread saw the flag set is counted.
        """
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._woken)
        except RuntimeError:  # the loop closed meanwhile: the request stays counted as queued
            self._wake_pending = False

    def _woken(self) -> None:
        self._wake_pending = False
        self.sender.notify(len(self.queue) or 1)

    def circuit_states(self) -> dict[str, str]:
        """The circuits' states now (``"closed"``, ``"open"``, ``"half-open"``): the client's
        (``"client"``, every endpoint) and each kind's endpoint's (by kind name). From any
        thread; it changes nothing."""
        states = {"client": "closed", **{kind.name: "closed" for kind in KINDS}}
        if self.bound:
            sender = self.sender
            states["client"] = sender.circuit.peek().value
            for kind in KINDS:
                states[kind.name] = sender.kind_circuits[kind.index].peek().value
        return states

    def loop_is_gone(self) -> bool:
        """The loop this run was bound to has ended (closed, or stopped running)."""
        if not self.bound:
            return False
        loop = self.loop
        if loop.is_closed():
            return True
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return current is not loop and not loop.is_running()

    # -- aclose() ---------------------------------------------------------------------------

    def begin_close(self, seconds: float) -> asyncio.Task[Stats]:
        """Stop intake now (before any await) and start the shutdown with one deadline."""
        if self.close_task is None:
            loop = self.loop
            deadline = loop.time() + seconds
            # A worker cancelled in the same step (the loop's teardown cancelling everything
            # at once) sees that aclose() has begun.
            self.state = RunState.CLOSING
            self.intake = NO_LOOP
            self.queue.close_intake()
            self.sender.begin_close(deadline, _deadline_reason(seconds))
            self.close_task = loop.create_task(
                self._shutdown(deadline, seconds), name="datafast-aclose"
            )
        return self.close_task

    async def _shutdown(self, deadline: float, seconds: float) -> Stats:
        """Drain until ``deadline``; then, within ``GRACE``, cut what is in flight, hand every
        request not settled to ``Fate.at_deadline``, close the journal, give async callbacks
        what time is left, and close the HTTP session."""
        loop, sender, reporter, queue, fate = (
            self.loop,
            self.sender,
            self.reporter,
            self.queue,
            self.fate,
        )
        end = deadline + GRACE

        def left() -> float:
            return max(_STEP_FLOOR, end - loop.time())

        try:
            queue.abandon_room_waiters()
            drained = queue.flush_waiter(loop)
            if drained is not None:
                try:
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        await asyncio.wait((drained,), timeout=remaining)
                finally:
                    queue.discard_flush_waiter(drained)
            # Callbacks called from here on (each request's fate at the deadline) stop being
            # called once the grace runs out: a slow synchronous one cannot hold aclose().
            reporter.cutoff = time.monotonic() + (end - loop.time()) - _CALLBACK_RESERVE
            await sender.stop(min(_STOP_WAIT, left()))
            reason = _deadline_reason(seconds)
            sender.abandon_all(reason)
            spool = self.spool
            if spool is not None:
                # After the close: its last step journals the requests parked before the
                # writer reached them, and only then are they held (their Delivery settles).
                try:
                    await spool.aclose(left())
                finally:
                    fate.held_at_end(spool.take_held(), reason)
            fate.summary(seconds, spool.journal.directory if spool is not None else None)
            queue.release_flush_waiters(False)
            # Async callbacks get the time left before the deadline, and at least what is
            # left of the grace.
            await reporter.aclose(max(deadline - loop.time(), left()) - _CALLBACK_RESERVE)
            reporter.said_skipped()
            reporter.failure_log.summarise_all()
            self.drops.at_close()
            with anyio.move_on_after(left()) as scope:
                try:
                    await self.transport.aclose()
                except (OSError, aiohttp.ClientError) as exc:
                    logger.warning("closing the HTTP session failed: %r", exc)
            if scope.cancelled_caught:
                logger.warning("closing the HTTP session did not finish within the grace")
            self.state = RunState.CLOSED
            self.final_stats = self.stats()
            return self.final_stats
        except asyncio.CancelledError:
            # The loop is ending under aclose() (its teardown cancels every task): what is not
            # delivered fails now, counted and warned about, as when a loop ends without it.
            sender.halt()
            self.orphan()
            raise

    # -- ending without aclose() ------------------------------------------------------------

    def orphan(self) -> None:
        """The run's loop ended without aclose(): count, report and warn about what it held."""
        if self.state is RunState.CLOSED:
            return
        was_bound = self.bound
        self.state = RunState.CLOSED
        self.orphaned = True
        self.intake = NO_LOOP
        self.queue.close_intake()
        by_kind = self.queue.pending_by_kind()
        pending = sum(by_kind.values())
        if was_bound:
            self.reporter.async_allowed = False
            reason = "the event loop ended before the request was delivered (no aclose())"
            before = list(self.fate.cut)
            self.sender.abandon_all(reason)
            by_kind = {
                kind.name: after - earlier
                for kind, after, earlier in zip(KINDS, self.fate.cut, before, strict=True)
            }
            lost = sum(by_kind.values())
            spool = self.spool
            if spool is not None:
                # Off the (ending) loop: the files are written, synced and let go; then the
                # requests on disk only settle (the close's last drain may add some).
                def close_spool(spool: RunSpool = spool) -> None:
                    spool.close()
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        self.fate.held_at_end(spool.take_held(), reason)

                # Owned: the process's exit joins it (with a bound), so its last write lands.
                thread = threading.Thread(
                    target=close_spool, name="datafast-spool-close", daemon=True
                )
                _closing.append(thread)
                thread.start()
                pending = lost
                if self.queue.spooled:
                    logger.warning(
                        "the event loop of a DataFast client ended before aclose() with %s "
                        "pending: they are kept in the spool at %s; the next start sends them",
                        counted(self.queue.spooled_by_kind()),
                        spool.journal.directory,
                    )
        self.final_stats = self.stats()
        if pending and not self.warned:
            self.warned = True
            message = (
                "the event loop of a DataFast client ended before aclose() with "
                f"{counted(by_kind)} pending; they were not delivered"
            )
            logger.warning("%s", message)
            warnings.warn(message, ResourceWarning, stacklevel=2)

    async def orphan_in_loop(self) -> None:
        """``orphan`` from a worker cancelled as the loop ends: also close the HTTP session."""
        self.orphan()
        if self.bound:
            with contextlib.suppress(asyncio.TimeoutError, OSError, aiohttp.ClientError):
                await asyncio.wait_for(self.transport.aclose(), _ORPHAN_CLOSE_TIMEOUT)


async def await_uncancellable(task: asyncio.Task[Stats]) -> Stats:
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


# -- the successive runs of one client --------------------------------------------------------

# Seconds start() waits for the spool's files to be taken over (a large spool's scan takes
# longer: about 2 s for 100,000 goals).
_START_WAIT = 1.0

OTHER_LOOP = (
    "this DataFast client runs in another event loop, which is still running: call track, "
    "send, flush and aclose in that loop"
)


class Life:
    """The life cycle of one client: its successive runs (a closed client starts again with a
    fresh one), started in the running loop (by ``start()``, or lazily), closed by ``aclose()``
    with one deadline, orphaned when their loop ends without it, left to the parent after a
    fork, and said at the process's exit. It holds the client's options; the client holds it.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        spooled = options.spool_path is not None
        self.drops = DropLog(
            options.max_queue_size,
            spool_max_bytes=options.spool_max_bytes if spooled else None,
        )
        # Replacing a closed run (renew) from the loop's thread or another one: one at a time.
        self._renew_lock = threading.Lock()
        self.run = self._new_run()
        self._warned_lazy = False
        #: What the parent's run held (per kind), said once here.
        self._forked_from: dict[str, int] | None = None
        watch(self)

    def live(self) -> Run:
        """The current run, after noticing that its loop has ended (the one orphan check)."""
        run = self.run
        if run.state in (RunState.RUNNING, RunState.CLOSING) and run.loop_is_gone():
            run.orphan()
        return run

    async def start(self) -> None:
        """``DataFast.start()``: a run bound to the running loop, and its spool open (waited
        for at most ``_START_WAIT``: a large spool's scan goes on in the background)."""
        run = self.live()
        if run.state is RunState.CLOSING and run.close_task is not None:
            await await_uncancellable(run.close_task)
        run = self.current(start=True)
        if run.spool is not None:
            await run.spool.wait_open(_START_WAIT)

    def current(self, *, start: bool) -> Run:
        """The run that serves the running loop, started if needed (in the loop's thread).

        ``start``: called by ``start()`` (not lazily by ``track``/``send``/``flush``).
        """
        loop = asyncio.get_running_loop()
        run = self.run
        if run.state is RunState.RUNNING and run.loop is loop:
            return run
        if self._forked_from is not None:
            self._say_forked()
        run = self.live()
        if run.state is RunState.CLOSED and (start or run.orphaned or run.handed_over):
            run = self.renew(run)
        if run.state is RunState.NEW:
            if not start:
                self._warn_lazy_start()
            self._bind(run, loop)
            return run
        if run.state is RunState.RUNNING:
            raise DataFastError(OTHER_LOOP)
        raise ClientClosedError("the DataFast client is closed; call start() to use it again")

    async def send_now(
        self, endpoint: Endpoint, body: bytes | None, target: str | None = None
    ) -> Any:
        """``send()`` of any kind (and the direct calls): now, with the retry policy."""
        if not self.options.enabled:
            disabled = getattr(endpoint, "disabled", None)
            return disabled() if disabled is not None else None
        return await self.current(start=False).sender.send_now(endpoint, body, target)

    async def call(self, endpoint: Endpoint, query: str, disabled: Any) -> Any:
        """A direct call that is not queued (a delete); ``query`` joins the one every
        request carries."""
        if not self.options.enabled:
            return disabled
        target = self.options.settings.target(endpoint.path)
        target += ("&" if "?" in target else "?") + query
        return await self.current(start=False).sender.send_now(endpoint, None, target)

    async def aclose(self, timeout: float | None) -> Stats:
        """``DataFast.aclose()``: the run's shutdown with one deadline; idempotent."""
        run = self.live()
        if run.state is RunState.CLOSED:
            return run.final_stats or run.stats()
        if run.bound and run.loop is not asyncio.get_running_loop():
            # Its loop still runs (in another thread): its tasks cannot be touched from here.
            raise DataFastError(OTHER_LOOP)
        if run.state is RunState.NEW:
            if not len(run.queue) or not self.options.enabled:
                run.state = RunState.CLOSED
                run.final_stats = run.stats()
                return run.final_stats
            self.current(start=True)  # requests handed over before start: deliver them
        seconds = (
            self.options.shutdown_timeout
            if timeout is None
            else check_positive("timeout", timeout, allow_zero=True)
        )
        return await await_uncancellable(run.begin_close(seconds))

    async def flush(self, timeout: float | None) -> bool:
        """``DataFast.flush()``: wait until every request accepted before the call is
        delivered or has finally failed (``False``: the timeout came first, or, with a spool,
        everything pending is parked on disk)."""
        run = self.run
        if (
            not self.options.enabled
            or run.state is RunState.CLOSED
            or (run.state is RunState.NEW and not len(run.queue))
        ):
            return True
        if run.state is not RunState.CLOSING:
            run = self.current(start=False)
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

    def collected(self, client: object) -> None:
        """The client is garbage-collected: say what its run still held (once)."""
        run = self.run
        if run.state is RunState.CLOSED or run.warned:
            return
        by_kind = run.queue.pending_by_kind()
        if by_kind:
            run.warned = True
            message = (
                f"DataFast client garbage-collected without aclose() with {counted(by_kind)} "
                "pending; they may be lost"
            )
            logger.warning("%s", message)
            warnings.warn(message, ResourceWarning, source=client, stacklevel=3)

    def renew(self, run: Run) -> Run:
        """A fresh run in place of ``run``, which has ended (once, whichever thread asks
        first); the current run if another thread replaced it already."""
        with self._renew_lock:
            if self.run is run:
                self.run = self._new_run()
            return self.run

    def _new_run(self) -> Run:
        return Run(self.options.max_queue_size, self.drops, self.options.initial_limit)

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
        options = self.options
        settings = options.settings
        transport: Transport
        if options.transport_factory is not None:
            transport = options.transport_factory()
        else:
            transport = AiohttpTransport(
                settings.base_url,
                settings.headers,
                timeout=options.timeout,
                concurrency=options.concurrency,
                session=options.session,
                ssl=options.ssl,
                proxy=None if options.session is not None else proxy_for(settings.url),
            )
        targets = [settings.target(kind.path) for kind in KINDS]
        spool = self._new_spool(run, loop, targets)
        run.bind(
            loop,
            transport,
            Reporter(options.on_success, options.on_failure),
            lambda bound: Sender(
                queue=bound.queue,
                transport=bound.transport,
                policy=options.retry,
                limiter=Limiter(options.concurrency, loop, adaptive=options.adaptive),
                fate=bound.fate,
                loop=loop,
                workers=options.concurrency,
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
        options = self.options
        if options.spool_path is None:
            return None
        extra = dict(options.spool_options)
        extra.pop("namespace", None)
        journal = Journal(
            options.spool_path, self._namespace(), max_bytes=options.spool_max_bytes, **extra
        )
        return RunSpool(
            journal,
            self._record_paths(targets),
            loop,
            on_refill=lambda deliveries: run.sender.refill.refill(deliveries),
            on_damaged=run.fate.damaged,
        )

    def _namespace(self) -> str:
        """Whose journal files the spool's are: the key's (and website's) namespace."""
        settings = self.options.settings
        assert settings.api_key is not None  # resolve_settings requires it when enabled
        # The CLI's `spool DIR --replay --namespace NS`: another key's requests (a rotated or
        # revoked key), sent with this one because the user asked for it.
        space = self.options.spool_options.get("namespace")
        if isinstance(space, str) and space:
            return space
        return namespace(settings.api_key, settings.website_id)

    def _record_paths(self, targets: list[str] | None = None) -> list[str]:
        """Each kind's path as its records say it (by ``Kind.index``): what it is sent to,
        below the base URL's own path (which is not part of the namespace either); a record
        is rebuilt by the kind its path names."""
        settings = self.options.settings
        if targets is None:
            targets = [settings.target(kind.path) for kind in KINDS]
        prefix = urlsplit(settings.base_url).path
        return [prefix + target for target in targets]

    # -- a run that never started --------------------------------------------------------

    def hand_over(self) -> bool:
        """With a spool, a run that never started (no event loop ran it: a gunicorn
        ``--preload`` master, a process about to fork or exit): journal its requests at once
        into a file of the client's namespace in the spool directory, left unlocked, so that
        the first client of that namespace to start (a forked worker, or this one's next
        start) takes it over and sends them. They are no longer this process's: the run
        ends (counted as ``spooled``; each ``Delivery`` settles with
        ``ShutdownError(spooled=True)``), and the client's next use starts a fresh one.
        ``True`` if it journaled them; ``False`` (nothing changed) if there was nothing to
        journal, or the file could not be written (one WARNING)."""
        options = self.options
        run = self.run
        if options.spool_path is None or not options.enabled or run.bound:
            return False
        with run.unbound_lock:  # no request joins the run meanwhile, and no start binds it
            if run.bound or run.state is not RunState.NEW:
                return False
            queued = run.queue.items()
            early = run.for_spool or []
            requests = queued + early
            if not requests:
                return False
            paths = self._record_paths()
            try:
                where = hand_over(
                    options.spool_path,
                    self._namespace(),
                    [(paths[d._kind.index], d._body()) for d in requests],
                )
            except (OSError, ValueError) as exc:
                logger.warning(
                    "%d requests of a DataFast client that was never started in this process "
                    "could not be journaled in the spool at %s (%s): they stay in this process",
                    len(requests),
                    options.spool_path,
                    exc,
                )
                return False
            run.state = RunState.CLOSED
            run.handed_over = True
            run.queue.close_intake()
            for delivery in run.queue.take_all():
                run.queue.to_disk(delivery, again=False)
            run.for_spool = None
            run.final_stats = run.stats()
        run.fate.held_at_end(requests, _NEVER_STARTED)
        logger.warning(
            "a DataFast client that was never started in this process had accepted %s: they "
            "are kept in the spool at %s (%s); the first client to start with this key sends "
            "them (a forked worker, or this client when it starts)",
            how_many(requests),
            os.path.dirname(where),
            os.path.basename(where),
        )
        return True

    def _fail_never_started(self) -> dict[str, int]:
        """At the process's exit, without a spool to keep them: every request of a run that
        never started fails with ``ShutdownError`` and is reported to ``on_failure`` (a plain
        callback directly, an async one run to its end in a short-lived loop, at most
        ``shutdown_timeout`` seconds and at most ``_EXIT_CALLBACKS``). Returns their number,
        per kind."""
        run = self.run
        with run.unbound_lock:
            if run.bound or run.state is not RunState.NEW or not run.queue.pending:
                return {}
            run.state = RunState.CLOSED
            run.queue.close_intake()
            queued = run.queue.take_all()
            early, run.for_spool = run.for_spool or [], None
        failed = run.fate.never_started(queued, early, _NEVER_SENT)
        run.final_stats = run.stats()
        if failed:
            run.warned = True
            report_without_loop(
                self.options.on_failure,
                [(delivery.event, error) for delivery, error in failed],
                min(self.options.shutdown_timeout, _EXIT_CALLBACKS),
            )
        by_kind: dict[str, int] = {}
        for delivery, _ in failed:
            by_kind[delivery._kind.name] = by_kind.get(delivery._kind.name, 0) + 1
        return by_kind

    # -- processes ------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """In a process about to fork: a run that never started hands its requests to the
        spool, for the first client that starts (one of the children, as a rule)."""
        self.hand_over()

    def _after_fork(self) -> None:
        """In a forked child: the parent's run (queue, session, journal) stays the parent's;
        this client starts afresh on first use and says so once."""
        run = self.run
        run.queue.after_fork()
        # Locks another thread of the parent may have held at the fork: new ones.
        run.unbound_lock = threading.Lock()
        self._renew_lock = threading.Lock()
        if run.state is RunState.NEW and not len(run.queue):
            return
        if run.state is RunState.CLOSED and not run.queue.pending:
            return
        inherit(run)
        if run.spool is not None:
            run.spool.abandon_after_fork()  # the parent's files: closed here, still locked
        self._forked_from = run.queue.pending_by_kind()
        self.run = self._new_run()

    def _say_forked(self) -> None:
        count, self._forked_from = self._forked_from, None
        logger.warning(
            "this process was forked from one whose DataFast client was in use (%s "
            "pending there): they belong to the parent process and are not sent from here; "
            "this client starts afresh. Create clients after the fork (gunicorn --preload: "
            "in the app's lifespan) to avoid this",
            counted(count or {}),
        )

    def _pending_at_exit(self) -> dict[str, int]:
        """The requests still pending as the process exits, per kind; the exit WARNING says
        them, so the client's garbage collection in the interpreter's teardown does not say
        them again."""
        run = self.run
        if run.state is RunState.CLOSED or not self.options.enabled:
            return {}
        if run.state is RunState.NEW and not run.bound:
            # Never started here: journaled for the next start (said by hand_over), or,
            # without a spool (or one that cannot be written), failed and reported.
            if self.hand_over():
                return {}
            return self._fail_never_started()
        by_kind = run.queue.pending_by_kind()
        pending = sum(by_kind.values())
        if run.spool is not None and run.spool.close_at_exit(by_kind):
            run.warned = True
            return {}  # journaled: the next start sends them (said by close_at_exit)
        if pending:
            run.warned = True
        return by_kind


# -- processes: fork and exit -----------------------------------------------------------------


class Owner(Protocol):
    """What the process-wide hooks need of a client."""

    def _before_fork(self) -> None: ...

    def _after_fork(self) -> None: ...

    def _pending_at_exit(self) -> dict[str, int]: ...


_owners: weakref.WeakSet[Owner] = weakref.WeakSet()
# Spools closing in a thread as their loop ended without aclose(): joined at exit.
_closing: list[threading.Thread] = []
# A forked child's copies of its parent's runs: kept, never used, never closed (their queue,
# session and sockets are the parent's), so that collecting them cannot touch the parent's.
_inherited: list[object] = []


def watch(owner: Owner) -> None:
    """Follow ``owner`` across forks and to the process's exit."""
    _owners.add(owner)


def inherit(run: Run) -> None:
    """Keep a parent's run alive in a forked child, untouched."""
    _inherited.append(run)


def _before_fork() -> None:
    for owner in list(_owners):
        try:
            owner._before_fork()
        except Exception:  # never in the way of the fork
            logger.exception("preparing a DataFast client for a fork failed")


def _after_fork_in_child() -> None:
    # Locks another thread of the parent may have held at the fork: new ones first.
    _delivery.after_fork()
    for owner in list(_owners):
        owner._after_fork()


def _deadline_reason(seconds: float) -> str:
    return f"still undelivered at the shutdown deadline ({seconds:g} s)"


def _at_exit() -> None:
    deadline = time.monotonic() + _EXIT_JOIN
    for thread in _closing:
        thread.join(max(0.0, deadline - time.monotonic()))
    lost: dict[str, int] = {}
    for owner in list(_owners):
        for name, count in owner._pending_at_exit().items():
            lost[name] = lost.get(name, 0) + count
    if any(lost.values()):
        logger.warning(
            "the process is exiting with %s still pending in DataFast clients that were not "
            "closed: they are lost (a client never started in this process reported them to "
            "on_failure). Close the client before exit: `async with DataFast(...)`, `await "
            "df.aclose()`, or the datafast_async.starlette lifespan",
            counted(lost),
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
