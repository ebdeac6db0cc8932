"""Adaptive concurrency: keeping up with a slow API, backing off from a busy one, shutdown.

The client runs here with its default settings (the adaptive limit, ceiling 64) and, beside
it in the same round, with the limit fixed at 8 (the old default), against the benchmark
server in a child process with a jittered latency and, for "backing off", a capacity:

- **keeping up**: goals offered at a steady rate (500/s at 50 ms, 250/s at 200 ms) for a few
  seconds: delivered/s over the offering window, drops, the peak queue, the time to drain
  after the offering stops, and the limit over time; and a burst of 5,000 goals at 200 ms:
  the time to deliver them all (the fixed limit is cut off at ``burst_cap`` seconds).
- **backing off**: a server that admits 300 requests/s (the rest get 429 without
  ``Retry-After``) at 50 ms: goodput, the share of 429 answers, and the limit's swing, for the
  decrease factor in use and for others beside it (the figures that chose it).
- **shutdown**: 1,600 goals queued against a 200 ms API, then ``aclose()`` with the default
  10 s deadline: how many were delivered.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from typing import Any

from datafast_async import DataFast, _limiter

from ._proc import SERVER_CPU, running
from ._stats import summary
from .delivery import API_KEY, VISITOR

__all__ = ["run"]

_JITTER = "0.2"  # each answer's latency within ±20% of the median
_FIXED = {"concurrency": 8, "_adaptive": False}
_SAMPLE = 0.05  # seconds between two samples of the client's stats


def _client(base_url: str, fixed: bool, **kwargs: Any) -> DataFast:
    settings: dict[str, Any] = dict(_FIXED) if fixed else {}
    settings.update(kwargs)
    return DataFast(API_KEY, base_url=base_url, **settings)


Sample = tuple[float, int, int, int, int]  # seconds, queued, in flight, limit, delivered


async def _sampler(df: DataFast, samples: list[Sample]) -> None:
    start = time.perf_counter()
    while True:
        s = df.stats()
        samples.append(
            (time.perf_counter() - start, s.queued, s.in_flight, s.concurrency_limit, s.delivered)
        )
        await asyncio.sleep(_SAMPLE)


async def _steady(
    base_url: str, rate: float, seconds: float, fixed: bool, drain_cap: float
) -> dict[str, Any]:
    """Offer ``rate`` goals/s for ``seconds``; then wait for the rest to be delivered.

    Delivered/s is measured in the steady state: over the offering's second half (slow start
    and the backlog it left are over), from the sampled counts. The fixed limit, which cannot
    keep up, gets ``drain_cap`` seconds to drain; what is left then is reported."""
    df = _client(base_url, fixed)
    await df.start()
    samples: list[Sample] = []
    sampler = asyncio.create_task(_sampler(df, samples))
    offered = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) - offered
        for _ in range(due):
            df.track_nowait(VISITOR, "signup", metadata={"plan": "pro"})
        offered += due
        await asyncio.sleep(0.01)
    window = time.perf_counter() - start
    drain_start = time.perf_counter()
    drained = await df.flush(drain_cap)
    drain = time.perf_counter() - drain_start
    sampler.cancel()
    left = df.stats().queued + df.stats().in_flight
    stats = await df.aclose(0)
    limits = [s[3] for s in samples]
    steady = [s for s in samples if window / 2 <= s[0] <= window]
    delivered_per_s = (
        (steady[-1][4] - steady[0][4]) / (steady[-1][0] - steady[0][0])
        if len(steady) >= 2 and steady[-1][0] > steady[0][0]
        else float("nan")
    )
    return {
        "offered_per_s": offered / window,
        "delivered_per_s": delivered_per_s,
        "ratio": delivered_per_s / rate,
        "dropped": stats.dropped,
        "peak_queue": max((s[1] for s in samples), default=0),
        "drain_s": drain if drained else None,
        "left_after_drain_cap": left,
        "limit_max": max(limits, default=0),
        "limit_last": limits[-1] if limits else 0,
        "limit_over_time": [[round(x[0], 2), x[3]] for x in samples[:: max(1, len(samples) // 40)]],
    }


async def _burst(base_url: str, count: int, cap: float, fixed: bool) -> dict[str, Any]:
    df = _client(base_url, fixed)
    await df.start()
    samples: list[Sample] = []
    sampler = asyncio.create_task(_sampler(df, samples))
    start = time.perf_counter()
    for _ in range(count):
        df.track_nowait(VISITOR, "signup")
    done = await df.flush(cap)
    elapsed = time.perf_counter() - start
    delivered = df.stats().delivered
    sampler.cancel()
    stats = await df.aclose(0)
    return {
        "drained_s": elapsed if done else None,
        "delivered_in_time": delivered,
        "dropped": stats.dropped,
        "limit_max": max((s[3] for s in samples), default=0),
    }


def _server_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__stats", timeout=5) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


async def _backing_off(base_url: str, port: int, seconds: float, factor: float) -> dict[str, Any]:
    """A backlog far above what the server admits, for ``seconds``: goodput and 429s."""
    _limiter.DECREASE = factor
    df = _client(base_url, False, max_queue_size=50_000)
    await df.start()
    for _ in range(int(600 * (seconds + 1.0))):
        df.track_nowait(VISITOR, "signup")
    samples: list[Sample] = []
    sampler = asyncio.create_task(_sampler(df, samples))
    await asyncio.sleep(1.0)  # slow start and the first decreases: not counted
    before = await asyncio.to_thread(_server_stats, port)
    delivered_before = df.stats().delivered
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    window = time.perf_counter() - start
    after = await asyncio.to_thread(_server_stats, port)
    delivered = df.stats().delivered - delivered_before
    sampler.cancel()
    await df.aclose(0)
    requests = after["requests"] - before["requests"]
    refused = after["refused"] - before["refused"]
    limits = [x[3] for x in samples if x[0] >= 1.0]
    return {
        "goodput_per_s": delivered / window,
        "share_429": refused / requests if requests else float("nan"),
        "limit_min": min(limits, default=0),
        "limit_max": max(limits, default=0),
        "limit_mean": statistics.fmean(limits) if limits else float("nan"),
    }


async def _shutdown(base_url: str, count: int, fixed: bool) -> dict[str, Any]:
    df = _client(base_url, fixed)
    await df.start()
    for _ in range(count):
        df.track_nowait(VISITOR, "signup")
    start = time.perf_counter()
    stats = await df.aclose()  # the default 10 s deadline
    return {"delivered": stats.delivered, "seconds": time.perf_counter() - start}


def _collect(rounds: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The summary of one figure over the rounds; ``None`` when a round has none (a fixed
    limit that did not drain a burst in time)."""
    values = [r[key] for r in rounds]
    if all(isinstance(v, (int, float)) for v in values):
        return summary(values)
    return None


def run(
    *,
    rounds: int,
    seconds: float,
    burst: int,
    burst_cap: float,
    fixed_cap: float,
    shutdown_goals: int,
    factors: tuple[float, ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decrease": _limiter.DECREASE,
        "burst": burst,
        "burst_cap_s": burst_cap,
        "fixed_cap_s": fixed_cap,
        "shutdown_goals": shutdown_goals,
    }
    chosen = _limiter.DECREASE
    modes = {"adaptive": False, "fixed_8": True}
    # The fixed limit cannot keep up: it gets less time to show it (the adaptive one always
    # gets enough to finish).
    caps = {"adaptive": 60.0, "fixed_8": fixed_cap}
    for latency, rate in (("0.05", 500.0), ("0.2", 250.0)):
        args = ["--latency", latency, "--jitter", _JITTER]
        with running("benchmarks._server", args, cpu=SERVER_CPU, name="slow server") as server:
            base_url = f"http://127.0.0.1:{server.ready['port']}"
            steady: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            bursts: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            closes: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            for index in range(rounds):
                order = list(modes) if index % 2 == 0 else list(reversed(modes))
                for mode in order:
                    steady[mode].append(
                        asyncio.run(_steady(base_url, rate, seconds, modes[mode], caps[mode]))
                    )
                    if latency == "0.2":
                        cap = burst_cap if mode == "adaptive" else fixed_cap
                        bursts[mode].append(asyncio.run(_burst(base_url, burst, cap, modes[mode])))
                        closes[mode].append(
                            asyncio.run(_shutdown(base_url, shutdown_goals, modes[mode]))
                        )
            key = f"latency_{int(float(latency) * 1000)}ms"
            out[key] = {"offered_per_s": rate}
            for mode in modes:
                runs = steady[mode]
                out[key][mode] = {
                    name: _collect(runs, name)
                    for name in (
                        "delivered_per_s",
                        "ratio",
                        "dropped",
                        "peak_queue",
                        "drain_s",
                        "left_after_drain_cap",
                        "limit_max",
                    )
                }
                out[key][mode]["limit_over_time"] = runs[-1]["limit_over_time"]
                if bursts[mode]:
                    out[key][mode]["burst"] = {
                        name: _collect(bursts[mode], name)
                        for name in ("drained_s", "delivered_in_time", "dropped", "limit_max")
                    }
                    out[key][mode]["shutdown"] = {
                        name: _collect(closes[mode], name) for name in ("delivered", "seconds")
                    }
    args = ["--latency", "0.05", "--jitter", _JITTER, "--capacity-rps", "300"]
    with running("benchmarks._server", args, cpu=SERVER_CPU, name="capped server") as server:
        port = server.ready["port"]
        base_url = f"http://127.0.0.1:{port}"
        capped: dict[str, list[dict[str, Any]]] = {str(f): [] for f in factors}
        try:
            for index in range(rounds):
                order = factors if index % 2 == 0 else tuple(reversed(factors))
                for factor in order:
                    capped[str(factor)].append(
                        asyncio.run(_backing_off(base_url, port, seconds, factor))
                    )
        finally:
            _limiter.DECREASE = chosen
        out["capacity_300"] = {
            factor: {
                name: _collect(runs, name)
                for name in ("goodput_per_s", "share_429", "limit_min", "limit_max", "limit_mean")
            }
            for factor, runs in capped.items()
        }
    return out
