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
from collections.abc import Callable

from ._delivery import Delivery
from ._errors import DataFastError, ShutdownError, TransportError
from ._limiter import Limiter
from ._models import Goal, GoalResult
from ._queue import GoalQueue
from ._reporting import Reporter, logger
from ._retry import RetryPolicy, retry_delay
from ._transport import Transport
from ._wire import decode_response, encode_goal

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
        on_orphaned: Callable[[], None] | None = None,
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
        self._idle: deque[asyncio.Future[None]] = deque()
        self._ready: deque[_Item] = deque()
        self._heap: list[tuple[float, int, _Item]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._close_deadline: float | None = None
        self._stopping = False

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers in the client's loop (they are awaited by ``stop``)."""
        for index in range(self._worker_count):
            task = self._loop.create_task(self._work(), name=f"datafast-sender-{index}")
            self._workers.append(task)
        self.notify(len(self._queue))

    def notify(self, count: int = 1) -> None:
        """Wake up to ``count`` idle workers: there is work. Called in the client's loop."""
        idle = self._idle
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

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the workers (requests in flight are cut) and wait for them to end."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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

    async def _work(self) -> None:
        try:
            while True:
                item = self._next()
                if item is None:
                    await self._wait_for_work()
                    continue
                delivery, attempt, _ = item
                if attempt > 1:
                    self._queue.record_retry()
                try:
                    outcome = await self._attempt(delivery.goal)
                except Exception as exc:
                    # A bug here or in a custom transport: fail this goal, keep the worker.
                    logger.exception("internal error while sending goal %r", delivery.goal.name)
                    outcome = DataFastError(f"internal error while sending: {exc!r}")
                self._settle_attempt(delivery, attempt, outcome)
        except asyncio.CancelledError:
            if not self._stopping and self._on_orphaned is not None:
                # Cancelled by somebody else: the event loop is ending without aclose().
                self._stopping = True
                self._on_orphaned()
            raise

    def _next(self) -> _Item | None:
        if self._ready:
            return self._ready.popleft()
        delivery = self._queue.take()
        return None if delivery is None else (delivery, 1, None)

    async def _wait_for_work(self) -> None:
        # An idle worker waits without a deadline: it is woken by new work, or cancelled by
        # stop(); it holds no goal while it waits.
        future: asyncio.Future[None] = self._loop.create_future()
        self._idle.append(future)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            if future in self._idle:
                self._idle.remove(future)

    async def _attempt(self, goal: Goal) -> GoalResult | DataFastError:
        """One request for one goal: the API's answer, or the error it ended with."""
        body = encode_goal(goal)
        await self._limiter.acquire()
        try:
            response = await self._transport.send(body)
        except TransportError as exc:
            return exc
        finally:
            self._limiter.release()
        return decode_response(response)

    def _settle_attempt(
        self, delivery: Delivery, attempt: int, outcome: GoalResult | DataFastError
    ) -> None:
        if isinstance(outcome, GoalResult):
            self._finish(delivery, outcome)
            return
        delay = retry_delay(self._policy, outcome, attempt)
        if delay is None:
            self._finish(delivery, outcome)
            return
        self._pause_for(outcome)
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

    def _finish(self, delivery: Delivery, outcome: GoalResult | DataFastError) -> None:
        """The one place where a goal's fate is decided, counted and reported."""
        delivered = isinstance(outcome, GoalResult)
        if not self._queue.finish(delivery, delivered):
            return
        delivery._settle(outcome)
        if isinstance(outcome, GoalResult):
            self._reporter.delivered(delivery.goal, outcome)
        else:
            self._reporter.failed(delivery.goal, outcome)

    # -- send(): the caller's own request, sharing the limit and the pause ----------------

    async def send_now(self, goal: Goal) -> GoalResult:
        """Deliver one goal now with the retry policy; raise its final error."""
        attempt = 1
        while True:
            outcome = await self._attempt(goal)
            if isinstance(outcome, GoalResult):
                return outcome
            delay = retry_delay(self._policy, outcome, attempt)
            if delay is None:
                raise outcome
            self._pause_for(outcome)
            # Bounded: at most max_delay, or max_retry_after for a Retry-After.
            await asyncio.sleep(delay)
            attempt += 1


def _shutdown_error(cause: DataFastError | None) -> ShutdownError:
    error = ShutdownError("goal still undelivered at the shutdown deadline")
    error.__cause__ = cause
    return error
