"""Instructions per delivered goal, the SDK beside the raw aiohttp loop, counted by cachegrind.

``python -m benchmarks.instructions [--concurrency 8 64] [--kind goals|payments]`` (needs
``valgrind``; not part of ``make bench``, it takes a few minutes). Timings on a shared machine
move by several percent from one run to the next; an instruction count does not. Each figure
is the difference between a run of 1,300 goals and one of 300 (start-up, imports and warm-up
cancel out), divided by 1,000, against the fast server (``benchmarks._server``) on 127.0.0.1.
Both sides do what ``benchmarks.delivery`` times (``--kind payments``: ``benchmarks.payments``,
each payment with its own transaction id): the SDK enqueues (validation included) and
delivers; the raw loop posts a prebuilt body.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys

from ._proc import SERVER_CPU, running

_SMALL, _LARGE = 300, 1_300


def _child(mode: str, base_url: str, total: int, concurrency: int) -> None:
    from .delivery import METADATA, VISITOR, raw_loop

    if mode.startswith("payments-"):
        _payments_child(mode.removeprefix("payments-"), base_url, total, concurrency)
        return

    async def sdk() -> None:
        from datafast_async import DataFast

        client = DataFast(
            "df_benchmark_key_0000000001",
            base_url=base_url,
            concurrency=concurrency,
            max_queue_size=max(total, 10_000),
        )
        async with client:
            for _ in range(concurrency * 4):  # the limit at its ceiling, connections open
                client.track_nowait(VISITOR, "signup", metadata=METADATA)
            await client.flush()
            for _ in range(total):
                client.track_nowait(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
            await client.flush()

    if mode == "raw":
        asyncio.run(raw_loop(base_url + "/api/v1/goals", total, concurrency))
    else:
        asyncio.run(sdk())


def _payments_child(mode: str, base_url: str, total: int, concurrency: int) -> None:
    from .delivery import VISITOR, raw_loop
    from .payments import BODY

    async def sdk() -> None:
        from datafast_async import DataFast

        client = DataFast(
            "df_benchmark_key_0000000001",
            base_url=base_url,
            concurrency=concurrency,
            max_queue_size=max(total, 10_000),
        )
        async with client:
            for i in range(concurrency * 4):  # the limit at its ceiling, connections open
                client.track_payment_nowait(49.99, "USD", f"warm_{i}", visitor_id=VISITOR)
            await client.flush()
            for i in range(total):
                client.track_payment_nowait(49.99, "USD", f"ch_{i:08d}", visitor_id=VISITOR)
            await client.flush()

    if mode == "raw":
        asyncio.run(raw_loop(base_url + "/api/v1/payments", total, concurrency, BODY))
    else:
        asyncio.run(sdk())


def _count(mode: str, base_url: str, total: int, concurrency: int) -> int:
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        mode,
        base_url,
        str(total),
        str(concurrency),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--kind", choices=("goals", "payments"), default="goals")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, base_url, total, concurrency = args.child
        _child(mode, base_url, int(total), int(concurrency))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        noun = "goal" if args.kind == "goals" else "payment"
        prefix = "" if args.kind == "goals" else "payments-"
        print(f"| concurrency | SDK, instructions per {noun} | raw aiohttp loop | ratio |")
        print("| --- | --- | --- | --- |")
        for concurrency in args.concurrency:
            per_goal = {}
            for mode in ("raw", "sdk"):
                small = _count(prefix + mode, base_url, _SMALL, concurrency)
                large = _count(prefix + mode, base_url, _LARGE, concurrency)
                per_goal[mode] = (large - small) / (_LARGE - _SMALL)
            print(
                f"| {concurrency} | {per_goal['sdk']:,.0f} | {per_goal['raw']:,.0f} | "
                f"{per_goal['sdk'] / per_goal['raw']:.3f}\u00d7 |"
            )


if __name__ == "__main__":
    main()
