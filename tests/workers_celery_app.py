"""The Celery app that tests/test_workers_celery.py runs in a real worker (``celery -A
tests.workers_celery_app worker``): ``setup_celery()`` with the deadlines the test sets
(``FLUSH_TIMEOUT``, ``CLOSE_TIMEOUT``), clients built from the environment
(``DATAFAST_API_KEY``, ``DATAFAST_BASE_URL``, ``DATAFAST_SPOOL_PATH``), the Redis of
``REDIS_URL`` as the broker (no result backend: the test reads what the fake DataFast
received).

``track`` tracks ``goals`` goals (``metadata={"batch": ..., "i": ..., "pid": ...}``) and, with
``payment``, one payment (transaction ``ch_<batch>``), sleeps ``pause`` seconds (so that the
tasks spread over the children), and returns the process's pid.
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped]

from datafast_async import RetryPolicy
from datafast_async.workers.celery import client, setup_celery

VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"

app = Celery("workers_celery_app", broker=os.environ["REDIS_URL"])
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)

setup_celery(
    flush_timeout=float(os.environ.get("FLUSH_TIMEOUT", "5")),
    close_timeout=float(os.environ.get("CLOSE_TIMEOUT", "1")),
    retry=RetryPolicy(initial_delay=0.05, max_delay=0.2),
)


@app.task(name="track")  # type: ignore[untyped-decorator]
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
