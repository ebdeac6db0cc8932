"""A FastAPI app run by ``uvicorn --workers 4`` in tests/test_spool_uvicorn.py.

Its client is the README's: ``lifespan(DataFast(concurrency=...))``, each worker's built from
the environment (``DATAFAST_API_KEY``, ``DATAFAST_BASE_URL``, ``DATAFAST_SPOOL_PATH``).
``GET /goal?n=N`` tracks a goal with ``metadata={"n": N}`` and answers ``{"pid": <worker>}``.

Each worker appends JSON lines to the file named by ``SPOOL_TEST_EVENTS``: ``start`` once its
client has started (``enqueued`` then counts the goals it took over from the directory), and
``stop`` with its final ``Stats`` after the lifespan closed the client.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
from fastapi import FastAPI, Request

from datafast_async import DataFast
from datafast_async.starlette import get_client
from datafast_async.starlette import lifespan as datafast_lifespan

VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"


def _event(kind: str, **fields: Any) -> None:
    line = json.dumps({"event": kind, "pid": os.getpid(), "at": time.time(), **fields})
    with open(os.environ["SPOOL_TEST_EVENTS"], "a") as events:  # one short line: atomic
        events.write(line + "\n")


# The key, the API's URL and the spool from the environment; a concurrency low enough that
# goals wait in the queue, not only in flight, when the test kills a worker.
datafast = DataFast(concurrency=int(os.environ.get("SPOOL_TEST_CONCURRENCY", "8")))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with datafast_lifespan(datafast)(app):
        _event("start", stats=attrs.asdict(app.state.datafast.stats()))
        yield
    _event("stop", stats=attrs.asdict(app.state.datafast.stats()))


app = FastAPI(lifespan=lifespan)


@app.get("/goal")
async def goal(request: Request, n: str) -> dict[str, int]:
    get_client(request).track_nowait(VISITOR, "signup", metadata={"n": n})
    return {"pid": os.getpid()}
