"""Proxies from the environment, through a real forward proxy on 127.0.0.1 that counts what
passes through it, and ``proxy_for`` as a pure function of the environment."""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from datafast_async import APIError, DataFast, RetryPolicy, Stats, TransportError
from datafast_async._transport import proxy_for
from datafast_async.testing import FakeDataFast

from ._fakes import NO_WAIT
from ._netservers import TINYPROXY, Certificates, ForwardProxy, TinyProxy, free_port

pytestmark = pytest.mark.integration

KEY = "df_proxytest_0123456789SECRETKEY4321"
USER, PASSWORD = "proxyuser", "pr0xy:p@ss/word"  # characters that must be %-encoded in a URL
PASSWORD_IN_URL = "pr0xy%3Ap%40ss%2Fword"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine's environment says, each test sets the proxy variables it needs."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("proxy-certs"))


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as server:
        yield server


@pytest.fixture
async def tls_fake(certs: Certificates) -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast(api_key=KEY, ssl=certs.server_context()) as server:
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast(api_key=KEY) as server:
        yield server


def client(fake: FakeDataFast, certs: Certificates | None = None, **kwargs: Any) -> DataFast:
    kwargs.setdefault("retry", NO_WAIT)
    kwargs.setdefault("timeout", 5.0)
    if certs is not None:
        kwargs.setdefault("ssl", certs.client_context())
    return DataFast(KEY, base_url=fake.base_url, **kwargs)


async def deliver(df: DataFast, count: int) -> Stats:
    for i in range(count):
        df.track_nowait(f"visitor-{i}", "signup")
    assert await df.flush(10)
    return df.stats()


def header_values(proxy: ForwardProxy) -> str:
    """Every header value every request to the proxy carried, as one text."""
    return "\n".join(v for request in proxy.requests for v in request.headers.values())


# -- through the proxy ------------------------------------------------------------------------


async def test_https_goals_go_through_a_tunnel_of_the_https_proxy(
    monkeypatch: pytest.MonkeyPatch,
    proxy: ForwardProxy,
    tls_fake: FakeDataFast,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    async with client(tls_fake, certs, concurrency=4) as df:
        stats = await deliver(df, 50)
    assert stats == Stats(enqueued=50, delivered=50)
    assert len(tls_fake.goals) == 50
    # Kept-alive tunnels: a few CONNECTs (at most one per connection) carried all 50 goals.
    assert 1 <= proxy.tunnels <= 4
    assert {r.method for r in proxy.requests} == {"CONNECT"}
    assert {r.target for r in proxy.requests} == {tls_fake.base_url.removeprefix("https://")}
    assert proxy.forwarded == 0


async def test_the_key_stays_inside_the_tunnel(
    monkeypatch: pytest.MonkeyPatch,
    proxy: ForwardProxy,
    tls_fake: FakeDataFast,
    certs: Certificates,
) -> None:
    """The CONNECT request is clear text to the proxy: it must carry no Authorization, no key."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    async with client(tls_fake, certs) as df:
        await deliver(df, 5)
    assert len(tls_fake.goals) == 5
    assert proxy.requests
    assert KEY not in header_values(proxy)
    assert all("authorization" not in r.headers for r in proxy.requests)
    assert all("proxy-authorization" not in r.headers for r in proxy.requests)


async def test_no_proxy_covering_the_host_skips_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
    proxy: ForwardProxy,
    tls_fake: FakeDataFast,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with client(tls_fake, certs) as df:
        stats = await deliver(df, 20)
    assert stats.delivered == 20
    assert proxy.requests == []


async def test_a_plain_http_loopback_url_goes_through_a_loopback_http_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, fake: FakeDataFast
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with client(fake) as df:
        stats = await deliver(df, 30)
    assert stats == Stats(enqueued=30, delivered=30)
    assert len(fake.goals) == 30
    assert proxy.forwarded == 30
    assert proxy.tunnels == 0
    assert {(r.method, r.target) for r in proxy.requests} == {
        ("POST", fake.base_url + "/api/v1/goals")
    }


async def test_the_https_proxy_is_not_used_for_a_plain_http_url(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, fake: FakeDataFast
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    async with client(fake) as df:
        assert (await deliver(df, 3)).delivered == 3
    assert proxy.requests == []


async def test_the_proxy_is_read_once_when_the_client_starts(
    monkeypatch: pytest.MonkeyPatch,
    proxy: ForwardProxy,
    tls_fake: FakeDataFast,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    async with client(tls_fake, certs, concurrency=1) as df:
        monkeypatch.delenv("HTTPS_PROXY")
        assert (await deliver(df, 5)).delivered == 5
    assert proxy.tunnels == 1
    async with client(tls_fake, certs, concurrency=1) as df:  # a new client: no proxy now
        assert (await deliver(df, 5)).delivered == 5
    assert proxy.tunnels == 1
    assert len(tls_fake.goals) == 10


# -- a proxy that wants credentials -----------------------------------------------------------


async def test_credentials_in_the_https_proxy_url_reach_the_proxy(
    monkeypatch: pytest.MonkeyPatch, tls_fake: FakeDataFast, certs: Certificates
) -> None:
    async with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD_IN_URL))
        async with client(tls_fake, certs) as df:
            stats = await deliver(df, 10)
    assert stats.delivered == 10
    assert proxy.refused == 0
    assert proxy.tunnels >= 1
    assert {r.headers.get("proxy-authorization") for r in proxy.requests} == {BASIC}


async def test_credentials_in_the_http_proxy_url_reach_the_proxy(
    monkeypatch: pytest.MonkeyPatch, fake: FakeDataFast
) -> None:
    async with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with(USER, PASSWORD_IN_URL))
        async with client(fake) as df:
            stats = await deliver(df, 10)
    assert stats.delivered == 10
    assert proxy.refused == 0
    assert proxy.forwarded == 10
    assert {r.headers.get("proxy-authorization") for r in proxy.requests} == {BASIC}
    # The proxy strips its own header: DataFast gets only its key.
    assert all("proxy-authorization" not in _lower(r.headers) for r in fake.requests)


def _lower(headers: dict[str, str]) -> set[str]:
    return {name.lower() for name in headers}


async def test_a_proxy_that_answers_407_fails_the_goals_after_a_handful_of_tunnels(
    monkeypatch: pytest.MonkeyPatch, tls_fake: FakeDataFast, certs: Certificates
) -> None:
    failures: list[Exception] = []
    async with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # no credentials
        async with client(
            tls_fake, certs, concurrency=4, on_failure=lambda g, e: failures.append(e)
        ) as df:
            deliveries = [df.track_nowait(f"v{i}", "signup") for i in range(200)]
            assert await df.flush(10)
            with pytest.raises(TransportError, match="407"):
                await df.send("v", "direct")  # the open circuit answers, without a request
            stats = df.stats()
    assert stats == Stats(enqueued=200, failed=200)
    assert len(failures) == 200
    assert all(isinstance(d.error, TransportError) for d in deliveries)
    assert all(
        "407" in str(d.error) and d.error is not None and not d.error.retriable for d in deliveries
    )
    # One CONNECT per worker that was already on its way, at most; then the circuit opened.
    assert 1 <= proxy.connects <= 4
    assert proxy.refused == proxy.connects
    assert tls_fake.requests == []
    print(f"\n407 proxy: 200 goals failed after {proxy.connects} CONNECT attempts")


async def test_a_plain_http_proxy_answering_407_opens_the_circuit(
    monkeypatch: pytest.MonkeyPatch, fake: FakeDataFast
) -> None:
    async with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with client(fake, concurrency=4) as df:
            deliveries = [df.track_nowait(f"v{i}", "signup") for i in range(200)]
            assert await df.flush(10)
    errors = [d.error for d in deliveries]
    assert all(isinstance(e, APIError) and e.status == 407 for e in errors)
    assert 1 <= len(proxy.requests) <= 4
    assert fake.requests == []


async def test_proxy_credentials_are_never_shown(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tls_fake: FakeDataFast,
    certs: Certificates,
) -> None:
    """Wrong credentials (407), then a proxy that is not there: the errors, their tracebacks,
    the logs and the client's repr name the proxy without its password."""
    caplog.set_level(logging.DEBUG, logger="datafast_async")
    wrong = "wr0ng-PASSWORD-7777"
    shown: list[str] = []
    async with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, wrong))
        df = client(tls_fake, certs, retry=RetryPolicy(max_attempts=1))
        async with df:
            refused = df.track_nowait("v", "signup")
            await df.flush(10)
            shown.append(repr(df))
        assert proxy.refused >= 1
    closed_port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://{USER}:{wrong}@127.0.0.1:{closed_port}")
    async with client(tls_fake, certs, retry=RetryPolicy(max_attempts=1)) as df:
        unreachable = df.track_nowait("v", "signup")
        await df.flush(10)
    for error in (refused.error, unreachable.error):
        assert isinstance(error, TransportError)
        shown += [str(error), repr(error), "".join(traceback.format_exception(error))]
    assert "407" in str(refused.error)
    assert f"127.0.0.1:{closed_port}" in str(unreachable.error)
    shown.append(caplog.text)
    text = "\n".join(shown)
    secret_forms = (wrong, base64.b64encode(f"{USER}:{wrong}".encode()).decode())
    assert all(form not in text for form in secret_forms)
    assert KEY not in text


# -- proxy_for: the environment as requests and httpx read it ---------------------------------

HTTPS_URL = "https://datafa.st/api/v1/goals"
PROXY = "http://proxy.corp.example:3128"


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY}, HTTPS_URL, PROXY),
        ({"https_proxy": PROXY}, HTTPS_URL, PROXY),
        ({"https_proxy": PROXY, "HTTPS_PROXY": "http://other:1"}, HTTPS_URL, PROXY),
        ({"HTTP_PROXY": PROXY}, HTTPS_URL, None),  # the http proxy is for http:// URLs
        ({"ALL_PROXY": PROXY}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": "proxy.corp.example:3128"}, HTTPS_URL, PROXY),  # no scheme: http
        ({"HTTPS_PROXY": "  " + PROXY + " "}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "datafa.st"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "no_proxy": "DATAFA.ST"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".datafa.st"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".datafa.st"}, "https://api.datafa.st", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "datafa.st"}, "https://api.datafa.st", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "localhost, datafa.st"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "datafa.st:443"}, HTTPS_URL, None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "datafa.st:8443"}, "https://datafa.st:8443", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "datafa.st:8443"}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "notdatafa.st"}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "st.datafa"}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "api.datafa.st"}, HTTPS_URL, PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "[::1]:8443"}, "https://[::1]:8443", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "[::1]:9999"}, "https://[::1]:8443", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "::1"}, "https://[::1]:8443", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": ""}, HTTPS_URL, PROXY),
        # Credentials stay in the URL: the transport turns them into Proxy-Authorization.
        ({"HTTPS_PROXY": "http://u:p@proxy:8080"}, HTTPS_URL, "http://u:p@proxy:8080"),
    ],
)
def test_proxy_for_reads_the_environment_as_requests_does(
    environ: dict[str, str], url: str, expected: str | None
) -> None:
    assert proxy_for(url, environ) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.5"])
@pytest.mark.parametrize(
    "proxy", [PROXY, "http://10.0.0.1:3128", "http://192.168.1.1:8080", "10.0.0.1:3128"]
)
def test_a_plain_http_loopback_url_never_goes_through_a_proxy_elsewhere(
    host: str, proxy: str
) -> None:
    """The key would leave the machine in clear text: a direct connection instead."""
    url = f"http://{host}:8787/api/v1/goals"
    assert proxy_for(url, {"HTTP_PROXY": proxy}) is None
    assert proxy_for(url, {"ALL_PROXY": proxy}) is None


@pytest.mark.parametrize(
    "proxy", ["http://127.0.0.1:3128", "http://localhost:3128", "http://[::1]:3128"]
)
def test_a_plain_http_loopback_url_may_go_through_a_loopback_proxy(proxy: str) -> None:
    assert proxy_for("http://127.0.0.1:8787/api/v1/goals", {"HTTP_PROXY": proxy}) == proxy


def test_without_an_environ_proxy_for_reads_the_processs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for(HTTPS_URL) == PROXY
    monkeypatch.setenv("NO_PROXY", "datafa.st")
    assert proxy_for(HTTPS_URL) is None


@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "socks5h://127.0.0.1:1080"])
def test_a_proxy_the_client_cannot_speak_to_is_ignored_with_one_warning(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A SOCKS proxy in ALL_PROXY is not treated as an HTTP one (found in review)."""
    from datafast_async import _transport

    _transport._warned_schemes.clear()
    for _ in range(3):
        assert proxy_for("https://datafa.st/api/v1/goals", {"ALL_PROXY": proxy}) is None
    lines = [r.getMessage() for r in caplog.records if "cannot use" in r.getMessage()]
    assert len(lines) == 1


# -- a real proxy: tinyproxy ------------------------------------------------------------------

needs_tinyproxy = pytest.mark.skipif(
    TINYPROXY is None,
    reason="tinyproxy is not installed (.ci/run installs it with apt-get install tinyproxy)",
)
TINY_GOALS = 2_000


@needs_tinyproxy
@pytest.mark.parametrize("spooled", [False, True], ids=["no spool", "spool"])
async def test_tinyproxy_refusing_bad_credentials_with_401_opens_the_circuit(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_fake: FakeDataFast,
    certs: Certificates,
    spooled: bool,
) -> None:
    """tinyproxy answers 401 to a CONNECT with wrong credentials: every request would get it.
    The circuit opens after a handful of tunnels, the error is the proxy's refusal (not
    DataFast's AuthenticationError), and with a spool every goal is kept on disk."""
    failures: list[Exception] = []
    async with TinyProxy(tmp_path / "tinyproxy", USER, "the-right-password") as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, "a-wrong-password"))
        extra: dict[str, Any] = {"spool_path": tmp_path / "spool"} if spooled else {}
        async with client(
            tls_fake,
            certs,
            concurrency=8,
            on_failure=lambda g, e: failures.append(e),
            shutdown_timeout=2,
            **extra,
        ) as df:
            deliveries = [df.track_nowait(f"v{i}", "signup") for i in range(TINY_GOALS)]
            if spooled:
                await until_parked(df, TINY_GOALS)
            else:
                assert await df.flush(10)
            with pytest.raises(TransportError, match="401") as refused:
                await df.send("v", "direct")  # the open circuit answers, without a request
        stats = df.stats()
    connects = proxy.connects
    print(f"\ntinyproxy 401: {TINY_GOALS} goals, {connects} CONNECT attempts, {stats}")
    assert "the proxy 'http://127.0.0.1:" in str(refused.value)
    assert "a-wrong-password" not in str(refused.value)
    assert not isinstance(refused.value, APIError)  # not DataFast's AuthenticationError
    assert 1 <= connects <= 8  # one per worker already on its way; then the circuit opened
    assert tls_fake.requests == []
    if spooled:
        assert stats.spooled == TINY_GOALS
        assert stats.failed == 0
        assert failures == []
    else:
        assert stats == Stats(enqueued=TINY_GOALS, failed=TINY_GOALS)
        assert len(failures) == TINY_GOALS
        assert all(
            isinstance(d.error, TransportError) and "401" in str(d.error) for d in deliveries
        )


async def until_parked(df: DataFast, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while df.stats().spooled < count or df.stats().in_flight:
        assert loop.time() < deadline, df.stats()
        await asyncio.sleep(0.01)
