"""The ``datafast-async`` command line (also ``python -m datafast_async``).

    datafast-async send VISITOR_ID NAME [--description TEXT] [--metadata KEY=VALUE ...]
    datafast-async send-payment AMOUNT CURRENCY TRANSACTION_ID [--visitor-id V] [--email E]
                                [--name N] [--customer-id ID] [--renewal] [--refunded]
                                [--free-trial] [--timestamp ISO]
    datafast-async identify VISITOR_ID USER_ID [--trait KEY=VALUE ...]
    datafast-async import FILE|- [--kind goals|payments|identify] [--concurrency N]
                                 [--failed-out FILE] [--no-progress] [--rate N] [--spool DIR]
    datafast-async delete goals [--visitor-id V] [--name N] [--start ISO --end ISO] [--yes]
    datafast-async delete payments [--transaction-id T] [--visitor-id V]
                                   [--start ISO --end ISO] [--yes]
    datafast-async spool DIR [--json] [--files] [--show N]
                         [--replay [--timeout S] [--no-progress]]
    datafast-async fake-server [--host H] [--port P] [--fail-rate P] [--latency S]
    datafast-async demo [--goals N] [--payments N] [--identifies N] [--fail-rate P]

Standard library only (argparse, a hand-drawn progress bar): the command line adds no
dependency to the SDK. Errors are one line on stderr with the API's own message, never a
traceback and never the key. Exit codes: 0 all delivered, 1 some requests not delivered (or
refused by the API: 400, 404, and a 403 to payments, identify or a delete, which a dft_ token
may lack while it writes goals), 2 bad usage or settings (a key the API refuses: 401, a 403 to
goals, a proxy's 407; a delete without --yes), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._errors import ConfigurationError
from .._version import __version__
from . import _delete, _demo, _fake_server, _identify, _import, _payment, _send, _spool
from ._output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CLIError,
    Console,
    ConsoleLogHandler,
)

__all__ = ["main"]

DESCRIPTION = """\
The command line of datafast-async, the async Python SDK for DataFast's server-side API:
goals, payments, identify and deletes.

Start with `datafast-async demo`: it needs no key and no network.
"""

EPILOG = """\
settings:
  --api-key, --website-id and --base-url may be given before or after the command; without
  them the DATAFAST_API_KEY, DATAFAST_WEBSITE_ID and DATAFAST_BASE_URL environment variables
  are used. A df_ key is a website key; a dft_ token also needs the website id. demo takes
  none of them: it runs its own fake server.

exit codes:
  0 every request delivered; 1 some not delivered, or refused by the API (a 403 to payments,
  identify or a delete included: a dft_ token may lack that permission); 2 bad usage or
  settings (a key the API refuses: 401, a 403 to goals, a proxy's 407; delete without --yes);
  130 Ctrl-C
"""


class _UsageError(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and an exit code, not ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)


def _common_options(*, top: bool, settings_shown: bool = True) -> argparse.ArgumentParser:
    """The settings, accepted before or after the command (``SUPPRESS``: a value given in one
    place is not overwritten by the default of the other). ``settings_shown=False``: still
    parsed (so that a command that takes none can refuse them by name) but left out of its
    ``--help``."""
    common = _Parser(add_help=False)
    title = "settings (default: the DATAFAST_* environment)" if settings_shown else "output"
    group = common.add_argument_group(title)
    default = None if top else argparse.SUPPRESS

    def shown(text: str) -> str:
        return text if settings_shown else argparse.SUPPRESS

    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=default,
        help=shown("df_ website key or dft_ account token (DATAFAST_API_KEY)"),
    )
    group.add_argument(
        "--website-id",
        metavar="ID",
        default=default,
        help=shown("website id, required with a dft_ token (DATAFAST_WEBSITE_ID)"),
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        default=default,
        help=shown("API base URL, default https://datafa.st (DATAFAST_BASE_URL)"),
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="also show the SDK's warnings (failed goals, retries given up, ...)",
    )
    return common


def _server_options() -> argparse.ArgumentParser:
    """``fake-server``'s own: the key it accepts, never a base URL (it serves; it sends to
    nothing), and not read from the environment."""
    options = _Parser(add_help=False)
    group = options.add_argument_group("the key it accepts (not read from DATAFAST_*)")
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help="the df_ key or dft_ token it accepts (default: df_test)",
    )
    group.add_argument(
        "--website-id",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="with a dft_ token, the ?websiteId= it requires (default: any)",
    )
    options.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also show the SDK's warnings",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[_common_options(top=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    common = _common_options(top=False)
    _demo.add_parser(subparsers, _common_options(top=False, settings_shown=False))
    _send.add_parser(subparsers, common)
    _payment.add_parser(subparsers, common)
    _identify.add_parser(subparsers, common)
    _import.add_parser(subparsers, common)
    _delete.add_parser(subparsers, common)
    _spool.add_parser(subparsers, common)
    _fake_server.add_parser(subparsers, _server_options())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code."""
    console = Console(sys.stdout, sys.stderr, secrets=[os.environ.get("DATAFAST_API_KEY")])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        message = f"{exc} (see '{exc.prog} --help')"
        console.note(f"{exc.prog}: error: {console.redact(message, key_like=True)}")
        return EXIT_USAGE
    run = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        console.note(f"{PROG}: error: give a command; start with '{PROG} demo' (see --help)")
        return EXIT_USAGE
    if run is not _fake_server.run:  # the fake server's key is a test key, shown on purpose
        console.add_secret(getattr(args, "api_key", None))
    logger = logging.getLogger("datafast_async")
    handler = ConsoleLogHandler(console, logging.WARNING if args.verbose else logging.ERROR)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        code: int = run(args, console)
        return code
    except CLIError as exc:
        console.error(str(exc))
        return exc.code
    except ConfigurationError as exc:
        console.error(_in_cli_words(str(exc)))
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.note(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED
    except Exception as exc:
        console.error(
            f"unexpected {type(exc).__name__}: {exc} (a bug in datafast-async; please report it)"
        )
        return EXIT_FAILED
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _in_cli_words(message: str) -> str:
    """A ``ConfigurationError`` message with the command line's option names."""
    for python, cli in (
        ("pass api_key=...", "pass --api-key"),
        ("pass website_id=...", "pass --website-id"),
        (" (or enabled=False)", ""),
        ("base_url must", "--base-url must"),
    ):
        message = message.replace(python, cli)
    return message


def _silence_stdout() -> None:
    """stdout's reader went away (``| head``): stop Python complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
