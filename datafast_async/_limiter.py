"""The in-flight limit: how many requests are out at once, and the sender-wide pause.

The limit adapts, as TCP's congestion window does (AIMD), between 1 and the client's
``concurrency`` (the ceiling). It starts at ``min(8, ceiling)``. While goals are waiting, the
limit is full and answers succeed, it grows: by one per success in slow start (so it doubles
once per round trip) until the first congestion signal, then by ``1 / limit`` per success (one
per round trip). A congestion signal (a 429, a 503, a timeout) shrinks it by a constant factor,
at most once per round trip: each request carries the ``epoch`` it was sent in, and signals
from requests sent before the last decrease are ignored.

A ``Retry-After`` pauses every request that has not started yet, the queue's and ``send()``'s.
Workers take a slot before they take a goal, so a goal never waits in front of the limiter;
``send()`` goes ahead of the workers for the next free slot.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

__all__ = ["DECREASE", "Limiter"]

#: The multiplicative decrease, chosen by ``make bench``'s capped server (300 requests/s at
#: 50 ms, where ~15 requests in flight is the capacity): 0.5 (TCP Reno's) swings the limit down
#: to 5 and loses goodput in some rounds; 0.9 stays near the cap but earns 6.5% of 429s; 0.7
#: kept the full 300/s with 3.5% of 429s (0.8: 300/s, 3.9%). See docs/performance.md.
DECREASE = 0.7
_INITIAL = 8


class Limiter:
    """Slots for requests in flight, handed over first come, first served (``send()``
    first), under a limit that adapts between 1 and ``ceiling``."""

    def __init__(
        self, ceiling: int, loop: asyncio.AbstractEventLoop, *, adaptive: bool = True
    ) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.ceiling = ceiling
        self.adaptive = adaptive
        self._window = float(min(_INITIAL, ceiling) if adaptive else ceiling)
        self._threshold = math.inf  # slow start until the first congestion signal
        self._limit = int(self._window)
        #: Whether a success may raise the limit (adaptive, and below the ceiling): the
        #: sender's per-goal check, so a limit at its ceiling costs nothing per goal.
        self.growing = adaptive and self._limit < ceiling
        #: Counts the decreases: a request's signal counts only if it was sent in this epoch.
        self.epoch = 0
        self._loop = loop
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = 0.0

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        if value < 1:
            raise ValueError("limit must be >= 1")
        self._window = float(value)
        self._limit = value
        self.growing = self.adaptive and value < self.ceiling
        self._hand_over()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._loop.time())

    # -- adaptation ---------------------------------------------------------------------------

    def succeeded(self, epoch: int, backlog: bool) -> None:
        """A request sent in ``epoch`` got a success; ``backlog``: goals are waiting."""
        if not self.adaptive or not backlog or self._limit >= self.ceiling:
            return
        if self._in_use + 1 < self._limit and not self._waiters:
            return  # the limit was not what held the goals back
        if self._window < self._threshold:
            self._window += 1.0  # slow start: doubles once per round trip
        else:
            self._window += 1.0 / self._window  # additive increase: one per round trip
        limit = min(self.ceiling, int(self._window))
        if limit != self._limit:
            self._limit = limit
            self.growing = limit < self.ceiling
            if self._waiters:
                self._hand_over()

    def congested(self, epoch: int) -> None:
        """A request sent in ``epoch`` got a 429, a 503 or a timeout: shrink, once per round
        trip (a signal from a request sent before the last decrease is ignored)."""
        if not self.adaptive or epoch != self.epoch:
            return
        self.epoch += 1
        self._window = max(1.0, self._window * DECREASE)
        self._threshold = self._window
        self._limit = max(1, int(self._window))
        self.growing = self._limit < self.ceiling

    # -- slots ----------------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Hold every request that has not started for ``seconds`` (a longer pause wins)."""
        until = self._loop.time() + seconds
        if until > self._paused_until:
            self._paused_until = until

    def try_acquire(self) -> bool:
        """Take a free slot now, unless a pause holds or others wait; else ``False``.

        The sender's fast path: ``acquire`` is a coroutine, and most slots are free.
        """
        if (
            self._in_use < self._limit
            and not self._waiters
            and (not self._paused_until or self._paused_until <= self._loop.time())
        ):
            self._in_use += 1
            return True
        return False

    async def acquire(self, *, first: bool = False) -> None:
        """Wait for the pause to end and a slot to be free, then take the slot.

        ``first``: go ahead of the slots' other waiters (``send()``, the caller's own request).
        """
        while True:
            wait = self._paused_until - self._loop.time()
            if wait > 0:
                # Bounded: a pause is at most RetryPolicy.max_retry_after long.
                await asyncio.sleep(wait)
                continue
            if self._in_use < self._limit and not self._waiters:
                self._in_use += 1
                return
            future: asyncio.Future[None] = self._loop.create_future()
            if first:
                self._waiters.appendleft(future)
            else:
                self._waiters.append(future)
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    # We were handed a slot but will not use it: pass it on.
                    self.release()
                elif future in self._waiters:
                    self._waiters.remove(future)
                raise
            # The slot was handed over by release(); a pause may have begun meanwhile.
            if self._paused_until > self._loop.time():
                self.release()
                continue
            return

    def release(self) -> None:
        """Give a slot back."""
        self._in_use -= 1
        if self._waiters:
            self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self._in_use < self._limit:
            future = self._waiters.popleft()
            if not future.done():
                self._in_use += 1
                future.set_result(None)
