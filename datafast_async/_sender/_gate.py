"""The circuit gate in front of the sender: what a worker, or ``send()``, does while the circuit
is not closed.

``Circuit`` keeps the breaker's states; the gate acts on them for one sender: it opens the
circuit on an answer that every request would get (``observe``) or when, with a spool, the API
stays down (``api_down``), fails (or, with a spool, parks) the waiting requests a chunk per
step of the loop while it is open, lets one request through as the probe once it is half-open
(the others wait for the probe's answer), and closes it when DataFast answers the probe.

Each endpoint has a circuit of its own too, opened by a 403 of that endpoint (a ``dft_`` token
may lack one permission): while it is open the requests of that endpoint fail at once (with a
spool: wait in memory, in the retry schedule, without using an attempt, until it closes; on
disk they would come back at once), and the other kinds go on. It probes its own endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from .._circuit import Circuit, CircuitState
from .._errors import APIError, DataFastError, own_copy
from .._fate import Fate
from .._kinds import KINDS
from .._queue import RequestQueue
from .._reporting import logger
from ._job import Job
from ._refill import Refill
from ._schedule import Schedule
from ._workers import Workers

__all__ = ["Gate"]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
# Requests failed per step of the loop while the circuit is open: thousands never hold the
# loop for long.
CHUNK = 1000
# Seconds a worker (or a send()) waits for the probe's answer before it looks again (the probe
# itself is bounded by the request timeout).
_PROBE_PATIENCE = 1.0
# Seconds past an endpoint's cool-down a request held for it is tried again (the circuit is
# half-open by then).
_HELD_SLACK = 0.001


class Gate:
    """The circuit in front of one sender."""

    def __init__(
        self,
        circuit: Circuit,
        endpoints: Mapping[str, Circuit],
        queue: RequestQueue,
        schedule: Schedule,
        workers: Workers,
        refill: Refill,
        fate: Fate,
        loop: asyncio.AbstractEventLoop,
        policy_attempts: int = 1,
    ) -> None:
        self.circuit = circuit
        #: Each endpoint's own circuit, by path (the sender's, shared).
        self._endpoints = endpoints
        self._queue = queue
        self._schedule = schedule
        self._workers = workers
        self._refill = refill
        self._fate = fate
        self._loop = loop
        #: Whether a worker is failing the waiting requests of the open circuit (one at a
        #: time: with every worker failing a chunk, one step of the loop would fail them all).
        self._failing = False
        #: Whether the bound of requests held for refusing endpoints was said (once a run).
        self._said_full = False
        #: Attempts in a row, across requests, that failed on an error that may pass (a
        #: network error, a 5xx, a 429) since DataFast last answered: the API looks down
        #: when one request ran out of attempts and no other got an answer meanwhile.
        self.failures = 0
        self._down_after = max(1, policy_attempts)

    def _waiting(self) -> int:
        return len(self._queue) + len(self._schedule)

    def _waiting_for(self, scoped: Circuit) -> int:
        """Requests queued for the endpoint of ``scoped``."""
        queue = self._queue
        return sum(queue.waiting_of(kind.index) for kind in KINDS if kind.path == scoped.scope)

    # -- what answers say -------------------------------------------------------------------

    def observe(self, token: object, error: DataFastError, scoped: Circuit) -> None:
        """What a failed attempt of ``token`` (a ``Delivery``, or a ``send()``'s token) to the
        endpoint whose circuit is ``scoped`` tells the circuits."""
        circuit = self.circuit
        if error.opens_circuit and getattr(error, "status", None) == 403:
            # The endpoint's own answer: its circuit opens; DataFast did answer (the key works).
            if scoped.state is _CLOSED or scoped.probe is token:
                scoped.trip(error, self._waiting_for(scoped))
            if circuit.probe is token:
                self.answered(token)
            return
        if error.opens_circuit:
            if circuit.state is _CLOSED or circuit.probe is token:
                circuit.trip(error, self._waiting())
                self._workers.notify_all()
            if scoped.probe is token:
                scoped.probe_dropped(token)  # the client's circuit decides now
            return
        for each in (circuit, scoped):
            if each.probe is token:
                if isinstance(error, APIError) and not error.retriable:
                    self.answered(token)  # DataFast's own refusal (400, 404): the key works
                else:
                    each.probe_unanswered(token)

    def answered(self, token: object) -> None:
        """DataFast answered ``token``'s request: if it was a probe, its circuit closes and
        the requests that waited for it go."""
        circuit = self.circuit
        if circuit.probe is token:
            circuit.answered(token)
            if circuit.state is _CLOSED:
                self._workers.notify(len(self._queue) + len(self._schedule.ready))
        for scoped in self._endpoints.values():
            if scoped.probe is token:
                scoped.answered(token)
                self._schedule.wake_held()  # what waited for it goes now

    # -- an endpoint's circuit ----------------------------------------------------------------

    def let_through(self, job: Job, scoped: Circuit) -> bool:
        """A worker took ``job`` and its endpoint's circuit is not closed: ``True`` to send it
        (the circuit closed meanwhile, or it is the probe); else it was failed, or waits."""
        state = scoped.refresh()
        if state is _CLOSED:
            return True
        if state is not _OPEN and scoped.probe is None:
            scoped.probe = job.delivery  # half-open: it probes its endpoint
            return True
        # Not sent: if it was to probe the client's circuit, another request probes now
        # (else that circuit would wait for this probe's answer for ever).
        self.circuit.probe_dropped(job.delivery)
        self.hold_back(job, scoped)
        return False

    def hold_back(self, job: Job, scoped: Circuit) -> None:
        """``job``'s endpoint refuses: it fails at once with that answer (its own copy), or,
        with a spool, or while a probe is out, waits in the schedule (no attempt used).

        At most half of ``max_queue_size`` requests wait for endpoints that refuse: the rest
        of the bound stays for the other kinds (with a spool, what waits on disk behind them
        is read back into it). Beyond that, a refused request fails with the answer, said.
        """
        state = scoped.refresh()
        full = self._schedule.held >= max(1, self._queue.maxsize // 2)
        if (state is _OPEN and not scoped.keeps) or full:
            cause = scoped.error
            if cause is None:
                cause = DataFastError(f"{scoped.scope} refuses every request")
            error = own_copy(cause)
            error.maybe_delivered = job.maybe
            scoped.failed_while_open += 1
            if full and scoped.keeps and not self._said_full:
                self._said_full = True
                logger.error(
                    "%d requests already wait for endpoints that refuse every request (half "
                    "of max_queue_size): more requests refused by %s fail with its answer (%s)",
                    self._schedule.held,
                    scoped.scope,
                    cause,
                )
            self._fate.failed(job.delivery, error)
            return
        delay = scoped.until - self._loop.time() if state is _OPEN else _PROBE_PATIENCE
        job.held = True
        self._schedule.later(job, max(delay, 0.0) + _HELD_SLACK)
        self._refill.check_parked()

    def looks_down(self) -> bool:
        """Whether the API looks down: at least as many attempts in a row failed, across
        requests, on errors that may pass as one request has attempts, with no answer of
        DataFast's in between (a request out of attempts while others get through is that
        request's own failure, not an outage)."""
        return self.failures >= self._down_after

    def probe_now(self) -> None:
        """``aclose()`` began: a circuit open because the API looked down probes at once."""
        if self.circuit.probe_now():
            self._workers.notify_all()

    def api_down(self, error: DataFastError) -> None:
        """With a spool, a request ran out of attempts on an error that may pass: the API is
        treated as down (the circuit opens: requests wait on disk, one probe per cool-down)."""
        circuit = self.circuit
        if circuit.state is _CLOSED:
            circuit.trip(error, self._waiting(), down=True)
            self._workers.notify_all()
        self._refill.check_parked()

    # -- a worker's step while the circuit is not closed ------------------------------------

    async def worker_step(self) -> Job | None:
        """Fail a chunk of requests (open), wait (open and nothing to fail, or a probe is out),
        or take a request to send as the probe (half-open, none out)."""
        circuit = self.circuit
        state = circuit.refresh()
        if state is _OPEN:
            if not self._failing and self._fail_a_chunk():
                self._failing = True
                try:
                    await asyncio.sleep(0)  # let the app run between two chunks
                finally:
                    self._failing = False
            else:
                await self._workers.wait_for_work(circuit.until - self._loop.time())
            return None
        if state is _CLOSED:
            return None
        if circuit.probe is None:  # half-open: the first request at hand probes the API
            job = self._schedule.take_due()
            if job is None:
                taken = self._queue.take()
                if taken is not None:
                    job = Job(taken)
            if job is None:
                if self._queue.spooled:
                    self._refill.want_more()  # every request is on disk: read one back
                await self._workers.wait_for_work()
                return None
            circuit.probe = job.delivery
            return job
        await asyncio.wait((circuit.changed(),), timeout=_PROBE_PATIENCE)
        return None

    def _fail_a_chunk(self) -> bool:
        """Fail up to ``CHUNK`` waiting requests with the open circuit's error (each its own
        copy), or park them with a spool; ``False`` when none was waiting."""
        circuit, queue, fate = self.circuit, self._queue, self._fate
        cause = circuit.error
        if cause is None:
            return False
        doomed = [(job.delivery, job.maybe) for job in self._schedule.take_some(CHUNK)]
        while len(doomed) < CHUNK:
            taken = queue.take()
            if taken is None:
                break
            doomed.append((taken, False))
        failed = 0
        for delivery, maybe in doomed:
            if fate.parked(delivery):
                continue  # with a spool: it waits on disk for the circuit to close
            error = own_copy(cause)
            error.maybe_delivered = maybe  # this request's own, not the cause's
            fate.failed(delivery, error)
            failed += 1
        circuit.failed_while_open += failed
        self._refill.check_parked()
        return bool(doomed)

    # -- send(): the caller's own request ---------------------------------------------------

    async def before_send(self, token: object, scoped: Circuit) -> None:
        """Before a ``send()``'s attempt: raise the open circuit's error (the client's, or
        its endpoint's), wait for a probe's answer, or become the probe."""
        while True:
            if self._passes(self.circuit, token) and self._passes(scoped, token):
                return
            await asyncio.wait(
                (self.circuit.changed(), scoped.changed()),
                timeout=_PROBE_PATIENCE,
                return_when=asyncio.FIRST_COMPLETED,
            )

    @staticmethod
    def _passes(circuit: Circuit, token: object) -> bool:
        """Whether ``token`` may go through ``circuit`` now (closed, or it is its probe);
        raises the open circuit's error; ``False``: wait for another's probe."""
        state = circuit.refresh()
        if state is _CLOSED or circuit.probe is token:
            return True
        if state is _OPEN:
            assert circuit.error is not None
            raise own_copy(circuit.error)
        if circuit.probe is None:
            circuit.probe = token
            return True
        return False
