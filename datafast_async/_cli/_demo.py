"""``datafast-async demo``: the real client against the fake server, faults injected.

It starts ``FakeDataFast`` in-process on 127.0.0.1 with a share of requests failing on purpose
(500, a 502 HTML page, 503 and 429 with ``Retry-After``, dropped connections), sends ``--goals``
goals through the real ``DataFast`` client with a fast retry policy, shows live progress, and
then checks that every goal is accounted for: delivered exactly once at the server, or failed
and reported. It needs no key and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import inspect
import os
import time
from typing import Any, Final

from .._client import DataFast
from .._errors import DataFastError, TransportError
from .._models import Goal, GoalResult, Stats
from .._retry import RetryPolicy
from ..testing import FakeDataFast
from ._common import STOP_SIGNALS, Interruptible, positive_int, probability
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

DESCRIPTION = """\
See the SDK work before you wire it in: starts the built-in fake DataFast server on 127.0.0.1
with injected faults (5xx, 429 with Retry-After, 502 HTML pages, dropped connections), sends
--goals goals through the real client, shows live progress, and ends with a table and a check
that nothing was lost: every goal was delivered exactly once at the server, or failed and was
reported. Needs no API key and no network: it takes no --api-key, --base-url or
--website-id, and ignores the DATAFAST_* environment. Its settings are tuned for a quick run
(retries after 0.01 s instead of 0.5 s); the table at the end lists them, with
the SDK's defaults.

Exit codes: 0 every goal accounted for; 1 a goal went missing (please report it); 130
interrupted.
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="send goals through the real client to the fake server, with faults",
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
        self.delivered: set[str] = set()
        self.failed: dict[str, DataFastError] = {}
        self.client: DataFast | None = None
        self.progress = Progress(
            console, self._render, live=console.err_is_tty and not args.no_progress
        )
        self.started = time.monotonic()
        self.elapsed = 0.0

    def on_success(self, goal: Goal, result: GoalResult) -> None:
        self.delivered.add(goal.visitor_id)

    def on_failure(self, goal: Goal, error: DataFastError) -> None:
        self.failed[goal.visitor_id] = error

    def _render(self, live: bool) -> str:
        stats = self.client.stats() if self.client is not None else Stats()
        settled = stats.delivered + stats.failed
        elapsed = max(time.monotonic() - self.started, 1e-9)
        counts = (
            f"{format_count(settled)}/{format_count(self.goals)} settled, "
            f"delivered {format_count(stats.delivered)}, retried {format_count(stats.retries)}, "
            f"failed {format_count(stats.failed)}, "
            f"{format_rate(stats.delivered, elapsed)} goals/s"
        )
        if live:
            return f"{bar(settled / self.goals)} {counts}"
        return f"{PROG}: progress: {counts}"

    async def _send_all(self, client: DataFast) -> None:
        for i in range(self.goals):
            await client.track(
                f"demo-visitor-{i:07d}",
                NAMES[i % len(NAMES)],
                metadata={"plan": PLANS[i % len(PLANS)], "seq": i},
            )
        await client.flush()

    async def run(self) -> tuple[Stats, list[Goal]]:
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
                f"{PROG} demo: {self.goals:,} goals through the real client to a fake DataFast "
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
            return stats, fake.goals

    def report(self, stats: Stats, server_goals: list[Goal]) -> int:
        reasons = collections.Counter(_reason(error) for error in self.failed.values())
        rows = [
            ("sent", format_count(stats.enqueued), ""),
            ("delivered", format_count(stats.delivered), ""),
            ("retried", format_count(stats.retries), "attempts after an injected fault"),
            (
                "failed",
                format_count(stats.failed),
                ", ".join(f"{r}: {n}" for r, n in reasons.most_common()),
            ),
            ("time", format_duration(self.elapsed), ""),
            ("goals/s", format_rate(stats.delivered, self.elapsed), ""),
            ("at the server", format_count(len(server_goals)), "goals the fake server recorded"),
        ]
        for line in table(rows):
            self.console.result(line)
        self.console.result("settings of this run, tuned for a quick demo [the SDK's defaults]:")
        for line in table(self.settings_rows()):
            self.console.result(line)
        problems = self.check(stats, server_goals)
        if self.stopped_by is not None:
            self.console.note(f"{PROG}: interrupted")
            return STOP_SIGNALS.get(self.stopped_by, 130)
        if problems:
            for problem in problems:
                self.console.error(f"goals lost or miscounted: {problem}")
            return EXIT_FAILED
        self.console.result(
            f"nothing lost: all {stats.enqueued:,} goals accounted for ({stats.delivered:,} "
            f"delivered, each recorded once by the server; {stats.failed:,} failed, each "
            "reported)"
        )
        return EXIT_OK

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
                f"per goal; waits up to {retry.initial_delay:g} s, doubling, at most "
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
                f'goals at most; track() waits for room (on_full="{DEMO_ON_FULL}") '
                f'[{_format_default(default_queue)}, on_full="{default_on_full}"]',
            ),
        ]

    def check(self, stats: Stats, server_goals: list[Goal]) -> list[str]:
        """Everything that would mean a goal was lost, duplicated or miscounted."""
        problems = []
        sent = stats.enqueued
        if self.stopped_by is None and sent != self.goals:
            problems.append(f"{sent:,} goals accepted out of {self.goals:,}")
        if stats.delivered + stats.failed != sent:
            problems.append(
                f"delivered + failed = {stats.delivered + stats.failed:,}, sent = {sent:,}"
            )
        if len(self.delivered) != stats.delivered or len(self.failed) != stats.failed:
            problems.append(
                f"callbacks saw {len(self.delivered):,} delivered and {len(self.failed):,} "
                f"failed; the client counted {stats.delivered:,} and {stats.failed:,}"
            )
        if self.delivered & self.failed.keys():
            problems.append(f"{len(self.delivered & self.failed.keys())} goals both ways")
        at_server = collections.Counter(goal.visitor_id for goal in server_goals)
        duplicates = sum(n - 1 for n in at_server.values() if n > 1)
        if duplicates:
            problems.append(f"{duplicates:,} goals recorded twice by the server")
        if len(server_goals) != stats.delivered or at_server.keys() != self.delivered:
            problems.append(
                f"the server recorded {len(server_goals):,} goals, the client delivered "
                f"{stats.delivered:,}"
            )
        return problems


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
    stats, server_goals = asyncio.run(demo.run())
    return demo.report(stats, server_goals)
