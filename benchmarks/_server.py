"""A fast HTTP/1.1 server standing in for the DataFast API: ``python -m benchmarks._server``.

It answers every ``POST`` with DataFast's success body (for ``/api/v1/payments``, the payments
answer) (``GET /__stats`` with its counters), on
keep-alive connections, after ``--latency`` seconds (each answer's latency drawn uniformly
within ``--jitter`` of it). Like a real API under load it can have a capacity: with
``--capacity-rps`` a token bucket (a tenth of a second of burst) admits requests, and those
beyond it are answered ``--over`` (429 without ``Retry-After``, or 503) after the same latency.
With ``--record KEY`` it keeps the value of ``metadata[KEY]`` of every body it receives (before it
answers), and ``GET /__recorded`` returns them in the order received.
It is a bare asyncio protocol (on uvloop when installed), so that the client, not the server, is
what a benchmark measures. It prints one JSON line (its port) when ready and exits when
terminated, when its parent dies, or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
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


# DataFast's answer to a payment: a bare object (the transaction id is not read back here).
_PAID_BODY = (
    b'{"message":"Payment recorded and attributed successfully","transaction_id":"ch_bench"}'
)
_PAID = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_PAID_BODY)).encode()
    + b"\r\n\r\n"
    + _PAID_BODY
)


def _answer(status: bytes, kind: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


# What a server over its capacity answers: a 429 without Retry-After, or a gateway's 503.
_OVER = {
    429: _answer(
        b"429 Too Many Requests",
        b"application/json",
        b'{"status":"error","error":{"code":429,"message":"Too many requests."}}',
    ),
    503: _answer(
        b"503 Service Unavailable",
        b"text/html",
        b"<html><body><h1>503 Service Unavailable</h1></body></html>",
    ),
}


class _Counters:
    recorded: list[Any] = []  # noqa: RUF012  (one server per process)
    requests = 0
    bytes_in = 0
    refused = 0
    in_flight = 0
    high_water = 0


class _Bucket:
    """A token bucket of ``rate`` tokens per second holding a tenth of a second of them."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.size = max(1.0, rate / 10)
        self.tokens = self.size
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _json_response(value: Any) -> bytes:
    body = json.dumps(value).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _record(body: bytes, key: str) -> None:
    try:
        value = json.loads(body)["metadata"][key]
    except (ValueError, KeyError, TypeError):
        value = None
    _Counters.recorded.append(value)


def _stats_response() -> bytes:
    return _json_response(
        {
            "requests": _Counters.requests,
            "bytes_in": _Counters.bytes_in,
            "refused": _Counters.refused,
            "high_water": _Counters.high_water,
        }
    )


class _Http(asyncio.Protocol):
    def __init__(
        self,
        latency: float,
        jitter: float,
        bucket: _Bucket | None,
        over: bytes,
        record: str | None = None,
    ) -> None:
        self._latency = latency
        self._record = record
        self._jitter = jitter
        self._bucket = bucket
        self._over = over
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
            if self._record is not None and not head.startswith(b"get "):
                _record(bytes(buffer[end + 4 : total]), self._record)
            del buffer[:total]
            if head.startswith(b"get /__stats"):
                self._write(_stats_response())
                continue
            if head.startswith(b"get /__recorded"):
                self._write(_json_response(_Counters.recorded))
                continue
            _Counters.requests += 1
            _Counters.bytes_in += total
            answer = _PAID if head.startswith(b"post /api/v1/payments") else _OK
            if self._bucket is not None and not self._bucket.take():
                answer = self._over
                _Counters.refused += 1
            latency = self._latency
            if self._jitter:
                latency *= random.uniform(1.0 - self._jitter, 1.0 + self._jitter)
            if latency > 0:
                _Counters.in_flight += 1
                _Counters.high_water = max(_Counters.high_water, _Counters.in_flight)
                self._loop.call_later(latency, self._answer, answer)
            else:
                self._write(answer)

    def _answer(self, data: bytes) -> None:
        _Counters.in_flight -= 1
        self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def _serve(
    host: str,
    port: int,
    latency: float,
    max_seconds: float,
    jitter: float = 0.0,
    capacity_rps: float = 0.0,
    over: int = 429,
    record: str | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    bucket = _Bucket(capacity_rps) if capacity_rps > 0 else None
    server = await loop.create_server(
        lambda: _Http(latency, jitter, bucket, _OVER[over], record), host, port, backlog=1024
    )
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
    parser.add_argument("--jitter", type=float, default=0.0, help="latency spread, a fraction")
    parser.add_argument(
        "--capacity-rps", type=float, default=0.0, help="requests/s admitted (0: no cap)"
    )
    parser.add_argument("--over", type=int, choices=(429, 503), default=429)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument(
        "--record", metavar="KEY", help="keep metadata[KEY] of every body (GET /__recorded)"
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    run(
        _serve(
            args.host,
            args.port,
            args.latency,
            args.max_seconds,
            args.jitter,
            args.capacity_rps,
            args.over,
            args.record,
        )
    )


if __name__ == "__main__":
    main()
