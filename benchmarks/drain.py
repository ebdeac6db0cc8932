"""Shutdown drain: how fast ``aclose()`` delivers 10,000 queued goals, beside steady delivery.

Both against the fast server, at the default concurrency, interleaved: a steady run (N goals
queued, then ``flush``) and a drain run (N goals queued, then ``aclose()`` with a deadline
long enough for all of them). The rate is N over the wall time from the ``flush``/``aclose``
call to its return; every goal must be delivered.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from datafast_async import DataFast

from ._proc import SERVER_CPU, running
from ._stats import summary
from .delivery import API_KEY, VISITOR

__all__ = ["run"]


async def _one(base_url: str, count: int, drain: bool) -> float:
    client = DataFast(API_KEY, base_url=base_url, max_queue_size=count, shutdown_timeout=120)
    await client.start()
    client.track_nowait(VISITOR, "signup")  # warm the connection pool
    await client.flush()
    for _ in range(count):
        client.track_nowait(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
    gc.collect()
    start = time.perf_counter()
    if drain:
        stats = await client.aclose()
    else:
        await client.flush()
    elapsed = time.perf_counter() - start
    if not drain:
        stats = await client.aclose()
    if stats.delivered != count + 1 or stats.failed or stats.dropped:
        raise RuntimeError(f"not every goal was delivered: {stats}")
    return count / elapsed


def run(*, rounds: int, count: int = 10_000) -> dict[str, Any]:
    steady: list[float] = []
    drained: list[float] = []
    ratio: list[float] = []
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        for index in range(rounds):
            order = (False, True) if index % 2 == 0 else (True, False)
            rates = {mode: asyncio.run(_one(base_url, count, mode)) for mode in order}
            steady.append(rates[False])
            drained.append(rates[True])
            ratio.append(rates[True] / rates[False])
    return {
        "goals": count,
        "steady_goals_per_s": summary(steady),
        "aclose_goals_per_s": summary(drained),
        "ratio": summary(ratio),
    }
