"""The Dramatiq app that tests/test_workers_dramatiq.py runs in a real worker (``dramatiq
tests.workers_dramatiq_app``): a ``RedisBroker`` on ``REDIS_URL`` with the ``Results``
middleware (Redis too), then ``DataFastMiddleware`` with the deadlines the test sets
(``FLUSH_TIMEOUT``, ``CLOSE_TIMEOUT``) and a client built from the environment
(``DATAFAST_API_KEY``, ``DATAFAST_BASE_URL``, ``DATAFAST_SPOOL_PATH``).

``track`` tracks ``goals`` goals (``metadata={"batch": ..., "i": ..., "pid": ...}``) and, with
``payment``, one payment (transaction ``ch_<batch>``), sleeps ``pause`` seconds, and returns
the worker process's pid (a stored result).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from datafast_async import RetryPolicy
from datafast_async.workers.dramatiq import DataFastMiddleware, client

VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"

broker = RedisBroker(url=os.environ["REDIS_URL"])  # type: ignore[no-untyped-call]
results = RedisBackend(url=os.environ["REDIS_URL"])  # type: ignore[no-untyped-call]
broker.add_middleware(Results(backend=results))  # type: ignore[no-untyped-call]
# Added after Results: its after_ hooks run first (Dramatiq calls them last-added first), so
# a message's result is stored once its goals are out.
broker.add_middleware(
    DataFastMiddleware(
        flush_timeout=float(os.environ.get("FLUSH_TIMEOUT", "5")),
        close_timeout=float(os.environ.get("CLOSE_TIMEOUT", "1")),
        retry=RetryPolicy(initial_delay=0.05, max_delay=0.2),
    )
)
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def track(batch: int, goals: int, payment: bool, pause: float) -> int:
    datafast = client()
    pid = os.getpid()
    for i in range(goals):
        datafast.track_nowait(
            VISITOR, "signup", metadata={"batch": str(batch), "i": str(i), "pid": str(pid)}
        )
    if payment:
        datafast.track_payment_nowait(10, "usd", f"ch_{batch}", visitor_id=VISITOR)
    time.sleep(pause)
    return pid
