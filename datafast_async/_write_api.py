"""The rest of DataFast's write API on the client: payments, identify, and deletes.

``DataFast`` inherits these verbs; each validates through its kind's module (``_kinds``) and
hands the request to the client's one pipeline (``_accept``, ``_accept_waiting``, ``_send``) or,
for a delete, makes the call directly (``_call``): the same queue, sender, spool, retries,
limiter, circuits and accounting as goals.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._delivery import Delivery
from ._kinds import IDENTIFY, PAYMENTS, deletes, identify, payments
from ._kinds.deletes import DeleteResult
from ._kinds.identify import IdentifyResult
from ._kinds.payments import Amount, PaymentResult

if TYPE_CHECKING:
    from ._intake import Intake
    from ._run import Life

__all__ = ["WriteAPI"]

_DELETE_DISABLED = DeleteResult(message="disabled", raw=None)


class WriteAPI:
    """Payments, identify and deletes (mixed into ``DataFast``)."""

    if TYPE_CHECKING:
        _intake: Intake  # the client's intake policy, and its life cycle (``DataFast``)
        _life: Life

    # -- payments -------------------------------------------------------------------------

    def track_payment_nowait(
        self,
        amount: Amount,
        currency: str,
        transaction_id: str,
        *,
        visitor_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        customer_id: str | None = None,
        renewal: bool | None = None,
        refunded: bool | None = None,
        is_free_trial: bool | None = None,
        timestamp: datetime.datetime | None = None,
    ) -> Delivery[PaymentResult]:
        """Validate a payment and queue it; never waits and never touches the network.

        From any thread, like ``track_nowait``. ``transaction_id`` is DataFast's idempotency
        key: a retry, a replay from the spool or a recovery after a crash records the payment
        at most once (a repeat is answered as a duplicate: ``PaymentResult.duplicate``, a
        success). ``timestamp`` (an aware ``datetime``) keeps a backfill's real dates.

        Returns:
            The payment's ``Delivery`` (``.event`` is the ``Payment``).

        Raises:
            ValidationError: The payment breaks one of the API's rules (``.field`` says which).
            QueueFullError: The queue is full and ``on_full`` is ``"raise"`` or ``"block"``.
            ClientClosedError: The client was closed.
        """
        fields = payments.validate(
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
        )
        return self._intake.accept(PAYMENTS.pending(fields))

    async def track_payment(
        self,
        amount: Amount,
        currency: str,
        transaction_id: str,
        *,
        visitor_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        customer_id: str | None = None,
        renewal: bool | None = None,
        refunded: bool | None = None,
        is_free_trial: bool | None = None,
        timestamp: datetime.datetime | None = None,
    ) -> Delivery[PaymentResult]:
        """``track_payment_nowait``, waiting for room in a full queue with
        ``on_full="block"`` (at most ``timeout`` seconds)."""
        fields = payments.validate(
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
        )
        return await self._intake.accept_waiting(PAYMENTS.pending(fields))

    async def send_payment(
        self,
        amount: Amount,
        currency: str,
        transaction_id: str,
        *,
        visitor_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        customer_id: str | None = None,
        renewal: bool | None = None,
        refunded: bool | None = None,
        is_free_trial: bool | None = None,
        timestamp: datetime.datetime | None = None,
    ) -> PaymentResult:
        """Record one payment now, without the queue, with the retry policy (a retry cannot
        record it twice).

        Returns:
            The API's answer (``duplicate`` when it was recorded before).

        Raises:
            ValidationError: The payment breaks one of the API's rules.
            APIError: The API refused it (``PermissionDeniedError`` for a token without
                ``payments:write``), or kept failing.
            TransportError: No answer came, attempt after attempt.
            ClientClosedError: The client was closed.
        """
        fields = payments.validate(
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
        )
        result: PaymentResult = await self._life.send_now(PAYMENTS, PAYMENTS.encode(fields))
        return result

    # -- identify -------------------------------------------------------------------------

    def identify_nowait(
        self,
        visitor_id: str,
        user_id: str,
        traits: Mapping[str, object] | None = None,
    ) -> Delivery[IdentifyResult]:
        """Validate an identify (the visitor is your user ``user_id``) and queue it; never
        waits. From any thread.

        Args:
            visitor_id: The ``datafast_visitor_id`` cookie, a UUID.
            user_id: Your own user id (1 to 255 characters).
            traits: Profile fields sent as top-level fields of the body (``email``,
                ``plan``, ...): ``str``/``int``/``float``/``bool`` values, ``None`` left out.

        Returns:
            The identify's ``Delivery`` (``.event`` is the ``Identify``).

        Raises:
            ValidationError: A rule is broken (``.field`` says which).
            QueueFullError: The queue is full and ``on_full`` is ``"raise"`` or ``"block"``.
            ClientClosedError: The client was closed.
        """
        return self._intake.accept(IDENTIFY.pending(identify.validate(visitor_id, user_id, traits)))

    async def identify(
        self,
        visitor_id: str,
        user_id: str,
        traits: Mapping[str, object] | None = None,
    ) -> Delivery[IdentifyResult]:
        """``identify_nowait``, waiting for room in a full queue with ``on_full="block"``."""
        fields = identify.validate(visitor_id, user_id, traits)
        return await self._intake.accept_waiting(IDENTIFY.pending(fields))

    async def send_identify(
        self,
        visitor_id: str,
        user_id: str,
        traits: Mapping[str, object] | None = None,
    ) -> IdentifyResult:
        """Identify now, without the queue, with the retry policy.

        Raises:
            ValidationError: A rule is broken.
            VisitorNotFoundError: The visitor has no pageview on this website (404).
            APIError: The API refused it otherwise, or kept failing.
            TransportError: No answer came, attempt after attempt.
            ClientClosedError: The client was closed.
        """
        fields = identify.validate(visitor_id, user_id, traits)
        result: IdentifyResult = await self._life.send_now(IDENTIFY, IDENTIFY.encode(fields))
        return result

    # -- deletes (GDPR requests): direct calls, never queued ------------------------------

    async def delete_goals(
        self,
        visitor_id: str | None = None,
        name: str | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
    ) -> DeleteResult:
        """Delete goals: a visitor's, a name's, or those in a time range (or a combination).

        With a visitor or a name and no range, across all time. ``name`` is normalised as
        for ``track``. ``start`` and ``end`` (aware datetimes, ``start < end``) go together;
        the range is sent both as ``start``/``end`` and as ``startAt``/``endAt`` (DataFast's
        documentation uses both names). Retried (a delete is idempotent) on 408, 429, 5xx
        (504: the delete timed out; a smaller range helps) and network errors.

        Raises:
            ValidationError: No filter at all (nothing is deleted by accident), or a rule is
                broken.
            APIError: The API refused it, or kept failing.
            TransportError: No answer came, attempt after attempt.
        """
        query = deletes.goals_query(visitor_id, name, start, end)
        result: DeleteResult = await self._life.call(
            deletes.DELETE_GOALS, deletes.encoded(query), _DELETE_DISABLED
        )
        return result

    async def delete_payments(
        self,
        transaction_id: str | None = None,
        visitor_id: str | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
    ) -> DeleteResult:
        """Delete payments: one transaction, a visitor's, or those in a time range.

        ``transaction_id`` names one payment and goes alone (DataFast ignores every other
        filter beside it, so the SDK refuses the mix). The range as for ``delete_goals``.

        Raises:
            ValidationError: No filter at all, a transaction id with other filters, or a rule
                is broken.
            NotFoundError: No such transaction (404).
            APIError: The API refused it otherwise, or kept failing.
            TransportError: No answer came, attempt after attempt.
        """
        query = deletes.payments_query(transaction_id, visitor_id, start, end)
        result: DeleteResult = await self._life.call(
            deletes.DELETE_PAYMENTS, deletes.encoded(query), _DELETE_DISABLED
        )
        return result
