"""The client's behaviour, driven as a user would, on a mock transport (no sockets)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import re
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from datafast_async import (
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    DataFast,
    DataFastError,
    Delivery,
    Goal,
    GoalResult,
    QueueFullError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ShutdownError,
    Stats,
    TransportError,
    VisitorNotFoundError,
    _reporting,
    _run,
)
from datafast_async._sender import Sender
from datafast_async._transport import Request, Response

from ._fakes import EVENT_ID, Gate, Recorder, error, ok, until

MakeClient = Callable[..., DataFast]


def balanced(stats: Stats) -> bool:
    return stats.enqueued == stats.delivered + stats.failed + stats.queued + stats.in_flight


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def gated_client(gate: Gate, recorder: Recorder, make_client: MakeClient) -> MakeClient:
    """Build a client whose transport holds every request at ``gate`` (the recorder still
    records them); keyword arguments go to DataFast."""
    recorder.answer = gate
    return make_client


# -- delivery and results ---------------------------------------------------------------------


async def test_tracked_goals_are_delivered_in_the_background(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async with make_client() as df:
        delivery = df.track_nowait("v1", "Sign Up", metadata={"plan": "pro", "seats": 3})
        assert not delivery.done()
        assert await delivery.wait(timeout=5) == GoalResult(
            EVENT_ID, "Custom event created successfully"
        )
    assert recorder.bodies == [
        {"datafast_visitor_id": "v1", "name": "sign_up", "metadata": {"plan": "pro", "seats": "3"}}
    ]
    assert df.stats() == Stats(enqueued=1, delivered=1)


async def test_a_queued_goal_sends_what_was_validated_whatever_is_done_to_its_dicts(
    make_client: MakeClient, recorder: Recorder
) -> None:
    source = {"plan": "pro"}
    async with make_client() as df:
        delivery = df.track_nowait("v1", "signup", metadata=source)
        source["plan"] = "x" * 300  # the caller's dict: copied at the call
        with pytest.raises(TypeError, match="read-only"):
            delivery.goal.metadata["Bad Key"] = "y"  # type: ignore[index]
        await delivery.wait(timeout=5)
    assert recorder.bodies[0]["metadata"] == {"plan": "pro"}


async def test_track_starts_the_client_lazily(make_client: MakeClient) -> None:
    df = make_client()
    delivery = await df.track("v", "signup")
    assert (await delivery.wait(5)).event_id == EVENT_ID
    await df.aclose()


async def test_on_success_and_on_failure_are_called_once_per_goal(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda r: error(400, "bad goal") if b"bad" in r.body else ok()
    seen: list[tuple[str, object]] = []
    async with make_client(
        on_success=lambda goal, result: seen.append((goal.name, result.event_id)),
        on_failure=lambda goal, exc: seen.append((goal.name, type(exc))),
    ) as df:
        df.track_nowait("v", "good")
        df.track_nowait("v", "bad")
    assert sorted(seen, key=str) == sorted([("good", EVENT_ID), ("bad", BadRequestError)], key=str)


async def test_async_callbacks_are_awaited_before_aclose_returns(make_client: MakeClient) -> None:
    done: list[str] = []

    async def on_success(goal: Goal, result: GoalResult) -> None:
        await asyncio.sleep(0)
        done.append(goal.name)

    async with make_client(on_success=on_success) as df:
        for name in ("a", "b", "c"):
            df.track_nowait("v", name)
    assert sorted(done) == ["a", "b", "c"]


async def test_a_raising_callback_is_logged_and_the_sender_goes_on(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    def on_success(goal: Goal, result: GoalResult) -> None:
        raise RuntimeError("callback bug")

    async def on_failure(goal: Goal, exc: DataFastError) -> None:
        raise RuntimeError("async callback bug")

    async with make_client(on_success=on_success) as df:
        deliveries = [df.track_nowait("v", f"g{i}") for i in range(5)]
    assert all(d.result is not None for d in deliveries)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 5
    assert all(r.exc_info and "callback bug" in str(r.exc_info[1]) for r in errors)

    caplog.clear()
    recorder_fail = Recorder(lambda r: error(400, "bad"))
    async with DataFast(
        "df_unit_test_key", on_failure=on_failure, _transport_factory=recorder_fail.factory
    ) as df:
        df.track_nowait("v", "x")
    assert any("async callback bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_async_callbacks_still_running_at_the_deadline_are_cancelled(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aclose() gives async callbacks until the deadline (at least a grace period), then
    cancels those still running and says how many."""
    monkeypatch.setattr(_run, "GRACE", 0.01)
    started = asyncio.Event()
    finished: list[str] = []
    cancelled: list[str] = []

    async def on_success(goal: Goal, result: GoalResult) -> None:
        if goal.name == "quick":
            finished.append(goal.name)
            return
        started.set()
        try:
            await asyncio.Event().wait()  # never set: a callback that hangs
        except asyncio.CancelledError:
            cancelled.append(goal.name)
            raise

    df = make_client(on_success=on_success, concurrency=1)
    await df.start()
    df.track_nowait("v", "quick")
    df.track_nowait("v", "hangs")
    await started.wait()
    stats = await df.aclose(timeout=0)
    assert stats == Stats(enqueued=2, delivered=2)
    assert finished == ["quick"]
    assert cancelled == ["hangs"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == ["1 async callbacks did not finish in time and were cancelled"]


# -- what is retried and what is final ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, VisitorNotFoundError),
        (501, ServerError),
        (422, DataFastError),
    ],
)
async def test_final_statuses_fail_at_once_with_the_apis_message(
    make_client: MakeClient, recorder: Recorder, status: int, cls: type[DataFastError]
) -> None:
    recorder.answer = lambda r: error(status, "the API says no")
    async with make_client() as df:
        delivery = df.track_nowait("v", "signup")
        with pytest.raises(cls, match="the API says no"):
            await delivery.wait(5)
    assert len(recorder.bodies) == 1
    assert df.stats() == Stats(enqueued=1, failed=1)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retriable_statuses_are_retried_until_success(
    make_client: MakeClient, recorder: Recorder, status: int
) -> None:
    answers = iter([error(status), error(status), ok()])
    recorder.answer = lambda r: next(answers)
    async with make_client() as df:
        assert (await df.track_nowait("v", "signup").wait(5)).event_id == EVENT_ID
    assert len(recorder.bodies) == 3
    assert df.stats() == Stats(enqueued=1, delivered=1, retries=2)


async def test_transport_errors_are_retried(make_client: MakeClient, recorder: Recorder) -> None:
    calls = 0

    def answer(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransportError("connection reset")
        return ok()

    recorder.answer = answer
    async with make_client() as df:
        await df.track_nowait("v", "signup").wait(5)
    assert calls == 2


def sender_tasks() -> set[asyncio.Task[Any]]:
    """The sender's live worker tasks in this loop."""
    return {
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("datafast-sender-") and not task.done()
    }


async def test_a_transport_raising_an_unexpected_error_fails_that_goal_not_its_worker(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom transport that raises something other than TransportError (a bug of its
    own) fails that goal, final, with the real exception as its cause; the same worker goes
    on with the next goals."""
    bug = RuntimeError("a bug in a custom transport")

    def answer(request: Request) -> Response:
        if b'"broken"' in request.body:
            raise bug
        return ok()

    recorder.answer = answer
    async with make_client(concurrency=1) as df:
        workers = sender_tasks()
        broken = df.track_nowait("v", "broken")
        others = [df.track_nowait("v", f"after{i}") for i in range(3)]
        assert await df.flush(5)
        assert sender_tasks() == workers  # the one worker, still the same task
        stats = df.stats()
    assert len(workers) == 1
    error_ = broken.error
    assert type(error_) is DataFastError
    assert "internal error: the transport failed" in str(error_)
    assert error_.__cause__ is bug
    assert all(d.result is not None for d in others)
    assert recorder.names == ["broken", "after0", "after1", "after2"]  # not retried
    assert stats == Stats(enqueued=4, delivered=3, failed=1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["the transport failed on goal 'broken'"]
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is bug


async def test_a_worker_that_dies_of_a_bug_fails_its_goal_and_is_replaced(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the sender after the answer kills the worker: its traceback is logged, the
    goal it held fails with the real exception as its cause, and a new worker delivers the
    later goals (one worker here, so nobody else could)."""
    bugs: list[RuntimeError] = []
    delivered = Sender._delivered

    def delivered_with_a_bug(self: Sender, delivery: Delivery[Any], body: bytes) -> None:
        if not bugs:
            bugs.append(RuntimeError("a bug in the sender"))
            raise bugs[0]
        delivered(self, delivery, body)

    monkeypatch.setattr(Sender, "_delivered", delivered_with_a_bug)
    async with make_client(concurrency=1) as df:
        (first_worker,) = sender_tasks()
        held = df.track_nowait("v", "held")
        with pytest.raises(DataFastError, match="internal error: a sender worker died"):
            await held.wait(5)
        later = [df.track_nowait("v", f"later{i}") for i in range(5)]
        assert await df.flush(5)
        workers = sender_tasks()
        assert len(workers) == 1  # concurrency=1: one live worker, a new one
        assert first_worker.done()
        assert first_worker not in workers
    assert held.error is not None
    assert held.error.__cause__ is bugs[0]
    assert all(d.result is not None for d in later)
    assert df.stats() == Stats(enqueued=6, delivered=5, failed=1)
    died = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in died] == [
        "a sender worker died of a bug; a new one takes its place"
    ]
    assert died[0].exc_info is not None
    assert died[0].exc_info[1] is bugs[0]


async def test_attempts_are_bounded_by_max_attempts(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda r: error(503, "down")
    failures: list[DataFastError] = []
    async with make_client(
        retry=RetryPolicy(max_attempts=4, initial_delay=0),
        on_failure=lambda g, e: failures.append(e),
    ) as df:
        delivery = df.track_nowait("v", "signup")
        with pytest.raises(ServerError, match="down"):
            await delivery.wait(5)
    assert len(recorder.bodies) == 4
    assert [type(e) for e in failures] == [ServerError]
    assert df.stats() == Stats(enqueued=1, failed=1, retries=3)


async def test_retry_after_pauses_the_whole_sender(
    make_client: MakeClient, recorder: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    first = True

    def answer(request: Request) -> Response:
        nonlocal first
        times.append(loop.time())
        if first:
            first = False
            return error(429, "slow down", retry_after="0.2")
        return ok()

    recorder.answer = answer
    async with make_client(concurrency=1) as df:
        limited = df.track_nowait("v", "first")
        await until(lambda: len(times) == 1)
        others = [df.track_nowait("v", f"other{i}") for i in range(3)]
        assert await df.flush(5)
        send_result = await df.send("v", "direct")
    assert limited.result is not None
    assert all(o.result is not None for o in others)
    assert send_result.event_id == EVENT_ID
    assert all(t >= times[0] + 0.2 for t in times[1:])


async def test_a_retry_after_beyond_the_limit_fails_with_the_rate_limit_error(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda r: error(429, "try tomorrow", retry_after="86400")
    async with make_client(retry=RetryPolicy(max_retry_after=60), shutdown_timeout=0.5) as df:
        delivery = df.track_nowait("v", "signup")
        with pytest.raises(RateLimitError) as info:
            await delivery.wait(5)
    assert info.value.retry_after == 86400
    assert len(recorder.bodies) == 1


async def test_a_goal_waiting_to_retry_does_not_hold_a_slot(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answers: dict[str, int] = {}

    def answer(request: Request) -> Response:
        name = request.body.decode()
        answers[name] = answers.get(name, 0) + 1
        return error(503) if "slow" in name and answers[name] == 1 else ok()

    recorder.answer = answer
    async with make_client(
        concurrency=1, retry=RetryPolicy(initial_delay=0.3, max_delay=0.3)
    ) as df:
        retried = df.track_nowait("v", "slow")
        await until(lambda: len(recorder.bodies) == 1)
        quick = df.track_nowait("v", "quick")
        await quick.wait(5)
        # The quick goal went out while the other one waited for its retry.
        assert not retried.done()
        assert df.stats().in_flight == 1
        await retried.wait(5)


# -- the queue's policies ----------------------------------------------------------------------


async def test_a_full_queue_drops_and_counts(gated_client: MakeClient, gate: Gate) -> None:
    df = gated_client(max_queue_size=2, concurrency=1)
    async with df:
        df.track_nowait("v", "a")
        await until(lambda: gate.waiting == 1)
        kept = [df.track_nowait("v", "b"), df.track_nowait("v", "c")]
        dropped = df.track_nowait("v", "d")
        assert isinstance(dropped.error, QueueFullError)
        with pytest.raises(QueueFullError):
            await dropped.wait()
        assert df.stats() == Stats(enqueued=3, dropped=1, queued=2, in_flight=1)
        gate.open.set()
        await asyncio.gather(*(k.wait(5) for k in kept))
    assert df.stats().delivered == 3


async def test_a_full_queue_raises_with_on_full_raise(gated_client: MakeClient, gate: Gate) -> None:
    async with gated_client(max_queue_size=1, concurrency=1, on_full="raise") as df:
        df.track_nowait("v", "a")
        await until(lambda: gate.waiting == 1)
        df.track_nowait("v", "b")
        with pytest.raises(QueueFullError):
            df.track_nowait("v", "c")
        with pytest.raises(QueueFullError):
            await df.track("v", "c")
        assert df.stats().dropped == 2
        gate.open.set()


async def test_block_waits_for_room_then_queues(
    gated_client: MakeClient, gate: Gate, recorder: Recorder
) -> None:
    async with gated_client(max_queue_size=1, concurrency=1, on_full="block", timeout=5) as df:
        df.track_nowait("v", "a")
        await until(lambda: gate.waiting == 1)
        df.track_nowait("v", "b")
        blocked = asyncio.ensure_future(df.track("v", "c"))
        await until(lambda: len(recorder.bodies) == 1)
        assert not blocked.done()
        with pytest.raises(QueueFullError):  # it cannot wait
            df.track_nowait("v", "d")
        gate.open.set()
        delivery = await blocked
        await delivery.wait(5)
    assert sorted(recorder.names) == ["a", "b", "c"]
    assert df.stats().dropped == 1


async def test_block_gives_up_after_timeout(gated_client: MakeClient, gate: Gate) -> None:
    async with gated_client(
        max_queue_size=1, concurrency=1, on_full="block", timeout=0.05, shutdown_timeout=0
    ) as df:
        df.track_nowait("v", "a")
        await until(lambda: gate.waiting == 1)
        df.track_nowait("v", "b")
        with pytest.raises(QueueFullError, match="stayed full"):
            await df.track("v", "c")
        assert df.stats().dropped == 1


async def test_drops_are_warned_about_at_a_limited_rate(
    gated_client: MakeClient, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """The first drop is said at once; the rest of the window's drops in one line at close,
    and the counts add up to ``dropped``."""
    async with gated_client(max_queue_size=1, concurrency=1, shutdown_timeout=0) as df:
        df.track_nowait("v", "a")
        await until(lambda: gate.waiting == 1)
        for _ in range(100):
            df.track_nowait("v", "b")  # the first is queued, the other 99 dropped
        assert df.stats().dropped == 99
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    counts = [int(re.search(r"(\d+) goals? dropped", line)[1]) for line in lines]  # type: ignore[index]
    assert counts == [1, 98]
    assert all("max_queue_size=1" in line for line in lines)
    assert df.stats().dropped == sum(counts)


async def test_goals_waiting_to_retry_count_against_max_queue_size(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """While the API keeps failing, queued goals and goals waiting to retry together never
    pass max_queue_size; goals beyond that are dropped and counted."""
    recorder.answer = lambda r: error(503)
    bound = 5
    seen: list[Stats] = []
    tracked = 0
    async with make_client(
        max_queue_size=bound,
        concurrency=2,
        shutdown_timeout=0,
        retry=RetryPolicy(max_attempts=3, initial_delay=0.02, max_delay=0.02),
    ) as df:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while df.stats().failed < 10:  # goals run out of attempts: room comes back
            assert loop.time() < deadline, df.stats()
            df.track_nowait("v", f"g{tracked}")
            tracked += 1
            # The handler answers at once: every goal in flight is waiting to retry here.
            seen.append(df.stats())
            await asyncio.sleep(0)
    assert all(balanced(stats) for stats in seen)
    assert max(stats.queued + stats.in_flight for stats in seen) == bound
    # The bound was reached with goals waiting to retry in it, and goals were dropped then.
    full = [s for s in seen if s.in_flight > 0 and s.queued + s.in_flight == bound]
    assert full
    assert seen[-1].dropped > 0
    final = df.stats()
    assert final.enqueued + final.dropped == tracked
    assert final.retries > 0


# -- accounting --------------------------------------------------------------------------------


async def test_the_ledger_balances_at_every_moment(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client: list[DataFast] = []
    observed: list[Stats] = []

    def look() -> None:
        observed.append(client[0].stats())

    def answer(request: Request) -> Response:
        look()
        if b"bad" in request.body:
            return error(400)
        return error(503) if len(observed) % 3 == 0 else ok()

    recorder.answer = answer
    df = make_client(
        max_queue_size=50,
        concurrency=4,
        on_success=lambda g, r: look(),
        on_failure=lambda g, e: look(),
    )
    client.append(df)
    async with df:
        for i in range(200):
            df.track_nowait("v", "bad" if i % 7 == 0 else "good")
            look()
            if i % 10 == 0:
                await asyncio.sleep(0)
        await df.flush(5)
    final = df.stats()
    assert len(observed) > 400
    assert all(balanced(stats) for stats in observed)
    assert final.enqueued + final.dropped == 200
    assert final.failed > 0
    assert final.delivered > 0
    assert final.retries > 0
    assert final.queued == final.in_flight == 0


async def test_repeated_identical_failures_are_logged_once_with_a_count(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.answer = lambda r: error(404, "Visitor has no pageviews on this website")
    async with make_client() as df:
        for _ in range(50):
            df.track_nowait("v", "signup")
    lines = [r.getMessage() for r in caplog.records if "no pageviews" in r.getMessage()]
    assert len(lines) == 2
    assert "49 more goals failed the same way" in lines[1]


async def test_a_failure_summary_soon_after_the_first_failure_says_when_in_words(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Goals that fail within a moment are summed up at close: the line said "in the last
    0 s"; it says "just now" or the tenths of a second."""
    recorder.answer = lambda r: error(404, "Visitor has no pageviews on this website")
    async with make_client() as df:
        for _ in range(5):
            df.track_nowait("v", "signup")
    lines = [r.getMessage() for r in caplog.records if "same way" in r.getMessage()]
    assert len(lines) == 1
    assert re.search(r"\) (just now|in the last \d\.\d s)$", lines[0]), lines[0]


@pytest.mark.parametrize(
    ("elapsed", "said"),
    [
        (0.0, "just now"),
        (0.06, "just now"),
        (0.2, "in the last 0.2 s"),
        (3.46, "in the last 3.5 s"),
        (9.97, "in the last 10 s"),
        (75.2, "in the last 75 s"),
    ],
)
def test_a_failure_summary_says_its_window_for_any_length(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, elapsed: float, said: str
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(_reporting, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    log = _reporting.FailureLog()
    for _ in range(3):
        log.record("goal 'signup'", "goals", TransportError("connection refused"))
    clock[0] += elapsed
    log.summarise_all()
    assert caplog.messages[-1] == (
        f"2 more goals failed the same way (like: connection refused) {said}"
    )


# -- send() -----------------------------------------------------------------------------------


async def test_send_returns_the_answer_and_leaves_counters_and_callbacks_alone(
    make_client: MakeClient, recorder: Recorder
) -> None:
    called: list[object] = []
    async with make_client(on_success=lambda g, r: called.append(r)) as df:
        result = await df.send("v", "signup", description="now")
        assert result.event_id == EVENT_ID
        recorder.answer = lambda r: error(404, "Visitor has no pageviews")
        with pytest.raises(VisitorNotFoundError, match="no pageviews"):
            await df.send("v", "signup")
    assert called == []
    assert df.stats() == Stats()


async def test_send_retries_then_raises_the_final_error(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda r: error(502, "bad gateway")
    async with make_client(retry=RetryPolicy(max_attempts=3, initial_delay=0)) as df:
        with pytest.raises(ServerError, match="bad gateway"):
            await df.send("v", "signup")
    assert len(recorder.bodies) == 3


async def test_send_shares_the_concurrency_limit(
    gated_client: MakeClient, gate: Gate, recorder: Recorder
) -> None:
    async with gated_client(concurrency=2) as df:
        for name in ("a", "b", "c"):
            df.track_nowait("v", name)
        sent = asyncio.ensure_future(df.send("v", "direct"))
        await until(lambda: gate.waiting >= 2)
        # Every task is now blocked: the send() too, on the limit, not on the network.
        await anyio.wait_all_tasks_blocked()
        assert gate.waiting == 2
        assert sorted(recorder.names) == ["a", "b"]
        assert not sent.done()
        gate.open.set()
        assert (await sent).event_id == EVENT_ID
        assert await df.flush(5)
    assert gate.peak == 2
    assert sorted(recorder.names) == ["a", "b", "c", "direct"]


# -- flush and shutdown ------------------------------------------------------------------------


async def test_flush_returns_false_when_its_timeout_comes_first(
    gated_client: MakeClient, gate: Gate
) -> None:
    async with gated_client() as df:
        df.track_nowait("v", "a")
        assert await df.flush(timeout=0.01) is False
        gate.open.set()
        assert await df.flush(timeout=5) is True


async def test_flush_with_nothing_pending_returns_at_once(make_client: MakeClient) -> None:
    async with make_client() as df:
        assert await df.flush(timeout=0)


async def test_aclose_reports_goals_still_undelivered_at_its_deadline(
    gated_client: MakeClient, gate: Gate, recorder: Recorder
) -> None:
    failures: list[tuple[str, DataFastError]] = []
    df = gated_client(concurrency=2, on_failure=lambda g, e: failures.append((g.name, e)))
    await df.start()
    deliveries = [df.track_nowait("v", f"g{i}") for i in range(5)]
    await until(lambda: gate.waiting == 2)
    stats = await df.aclose(timeout=0.05)
    assert stats == Stats(enqueued=5, failed=5)
    assert sorted(name for name, _ in failures) == [f"g{i}" for i in range(5)]
    assert all(isinstance(e, ShutdownError) for _, e in failures)
    assert all(isinstance(d.error, ShutdownError) for d in deliveries)
    assert recorder.transports[0].closed


async def test_aclose_delivers_what_it_can_before_the_deadline(make_client: MakeClient) -> None:
    df = make_client()
    await df.start()
    deliveries = [df.track_nowait("v", f"g{i}") for i in range(100)]
    stats = await df.aclose(timeout=5)
    assert stats == Stats(enqueued=100, delivered=100)
    assert all(d.result is not None for d in deliveries)


async def test_aclose_fails_retries_that_would_come_after_the_deadline_at_once(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda r: error(503, "busy", retry_after="30")
    df = make_client()
    await df.start()
    delivery = df.track_nowait("v", "x")
    await until(lambda: len(recorder.bodies) == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await df.aclose(timeout=10)
    assert loop.time() - started < 5
    assert isinstance(delivery.error, ShutdownError)
    assert isinstance(delivery.error.__cause__, ServerError)


async def test_aclose_is_idempotent(make_client: MakeClient) -> None:
    df = make_client()
    df.track_nowait("v", "a")
    first = await df.aclose()
    assert first == await df.aclose() == Stats(enqueued=1, delivered=1)


async def test_aclose_finishes_even_when_its_task_is_cancelled(
    gated_client: MakeClient, gate: Gate
) -> None:
    failures: list[DataFastError] = []
    df = gated_client(shutdown_timeout=0.2, on_failure=lambda g, e: failures.append(e))
    entered = asyncio.Event()

    async def owner() -> None:
        async with df:
            df.track_nowait("v", "a")
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(owner())
    await entered.wait()
    await until(lambda: gate.waiting == 1)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # cancelled again while aclose() runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert df.stats() == Stats(enqueued=1, failed=1)
    assert [type(e) for e in failures] == [ShutdownError]


async def test_track_after_aclose_raises_until_started_again(
    make_client: MakeClient, recorder: Recorder
) -> None:
    df = make_client()
    await df.start()
    df.track_nowait("v", "a")
    await df.aclose()
    with pytest.raises(ClientClosedError):
        df.track_nowait("v", "b")
    with pytest.raises(ClientClosedError):
        await df.track("v", "b")
    with pytest.raises(ClientClosedError):
        await df.send("v", "b")
    await df.start()
    assert df.stats() == Stats()  # a fresh run
    await df.track_nowait("v", "c").wait(5)
    await df.aclose()
    assert recorder.names == ["a", "c"]
    assert len(recorder.transports) == 2
    assert all(t.closed for t in recorder.transports)


def test_a_closed_client_starts_again_in_a_new_event_loop(recorder: Recorder) -> None:
    df = DataFast("df_unit_test_key", _transport_factory=recorder.factory)

    async def lifespan(name: str) -> Stats:
        async with df:
            await df.track_nowait("v", name).wait(5)
        return df.stats()

    assert asyncio.run(lifespan("one")) == Stats(enqueued=1, delivered=1)
    assert asyncio.run(lifespan("two")) == Stats(enqueued=1, delivered=1)
    assert recorder.names == ["one", "two"]


# -- honest outcomes -----------------------------------------------------------------------------


class _ThenWait(RetryPolicy):
    """Two immediate retries, then a wait of 30 s: a goal is then waiting to retry past any
    shutdown deadline a test sets."""

    __slots__ = ()

    def backoff(self, retry: int) -> float:
        return 0.0 if retry < 3 else 30.0


async def test_a_goal_cut_at_the_shutdown_deadline_may_have_been_delivered(
    gated_client: MakeClient, gate: Gate, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    df = gated_client(concurrency=2)
    await df.start()
    deliveries = [df.track_nowait("v", f"g{i}") for i in range(5)]
    await until(lambda: gate.waiting == 2)
    await df.aclose(timeout=0.05)
    errors = [d.error for d in deliveries]
    assert all(isinstance(e, ShutdownError) for e in errors)
    cut = sorted(recorder.names)
    assert cut == ["g0", "g1"]
    flags = {d.goal.name: d.error.maybe_delivered for d in deliveries}  # type: ignore[union-attr]
    # The two whose requests were out may be recorded; the three never sent cannot be.
    assert flags == {"g0": True, "g1": True, "g2": False, "g3": False, "g4": False}
    assert len({id(e) for e in errors}) == 5  # each goal its own error
    lines = [
        r.getMessage() for r in caplog.records if "shutdown deadline (0.05 s):" in r.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0].startswith("5 goals were still undelivered at the shutdown deadline")


async def test_shutdown_error_says_whether_an_earlier_attempt_may_have_arrived(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """Goals waiting to retry at the deadline: one that had a reset earlier may have been
    recorded; one that only got answers, or was only refused a connection, cannot have been.
    Each holds a summary of its last error, without a traceback."""
    script: dict[str, list[object]] = {
        "reset_then_answered": ["reset", 503, 503],
        "answered_only": [503, 503, 503],
        "refused_only": ["refused", "refused", "refused"],
    }

    def answer(request: Request) -> Response:
        step = script[json.loads(request.body)["name"]].pop(0)
        if step == "reset":
            raise TransportError("the connection was reset")
        if step == "refused":
            raise TransportError("connection refused", maybe_delivered=False)
        assert isinstance(step, int)
        return error(step, "busy")

    recorder.answer = answer
    df = make_client(retry=_ThenWait(), concurrency=1)
    await df.start()
    deliveries = {name: df.track_nowait("v", name) for name in script}
    await until(lambda: not any(script.values()))
    assert df.stats() == Stats(enqueued=3, in_flight=3, retries=6)  # all waiting to retry
    await df.aclose(timeout=0.05)
    errors = {name: d.error for name, d in deliveries.items()}
    assert all(type(e) is ShutdownError for e in errors.values())
    flags = {name: e.maybe_delivered for name, e in errors.items()}  # type: ignore[union-attr]
    assert flags == {"reset_then_answered": True, "answered_only": False, "refused_only": False}
    causes = {name: e.__cause__ for name, e in errors.items()}  # type: ignore[union-attr]
    assert isinstance(causes["reset_then_answered"], ServerError)
    assert isinstance(causes["answered_only"], ServerError)
    assert isinstance(causes["refused_only"], TransportError)
    assert str(causes["refused_only"]) == "connection refused"
    for cause in causes.values():
        assert cause is not None
        assert cause.__traceback__ is None  # the refusals were raised: summaries have none
        assert cause.__cause__ is None
        assert cause.__context__ is None


async def test_attempts_that_keep_failing_are_warned_about_even_when_delivered(
    make_client: MakeClient,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first failed attempt is said at once; the next ones in one line per window,
    counted by status; the goal is delivered in the end."""
    clock = [1000.0]
    monkeypatch.setattr(_reporting, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    answers = [error(503), error(503), error(502), error(503)]

    def answer(request: Request) -> Response:
        if len(answers) == 1:
            clock[0] += 31  # the window (30 s) has passed
        return answers.pop(0) if answers else ok()

    recorder.answer = answer
    async with make_client() as df:
        result = await df.track_nowait("v", "signup").wait(5)
    assert result.event_id == EVENT_ID
    assert df.stats() == Stats(enqueued=1, delivered=1, retries=4)
    lines = [r.getMessage() for r in caplog.records if "retried" in r.getMessage()]
    assert lines == [
        "an attempt failed and will be retried: 503 x1",
        "attempts keep failing and are retried: 502 x1, 503 x2 in the last 31 s",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "retried" in r.getMessage())


# -- disabled ---------------------------------------------------------------------------------


async def test_disabled_validates_and_sends_nothing(recorder: Recorder) -> None:
    df = DataFast(enabled=False, _transport_factory=recorder.factory)
    delivery = df.track_nowait("v", "Sign Up")
    assert delivery.done()
    assert delivery.result == GoalResult(None, "disabled")
    assert (await df.track("v", "x")).result == GoalResult(None, "disabled")
    assert await df.send("v", "x") == GoalResult(None, "disabled")
    assert await df.flush()
    assert await df.aclose() == Stats()
    assert recorder.transports == []


# -- threads, garbage collection, loops ending -------------------------------------------------


async def test_track_nowait_from_worker_threads(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async with make_client() as df:

        def work(n: int) -> None:
            for i in range(50):
                df.track_nowait("v", f"t{n}-{i}")

        await asyncio.gather(*(asyncio.to_thread(work, n) for n in range(4)))
        assert await df.flush(timeout=5)
    assert len(recorder.bodies) == 200
    assert df.stats() == Stats(enqueued=200, delivered=200)


async def test_validation_errors_are_raised_in_the_calling_thread(make_client: MakeClient) -> None:
    async with make_client() as df:
        caught: list[BaseException] = []

        def work() -> None:
            try:
                df.track_nowait("v", "identify")
            except Exception as exc:
                caught.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        await asyncio.to_thread(thread.join)
    assert [type(e).__name__ for e in caught] == ["ValidationError"]


def test_goals_handed_over_before_start_are_sent_when_it_starts(recorder: Recorder) -> None:
    df = DataFast("df_unit_test_key", _transport_factory=recorder.factory)
    thread = threading.Thread(target=lambda: df.track_nowait("v", "early"))
    thread.start()
    thread.join()
    assert df.stats().queued == 1

    async def main() -> Stats:
        return await df.aclose()

    assert asyncio.run(main()) == Stats(enqueued=1, delivered=1)


def test_a_client_dropped_with_pending_goals_warns(recorder: Recorder) -> None:
    clients = [DataFast("df_unit_test_key", _transport_factory=recorder.factory)]
    thread = threading.Thread(target=lambda: clients[0].track_nowait("v", "lost"))
    thread.start()
    thread.join()
    with pytest.warns(ResourceWarning, match="1 goal pending"):
        clients.clear()  # the last reference: no cycle keeps a client alive


def test_a_loop_that_ends_without_aclose_warns_and_settles_the_goals() -> None:
    gate_holder: list[Gate] = []
    failures: list[DataFastError] = []

    def factory() -> Any:
        gate = Gate()
        gate_holder.append(gate)
        return Recorder(gate).factory()

    df = DataFast(
        "df_unit_test_key", on_failure=lambda g, e: failures.append(e), _transport_factory=factory
    )
    deliveries = []

    async def main() -> None:
        deliveries.append(df.track_nowait("v", "a"))
        deliveries.append(df.track_nowait("v", "b"))
        await until(lambda: gate_holder[0].waiting > 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
    assert any(
        issubclass(w.category, ResourceWarning) and "2 goals" in str(w.message) for w in caught
    )
    assert all(isinstance(d.error, ShutdownError) for d in deliveries)
    assert len(failures) == 2
    assert df.stats() == Stats(enqueued=2, failed=2)

    # The same client works again in a new loop.
    async def again() -> None:
        gate_holder.clear()
        delivery = df.track_nowait("v", "c")
        await until(lambda: bool(gate_holder) and gate_holder[0].waiting > 0)
        gate_holder[0].open.set()
        await delivery.wait(5)
        await df.aclose()

    asyncio.run(again())


async def test_an_unawaited_failed_delivery_never_warns(
    gated_client: MakeClient, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed goal whose Delivery nobody awaited, or one awaited only until its timeout,
    is collected without asyncio's "exception was never retrieved" (an ERROR log record of
    the loop's exception handler, which filterwarnings=error would not catch)."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    gate.answer = lambda r: error(400)
    async with gated_client() as df:
        unawaited = df.track_nowait("v", "never_awaited")
        timed_out = df.track_nowait("v", "awaited_until_its_timeout")
        with pytest.raises(TimeoutError):
            await timed_out.wait(timeout=0)
        gate.open.set()
        assert await df.flush(5)
    assert isinstance(unawaited.error, BadRequestError)
    assert isinstance(timed_out.error, BadRequestError)
    del unawaited, timed_out
    gc.collect()
    names = {"never_awaited", "awaited_until_its_timeout"}
    alive = [o for o in gc.get_objects() if isinstance(o, Delivery) and o.goal.name in names]
    assert alive == []  # both were collected
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_delivery_wait_times_out_without_settling(
    gated_client: MakeClient, gate: Gate
) -> None:
    async with gated_client() as df:
        delivery = df.track_nowait("v", "x")
        with pytest.raises(TimeoutError):
            await delivery.wait(timeout=0.01)
        assert not delivery.done()
        gate.open.set()
        assert (await delivery.wait(5)).event_id == EVENT_ID


async def test_aclose_finishes_inside_a_cancelled_anyio_scope(
    gated_client: MakeClient, recorder: Recorder
) -> None:
    """anyio's cancellation is level-triggered: every await in a cancelled scope is cancelled."""
    df = gated_client(shutdown_timeout=0.2)
    with anyio.move_on_after(0.05) as scope:
        async with df:
            df.track_nowait("v", "a")
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert df.stats() == Stats(enqueued=1, failed=1)
    assert recorder.transports[0].closed


async def test_any_final_error_says_whether_an_earlier_attempt_may_have_arrived(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """A goal reset once, then refused for good (400), may still be recorded: its final
    APIError says so; one that only got answers says it was not."""
    script: dict[str, list[object]] = {
        "reset_then_refused": ["reset", 400],
        "busy_then_refused": [503, 400],
        "refused": [400],
    }

    def answer(request: Request) -> Response:
        step = script[json.loads(request.body)["name"]].pop(0)
        if step == "reset":
            raise TransportError("the connection was reset")
        assert isinstance(step, int)
        return error(step, "nope")

    recorder.answer = answer
    async with make_client() as df:
        deliveries = {name: df.track_nowait("v", name) for name in script}
        assert await df.flush(5)
    flags = {name: d.error.maybe_delivered for name, d in deliveries.items()}  # type: ignore[union-attr]
    assert flags == {"reset_then_refused": True, "busy_then_refused": False, "refused": False}
    assert all(isinstance(d.error, BadRequestError) for d in deliveries.values())


async def test_gateway_pages_that_differ_per_request_are_one_kind_of_failure(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway's page carries a request id (Cloudflare's Ray ID, nginx's $request_id):
    1,000 goals failing on it make two log lines, not a thousand."""
    ids = itertools.count()
    recorder.answer = lambda r: Response(
        502, f"<html><body>Bad gateway. Ray ID: {next(ids):016x}</body></html>".encode()
    )
    async with make_client(retry=RetryPolicy(max_attempts=1)) as df:
        for _ in range(1_000):
            df.track_nowait("v", "signup")
        assert await df.flush(5)
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("goal 'signup' failed: HTTP 502")
    assert "999 more goals failed the same way" in lines[1]


async def test_a_blocked_track_cancelled_as_room_frees_hands_the_room_on(
    gate: Gate, gated_client: MakeClient
) -> None:
    """Found in review: a caller woken for room and cancelled in the same step passed the
    wake-up on to nobody, and the next blocked caller slept its whole timeout."""
    df = gated_client(max_queue_size=1, concurrency=1, on_full="block", timeout=30)
    await df.start()
    df.track_nowait("v", "in_flight")
    await until(lambda: gate.waiting == 1)
    df.track_nowait("v", "queued")  # the queue is full
    first = asyncio.ensure_future(df.track("v", "first"))
    second = asyncio.ensure_future(df.track("v", "second"))
    await anyio.wait_all_tasks_blocked()
    df._run.queue.take()  # room frees: the first caller is woken ...
    first.cancel()  # ... and cancelled in the same step
    with pytest.raises(asyncio.CancelledError):
        await first
    delivery = await asyncio.wait_for(second, 1)  # not after its 30 s timeout
    assert delivery.goal.name == "second"
    gate.open.set()
    await df.aclose(timeout=1)
