"""``datafast_async.workers.taskiq`` in real taskiq workers (``python -m taskiq worker``) on
127.0.0.1: taskiq-redis's broker on a Redis from tests/_redis.py, the app
tests/workers_taskiq_app.py (or the README's recipe), sending to a ``ThreadedFakeDataFast`` in
this process. Each task's requests are out when its result comes; a worker stopped (SIGTERM)
or killed (SIGKILL) while requests are queued delivers them, keeps them in the spool for the
next worker (which sends each once), or says them on its stderr. The middleware in this
process, with an ``InMemoryBroker`` and on the sending side, without any worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker, TaskiqDepends
from taskiq.kicker import AsyncKicker
from taskiq.message import BrokerMessage

from datafast_async import ConfigurationError, DataFast
from datafast_async.testing import ThreadedFakeDataFast
from datafast_async.workers.taskiq import DataFastMiddleware, get_client

from ._docs import first_python_block
from ._redis import redis_server
from ._workers import Worker, journaled, lines, settled, wait_until

try:
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend
except ImportError as exc:  # taskiq-redis 1.0.x (redis < 6, beside arq) needs taskiq < 0.13
    import importlib.metadata as _metadata

    NO_REDIS_BROKER: str | None = (
        f"taskiq-redis {_metadata.version('taskiq-redis')} cannot be imported with taskiq "
        f"{_metadata.version('taskiq')} ({exc}): the versions that install beside arq's "
        "redis < 6 need taskiq < 0.13"
    )
else:
    NO_REDIS_BROKER = None

needs_a_redis_broker = pytest.mark.skipif(NO_REDIS_BROKER is not None, reason=str(NO_REDIS_BROKER))

# Real worker processes: a slow proof, run on the newest Python only in CI.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.workers_taskiq_app:broker"
RESULT_TIMEOUT = 15.0  # seconds for a task's result


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


def worker(
    tmp_path: Path, name: str, redis_url: str, fake: ThreadedFakeDataFast, **env: str
) -> Worker:
    env = {
        "DATAFAST_API_KEY": fake.api_key,
        "DATAFAST_BASE_URL": fake.base_url,
        "REDIS_URL": redis_url,
        **env,
    }
    argv = [sys.executable, "-m", "taskiq", "worker", APP, "--workers", "1"]
    return Worker(argv, env, tmp_path, name)


def kick(redis_url: str, *args: Any, wait: bool = True) -> str:
    """Send ``track(*args)`` as the sending side does (a broker with the middleware, no
    DataFast key in this process's environment); with ``wait``, wait for its result."""

    async def run() -> str:
        broker = (
            ListQueueBroker(redis_url)
            .with_result_backend(RedisAsyncResultBackend(redis_url))
            .with_middlewares(DataFastMiddleware())
        )
        await broker.startup()
        try:
            kicker: AsyncKicker[Any, dict[str, Any]] = AsyncKicker("track", broker, {})
            task = await kicker.kiq(*args)
            if wait:
                result = await task.wait_result(timeout=RESULT_TIMEOUT)
                result.raise_for_error()
            return task.task_id
        finally:
            await broker.shutdown()

    return asyncio.run(run())


def names(fake: ThreadedFakeDataFast) -> Counter[tuple[str, str | None]]:
    """Each goal recorded as (name, its metadata's "n"), counted."""
    return Counter((g.name, (g.metadata or {}).get("n")) for g in fake.goals)


def held(name: str, count: int) -> Counter[tuple[str, str | None]]:
    return Counter({(name, str(n)): 1 for n in range(count)})


# -- a task is done once its requests are out -------------------------------------------------


@needs_a_redis_broker
def test_each_tasks_goals_and_payment_are_delivered_when_its_result_comes(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAFAST_API_KEY", raising=False)  # the sending side needs none
    with ThreadedFakeDataFast() as fake, worker(tmp_path, "w", redis_url, fake) as w:
        w.wait_started()
        for task in range(3):
            kick(redis_url, f"task_{task}", 4, f"ch_{task}")
            # The result was saved after post_execute's flush: everything is at the fake.
            assert names(fake) == sum((held(f"task_{t}", 4) for t in range(task + 1)), Counter())
            assert [p.transaction_id for p in fake.payments] == [f"ch_{t}" for t in range(task + 1)]
        err = w.stop()
    [shutdown] = w.hooks("shutdown")
    assert shutdown["stats"]["delivered"] == 15
    assert settled(shutdown["stats"])
    assert "undelivered" not in err


# -- stopped (SIGTERM) while requests are queued ----------------------------------------------


@needs_a_redis_broker
def test_a_worker_stopped_without_a_spool_says_what_it_could_not_deliver(
    tmp_path: Path, redis_url: str
) -> None:
    with (
        ThreadedFakeDataFast() as fake,
        worker(tmp_path, "w", redis_url, fake, FLUSH_TIMEOUT="0.5", CLOSE_TIMEOUT="1") as w,
    ):
        w.wait_started()
        kick(redis_url, "before", 3)
        assert names(fake) == held("before", 3)  # delivered
        fake.pause()  # the API hangs from now on
        kick(redis_url, "held", 5, "ch_held")  # its result comes once the flush gave up
        fake.wait_held(6)
        err = w.stop()
        assert names(fake) == held("before", 3)
    [flush] = lines(err, "the flush after taskiq task track")
    assert "did not end within 0.5 s: 6 requests still pending" in flush
    [said] = lines(err, "still undelivered at the shutdown deadline")
    assert "6 requests (5 goals, 1 payment) were still undelivered" in said
    assert "failed with ShutdownError" in said
    [shutdown] = w.hooks("shutdown")
    assert (shutdown["stats"]["delivered"], shutdown["stats"]["failed"]) == (3, 6)
    assert settled(shutdown["stats"])  # every request delivered or said


@needs_a_redis_broker
def test_a_worker_stopped_with_a_spool_keeps_them_for_the_next_worker(
    tmp_path: Path, redis_url: str
) -> None:
    spool = tmp_path / "spool"
    env = {"DATAFAST_SPOOL_PATH": str(spool), "FLUSH_TIMEOUT": "0.5", "CLOSE_TIMEOUT": "1"}
    with ThreadedFakeDataFast() as down:
        with worker(tmp_path, "first", redis_url, down, **env) as first:
            first.wait_started()
            kick(redis_url, "before", 3)
            down.pause()
            kick(redis_url, "held", 5, "ch_held", wait=False)
            down.wait_held(6)
            err = first.stop()
        assert names(down) == held("before", 3)
    [said] = lines(err, "still undelivered at the shutdown deadline")
    assert "6 requests (5 goals, 1 payment) were still undelivered" in said
    assert "6 are kept in the spool at" in said
    [shutdown] = first.hooks("shutdown")
    assert (shutdown["stats"]["delivered"], shutdown["stats"]["spooled"]) == (3, 6)

    with (
        ThreadedFakeDataFast() as up,
        worker(tmp_path, "second", redis_url, up, DATAFAST_SPOOL_PATH=str(spool)) as second,
    ):
        second.wait_started()
        kick(redis_url, "after", 1)  # its flush waits for what was taken over too
        assert names(up) == held("held", 5) + held("after", 1)  # each once
        assert [p.transaction_id for p in up.payments] == ["ch_held"]
        err = second.stop()
    assert "undelivered" not in err
    assert journaled(spool) == 0  # an idle spool is empty


# -- killed (SIGKILL) --------------------------------------------------------------------------


@needs_a_redis_broker
def test_a_worker_killed_with_a_spool_leaves_them_to_the_next_worker(
    tmp_path: Path, redis_url: str
) -> None:
    spool = tmp_path / "spool"
    with ThreadedFakeDataFast() as down:
        with worker(tmp_path, "first", redis_url, down, DATAFAST_SPOOL_PATH=str(spool)) as first:
            first.wait_started()
            down.pause()
            kick(redis_url, "held", 5, "ch_kill", wait=False)
            down.wait_held(6)
            wait_until("the journal holds the 6 requests", lambda: journaled(spool) >= 6)
            first.kill()  # the worker process and taskiq's main process
        assert down.goals == []
        assert first.hooks("shutdown") == []  # no shutdown ran: only the disk remembers

    with (
        ThreadedFakeDataFast() as up,
        worker(tmp_path, "second", redis_url, up, DATAFAST_SPOOL_PATH=str(spool)) as second,
    ):
        second.wait_started()
        kick(redis_url, "after", 1)
        assert names(up) == held("held", 5) + held("after", 1)
        assert [p.transaction_id for p in up.payments] == ["ch_kill"]
        err = second.stop()
    assert "undelivered" not in err


# -- the README's recipe -----------------------------------------------------------------------


def readme_block(heading: str) -> str:
    """The first ``python`` block of the section ``heading`` of ``docs/workers.md``."""
    return first_python_block("workers.md", heading)


@needs_a_redis_broker
def test_the_readmes_taskiq_recipe_runs_as_pasted(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "tasks.py").write_text(readme_block("taskiq"), encoding="utf-8")
    env = {"REDIS_URL": redis_url}
    with ThreadedFakeDataFast() as fake:
        env.update(DATAFAST_API_KEY=fake.api_key, DATAFAST_BASE_URL=fake.base_url)
        argv = [sys.executable, "-m", "taskiq", "worker", "tasks:broker"]
        w = Worker(argv, env, tmp_path, "recipe", cwd=tmp_path)
        with w:
            wait_until("the workers listen", lambda: w.stderr.count("Listening started") == 2, 20)
            sent = subprocess.run(
                [sys.executable, "tasks.py"],
                cwd=tmp_path,
                env=w.environ,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
            # Printed once both results came: by then the goals and the payment were out.
            assert sent.stdout.strip() == "done: both tasks' goals and the payment are at DataFast"
            assert sorted(g.name for g in fake.goals) == ["invoice_paid", "signup_confirmed"]
            assert [p.transaction_id for p in fake.payments] == ["in_1001"]
            err = w.stop()
    assert "undelivered" not in err


# -- in this process: an InMemoryBroker, the sending side --------------------------------------


async def test_with_an_in_memory_broker_tasks_get_the_client_and_each_is_flushed() -> None:
    with ThreadedFakeDataFast() as fake:
        middleware = DataFastMiddleware(lambda: DataFast(fake.api_key, base_url=fake.base_url))
        broker = InMemoryBroker().with_middlewares(middleware)
        clients: list[DataFast] = []

        @broker.task
        async def signup(
            visitor: str,
            df: DataFast = TaskiqDepends(get_client),  # noqa: B008
        ) -> None:
            clients.append(df)
            df.track_nowait(visitor, "signup")

        @broker.task
        async def fails(df: DataFast = TaskiqDepends(get_client)) -> None:  # noqa: B008
            df.track_nowait("v_2", "attempted")
            raise RuntimeError("the task failed")

        await broker.startup()
        for visitor in ("v_1", "v_3"):
            await (await signup.kiq(visitor)).wait_result(timeout=RESULT_TIMEOUT)
            assert fake.goals[-1].visitor_id == visitor  # flushed before the result
        result = await (await fails.kiq()).wait_result(timeout=RESULT_TIMEOUT)
        assert result.is_err
        assert fake.goals[-1].name == "attempted"  # flushed after a failed task too
        assert clients == [middleware.client, middleware.client]
        await broker.shutdown()
        await middleware.shutdown()  # again: taskiq < 0.13's InMemoryBroker does not call it
        assert middleware.client.stats().delivered == 3
        assert "running" in repr(middleware)


class SendOnly(AsyncBroker):
    """A broker of the sending side that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[BrokerMessage] = []

    async def kick(self, message: BrokerMessage) -> None:
        self.sent.append(message)

    async def listen(self) -> AsyncGenerator[bytes, None]:  # pragma: no cover
        raise NotImplementedError
        yield b""


async def test_on_the_sending_side_the_middleware_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATAFAST_API_KEY", raising=False)  # a client would need one
    middleware = DataFastMiddleware()
    broker = SendOnly().with_middlewares(middleware)

    @broker.task
    async def signup(visitor: str) -> None:  # pragma: no cover (runs in a worker)
        pass

    await broker.startup()
    await signup.kiq("v_1")
    assert len(broker.sent) == 1
    with pytest.raises(ConfigurationError, match="no DataFast client runs in this process"):
        _ = middleware.client
    await broker.shutdown()


def test_settings_are_checked_when_the_middleware_is_built() -> None:
    with pytest.raises(ConfigurationError, match="not a DataFast setting"):
        DataFastMiddleware(spool_pth="/tmp/x")
    with pytest.raises(ConfigurationError, match="not both"):
        DataFastMiddleware(DataFast("df_x"), spool_path="/tmp/x")
    with pytest.raises(ConfigurationError, match="close_timeout"):
        DataFastMiddleware(close_timeout=-1)


async def test_get_client_without_the_middleware_says_how_to_add_it() -> None:
    broker = InMemoryBroker()

    @broker.task
    async def signup(df: DataFast = TaskiqDepends(get_client)) -> None:  # noqa: B008
        raise AssertionError("not reached")  # pragma: no cover

    await broker.startup()
    result = await (await signup.kiq()).wait_result(timeout=RESULT_TIMEOUT)
    await broker.shutdown()
    assert isinstance(result.error, ConfigurationError)
    assert "no DataFastMiddleware on this broker" in str(result.error)


def test_without_taskiq_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['taskiq'] = None; import datafast_async.workers.taskiq"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "pip install 'datafast-async[taskiq]'" in done.stderr
