"""The sender: watched workers that drain the queue and deliver requests of every kind.

Each worker (``_workers``) takes a slot from the ``Limiter`` first, then the next request (a
retry that is due, else the queue's oldest), sends it through the transport to its kind's
endpoint, and hands the answer to ``_outcome``. After a failed attempt ``_retry.next_step`` is
the one decision, for the queue's requests and ``send()`` alike; what it decides is carried out
by ``_fate`` (delivered, failed, parked, kept at the deadline), the retry schedule
(``_schedule``), or the circuit gate (``_gate``). A ``Retry-After`` pauses the whole sender
through the limiter. ``_refill`` paces the spool's read-back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._circuit import Circuit, CircuitState
from .._delivery import Delivery
from .._errors import APIError, DataFastError, TransportError, own_copy
from .._fate import Fate, shutdown_error
from .._kinds import KINDS, Endpoint
from .._limiter import Limiter
from .._outcome import outcome_of
from .._queue import RequestQueue
from .._reporting import AttemptLog, logger
from .._retry import RetryPolicy, Step, next_step
from .._spool import RunSpool
from .._transport import Transport
from ._gate import Gate
from ._job import Job
from ._refill import Refill
from ._schedule import Schedule
from ._workers import Workers

__all__ = ["Sender"]

_CLOSED = CircuitState.CLOSED
# Loop turns a worker cancelled from outside waits for the owner's aclose() to begin.
_OWNER_TURNS = 3
_DEADLINE_REASON = "still undelivered at the shutdown deadline"


class Sender:
    """Delivers the requests of one ``RequestQueue`` through one ``Transport``.

    ``targets``: each kind's endpoint path with its query (by ``Kind.index``).
    """

    def __init__(
        self,
        *,
        queue: RequestQueue,
        transport: Transport,
        policy: RetryPolicy,
        limiter: Limiter,
        fate: Fate,
        loop: asyncio.AbstractEventLoop,
        workers: int,
        targets: Sequence[str],
        on_orphaned: Callable[[], Awaitable[None]] | None = None,
        spool: RunSpool | None = None,
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._policy = policy
        self.limiter = limiter
        self._fate = fate
        self._loop = loop
        self._targets = targets
        self._on_orphaned = on_orphaned
        self._orphaned = False
        self._spool = spool
        self._close_deadline: float | None = None
        self._deadline_reason = _DEADLINE_REASON
        self._attempt_log = AttemptLog()
        self.workers = Workers(
            loop,
            workers,
            self._work,
            on_death=self._worker_died,
            on_cancelled=self._cancelled_from_outside,
        )
        #: The idle workers' futures, and waking them (the client's hot path reads these).
        self.idle = self.workers.idle
        self.notify = self.workers.notify
        self.circuit = Circuit(policy, loop, keeps=spool is not None)
        #: Each endpoint's own circuit (a 403 is the endpoint's), by path; and by kind index.
        self.endpoint_circuits = {
            kind.path: Circuit(policy, loop, keeps=spool is not None, scope=kind.path)
            for kind in KINDS
        }
        self.kind_circuits = [self.endpoint_circuits[kind.path] for kind in KINDS]
        self.schedule = Schedule(queue, loop, self.workers.notify)
        self.refill = Refill(spool, queue, self.circuit, self.schedule, self.workers, fate)
        self.gate = Gate(
            self.circuit,
            self.endpoint_circuits,
            queue,
            self.schedule,
            self.workers,
            self.refill,
            fate,
            loop,
            policy_attempts=policy.max_attempts,
        )

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers in the client's loop (``stop`` ends them)."""
        self.workers.start()
        self.notify(len(self._queue))

    def begin_close(self, deadline: float, reason: str) -> None:
        """From now on a retry that would start after ``deadline`` ends at once, through
        ``Fate.at_deadline`` (kept in the spool, else failed), with ``reason``."""
        self._close_deadline = deadline
        self._deadline_reason = reason
        self.refill.reason = reason
        for job in self.schedule.take_later_than(deadline):
            self._fate.at_deadline(job.delivery, job.last, job.maybe, reason)
        # An API that looked down may be back: probe it now rather than after the cool-down,
        # so that what waits on disk can still go before the deadline.
        self.gate.probe_now()
        self.refill.check_parked()

    def halt(self) -> None:
        """Stop taking work: workers cancelled from now on just end, and no retry is due."""
        self.workers.stopping = True
        if self._spool is not None:
            self._spool.halted = True
        self.schedule.halt()

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the workers (requests in flight are cut) and wait for them, at most
        ``timeout`` seconds."""
        self.halt()
        await self.workers.stop(timeout)

    def abandon_all(self, reason: str) -> None:
        """Hand every request still queued, in flight or waiting to retry to
        ``Fate.at_deadline`` (``maybe_delivered`` when an attempt of it may have reached the
        API; every request cut in flight may have)."""
        held: dict[Delivery[Any], tuple[DataFastError | None, bool]] = {}
        for job in self.schedule.take_all():
            held[job.delivery] = (job.last, job.maybe)
        for job in self.workers.take_held():
            held[job.delivery] = (job.last, True)  # its request was cut
        self._queue.take_all()
        fate = self._fate
        for delivery in self._queue.active:
            last, maybe = held.get(delivery, (None, False))
            fate.at_deadline(delivery, last, maybe, reason)

    def all_parked(self) -> bool:
        """Whether every request pending is parked on disk behind a circuit not closed."""
        return self.refill.all_parked()

    # -- the workers ----------------------------------------------------------------------

    async def _work(self, index: int) -> None:
        queue, ready, limiter, circuit = (
            self._queue,
            self.schedule.ready,
            self.limiter,
            self.circuit,
        )
        take_due, send, spool, targets = (
            self.schedule.take_due,
            self._transport.send,
            self._spool,
            self._targets,
        )
        held, gate, want_more = self.workers.held, self.gate, self.refill.want_more
        kind_circuits = self.kind_circuits
        held_back = False

        job: Job | None = None
        outcome: bytes | DataFastError
        while True:
            job = None
            if circuit.state is not _CLOSED:
                job = await gate.worker_step()
                if job is None:
                    continue
            # A slot first, then a request: a request is never parked in front of the limiter.
            if not limiter.try_acquire():
                await limiter.acquire()
                if job is None and circuit.state is not _CLOSED:
                    limiter.release()  # the circuit opened while this worker waited
                    continue
            try:
                if job is None:
                    # A retry that is due first, else the queue's oldest request. This loop
                    # runs once per request sent, so the common case makes as few calls as
                    # it can.
                    if ready:
                        job = take_due()
                    else:
                        taken = queue.take()
                        if taken is not None:
                            job = Job(taken)
                        if spool is not None and queue.spooled:
                            want_more()  # requests wait on disk: read some back
                if job is not None:
                    delivery = job.delivery
                    kind = delivery._kind
                    scoped = kind_circuits[kind.index]
                    if scoped.state is not _CLOSED and not gate.let_through(job, scoped):
                        job = None  # its endpoint refuses: failed, or waiting for the circuit
                        held_back = True
                if job is not None:
                    held[index] = job
                    epoch = limiter.epoch
                    try:
                        wire = delivery._wire
                        if wire is None:
                            wire = delivery._body()
                            if spool is not None:  # the writer journals these bytes
                                delivery._wire = wire
                        status, body, reason, headers = await send(
                            kind.method, targets[kind.index], wire
                        )
                        outcome = outcome_of(kind, status, body, reason, headers)
                    except TransportError as exc:
                        outcome = exc
                    except Exception as exc:
                        # A custom transport broke its contract: fail this request, keep the
                        # worker.
                        logger.exception(
                            "the transport failed on %s", kind.describe(delivery._fields)
                        )
                        outcome = _internal_error("the transport failed", exc)
            finally:
                limiter.release()
            if job is None:
                if held_back:
                    held_back = False
                    await asyncio.sleep(0)  # thousands refused at once never hold the loop
                else:
                    await self.workers.wait_for_work()
                continue
            if isinstance(outcome, bytes):
                if limiter.growing:
                    limiter.succeeded(epoch, bool(queue) or bool(ready))
                self._delivered(delivery, outcome)
            else:
                self._attempt_failed(job, outcome, epoch)
            held[index] = None

    def _delivered(self, delivery: Delivery[Any], body: bytes) -> None:
        """The API accepted a request: the probe's answer, if it was the probe; its fate."""
        self.gate.failures = 0
        if (
            self.circuit.probe is not None
            or self.kind_circuits[delivery._kind.index].probe is not None
        ):
            self.gate.answered(delivery)
        self._fate.delivered(delivery, body)

    def _probe_dropped(self, delivery: Delivery[Any]) -> None:
        self.circuit.probe_dropped(delivery)
        self.kind_circuits[delivery._kind.index].probe_dropped(delivery)

    def _worker_died(self, job: Job | None, exc: Exception) -> None:
        """A worker died of a bug: the request it held fails with the real error."""
        if job is not None:
            self._probe_dropped(job.delivery)
            self._fate.failed(job.delivery, _internal_error("a sender worker died", exc))

    async def _cancelled_from_outside(self, index: int) -> None:
        """A worker was cancelled, not by ``stop()``: mostly a loop that is ending (as
        ``asyncio.run`` does, cancelling every task at once).

        The task that owns the client may be cancelled in the same sweep, and its ``aclose()``
        stops intake before its first await. So first give it a few turns; then either hand
        this worker's job (and the request it held) to a fresh task, for aclose() to drain the
        queue with, or treat the loop as ending without aclose(): every request held is
        failed (or kept in the spool), counted and warned about.
        """
        for _ in range(_OWNER_TURNS):
            await asyncio.sleep(0)
        workers = self.workers
        if workers.stopping:
            return
        if self._close_deadline is not None:
            job, workers.held[index] = workers.held[index], None
            if job is not None:
                self._probe_dropped(job.delivery)  # sent again below, by any worker
                if self._queue.is_active(job.delivery):
                    # Its request was cut without an answer: send it again, as after a reset.
                    self.schedule.again_first(Job(job.delivery, job.attempt, job.last, maybe=True))
            workers.replace(index)
        elif not self._orphaned and self._on_orphaned is not None:
            self._orphaned = True
            await self._on_orphaned()

    # -- after a failed attempt ---------------------------------------------------------------

    def _attempt_failed(self, job: Job, error: DataFastError, epoch: int) -> None:
        """An attempt that got no success: what ``next_step`` decides, carried out."""
        delivery = job.delivery
        # This attempt may have reached the API (a reset or a timeout after sending, a
        # gateway's 502 or 504), or an earlier one may have.
        maybe = job.maybe or error.maybe_delivered
        if _is_congestion(error):
            self.limiter.congested(epoch)
        scoped = self.kind_circuits[delivery._kind.index]
        gate = self.gate
        gate.observe(delivery, error, scoped)
        if error.retriable:
            gate.failures += 1
        elif isinstance(error, APIError) and not error.opens_circuit:
            gate.failures = 0  # DataFast's own refusal of this request: the API is up
        fate = self._fate
        step, delay = next_step(
            self._policy, error, job.attempt, self._loop.time(), self._close_deadline
        )
        if step is Step.CIRCUIT:
            if scoped.state is not _CLOSED and _is_endpoints(error):
                # Its endpoint refuses (a 403), the other kinds go on: with a spool it waits
                # in memory for that circuit to close; else it fails.
                if scoped.keeps:
                    self.gate.hold_back(Job(delivery, job.attempt, _summary(error), maybe), scoped)
                else:
                    scoped.failed_while_open += 1
                    fate.failed(delivery, error)
                return
            if not fate.parked(delivery):
                if not self.circuit.closed:  # refused this way: counted with those it failed
                    self.circuit.failed_while_open += 1
                fate.failed(delivery, error)
            self.refill.check_parked()
            return
        # A Retry-After holds the whole sender, whether or not this request is retried.
        self._pause_for(error)
        if step is Step.RETRY:
            self._attempt_log.record(error)
            self.schedule.later(Job(delivery, job.attempt + 1, _summary(error), maybe), delay)
        elif step is Step.DEADLINE:
            fate.at_deadline(delivery, error, maybe, self._deadline_reason)
        elif step is Step.EXHAUSTED and gate.looks_down() and fate.parked(delivery):
            # Out of attempts on an error that may pass, with every attempt across requests
            # failing meanwhile: with a spool the request waits on disk and the API is treated
            # as down, probed after a short cool-down that grows while it stays down. (Out of
            # attempts while others get through: it fails, as without a spool.)
            gate.api_down(error)
        else:
            fate.failed(delivery, _with_flag(error, maybe))

    def _pause_for(self, error: DataFastError) -> None:
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after:
            self.limiter.pause(min(retry_after, self._policy.max_retry_after))

    # -- send(): the caller's own request, sharing the limit, the pause and the circuit ---

    async def _attempt(
        self, endpoint: Endpoint, target: str, body: bytes | None, token: object
    ) -> tuple[bytes | DataFastError | None, int]:
        """One request of ``send()``'s, ahead of the queue's requests for the next free slot:
        the API's success body or the error it ended with, and the limiter's epoch it was
        sent in; ``None`` when the circuit opened while it waited for a slot (no request)."""
        limiter = self.limiter
        if not limiter.try_acquire():
            await limiter.acquire(first=True)
            circuit = self.circuit
            if circuit.state is not _CLOSED and circuit.probe is not token:
                # The circuit opened while this call waited for a slot: no request.
                limiter.release()
                return None, limiter.epoch
        epoch = limiter.epoch
        try:
            status, raw, reason, headers = await self._transport.send(endpoint.method, target, body)
        except TransportError as exc:
            return exc, epoch
        finally:
            limiter.release()
        return outcome_of(endpoint, status, raw, reason, headers), epoch

    async def send_now(
        self, endpoint: Endpoint, body: bytes | None, target: str | None = None
    ) -> Any:
        """Deliver one request now with the retry policy; return the endpoint's result, or
        raise the final error. ``endpoint``: a ``Kind`` (``target`` defaults to its own), or
        a direct call's endpoint (a delete) with its ``target`` (path and query)."""
        attempt = 1
        maybe = False
        if target is None:
            target = self._targets[endpoint.index]
        token = object()
        circuit = self.circuit
        scoped = self.endpoint_circuits.get(endpoint.path)
        if scoped is None:  # an endpoint no kind shares a path with
            scoped = self.endpoint_circuits[endpoint.path] = Circuit(
                self._policy, self._loop, keeps=False, scope=endpoint.path
            )
        try:
            while True:
                if circuit.state is not _CLOSED or scoped.state is not _CLOSED:
                    await self.gate.before_send(token, scoped)
                outcome, epoch = await self._attempt(endpoint, target, body, token)
                if outcome is None:
                    continue  # the circuit opened meanwhile: raise its error, or probe
                if isinstance(outcome, bytes):
                    if circuit.probe is token or scoped.probe is token:
                        self.gate.answered(token)
                    return endpoint.read_result(outcome)
                if outcome.maybe_delivered:
                    if endpoint.idempotent:
                        outcome.maybe_delivered = False  # sent again, it cannot count twice
                    else:
                        maybe = True
                if _is_congestion(outcome):
                    self.limiter.congested(epoch)
                self.gate.observe(token, outcome, scoped)
                step, delay = next_step(
                    self._policy, outcome, attempt, self._loop.time(), self._close_deadline
                )
                if step is Step.CIRCUIT:
                    raise _with_flag(outcome, maybe)
                self._pause_for(outcome)
                if step is Step.FINAL or step is Step.EXHAUSTED:
                    raise _with_flag(outcome, maybe)
                if step is Step.DEADLINE or self.workers.stopping:
                    raise shutdown_error(outcome, maybe, _DEADLINE_REASON)
                # Bounded: at most max_delay, or max_retry_after for a Retry-After.
                await asyncio.sleep(delay)
                if self.workers.stopping:
                    raise shutdown_error(outcome, maybe, _DEADLINE_REASON)
                attempt += 1
        finally:
            if circuit.probe is token:  # cut while it probed: another request probes at once
                circuit.probe_dropped(token)
            if scoped.probe is token:
                scoped.probe_dropped(token)


def _is_endpoints(error: DataFastError) -> bool:
    """A 403: an answer of the endpoint's own (a token may lack one permission), which opens
    that endpoint's circuit only."""
    return getattr(error, "status", None) == 403


def _is_congestion(error: DataFastError) -> bool:
    """A 429, a 503 or a timeout: the API (or what is in front of it) is busy."""
    if isinstance(error, TransportError):
        return error.timed_out
    return getattr(error, "status", None) in (429, 503)


def _with_flag(error: DataFastError, maybe: bool) -> DataFastError:
    """The final error, saying whether any attempt of the request may have arrived (an error
    of one request's own: the flag is the request's)."""
    if maybe and not error.maybe_delivered:
        error.maybe_delivered = True
    return error


def _internal_error(what: str, exc: BaseException) -> DataFastError:
    error = DataFastError(f"internal error: {what}: {exc!r}")
    error.__cause__ = exc
    return error


# Summaries of the errors requests wait to retry after, shared between requests that failed
# the same way: a request waiting to retry holds no exception chain or traceback.
_SUMMARIES: dict[tuple[object, ...], DataFastError] = {}
_SUMMARY_LIMIT = 256
_SUMMARY_BODY = 512  # characters of an error body a summary keeps


def _summary(error: DataFastError) -> DataFastError:
    key = (type(error), getattr(error, "status", None), str(error), error.retriable)
    summary = _SUMMARIES.get(key)
    if summary is None:
        summary = own_copy(error)
        summary.__cause__ = None
        body = getattr(summary, "body", None)
        if isinstance(body, str) and len(body) > _SUMMARY_BODY:
            summary.body = body[:_SUMMARY_BODY]  # type: ignore[attr-defined]
        if len(_SUMMARIES) >= _SUMMARY_LIMIT:
            _SUMMARIES.clear()
        _SUMMARIES[key] = summary
    return summary
