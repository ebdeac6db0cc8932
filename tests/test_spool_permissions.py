"""A spool directory that others could write to, and journal files that are not the user's own.

Another user who can write to ``spool_path`` could plant journal files of the victim's
namespace: the client would send those goals with the victim's key. So a directory that is
group- or world-writable (mode 1777, 0775) or not owned by the process's user is refused (one
ERROR, the client runs from memory), and only files owned by that user with mode 0600 are taken
over. Permissions here are real: files and directories on disk with their modes and owners;
the cases that need another user run as root (as CI does) and change owners with ``chown``,
or fork a child that becomes ``nobody``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from datafast_async import Stats
from datafast_async._spool import Journal, _ownership, namespace

from ._fakes import API, SPOOL_KEY, messages, records_in, spool_client, track

T = TypeVar("T")
NOBODY = 65534
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="changing a file's owner needs root (CI runs the tests as root)",
)
PLANTED = 25


def plant(directory: Path, count: int = PLANTED) -> list[Path]:
    """Journal files of the client's namespace holding ``count`` goals, as another client that
    crashed would leave them (or as someone who knows the namespace could write them)."""
    journal = Journal(directory, namespace(SPOOL_KEY), background=False)
    journal.open()
    for n in range(count):
        journal.append(
            journal.new_id(),
            "/api/v1/goals",
            json.dumps(
                {
                    "datafast_visitor_id": "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1",
                    "name": "planted",
                    "metadata": {"i": f"planted{n}"},
                }
            ).encode(),
        )
    journal.flush()
    files = [directory / segment.held.name.file for segment in journal._segments]
    for segment in journal._segments:  # the process that wrote them is gone
        os.close(segment.held.fd)
    journal._segments = []
    return files


async def blocking(function: Callable[[], T]) -> T:
    """Set-up that touches the disk, off the loop (blockbuster watches it)."""
    return await anyio.to_thread.run_sync(function)


async def run_client(directory: Path, caplog: pytest.LogCaptureFixture) -> tuple[API, Stats]:
    """A client with its spool at ``directory``: three goals of its own, then closed."""
    api = API("up")
    df = spool_client(directory, api)
    with caplog.at_level(logging.INFO, logger="datafast_async"):
        await df.start()
        track(df, 0, 3)
        stats = await df.aclose()
    return api, stats


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770, 0o720], ids=oct)
async def test_a_directory_others_can_write_to_is_refused_and_planted_goals_are_never_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    spool = tmp_path / "spool"

    def prepare() -> dict[Path, bytes]:
        spool.mkdir()
        planted = plant(spool)
        os.chmod(spool, mode)
        return {path: path.read_bytes() for path in planted}

    before = await blocking(prepare)
    api, stats = await run_client(spool, caplog)

    assert sorted(api.delivered) == ["0", "1", "2"]  # its own goals, from memory
    assert stats.delivered == 3
    assert stats.failed == 0
    errors = messages(caplog, logging.ERROR)
    assert any(
        f"the spool directory {spool} cannot be used" in line
        and f"its mode is {mode:04o}" in line
        and "kept in memory only" in line
        for line in errors
    ), errors
    assert await blocking(lambda: {path: path.read_bytes() for path in before}) == before


@as_root
async def test_a_directory_owned_by_another_user_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"

    def prepare() -> None:
        spool.mkdir(mode=0o700)
        for path in plant(spool):
            os.chown(path, NOBODY, NOBODY)
        os.chown(spool, NOBODY, NOBODY)

    await blocking(prepare)
    api, stats = await run_client(spool, caplog)

    assert sorted(api.delivered) == ["0", "1", "2"]
    assert stats.delivered == 3
    assert any(
        f"it belongs to uid {NOBODY}, not to this process's user (uid 0)" in line
        for line in messages(caplog, logging.ERROR)
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
async def test_a_journal_file_open_to_others_is_left_alone_and_the_users_own_are_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    spool = tmp_path / "spool"
    open_to_others: Path

    def prepare() -> bytes:
        nonlocal open_to_others
        spool.mkdir(mode=0o700)
        plant(spool, 2)  # the user's own, as a crash left them
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        (planted,) = plant(elsewhere)
        open_to_others = spool / planted.name
        planted.rename(open_to_others)
        os.chmod(open_to_others, mode)
        return open_to_others.read_bytes()

    content = await blocking(prepare)
    api, stats = await run_client(spool, caplog)

    assert sorted(api.delivered) == ["0", "1", "2", "planted0", "planted1"]
    assert stats.delivered == 5
    assert await blocking(open_to_others.read_bytes) == content  # never acknowledged
    assert any(
        "refused 1 journal files" in line
        and open_to_others.name in line
        and f"mode {mode:04o}, not 0600" in line
        for line in messages(caplog, logging.ERROR)
    )


@as_root
async def test_a_journal_file_owned_by_another_user_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"

    def prepare() -> Path:
        spool.mkdir(mode=0o700)
        (planted,) = plant(spool)
        os.chown(planted, NOBODY, NOBODY)  # still 0600: but not this user's
        return planted

    planted = await blocking(prepare)
    api, stats = await run_client(spool, caplog)

    assert sorted(api.delivered) == ["0", "1", "2"]
    assert stats.delivered == 3
    content = await blocking(planted.read_bytes)
    assert len(records_in({"f": content})) == PLANTED  # none acknowledged
    assert any(
        f"owned by uid {NOBODY}, not by this process's user (uid 0)" in line
        for line in messages(caplog, logging.ERROR)
    )


def as_nobody(work: Callable[[], object]) -> Any:
    """``work()`` in a forked child that became ``nobody``; its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setgroups([])
            os.setuid(NOBODY)
            os.write(write, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def _as_nobody(spools: dict[str, Path]) -> dict[str, object]:
    """As ``nobody``: open a journal in each directory; what it found (the goals taken over,
    or the fault that disabled it)."""

    def work() -> dict[str, object]:
        out: dict[str, object] = {}
        for label, directory in spools.items():
            journal = Journal(directory, namespace(SPOOL_KEY), background=False)
            adoption = journal.open()
            out[label] = {
                "taken": len(adoption.records),
                "faults": journal.faults,
                "journaling": journal.journaling,
            }
            journal.close()
        return out

    result: dict[str, object] = as_nobody(work)
    return result


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory that ``nobody`` can reach (pytest's ``tmp_path`` is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="datafast-permissions-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@as_root
def test_as_another_user_its_own_directory_works_and_roots_is_refused(reachable: Path) -> None:
    tmp_path = reachable
    own = tmp_path / "nobodys"
    own.mkdir(mode=0o700)
    os.chown(own, NOBODY, NOBODY)
    roots = tmp_path / "roots"
    roots.mkdir(mode=0o755)  # readable by nobody, writable by root only
    planted = plant(roots)
    for path in planted:
        path.chmod(0o644)  # readable by nobody too

    first = _as_nobody({"own": own})
    assert first["own"] == {"taken": 0, "faults": {}, "journaling": True}
    (written,) = plant_as_nobody(own)
    assert written.stat().st_uid == NOBODY
    assert stat.S_IMODE(written.stat().st_mode) == 0o600

    found = _as_nobody({"own": own, "roots": roots})
    assert found["own"] == {"taken": 3, "faults": {}, "journaling": True}
    assert found["roots"] == {"taken": 0, "faults": {"directory": 1}, "journaling": False}
    assert all(path.exists() for path in planted)


def plant_as_nobody(directory: Path) -> list[Path]:
    """Three goals journaled by ``nobody`` in its own directory, then left (crashed)."""
    names = as_nobody(lambda: [str(path) for path in plant(directory, 3)])
    return [Path(name) for name in names]


def test_check_directory_says_what_is_wrong_and_how_to_fix_it(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    _ownership.check_directory(str(private))  # fine: nothing raised
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(PermissionError) as raised:
        _ownership.check_directory(str(shared))
    assert raised.value.strerror is not None
    assert "its mode is 1777" in raised.value.strerror
    assert f"chmod 700 {shared}" in raised.value.strerror
