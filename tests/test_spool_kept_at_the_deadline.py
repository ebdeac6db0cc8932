"""Goals at ``aclose()``'s deadline are claimed kept in the spool only when they are on disk: a
full spool or a full disk fails them (``ShutdownError`` without ``spooled``, on_failure), and
goals spilled just before the close settle too. Each test is a way the wiring broke (or nearly
did), driven through the public client with small intervals. See ``_fakes.py`` for the helpers
(an in-process API the test switches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafast_async import ShutdownError

from ._fakes import API, balances, on_disk, pending_ids, spool_client, track, until

# The writer never steps on its own during a test that sets this: what it holds at aclose() is
# exactly what track() handed it.
IDLE_WRITER = {"write_interval": 100.0, "sync_interval": 100.0}


async def test_goals_kept_at_the_deadline_when_the_spool_is_full_are_not_claimed_kept(
    tmp_path: Path,
) -> None:
    """aclose() at its deadline keeps in the spool the goals still in memory that the writer
    had not journaled yet, trusting it to journal them as it closes. With the spool full it
    cannot: the goals it refuses must fail (ShutdownError without ``spooled``, on_failure,
    counted in ``failed``), not be claimed kept and silently lost.

    Before the fix: 10 goals, room for 5 records: Stats said spooled=10, every Delivery said
    ShutdownError(spooled=True), on_failure saw none, and the next start found 5."""
    failures: list[object] = []
    api = API("hold")
    df = spool_client(
        tmp_path,
        api,
        max_queue_size=100,
        concurrency=1,
        spool_max_bytes=1200,
        on_failure=lambda goal, error: failures.append(error),
        _spool_options=IDLE_WRITER,
    )
    await df.start()
    deliveries = track(df, 0, 10)
    stats = await df.aclose(timeout=0)
    assert balances(stats)
    kept = [d for d in deliveries if isinstance(d.error, ShutdownError) and d.error.spooled]
    assert stats.spooled == len(kept)
    assert stats.failed == len(failures) == 10 - len(kept)
    on_file = pending_ids(await on_disk(tmp_path))
    assert {d.goal.metadata["i"] for d in kept} == on_file
    assert 0 < len(on_file) < 10

    api2 = API("up")
    again = spool_client(tmp_path, api2)
    await again.start()
    assert await again.flush(timeout=10) is True
    stats2 = await again.aclose()
    assert stats2.delivered == len(kept)
    assert set(api2.delivered.values()) == {1}


async def test_goals_spilled_just_before_aclose_settle_with_spooled_shutdown_errors(
    tmp_path: Path,
) -> None:
    """Goals beyond the queue go to disk through the writer; aclose() settles the Delivery of
    every goal on disk only with ShutdownError(spooled=True). Those the writer journaled only
    as the spool closed (tracked within its last interval) must settle too.

    Before the fix: 15 of 20 Deliveries (those spilled beyond a queue of 5) never settled, so a
    ``await delivery.wait()`` hung for ever; seen also with 3 threads tracking during aclose()
    (50 of 60 runs left from 1 to 2010 Deliveries pending)."""
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=5, concurrency=1, _spool_options=IDLE_WRITER)
    await df.start()
    deliveries = track(df, 0, 20)
    stats = await df.aclose(timeout=0)
    assert balances(stats)
    assert stats.spooled == 20
    pending = [d.goal.metadata["i"] for d in deliveries if not d.done()]
    assert pending == []
    assert all(isinstance(d.error, ShutdownError) and d.error.spooled for d in deliveries)
    assert len(pending_ids(await on_disk(tmp_path))) == 20


async def test_goals_kept_at_the_deadline_with_a_full_disk_are_not_claimed_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a full disk keeps goals in memory, not durable. At the deadline a goal not on
    disk must fail (on_failure, ShutdownError without ``spooled``), not be claimed kept.

    Seen by hand (tmpfs of 64 KiB, 3,000 goals, API at 0.2 s): Stats spooled=1600, the
    journal's ERROR "1858 goals could not be written ... not kept", the next start found 227.
    Here: 10 goals, the disk full before the writer's first write: spooled=10, next start 0."""
    import errno
    import os

    from ._fakes import journal_of

    failures: list[object] = []
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=100, on_failure=lambda g, e: failures.append(e))
    await df.start()
    journal = journal_of(df)
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd in {segment.held.fd for segment in journal._segments}:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    deliveries = track(df, 0, 10)
    await until(lambda: journal.faults.get("write") == 1, timeout=5)
    stats = await df.aclose(timeout=0)
    monkeypatch.setattr(os, "write", real_write)
    assert balances(stats)
    kept = [d for d in deliveries if isinstance(d.error, ShutdownError) and d.error.spooled]

    api2 = API("up")
    again = spool_client(tmp_path, api2)
    await again.start()
    await again.flush(timeout=10)
    stats2 = await again.aclose()
    assert stats2.delivered == stats.spooled == len(kept)
    assert stats.failed == len(failures) == 10 - len(kept)
