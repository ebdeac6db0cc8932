"""``Job``: one request on its way through the sender."""

from __future__ import annotations

from typing import Any

from .._delivery import Delivery
from .._errors import DataFastError

__all__ = ["Job"]


class Job:
    """A request being sent or waiting to retry.

    Attributes:
        delivery: The request's ``Delivery``.
        attempt: The attempt about to be made (1 for the first).
        last: A summary of the last attempt's error (no traceback), or ``None``.
        maybe: Whether an earlier attempt may have reached the API without an answer coming
            back (it sets ``maybe_delivered`` on the request's final error).
        held: It waits for its endpoint's circuit (not to retry): taking it again is no new
            attempt.
    """

    __slots__ = ("attempt", "delivery", "held", "last", "maybe")

    def __init__(
        self,
        delivery: Delivery[Any],
        attempt: int = 1,
        last: DataFastError | None = None,
        maybe: bool = False,
        held: bool = False,
    ) -> None:
        self.delivery = delivery
        self.attempt = attempt
        self.last = last
        self.maybe = maybe
        self.held = held

    def __repr__(self) -> str:
        return f"<Job {self.delivery!r} attempt={self.attempt} maybe={self.maybe}>"
