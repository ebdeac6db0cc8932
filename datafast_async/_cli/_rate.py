"""``TokenBucket``: caps how many goals per second ``import --rate`` lets in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """At most ``rate`` tokens a second on average, with bursts of at most ``burst``.

    Over any window of ``t`` seconds at most ``burst + rate * t`` tokens are handed out. Time is
    the monotonic clock, never the wall clock.

    Args:
        rate: Tokens per second (> 0).
        burst: The bucket's size; ``None`` is a tenth of a second's worth (at least one), so
            the waits are few and the rate is even.
        clock: The monotonic clock (seconds).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.burst = max(1.0, rate / 10.0) if burst is None else float(burst)
        if self.burst < 1.0:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def try_take(self) -> float:
        """Take a token if there is one and return 0; else return the seconds until one is
        due (nothing taken)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def take(self) -> None:
        """Wait until a token is available, and take it."""
        while True:
            wait = self.try_take()
            if wait <= 0:
                return
            await asyncio.sleep(wait)
