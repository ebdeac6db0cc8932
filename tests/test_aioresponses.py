"""A user's own unit tests with aioresponses: the mock is honoured whether it is entered before
the client starts or after (a fixture that starts the client, then ``with aioresponses():`` in
the test), for a success, a 401 and a 500, and no request reaches the real host."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses

from datafast_async import (
    AuthenticationError,
    DataFast,
    PaymentResult,
    RetryPolicy,
    ServerError,
    TransportError,
)

from ._docs import page, python_blocks

# DataFast's success answers, as the README shows them.
GOAL_OK = {
    "status": "success",
    "data": [
        {"message": "Custom event created successfully", "eventId": "67f8b9b5c320277df9a9d681"}
    ],
}
PAYMENT_OK = {"message": "Payment recorded and attributed successfully", "transaction_id": "ch_1"}
GOALS = "https://datafa.st/api/v1/goals"
PAYMENTS = "https://datafa.st/api/v1/payments"
# The README's zero-delay policy for unit tests: no real backoff.
FAST = RetryPolicy(max_attempts=2, initial_delay=0, max_delay=0)
ANY_HOST = re.compile(r"^https?://.*")


@pytest.fixture
async def started() -> AsyncIterator[DataFast]:
    """The user's fixture: the client started before the test enters the mock."""
    async with DataFast("df_user_test_key_01", retry=FAST) as df:
        yield df


async def test_a_mock_entered_after_the_client_started_is_honoured(started: DataFast) -> None:
    with aioresponses() as mocked:
        mocked.post(GOALS, payload=GOAL_OK)
        mocked.post(PAYMENTS, payload=PAYMENT_OK)
        result = await started.track_nowait("v_1", "signup").wait(5)
        paid = await started.track_payment_nowait(1, "usd", "ch_1").wait(5)
        assert len(mocked.requests) == 2
    assert result.event_id == "67f8b9b5c320277df9a9d681"
    assert paid == PaymentResult(PAYMENT_OK["message"], "ch_1")


async def test_a_mock_entered_before_the_client_starts_is_honoured() -> None:
    with aioresponses() as mocked:
        mocked.post(GOALS, payload=GOAL_OK)
        async with DataFast("df_user_test_key_01", retry=FAST) as df:
            assert (await df.send("v_1", "signup")).event_id is not None
        assert len(mocked.requests) == 1


@pytest.mark.parametrize("entered_first", [True, False], ids=["mock-first", "client-first"])
async def test_a_mocked_401_and_500_fail_as_the_api_would(entered_first: bool) -> None:
    mocked = aioresponses()
    if entered_first:
        mocked.start()
    df = DataFast("df_user_test_key_01", retry=FAST)
    await df.start()
    if not entered_first:
        mocked.start()
    try:
        mocked.post(
            GOALS,
            status=500,
            payload={"status": "error", "error": {"code": 500, "message": "boom"}},
            repeat=True,
        )
        with pytest.raises(ServerError, match="boom"):
            await df.track_nowait("v_1", "signup").wait(5)
        mocked.clear()
        mocked.post(
            GOALS,
            status=401,
            payload={"status": "error", "error": {"code": 401, "message": "Invalid API key"}},
        )
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            await df.send("v_1", "signup")
    finally:
        await df.aclose(1)
        mocked.stop()


async def test_no_request_reaches_the_real_host_while_a_mock_is_active(started: DataFast) -> None:
    """An unmatched request fails in the mock (a connection error), never on the network."""
    with aioresponses() as mocked:
        with pytest.raises(TransportError, match=r"Connection refused: POST https://datafa\.st"):
            await started.send("v_1", "signup")
        assert len(mocked.requests) == 1


async def test_the_readmes_aioresponses_example_runs_as_pasted() -> None:
    testing = page("testing.md")
    section = testing.split("## Mocking aiohttp yourself (aioresponses)", 1)[1]
    block = python_blocks(section)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/testing.md", "exec"), namespace)  # the README's own code
    await namespace["test_with_a_mock"]()
