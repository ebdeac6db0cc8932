"""Who holds which journal file: namespaces, locks between journals and processes, taking
over a dead client's files, a forked child, and the read-only view for the command line.

Processes are real (``subprocess``), bounded in time, and talk to the test over pipes; a
crash is ``SIGKILL``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafast_async._spool import Append, Journal, _ownership, adopt, inspect, namespace

GOALS = "/api/v1/goals"
NS = "df-0badc0de"
OTHER = "df-feedface"


def body(n: int) -> bytes:
    return b'{"datafast_visitor_id":"v-%d","name":"signup"}' % n


def journal(directory: Path, ns: str = NS, **kwargs: object) -> Journal:
    kwargs.setdefault("background", False)
    return Journal(directory, ns, **kwargs)  # type: ignore[arg-type]


def crash(j: Journal) -> None:
    """The process holding ``j`` dies: the kernel closes its files (releasing the locks)."""
    for segment in j._segments:
        os.close(segment.held.fd)
    j._segments = []


def append_all(j: Journal, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        goal_id = j.new_id()
        assert j.append(goal_id, GOALS, body(n)) is Append.JOURNALED
        ids.append(goal_id)
    return ids


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines() if b'"id"' in line]


def lockable(path: Path) -> bool:
    """Whether a process other than the holder could take the file's lock now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


# -- namespaces ---------------------------------------------------------------------------------


def test_a_namespace_names_the_key_kind_the_website_and_a_fingerprint_never_the_key() -> None:
    key = "df_0123456789abcdefSECRET"
    ns = namespace(key)
    assert ns.startswith("df-")
    assert len(ns) == len("df-") + 8
    assert "SECRET" not in ns
    assert namespace(key, "ignored-for-a-website-key") == ns  # the key names the website
    assert namespace("df_another_key_456789") != ns

    token = "dft_0123456789abcdefSECRET"
    assert namespace(token, "site_1").startswith("dft-site_1-")
    assert namespace(token, "site_1") != namespace(token, "site_2")
    # A website id made file-name-safe stays distinct from one that was safe already.
    assert namespace(token, "a.b") != namespace(token, "a_b")
    assert set(namespace(token, "ex.com/é 1")) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    )


# -- two journals, one directory ----------------------------------------------------------------


def test_two_live_journals_of_one_namespace_write_only_their_own_files(tmp_path: Path) -> None:
    first = journal(tmp_path)
    assert first.open().records == []
    mine = append_all(first, 3)
    assert first.flush()

    second = journal(tmp_path)
    adoption = second.open()
    assert adoption.records == []  # the first one is alive: its files are not taken
    assert adoption.held_elsewhere == [Path(p).name for p in first.files]
    theirs = append_all(second, 2, start=10)
    assert second.flush()

    assert set(first.files).isdisjoint(second.files)
    assert [i for p in first.files for i in ids_in(Path(p))] == mine
    assert [i for p in second.files for i in ids_in(Path(p))] == theirs

    # The first one goes away with goals pending: a third journal takes them, not the second's.
    assert first.close()
    third = journal(tmp_path)
    assert [r.id for r in third.open().records] == mine
    second.close()
    third.close()


def test_other_namespaces_are_left_alone_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging = journal(tmp_path, OTHER, segment_bytes=200)
    staging.open()
    append_all(staging, 4)
    assert staging.close()  # left for its own namespace's next start
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(before) >= 2

    j = journal(tmp_path)
    adoption = j.open()
    assert adoption.records == []
    assert sorted(adoption.others) == sorted(before)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before
    assert all(lockable(tmp_path / name) for name in before)  # not even locked
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"the spool at {tmp_path} also holds {len(before)} journal files of other keys or "
        f"websites ({OTHER}): they are left alone; `datafast-async spool {tmp_path}` lists them"
    ]
    j.close()


def test_the_journal_takes_what_fits_under_its_cap_and_leaves_the_rest_for_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = journal(tmp_path, segment_bytes=300)
    first.open()
    ids = append_all(first, 9)
    assert first.flush()
    sizes = [Path(p).stat().st_size for p in first.files]
    crash(first)

    j = journal(tmp_path, max_bytes=sizes[0] + sizes[1] + 100)
    adoption = j.open()
    taken = [r.id for r in adoption.records]
    assert taken == ids[: len(taken)]
    assert 0 < len(taken) < 9
    assert len(adoption.left) == len(sizes) - 2
    assert any("are left for a later start" in r.getMessage() for r in caplog.records)
    for goal_id in taken:
        j.ack(goal_id, "delivered")
    assert j.close()

    later = journal(tmp_path)
    assert [r.id for r in later.open().records] == ids[len(taken) :]
    later.close()


# -- the lock dance -----------------------------------------------------------------------------


def test_a_file_its_holder_deletes_while_an_adopter_waits_for_the_lock_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adopter opened the file, then its holder (all its goals delivered) deleted it and
    let go: the adopter gets the lock of a file that no longer exists, and must drop it
    rather than send its delivered goals again."""
    holder = _ownership.create(str(tmp_path), NS, 1, os.getpid(), 0)
    os.write(holder.fd, b'{"id":"a-1","path":"/api/v1/goals","at":1.0,"body":{}}\n')
    real = fcntl.flock

    class Fcntl:
        LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN = (
            fcntl.LOCK_EX,
            fcntl.LOCK_NB,
            fcntl.LOCK_SH,
            fcntl.LOCK_UN,
        )

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            if fd != holder.fd and operation & fcntl.LOCK_EX and _ownership.still_ours(holder):
                _ownership.delete(holder)  # the holder goes first
            real(fd, operation)

    monkeypatch.setattr(_ownership, "fcntl", Fcntl)
    adoption = adopt(str(tmp_path), NS)
    assert adoption.records == []
    assert adoption.files == []
    assert list(tmp_path.iterdir()) == []


def test_a_file_left_half_created_by_a_crash_is_removed_and_a_live_one_left_alone(
    tmp_path: Path,
) -> None:
    dead = tmp_path / f".{NS}.{1:020d}-1-0.jsonl.new"
    dead.write_bytes(b"")
    dead.chmod(0o600)  # as the SDK creates it
    live = tmp_path / f".{NS}.{2:020d}-2-0.jsonl.new"
    live.write_bytes(b"")
    live.chmod(0o600)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        adoption = adopt(str(tmp_path), NS)
        assert adoption.deleted == 1
        assert not dead.exists()
        assert live.exists()
    finally:
        os.close(fd)


def test_a_symlink_in_place_of_a_journal_file_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    content = b'{"id":"x-1","path":"/api/v1/goals","at":1.0,"body":{}}\n'
    elsewhere.write_bytes(content)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / f"{NS}.{1:020d}-1-0.jsonl").symlink_to(elsewhere)
    j = journal(spool)
    assert j.open().records == []
    assert j.faults == {"unreadable": 1}
    assert elsewhere.read_bytes() == content
    assert any("cannot read 1 journal files" in r.getMessage() for r in caplog.records)
    j.close()


# -- processes ----------------------------------------------------------------------------------


def read_line(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child process did not answer in time"
    line = proc.stdout.readline().decode().strip()
    assert line, f"the child process ended: {proc.wait(5)}"
    return line


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def spawn(
    processes: list[subprocess.Popen[bytes]], script: str, *args: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    processes.append(proc)
    return proc


HOLDER = """
    import sys
    from datafast_async._spool import Journal
    directory, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    j = Journal(directory, ns, write_interval=0.01)  # with its writer thread, as in an app
    j.open()
    ids = [j.new_id() for _ in range(count)]
    for n, goal_id in enumerate(ids):
        j.append(goal_id, "/api/v1/goals", b'{"n":%d}' % n)
    j.flush()
    print(" ".join(ids), flush=True)
    sys.stdin.readline()
"""


def test_a_live_process_keeps_its_files_and_a_killed_one_leaves_them_to_the_next(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    proc = spawn(processes, HOLDER, str(tmp_path), NS, "5")
    theirs = read_line(proc).split()
    assert len(theirs) == 5

    mine = journal(tmp_path)
    adoption = mine.open()
    assert adoption.records == []
    assert len(adoption.held_elsewhere) == 1
    own = append_all(mine, 3)
    assert mine.flush()
    (their_file,) = (tmp_path / name for name in adoption.held_elsewhere)
    assert ids_in(their_file) == theirs
    assert [i for p in mine.files for i in ids_in(Path(p))] == own

    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    after = journal(tmp_path)
    adoption = after.open()
    assert [r.id for r in adoption.records] == theirs  # each once; not the live one's
    assert [r.body for r in adoption.records] == [b'{"n":%d}' % n for n in range(5)]
    mine.close()
    after.close()


FORKER = """
    import os, sys, time, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with a thread running
    from datafast_async._spool import Journal
    directory, ns = sys.argv[1], sys.argv[2]
    j = Journal(directory, ns, write_interval=0.01)
    j.open()
    goal_id = j.new_id()
    j.append(goal_id, "/api/v1/goals", b'{"n":1}')
    j.flush()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        j.abandon_after_fork()
        answer = j.append(j.new_id(), "/api/v1/goals", b'{"n":2}')
        os.write(w, answer.value.encode() + b"\\n")
        time.sleep(60)  # alive, holding nothing, until the test ends it
        os._exit(0)
    answer = os.read(r, 100).decode().strip()
    print(goal_id, child, answer, *j.files, flush=True)
    sys.stdin.readline()
"""


def test_a_forked_child_lets_go_of_its_copies_without_unlocking_the_parents_files(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    parent = spawn(processes, FORKER, str(tmp_path), NS)
    goal_id, child, answer, *held = read_line(parent).split()
    try:
        assert answer == "memory_only"
        (path,) = (Path(p) for p in held)
        # The child closed its copies without unlocking: the parent still holds its file.
        assert not lockable(path)
        probe = journal(tmp_path)
        assert probe.open().held_elsewhere == [path.name]
        probe.close()

        # The parent dies while the child lives on: the child holds no copy of the lock.
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        os.kill(int(child), 0)  # still alive
        assert lockable(path)
        after = journal(tmp_path)
        assert [r.id for r in after.open().records] == [goal_id]
        after.close()
    finally:
        os.kill(int(child), signal.SIGKILL)


# -- the command line's view --------------------------------------------------------------------


def test_inspect_lists_every_namespace_with_pending_goals_and_who_holds_them(
    tmp_path: Path,
) -> None:
    dead = journal(tmp_path, OTHER)
    dead.open()
    dead_ids = append_all(dead, 3)
    dead.ack(dead_ids[0], "delivered")
    assert dead.flush()
    crash(dead)
    with open(next(tmp_path.glob(f"{OTHER}.*")), "ab") as f:
        f.write(b'{"id":"torn')
    live = journal(tmp_path)
    live.open()
    append_all(live, 2)
    assert live.flush()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    infos = inspect(str(tmp_path))
    assert [(i.namespace, i.pending, i.locked, i.damaged) for i in infos] == [
        (NS, 2, True, 0),
        (OTHER, 2, False, 1),
    ]
    assert all(i.oldest is not None and i.size > 0 and i.error is None for i in infos)
    # It changed nothing, and took nothing over.
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    taker = journal(tmp_path, OTHER)
    assert [r.id for r in taker.open().records] == dead_ids[1:]
    taker.close()
    live.close()
