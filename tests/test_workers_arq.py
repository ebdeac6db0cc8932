"""``datafast_async.workers.arq`` in real arq workers (``python -m arq``) on 127.0.0.1: a Redis
from tests/_redis.py, the app tests/workers_arq_app.py (or the README's recipe), sending to a
``ThreadedFakeDataFast`` in this process. Each job's requests are out when its result comes; a
worker stopped (SIGTERM) or killed (SIGKILL) while requests are queued delivers them, keeps
them in the spool for the next worker (which sends each once), or says them on its stderr."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus

from datafast_async import ConfigurationError, DataFast
from datafast_async.testing import ThreadedFakeDataFast
from datafast_async.workers.arq import DataFastHooks, get_client

from ._docs import first_python_block
from ._redis import redis_server
from ._workers import Worker, journaled, lines, settled, wait_until

# Real worker processes: a slow proof, run on the newest Python only in CI.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.workers_arq_app.WorkerSettings"
RESULT_TIMEOUT = 15.0  # seconds for a job's result


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
    return Worker([sys.executable, "-m", "arq", APP], env, tmp_path, name)


def enqueue(redis_url: str, *args: Any, wait: bool = True) -> str:
    """Enqueue ``track(*args)``; with ``wait``, wait for its result. Returns the job's id."""

    async def run() -> str:
        redis = await create_pool(RedisSettings.from_dsn(redis_url))
        try:
            job = await redis.enqueue_job("track", *args)
            assert job is not None
            if wait:
                await job.result(timeout=RESULT_TIMEOUT)
            return job.job_id
        finally:
            await redis.aclose()

    return asyncio.run(run())


def status(redis_url: str, job_id: str) -> JobStatus:
    async def run() -> JobStatus:
        redis = await create_pool(RedisSettings.from_dsn(redis_url))
        try:
            return await Job(job_id, redis).status()
        finally:
            await redis.aclose()

    return asyncio.run(run())


def names(fake: ThreadedFakeDataFast) -> Counter[tuple[str, str | None]]:
    """Each goal recorded as (name, its metadata's "n"), counted."""
    return Counter((g.name, (g.metadata or {}).get("n")) for g in fake.goals)


def held(name: str, count: int) -> Counter[tuple[str, str | None]]:
    return Counter({(name, str(n)): 1 for n in range(count)})


# -- a job is done once its requests are out --------------------------------------------------


def test_each_jobs_goals_and_payment_are_delivered_when_its_result_comes(
    tmp_path: Path, redis_url: str
) -> None:
    with ThreadedFakeDataFast() as fake, worker(tmp_path, "w", redis_url, fake) as w:
        w.wait_started()
        for job in range(3):
            enqueue(redis_url, f"job_{job}", 4, f"ch_{job}")
            # The result came after on_job_end's flush: everything is at the fake already.
            assert names(fake) == sum((held(f"job_{j}", 4) for j in range(job + 1)), Counter())
            assert [p.transaction_id for p in fake.payments] == [f"ch_{j}" for j in range(job + 1)]
        err = w.stop()
    [shutdown] = w.hooks("shutdown")
    assert shutdown["stats"]["delivered"] == 15
    assert settled(shutdown["stats"])
    assert "undelivered" not in err


# -- stopped (SIGTERM) while requests are queued ----------------------------------------------


def test_a_worker_stopped_without_a_spool_says_what_it_could_not_deliver(
    tmp_path: Path, redis_url: str
) -> None:
    with (
        ThreadedFakeDataFast() as fake,
        worker(tmp_path, "w", redis_url, fake, FLUSH_TIMEOUT="0.5", CLOSE_TIMEOUT="1") as w,
    ):
        w.wait_started()
        enqueue(redis_url, "before", 3)
        assert names(fake) == held("before", 3)  # delivered
        fake.pause()  # the API hangs from now on
        enqueue(redis_url, "held", 5, "ch_held")  # its result comes once the flush gave up
        fake.wait_held(6)
        err = w.stop()
        assert names(fake) == held("before", 3)
    [flush] = lines(err, "the flush after arq job")
    assert "did not end within 0.5 s: 6 requests still pending" in flush
    [said] = lines(err, "still undelivered at the shutdown deadline")
    assert said.startswith("6 requests (5 goals, 1 payment) were still undelivered")
    assert "failed with ShutdownError" in said
    [shutdown] = w.hooks("shutdown")
    assert (shutdown["stats"]["delivered"], shutdown["stats"]["failed"]) == (3, 6)
    assert settled(shutdown["stats"])  # every request delivered or said


def test_a_worker_stopped_with_a_spool_keeps_them_for_the_next_worker(
    tmp_path: Path, redis_url: str
) -> None:
    spool = str(tmp_path / "spool")
    with ThreadedFakeDataFast() as down:
        # A long flush: the SIGTERM comes while the job's on_job_end waits.
        with worker(
            tmp_path,
            "first",
            redis_url,
            down,
            DATAFAST_SPOOL_PATH=spool,
            FLUSH_TIMEOUT="30",
            CLOSE_TIMEOUT="1",
        ) as first:
            first.wait_started()
            enqueue(redis_url, "before", 3)
            down.pause()
            job = enqueue(redis_url, "held", 5, "ch_held", wait=False)
            down.wait_held(6)
            err = first.stop()
        assert names(down) == held("before", 3)
    assert lines(err, "the worker is stopping")
    [said] = lines(err, "still undelivered at the shutdown deadline")
    assert said.startswith("6 requests (5 goals, 1 payment) were still undelivered")
    assert "6 are kept in the spool at" in said
    [shutdown] = first.hooks("shutdown")
    assert (shutdown["stats"]["delivered"], shutdown["stats"]["spooled"]) == (3, 6)
    # Stopped during its flush, the job still got its result: arq does not run it again.
    assert status(redis_url, job) is JobStatus.complete

    with (
        ThreadedFakeDataFast() as up,
        worker(tmp_path, "second", redis_url, up, DATAFAST_SPOOL_PATH=spool) as second,
    ):
        second.wait_started()
        enqueue(redis_url, "after", 1)  # its flush waits for what was taken over too
        assert names(up) == held("held", 5) + held("after", 1)  # each once
        assert [p.transaction_id for p in up.payments] == ["ch_held"]
        err = second.stop()
    assert "undelivered" not in err
    assert journaled(Path(spool)) == 0  # an idle spool is empty


# -- killed (SIGKILL) --------------------------------------------------------------------------


def test_a_worker_killed_with_a_spool_leaves_them_to_the_next_worker(
    tmp_path: Path, redis_url: str
) -> None:
    spool = tmp_path / "spool"
    with ThreadedFakeDataFast() as down:
        with worker(tmp_path, "first", redis_url, down, DATAFAST_SPOOL_PATH=str(spool)) as first:
            first.wait_started()
            down.pause()
            enqueue(redis_url, "held", 5, "ch_kill", wait=False)
            down.wait_held(6)
            wait_until("the journal holds the 6 requests", lambda: journaled(spool) >= 6)
            first.kill()
        assert down.goals == []
        assert first.hooks("shutdown") == []  # no shutdown ran: only the disk remembers

    with (
        ThreadedFakeDataFast() as up,
        worker(tmp_path, "second", redis_url, up, DATAFAST_SPOOL_PATH=str(spool)) as second,
    ):
        second.wait_started()
        enqueue(redis_url, "after", 1)
        assert names(up) == held("held", 5) + held("after", 1)
        assert [p.transaction_id for p in up.payments] == ["ch_kill"]
        err = second.stop()
    assert "undelivered" not in err


# -- the README's recipe -----------------------------------------------------------------------


def readme_block(heading: str) -> str:
    """The first ``python`` block of the section ``heading`` of ``docs/workers.md``."""
    return first_python_block("workers.md", heading)


def test_the_readmes_arq_recipe_runs_as_pasted(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "worker.py").write_text(readme_block("arq"), encoding="utf-8")
    env = {"REDIS_URL": redis_url}
    with ThreadedFakeDataFast() as fake:
        env.update(DATAFAST_API_KEY=fake.api_key, DATAFAST_BASE_URL=fake.base_url)
        argv = [sys.executable, "-m", "arq", "worker.WorkerSettings"]
        w = Worker(argv, env, tmp_path, "recipe", cwd=tmp_path)
        with w:
            wait_until("the worker starts", lambda: "Starting worker" in w.stderr, 20)
            sent = subprocess.run(
                [sys.executable, "worker.py"],
                cwd=tmp_path,
                env=w.environ,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
            # Printed once both results came: by then the goals and the payment were out.
            assert sent.stdout.strip() == "done: both jobs' goals and the payment are at DataFast"
            assert sorted(g.name for g in fake.goals) == ["invoice_paid", "signup_confirmed"]
            assert [p.transaction_id for p in fake.payments] == ["in_1001"]
            err = w.stop()
    assert "undelivered" not in err


# -- the hooks' own rules ----------------------------------------------------------------------


def test_settings_are_checked_when_the_hooks_are_built_and_used_when_the_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="not a DataFast setting"):
        DataFastHooks(spool_pth="/tmp/x")
    with pytest.raises(ConfigurationError, match="not both"):
        DataFastHooks(DataFast("df_x"), spool_path="/tmp/x")
    with pytest.raises(ConfigurationError, match="flush_timeout"):
        DataFastHooks(flush_timeout=-1)
    monkeypatch.delenv("DATAFAST_API_KEY", raising=False)
    DataFastHooks(enabled=True)  # no key needed before the worker starts
    with pytest.raises(ConfigurationError, match=re.escape('ctx["datafast"]')):
        get_client({})


async def test_the_hooks_run_a_client_in_ctx_and_close_it() -> None:
    with ThreadedFakeDataFast() as fake:
        hooks = DataFastHooks(lambda: DataFast(fake.api_key, base_url=fake.base_url))
        ctx: dict[Any, Any] = {}
        await hooks.on_startup(ctx)
        client = get_client(ctx)
        client.track_nowait("v_1", "signup")
        await hooks.after_job_end({**ctx, "job_id": "j1"})
        assert [g.name for g in fake.goals] == ["signup"]
        await hooks.on_shutdown(ctx)
        assert ctx["datafast"] is client
        assert client.stats().delivered == 1
    await hooks.on_job_end({})  # no client (on_startup did not run): nothing to do
    await hooks.on_shutdown({})


def test_without_arq_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['arq'] = None; import datafast_async.workers.arq"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "pip install 'datafast-async[arq]'" in done.stderr
