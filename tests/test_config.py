"""Settings from arguments and the DATAFAST_* environment; the key is never shown whole."""

from __future__ import annotations

import logging

import pytest

from datafast_async import ConfigurationError, DataFast, RetryPolicy
from datafast_async._config import mask_key, resolve_settings

KEY = "df_0123456789abcdefSECRET9876"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATAFAST_API_KEY",
        "DATAFAST_WEBSITE_ID",
        "DATAFAST_BASE_URL",
        "DATAFAST_ENABLED",
    ):
        monkeypatch.delenv(name, raising=False)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFAST_API_KEY", "dft_token_abcdefgh1234")
    monkeypatch.setenv("DATAFAST_WEBSITE_ID", "665f0b3c4d2e1a0012345678")
    monkeypatch.setenv("DATAFAST_BASE_URL", "http://127.0.0.1:8787/")
    settings = resolve_settings(None, None, None, True)
    assert settings.url == "http://127.0.0.1:8787/api/v1/goals?websiteId=665f0b3c4d2e1a0012345678"
    assert settings.headers["Authorization"] == "Bearer dft_token_abcdefgh1234"
    assert settings.headers["User-Agent"].startswith("datafast-async/")
    assert settings.headers["Content-Type"] == "application/json"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFAST_API_KEY", "df_from_env_000000")
    monkeypatch.setenv("DATAFAST_BASE_URL", "http://env.invalid")
    settings = resolve_settings(KEY, None, "https://example.test", True)
    assert settings.api_key == KEY
    assert settings.url == "https://example.test/api/v1/goals"


def test_a_website_key_sends_no_website_id() -> None:
    assert "websiteId" not in resolve_settings(KEY, "665f", None, True).url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no API key"),
        ({"api_key": "sk_live_123"}, "starts neither"),
        ({"api_key": "dft_token_abcdefgh1234"}, "needs the website id"),
        ({"api_key": KEY, "base_url": "ftp://x"}, "http"),
        ({"api_key": KEY, "base_url": "https://x?y=1"}, "query"),
        ({"api_key": KEY, "concurrency": 0}, "concurrency"),
        ({"api_key": KEY, "max_queue_size": -1}, "max_queue_size"),
        ({"api_key": KEY, "on_full": "wait"}, "on_full"),
        ({"api_key": KEY, "timeout": 0}, "timeout"),
        ({"api_key": KEY, "shutdown_timeout": -1}, "shutdown_timeout"),
        ({"api_key": KEY, "retry": {"max_attempts": 3}}, "RetryPolicy"),
        ({"api_key": KEY, "on_success": "print"}, "callable"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        DataFast(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert "SECRET" not in str(info.value)


def test_a_bad_key_is_shown_masked_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        DataFast("xx_0123456789SECRET9876")
    assert "SECRET" not in str(info.value)


def test_disabled_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "enabled=False" in repr(DataFast(enabled=False))
    monkeypatch.setenv("DATAFAST_ENABLED", "0")
    assert "enabled=False" in repr(DataFast())


def test_repr_shows_only_the_prefix_and_last_four_characters() -> None:
    text = repr(DataFast(KEY))
    assert "df_…9876" in text
    assert "SECRET" not in text
    assert "0123456789" not in text


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (KEY, "df_…9876"),
        ("dft_abcdefghijkl", "dft_…ijkl"),
        ("df_short", "df_…"),
        (None, "<none>"),
        ("weird", "…"),
    ],
)
def test_mask_key(key: str | None, shown: str) -> None:
    assert mask_key(key) == shown


async def test_the_key_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="datafast_async")
    async with DataFast(
        KEY, base_url="http://127.0.0.1:9", retry=RetryPolicy(max_attempts=1), timeout=2
    ) as df:
        delivery = df.track_nowait("v", "signup")
        await df.flush(timeout=5)
    assert delivery.error is not None
    assert "SECRET" not in caplog.text
    assert "SECRET" not in repr(delivery.error)


# -- transport security: what base_url may be ---------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://example.com",
        "http://datafa.st",
        "http://10.0.0.1",
        "http://192.168.1.1:8787",
        "http://172.16.0.1",
        "http://[2001:db8::1]:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        # Names a resolver may send elsewhere (found in review): not loopback literals.
        "http://app.localhost",
        "http://evil.localhost:8787",
        "http://localhost.",
        "http://127.0.0.1.",
    ],
)
def test_plain_http_is_refused_for_a_host_that_is_not_this_machine(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="clear text") as info:
        DataFast(KEY, base_url=base_url)
    assert "https://" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_plain_http_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFAST_BASE_URL", "http://10.0.0.1:8787")
    with pytest.raises(ConfigurationError, match="clear text"):
        DataFast(KEY)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost:8787",
        "http://LOCALHOST:8787",
        "http://127.0.0.1:8787",
        "http://127.0.0.5",
        "http://[::1]:8787",
        "https://example.com",
        "https://10.0.0.1",
    ],
)
def test_plain_http_is_accepted_on_loopback_and_https_everywhere(base_url: str) -> None:
    assert DataFast(KEY, base_url=base_url)._options.settings.base_url == base_url


@pytest.mark.parametrize(
    "base_url",
    [
        "https://user:SECRETPASS@datafa.st",
        "https://user@datafa.st",
        "https://:SECRETPASS@datafa.st",
        "http://user:SECRETPASS@127.0.0.1:8787",
    ],
)
def test_credentials_in_base_url_are_refused_without_being_shown(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="credentials") as info:
        DataFast(KEY, base_url=base_url)
    assert "SECRET" not in str(info.value)


def test_the_missing_key_message_says_how_to_run_without_one() -> None:
    with pytest.raises(ConfigurationError, match="DATAFAST_API_KEY") as info:
        DataFast()
    assert "DATAFAST_ENABLED=0" in str(info.value)
    assert "enabled=False" in str(info.value)


@pytest.mark.parametrize(
    "base_url", ["https://datafa.st:99999", "http://localhost:abc", "http://[::1"]
)
def test_a_url_the_parser_refuses_is_a_configuration_error_at_construction(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a usable URL"):
        DataFast(KEY, base_url=base_url)
