"""At ``aclose()``'s deadline every request not yet settled, wherever it is (queued, in flight,
waiting for a retry, parked on disk), is kept in the spool when there is one, else failed with
``ShutdownError``; one WARNING gives the total; ``aclose(timeout)`` returns within ``timeout``
plus about a second, whatever the API or a callback is doing.

Each place, with and without a spool, as a user would see it: every ``Delivery`` settled,
``on_failure`` called exactly once per goal without a spool and never with one, the ledger
balanced, the one WARNING, and with a spool a next start that delivers each goal once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from datafast_async import DataFast, DataFastError, RetryPolicy, ShutdownError, TransportError
from datafast_async._transport import MockTransport, Request, Response

from ._fakes import API, FAST_SPOOL, VISITOR, balances, error, track, until
from ._fakes import SPOOL_KEY as KEY

# Retries that wait longer than any deadline here: goals sit in the retry schedule.
PATIENT = RetryPolicy(max_attempts=6, initial_delay=30.0, max_delay=30.0)
# Retries that come due before the deadline, then past it (the PAST_DEADLINE path).
SOON = RetryPolicy(max_attempts=50, initial_delay=0.05, max_delay=0.2)
DEADLINE = 0.3
GRACE = 1.5  # the contract's ~1 s, with room for a busy machine


def refusing(request: Request) -> Response:
    raise TransportError("cannot connect to 127.0.0.1:9: Connection refused", maybe_delivered=False)


def hanging() -> Callable[[Request], Awaitable[Response]]:
    async def never(request: Request) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return never


class Case:
    """One client with or without a spool, its callbacks recorded."""

    def __init__(self, tmp_path: Path, spooled: bool, handler: Any, **kwargs: Any) -> None:
        self.path = tmp_path / "spool" if spooled else None
        self.failures: list[DataFastError] = []
        self.df = DataFast(
            KEY,
            spool_path=self.path,
            _spool_options=FAST_SPOOL if spooled else None,
            _transport_factory=lambda: MockTransport(handler),
            on_failure=lambda goal, err: self.failures.append(err),
            **kwargs,
        )

    async def close(self) -> float:
        started = time.monotonic()
        await self.df.aclose(timeout=DEADLINE)
        return time.monotonic() - started


KINDS = ["goals", "payments", "identify"]
PLURAL = {"goals": "goals", "payments": "payments", "identify": "identifies"}


async def check(
    case: Case, deliveries: list[Any], caplog: pytest.LogCaptureFixture, kind: str = "goals"
) -> None:
    """What a user sees after ``aclose()``: the contract, for a spool or none."""
    count = len(deliveries)
    stats = case.df.stats()
    assert all(d.done() for d in deliveries)
    assert all(isinstance(d.error, ShutdownError) for d in deliveries)
    assert balances(stats)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "datafast_async"
        and "still undelivered at the shutdown deadline" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{count} {PLURAL[kind]} were still undelivered")
    per_request = [r for r in caplog.records if " failed: " in r.getMessage()]
    assert per_request == []
    if case.path is None:
        assert stats.failed == count
        assert stats.spooled == 0
        assert len(case.failures) == count
        assert all(isinstance(e, ShutdownError) and not e.spooled for e in case.failures)
        return
    assert case.failures == []
    assert stats.spooled == count
    assert stats.failed == 0
    assert all(d.error.spooled for d in deliveries)
    # The next start sends every one of them, each once.
    api = API("up")
    async with DataFast(
        KEY, spool_path=case.path, _spool_options=FAST_SPOOL, _transport_factory=api.factory
    ) as again:
        await until(lambda: sum(api.delivered.values()) >= count)
        assert await again.flush(timeout=5)
        assert again.stats().by_kind[kind].delivered == count
    assert sorted(api.delivered) == sorted(str(i) for i in range(count))
    assert set(api.delivered.values()) == {1}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
async def test_goals_waiting_for_a_retry_at_the_deadline(
    tmp_path: Path, spooled: bool, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    case = Case(tmp_path, spooled, refusing, retry=PATIENT)
    await case.df.start()
    deliveries = track(case.df, 0, 200, kind)
    await until(lambda: case.df.stats().in_flight == 200 and case.df.stats().queued == 0)
    assert await case.close() < DEADLINE + GRACE
    await check(case, deliveries, caplog, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
async def test_goals_retried_until_the_deadline_passes(
    tmp_path: Path, spooled: bool, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The default-like case: retries come due, fail again, and the next one falls past the
    deadline (as with the default policy against an API refusing connections)."""
    case = Case(tmp_path, spooled, refusing, retry=SOON)
    await case.df.start()
    deliveries = track(case.df, 0, 100, kind)
    await until(lambda: case.df.stats().retries >= 100)
    assert await case.close() < DEADLINE + GRACE
    await check(case, deliveries, caplog, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
async def test_goals_in_flight_and_queued_behind_a_hung_api_at_the_deadline(
    tmp_path: Path, spooled: bool, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    case = Case(tmp_path, spooled, hanging(), concurrency=2, timeout=60.0)
    await case.df.start()
    deliveries = track(case.df, 0, 50, kind)
    await until(lambda: case.df.stats().in_flight == 2 and case.df.stats().queued == 48)
    assert await case.close() < DEADLINE + GRACE
    await check(case, deliveries, caplog, kind)
    cut = [d.error for d in deliveries[:2]]
    # The request may have reached the API; a payment sent again cannot count twice.
    assert all(e.maybe_delivered is (kind != "payments") for e in cut)
    assert not any(d.error.maybe_delivered for d in deliveries[2:])
    if not spooled:  # the one WARNING says how many of the failed may have been recorded
        [said] = [m for m in caplog.messages if "still undelivered at the shutdown" in m]
        maybe = "2 of them cut in flight, so the API may have recorded them (maybe_delivered)"
        assert (maybe in said) is (kind != "payments"), said


async def test_goals_parked_behind_an_open_circuit_at_the_deadline_stay_in_the_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = API("refused")  # 401: every request would get it, the circuit opens
    case = Case(tmp_path, True, api, retry=PATIENT)
    await case.df.start()
    deliveries = track(case.df, 0, 30)
    await until(lambda: case.df.stats().spooled == 30)
    assert await case.close() < DEADLINE + GRACE
    await check(case, deliveries, caplog)


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
async def test_aclose_returns_within_its_grace_when_an_async_callback_hangs(
    tmp_path: Path, spooled: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def stuck(goal: object, result: object) -> None:
        await asyncio.Event().wait()

    path = tmp_path / "spool" if spooled else None
    df = DataFast(
        KEY,
        spool_path=path,
        _spool_options=FAST_SPOOL if spooled else None,
        _transport_factory=API("up").factory,
        on_success=stuck,
    )
    async with df:
        track(df, 0, 20)
        assert await df.flush(timeout=5)
        started = time.monotonic()
        await df.aclose(timeout=DEADLINE)
        assert time.monotonic() - started < DEADLINE + GRACE
    assert df.stats().delivered == 20
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("async callbacks did not finish in time" in m for m in errors)


async def test_goals_refused_with_a_final_error_are_not_counted_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A goal that already failed (400) is its own failure, said by the failure log, and not
    one of the shutdown's."""
    case = Case(tmp_path, False, lambda request: error(400, "bad goal"))
    async with case.df:
        deliveries = [case.df.track_nowait(VISITOR, "signup") for _ in range(3)]
        assert await case.df.flush(timeout=5)
    assert len(case.failures) == 3
    assert not any("shutdown deadline" in r.getMessage() for r in caplog.records)
    assert all(d.error is not None and not isinstance(d.error, ShutdownError) for d in deliveries)
