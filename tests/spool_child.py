"""A process that tracks goals with a spool, run by tests/test_spool_processes.py.

``python tests/spool_child.py --url URL --dir DIR --count N [--rate R] [--prefix P]
[--then close|hang|journaled]`` tracks ``N`` goals (``metadata={"n": P + str(i)}``), ``R`` a
second (``0``: at once), and prints ``A <n> <time.time()>`` for each goal accepted (stdout
flushed after every batch, so a ``kill -9`` loses none of these lines that a goal's acceptance
preceded by more than a few milliseconds). Then:

- ``close``: ``aclose(timeout=--close-timeout)`` and print ``STATS <json>``;
- ``hang``: print ``DONE`` and wait to be killed;
- ``journaled``: write the journal out (``Journal.flush``), print ``JOURNALED``, and wait to
  be killed.

It never waits more than ``--max-seconds`` in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

import attrs

from datafast_async import DataFast, RetryPolicy

KEY = "df_spool_process_test_key_01"
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
POLICY = RetryPolicy(
    max_attempts=2,
    initial_delay=0.01,
    max_delay=0.02,
    circuit_cooldown=0.1,
    max_circuit_cooldown=0.2,
)


async def main(args: argparse.Namespace) -> None:
    client = DataFast(
        KEY,
        base_url=args.url,
        max_queue_size=args.max_queue,
        spool_path=args.dir,
        retry=POLICY,
        timeout=5.0,
    )
    await client.start()
    out = sys.stdout
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch = 10 if args.rate else args.count
    for first in range(0, args.count, batch):
        lines = []
        for i in range(first, min(first + batch, args.count)):
            n = f"{args.prefix}{i}"
            client.track_nowait(VISITOR, "signup", metadata={"n": n})
            lines.append(f"A {n} {time.time():.6f}\n")
        out.write("".join(lines))
        out.flush()
        if args.rate:
            wait = began + (first + batch) / args.rate - loop.time()
            await asyncio.sleep(max(0.0, wait))
    if args.then == "close":
        stats = await client.aclose(timeout=args.close_timeout)
        out.write("STATS " + json.dumps(attrs.asdict(stats)) + "\n")
        out.flush()
        return
    if args.then == "journaled":
        spool = client._run.spool
        assert spool is not None
        await asyncio.to_thread(spool.journal.flush)
        out.write("JOURNALED\n")
    else:
        out.write("DONE\n")
    out.flush()
    await asyncio.sleep(args.max_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--then", choices=("close", "hang", "journaled"), default="close")
    parser.add_argument("--close-timeout", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parsed = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(asyncio.wait_for(main(parsed), parsed.max_seconds + 5))
