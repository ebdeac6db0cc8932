"""Interleavings: random programs of the public calls, and cancellation at every awkward point.

Hypothesis writes programs of ``track``/``track_nowait``/``flush``/``aclose``/``start``, a
caller cancelled while ``track`` waits for room, and ``aclose()`` cancelled while it drains, on
a MockTransport whose answers each goal's script decides (success, 503, a reset, a refused
connection, or a slow answer held until the program releases it). After every step the ledger
balances and no goal is settled or reported twice; once ``aclose()`` returns every
``Delivery`` is settled, once, with the right ``maybe_delivered``, and nothing is queued or in
flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafast_async import (
    ClientClosedError,
    DataFast,
    DataFastError,
    Goal,
    GoalResult,
    QueueFullError,
    RetryPolicy,
    ServerError,
    ShutdownError,
    Stats,
    TransportError,
)
from datafast_async._delivery import Delivery
from datafast_async._transport import MockTransport, Request, Response

from ._fakes import balances, counting_settles, error, ok, until

MAX_QUEUE = 3
POLICY = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)
KINDS = ("ok", "503", "reset", "refused", "slow")


class ScriptedAPI:
    """Answers each goal's attempts as its script says; attempts past the script succeed.
    A slow answer waits until the program releases it (then succeeds), or is cut."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.served: defaultdict[str, list[str]] = defaultdict(list)
        self.cut: Counter[str] = Counter()
        self.held: list[asyncio.Future[None]] = []
        self.checks: list[Any] = []

    async def __call__(self, request: Request) -> Response:
        for check in self.checks:
            check()
        visitor = json.loads(request.body)["datafast_visitor_id"]
        served = self.served[visitor]
        script = self.scripts[visitor]
        kind = script[len(served)] if len(served) < len(script) else "ok"
        served.append(kind)
        if kind == "503":
            return error(503, "Service Unavailable")
        if kind == "reset":
            raise TransportError("Connection reset by peer")
        if kind == "refused":
            raise TransportError("Connection refused", maybe_delivered=False)
        if kind == "slow":
            release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.held.append(release)
            try:
                await release
            except asyncio.CancelledError:
                self.cut[visitor] += 1
                raise
        return ok()

    def release(self) -> bool:
        while self.held:
            release = self.held.pop(0)
            if not release.done():
                release.set_result(None)
                return True
        return False


scripts = st.lists(st.sampled_from(KINDS), min_size=1, max_size=4)
steps = st.one_of(
    st.tuples(st.just("track"), scripts),
    st.tuples(st.just("track_nowait"), scripts),
    st.tuples(st.just("cancel_blocked_track"), scripts),
    st.tuples(st.just("flush"), st.sampled_from([0.0, 0.001])),
    st.tuples(st.just("release")),
    st.tuples(st.just("turns"), st.integers(1, 4)),
    st.tuples(st.just("aclose"), st.sampled_from([0.0, 0.002])),
    st.tuples(st.just("cancel_aclose"), st.sampled_from([0.0, 0.002])),
    st.tuples(st.just("start")),
)


class Program:
    """Runs one program against one client and checks it after every step."""

    def __init__(self, settles: Counter[int], wait_for_room: float = 0.002) -> None:
        self.settles = settles
        self.api = ScriptedAPI()
        self.api.checks.append(self.check)
        self.df = DataFast(
            "df_interleavings_key_0001",
            max_queue_size=MAX_QUEUE,
            concurrency=2,
            # A fixed limit: the programs count loop turns, and a 503 would otherwise halve
            # the limit (adaptation has tests of its own, in test_adaptive.py).
            _adaptive=False,
            on_full="block",
            timeout=wait_for_room,  # the most track() waits for room
            shutdown_timeout=0.002,
            retry=POLICY,
            on_success=self.on_success,
            on_failure=self.on_failure,
            _transport_factory=lambda: MockTransport(self.api),
        )
        self.state = "new"
        self.deliveries: dict[str, Delivery[Any]] = {}
        self.reports: Counter[str] = Counter()
        self.unbalanced: list[Stats] = []
        self.goals = 0
        #: What each call made of its goal: accepted, full, closed, or cancelled.
        self.outcomes: dict[str, str] = {}

    def check(self) -> None:
        stats = self.df.stats()
        if not balances(stats):
            self.unbalanced.append(stats)

    def on_success(self, goal: Goal, result: GoalResult) -> None:
        self.check()
        self.reports[goal.visitor_id] += 1

    def on_failure(self, goal: Goal, error: DataFastError) -> None:
        self.check()
        self.reports[goal.visitor_id] += 1

    def new_goal(self, script: list[str]) -> str:
        self.goals += 1
        visitor = f"visitor-{self.goals}"
        self.api.scripts[visitor] = script
        return visitor

    def accepted(self, visitor: str, delivery: Delivery[Any]) -> None:
        self.deliveries[visitor] = delivery
        self.outcomes[visitor] = "accepted"
        if self.state == "new":
            self.state = "running"  # started lazily by its first goal

    def full(self) -> bool:
        stats = self.df.stats()
        return stats.queued + stats.in_flight >= MAX_QUEUE

    async def run(self, program: list[tuple[Any, ...]]) -> None:
        for step in program:
            await getattr(self, step[0])(*step[1:])
            self.check()
            assert self.unbalanced == []
            assert max(self.reports.values(), default=0) <= 1
            assert max(self.settles.values(), default=0) <= 1
        await self.aclose(0.002)

    # -- the steps ------------------------------------------------------------------------

    async def track(self, script: list[str]) -> None:
        visitor = self.new_goal(script)
        with self.refusals(visitor):
            self.accepted(visitor, await self.df.track(visitor, "step"))

    async def track_nowait(self, script: list[str]) -> None:
        visitor = self.new_goal(script)
        with self.refusals(visitor):
            self.accepted(visitor, self.df.track_nowait(visitor, "step"))

    @contextlib.contextmanager
    def refusals(self, visitor: str) -> Iterator[None]:
        """A goal may be refused only by a closed client, or a full queue."""
        try:
            yield
        except ClientClosedError:
            assert self.state == "closed"
            self.outcomes[visitor] = "closed"
        except QueueFullError:
            assert self.full()
            self.outcomes[visitor] = "full"

    async def cancel_blocked_track(self, script: list[str]) -> None:
        visitor = self.new_goal(script)
        before = self.df.stats().enqueued
        task = asyncio.ensure_future(self.df.track(visitor, "step"))
        for _ in range(2):
            await asyncio.sleep(0)
        if task.done():  # it found room, or the client was closed
            with self.refusals(visitor):
                self.accepted(visitor, task.result())
            return
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert self.df.stats().enqueued == before  # its goal was never counted
        self.outcomes[visitor] = "cancelled"

    async def flush(self, timeout: float) -> None:
        accepted = list(self.deliveries.values())
        if await self.df.flush(timeout):
            assert all(delivery.done() for delivery in accepted)

    async def release(self) -> None:
        self.api.release()

    async def turns(self, count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def aclose(self, timeout: float) -> None:
        stats = await self.df.aclose(timeout)
        self.closed(stats)

    async def cancel_aclose(self, timeout: float) -> None:
        task = asyncio.ensure_future(self.df.aclose(timeout))
        await asyncio.sleep(0)
        task.cancel()
        try:
            stats = await task
        except asyncio.CancelledError:
            stats = self.df.stats()  # it finished all the same, then re-raised
        self.closed(stats)

    async def start(self) -> None:
        await self.df.start()
        self.state = "running"

    # -- after aclose() -------------------------------------------------------------------

    def closed(self, stats: Stats) -> None:
        self.state = "closed"
        assert stats == self.df.stats()
        assert stats.queued == stats.in_flight == 0
        assert balances(stats)
        for visitor, delivery in self.deliveries.items():
            assert delivery.done(), visitor
            assert self.reports[visitor] == 1, visitor
            assert self.settles[id(delivery)] == 1, visitor
            self.check_flag(visitor, delivery.error)

    def check_flag(self, visitor: str, error: DataFastError | None) -> None:
        """maybe_delivered says whether an attempt may have reached the API unanswered."""
        if not isinstance(error, (ShutdownError, TransportError)):
            assert error is None or isinstance(error, ServerError), (visitor, error)
            return
        served = self.api.served[visitor]
        maybe = "reset" in served or self.api.cut[visitor] > 0
        assert error.maybe_delivered is maybe, (visitor, served, self.api.cut[visitor], error)


def run_program(program: list[tuple[Any, ...]], wait_for_room: float = 0.002) -> Program:
    with counting_settles() as settles, warnings.catch_warnings():
        warnings.simplefilter("error")
        machine = Program(settles, wait_for_room)
        asyncio.run(machine.run(program))
    return machine


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(program=st.lists(steps, max_size=25))
def test_random_programs_keep_every_promise(program: list[tuple[Any, ...]]) -> None:
    machine = run_program(program)
    assert machine.unbalanced == []
    assert max(machine.reports.values(), default=0) <= 1


def test_a_program_through_every_kind_of_step_ends_as_it_should() -> None:
    """The machine itself, on a program whose every step's effect is known."""
    ok_, slow = ["ok"], ["slow"]
    machine = run_program(
        [
            ("track", slow),  # 1: in flight, held
            ("track", slow),  # 2: in flight, held until the deadline
            ("turns", 2),
            ("track_nowait", ok_),  # 3, 4, 5: queued; the queue is full
            ("track_nowait", ["reset", "503"]),
            ("track_nowait", ok_),
            ("track_nowait", ok_),  # 6: refused, track_nowait cannot wait
            ("cancel_blocked_track", ok_),  # 7: waits for room, cancelled
            ("release",),  # 1 is answered; the queue drains
            ("turns", 3),
            ("flush", 0.001),  # 2 is still held: False
            ("aclose", 0.002),  # 2 is cut
            ("track", ok_),  # 8: the client is closed
            ("start",),
            ("track", slow),  # 9: held, cut by the cancelled aclose()
            ("cancel_aclose", 0.002),
            ("start",),
            ("track_nowait", ok_),  # 10: delivered by the last aclose()
        ],
        # 7 must still wait when it is cancelled two loop turns later, however busy the
        # machine (2 ms may pass in two turns when other processes share the cores).
        wait_for_room=5.0,
    )
    outcomes = {
        int(visitor.split("-")[1]): outcome for visitor, outcome in machine.outcomes.items()
    }
    assert outcomes == {
        1: "accepted",
        2: "accepted",
        3: "accepted",
        4: "accepted",
        5: "accepted",
        6: "full",
        7: "cancelled",
        8: "closed",
        9: "accepted",
        10: "accepted",
    }
    cut = {v for v, d in machine.deliveries.items() if isinstance(d.error, ShutdownError)}
    assert cut == {"visitor-2", "visitor-9"}
    assert all(d.result is not None for v, d in machine.deliveries.items() if v not in cut)
    assert machine.api.served["visitor-4"] == ["reset", "503", "ok"]


# -- cancellation ------------------------------------------------------------------------------


def held_client(api: ScriptedAPI, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", POLICY)
    return DataFast(
        "df_interleavings_key_0001", _transport_factory=lambda: MockTransport(api), **kwargs
    )


async def test_a_caller_cancelled_while_track_waits_for_room_leaves_no_trace() -> None:
    """Its goal is not counted, not sent, and the next goal to leave the queue wakes the
    next caller waiting for room (the cancelled one does not swallow the wake-up)."""
    api = ScriptedAPI()
    async with held_client(api, max_queue_size=1, concurrency=1, on_full="block", timeout=5) as df:
        for visitor, script in (("first", ["slow"]), ("second", ["slow"]), ("third", ["ok"])):
            api.scripts[visitor] = script
        first = df.track_nowait("first", "step")
        await until(lambda: len(api.held) == 1)
        second = df.track_nowait("second", "step")  # queued: the queue is full
        before = df.stats()
        cancelled = asyncio.ensure_future(df.track("cancelled", "step"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not cancelled.done()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert df.stats() == before == Stats(enqueued=2, queued=1, in_flight=1)

        waiting = asyncio.ensure_future(df.track("third", "step"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        api.release()  # "first" is answered; "second" leaves the queue: room for "third"
        third = await asyncio.wait_for(waiting, 5)
        await until(lambda: "second" in api.served)
        api.release()  # "second"
        for delivery in (first, second, third):
            await delivery.wait(5)
    assert df.stats() == Stats(enqueued=3, delivered=3)
    assert list(api.served) == ["first", "second", "third"]


async def test_an_owner_cancelled_inside_async_with_still_closes_and_is_cancelled() -> None:
    """The cancellation reaches aclose(), which drains the queue (the goal held in flight
    included), even when cancelled again, before the owner's task ends cancelled."""
    api = ScriptedAPI()
    df = held_client(api, concurrency=1, shutdown_timeout=30)
    deliveries: list[Delivery[Any]] = []
    entered = asyncio.Event()

    async def owner() -> None:
        async with df:
            for i in range(4):
                api.scripts[f"v{i}"] = ["slow"] if i == 0 else ["ok"]
                deliveries.append(df.track_nowait(f"v{i}", "step"))
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(owner())
    await entered.wait()
    await until(lambda: len(api.held) == 1)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # aclose() is draining: "v0" is still held
    task.cancel()  # and again (a server's shutdown may cancel twice): it still drains
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    api.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(delivery.result is not None for delivery in deliveries)
    assert df.stats() == Stats(enqueued=4, delivered=4)
    assert await df.aclose() == df.stats()  # closed: the same Stats again


async def test_aclose_cancelled_while_it_drains_finishes_then_reraises() -> None:
    api = ScriptedAPI()
    failures: list[DataFastError] = []
    df = held_client(api, concurrency=1, on_failure=lambda goal, error: failures.append(error))
    await df.start()
    for i in range(3):
        api.scripts[f"v{i}"] = ["slow"] if i < 2 else ["ok"]
    deliveries = [df.track_nowait(f"v{i}", "step") for i in range(3)]
    await until(lambda: len(api.held) == 1)
    closing = asyncio.ensure_future(df.aclose(timeout=30))
    for _ in range(3):
        await asyncio.sleep(0)
    closing.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not closing.done()  # cancelled, still draining
    with pytest.raises(ClientClosedError):
        df.track_nowait("late", "step")  # intake closed at once all the same
    api.release()  # "v0"
    await until(lambda: "v1" in api.served)
    api.release()  # "v1"
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert [delivery.result is not None for delivery in deliveries] == [True, True, True]
    assert failures == []
    assert df.stats() == Stats(enqueued=3, delivered=3)
    assert await df.aclose() == df.stats()


def test_a_loop_that_ends_with_goals_in_flight_reports_every_one() -> None:
    """asyncio.run() returns with two requests out and three goals queued: a ResourceWarning
    says so, and each goal fails with a ShutdownError, maybe_delivered for the two cut in
    flight only."""
    api = ScriptedAPI()
    failures: dict[str, DataFastError] = {}
    df = held_client(
        api,
        concurrency=2,
        on_failure=lambda goal, error: failures.setdefault(goal.visitor_id, error),
    )
    deliveries: dict[str, Delivery[Any]] = {}

    async def main() -> None:
        for i in range(5):
            api.scripts[f"v{i}"] = ["slow"]
            deliveries[f"v{i}"] = df.track_nowait(f"v{i}", "step")
        await until(lambda: len(api.held) == 2)

    with pytest.warns(ResourceWarning, match="ended before aclose\\(\\) with 5 goals pending"):
        asyncio.run(main())
    errors = {visitor: delivery.error for visitor, delivery in deliveries.items()}
    assert all(isinstance(error, ShutdownError) for error in errors.values())
    assert failures == errors
    flagged = {v for v, e in errors.items() if isinstance(e, ShutdownError) and e.maybe_delivered}
    assert flagged == {"v0", "v1"} == set(api.cut)
    assert df.stats() == Stats(enqueued=5, failed=5)


# -- found by the programs above ---------------------------------------------------------------


async def test_a_client_closed_before_it_ever_started_refuses_goals_as_closed(
    make_client: Callable[..., DataFast],
) -> None:
    """aclose() on a client that never started, then goals: ClientClosedError (it was an
    AttributeError from a run that had no loop), until start()."""
    df = make_client()
    assert await df.aclose() == Stats()
    with pytest.raises(ClientClosedError):
        df.track_nowait("v", "too_late")
    with pytest.raises(ClientClosedError):
        await df.track("v", "too_late")
    with pytest.raises(ClientClosedError):
        await df.send("v", "too_late")
    assert await df.flush() is True
    await df.start()
    await df.track_nowait("v", "after_start").wait(5)
    assert await df.aclose() == Stats(enqueued=1, delivered=1)
