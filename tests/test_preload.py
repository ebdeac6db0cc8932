"""A gunicorn ``--preload`` master: the app's module, imported once in the master, tracks a goal
at import (no event loop runs there, the client is never started), then the master forks its
workers, each starting a client of its own, and exits at the end. That goal must reach one
end: with a spool, the master journals it (at the fork) for the workers, and it is recorded
exactly once; without one, the master's ``on_failure`` gets it at exit with a
``ShutdownError`` saying the client was never started there.

The master is a script run as a subprocess (never a fork of the test process), against a
``ThreadedFakeDataFast`` on a thread of the test process, as in ``test_fork.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datafast_async import DataFast, Stats
from datafast_async.testing import ThreadedFakeDataFast

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only: os.fork"),
]

_MASTER = r"""
import atexit, json, logging, os, signal, sys, time

base_url, api_key, spool, callback = sys.argv[1:5]
lines = []
failures = []


def say(report):  # one write: the workers write to the same pipe at the same time
    os.write(1, (json.dumps(report) + "\n").encode())


def report():  # registered before the SDK's exit hook: runs after it
    say({"role": "exit", "logs": lines, "failures": failures})


atexit.register(report)

import asyncio
from datafast_async import DataFast


class Keep(logging.Handler):
    def emit(self, record):
        lines.append([record.levelname, record.getMessage()])


logging.getLogger("datafast_async").addHandler(Keep())


def on_failure_sync(goal, error):
    failures.append([goal.name, type(error).__name__, str(error), error.spooled])


async def on_failure_async(goal, error):
    await asyncio.sleep(0.01)  # it runs to its end
    on_failure_sync(goal, error)


kwargs = {"spool_path": spool, "_spool_options": {"write_interval": 0.01}} if spool else {}
df = DataFast(
    api_key,
    base_url=base_url,
    timeout=5,
    on_failure={"sync": on_failure_sync, "async": on_failure_async}[callback],
    **kwargs,
)
# The app's module, imported in the master: tracked at import, no event loop.
at_import = df.track_nowait("v", "at_import")

children = []
for n in range(2):  # the workers
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)
        del lines[:]

        async def worker():
            async with df:  # the app's lifespan
                own = df.track_nowait("v", f"worker{n}")
                await own.wait(10)
                await df.flush(10)
            return df.stats()

        stats = asyncio.run(worker())
        say({"role": f"worker{n}", "delivered": stats.delivered, "failed": stats.failed,
             "logs": lines})
        os._exit(0)  # a worker's own exit (its client is closed)
    children.append(pid)

statuses = []
deadline = time.monotonic() + 30
for pid in children:
    while True:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            statuses.append(os.waitstatus_to_exitcode(status))
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            sys.exit("a worker did not exit in 30 s")
        time.sleep(0.01)

error = at_import.error
stats = df.stats()
say({
    "role": "master",
    "exits": statuses,
    "error": None if error is None else [type(error).__name__, str(error), error.spooled],
    "stats": {"enqueued": stats.enqueued, "queued": stats.queued, "spooled": stats.spooled,
              "failed": stats.failed},
})
# The master exits normally (gunicorn's master at shutdown): the SDK's exit hook runs.
"""


def run_master(
    fake: ThreadedFakeDataFast, spool: Path | None, callback: str = "sync"
) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", _MASTER, fake.base_url, fake.api_key, str(spool or ""), callback],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    reports = {}
    for line in done.stdout.splitlines():
        report = json.loads(line)
        reports[report["role"]] = report
    assert set(reports) == {"worker0", "worker1", "master", "exit"}, done.stdout
    assert reports["master"]["exits"] == [0, 0]
    return reports


def test_a_goal_tracked_in_a_preload_master_with_a_spool_is_recorded_once(
    tmp_path: Path,
) -> None:
    """With a spool: the goal tracked at import in the master goes to the spool at the fork;
    one worker takes it over and sends it; it is recorded exactly once. The master's
    Delivery says it is kept in the spool (ShutdownError.spooled), nothing reaches its
    on_failure, and its exit says no goal lost."""
    with ThreadedFakeDataFast() as fake:
        reports = run_master(fake, tmp_path / "spool")
        names = Counter(goal.name for goal in fake.goals)
    assert names == Counter({"at_import": 1, "worker0": 1, "worker1": 1})
    master, at_exit = reports["master"], reports["exit"]
    assert master["error"] is not None
    kind, message, spooled = master["error"]
    assert (kind, spooled) == ("ShutdownError", True)
    assert "never started" in message
    assert master["stats"] == {"enqueued": 1, "queued": 0, "spooled": 1, "failed": 0}
    assert at_exit["failures"] == []
    assert not [m for _, m in at_exit["logs"] if "lost" in m]
    # One worker sent it (taken over from the spool), the other had nothing to take.
    workers = [reports["worker0"], reports["worker1"]]
    assert sorted(w["delivered"] for w in workers) == [1, 2]
    assert all(w["failed"] == 0 for w in workers)
    # Neither worker says the master's goal stays the master's: it is theirs to send.
    assert not [m for w in workers for _, m in w["logs"] if "forked" in m]
    assert os.listdir(tmp_path / "spool") == []  # delivered: every file deleted


@pytest.mark.parametrize("callback", ["sync", "async"])
def test_a_goal_tracked_in_a_preload_master_without_a_spool_reaches_on_failure(
    callback: str,
) -> None:
    """Without a spool: the goal is never sent (the workers start afresh, the master never
    starts its client); at the master's exit its on_failure gets it (a sync callback called
    directly, an async one run to its end) with a ShutdownError saying why, and one WARNING
    counts it."""
    with ThreadedFakeDataFast() as fake:
        reports = run_master(fake, None, callback)
        names = Counter(goal.name for goal in fake.goals)
    assert names == Counter({"worker0": 1, "worker1": 1})
    at_exit = reports["exit"]
    assert len(at_exit["failures"]) == 1
    name, kind, message, spooled = at_exit["failures"][0]
    assert (name, kind, spooled) == ("at_import", "ShutdownError", False)
    assert "never sent" in message
    assert "never started in this process" in message
    warnings = [m for level, m in at_exit["logs"] if level == "WARNING"]
    assert len(warnings) == 1
    assert "1 goal still pending" in warnings[0]


_EXITS = r"""
import sys
from datafast_async import DataFast

base_url, api_key, spool = sys.argv[1:4]
visitor = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
df = DataFast(api_key, base_url=base_url, spool_path=spool)
# Tracked at import; the process exits without ever starting the client (no fork).
deliveries = [
    df.track_nowait(visitor, "at_import"),
    df.track_payment_nowait(9.5, "usd", "tx_at_import", visitor_id=visitor),
    df.identify_nowait(visitor, "user_at_import"),
]
"""


def test_requests_of_a_process_that_never_started_its_client_are_sent_by_the_next_start(
    tmp_path: Path,
) -> None:
    """With a spool and no fork: a process whose client never started journals what it
    accepted at exit (one WARNING, nothing said lost); the next client to start with that key
    sends each once, every kind to its own endpoint."""
    spool = tmp_path / "spool"

    async def next_start(fake: ThreadedFakeDataFast) -> Stats:
        df = DataFast(fake.api_key, base_url=fake.base_url, spool_path=spool)
        await df.start()
        assert await df.flush(timeout=10) is True
        return await df.aclose()

    with ThreadedFakeDataFast() as fake:
        done = subprocess.run(
            [sys.executable, "-c", _EXITS, fake.base_url, fake.api_key, str(spool)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "kept in the spool" in done.stderr
        assert "3 requests (1 goal, 1 payment, 1 identify)" in done.stderr
        assert "lost" not in done.stderr
        assert len(os.listdir(spool)) == 1
        assert fake.goals == []
        stats = asyncio.run(next_start(fake))
        goals = [goal.name for goal in fake.goals]
        payments = [payment.transaction_id for payment in fake.payments]
        identities = [identity.user_id for identity in fake.identities]
    assert (goals, payments, identities) == (["at_import"], ["tx_at_import"], ["user_at_import"])
    assert (stats.enqueued, stats.delivered, stats.failed) == (3, 3, 0)
    assert os.listdir(spool) == []
