"""With a spool, when is the API "down", and how long does the sender wait before it looks again?

A request out of attempts while every attempt across requests failed: the API looks down, the
circuit opens, requests wait on disk, and a probe goes after a short first cool-down (1 s) that
doubles while the probe gets no answer, up to ``circuit_cooldown``: a short outage costs
seconds. A request out of attempts while others get through is that request's own failure: it
fails (``on_failure``) as without a spool, and nothing stops. ``aclose()`` probes an API that
looked down at once. (The same through a real nginx: ``test_nginx.py``.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from datafast_async import RetryPolicy, ServerError
from datafast_async._circuit import DOWN_COOLDOWN, Circuit, CircuitState
from datafast_async._transport import Request, Response

from ._fakes import API, error, number_of, spool_client, track, until


class Clock:
    """The loop's clock as the circuit reads it, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._loop = asyncio.new_event_loop()

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[None]:
        return self._loop.create_future()

    def close(self) -> None:
        self._loop.close()


@pytest.fixture
def clock() -> Any:
    clock = Clock()
    yield clock
    clock.close()


def test_the_first_cool_down_of_a_down_api_is_short_and_doubles_up_to_circuit_cooldown(
    clock: Clock,
) -> None:
    policy = RetryPolicy(circuit_cooldown=30.0, max_circuit_cooldown=300.0)
    circuit = Circuit(policy, clock, keeps=True)  # type: ignore[arg-type]
    circuit.trip(ServerError(503, "unavailable"), 100, down=True)
    waits = []
    for _ in range(8):
        waits.append(round(circuit.until - clock.now, 3))
        clock.now = circuit.until
        assert circuit.refresh() is CircuitState.HALF_OPEN
        token = object()
        circuit.probe = token
        circuit.probe_unanswered(token)  # still down
    assert waits == [DOWN_COOLDOWN, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    clock.now = circuit.until
    circuit.refresh()
    token = object()
    circuit.probe = token
    circuit.answered(token)  # back: the next outage starts at 1 s again
    assert circuit.state is CircuitState.CLOSED
    circuit.trip(ServerError(503, "unavailable"), 0, down=True)
    assert circuit.until - clock.now == DOWN_COOLDOWN


def test_an_answer_every_request_gets_keeps_the_long_cool_down(clock: Clock) -> None:
    policy = RetryPolicy(circuit_cooldown=30.0)
    circuit = Circuit(policy, clock, keeps=True)  # type: ignore[arg-type]
    circuit.trip(ServerError(401, "Invalid API key"), 0)
    assert circuit.until - clock.now == 30.0
    assert circuit.probe_now() is False  # not "down": aclose() does not probe a refused key
    assert circuit.until - clock.now == 30.0


def test_aclose_ends_the_cool_down_of_a_down_api(clock: Clock) -> None:
    circuit = Circuit(RetryPolicy(), clock, keeps=True)  # type: ignore[arg-type]
    circuit.trip(ServerError(503, "unavailable"), 0, down=True)
    assert circuit.probe_now() is True
    assert circuit.refresh() is CircuitState.HALF_OPEN


class OnePoisoned(API):
    """DataFast up, but one goal (metadata "i" == "7") always gets a 500."""

    def _answer(self, request: Request) -> Response:
        if number_of(request) == "7":
            return error(500, "internal error")
        return super()._answer(request)


async def test_a_goal_out_of_attempts_while_others_get_through_fails_and_nothing_stops(
    tmp_path: Path,
) -> None:
    api = OnePoisoned("up")
    failures: list[Any] = []
    df = spool_client(
        tmp_path,
        api,
        concurrency=1,
        # Its retries wait a little: other goals get through between its attempts.
        retry=RetryPolicy(max_attempts=3, initial_delay=0.02, max_delay=0.02, circuit_cooldown=30),
        on_failure=lambda goal, exc: failures.append(exc),
    )
    async with df:
        deliveries = track(df, 0, 40)
        assert await df.flush(10)
        circuit = df._run.sender.circuit
        assert circuit.state is CircuitState.CLOSED
    stats = df.stats()
    assert stats.delivered == 39
    assert stats.failed == 1
    assert stats.spooled == 0
    (poisoned,) = [d for d in deliveries if d.error is not None]
    assert isinstance(poisoned.error, ServerError)
    assert poisoned.error.status == 500
    assert len(failures) == 1


async def test_every_goal_failing_opens_the_circuit_for_one_second_and_a_probe_closes_it(
    tmp_path: Path,
) -> None:
    api = API("down")  # 503 to everything
    df = spool_client(
        tmp_path,
        api,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0, circuit_cooldown=30),
    )
    async with df:
        track(df, 0, 20)
        circuit = df._run.sender.circuit
        await until(lambda: circuit.state is CircuitState.OPEN)
        loop = asyncio.get_running_loop()
        assert circuit.until - loop.time() <= DOWN_COOLDOWN
        await until(lambda: df.stats().spooled == 20)
        api.mode = "up"
        await until(lambda: df.stats().delivered == 20, timeout=5)  # the probe after ~1 s
        assert circuit.state is CircuitState.CLOSED
    assert sorted(api.delivered, key=int) == [str(i) for i in range(20)]
