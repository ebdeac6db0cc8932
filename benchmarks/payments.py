"""Payments: the same pipeline as goals, measured the same way.

- Delivery: N payments queued with ``track_payment_nowait`` then ``flush``, beside a raw aiohttp
  loop posting the same payment body, interleaved round by round against the same fast server
  (another process, on the other core), at each concurrency. The transaction ids are made
  before the clock starts (the caller's own work).
- Enqueue: what ``track_payment_nowait`` costs the caller (a payment with a visitor, an email
  and an aware timestamp) beside ``track_nowait`` (a goal with 2-key metadata), in the same
  client, alternating batch by batch.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import time
from typing import Any

from datafast_async import DataFast

from ._proc import SERVER_CPU, running
from ._stats import summary
from .delivery import API_KEY, VISITOR, raw_loop

__all__ = ["run"]

PAID_AT = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
# What the SDK sends for the payments below (one transaction id's length).
BODY = (
    b'{"amount":49.99,"currency":"USD","transaction_id":"ch_00000000",'
    b'"datafast_visitor_id":"a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d"}'
)


async def sdk_payments(base_url: str, total: int, concurrency: int) -> tuple[float, float]:
    """N payments queued, then ``flush``: (wall s, CPU s)."""
    client = DataFast(
        API_KEY, base_url=base_url, concurrency=concurrency, max_queue_size=max(total, 10_000)
    )
    ids = [f"ch_{i:08d}" for i in range(total)]
    async with client:
        warm = await _warm(client, concurrency)
        gc.collect()
        track = client.track_payment_nowait
        wall, cpu = time.perf_counter(), time.process_time()
        for transaction in ids:
            track(49.99, "USD", transaction, visitor_id=VISITOR)
        await client.flush()
        elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
        stats = client.stats()
    payments = stats.by_kind["payments"]
    if payments.delivered != total + warm or stats.failed or stats.dropped:
        raise RuntimeError(f"the SDK did not deliver every payment: {stats}")
    return elapsed, used


async def _warm(client: DataFast, concurrency: int) -> int:
    """As the goals' benchmark: connections open and the adaptive limit at its ceiling."""
    sent, at_ceiling = 0, 0
    while at_ceiling < 2 and sent < 50 * concurrency:
        for i in range(2 * concurrency):
            client.track_payment_nowait(49.99, "USD", f"warm_{sent + i}", visitor_id=VISITOR)
        sent += 2 * concurrency
        await client.flush()
        if client.stats().concurrency_limit >= concurrency:
            at_ceiling += 1
    return sent


def _time_payments(client: DataFast, ids: list[str]) -> float:
    track = client.track_payment_nowait
    start = time.perf_counter_ns()
    for transaction in ids:
        track(49.99, "USD", transaction, visitor_id=VISITOR, email="a@b.co", timestamp=PAID_AT)
    return (time.perf_counter_ns() - start) / len(ids)


def _time_goals(client: DataFast, batch: int) -> float:
    track = client.track_nowait
    start = time.perf_counter_ns()
    for _ in range(batch):
        track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
    return (time.perf_counter_ns() - start) / batch


async def _enqueue(base_url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    payments: list[float] = []
    goals: list[float] = []
    ratio: list[float] = []
    async with DataFast(API_KEY, base_url=base_url, max_queue_size=max(2 * batch, 10_000)) as df:
        _time_goals(df, batch)
        _time_payments(df, [f"warm_{i}" for i in range(batch)])
        await df.flush()
        for index in range(rounds):
            ids = [f"ch_{index}_{i}" for i in range(batch)]
            if index % 2 == 0:
                paid, tracked = _time_payments(df, ids), _time_goals(df, batch)
            else:
                tracked, paid = _time_goals(df, batch), _time_payments(df, ids)
            payments.append(paid)
            goals.append(tracked)
            ratio.append(paid / tracked)
            await df.flush()
        stats = df.stats()
    if stats.dropped or stats.failed or stats.delivered != stats.enqueued:
        raise RuntimeError(f"the client did not deliver every request: {stats}")
    return {"track_payment_nowait_ns": payments, "track_nowait_ns": goals, "ratio": ratio}


def run(
    *,
    total: int,
    rounds: int,
    concurrencies: tuple[int, ...],
    enqueue_rounds: int,
    batch: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {"delivery": {}}
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        url = base_url + "/api/v1/payments"
        runs: dict[int, dict[str, list[float]]] = {
            n: {"raw_rate": [], "sdk_rate": [], "rate_ratio": [], "raw_cpu": [], "sdk_cpu": []}
            for n in concurrencies
        }
        for index in range(rounds):
            for n in concurrencies:
                order = ("raw", "sdk") if index % 2 == 0 else ("sdk", "raw")
                measured: dict[str, tuple[float, float]] = {}
                for variant in order:
                    if variant == "raw":
                        measured[variant] = asyncio.run(raw_loop(url, total, n, BODY))
                    else:
                        measured[variant] = asyncio.run(sdk_payments(base_url, total, n))
                (raw_wall, raw_cpu), (sdk_wall, sdk_cpu) = measured["raw"], measured["sdk"]
                r = runs[n]
                r["raw_rate"].append(total / raw_wall)
                r["sdk_rate"].append(total / sdk_wall)
                r["rate_ratio"].append(raw_wall / sdk_wall)
                r["raw_cpu"].append(raw_cpu / total * 1e6)
                r["sdk_cpu"].append(sdk_cpu / total * 1e6)
        for n, r in runs.items():
            results["delivery"][str(n)] = {key: summary(values) for key, values in r.items()}
        enqueue = asyncio.run(_enqueue(base_url, enqueue_rounds, batch))
    results["enqueue"] = {key: summary(values) for key, values in enqueue.items()}
    results["enqueue"]["batch"] = batch
    return results
