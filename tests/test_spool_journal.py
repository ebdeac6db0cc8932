"""The spool's journal alone, on a temporary directory, with no network.

Time is controlled: journals run without their writer thread (``background=False``) and the
test calls ``flush`` where the thread would have written; the few tests of the thread itself
wait on an event or a bounded poll. A crash is what the kernel does when a process dies: the
journal's descriptors are closed (which releases their ``flock`` locks) and nothing else runs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
from blockbuster import blockbuster_ctx

from datafast_async import ConfigurationError
from datafast_async._spool import Append, Journal, _journal, _ownership, namespace

GOALS = "/api/v1/goals"
NS = "df-0badc0de"


def body(n: int | str) -> bytes:
    return b'{"datafast_visitor_id":"v-%s","name":"signup"}' % str(n).encode()


def journal(directory: Path, **kwargs: object) -> Journal:
    kwargs.setdefault("background", False)
    return Journal(directory, str(kwargs.pop("ns", NS)), **kwargs)  # type: ignore[arg-type]


def crash(j: Journal) -> None:
    """The process holding ``j`` dies: the kernel closes its files (releasing the locks)."""
    for segment in j._segments:
        os.close(segment.held.fd)
    j._segments = []


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def spool_warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "datafast_async" and r.levelno >= level
    ]


def append_all(j: Journal, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        goal_id = j.new_id()
        assert j.append(goal_id, GOALS, body(n)) is Append.JOURNALED
        ids.append(goal_id)
    return ids


# -- the round trip -----------------------------------------------------------------------------


def test_the_bytes_journaled_are_the_bytes_given(tmp_path: Path) -> None:
    """Bodies go to disk byte for byte, and come back so after a crash: escapes, non-ASCII,
    U+2028 (a line break to str.splitlines, not to JSON Lines), nested objects."""
    j = journal(tmp_path)
    j.open()
    bodies = [
        b'{"datafast_visitor_id":"v1","name":"signup"}',
        '{"datafast_visitor_id":"é\u2028ü\u2029","name":"x","description":"a\\"b\\\\c\\n"}'.encode(),
        b'{"datafast_visitor_id":"\\u00e9","name":"n","metadata":{"k":"} ,\\"body\\":"}}',
        b'{"b":[1,2.50,{"c":null}],"a":true}',
    ]
    ids = [j.new_id() for _ in bodies]
    for goal_id, raw in zip(ids, bodies, strict=True):
        assert j.append(goal_id, GOALS, raw) is Append.JOURNALED
    assert j.flush()
    (path,) = files(tmp_path)
    data = path.read_bytes()
    for raw in bodies:
        assert b',"body":' + raw + b"}\n" in data
    # A person can read it: every line is JSON (what jq reads), the body a nested object.
    assert [line["body"] for line in lines(path)] == [json.loads(raw) for raw in bodies]
    crash(j)

    again = journal(tmp_path)
    adoption = again.open()
    assert [r.id for r in adoption.records] == ids
    assert [r.body for r in adoption.records] == bodies
    assert {r.path for r in adoption.records} == {GOALS}
    again.close()


def test_a_crashed_journal_is_taken_over_with_its_unacknowledged_goals_in_order(
    tmp_path: Path,
) -> None:
    j = journal(tmp_path, segment_bytes=400)  # a few records a file: several files
    j.open()
    ids = append_all(j, 12)
    assert j.flush()
    for goal_id in ids[::3]:
        assert j.ack(goal_id, "delivered")
    assert j.flush()
    assert len(files(tmp_path)) > 2
    crash(j)

    again = journal(tmp_path)
    adoption = again.open()
    expected = [goal_id for n, goal_id in enumerate(ids) if n % 3]
    assert [r.id for r in adoption.records] == expected
    assert [r.body for r in adoption.records] == [body(n) for n in range(12) if n % 3]
    assert again.pending == len(expected)
    assert again.faults == {}
    # Taken over: they are this journal's now, and acknowledged like any other.
    for goal_id in expected:
        assert again.ack(goal_id, "delivered")
    assert again.close()
    assert files(tmp_path) == []


def test_what_was_not_flushed_is_lost_in_a_crash_and_unflushed_acks_come_back(
    tmp_path: Path,
) -> None:
    """The two windows: a goal appended after the last write is lost with the process; a
    goal acknowledged after the last write comes back (sent twice)."""
    j = journal(tmp_path)
    j.open()
    written = append_all(j, 3)
    assert j.flush()
    assert j.ack(written[0], "delivered")  # not written before the crash
    append_all(j, 2, start=3)  # not written before the crash
    crash(j)

    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == written
    again.close()


def test_segments_rotate_and_a_fully_acknowledged_one_is_deleted(tmp_path: Path) -> None:
    j = journal(tmp_path, segment_bytes=300)
    j.open()
    ids = append_all(j, 8)
    assert j.flush()
    held = files(tmp_path)
    per_file = [[line["id"] for line in lines(path)] for path in held]
    assert len(held) >= 3
    assert [goal_id for chunk in per_file for goal_id in chunk] == ids

    for goal_id in per_file[0] + per_file[1][:1]:
        assert j.ack(str(goal_id), "delivered")
    assert j.flush()
    left = files(tmp_path)
    assert held[0] not in left  # every goal in it acknowledged: deleted
    assert held[1] in left  # one acknowledged, the rest pending
    # Each acknowledgement is in the file of its goal: a file stands alone.
    assert {"ack": per_file[1][0], "outcome": "delivered"} in lines(held[1])
    for path in left:
        records = {line["id"] for line in lines(path) if "id" in line}
        assert {line["ack"] for line in lines(path) if "ack" in line} <= records
    j.close()


def test_close_leaves_no_files_when_every_goal_is_acknowledged(tmp_path: Path) -> None:
    j = journal(tmp_path, segment_bytes=300)
    j.open()
    ids = append_all(j, 6)
    assert j.flush()
    for goal_id in ids:
        j.ack(goal_id, "failed")
    assert j.close()
    assert list(tmp_path.iterdir()) == []


def test_close_keeps_pending_goals_unlocked_for_the_next_start(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open()
    ids = append_all(j, 3)  # not flushed: close writes them
    assert j.close()
    assert j.append(j.new_id(), GOALS, body(9)) is Append.MEMORY_ONLY

    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids
    again.close()


def test_a_goal_acknowledged_before_it_was_written_is_never_written(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open()
    empty = j.size
    kept, settled = j.new_id(), j.new_id()
    j.append(kept, GOALS, body(1))
    j.append(settled, GOALS, body(2))
    assert j.ack(settled, "delivered")
    assert not j.ack(settled, "delivered")  # once
    assert j.flush()
    (path,) = files(tmp_path)
    assert settled.encode() not in path.read_bytes()
    assert [line["id"] for line in lines(path)] == [kept]
    assert j.ack(kept, "delivered")
    assert j.flush()
    # The record stays in the current file (it is deleted when rotated out or at close).
    assert j.size == empty + path.stat().st_size
    j.close()


# -- the cap ------------------------------------------------------------------------------------


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def test_the_cap_refuses_goals_and_leaves_room_for_their_acknowledgements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path, max_bytes=2000, segment_bytes=500)
    j.open()
    accepted: list[str] = []
    while True:
        goal_id = j.new_id()
        answer = j.append(goal_id, GOALS, body(len(accepted)))
        assert j.size <= 2000
        if answer is Append.REFUSED:
            assert not answer  # refused is the falsy answer; accepted ones are truthy
            break
        accepted.append(goal_id)
    assert 5 <= len(accepted) <= 12
    assert j.refused == 1
    assert j.flush()
    for goal_id in accepted[:-1]:
        j.ack(goal_id, "delivered")
    assert j.flush()
    # Every acknowledgement found room: what is on disk never passed the cap.
    assert disk_bytes(tmp_path) <= 2000
    # Acknowledged files were deleted: there is room again.
    assert j.append(j.new_id(), GOALS, body(99)) is Append.JOURNALED
    assert spool_warnings(caplog) == [
        f"the spool at {tmp_path} is full (spool_max_bytes=2000, {len(accepted)} goals "
        "pending): new goals are refused until delivered goals free room (1 refused so far)"
    ]
    j.close()


def test_files_taken_over_count_against_the_cap(tmp_path: Path) -> None:
    first = journal(tmp_path)
    first.open()
    ids = append_all(first, 10)
    assert first.flush()
    crash(first)
    on_disk = disk_bytes(tmp_path)

    j = journal(tmp_path, max_bytes=on_disk + 400)
    assert len(j.open().records) == 10
    assert j.size >= on_disk
    assert j.append(j.new_id(), GOALS, body(1)) is Append.REFUSED
    for goal_id in ids:
        j.ack(goal_id, "delivered")
    assert j.flush()
    assert j.append(j.new_id(), GOALS, body(2)) is Append.JOURNALED  # the old file went
    j.close()


def test_size_is_what_the_files_hold_plus_reserved_room_for_acknowledgements(
    tmp_path: Path,
) -> None:
    j = journal(tmp_path, segment_bytes=400)
    j.open()
    ids = append_all(j, 9)
    for goal_id in ids[:4]:
        j.ack(goal_id, "delivered")
    assert j.flush()
    for goal_id in ids[4:6]:
        j.ack(goal_id, "delivered")
    assert j.flush()
    reserved = sum(len(b'{"ack":"","outcome":""}\n') + 16 + len(goal_id) for goal_id in ids[6:])
    assert j.pending == 3
    assert j.size == disk_bytes(tmp_path) + reserved
    j.close()


# -- permissions and secrets --------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_a_new_directory_is_0700_and_files_0600_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    spool = tmp_path / "var" / "spool" / "datafast"
    old = os.umask(umask)
    try:
        j = journal(spool, segment_bytes=200)
        j.open()
        append_all(j, 4)
        assert j.flush()
    finally:
        os.umask(old)
    for directory in (tmp_path / "var", tmp_path / "var" / "spool", spool):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert len(files(spool)) >= 2
    for path in files(spool):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    j.close()


def test_the_key_is_never_written(tmp_path: Path) -> None:
    key = "dft_Sup3rSecretT0kenValue9876"
    ns = namespace(key, "example.com")
    j = Journal(tmp_path, ns, background=False, segment_bytes=300)
    j.open()
    append_all(j, 5)
    assert j.flush()
    crash(j)
    again = Journal(tmp_path, ns, background=False)
    again.open()
    append_all(again, 2)
    assert again.flush()
    names = " ".join(p.name for p in tmp_path.iterdir())
    content = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (key, key[4:], key[-12:]):
        assert secret not in names
        assert secret.encode() not in content
    assert "example_com" in names  # whose journal it is, readable
    again.close()


# -- the writer thread --------------------------------------------------------------------------


def test_the_writer_thread_writes_and_fsyncs_off_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = threading.Event()
    sync_threads: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        sync_threads.append(threading.current_thread().name)
        real_fsync(fd)
        synced.set()

    monkeypatch.setattr(os, "fsync", fsync)
    j = Journal(tmp_path, NS, write_interval=0.005, sync_interval=0.01)
    j.open()
    goal_id = j.new_id()
    j.append(goal_id, GOALS, body(1))
    assert synced.wait(5.0)
    deadline = time.monotonic() + 5.0
    while goal_id.encode() not in b"".join(p.read_bytes() for p in files(tmp_path)):
        assert time.monotonic() < deadline, "the writer thread did not write the record"
        time.sleep(0.001)
    assert set(sync_threads) == {"datafast-spool-writer"}
    assert j.close(timeout=5.0)
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == [goal_id]
    again.close()


def test_close_waits_for_a_hung_write_no_longer_than_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    j = Journal(tmp_path, NS, write_interval=0.001)
    j.open()
    ours = {segment.held.fd for segment in j._segments}
    writing, go_on = threading.Event(), threading.Event()
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd in ours:
            writing.set()
            go_on.wait(10.0)  # a disk that hangs (bounded, for the test)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    goal_id = j.new_id()
    j.append(goal_id, GOALS, body(1))
    assert writing.wait(5.0)
    started = time.monotonic()
    assert not j.close(timeout=0.05)
    assert time.monotonic() - started < 5.0
    assert spool_warnings(caplog) == [
        f"the spool writer is still busy after 0.1 s: its files in {tmp_path} stay locked "
        "until close() is called again or the process exits"
    ]
    assert j.append(j.new_id(), GOALS, body(2)) is Append.MEMORY_ONLY

    go_on.set()
    assert j.close(timeout=5.0)  # the disk came back: this one finishes the job
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == [goal_id]
    again.close()


async def test_append_and_ack_never_block_the_event_loop(tmp_path: Path) -> None:
    # Building and opening the journal do file I/O: the client does both in a thread.
    j = await asyncio.to_thread(journal, tmp_path)
    await asyncio.to_thread(j.open)
    with blockbuster_ctx():
        ids = [j.new_id() for _ in range(200)]
        for n, goal_id in enumerate(ids):
            assert j.append(goal_id, GOALS, body(n))
        for goal_id in ids[:100]:
            assert j.ack(goal_id, "delivered")
    assert await asyncio.to_thread(j.flush)
    with blockbuster_ctx():
        for goal_id in ids[100:]:
            assert j.ack(goal_id, "delivered")  # written already: an acknowledgement
    assert j.faults == {}
    assert await asyncio.to_thread(j.close)
    assert files(tmp_path) == []


# -- faults -------------------------------------------------------------------------------------


def test_a_torn_last_record_is_skipped_once_counted_and_the_file_stays_usable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    j.open()
    ids = append_all(j, 3)
    assert j.flush()
    (path,) = files(tmp_path)
    crash(j)
    with path.open("ab") as f:  # the crash cut the next record short
        f.write(b'{"id":"abc-9","path":"/api/v1/goals","at":17.5,"body":{"datafast_vis')

    caplog.set_level(logging.WARNING, "datafast_async")
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids
    assert again.faults == {"torn": 1}
    assert spool_warnings(caplog) == [
        f"skipped 1 damaged lines in the spool at {tmp_path} (1 cut short by a crash "
        "mid-write, 0 unreadable as records, 0 acknowledgements of unknown goals, 0 goals "
        "journaled twice)"
    ]
    # The torn record was cut off: acknowledgements appended to the file are whole lines.
    assert path.read_bytes().endswith(b"}\n")
    assert again.ack(ids[0], "delivered")
    assert again.flush()
    crash(again)
    third = journal(tmp_path)
    assert [r.id for r in third.open().records] == ids[1:]
    assert third.faults == {}  # counted once, and nothing new broken
    for goal_id in ids[1:]:
        third.ack(goal_id, "delivered")
    assert third.close()
    assert files(tmp_path) == []


def test_a_whole_last_record_without_its_newline_is_kept_and_what_follows_starts_a_line(
    tmp_path: Path,
) -> None:
    j = journal(tmp_path)
    j.open()
    ids = append_all(j, 2)
    assert j.flush()
    (path,) = files(tmp_path)
    crash(j)
    path.write_bytes(path.read_bytes()[:-1])  # the crash came just before the last newline

    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids
    assert again.faults == {}
    assert again.ack(ids[1], "delivered")
    assert again.flush()
    crash(again)
    third = journal(tmp_path)
    assert [r.id for r in third.open().records] == ids[:1]
    assert third.faults == {}
    third.close()


def test_garbage_lines_and_unknown_acknowledgements_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    j.open()
    ids = append_all(j, 2)
    assert j.flush()
    (path,) = files(tmp_path)
    crash(j)
    with path.open("ab") as f:
        f.write(b"\x00\xff not json\n")
        f.write(b'["a list"]\n')
        f.write(b'{"id":"no-body","path":"/x"}\n')
        f.write(b'{"ack":"nobody-1","outcome":"delivered"}\n')
    caplog.set_level(logging.WARNING, "datafast_async")
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids
    assert again.faults == {"garbage": 3, "unknown_ack": 1}
    (line,) = spool_warnings(caplog)
    assert line.startswith("skipped 4 damaged lines")
    assert "3 unreadable as records, 1 acknowledgements of unknown goals" in line
    again.close()


def test_a_file_deleted_under_the_journal_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    j.open()
    ids = append_all(j, 4)
    assert j.flush()
    j.ack(ids[0], "delivered")
    (path,) = files(tmp_path)
    path.unlink()  # a clean-up job, a person
    later = append_all(j, 2, start=4)
    assert j.flush()  # found before writing to it: the 3 pending and the 2 new go elsewhere
    assert j.faults == {"lost": 1}
    assert spool_warnings(caplog) == [
        f"the journal file {path} was deleted or made unreadable while in use: its 5 goals "
        "not yet delivered are journaled again in a new file"
    ]
    (new,) = files(tmp_path)
    assert new != path
    crash(j)
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids[1:] + later
    again.close()


def test_a_file_made_unreadable_under_the_journal_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path, segment_bytes=300)
    j.open()
    ids = append_all(j, 4)
    assert j.flush()
    old = files(tmp_path)[0]  # not the current file: found at the next sync
    old.chmod(0)
    assert j.flush(sync=True)
    assert j.faults == {"lost": 1}
    assert old not in files(tmp_path)  # moved out of the way, its goals journaled again
    (line,) = spool_warnings(caplog)
    assert line.startswith(f"the journal file {old} was deleted or made unreadable")
    crash(j)
    again = journal(tmp_path)
    assert sorted(r.id for r in again.open().records) == sorted(ids)
    again.close()


def test_a_spool_directory_removed_under_the_journal_is_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    j = journal(spool)
    j.open()
    ids = append_all(j, 3)
    assert j.flush()
    j.ack(ids[0], "delivered")
    shutil.rmtree(spool)  # rm -rf, under the running client
    later = append_all(j, 1, start=3)
    assert j.flush()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert j.faults == {"lost": 1}
    assert len(spool_warnings(caplog)) == 1
    crash(j)
    again = journal(spool)
    assert [r.id for r in again.open().records] == ids[1:] + later
    again.close()


def test_a_spool_path_that_is_a_file_disables_the_journal_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    spool.write_text("not a directory")
    j = journal(spool / "sub")
    adoption = j.open()
    assert adoption.records == []
    assert j.faults == {"directory": 1}
    assert j.append(j.new_id(), GOALS, body(1)) is Append.MEMORY_ONLY
    assert j.append(j.new_id(), GOALS, body(1))  # accepted: kept in memory by the caller
    assert not j.ack("abc-1", "delivered")
    assert spool_warnings(caplog) == [
        f"the spool directory {spool / 'sub'} cannot be used (Not a directory): goals are "
        "kept in memory only, as without spool_path"
    ]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert j.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory")
def test_a_read_only_directory_disables_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o500)
    try:
        j = journal(tmp_path)
        j.open()
        assert j.append(j.new_id(), GOALS, body(1)) is Append.MEMORY_ONLY
        assert j.faults == {"directory": 1}
        assert "Permission denied" in spool_warnings(caplog)[0]
    finally:
        tmp_path.chmod(0o700)


def test_a_full_disk_keeps_accepted_goals_in_memory_and_writes_them_when_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    j.open()
    before = append_all(j, 2)
    assert j.flush()
    ours = {segment.held.fd for segment in j._segments}
    real_write = os.write
    full = True

    def write(fd: int, data: bytes) -> int:
        if full and fd in ours:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    waiting = append_all(j, 3, start=2)  # accepted before the writer saw the disk full
    j.ack(before[0], "delivered")
    assert not j.flush()
    assert not j.flush()  # still full: no second line
    memory_only = j.new_id()
    assert j.append(memory_only, GOALS, body(9)) is Append.MEMORY_ONLY
    assert j.faults == {"write": 1}
    assert spool_warnings(caplog) == [
        f"the spool at {tmp_path} cannot be written (No space left on device): goals already "
        "accepted are kept in memory and written when it works again; new goals are kept in "
        "memory only"
    ]

    full = False
    assert j.flush()
    assert spool_warnings(caplog)[1:] == [f"the spool at {tmp_path} is written again"]
    after = append_all(j, 1, start=10)
    assert j.flush()
    crash(j)
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == before[1:] + waiting + after
    again.close()


def test_a_write_cut_short_by_a_full_disk_is_finished_not_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops half-way (a short write, then ENOSPC) goes on where it stopped."""
    j = journal(tmp_path)
    j.open()
    ours = {segment.held.fd for segment in j._segments}
    real_write = os.write
    calls = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if fd in ours and calls == 1:
            return real_write(fd, bytes(data[:30]))
        if fd in ours and calls == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    ids = append_all(j, 2)
    assert not j.flush()
    assert j.flush()
    crash(j)
    again = journal(tmp_path)
    adoption = again.open()
    assert [r.id for r in adoption.records] == ids
    assert adoption.damaged == 0
    again.close()


def test_a_bug_in_a_writer_step_is_logged_once_counted_and_the_next_step_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(held: object) -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug")

    j = journal(tmp_path)
    j.open()
    real = _journal.still_ours  # type: ignore[attr-defined]
    monkeypatch.setattr(_journal, "still_ours", broken)
    ids = append_all(j, 2)
    assert not j.flush()
    assert not j.flush()
    assert calls == 2
    assert j.faults == {"internal": 2, "write": 1}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "the spool writer failed unexpectedly (said once a minute)"
    ]
    assert errors[0].exc_info is not None

    monkeypatch.setattr(_journal, "still_ours", real)
    assert j.flush()
    crash(j)
    again = journal(tmp_path)
    assert [r.id for r in again.open().records] == ids
    again.close()


# -- the contract with the caller ---------------------------------------------------------------


def test_a_platform_without_flock_refuses_the_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ownership, "fcntl", None)
    with pytest.raises(ConfigurationError, match="POSIX file locks"):
        Journal("/nonexistent", NS)


def test_callers_mistakes_raise(tmp_path: Path) -> None:
    j = journal(tmp_path)
    with pytest.raises(RuntimeError, match="open"):
        j.append(j.new_id(), GOALS, body(1))
    j.open()
    goal_id = j.new_id()
    j.append(goal_id, GOALS, body(1))
    with pytest.raises(ValueError, match="already"):
        j.append(goal_id, GOALS, body(1))
    with pytest.raises(ValueError, match="id"):
        j.append('a"b', GOALS, body(1))
    with pytest.raises(ValueError, match="newline"):
        j.append(j.new_id(), GOALS, b'{\n"a":1}')
    with pytest.raises(ValueError, match="path"):
        j.append(j.new_id(), "api/v1/goals", body(1))
    with pytest.raises(ValueError, match="outcome"):
        j.ack(goal_id, "Delivered!")
    with pytest.raises(ValueError, match="namespace"):
        Journal(tmp_path, "a.b")
    assert j.close()
