"""``datafast-async demo``: the real client against the fake server, faults injected.

It starts ``FakeDataFast`` in-process on 127.0.0.1 with a share of requests failing on purpose
(500, a 502 HTML page, 503 and 429 with ``Retry-After``, dropped connections), sends ``--goals``
goals, ``--payments`` payments (one in five repeats an earlier transaction id, as a webhook
sent twice) and ``--identifies`` identifies through the real ``DataFast`` client with a fast
retry policy, shows live progress, and then checks, per kind, that every request is accounted
for: goals and identifies delivered exactly once at the server, or failed and reported; each
transaction recorded once, with its timestamp, however many times it was sent. It needs no
key and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import inspect
import os
import time
from typing import Any, Final

import attrs

from .._client import DataFast
from .._errors import DataFastError, TransportError
from .._kinds.identify import Identify, IdentifyResult
from .._kinds.payments import Payment, PaymentResult
from .._models import Goal, KindStats, Stats
from .._retry import RetryPolicy
from ..testing import FakeDataFast
from ._common import STOP_SIGNALS, Interruptible, non_negative_int, positive_int, probability
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

__all__ = ["add_parser"]

DEMO_KEY = "df_demo_key_for_the_fake_server"
# Short delays, so thousands of retries take seconds; six attempts, so at a 10% fault rate a
# goal fails only if six requests in a row fail (about one in a million).
DEMO_RETRY = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.2, max_retry_after=5.0)
DEMO_QUEUE_SIZE = 10_000
DEMO_ON_FULL: Final = "block"  # the demo waits for room rather than dropping goals
STOP_GRACE = 2.0  # seconds to deliver what is queued after Ctrl-C
# The global settings, which the demo does not use: it runs its own fake server and key.
SETTINGS_OPTIONS = (
    ("--api-key", "api_key"),
    ("--base-url", "base_url"),
    ("--website-id", "website_id"),
)

NAMES = ("signup", "Newsletter Signup", "checkout:paid", "trial-started")
PLANS = ("free", "pro", "team")
CURRENCIES = ("usd", "EUR", "gbp")
REPEAT_EVERY = 5  # one payment in five repeats an earlier one's transaction id
# The payments' timestamps: a backfill's real dates, one hour apart from here.
PAID_FROM = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

DESCRIPTION = """\
See the SDK work before you wire it in: starts the built-in fake DataFast server on 127.0.0.1
with injected faults (5xx, 429 with Retry-After, 502 HTML pages, dropped connections), sends
--goals goals, --payments payments and --identifies identifies through the real client,
shows live progress, and ends with a table and a check, per kind, that nothing was lost:
every goal and identify was delivered exactly once at the server, or failed and was
reported; every payment was delivered or failed and reported, and each transaction was
recorded once at the server, with its timestamp, although one payment in five repeats an
earlier transaction id (answered as a duplicate). Needs no API key and no network: it takes
no --api-key, --base-url or --website-id, and ignores the DATAFAST_* environment. Its
settings are tuned for a quick run (retries after 0.01 s instead of 0.5 s); the table at the
end lists them, with the SDK's defaults.

Exit codes: 0 every request accounted for; 1 a request went missing or a transaction was
recorded twice (please report it); 130 interrupted.
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="send goals, payments and identifies through the real client to the fake server, "
        "with faults",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--goals", metavar="N", type=positive_int, default=10_000, help="default: 10,000"
    )
    parser.add_argument(
        "--fail-rate",
        metavar="P",
        type=probability,
        default=0.1,
        help="share of requests (0 to 1) the fake server fails on purpose (default: 0.1)",
    )
    parser.add_argument(
        "--payments",
        metavar="N",
        type=non_negative_int,
        help="payments to send, one in five repeating a transaction id (default: goals / 20, "
        "at least 5)",
    )
    parser.add_argument(
        "--identifies",
        metavar="N",
        type=non_negative_int,
        help="identifies to send (default: goals / 40, at least 2)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=64,
        help="the most requests in flight at once, the adaptive limit's ceiling (default: 64)",
    )
    parser.add_argument("--seed", type=int, help="seed of the fake server's random faults")
    parser.add_argument(
        "--no-progress", action="store_true", help="plain progress lines instead of a bar"
    )
    parser.set_defaults(run=run)


class Demo(Interruptible):
    stop_grace = STOP_GRACE

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        super().__init__()
        self.args = args
        self.console = console
        self.goals: int = args.goals
        self.payments: int = (
            args.payments if args.payments is not None else max(5, args.goals // 20)
        )
        self.identifies: int = (
            args.identifies if args.identifies is not None else max(2, args.goals // 40)
        )
        self.total = self.goals + self.payments + self.identifies
        self.delivered: set[str] = set()
        self.failed: dict[str, DataFastError] = {}
        # Payments: each answer (transaction id, duplicate?), and each failure.
        self.paid: list[tuple[str, bool]] = []
        self.payments_failed: list[DataFastError] = []
        self.sent_payments: dict[str, Payment] = {}  # by transaction id, as sent
        # Identifies: (visitor, user) of each one delivered, and each failure.
        self.identified: collections.Counter[tuple[str, str]] = collections.Counter()
        self.identifies_failed: list[DataFastError] = []
        self.client: DataFast | None = None
        self.progress = Progress(
            console, self._render, live=console.err_is_tty and not args.no_progress
        )
        self.started = time.monotonic()
        self.elapsed = 0.0

    def on_success(self, event: object, result: object) -> None:
        if isinstance(event, Goal):
            self.delivered.add(event.visitor_id)
        elif isinstance(event, Payment) and isinstance(result, PaymentResult):
            self.paid.append((event.transaction_id, result.duplicate))
        elif isinstance(event, Identify) and isinstance(result, IdentifyResult):
            self.identified[event.visitor_id, event.user_id] += 1

    def on_failure(self, event: object, error: DataFastError) -> None:
        if isinstance(event, Goal):
            self.failed[event.visitor_id] = error
        elif isinstance(event, Payment):
            self.payments_failed.append(error)
        else:
            self.identifies_failed.append(error)

    def _render(self, live: bool) -> str:
        stats = self.client.stats() if self.client is not None else Stats()
        settled = stats.delivered + stats.failed
        elapsed = max(time.monotonic() - self.started, 1e-9)
        counts = (
            f"{format_count(settled)}/{format_count(self.total)} settled, "
            f"delivered {format_count(stats.delivered)}, retried {format_count(stats.retries)}, "
            f"failed {format_count(stats.failed)}, "
            f"{format_rate(stats.delivered, elapsed)} requests/s"
        )
        if live:
            return f"{bar(settled / self.total)} {counts}"
        return f"{PROG}: progress: {counts}"

    async def _send_all(self, client: DataFast) -> None:
        # The payments and identifies are spread among the goals, as an app sends them.
        every_payment = self.goals / self.payments if self.payments else 0.0
        every_identify = self.goals / self.identifies if self.identifies else 0.0
        payments = identifies = 0
        for i in range(self.goals):
            await client.track(
                f"demo-visitor-{i:07d}",
                NAMES[i % len(NAMES)],
                metadata={"plan": PLANS[i % len(PLANS)], "seq": i},
            )
            while payments < self.payments and payments * every_payment <= i:
                await self._pay(client, payments)
                payments += 1
            while identifies < self.identifies and identifies * every_identify <= i:
                await self._identify(client, identifies)
                identifies += 1
        for j in range(payments, self.payments):
            await self._pay(client, j)
        for j in range(identifies, self.identifies):
            await self._identify(client, j)
        await client.flush()

    async def _pay(self, client: DataFast, j: int) -> None:
        # One payment in five is an earlier one sent again (a webhook delivered twice).
        first = j - 2 if j % REPEAT_EVERY == REPEAT_EVERY - 1 else j
        transaction = f"demo_ch_{first:07d}"
        payment = Payment(
            (first % 50) + 0.99 if first % 10 else 0,
            CURRENCIES[first % len(CURRENCIES)],
            transaction,
            visitor_id=_uuid(first),
            email=f"customer-{first}@example.com",
            renewal=first % 3 == 0,
            timestamp=PAID_FROM + datetime.timedelta(hours=first),
        )
        self.sent_payments[transaction] = payment
        await client.track_payment(
            payment.amount,
            payment.currency,
            payment.transaction_id,
            visitor_id=payment.visitor_id,
            email=payment.email,
            renewal=payment.renewal,
            timestamp=payment.timestamp,
        )

    async def _identify(self, client: DataFast, j: int) -> None:
        await client.identify(
            _uuid(j), f"demo-user-{j:07d}", traits={"plan": PLANS[j % len(PLANS)], "seq": j}
        )

    async def run(self) -> tuple[Stats, Server]:
        async with FakeDataFast(
            api_key=DEMO_KEY, fail_rate=self.args.fail_rate, seed=self.args.seed
        ) as fake:
            client = self.client = DataFast(
                DEMO_KEY,
                base_url=fake.base_url,
                concurrency=self.args.concurrency,
                max_queue_size=DEMO_QUEUE_SIZE,
                on_full=DEMO_ON_FULL,
                retry=DEMO_RETRY,
                on_success=self.on_success,
                on_failure=self.on_failure,
            )
            self.console.note(
                f"{PROG} demo: {self.goals:,} goals, {self.payments:,} payments and "
                f"{self.identifies:,} identifies through the real client to a fake DataFast "
                f"server on {fake.base_url} that fails {self.args.fail_rate:.0%} of requests "
                "on purpose (500, 502 HTML, 503/429 with Retry-After, dropped connections)"
            )
            self.started = time.monotonic()
            await client.start()
            self.progress.start()
            try:
                stats = await self.work_then_close(client, self._send_all(client))
            finally:
                await self.progress.stop()
                self.elapsed = time.monotonic() - self.started
            return stats, Server(fake.goals, fake.payments, fake.identities)

    def report(self, stats: Stats, server: Server) -> int:
        goals = _kind(stats, "goals")
        reasons = collections.Counter(_reason(error) for error in self.failed.values())
        rows = [
            ("sent", format_count(goals.enqueued), ""),
            ("delivered", format_count(goals.delivered), ""),
            ("retried", format_count(goals.retries), "attempts after an injected fault"),
            (
                "failed",
                format_count(goals.failed),
                ", ".join(f"{r}: {n}" for r, n in reasons.most_common()),
            ),
            ("time", format_duration(self.elapsed), ""),
            ("goals/s", format_rate(goals.delivered, self.elapsed), ""),
            ("at the server", format_count(len(server.goals)), "goals the fake server recorded"),
        ]
        for line in table(rows):
            self.console.result(line)
        self.console.result("payments and identifies, through the same client and faults:")
        for line in table(self.kind_rows(stats, server)):
            self.console.result(line)
        self.console.result("settings of this run, tuned for a quick demo [the SDK's defaults]:")
        for line in table(self.settings_rows()):
            self.console.result(line)
        problems = [
            *(f"goals lost or miscounted: {p}" for p in self.check(stats, server.goals)),
            *(f"payments lost or miscounted: {p}" for p in self.check_payments(stats, server)),
            *(f"identifies lost or miscounted: {p}" for p in self.check_identifies(stats, server)),
        ]
        if self.stopped_by is not None:
            self.console.note(f"{PROG}: interrupted")
            return STOP_SIGNALS.get(self.stopped_by, 130)
        if problems:
            for problem in problems:
                self.console.error(problem)
            return EXIT_FAILED
        payments, identifies = _kind(stats, "payments"), _kind(stats, "identify")
        duplicates = sum(1 for _, duplicate in self.paid if duplicate)
        self.console.result(
            f"nothing lost: all {goals.enqueued:,} goals accounted for ({goals.delivered:,} "
            f"delivered, each recorded once by the server; {goals.failed:,} failed, each "
            "reported)"
        )
        self.console.result(
            f"payments: all {payments.enqueued:,} accounted for ({payments.delivered:,} "
            f"delivered, {duplicates:,} of them answered as duplicates; {payments.failed:,} "
            f"failed, each reported); each of the {len(server.payments):,} transactions at the "
            "server recorded once, with its timestamp"
        )
        self.console.result(
            f"identifies: all {identifies.enqueued:,} accounted for ({identifies.delivered:,} "
            f"delivered, each recorded once by the server; {identifies.failed:,} failed, each "
            "reported)"
        )
        return EXIT_OK

    def kind_rows(self, stats: Stats, server: Server) -> list[tuple[str, str, str]]:
        payments, identifies = _kind(stats, "payments"), _kind(stats, "identify")
        repeats = sum(1 for j in range(self.payments) if j % REPEAT_EVERY == REPEAT_EVERY - 1)
        duplicates = sum(1 for _, duplicate in self.paid if duplicate)
        return [
            (
                "payments sent",
                format_count(payments.enqueued),
                f"{repeats:,} of them repeat an earlier transaction id (a webhook sent twice)",
            ),
            (
                "payments delivered",
                format_count(payments.delivered),
                f"{duplicates:,} answered as duplicates: already recorded, nothing new",
            ),
            ("payments retried", format_count(payments.retries), ""),
            ("payments failed", format_count(payments.failed), _reasons(self.payments_failed)),
            (
                "transactions",
                format_count(len(server.payments)),
                "recorded by the fake server, each once, with its timestamp",
            ),
            ("identifies sent", format_count(identifies.enqueued), ""),
            ("identifies delivered", format_count(identifies.delivered), ""),
            (
                "identifies failed",
                format_count(identifies.failed),
                _reasons(self.identifies_failed),
            ),
            (
                "identities",
                format_count(len(server.identities)),
                "identifies the fake server recorded",
            ),
        ]

    def settings_rows(self) -> list[tuple[str, str, str]]:
        """What the demo ran with, next to what a client gets by default."""
        retry, default_retry = DEMO_RETRY, RetryPolicy()
        default_concurrency = _default_of("concurrency")
        default_queue = _default_of("max_queue_size")
        default_on_full = _default_of("on_full")
        return [
            (
                "fail rate",
                f"{self.args.fail_rate:.0%}",
                "of requests, failed on purpose by the fake server (--fail-rate)",
            ),
            (
                "concurrency",
                format_count(self.args.concurrency),
                f"ceiling of the adaptive in-flight limit (--concurrency) [{default_concurrency}]",
            ),
            (
                "retry",
                f"{retry.max_attempts} attempts",
                f"per request; waits up to {retry.initial_delay:g} s, doubling, at most "
                f"{retry.max_delay:g} s [{default_retry.max_attempts} attempts, "
                f"{default_retry.initial_delay:g} s doubling to {default_retry.max_delay:g} s]",
            ),
            (
                "Retry-After",
                f"{retry.max_retry_after:g} s",
                f"the longest honoured; a longer one fails the goal "
                f"[{default_retry.max_retry_after:g} s]",
            ),
            (
                "queue",
                format_count(DEMO_QUEUE_SIZE),
                f'requests at most; track() waits for room (on_full="{DEMO_ON_FULL}") '
                f'[{_format_default(default_queue)}, on_full="{default_on_full}"]',
            ),
        ]

    def check(self, stats: Stats, server_goals: list[Goal]) -> list[str]:
        """Everything that would mean a goal was lost, duplicated or miscounted."""
        problems = []
        goals = _kind(stats, "goals")
        sent = goals.enqueued
        if self.stopped_by is None and sent != self.goals:
            problems.append(f"{sent:,} goals accepted out of {self.goals:,}")
        problems += _balance(goals)
        if len(self.delivered) != goals.delivered or len(self.failed) != goals.failed:
            problems.append(
                f"callbacks saw {len(self.delivered):,} delivered and {len(self.failed):,} "
                f"failed; the client counted {goals.delivered:,} and {goals.failed:,}"
            )
        if self.delivered & self.failed.keys():
            problems.append(f"{len(self.delivered & self.failed.keys())} goals both ways")
        at_server = collections.Counter(goal.visitor_id for goal in server_goals)
        duplicates = sum(n - 1 for n in at_server.values() if n > 1)
        if duplicates:
            problems.append(f"{duplicates:,} goals recorded twice by the server")
        if len(server_goals) != goals.delivered or at_server.keys() != self.delivered:
            problems.append(
                f"the server recorded {len(server_goals):,} goals, the client delivered "
                f"{goals.delivered:,}"
            )
        return problems

    def check_payments(self, stats: Stats, server: Server) -> list[str]:
        """Everything that would mean a payment was lost or miscounted, or a transaction
        recorded twice (or not as it was sent)."""
        problems = []
        payments = _kind(stats, "payments")
        if self.stopped_by is None and payments.enqueued != self.payments:
            problems.append(f"{payments.enqueued:,} accepted out of {self.payments:,}")
        problems += _balance(payments)
        if len(self.paid) != payments.delivered or len(self.payments_failed) != payments.failed:
            problems.append(
                f"callbacks saw {len(self.paid):,} delivered and {len(self.payments_failed):,} "
                f"failed; the client counted {payments.delivered:,} and {payments.failed:,}"
            )
        # Each transaction delivered is recorded by exactly one request; every other answer
        # for it says duplicate.
        recorded = collections.Counter(tx for tx, duplicate in self.paid if not duplicate)
        twice = sorted(tx for tx, n in recorded.items() if n > 1)
        if twice:
            problems.append(f"{len(twice):,} transactions recorded twice ({twice[0]}, ...)")
        delivered = {tx for tx, _ in self.paid}
        at_server = {payment.transaction_id: payment for payment in server.payments}
        if at_server.keys() != delivered or recorded.keys() != delivered:
            problems.append(
                f"the server holds {len(at_server):,} transactions, the client delivered "
                f"{len(delivered):,} and saw {len(recorded):,} recorded"
            )
        changed = [
            tx
            for tx, payment in at_server.items()
            if tx not in self.sent_payments
            or (payment.timestamp, payment.currency)
            != (self.sent_payments[tx].timestamp, self.sent_payments[tx].currency)
        ]
        if changed:
            problems.append(f"{len(changed):,} transactions recorded unlike they were sent")
        return problems

    def check_identifies(self, stats: Stats, server: Server) -> list[str]:
        """Everything that would mean an identify was lost, duplicated or miscounted."""
        problems = []
        identifies = _kind(stats, "identify")
        if self.stopped_by is None and identifies.enqueued != self.identifies:
            problems.append(f"{identifies.enqueued:,} accepted out of {self.identifies:,}")
        problems += _balance(identifies)
        delivered = sum(self.identified.values())
        if delivered != identifies.delivered or len(self.identifies_failed) != identifies.failed:
            problems.append(
                f"callbacks saw {delivered:,} delivered and {len(self.identifies_failed):,} "
                f"failed; the client counted {identifies.delivered:,} and {identifies.failed:,}"
            )
        at_server = collections.Counter((i.visitor_id, i.user_id) for i in server.identities)
        if at_server != self.identified:
            problems.append(
                f"the server recorded {len(server.identities):,} identifies, the client "
                f"delivered {delivered:,} (or not the same ones)"
            )
        return problems


@attrs.frozen
class Server:
    """What the fake server recorded."""

    goals: list[Goal]
    payments: list[Payment]
    identities: list[Identify]


def _kind(stats: Stats, name: str) -> KindStats:
    return stats.by_kind.get(name) or KindStats()


def _balance(counts: KindStats) -> list[str]:
    settled = counts.delivered + counts.failed
    if settled != counts.enqueued:
        return [f"delivered + failed = {settled:,}, sent = {counts.enqueued:,}"]
    return []


def _reasons(errors: list[DataFastError]) -> str:
    reasons = collections.Counter(_reason(error) for error in errors)
    return ", ".join(f"{r}: {n}" for r, n in reasons.most_common())


def _uuid(number: int) -> str:
    """A visitor id (the API wants a UUID for an identify) of the demo's own."""
    return f"00000000-0000-4000-8000-{number:012d}"


def _reason(error: DataFastError) -> str:
    status = getattr(error, "status", None)
    if status is not None:
        return f"HTTP {status}"
    return "transport" if isinstance(error, TransportError) else type(error).__name__


def _default_of(parameter: str) -> object:
    """The default of one of ``DataFast()``'s arguments (``"?"`` if it cannot be read)."""
    try:
        default = inspect.signature(DataFast).parameters[parameter].default
    except (KeyError, TypeError, ValueError):
        return "?"
    return "?" if default is inspect.Parameter.empty else default


def _format_default(value: object) -> str:
    return format_count(value) if isinstance(value, int) else str(value)


def run(args: argparse.Namespace, console: Console) -> int:
    given = [option for option, name in SETTINGS_OPTIONS if getattr(args, name, None) is not None]
    if given:
        raise CLIError(
            f"demo runs its own fake server with its own key and does not use "
            f"{' or '.join(given)}; to try your settings, use '{PROG} send' or '{PROG} import'"
        )
    # The demo talks to its own fake server only: DATAFAST_ENABLED=0 (which would make the
    # client send nothing) does not apply to it.
    os.environ.pop("DATAFAST_ENABLED", None)
    demo = Demo(args, console)
    stats, server = asyncio.run(demo.run())
    return demo.report(stats, server)
