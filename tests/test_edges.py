"""Edges found in review: threads racing shutdown, loops ending, and small contract points."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest

from datafast_async import (
    ClientClosedError,
    DataFast,
    DataFastError,
    Goal,
    GoalResult,
    RetryPolicy,
    ShutdownError,
    Stats,
    TransportError,
)
from datafast_async._delivery import Delivery
from datafast_async._outcome import parse_retry_after
from datafast_async._queue import RequestQueue as GoalQueue
from datafast_async._transport import Request, Response
from datafast_async.testing import ThreadedFakeDataFast

from ._fakes import Recorder, error, ok, until


def test_a_queue_closed_to_intake_refuses_offers_atomically() -> None:
    queue = GoalQueue(10)
    queue.offer(Delivery(Goal("v", "before")))
    queue.close_intake()
    with pytest.raises(ClientClosedError):
        queue.offer(Delivery(Goal("v", "after")))
    assert queue.snapshot() == Stats(enqueued=1, queued=1)


def test_goals_from_threads_racing_aclose_are_all_settled() -> None:
    """Every Delivery a thread got back settles, and aclose()'s Stats are the final ones."""

    async def one_round(fake: ThreadedFakeDataFast) -> tuple[list[Delivery[Any]], Stats, Stats]:
        df = DataFast(fake.api_key, base_url=fake.base_url, shutdown_timeout=0.0)
        await df.start()
        accepted: list[Delivery[Any]] = []
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    accepted.append(df.track_nowait("v", "signup"))
                except ClientClosedError:
                    return

        threads = [threading.Thread(target=pump) for _ in range(3)]
        for thread in threads:
            thread.start()
        await until(lambda: len(accepted) > 20)
        final = await df.aclose()
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        return accepted, final, df.stats()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadedFakeDataFast() as fake:
            for _ in range(20):
                accepted, final, later = asyncio.run(one_round(fake))
                assert all(d.done() for d in accepted)
                assert final == later
                assert final.enqueued == len(accepted) == final.delivered + final.failed
    finally:
        sys.setswitchinterval(interval)


def test_an_owner_cancelled_by_asyncio_run_still_delivers_within_the_deadline() -> None:
    """asyncio.run() cancels the owner and the workers in one sweep; aclose() still delivers."""
    deliveries: list[Delivery[Any]] = []

    with ThreadedFakeDataFast() as fake:

        async def service() -> None:
            async with DataFast(fake.api_key, base_url=fake.base_url, concurrency=2) as df:
                deliveries.extend(df.track_nowait("v", f"g{i}") for i in range(20))
                await asyncio.Event().wait()

        async def main() -> None:
            asyncio.get_running_loop().create_task(service())
            await asyncio.sleep(0)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(main())
            gc.collect()
        assert [str(w.message) for w in caught] == []
        assert len(fake.goals) == 20
    assert all(d.result is not None for d in deliveries)


def test_a_new_loop_in_the_same_thread_does_not_use_a_dead_run() -> None:
    recorder = Recorder()
    df = DataFast("df_unit_test_key", _transport_factory=recorder.factory)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(df.start())
    loop.close()  # closed without cancelling the sender's tasks

    async def main() -> Stats:
        await df.track_nowait("v", "in-the-new-loop").wait(5)
        return await df.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the abandoned loop's tasks
        assert asyncio.run(main()) == Stats(enqueued=1, delivered=1)
        gc.collect()
    assert recorder.names == ["in-the-new-loop"]


async def test_send_spanning_aclose_raises_an_sdk_error() -> None:
    recorder = Recorder(lambda request: error(503, "busy", retry_after="0.3"))
    df = DataFast("df_unit_test_key", _transport_factory=recorder.factory)
    await df.start()
    sent = asyncio.ensure_future(df.send("v", "x"))
    await until(lambda: len(recorder.bodies) == 1)
    await df.aclose(timeout=0.05)
    with pytest.raises((ShutdownError, TransportError)):
        await sent


async def test_a_retry_after_on_a_final_failure_still_pauses_the_sender() -> None:
    loop = asyncio.get_running_loop()
    times: dict[str, float] = {}

    def answer(request: Request) -> Response:
        name = "a" if b'"a"' in request.body else "b"
        times[name] = loop.time()
        return error(429, "slow", retry_after="0.2") if name == "a" else ok()

    recorder = Recorder(answer)
    async with DataFast(
        "df_unit_test_key",
        concurrency=1,
        _transport_factory=recorder.factory,
        retry=RetryPolicy(max_attempts=1),
    ) as df:
        first = df.track_nowait("v", "a")
        await until(lambda: "a" in times)
        second = df.track_nowait("v", "b")
        await second.wait(5)
    assert first.error is not None
    assert times["b"] >= times["a"] + 0.2


def test_a_loop_ending_without_aclose_closes_the_clients_session() -> None:
    with ThreadedFakeDataFast() as fake:
        fake.pause()
        df = DataFast(fake.api_key, base_url=fake.base_url)

        async def main() -> None:
            df.track_nowait("v", "x")
            await until(lambda: fake.in_flight == 1)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(main())
            gc.collect()
        fake.resume()
    messages = [str(w.message) for w in caught]
    assert any("1 goal pending" in m for m in messages)
    assert not any("Unclosed" in m for m in messages), messages


def test_start_after_a_loop_died_during_aclose() -> None:
    recorder = Recorder(lambda request: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
    df = DataFast("df_unit_test_key", _transport_factory=recorder.factory)

    async def first() -> None:
        await df.start()
        df.track_nowait("v", "x")
        await until(lambda: len(recorder.bodies) == 1)
        asyncio.get_running_loop().create_task(df.aclose(timeout=30))
        await asyncio.sleep(0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asyncio.run(first())
    recorder.answer = lambda request: ok()

    async def second() -> Stats:
        await df.start()
        await (await df.track("v", "y")).wait(5)
        return await df.aclose()

    assert asyncio.run(second()) == Stats(enqueued=1, delivered=1)


def test_delivery_wait_from_other_threads_never_misses_its_wake_up() -> None:
    deliveries: list[Delivery[Any]] = [Delivery(Goal("v", "x")) for _ in range(300)]
    results: list[object] = []

    def waiter(delivery: Delivery[Any]) -> None:
        async def wait() -> None:
            results.append(await delivery.wait(timeout=5))

        asyncio.run(wait())

    for delivery in deliveries:
        thread = threading.Thread(target=waiter, args=(delivery,))
        thread.start()
        delivery._settle(GoalResult("id", "ok"))
        thread.join()
    assert len(results) == 300


async def test_push_front_does_not_let_flush_return_early() -> None:
    loop = asyncio.get_running_loop()
    queue = GoalQueue(10)
    a: Delivery[Any] = Delivery(Goal("v", "a"))
    b: Delivery[Any] = Delivery(Goal("v", "b"))
    queue.offer(a)
    queue.offer(b)
    waiter = queue.flush_waiter(loop)
    assert waiter is not None
    replayed: list[Delivery[Any]] = [Delivery(Goal("v", "r1")), Delivery(Goal("v", "r2"))]
    queue.push_front(replayed)
    for _ in range(2):
        taken = queue.take()
        assert taken is not None
        queue.finish(taken, delivered=True)
    assert not waiter.done()
    for _ in range(2):
        taken = queue.take()
        assert taken is not None
        queue.finish(taken, delivered=True)
    assert waiter.done()


def test_a_loss_reaches_stderr_without_logging_configured() -> None:
    """No NullHandler: with no logging set up, Python's last-resort handler prints the SDK's
    WARNINGs, so a failed goal is never silent; nothing below WARNING is printed."""
    script = """
import asyncio
from datafast_async import DataFast, RetryPolicy
from datafast_async._transport import Response
async def main():
    df = DataFast("df_unit_test_key", retry=RetryPolicy(max_attempts=1),
                  _transport_factory=lambda: __import__("datafast_async._transport",
                  fromlist=["MockTransport"]).MockTransport(lambda r: Response(400, b"no")))
    async with df:
        df.track_nowait("v", "x")
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert "goal 'x' failed: HTTP 400" in done.stderr


def test_an_app_that_configures_logging_decides_where_the_lines_go() -> None:
    script = """
import asyncio, logging
logging.basicConfig(level=logging.CRITICAL)
from datafast_async import DataFast, RetryPolicy
from datafast_async._transport import Response
async def main():
    df = DataFast("df_unit_test_key", retry=RetryPolicy(max_attempts=1),
                  _transport_factory=lambda: __import__("datafast_async._transport",
                  fromlist=["MockTransport"]).MockTransport(lambda r: Response(400, b"no")))
    async with df:
        df.track_nowait("v", "x")
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
        ("Thursday, 01-Jan-26 00:00:30 GMT", 30.0),
        ("Thu Jan  1 00:00:30 2026", 30.0),
        ("1e400", float("inf")),
    ],
)
def test_every_retry_after_form_is_read(header: str, expected: float) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after(header, now=now) == pytest.approx(expected)


def test_none_metadata_values_are_left_out_before_the_key_rules() -> None:
    assert Goal("v", "x", metadata={"Bad Key": None, "ok": "1"}).metadata == {"ok": "1"}


async def test_a_disabled_client_starts_nothing() -> None:
    df = DataFast(enabled=False)
    await df.start()
    assert not df._run.bound
    assert await df.aclose() == Stats()


def test_an_explicit_enabled_true_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAFAST_ENABLED", "0")
    assert "enabled=True" in repr(DataFast("df_unit_test_key", enabled=True))
    assert "enabled=False" in repr(DataFast("df_unit_test_key"))


class _BrokenTransport:
    """A custom transport that breaks the contract: it answers neither bytes nor an error."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, method: str, target: str, body: bytes | None) -> object:
        self.calls += 1
        return None

    async def aclose(self) -> None:
        pass


async def test_a_transport_breaking_its_contract_fails_the_goal_not_the_worker() -> None:
    broken = _BrokenTransport()
    async with DataFast(
        "df_unit_test_key",
        concurrency=1,
        _transport_factory=lambda: broken,  # type: ignore[arg-type,return-value]
    ) as df:
        deliveries = [df.track_nowait("v", f"goal_{i}") for i in range(3)]
        assert await df.flush(timeout=5)
        stats = df.stats()
    assert broken.calls == 3  # the one worker went on after each
    assert stats.failed == 3
    assert stats.in_flight == 0
    for delivery in deliveries:
        assert delivery.error is not None
        assert "internal error" in str(delivery.error)


def test_aclose_from_another_running_loop_is_refused_not_run_from_the_wrong_thread(
    recorder: Recorder,
) -> None:
    """Found in review: aclose() from another loop created the shutdown task on the client's
    loop from the wrong thread; now it says where to call it, and the owner closes it."""
    df = DataFast("df_unit_test_key_0001", _transport_factory=recorder.factory)
    started = threading.Event()
    stop = threading.Event()
    closed: list[Stats] = []

    def owner() -> None:
        async def main() -> None:
            await df.start()
            started.set()
            await asyncio.to_thread(stop.wait, 10)  # the loop runs meanwhile
            closed.append(await df.aclose())

        asyncio.run(main())

    thread = threading.Thread(target=owner)
    thread.start()
    try:
        assert started.wait(10)

        async def elsewhere() -> None:
            with pytest.raises(DataFastError, match="another event loop"):
                await df.aclose()

        asyncio.run(elsewhere())
    finally:
        stop.set()
        thread.join(10)
    assert len(closed) == 1


def test_a_loop_ending_without_aclose_names_what_was_pending_by_kind() -> None:
    """Goals, payments and identifies pending when the loop ends: the warning counts each
    kind (it said "goals" for all of them)."""
    with ThreadedFakeDataFast() as fake:
        fake.pause()
        df = DataFast(fake.api_key, base_url=fake.base_url)
        visitor = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"

        async def main() -> None:
            for i in range(2):
                df.track_nowait(visitor, f"goal_{i}")
            df.track_payment_nowait(9.99, "USD", "tx_1", visitor_id=visitor)
            await until(lambda: fake.in_flight >= 1)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(main())
            gc.collect()
        fake.resume()
    messages = [str(w.message) for w in caught]
    assert any("with 3 requests (2 goals, 1 payment) pending" in m for m in messages), messages
