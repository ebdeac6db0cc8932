"""``datafast_async.testing``: the fake server enforces the API's contract over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import aiohttp
import attrs
import pytest

import datafast_async.testing
from datafast_async import DataFast, Goal, RetryPolicy
from datafast_async.testing import FakeDataFast, FakeRequest, ThreadedFakeDataFast

GOALS = "/api/v1/goals"
BODY = {"datafast_visitor_id": "visitor-1", "name": "signup"}


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def message(self) -> str:
        """The message of DataFast's error envelope, which the answer must be."""
        body = self.json
        assert body["status"] == "error"
        assert body["error"]["code"] == self.status
        assert set(body) == {"status", "error"}
        return str(body["error"]["message"])


async def call(
    base_url: str,
    body: object = BODY,
    *,
    token: str | None = "df_test",
    params: Mapping[str, str] | None = None,
    data: bytes | None = None,
    content_type: str | None = "application/json",
    method: str = "POST",
    path: str = GOALS,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 5.0,
) -> Answer:
    """One request to the fake, in a session of its own unless one is given."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        response = await stack.enter_async_context(
            session.request(
                method,
                base_url + path,
                data=data if data is not None else json.dumps(body).encode(),
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout),
            )
        )
        return Answer(response.status, dict(response.headers), await response.text())


@pytest.fixture
async def fake() -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast() as server:
        yield server


# -- success ----------------------------------------------------------------------------------


async def test_a_valid_goal_gets_the_documented_success_answer(fake: FakeDataFast) -> None:
    answer = await call(fake.base_url)

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    data = answer.json["data"]
    assert answer.json == {"status": "success", "data": data}
    assert data[0]["message"] == "Custom event created successfully"
    assert re.fullmatch(r"[0-9a-f]{24}", data[0]["eventId"])


async def test_event_ids_are_unique_per_event(fake: FakeDataFast) -> None:
    answers = [await call(fake.base_url) for _ in range(20)]

    ids = {answer.json["data"][0]["eventId"] for answer in answers}
    assert len(ids) == 20


async def test_accepted_goals_are_recorded_normalised_and_in_order(fake: FakeDataFast) -> None:
    await call(fake.base_url, {"datafast_visitor_id": "v1", "name": "Sign Up"})
    await call(
        fake.base_url,
        {
            "visitorId": "v2",
            "name": "checkout:done",
            "description": "paid",
            "metadata": {"plan": "pro", "seats": 3, "trial": False, "price": 9.5},
        },
    )

    as_text = {"plan": "pro", "seats": "3", "trial": "false", "price": "9.5"}
    assert fake.goals == [Goal("v1", "sign_up"), Goal("v2", "checkout:done", "paid", as_text)]


async def test_the_sdk_client_delivers_through_the_fake(fake: FakeDataFast) -> None:
    fake.fail_next(503, retry_after=0)
    retry = RetryPolicy(initial_delay=0, max_delay=0)
    async with DataFast(fake.api_key, base_url=fake.base_url, retry=retry) as df:
        result = await df.send("visitor-1", "signup", metadata={"plan": "pro"})

    assert [r.status for r in fake.requests] == [503, 200]
    assert re.fullmatch(r"[0-9a-f]{24}", result.event_id or "")
    assert fake.goals == [Goal("visitor-1", "signup", None, {"plan": "pro"})]


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "df_test"}, "Missing API key"),
        ({"Authorization": "Basic df_test"}, "Missing API key"),
        ({"Authorization": "Bearer "}, "Missing API key"),
        ({"Authorization": "Bearer df_wrong"}, "Invalid API key"),
    ],
)
async def test_a_missing_or_wrong_token_gets_401(
    fake: FakeDataFast, headers: dict[str, str], message: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + GOALS, json=BODY, headers=headers) as response,
    ):
        answer = Answer(response.status, dict(response.headers), await response.text())

    assert answer.status == 401
    assert message in answer.message
    assert fake.goals == []


@pytest.mark.parametrize(
    ("params", "status"),
    [
        (None, 400),
        ({"websiteId": ""}, 400),
        ({"websiteId": "site-2"}, 403),
        ({"websiteId": "site-1"}, 200),
    ],
)
async def test_an_account_token_needs_the_website_id(
    params: dict[str, str] | None, status: int
) -> None:
    async with FakeDataFast(api_key="dft_account", website_id="site-1") as fake:
        answer = await call(fake.base_url, token="dft_account", params=params)

        assert answer.status == status
        assert len(fake.goals) == (status == 200)
        if status == 400:
            assert "websiteId" in answer.message


async def test_an_account_token_without_a_configured_website_accepts_any_website() -> None:
    async with FakeDataFast(api_key="dft_account") as fake:
        answer = await call(fake.base_url, token="dft_account", params={"websiteId": "any"})
        missing = await call(fake.base_url, token="dft_account")

    assert answer.status == 200
    assert missing.status == 400


async def test_a_website_key_needs_no_website_id(fake: FakeDataFast) -> None:
    assert (await call(fake.base_url)).status == 200


# -- validation -------------------------------------------------------------------------------


def _body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {**BODY, **changes}
    return {key: value for key, value in body.items() if value is not ...}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(_body(datafast_visitor_id=...), "datafast_visitor_id", id="no-visitor"),
        pytest.param(_body(datafast_visitor_id=""), "datafast_visitor_id", id="empty-visitor"),
        pytest.param(_body(datafast_visitor_id=7), "datafast_visitor_id", id="int-visitor"),
        pytest.param(_body(name=...), "name is required", id="no-name"),
        pytest.param(_body(name=5), "name must be a str", id="int-name"),
        pytest.param(_body(name=""), "must not be empty", id="empty-name"),
        pytest.param(_body(name="sign/up"), "may only contain", id="name-chars"),
        pytest.param(_body(name="é"), "may only contain", id="name-non-ascii"),
        pytest.param(_body(name="a" * 65), "at most 64", id="name-length"),
        pytest.param(_body(name="identify"), "reserved", id="reserved"),
        pytest.param(_body(name="Identify"), "reserved", id="reserved-normalised"),
        pytest.param(_body(description=None), "description", id="null-description"),
        pytest.param(_body(description=3), "description", id="int-description"),
        pytest.param(_body(metadata=None), "metadata must be an object", id="null-metadata"),
        pytest.param(_body(metadata=["a"]), "metadata must be an object", id="list-metadata"),
        pytest.param(
            _body(metadata={f"k{i}": "v" for i in range(11)}), "at most 10 keys", id="11-keys"
        ),
        pytest.param(_body(metadata={"Plan": "pro"}), "'Plan'", id="key-uppercase"),
        pytest.param(_body(metadata={"a.b": "x"}), "'a.b'", id="key-chars"),
        pytest.param(_body(metadata={"k" * 65: "x"}), "64", id="key-length"),
        pytest.param(_body(metadata={"plan": "x" * 256}), "at most 255", id="value-length"),
        pytest.param(_body(metadata={"plan": None}), "string, number", id="null-value"),
        pytest.param(_body(metadata={"plan": ["pro"]}), "string, number", id="list-value"),
        pytest.param(["not", "an", "object"], "Invalid JSON body", id="json-array"),
    ],
)
async def test_each_broken_rule_gets_400_with_a_message(
    fake: FakeDataFast, body: object, message: str
) -> None:
    answer = await call(fake.base_url, body)

    assert answer.status == 400
    assert message in answer.message
    assert fake.goals == []


async def test_the_limits_themselves_are_accepted(fake: FakeDataFast) -> None:
    metadata = {f"{i}" + "k" * 63: "v" * 255 for i in range(10)}
    answer = await call(fake.base_url, _body(name="a" * 64, metadata=metadata))

    assert answer.status == 200
    assert fake.goals[0].metadata == metadata


@pytest.mark.parametrize("data", [b"{not json", b"", b"NaN", b'{"name": NaN}', b"\xff"])
async def test_a_body_that_is_not_json_gets_400(fake: FakeDataFast, data: bytes) -> None:
    answer = await call(fake.base_url, data=data)

    assert answer.status == 400
    assert "Invalid JSON body" in answer.message
    assert fake.requests[-1].json is None


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_gets_400(
    fake: FakeDataFast, content_type: str | None
) -> None:
    answer = await call(fake.base_url, content_type=content_type)

    assert answer.status == 400
    assert "Content-Type" in answer.message


# -- visitors, paths, methods -----------------------------------------------------------------


async def test_a_visitor_outside_known_visitors_gets_404() -> None:
    async with FakeDataFast(known_visitors={"visitor-1"}) as fake:
        known = await call(fake.base_url, _body(datafast_visitor_id="visitor-1"))
        unknown = await call(fake.base_url, _body(datafast_visitor_id="visitor-2"))
        fake.known_visitors = None
        now_accepted = await call(fake.base_url, _body(datafast_visitor_id="visitor-2"))

    assert known.status == 200
    assert unknown.status == 404
    assert unknown.message == "Visitor has no pageviews on this website"
    assert now_accepted.status == 200
    assert [goal.visitor_id for goal in fake.goals] == ["visitor-1", "visitor-2"]


async def test_other_paths_get_404_and_other_methods_405(fake: FakeDataFast) -> None:
    other_path = await call(fake.base_url, path="/api/v1/goal")
    root = await call(fake.base_url, method="GET", path="/")
    get = await call(fake.base_url, method="GET")

    assert other_path.status == 404
    assert "Not found" in other_path.message
    assert root.status == 404
    assert get.status == 405
    assert get.headers["Allow"] == "POST, DELETE"
    assert "GET" in get.message


# -- scripted answers -------------------------------------------------------------------------


async def test_fail_next_answers_the_status_with_retry_after_then_succeeds(
    fake: FakeDataFast,
) -> None:
    fake.fail_next(429, retry_after=2)

    limited = await call(fake.base_url)
    after = await call(fake.base_url)

    assert limited.status == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.message == "Too Many Requests"
    assert after.status == 200
    assert "Retry-After" not in after.headers
    assert fake.goals == [Goal("visitor-1", "signup")]


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(0, "0"), (1.5, "1.5"), (3.0, "3"), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
async def test_retry_after_is_seconds_or_sent_as_is(
    fake: FakeDataFast, retry_after: float | str, header: str | None
) -> None:
    fake.fail_next(503, retry_after=retry_after)

    answer = await call(fake.base_url)

    assert answer.headers["Retry-After"] == (header or retry_after)


async def test_scripted_answers_are_used_in_order_one_per_request(fake: FakeDataFast) -> None:
    fake.fail_next(500, times=2)
    fake.fail_next(401)

    statuses = [(await call(fake.base_url)).status for _ in range(4)]

    assert statuses == [500, 500, 401, 200]
    assert len(fake.goals) == 1


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_statuses_answer_an_html_page(fake: FakeDataFast, status: int) -> None:
    fake.fail_next(status)

    answer = await call(fake.base_url)

    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.text.startswith(f"<html><body><h1>{status} ")


async def test_disconnect_drops_the_connection_without_an_answer(fake: FakeDataFast) -> None:
    fake.fail_next(disconnect=True)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(fake.base_url)

    assert fake.goals == []
    assert fake.requests[-1].status is None
    assert (await call(fake.base_url)).status == 200


async def test_a_delay_without_status_is_a_slow_success(fake: FakeDataFast) -> None:
    fake.fail_next(delay=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()

    answer = await call(fake.base_url)

    assert answer.status == 200
    assert loop.time() - started >= 0.05
    assert len(fake.goals) == 1


async def test_a_delay_longer_than_the_client_timeout_is_a_hang() -> None:
    async with FakeDataFast() as fake:
        fake.fail_next(delay=60)
        with pytest.raises(asyncio.TimeoutError):
            await call(fake.base_url, timeout=0.1)
    # Closing the server ended the held request without recording the goal.
    assert fake.goals == []
    assert fake.requests[-1].status is None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((200,), {}),
        ((600,), {}),
        ((True,), {}),
        ((500,), {"disconnect": True}),
        ((500,), {"times": 0}),
        ((500,), {"retry_after": -1}),
        ((500,), {"retry_after": float("inf")}),
        ((), {"delay": -1}),
        ((), {"delay": float("nan")}),
    ],
)
def test_fail_next_refuses_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by argument
        FakeDataFast().fail_next(*args, **kwargs)


async def test_fail_rate_injects_only_the_documented_faults() -> None:
    async with FakeDataFast(fail_rate=1.0, seed=7) as fake:
        seen: set[object] = set()
        for _ in range(40):
            try:
                answer = await call(fake.base_url)
            except aiohttp.ServerDisconnectedError:
                seen.add("disconnect")
            else:
                seen.add((answer.status, answer.headers.get("Retry-After")))

    assert seen == {(500, None), (502, None), (503, "0"), (429, "0"), "disconnect"}
    assert fake.goals == []


async def test_the_same_seed_injects_the_same_faults() -> None:
    async def statuses() -> list[int | None]:
        async with FakeDataFast(fail_rate=0.5, seed=42) as fake:
            for _ in range(20):
                with contextlib.suppress(aiohttp.ServerDisconnectedError):
                    await call(fake.base_url)
            return [r.status for r in fake.requests]

    first = await statuses()

    assert first == await statuses()
    assert 200 in first
    assert set(first) - {200}


# -- records, bounds, reset -------------------------------------------------------------------


async def test_requests_are_recorded_with_what_was_sent_and_answered(fake: FakeDataFast) -> None:
    await call(fake.base_url, params={"websiteId": "w"})

    (record,) = fake.requests
    assert record.method == "POST"
    assert record.path == GOALS
    assert record.query == {"websiteId": "w"}
    assert record.headers["Authorization"] == "Bearer df_test"
    assert record.json == BODY
    assert record.status == 200


async def test_requests_keep_only_the_most_recent() -> None:
    class SmallFake(FakeDataFast):
        MAX_REQUESTS = 3

    async with SmallFake() as fake:
        for i in range(5):
            await call(fake.base_url, _body(name=f"goal-{i}"))

    assert [r.json["name"] for r in fake.requests] == ["goal-2", "goal-3", "goal-4"]
    assert len(fake.goals) == 5
    assert FakeDataFast.MAX_REQUESTS == 10_000
    assert FakeDataFast()._requests.maxlen == 10_000


async def test_reset_clears_goals_requests_and_scripted_answers(fake: FakeDataFast) -> None:
    await call(fake.base_url)
    fake.fail_next(500, times=3)
    await call(fake.base_url)

    fake.reset()

    assert fake.goals == []
    assert fake.requests == []
    assert fake.connections == 0
    assert (await call(fake.base_url)).status == 200


def test_reprs_never_show_the_whole_key() -> None:
    key = "df_0123456789abcdefwxyz"
    fake = FakeDataFast(api_key=key)
    record = FakeRequest("POST", GOALS, {}, {"Authorization": f"Bearer {key}"}, None, 200)

    assert key not in repr(fake)
    assert key not in repr(record)
    assert "wxyz" in repr(record)


# -- concurrency, connections, pause ----------------------------------------------------------


async def test_pause_holds_requests_and_counts_the_concurrency(fake: FakeDataFast) -> None:
    fake.pause()
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(call(fake.base_url, session=session)) for _ in range(3)]
        await fake.wait_held(3)
        assert fake.in_flight == 3
        assert fake.goals == []
        fake.resume()
        answers = await asyncio.gather(*tasks)

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert fake.max_concurrent == 3
    assert fake.connections == 3
    assert fake.in_flight == 0


async def test_keep_alive_requests_count_as_one_connection(fake: FakeDataFast) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            await call(fake.base_url, session=session)

    assert fake.connections == 1
    assert fake.max_concurrent == 1


async def test_wait_held_times_out_when_too_few_are_held(fake: FakeDataFast) -> None:
    fake.pause()

    with pytest.raises(TimeoutError, match="0 request"):
        await fake.wait_held(1, timeout=0.01)


async def test_close_does_not_hang_on_held_requests_or_idle_connections() -> None:
    fake = FakeDataFast()
    await fake.start()
    async with aiohttp.ClientSession() as idle, aiohttp.ClientSession() as busy:
        await call(fake.base_url, session=idle)  # leaves an idle keep-alive connection
        fake.pause()
        held = asyncio.create_task(call(fake.base_url, session=busy))
        await fake.wait_held(1)

        await asyncio.wait_for(fake.close(), 3)

        with pytest.raises(aiohttp.ServerDisconnectedError):
            await held
    assert [r.status for r in fake.requests] == [200, None]
    assert fake.goals == [Goal("visitor-1", "signup")]


async def test_a_closed_fake_can_start_again() -> None:
    fake = FakeDataFast()
    async with fake:
        await call(fake.base_url)
    async with fake:
        assert (await call(fake.base_url)).status == 200
    assert len(fake.goals) == 2


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(datafast_async.testing.__all__) == [
        "FakeDataFast",
        "FakeRequest",
        "ThreadedFakeDataFast",
    ]


# -- threaded mode ----------------------------------------------------------------------------


def test_the_threaded_fake_serves_a_synchronous_caller() -> None:
    with ThreadedFakeDataFast(known_visitors={"visitor-1"}) as fake:
        fake.fail_next(503, retry_after=1)

        first = asyncio.run(call(fake.base_url))
        second = asyncio.run(call(fake.base_url))
        unknown = asyncio.run(call(fake.base_url, _body(datafast_visitor_id="visitor-2")))

        assert (first.status, first.headers["Retry-After"]) == (503, "1")
        assert second.status == 200
        assert unknown.status == 404
        assert fake.goals == [Goal("visitor-1", "signup")]
        assert [r.status for r in fake.requests] == [503, 200, 404]
        fake.reset()
        assert fake.requests == []


def test_the_threaded_fake_can_hold_requests_from_the_main_thread() -> None:
    with ThreadedFakeDataFast() as fake:
        fake.pause()

        async def scenario() -> list[Answer]:
            async with aiohttp.ClientSession() as session:
                tasks = [asyncio.create_task(call(fake.base_url, session=session)) for _ in "ab"]
                # The test's loop must keep running while the fake's thread waits for both.
                await asyncio.get_running_loop().run_in_executor(None, fake.wait_held, 2)
                fake.resume()
                return list(await asyncio.gather(*tasks))

        answers = asyncio.run(scenario())

        assert [answer.status for answer in answers] == [200, 200]
        assert fake.max_concurrent == 2


def test_the_threaded_fake_stops_its_thread_on_close() -> None:
    before = set(threading.enumerate())
    fake = ThreadedFakeDataFast()
    fake.start()
    fake.pause()
    held = threading.Thread(target=lambda: asyncio.run(_swallow(call(fake.base_url))))
    held.start()
    fake.wait_held(1)

    fake.close()
    held.join(5)

    assert not held.is_alive()
    assert set(threading.enumerate()) == before
    fake.close()  # idempotent


async def _swallow(answer: Awaitable[object]) -> None:
    with contextlib.suppress(aiohttp.ClientError):
        await answer


def test_the_threaded_fake_reports_a_port_in_use() -> None:
    with ThreadedFakeDataFast() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="address"), ThreadedFakeDataFast(port=port):
            pass


# -- behaving like a real API under load ---------------------------------------------------------


async def test_requests_beyond_the_capacity_get_429_without_retry_after() -> None:
    async with FakeDataFast(capacity=2, latency=0.05) as fake, aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(call(fake.base_url, session=session) for _ in range(5)))
        statuses = sorted(answer.status for answer in answers)
        assert statuses == [200, 200, 429, 429, 429]
        refused = [answer for answer in answers if answer.status == 429]
        assert all("Retry-After" not in answer.headers for answer in refused)
        assert fake.over_capacity_answers == 3
        assert len(fake.goals) == 2  # a refused request records nothing


async def test_over_capacity_can_be_a_gateways_503_page() -> None:
    async with FakeDataFast(capacity=1, latency=0.05, over_capacity=503) as fake:
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(
                *(call(fake.base_url, session=session) for _ in range(2))
            )
        refused = [answer for answer in answers if answer.status != 200]
        assert [answer.status for answer in refused] == [503]
        assert "<html>" in refused[0].text


async def test_a_rate_limit_admits_a_tenth_of_a_second_of_requests_at_once() -> None:
    async with FakeDataFast(rate_limit=50) as fake, aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(call(fake.base_url, session=session) for _ in range(20)))
        admitted = sum(answer.status == 200 for answer in answers)
        # A bucket of 5, refilled at 50/s while they arrive (a slow machine lets in a few more).
        assert 5 <= admitted <= 12
        assert fake.over_capacity_answers == 20 - admitted


async def test_latency_may_be_a_distribution() -> None:
    draws: list[float] = []

    def latency() -> float:
        draws.append(0.001 * (len(draws) + 1))
        return draws[-1]

    async with FakeDataFast(latency=latency) as fake:
        for _ in range(3):
            assert (await call(fake.base_url)).status == 200
    assert draws == [0.001, 0.002, 0.003]


@pytest.mark.parametrize(
    "kwargs",
    [{"jitter": 1.5}, {"capacity": 0}, {"rate_limit": 0}, {"over_capacity": 500}],
)
def test_load_settings_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FakeDataFast(**kwargs)
