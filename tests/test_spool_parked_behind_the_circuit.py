"""Goals parked on disk behind an open circuit are not counted failed, in the log lines as in
``stats()``; driven through the public client (see ``_fakes.py`` for the helpers: an
in-process API the test switches)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ._fakes import API, balances, messages, spool_client, track, until


async def test_goals_parked_behind_an_open_circuit_are_not_reported_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a spool, goals answered 401 after the circuit opened are parked on disk, not
    failed: the log lines that count the goals "failed" while the circuit was open must say 0,
    as ``stats().failed`` does.

    Before the fix: 8 goals in flight answered 401, 0 failed, 8 parked; the probe's WARNING
    said "7 goals failed so far" and the closing ERROR "(7 failed while the API was
    unavailable)"."""
    caplog.set_level(logging.WARNING, logger="datafast_async")
    api = API("hold")
    df = spool_client(tmp_path, api, concurrency=8)
    await df.start()
    track(df, 0, 8)
    await until(lambda: df.stats().in_flight == 8)
    api.release("refused")  # all 8 answered 401: the first opens the circuit
    await until(lambda: df.stats().spooled == 8)
    api.mode = "up"  # flush() returns False while all is parked: wait for the probe instead
    await until(lambda: df.stats().delivered == 8, timeout=10)
    stats = await df.aclose()
    assert balances(stats)
    assert (stats.delivered, stats.failed) == (8, 0)
    assert set(api.delivered.values()) == {1}
    closing = [m for m in messages(caplog, logging.ERROR) if "answered the probe" in m]
    assert len(closing) == 1
    assert "(0 failed while" in closing[0], closing[0]
