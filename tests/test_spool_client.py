"""The spool wired into the client: the ledger, shutdown, the circuit, the cap, faults.

The journal alone has its own tests (``test_spool_journal.py``); these drive a whole
``DataFast`` with ``spool_path`` against an in-process API (a ``MockTransport`` whose answers
the test switches), with small intervals (``_spool_options``) and a zero-delay retry policy
with short circuit cool-downs, and look at what a user sees: ``Stats``, ``Delivery``
outcomes, callbacks, log lines, and the files on disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafast_async import DataFast, QueueFullError, ShutdownError, Stats
from datafast_async._spool import Journal

from ._fakes import (
    API,
    SPOOL_KEY,
    balances,
    journal_of,
    messages,
    on_disk,
    pending_ids,
    read_dir,
    records_in,
    spool_client,
    track,
    until,
)

KEY = SPOOL_KEY
OTHER_KEY = "df_some_other_key_5b8d0e44"


class Sampler:
    """Samples ``stats()`` from another thread as fast as it can, and from the loop at every
    step the test gives it: every snapshot must balance."""

    def __init__(self, df: DataFast) -> None:
        self.df = df
        self.samples: list[Stats] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.df.stats())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self, max_queue_size: int) -> None:
        assert self.samples
        unbalanced = [s for s in self.samples if not balances(s)]
        assert not unbalanced[:3], f"{len(unbalanced)} of {len(self.samples)} snapshots"
        assert max(s.queued for s in self.samples) <= max_queue_size


# -- 1. the ledger ----------------------------------------------------------------------------


async def test_the_ledger_balances_while_goals_flow_overflow_park_and_come_back(
    tmp_path: Path,
) -> None:
    """enqueued == delivered + failed + queued + in_flight + spooled in every snapshot, from
    the loop and from another thread, while 300 goals overflow a queue of 20 onto disk, are
    parked behind an API that is down, and are read back and delivered once it is up; the
    queue never holds more than 20."""
    api = API("down")
    df = spool_client(tmp_path, api, max_queue_size=20)
    await df.start()
    seen: list[Stats] = []
    with Sampler(df) as sampler:
        for start in range(0, 300, 10):
            track(df, start, 10)
            seen.append(df.stats())
            await asyncio.sleep(0)
        assert df.stats().spooled > 0  # beyond the queue: on disk
        assert await df.flush(timeout=10) is False  # everything parked behind the down API
        seen.append(df.stats())
        assert df.stats().failed == 0
        api.mode = "up"

        async def watch() -> None:
            while df.stats().delivered < 300:
                seen.append(df.stats())
                await asyncio.sleep(0)

        await asyncio.wait_for(watch(), 20)
        assert await df.flush(timeout=5) is True
    sampler.check(20)
    assert all(balances(s) for s in seen)
    assert max(s.queued for s in seen) <= 20
    assert max(s.spooled for s in seen) >= 280
    final = await df.aclose()
    assert (final.enqueued, final.delivered, final.failed, final.spooled) == (300, 300, 0, 0)
    assert sorted(api.delivered) == sorted(str(i) for i in range(300))
    assert set(api.delivered.values()) == {1}  # each once
    assert await on_disk(tmp_path) == {}  # all acknowledged: every file deleted


# -- 2. shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["down", "hold"])
async def test_goals_undelivered_at_the_deadline_stay_in_the_spool_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """aclose() with the API down (503s: the goals are parked) or not answering (the
    goals are in flight): each Delivery settles with ShutdownError(spooled=True), on_failure
    is not called, one WARNING names the count; the next client on the directory sends
    them, each once."""
    failures: list[object] = []
    api = API(mode)
    df = spool_client(tmp_path, api, max_queue_size=10, on_failure=lambda g, e: failures.append(e))
    await df.start()
    deliveries = track(df, 0, 25)
    if mode == "hold":
        await until(lambda: api.requests >= 8)
    else:
        assert await df.flush(timeout=5) is False
    caplog.clear()
    stats = await df.aclose(timeout=0.2)
    assert balances(stats)
    assert (stats.enqueued, stats.delivered, stats.failed, stats.spooled) == (25, 0, 0, 25)
    errors = [d.error for d in deliveries]
    assert all(isinstance(e, ShutdownError) and e.spooled for e in errors), errors
    assert failures == []
    kept = [m for m in messages(caplog) if "shutdown deadline" in m]
    assert len(kept) == 1, messages(caplog)
    assert kept[0].startswith("25 goals were still undelivered")
    assert "kept in the spool" in kept[0]

    api2 = API("up")
    again = spool_client(tmp_path, api2, max_queue_size=10)
    await again.start()
    assert await again.flush(timeout=10) is True
    stats = await again.aclose()
    assert (stats.enqueued, stats.delivered, stats.failed, stats.spooled) == (25, 25, 0, 0)
    assert sorted(api2.delivered, key=int) == [str(i) for i in range(25)]
    assert set(api2.delivered.values()) == {1}
    assert await on_disk(tmp_path) == {}


# -- 3. the circuit -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refused", "down"])
async def test_goals_wait_on_disk_behind_an_api_that_refuses_or_stays_down(
    tmp_path: Path, mode: str
) -> None:
    """A 401 (the circuit opens) or 503s beyond max_attempts: goals are parked on disk, not
    failed, no on_failure; flush() returns False. Once the API answers, a probe closes the
    circuit and every goal is delivered once."""
    failures: list[object] = []
    api = API(mode)
    df = spool_client(tmp_path, api, max_queue_size=10, on_failure=lambda g, e: failures.append(e))
    await df.start()
    deliveries = track(df, 0, 40)
    assert await df.flush(timeout=10) is False
    stats = df.stats()
    assert balances(stats)
    assert (stats.failed, stats.delivered) == (0, 0)
    assert stats.spooled == 40
    assert not any(d.done() for d in deliveries)
    assert await df.flush(timeout=1) is False  # still parked: at once again
    api.mode = "up"
    await until(lambda: df.stats().delivered == 40, timeout=10)
    assert await df.flush(timeout=5) is True
    assert all(d.done() and d.error is None for d in deliveries)
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.failed, stats.spooled) == (40, 40, 0, 0)
    assert failures == []
    assert sorted(api.delivered, key=int) == [str(i) for i in range(40)]
    assert set(api.delivered.values()) == {1}


# -- 4. the cap ---------------------------------------------------------------------------------


async def test_goals_beyond_the_queue_and_a_full_spool_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """spool_max_bytes small: with the API not answering, goals fill the queue (5) and then
    the spool; the rest are refused: Stats.dropped, their Delivery settled with
    QueueFullError (on_full="drop"), one WARNING; none of the accepted ones is lost."""
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=5, spool_max_bytes=6_000)
    await df.start()
    deliveries = track(df, 0, 100)
    stats = df.stats()
    assert balances(stats)
    dropped = [d for d in deliveries if isinstance(d.error, QueueFullError)]
    assert stats.dropped == len(dropped) > 0
    accepted = stats.enqueued
    assert accepted + stats.dropped == 100
    assert 5 < accepted < 100  # the queue, then the spool, took some
    warnings = [m for m in messages(caplog) if "dropped" in m or "full" in m]
    assert len(warnings) == 1, messages(caplog)
    assert "the spool (spool_max_bytes=6000) are full" in warnings[0]
    assert "spool" in str(dropped[0].error)
    api.release("up")
    assert await df.flush(timeout=10) is True
    stats = await df.aclose()
    assert (stats.delivered, stats.failed) == (accepted, 0)
    assert sum(api.delivered.values()) == accepted
    assert set(api.delivered.values()) == {1}


# -- 5. faults of the spool ---------------------------------------------------------------------


async def test_a_directory_that_cannot_be_created_is_one_error_and_goals_go_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    await anyio.to_thread.run_sync(blocker.write_bytes, b"not a directory")
    api = API("up")
    df = spool_client(blocker / "spool", api, max_queue_size=50)
    await df.start()
    deliveries = track(df, 0, 30)
    assert await df.flush(timeout=5) is True
    assert all(d.error is None for d in deliveries)
    assert journal_of(df).faults == {"directory": 1}
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered) == (30, 30)
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert "cannot be used" in errors[0]
    assert [m for m in messages(caplog) if "spool" in m] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
async def test_a_read_only_directory_is_one_error_and_goals_go_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "ro"
    spool.mkdir(mode=0o500)
    api = API("up")
    df = spool_client(spool, api)
    await df.start()
    track(df, 0, 10)
    assert await df.flush(timeout=5) is True
    await df.aclose()
    assert len(messages(caplog, logging.ERROR)) == 1
    assert sorted(api.delivered, key=int) == [str(i) for i in range(10)]


async def test_a_full_disk_is_one_warning_goals_go_from_memory_then_one_when_it_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the journal's writes: one WARNING, journal.faults counts it, the goals
    accepted meanwhile are delivered from memory; once writes work again one WARNING more,
    and goals are journaled again.

    The writer thread turns journaling off or on, then logs its WARNING: the test waits for
    both (the state alone raced the log line on a busy machine)."""
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=50)
    await df.start()
    journal = journal_of(df)
    real_write = os.write
    full = True

    def write(fd: int, data: bytes) -> int:
        ours = {segment.held.fd for segment in journal._segments}
        if full and fd in ours:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    deliveries = track(df, 0, 10)
    await until(
        lambda: (
            journal.faults.get("write") == 1
            and any("cannot be written" in m for m in messages(caplog))
        ),
        timeout=5,
    )
    assert not journal.journaling
    deliveries += track(df, 10, 10)  # memory only while the disk is full
    api.release("up")
    assert await df.flush(timeout=5) is True
    assert all(d.error is None for d in deliveries)
    full_lines = [m for m in messages(caplog) if "cannot be written" in m]
    assert len(full_lines) == 1, full_lines
    assert "No space left on device" in full_lines[0]
    full = False
    await until(
        lambda: journal.journaling and any("is written again" in m for m in messages(caplog)),
        timeout=5,
    )
    assert [m for m in messages(caplog) if "is written again" in m] == [
        f"the spool at {tmp_path} is written again"
    ]
    api.mode = "hold"
    track(df, 20, 5)
    await until(lambda: len(pending_ids(read_dir(tmp_path))) == 5, timeout=5)
    assert journal.faults == {"write": 1}
    api.release("up")
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.failed) == (25, 25, 0)
    assert set(api.delivered.values()) == {1}


async def _leave_goals(path: Path, count: int, key: str = KEY) -> None:
    """A run that ends with ``count`` goals kept in the spool (the API not answering)."""
    api = API("hold")
    df = spool_client(path, api, api_key=key, max_queue_size=count)
    await df.start()
    track(df, 0, count)
    await until(lambda: api.requests > 0)
    stats = await df.aclose(timeout=0.1)
    assert stats.spooled == count


async def test_torn_and_garbage_lines_left_by_an_earlier_run_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _leave_goals(tmp_path, 6)
    (name,) = await anyio.to_thread.run_sync(os.listdir, tmp_path)

    def damage() -> None:
        with open(tmp_path / name, "ab") as file:
            file.write(b"this is not json\n")
            file.write(b'{"id":"00c0ffee0000-99","path":"/api/v1/goals","at":1.0,"bo')

    await anyio.to_thread.run_sync(damage)
    caplog.clear()
    api = API("up")
    df = spool_client(tmp_path, api)
    await df.start()
    assert await df.flush(timeout=5) is True
    journal = journal_of(df)
    assert journal.faults == {"torn": 1, "garbage": 1}
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.failed) == (6, 6, 0)
    assert sorted(api.delivered, key=int) == [str(i) for i in range(6)]
    damaged = [m for m in messages(caplog) if "damaged lines" in m]
    assert len(damaged) == 1, damaged
    assert damaged[0].startswith("skipped 2 damaged lines"), damaged


async def test_a_file_deleted_under_a_running_client_is_journaled_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=50)
    await df.start()
    track(df, 0, 8)
    await until(lambda: len(pending_ids(read_dir(tmp_path))) == 8, timeout=5)
    for name in await anyio.to_thread.run_sync(os.listdir, tmp_path):
        await anyio.to_thread.run_sync(os.unlink, tmp_path / name)
    journal = journal_of(df)
    await until(lambda: journal.faults.get("lost", 0) >= 1, timeout=5)
    await until(lambda: pending_ids(read_dir(tmp_path)) == {str(i) for i in range(8)}, timeout=5)
    lost = [m for m in messages(caplog) if "deleted or made unreadable" in m]
    assert len(lost) == journal.faults["lost"] == 1, lost
    assert "its 8 goals not yet delivered are journaled again" in lost[0]
    api.release("up")
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered) == (8, 8)
    assert await on_disk(tmp_path) == {}


async def test_the_spool_is_private_and_never_holds_the_key(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    await _leave_goals(spool, 5)
    mode = (await anyio.to_thread.run_sync(os.stat, spool)).st_mode
    assert stat.S_IMODE(mode) == 0o700
    files = await on_disk(spool)
    assert files
    for name in files:
        info = await anyio.to_thread.run_sync(os.stat, spool / name)
        assert stat.S_IMODE(info.st_mode) == 0o600, name
    everything = b"".join(files.values()) + "".join(files).encode()
    for secret in (KEY, KEY.removeprefix("df_"), KEY[-8:]):
        assert secret.encode() not in everything, secret
    assert len(records_in(files)) == 5


# -- 6. namespaces ------------------------------------------------------------------------------


async def test_files_of_another_key_are_left_alone_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _leave_goals(tmp_path, 4, key=OTHER_KEY)
    theirs = await on_disk(tmp_path)
    caplog.clear()
    api = API("up")
    df = spool_client(tmp_path, api)
    await df.start()
    track(df, 100, 3)
    assert await df.flush(timeout=5) is True
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered) == (3, 3)
    assert sorted(api.delivered) == ["100", "101", "102"]  # none of theirs
    others = [m for m in messages(caplog) if "other keys" in m]
    assert len(others) == 1, messages(caplog)
    assert "also holds 1 journal files" in others[0]
    assert await on_disk(tmp_path) == theirs  # untouched


# -- 7. settled before it was written -----------------------------------------------------------


async def test_a_goal_settled_before_the_writer_reached_it_is_never_written(
    tmp_path: Path,
) -> None:
    """With the writer under the test's control (background=False), a goal delivered before
    the journal's next step leaves no record; one still in flight at that step does."""
    api = API("up")
    df = spool_client(tmp_path, api, _spool_options={"background": False})
    await df.start()
    journal = journal_of(df)
    track(df, 0, 3)
    assert await df.flush(timeout=5) is True
    api.mode = "hold"
    track(df, 3, 1)
    await until(lambda: api.requests == 4)
    assert await anyio.to_thread.run_sync(journal.flush)
    files = await on_disk(tmp_path)
    assert [r["body"]["metadata"]["i"] for r in records_in(files)] == ["3"]
    api.release("up")
    await df.aclose()
    assert await on_disk(tmp_path) == {}


# -- 8. other threads, lazy start ---------------------------------------------------------------


async def test_goals_tracked_from_another_thread_are_journaled_and_delivered_once(
    tmp_path: Path,
) -> None:
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=10)
    await df.start()
    await anyio.to_thread.run_sync(track, df, 0, 200)
    stats = df.stats()
    assert balances(stats)
    assert stats.enqueued == 200
    assert stats.spooled > 0
    await until(lambda: len(pending_ids(read_dir(tmp_path))) == 200, timeout=5)
    api.release("up")
    assert await df.flush(timeout=10) is True
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered) == (200, 200)
    assert api.delivered == Counter(str(i) for i in range(200))


async def test_goals_tracked_before_start_are_journaled_once_it_starts(tmp_path: Path) -> None:
    """track_nowait from a thread before any loop runs the client, then start(): the goals
    that waited in memory are journaled too (a crash now would not lose them)."""
    api = API("hold")
    df = spool_client(tmp_path, api)
    await anyio.to_thread.run_sync(track, df, 0, 5)
    await df.start()
    await until(lambda: len(pending_ids(read_dir(tmp_path))) == 5, timeout=5)
    api.release("up")
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered) == (5, 5)


async def test_a_lazy_start_with_a_spool_journals_and_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=5)
    deliveries = track(df, 0, 20)  # no start(): the first goal starts the client
    assert [m for m in messages(caplog) if "started lazily" in m]
    assert not any(d.done() for d in deliveries)
    await until(lambda: len(pending_ids(read_dir(tmp_path))) == 20, timeout=5)
    api.release("up")
    assert await df.flush(timeout=10) is True
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.dropped) == (20, 20, 0)
    assert api.delivered == Counter(str(i) for i in range(20))


# -- 9. fork ------------------------------------------------------------------------------------

_FORK_SCRIPT = """
import asyncio, fcntl, os, sys
from datafast_async import DataFast
from datafast_async._transport import MockTransport, Response
from tests._fakes import API, spool_client, track

async def main(path):
    api = API("hold")
    df = spool_client(path, api)
    await df.start()
    track(df, 0, 5)
    journal = df._run.spool.journal
    while journal.pending < 5 or not any(os.path.getsize(p) for p in journal.files):
        await asyncio.sleep(0.01)
    fds = [s.held.fd for s in journal._segments]
    pid = os.fork()
    if pid == 0:
        closed = []
        for fd in fds:
            try:
                os.fstat(fd)
                closed.append(False)
            except OSError:
                closed.append(True)
        os._exit(0 if all(closed) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child kept the parent's files open"
    for path_ in journal.files:  # the parent still holds its lock
        fd = os.open(path_, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("the child's fork unlocked the parent's file")
        finally:
            os.close(fd)
    api.release("up")
    stats = await df.aclose()
    assert stats.delivered == 5, stats
    print("ok")

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
async def test_a_forked_child_closes_the_parents_journal_files_without_unlocking_them(
    tmp_path: Path,
) -> None:
    root = Path(__file__).parent.parent
    result = await anyio.run_process(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(_FORK_SCRIPT), str(tmp_path)],
        cwd=root,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "ok"


# -- taking over, then overflowing --------------------------------------------------------------


async def test_goals_spilled_to_disk_after_a_takeover_are_read_back_too(tmp_path: Path) -> None:
    """A start that takes over an earlier run's file, then goals beyond the queue go to disk:
    they are read back after the taken-over ones (not left on disk, pending for ever)."""
    await _leave_goals(tmp_path, 3)
    api = API("hold")
    df = spool_client(tmp_path, api, max_queue_size=3)
    await df.start()
    assert df.stats().spooled == 3
    track(df, 100, 10)  # behind the 3 on disk: onto disk too
    api.release("up")
    await until(lambda: df.stats().delivered == 13, timeout=5)
    assert await df.flush(timeout=5) is True
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.spooled) == (13, 13, 0)
    assert api.delivered == Counter([*map(str, range(3)), *map(str, range(100, 110))])


async def test_start_does_not_wait_long_for_a_large_spool_and_flush_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large spool's scan does not hold the app's start-up: start() returns after its
    short wait with the scan still going on in the background; goals tracked meanwhile are
    accepted; flush() waits for the scan, and every goal, taken over or new, is delivered."""
    from datafast_async import _run

    await _leave_goals(tmp_path, 5)
    monkeypatch.setattr(_run, "_START_WAIT", 0.01)
    scanning = threading.Event()
    real_open = Journal.open

    def slow_open(journal: Journal) -> Any:
        assert scanning.wait(10), "the test never let the scan finish"
        return real_open(journal)

    monkeypatch.setattr(Journal, "open", slow_open)
    api = API("up")
    df = spool_client(tmp_path, api)
    await df.start()
    spool = df._run.spool
    assert spool is not None
    assert not spool.opened  # start() did not wait for the scan
    track(df, 100, 3)  # accepted while the files are being taken over
    scanning.set()
    assert await df.flush(timeout=5) is True
    stats = await df.aclose()
    assert (stats.enqueued, stats.delivered, stats.spooled) == (8, 8, 0)
    assert sorted(api.delivered) == sorted(["0", "1", "2", "3", "4", "100", "101", "102"])
    assert set(api.delivered.values()) == {1}
