"""How statuses and bodies become results and typed errors; how Retry-After is read."""

from __future__ import annotations

import email.utils
import json

import pytest

from datafast_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    Goal,
    GoalResult,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    VisitorNotFoundError,
)
from datafast_async._kinds import GOALS
from datafast_async._kinds.goals import encode_goal, read_result
from datafast_async._outcome import outcome_of, parse_retry_after
from datafast_async._transport import Response

from ._fakes import EVENT_ID, error, ok


def decode_response(response: Response) -> GoalResult | APIError:
    """What an answer means to the sender, with a success read as the user would read it."""
    headers = dict(response.headers)
    if response.retry_after is not None:
        headers["Retry-After"] = response.retry_after
    outcome = outcome_of(GOALS, response.status, response.body, response.reason, headers)
    return read_result(outcome) if isinstance(outcome, bytes) else outcome


@pytest.mark.parametrize(
    ("status", "cls", "retriable"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, PermissionDeniedError, False),
        (404, VisitorNotFoundError, False),
        (405, APIError, False),
        (408, APIError, True),
        (409, APIError, False),
        (422, APIError, False),
        (429, RateLimitError, True),
        (500, ServerError, True),
        (501, ServerError, False),
        (502, ServerError, True),
        (503, ServerError, True),
        (504, ServerError, True),
        (505, ServerError, False),
        (599, ServerError, True),
    ],
)
def test_each_status_becomes_its_error_and_retry_decision(
    status: int, cls: type[APIError], retriable: bool
) -> None:
    outcome = decode_response(error(status, "the API's words"))
    assert type(outcome) is cls
    assert isinstance(outcome, APIError)
    assert outcome.status == status
    assert outcome.message == "the API's words"
    assert outcome.retriable is retriable
    assert "the API's words" in str(outcome)


def test_transport_errors_are_retriable() -> None:
    assert TransportError("reset").retriable


def test_success_gives_the_event_id_and_message() -> None:
    assert decode_response(ok()) == GoalResult(EVENT_ID, "Custom event created successfully")


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "success"}',
        b'{"status":"success","data":[]}',
        b'{"status": "success", "data": [{"eventId": 5}]}',
        b'{"status":"success","data":"later"}',
    ],
)
def test_a_success_without_a_readable_event_is_still_delivered(body: bytes) -> None:
    """DataFast's success answer counts, whatever else it holds: only the event id is lost."""
    assert decode_response(Response(200, body)) == GoalResult(None, None)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html><body>Welcome to the hotel Wi-Fi</body></html>", b"{}", b'{"data": []}', b"[1]"],
)
def test_a_2xx_that_is_not_datafasts_answer_is_a_final_failure(body: bytes) -> None:
    """A captive portal or a wrong host answering 200 must not count as delivered."""
    outcome = decode_response(Response(200, body, headers={"Content-Type": "text/html"}))
    assert isinstance(outcome, APIError)
    assert outcome.status == 200
    assert "not DataFast's" in outcome.message
    assert not outcome.retriable
    assert outcome.opens_circuit


def test_a_redirect_is_not_followed_and_names_where_it_pointed() -> None:
    outcome = decode_response(
        Response(301, b"", "Moved Permanently", headers={"Location": "https://elsewhere.example/"})
    )
    assert isinstance(outcome, APIError)
    assert outcome.status == 301
    assert "https://elsewhere.example/" in outcome.message
    assert not outcome.retriable
    assert outcome.opens_circuit


@pytest.mark.parametrize(
    ("response", "opens"),
    [
        (error(401, "Invalid API key"), True),
        (error(403, "Tracking suspended for this website"), True),
        (Response(407, b"<html>Proxy Authentication Required</html>"), True),
        (Response(404, b"<html>Not Found</html>"), True),  # a wrong host, not DataFast's 404
        (Response(405, b"Method Not Allowed"), True),
        (error(404, "Visitor has no pageviews"), False),  # DataFast's own: this goal only
        (error(400, "Invalid goal name"), False),
        (error(422, "Unprocessable"), False),
        (Response(408, b"<html>timeout</html>"), False),
        (Response(429, b"<html>slow down</html>"), False),
        (Response(502, b"<html>Bad Gateway</html>"), False),
        (Response(501, b"<html>Not Implemented</html>"), False),
    ],
)
def test_answers_every_request_would_get_open_the_circuit(response: Response, opens: bool) -> None:
    outcome = decode_response(response)
    assert isinstance(outcome, APIError)
    assert outcome.opens_circuit is opens


def test_a_gateway_html_page_becomes_a_short_message() -> None:
    page = (
        b"<html><head><style>h1{color:red}</style><script>var x = 1;</script></head>"
        b"<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>"
    )
    outcome = decode_response(Response(502, page, "Bad Gateway"))
    assert isinstance(outcome, ServerError)
    assert outcome.message == "502 Bad Gateway nginx"
    assert "color" not in outcome.message
    assert "var x" not in outcome.message
    assert outcome.body.startswith("<html>")


def test_an_empty_error_body_uses_the_reason_phrase() -> None:
    outcome = decode_response(Response(503, b"", ""))
    assert isinstance(outcome, ServerError)
    assert outcome.message == "Service Unavailable"


def test_a_long_error_body_is_truncated() -> None:
    outcome = decode_response(Response(500, b"x" * 100_000, "Internal Server Error"))
    assert isinstance(outcome, APIError)
    assert len(outcome.message) < 400
    assert len(outcome.body) == 4096


def test_a_json_error_without_the_envelope_still_gives_its_message() -> None:
    outcome = decode_response(Response(400, json.dumps({"error": "bad goal"}).encode()))
    assert isinstance(outcome, BadRequestError)
    assert outcome.message == "bad goal"


def test_a_429_carries_its_retry_after() -> None:
    outcome = decode_response(error(429, "slow down", retry_after="7"))
    assert isinstance(outcome, RateLimitError)
    assert outcome.retry_after == 7.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("12", 12.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("1e400", float("inf")),
    ],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date_is_turned_into_a_delay_once() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_the_body_leaves_out_absent_fields() -> None:
    assert json.loads(encode_goal(Goal("v", "Sign Up"))) == {
        "datafast_visitor_id": "v",
        "name": "sign_up",
    }
    full = Goal("v", "x", "desc ✓", {"plan": "pro"})
    assert json.loads(encode_goal(full)) == {
        "datafast_visitor_id": "v",
        "name": "x",
        "description": "desc ✓",
        "metadata": {"plan": "pro"},
    }


def test_errors_survive_pickling() -> None:
    import pickle

    original = RateLimitError(429, "slow", "body", retry_after=3.0)
    copy = pickle.loads(pickle.dumps(original))
    assert (type(copy), copy.status, copy.message, copy.retry_after) == (
        RateLimitError,
        429,
        "slow",
        3.0,
    )


@pytest.mark.parametrize("status", [413, 414, 431])
def test_an_answer_about_the_one_requests_size_fails_that_goal_alone(status: int) -> None:
    """An nginx page for a body too large is about that goal: it must not open the circuit
    and fail every goal with it (found in review)."""
    outcome = decode_response(Response(status, b"<html><body>Too Large</body></html>"))
    assert isinstance(outcome, APIError)
    assert not outcome.opens_circuit
    assert not outcome.retriable


def test_a_2xx_that_starts_like_datafasts_answer_but_is_not_json_is_not_delivered() -> None:
    """Found in review: only the prefix was read, so garbage after it counted as delivered."""
    body = b'{"status":"success"<html>a portal page that happens to start so</html>'
    outcome = decode_response(Response(200, body))
    assert isinstance(outcome, APIError)
    assert outcome.opens_circuit
