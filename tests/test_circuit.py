"""The circuit breaker, driven through the client on a mock transport: an answer that every
request would get stops the sending, fails the goals at once (in chunks), and a probe after the
cool-down decides when to send again."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from datafast_async import (
    APIError,
    AuthenticationError,
    DataFast,
    DataFastError,
    Goal,
    Stats,
    VisitorNotFoundError,
)
from datafast_async._circuit import Circuit, CircuitState
from datafast_async._delivery import Delivery
from datafast_async._transport import Request, Response

from ._fakes import (
    EVENT_ID,
    NO_WAIT_NO_PROBE,
    NO_WAIT_QUICK_PROBE,
    Gate,
    Recorder,
    error,
    ok,
    until,
)

MakeClient = Callable[..., DataFast]


BAD_ANSWERS = {
    "401": error(401, "Invalid API key"),
    "403": error(403, "Tracking is suspended for this website"),
    "407 from a proxy": Response(
        407, b"<html><body>Proxy Authentication Required</body></html>", "Proxy Auth Required"
    ),
    "301": Response(
        301, b"", "Moved Permanently", headers={"Location": "https://elsewhere.example/goals"}
    ),
    "200 HTML page": Response(
        200,
        b"<html><body><h1>Welcome to the hotel Wi-Fi</h1></body></html>",
        "OK",
        headers={"Content-Type": "text/html"},
    ),
    "404 HTML page of a wrong host": Response(
        404,
        b"<html><body><h1>Not Found</h1><p>nginx</p></body></html>",
        "Not Found",
        headers={"Content-Type": "text/html"},
    ),
}


def circuit_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "datafast_event", None) == "circuit"]


def circuit_of(df: DataFast, status: int | None = None) -> Circuit:
    """The client's circuit; for a 403 (an endpoint's own answer), the goals endpoint's."""
    sender = df._run.sender
    circuit: Circuit = (
        sender.endpoint_circuits["/api/v1/goals"] if status == 403 else sender.circuit
    )
    return circuit


async def half_open(df: DataFast) -> None:
    """Wait for the end of the cool-down (milliseconds in these tests)."""
    circuit = circuit_of(df)
    await until(lambda: circuit.refresh() is CircuitState.HALF_OPEN)


@pytest.mark.parametrize("answer", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
async def test_an_answer_every_request_would_get_fails_every_goal_for_a_handful_of_requests(
    make_client: MakeClient,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    answer: Response,
) -> None:
    async def respond(request: Request) -> Response:
        await asyncio.sleep(0)  # every worker's request is out before the first answer
        return answer

    recorder.answer = respond
    reported: Counter[str] = Counter()

    def on_failure(goal: Goal, exc: DataFastError) -> None:
        reported[goal.name] += 1

    async with make_client(retry=NO_WAIT_NO_PROBE, concurrency=8, on_failure=on_failure) as df:
        deliveries = [df.track_nowait("v", f"g{i}") for i in range(5000)]
        assert await df.flush(10)
        stats = df.stats()
        assert circuit_of(df, answer.status).state is CircuitState.OPEN
    requests = len(recorder.bodies)
    assert 1 <= requests <= 8 + 1
    assert stats == Stats(enqueued=5000, failed=5000)
    assert len(reported) == 5000
    assert set(reported.values()) == {1}

    errors = [d.error for d in deliveries]
    assert all(isinstance(e, APIError) and e.opens_circuit for e in errors)
    assert len({type(e) for e in errors}) == 1
    assert len({str(e) for e in errors}) == 1
    assert len({id(e) for e in errors}) == 5000  # each goal its own instance
    # The goals that were answered hold their own answer's error; every other goal holds a
    # copy whose cause is the circuit's copy of the answer that opened it: one shared cause,
    # detached (no traceback, no cause of its own), and no goal's own instance, so awaiting a
    # goal never chains frames onto another's error.
    copies = [e for e in errors if e is not None and e.__cause__ is not None]
    assert len(copies) == 5000 - requests
    causes = {id(e.__cause__) for e in copies}
    assert len(causes) == 1
    shared = copies[0].__cause__
    assert shared is not None
    assert not any(e is shared for e in errors)
    assert (type(shared), str(shared)) == (type(errors[0]), str(errors[0]))
    assert shared.__traceback__ is None
    assert shared.__cause__ is None
    assert all(e.__traceback__ is None for e in copies)

    lines = circuit_lines(caplog)
    assert [r.levelno for r in lines] == [logging.ERROR]  # opened once; never closed
    said = re.search(r"the (\d+) (?:goals )?waiting", lines[0].getMessage())
    assert said is not None
    assert int(said[1]) == 5000 - requests  # the goals not sent when it opened


async def test_goals_are_failed_in_chunks_while_other_tasks_run(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """Failing 5,000 goals never holds the loop: a task that yields at every step sees the
    count rise by about a thousand a step (with eight workers ready to take part)."""
    recorder.answer = lambda request: error(401, "Invalid API key")
    seen: list[int] = []
    watcher: list[asyncio.Task[None]] = []

    async def watch(df: DataFast) -> None:
        while df.stats().failed < 5000:
            seen.append(df.stats().failed)
            await asyncio.sleep(0)
        seen.append(df.stats().failed)

    def on_failure(goal: Goal, exc: DataFastError) -> None:
        if not watcher:  # the first failure: the circuit has just opened
            watcher.append(asyncio.ensure_future(watch(df)))

    df = make_client(retry=NO_WAIT_NO_PROBE, concurrency=8, on_failure=on_failure)
    async with df:
        for i in range(5000):
            df.track_nowait("v", f"g{i}")
        assert await df.flush(10)
        await watcher[0]
    assert len(recorder.bodies) == 1
    assert seen[0] < 5000  # the watcher ran before the last goal failed
    steps = [later - earlier for earlier, later in itertools.pairwise(seen) if later > earlier]
    assert len(steps) >= 4
    assert max(steps) <= 1000 + 1


async def test_send_raises_the_open_circuits_error_without_a_request(
    make_client: MakeClient, recorder: Recorder
) -> None:
    recorder.answer = lambda request: error(401, "Invalid API key")
    async with make_client(retry=NO_WAIT_NO_PROBE) as df:
        opener = df.track_nowait("v", "opener")
        with pytest.raises(AuthenticationError):
            await opener.wait(5)
        with pytest.raises(AuthenticationError, match="Invalid API key") as info:
            await df.send("v", "direct")
        late = df.track_nowait("v", "late")  # a goal tracked while open fails at once
        with pytest.raises(AuthenticationError):
            await late.wait(5)
    assert recorder.names == ["opener"]
    assert info.value is not opener.error
    assert late.error is not opener.error
    assert late.error is not None
    # Both copies share one cause: the circuit's detached copy of the opener's answer.
    assert info.value.__cause__ is late.error.__cause__
    assert info.value.__cause__ is not opener.error
    assert str(info.value.__cause__) == str(opener.error)
    assert df.stats() == Stats(enqueued=2, failed=2)


async def test_after_the_cool_down_one_goal_probes_and_the_others_wait_for_its_answer(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.answer = lambda request: error(401, "Invalid API key")
    held_then_ok = Gate()

    async with make_client(retry=NO_WAIT_QUICK_PROBE, concurrency=4) as df:
        refused = df.track_nowait("v", "refused")
        with pytest.raises(AuthenticationError):
            await refused.wait(5)
        with pytest.raises(AuthenticationError):  # failed at once by the open circuit
            await df.track_nowait("v", "while_open").wait(5)
        recorder.answer = held_then_ok  # the key works again
        await half_open(df)
        probe = df.track_nowait("v", "probe")
        await until(lambda: len(recorder.bodies) == 2)
        waiting = [df.track_nowait("v", f"waits{i}") for i in range(3)]
        await anyio.wait_all_tasks_blocked()
        assert recorder.names == ["refused", "probe"]  # nothing of theirs while it is out
        assert not any(d.done() for d in waiting)
        held_then_ok.open.set()
        assert (await probe.wait(5)).event_id == EVENT_ID
        assert await df.flush(5)
        assert circuit_of(df).state is CircuitState.CLOSED
    assert all(d.result is not None for d in waiting)
    assert sorted(recorder.names[2:]) == ["waits0", "waits1", "waits2"]
    assert df.stats() == Stats(enqueued=6, delivered=4, failed=2)
    lines = circuit_lines(caplog)
    assert [r.levelno for r in lines] == [logging.ERROR, logging.ERROR]
    assert "every request would fail the same way" in lines[0].getMessage()
    assert "the 0 goals waiting" in lines[0].getMessage()
    assert lines[1].getMessage().startswith("DataFast answered the probe")
    # The goal whose own answer was the refusal counts, with the one failed while open.
    assert "2 goals failed while every request was refused" in lines[1].getMessage()


async def test_a_refused_probe_doubles_the_cool_down_and_an_unanswered_one_keeps_it(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """401 after 401 doubles the cool-down up to max_circuit_cooldown; a probe that gets no
    answer of DataFast's (a 503) opens the circuit again for the same cool-down."""
    recorder.answer = lambda request: error(401, "Invalid API key")
    async with make_client(retry=NO_WAIT_QUICK_PROBE, concurrency=2) as df:
        circuit = circuit_of(df)
        opener = df.track_nowait("v", "opens")
        with pytest.raises(AuthenticationError):
            await opener.wait(5)
        sent = 1
        for answer in (401, 503, 401, 401, 401):
            recorder.answer = lambda request, status=answer: error(status, "still no")  # type: ignore[misc]
            await half_open(df)
            probe = df.track_nowait("v", f"probe_{answer}")
            sent += 1
            await until(lambda sent=sent: len(recorder.bodies) == sent)  # type: ignore[misc]
            assert circuit.state is CircuitState.OPEN
            with pytest.raises(DataFastError):
                await probe.wait(5)
    assert df.stats() == Stats(enqueued=6, failed=6)
    opened = circuit_lines(caplog)[0].getMessage()
    assert opened.endswith("a probe in 0.005 s")
    cool_downs = [
        float(re.search(r"the next probe in ([0-9.]+) s", r.getMessage())[1])  # type: ignore[index]
        for r in circuit_lines(caplog)[1:]
    ]
    # 401: doubled; 503: no line, same cool-down; then doubled again up to the maximum.
    assert cool_downs == [0.01, 0.02, 0.04, 0.04]


async def test_a_send_may_be_the_probe(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.answer = lambda request: error(401, "Invalid API key")
    async with make_client(retry=NO_WAIT_QUICK_PROBE) as df:
        with pytest.raises(DataFastError):
            await df.track_nowait("v", "refused").wait(5)
        recorder.answer = lambda request: ok()
        await half_open(df)
        assert (await df.send("v", "direct")).event_id == EVENT_ID
        assert circuit_of(df).state is CircuitState.CLOSED
        assert (await df.track_nowait("v", "after").wait(5)).event_id == EVENT_ID
    assert recorder.names == ["refused", "direct", "after"]
    lines = [r.getMessage() for r in circuit_lines(caplog)]
    assert len(lines) == 2
    assert lines[1].startswith("DataFast answered the probe")


async def test_datafasts_own_404_does_not_open_the_circuit(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A 404 in DataFast's envelope is about the goal (no pageview yet), not the key."""
    recorder.answer = lambda request: error(404, "Visitor has no pageviews on this website")
    async with make_client(retry=NO_WAIT_NO_PROBE) as df:
        deliveries = [df.track_nowait("v", f"g{i}") for i in range(50)]
        assert await df.flush(5)
        assert circuit_of(df).state is CircuitState.CLOSED
        with pytest.raises(VisitorNotFoundError):
            await df.send("v", "direct")
    assert len(recorder.bodies) == 51  # every goal was sent
    assert all(isinstance(d.error, VisitorNotFoundError) for d in deliveries)
    assert all(d.error is not None and d.error.__cause__ is None for d in deliveries)
    assert circuit_lines(caplog) == []


# -- found in review: the probe and send() --------------------------------------------------------


async def test_a_storm_of_sends_with_a_refused_key_costs_a_handful_of_requests(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """Sends waiting for a slot when the circuit opens raise its error without a request."""
    refused = Gate(lambda request: error(401, "Invalid API key"))
    recorder.answer = refused
    async with make_client(retry=NO_WAIT_NO_PROBE, concurrency=4) as df:
        sends = [asyncio.ensure_future(df.send("v", f"s{i}")) for i in range(200)]
        await until(lambda: len(recorder.bodies) == 4)
        refused.open.set()
        results = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len(recorder.bodies) <= 5


async def test_a_probe_cut_by_a_dead_worker_lets_another_goal_probe(
    make_client: MakeClient, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafast_async._sender import Sender

    recorder.answer = lambda request: error(401, "Invalid API key")
    async with make_client(retry=NO_WAIT_QUICK_PROBE, concurrency=2) as df:
        with pytest.raises(AuthenticationError):
            await df.track_nowait("v", "opener").wait(5)
        recorder.answer = lambda request: ok()  # the key works again
        await half_open(df)
        original = Sender._delivered
        died: list[object] = []

        def die_once(self: Sender, delivery: Delivery[Any], body: bytes) -> None:
            if not died:
                died.append(True)
                raise RuntimeError("a bug while the probe's answer came back")
            original(self, delivery, body)

        monkeypatch.setattr(Sender, "_delivered", die_once)
        probe = df.track_nowait("v", "probe")
        waiting = [df.track_nowait("v", f"w{i}") for i in range(4)]
        assert await df.flush(5)  # not stuck half-open with a probe nobody sends
        assert died
        assert isinstance(probe.error, DataFastError)  # the worker died holding it
        assert all(d.result is not None for d in waiting)
        assert circuit_of(df).state is CircuitState.CLOSED


async def test_a_send_probe_cancelled_lets_the_waiting_goals_probe_at_once(
    make_client: MakeClient, recorder: Recorder
) -> None:
    """A send() that probes and is cancelled learnt nothing: the goals that waited go on
    probing, instead of failing with the old refusal for another cool-down."""
    recorder.answer = lambda request: error(401, "Invalid API key")
    hang = asyncio.Event()

    async def hangs_then_ok(request: Request) -> Response:
        if "probe_send" in request.body.decode():
            await hang.wait()
        return ok()

    async with make_client(retry=NO_WAIT_NO_PROBE, concurrency=2) as df:
        with pytest.raises(AuthenticationError):
            await df.track_nowait("v", "opener").wait(5)
        recorder.answer = hangs_then_ok
        circuit = circuit_of(df)
        circuit.until = 0.0  # the cool-down is over
        sending = asyncio.ensure_future(df.send("v", "probe_send"))
        await until(lambda: circuit.probe is not None)
        waiting = [df.track_nowait("v", f"w{i}") for i in range(5)]
        await anyio.wait_all_tasks_blocked()
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert await df.flush(5)
        hang.set()
    assert all(d.result is not None for d in waiting)
