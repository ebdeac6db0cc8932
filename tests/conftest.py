"""Shared helpers: a client wired to a MockTransport whose handler each test scripts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from datafast_async import DataFast, RetryPolicy
from datafast_async._transport import MockTransport, Request, Response

NO_WAIT = RetryPolicy(max_attempts=6, initial_delay=0.0, max_delay=0.0)
EVENT_ID = "67f8b9b5c320277df9a9d681"


def ok(event_id: str = EVENT_ID) -> Response:
    body = {
        "status": "success",
        "data": [{"message": "Custom event created successfully", "eventId": event_id}],
    }
    return Response(200, json.dumps(body).encode(), "OK")


def error(status: int, message: str = "nope", retry_after: str | None = None) -> Response:
    body = {"status": "error", "error": {"code": status, "message": message}}
    return Response(status, json.dumps(body).encode(), "", retry_after)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class Recorder:
    """A MockTransport handler that records bodies and answers through ``answer``."""

    def __init__(self, answer: Handler | None = None) -> None:
        self.answer = answer or (lambda request: ok())
        self.bodies: list[dict[str, Any]] = []
        self.transports: list[MockTransport] = []

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        self.bodies.append(json.loads(request.body))
        return self.answer(request)

    def factory(self) -> MockTransport:
        transport = MockTransport(self)
        self.transports.append(transport)
        return transport

    @property
    def names(self) -> list[str]:
        return [body["name"] for body in self.bodies]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_client(recorder: Recorder) -> Callable[..., DataFast]:
    """Build a client on the recorder's MockTransport; keyword arguments go to DataFast."""

    def make(**kwargs: Any) -> DataFast:
        kwargs.setdefault("api_key", "df_unit_test_key_0001")
        kwargs.setdefault("retry", NO_WAIT)
        return DataFast(_transport_factory=recorder.factory, **kwargs)

    return make


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (no fixed sleeps), or fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0)
