"""``datafast-async delete goals|payments``: GDPR deletes, said in full before they are done.

Without ``--yes`` nothing is sent: the command says what it would delete (the filters as the
API gets them, the range in UTC, the website and the API's address) and exits 2. With
``--yes`` it calls ``DataFast.delete_goals`` / ``delete_payments`` and prints the API's message
and its ``data`` (the filters it echoed, and what it counted). A delete with no filter at all
is refused by the SDK before any request (``ValidationError``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from typing import Any

from .._client import DataFast
from .._config import mask_key
from .._errors import (
    APIError,
    DataFastError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from .._kinds import deletes
from .._kinds.deletes import DeleteResult
from ._common import client_settings, parse_moment, refusal, refusal_hint
from ._output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, CLIError, Console
from ._send import SEND_RETRY

__all__ = ["add_parser"]

DESCRIPTION = """\
Delete goals or payments (a GDPR request): a visitor's, a goal name's, one transaction, or
those in a time range (or a combination: what matches every filter given is deleted).

Nothing is deleted without --yes: without it the command says exactly what it would delete
(the filters, the range in UTC, the website) and exits 2, sending nothing. With --yes it
deletes and prints the API's message, then its data (the filters it echoed) as JSON.

A delete needs a filter: with none at all it is refused (exit 2). --start and --end go
together (ISO 8601 with a zone, or a date alone: midnight UTC); with a visitor or a name and
no range, the delete is across all time. For payments, --transaction-id names one payment and
goes alone.

Transport errors, 408, 429 and 5xx (504: the delete timed out; a smaller range helps) are
retried a few times (deleting again deletes nothing more). Exit codes: 0 deleted (whatever
the count); 1 the API refused the delete (404: no such transaction; 403: a dft_ token without
goals:write or payments:write) or could not be reached; 2 bad usage or settings, no filter,
without --yes, or a key the API refuses (401; 407 from a proxy).
"""

EPILOG = """\
example:
  datafast-async delete goals --visitor-id 3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1        # says what
  datafast-async delete goals --visitor-id 3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1 --yes  # deletes
  datafast-async delete payments --start 2024-01-01 --end 2024-02-01 --yes
  datafast-async delete payments --transaction-id ch_3Nx0001 --yes
"""

# What each query parameter of a delete is, in the plan's words.
_LABELS = {
    "transaction_id": "transaction id",
    "datafast_visitor_id": "visitor",
    "name": "goal name",
}


def _moment(text: str) -> datetime.datetime:
    return parse_moment(text, dates=True)


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "delete",
        parents=[common],
        help="delete goals or payments (GDPR); says what it would delete without --yes",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_subparsers(title="what to delete", metavar="goals|payments", dest="what")
    what.required = True
    goals = what.add_parser(
        "goals",
        parents=[common],
        help="delete goals: a visitor's, a name's, or a range's",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    goals.add_argument("--visitor-id", metavar="V", help="the visitor's goals")
    goals.add_argument("--name", metavar="N", help="the goals of this name (normalised: signup)")
    payments = what.add_parser(
        "payments",
        parents=[common],
        help="delete payments: one transaction, a visitor's, or a range's",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    payments.add_argument("--transaction-id", metavar="T", help="one payment (goes alone)")
    payments.add_argument("--visitor-id", metavar="V", help="the visitor's payments")
    for sub in (goals, payments):
        sub.add_argument(
            "--start", metavar="ISO", type=_moment, help="start of the range (with --end)"
        )
        sub.add_argument("--end", metavar="ISO", type=_moment, help="end of the range")
        sub.add_argument(
            "--yes", action="store_true", help="delete: without it, only say what would be"
        )
        sub.set_defaults(run=run)


def _query(args: argparse.Namespace) -> deletes.Query:
    """The delete's query, checked by the SDK's own rules (``ValidationError``)."""
    if args.what == "goals":
        return deletes.goals_query(args.visitor_id, args.name, args.start, args.end)
    return deletes.payments_query(args.transaction_id, args.visitor_id, args.start, args.end)


def _website(client: DataFast) -> str:
    settings = client._options.settings
    if settings.website_id is not None:
        return f"website {settings.website_id}"
    return f"the website of the key {mask_key(settings.api_key)}"


def plan(args: argparse.Namespace, query: deletes.Query, client: DataFast) -> list[str]:
    """What the delete would delete, line by line."""
    values = dict(query)
    lines = [f"  {_LABELS[key]}: {values[key]}" for key in _LABELS if key in values]
    if "start" in values:
        lines.append(f"  range: from {values['start']} to {values['end']} (UTC)")
    elif "transaction_id" not in values:
        lines.append("  range: none: across all time")
    settings = client._options.settings
    noun = "goal" if args.what == "goals" else "payment"
    return [
        f"{PROG}: delete {args.what} would delete every {noun} of {_website(client)} (at "
        f"{settings.base_url}) that matches:",
        *lines,
        f"{PROG}: nothing was deleted: run the same command with --yes to delete them (it "
        "cannot be undone)",
    ]


def run(args: argparse.Namespace, console: Console) -> int:
    try:
        query = _query(args)
    except ValidationError as exc:
        raise _invalid(exc, args.what) from None
    client = DataFast(**client_settings(args), retry=SEND_RETRY)  # ConfigurationError: exit 2
    if not args.yes:
        for line in plan(args, query, client):
            console.note(line)
        return EXIT_USAGE
    if not client._options.enabled:
        console.note(f"{PROG}: nothing was deleted (DATAFAST_ENABLED is off)")
        return EXIT_OK
    result = asyncio.run(_delete(client, args))
    console.result(result.message or "deleted")
    console.result(json.dumps(result.raw, ensure_ascii=False))
    return EXIT_OK


async def _delete(client: DataFast, args: argparse.Namespace) -> DeleteResult:
    async with client:
        try:
            if args.what == "goals":
                return await client.delete_goals(args.visitor_id, args.name, args.start, args.end)
            return await client.delete_payments(
                args.transaction_id, args.visitor_id, args.start, args.end
            )
        except ValidationError as exc:  # checked above already: the same rules
            raise _invalid(exc, args.what) from None
        except DataFastError as exc:
            raise _failed(exc, args.what) from None


def _invalid(error: ValidationError, what: str) -> CLIError:
    """A delete the SDK refused before any request, in the command line's words."""
    if error.field == "filter":
        filters = "--visitor-id, --name" if what == "goals" else "--transaction-id, --visitor-id"
        return CLIError(
            f"delete {what} needs a filter: {filters}, or --start and --end; nothing was "
            "deleted (a delete with no filter would delete everything)",
            EXIT_USAGE,
        )
    message = str(error).replace("transaction_id", "--transaction-id")
    if error.field in ("start", "end"):
        message = message.replace("start and end", "--start and --end")
    return CLIError(f"invalid delete: {message}", EXIT_USAGE)


def _failed(error: DataFastError, what: str) -> CLIError:
    if isinstance(error, PermissionDeniedError):  # this endpoint refused: not the whole key
        hint = refusal_hint(error, f"{what}:write")
        return CLIError(f"the API refused the delete: {error} ({hint})", EXIT_FAILED)
    refused_by = refusal(error)  # 401, or a proxy's 407: the settings
    if refused_by is not None:
        return CLIError(f"{refused_by}: {error} ({refusal_hint(error)})", EXIT_USAGE)
    if isinstance(error, NotFoundError):
        return CLIError(f"nothing was deleted: {error}", EXIT_FAILED)
    if isinstance(error, APIError) and error.status == 504:
        return CLIError(
            f"the delete did not complete: {error} (it timed out at the API: try a smaller "
            "--start/--end range)",
            EXIT_FAILED,
        )
    if isinstance(error, APIError) and not error.retriable:
        return CLIError(f"the API refused the delete: {error}", EXIT_FAILED)
    return CLIError(
        f"the delete was not done: {error} (deleting again is safe: it deletes nothing more)",
        EXIT_FAILED,
    )
