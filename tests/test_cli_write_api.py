"""The command line for DataFast's whole write API, run as a subprocess against the fake server:
``import --kind payments|identify``, ``send-payment``, ``identify``, ``delete goals|payments``,
``demo``'s per-kind check and ``fake-server``'s lines."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datafast_async import Identify, KindStats, Payment, Stats
from datafast_async._cli._demo import Demo, Server
from datafast_async._cli._output import Console
from datafast_async._spool import inspect
from datafast_async.testing import ThreadedFakeDataFast

from .test_cli import (
    RUN_TIMEOUT,
    assert_one_error_line,
    clean_env,
    cli,
    fake_env,
    posix_only,
    read_jsonl,
    summary_value,
    write_lines,
)

pytestmark = pytest.mark.integration

UTC = datetime.timezone.utc
VISITOR = "3cff4252-fa95-4a8f-b8c1-a2c5f9f0a0c1"
OTHER_VISITOR = "5d1e8c2a-7b3f-4e9d-a6c4-0f2b8e1d3c5a"
TOKEN = "dft_token_that_must_never_show_in_full_0001"

#: The fake's answer delay, in seconds (a test may slow it down).
LATENCY = [0.0]


@pytest.fixture
def fake() -> Iterator[ThreadedFakeDataFast]:
    LATENCY[0] = 0.0
    with ThreadedFakeDataFast(
        api_key="df_fake_key_for_cli_write_tests", latency=lambda: LATENCY[0]
    ) as server:
        yield server


def payment_line(transaction: str, amount: Any = 49.99, **fields: Any) -> str:
    return json.dumps(
        {"amount": amount, "currency": "usd", "transaction_id": transaction, **fields}
    )


def uuid(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def number(stdout: str, label: str) -> int:
    return int(summary_value(stdout, label).replace(",", ""))


# -- import --kind payments -----------------------------------------------------------------------


def test_a_payments_import_keeps_each_lines_timestamp_and_amount(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    source = write_lines(
        tmp_path / "payments.jsonl",
        [
            payment_line("ch_1", 49.99, visitor_id=VISITOR, timestamp="2023-11-05T08:30:00Z"),
            payment_line(
                "ch_2",
                0.1,
                datafast_visitor_id=VISITOR,
                email="jane@example.com",
                renewal=True,
                timestamp="2024-02-29T23:59:59.250+02:00",  # another day in UTC
            ),
            payment_line("ch_3", 0, is_free_trial=True),  # no timestamp: the time of the request
            payment_line("ch_4", 10, timestamp="2024-03-01T12:00:00"),  # no zone: invalid
            payment_line("ch_5", 10, timestamp="2024-03-01"),  # a date alone: invalid
            payment_line("ch_6", "10"),  # an amount as text: invalid
            payment_line("ch_7", 10, created_at="2024-03-01T12:00:00Z"),  # not the field
            payment_line("ch_1", 49.99, timestamp="2023-11-05T08:30:00Z"),  # sent again
        ],
    )
    failed_out = tmp_path / "failed.jsonl"
    result = cli(
        "import",
        str(source),
        "--kind",
        "payments",
        "--failed-out",
        str(failed_out),
        env=fake_env(fake),
    )
    assert result.returncode == 1, result.stderr
    for lineno in (4, 5, 6, 7):
        assert f"payments.jsonl:{lineno}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert number(result.stdout, "delivered") == 4
    assert number(result.stdout, "duplicates") == 1
    assert number(result.stdout, "invalid") == 4
    by_id = {payment.transaction_id: payment for payment in fake.payments}
    assert sorted(by_id) == ["ch_1", "ch_2", "ch_3"]  # ch_1 once
    assert by_id["ch_1"].timestamp == datetime.datetime(2023, 11, 5, 8, 30, tzinfo=UTC)
    assert by_id["ch_2"].timestamp == datetime.datetime(2024, 2, 29, 21, 59, 59, 250_000, UTC)
    assert by_id["ch_3"].timestamp is None
    assert (by_id["ch_1"].amount, by_id["ch_1"].currency, by_id["ch_1"].visitor_id) == (
        49.99,
        "USD",
        VISITOR,
    )
    assert (by_id["ch_2"].amount, by_id["ch_2"].email, by_id["ch_2"].renewal) == (
        0.1,
        "jane@example.com",
        True,
    )
    # What went over the wire: the timestamp in UTC with milliseconds, the amount as written.
    bodies = [r.json for r in fake.requests if r.path == "/api/v1/payments"]
    assert {b["transaction_id"]: b.get("timestamp") for b in bodies} == {
        "ch_1": "2023-11-05T08:30:00.000Z",
        "ch_2": "2024-02-29T21:59:59.250Z",
        "ch_3": None,
    }
    failed = read_jsonl(failed_out)
    assert [f["transaction_id"] for f in failed] == ["ch_4", "ch_5", "ch_6", "ch_7"]
    assert all("zone" in f["_error"] for f in failed[:2])
    assert "JSON number" in failed[2]["_error"]
    assert "'timestamp'" in failed[3]["_error"]


@posix_only
@pytest.mark.slow  # about 5 s: the 3 s grace after Ctrl-C
def test_an_interrupted_payments_import_with_spool_resumes_and_records_each_transaction_once(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    total = 1_500
    paid_at = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    source = write_lines(
        tmp_path / "payments.jsonl",
        [
            payment_line(
                f"ch_{i:05d}",
                i + 0.5,
                timestamp=(paid_at + datetime.timedelta(minutes=i)).isoformat(),
            )
            for i in range(total)
        ],
    )
    spool = tmp_path / "spool"
    command = ["import", str(source), "--kind", "payments", "--spool", str(spool)]
    # A slow API (40 a second): payments pile up in the queue while the lines are read (300 a
    # second: Ctrl-C comes before the end of the file).
    LATENCY[0] = 0.05
    first_run = [*command, "--concurrency", "2", "--rate", "300", "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", *first_run],
        env=fake_env(fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(fake.payments) < 30 and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out + err
    assert "run the same command again" in err
    first = len(fake.payments)
    assert 30 <= first < total
    LATENCY[0] = 0.0

    again = cli(*command, "--no-progress", env=fake_env(fake))

    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed" in again.stdout
    # The second run sent what the first left in the spool, then read on where it stopped:
    # every line read once.
    assert number(again.stdout, "from spool") == number(out, "in spool") > 0
    assert number(again.stdout, "read") > 0
    assert number(out, "read") + number(again.stdout, "read") == total
    # Every transaction is recorded, once, with the timestamp of its line.
    recorded = {payment.transaction_id: payment for payment in fake.payments}
    assert len(fake.payments) == total
    assert sorted(recorded) == [f"ch_{i:05d}" for i in range(total)]
    assert all(
        p.timestamp == paid_at + datetime.timedelta(minutes=int(tx[3:]))
        for tx, p in recorded.items()
    )
    # A payment sent again (its request cut at Ctrl-C, its answer lost, kept in the spool) was
    # answered as a duplicate and recorded nothing: the requests the fake accepted beyond one
    # per transaction are exactly the duplicates the two runs counted.
    accepted = Counter(
        r.json["transaction_id"]
        for r in fake.requests
        if r.path == "/api/v1/payments" and r.status == 200
    )
    assert set(accepted) == set(recorded)
    extra = sum(accepted.values()) - total
    assert extra == number(out, "duplicates") + number(again.stdout, "duplicates")
    assert extra <= 2  # at most --concurrency were cut in flight
    assert inspect(str(spool)) == []  # the spool is empty again


def test_a_payment_the_api_rejects_under_spool_goes_to_failed_out_as_a_line_that_imports_again(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    """Under --spool the failed-out line is rebuilt from the payment (its line is not
    known): it keeps the amount, the visitor and the timestamp, and imports again as is."""
    source = write_lines(
        tmp_path / "payments.jsonl",
        [payment_line("ch_1", 12.5, visitor_id=VISITOR, timestamp="2024-05-01T10:00:00+02:00")],
    )
    fake.fail_next(400, path="/api/v1/payments")
    failed_out = tmp_path / "failed.jsonl"
    env = fake_env(fake)
    result = cli(
        "import",
        str(source),
        "--kind",
        "payments",
        "--spool",
        str(tmp_path / "spool"),
        "--failed-out",
        str(failed_out),
        env=env,
    )
    assert result.returncode == 1, result.stderr
    assert "payment 'ch_1': rejected: HTTP 400" in result.stderr
    [failed] = read_jsonl(failed_out)
    assert {k: v for k, v in failed.items() if k != "_error"} == {
        "amount": 12.5,
        "currency": "USD",
        "transaction_id": "ch_1",
        "datafast_visitor_id": VISITOR,
        "timestamp": "2024-05-01T08:00:00.000Z",
    }
    result = cli("import", str(failed_out), "--kind", "payments", env=env)
    assert result.returncode == 0, result.stderr
    [payment] = fake.payments
    assert payment.timestamp == datetime.datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert payment.amount == 12.5


# -- import --kind identify -----------------------------------------------------------------------


def test_an_identify_import_takes_traits_beside_or_in_an_object_and_reports_bad_lines(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    fake.known_visitors = {uuid(1), uuid(2), uuid(3)}
    lines = [
        json.dumps({"datafast_visitor_id": uuid(1), "user_id": "u1", "plan": "pro", "seats": 3}),
        json.dumps({"visitor_id": uuid(2), "user_id": "u2", "traits": {"email": "b@x.co"}}),
        json.dumps({"visitorId": uuid(3), "user_id": "u3", "_note": "ignored"}),
        json.dumps({"datafast_visitor_id": "not-a-uuid", "user_id": "u4"}),
        json.dumps({"datafast_visitor_id": uuid(5), "user_id": "u5"}),  # no pageview: 404
        json.dumps({"datafast_visitor_id": uuid(1)}),  # no user_id
        json.dumps({"datafast_visitor_id": uuid(1), "user_id": "u1", "traits": ["x"]}),
        json.dumps({"datafast_visitor_id": uuid(1), "user_id": "u1", "address": {"city": "X"}}),
    ]
    source = write_lines(tmp_path / "users.jsonl", lines)
    failed_out = tmp_path / "failed.jsonl"
    result = cli(
        "import",
        str(source),
        "--kind",
        "identify",
        "--failed-out",
        str(failed_out),
        env=fake_env(fake),
    )
    assert result.returncode == 1, result.stderr
    assert "users.jsonl (identifies): done" in result.stdout
    assert number(result.stdout, "delivered") == 3
    assert number(result.stdout, "invalid") == 4
    assert re.search(r"^\s+rejected\s+1\s+404: 1$", result.stdout, re.MULTILINE), result.stdout
    for lineno in (4, 5, 6, 7, 8):
        assert f"users.jsonl:{lineno}: " in result.stderr
    assert "UUID" in result.stderr
    assert [(i.visitor_id, i.user_id, i.traits) for i in fake.identities] == [
        (uuid(1), "u1", {"plan": "pro", "seats": 3}),
        (uuid(2), "u2", {"email": "b@x.co"}),
        (uuid(3), "u3", None),
    ]
    failed = read_jsonl(failed_out)
    assert sorted(f.get("user_id", "-") for f in failed) == ["-", "u1", "u1", "u4", "u5"]
    [rejected] = [f for f in failed if f.get("user_id") == "u5"]
    assert rejected["_error"].startswith("rejected: HTTP 404")


# -- send-payment ---------------------------------------------------------------------------------


def test_send_payment_records_it_and_says_duplicate_when_it_is_sent_again(
    fake: ThreadedFakeDataFast,
) -> None:
    args = [
        "send-payment",
        "19.90",
        "eur",
        "ch_3Nx0001",
        "--visitor-id",
        VISITOR,
        "--email",
        "jane@example.com",
        "--customer-id",
        "cus_1",
        "--renewal",
        "--timestamp",
        "2024-03-01T13:00:00+01:00",
    ]
    first = cli(*args, env=fake_env(fake))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "recorded: ch_3Nx0001: Payment recorded and attributed successfully\n"
    again = cli(*args, env=fake_env(fake))
    assert again.returncode == 0, again.stderr  # a duplicate is a success
    assert again.stdout.startswith("duplicate: already recorded: ch_3Nx0001")
    [payment] = fake.payments
    assert payment == Payment(
        19.9,
        "EUR",
        "ch_3Nx0001",
        visitor_id=VISITOR,
        email="jane@example.com",
        customer_id="cus_1",
        renewal=True,
        timestamp=datetime.datetime(2024, 3, 1, 12, tzinfo=UTC),
    )
    # Only the flags given are sent: refunded and is_free_trial are left out, not false.
    bodies = [r.json for r in fake.requests]
    assert all("refunded" not in b and "is_free_trial" not in b for b in bodies)
    assert bodies[0]["amount"] == 19.9


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["-1", "usd", "ch_1"], "amount must be 0 or more", id="negative"),
        pytest.param(["ten", "usd", "ch_1"], "expected an amount", id="not-a-number"),
        pytest.param(["1", "dollars", "ch_1"], "three letters", id="currency"),
        pytest.param(["1", "usd", "ch_1", "--timestamp", "2024-03-01T12:00"], "zone", id="naive"),
    ],
)
def test_send_payment_of_an_invalid_payment_exits_2_and_sends_nothing(
    fake: ThreadedFakeDataFast, args: list[str], expected: str
) -> None:
    result = cli("send-payment", *args, env=fake_env(fake))
    assert result.returncode == 2
    assert expected in assert_one_error_line(result)
    assert fake.requests == []


# -- identify -------------------------------------------------------------------------------------


def test_identify_prints_the_profile_id_and_a_404_exits_1_with_the_apis_message(
    fake: ThreadedFakeDataFast,
) -> None:
    fake.known_visitors = {VISITOR}
    result = cli(
        "identify", VISITOR, "user_42", "--trait", "plan=pro", "seats=3", env=fake_env(fake)
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{24}\n", result.stdout)
    assert fake.identities == [Identify(VISITOR, "user_42", {"plan": "pro", "seats": "3"})]
    again = cli("identify", VISITOR, "user_42", env=fake_env(fake))
    assert again.stdout == result.stdout  # the same user's profile

    unknown = cli("identify", OTHER_VISITOR, "user_43", env=fake_env(fake))
    assert unknown.returncode == 1
    line = assert_one_error_line(unknown)
    assert "HTTP 404: Visitor has no pageviews on this website" in line
    assert "pageview" in line
    assert unknown.stdout == ""
    assert len(fake.identities) == 2

    requests = len(fake.requests)
    bad = cli("identify", "visitor-1", "user_44", env=fake_env(fake))
    assert bad.returncode == 2
    assert "UUID" in assert_one_error_line(bad)
    bad = cli("identify", VISITOR, "user_44", "--trait", "plan", env=fake_env(fake))
    assert bad.returncode == 2
    assert "--trait takes KEY=VALUE" in assert_one_error_line(bad)
    assert len(fake.requests) == requests  # neither was sent


# -- a dft_ token without payments:write ----------------------------------------------------------


def test_a_token_without_payments_write_gets_a_403_exit_1_while_its_goals_still_go(
    tmp_path: Path,
) -> None:
    with ThreadedFakeDataFast(
        api_key=TOKEN, website_id="site-1", permissions={"goals:write"}
    ) as fake:
        env = fake_env(fake)
        env["DATAFAST_WEBSITE_ID"] = "site-1"
        result = cli("send-payment", "5", "usd", "ch_1", env=env)
        assert result.returncode == 1
        line = assert_one_error_line(result)
        assert "HTTP 403: This API token lacks payments:write permission" in line
        assert "a dft_ token needs payments:write" in line
        assert TOKEN not in result.stdout + result.stderr

        result = cli("identify", VISITOR, "u1", env=env)
        assert result.returncode == 1
        assert "lacks identify:write" in assert_one_error_line(result)

        # An import of payments stops at the refusal (every later one would get it too).
        source = write_lines(
            tmp_path / "payments.jsonl", [payment_line(f"ch_{i}") for i in range(50)]
        )
        failed_out = tmp_path / "failed.jsonl"
        result = cli(
            "import",
            str(source),
            "--kind",
            "payments",
            "--failed-out",
            str(failed_out),
            "--concurrency",
            "2",
            env=env,
        )
        assert result.returncode == 1, result.stderr
        assert "the API refuses payments with this key" in result.stderr
        assert "lacks payments:write" in result.stderr
        assert "--kind payments" in result.stderr or "every line was read" in result.stderr
        read = number(result.stdout, "read")
        assert len(read_jsonl(failed_out)) == read
        assert TOKEN not in result.stdout + result.stderr
        assert fake.payments == []

        # Goals go on with the same token.
        sent = cli("send", "visitor-1", "signup", env=env)
        assert sent.returncode == 0, sent.stderr
        goals = write_lines(
            tmp_path / "goals.jsonl", [json.dumps({"visitorId": "v2", "name": "x"})]
        )
        assert cli("import", str(goals), env=env).returncode == 0
        assert [goal.visitor_id for goal in fake.goals] == ["visitor-1", "v2"]


# -- delete ---------------------------------------------------------------------------------------


def test_delete_without_yes_says_what_it_would_delete_and_sends_nothing(
    fake: ThreadedFakeDataFast,
) -> None:
    env = fake_env(fake)
    assert cli("send", VISITOR, "Sign Up", env=env).returncode == 0
    before = len(fake.requests)
    result = cli(
        "delete",
        "goals",
        "--visitor-id",
        VISITOR,
        "--name",
        "Sign Up",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02T12:00:00+02:00",
        env=env,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"visitor: {VISITOR}" in result.stderr
    assert "goal name: sign_up" in result.stderr  # normalised, as the API gets it
    assert "from 2024-01-01T00:00:00.000Z to 2024-01-02T10:00:00.000Z (UTC)" in result.stderr
    assert "the website of the key df_…ests" in result.stderr
    assert fake.base_url in result.stderr
    assert "nothing was deleted" in result.stderr
    assert "--yes" in result.stderr
    assert len(fake.requests) == before  # no request at all
    assert len(fake.goals) == 1

    result = cli("delete", "payments", "--transaction-id", "ch_1", env=env)
    assert result.returncode == 2
    assert "transaction id: ch_1" in result.stderr
    assert "range" not in result.stderr
    assert len(fake.requests) == before

    # With a dft_ token the website is the one named.
    token_env = clean_env(
        DATAFAST_BASE_URL=fake.base_url, DATAFAST_API_KEY=TOKEN, DATAFAST_WEBSITE_ID="site-7"
    )
    result = cli("delete", "payments", "--visitor-id", VISITOR, env=token_env)
    assert result.returncode == 2
    assert "website site-7" in result.stderr
    assert "range: none: across all time" in result.stderr
    assert TOKEN not in result.stderr
    assert len(fake.requests) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["goals", "--yes"], id="goals"),
        pytest.param(["payments", "--yes"], id="payments"),
        pytest.param(["payments"], id="payments-without-yes"),
    ],
)
def test_a_delete_with_no_filter_is_refused_in_one_line(
    fake: ThreadedFakeDataFast, args: list[str]
) -> None:
    result = cli("delete", *args, env=fake_env(fake))
    assert result.returncode == 2
    assert "needs a filter" in assert_one_error_line(result)
    assert fake.requests == []


def test_delete_goals_with_yes_removes_exactly_the_matching_goals(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    env = fake_env(fake)
    lines = [
        json.dumps({"datafast_visitor_id": visitor, "name": name, "metadata": {"n": i}})
        for i, (visitor, name) in enumerate(
            [(VISITOR, "signup"), (VISITOR, "purchase"), (OTHER_VISITOR, "signup")] * 3
        )
    ]
    assert cli("import", str(write_lines(tmp_path / "g.jsonl", lines)), env=env).returncode == 0
    # "Sign Up" is normalised as the API does: "sign_up", which none of them is.
    result = cli("delete", "goals", "--visitor-id", VISITOR, "--name", "Sign Up", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    message, data = result.stdout.splitlines()
    assert message == "0 goals deleted successfully"
    assert json.loads(data)[0]["name"] == "sign_up"
    assert len(fake.goals) == 9
    result = cli("delete", "goals", "--visitor-id", VISITOR, "--name", "SignUp", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    message, data = result.stdout.splitlines()
    assert message == "3 goals deleted successfully"
    assert json.loads(data) == [
        {
            "message": "3 goals deleted successfully",
            "deleted": 3,
            "datafast_visitor_id": VISITOR,
            "name": "signup",
        }
    ]
    assert Counter((g.visitor_id, g.name) for g in fake.goals) == {
        (VISITOR, "purchase"): 3,
        (OTHER_VISITOR, "signup"): 3,
    }


def test_delete_payments_with_yes_removes_exactly_the_matching_payments(
    fake: ThreadedFakeDataFast, tmp_path: Path
) -> None:
    env = fake_env(fake)
    times = {
        "ch_dec": "2023-12-31T23:59:59.999Z",
        "ch_jan_first": "2024-01-01T00:00:00Z",  # the start: included
        "ch_jan": "2024-01-15T12:00:00+05:00",
        "ch_feb_first": "2024-02-01T00:00:00Z",  # the end: excluded
        "ch_other": "2024-01-20T00:00:00Z",
    }
    lines = [payment_line(tx, timestamp=at) for tx, at in times.items()]
    lines.append(payment_line("ch_visitor", visitor_id=OTHER_VISITOR))
    source = write_lines(tmp_path / "p.jsonl", lines)
    assert cli("import", str(source), "--kind", "payments", env=env).returncode == 0
    assert len(fake.payments) == 6

    result = cli(
        "delete", "payments", "--transaction-id", "ch_other", "--yes", env=env
    )  # one transaction
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "1 payment deleted successfully"
    result = cli(
        "delete", "payments", "--start", "2024-01-01", "--end", "2024-02-01", "--yes", env=env
    )
    assert result.returncode == 0, result.stderr
    message, data = result.stdout.splitlines()
    assert message == "2 payments deleted successfully"
    echoed = json.loads(data)[0]
    assert (echoed["start"], echoed["end"]) == (
        "2024-01-01T00:00:00.000Z",
        "2024-02-01T00:00:00.000Z",
    )
    assert sorted(p.transaction_id for p in fake.payments) == [
        "ch_dec",
        "ch_feb_first",
        "ch_visitor",
    ]
    result = cli("delete", "payments", "--visitor-id", OTHER_VISITOR, "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.transaction_id for p in fake.payments) == ["ch_dec", "ch_feb_first"]

    gone = cli("delete", "payments", "--transaction-id", "ch_other", "--yes", env=env)
    assert gone.returncode == 1
    assert "HTTP 404: Payment not found" in assert_one_error_line(gone)
    assert len(fake.payments) == 2


def test_delete_through_a_refused_key_exits_2_and_a_missing_permission_exits_1() -> None:
    with ThreadedFakeDataFast(
        api_key=TOKEN, website_id="site-1", permissions={"payments:write"}
    ) as fake:
        env = clean_env(
            DATAFAST_BASE_URL=fake.base_url, DATAFAST_API_KEY=TOKEN, DATAFAST_WEBSITE_ID="site-1"
        )
        result = cli("delete", "goals", "--name", "signup", "--yes", env=env)
        assert result.returncode == 1
        assert "lacks goals:write" in assert_one_error_line(result)
        env["DATAFAST_API_KEY"] = TOKEN + "x"
        result = cli("delete", "payments", "--transaction-id", "ch_1", "--yes", env=env)
        assert result.returncode == 2
        assert "HTTP 401" in assert_one_error_line(result)
        assert TOKEN not in result.stdout + result.stderr


# -- demo -----------------------------------------------------------------------------------------


def test_demo_checks_each_kind_and_each_transaction_is_recorded_once() -> None:
    result = cli(
        "demo",
        "--goals",
        "200",
        "--payments",
        "40",
        "--identifies",
        "20",
        "--fail-rate",
        "0.2",
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "nothing lost: all 200 goals accounted for" in result.stdout
    assert summary_value(result.stdout, "sent") == "200"  # the goals' rows are the goals'
    assert number(result.stdout, "payments sent") == 40
    delivered = number(result.stdout, "payments delivered")
    failed = number(result.stdout, "payments failed")
    assert delivered + failed == 40
    assert number(result.stdout, "payments retried") > 0  # through the injected faults
    # 8 of the 40 repeat an earlier transaction id: 32 transactions at most, each once.
    transactions = number(result.stdout, "transactions")
    assert 0 < transactions <= 32
    assert re.search(r"8 of them repeat an earlier transaction id", result.stdout)
    assert f"each of the {transactions} transactions at the server recorded once" in (result.stdout)
    assert "payments: all 40 accounted for" in result.stdout
    assert "identifies: all 20 accounted for" in result.stdout
    assert number(result.stdout, "identities") == number(result.stdout, "identifies delivered")


def test_demos_payment_check_catches_a_transaction_recorded_twice_or_missing() -> None:
    args = argparse.Namespace(
        goals=1, payments=3, identifies=0, no_progress=True, fail_rate=0.0, concurrency=1
    )
    demo = Demo(args, Console(io.StringIO(), io.StringIO()))
    demo.sent_payments = {
        tx: Payment(1, "USD", tx, timestamp=datetime.datetime(2024, 1, 1, tzinfo=UTC))
        for tx in ("a", "b")
    }
    demo.paid = [("a", False), ("b", False), ("a", False)]  # "a" recorded by two requests
    stats = _stats(payments=(3, 3, 0))
    server = Server([], list(demo.sent_payments.values()), [])
    assert any("recorded twice" in p for p in demo.check_payments(stats, server))
    demo.paid = [("a", False), ("b", False), ("a", True)]
    assert demo.check_payments(stats, server) == []
    missing = Server([], [demo.sent_payments["a"]], [])
    assert any("the server holds 1" in p for p in demo.check_payments(stats, missing))
    moved = Server(
        [], [demo.sent_payments["a"], Payment(1, "USD", "b", timestamp=None)], []
    )  # "b" without its timestamp
    assert any("unlike they were sent" in p for p in demo.check_payments(stats, moved))


def _stats(payments: tuple[int, int, int]) -> Stats:
    enqueued, delivered, failed = payments
    kind = KindStats(enqueued=enqueued, delivered=delivered, failed=failed)
    return Stats(enqueued=enqueued, delivered=delivered, failed=failed, by_kind={"payments": kind})


# -- fake-server ----------------------------------------------------------------------------------


@posix_only
def test_fake_server_prints_payments_identifies_and_goals_after_a_delete() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", "fake-server", "--port", "0"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match is not None, banner
        env = clean_env(DATAFAST_BASE_URL=match.group(1), DATAFAST_API_KEY="df_test")
        for args in (
            ["send", "visitor-1", "signup"],
            ["delete", "goals", "--visitor-id", "visitor-1", "--yes"],  # .goals shrinks
            ["send", "visitor-2", "Big Purchase"],
            ["send-payment", "49.99", "usd", "ch_1", "--timestamp", "2024-03-01T12:00:00Z"],
            ["send-payment", "49.99", "usd", "ch_1"],
            ["identify", VISITOR, "user_42", "--trait", "plan=pro"],
        ):
            done = cli(*args, env=env)
            assert done.returncode == 0, done.stderr
        seen: list[str] = []
        for line in process.stdout:  # bounded: the process is killed in finally
            seen.append(line)
            if line.startswith("identify 1:"):
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    text = "".join(seen)
    assert "goal 1: signup visitor=visitor-1" in text
    assert "delete goals: datafast_visitor_id=visitor-1" in text
    assert "goal 2: big_purchase visitor=visitor-2" in text  # shown although .goals has one
    assert "payment 1: 49.99 USD ch_1 timestamp=2024-03-01T12:00:00.000Z" in text
    assert "payment duplicate: ch_1 already recorded" in text
    assert "identify 1: user=user_42 visitor=" + VISITOR + ' traits={"plan": "pro"}' in text
    assert "stopped; 2 goals accepted, 1 payments recorded (1 duplicates), 1 identifies" in out
    assert "Traceback" not in err
