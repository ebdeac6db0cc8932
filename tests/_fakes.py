"""Shared fakes for the tests (not a test module: test modules import from here, never from
each other): a scripted API with hold and release, the spool's quick settings and zero-delay
policies, and helpers that read a spool directory."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafast_async import DataFast, RetryPolicy
from datafast_async._spool import Journal
from datafast_async._transport import MockTransport, Request, Response

from .conftest import error, ok

KEY = "df_spool_client_key_7f3a9c21"
OTHER_KEY = "df_some_other_key_5b8d0e44"
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
FAST_SPOOL = {"write_interval": 0.01, "sync_interval": 0.05}
FAST = RetryPolicy(
    max_attempts=2,
    initial_delay=0.0,
    max_delay=0.0,
    circuit_cooldown=0.05,
    max_circuit_cooldown=0.1,
)


class API:
    """The API as the test sets it: ``mode`` is ``"up"`` (DataFast's success), ``"down"``
    (503), ``"refused"`` (401: the circuit opens), ``"bad"`` (400: the goal fails finally)
    or ``"hold"`` (no answer until ``release()``, then the mode then in force)."""

    def __init__(self, mode: str = "up") -> None:
        self.mode = mode
        self.delivered: Counter[str] = Counter()  # metadata "i" of goals answered 200
        self.refused: Counter[str] = Counter()  # ... answered 400
        self.requests = 0
        self._released: asyncio.Event | None = None

    def factory(self) -> MockTransport:
        return MockTransport(self)

    def __call__(self, request: Request) -> Response | Any:
        self.requests += 1
        if self.mode == "hold":
            return self._held(request)
        return self._answer(request)

    async def _held(self, request: Request) -> Response:
        if self._released is None:
            self._released = asyncio.Event()
        while self.mode == "hold":
            await self._released.wait()
        return self._answer(request)

    def release(self, mode: str = "up") -> None:
        self.mode = mode
        if self._released is not None:
            self._released.set()
            self._released = None

    def _answer(self, request: Request) -> Response:
        mode = self.mode
        if mode == "up":
            self.delivered[json.loads(request.body)["metadata"]["i"]] += 1
            return ok()
        if mode == "bad":
            self.refused[json.loads(request.body)["metadata"]["i"]] += 1
            return error(400, "bad goal")
        if mode == "refused":
            return error(401, "Invalid API key")
        return error(503, "unavailable")


def client(path: Path | str, api: API, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("_spool_options", FAST_SPOOL)
    kwargs.setdefault("api_key", KEY)
    return DataFast(spool_path=path, _transport_factory=api.factory, **kwargs)


def track(df: DataFast, start: int, count: int) -> list[Any]:
    return [
        df.track_nowait(VISITOR, "signup", metadata={"i": str(i)})
        for i in range(start, start + count)
    ]


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "datafast_async" and r.levelno == level
    ]


def journal_of(df: DataFast) -> Journal:
    spool = df._run.spool
    assert spool is not None
    return spool.journal


def read_dir(path: Path) -> dict[str, bytes]:
    """Every journal file's bytes (a blocking read: call it in a thread from a loop)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


async def on_disk(path: Path) -> dict[str, bytes]:
    return await anyio.to_thread.run_sync(read_dir, path)


def records_in(files: dict[str, bytes]) -> list[dict[str, Any]]:
    out = []
    for data in files.values():
        for line in data.split(b"\n"):
            if line.startswith(b'{"id":'):
                out.append(json.loads(line))
    return out


def pending_ids(files: dict[str, bytes]) -> set[str]:
    """The metadata "i" of goals journaled and not acknowledged, over every file."""
    goals: dict[str, str] = {}
    acked: set[str] = set()
    for data in files.values():
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "body" in entry:
                body = entry["body"]
                if isinstance(body, str):
                    body = json.loads(body)
                goals[entry["id"]] = body["metadata"]["i"]
            elif "ack" in entry or "outcome" in entry:
                acked.add(entry.get("ack") or entry.get("id"))
    return {i for goal_id, i in goals.items() if goal_id not in acked}
