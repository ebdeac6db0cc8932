"""Enqueue: what ``track_nowait`` costs the caller, beside building a dict and ``put_nowait``.

A running client (its sender delivering to the fast server) takes batches of 5,000
``track_nowait`` calls, each with a fresh 2-key metadata dict, timed with ``perf_counter_ns``;
the sender drains the queue between batches. Beside each batch, and in alternating order, the
same number of payload dicts (with a fresh 2-key metadata dict) go into an ``asyncio.Queue``
with ``put_nowait``. Each round gives both figures and their ratio, and a bare ``put_nowait`` of
one prebuilt dict: the issue quotes about 150 ns for it, so it shows how fast this machine runs
Python against the one the issue's absolute figures come from.

Each round also times the steps ``track_nowait`` takes, one at a time and in the same batches
(the loop itself included in each), so the table shows where its time goes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from datafast_async import DataFast
from datafast_async._delivery import pending
from datafast_async._kinds import GOALS
from datafast_async._queue import RequestQueue
from datafast_async._validation import validate_goal

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


def _time_steps(batch: int) -> dict[str, float]:
    """ns per call of each step of track_nowait, timed alone (each loop's own cost included)."""
    visitor = VISITOR
    metadata = {"plan": "pro", "source": "ads"}
    fields = validate_goal(visitor, "signup", None, metadata)
    queue = RequestQueue(batch)
    deliveries = [pending(GOALS, fields) for _ in range(batch)]
    get_loop = asyncio._get_running_loop
    out: dict[str, float] = {}

    start = time.perf_counter_ns()
    for _ in range(batch):
        pass
    out["empty_loop_ns"] = (time.perf_counter_ns() - start) / batch
    start = time.perf_counter_ns()
    for _ in range(batch):
        {"plan": "pro", "source": "ads"}  # noqa: B018  (building it is the step timed)
    out["metadata_literal_ns"] = (time.perf_counter_ns() - start) / batch
    start = time.perf_counter_ns()
    for _ in range(batch):
        validate_goal(visitor, "signup", None, metadata)
    out["validate_ns"] = (time.perf_counter_ns() - start) / batch
    start = time.perf_counter_ns()
    for _ in range(batch):
        pending(GOALS, fields)
    out["delivery_ns"] = (time.perf_counter_ns() - start) / batch
    offer = queue.offer
    start = time.perf_counter_ns()
    for delivery in deliveries:
        offer(delivery)
    out["offer_ns"] = (time.perf_counter_ns() - start) / batch
    start = time.perf_counter_ns()
    for _ in range(batch):
        get_loop()
    out["running_loop_ns"] = (time.perf_counter_ns() - start) / batch
    return out


async def _measure(base_url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    sdk: list[float] = []
    base: list[float] = []
    ratio: list[float] = []
    bare: list[float] = []
    steps: dict[str, list[float]] = {}
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
            for step, ns in _time_steps(batch).items():
                steps.setdefault(step, []).append(ns)
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
        **{f"step_{step}": values for step, values in steps.items()},
    }


def run(*, rounds: int, batch: int = BATCH) -> dict[str, Any]:
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        measured = asyncio.run(_measure(base_url, rounds, batch))
    result: dict[str, Any] = {key: summary(values) for key, values in measured.items()}
    result["batch"] = batch
    return result
