"""``Journal.close`` while the writer's step is journaling goals the client handed over.

Found by the spool benchmark: 100,000 goals tracked with the API down, then ``aclose(timeout=0)``
at once; about one run in three, one goal failed ("could not be written to it as the client
closed") with no fault of the spool. ``close`` ran the client's hook (which takes goals from its
intake) beside the writer thread's own step, then stopped taking appends: a goal the writer's
step had already taken was refused and lost.
"""

from __future__ import annotations

import threading
from pathlib import Path

from datafast_async._spool import Append, Journal

GOALS = "/api/v1/goals"
NS = "df-0badc0de"


def test_close_waits_for_the_writers_step_before_it_stops_taking_goals(tmp_path: Path) -> None:
    journal = Journal(tmp_path, NS, background=False)
    journal.open()
    intake = [b'{"datafast_visitor_id":"v-%d","name":"signup"}' % n for n in range(3)]
    results: dict[bytes, Append] = {}
    writer_inside = threading.Event()
    closing_hook = threading.Event()
    go = threading.Event()
    writer = threading.current_thread()  # replaced below by the writer's thread

    def hook() -> None:
        # The client's Spool._drain: take what was handed over, journal it.
        while intake:
            body = intake.pop(0)
            if threading.current_thread() is writer and not writer_inside.is_set():
                writer_inside.set()
                go.wait(10)  # the writer's step, caught between taking a goal and writing it
            elif threading.current_thread() is not writer:
                closing_hook.set()
            results[body] = journal.append(journal.new_id(), GOALS, body)
        if threading.current_thread() is not writer:
            closing_hook.set()

    journal.before_step = hook
    writer = threading.Thread(target=journal.flush)
    writer.start()
    assert writer_inside.wait(10)
    closer = threading.Thread(target=journal.close)
    closer.start()
    # Without the fix close runs the hook at once, beside the writer; with it, it waits for the
    # writer's step (bounded: either way the writer is let go).
    closing_hook.wait(0.5)
    go.set()
    writer.join(10)
    closer.join(10)
    assert not writer.is_alive()
    assert not closer.is_alive()

    assert sorted(results) == sorted(
        b'{"datafast_visitor_id":"v-%d","name":"signup"}' % n for n in range(3)
    )
    assert set(results.values()) == {Append.JOURNALED}
    again = Journal(tmp_path, NS, background=False)
    adoption = again.open()
    try:
        assert sorted(record.body for record in adoption.records) == sorted(results)
    finally:
        again.close()
