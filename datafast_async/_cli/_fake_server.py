"""``datafast-async fake-server``: ``FakeDataFast`` in the foreground, for trying things out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from .._models import Goal
from ..testing import FakeDataFast
from ._common import non_negative_float, probability, stop_signals
from ._output import EXIT_OK, EXIT_USAGE, CLIError, Console

__all__ = ["add_parser"]

DEFAULT_KEY = "df_test"
POLL_SECONDS = 0.2  # how often new goals are printed

DESCRIPTION = """\
Run the fake DataFast server in the foreground: it speaks the goals API (auth, validation,
the error envelope), can fail requests on purpose, and prints one line per goal it accepts.
Point the SDK or this command line at it with DATAFAST_BASE_URL and DATAFAST_API_KEY.
Ctrl-C (or SIGTERM) stops it.

--fail-rate P answers that share of requests with a random fault: 500, a 502 HTML page as a
gateway sends, 503 or 429 with Retry-After: 0, or a dropped connection. --api-key sets the key
it accepts (default: df_test); a dft_ token makes it require ?websiteId= (--website-id pins
the value).
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "fake-server",
        parents=[common],
        help="run the fake DataFast server in the foreground",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=_port, default=8787, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--fail-rate",
        metavar="P",
        type=probability,
        default=0.0,
        help="share of requests (0 to 1) answered with a random fault (default: 0)",
    )
    parser.add_argument(
        "--latency",
        metavar="S",
        type=non_negative_float,
        default=0.0,
        help="seconds added before every answer (default: 0)",
    )
    parser.add_argument("--seed", type=int, help="seed of the random faults")
    parser.add_argument("--quiet", action="store_true", help="do not print each goal")
    parser.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def run(args: argparse.Namespace, console: Console) -> int:
    if getattr(args, "base_url", None) is not None:
        raise CLIError("fake-server listens on --host and --port; --base-url is for clients")
    api_key = getattr(args, "api_key", None) or DEFAULT_KEY
    try:
        fake = FakeDataFast(
            api_key=api_key,
            host=args.host,
            port=args.port,
            latency=args.latency,
            website_id=getattr(args, "website_id", None),
            fail_rate=args.fail_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return asyncio.run(_serve(fake, args, console))


async def _serve(fake: FakeDataFast, args: argparse.Namespace, console: Console) -> int:
    stop = asyncio.Event()
    try:
        await fake.start()
    except OSError as exc:
        raise CLIError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    try:
        faults = f"fail rate {args.fail_rate:g}, latency {args.latency:g} s"
        console.result(f"fake DataFast server listening on {fake.base_url} ({faults})")
        console.result("point the SDK or the command line at it with:")
        console.result(
            f"  export DATAFAST_BASE_URL={fake.base_url} DATAFAST_API_KEY={fake.api_key}"
        )
        console.result("Ctrl-C stops it.")
        shown = 0
        with stop_signals(lambda signum: stop.set()):
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)
                shown = _show_new_goals(fake, shown, console, quiet=args.quiet)
    finally:
        await fake.close()
    shown = _show_new_goals(fake, shown, console, quiet=args.quiet)
    console.result(f"stopped; {shown:,} goals accepted")
    return EXIT_OK


def _show_new_goals(fake: FakeDataFast, shown: int, console: Console, *, quiet: bool) -> int:
    goals = fake.goals
    if not quiet:
        for number, goal in enumerate(goals[shown:], start=shown + 1):
            console.result(_goal_line(number, goal))
    return len(goals)


def _goal_line(number: int, goal: Goal) -> str:
    line = f"goal {number}: {goal.name} visitor={goal.visitor_id}"
    if goal.description is not None:
        line += f" description={json.dumps(goal.description, ensure_ascii=False)}"
    if goal.metadata:
        line += f" metadata={json.dumps(dict(goal.metadata), ensure_ascii=False)}"
    return line
