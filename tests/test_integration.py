"""What only a socket shows: the real client against FakeDataFast on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from datafast_async import (
    AuthenticationError,
    BadRequestError,
    DataFast,
    Goal,
    PermissionDeniedError,
    RetryPolicy,
    ServerError,
    ShutdownError,
    Stats,
    TransportError,
    VisitorNotFoundError,
)
from datafast_async.testing import FakeDataFast, ThreadedFakeDataFast

from ._fakes import NO_WAIT

pytestmark = pytest.mark.integration


@pytest.fixture
async def fake() -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast() as server:
        yield server


def client_for(fake: FakeDataFast, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", NO_WAIT)
    kwargs.setdefault("timeout", 5.0)
    return DataFast(fake.api_key, base_url=fake.base_url, **kwargs)


async def test_goals_reach_the_server_with_the_contracts_headers(fake: FakeDataFast) -> None:
    async with client_for(fake) as df:
        result = await (
            await df.track(
                "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd",
                "Newsletter Signup",
                metadata={"plan": "pro"},
            )
        ).wait(5)
    assert result.event_id is not None
    assert len(result.event_id) == 24
    assert fake.goals == [
        Goal("a3ab2331-989f-4cfa-91c6-2461c9e3c6bd", "newsletter_signup", metadata={"plan": "pro"})
    ]
    request = fake.requests[-1]
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {fake.api_key}"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("datafast-async/")
    assert request.json == {
        "datafast_visitor_id": "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd",
        "name": "newsletter_signup",
        "metadata": {"plan": "pro"},
    }


async def test_an_account_token_sends_the_website_id() -> None:
    async with (
        FakeDataFast(
            api_key="dft_account_token_1234", website_id="665f0b3c4d2e1a0012345678"
        ) as fake,
        DataFast(fake.api_key, website_id="665f0b3c4d2e1a0012345678", base_url=fake.base_url) as df,
    ):
        await df.send("v", "signup")
    assert fake.requests[-1].query == {"websiteId": "665f0b3c4d2e1a0012345678"}


async def test_the_servers_refusals_arrive_typed_with_its_message(fake: FakeDataFast) -> None:
    async with DataFast("df_wrong_key_00000000", base_url=fake.base_url) as df:
        with pytest.raises(AuthenticationError) as info:
            await df.send("v", "signup")
    assert info.value.status == 401
    assert info.value.message
    assert "wrong_key" not in str(info.value)


async def test_a_visitor_without_pageviews_is_a_final_404() -> None:
    async with FakeDataFast(known_visitors={"known"}) as fake, client_for(fake) as df:
        assert (await df.send("known", "signup")).event_id
        with pytest.raises(VisitorNotFoundError):
            await df.send("stranger", "signup")
    assert len(fake.requests) == 2


async def test_scripted_failures_are_retried_and_final_ones_are_not(fake: FakeDataFast) -> None:
    fake.fail_next(503, times=2)
    fake.fail_next(disconnect=True)
    fake.fail_next(502)
    async with client_for(fake) as df:
        delivery = df.track_nowait("v", "signup")
        await delivery.wait(5)
        fake.fail_next(403)
        with pytest.raises(PermissionDeniedError):
            await df.track_nowait("v", "other").wait(5)
    assert [r.status for r in fake.requests] == [503, 503, None, 502, 200, 403]
    assert df.stats() == Stats(enqueued=2, delivered=1, failed=1, retries=4)


async def test_a_gateways_html_page_becomes_a_readable_error(fake: FakeDataFast) -> None:
    fake.fail_next(502, times=3)
    async with client_for(fake, retry=RetryPolicy(max_attempts=3, initial_delay=0)) as df:
        with pytest.raises(ServerError) as info:
            await df.send("v", "signup")
    assert "<" not in info.value.message
    assert "Bad Gateway" in info.value.message


async def test_a_hung_request_times_out_and_is_retried(fake: FakeDataFast) -> None:
    fake.fail_next(delay=30.0)
    async with client_for(fake, timeout=0.2) as df:
        result = await df.send("v", "signup")
    assert result.event_id
    assert len(fake.goals) == 1


async def test_a_refused_connection_is_a_transport_error() -> None:
    async with FakeDataFast() as fake:
        base_url = fake.base_url
    async with DataFast(
        "df_unit_test_key", base_url=base_url, retry=RetryPolicy(max_attempts=2, initial_delay=0)
    ) as df:
        with pytest.raises(TransportError, match="connect"):
            await df.send("v", "signup")


async def test_requests_share_a_few_keep_alive_connections(fake: FakeDataFast) -> None:
    async with client_for(fake, concurrency=4) as df:
        for i in range(200):
            df.track_nowait("v", f"g{i}")
        assert await df.flush(10)
    assert len(fake.goals) == 200
    assert fake.connections <= 4


async def test_in_flight_requests_never_exceed_concurrency(fake: FakeDataFast) -> None:
    fake.pause()
    async with client_for(fake, concurrency=3) as df:
        for i in range(20):
            df.track_nowait("v", f"g{i}")
        sent = asyncio.ensure_future(df.send("v", "direct"))
        await fake.wait_held(3)
        assert df.stats().in_flight == 3
        fake.resume()
        await sent
        assert await df.flush(10)
    assert fake.max_concurrent == 3
    assert len(fake.goals) == 21


async def test_shutdown_with_requests_hanging_reports_them(fake: FakeDataFast) -> None:
    fake.pause()
    failures: list[Exception] = []
    df = client_for(fake, concurrency=2, on_failure=lambda g, e: failures.append(e))
    await df.start()
    for i in range(5):
        df.track_nowait("v", f"g{i}")
    await fake.wait_held(2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stats = await df.aclose(timeout=0.2)
    assert loop.time() - started < 3
    assert stats == Stats(enqueued=5, failed=5)
    assert len(failures) == 5
    assert all(isinstance(e, ShutdownError) for e in failures)
    fake.resume()


async def test_a_session_of_your_own_is_used_and_left_open(fake: FakeDataFast) -> None:
    async with aiohttp.ClientSession() as session:
        async with client_for(fake, session=session) as df:
            await df.send("v", "signup")
        assert not session.closed
        async with session.get(fake.base_url + "/") as response:
            assert response.status == 404


async def test_a_session_whose_class_overrides_post_has_its_post_called(
    fake: FakeDataFast,
) -> None:
    """The transport calls aiohttp's request coroutine directly (faster than post()), but
    only for aiohttp's own post(): a session class of the user's that overrides it (to sign,
    trace, count requests) keeps its post() called for every goal."""
    calls: list[str] = []

    with warnings.catch_warnings():  # aiohttp discourages it, but it is done
        warnings.simplefilter("ignore", DeprecationWarning)

        class Traced(aiohttp.ClientSession):
            def post(self, url: Any, **kwargs: Any) -> Any:
                calls.append(str(url))
                return super().post(url, **kwargs)

    async with Traced() as session, client_for(fake, session=session) as df:
        for i in range(3):
            df.track_nowait("v", f"t{i}")
        assert await df.flush(timeout=10) is True
    assert len(calls) == 3
    assert all(url.endswith("/api/v1/goals") for url in calls)
    assert len(fake.goals) == 3


async def test_track_nowait_from_a_worker_thread(fake: FakeDataFast) -> None:
    async with client_for(fake) as df:
        thread = threading.Thread(
            target=lambda: [df.track_nowait("v", f"t{i}") for i in range(100)]
        )
        thread.start()
        await asyncio.to_thread(thread.join)
        assert await df.flush(10)
    assert len(fake.goals) == 100


def test_the_same_client_runs_again_in_a_new_event_loop() -> None:
    with ThreadedFakeDataFast() as fake:
        df = DataFast(fake.api_key, base_url=fake.base_url)

        async def lifespan(name: str) -> Stats:
            async with df:
                await df.track_nowait("v", name).wait(5)
            return df.stats()

        for name in ("one", "two", "three"):
            assert asyncio.run(lifespan(name)) == Stats(enqueued=1, delivered=1)
        assert [goal.name for goal in fake.goals] == ["one", "two", "three"]


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not on Windows")
def test_the_sdk_runs_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[str, Stats, int]:
        async with FakeDataFast() as fake:
            fake.fail_next(503)
            fake.fail_next(disconnect=True)
            async with client_for(fake) as df:
                for i in range(50):
                    df.track_nowait("v", f"g{i}")
                await df.flush(10)
            return type(asyncio.get_running_loop()).__module__, df.stats(), len(fake.goals)

    loop_module, stats, delivered = uvloop.run(main())
    assert loop_module.startswith("uvloop")
    assert stats == Stats(enqueued=50, delivered=50, retries=2)
    assert delivered == 50


async def test_metadata_numbers_reach_the_server_as_text(fake: FakeDataFast) -> None:
    async with client_for(fake) as df:
        await df.send(
            "v", "purchase", description="Pro plan", metadata={"amount": 49.5, "trial": False}
        )
    assert fake.requests[-1].json == {
        "datafast_visitor_id": "v",
        "name": "purchase",
        "description": "Pro plan",
        "metadata": {"amount": "49.5", "trial": "false"},
    }
    assert json.dumps(fake.requests[-1].json)


async def test_a_bad_request_from_the_server_is_final(fake: FakeDataFast) -> None:
    fake.fail_next(400)
    async with client_for(fake) as df:
        with pytest.raises(BadRequestError):
            await df.send("v", "signup")
    assert len(fake.requests) == 1


async def test_a_session_that_raises_for_status_still_gets_typed_api_errors(
    fake: FakeDataFast,
) -> None:
    fake.fail_next(400)
    async with (
        aiohttp.ClientSession(raise_for_status=True) as session,
        client_for(fake, session=session) as df,
    ):
        with pytest.raises(BadRequestError):
            await df.send("v", "signup")
    assert len(fake.requests) == 1


async def _serve(handler: Any) -> tuple[aiohttp.web.AppRunner, str]:
    app = aiohttp.web.Application()
    app.router.add_post("/api/v1/goals", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_an_answer_streamed_in_pieces_is_read_whole() -> None:
    # The body arrives in three writes with pauses between them, without a Content-Length:
    # the transport must read past its first chunk.
    answer = json.dumps(
        {"status": "success", "data": [{"message": "ok", "eventId": "evt_" + "x" * 3000}]}
    ).encode()

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        await request.read()
        response = aiohttp.web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(answer), 1100):
            await response.write(answer[start : start + 1100])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    runner, base_url = await _serve(handler)
    try:
        async with DataFast("df_test_key", base_url=base_url, retry=NO_WAIT) as df:
            result = await df.send("v", "signup")
    finally:
        await runner.cleanup()
    assert result.event_id == "evt_" + "x" * 3000


async def test_an_endless_error_body_is_read_only_up_to_the_cap() -> None:
    # A 503 whose body would go on for 64 MiB: the error keeps the first 4,096 characters, and
    # the client stops reading at its 64 KiB cap and drops the connection, so the server is
    # cut off long before the end (only what the sockets' buffers take gets written).
    chunk = b"<p>overloaded</p>" + b"." * (64 * 1024)
    endless = 1024 * len(chunk)
    written = 0
    server_done = asyncio.Event()

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        nonlocal written
        try:
            await request.read()
            response = aiohttp.web.StreamResponse(status=503)
            response.enable_chunked_encoding()
            await response.prepare(request)
            while written < endless:
                await response.write(chunk)
                written += len(chunk)
            await response.write_eof()
            return response
        finally:
            server_done.set()

    runner, base_url = await _serve(handler)
    try:
        async with DataFast(
            "df_test_key", base_url=base_url, retry=RetryPolicy(max_attempts=1)
        ) as df:
            with pytest.raises(ServerError) as info:
                await df.send("v", "signup")
        await asyncio.wait_for(server_done.wait(), timeout=10)
    finally:
        await runner.cleanup()
    assert info.value.status == 503
    assert "overloaded" in info.value.message
    assert info.value.body is not None
    assert len(info.value.body) == 4096
    assert written < endless // 2


async def _serve_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 abc Broken\r\n\r\n")  # not a status line
        await writer.drain()
    finally:
        writer.close()


async def test_a_malformed_answer_never_carries_the_key_in_its_error_chain() -> None:
    """aiohttp's exception for a malformed answer holds the request's headers (the key):
    the TransportError neither chains it as __cause__ nor keeps it as __context__."""
    key = "df_SECRET_KEY_0123456789abcdef"
    server = await asyncio.start_server(_serve_garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with DataFast(
            key,
            base_url=f"http://127.0.0.1:{port}",
            retry=RetryPolicy(max_attempts=1),
            timeout=5,
        ) as df:
            with pytest.raises(TransportError) as info:
                await df.send("v", "signup")
            delivery = await df.track("v", "signup")
            await df.flush(5)
    finally:
        server.close()
        await server.wait_closed()
    for error in (info.value, delivery.error):
        chain: list[BaseException] = []
        link: BaseException | None = error
        while link is not None and len(chain) < 10:
            chain.append(link)
            link = link.__cause__ or link.__context__
        text = " ".join(repr(e) + repr(e.args) + repr(vars(e)) for e in chain)
        assert key not in text
        assert key[3:] not in text


async def test_a_connection_that_is_never_made_is_not_maybe_delivered() -> None:
    """A server whose listen queue is full drops the SYN: the request never left, so the
    timeout says maybe_delivered=False (found in review: it said True)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepts: the queue fills at once
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        async with DataFast(
            "df_unit_test_key_0001",
            base_url=f"http://127.0.0.1:{port}",
            timeout=0.5,
            retry=RetryPolicy(max_attempts=1),
        ) as df:
            with pytest.raises(TransportError) as info:
                await df.send("v", "signup")
        assert "timeout" in str(info.value)
        assert info.value.maybe_delivered is False
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
