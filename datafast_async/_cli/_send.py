"""``datafast-async send``: deliver one goal now through ``DataFast.send()``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .._client import DataFast
from .._errors import APIError, DataFastError, ValidationError
from .._models import Goal, GoalResult
from .._retry import RetryPolicy
from ._common import client_settings, refusal, refusal_hint
from ._output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError, Console

__all__ = ["add_parser"]

# One goal from a terminal or a script: a few quick retries, and no Retry-After of minutes.
SEND_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.5, max_delay=4.0, max_retry_after=30.0)

DESCRIPTION = """\
Deliver one goal now (no queue) and print its event id on stdout.

Transport errors, 408, 429 and 5xx are retried a few times. Exit codes: 0 delivered; 1 the API
refused the goal (400, 404, ...) or could not be reached; 2 bad usage, bad settings, an
invalid goal, or a key the API refuses (401, 403; 407 from a proxy).
"""

EPILOG = """\
example:
  datafast-async send 3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1 signup --metadata plan=pro seats=3
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "send",
        parents=[common],
        help="deliver one goal now and print its event id",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "visitor_id", metavar="VISITOR_ID", help="the visitor's datafast_visitor_id cookie"
    )
    parser.add_argument("name", metavar="NAME", help="the goal's name, e.g. signup")
    parser.add_argument("--description", metavar="TEXT", help="free text sent with the goal")
    parser.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="metadata entries (at most 10; values are sent as text)",
    )
    parser.set_defaults(run=run)


def parse_metadata(items: list[str], option: str = "--metadata") -> dict[str, str] | None:
    """``["plan=pro", "seats=3"]`` as a dict; a repeated key or an item without ``=`` is a
    usage error (naming ``option``)."""
    if not items:
        return None
    metadata: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"{option} takes KEY=VALUE, got {item!r}")
        if key in metadata:
            raise CLIError(f"{option} key {key!r} is given twice")
        metadata[key] = value
    return metadata


def run(args: argparse.Namespace, console: Console) -> int:
    metadata = parse_metadata(args.metadata)
    try:
        goal = Goal(args.visitor_id, args.name, args.description, metadata)
    except ValidationError as exc:
        raise CLIError(f"invalid goal: {exc}", EXIT_USAGE) from None
    settings: dict[str, Any] = client_settings(args)
    client = DataFast(**settings, retry=SEND_RETRY)  # ConfigurationError: exit 2 in main
    result = asyncio.run(_send(client, goal))
    if result.event_id is None:
        console.note(f"datafast-async: the goal was not sent ({result.message or 'no event id'})")
        return EXIT_OK
    console.result(result.event_id)
    return EXIT_OK


async def _send(client: DataFast, goal: Goal) -> GoalResult:
    async with client:
        try:
            return await client.send(
                goal.visitor_id, goal.name, description=goal.description, metadata=goal.metadata
            )
        except DataFastError as exc:
            refused_by = refusal(exc)
            if refused_by is not None:
                raise CLIError(f"{refused_by}: {exc} ({refusal_hint(exc)})", EXIT_USAGE) from None
            if isinstance(exc, APIError) and not exc.retriable:
                raise CLIError(f"the API refused the goal: {exc}", EXIT_FAILED) from None
            raise CLIError(f"the goal was not delivered: {exc}", EXIT_FAILED) from None
