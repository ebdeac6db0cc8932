"""``datafast-async import``: a JSON Lines backfill through the background sender.

The file is streamed (never loaded whole): a thread reads chunks of lines, each line is parsed
(``_lines``: goals, payments or identifies, ``--kind``) and handed to ``DataFast.track``,
``track_payment`` or ``identify`` with ``on_full="block"``, so at most the client's queue (plus
the requests in flight and those waiting to retry) is held in memory. Each pending request
keeps only its line number and raw line, so an undelivered one is written to ``--failed-out``
as the original object plus ``"_error"``. Every line read ends in exactly one of: delivered,
invalid, rejected (by status) or failed, and the summary checks that the numbers add up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import sys
import time
from typing import Any, BinaryIO, TextIO

import anyio

from .._client import DataFast
from .._errors import (
    APIError,
    DataFastError,
    QueueFullError,
    ShutdownError,
    TransportError,
    ValidationError,
)
from .._models import Stats
from .._spool import Journal, namespace
from ._common import (
    STOP_SIGNALS,
    Interruptible,
    client_settings,
    positive_float,
    positive_int,
    refusal,
    refusal_exit,
    refusal_hint,
)
from ._lines import (
    GOALS,
    KINDS,
    LineError,
    LineKind,
    describe,
    event_object,
    json_default,
    read_object,
)
from ._output import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    CLIError,
    Console,
    format_count,
    format_duration,
    format_rate,
    table,
)
from ._progress import Progress, bar
from ._rate import TokenBucket
from ._resume import CHECKPOINT_SECONDS, Checkpoint, ProgressFile
from ._source import LineSource

__all__ = ["add_parser"]

STOP_GRACE = 3.0  # seconds to deliver what is queued after Ctrl-C
MAX_LINE_REPORTS = 20  # per-line error messages on stderr before they are only counted

DESCRIPTION = """\
Backfill goals, payments or identifies (--kind) from a JSON Lines file (or stdin with -), one
request per line, through the background sender: bounded memory however large the file,
retries with backoff, Retry-After honoured, a progress bar on a terminal and a summary at the
end.

Each line is an object with the API's body fields of its kind:
  goals (the default):
    {"datafast_visitor_id": "...", "name": "signup", "description": "...", "metadata": {...}}
    (visitorId is accepted for datafast_visitor_id)
  --kind payments:
    {"amount": 49.99, "currency": "USD", "transaction_id": "ch_123",
     "datafast_visitor_id": "...", "email": "...", "name": "...", "customer_id": "...",
     "renewal": false, "refunded": false, "is_free_trial": false,
     "timestamp": "2024-03-01T12:00:00Z"}
    (amount, currency and transaction_id required; visitor_id is accepted for
    datafast_visitor_id, customer_email and customer_name for email and name; the amount
    is sent exactly as written; timestamp is ISO 8601 with a zone)
  --kind identify:
    {"datafast_visitor_id": "...", "user_id": "user_42", "email": "...", "plan": "pro"}
    (visitor_id or visitorId are accepted for datafast_visitor_id; every other field is a
    trait stored on the user's profile, as in the API's body; or put them in one object,
    "traits": {"plan": "pro"})
Fields starting with "_" are ignored; for goals and payments any other field makes the line
invalid. Blank lines are skipped.

Goals are recorded at the time they are sent: the API has no timestamp field, so a backfill
shows today's date in DataFast, not the date the goal happened. A payment keeps its line's
timestamp: a backfill of payments keeps their real dates. A payment's transaction_id is
DataFast's idempotency key: importing a payment again records nothing new (it is answered as
a duplicate, and counted delivered).

A line that is not JSON, not an object or not a valid request of its kind is reported with its
line number and does not stop the import. With --failed-out, every line that was not delivered
(invalid, rejected by the API, failed after retries, or still queued at Ctrl-C) is written
there as the original object plus an "_error" field with the reason; import that file again
(with the same --kind) to retry exactly what is missing.

Ctrl-C stops reading, delivers what is queued for a few seconds, writes the rest to
--failed-out and prints the number of the last line read, with the command that resumes
after it. A key the API refuses (401, 403, or 407 from a proxy) stops the import the same way,
at once: every line read is delivered or in --failed-out, and the lines after it are unread.

With --spool DIR the import is resumable, with no --failed-out bookkeeping: every request read
is journaled in DIR (the durable spool, as with DATAFAST_SPOOL_PATH) as it is accepted, and
about once a second, once those requests are on disk (written and fsynced), the number of the
line reached is written to a small progress file in DIR (atomically: written, fsynced,
renamed; one per FILE and --kind). After Ctrl-C, SIGTERM, a refused key, an API that stays
down, or a crash, run the same command again (same FILE, same --kind, same key): it first
sends the requests the spool holds, then reads on after the line reached; no line is lost and
none is read twice. (A goal or an identify is sent twice only if its request was cut when the
client stopped, its answer lost, after Ctrl-C's few seconds of grace: at most --concurrency of
them; and after a kill -9 or a machine crash, the lines read in the last second or so before
it. A payment is never recorded twice: a repeat is a duplicate.) While the API is down or
refuses every request the requests wait in DIR and reading stops. The progress file checks
that the lines already imported are unchanged; lines appended to FILE later are imported by
the next run. To import FILE again from its start, delete the progress file it names.

With DATAFAST_ENABLED=0 it is a dry run: every line is validated, nothing is sent.

Exit codes: 0 every request delivered (or, in a dry run, every line valid); 1 some lines were
not delivered (also: the API refuses payments or identifies with this key, 403: a dft_ token
without payments:write or identify:write); 2 bad usage or settings, or the key was refused
(401, a 403 to goals, a proxy's 407); 130 interrupted.
"""

EPILOG = """\
example:
  datafast-async import goals.jsonl --failed-out failed.jsonl
  datafast-async import failed.jsonl --failed-out failed-again.jsonl   # retry what is missing
  datafast-async import goals.jsonl --spool ./spool    # Ctrl-C, then the same to resume
  datafast-async import payments.jsonl --kind payments --spool ./spool
  datafast-async import users.jsonl --kind identify --failed-out failed-users.jsonl
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "import",
        parents=[common],
        help="backfill goals, payments or identifies from a JSON Lines file",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="a JSON Lines file, or - for stdin")
    parser.add_argument(
        "--kind",
        choices=sorted(KINDS),
        default="goals",
        help="what each line is: goals (the default), payments or identify (see above)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=64,
        help="the adaptive in-flight limit's ceiling (default: 64)",
    )
    parser.add_argument(
        "--failed-out",
        metavar="FILE",
        help='write every line not delivered there, with an "_error" field (overwritten)',
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: plain progress lines every few seconds instead",
    )
    parser.add_argument(
        "--rate",
        metavar="N",
        type=positive_float,
        help="send at most N new requests per second (DataFast does not publish its limits)",
    )
    parser.add_argument(
        "--spool",
        metavar="DIR",
        help="resumable: journal the requests read in DIR and remember the line reached; run the "
        "same command again after a crash or Ctrl-C to resume (see above)",
    )
    parser.set_defaults(run=run)


# -- the job ------------------------------------------------------------------------------------


class ImportJob(Interruptible):
    """One import: reads, tracks, counts, reports and writes the failed-out file."""

    stop_grace = STOP_GRACE

    def __init__(
        self,
        *,
        console: Console,
        source: LineSource,
        source_name: str,
        failed_out: TextIO | None,
        failed_out_name: str | None,
        rate: float | None,
        live_progress: bool,
        resume: ProgressFile | None = None,
        start: Checkpoint | None = None,
        hasher: Any = None,
        kind: LineKind = GOALS,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.console = console
        self.source = source
        self.source_name = source_name
        self.failed_out = failed_out
        self.failed_out_name = failed_out_name
        self.bucket = TokenBucket(rate) if rate is not None else None
        self.progress = Progress(console, self._render, live=live_progress)
        self.size = source.size
        # id(event) -> (line number, raw line) for every request handed to the client and
        # not yet settled: the only per-request state, bounded by the client's queue.
        self.pending: dict[int, tuple[int, bytes]] = {}
        # The line whose track() call is under way: a client that settles a goal inside
        # track() (a circuit breaker failing new goals at once) reports it before it could be
        # registered in pending; the callback then takes this entry.
        self.tracking: tuple[int, bytes] | None = None
        self.read = 0  # lines with something on them, handled (accepted or invalid)
        self.last_line = 0  # the last line handled: every line up to it is accounted for
        self.bytes_done = 0
        self.delivered = 0
        self.duplicates = 0  # payments answered as already recorded (delivered: a success)
        self.validated = 0  # valid goals not sent: a dry run (the client is disabled)
        self.invalid = 0
        self.maybe_delivered = 0  # goals not delivered that DataFast may have recorded
        self.rejected: collections.Counter[int] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.line_reports = 0
        self.reading_done = False
        self.key_refused: DataFastError | None = None  # the error that stopped the import
        self.refused_by = ""  # what refused it: "the API refused the key", ...
        self.read_error: OSError | None = None
        self.started = time.monotonic()
        self.elapsed = 0.0
        # --spool: the progress file, where the earlier run got to, and the SHA-256 of the
        # bytes up to the last line handled (the file's first ``offset`` bytes).
        self.resume = resume
        self.start_at = start or Checkpoint()
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.offset = self.start_at.offset
        self.last_line = self.start_at.line
        self.bytes_done = self.start_at.offset
        self.accepted = 0  # goals handed to the client by this run (--spool)
        self.adopted = 0  # goals an earlier run left in the spool, sent first (--spool)
        self.api_down = False  # reading stopped: every goal pending waits on disk (--spool)
        self.saved: Checkpoint | None = None  # the last progress written (--spool)
        self.checkpoint_skipped = False  # the spool had a fault: progress not advanced

    # -- what the client reports -------------------------------------------------------------

    def _entry(self, event: object) -> tuple[int, bytes] | None:
        entry = self.pending.pop(id(event), None)
        if entry is None and self.tracking is not None:
            entry, self.tracking = self.tracking, None  # settled inside track()
        return entry

    def on_success(self, event: object, result: object) -> None:
        self._entry(event)
        self.delivered += 1
        if getattr(result, "duplicate", False):
            self.duplicates += 1

    def on_failure(self, event: object, error: DataFastError) -> None:
        entry = self._entry(event)
        refused_by = refusal(error, self.kind.plural)
        if refused_by is not None and self.key_refused is None:
            self._stop_refused(error, refused_by)
        report = refused_by is None and not isinstance(error, ShutdownError)
        if isinstance(error, APIError) and not error.retriable and error.status < 500:
            self.rejected[error.status] += 1
            reason = f"rejected: {error}"
        elif self.key_refused is not None and isinstance(error, ShutdownError):
            # Cut short by the refusal: queued, or in flight when the import stopped.
            self.failed[f"stopped after {_status_of(self.key_refused)}"] += 1
            reason = (
                f"not delivered: the import stopped when {self.refused_by} ({self.key_refused})"
            )
        else:
            self.failed[_failure_kind(error)] += 1
            reason = _failure_reason(error)
        if error.maybe_delivered:
            # Its request was cut or an answer was lost: DataFast may have recorded it.
            self.maybe_delivered += 1
            reason += (
                " (it may have been recorded: an attempt's answer was lost; importing it "
                "again may record it twice)"
            )
        if entry is None:
            if self.resume is not None:
                # --spool: goals are not mapped to lines (one read back from the spool, or
                # left there by an earlier run, is not the object track() returned).
                if report:
                    self._report_line(None, f"{describe(event)}: {reason}")
                self._write_failed(
                    event_object(event), reason, maybe_delivered=error.maybe_delivered
                )
                return
            # cannot happen: every request is registered before it can settle
            self.console.note(f"{PROG}: a {self.kind.noun} without its line failed: {reason}")
            return
        lineno, raw = entry
        if report:
            self._report_line(lineno, reason)
        obj = json.loads(raw)
        self._write_failed(obj, reason, maybe_delivered=error.maybe_delivered)

    def _stop_refused(self, error: DataFastError, refused_by: str) -> None:
        """The key (or the proxy) was refused: every later request would fail the same way.
        Stop reading now and close the client at once: goals still queued or in flight fail
        with a ``ShutdownError`` (or the client's own refusal) and go to --failed-out."""
        self.key_refused = error
        self.refused_by = refused_by
        self.console.note(f"{PROG}: {refused_by} ({error}): stopping now")
        self.halt(0.0)

    # -- reading -----------------------------------------------------------------------------

    def _invalid(self, lineno: int, reason: str, obj: dict[str, Any]) -> None:
        self.invalid += 1
        self._report_line(lineno, reason)
        self._write_failed(obj, reason)

    def _report_line(self, lineno: int | None, reason: str) -> None:
        self.line_reports += 1
        if self.line_reports <= MAX_LINE_REPORTS:
            where = self.source_name if lineno is None else f"{self.source_name}:{lineno}"
            self.console.note(f"{where}: {reason}")
            self.progress.refresh()
        elif self.line_reports == MAX_LINE_REPORTS + 1:
            where = f" (all of them are in {self.failed_out_name})" if self.failed_out else ""
            self.console.note(
                f"{PROG}: more lines were not delivered; they are counted in the summary{where}"
            )

    def _write_failed(
        self, obj: dict[str, Any], reason: str, *, maybe_delivered: bool = False
    ) -> None:
        if self.failed_out is None:
            return
        # A line from an earlier --failed-out gets the new reason (and flag).
        obj.pop("_error", None)
        obj.pop("_maybe_delivered", None)
        obj["_error"] = reason
        if maybe_delivered:
            obj["_maybe_delivered"] = True
        self.failed_out.write(json.dumps(obj, ensure_ascii=False, default=json_default) + "\n")

    def _advance(self, lineno: int, raw: bytes) -> None:
        """Line ``lineno`` (its bytes as read) is handled: accepted, invalid or blank."""
        self.last_line = lineno
        self.bytes_done += len(raw)
        self.offset += len(raw)
        self.hasher.update(raw)

    async def _feed(self, client: DataFast) -> None:
        lineno = self.start_at.line
        while True:
            try:
                chunk = await self.source.next_chunk()
            except OSError as exc:
                self.read_error = exc
                return
            if not chunk:
                break
            for raw in chunk:
                lineno += 1
                if self.key_refused is not None:
                    return
                if self.resume is not None and _all_parked(client):
                    # The API is down (or refuses every request): what was read waits in the
                    # spool; reading on would only fill it.
                    self.api_down = True
                    return
                await self._feed_line(client, lineno, raw)
                self._advance(lineno, raw)
        self.reading_done = True

    async def _feed_line(self, client: DataFast, lineno: int, raw: bytes) -> None:
        original = raw
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark
        if not raw.strip():
            return
        kind = self.kind
        try:
            obj = read_object(raw, exact_numbers=kind.exact_numbers)
            track = kind.parse(obj)
        except LineError as exc:
            self._invalid(
                lineno, exc.reason, exc.obj if exc.obj is not None else {"_line": exc.text}
            )
            self.read += 1
            return
        if self.bucket is not None:
            await self.bucket.take()
        while True:
            self.tracking = (lineno, raw)
            try:
                delivery = await track(client)
            except ValidationError as exc:
                self._invalid(lineno, f"invalid {kind.noun}: {exc}", obj)
                break
            except QueueFullError:
                continue  # the queue stayed full for the client's timeout: keep waiting
            except asyncio.CancelledError:
                if self.tracking is None:  # settled (and counted) inside track(): it was read
                    self.read += 1
                    self.accepted += 1
                    self._advance(lineno, original)
                raise
            finally:
                settled_inside, self.tracking = self.tracking is None, None
            if settled_inside:
                self.accepted += 1  # a callback already counted it (and wrote it out)
            elif delivery.done() and delivery.error is None:
                # A disabled client (DATAFAST_ENABLED=0) settles at once, with no callback.
                self.validated += 1
            elif self.resume is not None:
                # --spool: the request may leave memory for the spool and come back as another
                # object; it is counted, not mapped to its line.
                self.accepted += 1
            else:
                self.accepted += 1
                self.pending[id(delivery.event)] = (lineno, raw)
            break
        self.read += 1

    async def _work_until_done(self, client: DataFast) -> None:
        if self.resume is None:
            await self._feed(client)
            await client.flush()
            return
        checkpoints = asyncio.ensure_future(self._checkpoints(client))
        try:
            await self._feed(client)
            if not await client.flush():
                # Everything pending waits on disk for an API that is down (or refuses every
                # request of this kind: a 403): close at once, they are kept for the next run.
                self._halt_grace = 0.0
                self.api_down = True
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints

    # -- --spool: the progress file ----------------------------------------------------------

    def _snapshot(self) -> Checkpoint:
        return Checkpoint(self.last_line, self.offset, self.hasher.hexdigest(), self.reading_done)

    async def _checkpoints(self, client: DataFast) -> None:
        journal = _journal(client)
        if journal is None:
            return
        faults = sum(journal.faults.values())
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            progress = self._snapshot()
            if self.saved is not None and progress.line == self.saved.line:
                continue
            # Every goal of the lines up to progress.line was accepted before this point: the
            # flush writes and fsyncs each of them that has not settled yet.
            written = await anyio.to_thread.run_sync(journal.flush)
            if not written or journal.refused or sum(journal.faults.values()) != faults:
                # Some goal may be in memory only (a write failed, the spool is full): the
                # line reached is not advanced (after a crash, lines may be sent twice).
                self.checkpoint_skipped = True
                continue
            await self._save(progress)

    async def _save(self, progress: Checkpoint) -> None:
        assert self.resume is not None
        try:
            await anyio.to_thread.run_sync(self.resume.save, progress)
        except OSError as exc:
            self.checkpoint_skipped = True
            self.console.note(
                f"{PROG}: warning: cannot write {self.resume.path}: {exc.strerror or exc}"
            )
        else:
            self.saved = progress

    async def final_checkpoint(self, journal: Journal, faults_before: int) -> None:
        """After the client closed: each goal accepted is delivered, failed (reported), or
        kept in the spool, unless the spool had a fault."""
        if journal.refused or sum(journal.faults.values()) != faults_before:
            self.checkpoint_skipped = True
            return
        await self._save(self._snapshot())

    # -- running -----------------------------------------------------------------------------

    def on_stop(self, repeated: bool) -> None:
        if repeated:
            self.console.note(f"{PROG}: already stopping (at most {STOP_GRACE:g} s more)")
        else:
            self.console.note(
                f"{PROG}: interrupted: stopped reading; delivering what is queued for up to "
                f"{STOP_GRACE:g} s"
            )

    async def run(self, client: DataFast) -> Stats:
        self.started = time.monotonic()
        self.source.start()
        await client.start()
        faults = 0
        journal = None
        if self.resume is not None:
            journal = _journal(client)
            if journal is None or not journal.journaling:
                await client.aclose(0.0)
                raise CLIError(
                    f"--spool {self.resume.directory}: the spool cannot be used (see the error "
                    "above); nothing was read"
                )
            faults = sum(journal.faults.values())
            self.adopted = client.stats().enqueued  # taken over from an earlier run
        self.progress.start()
        try:
            stats = await self.work_then_close(client, self._work_until_done(client))
            if journal is not None:
                await self.final_checkpoint(journal, faults)
        finally:
            await self.progress.stop()
            self.elapsed = time.monotonic() - self.started
        return stats

    # -- reporting ---------------------------------------------------------------------------

    @property
    def not_delivered(self) -> int:
        return self.invalid + sum(self.rejected.values()) + sum(self.failed.values())

    left = 0  # --spool: goals kept in the spool when the client closed (Stats.spooled)

    @property
    def outstanding(self) -> int:
        """Requests handed to the client (or taken over from the spool) not settled yet."""
        if self.resume is None:
            return len(self.pending)
        # --spool: requests are counted, not mapped to lines (``pending`` stays empty).
        settled = self.delivered + sum(self.rejected.values()) + sum(self.failed.values())
        return max(0, self.adopted + self.accepted - settled)

    @property
    def dry_run(self) -> bool:
        """The client is disabled (DATAFAST_ENABLED=0): lines are validated, nothing is sent."""
        return self.validated > 0

    def _render(self, live: bool) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.dry_run:
            counts = (
                f"{format_count(self.validated)} validated, {format_count(self.invalid)} "
                f"invalid (dry run: nothing is sent)"
            )
        else:
            # The summary's words: a line that is not a valid request is invalid, a request
            # the API refused is rejected; neither is counted failed.
            counts = f"{format_count(self.delivered)} delivered, "
            if self.invalid:
                counts += f"{format_count(self.invalid)} invalid, "
            if self.rejected:
                counts += f"{format_count(sum(self.rejected.values()))} rejected, "
            counts += (
                f"{format_count(sum(self.failed.values()))} failed, "
                f"{format_rate(self.delivered, elapsed)}/s"
            )
        plain = "" if live else f"{PROG}: progress: "
        line = f"line {format_count(self.last_line)}"
        if self.reading_done and self.dry_run:
            return f"{plain}read all {format_count(self.last_line)} lines: {counts}"
        if self.reading_done:
            return (
                f"{plain}read all {format_count(self.last_line)} lines; delivering the last "
                f"{format_count(self.outstanding)}: {counts}"
            )
        fraction = self.bytes_done / self.size if self.size else None
        if not live:
            percent = f" ({fraction:.0%})" if fraction is not None else ""
            return f"{plain}{line}{percent}, {counts}"
        if fraction is None:
            return f"{line}, {counts}"
        eta = ""
        if fraction > 0.001:
            left = elapsed * (1 - fraction) / fraction
            eta = f", {left:.0f} s left" if left < 60 else f", {format_duration(left)} left"
        return f"{bar(fraction, 12)} {fraction:4.0%} {counts}{eta}, {line}"

    def _duplicates_row(self) -> list[tuple[str, str, str]]:
        if self.kind.name != "payments":
            return []
        note = "of them already recorded: nothing new (a transaction is recorded once)"
        return [("duplicates", format_count(self.duplicates), note)]

    def summary(self) -> list[str]:
        rejected = ", ".join(f"{status}: {n:,}" for status, n in sorted(self.rejected.items()))
        failed = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(self.failed.items()))
        state = "interrupted" if self.stopped_by is not None else "done"
        if self.key_refused is not None:
            state = f"stopped: {self.refused_by}"
        if self.dry_run:
            return [
                f"import {self._title}: dry run{'' if state == 'done' else ', ' + state} "
                "(DATAFAST_ENABLED is off): lines validated, nothing sent",
                *table(
                    [
                        ("read", format_count(self.read), "non-blank lines"),
                        (
                            "validated",
                            format_count(self.validated),
                            f"valid {self.kind.plural}, not sent",
                        ),
                        ("invalid", format_count(self.invalid), ""),
                        ("time", format_duration(self.elapsed), ""),
                    ]
                ),
            ]
        rows = []
        if self.resume is not None:
            if self.start_at.line:
                rows.append(
                    ("resumed", f"line {self.start_at.line + 1:,}", "lines before it: earlier runs")
                )
            rows.append(
                ("from spool", format_count(self.adopted), "left by an earlier run, sent first")
            )
        if self.api_down:
            state = "stopped: the API is down or refuses every request"
        rows += [
            ("read", format_count(self.read), "non-blank lines"),
            ("delivered", format_count(self.delivered), ""),
            *self._duplicates_row(),
            ("invalid", format_count(self.invalid), ""),
            ("rejected", format_count(sum(self.rejected.values())), rejected),
            ("failed", format_count(sum(self.failed.values())), failed),
            ("time", format_duration(self.elapsed), ""),
            (f"{self.kind.plural}/s", format_rate(self.delivered, self.elapsed), ""),
        ]
        if self.resume is not None:
            rows.insert(-2, ("in spool", format_count(self.left), "not delivered yet: kept"))
        return [f"import {self._title}: {state}", *table(rows)]

    @property
    def _title(self) -> str:
        kind = self.kind
        return self.source_name if kind is GOALS else f"{self.source_name} ({kind.plural})"


def _journal(client: DataFast) -> Journal | None:
    """The journal of the client's current run (``spool_path``), if it has one."""
    spool = client._run.spool
    return spool.journal if spool is not None and spool.opened and not spool.off else None


def _all_parked(client: DataFast) -> bool:
    """Whether every goal pending waits on disk for an API that is down (``flush()`` would
    answer ``False`` at once)."""
    run = client._run
    return run.bound and run.sender.all_parked()


def _status_of(error: DataFastError) -> str:
    status = getattr(error, "status", None)
    return str(status) if status is not None else type(error).__name__


def _failure_kind(error: DataFastError) -> str:
    if isinstance(error, ShutdownError):
        return "interrupted"
    if isinstance(error, TransportError):
        return "transport"
    if isinstance(error, APIError):
        return str(error.status)
    return type(error).__name__


def _failure_reason(error: DataFastError) -> str:
    if isinstance(error, ShutdownError):
        cause = error.__cause__
        last = f" (last attempt: {cause})" if cause is not None else ""
        return f"interrupted: not delivered before the import stopped{last}"
    return f"failed: {error}"


# -- the command --------------------------------------------------------------------------------


def _open_source(path: str) -> tuple[BinaryIO, str]:
    if path == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return open(path, "rb"), path
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _same_file(path: str, source: BinaryIO) -> bool:
    try:
        out = os.stat(path)
        src = os.fstat(source.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (src.st_dev, src.st_ino)


def _open_failed_out(path: str, source: BinaryIO) -> TextIO:
    if _same_file(path, source):
        raise CLIError(f"--failed-out {path} is the input file; write to another file")
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace, console: Console) -> int:
    job_ref: list[ImportJob] = []

    def on_success(event: object, result: object) -> None:
        job_ref[0].on_success(event, result)

    def on_failure(event: object, error: DataFastError) -> None:
        job_ref[0].on_failure(event, error)

    kind = KINDS[args.kind]

    if args.spool is not None and args.file == "-":
        raise CLIError("--spool needs a FILE to resume in, not stdin: save the input to a file")
    client = DataFast(  # ConfigurationError: exit 2 in main
        **client_settings(args),
        concurrency=args.concurrency,
        max_queue_size=max(1_000, min(10_000, 100 * args.concurrency)),
        on_full="block",
        on_success=on_success,
        on_failure=on_failure,
        spool_path=args.spool,
    )
    if args.spool is None:
        # Without --spool the import keeps goals in memory only, whatever
        # DATAFAST_SPOOL_PATH says: its own bookkeeping (--failed-out, the line to resume
        # after) is what makes it resumable, and it maps goals to lines by object.
        client._without_spool()
    stream, name = _open_source(args.file)
    failed_out = None
    try:
        resume, start, hasher = None, None, None
        if args.spool is not None and client._options.spool_path is not None:
            resume, start, hasher = _resume_point(client, args.spool, args.file, name, stream, kind)
        if args.failed_out is not None:
            failed_out = _open_failed_out(args.failed_out, stream)
        job = ImportJob(
            console=console,
            source=LineSource(stream),
            source_name=name,
            failed_out=failed_out,
            failed_out_name=args.failed_out,
            rate=args.rate,
            live_progress=console.err_is_tty and not args.no_progress,
            resume=resume,
            start=start,
            hasher=hasher,
            kind=kind,
        )
        job_ref.append(job)
        stats = asyncio.run(job.run(client))
    except BaseException:
        if not job_ref:
            stream.close()
        raise
    finally:
        if failed_out is not None:
            failed_out.close()
    job.left = stats.spooled
    return _report(job, stats, console)


def _resume_point(
    client: DataFast, directory: str, path: str, name: str, stream: BinaryIO, kind: LineKind
) -> tuple[ProgressFile, Checkpoint, Any]:
    """The progress file of this import and where it resumes; the stream is left at that
    point, after checking that the bytes before it are the ones imported."""
    settings = client._options.settings
    assert settings.api_key is not None
    space = namespace(settings.api_key, settings.website_id)
    resume = ProgressFile(directory, path, space, kind=None if kind is GOALS else kind.name)
    try:
        start = resume.load()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CLIError(f"cannot read {resume.path}: {reason}") from None
    hasher = hashlib.sha256()
    if start is None:
        return resume, Checkpoint(), hasher
    left = start.offset
    while left > 0:
        try:
            data = stream.read(min(left, 1 << 20))
        except OSError as exc:
            raise CLIError(f"cannot read {name}: {exc.strerror or exc}") from None
        if not data:
            break
        hasher.update(data)
        left -= len(data)
    if left or hasher.hexdigest() != start.sha256:
        raise CLIError(
            f"{name} is not the file an earlier import --spool read up to line {start.line} "
            f"(its first {start.offset:,} bytes differ): delete {resume.path} to import "
            f"{name} from its start"
        )
    return resume, start, hasher


def _report(job: ImportJob, stats: Stats, console: Console) -> int:
    for line in job.summary():
        console.result(line)
    if job.resume is not None:
        return _report_spooled(job, stats, console)
    accounted = job.delivered + job.validated + job.not_delivered
    if job.pending or accounted != job.read or stats.delivered != job.delivered:
        console.error(
            f"the numbers do not add up: {job.read:,} lines read, {accounted:,} accounted for, "
            f"{len(job.pending):,} unsettled; the client counted {stats.delivered:,} delivered "
            f"and {stats.failed:,} failed (please report this)"
        )
        return EXIT_FAILED
    if job.dry_run:
        if job.invalid and job.failed_out_name is not None:
            console.note(
                f"{PROG}: {job.invalid:,} invalid line{'' if job.invalid == 1 else 's'} "
                f"written to {job.failed_out_name}, with the reason in _error"
            )
    elif job.not_delivered:
        if job.failed_out_name is not None:
            console.note(
                f"{PROG}: {job.not_delivered:,} lines not delivered were written to "
                f"{job.failed_out_name}; import that file again to retry them"
            )
            if job.maybe_delivered:
                console.note(
                    f"{PROG}: {job.maybe_delivered:,} of them may have been recorded already "
                    '(a request cut or an answer lost; marked "_maybe_delivered": true): '
                    "importing them again may record them twice. To skip them: "
                    f"jq -c 'select(._maybe_delivered | not)' {job.failed_out_name}"
                )
        else:
            console.note(
                f"{PROG}: {job.not_delivered:,} lines were not delivered; use --failed-out FILE "
                "to keep them for a retry"
            )
    if job.read_error is not None:
        error = job.read_error
        console.error(
            f"reading {job.source_name} failed after line {job.last_line}: "
            f"{error.strerror or error}"
        )
        return EXIT_FAILED
    if job.stopped_by is not None or job.key_refused is not None:
        why = "interrupted" if job.stopped_by is not None else "stopped"
        if job.reading_done:
            unread = "every line was read"
        else:
            unread = "the lines after it were not read"
            if job.source_name != "<stdin>":
                kind = "" if job.kind is GOALS else f" --kind {job.kind.name}"
                unread += (
                    f" (to resume: tail -n +{job.last_line + 1} {job.source_name} | "
                    f"{PROG} import -{kind})"
                )
        console.note(f"{PROG}: {why}: the last line read was line {job.last_line}; {unread}")
    if job.stopped_by is not None:
        return STOP_SIGNALS.get(job.stopped_by, 130)
    if job.key_refused is not None:
        return _report_refused(job, console)
    return EXIT_FAILED if job.not_delivered else EXIT_OK


def _report_refused(job: ImportJob, console: Console) -> int:
    """The error line of an import the API's refusal stopped, and its exit code."""
    error = job.key_refused
    assert error is not None
    console.error(f"{job.refused_by} ({error}): {refusal_hint(error, job.kind.permission)}")
    return refusal_exit(error, job.kind.plural)


def _report_spooled(job: ImportJob, stats: Stats, console: Console) -> int:
    """The end of an import with --spool: requests are counted, not mapped to lines."""
    assert job.resume is not None
    settled = job.delivered + sum(job.rejected.values()) + sum(job.failed.values())
    if (
        job.adopted + job.accepted != settled + job.left
        or job.read != job.accepted + job.invalid + job.validated
        or stats.delivered != job.delivered
    ):
        console.error(
            f"the numbers do not add up: {job.read:,} lines read, {job.accepted:,} "
            f"{job.kind.plural} "
            f"accepted and {job.adopted:,} taken from the spool; {settled:,} settled and "
            f"{job.left:,} kept; the client counted {stats.enqueued:,} accepted, "
            f"{stats.delivered:,} delivered, {stats.failed:,} failed, {stats.spooled:,} kept "
            "(please report this)"
        )
        return EXIT_FAILED
    if job.not_delivered and job.failed_out_name is not None:
        console.note(
            f"{PROG}: {job.not_delivered:,} lines not delivered were written to "
            f"{job.failed_out_name}"
        )
    elif job.not_delivered:
        console.note(
            f"{PROG}: {job.not_delivered:,} lines were not delivered (rejected, invalid or "
            "failed); use --failed-out FILE to keep them"
        )
    if job.read_error is not None:
        console.error(
            f"reading {job.source_name} failed after line {job.last_line}: "
            f"{job.read_error.strerror or job.read_error}"
        )
    reached = job.saved.line if job.saved is not None else job.start_at.line
    if job.checkpoint_skipped:
        console.note(
            f"{PROG}: warning: the spool had a fault or filled up: the progress file records "
            f"line {reached}, not {job.last_line}; the next run may send {job.kind.plural} of "
            "the lines "
            "in between twice"
        )
    if job.left or not job.reading_done:
        why = []
        if job.api_down:
            why.append("the API is down or refuses every request (-v shows its answers)")
        elif job.stopped_by is not None:
            why.append("interrupted")
        elif job.key_refused is not None:
            why.append(job.refused_by)
        wait = (
            f"{job.left:,} {job.kind.plural} wait in the spool at {job.resume.directory}; "
            if job.left
            else ""
        )
        console.note(
            f"{PROG}: {', '.join(why) + ': ' if why else ''}{wait}read up to line "
            f"{reached}; run the same command again to "
            f"{'send them and ' if job.left else ''}resume after line {reached}"
        )
    if job.stopped_by is not None:
        return STOP_SIGNALS.get(job.stopped_by, 130)
    if job.key_refused is not None:
        return _report_refused(job, console)
    if job.read_error is not None or job.left or job.not_delivered or not job.reading_done:
        return EXIT_FAILED
    return EXIT_OK
