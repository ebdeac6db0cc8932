"""datafast-async: the async-first Python SDK for DataFast's server-side goals API.

``track()`` validates a goal against the API's rules and queues it in microseconds; a background
sender delivers it with bounded concurrency, retries, rate-limit handling and a graceful flush
on shutdown. Nothing is lost without being counted and reported.
"""

from ._background import BackgroundClient
from ._client import DataFast
from ._delivery import Delivery
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DataFastError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    ServerError,
    ShutdownError,
    TransportError,
    ValidationError,
    VisitorNotFoundError,
)
from ._kinds.deletes import DeleteResult
from ._kinds.identify import Identify, IdentifyResult
from ._kinds.payments import Payment, PaymentResult
from ._models import Goal, GoalResult, KindStats, Stats
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "APIError",
    "AuthenticationError",
    "BackgroundClient",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "DataFast",
    "DataFastError",
    "DeleteResult",
    "Delivery",
    "Goal",
    "GoalResult",
    "Identify",
    "IdentifyResult",
    "KindStats",
    "NotFoundError",
    "Payment",
    "PaymentResult",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ShutdownError",
    "Stats",
    "TransportError",
    "ValidationError",
    "VisitorNotFoundError",
    "__version__",
]
