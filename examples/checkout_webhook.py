"""A FastAPI app that records payments from a checkout's webhook, identifies users at login,
and answers GDPR deletes: DataFast's write API beyond goals.

DataFast tracks Stripe, Lemon Squeezy, Polar, Paddle, Shopify and WooCommerce by itself; any
other checkout (a custom one, invoices, a Dodo or Creem webhook) posts its payments from the
backend. The visitor id travels with the checkout: put the ``datafast_visitor_id`` cookie into
the checkout session's metadata when you create it, and the webhook gets it back.

Run it (it needs ``pip install datafast-async fastapi uvicorn``)::

    DATAFAST_API_KEY=df_... CHECKOUT_WEBHOOK_SECRET=whsec_... python examples/checkout_webhook.py

The webhook's body (the checkout provider's, as this example reads it)::

    {"id": "evt_1", "type": "checkout.completed", "created": 1767225600,
     "data": {"payment_id": "pay_123", "amount_total": 4999, "currency": "usd",
              "customer": {"id": "cus_1", "email": "ada@example.com", "name": "Ada"},
              "subscription_renewal": false,
              "metadata": {"datafast_visitor_id": "<the visitor id>"}}}

signed with ``X-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

from datafast_async import DataFast
from datafast_async.starlette import get_client, lifespan, visitor_id

DataFastDep = Annotated[DataFast, Depends(get_client)]
VisitorId = Annotated[str | None, Depends(visitor_id)]

router = APIRouter()


def _secret() -> bytes:
    return os.environ.get("CHECKOUT_WEBHOOK_SECRET", "").encode()


def signature(body: bytes, secret: bytes) -> str:
    """The ``X-Signature`` header the checkout sends with ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@router.post("/webhooks/checkout")
async def checkout_webhook(
    request: Request,
    df: DataFastDep,
    x_signature: Annotated[str, Header()] = "",
) -> dict[str, bool]:
    body = await request.body()
    if not _secret() or not hmac.compare_digest(x_signature, signature(body, _secret())):
        raise HTTPException(status_code=400, detail="bad signature")
    event: dict[str, Any] = json.loads(body)
    if event.get("type") != "checkout.completed":
        return {"ok": True}  # other events are not payments
    data = event["data"]
    customer = data.get("customer") or {}
    # The payment is queued and journaled (with a spool) in microseconds: the webhook answers
    # at once. A provider that resends the webhook resends the same payment_id: DataFast
    # records a transaction once, so a repeat is harmless (PaymentResult.duplicate).
    await df.track_payment(
        amount=Decimal(data["amount_total"]) / 100,  # minor units (cents) to major units
        currency=data["currency"],
        transaction_id=data["payment_id"],
        visitor_id=(data.get("metadata") or {}).get("datafast_visitor_id"),
        email=customer.get("email"),
        name=customer.get("name"),
        customer_id=customer.get("id"),
        renewal=data.get("subscription_renewal"),
        # When it was paid, not when the webhook arrived (a resend may come hours later).
        timestamp=datetime.datetime.fromtimestamp(event["created"], datetime.timezone.utc),
    )
    return {"ok": True}


class Login(BaseModel):
    email: str
    password: str


@router.post("/login")
async def login(form: Login, df: DataFastDep, vid: VisitorId) -> dict[str, str]:
    user_id = "user_42"  # ... check the password, find the user ...
    if vid:
        # Links this browser's visitor to your user (a UUID cookie; traits go on the profile).
        df.identify_nowait(vid, user_id, traits={"email": form.email, "plan": "pro"})
    return {"user_id": user_id}


class Erasure(BaseModel):
    visitor_id: str


@router.post("/admin/gdpr-erasure")
async def gdpr_erasure(form: Erasure, df: DataFastDep) -> dict[str, Any]:
    # A direct call each (never queued): the answer says what was deleted. Retried on 5xx and
    # network errors (a delete is idempotent); an error is raised to the caller.
    # Requests still queued for this visitor go first: a delete does not wait for them.
    await df.flush(10)
    goals = await df.delete_goals(visitor_id=form.visitor_id)
    payments = await df.delete_payments(visitor_id=form.visitor_id)
    return {"goals": goals.raw, "payments": payments.raw}


def create_app(datafast: DataFast | None = None) -> FastAPI:
    """The app; ``datafast=None`` builds ``DataFast()`` from the environment at start-up."""
    app = FastAPI(lifespan=lifespan(datafast))
    app.include_router(router)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
