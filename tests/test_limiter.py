"""The in-flight limit: slots handed over in order, cancelled waiters, the sender-wide pause,
and what the client's counters show while it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest

from datafast_async import DataFast, ShutdownError, Stats
from datafast_async._limiter import Limiter
from datafast_async._transport import Request, Response

from ._fakes import Recorder, error, ok

MakeClient = Callable[..., DataFast]


async def acquired_by(limiter: Limiter, order: list[str], name: str) -> None:
    await limiter.acquire()
    order.append(name)


async def test_slots_are_handed_over_first_come_first_served() -> None:
    limiter = Limiter(1, asyncio.get_running_loop())
    assert limiter.try_acquire()
    order: list[str] = []
    waiters = [asyncio.ensure_future(acquired_by(limiter, order, name)) for name in "abcd"]
    await anyio.wait_all_tasks_blocked()
    assert order == []
    assert not limiter.try_acquire()  # others wait: no jumping the line, even with a slot free
    for expected in (["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]):
        limiter.release()
        await anyio.wait_all_tasks_blocked()
        assert order == expected
        assert limiter.in_use == 1
    await asyncio.gather(*waiters)


async def test_a_cancelled_waiter_that_was_handed_a_slot_passes_it_on() -> None:
    limiter = Limiter(1, asyncio.get_running_loop())
    assert limiter.try_acquire()
    order: list[str] = []
    first = asyncio.ensure_future(acquired_by(limiter, order, "first"))
    second = asyncio.ensure_future(acquired_by(limiter, order, "second"))
    await anyio.wait_all_tasks_blocked()
    limiter.release()  # handed to "first" ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert order == ["second"]
    assert limiter.in_use == 1
    limiter.release()
    assert limiter.in_use == 0
    assert limiter.try_acquire()


async def test_a_waiter_cancelled_before_its_turn_leaves_the_line() -> None:
    limiter = Limiter(1, asyncio.get_running_loop())
    assert limiter.try_acquire()
    order: list[str] = []
    gone = asyncio.ensure_future(acquired_by(limiter, order, "gone"))
    stays = asyncio.ensure_future(acquired_by(limiter, order, "stays"))
    await anyio.wait_all_tasks_blocked()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    limiter.release()
    await asyncio.wait_for(stays, 5)
    assert order == ["stays"]
    assert limiter.in_use == 1


async def test_a_pause_holds_try_acquire_and_acquire() -> None:
    loop = asyncio.get_running_loop()
    limiter = Limiter(2, loop)
    limiter.pause(60)
    limiter.pause(0.01)  # a shorter pause does not cut a longer one
    assert limiter.paused_for > 59
    assert not limiter.try_acquire()
    order: list[str] = []
    held = asyncio.ensure_future(acquired_by(limiter, order, "held"))
    await anyio.wait_all_tasks_blocked()
    assert order == []
    assert limiter.in_use == 0
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held

    short = Limiter(1, loop)
    started = loop.time()
    short.pause(0.02)
    assert not short.try_acquire()
    await asyncio.wait_for(short.acquire(), 5)  # once the pause is over
    assert loop.time() >= started + 0.02
    assert short.in_use == 1


async def test_a_slot_handed_over_during_a_pause_waits_for_its_end() -> None:
    limiter = Limiter(1, asyncio.get_running_loop())
    assert limiter.try_acquire()
    order: list[str] = []
    waiter = asyncio.ensure_future(acquired_by(limiter, order, "waiter"))
    await anyio.wait_all_tasks_blocked()
    limiter.pause(60)
    limiter.release()  # handed over, but the pause began meanwhile: given back, held
    await anyio.wait_all_tasks_blocked()
    assert order == []
    assert limiter.in_use == 0
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_raising_the_limit_hands_slots_over_at_once() -> None:
    limiter = Limiter(1, asyncio.get_running_loop())
    assert limiter.try_acquire()
    order: list[str] = []
    waiters = [asyncio.ensure_future(acquired_by(limiter, order, name)) for name in "ab"]
    await anyio.wait_all_tasks_blocked()
    limiter.limit = 3
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert order == ["a", "b"]
    assert limiter.in_use == 3


def test_a_limit_below_one_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="must be >= 1"):
            Limiter(0, loop)
        limiter = Limiter(1, loop)
        with pytest.raises(ValueError, match="must be >= 1"):
            limiter.limit = 0
    finally:
        loop.close()


async def test_during_a_retry_after_pause_in_flight_counts_only_goals_really_out(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """Workers take a slot before a goal: while a Retry-After holds the sender, the goals
    behind it stay queued, and in_flight counts only the goal waiting to retry."""
    first = True

    def answer(request: Request) -> Response:
        nonlocal first
        if first:
            first = False
            return error(429, "slow down", retry_after="30")
        return ok()

    recorder.answer = answer
    df = make_client(concurrency=4)
    await df.start()
    deliveries = [df.track_nowait("v", f"g{i}") for i in range(10)]
    await anyio.wait_all_tasks_blocked()  # every worker now waits for the pause to end
    assert len(recorder.bodies) == 1
    assert df.stats() == Stats(enqueued=10, queued=9, in_flight=1)
    final = await df.aclose(timeout=0.05)
    assert final == Stats(enqueued=10, failed=10)
    assert all(isinstance(d.error, ShutdownError) for d in deliveries)
    assert len(recorder.bodies) == 1
