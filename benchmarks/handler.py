"""Handler impact: what reporting a goal costs a FastAPI endpoint under load.

A FastAPI app under uvicorn (its own process, on the client's core) serves five endpoints
that differ only in how they report a goal (``_app``); a load generator in another process
(on the other core, beside the upstream) keeps ``connections`` requests in flight against
one endpoint at a time. The upstream, standing in for the goals API, answers in 50 ms or at
once. Each endpoint is measured on an app of its own whose router tries it first; rounds take
the endpoints in a rotated order, and ratios compare endpoints of the same round.

Two runs:

- **One goal per ``every`` requests** (``plain``, ``track``, ``raw_sender``; 50 ms upstream),
  a rate both senders sustain: ``track`` against a hand-written background sender (raw
  aiohttp, a fixed set of tasks, no validation) and against no tracking; the goals of the
  issue. The three apps run side by side, and one load generator takes many short windows on
  them in turn (rotated each round), each after the senders have delivered what the last one
  left, so that all three see much the same background load. At the end both senders are
  drained: every goal they accepted must have been delivered, none dropped.
- **A goal in every request** (``plain``, ``inline``, ``background``, ``track``; 50 ms and
  instant upstream): the app is saturated, so the SDK's sender gets only what the requests
  leave it and its backlog grows (until the queue is full, when goals are dropped): it
  measures a saturated app more than sending. For ``track``: the goals delivered per second
  and the drops beside the requests per second, the backlog at the end. Each measurement has
  a fresh app, reset before its window.

Where the CPU goes: the app's CPU time per request for every endpoint (``time.process_time``
at the window's edges, over the requests completed in it); for the two senders of the first
run, the CPU per delivered goal beyond what ``plain`` spent per request in the same round,
split into the hand-over in the request (this thread's CPU time around the call, one goal in
eight, in the app) and the rest, which is the sending in the background.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from ._proc import CLIENT_CPU, SERVER_CPU, pin, running, start_child
from ._stats import summary

__all__ = ["ENDPOINTS", "SUSTAINED", "run"]

# The run with a goal in every request.
ENDPOINTS = ("plain", "inline", "background", "track")
# The run at a rate the senders sustain.
SUSTAINED = ("plain", "track", "raw_sender")
SENDERS = ("track", "raw_sender")
ALL = ("plain", "inline", "background", "track", "raw_sender")


def _get(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _measure(
    app: str, endpoint: str, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    _get(app + "/__reset", "POST")  # empty senders, whatever the previous endpoint left
    time.sleep(0.2)
    generator = start_child(
        "benchmarks._loadgen",
        [
            "--url",
            f"{app}/{endpoint}",
            "--stats-url",
            f"{app}/__stats",
            "--connections",
            str(connections),
            "--warmup",
            str(warmup),
            "--duration",
            str(duration),
        ],
        cpu=SERVER_CPU,
        name="load generator",
    )
    try:
        result = generator.read_json(timeout=warmup + duration + 120)
    finally:
        generator.stop()
    return _figures(endpoint, result)


def _figures(endpoint: str, result: dict[str, Any]) -> dict[str, Any]:
    """One window's figures: the load generator's, and the app's from its two snapshots."""
    before, after = result.pop("server_stats")
    for key in ("round", "target"):
        result.pop(key, None)
    elapsed = after["time"] - before["time"]
    requests = max(1, result["requests"])
    result["app_cpu_s"] = after["cpu"] - before["cpu"]
    result["app_cpu_share"] = result["app_cpu_s"] / elapsed
    result["app_cpu_per_request_us"] = result["app_cpu_s"] / requests * 1e6
    result["gc_per_request_us"] = (after["gc_seconds"] - before["gc_seconds"]) / requests * 1e6
    if endpoint in SENDERS:
        first, last = before["senders"][endpoint], after["senders"][endpoint]
        result["goals_per_s"] = (last["enqueued"] - first["enqueued"]) / elapsed
        result["delivered_per_s"] = (last["delivered"] - first["delivered"]) / elapsed
        result["delivered"] = last["delivered"] - first["delivered"]
        result["dropped"] = last["dropped"] - first["dropped"]
        result["backlog"] = last["queued"] + last["in_flight"]
        handoffs = last["handoffs"] - first["handoffs"]
        result["handoff_us"] = (
            (last["handoff_seconds"] - first["handoff_seconds"]) / max(1, handoffs) * 1e6
        )
    return result


def _rounds(
    latency: float,
    endpoints: Sequence[str],
    rounds: int,
    connections: int,
    warmup: float,
    duration: float,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """A goal in every request: for each round, one fresh app per endpoint, measured one
    after the other in a rotated order, each for ``warmup`` + ``duration`` seconds."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in endpoints}
    info: dict[str, Any] = {}
    with running(
        "benchmarks._server", ["--latency", str(latency)], cpu=SERVER_CPU, name="upstream"
    ) as upstream:
        upstream_url = f"http://127.0.0.1:{upstream.ready['port']}"
        for index in range(rounds):
            shift = index % len(endpoints)
            order = tuple(endpoints[shift:]) + tuple(endpoints[:shift])
            # A fresh app per endpoint, with that endpoint routed first (the router's misses
            # then cost the same for all). They start together on both cores (start-up is
            # not measured), wait idle on the client's core, and each stops after its turn.
            apps = {}
            try:
                for name in order:
                    apps[name] = start_child(
                        "benchmarks._app",
                        ["--upstream", upstream_url, "--first", name],
                        cpu=None,
                        name="app",
                        ready_timeout=90,
                    )
                for name in order:
                    app_process = apps[name]
                    pin(app_process.pid, CLIENT_CPU)
                    info = {k: app_process.ready[k] for k in ("loop", "http")}
                    app = f"http://127.0.0.1:{app_process.ready['port']}"
                    for warm in ALL:  # every code path once
                        _get(f"{app}/{warm}")
                    runs[name].append(_measure(app, name, connections, warmup, duration))
                    app_process.stop()
            finally:
                for app_process in apps.values():
                    app_process.stop()
    return runs, info


def _summaries(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():
        keys = [k for k in measured[0] if isinstance(measured[0][k], (int, float))]
        out[name] = {k: summary([m[k] for m in measured]) for k in keys}
    return out


def _ratios(
    runs: dict[str, list[dict[str, Any]]], name: str, base: str, suffix: str
) -> dict[str, dict[str, Any]]:
    pairs = list(zip(runs[name], runs[base], strict=True))
    return {
        f"rps_ratio{suffix}": summary([m["rps"] / b["rps"] for m, b in pairs]),
        f"p99_ratio{suffix}": summary([m["p99_ms"] / b["p99_ms"] for m, b in pairs]),
    }


def _every_request(
    latency: float, rounds: int, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    runs, info = _rounds(latency, ENDPOINTS, rounds, connections, warmup, duration)
    result: dict[str, Any] = {
        "upstream_latency_s": latency,
        "every": 1,
        "server": info,
        "endpoints": _summaries(runs),
    }
    for name in ENDPOINTS[1:]:
        result["endpoints"][name].update(_ratios(runs, name, "plain", ""))
    return result


def _interleaved(
    latency: float,
    endpoints: Sequence[str],
    every: int,
    rounds: int,
    connections: int,
    warmup: float,
    duration: float,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], dict[str, Any]]:
    """One goal per ``every`` requests: one app per endpoint (that endpoint routed first), all
    on the client's core; one load generator measures them in turn, ``rounds`` times in a
    rotated order, each window after the senders have delivered what the last one left. Then
    both senders are drained: what they accepted in all, and what they delivered."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in endpoints}
    totals: dict[str, dict[str, Any]] = {}
    with running(
        "benchmarks._server", ["--latency", str(latency)], cpu=SERVER_CPU, name="upstream"
    ) as upstream:
        upstream_url = f"http://127.0.0.1:{upstream.ready['port']}"
        apps = {}
        try:
            for name in endpoints:
                apps[name] = start_child(
                    "benchmarks._app",
                    ["--upstream", upstream_url, "--first", name, "--every", str(every)],
                    cpu=None,
                    name="app",
                    ready_timeout=90,
                )
            urls = {name: f"http://127.0.0.1:{apps[name].ready['port']}" for name in endpoints}
            for name, app_process in apps.items():
                pin(app_process.pid, CLIENT_CPU)
                for warm in ALL:  # every code path once
                    _get(f"{urls[name]}/{warm}")
                _get(urls[name] + "/__reset", "POST")
            info = {k: apps[endpoints[0]].ready[k] for k in ("loop", "http")}
            args = ["--rounds", str(rounds), "--connections", str(connections)]
            args += ["--warmup", str(warmup), "--duration", str(duration)]
            for name in endpoints:
                args += ["--url", f"{urls[name]}/{name}", "--stats-url", f"{urls[name]}/__stats"]
                args += ["--settle-url", f"{urls[name]}/__drain?timeout=30"]
            generator = start_child(
                "benchmarks._loadgen", args, cpu=SERVER_CPU, name="load generator"
            )
            try:
                windows = generator.read_json(
                    timeout=rounds * len(endpoints) * (warmup + duration + 10) + 120
                )["windows"]
            finally:
                generator.stop()
            for window in windows:
                name = endpoints[window["target"]]
                runs[name].append(_figures(name, window))
            for name in SENDERS:
                if name in apps:
                    _get(urls[name] + "/__drain?timeout=30", "POST")
                    totals[name] = _get(urls[name] + "/__stats")["senders"][name]
        finally:
            for app_process in apps.values():
                app_process.stop()
    return runs, totals, info


def _sustained(
    latency: float, every: int, rounds: int, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    runs, totals, info = _interleaved(
        latency, SUSTAINED, every, rounds, connections, warmup, duration
    )
    # The CPU a delivered goal costs the app: what the endpoint spent beyond what `plain`
    # spent per request in the same round, over the goals delivered in the window; the part
    # spent in the request handing the goal over was timed in the app, the rest is the sender.
    for name in SENDERS:
        for measured, plain in zip(runs[name], runs["plain"], strict=True):
            plain_per_request = plain["app_cpu_s"] / max(1, plain["requests"])
            extra = measured["app_cpu_s"] - plain_per_request * measured["requests"]
            measured["goal_cpu_us"] = extra / max(1, measured["delivered"]) * 1e6
            measured["sender_cpu_us"] = measured["goal_cpu_us"] - measured["handoff_us"]
    result: dict[str, Any] = {
        "upstream_latency_s": latency,
        "every": every,
        "server": info,
        "endpoints": _summaries(runs),
        # Over the whole run (warm-ups and windows), once both senders were drained.
        "totals": {
            name: {
                "accepted": t["enqueued"],
                "delivered": t["delivered"],
                "failed": t["failed"],
                "dropped": t["dropped"],
                "undelivered": t["enqueued"] - t["delivered"],
            }
            for name, t in totals.items()
        },
    }
    for name in SENDERS:
        result["endpoints"][name].update(_ratios(runs, name, "plain", ""))
    result["endpoints"]["track"].update(_ratios(runs, "track", "raw_sender", "_vs_raw"))
    # The app's CPU per request, track ÷ raw_sender in each round: the same comparison as
    # req/s, but immune to how much of its core a shared machine left the app.
    pairs = list(zip(runs["track"], runs["raw_sender"], strict=True))
    result["endpoints"]["track"]["cpu_ratio_vs_raw"] = summary(
        [t["app_cpu_per_request_us"] / r["app_cpu_per_request_us"] for t, r in pairs]
    )
    # Every window's requests together: the other estimate of the same ratio (windows of
    # equal length, interleaved, so each endpoint saw the same mix of background load).
    result["endpoints"]["track"]["pooled_rps_ratio_vs_raw"] = summary(
        [sum(t["requests"] for t, _ in pairs) / max(1, sum(r["requests"] for _, r in pairs))]
    )
    return result


def run(
    *,
    rounds: int,
    connections: int = 32,
    warmup: float = 1.0,
    duration: float = 5.0,
    latencies: tuple[float, ...] = (0.05, 0.0),
    every: int = 10,
    every_rounds: int = 30,
    every_warmup: float = 0.15,
    every_duration: float = 0.5,
) -> dict[str, Any]:
    """``rounds``, ``warmup``, ``duration``: the run with a goal in every request, one window
    per endpoint and round; ``every_*``: the run with one goal per ``every`` requests, whose
    windows are short and many (taken in turn, they share the machine's background load)."""
    result = {
        # One goal per `every` requests, 50 ms upstream: the goals of the issue.
        "sustained_50ms": _sustained(
            0.05, every, every_rounds, connections, every_warmup, every_duration
        )
    }
    for latency in latencies:
        result[f"upstream_{int(latency * 1000)}ms"] = _every_request(
            latency, rounds, connections, warmup, duration
        )
    return result
