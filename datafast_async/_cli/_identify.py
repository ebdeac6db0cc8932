"""``datafast-async identify``: link a visitor to your user id now (``DataFast.send_identify``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .._client import DataFast
from .._errors import DataFastError, ValidationError
from .._kinds.identify import Identify, IdentifyResult
from ._common import client_settings, request_failed
from ._output import EXIT_OK, EXIT_USAGE, PROG, CLIError, Console
from ._send import SEND_RETRY, parse_metadata

__all__ = ["add_parser"]

DESCRIPTION = """\
Identify a visitor now (no queue): link the visitor (the datafast_visitor_id cookie, a UUID)
to your own user id, with traits stored on the user's profile, and print the profile's id on
stdout. Traits are sent as text (--trait seats=3 sends "3"); not for secrets.

Transport errors, 408, 429 and 5xx are retried a few times. Exit codes: 0 identified; 1 the
API refused it (404: the visitor has no pageview on this website yet; 400; 403: a dft_ token
without identify:write) or could not be reached; 2 bad usage, bad settings, an invalid
identify (a visitor id that is not a UUID, ...), or a key the API refuses (401; 407 from a
proxy).
"""

EPILOG = """\
example:
  datafast-async identify 3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1 user_42 \\
      --trait email=jane@example.com plan=pro
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "identify",
        parents=[common],
        help="link a visitor to your user id now and print the profile id",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "visitor_id", metavar="VISITOR_ID", help="the visitor's datafast_visitor_id cookie (a UUID)"
    )
    parser.add_argument("user_id", metavar="USER_ID", help="your own user id (1 to 255 characters)")
    parser.add_argument(
        "--trait",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="profile fields (email=..., plan=pro); values are sent as text",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    traits = parse_metadata(args.trait, "--trait")
    try:
        identify = Identify(args.visitor_id, args.user_id, traits)
    except ValidationError as exc:
        raise CLIError(f"invalid identify: {exc}", EXIT_USAGE) from None
    client = DataFast(**client_settings(args), retry=SEND_RETRY)  # ConfigurationError: exit 2
    if not client._options.enabled:
        console.note(f"{PROG}: the identify was not sent (DATAFAST_ENABLED is off)")
        return EXIT_OK
    result = asyncio.run(_send(client, identify))
    if result.profile_id is None:
        console.note(
            f"{PROG}: identified, but the answer named no profile "
            f"({result.message or 'no message'}; a cookieless website stores nothing)"
        )
        return EXIT_OK
    console.result(result.profile_id)
    return EXIT_OK


async def _send(client: DataFast, identify: Identify) -> IdentifyResult:
    async with client:
        try:
            return await client.send_identify(
                identify.visitor_id, identify.user_id, identify.traits
            )
        except DataFastError as exc:
            raise request_failed(exc, "identify", "identifies", "identify:write") from None
