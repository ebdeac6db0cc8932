"""``datafast_async.workers.celery`` in a real ``celery worker`` on 127.0.0.1 (the app is
tests/workers_celery_app.py), with a real redis-server as the broker,
sending to a ``ThreadedFakeDataFast`` in the test's process: the prefork pool's children each
deliver their tasks' goals once, a task ends only after its flush, and a worker stopped or
killed while goals are queued delivers them, keeps them in the spool for the next worker, or
says them in its log: nothing silent. The threads and solo pools (no fork) too."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._redis import redis_server
from ._sync_workers import (
    WorkerProcess,
    fake_server,
    readme_block,
    spooled_records,
    wait_until,
    worker_env,
)

# Real worker processes: a slow proof, run on the newest Python only in CI.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

celery = pytest.importorskip("celery", reason="the celery extra is not installed")

DELIVERY_TIMEOUT = 15.0  # seconds for the goals of a few tasks to reach the fake

# The shutdown WARNING of one client: "4 requests (3 goals, 1 payment) were still undelivered
# at the shutdown deadline (1 s): ..."
UNDELIVERED = re.compile(
    r"(\d+) requests \((\d+) goals?, (\d+) payments?\) (?:was|were) still undelivered at the "
    r"shutdown deadline \([\d.]+ s\): ([^\n]*)"
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (skipped, saying so, without one): its URL."""
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture
def sender(broker: str) -> Iterator[Any]:
    """A Celery app of the sending side (the test's process), on the worker's Redis (no result
    backend: what a task did is read at the fake DataFast)."""
    from kombu.exceptions import VersionMismatch

    app = celery.Celery("sender", broker=broker)
    app.conf.broker_connection_retry_on_startup = True
    try:
        with app.connection_for_write() as connection:
            connection.default_channel  # noqa: B018  (the transport's checks run here)
    except VersionMismatch as exc:
        pytest.skip(f"kombu's Redis transport refuses the installed redis-py: {exc}")
    try:
        yield app
    finally:
        app.close()


def celery_worker(
    tmp_path: Path, name: str, env: dict[str, str], pool: str = "prefork"
) -> WorkerProcess:
    concurrency = "1" if pool == "solo" else "2"
    argv = [
        "celery",
        "-A",
        "tests.workers_celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{name}@127.0.0.1",
    ]
    return WorkerProcess(argv, env, tmp_path / f"{name}.log", ready=f"{name}@127.0.0.1 ready.")


def active(sender: Any, name: str) -> set[str]:
    """The ids of the tasks the worker runs now (Celery's remote control: ``inspect``)."""
    replies = sender.control.inspect(destination=[f"{name}@127.0.0.1"], timeout=1.0).active()
    return {task["id"] for tasks in (replies or {}).values() for task in tasks}


def meta(goal: Any, key: str) -> str:
    value: str = (goal.metadata or {})[key]
    return value


def keys(goals: list[Any]) -> list[str]:
    """``"<batch>/<i>"`` of each goal, sorted: a goal twice shows twice."""
    return sorted(f"{meta(g, 'batch')}/{meta(g, 'i')}" for g in goals)


def undelivered(log: str) -> tuple[int, int, list[str]]:
    """The goals and payments the shutdown WARNINGs in ``log`` count, and what they say."""
    found = UNDELIVERED.findall(log)
    return (
        sum(int(g) for _, g, _, _ in found),
        sum(int(p) for _, _, p, _ in found),
        [said for *_, said in found],
    )


def goals_and_payments(fake: Any, goals: int, payments: int) -> None:
    """Wait until the fake has ``goals`` goals and ``payments`` payments (or more: then the
    test's own checks say what came twice)."""
    wait_until(
        lambda: len(fake.goals) >= goals and len(fake.payments) >= payments,
        DELIVERY_TIMEOUT,
        f"{goals} goals and {payments} payments at the fake",
    )
    time.sleep(0.3)  # room for a duplicate to show


def test_prefork_children_deliver_each_goal_once_and_a_task_ends_after_its_flush(
    tmp_path: Path, broker: str, sender: Any
) -> None:
    with fake_server() as fake:
        env = worker_env(fake, broker, FLUSH_TIMEOUT="20")
        with celery_worker(tmp_path, "w1", env) as worker:
            for batch in range(8):
                sender.send_task("track", args=(batch, 3, True, 0.3))
            goals_and_payments(fake, 24, 8)
            goals = fake.goals
            assert keys(goals) == sorted(f"{b}/{i}" for b in range(8) for i in range(3))
            assert sorted(p.transaction_id for p in fake.payments) == sorted(
                f"ch_{b}" for b in range(8)
            )
            children = {meta(g, "pid") for g in goals}
            assert len(children) == 2  # both prefork children ran tasks
            assert str(worker.pid) not in children

            # A task whose goal the API holds is not done: the child waits in the flush.
            fake.pause()
            held = sender.send_task("track", args=(100, 1, False, 0))
            fake.wait_held(1, timeout=10)
            time.sleep(0.3)
            assert held.id in active(sender, "w1")
            fake.resume()
            wait_until(lambda: held.id not in active(sender, "w1"), 10, "the task's end")
            # Once the worker is done with the task, its goal is at the API.
            assert [g for g in fake.goals if meta(g, "batch") == "100"]
            assert worker.stop() == 0
    log = worker.text()
    assert "did not end within" not in log
    assert "still undelivered" not in log
    assert len(fake.goals) == 25


def test_stopped_with_goals_held_by_the_api_the_shutdown_warning_says_them(
    tmp_path: Path, broker: str, sender: Any
) -> None:
    with fake_server() as fake:
        env = worker_env(fake, broker, FLUSH_TIMEOUT="1", CLOSE_TIMEOUT="1")
        with celery_worker(tmp_path, "w1", env) as worker:
            sender.send_task("track", args=(1, 2, True, 0))
            goals_and_payments(fake, 2, 1)
            fake.pause()  # the API hangs from now on
            second = sender.send_task("track", args=(2, 3, True, 0))
            worker.wait_for(f"the flush after task track[{second.id}] did not end within 1 s", 10)
            started = time.monotonic()
            assert worker.stop() == 0  # SIGTERM: a warm shutdown
            took = time.monotonic() - started
            # Delivered: the first task's; the second's were held by the API, never recorded.
            assert sorted(meta(g, "batch") for g in fake.goals) == ["1", "1"]
            assert [p.transaction_id for p in fake.payments] == ["ch_1"]
    goals, payments, said = undelivered(worker.text())
    assert (goals, payments) == (3, 1), worker.text()
    assert all("failed with ShutdownError" in text for text in said)
    assert took < 10  # the close's 1 s deadline, its grace, and Celery's own shutdown


def test_stopped_with_a_spool_the_next_worker_delivers_what_was_kept_each_once(
    tmp_path: Path, broker: str, sender: Any
) -> None:
    spool = tmp_path / "spool"
    with fake_server() as fake:
        env = worker_env(fake, broker, spool, FLUSH_TIMEOUT="1", CLOSE_TIMEOUT="1")
        with celery_worker(tmp_path, "w1", env) as worker:
            fake.pause()
            tasks = [sender.send_task("track", args=(b, 3, True, 0.2)) for b in (1, 2)]
            wait_until(lambda: spooled_records(spool) >= 8, 10, "the journal's writes")
            worker.wait_for("did not end within 1 s", 10)
            wait_until(lambda: not {t.id for t in tasks} & active(sender, "w1"), 10, "the flushes")
            assert worker.stop() == 0
            assert fake.goals == []
            assert fake.payments == []
    goals, payments, said = undelivered(worker.text())
    assert (goals, payments) == (6, 2), worker.text()
    assert all("kept in the spool at" in text for text in said)

    # The next worker (a new API process: the first one's held requests died with it) sends
    # what the spool kept as its children start, with no task to run.
    with (
        fake_server() as fake,
        celery_worker(tmp_path, "w2", worker_env(fake, broker, spool)) as second,
    ):
        goals_and_payments(fake, 6, 2)
        assert keys(fake.goals) == sorted(f"{b}/{i}" for b in (1, 2) for i in range(3))
        assert sorted(p.transaction_id for p in fake.payments) == ["ch_1", "ch_2"]
        assert second.stop() == 0
    assert "still undelivered" not in second.text()


def test_killed_with_a_spool_the_next_worker_delivers_what_was_on_disk(
    tmp_path: Path, broker: str, sender: Any
) -> None:
    spool = tmp_path / "spool"
    with fake_server() as fake:
        env = worker_env(fake, broker, spool, FLUSH_TIMEOUT="20")
        with celery_worker(tmp_path, "w1", env) as worker:
            fake.pause()
            # Each child blocks in its flush: the two tasks run in the two children, each
            # journaling in its own files of the one spool directory.
            for batch in (1, 2):
                sender.send_task("track", args=(batch, 5, True, 0))
            wait_until(lambda: spooled_records(spool) >= 12, 10, "the journal's writes")
            worker.kill()  # SIGKILL to the worker and its children
            assert fake.goals == []
            assert fake.payments == []

    with (
        fake_server() as fake,
        celery_worker(tmp_path, "w2", worker_env(fake, broker, spool)) as second,
    ):
        goals_and_payments(fake, 10, 2)
        goals = fake.goals
        assert keys(goals) == sorted(f"{b}/{i}" for b in (1, 2) for i in range(5))
        assert len({meta(g, "pid") for g in goals}) == 2  # the first worker's two children
        assert sorted(p.transaction_id for p in fake.payments) == ["ch_1", "ch_2"]
        assert second.stop() == 0
    assert "still undelivered" not in second.text()


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_the_threads_and_solo_pools_run_one_client_in_the_worker_and_close_it(
    tmp_path: Path, broker: str, sender: Any, pool: str
) -> None:
    with fake_server() as fake:
        env = worker_env(fake, broker, FLUSH_TIMEOUT="1", CLOSE_TIMEOUT="1")
        with celery_worker(tmp_path, "w1", env, pool=pool) as worker:
            # One task at a time: with both of the threads pool's slots reserved, Celery 5.4
            # over Redis takes its next message up to ~10 s late (with or without this SDK).
            for batch in range(4):
                sender.send_task("track", args=(batch, 2, True, 0))
                goals_and_payments(fake, 2 * batch + 2, batch + 1)
            assert keys(fake.goals) == sorted(f"{b}/{i}" for b in range(4) for i in range(2))
            # No fork: the tasks ran in the worker's own process.
            assert {meta(g, "pid") for g in fake.goals} == {str(worker.pid)}
            fake.pause()
            sender.send_task("track", args=(9, 1, False, 0))
            worker.wait_for("did not end within 1 s", 10)
            assert worker.stop() == 0
    # The close at worker_shutdown said the goal the API held.
    assert "1 goal was still undelivered at the shutdown deadline (1 s)" in worker.text()


def test_the_readmes_recipe_runs_as_pasted(tmp_path: Path, broker: str, sender: Any) -> None:
    (tmp_path / "tasks.py").write_text(readme_block("Celery"), encoding="utf-8")
    argv = ["celery", "-A", "tasks", "worker", "--loglevel=INFO", "-n", "readme@127.0.0.1"]
    with fake_server() as fake:
        env = worker_env(fake, broker)
        ready = "readme@127.0.0.1 ready."
        with WorkerProcess(argv, env, tmp_path / "readme.log", ready, cwd=tmp_path) as worker:
            done = subprocess.run(
                [sys.executable, "tasks.py"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == ["done: both tasks ran"]
            goals_and_payments(fake, 2, 1)
            assert sorted(g.name for g in fake.goals) == ["invoice_paid", "signup_confirmed"]
            assert [p.transaction_id for p in fake.payments] == ["in_1001"]
            assert worker.stop() == 0
    assert "WARNING" not in worker.text().split("ready.", 1)[1]


# -- the module's surface, in the test's process -------------------------------------------


def test_without_celery_the_import_error_names_the_extra() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['celery'] = None; import datafast_async.workers.celery",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'datafast-async[celery]'" in done.stderr


def test_setup_is_once_per_process_and_checks_its_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datafast_async import ConfigurationError
    from datafast_async.workers import celery as integration

    monkeypatch.setattr(integration, "_process", None)
    with pytest.raises(RuntimeError, match="call setup_celery"):
        integration.client()
    with pytest.raises(ConfigurationError, match="flush_timeout"):
        integration.setup_celery(flush_timeout=-1)
    with pytest.raises(ConfigurationError, match="unknown DataFast settings: spool"):
        integration.setup_celery(spool="/tmp/x")
    integration.setup_celery(api_key="df_test", enabled=False)
    with pytest.raises(RuntimeError, match="called already"):
        integration.setup_celery()
    assert integration.client() is integration.client()  # one per process


def test_a_timed_out_flush_is_said_at_once_then_at_most_once_a_minute_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datafast_async import RetryPolicy
    from datafast_async.workers._per_process import PerProcess

    with fake_server() as fake:
        process = PerProcess(
            {
                "api_key": fake.api_key,
                "base_url": fake.base_url,
                "retry": RetryPolicy(initial_delay=0, max_delay=0),
            }
        )
        assert process.flush("task a[1]", 0.1) is True  # nothing built: nothing to flush
        fake.pause()
        process.client().track_nowait("v1", "signup")
        with caplog.at_level("WARNING", logger="datafast_async.workers"):
            assert process.flush("task a[2]", 0.1) is False
            assert process.flush("task a[3]", 0.1) is False
        said = [r.getMessage() for r in caplog.records if r.name == "datafast_async.workers"]
        assert len(said) == 1
        assert said[0].startswith("the flush after task a[2] did not end within 0.1 s: 1 ")
        fake.resume()
        stats = process.close(5)
        assert stats is not None
        assert stats.delivered == 1
        assert process.flush("task a[4]", 0.1) is True  # closed: nothing left to flush
