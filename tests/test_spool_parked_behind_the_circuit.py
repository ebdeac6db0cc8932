"""Second adversarial review of the durable spool: what the README promises against what the
client does, driven through the public client (see ``_fakes.py`` for the helpers:
an in-process API the test switches)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ._fakes import API, balances, messages, spool_client, track, until


async def test_goals_parked_behind_an_open_circuit_are_not_reported_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a spool, goals answered 401 after the circuit opened are parked on disk, not
    failed: the log lines that count the goals "failed" while the circuit was open must say 0,
    as ``stats().failed`` does.

    Before the fix: 8 goals in flight answered 401, 0 failed, 8 parked; the probe's WARNING
    said "7 goals failed so far" and the closing ERROR "(7 failed while the API was
    unavailable)"."""
    caplog.set_level(logging.WARNING, logger="datafast_async")
    api = API("hold")
    df = spool_client(tmp_path, api, concurrency=8)
    await df.start()
    track(df, 0, 8)
    await until(lambda: df.stats().in_flight == 8)
    api.release("refused")  # all 8 answered 401: the first opens the circuit
    await until(lambda: df.stats().spooled == 8)
    api.mode = "up"  # flush() returns False while all is parked: wait for the probe instead
    await until(lambda: df.stats().delivered == 8, timeout=10)
    stats = await df.aclose()
    assert balances(stats)
    assert (stats.delivered, stats.failed) == (8, 0)
    assert set(api.delivered.values()) == {1}
    closing = [m for m in messages(caplog, logging.ERROR) if "answered the probe" in m]
    assert len(closing) == 1
    assert "(0 failed while" in closing[0], closing[0]


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

    from datafast_async import ShutdownError

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
