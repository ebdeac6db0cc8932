"""The ``datafast-async`` command line, run as a subprocess against the fake server."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datafast_async import (
    APIError,
    AuthenticationError,
    DataFast,
    Goal,
    RetryPolicy,
    ShutdownError,
    Stats,
)
from datafast_async._cli._import import ImportJob
from datafast_async._cli._import import _report as import_report
from datafast_async._cli._output import Console
from datafast_async._cli._rate import TokenBucket
from datafast_async._cli._source import MAX_LINE_BYTES, LineSource
from datafast_async.testing import ThreadedFakeDataFast

pytestmark = pytest.mark.integration
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals")

RUN_TIMEOUT = 20.0  # seconds any one command may take before the test fails
SECRET = "df_s3cr3t_k3y_that_must_never_show_0001"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
    env.update(extra)
    return env


def fake_env(fake: ThreadedFakeDataFast) -> dict[str, str]:
    return clean_env(DATAFAST_BASE_URL=fake.base_url, DATAFAST_API_KEY=fake.api_key)


def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datafast_async", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def goal_line(visitor: str, name: str = "signup", **fields: Any) -> str:
    return json.dumps({"datafast_visitor_id": visitor, "name": name, **fields})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def summary_value(stdout: str, label: str) -> str:
    match = re.search(rf"^\s+{label}\s+(\S+)", stdout, re.MULTILINE)
    assert match is not None, f"no {label!r} row in the summary:\n{stdout}"
    return match.group(1)


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("datafast-async"), lines[0]
    assert "error:" in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def fake() -> Iterator[ThreadedFakeDataFast]:
    with ThreadedFakeDataFast(api_key="df_fake_key_for_cli_tests_01") as server:
        yield server


# -- send -----------------------------------------------------------------------------------------


def test_send_prints_the_event_id_of_the_delivered_goal(fake: ThreadedFakeDataFast) -> None:
    result = cli(
        "send",
        "visitor-1",
        "Newsletter Signup",
        "--description",
        "from the footer",
        "--metadata",
        "plan=pro",
        "seats=3",
        env=fake_env(fake),
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{24}\n", result.stdout)
    [goal] = fake.goals
    assert (goal.visitor_id, goal.name, goal.description) == (
        "visitor-1",
        "newsletter_signup",
        "from the footer",
    )
    assert goal.metadata == {"plan": "pro", "seats": "3"}


def test_send_of_an_invalid_goal_exits_2_and_sends_nothing(fake: ThreadedFakeDataFast) -> None:
    result = cli("send", "visitor-1", "identify", env=fake_env(fake))
    assert result.returncode == 2
    assert "reserved" in assert_one_error_line(result)
    assert fake.requests == []


def test_send_of_a_goal_the_api_refuses_exits_1(fake: ThreadedFakeDataFast) -> None:
    fake.known_visitors = {"someone-else"}
    result = cli("send", "visitor-1", "signup", env=fake_env(fake))
    assert result.returncode == 1
    assert "404" in assert_one_error_line(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env_key", "expected"),
    [
        pytest.param([], None, "no API key", id="no-key"),
        pytest.param(["--api-key", "sk_" + SECRET], None, "starts neither", id="bad-prefix"),
        pytest.param([], SECRET, "401", id="key-the-api-refuses"),
    ],
)
def test_bad_settings_exit_2_with_one_line_and_never_the_key(
    fake: ThreadedFakeDataFast, args: list[str], env_key: str | None, expected: str
) -> None:
    env = clean_env(DATAFAST_BASE_URL=fake.base_url)
    if env_key is not None:
        env["DATAFAST_API_KEY"] = env_key
    result = cli(*args, "send", "visitor-1", "signup", env=env)
    assert result.returncode == 2
    assert expected in assert_one_error_line(result)
    assert SECRET not in result.stdout + result.stderr
    assert SECRET[-20:] not in result.stdout + result.stderr


def test_send_through_a_proxy_that_refuses_exits_2_and_names_the_proxy(
    fake: ThreadedFakeDataFast,
) -> None:
    fake.fail_next(407, times=10)
    result = cli("send", "visitor-1", "signup", env=fake_env(fake))
    assert result.returncode == 2
    line = assert_one_error_line(result)
    assert "the proxy refused the request: HTTP 407" in line
    assert "proxy's credentials" in line
    assert len(fake.requests) == 1  # final: not retried


def test_a_usage_error_exits_2_without_echoing_the_key(fake: ThreadedFakeDataFast) -> None:
    result = cli("send", "--api-kye", SECRET, "visitor-1", "signup", env=fake_env(fake))
    assert result.returncode == 2
    assert "unrecognized arguments" in assert_one_error_line(result)
    assert SECRET not in result.stderr


# -- import ---------------------------------------------------------------------------------------


def test_import_delivers_every_line_and_exits_0(fake: ThreadedFakeDataFast) -> None:
    lines = [goal_line(f"visitor-{i}", metadata={"seq": i}) for i in range(200)]
    lines[7] = json.dumps({"visitorId": "visitor-7", "name": "signup"})  # the API's alias
    lines.insert(50, "")  # blank lines are skipped
    result = cli("import", "-", env=fake_env(fake), stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # not a terminal: no bar
    assert summary_value(result.stdout, "read") == "200"
    assert summary_value(result.stdout, "delivered") == "200"
    assert sorted(g.visitor_id for g in fake.goals) == sorted(f"visitor-{i}" for i in range(200))


def test_import_with_the_client_disabled_validates_and_sends_nothing(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "goals.jsonl", [goal_line("a"), goal_line("b")])
    env = fake_env(fake)
    env["DATAFAST_ENABLED"] = "0"
    result = cli("import", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert "dry run (DATAFAST_ENABLED is off)" in result.stdout
    assert summary_value(result.stdout, "validated") == "2"
    assert "deliver" not in result.stdout + result.stderr  # a dry run delivers nothing
    assert fake.requests == []

    # An invalid line in a dry run: exit 1, and the line in --failed-out with its reason.
    source = write_lines(tmp_path / "mixed.jsonl", [goal_line("a"), "not json", goal_line("c")])
    failed_out = tmp_path / "invalid.jsonl"
    result = cli("import", str(source), "--failed-out", str(failed_out), env=env)
    assert result.returncode == 1, result.stderr
    assert summary_value(result.stdout, "validated") == "2"
    assert summary_value(result.stdout, "invalid") == "1"
    assert "deliver" not in result.stdout + result.stderr
    assert [f["_line"] for f in read_jsonl(failed_out)] == ["not json"]
    assert fake.requests == []


def test_invalid_lines_are_reported_with_their_number_and_do_not_stop_the_import(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            goal_line("v1"),
            "not json at all",
            "[1, 2]",
            goal_line("v4", "identify"),
            goal_line("v5", "signup", timestamp="2024-01-01"),
            json.dumps({"name": "nobody"}),
            goal_line("v7", "signup", _note="fields starting with _ are ignored"),
        ],
    )
    failed_out = tmp_path / "failed.jsonl"
    result = cli(
        "import", str(source), "--failed-out", str(failed_out), "--no-progress", env=fake_env(fake)
    )
    assert result.returncode == 1
    for lineno in (2, 3, 4, 5, 6):
        assert f"in.jsonl:{lineno}: " in result.stderr
    assert "in.jsonl:1:" not in result.stderr
    assert "in.jsonl:7:" not in result.stderr
    assert "Traceback" not in result.stderr
    assert summary_value(result.stdout, "invalid") == "5"
    assert summary_value(result.stdout, "delivered") == "2"
    assert sorted(g.visitor_id for g in fake.goals) == ["v1", "v7"]
    failed = read_jsonl(failed_out)
    assert [{k: v for k, v in f.items() if k != "_error"} for f in failed] == [
        {"_line": "not json at all"},
        {"_line": "[1, 2]"},
        {"datafast_visitor_id": "v4", "name": "identify"},
        {"datafast_visitor_id": "v5", "name": "signup", "timestamp": "2024-01-01"},
        {"name": "nobody"},
    ]
    assert failed[0]["_error"].startswith("not JSON")
    assert "reserved" in failed[2]["_error"]
    assert "timestamp" in failed[3]["_error"]


def test_rejected_lines_go_to_failed_out_and_reimporting_it_retries_exactly_them(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    visitors = [f"visitor-{i}" for i in range(60)]
    known = set(visitors[::3])
    fake.known_visitors = known  # the others have no pageview yet: 404
    source = write_lines(
        tmp_path / "goals.jsonl", [goal_line(v, metadata={"n": i}) for i, v in enumerate(visitors)]
    )
    failed_out = tmp_path / "failed.jsonl"
    env = fake_env(fake)
    result = cli("import", str(source), "--failed-out", str(failed_out), "--no-progress", env=env)
    assert result.returncode == 1
    assert summary_value(result.stdout, "delivered") == "20"
    assert re.search(r"^\s+rejected\s+40\s+404: 40$", result.stdout, re.MULTILINE), result.stdout
    failed = read_jsonl(failed_out)
    assert sorted(f["datafast_visitor_id"] for f in failed) == sorted(set(visitors) - known)
    assert all(f["_error"].startswith("rejected: HTTP 404") for f in failed)
    assert all(f["metadata"] == {"n": visitors.index(f["datafast_visitor_id"])} for f in failed)

    fake.known_visitors = None  # the pageviews arrived: retry what is missing
    again = tmp_path / "failed-again.jsonl"
    result = cli("import", str(failed_out), "--failed-out", str(again), env=env)
    assert result.returncode == 0, result.stderr
    assert summary_value(result.stdout, "delivered") == "40"
    assert again.read_text() == ""
    assert sorted(g.visitor_id for g in fake.goals) == sorted(visitors)


def test_a_final_server_error_counts_as_failed_not_rejected(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    fake.fail_next(501)  # not retried: it will not change on retry
    source = write_lines(tmp_path / "one.jsonl", [goal_line("v1")])
    failed_out = tmp_path / "failed.jsonl"
    result = cli("import", str(source), "--failed-out", str(failed_out), env=fake_env(fake))
    assert result.returncode == 1
    assert re.search(r"^\s+failed\s+1\s+501: 1$", result.stdout, re.MULTILINE), result.stdout
    assert summary_value(result.stdout, "rejected") == "0"
    [failed] = read_jsonl(failed_out)
    assert failed["_error"].startswith("failed: HTTP 501")


@pytest.mark.parametrize(
    ("status", "words"),
    [
        pytest.param(401, "the API refused the key", id="401-wrong-key"),
        pytest.param(403, "the API refused the key", id="403"),
        pytest.param(407, "the proxy refused the request", id="407-proxy"),
    ],
)
def test_a_refused_key_stops_reading_at_once_and_accounts_for_every_line_read(
    fake: ThreadedFakeDataFast, tmp_path: Path, status: int, words: str
) -> None:
    total = 3_000
    source = write_lines(tmp_path / "goals.jsonl", [goal_line(f"v{i}") for i in range(total)])
    failed_out = tmp_path / "failed.jsonl"
    env = clean_env(DATAFAST_BASE_URL=fake.base_url)
    key = SECRET  # the fake server answers 401 to any key but its own
    if status != 401:
        key = fake.api_key
        fake.fail_next(status, times=10 * total)  # every request: a 403, or a proxy's 407
    result = cli(
        "import",
        str(source),
        "--api-key",
        key,
        "--concurrency",
        "8",
        "--no-progress",
        "--failed-out",
        str(failed_out),
        env=env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert words in result.stderr
    assert f"stopped: {words}" in result.stdout
    # The resume hint, as Ctrl-C prints it: every line before N was read, none after it.
    match = re.search(
        rf"tail -n \+(\d+) {re.escape(str(source))} \| datafast-async import -", result.stderr
    )
    assert match is not None, result.stderr
    resume_at = int(match.group(1))
    read = int(summary_value(result.stdout, "read").replace(",", ""))
    delivered = int(summary_value(result.stdout, "delivered").replace(",", ""))
    assert read == resume_at - 1
    assert 0 < read < total  # it stopped reading
    assert f"the last line read was line {read}" in result.stderr
    # --failed-out plus the delivered goals cover every line read, each once, and nothing else.
    failed = read_jsonl(failed_out)
    assert delivered == 0
    assert sorted(int(f["datafast_visitor_id"][1:]) for f in failed) == list(range(read))
    assert all(str(status) in f["_error"] for f in failed), {f["_error"] for f in failed}
    # Lines after the last one read never reached the server; the requests are bounded by the
    # lines read (the client's circuit breaker will cut them to a handful).
    requests = fake.requests
    assert all(int(r.json["datafast_visitor_id"][1:]) < read for r in requests if r.json)
    assert len(requests) <= read
    print(f"HTTP {status}: {len(requests)} requests at the server for {read} lines read")


class CircuitClient:
    """What the import sees of a client whose circuit breaker opens on a 401: goals already
    queued then fail at once, and new goals fail inside ``track()``, before it returns (their
    ``on_failure`` runs before the import could register them)."""

    def __init__(self, open_after: int) -> None:
        self.on_failure: Any = None
        self.open_after = open_after
        self.queued: list[Goal] = []
        self.emptied = asyncio.Event()
        self.refused: APIError | None = None
        if open_after == 0:
            self.refused = AuthenticationError(401, "Invalid API key")

    async def start(self) -> None:
        pass

    async def track(
        self, visitor_id: str, name: str, *, description: Any = None, metadata: Any = None
    ) -> Any:
        goal = Goal(visitor_id, name, description, metadata)
        delivery = types.SimpleNamespace(goal=goal, event=goal, error=None, done=lambda: False)
        if self.refused is not None:
            delivery.error, delivery.done = self.refused, lambda: True
            self.on_failure(goal, self.refused)
            return delivery
        self.queued.append(goal)
        if len(self.queued) == self.open_after:
            asyncio.get_running_loop().call_soon(self.open_circuit)
        return delivery

    def open_circuit(self) -> None:
        self.refused = AuthenticationError(401, "Invalid API key")
        queued, self.queued = self.queued, []
        for goal in queued:
            self.on_failure(goal, self.refused)
        self.emptied.set()

    async def flush(self, timeout: float | None = None) -> bool:
        if self.queued:
            self.emptied = asyncio.Event()
            await self.emptied.wait()
        return True

    async def aclose(self, timeout: float | None = None) -> Stats:
        queued, self.queued = self.queued, []
        for goal in queued:
            self.on_failure(goal, ShutdownError("still undelivered at the deadline"))
        return Stats()


@pytest.mark.parametrize("open_after", [0, 1, 50])
async def test_a_refused_key_accounts_for_every_line_when_the_client_fails_goals_at_once(
    tmp_path: Path, open_after: int
) -> None:
    total = 200
    text = "".join(goal_line(f"v{i}") + "\n" for i in range(total)).encode()
    client = CircuitClient(open_after)
    out, err, failed_out = io.StringIO(), io.StringIO(), io.StringIO()
    console = Console(out, err)
    job = ImportJob(
        console=console,
        source=LineSource(io.BytesIO(text), chunk_bytes=1024),
        source_name="goals.jsonl",
        failed_out=failed_out,
        failed_out_name="failed.jsonl",
        rate=None,
        live_progress=False,
    )
    client.on_failure = job.on_failure
    stats = await job.run(client)  # type: ignore[arg-type]
    code = import_report(job, stats, console)
    assert code == 2, err.getvalue()
    read = int(summary_value(out.getvalue(), "read"))
    assert 0 < read < total
    failed = [json.loads(line) for line in failed_out.getvalue().splitlines()]
    assert sorted(int(f["datafast_visitor_id"][1:]) for f in failed) == list(range(read))
    assert all("401" in f["_error"] for f in failed)
    assert f"tail -n +{read + 1} goals.jsonl | datafast-async import -" in err.getvalue()
    assert "do not add up" not in err.getvalue()


def test_rate_caps_the_goals_per_second(fake: ThreadedFakeDataFast, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "goals.jsonl", [goal_line(f"v{i}") for i in range(44)])
    result = cli("import", str(source), "--rate", "40", "--no-progress", env=fake_env(fake))
    assert result.returncode == 0, result.stderr
    seconds = float(summary_value(result.stdout, "time"))
    # A bucket of 4 goals, then 40 a second: 40 more goals take at least 1 s.
    assert 0.95 <= seconds < 10, result.stdout
    assert float(summary_value(result.stdout, "goals/s")) <= 44
    assert len(fake.goals) == 44


def test_failed_out_must_not_be_the_input_file(fake: ThreadedFakeDataFast, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "goals.jsonl", [goal_line("v1")])
    result = cli("import", str(source), "--failed-out", str(source), env=fake_env(fake))
    assert result.returncode == 2
    assert "input file" in assert_one_error_line(result)
    assert source.read_text() == goal_line("v1") + "\n"


def test_a_missing_input_file_exits_2(fake: ThreadedFakeDataFast, tmp_path: Path) -> None:
    result = cli("import", str(tmp_path / "nope.jsonl"), env=fake_env(fake))
    assert result.returncode == 2
    assert "cannot read" in assert_one_error_line(result)


@posix_only
def test_progress_is_a_bar_redrawn_in_place_on_a_terminal(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "goals.jsonl", [goal_line(f"v{i}") for i in range(20)])
    primary, secondary = os.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # the terminal closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "datafast_async", "import", str(source), "--rate", "40"],
            env=fake_env(fake),
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    finally:
        os.close(secondary)
        reader.join(RUN_TIMEOUT)
        os.close(primary)
    terminal = b"".join(chunks).decode()
    assert process.returncode == 0, terminal
    assert re.search(r"\r\[=*>? *\] +\d+%", terminal), terminal
    assert "progress:" not in terminal


@posix_only
def test_ctrl_c_delivers_or_writes_out_what_was_read_and_exits_130(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    total = 20_000
    source = write_lines(tmp_path / "big.jsonl", [goal_line(f"v{i}") for i in range(total)])
    failed_out = tmp_path / "failed.jsonl"
    fake.pause()  # requests are held: the queue fills and the import blocks on it
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datafast_async",
            "import",
            str(source),
            "--no-progress",
            "--failed-out",
            str(failed_out),
        ],
        env=fake_env(fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        stderr_lines: list[str] = []
        for line in process.stderr:  # bounded: the process is killed in finally
            stderr_lines.append(line)
            if "progress:" in line:
                break
        assert any("progress:" in line for line in stderr_lines), stderr_lines
        fake.wait_held(1)
        process.send_signal(signal.SIGINT)
        stdout, rest = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stderr = "".join(stderr_lines) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    match = re.search(r"the last line read was line (\d+)", stderr)
    assert match is not None, stderr
    last = int(match.group(1))
    assert 0 < last < total
    assert f"tail -n +{last + 1} " in stderr
    assert "interrupted" in stdout
    # Nothing was delivered (the server held every request): every line read is in the file.
    failed = read_jsonl(failed_out)
    assert sorted(int(f["datafast_visitor_id"][1:]) for f in failed) == list(range(last))
    assert all(f["_error"].startswith("interrupted") for f in failed)
    # The requests held at the server were cut in flight: DataFast may record them, and the
    # file says which (found in review: re-importing them blindly records them twice).
    held = fake.in_flight
    marked = [f for f in failed if f.get("_maybe_delivered")]
    # Every request the server holds is marked (one still on its way when the import stopped
    # is marked too: it may have arrived); the goals that were only queued are not.
    assert 0 < held <= len(marked) <= 64 < len(failed)
    assert f"{len(marked):,} of them may have been recorded already" in stderr

    # The held requests may still be recorded once released (the duplicate window): let them
    # finish, forget them, and re-import the file: exactly the lines read are delivered.
    fake.resume()
    deadline = time.monotonic() + RUN_TIMEOUT
    while fake.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    fake.reset()
    result = cli("import", str(failed_out), env=fake_env(fake))
    assert result.returncode == 0, result.stderr
    assert sorted(int(g.visitor_id[1:]) for g in fake.goals) == list(range(last))


def progress_while_held(
    fake: ThreadedFakeDataFast, *args: str, env: dict[str, str]
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """The first plain progress line of a command run while the fake holds every request,
    and the command's result once the fake answers again."""
    fake.pause()
    process = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", *args, "--no-progress"],
        env=env,
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
        progress = seen[-1] if seen and "progress:" in seen[-1] else ""
        assert progress, "".join(seen)
        fake.resume()
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        fake.resume()
        if process.poll() is None:
            process.kill()
            process.communicate()
    return progress, subprocess.CompletedProcess(
        process.args, process.returncode, out, "".join(seen) + err
    )


def test_import_progress_counts_invalid_lines_as_invalid_as_the_summary_does(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    lines = [goal_line(f"v{i}") for i in range(5)] + ["not json", json.dumps({"name": "x"})]
    source = write_lines(tmp_path / "in.jsonl", lines)
    progress, result = progress_while_held(fake, "import", str(source), env=fake_env(fake))
    assert "delivering the last 5: 0 delivered, 2 invalid, 0 failed" in progress, progress
    assert progress.startswith("datafast-async: progress: read all 7 lines")
    assert result.returncode == 1, result.stderr
    assert summary_value(result.stdout, "invalid") == "2"
    assert summary_value(result.stdout, "failed") == "0"


# -- demo and fake-server -------------------------------------------------------------------------


def test_demo_delivers_through_injected_faults_and_loses_nothing() -> None:
    result = cli("demo", "--goals", "300", "--fail-rate", "0.2", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert "nothing lost" in result.stdout
    assert summary_value(result.stdout, "sent") == "300"
    delivered = int(summary_value(result.stdout, "delivered"))
    failed = int(summary_value(result.stdout, "failed"))
    assert delivered + failed == 300
    assert int(summary_value(result.stdout, "retried")) > 0
    assert int(summary_value(result.stdout, "at the server")) == delivered


def test_demo_says_which_settings_it_ran_with() -> None:
    result = cli(
        "demo", "--goals", "50", "--fail-rate", "0.05", "--concurrency", "4", env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert "tuned for a quick demo" in result.stdout
    assert summary_value(result.stdout, "fail rate") == "5%"
    # Each setting next to the SDK's default, read from the SDK (so a new default shows).
    default = inspect.signature(DataFast).parameters["concurrency"].default
    assert re.search(
        rf"^\s+concurrency\s+4\s+ceiling of the adaptive.*\[{default}\]$", result.stdout, re.M
    )
    policy = RetryPolicy()
    assert re.search(
        rf"^\s+retry\s+6 attempts\s+.*0\.01 s.*\[{policy.max_attempts} attempts, "
        rf"{policy.initial_delay:g} s doubling to {policy.max_delay:g} s\]$",
        result.stdout,
        re.M,
    )
    assert re.search(
        rf"^\s+Retry-After\s+5 s\s+.*\[{policy.max_retry_after:g} s\]$", result.stdout, re.M
    )
    assert re.search(r'^\s+queue\s+10,000\s+.*on_full="block".*on_full="drop"', result.stdout, re.M)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["demo", "--base-url", "http://127.0.0.1:9"], id="base-url-after"),
        pytest.param(["--api-key", SECRET, "demo"], id="api-key-before"),
        pytest.param(["demo", "--website-id", "site-1", "--api-key", SECRET], id="two"),
    ],
)
def test_demo_refuses_the_settings_it_would_ignore(args: list[str]) -> None:
    result = cli(*args, "--goals", "10", env=clean_env())
    assert result.returncode == 2
    line = assert_one_error_line(result)
    assert "demo runs its own fake server" in line
    given = [a for a in args if a.startswith("--")]
    assert all(option in line for option in given), line
    assert SECRET not in result.stdout + result.stderr
    assert result.stdout == ""


@posix_only
def test_fake_server_prints_its_url_and_each_goal_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", "fake-server", "--port", "0"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match is not None, banner
        env = clean_env(DATAFAST_BASE_URL=match.group(1), DATAFAST_API_KEY="df_test")
        sent = cli("send", "visitor-9", "Big Purchase", "--metadata", "amount=49.5", env=env)
        assert sent.returncode == 0, sent.stderr
        for line in process.stdout:  # bounded: the process is killed in finally
            if line.startswith("goal 1:"):
                assert "big_purchase visitor=visitor-9" in line
                assert '"amount": "49.5"' in line
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "1 goals accepted" in out
    assert "Traceback" not in err


def test_fake_server_help_offers_no_base_url_it_serves_and_sends_nowhere() -> None:
    result = cli("fake-server", "--help", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert "--base-url" not in result.stdout
    assert "(DATAFAST_API_KEY)" not in result.stdout  # its key is df_test unless --api-key
    assert "--api-key KEY" in result.stdout
    assert "(default: df_test)" in result.stdout
    for args in (
        ["fake-server", "--base-url", "http://x"],
        ["--base-url", "http://x", "fake-server"],
    ):
        refused = cli(*args, "--port", "0", env=clean_env())
        assert refused.returncode == 2
        assert "--base-url" in assert_one_error_line(refused)


def test_demo_help_offers_none_of_the_settings_it_refuses() -> None:
    result = cli("demo", "--help", env=clean_env())
    assert result.returncode == 0, result.stderr
    for option in ("--api-key", "--website-id", "--base-url"):
        # Named in the text ("it takes no --api-key ..."), never offered as an option.
        assert f"[{option}" not in result.stdout
        assert not re.search(rf"^\s+{option}\b", result.stdout, re.MULTILINE)
    assert re.search(r"^\s+-v\b", result.stdout, re.MULTILINE)
    assert "--goals N" in result.stdout
    for args in (["demo", "--api-key", "df_x"], ["--website-id", "x.com", "demo"]):
        refused = cli(*args, env=clean_env())
        assert refused.returncode == 2
        assert args[0 if args[0] != "demo" else 1] in assert_one_error_line(refused)


# -- the parts, without a process -----------------------------------------------------------------


def test_token_bucket_hands_out_at_most_burst_plus_rate_times_elapsed() -> None:
    now = [100.0]
    bucket = TokenBucket(50, clock=lambda: now[0])
    assert bucket.burst == 5
    taken = 0
    for _ in range(2_000):  # 2,000 tries over 2 seconds of the fake clock
        if bucket.try_take() == 0:
            taken += 1
        now[0] += 0.001
    assert 5 + 50 * 2.0 - 1 <= taken <= 5 + 50 * 2.0
    assert bucket.try_take() == pytest.approx(0.02, abs=0.02)  # the wait for the next one


async def test_line_source_yields_whole_lines_however_the_reads_cut_them() -> None:
    text = b'{"a": 1}\r\n{"b": "x\\u2028y"}\n\n' + b"z" * 50 + b"\nlast line, no newline"
    source = LineSource(io.BytesIO(text), chunk_bytes=7)
    source.start()
    lines: list[bytes] = []
    while chunk := await source.next_chunk():
        lines.extend(chunk)
    assert lines == [
        b'{"a": 1}\r\n',
        b'{"b": "x\\u2028y"}\n',
        b"\n",
        b"z" * 50 + b"\n",
        b"last line, no newline",
    ]
    assert await source.next_chunk() == []


async def test_line_source_cuts_a_line_too_long_to_be_a_goal() -> None:
    text = b"x" * (MAX_LINE_BYTES + 10) + b"\nnext\n"
    source = LineSource(io.BytesIO(text))
    source.start()
    lines: list[bytes] = []
    while chunk := await source.next_chunk():
        lines.extend(chunk)
    assert lines == [b"x" * MAX_LINE_BYTES, b"next\n"]
