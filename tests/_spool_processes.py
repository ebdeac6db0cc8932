"""The durable spool's test processes: tests/spool_server.py (the API, recording each goal's
``metadata["n"]``) and tests/spool_child.py (a client that may be killed), each bounded in time
and killed on leaving its ``with``; and a client on the same namespace as the children's.
Shared by test_spool_processes.py and test_spool_uvicorn.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datafast_async import DataFast, RetryPolicy

from ._fakes import balances
from ._netservers import free_port

__all__ = [
    "KEY",
    "VISITOR",
    "Child",
    "Server",
    "child",
    "client",
    "deliver_all",
    "free_port",
    "server",
]

HERE = Path(__file__).parent
KEY = "df_spool_process_test_key_01"  # the same as spool_child.py's: one namespace
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
POLICY = RetryPolicy(
    max_attempts=2,
    initial_delay=0.01,
    max_delay=0.02,
    circuit_cooldown=0.1,
    max_circuit_cooldown=0.2,
)
SPOOL_OPTIONS = {"write_interval": 0.02, "sync_interval": 0.2}


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The process's next stdout line, or fail after ``timeout`` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        raise AssertionError(f"no line from {process.args!r} in {timeout} s")
    return box[0]


class Server:
    """tests/spool_server.py in a process."""

    def __init__(self, port: int = 0, latency: tuple[float, float] = (0.0, 0.0)) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "spool_server.py"),
                "--port",
                str(port),
                "--latency-min",
                str(latency[0]),
                "--latency-max",
                str(latency[1]),
                "--max-seconds",
                "110",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.port = json.loads(_read_line(self.process, 20))["port"]
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def received(self) -> list[str]:
        """Every ``n`` received so far, duplicates kept (blocking: call it in a thread)."""
        with urllib.request.urlopen(self.url + "/__bodies", timeout=10) as answer:
            received: list[str] = json.loads(answer.read())["n"]
            return received

    async def counts(self) -> Counter[str]:
        return Counter(await asyncio.to_thread(self.received))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def server(port: int = 0, latency: tuple[float, float] = (0.0, 0.0)) -> Iterator[Server]:
    running = Server(port, latency)
    try:
        yield running
    finally:
        running.stop()


class Child:
    """tests/spool_child.py in a process; a thread collects its stdout lines."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "spool_child.py"), *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(HERE.parent),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(line.startswith(text) for line in list(self.lines))

    def accepted(self) -> dict[str, float]:
        """Each goal the child accepted: its ``n`` and when (``time.time()``)."""
        seen: dict[str, float] = {}
        for line in list(self.lines):
            if line.startswith("A "):
                _, n, at = line.split()
                seen[n] = float(at)
        return seen

    def stats(self) -> dict[str, Any]:
        for line in self.lines:
            if line.startswith("STATS "):
                stats: dict[str, Any] = json.loads(line[6:])
                return stats
        raise AssertionError(f"no STATS line; the child said: {self.lines[-5:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code


@contextlib.contextmanager
def child(*args: str) -> Iterator[Child]:
    running = Child(*args)
    try:
        yield running
    finally:
        running.kill()
        if running.process.stdout is not None:
            running.process.stdout.close()


def client(url: str, spool: Path, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", POLICY)
    kwargs.setdefault("_spool_options", SPOOL_OPTIONS)
    return DataFast(KEY, base_url=url, spool_path=spool, **kwargs)


async def deliver_all(df: DataFast, timeout: float = 60.0) -> None:
    """Wait until everything the client holds is delivered, then close it."""
    assert await df.flush(timeout=timeout), df.stats()
    stats = await df.aclose()
    assert balances(stats), stats
    assert stats.failed == 0, stats
