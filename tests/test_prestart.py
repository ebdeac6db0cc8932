"""Requests accepted before the client's run started (``track_nowait`` from a plain thread, no
event loop yet): with a spool, those beyond ``max_queue_size`` are kept for the spool (as far
as ``spool_max_bytes`` would take them) and go to disk when the run starts; without one they
are refused past the bound, as always. A process that forks before its client ever started
hands them to the spool (for the child, or its own next start).

Against a real ``FakeDataFast`` on 127.0.0.1; the goals come from a thread of the test process
before ``start()``.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafast_async import DataFast, QueueFullError, ShutdownError
from datafast_async._run import _before_fork
from datafast_async._spool import namespace
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


async def test_a_fork_before_start_hands_the_requests_to_the_spool(tmp_path: Path) -> None:
    """What the parent sees as it forks with a client never started (the process's before-fork
    hook, run here without forking; ``test_preload.py`` forks for real): its requests, queued
    and beyond the queue, are journaled in a file of the client's namespace, left unlocked;
    its stats say them spooled and each Delivery settles with ShutdownError(spooled=True).
    Goals tracked after it go to a fresh run, and the next start sends every one once."""
    async with FakeDataFast() as fake:
        df = client_for(fake, spool_path=tmp_path, max_queue_size=100)
        before = track_from_a_thread(df, 300)
        await anyio.to_thread.run_sync(_before_fork)  # the forking thread
        stats = df.stats()
        assert (stats.enqueued, stats.queued, stats.spooled, stats.dropped) == (300, 0, 300, 0)
        errors = [d.error for d in before]
        assert all(isinstance(e, ShutdownError) and e.spooled for e in errors)
        assert "never started" in str(errors[0])
        files = await anyio.to_thread.run_sync(os.listdir, tmp_path)
        assert len(files) == 1
        assert files[0].startswith(namespace(fake.api_key) + ".")
        mode = (await anyio.to_thread.run_sync(os.stat, tmp_path / files[0])).st_mode
        assert mode & 0o777 == 0o600
        await anyio.to_thread.run_sync(_before_fork)  # nothing more to hand over: no file
        assert await anyio.to_thread.run_sync(os.listdir, tmp_path) == files
        after = track_from_a_thread(df, 50)  # a fresh run: queued for start()
        assert (df.stats().enqueued, df.stats().queued) == (50, 50)
        await df.start()  # takes the file over
        assert await df.flush(timeout=30) is True
        final = await df.aclose()
        got = numbers(fake)
    assert (final.enqueued, final.delivered, final.failed) == (350, 350, 0)
    assert Counter(got) == Counter([str(i) for i in range(300)] + [str(i) for i in range(50)])
    assert all(d.result is not None for d in after)
    assert await on_disk(tmp_path) == {}


async def test_goals_tracked_while_the_process_forks_again_and_again_are_each_sent_once(
    tmp_path: Path,
) -> None:
    """A thread tracks goals before start() while another hands the client's requests over
    (forks) again and again: no goal is refused, raised or lost between a run handed over
    and the fresh one; once started, the client sends every one exactly once."""
    async with FakeDataFast() as fake:
        df = client_for(fake, spool_path=tmp_path, max_queue_size=50)
        stop = threading.Event()
        forks = 0

        def fork_again_and_again() -> None:
            nonlocal forks
            while not stop.is_set():
                _before_fork()
                forks += 1

        forker = threading.Thread(target=fork_again_and_again)
        forker.start()
        try:
            deliveries = await anyio.to_thread.run_sync(track_from_a_thread, df, 2000)
        finally:
            stop.set()
            await anyio.to_thread.run_sync(forker.join, 10)
        assert forks > 1
        assert df.stats().dropped == 0
        await df.start()
        assert await df.flush(timeout=30) is True
        await df.aclose()
        got = numbers(fake)
        files = await on_disk(tmp_path)
    assert sorted(got, key=int) == [str(i) for i in range(2000)]  # each once
    handed = [d for d in deliveries if isinstance(d.error, ShutdownError)]
    assert handed  # (and any tracked after the last hand-over were sent by this run)
    assert all(d.error.spooled for d in handed)
    assert all(d.result is not None for d in deliveries if not isinstance(d.error, ShutdownError))
    assert files == {}
