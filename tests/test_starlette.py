"""``datafast_async.starlette``: the lifespan, the dependencies and the flush-after-response
middleware, in FastAPI (the example app, through Starlette's ``TestClient``) and plain
Starlette (driven over ASGI directly when the order of events matters)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from datafast_async import ClientClosedError, ConfigurationError, DataFast, ShutdownError
from datafast_async._transport import Request as TransportRequest
from datafast_async.starlette import (
    VISITOR_COOKIE,
    FlushAfterResponse,
    get_client,
    lifespan,
    visitor_id,
)
from datafast_async.testing import ThreadedFakeDataFast

from ._docs import page
from ._fakes import Recorder, ok

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
COOKIE = {"cookie": f"{VISITOR_COOKIE}=v_123"}
SIGNUP = {"email": "ada@example.com", "plan": "pro"}
MakeClient = Callable[..., DataFast]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """``examples/fastapi_app.py``, imported as a module (its ``app`` needs no key to build)."""
    name = "datafast_example_fastapi_app"
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


def goals(recorder: Recorder) -> list[tuple[str, str, dict[str, str] | None]]:
    return [
        (body["datafast_visitor_id"], body["name"], body.get("metadata"))
        for body in recorder.bodies
    ]


def http_scope(path: str = "/", *, cookie: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


# -- the example app, through TestClient ----------------------------------------------------


def test_example_app_delivers_on_every_run_of_one_app_and_client(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    """Each ``with TestClient(app)`` is a new lifespan run in a new event loop: all deliver."""
    df = make_client()
    app = example.create_app(df)
    for run in range(3):
        with TestClient(app) as client:
            assert app.state.datafast is df
            response = client.post("/signup", json=SIGNUP, headers=COOKIE)
            assert response.json() == {"ok": True}
            assert client.portal is not None
            assert client.portal.call(df.flush, 5.0)  # delivered while the app runs
            assert goals(recorder)[-1] == ("v_123", "signup", {"plan": "pro"})
        stats = df.stats()  # the run's final counters: aclose() ran at shutdown
        assert (stats.enqueued, stats.delivered, stats.queued, stats.in_flight) == (1, 1, 0, 0)
        assert len(recorder.transports) == run + 1
        assert recorder.transports[-1].closed
    assert len(recorder.bodies) == 3


def test_goals_still_queued_at_shutdown_are_delivered(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    async def slow(request: TransportRequest) -> Any:
        await asyncio.sleep(0.2)  # network latency: still in flight when the app stops
        return ok()

    recorder.answer = slow
    df = make_client(concurrency=1)
    with TestClient(example.create_app(df)) as client:
        client.post("/signup", json=SIGNUP, headers=COOKIE)
        client.get("/report.csv", headers=COOKIE)
    assert df.stats().delivered == 2
    assert sorted(name for _, name, _ in goals(recorder)) == ["report_download", "signup"]


def test_signup_without_the_cookie_tracks_nothing(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    df = make_client()
    with TestClient(example.create_app(df)) as client:
        assert client.post("/signup", json=SIGNUP).json() == {"ok": True}
    assert df.stats().enqueued == 0
    assert recorder.bodies == []


def test_def_endpoint_tracks_from_the_thread_pool(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    """The example's plain ``def`` endpoint runs off the loop and hands its goal over."""
    assert not inspect.iscoroutinefunction(example.report)  # FastAPI runs it in a thread
    threads: list[int] = []
    df = make_client(on_success=lambda goal, result: threads.append(threading.get_ident()))
    with TestClient(example.create_app(df)) as client:
        response = client.get("/report.csv", headers=COOKIE)
        assert response.status_code == 200
        assert response.text.startswith("month,signups")
        assert client.portal is not None
        assert client.portal.call(df.flush, 5.0)
        loop_thread = client.portal.call(lambda: threading.get_ident())
        assert goals(recorder) == [("v_123", "report_download", {"format": "csv"})]
    assert threads == [loop_thread]  # delivered by the app's event loop, not the worker


def test_example_app_as_pasted_reaches_a_real_server(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module's own ``app`` builds its client from the environment at each start-up."""
    with ThreadedFakeDataFast() as fake:
        monkeypatch.setenv("DATAFAST_API_KEY", fake.api_key)
        monkeypatch.setenv("DATAFAST_BASE_URL", fake.base_url)
        monkeypatch.delenv("DATAFAST_WEBSITE_ID", raising=False)
        monkeypatch.delenv("DATAFAST_ENABLED", raising=False)
        clients = []
        for _ in range(2):
            with TestClient(example.app) as client:
                clients.append(example.app.state.datafast)
                client.post("/signup", json=SIGNUP, headers=COOKIE)
                client.get("/report.csv", headers=COOKIE)
            assert clients[-1].stats().delivered == 2  # delivered by shutdown
        assert clients[0] is not clients[1]
        names = sorted(goal.name for goal in fake.goals)
        assert names == ["report_download", "report_download", "signup", "signup"]
        assert all(goal.visitor_id == "v_123" for goal in fake.goals)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGINT (Ctrl-C) to a process, then its stdout."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


@pytest.mark.integration
@pytest.mark.skipif(sys.platform == "win32", reason="Ctrl-C as SIGINT")
@pytest.mark.parametrize("how", ["argument", "PORT"])
def test_example_app_run_as_its_docstring_says_against_datafast_async_fake_server(
    tmp_path: Path, how: str
) -> None:
    """The docstring's commands: ``datafast-async fake-server`` in one terminal, the app in
    another (its port as an argument, or ``PORT``), a signup with the visitor's cookie."""
    docstring = EXAMPLE.read_text(encoding="utf-8").split('"""')[1]
    assert "datafast-async fake-server" in docstring
    assert "DATAFAST_API_KEY=df_test" in docstring
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAFAST_", "PORT"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "datafast_async", "fake-server", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    app: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        match = re.search(r"listening on (http://\S+)", server.stdout.readline())
        assert match is not None
        port = _free_port()
        app_env = {**env, "DATAFAST_BASE_URL": match.group(1), "DATAFAST_API_KEY": "df_test"}
        args = [sys.executable, str(EXAMPLE)]
        if how == "argument":
            args.append(str(port))
        else:
            app_env["PORT"] = str(port)
        app = subprocess.Popen(
            args, env=app_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert app.poll() is None, app.communicate()[1]
                assert time.monotonic() < deadline, "the app did not listen"
                time.sleep(0.05)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/signup",
            data=json.dumps(SIGNUP).encode(),
            headers={"Content-Type": "application/json", "Cookie": COOKIE["cookie"]},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == {"ok": True}
        for line in server.stdout:  # bounded: the server is stopped in finally
            if line.startswith("goal 1:"):
                assert "signup visitor=v_123" in line
                assert '"plan": "pro"' in line
                break
    finally:
        if app is not None:
            _stop(app)
        out = _stop(server)
    assert "1 goals accepted" in out


def test_the_examples_timing_claims_are_the_readmes_measurements() -> None:
    """A cost quoted in the example is one the README's "Performance" section measured."""
    example = EXAMPLE.read_text(encoding="utf-8")
    performance = page("performance.md")
    assert "microsecond" not in example
    claims = re.findall(r"about \d+(?:\.\d+)? µs", example)
    assert claims, "the example quotes no measured cost"
    assert "docs/performance.md" in example.replace("\n        # ", " ")
    for claim in claims:
        assert claim in performance, claim
    # The CHANGELOG's entry for the example quotes the same cost (it said 1.6 µs).
    changelog = (EXAMPLE.parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    entry = changelog.split("- `examples/fastapi_app.py` quotes the measured cost", 1)[1]
    entry = entry.split("\n- ", 1)[0].replace("\n  ", " ")
    assert re.findall(r"about \d+(?:\.\d+)? µs", entry) == sorted(set(claims)), entry


def test_lifespan_without_a_key_fails_at_start_up_not_at_import(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAFAST_API_KEY", raising=False)
    monkeypatch.delenv("DATAFAST_ENABLED", raising=False)
    app = example.create_app()  # building the app reads no setting
    with pytest.raises(ConfigurationError, match="DATAFAST_API_KEY"), TestClient(app):
        pass


def test_lifespan_builds_a_disabled_client_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATAFAST_API_KEY", raising=False)
    monkeypatch.setenv("DATAFAST_ENABLED", "0")

    async def endpoint(request: Request) -> Response:
        delivery = await get_client(request).track("v_1", "signup")
        return PlainTextResponse(str(delivery.result.message if delivery.result else None))

    app = Starlette(routes=[Route("/", endpoint)], lifespan=lifespan())
    with TestClient(app) as client:
        assert client.get("/").text == "disabled"


# -- plain Starlette, composition, websockets ------------------------------------------------


def test_plain_starlette_app_with_the_lifespan(make_client: MakeClient, recorder: Recorder) -> None:
    async def signup(request: Request) -> Response:
        vid = visitor_id(request)
        if vid:
            await get_client(request).track(vid, "signup")
        return PlainTextResponse("ok")

    df = make_client()
    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])], lifespan=lifespan(df))
    for _ in range(2):
        with TestClient(app) as client:
            assert client.post("/signup", headers=COOKIE).text == "ok"
            assert client.post("/signup").text == "ok"  # no cookie: nothing tracked
        assert df.stats().delivered == 1
    assert goals(recorder) == [("v_123", "signup", None)] * 2


def test_lifespan_composes_with_the_apps_own_lifespan(
    make_client: MakeClient, recorder: Recorder
) -> None:
    events: list[str] = []
    df = make_client()

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        events.append("app start")
        async with lifespan(df)(app):
            await get_client_from(app).track("server", "app_started")
            events.append("datafast ready")
            yield {"greeting": "hello"}
            await get_client_from(app).track("server", "app_stopping")
        events.append("datafast closed")

    def get_client_from(app: Starlette) -> DataFast:
        client: DataFast = app.state.datafast
        return client

    async def home(request: Request) -> Response:
        await get_client(request).track("v_1", "home")
        return PlainTextResponse(request.state.greeting)

    app = Starlette(routes=[Route("/", home)], lifespan=app_lifespan)
    with TestClient(app) as client:
        assert client.get("/").text == "hello"
        assert events == ["app start", "datafast ready"]
    assert events == ["app start", "datafast ready", "datafast closed"]
    assert sorted(goals(recorder)) == [
        ("server", "app_started", None),
        ("server", "app_stopping", None),
        ("v_1", "home", None),
    ]
    assert df.stats().delivered == 3


async def test_lifespan_starts_the_client_and_closes_it_at_exit(
    make_client: MakeClient, recorder: Recorder
) -> None:
    df = make_client()
    app = Starlette()
    for _ in range(2):
        async with lifespan(df)(app):
            assert app.state.datafast is df
            delivery = await df.track("v_1", "signup")
            assert await df.flush(5.0)
            assert delivery.done()
        with pytest.raises(ClientClosedError):
            await df.track("v_1", "signup")
    assert goals(recorder) == [("v_1", "signup", None)] * 2


async def test_lifespan_closes_the_client_when_the_app_fails(make_client: MakeClient) -> None:
    df = make_client()

    async def serve_then_fail() -> None:
        async with lifespan(df)(Starlette()):
            await df.track("v_1", "signup")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await serve_then_fail()
    assert df.stats().delivered == 1  # flushed on the way out
    with pytest.raises(ClientClosedError):
        await df.track("v_1", "signup")


def test_lifespan_rejects_what_is_not_a_client() -> None:
    with pytest.raises(ConfigurationError, match="DataFast client"):
        lifespan("df_key")  # type: ignore[arg-type]


def test_websocket_endpoints_use_the_dependencies(
    make_client: MakeClient, recorder: Recorder
) -> None:
    df = make_client()
    app = FastAPI(lifespan=lifespan(df))

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket,
        client: Annotated[DataFast, Depends(get_client)],
        vid: Annotated[str | None, Depends(visitor_id)],
    ) -> None:
        await websocket.accept()
        if vid:
            await client.track(vid, "chat_opened")
        await websocket.send_text(vid or "anonymous")
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers=COOKIE) as websocket:
            assert websocket.receive_text() == "v_123"
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_text() == "anonymous"
    assert goals(recorder) == [("v_123", "chat_opened", None)]


# -- visitor_id and get_client as plain calls ------------------------------------------------


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (f"theme=dark; {VISITOR_COOKIE}=abc-123; other=1", "abc-123"),
        ("theme=dark", None),
        (None, None),
        (f"{VISITOR_COOKIE}=", None),
    ],
)
def test_visitor_id_reads_the_datafast_cookie(cookie: str | None, expected: str | None) -> None:
    assert visitor_id(Request(http_scope(cookie=cookie))) == expected


def test_get_client_without_the_lifespan_explains_what_is_missing() -> None:
    request = Request({**http_scope(), "app": Starlette()})
    with pytest.raises(ConfigurationError, match=r"lifespan.*TestClient\(app\) as client"):
        get_client(request)
    with pytest.raises(ConfigurationError, match="lifespan"):
        get_client(Request(http_scope()))  # no app in the scope at all


def test_get_client_in_an_app_whose_lifespan_did_not_run(
    example: ModuleType, make_client: MakeClient
) -> None:
    app = example.create_app(make_client())
    client = TestClient(app)  # without `with`: the lifespan does not run
    with pytest.raises(ConfigurationError, match="lifespan has not run"):
        client.post("/signup", json=SIGNUP, headers=COOKIE)


def test_get_client_after_an_earlier_lifespan_run_says_to_enter_the_lifespan(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    """An earlier test ran the lifespan (which closed the client at shutdown); this one forgot
    `with`: the error says what to do, not just that the client is closed."""
    app = example.create_app(make_client())
    with TestClient(app) as client:
        assert client.post("/signup", json=SIGNUP, headers=COOKIE).json() == {"ok": True}
    client = TestClient(app)  # without `with`: the lifespan does not run
    with pytest.raises(
        ConfigurationError, match=r"lifespan is not running.*with TestClient\(app\) as client"
    ):
        client.post("/signup", json=SIGNUP, headers=COOKIE)
    with TestClient(app) as client:  # entering the lifespan again starts the client again
        assert client.post("/signup", json=SIGNUP, headers=COOKIE).json() == {"ok": True}
    assert len(recorder.bodies) == 2


async def test_get_client_as_a_plain_call_after_the_lifespan_ended(
    make_client: MakeClient,
) -> None:
    app = Starlette()
    df = make_client()
    request = Request({**http_scope(), "app": app})
    async with lifespan(df)(app):
        assert get_client(request) is df
    with pytest.raises(ConfigurationError, match="lifespan is not running"):
        get_client(request)
    async with lifespan(df)(app):  # a new run: the client again
        assert get_client(request) is df


async def test_get_client_leaves_a_client_put_on_app_state_by_hand_alone(
    make_client: MakeClient,
) -> None:
    app = Starlette()
    df = make_client()
    app.state.datafast = df  # no lifespan: the app manages the client itself
    await df.aclose()
    assert get_client(Request({**http_scope(), "app": app})) is df


# -- FlushAfterResponse --------------------------------------------------------------------


def flushing_app(df: DataFast, *, timeout: float, deliveries: list[Any] | None = None) -> Starlette:
    async def signup(request: Request) -> Response:
        vid = visitor_id(request)
        assert vid is not None
        delivery = await get_client(request).track(vid, "signup")
        if deliveries is not None:
            deliveries.append(delivery)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/", signup)],
        lifespan=lifespan(df),
        middleware=[Middleware(FlushAfterResponse, timeout=timeout)],
    )


async def test_flush_after_response_delivers_after_the_response_and_before_the_cycle_ends(
    make_client: MakeClient, recorder: Recorder
) -> None:
    log: list[str] = []
    response_sent = asyncio.Event()

    async def answer(request: TransportRequest) -> Any:
        await response_sent.wait()  # the goal cannot be delivered before the response is out
        log.append("goal delivered")
        return ok()

    async def send(message: Message) -> None:
        log.append(message["type"])
        if message["type"] == "http.response.body" and not message.get("more_body"):
            response_sent.set()

    recorder.answer = answer
    df = make_client()
    app = flushing_app(df, timeout=5.0)
    async with app.router.lifespan_context(app):
        await app(http_scope(cookie=f"{VISITOR_COOKIE}=v_1"), receive, send)
        log.append("cycle ended")
        assert df.stats().delivered == 1
    assert log == ["http.response.start", "http.response.body", "goal delivered", "cycle ended"]


async def test_flush_after_response_is_bounded_by_its_timeout(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async def hang(request: TransportRequest) -> Any:
        await anyio.sleep_forever()

    recorder.answer = hang
    sent: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message["type"])

    deliveries: list[Any] = []
    df = make_client(shutdown_timeout=0.05)
    app = flushing_app(df, timeout=0.2, deliveries=deliveries)
    async with app.router.lifespan_context(app):
        with anyio.fail_after(5):
            started = time.monotonic()
            await app(http_scope(cookie=f"{VISITOR_COOKIE}=v_1"), receive, send)
            elapsed = time.monotonic() - started
        assert sent == ["http.response.start", "http.response.body"]
        assert 0.15 <= elapsed < 2.0
        assert df.stats().in_flight == 1  # still pending, not lost
    assert isinstance(deliveries[0].error, ShutdownError)  # reported at shutdown


def test_flush_after_response_in_fastapi_delivers_before_the_request_returns(
    example: ModuleType, make_client: MakeClient, recorder: Recorder
) -> None:
    """``TestClient`` returns once the app's call ended; the goal is delivered by then."""

    async def slow(request: TransportRequest) -> Any:
        await asyncio.sleep(0.05)  # network latency
        return ok()

    recorder.answer = slow
    df = make_client()
    app = example.create_app(df)
    app.add_middleware(FlushAfterResponse, timeout=5.0)
    for _ in range(2):
        with TestClient(app) as client:
            client.post("/signup", json=SIGNUP, headers=COOKIE)
            assert df.stats().delivered == 1
            client.get("/report.csv", headers=COOKIE)
            assert df.stats().delivered == 2
    assert [name for _, name, _ in goals(recorder)] == ["signup", "report_download"] * 2


def test_flush_after_response_flushes_before_an_error_propagates(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async def slow(request: TransportRequest) -> Any:
        await asyncio.sleep(0.05)  # network latency
        return ok()

    async def broken(request: Request) -> Response:
        await get_client(request).track("v_1", "checkout_failed")
        raise RuntimeError("boom")

    recorder.answer = slow
    df = make_client()
    app = Starlette(
        routes=[Route("/", broken)],
        lifespan=lifespan(df),
        middleware=[Middleware(FlushAfterResponse, timeout=5.0)],
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/").status_code == 500
        assert df.stats().delivered == 1


def test_flush_after_response_without_a_client_says_so(make_client: MakeClient) -> None:
    app = Starlette(
        routes=[Route("/", lambda request: PlainTextResponse("ok"))],
        middleware=[Middleware(FlushAfterResponse)],
    )
    with TestClient(app) as client, pytest.raises(ConfigurationError, match="lifespan"):
        client.get("/")


async def test_flush_after_response_with_an_explicit_client(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await df.track("v_1", "signup")
        await PlainTextResponse("ok")(scope, receive, send)

    async def send(message: Message) -> None:
        pass

    df = make_client()
    async with df:
        await FlushAfterResponse(app, client=df)(http_scope(), receive, send)
        assert df.stats().delivered == 1


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "2"])
def test_flush_after_response_rejects_a_bad_timeout(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        FlushAfterResponse(Starlette(), timeout=timeout)


def test_the_package_imports_no_web_framework_and_this_module_no_fastapi() -> None:
    code = (
        "import sys, datafast_async\n"
        "assert 'starlette' not in sys.modules, 'datafast_async imported starlette'\n"
        "import datafast_async.starlette\n"
        "assert 'fastapi' not in sys.modules, 'datafast_async.starlette imported fastapi'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
