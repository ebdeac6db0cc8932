"""The FastAPI app of the handler benchmark, served by uvicorn: ``python -m benchmarks._app``.

Five endpoints do the same request's work and differ only in how they report a goal:

- ``GET /plain``: no tracking;
- ``GET /inline``: ``await`` a POST to the upstream (the goals API) inside the request;
- ``GET /background``: the same POST in Starlette's ``BackgroundTasks``;
- ``GET /track``: ``await df.track(...)`` on the SDK, whose sender posts to the upstream;
- ``GET /raw_sender``: a hand-written background sender (``RawSender``): the goal's JSON body
  (the bytes the SDK sends, built with ``json.dumps``, no validation) goes on an
  ``asyncio.Queue`` that a fixed set of tasks drain with raw aiohttp.

With ``--every N``, ``track`` and ``raw_sender`` report a goal in one request of every N (a
counter in the endpoint); the other requests do only ``plain``'s work.

``GET /__stats`` returns both senders' counters, the time spent handing goals over inside the
requests, this process's CPU and GC time; ``POST /__reset`` closes both senders at once
(abandoning their backlogs) and starts them again empty, so that one endpoint's backlog does not
spill into the next one's measurement; ``POST /__drain`` waits (at most ``?timeout=`` seconds)
until both have settled every goal they accepted. It prints one JSON line (its port) when ready
and exits when terminated or when its parent dies.
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
# The raw sender's workers: as many as the SDK's ceiling (its default ``concurrency``).
RAW_WORKERS = 64
# Its queue's bound: the SDK's default ``max_queue_size``.
RAW_MAX_QUEUE = 10_000


def raw_body(visitor_id: str, name: str, metadata: dict[str, str]) -> bytes:
    """The goal's JSON body as a hand-written sender builds it: ``json.dumps``, compact."""
    goal = {"datafast_visitor_id": visitor_id, "name": name, "metadata": metadata}
    return json.dumps(goal, separators=(",", ":")).encode()


# The same bytes as the SDK sends for this goal.
assert raw_body(VISITOR, "signup", METADATA) == BODY


class RawSender:
    """The hand-written reference: an ``asyncio.Queue`` of ready JSON bodies drained by
    ``workers`` tasks posting them with one shared ``aiohttp.ClientSession`` (headers set on
    the session, as the SDK does). One attempt per goal: no retry, no validation, no callbacks.
    A full queue drops the goal and counts it."""

    def __init__(self, url: str, workers: int = RAW_WORKERS, maxsize: int = RAW_MAX_QUEUE) -> None:
        self.url = url
        self.workers = workers
        self.maxsize = maxsize
        self._tasks: list[asyncio.Task[None]] = []
        self._zero()

    def _zero(self) -> None:
        self.enqueued = self.delivered = self.failed = self.dropped = self.in_flight = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(self.maxsize)

    async def start(self) -> None:
        self._zero()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.workers, limit_per_host=self.workers),
            headers=HEADERS,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.session.close()

    def put(self, body: bytes) -> None:
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
        else:
            self.enqueued += 1

    async def drain(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _worker(self) -> None:
        queue, session, url = self.queue, self.session, self.url
        while True:
            body = await queue.get()
            self.in_flight += 1
            ok = False
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            finally:
                self.in_flight -= 1
                if ok:
                    self.delivered += 1
                else:
                    self.failed += 1
                queue.task_done()

    def stats(self) -> dict[str, int]:
        return {
            "enqueued": self.enqueued,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self.queue.qsize(),
            "in_flight": self.in_flight,
        }


# One goal in TIMED has its hand-over timed (see build_app).
TIMED = 8


def _clock_cost() -> float:
    """What two back-to-back readings of ``time.thread_time`` measure: the median of many."""
    clock = time.thread_time
    samples = []
    for _ in range(2001):
        begin = clock()
        samples.append(clock() - begin)
    samples.sort()
    return samples[len(samples) // 2]


_CLOCK_COST = _clock_cost()


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


def build_app(upstream: str, first: str = "plain", every: int = 1) -> FastAPI:
    gc_clock = _GcClock()
    state: dict[str, Any] = {}
    goals_url = upstream + "/api/v1/goals"
    raw = RawSender(goals_url)
    # Requests seen by each goal-reporting endpoint; CPU time spent handing goals over in
    # them (seconds, goals timed).
    ticks = {"track": 0, "raw_sender": 0}
    handoff = {"track": [0.0, 0], "raw_sender": [0.0, 0]}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            state["session"] = session
            state["df"] = DataFast(API_KEY, base_url=upstream)
            await raw.start()
            try:
                async with state["df"]:
                    yield
                    await state["df"].aclose(timeout=0)
            finally:
                await raw.aclose()

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

    # One goal in TIMED is handed over between two readings of this thread's CPU clock (a
    # system call of about a microsecond: timing every goal would cost the endpoint more than
    # the hand-over itself); the readings' own cost, measured at start, is taken off.
    timed = every * TIMED
    thread_time = time.thread_time

    async def track() -> dict[str, bool]:
        tick = ticks["track"] = ticks["track"] + 1
        if tick % every == 0:
            df: DataFast = state["df"]
            if tick % timed:
                await df.track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
            else:
                begin = thread_time()
                await df.track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
                spent = handoff["track"]
                spent[0] += thread_time() - begin - _CLOCK_COST
                spent[1] += 1
        return {"ok": True}

    async def raw_sender() -> dict[str, bool]:
        tick = ticks["raw_sender"] = ticks["raw_sender"] + 1
        if tick % every == 0:
            if tick % timed:
                raw.put(raw_body(VISITOR, "signup", {"plan": "pro", "source": "ads"}))
            else:
                begin = thread_time()
                raw.put(raw_body(VISITOR, "signup", {"plan": "pro", "source": "ads"}))
                spent = handoff["raw_sender"]
                spent[0] += thread_time() - begin - _CLOCK_COST
                spent[1] += 1
        return {"ok": True}

    app = FastAPI(lifespan=lifespan)
    # The router tries routes in order, and each miss costs a regex match: the endpoint being
    # measured comes first, so that every endpoint pays the same routing.
    endpoints: dict[str, Callable[..., Awaitable[dict[str, bool]]]] = {
        "plain": plain,
        "inline": inline,
        "background": background,
        "track": track,
        "raw_sender": raw_sender,
    }
    for name in sorted(endpoints, key=lambda n: n != first):
        app.add_api_route(f"/{name}", endpoints[name], methods=["GET"])

    @app.get("/__stats")
    async def stats() -> dict[str, Any]:
        s = state["df"].stats()
        senders = {
            "track": {
                "enqueued": s.enqueued,
                "delivered": s.delivered,
                "failed": s.failed,
                "dropped": s.dropped,
                "queued": s.queued,
                "in_flight": s.in_flight,
            },
            "raw_sender": raw.stats(),
        }
        for name, (seconds, count) in handoff.items():
            senders[name]["handoff_seconds"] = seconds
            senders[name]["handoffs"] = count
        return {
            # The SDK's counters at the top level too, as before the raw sender came.
            **{k: v for k, v in senders["track"].items() if not k.startswith("handoff")},
            "senders": senders,
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
        await raw.aclose()
        await raw.start()
        for name in handoff:
            handoff[name] = [0.0, 0]
        return {"ok": True}

    @app.post("/__drain")
    async def drain(timeout: float = 30.0) -> dict[str, bool]:
        df: DataFast = state["df"]
        sdk, hand_written = await asyncio.gather(df.flush(timeout), raw.drain(timeout))
        return {"track": sdk, "raw_sender": hand_written}

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
    parser.add_argument(
        "--every", type=int, default=1, help="track and raw_sender: a goal in one request of N"
    )
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    # The SDK logs one line per kind of failure; the reset's abandoned backlog is expected.
    logging.getLogger("datafast_async").setLevel(logging.CRITICAL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(args.upstream, args.first, args.every),
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=2048,
        # The interleaved load generator keeps its connections open while it measures the
        # other apps: uvicorn's default (5 s) could close them between two windows.
        timeout_keep_alive=120,
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
