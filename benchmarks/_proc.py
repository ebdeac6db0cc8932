"""Child processes: start one, read the line it prints when ready, pin it to a core, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "CLIENT_CPU",
    "SERVER_CPU",
    "Child",
    "cpu_count",
    "pin",
    "running",
    "start_child",
    "unpin",
]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


_ALL = _cpus()
# The process being measured runs on the first core; what serves or loads it on the last one.
CLIENT_CPU: int | None = _ALL[0] if len(_ALL) >= 2 else None
SERVER_CPU: int | None = _ALL[-1] if len(_ALL) >= 2 else None


def pin(pid: int, cpu: int | None) -> bool:
    """Pin a process to one core when the machine allows it; ``False`` when it did not."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def unpin(pid: int) -> None:
    if _ALL and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(_ALL))


class Child:
    """A running child process that printed one JSON line when it was ready."""

    def __init__(self, proc: subprocess.Popen[str], ready: dict[str, Any], name: str) -> None:
        self.proc = proc
        self.ready = ready
        self.name = name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints (its result), within ``timeout`` seconds."""
        return _read_line(self.proc, timeout, self.name)

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_line(proc: subprocess.Popen[str], timeout: float, name: str) -> dict[str, Any]:
    import selectors

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{name}: no answer within {timeout:g} s")
            if not selector.select(remaining):
                continue
            line = proc.stdout.readline()
            if not line:
                code = proc.wait(5)
                raise RuntimeError(f"{name} exited with code {code} before answering")
            line = line.strip()
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result


def start_child(
    module: str,
    args: Sequence[str],
    *,
    cpu: int | None,
    name: str,
    ready_timeout: float = 30.0,
) -> Child:
    """Run ``python -m module args`` pinned to ``cpu`` (``None``: free to use every core);
    wait for the first JSON line it prints."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if cpu is None:
        unpin(proc.pid)  # it would inherit this process's core
    else:
        pin(proc.pid, cpu)
    try:
        ready = _read_line(proc, ready_timeout, name)
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return Child(proc, ready, name)


@contextlib.contextmanager
def running(
    module: str, args: Sequence[str], *, cpu: int | None, name: str, ready_timeout: float = 30.0
) -> Iterator[Child]:
    child = start_child(module, args, cpu=cpu, name=name, ready_timeout=ready_timeout)
    try:
        yield child
    finally:
        child.stop()
