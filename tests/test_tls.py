"""TLS against FakeDataFast over HTTPS with certificates of a private CA (trustme): a
certificate that does not verify is final and opens the circuit; ``ssl=``, ``SSL_CERT_FILE``
and a client certificate are the ways in."""

from __future__ import annotations

import gc
import json
import os
import ssl
import subprocess
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from datafast_async import ConfigurationError, DataFast, RetryPolicy, Stats, TransportError
from datafast_async.testing import FakeDataFast, ThreadedFakeDataFast

from ._fakes import NO_WAIT
from ._netservers import Certificates

pytestmark = pytest.mark.integration

KEY = "df_tlstest_0123456789SECRETKEY4321"
_SUBPROCESS_TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
async def tls_fake(certs: Certificates) -> AsyncIterator[FakeDataFast]:
    async with FakeDataFast(api_key=KEY, ssl=certs.server_context()) as server:
        yield server


def client(base_url: str, **kwargs: object) -> DataFast:
    kwargs.setdefault("retry", NO_WAIT)
    kwargs.setdefault("timeout", 5.0)
    return DataFast(KEY, base_url=base_url, **kwargs)  # type: ignore[arg-type]


async def test_a_certificate_that_does_not_verify_fails_at_once_and_opens_the_circuit(
    tls_fake: FakeDataFast, certs: Certificates
) -> None:
    failures: list[Exception] = []
    async with client(tls_fake.base_url, on_failure=lambda g, e: failures.append(e)) as df:
        deliveries = [df.track_nowait(f"visitor-{i}", "signup") for i in range(200)]
        assert await df.flush(10)
        handshakes = certs.handshakes
        with pytest.raises(TransportError, match="did not verify"):
            await df.send("v", "direct")  # the open circuit answers without a connection
        stats = df.stats()
    assert stats == Stats(enqueued=200, failed=200)  # no retries
    assert len(failures) == 200
    for delivery in deliveries:
        error = delivery.error
        assert isinstance(error, TransportError)
        assert "certificate of 127.0.0.1 did not verify" in str(error)
        assert "SSL_CERT_FILE" in str(error)  # and it says what to do
        assert not error.retriable
        assert not error.maybe_delivered
    # At most one TLS connection per worker that was on its way before the circuit opened.
    assert 1 <= handshakes <= 8
    assert certs.handshakes == handshakes
    assert tls_fake.requests == []
    print(f"\nunverified certificate: 200 goals failed after {handshakes} TLS handshakes")


async def test_a_certificate_for_another_host_is_final_too(certs: Certificates) -> None:
    """Trusted CA, wrong name: the hostname check is not skipped."""
    other = certs.ca.issue_cert("datafast.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.configure_cert(context)
    async with (
        FakeDataFast(api_key=KEY, ssl=context) as fake,
        client(fake.base_url, ssl=certs.client_context()) as df,
    ):
        with pytest.raises(TransportError, match="did not verify") as info:
            await df.send("v", "signup")
    assert not info.value.retriable
    assert fake.requests == []


async def test_an_ssl_context_that_trusts_the_ca_delivers(
    tls_fake: FakeDataFast, certs: Certificates
) -> None:
    async with client(tls_fake.base_url, ssl=certs.client_context()) as df:
        for i in range(50):
            df.track_nowait(f"visitor-{i}", "signup")
        assert await df.flush(10)
        stats = df.stats()
    assert stats == Stats(enqueued=50, delivered=50)
    assert len(tls_fake.goals) == 50
    by_name = tls_fake.base_url.replace("127.0.0.1", "localhost")
    async with client(by_name, ssl=certs.client_context()) as df:
        assert (await df.send("v", "by_name")).event_id
    assert len(tls_fake.goals) == 51


_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from datafast_async import DataFast, RetryPolicy

    async def main():
        policy = RetryPolicy(max_attempts=1)
        async with DataFast(retry=policy, timeout=10) as df:  # key and URL: the environment
            deliveries = [df.track_nowait(f"visitor-{i}", "signup") for i in range(10)]
            await df.flush(20)
            errors = sorted({str(d.error) for d in deliveries if d.error is not None})
        print(json.dumps({"delivered": df.stats().delivered, "errors": errors}))

    asyncio.run(main())
    """
)


def _run_client(base_url: str, **extra: str) -> dict[str, object]:
    """The script above in a fresh interpreter, with the default SSL context it builds."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SSL_CERT_", "DATAFAST_"))
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(DATAFAST_API_KEY=KEY, DATAFAST_BASE_URL=base_url, **extra)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=_SUBPROCESS_TIMEOUT,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_ssl_cert_file_makes_the_default_context_trust_a_private_ca(
    certs: Certificates,
) -> None:
    with ThreadedFakeDataFast(api_key=KEY, ssl=certs.server_context()) as fake:
        without = _run_client(fake.base_url)
        with_ca = _run_client(fake.base_url, SSL_CERT_FILE=str(certs.ca_file))
        goals = len(fake.goals)
    assert without["delivered"] == 0
    assert len(without["errors"]) == 1  # type: ignore[arg-type]
    assert "did not verify" in without["errors"][0]  # type: ignore[index]
    assert with_ca == {"delivered": 10, "errors": []}
    assert goals == 10


async def test_a_client_certificate_reaches_a_server_that_requires_one(
    certs: Certificates,
) -> None:
    context = certs.server_context(require_client_cert=True)
    async with FakeDataFast(api_key=KEY, ssl=context) as fake:
        async with client(fake.base_url, ssl=certs.client_context(with_cert=True)) as df:
            for i in range(20):
                df.track_nowait(f"visitor-{i}", "signup")
            assert await df.flush(10)
            assert df.stats().delivered == 20
        assert len(fake.goals) == 20
        retry = RetryPolicy(max_attempts=2, initial_delay=0.0)
        with warnings.catch_warnings():
            if sys.version_info < (3, 11):
                # Python 3.10's asyncio leaves a client's TLS transport unclosed when the server
                # resets the connection right after the handshake (3.11's rewrite closes it):
                # collected here, its ResourceWarning ignored on 3.10 only.
                warnings.simplefilter("ignore", ResourceWarning)
            async with client(fake.base_url, ssl=certs.client_context(), retry=retry) as df:
                with pytest.raises(TransportError):
                    await df.send("v", "without_a_certificate")
            gc.collect()
        assert len(fake.goals) == 20


async def test_ssl_together_with_session_is_a_configuration_error(
    certs: Certificates,
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigurationError, match="configure the SSL context on your own"):
            DataFast(KEY, ssl=certs.client_context(), session=session)


def test_ssl_must_be_an_ssl_context() -> None:
    with pytest.raises(ConfigurationError, match=r"ssl must be an ssl\.SSLContext"):
        DataFast(KEY, ssl="/etc/ssl/certs/ca.pem")  # type: ignore[arg-type]
