"""A property of the journal, over random histories: it never loses a goal it wrote, and never
brings back a goal whose acknowledgement it wrote.

Hypothesis drives one journal through appends, acknowledgements, writes (``flush``), crashes
(the process dies: its files are closed by the kernel, nothing else runs) and clean restarts,
against a model of what each goal's state allows after a crash:

- appended and written, not acknowledged: must come back, once, in append order, its body
  byte for byte;
- appended, not yet written (the ~0.1 s window): may be lost;
- acknowledged after it was written, the acknowledgement not yet written: may come back (the
  duplicate window);
- acknowledged and the acknowledgement written, or acknowledged before it was written: never
  comes back.

After every write, the journal's ``size`` is exactly the bytes of its files plus the room
reserved for the pending goals' acknowledgements, and it never passes ``max_bytes``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from datafast_async._spool import Append, Journal
from datafast_async._spool._records import ACK_RESERVE_BASE, quote_path, record_line

GOALS = "/api/v1/goals"
NS = "df-0badc0de"


def reserve(goal_id: str) -> int:
    return ACK_RESERVE_BASE + len(goal_id)


class JournalHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="datafast-spool-property-"))
        self.order: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self.counter = itertools.count()
        self.unwritten: set[str] = set()  # appended since the last write
        self.written: set[str] = set()  # on disk, not acknowledged
        self.ack_unwritten: set[str] = set()  # acknowledged since the last write
        self.journal: Journal | None = None
        self.options: dict[str, int | bool] = {}
        self.ceiling = 0

    @initialize(
        max_bytes=st.sampled_from([1200, 3000, 64 * 2**20]),
        segment_bytes=st.sampled_from([150, 500, 2**20]),
    )
    def start(self, max_bytes: int, segment_bytes: int) -> None:
        self.options = {"max_bytes": max_bytes, "segment_bytes": segment_bytes}
        self._open(expect=[])

    def _open(self, expect: list[str] | None = None) -> list[str]:
        journal = Journal(self.directory, NS, background=False, **self.options)
        adoption = journal.open()
        assert adoption.left == []
        assert adoption.damaged == 0
        assert adoption.unreadable == []
        ids = [record.id for record in adoption.records]
        assert len(ids) == len(set(ids)), "a goal came back twice"
        assert ids == sorted(ids, key=self.order.__getitem__), "not in append order"
        for record in adoption.records:
            assert record.body == self.bodies[record.id]
            assert record.path == GOALS
        if expect is not None:
            assert ids == expect
        self.journal = journal
        # Files taken over may put the journal over its cap; appends then wait for room.
        self.ceiling = max(int(self.options["max_bytes"]), journal.size)
        self.unwritten, self.written, self.ack_unwritten = set(), set(ids), set()
        return ids

    @property
    def j(self) -> Journal:
        assert self.journal is not None
        return self.journal

    @rule(n=st.integers(0, 10**6), pad=st.integers(0, 80))
    def append(self, n: int, pad: int) -> None:
        goal_id = self.j.new_id()
        body = b'{"n":%d,"pad":"%s","u":"\xc3\xa9\xe2\x80\xa8"}' % (n, b"x" * pad)
        cost = len(record_line(goal_id, quote_path(GOALS), time.time(), body)) + reserve(goal_id)
        size = self.j.size
        answer = self.j.append(goal_id, GOALS, body)
        if answer is Append.REFUSED:
            assert size + cost > int(self.options["max_bytes"])
            assert self.j.size == size
            return
        assert answer is Append.JOURNALED
        assert self.j.size == size + cost
        self.order[goal_id] = next(self.counter)
        self.bodies[goal_id] = body
        self.unwritten.add(goal_id)

    @precondition(lambda self: self.unwritten or self.written)
    @rule(data=st.data(), outcome=st.sampled_from(["delivered", "failed"]))
    def ack(self, data: st.DataObject, outcome: str) -> None:
        # In append order: ids carry a random prefix per journal (one per restart), so sorting
        # them would order goals differently from one run of an example to the next.
        pending = sorted(self.unwritten | self.written, key=self.order.__getitem__)
        goal_id = data.draw(st.sampled_from(pending))
        assert self.j.ack(goal_id, outcome)
        assert not self.j.ack(goal_id, outcome)
        if goal_id in self.unwritten:
            self.unwritten.remove(goal_id)  # never written now
        else:
            self.written.remove(goal_id)
            self.ack_unwritten.add(goal_id)

    @rule(sync=st.booleans())
    def flush(self, sync: bool) -> None:
        assert self.j.flush(sync=sync)
        self.written |= self.unwritten
        self.unwritten.clear()
        self.ack_unwritten.clear()
        on_disk = sum(path.stat().st_size for path in self.directory.iterdir())
        assert self.j.size == on_disk + sum(reserve(goal_id) for goal_id in self.written)
        assert self.j.pending == len(self.written)

    @rule()
    def crash_and_restart(self) -> None:
        for segment in self.j._segments:
            os.close(segment.held.fd)
        must = set(self.written)
        may = self.written | self.unwritten | self.ack_unwritten
        ids = set(self._open())
        assert must <= ids, f"lost {must - ids}"
        assert ids <= may, f"came back {ids - may}"

    @rule()
    def close_and_restart(self) -> None:
        expected = sorted(self.written | self.unwritten, key=self.order.__getitem__)
        assert self.j.close()
        self._open(expect=expected)

    @invariant()
    def never_over_the_cap(self) -> None:
        if self.journal is not None:
            assert self.journal.size <= self.ceiling

    def teardown(self) -> None:
        if self.journal is not None:
            self.journal.close()
        shutil.rmtree(self.directory, ignore_errors=True)


JournalHistory.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_journal_never_loses_a_written_goal_nor_revives_an_acknowledged_one = (
    JournalHistory.TestCase
)
