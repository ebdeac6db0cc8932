"""Payments, identify and goals together against the fake DataFast over 127.0.0.1: the answer
lost after the server recorded a payment (recorded once; a goal, which has no idempotency key,
twice), a ``dft_`` token without ``payments:write`` (payments refused, the rest recorded), and
a spool that carries every kind across a restart, with requests cut in flight at the deadline
(each transaction and identify recorded once)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datafast_async import DataFast, PermissionDeniedError, RetryPolicy, ShutdownError
from datafast_async.testing import FakeDataFast

from ._fakes import FAST_SPOOL, balances, until

pytestmark = pytest.mark.integration

PAYMENTS = "/api/v1/payments"
VISITOR = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
NO_WAIT = RetryPolicy(initial_delay=0, max_delay=0)
PATIENT = RetryPolicy(max_attempts=1000, initial_delay=0.05, max_delay=0.05)


def client(fake: FakeDataFast, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", NO_WAIT)
    return DataFast(api_key=fake.api_key, base_url=fake.base_url, **kwargs)


async def test_a_payment_whose_answer_was_lost_after_it_was_recorded_is_recorded_once() -> None:
    async with FakeDataFast() as fake:
        fake.fail_next(lose_answer=True, path=PAYMENTS)
        fake.fail_next(lose_answer=True, path="/api/v1/goals")
        async with client(fake) as df:
            queued = df.track_payment_nowait(49.99, "usd", "ch_lost", visitor_id=VISITOR)
            queued_result = await queued.wait(10)
            fake.fail_next(lose_answer=True, path=PAYMENTS)
            direct = await df.send_payment(10, "eur", "ch_direct")
            goal = await df.track_nowait(VISITOR, "signup").wait(10)
            stats = df.stats()
        sent = Counter(r.json["transaction_id"] for r in fake.requests if r.path == PAYMENTS)
        recorded = [p.transaction_id for p in fake.payments]
        goals = [g.name for g in fake.goals]
    assert sent == {"ch_lost": 2, "ch_direct": 2}  # each sent again after its lost answer
    assert sorted(recorded) == ["ch_direct", "ch_lost"]  # ... and recorded once
    assert queued_result.duplicate  # the second answer said so
    assert direct.duplicate
    assert goal.event_id is not None
    assert goals == ["signup", "signup"]  # a goal has no idempotency key: the duplicate window
    assert stats.by_kind["payments"].delivered == 1
    assert stats.by_kind["payments"].retries == 1


async def test_a_token_without_payments_write_refuses_payments_and_the_rest_is_recorded() -> None:
    async with FakeDataFast(
        api_key="dft_account_token_1",
        website_id="site_1",
        permissions={"goals:write", "identify:write"},
    ) as fake:
        async with client(fake, website_id="site_1") as df:
            payments = [df.track_payment_nowait(1, "usd", f"tx{i}") for i in range(30)]
            goals = [df.track_nowait(VISITOR, f"g{i}") for i in range(30)]
            identify = df.identify_nowait(VISITOR, "user_1")
            assert await df.flush(10)
            with pytest.raises(PermissionDeniedError, match="payments:write"):
                await df.send_payment(1, "usd", "direct")
            stats = df.stats()
        payment_requests = [r for r in fake.requests if r.path == PAYMENTS]
        recorded_goals = len(fake.goals)
        identities = len(fake.identities)
    assert all(isinstance(p.error, PermissionDeniedError) for p in payments)
    assert all(g.result is not None for g in goals)
    assert identify.result is not None
    assert len(payment_requests) <= 8  # the workers' first requests; then refused at once
    assert (recorded_goals, identities) == (30, 1)
    assert stats.by_kind["payments"].failed == 30
    assert balances(stats)


async def test_every_kind_crosses_a_restart_in_the_spool_and_each_is_recorded_once(
    tmp_path: Path,
) -> None:
    """A deploy while requests are out: the server holds them (it records them later, after
    the client cut them at the deadline); they stay in the spool, and the next run sends them
    again. Each payment and each identify is recorded once (a repeated identify updates the
    same profile); goals cut in flight may be recorded twice, as the README says."""
    async with FakeDataFast() as fake:
        fake.pause()
        first = client(fake, spool_path=tmp_path, retry=PATIENT, _spool_options=FAST_SPOOL)
        async with first:
            payments = [
                first.track_payment_nowait(5, "usd", f"tx{i}", visitor_id=VISITOR)
                for i in range(20)
            ]
            identifies = [first.identify_nowait(VISITOR, f"user_{i}") for i in range(5)]
            goals = [first.track_nowait(VISITOR, "signup", metadata={"i": i}) for i in range(10)]
            await fake.wait_held(8)  # eight out, the rest queued
            stats = await first.aclose(0.2)
        everything = payments + identifies + goals
        assert all(isinstance(d.error, ShutdownError) and d.error.spooled for d in everything)
        assert stats.spooled == 35
        fake.resume()  # the held requests are recorded now, after the client gave up on them
        await until(lambda: fake.in_flight == 0)

        second = client(fake, spool_path=tmp_path, _spool_options=FAST_SPOOL)
        async with second:
            assert await second.flush(10)
            stats2 = second.stats()
        recorded = Counter(p.transaction_id for p in fake.payments)
        users = Counter(i.user_id for i in fake.identities)
        signups = Counter(g.metadata["i"] for g in fake.goals if g.metadata)
    assert recorded == {f"tx{i}": 1 for i in range(20)}
    assert set(users) == {f"user_{i}" for i in range(5)}
    assert set(signups) == {str(i) for i in range(10)}  # every goal, some maybe twice
    assert stats2.by_kind["payments"].delivered == 20
    assert stats2.by_kind["identify"].delivered == 5
    assert stats2.by_kind["goals"].delivered == 10
    assert balances(stats2)
