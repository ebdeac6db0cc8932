"""``BackgroundClient``, the sync face, as sync code uses it: against a fake DataFast on
127.0.0.1 (``ThreadedFakeDataFast``), from plain threads with no event loop, and in fresh
processes for what only an exit or a fork shows."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafast_async import (
    BackgroundClient,
    ClientClosedError,
    ConfigurationError,
    NotFoundError,
    RetryPolicy,
    ShutdownError,
)
from datafast_async.testing import ThreadedFakeDataFast

from ._docs import first_python_block

VISITOR = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
NO_WAIT = RetryPolicy(initial_delay=0, max_delay=0)
RUN_TIMEOUT = 60.0  # seconds for a child Python process


@pytest.fixture
def fake() -> Iterator[ThreadedFakeDataFast]:
    with ThreadedFakeDataFast() as server:
        yield server


def background(fake: ThreadedFakeDataFast, **settings: object) -> BackgroundClient:
    settings.setdefault("retry", NO_WAIT)
    return BackgroundClient(fake.api_key, base_url=fake.base_url, **settings)


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_sync_code_tracks_every_kind_and_flush_and_close_block_until_they_are_out(
    fake: ThreadedFakeDataFast,
) -> None:
    client = background(fake)
    goals = [client.track_nowait(VISITOR, "signup", metadata={"i": i}) for i in range(50)]
    payment = client.track_payment_nowait(49.99, "usd", "ch_bg_1", visitor_id=VISITOR)
    identify = client.identify_nowait(VISITOR, "user_1", {"plan": "pro"})
    assert client.flush(10) is True
    assert all(g.done() and g.result is not None for g in goals)
    assert payment.result is not None
    assert identify.result is not None
    stats = client.close()
    assert stats.delivered == 52
    assert (len(fake.goals), len(fake.payments), len(fake.identities)) == (50, 1, 1)


def test_nothing_starts_before_the_first_request_and_close_ends_the_thread(
    fake: ThreadedFakeDataFast,
) -> None:
    before = len(threads_named("datafast-background"))
    client = background(fake)
    assert len(threads_named("datafast-background")) == before  # lazy
    assert client.flush(1) is True  # nothing accepted: nothing to start
    assert len(threads_named("datafast-background")) == before
    client.track_nowait(VISITOR, "signup")
    assert len(threads_named("datafast-background")) == before + 1
    client.close(5)
    assert len(threads_named("datafast-background")) == before
    assert len(fake.goals) == 1


def test_close_is_final_and_idempotent(fake: ThreadedFakeDataFast) -> None:
    client = background(fake)
    client.track_nowait(VISITOR, "signup")
    first = client.close()
    assert client.close() is first
    with pytest.raises(ClientClosedError):
        client.track_nowait(VISITOR, "again")
    with pytest.raises(ClientClosedError):
        client.send(VISITOR, "again")


def test_the_context_manager_closes_and_direct_calls_block_for_their_answer(
    fake: ThreadedFakeDataFast,
) -> None:
    utc = datetime.timezone.utc
    with background(fake) as client:
        assert client.send(VISITOR, "signup").event_id is not None
        result = client.send_payment(10, "eur", "ch_direct", visitor_id=VISITOR, timeout=10)
        assert result.transaction_id == "ch_direct"
        assert client.send_identify(VISITOR, "u1").message
        start = datetime.datetime(2000, 1, 1, tzinfo=utc)
        end = datetime.datetime(2100, 1, 1, tzinfo=utc)
        assert client.delete_goals(VISITOR, start=start, end=end).message
        with pytest.raises(NotFoundError):
            client.delete_payments("ch_missing")
        assert client.delete_payments("ch_direct").message
    assert fake.goals == []
    assert fake.payments == []
    assert client.stats().delivered == 0  # direct calls leave the counters alone


def test_many_threads_track_at_once_and_nothing_is_lost(fake: ThreadedFakeDataFast) -> None:
    client = background(fake)

    def work(n: int) -> None:
        for i in range(100):
            client.track_nowait(VISITOR, "signup", metadata={"t": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stats = client.close(10)
    assert stats.delivered == 800
    assert len(fake.goals) == 800


def test_close_keeps_its_deadline_when_the_api_hangs(fake: ThreadedFakeDataFast) -> None:
    failures: list[object] = []
    client = background(fake, on_failure=lambda event, error: failures.append(error))
    fake.pause()
    deliveries = [client.track_nowait(VISITOR, "signup") for _ in range(20)]
    started = time.monotonic()
    stats = client.close(0.3)
    took = time.monotonic() - started
    fake.resume()
    assert took < 0.3 + 1.5  # the deadline plus the grace (with room for a busy machine)
    assert stats.failed == 20
    assert all(isinstance(d.error, ShutdownError) for d in deliveries)
    assert len(failures) == 20


def test_a_blocking_call_from_a_callback_is_refused_not_a_deadlock(
    fake: ThreadedFakeDataFast,
) -> None:
    seen: list[BaseException] = []
    client: BackgroundClient

    def on_success(event: object, result: object) -> None:
        try:
            client.flush(1)
        except RuntimeError as exc:
            seen.append(exc)

    client = background(fake, on_success=on_success)
    client.track_nowait(VISITOR, "signup")
    assert client.flush(10)
    client.close(5)
    assert len(seen) == 1
    assert "its own thread" in str(seen[0])


def test_a_session_of_another_loop_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="own event loop"):
        BackgroundClient("df_key_0001", session=object())


def run_child(source: str, fake: ThreadedFakeDataFast) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
    env.update(DATAFAST_API_KEY=fake.api_key, DATAFAST_BASE_URL=fake.base_url)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_a_script_that_never_closes_its_client_still_delivers_at_exit(
    fake: ThreadedFakeDataFast,
) -> None:
    done = run_child(
        f"""
        from datafast_async import BackgroundClient
        client = BackgroundClient()
        for i in range(30):
            client.track_nowait({VISITOR!r}, "signup", metadata={{"i": i}})
        # no close(): the process exits
        """,
        fake,
    )
    assert done.returncode == 0, done.stderr
    assert len(fake.goals) == 30


def test_at_exit_with_the_api_hanging_the_process_ends_within_the_deadline(
    fake: ThreadedFakeDataFast,
) -> None:
    fake.pause()
    started = time.monotonic()
    done = run_child(
        f"""
        from datafast_async import BackgroundClient
        client = BackgroundClient(shutdown_timeout=0.5)
        for i in range(10):
            client.track_nowait({VISITOR!r}, "signup")
        """,
        fake,
    )
    took = time.monotonic() - started
    fake.resume()
    assert done.returncode == 0, done.stderr
    assert took < 15  # interpreter start-up, imports, the 0.5 s deadline and its grace
    # Nothing silent: the goals that could not go are said.
    assert "10 goals were still undelivered at the shutdown deadline" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_has_its_own_client_and_the_parents_goals_stay_the_parents(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    done = run_child(
        f"""
        import os
        from datafast_async import BackgroundClient
        client = BackgroundClient()
        for i in range(5):
            client.track_nowait({VISITOR!r}, "parent", metadata={{"i": i}})
        assert client.flush(10)
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                client.track_nowait({VISITOR!r}, "child", metadata={{"i": i}})
            stats = client.close(10)
            os._exit(0 if stats.delivered == 3 else 1)
        client.track_nowait({VISITOR!r}, "parent", metadata={{"i": 5}})
        _, status = os.waitpid(pid, 0)
        stats = client.close(10)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert stats.delivered == 6, stats
        """,
        fake,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(g.name for g in fake.goals)
    assert names == ["child"] * 3 + ["parent"] * 6


def test_the_readmes_sync_example_runs_as_pasted(fake: ThreadedFakeDataFast) -> None:
    block = first_python_block("workers.md", "Sync code: `BackgroundClient`")
    done = run_child(block, fake)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "True"
    assert [g.name for g in fake.goals] == ["signup"]
