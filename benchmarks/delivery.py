"""Delivery: the SDK (N goals queued, then ``flush``) beside a raw aiohttp loop.

Both run in this process against the same fast server (another process, on the other core),
at the same concurrency, interleaved round by round. Goals/s is N over the wall time from the
first enqueue to the last answer (the enqueueing is the SDK's work too; the flush alone is
reported beside it); CPU per goal is this process's CPU time over that interval
(``time.process_time``), divided by N.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import aiohttp

from datafast_async import DataFast
from datafast_async._config import USER_AGENT

from ._proc import SERVER_CPU, running
from ._stats import summary

__all__ = ["raw_loop", "run", "sdk_run", "sdk_run_detailed"]

API_KEY = "df_benchmark_key_0000000001"
VISITOR = "a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d"
METADATA = {"plan": "pro", "source": "ads"}
# What the SDK sends for the goal above (148 bytes, as in the measurement).
BODY = (
    b'{"datafast_visitor_id":"a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d","name":"signup",'
    b'"metadata":{"plan":"pro","source":"ads"}}'
)
HEADERS = {
    "Authorization": f"Bearer {API_KEY}",
    "Content-Type": "application/json",
    "User-Agent": USER_AGENT,
}


async def raw_loop(
    url: str, total: int, concurrency: int, body: bytes = BODY
) -> tuple[float, float]:
    """The reference: N workers on one pooled keep-alive session posting a prebuilt body and
    reading (not parsing) each answer. Returns (wall seconds, CPU seconds)."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
    ) as session:
        # One request per connection first, so that both sides start with warm connections.
        await _raw_batch(session, url, concurrency, concurrency, body=body)
        remaining = [total]
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        await _raw_batch(session, url, total, concurrency, remaining, body=body)
        return time.perf_counter() - wall, time.process_time() - cpu


async def _raw_batch(
    session: aiohttp.ClientSession,
    url: str,
    total: int,
    concurrency: int,
    remaining: list[int] | None = None,
    *,
    body: bytes = BODY,
) -> None:
    left = [total] if remaining is None else remaining

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            async with session.post(url, data=body, headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the server answered {response.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sdk_run(base_url: str, total: int, concurrency: int) -> tuple[float, float]:
    """The SDK: N goals queued with ``track_nowait``, then ``flush``. (wall s, CPU s)."""
    wall, cpu, _ = await sdk_run_detailed(base_url, total, concurrency)
    return wall, cpu


async def sdk_run_detailed(
    base_url: str, total: int, concurrency: int
) -> tuple[float, float, float]:
    """As ``sdk_run``, plus the wall time of the ``flush`` alone (enqueueing excluded)."""
    client = DataFast(
        API_KEY, base_url=base_url, concurrency=concurrency, max_queue_size=max(total, 10_000)
    )
    async with client:
        warm = await _warm(client, concurrency)
        gc.collect()
        track = client.track_nowait
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(total):
            track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
        flushing = time.perf_counter()
        await client.flush()
        end = time.perf_counter()
        elapsed, used = end - wall, time.process_time() - cpu
        stats = client.stats()
    if stats.delivered != total + warm or stats.failed or stats.dropped:
        raise RuntimeError(f"the SDK did not deliver every goal: {stats}")
    return elapsed, used, end - flushing


async def _warm(client: DataFast, concurrency: int) -> int:
    """Warm the connections, as the raw loop does: ``concurrency`` of them open and the limit
    at its ceiling. The adaptive limit starts at 8 and grows (slow start) only while goals
    wait, so ``concurrency`` goals alone leave it short of the ceiling at 32 and 64 (24 and
    ~36), and the rest of the connections were opened inside the measured interval. Batches
    of twice ``concurrency`` goals until the limit is at the ceiling, then one more batch
    that has that many requests out at once. Returns the goals sent."""
    sent, at_ceiling = 0, 0
    while at_ceiling < 2 and sent < 50 * concurrency:
        for _ in range(2 * concurrency):
            client.track_nowait(VISITOR, "signup", metadata=METADATA)
        sent += 2 * concurrency
        await client.flush()
        if client.stats().concurrency_limit >= concurrency:
            at_ceiling += 1
    return sent


def run(*, total: int, rounds: int, concurrencies: tuple[int, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        url = base_url + "/api/v1/goals"
        runs: dict[int, dict[str, list[float]]] = {
            n: {
                "sdk_flush_rate": [],
                "raw_rate": [],
                "sdk_rate": [],
                "raw_cpu": [],
                "sdk_cpu": [],
                "rate_ratio": [],
                "cpu_ratio": [],
            }
            for n in concurrencies
        }
        for index in range(rounds):
            for n in concurrencies:
                # Interleaved, and the order flips each round.
                order = ("raw", "sdk") if index % 2 == 0 else ("sdk", "raw")
                measured: dict[str, tuple[float, float]] = {}
                flush_only = 0.0
                for variant in order:
                    if variant == "raw":
                        measured[variant] = asyncio.run(raw_loop(url, total, n))
                    else:
                        wall, cpu, flush_only = asyncio.run(sdk_run_detailed(base_url, total, n))
                        measured[variant] = (wall, cpu)
                r = runs[n]
                r["sdk_flush_rate"].append(total / flush_only)
                raw_wall, raw_cpu = measured["raw"]
                sdk_wall, sdk_cpu = measured["sdk"]
                r["raw_rate"].append(total / raw_wall)
                r["sdk_rate"].append(total / sdk_wall)
                r["raw_cpu"].append(raw_cpu / total * 1e6)
                r["sdk_cpu"].append(sdk_cpu / total * 1e6)
                r["rate_ratio"].append(raw_wall / sdk_wall)
                r["cpu_ratio"].append(sdk_cpu / raw_cpu)
        for n, r in runs.items():
            results[str(n)] = {key: summary(values) for key, values in r.items()}
    return results
