"""A closed-loop HTTP load generator: ``python -m benchmarks._loadgen``.

``--connections`` workers each send ``GET --url`` on their own keep-alive connection, one
request at a time, for ``--warmup`` then ``--duration`` seconds; the load is bounded (never
more than ``--connections`` requests in flight). Requests that complete inside the measured
window count: it prints one JSON line with their number, the requests per second, the 50th
and 99th percentile latency in milliseconds, the errors, and its own CPU share (to show that
the generator was not the bottleneck).

By default each connection is a bare asyncio protocol (on uvloop when installed) that writes
a prebuilt request and reads ``Content-Length`` answers: about a fifth of the CPU aiohttp's
client needs per request, which on a 2-core machine is the difference between measuring the
app and measuring the generator. ``--aiohttp`` uses aiohttp's client instead, to cross-check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole answer, repeat."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail(ConnectionError("an answer without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        status = int(head[9:12])
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, data: bytes) -> int:
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter


async def _bare_worker_factory(url: str) -> Any:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    data = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(_Connection, host, port)

    async def one() -> bool:
        try:
            return await asyncio.wait_for(connection.request(data), 60) == 200
        except (OSError, asyncio.TimeoutError):
            return False

    return one


async def load(
    url: str,
    connections: int,
    warmup: float,
    duration: float,
    stats_url: str | None,
    use_aiohttp: bool,
) -> dict[str, object]:
    latencies: list[float] = []
    errors = [0]
    clock = time.perf_counter
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    ) as session:

        async def aiohttp_one() -> bool:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        if use_aiohttp:
            senders = [aiohttp_one] * connections
        else:
            senders = [await _bare_worker_factory(url) for _ in range(connections)]
        begin = clock() + warmup
        end = begin + duration

        async def worker(send: Any) -> None:
            while True:
                start = clock()
                if start >= end:
                    return
                ok = await send()
                done = clock()
                if begin <= done < end:
                    if ok:
                        latencies.append(done - start)
                    else:
                        errors[0] += 1

        async def snapshot(at: float) -> Any:
            # The server's own counters at the window's edges (its CPU time, the SDK's stats),
            # on a connection of their own, opened before the window.
            if stats_url is None:
                return None
            async with aiohttp.ClientSession() as own:
                async with own.get(stats_url) as response:
                    await response.read()
                await asyncio.sleep(max(0.0, at - clock()))
                async with own.get(stats_url) as response:
                    return await response.json()

        cpu = time.process_time()
        edges = asyncio.gather(snapshot(begin), snapshot(end))
        await asyncio.gather(*(worker(send) for send in senders))
        first, last = await edges
        cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "errors": errors[0],
        "loadgen_cpu_share": cpu / (warmup + duration),
        "server_stats": [first, last],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--stats-url", help="a JSON endpoint read when the window opens and closes")
    parser.add_argument("--aiohttp", action="store_true", help="use aiohttp's client")
    args = parser.parse_args()
    print(json.dumps({"ready": True}), flush=True)
    coroutine = load(
        args.url, args.connections, args.warmup, args.duration, args.stats_url, args.aiohttp
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
