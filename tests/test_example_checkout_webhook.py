"""``examples/checkout_webhook.py`` as pasted, against a real fake DataFast on 127.0.0.1: the
webhook records each payment once with its visitor and its real date, a bad signature records
nothing, login identifies, and the GDPR erasure deletes what the visitor left."""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from starlette.testclient import TestClient

from datafast_async.testing import ThreadedFakeDataFast

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "checkout_webhook.py"
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
SECRET = "whsec_test_secret"
PAID_AT = 1767225600  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    name = "datafast_example_checkout_webhook"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedFakeDataFast]:
    with ThreadedFakeDataFast() as server:
        monkeypatch.setenv("DATAFAST_API_KEY", server.api_key)
        monkeypatch.setenv("DATAFAST_BASE_URL", server.base_url)
        monkeypatch.setenv("CHECKOUT_WEBHOOK_SECRET", SECRET)
        for name in ("DATAFAST_WEBSITE_ID", "DATAFAST_ENABLED", "DATAFAST_SPOOL_PATH"):
            monkeypatch.delenv(name, raising=False)
        yield server


def webhook(payment_id: str = "pay_123", **data: object) -> bytes:
    event = {
        "id": "evt_1",
        "type": "checkout.completed",
        "created": PAID_AT,
        "data": {
            "payment_id": payment_id,
            "amount_total": 4999,
            "currency": "usd",
            "customer": {"id": "cus_1", "email": "ada@example.com", "name": "Ada"},
            "subscription_renewal": False,
            "metadata": {"datafast_visitor_id": VISITOR},
            **data,
        },
    }
    return json.dumps(event).encode()


def post(client: TestClient, example: ModuleType, body: bytes, secret: str = SECRET) -> int:
    headers = {"X-Signature": example.signature(body, secret.encode())}
    return client.post("/webhooks/checkout", content=body, headers=headers).status_code


def test_the_webhook_records_each_payment_once_with_its_visitor_and_real_date(
    example: ModuleType, fake: ThreadedFakeDataFast
) -> None:
    with TestClient(example.app) as client:
        assert post(client, example, webhook()) == 200
        assert post(client, example, webhook()) == 200  # the provider resends it
        assert post(client, example, webhook("pay_124", amount_total=0)) == 200
    stats = example.app.state.datafast.stats()
    assert stats.by_kind["payments"].delivered == 3  # the resend is a success (a duplicate)
    payments = sorted(fake.payments, key=lambda p: p.transaction_id)
    assert [p.transaction_id for p in payments] == ["pay_123", "pay_124"]  # recorded once
    first = payments[0]
    assert str(first.amount) == "49.99"  # cents to major units, exactly
    assert first.currency == "USD"
    assert first.visitor_id == VISITOR
    assert first.email == "ada@example.com"
    assert first.timestamp == datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert payments[1].amount == 0


def test_a_webhook_with_a_bad_signature_records_nothing(
    example: ModuleType, fake: ThreadedFakeDataFast
) -> None:
    with TestClient(example.app) as client:
        assert post(client, example, webhook(), secret="not the secret") == 400
    assert fake.payments == []
    assert fake.requests == []


def test_login_identifies_the_visitor_and_the_erasure_deletes_what_it_left(
    example: ModuleType, fake: ThreadedFakeDataFast
) -> None:
    other = "0f0e0d0c-0b0a-4909-8807-060504030201"
    with TestClient(example.app) as client:
        df = example.app.state.datafast
        cookie = {"cookie": f"datafast_visitor_id={VISITOR}"}
        login = {"email": "ada@example.com", "password": "pw"}
        assert client.post("/login", json=login, headers=cookie).json() == {"user_id": "user_42"}
        assert post(client, example, webhook()) == 200
        for visitor in (VISITOR, other):
            df.track_nowait(visitor, "signup")
        assert client.portal.call(df.flush, 5.0)
        answer = client.post("/admin/gdpr-erasure", json={"visitor_id": VISITOR})
        assert answer.status_code == 200
    [identity] = fake.identities
    assert (identity.visitor_id, identity.user_id) == (VISITOR, "user_42")
    assert identity.traits == {"email": "ada@example.com", "plan": "pro"}
    assert [goal.visitor_id for goal in fake.goals] == [other]  # only the other visitor's left
    assert fake.payments == []
