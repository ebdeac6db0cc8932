"""Fork safety (gunicorn ``--preload``): a process forked from one whose client was in use never
sends, shares or closes the parent's goals and session, says so once, and starts afresh.

The fork happens in a script run as a subprocess (never in the test process), against a fake
DataFast on a thread of the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from datafast_async.testing import ThreadedFakeDataFast

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only: os.fork"),
]

_SCRIPT = r"""
import asyncio, json, logging, os, signal, sys, time
from datafast_async import DataFast

base_url, api_key, mode = sys.argv[1:4]
lines = []


class Keep(logging.Handler):
    def emit(self, record):
        lines.append([record.levelname, record.getMessage()])


logging.getLogger("datafast_async").addHandler(Keep())


def stats_of(stats):
    return {name: getattr(stats, name) for name in ("enqueued", "delivered", "failed", "retries")}


df = DataFast(api_key, base_url=base_url, concurrency=2, timeout=5)
loop = asyncio.new_event_loop()
if mode == "started":

    async def warm():
        await df.start()
        await df.track_nowait("v", "warm").wait(5)  # a keep-alive connection in the pool

    loop.run_until_complete(warm())
elif mode == "lazy":

    async def warm():
        await df.track_nowait("v", "warm").wait(5)  # started lazily by its first goal

    loop.run_until_complete(warm())
# mode "new": no event loop ran yet; the goals below wait in the queue for start().
parents = [df.track_nowait("v", f"parent{i}") for i in range(20)]  # queued, not sent
assert df.stats().queued == 20, df.stats()
del lines[:]

pid = os.fork()
if pid == 0:  # the child, as a gunicorn worker: it exits normally (sys.exit)
    signal.alarm(30)

    async def child():
        children = [df.track_nowait("v", f"child{i}") for i in range(5)]
        stats = await df.aclose()
        return all(d.result is not None for d in children), stats

    delivered, stats = asyncio.run(child())
    print(json.dumps({"role": "child", "delivered": delivered, "stats": stats_of(stats),
                      "logs": lines}), flush=True)
    sys.exit(0)

deadline = time.monotonic() + 30
while True:
    reaped, status = os.waitpid(pid, os.WNOHANG)
    if reaped:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit("the forked child did not exit in 30 s")
    time.sleep(0.01)


async def finish():
    session_open = mode == "new" or not df._run.transport.session.closed
    after = df.track_nowait("v", "parent_after")
    stats = await df.aclose()
    return session_open, all(d.result is not None for d in [*parents, after]), stats


session_open, delivered, stats = loop.run_until_complete(finish())
loop.close()
print(json.dumps({"role": "parent", "child_exit": os.waitstatus_to_exitcode(status),
                  "session_open": session_open, "delivered": delivered,
                  "stats": stats_of(stats), "logs": lines}), flush=True)
"""


def run_forking_script(fake: ThreadedFakeDataFast, mode: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, fake.base_url, fake.api_key, mode],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["role"] for r in reports] == ["child", "parent"]  # the child ends first
    return {r["role"]: r for r in reports}


def forked_lines(report: dict[str, Any]) -> list[str]:
    return [message for _, message in report["logs"] if "forked" in message]


@pytest.mark.parametrize("mode", ["new", "lazy", "started"])
def test_a_forked_child_never_sends_its_parents_goals(mode: str) -> None:
    """Modes: the parent's client never started (goals handed over before start), started
    lazily by a goal, or started with start(); 20 goals queued in it at the fork."""
    with ThreadedFakeDataFast() as fake:
        reports = run_forking_script(fake, mode)
        names = [goal.name for goal in fake.goals]
    child, parent = reports["child"], reports["parent"]
    warm = [] if mode == "new" else ["warm"]
    parents = [f"parent{i}" for i in range(20)] + ["parent_after"]
    children = [f"child{i}" for i in range(5)]

    # The child: its own goals only, from its own fresh client; the parent's said once.
    assert child["delivered"] is True
    assert child["stats"] == {"enqueued": 5, "delivered": 5, "failed": 0, "retries": 0}
    said = forked_lines(child)
    assert len(said) == 1
    assert "(20 goals pending there)" in said[0]
    assert "not sent from here" in said[0]
    assert [level for level, m in child["logs"] if "forked" in m] == ["WARNING"]

    # The parent: after the child exited, every goal of its own delivered on its own session,
    # at the first attempt.
    assert parent["child_exit"] == 0
    assert parent["session_open"] is True
    assert parent["delivered"] is True
    assert parent["stats"] == {
        "enqueued": len(warm) + 21,
        "delivered": len(warm) + 21,
        "failed": 0,
        "retries": 0,
    }
    assert forked_lines(parent) == []

    # The server: each goal once; the parent's were all recorded after the child's (the
    # parent's loop did not run until the child had exited), so none came from the child.
    assert Counter(names) == Counter(warm + parents + children)
    last_child = max(names.index(name) for name in children)
    first_parent = min(names.index(name) for name in parents)
    assert last_child < first_parent


_LOCK_SCRIPT = r"""
import os, sys, threading, time
from datafast_async import DataFast

df = DataFast("df_fork_lock_test_key", base_url="http://127.0.0.1:9")
for i in range(50):
    df.track_nowait("v", "queued")  # before start: held by the client
stop = False


def poll():  # a metrics exporter reading stats() all the time
    while not stop:
        df.stats()


thread = threading.Thread(target=poll)
thread.start()
hung = 0
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the at-fork hook ran before this line
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        hung += 1
        os.kill(pid, 9)
        os.waitpid(pid, 0)
stop = True
thread.join()
print(hung)
"""


def test_a_fork_while_another_thread_reads_the_stats_never_hangs_the_child() -> None:
    """The child's at-fork hook takes the queue's lock; a thread of the parent may have held it
    at the fork. The hook gives the child new locks first."""
    done = subprocess.run(
        [sys.executable, "-c", _LOCK_SCRIPT, "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "0", done.stderr
