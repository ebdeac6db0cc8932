"""The in-flight limit: how many requests are out at once, and the sender-wide pause.

Today the limit is the client's ``concurrency``, fixed for the life of a run; ``limit`` can be
set while requests wait (slots are then handed over at once), which is the seam adaptive
concurrency will use. A ``Retry-After`` pauses every request that has not started yet, the
queue's and ``send()``'s. Workers take a slot before they take a goal, so a goal never waits
in front of the limiter.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Limiter"]


class Limiter:
    """Slots for requests in flight, handed over first come, first served."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
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
        self._limit = value
        self._hand_over()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._loop.time())

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

    async def acquire(self) -> None:
        """Wait for the pause to end and a slot to be free, then take the slot."""
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
