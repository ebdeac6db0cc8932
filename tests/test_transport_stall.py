"""A process that stops running for longer than the request timeout (the app blocking its event
loop, a SIGSTOP, a VM paused) must not send again what was answered meanwhile: the answers are
in the socket buffer, and goals are not idempotent. The timeout still means "no answer within
``timeout``" for a server that never answers, and a cancellation from outside stays one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from datafast_async import (
    DataFast,
    DataFastError,
    Goal,
    RetryPolicy,
    Stats,
    TransportError,
    _transport,
)
from datafast_async._transport import AiohttpTransport
from datafast_async.testing import FakeDataFast, ThreadedFakeDataFast

from ._fakes import NO_WAIT

pytestmark = pytest.mark.integration

_T = TypeVar("_T")

HERE = Path(__file__).parent
GOALS = 25
LATENCY = 0.2  # seconds the fake takes to answer each goal


def _duplicates(goals: list[Goal]) -> int:
    return sum(count - 1 for count in Counter(goal.name for goal in goals).values())


def _run(loop: str, main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    if loop == "uvloop":
        if sys.platform == "win32":
            pytest.skip("uvloop is not on Windows")
        uvloop = pytest.importorskip("uvloop")
        result: _T = uvloop.run(main())
        return result
    return asyncio.run(main())


class StallAtTheLast:
    """The fake's latency (``LATENCY`` for each request); when the last of ``count`` requests
    arrives, the client's loop is blocked for ``stall`` seconds by a callback calling
    ``time.sleep``: every request is in flight, and every answer is due during the stall."""

    def __init__(self, count: int, stall: float) -> None:
        self.count = count
        self.stall = stall
        self.loop: asyncio.AbstractEventLoop | None = None
        self.seen = 0
        self.blocked = 0.0

    def __call__(self) -> float:
        self.seen += 1
        if self.seen == self.count:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._block)
        return LATENCY

    def _block(self) -> None:
        started = time.monotonic()
        time.sleep(self.stall)
        self.blocked = time.monotonic() - started


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("server", ["on a thread", "in the same loop"])
def test_goals_in_flight_while_the_app_blocks_its_loop_past_the_timeout_are_recorded_once(
    loop: str, server: str
) -> None:
    """25 goals in flight, timeout=1, the loop blocked 2 s while the fake answers them: each
    answer is read; none is taken for a timeout and sent again."""
    latency = StallAtTheLast(GOALS, stall=2.0)
    failures: list[DataFastError] = []

    async def deliver(fake: FakeDataFast | ThreadedFakeDataFast) -> Stats:
        latency.loop = asyncio.get_running_loop()
        df = DataFast(
            fake.api_key,
            base_url=fake.base_url,
            timeout=1.0,
            concurrency=GOALS,
            _adaptive=False,
            retry=NO_WAIT,
            on_failure=lambda goal, error: failures.append(error),
        )
        async with df:
            for i in range(GOALS):
                df.track_nowait("3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1", f"g{i}")
        return df.stats()

    async def main() -> tuple[Stats, list[Goal]]:
        if server == "on a thread":
            with ThreadedFakeDataFast(latency=latency) as threaded:
                return await deliver(threaded), threaded.goals
        async with FakeDataFast(latency=latency) as fake:
            return await deliver(fake), fake.goals

    stats, goals = _run(loop, main)
    assert latency.blocked >= 2.0, "the loop was not blocked while the goals were in flight"
    assert _duplicates(goals) == 0, (
        f"{_duplicates(goals)} goals recorded twice; {stats.retries} retries; {len(goals)} recorded"
    )
    assert sorted(goal.name for goal in goals) == sorted(f"g{i}" for i in range(GOALS))
    assert stats == Stats(enqueued=GOALS, delivered=GOALS)
    assert failures == []


_CHILD = r"""
import asyncio, json, sys
from datafast_async import DataFast, RetryPolicy

base_url, api_key, goals = sys.argv[1], sys.argv[2], int(sys.argv[3])
failures = []


async def main():
    df = DataFast(
        api_key, base_url=base_url, timeout=2.0, concurrency=goals, _adaptive=False,
        retry=RetryPolicy(initial_delay=0, max_delay=0),
        on_failure=lambda goal, error: failures.append(repr(error)),
    )
    await df.start()
    for i in range(goals):
        df.track_nowait("3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1", f"g{i}")
    stats = await df.aclose()
    print(json.dumps({"delivered": stats.delivered, "failed": stats.failed,
                      "retries": stats.retries, "failures": failures}), flush=True)


asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX only: SIGSTOP")
def test_goals_in_flight_when_the_process_is_stopped_past_the_timeout_are_recorded_once() -> None:
    """A child process sends 25 goals (timeout=2); it is stopped (SIGSTOP) as the last one
    reaches the fake, which answers them all while it is stopped; 3 s later it is continued
    (SIGCONT): it reads the answers, sends nothing again, and closes."""
    arrived = threading.Event()
    child: list[subprocess.Popen[str]] = []

    class StopAtTheLast:
        seen = 0

        def __call__(self) -> float:
            self.seen += 1
            if self.seen == GOALS:
                os.kill(child[0].pid, signal.SIGSTOP)
                arrived.set()
            return LATENCY

    with ThreadedFakeDataFast(latency=StopAtTheLast()) as fake:
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, fake.base_url, fake.api_key, str(GOALS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(HERE.parent),
            env=env,
        )
        child.append(process)
        try:
            assert arrived.wait(30), "the goals never reached the fake"
            time.sleep(3.0)  # stopped; the answers wait in its socket buffers
            os.kill(process.pid, signal.SIGCONT)
            out, err = process.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            if process.poll() is None:
                process.kill()
                process.communicate()
        goals = fake.goals
    assert process.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert _duplicates(goals) == 0, (
        f"{_duplicates(goals)} goals recorded twice; {report['retries']} retries; "
        f"{len(goals)} recorded"
    )
    assert sorted(goal.name for goal in goals) == sorted(f"g{i}" for i in range(GOALS))
    assert report == {"delivered": GOALS, "failed": 0, "retries": 0, "failures": []}


# -- the timeout itself ------------------------------------------------------------------------


class HangingServer:
    """A TCP server on 127.0.0.1 that reads every request and never answers."""

    def __init__(self) -> None:
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.arrived = asyncio.Event()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):  # the head; the small body follows
                self.requests += 1
                self.arrived.set()

    async def __aenter__(self) -> HangingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def hanging() -> AsyncIterator[HangingServer]:
    async with HangingServer() as server:
        yield server


_KEY = "df_stall_test_key_00000001"
_HEADERS = {"Authorization": f"Bearer {_KEY}", "Content-Type": "application/json"}


def _transport_for(server: HangingServer, timeout: float) -> AiohttpTransport:
    return AiohttpTransport(server.base_url, _HEADERS, timeout=timeout, concurrency=2)


async def test_a_server_that_never_answers_still_times_out_after_the_timeout(
    hanging: HangingServer,
) -> None:
    loop = asyncio.get_running_loop()
    async with DataFast(
        _KEY, base_url=hanging.base_url, timeout=0.5, retry=RetryPolicy(max_attempts=1)
    ) as df:
        started = loop.time()
        with pytest.raises(TransportError) as info:
            await df.send("v", "signup")
        took = loop.time() - started
    assert 0.5 <= took < 1.5, took
    assert str(info.value) == "no answer within 0.5 s (timeout)"
    assert info.value.maybe_delivered is True
    assert info.value.timed_out is True
    assert hanging.requests == 1


async def test_a_loop_that_stays_busy_does_not_hold_a_hung_request_for_ever(
    hanging: HangingServer,
) -> None:
    """Every step of the loop takes 0.3 s (the deadline's timer late each time): the grace
    given after a stall is bounded, and the timeout comes all the same (a few steps later)."""
    loop = asyncio.get_running_loop()
    transport = _transport_for(hanging, timeout=0.2)
    busy = True

    def hog() -> None:
        if busy:
            time.sleep(0.3)
            loop.call_soon(hog)

    try:
        sent = asyncio.ensure_future(transport.send("POST", "/api/v1/goals", b"{}"))
        await hanging.arrived.wait()
        started = loop.time()
        loop.call_soon(hog)
        with pytest.raises(TransportError, match=r"no answer within 0\.2 s \(timeout\)"):
            await asyncio.wait_for(sent, 10)
        took = loop.time() - started
    finally:
        busy = False
        await transport.aclose()
    assert took < 6.0, took


async def test_a_callers_cancel_while_the_request_hangs_is_a_cancellation(
    hanging: HangingServer,
) -> None:
    transport = _transport_for(hanging, timeout=5.0)
    try:
        sent = asyncio.ensure_future(transport.send("POST", "/api/v1/goals", b"{}"))
        await hanging.arrived.wait()
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent
    finally:
        await transport.aclose()


async def test_a_cancel_from_outside_after_a_stall_is_a_cancellation_not_a_timeout(
    hanging: HangingServer,
) -> None:
    """The loop blocked past the deadline; a cancel (aclose's deadline, a caller's) due in that
    time comes in the same step as the late timeout: it propagates as a cancellation."""
    loop = asyncio.get_running_loop()
    transport = _transport_for(hanging, timeout=0.2)
    try:
        sent = asyncio.ensure_future(transport.send("POST", "/api/v1/goals", b"{}"))
        await hanging.arrived.wait()
        loop.call_soon(time.sleep, 0.6)
        loop.call_later(0.3, sent.cancel)
        with pytest.raises(asyncio.CancelledError):
            await sent
    finally:
        await transport.aclose()


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 cannot tell two cancellations of one step"
)
async def test_a_cancel_from_outside_in_the_step_the_timeout_fires_is_a_cancellation(
    hanging: HangingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's deadline cancels it, and in the same step a cancel comes from outside:
    the caller sees a cancellation, and the task is not left cancelling."""
    transport = _transport_for(hanging, timeout=0.2)
    fire = _transport._Deadline._fire
    tasks: list[asyncio.Task[Any]] = []

    def fire_then_cancel_from_outside(deadline: Any) -> None:
        fire(deadline)
        tasks[0].cancel()

    monkeypatch.setattr(_transport._Deadline, "_fire", fire_then_cancel_from_outside)

    async def send() -> int:
        try:
            await transport.send("POST", "/api/v1/goals", b"{}")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            if sys.version_info >= (3, 11):
                return task.cancelling()
        return -1

    try:
        tasks.append(asyncio.ensure_future(send()))
        # The outside cancel is counted once, the deadline's own is taken back.
        assert await tasks[0] == 1
    finally:
        await transport.aclose()


async def test_a_request_answered_in_time_leaves_no_timer_and_no_cancellation() -> None:
    async with FakeDataFast() as fake:
        transport = AiohttpTransport(
            fake.base_url,
            {"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"},
            timeout=0.2,
            concurrency=2,
        )
        try:
            body = b'{"datafast_visitor_id": "v", "name": "signup"}'
            status, _, _, _ = await transport.send("POST", "/api/v1/goals", body)
            await asyncio.sleep(0.3)  # past the request's deadline: nothing fires
            task = asyncio.current_task()
            assert task is not None
            if sys.version_info >= (3, 11):
                assert task.cancelling() == 0
        finally:
            await transport.aclose()
    assert status == 200
