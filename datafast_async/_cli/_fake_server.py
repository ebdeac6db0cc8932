"""``datafast-async fake-server``: ``FakeDataFast`` in the foreground, for trying things out.

What it accepted is read from the fake's log of requests (``FakeDataFast.requests``), not from
its lists: a delete shrinks ``goals`` and ``payments``, so a position in them says nothing of
what is new. Each poll takes the requests answered since the last one seen; each accepted one
is printed and counted once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from .._errors import ValidationError
from .._kinds.identify import Identify
from .._kinds.payments import Payment, format_timestamp
from .._models import Goal
from ..testing import FakeDataFast
from ..testing._fake import FakeRequest
from ..testing._rules import (
    GOALS_PATH,
    IDENTIFY_PATH,
    PAYMENTS_PATH,
    goal_from_body,
    identify_from_body,
    payment_from_body,
)
from ._common import non_negative_float, probability, stop_signals
from ._output import EXIT_OK, EXIT_USAGE, CLIError, Console

__all__ = ["add_parser"]

DEFAULT_KEY = "df_test"
POLL_SECONDS = 0.2  # how often new requests are printed
_RANGE_ALIASES = frozenset({"startAt", "endAt", "websiteId"})  # not shown: the same range

DESCRIPTION = """\
Run the fake DataFast server in the foreground: it speaks DataFast's write API (goals,
payments, identify, and the deletes of goals and payments: auth, validation, the error
envelope, payments idempotent by transaction_id), can fail requests on purpose, and prints
one line per goal, payment, identify and delete it accepts (a payment sent again is printed
as a duplicate: recorded once). Point the SDK or this command line at it with
DATAFAST_BASE_URL and DATAFAST_API_KEY. Ctrl-C (or SIGTERM) stops it.

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
    parser.add_argument(
        "--quiet", action="store_true", help="do not print each request, only count them"
    )
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
        shown = Shown(quiet=args.quiet)
        with stop_signals(lambda signum: stop.set()):
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)
                shown.show_new(fake, console)
    finally:
        await fake.close()
    shown.show_new(fake, console)
    console.result(f"stopped; {shown.summary()}")
    return EXIT_OK


class Shown:
    """What the fake server accepted and was printed, counted once each."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.last: FakeRequest | None = None  # the last request looked at
        self.goals = 0
        self.payments = 0  # transactions recorded
        self.duplicates = 0  # payments answered as already recorded
        self.identifies = 0
        self.deletes = 0
        # Transactions recorded and not deleted since, as far as the requests seen tell: a
        # payment of one of them again is a duplicate.
        self.recorded: set[str] = set()

    def _new(self, fake: FakeDataFast, console: Console) -> list[FakeRequest]:
        requests = fake.requests
        if self.last is not None:
            for index in range(len(requests) - 1, -1, -1):
                if requests[index] is self.last:
                    requests = requests[index + 1 :]
                    break
            else:  # more than the fake keeps came since the last look
                console.result(
                    f"(more than {fake.MAX_REQUESTS:,} requests since the last look: some are "
                    "neither shown nor counted)"
                )
        if requests:
            self.last = requests[-1]
        return requests

    def show_new(self, fake: FakeDataFast, console: Console) -> None:
        for request in self._new(fake, console):
            if request.status != 200:
                continue
            line = self._accepted(fake, request)
            if line is not None and not self.quiet:
                console.result(line)

    def _accepted(self, fake: FakeDataFast, request: FakeRequest) -> str | None:
        """Count one accepted request; its line."""
        if request.method == "DELETE":
            self.deletes += 1
            if request.path == PAYMENTS_PATH:
                self.recorded &= {payment.transaction_id for payment in fake.payments}
            what = "goals" if request.path == GOALS_PATH else "payments"
            filters = " ".join(
                f"{key}={value}"
                for key, value in request.query.items()
                if key not in _RANGE_ALIASES
            )
            return f"delete {what}: {filters}"
        body = request.json if isinstance(request.json, dict) else {}
        try:
            if request.path == GOALS_PATH:
                self.goals += 1
                return _goal_line(self.goals, goal_from_body(body))
            if request.path == PAYMENTS_PATH:
                payment = payment_from_body(body)
                if payment.transaction_id in self.recorded:
                    self.duplicates += 1
                    return (
                        f"payment duplicate: {payment.transaction_id} already recorded "
                        "(nothing new recorded)"
                    )
                self.recorded.add(payment.transaction_id)
                self.payments += 1
                return _payment_line(self.payments, payment)
            if request.path == IDENTIFY_PATH:
                self.identifies += 1
                return _identify_line(self.identifies, identify_from_body(body))
        except ValidationError:  # cannot happen: the fake accepted it
            return f"{request.method} {request.path}: {json.dumps(request.json)}"
        return None

    def summary(self) -> str:
        return (
            f"{self.goals:,} goals accepted, {self.payments:,} payments recorded "
            f"({self.duplicates:,} duplicates), {self.identifies:,} identifies accepted, "
            f"{self.deletes:,} deletes"
        )


def _goal_line(number: int, goal: Goal) -> str:
    line = f"goal {number}: {goal.name} visitor={goal.visitor_id}"
    if goal.description is not None:
        line += f" description={json.dumps(goal.description, ensure_ascii=False)}"
    if goal.metadata:
        line += f" metadata={json.dumps(dict(goal.metadata), ensure_ascii=False)}"
    return line


def _payment_line(number: int, payment: Payment) -> str:
    line = f"payment {number}: {payment.amount} {payment.currency} {payment.transaction_id}"
    if payment.visitor_id is not None:
        line += f" visitor={payment.visitor_id}"
    for field in ("email", "name", "customer_id", "renewal", "refunded", "is_free_trial"):
        value = getattr(payment, field)
        if value is not None:
            line += f" {field}={json.dumps(value, ensure_ascii=False)}"
    if payment.timestamp is not None:
        line += f" timestamp={format_timestamp(payment.timestamp)}"
    return line


def _identify_line(number: int, identify: Identify) -> str:
    line = f"identify {number}: user={identify.user_id} visitor={identify.visitor_id}"
    if identify.traits:
        line += f" traits={json.dumps(dict(identify.traits), ensure_ascii=False)}"
    return line
