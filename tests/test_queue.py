"""The queue and its ledger, with no network at all."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from datafast_async import Goal, Stats
from datafast_async._delivery import Delivery
from datafast_async._queue import RequestQueue as GoalQueue


def make(n: int) -> list[Delivery[Any]]:
    return [Delivery(Goal("v", f"g{i}")) for i in range(n)]


def balanced(stats: Stats) -> bool:
    return stats.enqueued == stats.delivered + stats.failed + stats.queued + stats.in_flight


def test_offer_refuses_beyond_maxsize_without_counting() -> None:
    queue = GoalQueue(2)
    a, b, c = make(3)
    assert queue.offer(a)
    assert queue.offer(b)
    assert not queue.offer(c)
    assert queue.snapshot() == Stats(enqueued=2, queued=2)


def test_goals_leave_in_order_and_the_ledger_balances_at_each_step() -> None:
    queue = GoalQueue(10)
    items = make(3)
    for item in items:
        queue.offer(item)
        assert balanced(queue.snapshot())
    first = queue.take()
    assert first is items[0]
    assert queue.snapshot() == Stats(enqueued=3, queued=2, in_flight=1)
    assert queue.finish(first, delivered=True)
    second = queue.take()
    assert second is not None
    assert queue.finish(second, delivered=False)
    assert queue.snapshot() == Stats(enqueued=3, delivered=1, failed=1, queued=1)
    assert balanced(queue.snapshot())


def test_a_goal_is_finished_once() -> None:
    queue = GoalQueue(10)
    (item,) = make(1)
    queue.offer(item)
    assert queue.take() is item
    assert queue.finish(item, delivered=True)
    assert not queue.finish(item, delivered=False)
    assert queue.snapshot().delivered == 1
    assert queue.snapshot().failed == 0


def test_take_all_puts_every_queued_goal_in_flight_to_be_ended() -> None:
    queue = GoalQueue(10)
    items = make(4)
    for item in items:
        queue.offer(item)
    taken = queue.take()
    rest = queue.take_all()
    assert rest == items[1:]
    assert queue.active == [taken, *rest]
    assert queue.snapshot() == Stats(enqueued=4, in_flight=4)
    for item in queue.active:
        queue.finish(item, delivered=False)
    assert queue.snapshot() == Stats(enqueued=4, failed=4)


def test_goals_waiting_to_retry_count_against_the_bound() -> None:
    queue = GoalQueue(3)
    items = make(5)
    for item in items[:3]:
        assert queue.offer(item)
    queue.take()
    queue.take()
    queue.park()  # one taken goal now waits to retry: it still holds a place
    assert queue.offer(items[3])
    assert not queue.offer(items[4])  # 2 queued + 1 waiting to retry = the bound
    queue.unpark(items[0], retry=True)  # sent again: its place is free
    assert queue.offer(items[4])
    assert queue.snapshot().retries == 1


async def test_a_goal_that_stops_waiting_to_retry_makes_room_for_a_blocked_track() -> None:
    """With on_full="block" during an outage, room comes back when a goal waiting to retry
    is sent again or ends, not only when a queued goal is taken."""
    queue = GoalQueue(1)
    first, second = make(2)
    assert queue.offer(first)
    assert queue.take() is first
    queue.park()  # waiting to retry: the queue is full
    assert not queue.offer(second)
    room = queue.room_waiter(asyncio.get_running_loop())
    queue.unpark(first, retry=False)  # it ended while waiting (the shutdown deadline, say)
    assert room.done()
    assert queue.offer(second)
    assert queue.snapshot() == Stats(enqueued=2, queued=1, in_flight=1)  # not a retry


def test_push_front_goes_ahead_of_queued_goals() -> None:
    queue = GoalQueue(10)
    new, old1, old2 = make(3)
    queue.offer(new)
    queue.push_front([old1, old2])
    assert [queue.take(), queue.take(), queue.take()] == [old1, old2, new]


async def test_flush_waits_only_for_goals_accepted_before_it() -> None:
    loop = asyncio.get_running_loop()
    queue = GoalQueue(10)
    early, late = make(2)
    queue.offer(early)
    waiter = queue.flush_waiter(loop)
    assert waiter is not None
    queue.offer(late)
    assert queue.take() is early
    assert queue.take() is late
    queue.finish(late, delivered=True)
    assert not waiter.done()
    queue.finish(early, delivered=True)
    assert waiter.done()


async def test_flush_waits_for_goals_already_in_flight() -> None:
    loop = asyncio.get_running_loop()
    queue = GoalQueue(10)
    (item,) = make(1)
    queue.offer(item)
    queue.take()
    waiter = queue.flush_waiter(loop)
    assert waiter is not None
    assert not waiter.done()
    queue.finish(item, delivered=False)
    assert waiter.done()


async def test_flush_on_an_empty_queue_needs_no_wait() -> None:
    assert GoalQueue(1).flush_waiter(asyncio.get_running_loop()) is None


async def test_a_room_waiter_wakes_when_a_goal_leaves() -> None:
    queue = GoalQueue(1)
    (item,) = make(1)
    queue.offer(item)
    room = queue.room_waiter(asyncio.get_running_loop())
    assert not room.done()
    queue.take()
    assert room.done()


def test_offers_from_many_threads_never_exceed_the_bound() -> None:
    queue = GoalQueue(1000)
    start = threading.Barrier(8)
    accepted: list[int] = []

    def offer_many() -> None:
        start.wait()
        accepted.append(sum(queue.offer(d) for d in make(500)))

    threads = [threading.Thread(target=offer_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(accepted) == 1000
    assert queue.snapshot() == Stats(enqueued=1000, queued=1000)


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        GoalQueue(0)
