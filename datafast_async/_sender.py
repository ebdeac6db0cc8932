"""The sender: a fixed set of workers that drain the queue and deliver goals.

Each worker takes the next goal (a retry that is due first, else the queue's oldest), takes a
slot from the ``Limiter`` only while its request is out, and settles the goal in ``_finish``,
the one place where a goal's fate is decided. A goal waiting to retry sits in a timer heap and
holds neither a worker nor a slot. A ``Retry-After`` pauses the whole sender through the
limiter. At shutdown the client stops the workers and ``abandon_all`` reports what is left.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable

from ._delivery import Delivery
from ._errors import DataFastError, ShutdownError, TransportError
from ._limiter import Limiter
from ._models import Goal, GoalResult
from ._queue import GoalQueue
from ._reporting import Reporter, logger
from ._retry import RetryPolicy, retry_delay
from ._transport import Transport
from ._wire import encode_goal, read_result

__all__ = ["Sender"]

# (delivery, attempt number about to be made, the error of the previous attempt)
_Item = tuple[Delivery, int, "DataFastError | None"]


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
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._policy = policy
        self._limiter = limiter
        self._reporter = reporter
        self._loop = loop
        self._worker_count = workers
        self._on_orphaned = on_orphaned
        self._workers: list[asyncio.Task[None]] = []
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
        """From now on a retry that would start after ``deadline`` fails at once."""
        self._close_deadline = deadline
        late = [entry for entry in self._heap if entry[0] > deadline]
        if late:
            self._heap = [entry for entry in self._heap if entry[0] <= deadline]
            heapq.heapify(self._heap)
            for _, _, (delivery, _, error) in late:
                self._finish(delivery, _shutdown_error(error))

    def halt(self) -> None:
        """Stop taking work: workers cancelled from now on just end, and no retry is due."""
        self._stopping = True
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
        """Fail every goal still queued, in flight or waiting to retry with ``ShutdownError``."""
        last_errors: dict[Delivery, DataFastError | None] = {
            delivery: error for delivery, _, error in self._ready
        }
        last_errors.update((item[0], item[2]) for _, _, item in self._heap)
        self._ready.clear()
        self._heap.clear()
        abandoned = self._queue.abandon_all()
        for delivery in abandoned:
            error = ShutdownError(reason)
            error.__cause__ = last_errors.get(delivery)
            delivery._settle(error)
            self._reporter.failed(delivery.goal, error)
        return len(abandoned)

    # -- the workers ----------------------------------------------------------------------

    async def _work(self, index: int) -> None:
        queue, ready, limiter = self._queue, self._ready, self._limiter
        send = self._transport.send
        delivery: Delivery | None = None
        attempt = 0
        outcome: bytes | DataFastError
        try:
            while True:
                delivery = None
                # A retry that is due first, else the queue's oldest goal. This loop runs once
                # per goal sent, so the common case makes as few calls as it can, and takes
                # the steps of ``_attempt`` itself (one call and one coroutine fewer per goal).
                if ready:
                    delivery, attempt, _ = ready.popleft()
                    queue.record_retry()
                else:
                    taken = queue.take()
                    if taken is None:
                        await self._wait_for_work()
                        continue
                    delivery, attempt = taken, 1
                try:
                    body = delivery._body()
                    if not limiter.try_acquire():
                        await limiter.acquire()
                    try:
                        outcome = await send(body)
                    finally:
                        limiter.release()
                except TransportError as exc:
                    outcome = exc
                except Exception as exc:
                    # A bug here or in a custom transport: fail this goal, keep the worker.
                    logger.exception("internal error while sending goal %r", delivery.goal.name)
                    outcome = DataFastError(f"internal error while sending: {exc!r}")
                if isinstance(outcome, bytes):
                    self._finish(delivery, outcome)  # delivered
                elif isinstance(outcome, DataFastError):
                    self._settle_attempt(delivery, attempt, outcome)
                else:
                    # A custom transport broke its contract: fail this goal, keep the worker.
                    logger.error("the transport answered %r, not bytes or an error", outcome)
                    self._finish(
                        delivery,
                        DataFastError(
                            f"internal error while sending: the transport answered {outcome!r}"
                        ),
                    )
        except asyncio.CancelledError:
            if not self._stopping:
                await self._cancelled_from_outside(index, delivery, attempt)
            raise

    async def _cancelled_from_outside(
        self, index: int, held: Delivery | None, attempt: int
    ) -> None:
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
            if held is not None and self._queue.is_active(held):
                # Its request was cut without an answer: send it again, as after a reset.
                self._ready.appendleft((held, attempt, None))
            self._workers[index] = self._spawn(index)
            self.notify()
        elif not self._orphaned and self._on_orphaned is not None:
            self._orphaned = True
            await self._on_orphaned()

    async def _wait_for_work(self) -> None:
        # An idle worker waits without a deadline: it is woken by new work, or cancelled by
        # stop(); it holds no goal while it waits.
        future: asyncio.Future[None] = self._loop.create_future()
        self.idle.append(future)
        try:
            await future
        finally:
            # (A loop closed with this task still pending closes it here: nothing to cancel.)
            if not future.done() and not self._loop.is_closed():
                future.cancel()
            if future in self.idle:
                self.idle.remove(future)

    async def _attempt(self, body: bytes) -> bytes | DataFastError:
        """One request for one goal's body (``send()``'s; the workers inline these steps):
        the API's 2xx body (read only when somebody asks for the ``GoalResult``), or the error
        the attempt ended with."""
        limiter = self._limiter
        if not limiter.try_acquire():
            await limiter.acquire()
        try:
            return await self._transport.send(body)
        except TransportError as exc:
            return exc
        finally:
            limiter.release()

    def _settle_attempt(self, delivery: Delivery, attempt: int, outcome: DataFastError) -> None:
        """A failed attempt: retry the goal later, or fail it."""
        # A Retry-After holds the whole sender, whether or not this goal is retried.
        self._pause_for(outcome)
        delay = retry_delay(self._policy, outcome, attempt)
        if delay is None:
            self._finish(delivery, outcome)
            return
        when = self._loop.time() + delay
        if self._close_deadline is not None and when > self._close_deadline:
            self._finish(delivery, _shutdown_error(outcome))
            return
        item = (delivery, attempt + 1, outcome)
        if delay <= 0:
            self._ready.append(item)
            self.notify()
            return
        heapq.heappush(self._heap, (when, next(self._sequence), item))
        if self._timer is None or when < self._timer_when:
            self._arm_timer(when)

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

    def _finish(self, delivery: Delivery, outcome: bytes | DataFastError) -> None:
        """The one place where a goal's fate is decided, counted and reported.

        ``outcome`` is the API's 2xx body (the goal was delivered) or the final error.
        """
        delivered = isinstance(outcome, bytes)
        if not self._queue.finish(delivery, delivered):
            return
        delivery._settle(outcome)
        if isinstance(outcome, bytes):
            # Only an on_success callback needs the Goal and the GoalResult: without one,
            # neither is built here.
            if self._reporter.reports_success:
                result = delivery.result
                assert result is not None
                self._reporter.delivered(delivery.goal, result)
        else:
            self._reporter.failed(delivery.goal, outcome)

    # -- send(): the caller's own request, sharing the limit and the pause ----------------

    async def send_now(self, goal: Goal) -> GoalResult:
        """Deliver one goal now with the retry policy; raise its final error."""
        attempt = 1
        body = encode_goal(goal)  # once, for every attempt
        while True:
            outcome = await self._attempt(body)
            if isinstance(outcome, bytes):
                return read_result(outcome)
            self._pause_for(outcome)
            delay = retry_delay(self._policy, outcome, attempt)
            if delay is None:
                raise outcome
            deadline = self._close_deadline
            if self._stopping or (deadline is not None and self._loop.time() + delay > deadline):
                raise _shutdown_error(outcome)
            # Bounded: at most max_delay, or max_retry_after for a Retry-After.
            await asyncio.sleep(delay)
            if self._stopping:
                raise _shutdown_error(outcome)
            attempt += 1


# Loop turns a worker cancelled from outside waits for the owner's aclose() to begin.
_OWNER_TURNS = 3


def _shutdown_error(cause: DataFastError | None) -> ShutdownError:
    error = ShutdownError("goal still undelivered at the shutdown deadline")
    error.__cause__ = cause
    return error
