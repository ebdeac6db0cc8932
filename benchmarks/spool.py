"""Spool: what ``spool_path`` costs a client, and what it keeps.

In one run, interleaved round by round (the order flipping each round), each figure beside the
same client without a spool:

- ``track_nowait`` per call (a 2-key metadata dict), on two running clients delivering to the
  fast server, one with a spool (its writer thread running, as in an app) and one without; the
  queue holds a whole batch, so every goal goes to memory and the journal;
- delivered goals/s, N goals queued then ``flush`` at concurrency 64 (as the delivery section's
  SDK run), each run on a fresh spool directory;
- bytes on disk per goal: the journal files' bytes over the goals journaled, once the writer
  wrote them and before any is acknowledged (the API is down: a closed port, long retry
  delays), and what the writer's step (encode, record, write) costs per goal;
- replay: goals journaled with the API down (the client's own path: beyond ``max_queue_size``
  they go to disk only; ``aclose(timeout=0)`` keeps the rest), then a new client on the
  directory with the fast server up, timed from ``start()`` to ``flush()`` answering ``True``;
- ``kill -9``: a child process tracks 1,000 goals/s (each with its number in its metadata)
  against a server answering after 100 ms that records every number it receives, and prints
  the numbers it has accepted; it is killed with ``SIGKILL`` after a few seconds; a new client
  on its directory sends what the journal kept; then the numbers accepted and never received
  are lost, those received twice duplicated; set beside the goals it accepted in the last
  0.1 s before the kill (the journal's write interval);
- resident memory, in two fresh processes: a client with a spool and ``max_queue_size=10_000``
  against a closed port tracks 10,000 goals in one and 100,000 in the other (the app keeping
  no ``Delivery``), the writer having written them all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datafast_async import DataFast, RetryPolicy

from ._proc import CLIENT_CPU, SERVER_CPU, pin, running
from ._stats import summary
from .delivery import API_KEY, BODY, METADATA, VISITOR
from .enqueue import _time_track
from .memory import _closed_port, _rss_kib

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
# Long retry delays: against a closed port the goals stay pending (none parked, none failed).
_PATIENT = RetryPolicy(max_attempts=6, initial_delay=60.0, max_delay=60.0)
# The pace of the memory figure's outage: 1,000 goals every 10 ms (100,000 goals/s).
_CHUNK = 1_000
_PACE = 0.01


@contextlib.contextmanager
def _directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="datafast-spool-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _files(directory: str) -> list[Path]:
    return [p for p in Path(directory).iterdir() if p.is_file()]


def _quietly_close(client: DataFast, timeout: float = 0) -> Any:
    """``aclose`` whose WARNING (goals kept in the spool) is what the benchmark intends."""

    async def close() -> Any:
        sdk_logger = logging.getLogger("datafast_async")
        level = sdk_logger.level
        sdk_logger.setLevel(logging.CRITICAL)
        try:
            return await client.aclose(timeout=timeout)
        finally:
            sdk_logger.setLevel(level)

    return close()


def _get(base_url: str, path: str) -> Any:
    with urllib.request.urlopen(base_url + path, timeout=30) as answer:
        return json.loads(answer.read())


async def _settled_journal(client: DataFast) -> None:
    """Wait until the spool's writer has journaled (and written) every goal handed to it."""
    spool = client._run.spool
    assert spool is not None
    await asyncio.to_thread(spool.journal.flush, sync=False)


# -- track_nowait ------------------------------------------------------------------------------


async def _track_cost(base_url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    plain_ns: list[float] = []
    spool_ns: list[float] = []
    ratio: list[float] = []
    size = max(batch, 10_000)
    with _directory() as directory:
        plain = DataFast(API_KEY, base_url=base_url, max_queue_size=size)
        spooled = DataFast(API_KEY, base_url=base_url, max_queue_size=size, spool_path=directory)
        async with plain, spooled:

            async def timed(client: DataFast) -> float:
                ns = _time_track(client, batch)
                if client is spooled:
                    # Its writer's step done before the other client's batch is timed (a
                    # batch of this one's own may overlap a step, as in an app).
                    await _settled_journal(client)
                return ns

            async def delivered() -> None:
                done = await asyncio.gather(plain.flush(timeout=60), spooled.flush(timeout=60))
                if not all(done):
                    raise RuntimeError(f"a batch was not delivered: {plain.stats()}")
                await _settled_journal(spooled)  # the acknowledgements written, too

            # One batch each to warm up the caches, the connections and the allocator.
            await timed(plain)
            await timed(spooled)
            await delivered()
            for index in range(rounds):
                if index % 2 == 0:
                    without, with_ = await timed(plain), await timed(spooled)
                else:
                    with_, without = await timed(spooled), await timed(plain)
                await delivered()
                plain_ns.append(without)
                spool_ns.append(with_)
                ratio.append(with_ / without)
            stats = [plain.stats(), spooled.stats()]
        left = _files(directory)
    for s in stats:
        if s.dropped or s.failed or s.spooled or s.delivered != s.enqueued:
            raise RuntimeError(f"a client did not deliver every goal: {s}")
    if left:
        raise RuntimeError(f"the spool kept {len(left)} files after delivering everything")
    return {"track_nowait_ns": plain_ns, "track_nowait_spool_ns": spool_ns, "track_ratio": ratio}


# -- delivered goals/s -------------------------------------------------------------------------


async def _deliver(base_url: str, total: int, concurrency: int, spool: bool) -> float:
    """N goals queued with ``track_nowait``, then ``flush``: wall seconds (as delivery.py)."""
    with _directory() as directory:
        client = DataFast(
            API_KEY,
            base_url=base_url,
            concurrency=concurrency,
            max_queue_size=max(total, 10_000),
            spool_path=directory if spool else None,
        )
        async with client:
            for _ in range(concurrency):  # warm the connections
                client.track_nowait(VISITOR, "signup", metadata=METADATA)
            await client.flush()
            if spool:
                await _settled_journal(client)
            gc.collect()
            track = client.track_nowait
            wall = time.perf_counter()
            for _ in range(total):
                track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
            ok = await client.flush(timeout=120)
            elapsed = time.perf_counter() - wall
            stats = client.stats()
        left = _files(directory)
    if not ok or stats.delivered != total + concurrency or stats.failed or stats.dropped:
        raise RuntimeError(f"the client did not deliver every goal: {stats}")
    if left:
        raise RuntimeError(f"the spool kept {len(left)} files after delivering everything")
    return elapsed


def _delivery(base_url: str, rounds: int, total: int, concurrency: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"rate": [], "rate_spool": [], "rate_ratio": []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        walls = {
            spool: asyncio.run(_deliver(base_url, total, concurrency, spool)) for spool in order
        }
        out["rate"].append(total / walls[False])
        out["rate_spool"].append(total / walls[True])
        out["rate_ratio"].append(walls[False] / walls[True])
    return out


# -- bytes on disk, and the writer's cost ------------------------------------------------------


async def _on_disk(count: int) -> tuple[float, float]:
    """(bytes on disk per goal, writer's µs per goal) for ``count`` goals journaled with the API
    down; the writer thread is off, so that its step is timed here, in one piece."""
    with _directory() as directory:
        client = DataFast(
            API_KEY,
            base_url=f"http://127.0.0.1:{_closed_port()}",
            max_queue_size=count,
            retry=_PATIENT,
            spool_path=directory,
            _spool_options={"background": False},
        )
        await client.start()
        try:
            for _ in range(count):
                client.track_nowait(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
            spool = client._run.spool
            assert spool is not None
            start = time.perf_counter()
            spool.journal.flush(sync=False)  # in the loop's thread: it is what is timed
            writer_us = (time.perf_counter() - start) / count * 1e6
            stats = client.stats()
            if stats.enqueued != count or spool.journal.pending != count:
                raise RuntimeError(f"not every goal was journaled: {stats}, {spool.journal}")
            size = sum(p.stat().st_size for p in _files(directory))
        finally:
            await _quietly_close(client)
    return size / count, writer_us


# -- replay ------------------------------------------------------------------------------------


async def _journal_offline(directory: str, count: int, max_queue_size: int) -> None:
    """``count`` goals tracked with the API down: they stay in the spool at ``aclose``."""
    client = DataFast(
        API_KEY,
        base_url=f"http://127.0.0.1:{_closed_port()}",
        max_queue_size=max_queue_size,
        retry=_PATIENT,
        spool_path=directory,
        spool_max_bytes=1 << 30,
    )
    await client.start()
    track = client.track_nowait
    for index in range(count):
        track(VISITOR, "signup", metadata={"plan": "pro", "n": str(index)})
    stats = await _quietly_close(client)
    if stats.spooled != count:
        raise RuntimeError(f"not every goal stayed in the spool: {stats}")


async def _replay(base_url: str, directory: str, count: int) -> float:
    """Seconds from ``start()`` to ``flush()`` answering ``True``, ``count`` goals waiting."""
    before = _get(base_url, "/__stats")["requests"]
    client = DataFast(API_KEY, base_url=base_url, spool_path=directory, spool_max_bytes=1 << 30)
    start = time.perf_counter()
    await client.start()
    ok = await client.flush(timeout=300)
    elapsed = time.perf_counter() - start
    stats = await client.aclose()
    sent = _get(base_url, "/__stats")["requests"] - before
    if not ok or stats.delivered != count or stats.enqueued != count or sent != count:
        raise RuntimeError(f"the replay did not deliver each goal once: {stats}, {sent} sent")
    left = _files(directory)
    if left:
        raise RuntimeError(f"the spool kept {len(left)} files after the replay")
    return elapsed


def _replays(base_url: str, rounds: int, count: int, max_queue_size: int) -> list[float]:
    seconds = []
    for _ in range(rounds):
        with _directory() as directory:
            asyncio.run(_journal_offline(directory, count, max_queue_size))
            seconds.append(asyncio.run(_replay(base_url, directory, count)))
    return seconds


# -- kill -9 -----------------------------------------------------------------------------------


async def _tracking_child(base_url: str, directory: str, rate: float) -> None:
    """Track ``rate`` goals/s numbered 0, 1, ...; print how many were accepted, with the time
    (``time.monotonic``, the same clock in every process), about every 5 ms; until killed."""
    client = DataFast(API_KEY, base_url=base_url, spool_path=directory)
    await client.start()
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    track = client.track_nowait
    start = time.monotonic()
    sent = 0
    while True:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            track(VISITOR, "signup", metadata={"n": str(sent)})
            sent += 1
        out.write(f'{{"accepted": {sent}, "t": {time.monotonic()!r}}}\n')
        out.flush()
        await asyncio.sleep(0.005)


def _kill_round(base_url: str, directory: str, rate: float, seconds: float) -> dict[str, float]:
    code = (
        "import asyncio; from benchmarks.spool import _tracking_child; "
        f"asyncio.run(_tracking_child({base_url!r}, {directory!r}, {rate!r}))"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    pin(proc.pid, CLIENT_CPU)
    lines: list[tuple[int, float]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if "accepted" in item:
                    lines.append((item["accepted"], item["t"]))
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the tracking child did not start")
        while not lines:
            time.sleep(0.01)
        time.sleep(seconds)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(10)
    accepted = max(n for n, t in lines if t <= killed_at)
    before_window = max((n for n, t in lines if t <= killed_at - 0.1), default=0)

    async def restart() -> Any:
        client = DataFast(API_KEY, base_url=base_url, spool_path=directory)
        await client.start()
        ok = await client.flush(timeout=60)
        stats = await client.aclose()
        if not ok:
            raise RuntimeError(f"the restarted client did not deliver everything: {stats}")
        return stats

    stats = asyncio.run(restart())
    counts = collections.Counter(_get(base_url, "/__recorded"))
    lost = sum(1 for n in range(accepted) if counts[str(n)] == 0)
    return {
        "accepted": accepted,
        "accepted_last_100ms": accepted - before_window,
        "lost": lost,
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
        "replayed": stats.delivered,
        # Goals tracked after the child's last line (accepted, not known to have been).
        "unreported": sum(1 for value in counts if value is None or int(value) >= accepted),
    }


def _kills(rounds: int, rate: float, seconds: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        server_args = ["--latency", "0.1", "--record", "n"]
        with (
            running(
                "benchmarks._server", server_args, cpu=SERVER_CPU, name="recording server"
            ) as server,
            _directory() as directory,
        ):
            base_url = f"http://127.0.0.1:{server.ready['port']}"
            for key, value in _kill_round(base_url, directory, rate, seconds).items():
                out.setdefault(key, []).append(value)
    out["lost_beyond_window"] = [
        lost - window for lost, window in zip(out["lost"], out["accepted_last_100ms"], strict=True)
    ]
    return out


# -- resident memory ---------------------------------------------------------------------------


def _peak_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


async def _rss_child(count: int, max_queue_size: int, directory: str, chunk: int) -> dict[str, Any]:
    client = DataFast(
        API_KEY,
        base_url=f"http://127.0.0.1:{_closed_port()}",
        max_queue_size=max_queue_size,
        retry=_PATIENT,
        spool_path=directory,
        spool_max_bytes=1 << 30,
    )
    await client.start()
    gc.collect()
    before = _rss_kib()
    track = client.track_nowait
    step = chunk or count
    for start in range(0, count, step):
        for _ in range(min(step, count - start)):
            track(VISITOR, "signup", metadata={"plan": "pro", "source": "ads"})
        if chunk:
            await asyncio.sleep(_PACE)
    await _settled_journal(client)
    gc.collect()
    after = _rss_kib()
    stats = client.stats()
    peak = _peak_kib()
    await _quietly_close(client)
    return {
        "rss_before_kib": before,
        "rss_kib": after,
        "peak_kib": peak,
        "in_memory": stats.queued + stats.in_flight,
        "on_disk": stats.spooled,
    }


def _rss(count: int, max_queue_size: int, chunk: int) -> dict[str, Any]:
    with _directory() as directory:
        code = (
            "import asyncio, json; from benchmarks.spool import _rss_child; "
            f"print(json.dumps(asyncio.run(_rss_child({count}, {max_queue_size}, "
            f"{directory!r}, {chunk}))))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=ROOT,
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["in_memory"] + result["on_disk"] != count:
        raise RuntimeError(f"goals went missing: {result}")
    return result


def _memory(rounds: int, small: int, large: int, max_queue_size: int) -> dict[str, list[float]]:
    """Paced (chunks of ``_CHUNK`` goals, ``_PACE`` s apart: 100,000 goals/s) in every round,
    and once in a burst (one tight loop: the writer catches up only afterwards)."""
    out: dict[str, list[float]] = {}
    for index in range(rounds + 1):
        burst = index == rounds
        chunk, prefix = (0, "burst_") if burst else (_CHUNK, "")
        order = (small, large) if index % 2 == 0 else (large, small)
        got = {count: _rss(count, max_queue_size, chunk) for count in order}
        for count, name in ((small, "small"), (large, "large")):
            out.setdefault(f"{prefix}{name}_rss_mib", []).append(got[count]["rss_kib"] / 1024)
            out.setdefault(f"{prefix}{name}_peak_mib", []).append(got[count]["peak_kib"] / 1024)
            out.setdefault(f"{prefix}{name}_added_mib", []).append(
                (got[count]["rss_kib"] - got[count]["rss_before_kib"]) / 1024
            )
        ratio = got[large]["rss_kib"] / got[small]["rss_kib"]
        out.setdefault(f"{prefix}rss_ratio", []).append(ratio)
    return out


@contextlib.contextmanager
def _step(name: str, seconds: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 1)
    print(f"benchmarks: spool: {name} took {seconds[name]} s", file=sys.stderr, flush=True)


# -- the section -------------------------------------------------------------------------------


def run(
    *,
    rounds: int,
    delivery_rounds: int,
    batch: int,
    total: int,
    concurrency: int,
    disk_goals: int,
    replay_goals: int,
    replay_rounds: int,
    kill_rounds: int,
    kill_rate: float,
    kill_after: float,
    memory_rounds: int,
    memory_small: int,
    memory_large: int,
    max_queue_size: int,
) -> dict[str, Any]:
    measured: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    with running("benchmarks._server", [], cpu=SERVER_CPU, name="fast server") as server:
        base_url = f"http://127.0.0.1:{server.ready['port']}"
        with _step("track_nowait", seconds):
            measured.update(asyncio.run(_track_cost(base_url, rounds, batch)))
        with _step("delivery", seconds):
            measured.update(_delivery(base_url, delivery_rounds, total, concurrency))
        with _step("bytes on disk", seconds):
            for _ in range(rounds):
                per_goal, writer_us = asyncio.run(_on_disk(disk_goals))
                measured.setdefault("disk_bytes_per_goal", []).append(per_goal)
                measured.setdefault("writer_us_per_goal", []).append(writer_us)
        with _step("replay", seconds):
            replay_s = _replays(base_url, replay_rounds, replay_goals, max_queue_size)
    measured["replay_s"] = replay_s
    measured["replay_rate"] = [replay_goals / s for s in replay_s]
    with _step("kill -9", seconds):
        kills = _kills(kill_rounds, kill_rate, kill_after)
    with _step("memory", seconds):
        memory = _memory(memory_rounds, memory_small, memory_large, max_queue_size)
    result: dict[str, Any] = {key: summary(values) for key, values in measured.items()}
    result["kill"] = {key: summary(values) for key, values in kills.items()}
    result["memory"] = {key: summary(values) for key, values in memory.items()}
    result["settings"] = {
        "batch": batch,
        "total": total,
        "concurrency": concurrency,
        "body_bytes": len(BODY),
        "replay_goals": replay_goals,
        "kill_rate": kill_rate,
        "kill_after_s": kill_after,
        "memory_small": memory_small,
        "memory_large": memory_large,
        "max_queue_size": max_queue_size,
    }
    result["seconds"] = seconds
    return result
