"""Pacing the spool's read-back: when requests held on disk come back into memory.

With a spool, requests wait on disk (beyond ``max_queue_size``, parked behind an open circuit,
taken over from an earlier run). ``Refill`` reads them back as the queue drains: a batch while
the circuit is closed and the queue is at most half full, one at a time (to probe with) while
it is half-open, none while it is open or the sender stops. It also says when every request
still pending is parked on disk behind an open circuit (``all_parked``): a ``flush()`` then
returns ``False`` instead of waiting for an API that is not coming back (while a probe is due
or out, it waits for the probe's answer).
"""

from __future__ import annotations

from typing import Any

from .._circuit import Circuit, CircuitState
from .._delivery import Delivery
from .._fate import Fate
from .._queue import RequestQueue
from .._spool import RunSpool
from ._schedule import Schedule
from ._workers import Workers

__all__ = ["Refill"]

# The most requests read back from the spool at once.
_READ_BATCH = 1000


class Refill:
    """The read-back pacing of one sender's spool (or none)."""

    def __init__(
        self,
        spool: RunSpool | None,
        queue: RequestQueue,
        circuit: Circuit,
        schedule: Schedule,
        workers: Workers,
        fate: Fate,
    ) -> None:
        self._spool = spool
        self._queue = queue
        self._circuit = circuit
        self._schedule = schedule
        self._workers = workers
        self._fate = fate
        #: Why a request the journal could not keep failed, once the sender stopped.
        self.reason = "still undelivered at the shutdown deadline"

    def want_more(self) -> None:
        """Read requests back from disk when the queue runs low (one at a time, to probe
        with, while the circuit is half-open)."""
        spool, queue = self._spool, self._queue
        if spool is None or spool.reading or not queue.spooled or self._workers.stopping:
            return
        circuit = self._circuit
        if circuit.state is CircuitState.CLOSED:
            queued = len(queue)
            if queued > queue.maxsize // 2:
                return
            limit = min(queue.maxsize - queued - len(self._schedule), _READ_BATCH)
            if limit < 1:
                return
        elif (
            circuit.refresh() is CircuitState.HALF_OPEN
            and circuit.probe is None
            and not len(queue)
            and not self._schedule.ready
        ):
            limit = 1
        else:
            return
        spool.read_back(limit, self._read_done)

    def refill(self, deliveries: list[Delivery[Any]]) -> None:
        """Requests back from disk (or that could not go there after all) join the queue;
        once the sender stops they fail, reported (never silently lost)."""
        if self._workers.stopping:
            self._fate.unkept(deliveries, self.reason)
            return
        self._queue.refill(deliveries)
        self._workers.notify(len(deliveries))

    def _read_done(self, count: int) -> None:
        if self._workers.stopping or self._spool is None:
            return
        if count:
            self.want_more()
        elif self._queue.spooled:
            self._spool.retry_later(self.want_more)

    def all_parked(self) -> bool:
        """Whether every request pending is parked on disk behind an open circuit (not
        half-open: a probe's answer may send them), or waits in memory for its endpoint's
        circuit (``Schedule.held``)."""
        if self._spool is None:
            return False
        queue = self._queue
        held = self._schedule.held
        on_disk = bool(queue.spooled)
        # Half-open: a probe is due or out, and its answer may send them all.
        if not (on_disk or held) or (on_disk and self._circuit.peek() is not CircuitState.OPEN):
            return False
        return not len(queue) and queue.pending == held

    def check_parked(self) -> None:
        """When every request pending is parked on disk and the API is not taking them, a
        ``flush()`` (or ``aclose()``'s drain) waiting for them returns now, with ``False``."""
        if self.all_parked():
            self._queue.release_flush_waiters(False)
