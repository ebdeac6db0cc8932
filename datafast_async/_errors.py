"""Everything the SDK raises or reports.

    DataFastError
    ├── ConfigurationError (also ValueError)   bad or missing settings
    ├── ValidationError (also ValueError)      a goal breaks the API's rules; .field
    ├── QueueFullError                         the queue had no room
    ├── ClientClosedError                      track/send after aclose()
    ├── ShutdownError                          still undelivered at aclose()'s deadline
    ├── TransportError                         no HTTP answer: refused, reset, DNS, timeout
    └── APIError                               the API answered 4xx/5xx; .status .message .body
        ├── BadRequestError          400
        ├── AuthenticationError      401
        ├── PermissionDeniedError    403
        ├── VisitorNotFoundError     404
        ├── RateLimitError           429; .retry_after
        └── ServerError              5xx

Whether an error is worth another attempt is the ``retriable`` attribute of the error, read in
one place (the sender). ``error_for_status`` is the one place where an HTTP status becomes an
error class.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "DataFastError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "ServerError",
    "ShutdownError",
    "TransportError",
    "ValidationError",
    "VisitorNotFoundError",
    "error_for_status",
]


class DataFastError(Exception):
    """Base of everything the SDK raises or reports."""

    #: Whether the same request may succeed if it is sent again.
    retriable: bool = False


class ConfigurationError(DataFastError, ValueError):
    """Settings are missing or wrong (raised when the client is built)."""


class ValidationError(DataFastError, ValueError):
    """A goal breaks one of the API's rules; it never reaches the queue.

    Attributes:
        field: The offending field: ``"visitor_id"``, ``"name"``, ``"description"``,
            ``"metadata"`` or ``"metadata.<key>"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[type[ValidationError], tuple[str, str]]:
        return (type(self), (self.field, str(self)))


class QueueFullError(DataFastError):
    """The in-memory queue had no room for the goal."""


class ClientClosedError(DataFastError):
    """The client was closed: ``track``/``send`` need ``start()`` first."""


class ShutdownError(DataFastError):
    """The goal was still undelivered when ``aclose()``'s deadline came."""


class TransportError(DataFastError):
    """No HTTP answer: connection refused or reset, DNS failure, or timeout."""

    retriable = True


class APIError(DataFastError):
    """The API answered with a 4xx or 5xx status.

    Attributes:
        status: The HTTP status code.
        message: The API's own error message (or a short description of a non-JSON body).
        body: The response body as text (truncated to a few kilobytes).
        retry_after: Seconds from a ``Retry-After`` header, or ``None``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        body: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after
        # 408 (request timeout) is the one 4xx without a class of its own that is retried.
        if type(self) is APIError:
            self.retriable = status == 408

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_api_error,
            (type(self), self.status, self.message, self.body, self.retry_after),
        )


def _rebuild_api_error(
    cls: type[APIError], status: int, message: str, body: str, retry_after: float | None
) -> APIError:
    return cls(status, message, body, retry_after=retry_after)


class BadRequestError(APIError):
    """400: missing fields, bad goal name or metadata, bad JSON, or the visitor is a bot."""


class AuthenticationError(APIError):
    """401: the API key or token is missing or invalid."""


class PermissionDeniedError(APIError):
    """403: tracking suspended, or the token lacks ``goals:write`` or access to the website."""


class VisitorNotFoundError(APIError):
    """404: the visitor has no pageview on this website yet."""


class RateLimitError(APIError):
    """429: rate limited; ``retry_after`` holds the server's requested pause, if any."""

    retriable = True


class ServerError(APIError):
    """5xx: the server or a gateway failed. Retried, except 501 and 505."""

    def __init__(
        self,
        status: int,
        message: str,
        body: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, message, body, retry_after=retry_after)
        self.retriable = status not in (501, 505)


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: VisitorNotFoundError,
    429: RateLimitError,
}


def error_for_status(
    status: int, message: str, body: str = "", *, retry_after: float | None = None
) -> APIError:
    """The error for an HTTP error status (400 or more)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(status, message, body, retry_after=retry_after)
