"""The durable spool with real processes: a restart while the API is down, ``kill -9``, two
clients and two processes on one directory, a crashed owner's files, and overflow to disk.

The API is tests/spool_server.py, a process that records each goal's ``metadata["n"]``, so
that each goal's deliveries can be counted (every goal's ``n`` is distinct). The clients that
must crash run tests/spool_child.py. Every process is bounded in time and killed in
``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datafast_async import DataFast, ShutdownError

from ._fakes import balances, until
from ._spool_processes import (
    KEY,
    VISITOR,
    child,
    client,
    deliver_all,
    free_port,
    server,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="the spool needs POSIX file locks"),
]


def goals_in(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


# -- 1. a restart while the API is down ------------------------------------------------------


@contextlib.contextmanager
def down_api(how: str) -> Iterator[str]:
    """The URL of an API that refuses connections, or of one that never answers (a socket
    that listens and never reads: requests wait in flight until the shutdown deadline)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if how == "hanging":
            sock.listen(4096)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("how", ["refusing", "hanging"])
async def test_a_restart_while_the_api_is_down_loses_no_goal_and_sends_none_twice(
    tmp_path: Path, how: str
) -> None:
    total = 2000
    failures: list[Any] = []
    with down_api(how) as down:
        first = client(down, tmp_path, on_failure=lambda goal, error: failures.append(error))
        await first.start()
        deliveries = [
            first.track_nowait(VISITOR, "signup", metadata={"n": str(i)}) for i in range(total)
        ]
        stats = await first.aclose(timeout=1.0)

    assert stats.spooled == total, stats
    assert stats.delivered == stats.failed == 0, stats
    assert balances(stats), stats
    assert failures == []
    errors = [delivery.error for delivery in deliveries]
    assert all(isinstance(error, ShutdownError) and error.spooled for error in errors), {
        repr(error) for error in errors
    }
    assert goals_in(tmp_path), "nothing journaled"

    with server() as api:
        second = client(api.url, tmp_path)
        await second.start()
        assert second.stats().enqueued == total, second.stats()
        await deliver_all(second)
        received = await api.counts()

    assert set(received) == {str(i) for i in range(total)}, "goals lost"
    assert [n for n, count in received.items() if count > 1] == [], "goals sent twice"
    assert goals_in(tmp_path) == [], "files left after every goal was delivered"


# -- 2. kill -9 while tracking steadily ------------------------------------------------------


@pytest.mark.slow
async def test_kill_9_while_tracking_loses_only_the_last_goals_accepted(
    tmp_path: Path, record_property: Any
) -> None:
    with server(latency=(0.05, 0.2)) as api:
        with child(
            "--url", api.url, "--dir", str(tmp_path), "--count", "10000", "--rate", "1000",
            "--then", "hang",
        ) as tracking:  # fmt: skip
            deadline = time.monotonic() + 30
            while len(tracking.accepted()) < 2300:  # not on a writer's step
                assert time.monotonic() < deadline, tracking.lines[-3:]
                await asyncio.sleep(0.05)
            killed_at = time.time()
            tracking.process.send_signal(signal.SIGKILL)
            tracking.kill()
            accepted = tracking.accepted()
        before_restart = await api.counts()

        restarted = client(api.url, tmp_path)
        await restarted.start()
        replayed = restarted.stats().enqueued
        await deliver_all(restarted)
        received = await api.counts()

    safe = {n for n, at in accepted.items() if at < killed_at - 0.1}
    last = {n for n, at in accepted.items() if at >= killed_at - 0.1}
    lost = set(accepted) - set(received)
    duplicated = {n for n, count in received.items() if count > 1}
    figures = {
        "accepted": len(accepted),
        "delivered_by_the_killed_process": len(before_restart),
        "replayed": replayed,
        "lost": len(lost),
        "lost_in_last_0_1_s": len(lost & last),
        "lost_more_than_0_1_s_before": len(lost & safe),
        "duplicated": len(duplicated),
        "accepted_in_last_0_1_s": len(last),
    }
    record_property("figures", figures)
    print("kill -9 figures:", figures)
    assert set(received) <= set(accepted)
    assert not lost & safe, f"goals accepted > 0.1 s before the kill were lost: {figures}"
    # A goal is sent twice only if the killed process sent it (the API received it) and its
    # acknowledgement was not on disk yet: none that the API had not seen is replayed twice.
    assert duplicated <= set(before_restart), figures
    assert all(count <= 2 for count in received.values()), figures
    assert goals_in(tmp_path) == []


# -- 3. two clients, and two processes, on one directory at once ------------------------------


async def test_two_clients_in_one_process_share_a_directory_without_sharing_a_file(
    tmp_path: Path,
) -> None:
    total = 500
    sent: dict[str, list[str]] = {"a": [], "b": []}
    with server(latency=(0.01, 0.05)) as api:
        clients = {
            name: client(
                api.url,
                tmp_path,
                on_success=lambda goal, result, name=name: sent[name].append(goal.metadata["n"]),
            )
            for name in sent
        }
        for df in clients.values():
            await df.start()
        for i in range(total):
            for name, df in clients.items():
                df.track_nowait(VISITOR, "signup", metadata={"n": f"{name}{i}"})
        files = {}
        for name, df in clients.items():
            journal = df._run.spool.journal  # type: ignore[union-attr]
            await until(lambda journal=journal: bool(journal.files))  # type: ignore[misc]
            files[name] = set(journal.files)
        assert not files["a"] & files["b"], files
        for df in clients.values():
            assert df.stats().enqueued == total, df.stats()
        await asyncio.gather(*(deliver_all(df) for df in clients.values()))
        received = await api.counts()

    for name in sent:
        assert sorted(sent[name]) == sorted(f"{name}{i}" for i in range(total))
    assert set(received) == {f"{name}{i}" for name in sent for i in range(total)}
    assert max(received.values()) == 1
    assert goals_in(tmp_path) == []


@pytest.mark.slow
async def test_two_processes_share_a_directory_each_sending_its_own_goals(
    tmp_path: Path,
) -> None:
    total = 1000
    with server(latency=(0.01, 0.05)) as api:
        args = ["--url", api.url, "--dir", str(tmp_path), "--count", str(total)]
        args += ["--rate", "1000", "--then", "close", "--close-timeout", "30"]
        with child(*args, "--prefix", "a") as first, child(*args, "--prefix", "b") as second:
            assert first.wait(60) == 0
            assert second.wait(60) == 0
            stats = [first.stats(), second.stats()]
        received = await api.counts()

    for each in stats:
        # Had one process taken over the other's file, it would have sent its goals too.
        assert each["enqueued"] == each["delivered"] == total, each
        assert each["spooled"] == each["failed"] == 0, each
    assert set(received) == {f"{p}{i}" for p in "ab" for i in range(total)}
    assert max(received.values()) == 1
    assert goals_in(tmp_path) == []


# -- 4. a crashed owner's files ----------------------------------------------------------------


@pytest.mark.slow
async def test_the_files_of_a_killed_process_are_taken_over_and_sent_once(
    tmp_path: Path,
) -> None:
    total = 1000
    down = f"http://127.0.0.1:{free_port()}"
    with child(
        "--url", down, "--dir", str(tmp_path), "--count", str(total), "--then", "journaled"
    ) as crashed:  # fmt: skip
        deadline = time.monotonic() + 30
        while not crashed.has("JOURNALED"):
            assert crashed.process.poll() is None, crashed.lines[-3:]
            assert time.monotonic() < deadline, crashed.lines[-3:]
            await asyncio.sleep(0.05)
        crashed.kill()
        assert len(crashed.accepted()) == total
    assert goals_in(tmp_path), "the killed process left no file"

    with server() as api:
        heir = client(api.url, tmp_path)
        await heir.start()
        assert heir.stats().enqueued == total, heir.stats()
        await deliver_all(heir)
        received = await api.counts()

    assert set(received) == {str(i) for i in range(total)}
    assert max(received.values()) == 1
    assert goals_in(tmp_path) == []


# -- 5. overflow to disk ------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
async def test_overflow_waits_on_disk_and_is_all_delivered_once_the_api_is_back(
    tmp_path: Path, record_property: Any
) -> None:
    total, bound = 5000, 50
    port = free_port()
    df = client(f"http://127.0.0.1:{port}", tmp_path, max_queue_size=bound, concurrency=8)
    await df.start()
    before = await asyncio.to_thread(_rss_kib)
    for i in range(total):
        df.track_nowait(VISITOR, "signup", metadata={"n": str(i)})
    stats = df.stats()
    assert stats.dropped == 0, stats
    assert stats.queued + stats.in_flight <= bound, stats
    assert stats.spooled >= total - bound, stats
    assert await df.flush(timeout=5) is False  # everything parked behind the down API
    during = await asyncio.to_thread(_rss_kib)

    with server(port=port) as api:
        deadline = time.monotonic() + 90
        while df.stats().delivered < total:
            assert time.monotonic() < deadline, df.stats()
            await asyncio.sleep(0.05)
        after = await asyncio.to_thread(_rss_kib)
        stats = await df.aclose()
        received = await api.counts()

    figures = {"rss_before_kib": before, "rss_down_kib": during, "rss_after_kib": after}
    record_property("figures", figures)
    print("overflow figures:", figures, stats)
    # Bounded: 4,950 goals wait on disk, not in memory (a generous bound against noise).
    assert during - before < 10 * 1024, figures
    assert after - before < 10 * 1024, figures
    assert (stats.delivered, stats.failed, stats.spooled) == (total, 0, 0), stats
    assert set(received) == {str(i) for i in range(total)}
    assert max(received.values()) == 1
    assert goals_in(tmp_path) == []


# -- building a client with a spool in a coroutine ---------------------------------------------


async def test_a_client_with_a_spool_is_built_and_started_in_a_coroutine(tmp_path: Path) -> None:
    # As in a lifespan: no blocking call (a getcwd() to resolve the path) in the event loop.
    df = DataFast(KEY, base_url="http://127.0.0.1:9", spool_path=tmp_path)
    await df.start()
    await df.aclose()
