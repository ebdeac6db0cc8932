"""A property of the spool wired into the client: random sequences of track, deliver, fail,
sync, crash and restart never lose an accepted goal and never send one twice, except in the
windows the design allows.

The journal runs without its writer thread (``background=False``): it writes only when the
test syncs it (``journal.flush``), when it reads goals back, and when it closes, so a crash
(the process dying: its files closed, its buffers gone) can be placed exactly. What a crash
may cost is then known: a goal tracked since the last sync may be lost (the last ~0.1 s), and
a goal answered since the last sync may be sent again (delivered, not yet acknowledged).
Those are the only allowances: every other goal is answered exactly once in the end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafast_async import DataFast
from datafast_async._run import NO_LOOP, RunState

from ._fakes import API, VISITOR, spool_client

Op = tuple[str, int]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("track"), st.integers(1, 6)),
        st.tuples(st.sampled_from(["deliver", "fail", "sync", "crash", "restart"]), st.just(0)),
    ),
    max_size=12,
)


async def crash(df: DataFast) -> None:
    """The process holding ``df`` dies: nothing more is sent, its journal's files are closed
    without a word (the kernel releases their locks), and what was buffered is gone."""
    run = df._run
    spool = run.spool
    assert spool is not None
    await spool.wait_open()
    run.sender.halt()
    spool.abandon_after_fork()
    await run.sender.stop()
    run.state = RunState.CLOSED
    run.intake = NO_LOOP
    run.warned = True
    run.queue.close_intake()


async def settled(df: DataFast) -> None:
    """Wait until every goal accepted has been answered (parked ones come back once a probe
    gets through: a cool-down of 0.05 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        stats = df.stats()
        if stats.queued + stats.in_flight + stats.spooled == 0:
            return
        assert loop.time() < deadline, stats
        await asyncio.sleep(0.005)


async def scenario(path: Path, ops: list[Op]) -> None:
    api = API("down")
    accepted: set[str] = set()
    may_lose: set[str] = set()
    may_repeat: Counter[str] = Counter()
    since_sync: set[str] = set()  # tracked since the journal last wrote
    at_sync: Counter[str] = Counter()  # answered as of the last write
    df: DataFast | None = None
    n = 0

    def answers() -> Counter[str]:
        return api.delivered + api.refused

    async def ensure() -> DataFast:
        nonlocal df
        if df is None:
            df = spool_client(path, api, max_queue_size=3, _spool_options={"background": False})
            await df.start()
        return df

    async def sync(current: DataFast) -> None:
        nonlocal since_sync, at_sync
        spool = current._run.spool
        assert spool is not None
        await anyio.to_thread.run_sync(spool.journal.flush)
        since_sync = set()
        at_sync = answers()

    for op, count in ops:
        if op == "track":
            current = await ensure()
            for _ in range(count):
                i = str(n)
                n += 1
                delivery = current.track_nowait(VISITOR, "signup", metadata={"i": i})
                assert not delivery.done(), delivery.error  # nothing refused: room on disk
                accepted.add(i)
                since_sync.add(i)
        elif op in ("deliver", "fail"):
            current = await ensure()
            api.mode = "up" if op == "deliver" else "bad"
            await settled(current)
            api.mode = "down"
        elif op == "sync":
            await sync(await ensure())
        elif op == "crash" and df is not None:
            await crash(df)
            df = None
            may_lose |= since_sync
            now = answers()
            for i in now:
                if now[i] > at_sync[i]:
                    may_repeat[i] += 1
            since_sync = set()
            at_sync = now
        elif op == "restart" and df is not None:
            await df.aclose(timeout=0.05)  # the API is down: what is pending is kept
            df = None
            since_sync = set()
            at_sync = answers()

    current = await ensure()
    api.mode = "up"
    await settled(current)
    assert await current.flush(timeout=5) is True
    stats = await current.aclose()
    assert stats.spooled == 0
    final = answers()
    lost = sorted(accepted - set(final) - may_lose, key=int)
    assert not lost, f"accepted goals never sent: {lost}"
    repeated = {i: c for i, c in final.items() if c > 1 + may_repeat[i]}
    assert not repeated, f"goals sent more than once outside a crash's window: {repeated}"
    leftover = await anyio.to_thread.run_sync(lambda: [p.name for p in path.iterdir()])
    assert leftover == []


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_no_accepted_goal_is_lost_or_sent_twice_outside_a_crash_window(
    tmp_path_factory: Any, ops: list[Op]
) -> None:
    path = tmp_path_factory.mktemp("spool")
    asyncio.run(scenario(path, ops))
