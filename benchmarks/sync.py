"""Sync code and metrics: what ``BackgroundClient.track_nowait`` costs a thread with no event
loop, beside ``DataFast.track_nowait`` in its own loop; and the same two with OpenTelemetry's
``instrument()`` attached (its observable instruments are read at collection time only, so it
should change neither figure). Alternating batch by batch, against the fast server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from datafast_async import BackgroundClient, DataFast

from ._proc import SERVER_CPU, running
from ._stats import summary
from .delivery import API_KEY, VISITOR

__all__ = ["run"]


def _batch(track: Any, batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
    return (time.perf_counter_ns() - start) / batch


async def _in_loop(df: DataFast, batch: int) -> float:
    took = _batch(df.track_nowait, batch)
    await df.flush()
    return took


def _instrumented(df: DataFast) -> Any:
    """``instrument(df)`` on an SDK meter provider with an in-memory reader, else ``None``."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from datafast_async import metrics
    except ImportError:
        return None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = metrics.instrument(df, meter_provider=provider)
    return handle, reader, provider


def _measure(base_url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    """Each round: both clients plain and with ``instrument()`` attached, in turn (the order
    flips each round), each figure a batch of ``track_nowait``."""
    out: dict[str, list[float]] = {}
    loop = asyncio.new_event_loop()
    df = DataFast(API_KEY, base_url=base_url, max_queue_size=max(batch, 10_000))
    background = BackgroundClient(API_KEY, base_url=base_url, max_queue_size=max(batch, 10_000))
    try:
        loop.run_until_complete(df.start())
        background.start()
        loop.run_until_complete(_in_loop(df, batch))  # warm
        _batch(background.track_nowait, batch)
        background.flush()
        for index in range(rounds):
            variants = ("plain", "instrumented") if index % 2 == 0 else ("instrumented", "plain")
            for variant in variants:
                attached = []
                if variant == "instrumented":
                    for client in (df, background._df):
                        handle = _instrumented(client)
                        if handle is not None:
                            attached.append(handle)
                    if not attached:
                        continue  # OpenTelemetry's SDK is not installed
                in_loop = loop.run_until_complete(_in_loop(df, batch))
                other = _batch(background.track_nowait, batch)
                background.flush()
                for handle, reader, provider in attached:
                    reader.get_metrics_data()  # a collection, as an exporter makes
                    handle.close()
                    provider.shutdown()
                out.setdefault(f"{variant}_loop_ns", []).append(in_loop)
                out.setdefault(f"{variant}_thread_ns", []).append(other)
                out.setdefault(f"{variant}_ratio", []).append(other / in_loop)
        if "instrumented_loop_ns" in out:
            out["instrument_loop_ratio"] = [
                a / b
                for a, b in zip(out["instrumented_loop_ns"], out["plain_loop_ns"], strict=True)
            ]
            out["instrument_thread_ratio"] = [
                a / b
                for a, b in zip(out["instrumented_thread_ns"], out["plain_thread_ns"], strict=True)
            ]
    finally:
        background.close()
        loop.run_until_complete(df.aclose())
        loop.close()
    return out


def run(*, rounds: int, batch: int) -> dict[str, Any]:
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        measured = _measure(base_url, rounds, batch)
    results: dict[str, Any] = {key: summary(values) for key, values in measured.items()}
    results["batch"] = batch
    return results
