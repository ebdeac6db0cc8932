"""The circuit breaker: closed, open, half-open, for answers that every request would get.

A refused key (401, 403), a proxy that refuses the tunnel (any 4xx: 407, 401), a redirect, a
2xx that is not DataFast's answer, a 4xx that is not DataFast's envelope, a certificate that
does not verify:
sending more goals only repeats the same answer (and a revoked key would be hammered). Such an
answer opens the circuit: nothing is sent for a cool-down, and goals fail at once with that
same error. After the cool-down one request (a queued goal, or a ``send()``) probes the API;
requests arriving meanwhile wait for its answer. DataFast's own answer closes the circuit; the
same kind of answer opens it again for twice as long (up to the policy's maximum); no answer
at all (a network error, a 5xx, a 429) opens it again for the same time.

With a spool, the circuit also opens when the API looks down (``trip(..., down=True)``: a
request ran out of attempts while every attempt across requests failed): requests wait on
disk. An outage is often short (a deploy, a restart behind a gateway), so its first cool-down
is short (``DOWN_COOLDOWN``, 1 s) and doubles with each probe that gets no answer, up to the
policy's ``circuit_cooldown``: a 3 s outage costs seconds, a long one a probe every 30 s.

A 403 is an endpoint's own (a ``dft_`` token may lack ``payments:write`` and hold
``goals:write``): it opens the circuit of that endpoint only (``scope``), and the other kinds
of request go on; each endpoint's circuit probes its own endpoint.

This module keeps the state and says what happened in the logs; the sender acts on it.
"""

from __future__ import annotations

import asyncio
import enum

from ._errors import DataFastError, own_copy
from ._reporting import logger
from ._retry import RetryPolicy

__all__ = ["DOWN_COOLDOWN", "Circuit", "CircuitState"]

#: Seconds of the first cool-down when the API looks down (doubling up to the policy's
#: ``circuit_cooldown``).
DOWN_COOLDOWN = 1.0

# Log records of the circuit carry ``datafast_event="circuit"`` (a command line that reports a
# refused key in its own words leaves them out).
_EVENT = {"datafast_event": "circuit"}


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"  # cooling down: nothing is sent, goals fail at once
    HALF_OPEN = "half-open"  # the cool-down is over: one request probes the API


class Circuit:
    """The breaker of one sender (in the client's loop)."""

    def __init__(
        self,
        policy: RetryPolicy,
        loop: asyncio.AbstractEventLoop,
        *,
        keeps: bool = False,
        scope: str | None = None,
    ) -> None:
        self._policy = policy
        #: ``None``: the client's circuit, for every request; else the endpoint's (``"POST
        #: /api/v1/payments"``), opened by a 403 of that endpoint only.
        self.scope = scope
        #: With a spool, goals wait on disk while the circuit is open instead of failing.
        self.keeps = keeps
        self._loop = loop
        self.state = CircuitState.CLOSED
        #: The answer that opened it: every goal failed while open gets its own copy.
        self.error: DataFastError | None = None
        #: Loop time at which the cool-down ends.
        self.until = 0.0
        self._cooldown = policy.circuit_cooldown
        #: The request out as the probe (a Delivery, or a send()'s token), else None.
        self.probe: object | None = None
        #: Open because the API looks down (not because of an answer every request gets).
        self.down = False
        self.failed_while_open = 0
        self._changed: list[asyncio.Future[None]] = []

    @property
    def closed(self) -> bool:
        return self.state is CircuitState.CLOSED

    def peek(self) -> CircuitState:
        """The state now, changing nothing (from any thread): an open circuit whose cool-down
        has ended reads as half-open."""
        state = self.state
        if state is CircuitState.OPEN and self._loop.time() >= self.until:
            return CircuitState.HALF_OPEN
        return state

    def refresh(self) -> CircuitState:
        """The state now: an open circuit whose cool-down has ended is half-open."""
        if self.state is CircuitState.OPEN and self._loop.time() >= self.until:
            self.state = CircuitState.HALF_OPEN
            self.probe = None
            self._wake()
        return self.state

    def trip(self, error: DataFastError, queued: int, *, down: bool = False) -> None:
        """An answer every request would get: open (or, after a probe, open again).
        ``down``: with a spool, goals ran out of attempts on errors that may pass."""
        was = self.state
        if was is CircuitState.CLOSED and self.scope is not None:
            self._cooldown = self._policy.circuit_cooldown
            logger.error(
                "%s refuses every request (%s): its requests are not sent (the %d waiting and "
                "every new one %s); other endpoints go on; a probe in %g s",
                self.scope,
                error,
                queued,
                "wait, kept in the spool" if self.keeps else "fail at once with this error",
                self._cooldown,
                extra=_EVENT,
            )
        elif was is CircuitState.CLOSED and self.keeps:
            self.down = down
            self._cooldown = (
                min(DOWN_COOLDOWN, self._policy.circuit_cooldown)
                if down
                else self._policy.circuit_cooldown
            )
            logger.error(
                "%s (%s): the sender stops sending; the %d goals waiting and every new one "
                "are kept in the spool; a probe in %g s",
                "the API kept failing after every attempt"
                if down
                else "every request would fail the same way",
                error,
                queued,
                self._cooldown,
                extra=_EVENT,
            )
        elif was is CircuitState.CLOSED:
            self._cooldown = self._policy.circuit_cooldown
            logger.error(
                "every request would fail the same way (%s): the sender stops sending; the %d "
                "goals waiting and every new one fail at once with this error; a probe in %g s",
                error,
                queued,
                self._cooldown,
                extra=_EVENT,
            )
        else:
            self.down = False  # an answer every request gets: no longer "down"
            self._cooldown = min(self._cooldown * 2, self._policy.max_circuit_cooldown)
            logger.warning(
                "the probe got the same kind of answer (%s): %d %s failed so far; the next "
                "probe in %g s",
                error,
                self.failed_while_open,
                "goals" if self.scope is None else "requests",
                self._cooldown,
                extra=_EVENT,
            )
        # Its own copy, detached: the goals failed while open get copies whose cause is this,
        # never the instance a caller may have awaited (and so chained frames onto).
        self.error = own_copy(error)
        self.error.__cause__ = None
        self._reopen()

    def probe_unanswered(self, token: object) -> None:
        """The probe got no answer of DataFast's (a network error, a 5xx, a 429): open again
        for the same cool-down."""
        if self.probe is token and self.state is CircuitState.HALF_OPEN:
            if self.down:  # still down: wait longer next time, up to circuit_cooldown
                self._cooldown = min(self._cooldown * 2, self._policy.circuit_cooldown)
            self._reopen()

    def probe_now(self) -> bool:
        """Open because the API looked down: end the cool-down now, so that the next request
        probes at once (``aclose()`` does so: an API that came back meanwhile takes the
        requests waiting on disk before the deadline). ``False`` when not open so."""
        if self.state is not CircuitState.OPEN or not self.down:
            return False
        self.until = self._loop.time()
        self._wake()
        return True

    def probe_dropped(self, token: object) -> None:
        """The probe was dropped before any answer (its caller cancelled, its worker cut or
        dead): nothing was learnt, so the next request probes at once."""
        if self.probe is token and self.state is CircuitState.HALF_OPEN:
            self.probe = None
            self._wake()

    def answered(self, token: object) -> None:
        """DataFast answered a request: if it was the probe, the circuit closes."""
        if self.probe is not token or self.state is not CircuitState.HALF_OPEN:
            return
        if self.scope is not None:
            logger.error(
                "%s answered the probe: its requests are sent again (%d failed meanwhile: %s)",
                self.scope,
                self.failed_while_open,
                self.error,
                extra=_EVENT,
            )
        elif self.keeps:
            logger.error(
                "DataFast answered the probe: the sender sends again; the goals kept in the "
                "spool meanwhile go first (%d failed while the API was unavailable: %s)",
                self.failed_while_open,
                self.error,
                extra=_EVENT,
            )
        else:
            logger.error(
                "DataFast answered the probe: the sender sends again (%d goals failed while "
                "every request was refused: %s)",
                self.failed_while_open,
                self.error,
                extra=_EVENT,
            )
        self.state = CircuitState.CLOSED
        self.error = None
        self.probe = None
        self.down = False
        self.failed_while_open = 0
        self._cooldown = self._policy.circuit_cooldown
        self._wake()

    def changed(self) -> asyncio.Future[None]:
        """A future set at the next change of state (the probe's answer, the cool-down's end)."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._changed.append(future)
        return future

    def _reopen(self) -> None:
        self.state = CircuitState.OPEN
        self.probe = None
        self.until = self._loop.time() + self._cooldown
        self._wake()

    def _wake(self) -> None:
        waiters, self._changed = self._changed, []
        for future in waiters:
            if not future.done():
                future.set_result(None)
