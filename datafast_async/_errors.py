"""Everything the SDK raises or reports.

    DataFastError
    ├── ConfigurationError (also ValueError)   bad or missing settings
    ├── ValidationError (also ValueError)      a goal breaks the API's rules; .field
    ├── QueueFullError                         the queue had no room
    ├── ClientClosedError                      track/send after aclose()
    ├── ShutdownError                          still undelivered at aclose()'s deadline;
    │                                          .maybe_delivered .spooled
    ├── TransportError                         no HTTP answer: refused, reset, DNS, timeout,
    │                                          a certificate that does not verify
    └── APIError                               an answer that is not a success: 4xx/5xx, a 3xx
                                               (not followed), a 2xx that is not DataFast's;
                                               .status .message .body
        ├── BadRequestError          400
        ├── AuthenticationError      401
        ├── PermissionDeniedError    403
        ├── VisitorNotFoundError     404
        ├── RateLimitError           429; .retry_after
        └── ServerError              5xx

Whether an error is worth another attempt is the ``retriable`` attribute of the error, read in
one place (``_retry.decide``). Whether every later request would get the same answer (a refused
key, a wrong host) is ``opens_circuit``, read by the circuit breaker. ``error_for_status`` is the
one place where an HTTP status becomes an error class.
"""

from __future__ import annotations

import copy

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "DataFastError",
    "NotFoundError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "ServerError",
    "ShutdownError",
    "TransportError",
    "ValidationError",
    "VisitorNotFoundError",
    "error_for_status",
    "own_copy",
]


class DataFastError(Exception):
    """Base of everything the SDK raises or reports.

    Attributes:
        maybe_delivered: On a goal's final error: an attempt of the goal ended without
            DataFast's answer after its request may have left (reset, timeout, cut at the
            deadline, a gateway's 502 or 504), so DataFast may have recorded it although it
            is reported failed.
    """

    #: Whether the same request may succeed if it is sent again.
    retriable: bool = False
    #: Whether every later request would get the same answer (a refused key, a wrong host, a
    #: certificate that does not verify): the sender's circuit breaker opens on it.
    opens_circuit: bool = False
    #: For a goal's final error: whether an attempt of it ended without DataFast's answer
    #: after its request may have left (reset, timeout, cut, a gateway's 502 or 504), so
    #: DataFast may have recorded it anyway.
    maybe_delivered: bool = False


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
    """The goal was still undelivered when ``aclose()``'s deadline came (or its loop ended).

    Attributes:
        maybe_delivered: ``True`` when an attempt for the goal ended without an HTTP answer
            after its request may have left (cut at the deadline, reset, timeout): DataFast may
            have recorded it. ``False`` when every attempt got an answer or never connected.
        spooled: ``True`` when the goal stays in the durable spool and the next start sends
            it (never reported to ``on_failure`` then).
    """

    def __init__(
        self, message: str, *, maybe_delivered: bool = False, spooled: bool = False
    ) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered
        self.spooled = spooled

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_shutdown_error, (str(self), self.maybe_delivered, self.spooled))


def _rebuild_shutdown_error(message: str, maybe_delivered: bool, spooled: bool) -> ShutdownError:
    return ShutdownError(message, maybe_delivered=maybe_delivered, spooled=spooled)


class TransportError(DataFastError):
    """No HTTP answer: connection refused or reset, DNS failure, timeout, or a TLS certificate
    that does not verify (final: retrying cannot fix it).

    Attributes:
        maybe_delivered: ``False`` when the request cannot have reached the server (no
            connection was made); ``True`` when it may have (reset or timeout after sending).
        timed_out: No answer came within the client's ``timeout`` (a congestion signal for
            the adaptive in-flight limit).
    """

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        maybe_delivered: bool = True,
        retriable: bool = True,
        opens_circuit: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered
        self.retriable = retriable
        self.opens_circuit = opens_circuit
        self.timed_out = timed_out

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_transport_error,
            (
                type(self),
                str(self),
                self.maybe_delivered,
                self.retriable,
                self.opens_circuit,
                self.timed_out,
            ),
        )


def _rebuild_transport_error(
    cls: type[TransportError],
    message: str,
    maybe_delivered: bool,
    retriable: bool,
    opens_circuit: bool,
    timed_out: bool = False,
) -> TransportError:
    return cls(
        message,
        maybe_delivered=maybe_delivered,
        retriable=retriable,
        opens_circuit=opens_circuit,
        timed_out=timed_out,
    )


class APIError(DataFastError):
    """The answer was not a success: a 4xx or 5xx status, a 3xx (redirects are not followed:
    the key must never reach another host), or a 2xx whose body is not DataFast's success
    answer (a captive portal, a wrong host). The last two are final.

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
            (
                type(self),
                self.status,
                self.message,
                self.body,
                self.retry_after,
                self.opens_circuit,
            ),
        )


def _rebuild_api_error(
    cls: type[APIError],
    status: int,
    message: str,
    body: str,
    retry_after: float | None,
    opens_circuit: bool = False,
) -> APIError:
    error = cls(status, message, body, retry_after=retry_after)
    error.opens_circuit = opens_circuit
    return error


class BadRequestError(APIError):
    """400: missing fields, bad goal name or metadata, bad JSON, or the visitor is a bot."""


class AuthenticationError(APIError):
    """401: the API key or token is missing or invalid."""


class PermissionDeniedError(APIError):
    """403: tracking suspended, or the token lacks ``goals:write`` or access to the website."""


class NotFoundError(APIError):
    """404: what the request names does not exist (a delete's transaction)."""


class VisitorNotFoundError(NotFoundError):
    """404 to a goal or an identify: the visitor has no pageview on this website yet."""


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
    status: int,
    message: str,
    body: str = "",
    *,
    retry_after: float | None = None,
    not_found: type[APIError] | None = None,
) -> APIError:
    """The error for an HTTP error status (400 or more); ``not_found``: the class of a 404
    (``VisitorNotFoundError`` unless the endpoint says otherwise)."""
    cls = not_found if status == 404 and not_found is not None else _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(status, message, body, retry_after=retry_after)


def own_copy(error: DataFastError) -> DataFastError:
    """A fresh instance of ``error`` (same class, message and attributes, no traceback) whose
    ``__cause__`` is ``error``: each goal failed by one shared cause gets its own exception, so
    awaiting many ``Delivery`` objects never chains one traceback onto another."""
    clone = copy.copy(error)
    clone.__dict__.update(error.__dict__)
    clone.__traceback__ = None
    clone.__context__ = None
    clone.__cause__ = error
    return clone
