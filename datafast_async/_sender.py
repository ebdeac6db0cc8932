"""The sender: a fixed set of watched workers that drain the queue and deliver goals.

Each worker takes a slot from the ``Limiter`` first, then the next goal (a retry that is due,
else the queue's oldest), sends it, and hands the answer to ``_outcome``. A goal ends in one of
two places: ``_delivered``, or ``_give_up``, the one place where a goal ends undelivered
(refused, out of attempts, failed by the open circuit, cut at the shutdown deadline, held by a
worker that died of a bug). A goal waiting to retry sits in a timer heap, holds neither a
worker nor a slot, keeps a summary of its last error (not the exception and its traceback),
and counts against the queue's bound. ``_retry.decide`` is the one retry decision, for the
queue's goals and ``send()`` alike. A ``Retry-After`` pauses the whole sender through the
limiter; an answer that every request would get opens the ``Circuit``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable

from ._circuit import Circuit, CircuitState
from ._delivery import Delivery
from ._durable import Spool
from ._errors import APIError, DataFastError, ShutdownError, TransportError, own_copy
from ._limiter import Limiter
from ._models import Goal, GoalResult
from ._outcome import outcome_of, read_result
from ._queue import GoalQueue
from ._reporting import AttemptLog, Reporter, logger
from ._retry import PAST_DEADLINE, RetryPolicy, decide
from ._transport import Transport
from ._wire import encode_goal

__all__ = ["Sender"]

# A goal on its way: (delivery, the attempt about to be made, a summary of the last attempt's
# error, whether an earlier attempt may have reached the server without an answer coming back).
_Item = tuple[Delivery, int, "DataFastError | None", bool]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
# Goals failed per step of the loop while the circuit is open: thousands of goals never hold
# the loop for long.
_CHUNK = 1000
# Seconds a worker waits for the probe's answer before it looks again (the probe itself is
# bounded by the request timeout).
_PROBE_PATIENCE = 1.0
# Worker deaths (bugs) after which the sender stops replacing them.
_MAX_DEATHS = 100
# The most goals read back from the spool at once.
_READ_BATCH = 1000


class Sender:
    """Delivers the goals of one ``GoalQueue`` through one ``Transport``."""

    def __init__(
        self,
        *,
        queue: GoalQueue,
        transport: Transport,
        policy: RetryPolicy,
        limiter: Limiter,
        reporter: Reporter,
        loop: asyncio.AbstractEventLoop,
        workers: int,
        on_orphaned: Callable[[], Awaitable[None]] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._policy = policy
        self._limiter = self.limiter = limiter
        self._reporter = reporter
        self._loop = loop
        self._worker_count = workers
        self._on_orphaned = on_orphaned
        self._workers: list[asyncio.Task[None]] = []
        #: What each worker holds (the goal it sends), by worker index.
        self._current: list[_Item | None] = [None] * workers
        #: Futures of the workers waiting for work (``track_nowait`` skips ``notify`` when
        #: there are none, its common case under load).
        self.idle: deque[asyncio.Future[None]] = deque()
        self._ready: deque[_Item] = deque()
        self._heap: list[tuple[float, int, _Item]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._close_deadline: float | None = None
        self._stopping = False
        self._orphaned = False
        self._deaths = 0
        #: Whether a worker is failing the waiting goals of the open circuit (one at a time).
        self._failing = False
        self.circuit = Circuit(policy, loop, keeps=spool is not None)
        self._attempt_log = AttemptLog()
        #: The durable spool, if any: goals parked there while the API is down, kept there at
        #: the shutdown deadline, read back from there as the queue drains.
        self._spool = spool

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers in the client's loop (they are awaited by ``stop``)."""
        for index in range(self._worker_count):
            self._workers.append(self._spawn(index))
        self.notify(len(self._queue))

    def _spawn(self, index: int) -> asyncio.Task[None]:
        return self._loop.create_task(self._work(index), name=f"datafast-sender-{index}")

    def notify(self, count: int = 1) -> None:
        """Wake up to ``count`` idle workers: there is work. Called in the client's loop."""
        idle = self.idle
        while count > 0 and idle:
            future = idle.popleft()
            if not future.done():
                future.set_result(None)
                count -= 1

    def begin_close(self, deadline: float) -> None:
        """From now on a retry that would start after ``deadline`` ends at once."""
        self._close_deadline = deadline
        late = [entry for entry in self._heap if entry[0] > deadline]
        if late:
            self._heap = [entry for entry in self._heap if entry[0] <= deadline]
            heapq.heapify(self._heap)
            for _, _, item in late:
                self._queue.unpark(retry=False)
                self._give_up(item[0], _shutdown_error(item[2], item[3]))

    def halt(self) -> None:
        """Stop taking work: workers cancelled from now on just end, and no retry is due."""
        self._stopping = True
        if self._spool is not None:
            self._spool.halted = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the workers (requests in flight are cut) and wait for them to end."""
        self.halt()
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            _, stuck = await asyncio.wait(workers, timeout=timeout)
            if stuck:
                logger.error("%d sender workers did not stop in %.0f s", len(stuck), timeout)

    def abandon_all(self, reason: str) -> int:
        """End every goal still queued, in flight or waiting to retry with a ``ShutdownError``
        (``maybe_delivered`` when an attempt of it may have reached the server)."""
        held: dict[Delivery, tuple[DataFastError | None, bool]] = {}
        for item in self._ready:
            held[item[0]] = (item[2], item[3])
        for _, _, item in self._heap:
            held[item[0]] = (item[2], item[3])
        for _ in range(len(self._ready) + len(self._heap)):
            self._queue.unpark(retry=False)
        self._ready.clear()
        self._heap.clear()
        for cut in self._current:
            if cut is not None:  # its request was cut: it may have reached the server
                held[cut[0]] = (cut[2], True)
        self._current = [None] * self._worker_count
        self._queue.take_all()
        ended = 0
        spool = self._spool
        for delivery in self._queue.active:
            last, maybe = held.get(delivery, (None, False))
            if spool is not None and spool.keep(delivery):
                self._keep(delivery, last, maybe, reason)
            else:
                self._give_up(delivery, _shutdown_error(last, maybe, reason))
                ended += 1
        return ended

    def _keep(
        self, delivery: Delivery, last: DataFastError | None, maybe: bool, reason: str
    ) -> None:
        """A goal left at the shutdown deadline that stays in the spool for the next start:
        its ``Delivery`` settles with a ``ShutdownError`` whose ``spooled`` is ``True``, and
        ``on_failure`` is not called."""
        if self._queue.to_disk(delivery, again=False):
            error = ShutdownError(
                f"{reason}; kept in the spool for the next start",
                maybe_delivered=maybe,
                spooled=True,
            )
            error.__cause__ = last
            delivery._settle(error)

    # -- the workers ----------------------------------------------------------------------

    async def _work(self, index: int) -> None:
        queue, ready, limiter, circuit = self._queue, self._ready, self._limiter, self.circuit
        send, current, spool = self._transport.send, self._current, self._spool
        item: _Item | None = None
        outcome: bytes | DataFastError
        try:
            while True:
                item = None
                if circuit.state is not _CLOSED:
                    item = await self._past_the_circuit()
                    if item is None:
                        continue
                # A slot first, then a goal: a goal is never parked in front of the limiter.
                if not limiter.try_acquire():
                    await limiter.acquire()
                    if item is None and circuit.state is not _CLOSED:
                        limiter.release()  # the circuit opened while this worker waited
                        continue
                try:
                    if item is None:
                        # A retry that is due first, else the queue's oldest goal. This loop
                        # runs once per goal sent, so the common case makes as few calls as
                        # it can.
                        if ready:
                            item = ready.popleft()
                            queue.unpark(retry=True)
                        else:
                            taken = queue.take()
                            if taken is not None:
                                item = (taken, 1, None, False)
                            if spool is not None and queue._spooled:
                                self._want_more()  # goals wait on disk: read some back
                    if item is not None:
                        current[index] = item
                        epoch = limiter.epoch
                        try:
                            delivery = item[0]
                            wire = delivery._wire
                            if wire is None:
                                wire = delivery._body()
                                if spool is not None:  # the writer journals these bytes
                                    delivery._wire = wire
                            status, body, reason, headers = await send(wire)
                            outcome = outcome_of(status, body, reason, headers)
                        except TransportError as exc:
                            outcome = exc
                        except Exception as exc:
                            # A custom transport broke its contract: fail this goal, keep
                            # the worker.
                            logger.exception("the transport failed on goal %r", item[0].goal.name)
                            outcome = _internal_error("the transport failed", exc)
                finally:
                    limiter.release()
                if item is None:
                    await self._wait_for_work()
                    continue
                if isinstance(outcome, bytes):
                    if limiter.growing:
                        limiter.succeeded(epoch, bool(queue) or bool(ready))
                    self._delivered(item[0], outcome)
                else:
                    self._attempt_failed(item, outcome, epoch)
                current[index] = None
        except asyncio.CancelledError:
            if not self._stopping:
                await self._cancelled_from_outside(index)
            raise
        except Exception as exc:
            self._died(index, exc)

    def _died(self, index: int, exc: Exception) -> None:
        """A worker died of a bug: say so with the traceback, end the goal it held with the
        real error, and put a new worker in its place."""
        self._deaths += 1
        logger.error("a sender worker died of a bug; a new one takes its place", exc_info=exc)
        item = self._current[index]
        self._current[index] = None
        if item is not None:
            self.circuit.probe_dropped(item[0])
            self._give_up(item[0], _internal_error("a sender worker died", exc))
        if self._stopping:
            return
        if self._deaths > _MAX_DEATHS:
            logger.critical(
                "%d sender workers died of bugs: no more are started; goals wait for aclose()",
                self._deaths,
            )
            return
        self._workers[index] = self._spawn(index)
        self.notify()

    async def _cancelled_from_outside(self, index: int) -> None:
        """A worker was cancelled, not by ``stop()``: mostly a loop that is ending (as
        ``asyncio.run`` does, cancelling every task at once).

        The task that owns the client may be cancelled in the same sweep, and its ``aclose()``
        stops intake before its first await. So first give it a few turns; then either hand
        this worker's job (and the goal it held) to a fresh task, for aclose() to drain the
        queue with, or treat the loop as ending without aclose(): every goal held is failed,
        counted and warned about.
        """
        for _ in range(_OWNER_TURNS):
            await asyncio.sleep(0)
        if self._stopping:
            return
        if self._close_deadline is not None:
            held = self._current[index]
            self._current[index] = None
            if held is not None:
                self.circuit.probe_dropped(held[0])  # sent again below, by any worker
            if held is not None and self._queue.is_active(held[0]):
                # Its request was cut without an answer: send it again, as after a reset.
                self._queue.park()
                self._ready.appendleft((held[0], held[1], held[2], True))
            self._workers[index] = self._spawn(index)
            self.notify()
        elif not self._orphaned and self._on_orphaned is not None:
            self._orphaned = True
            await self._on_orphaned()

    async def _wait_for_work(self, timeout: float | None = None) -> None:
        # An idle worker waits without a deadline: it is woken by new work, or cancelled by
        # stop(); it holds no goal and no slot while it waits. ``timeout``: the end of the
        # circuit's cool-down.
        future: asyncio.Future[None] = self._loop.create_future()
        self.idle.append(future)
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait((future,), timeout=max(0.0, timeout))
        finally:
            # (A loop closed with this task still pending closes it here: nothing to cancel.)
            if not future.done() and not self._loop.is_closed():
                future.cancel()
            if future in self.idle:
                self.idle.remove(future)

    # -- outcomes ---------------------------------------------------------------------------

    def _delivered(self, delivery: Delivery, body: bytes) -> None:
        """A goal the API accepted: counted, settled and reported here."""
        if self.circuit.probe is not None:
            self._answered(delivery)
        if not self._queue.finish(delivery, True):
            return
        if self._spool is not None:
            self._spool.settled(delivery, "delivered")
        delivery._settle(body)
        # Only an on_success callback needs the Goal and the GoalResult: without one, neither
        # is built here.
        if self._reporter.reports_success:
            result = delivery.result
            if result is not None:
                self._reporter.delivered(delivery.goal, result)

    def _give_up(self, delivery: Delivery, error: DataFastError) -> None:
        """The one place where a goal ends undelivered: counted, settled and reported."""
        if not self._queue.finish(delivery, False):
            return
        if self._spool is not None:
            self._spool.settled(delivery, "failed")
        delivery._settle(error)
        self._reporter.failed(delivery.goal, error)

    def _park(self, delivery: Delivery) -> bool:
        """With a spool: move a goal the API is not taking now (an open circuit, an API that
        stays down) from memory to disk, to be read back once a probe gets through."""
        spool = self._spool
        if spool is None or not self._queue.is_active(delivery) or not spool.park(delivery):
            return False
        self._queue.to_disk(delivery)
        return True

    def _attempt_failed(self, item: _Item, error: DataFastError, epoch: int) -> None:
        """An attempt that got no success: retry the goal later, or end it."""
        delivery, attempt, _, maybe = item
        if isinstance(error, TransportError) and error.maybe_delivered:
            maybe = True
        self._observe(delivery, error, epoch)
        if error.opens_circuit:
            if not self._park(delivery):
                if not self.circuit.closed:  # goals refused this way count with those it failed
                    self.circuit.failed_while_open += 1
                self._give_up(delivery, error)
            self._check_parked()
            return
        # A Retry-After holds the whole sender, whether or not this goal is retried.
        self._pause_for(error)
        now = self._loop.time()
        delay = decide(self._policy, error, attempt, now, self._close_deadline)
        if delay is None:
            if error.retriable and self._park(delivery):
                # Out of attempts on an error that may pass: with a spool the goal waits on
                # disk and the API is treated as down, probed once per cool-down.
                self._api_down(error)
                return
            self._give_up(delivery, _with_flag(error, maybe))
            return
        if delay == PAST_DEADLINE:
            self._give_up(delivery, _shutdown_error(error, maybe))
            return
        self._attempt_log.record(error)
        self._queue.park()
        retry = (delivery, attempt + 1, _summary(error), maybe)
        if delay <= 0:
            self._ready.append(retry)
            self.notify()
            return
        when = now + delay
        heapq.heappush(self._heap, (when, next(self._sequence), retry))
        if self._timer is None or when < self._timer_when:
            self._arm_timer(when)

    def _observe(self, token: object, error: DataFastError, epoch: int) -> None:
        """What a failed attempt tells the adaptive limit and the circuit breaker."""
        if _is_congestion(error):
            self._limiter.congested(epoch)
        circuit = self.circuit
        if error.opens_circuit:
            if circuit.state is _CLOSED or circuit.probe is token:
                circuit.trip(error, len(self._queue) + len(self._ready) + len(self._heap))
                self.notify(self._worker_count)
        elif circuit.probe is token:
            if isinstance(error, APIError) and not error.retriable:
                self._answered(token)  # DataFast's own refusal (400, 404): the key works
            else:
                circuit.probe_unanswered(token)

    def _answered(self, token: object) -> None:
        """DataFast answered ``token``'s request: if it was the probe, the circuit closes and
        the goals that waited for it go."""
        circuit = self.circuit
        circuit.answered(token)
        if circuit.state is _CLOSED:
            self.notify(len(self._queue) + len(self._ready))

    def _pause_for(self, error: DataFastError) -> None:
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after:
            self._limiter.pause(min(retry_after, self._policy.max_retry_after))

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._retries_due)

    def _retries_due(self) -> None:
        self._timer = None
        now = self._loop.time()
        due = 0
        while self._heap and self._heap[0][0] <= now:
            self._ready.append(heapq.heappop(self._heap)[2])
            due += 1
        if self._heap:
            self._arm_timer(self._heap[0][0])
        self.notify(due)

    # -- the spool --------------------------------------------------------------------------

    def _api_down(self, error: DataFastError) -> None:
        """With a spool, a goal ran out of attempts on an error that may pass: the API is
        treated as down (the circuit opens: goals wait on disk, one probe per cool-down)."""
        circuit = self.circuit
        if circuit.state is _CLOSED:
            circuit.trip(error, len(self._queue) + len(self._ready) + len(self._heap), down=True)
            self.notify(self._worker_count)
        self._check_parked()

    def _check_parked(self) -> None:
        """Every goal still pending is parked on disk and the API is not taking them: a
        ``flush()`` (or ``aclose()``'s drain) waiting for them returns now, with ``False``."""
        if self.all_parked():
            self._queue.release_flush_waiters(False)

    def all_parked(self) -> bool:
        """Whether every goal pending is parked on disk behind a circuit that is not closed."""
        queue = self._queue
        return (
            self._spool is not None
            and not self.circuit.closed
            and bool(queue._spooled)
            and not len(queue)
            and not self._ready
            and not self._heap
            and not queue.pending
        )

    def _want_more(self) -> None:
        """Read goals back from disk when the queue runs low (one at a time, to probe with,
        while the circuit is half-open)."""
        spool, queue = self._spool, self._queue
        if spool is None or spool.reading or not queue._spooled or self._stopping:
            return
        circuit = self.circuit
        if circuit.state is _CLOSED:
            queued = len(queue)
            if queued > queue.maxsize // 2:
                return
            limit = min(queue.maxsize - queued - queue._parked, _READ_BATCH)
            if limit < 1:
                return
        elif (
            circuit.refresh() is CircuitState.HALF_OPEN
            and circuit.probe is None
            and not len(queue)
            and not self._ready
        ):
            limit = 1
        else:
            return
        spool.read_back(limit, self._read_done)

    def refill(self, deliveries: list[Delivery]) -> None:
        """Goals back from disk (or that could not go there after all) join the queue."""
        queue = self._queue
        if self._stopping:
            # Goals meant for disk that the journal could not take as the run ended: failed,
            # counted, said (never silently lost).
            queue.discard(len(deliveries))
            for delivery in deliveries:
                delivery._settle(ShutdownError("the spool could not keep the goal at shutdown"))
            logger.error(
                "%d goals meant for the spool could not be written to it as the client "
                "closed: they are lost (see the spool's WARNING above)",
                len(deliveries),
            )
            return
        queue.refill(deliveries)
        self.notify(len(deliveries))

    def _read_done(self, count: int) -> None:
        if self._stopping or self._spool is None:
            return
        if count:
            self._want_more()
        elif self._queue._spooled:
            self._spool.retry_later(self._want_more)

    # -- the open circuit -------------------------------------------------------------------

    async def _past_the_circuit(self) -> _Item | None:
        """A worker's step while the circuit is not closed: fail a chunk of goals (open), wait
        (open and nothing to fail, or a probe is out), or take a goal to send as the probe."""
        circuit = self.circuit
        state = circuit.refresh()
        if state is _OPEN:
            # One worker at a time fails the waiting goals, a chunk per step of the loop: with
            # every worker failing a chunk, a step of the loop would fail them all at once.
            if not self._failing and self._fail_a_chunk():
                self._failing = True
                try:
                    await asyncio.sleep(0)  # let the app run between two chunks
                finally:
                    self._failing = False
            else:
                await self._wait_for_work(circuit.until - self._loop.time())
            return None
        if state is _CLOSED:
            return None
        if circuit.probe is None:  # half-open: the first goal at hand probes the API
            item: _Item | None = None
            if self._ready:
                item = self._ready.popleft()
                self._queue.unpark(retry=True)
            else:
                taken = self._queue.take()
                if taken is not None:
                    item = (taken, 1, None, False)
            if item is None:
                if self._spool is not None and self._queue._spooled:
                    self._want_more()  # every goal is on disk: read one back to probe with
                await self._wait_for_work()
                return None
            circuit.probe = item[0]
            return item
        changed = circuit.changed()
        await asyncio.wait((changed,), timeout=_PROBE_PATIENCE)
        return None

    def _fail_a_chunk(self) -> bool:
        """Fail up to ``_CHUNK`` waiting goals with the open circuit's error (each its own
        copy); ``False`` when none was waiting."""
        circuit, queue = self.circuit, self._queue
        cause = circuit.error
        if cause is None:
            return False
        doomed: list[tuple[Delivery, bool]] = []
        while self._ready and len(doomed) < _CHUNK:
            item = self._ready.popleft()
            doomed.append((item[0], item[3]))
            queue.unpark(retry=False)
        while self._heap and len(doomed) < _CHUNK:
            item = heapq.heappop(self._heap)[2]
            doomed.append((item[0], item[3]))
            queue.unpark(retry=False)
        while len(doomed) < _CHUNK:
            taken = queue.take()
            if taken is None:
                break
            doomed.append((taken, False))
        failed = 0
        for delivery, maybe in doomed:
            if self._park(delivery):
                continue  # with a spool: it waits on disk for the circuit to close
            error = own_copy(cause)
            error.maybe_delivered = maybe  # this goal's own, not the cause's
            self._give_up(delivery, error)
            failed += 1
        circuit.failed_while_open += failed
        self._check_parked()
        return bool(doomed)

    # -- send(): the caller's own request, sharing the limit, the pause and the circuit ---

    async def _attempt(
        self, body: bytes, token: object
    ) -> tuple[bytes | DataFastError | None, int]:
        """One request of ``send()``'s, ahead of the queue's goals for the next free slot:
        the API's success body or the error it ended with, and the limiter's epoch it was
        sent in; ``None`` when the circuit opened while it waited for a slot (no request)."""
        limiter = self._limiter
        if not limiter.try_acquire():
            await limiter.acquire(first=True)
            circuit = self.circuit
            if circuit.state is not _CLOSED and circuit.probe is not token:
                # The circuit opened while this call waited for a slot: no request.
                limiter.release()
                return None, limiter.epoch
        epoch = limiter.epoch
        try:
            status, raw, reason, headers = await self._transport.send(body)
        except TransportError as exc:
            return exc, epoch
        finally:
            limiter.release()
        return outcome_of(status, raw, reason, headers), epoch

    async def _send_past_the_circuit(self, token: object) -> None:
        """Before a ``send()``'s attempt: raise the open circuit's error, wait for a probe's
        answer, or become the probe."""
        circuit = self.circuit
        while True:
            state = circuit.refresh()
            if state is _CLOSED:
                return
            if state is _OPEN:
                assert circuit.error is not None
                raise own_copy(circuit.error)
            if circuit.probe is None:
                circuit.probe = token
                return
            changed = circuit.changed()
            await asyncio.wait((changed,), timeout=_PROBE_PATIENCE)

    async def send_now(self, goal: Goal) -> GoalResult:
        """Deliver one goal now with the retry policy; raise its final error."""
        attempt = 1
        maybe = False
        body = encode_goal(goal)  # once, for every attempt
        token = object()
        circuit = self.circuit
        try:
            while True:
                if circuit.state is not _CLOSED:
                    await self._send_past_the_circuit(token)
                outcome, epoch = await self._attempt(body, token)
                if outcome is None:
                    continue  # the circuit opened meanwhile: raise its error, or probe
                if isinstance(outcome, bytes):
                    if circuit.probe is token:
                        self._answered(token)
                    return read_result(outcome)
                if isinstance(outcome, TransportError) and outcome.maybe_delivered:
                    maybe = True
                self._observe(token, outcome, epoch)
                if outcome.opens_circuit:
                    raise outcome
                self._pause_for(outcome)
                delay = decide(
                    self._policy, outcome, attempt, self._loop.time(), self._close_deadline
                )
                if delay is None:
                    raise outcome
                if delay == PAST_DEADLINE or self._stopping:
                    raise _shutdown_error(outcome, maybe)
                # Bounded: at most max_delay, or max_retry_after for a Retry-After.
                await asyncio.sleep(delay)
                if self._stopping:
                    raise _shutdown_error(outcome, maybe)
                attempt += 1
        finally:
            if circuit.probe is token:  # cut while it probed: another request probes at once
                circuit.probe_dropped(token)


def _is_congestion(error: DataFastError) -> bool:
    """A 429, a 503 or a timeout: the API (or what is in front of it) is busy."""
    if isinstance(error, TransportError):
        return error.timed_out
    return getattr(error, "status", None) in (429, 503)


# Loop turns a worker cancelled from outside waits for the owner's aclose() to begin.
_OWNER_TURNS = 3


def _shutdown_error(
    cause: DataFastError | None,
    maybe_delivered: bool,
    reason: str = "goal still undelivered at the shutdown deadline",
) -> ShutdownError:
    error = ShutdownError(reason, maybe_delivered=maybe_delivered)
    error.__cause__ = cause
    return error


def _with_flag(error: DataFastError, maybe: bool) -> DataFastError:
    """The final error, saying whether any attempt of the goal may have arrived (an error of
    one goal's own: the flag is the goal's)."""
    if maybe and not error.maybe_delivered:
        error.maybe_delivered = True
    return error


def _internal_error(what: str, exc: BaseException) -> DataFastError:
    error = DataFastError(f"internal error: {what}: {exc!r}")
    error.__cause__ = exc
    return error


# Summaries of the errors goals wait to retry after, shared between goals that failed the same
# way: a goal waiting to retry holds no exception chain or traceback.
_SUMMARIES: dict[tuple[object, ...], DataFastError] = {}
_SUMMARY_LIMIT = 256
_SUMMARY_BODY = 512  # characters of an error body a summary keeps


def _summary(error: DataFastError) -> DataFastError:
    key = (type(error), getattr(error, "status", None), str(error), error.retriable)
    summary = _SUMMARIES.get(key)
    if summary is None:
        summary = own_copy(error)
        summary.__cause__ = None
        body = getattr(summary, "body", None)
        if isinstance(body, str) and len(body) > _SUMMARY_BODY:
            summary.body = body[:_SUMMARY_BODY]  # type: ignore[attr-defined]
        if len(_SUMMARIES) >= _SUMMARY_LIMIT:
            _SUMMARIES.clear()
        _SUMMARIES[key] = summary
    return summary
