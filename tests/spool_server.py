"""A recording stand-in for the DataFast API, run as a process by tests/test_spool_processes.py.

``python tests/spool_server.py [--port N] [--latency-min S --latency-max S]`` prints one JSON
line (``{"port": N}``) when ready; it records each ``POST``'s ``metadata["n"]`` as it arrives
and answers with DataFast's success body after a latency drawn uniformly in the range.
``GET /__bodies`` returns ``{"n": [...]}``, every ``n`` received in order (duplicates kept).
It exits when terminated, when its parent dies, or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import time

from aiohttp import web

_SUCCESS = {
    "status": "success",
    "data": [{"message": "Custom event created successfully", "eventId": "x"}],
}


async def _serve(port: int, latency: tuple[float, float], max_seconds: float) -> None:
    received: list[str] = []

    async def goals(request: web.Request) -> web.Response:
        body = await request.json()
        # Recorded as it arrives (an API that processed it, then took its time to answer).
        received.append(str((body.get("metadata") or {}).get("n")))
        low, high = latency
        if high > 0:
            await asyncio.sleep(random.uniform(low, high))
        return web.json_response(_SUCCESS)

    async def bodies(request: web.Request) -> web.Response:
        return web.json_response({"n": received})

    app = web.Application()
    app.router.add_post("/api/v1/goals", goals)
    app.router.add_get("/__bodies", bodies)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-min", type=float, default=0.0)
    parser.add_argument("--latency-max", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, (args.latency_min, args.latency_max), args.max_seconds))


if __name__ == "__main__":
    main()
