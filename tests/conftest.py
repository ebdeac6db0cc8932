"""Fixtures: a client wired to a MockTransport whose handler each test scripts, and the guard
against blocking calls in the event loop. The fakes they use are in ``_fakes.py``."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, ClassVar

import blockbuster.blockbuster
import pytest
from blockbuster import BlockingError, blockbuster_ctx

import datafast_async
from datafast_async import DataFast

from ._fakes import NO_WAIT, Recorder, counting_settles


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_client(recorder: Recorder) -> Callable[..., DataFast]:
    """Build a client on the recorder's MockTransport; keyword arguments go to DataFast."""

    def make(**kwargs: Any) -> DataFast:
        kwargs.setdefault("api_key", "df_unit_test_key_0001")
        kwargs.setdefault("retry", NO_WAIT)
        return DataFast(_transport_factory=recorder.factory, **kwargs)

    return make


# -- no blocking call in the event loop ------------------------------------------------------


class _Blocked(BlockingError):
    """blockbuster's error, also recorded: the SDK may catch it (a callback's or a transport's
    exception is logged, not raised), and the test must fail all the same."""

    seen: ClassVar[list[str]] = []

    def __init__(self, func: str) -> None:
        super().__init__(func)
        self.seen.append(f"{func} in thread {threading.current_thread().name}")


_PACKAGE = os.path.dirname(os.path.abspath(datafast_async.__file__)) + os.sep
_PACKAGE_TESTING = os.path.join(_PACKAGE, "testing") + os.sep
# Frames between a lock's acquire() and the code that called it: blockbuster's wrapper, and
# the predicate below.
_GUARD_FILES = {os.path.abspath(blockbuster.blockbuster.__file__), os.path.abspath(__file__)}


def _an_own_short_lock(lock: Any, *args: Any, **kwargs: Any) -> bool:
    """Whether ``lock.acquire()`` was called by the package's own code (its testing package
    aside) on the lock of the object whose method called it (``self._lock``)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _GUARD_FILES:
        frame = frame.f_back
    if frame is None:
        return False
    filename = frame.f_code.co_filename
    if not filename.startswith(_PACKAGE) or filename.startswith(_PACKAGE_TESTING):
        return False
    owner = frame.f_locals.get("self")
    return owner is not None and getattr(owner, "_lock", None) is lock


def _or_an_own_short_lock(allowed: Callable[..., bool]) -> Callable[..., bool]:
    def predicate(lock: Any, *args: Any, **kwargs: Any) -> bool:
        return allowed(lock, *args, **kwargs) or _an_own_short_lock(lock)

    return predicate


@pytest.fixture(autouse=True)
def no_blocking_in_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test when the SDK makes a blocking call in a running event loop.

    blockbuster patches the blocking functions (``time.sleep``, file and socket I/O, a
    ``threading.Lock`` held elsewhere, ...) and raises ``BlockingError`` when one is called in
    a running loop with a ``datafast_async`` frame on the stack, in any thread (sync tests run
    loops with ``asyncio.run`` too). Its testing package is left out of the scan:
    ``ThreadedFakeDataFast`` runs its own loop on a thread and shares its lock with the test's
    thread; it is scaffolding, not the SDK. A logging handler's own writes are allowed: where
    the SDK's log lines go (pytest's log file handler, here) is the application's choice, and
    so is Hypothesis's tracing of every line after a failure (to explain it).

    The package's short-held locks may be waited for too: a lock an object of the package
    keeps as ``self._lock`` (the queue's, the journal's buffers', the spool's), acquired by a
    method of that object in the package's own code (``_an_own_short_lock``). Other threads
    share them (``track_nowait`` may be called from any thread, ``stats()`` read from one, the
    journal's writer thread swaps its buffers) and each holds it for a few operations, never
    across I/O. The rule names no method, so renamed or new ones are covered; it allows no
    other lock (the journal's ``_step_lock``, held across the writer's I/O; a
    ``threading.Event`` or a thread's ``join``, whose locks are taken in threading.py), and
    nothing else in those modules (``time.sleep``, file and socket I/O are still caught). Only
    ``acquire()`` is seen: blockbuster does not patch ``with lock:``.

    Every such error is also recorded, so that one the SDK caught and logged still fails the
    test.
    """
    monkeypatch.setattr(blockbuster.blockbuster, "BlockingError", _Blocked)
    _Blocked.seen.clear()
    with blockbuster_ctx(
        scanned_modules=["datafast_async"], excluded_modules=["datafast_async.testing"]
    ) as buster:
        for function in buster.functions.values():
            function.can_block_in("logging/__init__.py", {"emit", "flush"})
            # Hypothesis's explain phase traces every line after a failure, ours included.
            function.can_block_in("hypothesis/internal/scrutineer.py", {"trace", "trace_line"})
        for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
            lock = buster.functions[name]
            lock.deactivate()  # its predicate is read as it is activated
            lock.can_block_predicate = _or_an_own_short_lock(lock.can_block_predicate)
            lock.activate()
        yield
    seen, _Blocked.seen[:] = list(_Blocked.seen), []
    assert not seen, f"blocking calls in the event loop: {seen}"


@pytest.fixture
def settle_counts() -> Iterator[Counter[int]]:
    """``counting_settles()`` for the whole test."""
    with counting_settles() as counts:
        yield counts
