"""``datafast_async.workers.dramatiq`` in a real ``dramatiq`` worker on 127.0.0.1 (the app is
tests/workers_dramatiq_app.py; one worker process, two threads), with a real redis-server as
the broker and the result backend, sending to a ``ThreadedFakeDataFast`` in the test's process:
each goal delivered once, a message's result stored only once its goals are out, and a worker
stopped or killed while goals are queued delivers them, keeps them in the spool for the next
worker, or says them in its log: nothing silent."""

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

dramatiq = pytest.importorskip("dramatiq", reason="the dramatiq extra is not installed")

from dramatiq.brokers.redis import RedisBroker  # noqa: E402
from dramatiq.results import ResultMissing  # noqa: E402
from dramatiq.results.backends.redis import RedisBackend  # noqa: E402

DELIVERY_TIMEOUT = 15.0  # seconds for the goals of a few messages to reach the fake
RESULT_TIMEOUT_MS = 20_000

# The shutdown WARNING of one client: "4 requests (3 goals, 1 payment) were still undelivered
# at the shutdown deadline (1 s): ..."
UNDELIVERED = re.compile(
    r"(\d+) requests \((\d+) goals?, (\d+) payments?\) (?:was|were) still undelivered at the "
    r"shutdown deadline \([\d.]+ s\): ([^\n]*)"
)


class Sender:
    """The sending side (the test's process): messages for ``track``, and their results."""

    def __init__(self, url: str) -> None:
        self.broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
        self.broker.declare_queue("default")
        self.results = RedisBackend(url=url)  # type: ignore[no-untyped-call]

    def track(self, batch: int, goals: int, payment: bool, pause: float) -> Any:
        message = dramatiq.Message(
            queue_name="default",
            actor_name="track",
            args=(batch, goals, payment, pause),
            kwargs={},
            options={},
        )
        return self.broker.enqueue(message)

    def result(self, message: Any) -> Any:
        return self.results.get_result(  # type: ignore[no-untyped-call]
            message, block=True, timeout=RESULT_TIMEOUT_MS
        )

    def close(self) -> None:
        self.broker.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (skipped, saying so, without one): its URL."""
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture
def sender(broker: str) -> Iterator[Sender]:
    sender = Sender(broker)
    try:
        yield sender
    finally:
        sender.close()


def dramatiq_worker(tmp_path: Path, name: str, env: dict[str, str]) -> WorkerProcess:
    argv = ["dramatiq", "tests.workers_dramatiq_app", "--processes", "1", "--threads", "2"]
    return WorkerProcess(
        argv, env, tmp_path / f"{name}.log", ready="Worker process is ready for action."
    )


def meta(goal: Any, key: str) -> str:
    value: str = (goal.metadata or {})[key]
    return value


def keys(goals: list[Any]) -> list[str]:
    """``"<batch>/<i>"`` of each goal, sorted: a goal twice shows twice."""
    return sorted(f"{meta(g, 'batch')}/{meta(g, 'i')}" for g in goals)


def undelivered(log: str) -> tuple[int, int, list[str]]:
    """The goals and payments the shutdown WARNINGs in ``log`` count, and what they say."""
    found = UNDELIVERED.findall(log)
    goals = sum(int(g) for _, g, _, _ in found)
    payments = sum(int(p) for _, _, p, _ in found)
    return goals, payments, [said for *_, said in found]


def goals_and_payments(fake: Any, goals: int, payments: int) -> None:
    """Wait until the fake has ``goals`` goals and ``payments`` payments (or more: then the
    test's own checks say what came twice)."""
    wait_until(
        lambda: len(fake.goals) >= goals and len(fake.payments) >= payments,
        DELIVERY_TIMEOUT,
        f"{goals} goals and {payments} payments at the fake",
    )
    time.sleep(0.3)  # room for a duplicate to show


def test_each_goal_is_delivered_once_and_a_result_is_stored_once_its_goals_are_out(
    tmp_path: Path, broker: str, sender: Sender
) -> None:
    with fake_server() as fake:
        env = worker_env(fake, broker, FLUSH_TIMEOUT="20")
        with dramatiq_worker(tmp_path, "w1", env) as worker:
            messages = [sender.track(b, 3, True, 0.2) for b in range(6)]
            pids = {sender.result(message) for message in messages}
            # No wait: the flush came before each result was stored.
            assert keys(fake.goals) == sorted(f"{b}/{i}" for b in range(6) for i in range(3))
            assert sorted(p.transaction_id for p in fake.payments) == sorted(
                f"ch_{b}" for b in range(6)
            )
            assert len(pids) == 1  # one worker process (forked by dramatiq's main process)
            assert pids != {worker.pid}
            assert {meta(g, "pid") for g in fake.goals} == {str(pid) for pid in pids}

            # A message whose goal the API holds has no result yet: its thread is in the flush.
            fake.pause()
            held = sender.track(100, 1, False, 0)
            fake.wait_held(1, timeout=10)
            time.sleep(0.3)
            with pytest.raises(ResultMissing):
                sender.results.get_result(held)  # type: ignore[no-untyped-call]
            fake.resume()
            sender.result(held)
            assert [g for g in fake.goals if meta(g, "batch") == "100"]
            assert worker.stop() == 0
    log = worker.text()
    assert "did not end within" not in log
    assert "still undelivered" not in log
    assert len(fake.goals) == 19


def test_stopped_with_goals_held_by_the_api_the_shutdown_warning_says_them(
    tmp_path: Path, broker: str, sender: Sender
) -> None:
    with fake_server() as fake:
        env = worker_env(fake, broker, FLUSH_TIMEOUT="1", CLOSE_TIMEOUT="1")
        with dramatiq_worker(tmp_path, "w1", env) as worker:
            sender.result(sender.track(1, 2, True, 0))
            fake.pause()  # the API hangs from now on
            second = sender.track(2, 3, True, 0)
            sender.result(second)  # stored after the flush's 1 s
            assert f"the flush after message track[{second.message_id}] did not end within 1 s" in (
                worker.text()
            )
            started = time.monotonic()
            assert worker.stop() == 0  # SIGTERM: the worker finishes its messages, then ends
            took = time.monotonic() - started
            # Delivered: the first message's; the second's were held by the API, never recorded.
            assert sorted(meta(g, "batch") for g in fake.goals) == ["1", "1"]
            assert [p.transaction_id for p in fake.payments] == ["ch_1"]
    goals, payments, said = undelivered(worker.text())
    assert (goals, payments) == (3, 1), worker.text()
    assert all("failed with ShutdownError" in text for text in said)
    assert took < 10  # dramatiq's 1 s poll, the close's 1 s deadline and its grace


def test_stopped_with_a_spool_the_next_worker_delivers_what_was_kept_each_once(
    tmp_path: Path, broker: str, sender: Sender
) -> None:
    spool = tmp_path / "spool"
    with fake_server() as fake:
        env = worker_env(fake, broker, spool, FLUSH_TIMEOUT="1", CLOSE_TIMEOUT="1")
        with dramatiq_worker(tmp_path, "w1", env) as worker:
            fake.pause()
            messages = [sender.track(b, 3, True, 0) for b in (1, 2)]
            for message in messages:
                sender.result(message)
            assert spooled_records(spool) >= 8
            assert worker.stop() == 0
            assert fake.goals == []
            assert fake.payments == []
    goals, payments, said = undelivered(worker.text())
    assert (goals, payments) == (6, 2), worker.text()
    assert all("kept in the spool at" in text for text in said)

    # The next worker (a new API process: the first one's held requests died with it) sends
    # what the spool kept as it starts, with no message to process.
    with (
        fake_server() as fake,
        dramatiq_worker(tmp_path, "w2", worker_env(fake, broker, spool)) as second,
    ):
        goals_and_payments(fake, 6, 2)
        assert keys(fake.goals) == sorted(f"{b}/{i}" for b in (1, 2) for i in range(3))
        assert sorted(p.transaction_id for p in fake.payments) == ["ch_1", "ch_2"]
        assert second.stop() == 0
    assert "still undelivered" not in second.text()


def test_killed_with_a_spool_the_next_worker_delivers_what_was_on_disk(
    tmp_path: Path, broker: str, sender: Sender
) -> None:
    spool = tmp_path / "spool"
    with fake_server() as fake:
        env = worker_env(fake, broker, spool, FLUSH_TIMEOUT="20")
        with dramatiq_worker(tmp_path, "w1", env) as worker:
            fake.pause()
            for batch in (1, 2):  # both threads block in their flush
                sender.track(batch, 5, True, 0)
            wait_until(lambda: spooled_records(spool) >= 12, 10, "the journal's writes")
            worker.kill()  # SIGKILL to dramatiq's main process and its worker process
            assert fake.goals == []
            assert fake.payments == []

    with (
        fake_server() as fake,
        dramatiq_worker(tmp_path, "w2", worker_env(fake, broker, spool)) as second,
    ):
        goals_and_payments(fake, 10, 2)
        assert keys(fake.goals) == sorted(f"{b}/{i}" for b in (1, 2) for i in range(5))
        assert sorted(p.transaction_id for p in fake.payments) == ["ch_1", "ch_2"]
        assert second.stop() == 0
    assert "still undelivered" not in second.text()


def test_the_readmes_recipe_runs_as_pasted(tmp_path: Path, broker: str) -> None:
    (tmp_path / "tasks.py").write_text(readme_block("Dramatiq"), encoding="utf-8")
    ready = "Worker process is ready for action."
    with fake_server() as fake:
        env = worker_env(fake, broker)
        log = tmp_path / "readme.log"
        with WorkerProcess(["dramatiq", "tasks"], env, log, ready, cwd=tmp_path) as worker:
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
            assert done.stdout.splitlines() == [
                "done: both messages' goals and the payment are at DataFast"
            ]
            # As it says: no wait.
            assert sorted(g.name for g in fake.goals) == ["invoice_paid", "signup_confirmed"]
            assert [p.transaction_id for p in fake.payments] == ["in_1001"]
            assert worker.stop() == 0
    assert "WARNING" not in worker.text()


# -- the module's surface, in the test's process -------------------------------------------


def test_without_dramatiq_the_import_error_names_the_extra() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['dramatiq'] = None; import datafast_async.workers.dramatiq",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'datafast-async[dramatiq]'" in done.stderr


def test_client_finds_the_middleware_on_the_global_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    from dramatiq.brokers.stub import StubBroker

    from datafast_async import ConfigurationError
    from datafast_async.workers.dramatiq import DataFastMiddleware, client

    with pytest.raises(ConfigurationError, match="unknown DataFast settings: flush"):
        DataFastMiddleware(flush=1)
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    with pytest.raises(RuntimeError, match="no broker is set"):
        client()
    stub = StubBroker()
    monkeypatch.setattr(dramatiq.broker, "global_broker", stub)
    with pytest.raises(RuntimeError, match="no DataFastMiddleware"):
        client()
    middleware = DataFastMiddleware(api_key="df_test", enabled=False)
    stub.add_middleware(middleware)
    assert client() is middleware.client
    stub.close()
