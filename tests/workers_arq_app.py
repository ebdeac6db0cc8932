"""The arq app that tests/test_workers_arq.py runs in a real worker (``python -m arq
tests.workers_arq_app.WorkerSettings``): the hooks of ``datafast_async.workers.arq`` with the
deadlines the test sets (``FLUSH_TIMEOUT``, ``CLOSE_TIMEOUT``), a client built from the
environment (``DATAFAST_API_KEY``, ``DATAFAST_BASE_URL``, ``DATAFAST_SPOOL_PATH``), the Redis
of ``REDIS_URL``.

``track`` tracks ``goals`` goals named ``name`` (``metadata={"n": i}``) and, with ``payment``,
one payment of that transaction id; it returns what it tracked. ``WORKER_EVENTS`` names a file
where each hook appends one JSON line once it has run (with the client's ``stats()``).
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from datafast_async.workers.arq import DataFastHooks, get_client

VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"

hooks = DataFastHooks(
    flush_timeout=float(os.environ.get("FLUSH_TIMEOUT", "5")),
    close_timeout=float(os.environ.get("CLOSE_TIMEOUT", "5")),
)


def _event(hook: str, ctx: dict[Any, Any]) -> None:
    stats = get_client(ctx).stats()
    line = json.dumps({"hook": hook, "pid": os.getpid(), "stats": stats.as_dict()}, default=str)
    with open(os.environ["WORKER_EVENTS"], "a") as events:
        events.write(line + "\n")


async def on_startup(ctx: dict[Any, Any]) -> None:
    await hooks.on_startup(ctx)
    _event("startup", ctx)


async def on_shutdown(ctx: dict[Any, Any]) -> None:
    await hooks.on_shutdown(ctx)
    _event("shutdown", ctx)


async def track(
    ctx: dict[Any, Any], name: str, goals: int, payment: str | None = None
) -> dict[str, Any]:
    df = get_client(ctx)
    for n in range(goals):
        df.track_nowait(VISITOR, name, metadata={"n": n})
    if payment is not None:
        df.track_payment_nowait(49.99, "usd", payment, visitor_id=VISITOR)
    return {"name": name, "goals": goals, "payment": payment}


class WorkerSettings:
    functions: ClassVar[list[Any]] = [track]
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost"))
    on_startup = on_startup
    on_shutdown = on_shutdown
    on_job_end = hooks.on_job_end
    poll_delay = 0.05
