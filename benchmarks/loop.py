"""Loop steps: the longest step of the event loop while the SDK delivers 10,000 goals.

A client sends ``goals`` goals to ``FakeDataFast`` on 127.0.0.1 (the same loop, the real
aiohttp transport), the app yielding every 50 goals. Every step of the loop (``Handle._run``)
is measured in CPU time of the loop's thread (``time.thread_time``), less the garbage
collections that ran inside it (the process's pause, not the step's work), so a step the
operating system preempted on a busy machine is not counted longer than it ran. A step is the
SDK's when its handle names a sender task, the shutdown task or code of the package (its
testing server aside). Each round reports the longest step of all, the longest of the SDK's,
how many of the SDK's held the loop for 10 ms or more, how many blocked in the kernel (a
voluntary context switch, Linux only), and the longest garbage collection.

This was a test (tests/test_watchdog.py); wall-clock and CPU lengths depend on the machine, so
the suite keeps what does not (how many goals a step settles) and the lengths are here.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Callable
from typing import Any

from datafast_async import DataFast
from datafast_async.testing import FakeDataFast

from ._stats import summary

try:
    import resource

    _RUSAGE_THREAD: int | None = resource.RUSAGE_THREAD  # Linux
except (ImportError, AttributeError):
    _RUSAGE_THREAD = None

__all__ = ["SDK_STEP", "run"]

SLOW_STEP = 0.010  # seconds of CPU: a step that holds the loop
# A step of the SDK: a task it names, or code of the package (its testing server aside).
SDK_STEP = re.compile(r"datafast-sender-\d+|datafast-aclose|datafast_async[/\\](?!testing)")


def _describe(handle: Any) -> str:
    """A step's task (its name, and where its coroutine runs), or its callback and source."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Future):
        return repr(owner)
    return repr(handle)


def _voluntary_switches() -> int:
    if _RUSAGE_THREAD is None:
        return 0
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


class _Steps:
    """Every step of the loop, in CPU time outside garbage collection."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self.longest_sdk = 0.0
        self.longest_what = ""
        self.sdk_slow = 0
        self.sdk_blocked = 0
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        self._gc_total = 0.0

    def wrap(self, run: Callable[[Any], None]) -> Callable[[Any], None]:
        def measured(handle: Any) -> None:
            cpu, collected, switches = time.thread_time(), self._gc_total, _voluntary_switches()
            try:
                run(handle)
            finally:
                held = time.thread_time() - cpu - (self._gc_total - collected)
                blocked = _voluntary_switches() > switches
                self.count += 1
                what = _describe(handle)  # after the step's CPU time was taken
                if held >= self.longest:
                    self.longest, self.longest_what = held, what
                if SDK_STEP.search(what):
                    self.longest_sdk = max(self.longest_sdk, held)
                    self.sdk_slow += held >= SLOW_STEP
                    self.sdk_blocked += blocked

        return measured

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            pause = time.thread_time() - self._gc_started
            self._gc_total += pause
            self.gc_pauses.append(pause)


async def _one(goals: int) -> _Steps:
    steps = _Steps()
    original = asyncio.events.Handle._run
    asyncio.events.Handle._run = steps.wrap(original)  # type: ignore[method-assign]
    gc.callbacks.append(steps.on_gc)
    try:
        async with FakeDataFast() as fake:
            async with DataFast(fake.api_key, base_url=fake.base_url) as df:
                for i in range(goals):
                    df.track_nowait(f"visitor-{i}", "watched")
                    if i % 50 == 49:
                        await asyncio.sleep(0)  # the app's own steps stay short too
                assert await df.flush(timeout=120)
            delivered, received = df.stats().delivered, len(fake.goals)
    finally:
        gc.callbacks.remove(steps.on_gc)
        asyncio.events.Handle._run = original  # type: ignore[method-assign]
    if delivered != goals or received != goals:
        raise RuntimeError(f"{delivered} delivered and {received} received of {goals}")
    return steps


def run(rounds: int = 3, goals: int = 10_000) -> dict[str, Any]:
    runs = [asyncio.run(_one(goals)) for _ in range(rounds)]
    return {
        "goals": goals,
        "steps": summary([r.count for r in runs]),
        "longest_step_ms": summary([r.longest * 1000 for r in runs]),
        "longest_sdk_step_ms": summary([r.longest_sdk * 1000 for r in runs]),
        "sdk_steps_over_10ms": summary([r.sdk_slow for r in runs]),
        "sdk_steps_blocked": summary([r.sdk_blocked for r in runs]),
        "longest_gc_ms": summary([max(r.gc_pauses, default=0.0) * 1000 for r in runs]),
        "longest_steps": [r.longest_what[:300] for r in runs],
    }
