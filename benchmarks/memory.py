"""Memory: bytes per queued goal, and the resident memory of a full queue.

The API is down (the client points at a closed port), so goals stay queued. ``tracemalloc``
counts what the client allocates for N goals with a 2-key metadata dict, each with its
``Delivery``; the visitor ids are distinct strings made beforehand (a web app receives them
with its requests: they are the caller's, not the SDK's). Beside it, in the same run, the
same goals as plain payload dicts in an ``asyncio.Queue`` (no handle, no validation). The
resident set size is read in a fresh process before and after filling a queue of
``max_queue_size`` goals.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from datafast_async import DataFast, RetryPolicy

from ._stats import summary
from .delivery import API_KEY

__all__ = ["run"]

# Long retry delays: the few goals the workers take stay in flight, none is retried meanwhile.
_PATIENT = RetryPolicy(max_attempts=6, initial_delay=60.0, max_delay=60.0)


async def _abandon(client: DataFast) -> None:
    """Close at once: every goal fails with ShutdownError, as intended here (not logged)."""
    sdk_logger = logging.getLogger("datafast_async")
    level = sdk_logger.level
    sdk_logger.setLevel(logging.CRITICAL)
    try:
        await client.aclose(timeout=0)
    finally:
        sdk_logger.setLevel(level)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _visitors(count: int, offset: int) -> list[str]:
    return [f"{offset + i:08x}-e5f6-4a5b-8c7d-9e0f1a2b3c4d" for i in range(count)]


async def _started_client(count: int, port: int) -> DataFast:
    """A running client whose queue holds ``count`` goals, aimed at a port nobody answers."""
    client = DataFast(
        API_KEY,
        base_url=f"http://127.0.0.1:{port}",
        max_queue_size=count,
        retry=_PATIENT,
        shutdown_timeout=0,
    )
    await client.start()
    return client


async def _sdk_bytes(count: int, port: int) -> float:
    visitors = _visitors(count, 0)
    client = await _started_client(count, port)
    track = client.track_nowait
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    deliveries = [track(v, "signup", metadata={"plan": "pro", "source": "ads"}) for v in visitors]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The list of handles is the caller's: 8 bytes per goal (plus its header), not counted.
    held = sys.getsizeof(deliveries)
    stats = client.stats()
    if stats.queued + stats.in_flight != count:
        raise RuntimeError(f"goals did not stay queued: {stats}")
    await _abandon(client)
    return (after - before - held) / count


async def _dict_bytes(count: int) -> float:
    visitors = _visitors(count, count)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    put = queue.put_nowait
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for visitor in visitors:
        put(
            {
                "datafast_visitor_id": visitor,
                "name": "signup",
                "metadata": {"plan": "pro", "source": "ads"},
            }
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _rss_child(count: int, port: int) -> dict[str, Any]:
    visitors = _visitors(count, 0)
    client = await _started_client(count, port)
    gc.collect()
    before = _rss_kib()
    for visitor in visitors:
        client.track_nowait(visitor, "signup", metadata={"plan": "pro", "source": "ads"})
    gc.collect()
    after = _rss_kib()
    stats = client.stats()
    await _abandon(client)
    return {
        "rss_before_kib": before,
        "rss_full_kib": after,
        "queued": stats.queued + stats.in_flight,
    }


def _rss(count: int) -> dict[str, Any]:
    """RSS in a fresh interpreter, so that earlier measurements do not blur it."""
    code = (
        "import asyncio, json; from benchmarks.memory import _rss_child; "
        f"print(json.dumps(asyncio.run(_rss_child({count}, {_closed_port()}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(*, rounds: int, count: int = 10_000, max_queue_size: int = 10_000) -> dict[str, Any]:
    sdk: list[float] = []
    plain: list[float] = []
    ratio: list[float] = []
    for _ in range(rounds):
        port = _closed_port()
        per_goal = asyncio.run(_sdk_bytes(count, port))
        per_dict = asyncio.run(_dict_bytes(count))
        sdk.append(per_goal)
        plain.append(per_dict)
        ratio.append(per_goal / per_dict)
    rss = _rss(max_queue_size)
    return {
        "goals": count,
        "bytes_per_goal": summary(sdk),
        "bytes_per_dict_payload": summary(plain),
        "ratio": summary(ratio),
        "full_queue": {
            "max_queue_size": max_queue_size,
            **rss,
            "delta_mib": (rss["rss_full_kib"] - rss["rss_before_kib"]) / 1024,
        },
    }
