"""``python -m benchmarks [--quick] [--only SECTION ...]``: run, save JSON, print the tables.

The full run takes several minutes and writes ``benchmarks/results/<time>.json`` and a copy at
``benchmarks/last-run.json`` (the source of docs/performance.md's table). ``--quick`` runs every
section on tiny sizes in seconds: it checks that the benchmarks work, not how fast anything is,
and writes only under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import _report
from ._proc import CLIENT_CPU, SERVER_CPU, cpu_count, pin

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "enqueue",
    "delivery",
    "payments",
    "sync",
    "handler",
    "memory",
    "drain",
    "adaptive",
    "spool",
    "loop",
)

# (full, quick) settings of each section.
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "enqueue": ({"rounds": 20, "batch": 5_000}, {"rounds": 2, "batch": 500}),
    "delivery": (
        {"total": 5_000, "rounds": 11, "concurrencies": (8, 32, 64)},
        {"total": 200, "rounds": 1, "concurrencies": (8, 32, 64)},
    ),
    "payments": (
        {
            "total": 5_000,
            "rounds": 7,
            "concurrencies": (8, 64),
            "enqueue_rounds": 20,
            "batch": 5_000,
        },
        {"total": 200, "rounds": 1, "concurrencies": (8, 64), "enqueue_rounds": 2, "batch": 300},
    ),
    "sync": ({"rounds": 20, "batch": 5_000}, {"rounds": 2, "batch": 300}),
    "handler": (
        {
            "rounds": 3,
            "warmup": 0.5,
            "duration": 2.0,
            "every": 10,
            "every_rounds": 30,
            "every_warmup": 0.15,
            "every_duration": 0.5,
        },
        {
            "rounds": 1,
            "warmup": 0.2,
            "duration": 0.5,
            "latencies": (0.05,),
            "every": 10,
            "every_rounds": 1,
            "every_warmup": 0.1,
            "every_duration": 0.3,
        },
    ),
    "memory": (
        {"rounds": 5, "count": 10_000, "max_queue_size": 10_000},
        {"rounds": 1, "count": 500, "max_queue_size": 500},
    ),
    "drain": ({"rounds": 5, "count": 10_000}, {"rounds": 1, "count": 300}),
    "adaptive": (
        {
            "rounds": 3,
            "seconds": 4.0,
            "burst": 5_000,
            "burst_cap": 40.0,
            "fixed_cap": 8.0,
            "shutdown_goals": 1_600,
            "factors": (0.5, 0.7, 0.8, 0.9),
        },
        {
            "rounds": 1,
            "seconds": 0.5,
            "burst": 200,
            "burst_cap": 5.0,
            "fixed_cap": 1.0,
            "shutdown_goals": 100,
            "factors": (0.8,),
        },
    ),
    "loop": ({"rounds": 3, "goals": 10_000}, {"rounds": 1, "goals": 500}),
    "spool": (
        {
            "rounds": 9,
            "delivery_rounds": 5,
            "batch": 2_000,
            "total": 5_000,
            "concurrency": 64,
            "disk_goals": 10_000,
            "replay_goals": 100_000,
            "replay_rounds": 1,
            "kill_rounds": 2,
            "kill_rate": 1_000.0,
            "kill_after": 3.0,
            "memory_rounds": 2,
            "memory_small": 10_000,
            "memory_large": 100_000,
            "max_queue_size": 10_000,
        },
        {
            "rounds": 1,
            "delivery_rounds": 1,
            "batch": 500,
            "total": 200,
            "concurrency": 64,
            "disk_goals": 200,
            "replay_goals": 1_000,
            "replay_rounds": 1,
            "kill_rounds": 1,
            "kill_rate": 1_000.0,
            "kill_after": 0.5,
            "memory_rounds": 1,
            "memory_small": 500,
            "memory_large": 5_000,
            "max_queue_size": 500,
        },
    ),
}


def _run_section(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    if name == "enqueue":
        from . import enqueue

        return enqueue.run(**settings)
    if name == "delivery":
        from . import delivery

        return delivery.run(**settings)
    if name == "payments":
        from . import payments

        return payments.run(**settings)
    if name == "sync":
        from . import sync

        return sync.run(**settings)
    if name == "handler":
        from . import handler

        return handler.run(**settings)
    if name == "memory":
        from . import memory

        return memory.run(**settings)
    if name == "adaptive":
        from . import adaptive

        return adaptive.run(**settings)
    if name == "spool":
        from . import spool

        return spool.run(**settings)
    if name == "loop":
        from . import loop

        return loop.run(**settings)
    from . import drain

    return drain.run(**settings)


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "implementation": platform.python_implementation()}
    for module in ("aiohttp", "attrs", "fastapi", "starlette", "uvicorn", "uvloop", "httptools"):
        try:
            out[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            out[module] = "not installed"
    import datafast_async

    out["datafast_async"] = datafast_async.__version__
    return out


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=HERE
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "datafast_async"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=HERE.parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit or None, "package_modified": bool(dirty)}


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _numbers(node: Any) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [x for value in node.values() for x in _numbers(value)]
    if isinstance(node, list):
        return [x for value in node for x in _numbers(value)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check they work")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, help="write the JSON here as well")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the tables of a saved run, run nothing"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        print(_report.markdown(json.loads(args.render.read_text())))
        return 0

    # The SDK's WARNINGs (goals cut at a deadline on purpose, 429s from a capped server) are
    # part of what is measured, not news: keep them off the table.
    logging.getLogger("datafast_async").setLevel(logging.ERROR)
    cpus = cpu_count()  # before this process is pinned to one of them
    pinned = pin(0, CLIENT_CPU)
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cpus": cpus,
            "client_cpu": CLIENT_CPU if pinned else None,
            "server_cpu": SERVER_CPU if pinned else None,
            "platform": platform.platform(),
        },
        "versions": _versions(),
        "git": _git(),
        "settings": {},
        "seconds": {},
        "loadavg": {},
    }
    sections = args.only or list(SECTIONS)
    total = time.perf_counter()
    for name in sections:
        settings = SETTINGS[name][1 if args.quick else 0]
        meta["settings"][name] = settings
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        load_before = _loadavg()
        results[name] = _run_section(name, settings)
        meta["seconds"][name] = round(time.perf_counter() - begin, 1)
        meta["loadavg"][name] = [load_before, _loadavg()]
        print(f"benchmarks: {name} took {meta['seconds'][name]} s", file=sys.stderr, flush=True)
    meta["seconds"]["total"] = round(time.perf_counter() - total, 1)
    results["goals"] = _report.evaluate(results)
    results["meta"] = meta

    bad = [x for x in _numbers({k: results[k] for k in sections}) if math.isnan(x)]
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.quick and args.only is None:
        shutil.copyfile(path, HERE / "last-run.json")
    if args.out is not None:
        shutil.copyfile(path, args.out)

    print(_report.markdown(results))
    print(
        f"\nResults: {os.path.relpath(path)}; {meta['seconds']['total']} s in all"
        + (
            " (quick: these sizes check that the benchmarks work, not how fast)"
            if args.quick
            else ""
        ),
    )
    if bad:
        print(f"benchmarks: {len(bad)} figures are not numbers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
