"""``datafast-async spool DIR`` (inspect, ``--replay``) and ``import --spool DIR``, run
in-process (``main``) against the fake server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datafast_async import DataFast
from datafast_async._cli import main
from datafast_async._spool import Journal, inspect, namespace
from datafast_async._transport import MockTransport, Request, Response
from datafast_async.testing import ThreadedFakeDataFast

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="the spool needs POSIX flock"),
]

KEY = "df_fake_key_for_cli_spool_tests_1"
OTHER_KEY = "df_another_key_of_another_site_22"


#: The fake's answer delay, in seconds (a test may slow it down).
LATENCY = [0.0]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedFakeDataFast]:
    for name in list(os.environ):
        if name.startswith("DATAFAST_"):
            monkeypatch.delenv(name)
    LATENCY[0] = 0.0
    with ThreadedFakeDataFast(api_key=KEY, latency=lambda: LATENCY[0]) as server:
        monkeypatch.setenv("DATAFAST_BASE_URL", server.base_url)
        monkeypatch.setenv("DATAFAST_API_KEY", KEY)
        yield server


def body(visitor: str, name: str = "signup") -> bytes:
    return json.dumps({"datafast_visitor_id": visitor, "name": name}).encode()


def journal_goals(directory: Path, key: str, visitors: list[str], name: str = "signup") -> None:
    """Goals an earlier run left in the spool: journaled, never acknowledged."""
    journal = Journal(directory, namespace(key), background=False)
    journal.open()
    for visitor in visitors:
        journal.append(journal.new_id(), "/api/v1/goals", body(visitor, name))
    assert journal.flush()
    assert journal.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def summary_value(stdout: str, label: str) -> str:
    match = re.search(rf"^\s+{label}\s+(\S+)", stdout, re.MULTILINE)
    assert match is not None, f"no {label!r} row in the summary:\n{stdout}"
    return match.group(1).replace(",", "")


def delivered_visitors(fake: ThreadedFakeDataFast) -> Counter[str]:
    return Counter(goal.visitor_id for goal in fake.goals)


# -- spool DIR ------------------------------------------------------------------------------------


def test_spool_shows_each_namespace_pending_goals_and_owners_never_visitor_ids(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = Journal(tmp_path, namespace(KEY), background=False)  # a live client's file
    held.open()
    held.append(held.new_id(), "/api/v1/goals", body("secret-visitor-live"))
    assert held.flush()
    try:
        journal_goals(tmp_path, KEY, [f"secret-visitor-{i}" for i in range(5)])
        journal_goals(tmp_path, OTHER_KEY, [f"secret-visitor-x{i}" for i in range(3)], "purchase")
        code, out, err = run_cli(capsys, "spool", str(tmp_path), "--show", "2", "--files")
        json_code, json_out, _ = run_cli(capsys, "spool", str(tmp_path), "--json")
    finally:
        held.close()
    assert (code, json_code) == (0, 0), err
    assert "secret-visitor" not in out + json_out  # bodies are never printed
    assert "9 goals pending in 3 files" in out
    assert f"namespace {namespace(KEY)}  (the configured key)" in out
    assert f"namespace {namespace(OTHER_KEY)}\n" in out
    assert f"pid {os.getpid()}, nobody (1 orphaned)" in out
    assert "goal 'purchase', journaled" in out
    summary = json.loads(json_out)
    spaces = {entry["namespace"]: entry for entry in summary["namespaces"]}
    mine, other = spaces[namespace(KEY)], spaces[namespace(OTHER_KEY)]
    assert (mine["pending"], mine["files"], mine["owners"], mine["orphaned_files"]) == (
        6,
        2,
        [os.getpid()],
        1,
    )
    assert (other["pending"], other["files"], other["owners"], other["yours"]) == (3, 1, [], False)
    assert mine["yours"]
    assert mine["oldest_age"] >= 0
    assert mine["damaged"] == 0
    assert KEY not in out + json_out + err


def test_spool_show_names_a_pending_payment_or_identify_by_its_kind_never_its_customer(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A payment's body has a "name" too, its customer's: --show must not print it as if it
    were a goal's name (found in review: it printed "goal 'Jane Secret-Customer'")."""
    journal = Journal(tmp_path, namespace(KEY), background=False)
    journal.open()
    payment = {"amount": 5, "currency": "USD", "transaction_id": "ch_1", "name": "Jane Secret"}
    journal.append(journal.new_id(), "/api/v1/payments", json.dumps(payment).encode())
    identify = {
        "datafast_visitor_id": "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1",
        "user_id": "secret-user-1",
    }
    journal.append(journal.new_id(), "/api/v1/identify", json.dumps(identify).encode())
    journal.append(journal.new_id(), "/api/v1/goals", body("secret-visitor"))
    assert journal.flush()
    assert journal.close()
    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--show", "5")
    assert code == 0, err
    assert "    a payment, journaled" in out
    assert "    an identify, journaled" in out
    assert "    goal 'signup', journaled" in out
    assert "Jane" not in out
    assert "secret-user" not in out
    assert "secret-visitor" not in out
    assert "3cff4252" not in out


def test_spool_counts_damaged_lines(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal_goals(tmp_path, KEY, ["a", "b"])
    [path] = tmp_path.glob("*.jsonl")
    with path.open("ab") as stream:
        stream.write(b'not json at all\n{"id":"torn')
    code, out, _ = run_cli(capsys, "spool", str(tmp_path), "--json")
    assert code == 0
    [entry] = json.loads(out)["namespaces"]
    assert (entry["pending"], entry["damaged"]) == (2, 2)


def test_spool_of_a_missing_directory_exits_2(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "spool", str(tmp_path / "nope"))
    assert code == 2
    assert "no such directory" in err


# -- spool DIR --replay ---------------------------------------------------------------------------


def test_replay_delivers_its_namespace_once_deletes_the_files_and_leaves_others_alone(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = [f"v{i}" for i in range(40)]
    journal_goals(tmp_path, KEY, mine[:25])
    journal_goals(tmp_path, KEY, mine[25:])
    journal_goals(tmp_path, OTHER_KEY, ["o1", "o2"])

    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--replay")

    assert code == 0, out + err
    assert delivered_visitors(fake) == Counter(mine)  # each exactly once, none of the other key
    assert re.search(r"found\s+40", out)
    assert re.search(r"delivered\s+40", out)
    assert re.search(r"left\s+0", out)
    assert f"left alone: 2 goals of namespace {namespace(OTHER_KEY)}" in err
    left = inspect(str(tmp_path))
    assert [info.namespace for info in left] == [namespace(OTHER_KEY)]  # our files deleted
    # A second replay finds nothing and sends nothing.
    code, out, _ = run_cli(capsys, "spool", str(tmp_path), "--replay")
    assert code == 0
    assert re.search(r"found\s+0", out)
    assert len(fake.goals) == 40


def test_replay_against_an_api_that_refuses_keeps_the_goals_and_exits_1(
    fake: ThreadedFakeDataFast,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal_goals(tmp_path, KEY, ["a", "b", "c"])
    monkeypatch.setenv("DATAFAST_API_KEY", "df_a_key_the_fake_refuses_0000")
    # Its namespace is another one: nothing of ours is taken, and it says so.
    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--replay")
    assert code == 0
    assert re.search(r"found\s+0", out)
    assert f"left alone: 3 goals of namespace {namespace(KEY)}" in err
    assert fake.goals == []
    assert sum(info.pending or 0 for info in inspect(str(tmp_path))) == 3


# -- import --spool -------------------------------------------------------------------------------


def write_goals(path: Path, count: int) -> list[str]:
    visitors = [f"line-{i}" for i in range(1, count + 1)]
    path.write_text(
        "".join(json.dumps({"datafast_visitor_id": v, "name": "signup"}) + "\n" for v in visitors)
    )
    return visitors


@pytest.mark.slow  # about 5 s: the 3 s grace after Ctrl-C
def test_import_spool_resumes_after_ctrl_c_and_sends_each_line_once_but_the_cut_requests(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "goals.jsonl"
    visitors = write_goals(source, 2_000)
    spool = tmp_path / "spool"
    # The API is slow: goals pile up; Ctrl-C comes once 100 goals were delivered.
    LATENCY[0] = 0.02
    interrupted = threading.Event()

    def watch() -> None:
        while not interrupted.is_set():
            if len(fake.goals) >= 100:
                os.kill(os.getpid(), signal.SIGINT)
                interrupted.set()
            else:
                interrupted.wait(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code, out, err = run_cli(
            capsys,
            "import",
            str(source),
            "--spool",
            str(spool),
            "--concurrency",
            "4",
            "--no-progress",
        )
    finally:
        interrupted.set()
        watcher.join()
    assert code == 130, out + err
    settle = time.monotonic() + 5.0
    while fake.in_flight and time.monotonic() < settle:  # the fake finishes cut requests
        time.sleep(0.01)
    first = len(fake.goals)
    assert first < len(visitors)
    assert "run the same command again" in err
    # Requests still in flight when the 3 s grace ran out were cut: the fake recorded them,
    # their answers were lost, so they stay in the spool and are sent again (the documented
    # duplicate window); every other goal is sent once.
    cut = first - int(summary_value(out, "delivered"))
    assert 0 <= cut <= 4

    LATENCY[0] = 0.0
    code, out, err = run_cli(capsys, "import", str(source), "--spool", str(spool), "--no-progress")

    assert code == 0, out + err
    counts = delivered_visitors(fake)
    assert set(counts) == set(visitors)  # none lost
    assert sum(n - 1 for n in counts.values()) == cut  # none twice but those cut
    assert "resumed" in out
    assert list(inspect(str(spool))) == []  # the spool is empty again


def test_import_spool_while_the_api_is_down_keeps_the_goals_and_the_next_run_sends_them(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "goals.jsonl"
    visitors = write_goals(source, 300)
    spool = tmp_path / "spool"
    fake.fail_next(401, times=100_000)  # refused: the circuit opens at once

    code, out, err = run_cli(capsys, "import", str(source), "--spool", str(spool), "--no-progress")

    assert code == 1, out + err
    assert "goals wait in the spool" in err
    kept = sum(info.pending or 0 for info in inspect(str(spool)))
    assert kept > 0
    fake.reset()
    visitors = write_goals(source, 350)  # 50 lines more: sent behind the spool's goals
    code, out, err = run_cli(capsys, "import", str(source), "--spool", str(spool), "--no-progress")
    assert code == 0, out + err
    counts = delivered_visitors(fake)
    assert set(counts) == set(visitors)
    assert [v for v, n in counts.items() if n > 1] == []


def test_import_spool_refuses_a_file_whose_imported_lines_changed(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "goals.jsonl"
    write_goals(source, 10)
    spool = tmp_path / "spool"
    assert run_cli(capsys, "import", str(source), "--spool", str(spool))[0] == 0
    write_goals(source, 12)  # appended lines: imported next time
    code, out, _ = run_cli(capsys, "import", str(source), "--spool", str(spool))
    assert code == 0
    assert re.search(r"read\s+2\b", out)
    assert len(fake.goals) == 12
    source.write_text(source.read_text().replace("line-3", "line-X"))
    code, _, err = run_cli(capsys, "import", str(source), "--spool", str(spool))
    assert code == 2
    assert "delete" in err
    assert ".import-" in err
    assert len(fake.goals) == 12


# -- the SDK under import --spool -----------------------------------------------------------------


async def test_track_with_on_full_block_journals_its_goals(
    make_client: Callable[..., DataFast], tmp_path: Path
) -> None:
    """``await track()`` with ``on_full="block"`` (what ``import`` uses) journals each goal,
    like ``track_nowait``: a goal the API has not answered yet is on disk after a flush."""
    hang = asyncio.Event()

    async def never(request: Request) -> Response:
        await hang.wait()
        raise AssertionError("not reached")

    # Built off the loop: the constructor resolves the spool's path (os.path.abspath).
    client = await asyncio.to_thread(make_client, spool_path=tmp_path, on_full="block")
    client._options.transport_factory = lambda: MockTransport(never)
    await client.start()
    for i in range(5):
        await client.track(f"v{i}", "signup")
    journal = client._run.spool.journal  # type: ignore[union-attr]
    assert await asyncio.to_thread(journal.flush)
    infos = await asyncio.to_thread(inspect, str(tmp_path))
    assert sum(info.pending or 0 for info in infos) == 5
    stats = await client.aclose(0.0)
    assert stats.spooled == 5


def test_goals_spilled_while_an_earlier_runs_goals_are_read_back_are_read_back_too(
    tmp_path: Path,
) -> None:
    """A restart with goals in the spool, then new goals that go to disk behind them (what
    ``import --spool`` does after an outage, and any app restarted during one): read_back
    returns every one of them, not only the earlier run's."""
    journal_goals(tmp_path, KEY, ["old-1", "old-2"])
    journal = Journal(tmp_path, namespace(KEY), background=False)
    adoption = journal.open()
    try:
        assert len(adoption.records) == 2
        journal.append(journal.new_id(spilled=True), "/api/v1/goals", body("new-1"))
        back = journal.read_back(10) + journal.read_back(10)
        assert [json.loads(record.body)["datafast_visitor_id"] for record in back] == [
            "old-1",
            "old-2",
            "new-1",
        ]
    finally:
        journal.close()


def test_replay_with_namespace_sends_a_rotated_keys_goals_with_the_configured_key(
    fake: ThreadedFakeDataFast, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Goals parked under a key that was revoked and replaced: a client with the new key
    leaves them alone (another namespace), and `spool DIR --replay --namespace OLD` sends
    them with the new key, each once, and deletes their files."""
    journal_goals(tmp_path, OTHER_KEY, ["r1", "r2", "r3"])
    old = namespace(OTHER_KEY)

    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--replay")
    assert code == 0, out + err
    assert len(fake.goals) == 0  # another namespace: left alone
    assert f"--replay --namespace {old}" in err

    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--replay", "--namespace", old)
    assert code == 0, out + err
    assert delivered_visitors(fake) == Counter(["r1", "r2", "r3"])
    assert f"sending the goals of namespace {old} with the configured key" in err
    assert inspect(str(tmp_path)) == []  # delivered: the files are gone

    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--replay", "--namespace", "df-0")
    assert code == 2
    assert "no namespace 'df-0'" in err
    code, out, err = run_cli(capsys, "spool", str(tmp_path), "--namespace", old)
    assert code == 2
    assert "--namespace goes with --replay" in err


# -- progress, the command line in a process ------------------------------------------------------


def progress_while_held(fake: ThreadedFakeDataFast, *args: str) -> tuple[str, str, int]:
    """The first plain progress line of ``datafast-async ARGS --no-progress``, run while the
    fake holds every request; then the fake answers: the command's stdout and exit code."""
    fake.pause()
    process = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", *args, "--no-progress"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []
        for line in process.stderr:  # bounded: the process is killed in finally
            seen.append(line)
            if "progress:" in line:
                break
        assert "progress:" in (seen[-1] if seen else ""), "".join(seen)
        fake.resume()
        out, err = process.communicate(timeout=30)
    finally:
        fake.resume()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err
    return seen[-1], out, process.returncode


def test_a_resumed_import_spool_counts_the_earlier_runs_requests_still_going_out(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    """It said "delivering the last 0" while the 600 goals the earlier run left were sent."""
    spool = tmp_path / "spool"
    journal_goals(spool, KEY, [f"left-{i}" for i in range(600)])
    source = tmp_path / "goals.jsonl"
    write_goals(source, 10)
    progress, out, code = progress_while_held(fake, "import", str(source), "--spool", str(spool))
    assert "read all 10 lines; delivering the last 610: 0 delivered, 0 failed" in progress
    assert code == 0, out
    assert summary_value(out, "from spool") == "600"
    assert summary_value(out, "delivered") == "610"
    assert len(fake.goals) == 610


def test_replay_shows_its_progress_as_it_sends(fake: ThreadedFakeDataFast, tmp_path: Path) -> None:
    """A replay of a large spool ran for many seconds without a word."""
    journal_goals(tmp_path, KEY, [f"v{i}" for i in range(600)])
    progress, out, code = progress_while_held(fake, "spool", str(tmp_path), "--replay")
    assert re.search(
        r"^datafast-async: progress: replay \(0%\): 0 of 600 delivered, 0 failed, ", progress
    ), progress
    assert code == 0, out
    assert summary_value(out, "delivered") == "600"
    assert delivered_visitors(fake) == Counter(f"v{i}" for i in range(600))
