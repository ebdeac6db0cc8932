"""Enqueue: what ``track_nowait`` costs the caller, beside building a dict and ``put_nowait``.

A running client (its sender delivering to the fast server) takes batches of 5,000
``track_nowait`` calls, each with a fresh 2-key metadata dict, timed with ``perf_counter_ns``;
the sender drains the queue between batches. Beside each batch, and in alternating order, the
same number of payload dicts (with a fresh 2-key metadata dict) go into an ``asyncio.Queue``
with ``put_nowait``. Each round gives both figures and their ratio, and a bare ``put_nowait`` of
one prebuilt dict: the issue quotes about 150 ns for it, so it shows how fast this machine runs
Python against the one the issue's absolute figures come from.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from datafast_async import DataFast

from ._proc import SERVER_CPU, running
from ._stats import summary
from .delivery import API_KEY, VISITOR

__all__ = ["run"]

BATCH = 5_000


def _time_track(client: DataFast, batch: int) -> float:
    track = client.track_nowait
    visitor = VISITOR
    start = time.perf_counter_ns()
    for _ in range(batch):
        track(visitor, "signup", metadata={"plan": "pro", "source": "ads"})
    return (time.perf_counter_ns() - start) / batch


def _time_queue(batch: int) -> float:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    put = queue.put_nowait
    visitor = VISITOR
    start = time.perf_counter_ns()
    for _ in range(batch):
        put(
            {
                "datafast_visitor_id": visitor,
                "name": "signup",
                "metadata": {"plan": "pro", "source": "ads"},
            }
        )
    return (time.perf_counter_ns() - start) / batch


def _time_bare_put(batch: int) -> float:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    put = queue.put_nowait
    payload = {"datafast_visitor_id": VISITOR, "name": "signup"}
    start = time.perf_counter_ns()
    for _ in range(batch):
        put(payload)
    return (time.perf_counter_ns() - start) / batch


async def _measure(base_url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    sdk: list[float] = []
    base: list[float] = []
    ratio: list[float] = []
    bare: list[float] = []
    async with DataFast(API_KEY, base_url=base_url, max_queue_size=max(batch, 10_000)) as client:
        # One batch to warm up the caches, the connections and the allocator.
        _time_track(client, batch)
        await client.flush()
        for index in range(rounds):
            if index % 2 == 0:
                tracked = _time_track(client, batch)
                queued = _time_queue(batch)
            else:
                queued = _time_queue(batch)
                tracked = _time_track(client, batch)
            bare.append(_time_bare_put(batch))
            sdk.append(tracked)
            base.append(queued)
            ratio.append(tracked / queued)
            await client.flush()
        stats = client.stats()
    if stats.dropped or stats.failed or stats.delivered != stats.enqueued:
        raise RuntimeError(f"the client did not deliver every goal: {stats}")
    return {
        "track_nowait_ns": sdk,
        "dict_put_nowait_ns": base,
        "ratio": ratio,
        "bare_put_nowait_ns": bare,
    }


def run(*, rounds: int, batch: int = BATCH) -> dict[str, Any]:
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        measured = asyncio.run(_measure(base_url, rounds, batch))
    result: dict[str, Any] = {key: summary(values) for key, values in measured.items()}
    result["batch"] = batch
    return result
