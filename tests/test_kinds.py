"""The kind seam: every kind of request through one pipeline, counted per kind."""

from __future__ import annotations

import json
from typing import Any

from datafast_async import DataFast, Delivery, Goal, GoalResult, Stats
from datafast_async._kinds import GOALS, KINDS, by_name, for_path, for_value
from datafast_async._models import KindStats

from ._fakes import Recorder, balances, error, ok


def test_each_kind_is_found_by_name_by_path_and_by_value() -> None:
    assert [kind.name for kind in KINDS] == ["goals", "payments", "identify"]
    assert by_name("goals") is GOALS
    assert for_path("/api/v1/goals") is GOALS
    assert for_path("/prefix/api/v1/goals?websiteId=abc") is GOALS  # a base path, a query
    assert for_path("/api/v1/nothing") is None
    assert for_value(Goal("v", "signup")) is GOALS
    assert for_value(object()) is None


def test_a_goal_round_trips_through_its_kind() -> None:
    goal = Goal("v", "Sign Up", "d", {"plan": "pro", "n": 3})
    fields = GOALS.fields_of(goal)
    body = GOALS.encode(fields)
    assert json.loads(body) == {
        "datafast_visitor_id": "v",
        "name": "sign_up",
        "description": "d",
        "metadata": {"plan": "pro", "n": "3"},
    }
    assert GOALS.rebuild(body) == fields
    assert GOALS.build(fields) == goal
    assert GOALS.rebuild(b'{"name": "identify", "datafast_visitor_id": "v"}') is None
    assert GOALS.rebuild(b"[1, 2]") is None
    assert GOALS.rebuild(b"not json") is None


def test_a_delivery_carries_its_event_and_kind() -> None:
    goal = Goal("v", "signup")
    delivery: Delivery[GoalResult] = Delivery(goal)
    assert delivery.event is goal
    assert delivery.goal is goal
    assert delivery.kind == "goals"


async def test_stats_count_per_kind_with_the_same_invariant(
    make_client: Any, recorder: Recorder
) -> None:
    recorder.answer = lambda request: error(400, "bad") if b"bad" in request.body else ok()
    events: list[object] = []
    async with make_client(on_success=lambda goal, result: events.append(goal)) as df:
        df.track_nowait("v", "good")
        df.track_nowait("v", "bad")
        assert await df.flush(timeout=5)
        stats: Stats = df.stats()
    goals = stats.by_kind["goals"]
    assert goals == KindStats(enqueued=2, delivered=1, failed=1)
    assert balances(stats)
    assert (stats.enqueued, stats.delivered, stats.failed) == (2, 1, 1)
    assert stats.as_dict()["by_kind"]["goals"]["delivered"] == 1
    assert stats.as_dict()["delivered"] == 1
    # A callback typed on Goal gets a Goal.
    assert events == [Goal("v", "good")]


async def test_stats_as_dict_is_plain_data_for_json_as_the_readme_says(
    make_client: Any, recorder: Recorder
) -> None:
    recorder.answer = lambda request: ok()
    async with make_client() as df:
        for _ in range(3):
            df.track_nowait("v", "signup")
        assert await df.flush(timeout=5)
        data = json.loads(json.dumps(df.stats().as_dict()))
    counters = ["enqueued", "delivered", "failed", "dropped", "retries", "queued", "in_flight"]
    assert list(data) == [*counters, "spooled", "concurrency_limit", "by_kind"]
    assert (data["enqueued"], data["delivered"]) == (3, 3)
    assert list(data["by_kind"]) == ["goals", "payments", "identify"]
    assert data["by_kind"]["goals"] == dict.fromkeys([*counters, "spooled"], 0) | {
        "enqueued": 3,
        "delivered": 3,
    }


async def test_a_refused_goal_counts_as_dropped_for_its_kind(make_client: Any) -> None:
    async with make_client(max_queue_size=1) as df:
        df.track_nowait("v", "a")
        df.track_nowait("v", "b")  # the queue may be full: dropped then
        await df.flush(timeout=5)
        stats = df.stats()
    assert stats.by_kind["goals"].dropped == stats.dropped


def test_a_disabled_client_counts_nothing() -> None:
    assert DataFast(enabled=False).stats().by_kind["goals"] == KindStats()


def test_counted_names_each_kind_in_the_singular_or_plural_and_sums_several() -> None:
    from datafast_async._kinds import counted

    assert counted({"goals": 1}) == "1 goal"
    assert counted({"goals": 12}) == "12 goals"
    assert counted({"payments": 1}) == "1 payment"
    assert counted({"goals": 12, "payments": 1}) == "13 requests (12 goals, 1 payment)"
    assert counted({"goals": 0, "identify": 2}) == "2 identifies"
    assert counted({}) == "0 requests"
