"""A watchdog on the event loop: no step of the SDK holds the loop for 10 ms.

asyncio's debug mode logs every callback or task step that runs longer than
``loop.slow_callback_duration`` ("Executing <handle> took 0.012 seconds"). Over a 10,000-goal
run against FakeDataFast on 127.0.0.1, through the real aiohttp transport, none of those steps
may be the SDK's (a sender worker, the shutdown task, a callback of the package) holding the
loop: running for 10 ms, or blocking in the kernel.

Those durations are wall-clock time. On a busy machine (CI, two cores shared by several test
runs) the operating system preempts the loop's thread in the middle of a step that costs 2 ms,
and asyncio reports 15; a garbage collection that happens to start in a step is the process's
pause, not the step's work. So each reported step also records what the loop's thread did
meanwhile: its CPU time, the part of it spent collecting garbage, and whether it blocked in
the kernel (a voluntary context switch) or was preempted (an involuntary one). A step of the SDK
fails the test when it spent 10 ms of CPU outside garbage collection, or blocked.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from datafast_async import DataFast
from datafast_async._delivery import Delivery
from datafast_async.testing import FakeDataFast

try:
    import resource

    RUSAGE_THREAD: int | None = resource.RUSAGE_THREAD  # Linux
except (ImportError, AttributeError):
    RUSAGE_THREAD = None

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GOALS = 10_000
SLOW_STEP = 0.010  # seconds
# A step of the SDK: a task it names, or code of the package (its testing server aside).
SDK_STEP = re.compile(r"datafast-sender-\d+|datafast-aclose|datafast_async[/\\](?!testing)")


class Step(NamedTuple):
    what: str
    wall: float  # seconds, as asyncio measured it
    cpu: float  # seconds of the loop's thread on the CPU
    gc: float  # of which collecting garbage
    blocked: int  # voluntary context switches: the thread waited in the kernel
    preempted: int  # involuntary ones: the operating system ran something else

    @property
    def held(self) -> float:
        """Seconds the step itself held the loop."""
        return self.cpu - self.gc

    def __str__(self) -> str:
        return (
            f"{self.wall * 1000:.1f} ms ({self.held * 1000:.1f} ms of its own CPU, "
            f"{self.gc * 1000:.1f} ms collecting garbage, blocked {self.blocked}x, preempted "
            f"{self.preempted}x): {self.what[:200]}"
        )


class Watchdog(logging.Handler):
    """asyncio's slow-step warnings, each with what the loop's thread did during the step."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.steps: list[Step] = []
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        self._gc_total = 0.0
        self._last = (0.0, 0.0, 0, 0)  # the step that just ran: cpu, gc, blocked, preempted
        self.most_cpu = 0.0  # seconds: the most CPU any step of the loop took, outside GC

    def run(self, run: Callable[[Any], None]) -> Callable[[Any], None]:
        """``Handle._run``, measured."""

        def measured(handle: Any) -> None:
            cpu, collected, switches = time.thread_time(), self._gc_total, _switches()
            try:
                run(handle)
            finally:
                after = _switches()
                self._last = (
                    time.thread_time() - cpu,
                    self._gc_total - collected,
                    after[0] - switches[0],
                    after[1] - switches[1],
                )
                self.most_cpu = max(self.most_cpu, self._last[0] - self._last[1])

        return measured

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            pause = time.thread_time() - self._gc_started
            self._gc_total += pause
            self.gc_pauses.append(pause)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Executing %s took %.3f seconds" and isinstance(record.args, tuple):
            what, seconds = record.args
            self.steps.append(Step(str(what), float(seconds), *self._last))


def _switches() -> tuple[int, int]:
    if RUSAGE_THREAD is None:
        return 0, 0
    usage = resource.getrusage(RUSAGE_THREAD)
    return usage.ru_nvcsw, usage.ru_nivcsw


async def _watched_run(monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """10,000 goals to FakeDataFast in debug mode; the SDK's steps that held the loop."""
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(watchdog)
    monkeypatch.setattr(asyncio.events.Handle, "_run", watchdog.run(asyncio.events.Handle._run))
    gc.callbacks.append(watchdog.on_gc)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_STEP
    deliveries: list[Delivery] = []
    try:
        async with FakeDataFast() as fake:
            async with DataFast(fake.api_key, base_url=fake.base_url) as df:
                for i in range(GOALS):
                    deliveries.append(df.track_nowait(f"visitor-{i}", "watched"))
                    if i % 50 == 49:
                        await asyncio.sleep(0)  # the app's own steps stay short too
                assert await df.flush(timeout=120)
            stats = df.stats()
            received = len(fake.goals)
    finally:
        loop.set_debug(False)
        gc.callbacks.remove(watchdog.on_gc)
        asyncio_logger.removeHandler(watchdog)
        monkeypatch.undo()

    assert stats.delivered == received == GOALS
    assert all(delivery.result is not None for delivery in deliveries)
    steps = watchdog.steps
    sdk = [step for step in steps if SDK_STEP.search(step.what)]
    stalls = [step for step in sdk if step.held >= SLOW_STEP or step.blocked]
    longest = max(steps, key=lambda step: step.wall, default="none")
    longest_sdk = max(sdk, key=lambda step: step.held, default="none")
    print(
        f"\nwatchdog: {GOALS} goals delivered in debug mode; asyncio reported {len(steps)} "
        f"steps over {SLOW_STEP * 1000:.0f} ms, {len(sdk)} of them the SDK's, {len(stalls)} of "
        f"those holding the loop itself (the rest preempted or collecting garbage); longest "
        f"step {longest}; "
        f"SDK step that held the loop longest {longest_sdk}; the most CPU any step took "
        f"(outside GC) {watchdog.most_cpu * 1000:.1f} ms; longest garbage collection "
        f"{max(watchdog.gc_pauses, default=0.0) * 1000:.1f} ms"
    )
    return stalls


async def test_no_sdk_step_holds_the_loop_for_10_ms_over_10_000_goals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step of the SDK that holds the loop does so every run; this shared machine, under
    debug mode, once in a while shows a single slow step that the next run does not repeat.
    So a stall found in one run is looked for again in a second: the test fails when the SDK
    stalls in both."""
    stalls = await _watched_run(monkeypatch)
    if stalls:
        print("watchdog: stalls in the first run, measuring again:\n" + "\n".join(map(str, stalls)))
        stalls = await _watched_run(monkeypatch)
    assert stalls == [], "SDK steps held the loop:\n" + "\n".join(map(str, stalls))
