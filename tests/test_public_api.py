"""The public surface is exactly what public-api.md promises: adding or losing a name fails."""

from __future__ import annotations

import attrs
import pytest

import datafast_async
from datafast_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DataFastError,
    Goal,
    GoalResult,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ShutdownError,
    Stats,
    TransportError,
    ValidationError,
    VisitorNotFoundError,
)

PUBLIC = {
    "DataFast",
    "RetryPolicy",
    "Goal",
    "GoalResult",
    "Stats",
    "Delivery",
    "DataFastError",
    "ConfigurationError",
    "ValidationError",
    "QueueFullError",
    "ClientClosedError",
    "ShutdownError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "VisitorNotFoundError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "__version__",
    # the write API (decided for turn 3)
    "Payment",
    "PaymentResult",
    "Identify",
    "IdentifyResult",
    "DeleteResult",
    "KindStats",
    "NotFoundError",
    # sync code (decided for turn 3)
    "BackgroundClient",
}


def test_all_is_exactly_the_documented_surface() -> None:
    assert set(datafast_async.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(datafast_async, name)


def test_testing_module_surface() -> None:
    import datafast_async.testing as testing

    assert {"FakeDataFast", "ThreadedFakeDataFast"} <= set(testing.__all__)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (ConfigurationError, (DataFastError, ValueError)),
        (ValidationError, (DataFastError, ValueError)),
        (QueueFullError, (DataFastError,)),
        (ClientClosedError, (DataFastError,)),
        (ShutdownError, (DataFastError,)),
        (TransportError, (DataFastError,)),
        (APIError, (DataFastError,)),
        (BadRequestError, (APIError,)),
        (AuthenticationError, (APIError,)),
        (PermissionDeniedError, (APIError,)),
        (VisitorNotFoundError, (APIError,)),
        (RateLimitError, (APIError,)),
        (ServerError, (APIError,)),
    ],
)
def test_the_error_tree(cls: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    assert all(issubclass(cls, base) for base in bases)


@pytest.mark.parametrize("cls", [Goal, GoalResult, Stats, RetryPolicy])
def test_values_are_frozen_attrs_classes(cls: type) -> None:
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    assert cls.__setattr__ is not object.__setattr__


def test_the_version_is_a_string() -> None:
    assert datafast_async.__version__.count(".") == 2
