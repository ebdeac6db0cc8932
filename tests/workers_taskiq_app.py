"""The taskiq app that tests/test_workers_taskiq.py runs in a real worker (``python -m taskiq
worker tests.workers_taskiq_app:broker``): taskiq-redis's ``ListQueueBroker`` and result
backend on ``REDIS_URL``, a ``DataFastMiddleware`` with the deadlines the test sets
(``FLUSH_TIMEOUT``, ``CLOSE_TIMEOUT``) and a client built in the worker from the environment
(``DATAFAST_API_KEY``, ``DATAFAST_BASE_URL``, ``DATAFAST_SPOOL_PATH``).

The task ``track`` tracks ``goals`` goals named ``name`` (``metadata={"n": i}``) and, with
``payment``, one payment of that transaction id. ``WORKER_EVENTS`` names a file where the
middleware after ours appends one JSON line at the worker's start-up and shutdown (with the
client's ``stats()``), each run once ours has.
"""

from __future__ import annotations

import json
import os
from typing import Any

from taskiq import TaskiqDepends, TaskiqMiddleware
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from datafast_async import DataFast
from datafast_async.workers.taskiq import DataFastMiddleware, get_client

VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")

datafast = DataFastMiddleware(
    flush_timeout=float(os.environ.get("FLUSH_TIMEOUT", "5")),
    close_timeout=float(os.environ.get("CLOSE_TIMEOUT", "3")),
)


class Events(TaskiqMiddleware):
    """Says, in ``WORKER_EVENTS``, that the worker's client started and closed."""

    def _event(self, hook: str) -> None:
        if not self.broker.is_worker_process:
            return
        stats = datafast.client.stats().as_dict()
        line = json.dumps({"hook": hook, "pid": os.getpid(), "stats": stats}, default=str)
        with open(os.environ["WORKER_EVENTS"], "a") as events:
            events.write(line + "\n")

    def startup(self) -> None:
        self._event("startup")

    def shutdown(self) -> None:
        self._event("shutdown")


broker = (
    ListQueueBroker(REDIS_URL)
    .with_result_backend(RedisAsyncResultBackend(REDIS_URL))
    .with_middlewares(datafast, Events())
)


@broker.task(task_name="track")
async def track(
    name: str,
    goals: int,
    payment: str | None = None,
    df: DataFast = TaskiqDepends(get_client),  # noqa: B008
) -> dict[str, Any]:
    for n in range(goals):
        df.track_nowait(VISITOR, name, metadata={"n": n})
    if payment is not None:
        df.track_payment_nowait(49.99, "usd", payment, visitor_id=VISITOR)
    return {"name": name, "goals": goals, "payment": payment}
