"""Handler impact: what reporting a goal costs a FastAPI endpoint under load.

A FastAPI app under uvicorn (its own process, on the client's core) serves four endpoints
that differ only in how they report a goal (``_app``); a load generator in another process
(on the other core, beside the upstream) keeps ``connections`` requests in flight against
one endpoint at a time. The upstream, standing in for the goals API, answers in 50 ms or at
once. For each endpoint: requests per second and p50/p99 latency; for ``track``, the goals the
SDK delivered per second meanwhile and its backlog at the end. Each measurement has a fresh
app whose router tries the measured endpoint first; each round measures the endpoints in a
rotated order, and ratios compare endpoints of the same round.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from ._proc import CLIENT_CPU, SERVER_CPU, pin, running, start_child
from ._stats import summary

__all__ = ["ENDPOINTS", "run"]

ENDPOINTS = ("plain", "inline", "background", "track")


def _get(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _measure(
    app: str, endpoint: str, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    _get(app + "/__reset", "POST")  # an empty queue, whatever the previous endpoint left
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
    before, after = result.pop("server_stats")
    elapsed = after["time"] - before["time"]
    result["app_cpu_share"] = (after["cpu"] - before["cpu"]) / elapsed
    if endpoint == "track":
        result["delivered_per_s"] = (after["delivered"] - before["delivered"]) / elapsed
        result["dropped"] = after["dropped"] - before["dropped"]
        result["backlog"] = after["queued"] + after["in_flight"]
    return result


def _one_upstream(
    latency: float, rounds: int, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ENDPOINTS}
    info: dict[str, Any] = {}
    with running(
        "benchmarks._server", ["--latency", str(latency)], cpu=SERVER_CPU, name="upstream"
    ) as upstream:
        upstream_url = f"http://127.0.0.1:{upstream.ready['port']}"
        for index in range(rounds):
            order = ENDPOINTS[index % 4 :] + ENDPOINTS[: index % 4]
            # A fresh app per endpoint, with that endpoint routed first (the router's misses
            # then cost the same for all). The four start together on both cores (start-up is
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
                    for warm in ENDPOINTS:  # every code path once
                        _get(f"{app}/{warm}")
                    runs[name].append(_measure(app, name, connections, warmup, duration))
                    app_process.stop()
            finally:
                for app_process in apps.values():
                    app_process.stop()
    result: dict[str, Any] = {"upstream_latency_s": latency, "server": info, "endpoints": {}}
    for name, measured in runs.items():
        keys = [k for k in measured[0] if isinstance(measured[0][k], (int, float))]
        result["endpoints"][name] = {k: summary([m[k] for m in measured]) for k in keys}
    plain = runs["plain"]
    for name in ENDPOINTS[1:]:
        result["endpoints"][name]["rps_ratio"] = summary(
            [m["rps"] / p["rps"] for m, p in zip(runs[name], plain, strict=True)]
        )
        result["endpoints"][name]["p99_ratio"] = summary(
            [m["p99_ms"] / p["p99_ms"] for m, p in zip(runs[name], plain, strict=True)]
        )
    return result


def run(
    *,
    rounds: int,
    connections: int = 32,
    warmup: float = 1.0,
    duration: float = 5.0,
    latencies: tuple[float, ...] = (0.05, 0.0),
) -> dict[str, Any]:
    return {
        f"upstream_{int(latency * 1000)}ms": _one_upstream(
            latency, rounds, connections, warmup, duration
        )
        for latency in latencies
    }
