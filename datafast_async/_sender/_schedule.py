"""The retry schedule: requests waiting to retry, and the one timer that wakes them.

A request waiting to retry holds neither a worker nor a slot: it sits here, due (``ready``,
first in, first out) or later (a heap by due time, with one timer for the earliest), keeping a
summary of its last error. Each one counts against the queue's bound while it waits
(``RequestQueue.park``/``unpark``), so however long the API is down at most ``max_queue_size``
requests wait in memory.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable

from .._queue import RequestQueue
from ._job import Job

__all__ = ["Schedule"]


class Schedule:
    """Requests waiting to retry, for one sender. ``on_due(count)`` wakes workers."""

    def __init__(
        self, queue: RequestQueue, loop: asyncio.AbstractEventLoop, on_due: Callable[[int], None]
    ) -> None:
        self._queue = queue
        self._loop = loop
        self._on_due = on_due
        #: Retries that are due, oldest first (workers take these before the queue's oldest).
        self.ready: deque[Job] = deque()
        self._heap: list[tuple[float, int, Job]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._halted = False
        #: How many of them wait for their endpoint's circuit (``Job.held``), not to retry.
        self.held = 0

    def __len__(self) -> int:
        return len(self.ready) + len(self._heap)

    def later(self, job: Job, delay: float) -> None:
        """``job`` retries (or, ``job.held``, is tried again) in ``delay`` seconds (at once
        for 0)."""
        self._queue.park()
        if job.held:
            self.held += 1
        if delay <= 0:
            self.ready.append(job)
            self._on_due(1)
            return
        when = self._loop.time() + delay
        heapq.heappush(self._heap, (when, next(self._sequence), job))
        if not self._halted and (self._timer is None or when < self._timer_when):
            self._arm(when)

    def again_first(self, job: Job) -> None:
        """``job``'s request was cut without an answer (its worker cancelled): it goes again
        before every other retry."""
        self._queue.park()
        self.ready.appendleft(job)

    def take_due(self) -> Job | None:
        """The oldest retry that is due, now being sent (``None``: none is due)."""
        if not self.ready:
            return None
        job = self.ready.popleft()
        if job.held:
            self.held -= 1
            job.held = False
            self._queue.unpark(job.delivery, retry=False)  # not a new attempt
        else:
            self._queue.unpark(job.delivery, retry=True)
        return job

    def take_later_than(self, deadline: float) -> list[Job]:
        """Every retry due only after ``deadline``, taken out (to end them)."""
        late = [entry for entry in self._heap if entry[0] > deadline]
        if not late:
            return []
        self._heap = [entry for entry in self._heap if entry[0] <= deadline]
        heapq.heapify(self._heap)
        return self._unparked([job for _, _, job in late])

    def take_some(self, count: int) -> list[Job]:
        """Up to ``count`` waiting retries, due ones first, taken out (to end them)."""
        jobs: list[Job] = []
        while self.ready and len(jobs) < count:
            jobs.append(self.ready.popleft())
        while self._heap and len(jobs) < count:
            jobs.append(heapq.heappop(self._heap)[2])
        return self._unparked(jobs)

    def take_all(self) -> list[Job]:
        """Every waiting retry, taken out (to end them)."""
        jobs = list(self.ready) + [job for _, _, job in self._heap]
        self.ready.clear()
        self._heap.clear()
        return self._unparked(jobs)

    def wake_held(self) -> None:
        """The requests held for their endpoint's circuit are due now (it closed)."""
        if not self.held:
            return
        held = [entry for entry in self._heap if entry[2].held]
        if not held:
            return
        self._heap = [entry for entry in self._heap if not entry[2].held]
        heapq.heapify(self._heap)
        self.ready.extend(job for _, _, job in sorted(held))
        self._on_due(len(held))

    def halt(self) -> None:
        """No retry is due from now on (the sender stops)."""
        self._halted = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unparked(self, jobs: list[Job]) -> list[Job]:
        for job in jobs:
            if job.held:
                self.held -= 1
                job.held = False
            self._queue.unpark(job.delivery, retry=False)
        return jobs

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._due)

    def _due(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap, ready = self._heap, self.ready
        due = 0
        while heap and heap[0][0] <= now:
            ready.append(heapq.heappop(heap)[2])
            due += 1
        if heap and not self._halted:
            self._arm(heap[0][0])
        self._on_due(due)
