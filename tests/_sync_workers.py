"""Real worker processes of the sync task queues (Celery, Dramatiq) for the worker tests: each
started by the test in its own session (so that a SIGKILL reaches the whole worker, its children
included), its output in a log file, stopped (SIGTERM) or killed (SIGKILL) by the test, and
killed at the end whatever happened."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from datafast_async.testing import ThreadedFakeDataFast

from ._docs import first_python_block

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0  # seconds for a worker to say it is ready
STOP_TIMEOUT = 20.0  # seconds for a worker to end after SIGTERM


def worker_env(
    fake: ThreadedFakeDataFast, redis_url: str, spool: Path | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a worker: the fake DataFast's key and URL, the Redis broker, the
    spool (``DATAFAST_SPOOL_PATH``) when given, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
    env.update(
        DATAFAST_API_KEY=fake.api_key,
        DATAFAST_BASE_URL=fake.base_url,
        REDIS_URL=redis_url,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
    )
    if spool is not None:
        env["DATAFAST_SPOOL_PATH"] = str(spool)
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


class WorkerProcess:
    """One worker command, started at ``__enter__`` once ``ready`` is in its log."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        log: Path,
        ready: str,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log = log
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def __enter__(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_for(self.ready, START_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        """Block until ``text`` is in the log (AssertionError, with the log, otherwise)."""
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not in the worker's log within {timeout:g} s "
                    f"(exit code {self.process.poll()}):\n{self.text()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the worker's main process (a warm shutdown); its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker did not end within {timeout:g} s of SIGTERM:\n{self.text()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL to the worker's whole session (its children too); waits for the main."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def readme_block(heading: str) -> str:
    """The first ``python`` block of the section ``heading`` of ``docs/workers.md``."""
    return first_python_block("workers.md", heading)


def spooled_records(spool: Path) -> int:
    """The requests journaled in ``spool`` (a line with a ``path``; acknowledgements have
    none)."""
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for file in spool.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                count += sum('"path"' in line for line in file.read_text().splitlines())
    return count


@contextlib.contextmanager
def fake_server() -> Iterator[ThreadedFakeDataFast]:
    with ThreadedFakeDataFast() as fake:
        yield fake
