"""Many processes on one spool directory while one of them is killed: four uvicorn workers
(one of them ``kill -9``-ed while the others serve; uvicorn's master starts a new worker,
whose client takes over the dead one's files), and two plain processes (the survivor never
touches the killed one's files while it runs; the next client to start takes them over).

The API is tests/spool_server.py (it records each goal's ``metadata["n"]``); the app is
tests/spool_uvicorn_app.py. Every process is bounded in time and killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ._spool_processes import KEY, VISITOR, child, client, deliver_all, free_port, server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds uvicorn's workers in /proc"),
]

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

HERE = Path(__file__).parent


def journal_files(directory: Path) -> dict[str, bytes]:
    """Every journal file in ``directory`` (not the ``.new`` ones being created) and its bytes."""
    files = {}
    for name in os.listdir(directory):
        if name.endswith(".jsonl") and not name.startswith("."):
            with contextlib.suppress(FileNotFoundError):  # deleted by its owner meanwhile
                files[name] = (directory / name).read_bytes()
    return files


def written_by(pid: int, names: Any) -> set[str]:
    """The journal files among ``names`` that process ``pid`` created (``<ns>.<ns>-<pid>-<n>``)."""
    return {name for name in names if f"-{pid}-" in name}


def children(pid: int) -> set[int]:
    """The child processes of ``pid``, from /proc."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                found.update(
                    int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                )
    return found


# -- four uvicorn workers, one killed ---------------------------------------------------------


class Uvicorn:
    """``uvicorn tests.spool_uvicorn_app:app --workers N`` in its own process group."""

    def __init__(self, workers: int, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "tests.spool_uvicorn_app:app",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(workers), "--log-level", "info",
                    "--timeout-graceful-shutdown", "20",
                ],
                cwd=str(HERE.parent),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the master and every worker
        self.process.wait(10)


@contextlib.contextmanager
def uvicorn(workers: int, env: dict[str, str], log: Path) -> Iterator[Uvicorn]:
    running = Uvicorn(workers, env, log)
    try:
        yield running
    finally:
        running.kill_all()


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(predicate: Any, timeout: float, what: str, output: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not in {timeout} s" + (f"\n{output()}" if output else "")
            )
        await asyncio.sleep(0.05)


async def test_four_uvicorn_workers_share_a_spool_and_one_killed_loses_only_its_last_goals(
    tmp_path: Path, record_property: Any
) -> None:
    total, kill_after, rate = 2000, 800, 400.0
    spool, events = tmp_path / "spool", tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k[:9] != "DATAFAST_"}
    ok: dict[str, tuple[int, float]] = {}  # n -> (the worker that answered, when: time.time())
    errors: Counter[str] = Counter()
    killed: dict[str, Any] = {}
    enough = asyncio.Event()  # kill_after requests answered: time to kill a worker

    with server(latency=(0.05, 0.2)) as api:
        env.update(
            DATAFAST_API_KEY=KEY,
            DATAFAST_BASE_URL=api.url,
            DATAFAST_SPOOL_PATH=str(spool),
            SPOOL_TEST_EVENTS=str(events),
        )
        phases = {"begin": time.monotonic()}
        with uvicorn(4, env, tmp_path / "uvicorn.log") as app:
            await wait_for(
                lambda: len([e for e in read_events(events) if e["event"] == "start"]) == 4,
                30, "four workers started", app.output,
            )  # fmt: skip
            workers = {e["pid"] for e in read_events(events)}
            assert workers <= children(app.process.pid), "the app's pids are uvicorn's workers"
            assert all(e["stats"]["enqueued"] == 0 for e in read_events(events))

            async def request(session: aiohttp.ClientSession, n: str) -> None:
                try:
                    async with session.get(app.url + "/goal", params={"n": n}) as answer:
                        if answer.status // 100 == 2:
                            ok[n] = ((await answer.json())["pid"], time.time())
                            if len(ok) >= kill_after:
                                enough.set()
                        else:
                            errors[f"HTTP {answer.status}"] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    errors[type(exc).__name__] += 1

            async def kill_one() -> None:
                await enough.wait()
                # The worker that answered the most requests so far.
                pid = Counter(p for p, _ in ok.values()).most_common(1)[0][0]
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at=time.time())
                # What the API had received when the killed worker died: only its heir may
                # send the killed worker's goals after this (it takes > 0.5 s to start).
                killed["received"] = set(await asyncio.to_thread(api.received))
                killed["files"] = written_by(pid, journal_files(spool))

            # No keep-alive: each request is a new connection, spread over the workers.
            connector = aiohttp.TCPConnector(force_close=True, limit=64)
            timeout = aiohttp.ClientTimeout(total=15)
            phases["started"] = time.monotonic()
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                killer = asyncio.create_task(kill_one())
                loop = asyncio.get_running_loop()
                began = loop.time()
                tasks = []
                for i in range(total):
                    await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
                    tasks.append(asyncio.create_task(request(session, str(i))))
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                await asyncio.wait_for(killer, 5)

            def heir_started() -> bool:
                return any(
                    e["event"] == "start" and e["at"] > killed["at"] for e in read_events(events)
                )

            phases["answered"] = time.monotonic()
            await wait_for(heir_started, 30, "a new worker started", app.output)
            phases["heir"] = time.monotonic()
            received_before_stop = set(await asyncio.to_thread(api.received))
            app.process.send_signal(signal.SIGTERM)  # graceful: every lifespan runs aclose()
            code = await asyncio.to_thread(app.process.wait, 40)
            assert code == 0, app.output()
            assert not children(app.process.pid)
            phases["stopped"] = time.monotonic()
        received = Counter(await asyncio.to_thread(api.received))

    log = read_events(events)
    starts = {e["pid"]: e for e in log if e["event"] == "start"}
    stops = {e["pid"]: e for e in log if e["event"] == "stop"}
    heirs = [pid for pid, e in starts.items() if e["at"] > killed["at"]]
    killed_pid, killed_at = killed["pid"], killed["at"]
    of_killed = {n: at for n, (pid, at) in ok.items() if pid == killed_pid}
    safe = {n for n, at in of_killed.items() if at < killed_at - 0.1}
    lost = set(ok) - set(received)
    duplicated = {n for n, count in received.items() if count > 1}
    figures = {
        "requests": total,
        "answered_2xx": len(ok),
        "request_errors": dict(errors),
        "per_worker_2xx": dict(Counter(pid for pid, _ in ok.values())),
        "killed_worker": killed_pid,
        "killed_worker_2xx": len(of_killed),
        "killed_worker_2xx_in_last_0_1_s": len(of_killed) - len(safe),
        "killed_worker_files_at_kill": len(killed["files"]),
        "killed_goals_received_before_kill": len(set(of_killed) & killed["received"]),
        "killed_goals_unsent_at_kill_delivered_later": len(
            (set(of_killed) - killed["received"]) & set(received)
        ),
        "heirs": {pid: starts[pid]["stats"]["enqueued"] for pid in heirs},
        "delivered": len(set(received)),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "stops": {pid: e["stats"] for pid, e in stops.items()},
        "received_before_stop": len(received_before_stop),
        "seconds": {
            phase: round(at - phases["begin"], 1)
            for phase, at in phases.items()
            if phase != "begin"
        },
    }
    record_property("figures", figures)
    print("uvicorn figures:", json.dumps(figures, indent=1))

    assert killed_pid in workers
    assert killed["files"], f"the killed worker had no file in the spool: {figures}"
    # uvicorn's master started one new worker, and its client took the killed one's goals.
    assert len(heirs) == 1, figures
    (heir,) = heirs
    assert starts[heir]["stats"]["enqueued"] > 0, figures
    # Goals that waited in the killed worker's queue (the API never saw them) were sent by it.
    assert safe - killed["received"], f"no goal was waiting in the killed worker: {figures}"
    assert set(received) <= {str(i) for i in range(total)}
    # Every goal answered with a 2xx was delivered, but those the killed worker accepted in
    # its last ~0.1 s (not journaled yet).
    assert not lost - set(of_killed), f"goals of live workers lost: {figures}"
    assert not lost & safe, f"goals accepted > 0.1 s before the kill were lost: {figures}"
    # Sent twice: only goals of the killed worker that the API had already received (a
    # request cut by the kill has no answer: its goal may be the killed worker's too).
    of_others = {n for n, (pid, _) in ok.items() if pid != killed_pid}
    assert not duplicated & of_others, figures
    assert duplicated <= killed["received"], figures
    assert max(received.values()) <= 2, figures
    # Every worker that stopped gracefully delivered everything it held (the heir: what it
    # took over too), and the directory is empty.
    assert set(stops) == (workers - {killed_pid}) | {heir}, figures
    for pid, e in stops.items():
        stats = e["stats"]
        assert stats["failed"] == stats["dropped"] == stats["spooled"] == 0, (pid, stats)
        assert stats["delivered"] == stats["enqueued"], (pid, stats)
    assert sum(e["stats"]["enqueued"] for e in stops.values()) == (
        len(ok) - len(of_killed) + starts[heir]["stats"]["enqueued"]
    ), figures
    assert sorted(os.listdir(spool)) == [], "files left in the spool"


# -- two processes, one killed while the other runs --------------------------------------------


@pytest.mark.parametrize("taker", ["a third client", "the survivor, restarted"])
async def test_a_live_client_leaves_a_killed_process_files_alone_until_a_client_starts(
    tmp_path: Path, taker: str, record_property: Any
) -> None:
    total = 500
    down = f"http://127.0.0.1:{free_port()}"
    tracked: list[str] = []
    with server(latency=(0.01, 0.05)) as api:
        # Small files: the survivor creates, rotates and deletes its own files as it runs.
        survivor = client(
            api.url,
            tmp_path,
            _spool_options={"write_interval": 0.02, "sync_interval": 0.2, "segment_bytes": 4096},
        )
        await survivor.start()

        async def track_steadily() -> None:
            for i in range(100_000):
                tracked.append(f"s{i}")
                survivor.track_nowait(VISITOR, "signup", metadata={"n": f"s{i}"})
                await asyncio.sleep(0.005)

        steady = asyncio.create_task(track_steadily())
        try:
            with child(
                "--url", down, "--dir", str(tmp_path), "--count", str(total),
                "--prefix", "k", "--then", "journaled",
            ) as doomed:  # fmt: skip
                deadline = time.monotonic() + 30
                while not doomed.has("JOURNALED"):
                    assert doomed.process.poll() is None, doomed.lines[-3:]
                    assert time.monotonic() < deadline, doomed.lines[-3:]
                    await asyncio.sleep(0.05)
                doomed.kill()
                pid = doomed.process.pid
            orphans = await asyncio.to_thread(journal_files, tmp_path)
            orphans = {name: data for name, data in orphans.items() if f"-{pid}-" in name}
            assert orphans, "the killed process left no file"

            # The survivor runs on (tracking, delivering, rotating its own files) until it has
            # delivered 100 more goals while the dead one's files lie there unlocked.
            delivered_then = survivor.stats().delivered
            deadline = time.monotonic() + 15
            while survivor.stats().delivered <= delivered_then + 100:
                assert time.monotonic() < deadline, survivor.stats()
                await asyncio.sleep(0.05)
            now = await asyncio.to_thread(journal_files, tmp_path)
            assert {name: now.get(name) for name in orphans} == orphans, "the survivor touched them"
            survivor_stats = survivor.stats()
            assert survivor_stats.enqueued == len(tracked), survivor_stats  # took over nothing
            received = await api.counts()
            assert not [n for n in received if n.startswith("k")], "killed goals sent"
            assert written_by(pid, survivor._run.spool.journal.files) == set()  # type: ignore[union-attr]

            if taker == "a third client":
                heir = client(api.url, tmp_path)
                await heir.start()
                assert heir.stats().enqueued == total, heir.stats()
            else:
                steady.cancel()
                await deliver_all(survivor)
                heir = survivor
                enqueued_before = len(tracked)
                await heir.start()
                assert heir.stats().enqueued == total, (enqueued_before, heir.stats())
            steady.cancel()
            await deliver_all(heir)
            if heir is not survivor:
                await deliver_all(survivor)
            received = await api.counts()
        finally:
            steady.cancel()
            await survivor.aclose(timeout=1)

    figures = {
        "killed_goals": total,
        "killed_files": len(orphans),
        "survivor_goals": len(tracked),
        "received": sum(received.values()),
    }
    record_property("figures", figures)
    print(f"{taker} figures:", figures)
    assert set(received) == {f"k{i}" for i in range(total)} | set(tracked)
    assert max(received.values()) == 1
    assert sorted(os.listdir(tmp_path)) == []
