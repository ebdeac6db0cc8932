"""A fast HTTP/1.1 server standing in for the DataFast API: ``python -m benchmarks._server``.

It answers every ``POST`` with DataFast's success body (``GET /__stats`` with its counters), on
keep-alive connections, after ``--latency`` seconds. It is a bare asyncio protocol (on uvloop
when installed), so that the client, not the server, is what a benchmark measures. It prints
one JSON line (its port) when ready and exits when terminated, when its parent dies, or after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any

_BODY = (
    b'{"status":"success","data":[{"message":"Custom event created successfully",'
    b'"eventId":"67f8b9b5c320277df9a9d681"}]}'
)
_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _Counters:
    requests = 0
    bytes_in = 0


def _stats_response() -> bytes:
    body = json.dumps({"requests": _Counters.requests, "bytes_in": _Counters.bytes_in}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class _Http(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self._latency = latency
        self._buffer = bytearray()
        self._transport: Any = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                return
            del buffer[:total]
            if head.startswith(b"get /__stats"):
                self._write(_stats_response())
                continue
            _Counters.requests += 1
            _Counters.bytes_in += total
            if self._latency > 0:
                self._loop.call_later(self._latency, self._write, _OK)
            else:
                self._write(_OK)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def _serve(host: str, port: int, latency: float, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(latency), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    run(_serve(args.host, args.port, args.latency, args.max_seconds))


if __name__ == "__main__":
    main()
