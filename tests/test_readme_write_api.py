"""The examples of ``docs/write-api.md`` ("Payments, identify and deletes") run as pasted (each
saved as a file) against a fake DataFast on 127.0.0.1, with the environment the page says to
export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datafast_async.testing import ThreadedFakeDataFast

from ._docs import python_blocks, section

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 60.0  # seconds: a fresh interpreter that imports the SDK and sends a few requests


def section_blocks(heading: str) -> list[str]:
    """The ``python`` blocks of ``docs/write-api.md`` (whose title is ``heading``)."""
    return python_blocks(section("write-api.md", heading))


def run_example(tmp_path: Path, source: str, fake: ThreadedFakeDataFast) -> str:
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
    env.update(DATAFAST_API_KEY=fake.api_key, DATAFAST_BASE_URL=fake.base_url)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_payments_example_records_the_payment_once(tmp_path: Path) -> None:
    [payments, _, _] = section_blocks("Payments, identify and deletes")
    with ThreadedFakeDataFast() as fake:
        out = run_example(tmp_path, payments, fake)
        assert out.split() == ["False", "True"]  # the first recorded, the repeat a duplicate
        [payment] = fake.payments
    assert payment.transaction_id == "ch_3Nx1"
    assert payment.timestamp is not None
    assert payment.timestamp.year == 2026


def test_the_identify_example_links_the_visitor(tmp_path: Path) -> None:
    [_, identify, _] = section_blocks("Payments, identify and deletes")
    with ThreadedFakeDataFast() as fake:
        out = run_example(tmp_path, identify, fake)
        identities = fake.identities
    assert out.strip()  # the profile id
    assert [i.user_id for i in identities] == ["user_42", "user_42"]
    # The queued one (with traits) and the direct one, in either order.
    assert sorted(str(i.traits) for i in identities) == [
        "None",
        "{'email': 'ada@example.com', 'plan': 'pro'}",
    ]


def test_the_deletes_example_deletes_the_visitors_goals_and_payments(tmp_path: Path) -> None:
    [_, _, deletes] = section_blocks("Payments, identify and deletes")
    visitor = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
    seed = f"""
import asyncio
from datafast_async import DataFast
async def main() -> None:
    async with DataFast() as df:
        await df.send({visitor!r}, "signup")
        await df.send("someone-else", "signup")
        await df.send_payment(5, "usd", "ch_seed", visitor_id={visitor!r})
asyncio.run(main())
"""
    with ThreadedFakeDataFast() as fake:
        run_example(tmp_path, seed, fake)
        out = run_example(tmp_path, deletes, fake)
        assert [g.visitor_id for g in fake.goals] == ["someone-else"]
        assert fake.payments == []
    assert out.strip()


def test_the_front_pages_example_sends_each_kind_then_erases_the_goals(tmp_path: Path) -> None:
    [example] = python_blocks(section("README.md", "Payments, identify and deletes"))
    with ThreadedFakeDataFast() as fake:
        out = run_example(tmp_path, example, fake)
        goals, payments, identities = fake.goals, fake.payments, fake.identities
    assert out.strip()  # the API's message for the delete
    assert goals == []  # recorded, then erased: the flush came before the delete
    assert [p.transaction_id for p in payments] == ["ch_3Nx1"]
    assert [(i.user_id, i.traits) for i in identities] == [("user_42", {"plan": "pro"})]
