"""A goal parked on disk before the journal's writer reached it still settles at ``aclose()``.

Goals parked while the API is down are marked to be journaled as held on disk only; the
writer journals them at its next step, which may be the journal's close itself. Their
``Delivery`` must settle then (``ShutdownError(spooled=True)``), not stay pending for ever.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from datafast_async import DataFast, RetryPolicy, ShutdownError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the spool needs POSIX locks")

KEY = "df_spool_parked_at_close_key_1"
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"


async def test_goals_parked_before_the_writer_reached_them_settle_at_close(
    tmp_path: Path,
) -> None:
    total = 200
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        df = DataFast(
            KEY,
            base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
            spool_path=tmp_path,
            retry=RetryPolicy(max_attempts=1, circuit_cooldown=60, max_circuit_cooldown=60),
            # The writer's first step comes long after the goals are parked: at the close.
            _spool_options={"write_interval": 30, "sync_interval": 30},
        )
        await df.start()
        deliveries = [
            df.track_nowait(VISITOR, "signup", metadata={"n": str(i)}) for i in range(total)
        ]
        assert await df.flush(timeout=10) is False  # every goal parked behind the down API
        stats = await df.aclose(timeout=5)

    assert stats.spooled == total, stats
    pending = [d for d in deliveries if not d.done()]
    assert pending == [], f"{len(pending)} deliveries never settled"
    assert all(isinstance(d.error, ShutdownError) and d.error.spooled for d in deliveries), {
        repr(d.error) for d in deliveries
    }
