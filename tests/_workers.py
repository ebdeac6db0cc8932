"""A real worker process of a task queue (arq, taskiq) for the worker tests: started in its own
session (so that a kill reaches its children too), its output in files, stopped with SIGTERM
or killed with SIGKILL, and killed in any case at the end. Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

START_TIMEOUT = 20.0  # seconds for a worker to import its app and start its client
STOP_TIMEOUT = 20.0  # seconds for a stopped worker to exit
WAIT_TIMEOUT = 10.0  # seconds for anything else the tests wait for

ROOT = Path(__file__).resolve().parent.parent


def wait_until(what: str, done: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines the worker's app wrote (one per hook that ran)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def journaled(spool: Path) -> int:
    """How many requests the spool's journal files hold, acknowledged or not (each record
    has a ``path``; an acknowledgement has none)."""
    count = 0
    if spool.is_dir():
        for file in spool.glob("*.jsonl"):
            for line in file.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the line being written
                count += isinstance(record, dict) and "path" in record
    return count


class Worker:
    """One run of a worker: ``argv`` in ``ROOT`` with the environment ``env`` added (any
    ``DATAFAST_*`` of the test's own environment left out)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        directory: Path,
        name: str,
        cwd: Path = ROOT,
    ) -> None:
        self.events_file = directory / f"{name}.events"
        self._stdout = directory / f"{name}.stdout"
        self._stderr = directory / f"{name}.stderr"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
        environ.update(env, WORKER_EVENTS=str(self.events_file), PYTHONUNBUFFERED="1")
        self.environ = environ
        with open(self._stdout, "wb") as out, open(self._stderr, "wb") as err:
            self.process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self._kill_group()

    @property
    def stderr(self) -> str:
        return self._stderr.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return events(self.events_file)

    def hooks(self, hook: str) -> list[dict[str, Any]]:
        return [event for event in self.events() if event["hook"] == hook]

    def wait_started(self) -> float:
        """Wait until the worker's client has started; returns the seconds it took."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.hooks("startup"):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the worker exited ({self.process.returncode}):\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start in time:\n{self.stderr}")
            time.sleep(0.02)
        return time.monotonic() - self.started

    def stop(self) -> str:
        """SIGTERM, as a deploy or Ctrl-C does; wait for the exit. Returns its stderr."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill_group()
            raise AssertionError(f"the worker did not stop in time:\n{self.stderr}") from None
        # Its children (taskiq's worker processes) are gone too.
        wait_until("the worker's children exit", lambda: not self._group_alive())
        return self.stderr

    def kill(self) -> None:
        """SIGKILL to the worker and its children, as the OOM killer does."""
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        wait_until("the worker's children die", lambda: not self._group_alive())

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True
        return True


def lines(text: str, contains: str) -> list[str]:
    return [line for line in text.splitlines() if contains in line]


def settled(stats: dict[str, Any]) -> bool:
    return bool(stats["enqueued"] == stats["delivered"] + stats["failed"] + stats["spooled"])
