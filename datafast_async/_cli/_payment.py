"""``datafast-async send-payment``: record one payment now through ``DataFast.send_payment()``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import decimal
from decimal import Decimal
from typing import Any

from .._client import DataFast
from .._errors import DataFastError, ValidationError
from .._kinds.payments import Payment, PaymentResult
from ._common import client_settings, parse_moment, request_failed
from ._output import EXIT_OK, EXIT_USAGE, PROG, CLIError, Console
from ._send import SEND_RETRY

__all__ = ["add_parser"]

DESCRIPTION = """\
Record one payment now (no queue) and print what the API answered, on stdout:
  recorded: TRANSACTION_ID: <the API's message>
  duplicate: already recorded: TRANSACTION_ID: <the API's message>
The transaction id is DataFast's idempotency key: a payment sent again records nothing new,
and is answered as a duplicate (a success: exit 0). So a payment that was not delivered can
be sent again safely.

AMOUNT is in major units (49.99), read as a decimal number and sent exactly as written;
CURRENCY three letters (usd is sent as USD). Without --visitor-id the payment is recorded but
not attributed to a visitor. --timestamp (ISO 8601 with a zone) is when it was paid; without
it, the time of the request.

Transport errors, 408, 429 and 5xx are retried a few times. Exit codes: 0 recorded (or a
duplicate); 1 the API refused the payment (400, or 403: a dft_ token without payments:write)
or could not be reached; 2 bad usage, bad settings, an invalid payment, or a key the API
refuses (401; 407 from a proxy).
"""

EPILOG = """\
example:
  datafast-async send-payment 49.99 usd ch_3Nx0001 \\
      --visitor-id 3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1 --timestamp 2024-03-01T12:00:00Z
"""


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"expected an amount in major units, such as 49.99; got {text!r}"
        ) from None


def _timestamp(text: str) -> datetime.datetime:
    return parse_moment(text)


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "send-payment",
        parents=[common],
        help="record one payment now and print the API's answer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "amount",
        metavar="AMOUNT",
        type=_amount,
        help="in major units, e.g. 49.99 (0: a free trial)",
    )
    parser.add_argument("currency", metavar="CURRENCY", help="three letters, e.g. usd")
    parser.add_argument(
        "transaction_id",
        metavar="TRANSACTION_ID",
        help="the payment provider's id: DataFast's idempotency key",
    )
    parser.add_argument(
        "--visitor-id", metavar="V", help="the visitor's datafast_visitor_id (for attribution)"
    )
    parser.add_argument("--email", metavar="EMAIL", help="the customer's email")
    parser.add_argument("--name", metavar="NAME", help="the customer's name")
    parser.add_argument("--customer-id", metavar="ID", help="your id of the customer")
    parser.add_argument("--renewal", action="store_true", default=None, help="a renewal")
    parser.add_argument("--refunded", action="store_true", default=None, help="refunded")
    parser.add_argument(
        "--free-trial", action="store_true", default=None, help="a free trial (is_free_trial)"
    )
    parser.add_argument(
        "--timestamp",
        metavar="ISO",
        type=_timestamp,
        help="when it was paid, ISO 8601 with a zone (2024-03-01T12:00:00Z); default: now",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    try:
        payment = Payment(
            args.amount,
            args.currency,
            args.transaction_id,
            visitor_id=args.visitor_id,
            email=args.email,
            name=args.name,
            customer_id=args.customer_id,
            renewal=args.renewal,
            refunded=args.refunded,
            is_free_trial=args.free_trial,
            timestamp=args.timestamp,
        )
    except ValidationError as exc:
        raise CLIError(f"invalid payment: {exc}", EXIT_USAGE) from None
    client = DataFast(**client_settings(args), retry=SEND_RETRY)  # ConfigurationError: exit 2
    if not client._options.enabled:
        console.note(f"{PROG}: the payment was not sent (DATAFAST_ENABLED is off)")
        return EXIT_OK
    result = asyncio.run(_send(client, payment))
    transaction = result.transaction_id or payment.transaction_id
    said = f": {result.message}" if result.message else ""
    if result.duplicate:
        console.result(f"duplicate: already recorded: {transaction}{said}")
    else:
        console.result(f"recorded: {transaction}{said}")
    return EXIT_OK


async def _send(client: DataFast, payment: Payment) -> PaymentResult:
    async with client:
        try:
            return await client.send_payment(
                payment.amount,
                payment.currency,
                payment.transaction_id,
                visitor_id=payment.visitor_id,
                email=payment.email,
                name=payment.name,
                customer_id=payment.customer_id,
                renewal=payment.renewal,
                refunded=payment.refunded,
                is_free_trial=payment.is_free_trial,
                timestamp=payment.timestamp,
            )
        except DataFastError as exc:
            raise request_failed(
                exc,
                "payment",
                "payments",
                "payments:write",
                again=" (sending it again is safe: a transaction is recorded once)",
            ) from None
