"""Fixtures: a client wired to a MockTransport whose handler each test scripts, and the guard
against blocking calls in the event loop. The fakes they use are in ``_fakes.py``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import blockbuster.blockbuster
import pytest
from blockbuster import BlockingError, blockbuster_ctx

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
    so is Hypothesis's tracing of every line after a failure (to explain it). The queue's lock
    is allowed too, in every method that takes it (other threads share them: ``track_nowait``
    may be called from any thread, ``stats()`` read from one); each holds it for a few
    operations, never for I/O. So
    are the spool's locks, which the loop shares with the journal's writer thread (the same:
    a few operations, never I/O).
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
        lock = buster.functions["threading.Lock.acquire"]
        # The queue's lock, in every method that takes it: other threads share them (a
        # track_nowait from a worker thread, a metrics exporter reading stats()).
        lock.can_block_in(
            "datafast_async/_queue.py",
            {
                "offer", "record_drop", "take", "unpark", "finish", "park", "take_all",
                "spill", "adopt", "refill", "discard", "to_disk", "items", "pending",
                "snapshot", "active", "flush_waiter", "release_flush_waiters", "_check_flush",
                "push_front", "close_intake",
            },
        )  # fmt: skip
        # The spool's locks, shared with its writer thread, held for a few operations and
        # never across I/O: the journal's buffers, and a goal's place in the journal.
        lock.can_block_in("datafast_async/_spool/_journal.py", {"append", "ack", "faults"})
        lock.can_block_in(
            "datafast_async/_durable.py",
            {"settled", "park", "keep", "spill", "_turn_off", "_bring_back", "settle_held"},
        )
        yield
    seen, _Blocked.seen[:] = list(_Blocked.seen), []
    assert not seen, f"blocking calls in the event loop: {seen}"


@pytest.fixture
def settle_counts() -> Iterator[Counter[int]]:
    """``counting_settles()`` for the whole test."""
    with counting_settles() as counts:
        yield counts
