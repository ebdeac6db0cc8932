"""A closed-loop HTTP load generator: ``python -m benchmarks._loadgen``.

``--connections`` workers each send ``GET --url`` on their own keep-alive connection, one
request at a time, for ``--warmup`` then ``--duration`` seconds; the load is bounded (never
more than ``--connections`` requests in flight). Requests that complete inside the measured
window count: it prints one JSON line with their number, the requests per second, the 50th
and 99th percentile latency in milliseconds, the errors, and its own CPU share (to show that
the generator was not the bottleneck).

With several ``--url`` and ``--rounds R``, it measures them interleaved: R rounds of one
window per URL (warm-up included; each URL has its own ``--connections`` connections, open
throughout), in an order rotated each round, each after a ``POST`` to every ``--settle-url``;
it prints ``{"windows": [...]}``, one such result per window with its ``round`` and
``target`` (the URL's index). Short windows taken in turn see much the same background load,
which on a shared machine moves more than the difference being measured.

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


async def _bare_worker_factory(url: str) -> tuple[Any, Any]:
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

    def close() -> None:
        if connection.transport is not None:
            connection.transport.close()

    return one, close


async def _senders(
    session: aiohttp.ClientSession, url: str, connections: int, use_aiohttp: bool
) -> tuple[list[Any], list[Any]]:
    """``connections`` ways to send one request to ``url`` and wait for its answer (each on
    its own keep-alive connection), and what closes them."""
    if use_aiohttp:

        async def aiohttp_one() -> bool:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        return [aiohttp_one] * connections, []
    pairs = [await _bare_worker_factory(url) for _ in range(connections)]
    return [one for one, _ in pairs], [close for _, close in pairs]


async def _window(
    senders: list[Any],
    warmup: float,
    duration: float,
    stats: aiohttp.ClientSession,
    stats_url: str | None,
) -> dict[str, Any]:
    """One closed-loop window: every sender sends, one request at a time, for ``warmup`` then
    ``duration`` seconds; requests completed inside the measured part count."""
    latencies: list[float] = []
    errors = [0]
    clock = time.perf_counter
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
        # The server's own counters at the window's edges (its CPU time, the senders'
        # stats), on a connection of their own.
        if stats_url is None:
            return None
        await asyncio.sleep(max(0.0, at - clock()))
        async with stats.get(stats_url) as response:
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


async def _warm(stats: aiohttp.ClientSession, urls: list[str | None]) -> None:
    """Open a stats connection to each app before any window."""
    for url in urls:
        if url is not None:
            async with stats.get(url) as response:
                await response.read()


async def load(
    url: str,
    connections: int,
    warmup: float,
    duration: float,
    stats_url: str | None,
    use_aiohttp: bool,
) -> dict[str, Any]:
    """One window against one URL."""
    async with _session(connections) as session, _stats_session() as stats:
        await _warm(stats, [stats_url])
        senders, closers = await _senders(session, url, connections, use_aiohttp)
        try:
            return await _window(senders, warmup, duration, stats, stats_url)
        finally:
            for close in closers:
                close()


async def load_interleaved(
    urls: list[str],
    stats_urls: list[str | None],
    settle_urls: list[str],
    rounds: int,
    connections: int,
    warmup: float,
    duration: float,
    use_aiohttp: bool,
) -> dict[str, Any]:
    """``rounds`` rounds of one window per URL, in an order rotated each round, on
    connections kept open throughout; before each window, a ``POST`` to every settle URL
    (e.g. the apps' ``/__drain``), so that what one window left behind is done before the
    next one starts."""
    windows: list[dict[str, Any]] = []
    closers: list[Any] = []
    async with _session(connections * len(urls)) as session, _stats_session() as stats:
        try:
            await _warm(stats, stats_urls)
            pools = []
            for url in urls:
                senders, closing = await _senders(session, url, connections, use_aiohttp)
                pools.append(senders)
                closers += closing
            targets = list(range(len(urls)))
            for index in range(rounds):
                shift = index % len(urls)
                for target in targets[shift:] + targets[:shift]:
                    for settle in settle_urls:
                        async with stats.post(settle) as response:
                            await response.read()
                    window = await _window(
                        pools[target], warmup, duration, stats, stats_urls[target]
                    )
                    window["round"] = index
                    window["target"] = target
                    windows.append(window)
        finally:
            for close in closers:
                close()
    return {"windows": windows}


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )


def _stats_session() -> aiohttp.ClientSession:
    # Two per host: the window's two edges may overlap a settle or each other.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit_per_host=2), timeout=aiohttp.ClientTimeout(total=60)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, action="append", help="repeat: interleaved")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--stats-url",
        action="append",
        help="a JSON endpoint read when the window opens and closes (one per --url)",
    )
    parser.add_argument(
        "--settle-url", action="append", default=[], help="POSTed before each window"
    )
    parser.add_argument(
        "--rounds", type=int, help="interleave: this many rounds of one window per --url"
    )
    parser.add_argument("--aiohttp", action="store_true", help="use aiohttp's client")
    args = parser.parse_args()
    stats_urls: list[str | None] = list(args.stats_url or [])
    if stats_urls and len(stats_urls) != len(args.url):
        parser.error("give one --stats-url per --url, or none")
    if not stats_urls:
        stats_urls = [None] * len(args.url)
    print(json.dumps({"ready": True}), flush=True)
    coroutine: Any
    if args.rounds is None:
        if len(args.url) != 1:
            parser.error("several --url need --rounds")
        coroutine = load(
            args.url[0], args.connections, args.warmup, args.duration, stats_urls[0], args.aiohttp
        )
    else:
        coroutine = load_interleaved(
            args.url,
            stats_urls,
            args.settle_url,
            args.rounds,
            args.connections,
            args.warmup,
            args.duration,
            args.aiohttp,
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
