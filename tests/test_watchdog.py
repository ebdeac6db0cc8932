"""No step of the event loop does an unbounded amount of the SDK's work.

Over a 10,000-goal run against FakeDataFast on 127.0.0.1, through the real aiohttp transport,
each step of the loop (``Handle._run``) counts the goals it settled (``Delivery._settle``):
delivering settles them one by one, as answers come, and failing thousands of goals at once
(an open circuit) does it a chunk of at most 1,000 per step, the app running in between. A
count does not depend on how fast the machine runs or how busy it is.

How long the steps take (the CPU time of the longest, in the SDK's steps and in all) is a
measurement, not a test: ``python -m benchmarks --only loop`` (benchmarks/loop.py). A step that
blocks in the kernel (a sleep, file or socket I/O, a lock held elsewhere) fails every test
through conftest's ``no_blocking_in_the_loop``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from datafast_async import AuthenticationError, DataFast
from datafast_async._delivery import Delivery
from datafast_async.testing import FakeDataFast

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GOALS = 10_000
CHUNK = 1000  # the most goals the open circuit fails in one step of the loop (the sender's)


@contextmanager
def settled_per_step() -> Iterator[list[int]]:
    """The number of goals each step of the loop settled while the block runs (steps that
    settled none are counted too)."""
    per_step: list[int] = []
    current = [0]
    run, settle = asyncio.events.Handle._run, Delivery._settle

    def counted_run(handle: Any) -> None:
        current[0] = 0
        try:
            run(handle)
        finally:
            per_step.append(current[0])

    def counting(self: Delivery[Any], outcome: Any) -> bool:
        current[0] += 1
        return settle(self, outcome)

    asyncio.events.Handle._run = counted_run  # type: ignore[method-assign,assignment]
    Delivery._settle = counting  # type: ignore[method-assign]
    try:
        yield per_step
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]
        Delivery._settle = settle  # type: ignore[method-assign]


async def _run(
    client: Callable[[FakeDataFast], DataFast], yield_every: int = 50
) -> tuple[list[Delivery[Any]], list[int]]:
    """GOALS goals tracked, the app yielding every ``yield_every``; the deliveries, and the
    settles of each step of the loop."""
    deliveries: list[Delivery[Any]] = []
    with settled_per_step() as per_step:
        async with FakeDataFast() as fake, client(fake) as df:
            for i in range(GOALS):
                deliveries.append(df.track_nowait(f"visitor-{i}", "watched"))
                if i % yield_every == yield_every - 1:
                    await asyncio.sleep(0)  # the app's own steps stay short too
            await df.flush(timeout=120)
    return deliveries, per_step


async def test_delivering_10_000_goals_settles_them_as_answers_come_not_in_one_step() -> None:
    deliveries, per_step = await _run(lambda fake: DataFast(fake.api_key, base_url=fake.base_url))
    assert all(delivery.result is not None for delivery in deliveries)
    assert sum(per_step) == GOALS  # each once
    assert max(per_step) <= CHUNK
    assert sum(1 for n in per_step if n) >= GOALS // CHUNK


async def test_failing_10_000_goals_at_an_open_circuit_does_it_a_chunk_per_step() -> None:
    """All 10,000 goals are queued when a refused key opens the circuit at the first answer:
    the others fail at once, a chunk of at most 1,000 per step of the loop (the opener may
    share a step with the first)."""
    deliveries, per_step = await _run(
        lambda fake: DataFast("df_not_the_fakes_key", base_url=fake.base_url), yield_every=GOALS
    )
    assert all(isinstance(delivery.error, AuthenticationError) for delivery in deliveries)
    assert sum(per_step) == GOALS
    settling = [n for n in per_step if n]
    assert max(settling) <= CHUNK + 1
    assert len(settling) >= GOALS // CHUNK
