"""A long outage: what the client holds stays bounded, and nothing grows with each retry."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest

from datafast_async import DataFast, QueueFullError, RetryPolicy, TransportError
from datafast_async._delivery import Delivery
from datafast_async._transport import MockTransport, Request, Response

from ._fakes import balances, ok, until

OFFERED = 20_000
MAX_QUEUE = 1_000
CONCURRENCY = 8
# Snapshots after N and 3N retries into the outage: 2N retries between them.
N = 10_000
GROWTH_BOUND = 256 * 1024  # bytes: 2N retries leaking 13 bytes each would pass it
# Many attempts, small delays that are not zero: goals wait to retry, as in a real outage.
OUTAGE_POLICY = RetryPolicy(max_attempts=1_000_000, initial_delay=0.001, max_delay=0.004)
GATEWAY_PAGE = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"


class Outage:
    """The API, down until ``end()``: a 503 page from the gateway, or no connection at all."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.down = True
        self.requests = 0

    async def __call__(self, request: Request) -> Response:
        self.requests += 1
        await asyncio.sleep(0)  # a request takes a turn of the loop at least, as on a socket
        if not self.down:
            return ok()
        if self.kind == "refused":
            raise TransportError(
                "cannot connect to datafa.st:443: Connection refused", maybe_delivered=False
            )
        return Response(
            503, GATEWAY_PAGE, "Service Unavailable", None, {"Content-Type": "text/html"}
        )


class Peaks:
    """Samples the counters from a task: the most goals held, and whether the ledger balanced."""

    def __init__(self, df: DataFast) -> None:
        self.df = df
        self.held = 0
        self.samples = 0
        self.unbalanced = 0

    async def run(self) -> None:
        while True:
            stats = self.df.stats()
            self.samples += 1
            self.held = max(self.held, stats.queued + stats.in_flight)
            self.unbalanced += not balances(stats)
            await asyncio.sleep(0)


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.parametrize("kind", ["503", "refused"])
async def test_an_outage_holds_a_bounded_number_of_goals_and_memory_does_not_grow(
    kind: str,
) -> None:
    api = Outage(kind)
    df = DataFast(
        "df_outage_test_key_0001",
        max_queue_size=MAX_QUEUE,
        concurrency=CONCURRENCY,
        retry=OUTAGE_POLICY,
        _transport_factory=lambda: MockTransport(api),
    )
    accepted: list[Delivery[Any]] = []
    refused = 0
    tracemalloc.start()
    try:
        async with df:
            peaks = Peaks(df)
            sampler = asyncio.create_task(peaks.run())
            for i in range(OFFERED):
                delivery = df.track_nowait(f"visitor-{i}", "outage")
                if delivery.done():
                    assert isinstance(delivery.error, QueueFullError)
                    refused += 1
                else:
                    accepted.append(delivery)
                if i % 100 == 99:
                    await asyncio.sleep(0)  # the app serves requests between goals
            start = df.stats().retries
            await until(lambda: df.stats().retries >= start + N, timeout=60)
            first, retries_first = traced_now(), df.stats().retries - start
            snapshot_first = tracemalloc.take_snapshot()
            await until(lambda: df.stats().retries >= start + 3 * N, timeout=60)
            second, retries_second = traced_now(), df.stats().retries - start
            snapshot_second = tracemalloc.take_snapshot()
            during = df.stats()

            api.down = False
            assert await df.flush(timeout=30)
            sampler.cancel()
            final = await df.aclose()
    finally:
        tracemalloc.stop()

    # Held goals never passed the bound; every goal offered was accepted or counted dropped.
    assert peaks.held <= MAX_QUEUE + CONCURRENCY
    assert peaks.unbalanced == 0
    assert during.delivered == during.failed == 0
    assert final.dropped == refused
    assert final.enqueued == len(accepted)
    assert final.enqueued + final.dropped == OFFERED
    # Retries tripled, memory did not grow with them.
    growth = second - first
    assert retries_second >= 3 * N > N >= retries_first - 100
    assert growth < GROWTH_BOUND, top_growth(snapshot_first, snapshot_second)
    # The API came back: everything held is delivered.
    assert final.delivered == final.enqueued
    assert final.failed == final.queued == final.in_flight == 0
    assert all(delivery.result is not None for delivery in accepted)
    print(
        f"\noutage ({kind}): {OFFERED} goals offered, {final.enqueued} accepted, "
        f"{final.dropped} dropped; most held at once {peaks.held} (bound "
        f"{MAX_QUEUE + CONCURRENCY}) over {peaks.samples} samples; traced memory "
        f"{first / 1024:.0f} KiB after {retries_first} retries into the outage, "
        f"{second / 1024:.0f} KiB after {retries_second} ({growth / 1024:+.1f} KiB); "
        f"{api.requests} requests in all; all {final.delivered} held goals delivered once "
        "the API came back"
    )


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> str:
    stats = after.compare_to(before, "lineno")[:5]
    return "memory grew with the retries:\n" + "\n".join(str(stat) for stat in stats)
