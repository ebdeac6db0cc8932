"""The retry policy (bounded attempts, full-jitter backoff, ``Retry-After`` limits, the circuit
breaker's cool-down) and ``next_step``, the one decision after a failed attempt, for the
queue's requests and ``send()``'s alike.
"""

from __future__ import annotations

import enum
import random

import attrs

from ._errors import DataFastError

__all__ = ["PAST_DEADLINE", "RetryPolicy", "Step", "decide", "next_step", "retry_delay"]


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"RetryPolicy.{attribute.name} must be >= 0, got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RetryPolicy.{attribute.name} must be an int >= 1, got {value!r}")


@attrs.frozen(kw_only=False, weakref_slot=False)
class RetryPolicy:
    """How a goal is retried after a retriable failure.

    Args:
        max_attempts: Every attempt counts, the first included (``1`` means no retry).
        initial_delay: Seconds; the wait before retry ``k`` (``k = 1, 2, ...``) is uniform in
            ``[0, min(max_delay, initial_delay * 2 ** (k - 1))]`` ("full jitter").
        max_delay: Seconds; the cap of that range.
        max_retry_after: Seconds; a ``Retry-After`` replaces the computed wait, and one longer
            than this fails the goal with its ``RateLimitError`` instead of holding it.
        circuit_cooldown: Seconds the circuit breaker stays open after an answer that every
            request would get (a refused key, a wrong host) before one goal probes the API.
            With a spool and the API down (every attempt failing), the first cool-down is
            1 s (or this, if shorter), doubling while the probe gets no answer, up to this.
        max_circuit_cooldown: Seconds; each failed probe doubles the cool-down up to this.

    Delays of zero are valid and make retries immediate (useful in tests).

    Raises:
        ValueError: A setting is out of range.
    """

    max_attempts: int = attrs.field(default=6, validator=_at_least_one)
    initial_delay: float = attrs.field(default=0.5, validator=_non_negative)
    max_delay: float = attrs.field(default=30.0, validator=_non_negative)
    max_retry_after: float = attrs.field(default=300.0, validator=_non_negative)
    circuit_cooldown: float = attrs.field(default=30.0, validator=_non_negative)
    max_circuit_cooldown: float = attrs.field(default=300.0, validator=_non_negative)

    def backoff(self, retry: int) -> float:
        """The wait in seconds before retry number ``retry`` (1 for the second attempt)."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(retry - 1, 64))
        return random.uniform(0.0, ceiling) if ceiling > 0 else 0.0


def retry_delay(policy: RetryPolicy, error: DataFastError, attempt: int) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or ``None`` when the goal has failed.

    ``None`` for an error that is not retriable, after ``max_attempts`` attempts, and for a
    ``Retry-After`` longer than ``max_retry_after``. A ``Retry-After`` replaces the backoff.
    """
    if not error.retriable or attempt >= policy.max_attempts:
        return None
    retry_after: float | None = getattr(error, "retry_after", None)
    if retry_after is not None:
        return retry_after if retry_after <= policy.max_retry_after else None
    return policy.backoff(attempt)


#: ``decide``'s answer when a retry would only start after the shutdown deadline.
PAST_DEADLINE = -1.0


def decide(
    policy: RetryPolicy,
    error: DataFastError,
    attempt: int,
    now: float,
    deadline: float | None,
) -> float | None:
    """The one retry decision: after attempt ``attempt`` failed with ``error``, the seconds to
    wait before the next one; ``None`` when ``error`` is final; ``PAST_DEADLINE`` when the
    next attempt could only start after ``deadline`` (``aclose()``'s, or ``None``)."""
    delay = retry_delay(policy, error, attempt)
    if delay is None:
        return None
    if deadline is not None and now + delay > deadline:
        return PAST_DEADLINE
    return delay


class Step(enum.Enum):
    """What comes after a failed attempt (``next_step``)."""

    #: Wait the delay, then send again.
    RETRY = "retry"
    #: Final: the error is the request's fate (not retriable).
    FINAL = "final"
    #: Retriable, but not retried (out of attempts, or a ``Retry-After`` past
    #: ``max_retry_after``): final, or, with a spool, kept on disk while the API is down.
    EXHAUSTED = "exhausted"
    #: An answer that every request would get: the circuit opens.
    CIRCUIT = "circuit"
    #: The next attempt could only start after ``aclose()``'s deadline.
    DEADLINE = "deadline"


def next_step(
    policy: RetryPolicy,
    error: DataFastError,
    attempt: int,
    now: float,
    deadline: float | None,
) -> tuple[Step, float]:
    """The one decision after attempt ``attempt`` failed with ``error``: the step, and for
    ``Step.RETRY`` the seconds to wait (``0.0`` otherwise)."""
    if error.opens_circuit:
        return Step.CIRCUIT, 0.0
    delay = decide(policy, error, attempt, now, deadline)
    if delay is None:
        return (Step.EXHAUSTED if error.retriable else Step.FINAL), 0.0
    if delay == PAST_DEADLINE:
        return Step.DEADLINE, 0.0
    return Step.RETRY, delay
