"""Requests accepted before the client's run started (``track_nowait`` from a plain thread, no
event loop yet): with a spool, those beyond ``max_queue_size`` are kept for the spool (as far
as ``spool_max_bytes`` would take them) and go to disk when the run starts; without one they
are refused past the bound, as always.

Against a real ``FakeDataFast`` on 127.0.0.1; the goals come from a thread of the test process
before ``start()``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from datafast_async import DataFast, QueueFullError
from datafast_async.testing import FakeDataFast

from ._fakes import FAST_SPOOL, NO_WAIT, VISITOR, on_disk

GOALS = 5000
BOUND = 1000


def client_for(fake: FakeDataFast, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", NO_WAIT)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("max_queue_size", BOUND)
    if "spool_path" in kwargs:
        kwargs.setdefault("_spool_options", FAST_SPOOL)
    return DataFast(fake.api_key, base_url=fake.base_url, **kwargs)


def track_from_a_thread(df: DataFast, count: int) -> list[Any]:
    """``count`` goals tracked with ``track_nowait`` from a plain thread (no event loop):
    their deliveries."""
    deliveries: list[Any] = []

    def run() -> None:
        for i in range(count):
            deliveries.append(df.track_nowait(VISITOR, "signup", metadata={"i": str(i)}))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return deliveries


def numbers(fake: FakeDataFast) -> list[str]:
    return [str((goal.metadata or {})["i"]) for goal in fake.goals]


async def test_goals_handed_over_before_start_beyond_the_queue_go_to_the_spool(
    tmp_path: Path,
) -> None:
    """5,000 goals from a thread before start(), with max_queue_size=1000 and a spool: none is
    dropped; all 5,000 are delivered, each once; the spool is empty at the end."""
    async with FakeDataFast() as fake:
        df = client_for(fake, spool_path=tmp_path)
        deliveries = track_from_a_thread(df, GOALS)
        before = df.stats()
        assert before.dropped == 0
        assert before.enqueued == GOALS
        assert before.queued == BOUND
        assert before.spooled == GOALS - BOUND  # kept for the spool, counted as on disk
        await df.start()
        assert await df.flush(timeout=30) is True
        stats = await df.aclose()
        got = numbers(fake)
    assert stats.dropped == 0
    assert (stats.enqueued, stats.delivered, stats.failed, stats.spooled) == (GOALS, GOALS, 0, 0)
    assert sorted(got, key=int) == [str(i) for i in range(GOALS)]  # each once
    assert all(d.result is not None for d in deliveries)
    assert await on_disk(tmp_path) == {}


async def test_goals_before_start_past_spool_max_bytes_are_refused_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool's bound holds before start too: beyond the queue, goals are kept only while
    their estimated records fit in spool_max_bytes; the rest are refused (dropped, their
    Delivery settled with QueueFullError), and what was kept is delivered."""
    async with FakeDataFast() as fake:
        df = client_for(fake, spool_path=tmp_path, max_queue_size=100, spool_max_bytes=100_000)
        deliveries = track_from_a_thread(df, GOALS)
        before = df.stats()
        await df.start()
        assert await df.flush(timeout=30) is True
        stats = await df.aclose()
        got = numbers(fake)
    kept = before.enqueued
    # A goal's record here takes ~230 bytes in the journal: at most ~430 fit in 100 kB; the
    # estimate (body + 200 bytes) errs on the safe side, never past what the spool takes.
    assert 300 <= kept <= 100_000 // 230
    assert before.dropped == GOALS - kept
    assert stats.dropped == GOALS - kept
    assert (stats.delivered, stats.failed, stats.spooled) == (kept, 0, 0)
    assert sorted(got, key=int) == [str(i) for i in range(kept)]  # the first ones, in order
    refused = [d for d in deliveries if isinstance(d.error, QueueFullError)]
    assert len(refused) == GOALS - kept
    assert "spool" in str(refused[0].error)
    # The journal took every one kept (none refused there and held in memory instead).
    assert not [r for r in caplog.records if "is full (spool_max_bytes" in r.getMessage()]


async def test_goals_before_start_without_a_spool_are_refused_past_the_queue() -> None:
    """Without a spool nothing changes: the queue's bound refuses the rest, counted."""
    async with FakeDataFast() as fake:
        df = client_for(fake)
        deliveries = track_from_a_thread(df, GOALS)
        assert df.stats().dropped == GOALS - BOUND
        await df.start()
        stats = await df.aclose()
        got = numbers(fake)
    assert (stats.enqueued, stats.delivered, stats.dropped) == (BOUND, BOUND, GOALS - BOUND)
    assert sorted(got, key=int) == [str(i) for i in range(BOUND)]
    assert sum(isinstance(d.error, QueueFullError) for d in deliveries) == GOALS - BOUND
