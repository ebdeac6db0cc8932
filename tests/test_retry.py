"""The retry policy: full-jitter bounds, attempt limits and Retry-After."""

from __future__ import annotations

import pytest

from datafast_async import RateLimitError, RetryPolicy, ServerError, TransportError
from datafast_async._errors import BadRequestError
from datafast_async._retry import retry_delay


def test_defaults_match_the_documented_policy() -> None:
    assert RetryPolicy() == RetryPolicy(
        max_attempts=6, initial_delay=0.5, max_delay=30.0, max_retry_after=300.0
    )


@pytest.mark.parametrize("retry", [1, 2, 3, 4, 8, 20, 200])
def test_backoff_stays_within_the_full_jitter_range(retry: int) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=30.0)
    ceiling = min(30.0, 0.5 * 2 ** (retry - 1))
    waits = [policy.backoff(retry) for _ in range(2000)]
    assert all(0.0 <= w <= ceiling for w in waits)
    # Full jitter spreads over the range, not only near its top.
    assert min(waits) < ceiling * 0.1
    assert max(waits) > ceiling * 0.9


def test_zero_delays_mean_immediate_retries() -> None:
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0)
    assert {policy.backoff(k) for k in range(1, 10)} == {0.0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_attempts": True},
        {"initial_delay": -1},
        {"max_delay": float("nan")},
        {"max_retry_after": -0.1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_max_attempts_counts_the_first_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0)
    error = ServerError(503, "busy")
    assert retry_delay(policy, error, 1) == 0.0
    assert retry_delay(policy, error, 2) == 0.0
    assert retry_delay(policy, error, 3) is None


def test_final_errors_are_not_retried() -> None:
    policy = RetryPolicy()
    assert retry_delay(policy, BadRequestError(400, "bad"), 1) is None
    assert retry_delay(policy, ServerError(501, "no"), 1) is None


def test_retry_after_replaces_the_backoff() -> None:
    policy = RetryPolicy(initial_delay=100.0, max_delay=100.0)
    assert retry_delay(policy, RateLimitError(429, "slow", retry_after=2.0), 1) == 2.0
    assert retry_delay(policy, ServerError(503, "busy", retry_after=0.0), 1) == 0.0


def test_a_retry_after_beyond_the_limit_fails_the_goal() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert retry_delay(policy, RateLimitError(429, "slow", retry_after=3600.0), 1) is None
    assert retry_delay(policy, RateLimitError(429, "slow", retry_after=60.0), 1) == 60.0


def test_transport_errors_use_the_backoff() -> None:
    """A reset or a refused connection is retried after the backoff; a certificate that does
    not verify is final."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=1.0)
    for error in (
        TransportError("reset"),
        TransportError("refused", maybe_delivered=False),
    ):
        waits = [retry_delay(policy, error, 1) for _ in range(200)]
        assert all(wait is not None and 0.0 <= wait <= 1.0 for wait in waits)
        assert len(set(waits)) > 1  # jittered, as the backoff is
    assert retry_delay(policy, TransportError("reset"), policy.max_attempts) is None
    certificate = TransportError("bad certificate", retriable=False, opens_circuit=True)
    assert retry_delay(policy, certificate, 1) is None
