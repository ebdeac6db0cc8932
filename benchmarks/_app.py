"""The FastAPI app of the handler benchmark, served by uvicorn: ``python -m benchmarks._app``.

Four endpoints do the same request's work and differ only in how they report a goal:

- ``GET /plain``: no tracking;
- ``GET /inline``: ``await`` a POST to the upstream (the goals API) inside the request;
- ``GET /background``: the same POST in Starlette's ``BackgroundTasks``;
- ``GET /track``: ``await df.track(...)`` on the SDK, whose sender posts to the upstream.

``GET /__stats`` returns the SDK's counters and this process's CPU time; ``POST /__reset``
closes the SDK client at once (abandoning its backlog) and starts it again with an empty
queue, so that one endpoint's backlog does not spill into the next one's measurement. It prints
one JSON line (its port) when ready and exits when terminated or when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn
from fastapi import BackgroundTasks, FastAPI

from datafast_async import DataFast

from .delivery import API_KEY, BODY, HEADERS, VISITOR

METADATA = {"plan": "pro", "source": "ads"}


class _GcClock:
    """Time spent in the garbage collector, per generation (reported by ``/__stats``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._start
            self.collections[generation] += 1


def build_app(upstream: str, first: str = "plain") -> FastAPI:
    gc_clock = _GcClock()
    state: dict[str, Any] = {}
    goals_url = upstream + "/api/v1/goals"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            state["session"] = session
            state["df"] = DataFast(API_KEY, base_url=upstream)
            async with state["df"]:
                yield
                await state["df"].aclose(timeout=0)

    async def post_upstream() -> None:
        async with state["session"].post(goals_url, data=BODY, headers=HEADERS) as response:
            await response.read()

    async def plain() -> dict[str, bool]:
        return {"ok": True}

    async def inline() -> dict[str, bool]:
        await post_upstream()
        return {"ok": True}

    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(post_upstream)
        return {"ok": True}

    async def track() -> dict[str, bool]:
        await state["df"].track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
        return {"ok": True}

    app = FastAPI(lifespan=lifespan)
    # The router tries routes in order, and each miss costs a regex match: the endpoint being
    # measured comes first, so that every endpoint pays the same routing.
    endpoints: dict[str, Callable[..., Awaitable[dict[str, bool]]]] = {
        "plain": plain,
        "inline": inline,
        "background": background,
        "track": track,
    }
    for name in sorted(endpoints, key=lambda n: n != first):
        app.add_api_route(f"/{name}", endpoints[name], methods=["GET"])

    @app.get("/__stats")
    async def stats() -> dict[str, Any]:
        s = state["df"].stats()
        return {
            "enqueued": s.enqueued,
            "delivered": s.delivered,
            "failed": s.failed,
            "dropped": s.dropped,
            "queued": s.queued,
            "in_flight": s.in_flight,
            "cpu": time.process_time(),
            "time": time.perf_counter(),
            "gc_seconds": sum(gc_clock.seconds),
            "gc_seconds_by_generation": list(gc_clock.seconds),
            "gc_collections": list(gc_clock.collections),
        }

    @app.post("/__reset")
    async def reset() -> dict[str, bool]:
        df: DataFast = state["df"]
        await df.aclose(timeout=0)
        await df.start()
        return {"ok": True}

    return app


async def _watch_parent(server: uvicorn.Server, max_seconds: float) -> None:
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while os.getppid() == parent and time.monotonic() < deadline:  # noqa: ASYNC110 (polling)
        await asyncio.sleep(1.0)
    server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL of the goals API")
    parser.add_argument("--first", default="plain", help="the endpoint routed first")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    # The SDK logs one line per kind of failure; the reset's abandoned backlog is expected.
    logging.getLogger("datafast_async").setLevel(logging.CRITICAL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(args.upstream, args.first),
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=2048,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        watcher = asyncio.ensure_future(_watch_parent(server, args.max_seconds))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn's flag)
            await asyncio.sleep(0.01)
        ready = {
            "port": port,
            "pid": os.getpid(),
            "loop": type(asyncio.get_running_loop()).__module__,
            "http": getattr(config, "http_protocol_class", type(None)).__module__,
        }
        print(json.dumps(ready), flush=True)
        await serving
        watcher.cancel()

    # uvicorn's own choice of loop (uvloop when installed), across its versions.
    get_loop_factory = getattr(config, "get_loop_factory", None)
    if get_loop_factory is not None:
        factory = get_loop_factory()
        loop = factory() if factory is not None else asyncio.new_event_loop()
    else:
        config.setup_event_loop()
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
