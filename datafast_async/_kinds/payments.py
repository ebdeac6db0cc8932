"""Payments: ``POST /api/v1/payments``, the kind ``track_payment`` / ``track_payment_nowait`` /
``send_payment`` send.

Everything the pipeline needs to know about a payment: the rules (``validate``, shared with
``Payment()``), the body, DataFast's success answer (a bare JSON object,
``{"message": "Payment recorded and attributed successfully", "transaction_id": "ch_123"}``, no
``status`` wrapper) and its ``PaymentResult``, and how a journaled body becomes a payment again.
The endpoint is idempotent: ``transaction_id`` is its key, so a retry, a replay from the spool
or a recovery after a crash records a payment at most once (a repeat is answered as a
duplicate, which is a success).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from decimal import Decimal
from typing import cast

import attrs

from .._delivery import FieldsDelivery
from .._errors import ValidationError
from .._validation import check_text, check_visitor_id, shown, type_name
from ._kind import Fields, Kind

__all__ = [
    "PAYMENTS",
    "Payment",
    "PaymentDelivery",
    "PaymentKind",
    "PaymentResult",
    "encode_fields",
    "format_timestamp",
    "parse_timestamp",
    "validate",
]

#: What ``amount`` may be: a number in major units (49.99).
Amount = int | float | Decimal

MAX_TRANSACTION_ID_LENGTH = 255
_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")
_FRACTION_RE = re.compile(r"\.([0-9]+)(?=[+-][0-9]{2}:?[0-9]{2}$|$)")
_UTC = datetime.timezone.utc
_quote = json.encoder.encode_basestring


def _amount(amount: object) -> Amount:
    kind = type(amount)
    if kind is float or (kind is not bool and issubclass(kind, float)):
        value = float.__float__(amount)  # type: ignore[arg-type]
        if not math.isfinite(value):
            raise ValidationError("amount", f"amount must be a finite number, got {value!r}")
        if value < 0:
            raise ValidationError("amount", f"amount must be 0 or more, got {value!r}")
        return value + 0.0  # -0.0 is 0.0
    if kind is int or (kind is not bool and issubclass(kind, int)):
        number = int.__index__(amount)  # type: ignore[arg-type]
        if number < 0:
            raise ValidationError("amount", f"amount must be 0 or more, got {shown(number)}")
        try:
            float(number)
        except OverflowError:
            raise ValidationError(
                "amount", "amount is too large for a JSON number (more than about 1.8e308)"
            ) from None
        return number
    if issubclass(type(amount), Decimal):
        # Read as its value first: a subclass's own methods are not asked anything.
        try:
            decimal = Decimal(cast(Decimal, amount))
        except Exception as exc:
            raise ValidationError("amount", f"amount could not be read: {exc!r}") from None
        if not decimal.is_finite():
            raise ValidationError("amount", f"amount must be a finite number, got {decimal}")
        if decimal.is_signed() and decimal != 0:
            raise ValidationError("amount", f"amount must be 0 or more, got {decimal}")
        as_float = float(decimal)
        if decimal and not as_float:
            raise ValidationError(
                "amount", f"amount {decimal} is too small for a JSON number (read as 0)"
            )
        if not math.isfinite(as_float):
            raise ValidationError(
                "amount", "amount is too large for a JSON number (more than about 1.8e308)"
            )
        # A subclass is read as its value (its own __str__ might not be a JSON number).
        return Decimal(0) if decimal == 0 else decimal
    raise ValidationError(
        "amount",
        f"amount must be an int, a float or a Decimal (major units: 49.99), got "
        f"{type_name(amount)}",
    )


def _currency(currency: object) -> str:
    if (
        type(currency) is str
        and len(currency) == 3
        and currency.isascii()
        and currency.isupper()
        and currency.isalpha()
    ):
        return currency
    if not issubclass(type(currency), str):
        raise ValidationError(
            "currency", f"currency must be a str (a code such as 'USD'), got {type_name(currency)}"
        )
    text = str.__str__(currency)
    if _CURRENCY_RE.fullmatch(text) is None:
        raise ValidationError(
            "currency", f"currency must be three letters (a code such as 'USD'), got {shown(text)}"
        )
    return text.upper()


def _transaction_id(transaction_id: object) -> str:
    if not issubclass(type(transaction_id), str):
        raise ValidationError(
            "transaction_id",
            f"transaction_id must be a str (the payment provider's id), got "
            f"{type_name(transaction_id)}",
        )
    text = str.__str__(transaction_id)
    if not text:
        raise ValidationError("transaction_id", "transaction_id must not be empty")
    if len(text) > MAX_TRANSACTION_ID_LENGTH:
        raise ValidationError(
            "transaction_id",
            f"transaction_id must be at most {MAX_TRANSACTION_ID_LENGTH} characters, got "
            f"{len(text)}: {shown(text)}",
        )
    return check_text("transaction_id", text)


def _optional_text(field: str, value: object) -> str | None:
    if value is None:
        return None
    if issubclass(type(value), str):
        return check_text(field, str.__str__(value))
    raise ValidationError(field, f"{field} must be a str or None, got {type_name(value)}")


def _optional_bool(field: str, value: object) -> bool | None:
    if value is None or value is True or value is False:
        return value
    raise ValidationError(field, f"{field} must be a bool or None, got {type_name(value)}")


def _timestamp(timestamp: object) -> datetime.datetime | None:
    if timestamp is None:
        return None
    if not issubclass(type(timestamp), datetime.datetime):
        raise ValidationError(
            "timestamp",
            f"timestamp must be a datetime (aware: with a time zone), got {type_name(timestamp)}",
        )
    moment = cast(datetime.datetime, timestamp)
    try:
        offset = None if moment.tzinfo is None else moment.utcoffset()
    except Exception as exc:  # an application's own tzinfo that fails
        raise ValidationError(
            "timestamp", f"timestamp's time zone could not give its offset: {exc!r}"
        ) from None
    if offset is None:
        raise ValidationError(
            "timestamp",
            "timestamp must be an aware datetime (with a time zone, such as "
            "datetime.timezone.utc): a naive one would be read in an unknown zone",
        )
    try:
        utc = moment if moment.tzinfo is _UTC else moment.astimezone(_UTC)
    except (OverflowError, ValueError):
        raise ValidationError(
            "timestamp", f"timestamp {moment!r} is out of range once converted to UTC"
        ) from None
    except Exception as exc:  # an application's own tzinfo that fails
        raise ValidationError(
            "timestamp", f"timestamp could not be converted to UTC: {exc!r}"
        ) from None
    # To the millisecond, as it is sent: the value is what the API gets.
    extra = utc.microsecond % 1000
    return utc.replace(microsecond=utc.microsecond - extra) if extra else utc


_CURRENCIES: dict[str, str] = {}  # codes seen, normalised: the hot path is a look-up
_CACHE_LIMIT = 512
_INF = math.inf


def validate(
    amount: object,
    currency: object,
    transaction_id: object,
    visitor_id: object = None,
    email: object = None,
    name: object = None,
    customer_id: object = None,
    renewal: object = None,
    refunded: object = None,
    is_free_trial: object = None,
    timestamp: object = None,
) -> Fields:
    """A payment's fields validated and normalised (currency upper-cased, the timestamp in
    UTC to the millisecond), in ``Payment``'s order; ``ValidationError`` (with ``.field``) for
    the first broken rule.

    On ``track_payment_nowait``'s path: the usual case (a float or int amount, a code seen
    before, ASCII ids, a UTC timestamp) takes a few checks each, inline; anything else goes
    through the helpers, which also explain failures.
    """
    kind = type(amount)
    if not (
        (kind is float and 0.0 <= amount < _INF)  # type: ignore[operator]
        or (kind is int and amount >= 0 and amount.bit_length() < 1024)  # type: ignore[operator,attr-defined]
    ):
        amount = _amount(amount)
    elif kind is float:
        amount = amount + 0.0  # type: ignore[operator]  # -0.0 is 0.0
    code = _CURRENCIES.get(currency) if type(currency) is str else None
    if code is None:
        code = _currency(currency)
        if len(_CURRENCIES) < _CACHE_LIMIT:
            _CURRENCIES[currency] = code  # type: ignore[index]
    if not (
        type(transaction_id) is str
        and 0 < len(transaction_id) <= MAX_TRANSACTION_ID_LENGTH
        and transaction_id.isascii()
    ):
        transaction_id = _transaction_id(transaction_id)
    if visitor_id is not None and not (
        type(visitor_id) is str and visitor_id and visitor_id.isascii()
    ):
        visitor_id = check_visitor_id(visitor_id)
    if email is not None and not (type(email) is str and email.isascii()):
        email = _optional_text("email", email)
    if name is not None and not (type(name) is str and name.isascii()):
        name = _optional_text("name", name)
    if customer_id is not None and not (type(customer_id) is str and customer_id.isascii()):
        customer_id = _optional_text("customer_id", customer_id)
    if renewal is not None and renewal is not True and renewal is not False:
        _optional_bool("renewal", renewal)
    if refunded is not None and refunded is not True and refunded is not False:
        _optional_bool("refunded", refunded)
    if is_free_trial is not None and is_free_trial is not True and is_free_trial is not False:
        _optional_bool("is_free_trial", is_free_trial)
    if timestamp is not None:
        if (
            type(timestamp) is datetime.datetime
            and timestamp.tzinfo is _UTC
            and not timestamp.microsecond % 1000
        ):
            pass  # already in UTC, to the millisecond
        else:
            timestamp = _timestamp(timestamp)
    return (
        amount,
        code,
        transaction_id,
        visitor_id,
        email,
        name,
        customer_id,
        renewal,
        refunded,
        is_free_trial,
        timestamp,
    )


def format_timestamp(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as JavaScript writes it: ``2026-12-07T15:21:00.000Z``."""
    utc = moment.astimezone(_UTC)
    # Written out: strftime's %Y does not pad years before 1000 on every platform.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 time with a zone (``Z`` or an offset) as an aware ``datetime`` in UTC;
    ``ValueError`` for anything else (a naive time included)."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # A fraction of any length (Python 3.10's fromisoformat takes only 3 or 6 digits).
    fraction = _FRACTION_RE.search(text)
    if fraction is not None:
        digits = (fraction[1] + "000000")[:6]
        text = text[: fraction.start()] + "." + digits + text[fraction.end() :]
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time without a zone")
    return moment.astimezone(_UTC)


def _amount_of(text: str) -> float | Decimal:
    """A journaled number as the value it was: a float when the float writes the same text
    (``49.99``), else the ``Decimal`` it was (``49.990``, or more digits than a float holds)."""
    value = float(text)
    return value if float.__repr__(value) == text else Decimal(text)


def _number(amount: Amount) -> str:
    if type(amount) is float:
        return float.__repr__(amount)
    return str(amount)  # an int, or a Decimal (its str is a JSON number when finite)


def encode_fields(
    amount: Amount,
    currency: str,
    transaction_id: str,
    visitor_id: str | None,
    email: str | None,
    name: str | None,
    customer_id: str | None,
    renewal: bool | None,
    refunded: bool | None,
    is_free_trial: bool | None,
    timestamp: datetime.datetime | None,
) -> bytes:
    """The JSON body for one validated payment; absent optional fields are left out."""
    if (
        email is None
        and name is None
        and customer_id is None
        and renewal is None
        and refunded is None
        and is_free_trial is None
        and timestamp is None
    ):  # the usual payment, in one step
        visitor = "" if visitor_id is None else f',"datafast_visitor_id":{_quote(visitor_id)}'
        return (
            f'{{"amount":{_number(amount)},"currency":"{currency}",'
            f'"transaction_id":{_quote(transaction_id)}{visitor}}}'
        ).encode()
    parts = [
        f'{{"amount":{_number(amount)},"currency":"{currency}",'
        f'"transaction_id":{_quote(transaction_id)}'
    ]
    if visitor_id is not None:
        parts.append(f',"datafast_visitor_id":{_quote(visitor_id)}')
    if email is not None:
        parts.append(f',"email":{_quote(email)}')
    if name is not None:
        parts.append(f',"name":{_quote(name)}')
    if customer_id is not None:
        parts.append(f',"customer_id":{_quote(customer_id)}')
    if renewal is not None:
        parts.append(',"renewal":true' if renewal else ',"renewal":false')
    if refunded is not None:
        parts.append(',"refunded":true' if refunded else ',"refunded":false')
    if is_free_trial is not None:
        parts.append(',"is_free_trial":true' if is_free_trial else ',"is_free_trial":false')
    if timestamp is not None:
        parts.append(f',"timestamp":"{format_timestamp(timestamp)}"')
    parts.append("}")
    return "".join(parts).encode()


@attrs.frozen(init=False, weakref_slot=False)
class Payment:
    """One payment, validated and normalised exactly as ``DataFast.track_payment`` does.

    Args:
        amount: A finite ``int``, ``float`` or ``Decimal`` of 0 or more, in major units
            (``49.99``); 0 is a free trial. Not a ``bool``.
        currency: Three letters (``"usd"``), kept upper-cased (``"USD"``).
        transaction_id: The payment provider's id, 1 to 255 characters: DataFast's
            idempotency key (a repeat records nothing new).
        visitor_id: The visitor's ``datafast_visitor_id`` (sent under that name); optional,
            but without it the payment is not attributed.
        email, name, customer_id: The customer, each a ``str`` when given.
        renewal, refunded, is_free_trial: ``bool`` when given (DataFast infers a free trial
            from an amount of 0).
        timestamp: When it was paid, an aware ``datetime`` (a naive one is refused), kept in
            UTC and sent as ISO 8601 with milliseconds; ``None``: the time of the request. A
            backfill keeps real dates with it.

    ``None`` fields are left out of the body.

    Raises:
        ValidationError: A rule is broken; ``.field`` names the field.
    """

    amount: Amount
    currency: str
    transaction_id: str
    visitor_id: str | None = None
    email: str | None = None
    name: str | None = None
    customer_id: str | None = None
    renewal: bool | None = None
    refunded: bool | None = None
    is_free_trial: bool | None = None
    timestamp: datetime.datetime | None = None

    def __init__(
        self,
        amount: Amount,
        currency: str,
        transaction_id: str,
        visitor_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        customer_id: str | None = None,
        renewal: bool | None = None,
        refunded: bool | None = None,
        is_free_trial: bool | None = None,
        timestamp: datetime.datetime | None = None,
    ) -> None:
        _fill(
            self,
            validate(
                amount,
                currency,
                transaction_id,
                visitor_id,
                email,
                name,
                customer_id,
                renewal,
                refunded,
                is_free_trial,
                timestamp,
            ),
        )


_SETTERS = tuple(Payment.__dict__[field.name].__set__ for field in attrs.fields(Payment))
_new_object = object.__new__


def _fill(payment: Payment, fields: Fields) -> None:
    for setter, value in zip(_SETTERS, fields, strict=True):
        setter(payment, value)


def _checked(fields: Fields) -> Payment:
    payment: Payment = _new_object(Payment)
    _fill(payment, fields)
    return payment


@attrs.frozen(weakref_slot=False)
class PaymentResult:
    """What the API answered for one recorded payment.

    Attributes:
        message: The API's message (``"disabled"`` when the client is disabled).
        transaction_id: The transaction the API recorded, as it echoed it.
        duplicate: ``True`` when the API said the transaction was already recorded (its
            message says "duplicate"): nothing new was recorded, and that is a success.
    """

    message: str | None
    transaction_id: str | None
    duplicate: bool = False


def _result(message: object, transaction_id: object) -> PaymentResult:
    said = message if isinstance(message, str) else None
    echoed = transaction_id if isinstance(transaction_id, str) else None
    return PaymentResult(
        message=said,
        transaction_id=echoed,
        duplicate=said is not None and "duplicate" in said.lower(),
    )


# DataFast's usual answer, compact, read without building a JSON document (json.loads costs
# several times more on the sender's path): a JSON string without escapes or control bytes.
_TEXT = rb'"([ !#-\[\]-\xff]*)"'
_USUAL_RE = re.compile(rb'\{"message":' + _TEXT + rb',"transaction_id":' + _TEXT + rb"\}")


def _answer(body: bytes) -> dict[str, object] | None:
    """The object a success answer carries (the bare object; inside ``data`` when it came in
    the goals' envelope), else ``None``."""
    usual = _USUAL_RE.fullmatch(body)
    if usual is not None:
        try:
            return {"message": usual[1].decode(), "transaction_id": usual[2].decode()}
        except UnicodeDecodeError:
            pass
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("status") == "error":
        return None
    if "transaction_id" in data or "message" in data:
        return data
    if data.get("status") == "success":  # tolerated: DataFast's envelope of other endpoints
        inner = data.get("data")
        if isinstance(inner, list) and inner:
            inner = inner[0]
        return inner if isinstance(inner, dict) else {}
    return None


class PaymentDelivery(FieldsDelivery[PaymentResult]):
    """A payment's ``Delivery``: its validated fields, as a tuple."""

    __slots__ = ()


class PaymentKind(Kind[Payment, PaymentResult]):
    """The payments endpoint."""

    name = "payments"
    noun = "payment"
    plural = "payments"
    path = "/api/v1/payments"
    value_type = Payment
    idempotent = True

    def pending(self, fields: Fields) -> PaymentDelivery:
        return PaymentDelivery.holding(self, fields)  # type: ignore[return-value]

    def build(self, fields: Fields) -> Payment:
        return _checked(fields)

    def fields_of(self, value: Payment) -> Fields:
        return tuple(getattr(value, field.name) for field in attrs.fields(Payment))

    def encode(self, fields: Fields) -> bytes:
        return encode_fields(*fields)

    def is_success(self, body: bytes) -> bool:
        if _USUAL_RE.fullmatch(body) is not None:
            return True  # the usual answer, whole: no JSON document built
        return _answer(body) is not None

    def read_result(self, body: bytes) -> PaymentResult:
        data = _answer(body) or {}
        return _result(data.get("message"), data.get("transaction_id"))

    def rebuild(self, body: bytes) -> Fields | None:
        try:
            data = json.loads(body, parse_float=_amount_of)
            if not isinstance(data, dict):
                return None
            stamp = data.get("timestamp")
            return validate(
                data.get("amount"),
                data.get("currency"),
                data.get("transaction_id"),
                data.get("datafast_visitor_id"),
                data.get("email"),
                data.get("name"),
                data.get("customer_id"),
                data.get("renewal"),
                data.get("refunded"),
                data.get("is_free_trial"),
                None if stamp is None else parse_timestamp(stamp),
            )
        except (ValueError, TypeError, RecursionError, AttributeError):
            return None  # ValidationError is a ValueError

    def disabled(self) -> PaymentResult:
        return _DISABLED

    def describe(self, fields: Fields) -> str:
        return f"payment {fields[2]!r}"


_DISABLED = PaymentResult(message="disabled", transaction_id=None)

#: The one instance: every payment's ``Delivery`` points at it.
PAYMENTS = PaymentKind()
