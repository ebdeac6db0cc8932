"""A client's options: every constructor argument, checked once (``DataFast(...)``)."""

from __future__ import annotations

import os
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import attrs

from ._config import Settings, check_count, check_positive, resolve_settings
from ._errors import ConfigurationError
from ._reporting import FailureCallback, SuccessCallback
from ._retry import RetryPolicy
from ._spool import available
from ._transport import Transport

__all__ = ["OnFull", "Options", "resolve_options"]

OnFull = Literal["drop", "block", "raise"]
_ON_FULL = ("drop", "block", "raise")


@attrs.define(repr=False)
class Options:
    """What ``DataFast(...)`` was given, checked (``resolve_options``)."""

    settings: Settings
    concurrency: int
    max_queue_size: int
    on_full: OnFull
    timeout: float
    shutdown_timeout: float
    retry: RetryPolicy
    on_success: SuccessCallback | None
    on_failure: FailureCallback | None
    session: aiohttp.ClientSession | None
    ssl: ssl_module.SSLContext | None
    spool_path: str | None
    spool_max_bytes: int
    spool_options: dict[str, Any]
    #: Builds the transport of each run (tests, benchmarks); ``None``: aiohttp's.
    transport_factory: Callable[[], Transport] | None
    adaptive: bool

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def initial_limit(self) -> int:
        return min(8, self.concurrency) if self.adaptive else self.concurrency


def resolve_options(
    api_key: str | None,
    website_id: str | None,
    base_url: str | None,
    concurrency: int,
    max_queue_size: int,
    on_full: OnFull,
    timeout: float,
    retry: RetryPolicy | None,
    shutdown_timeout: float,
    on_success: SuccessCallback | None,
    on_failure: FailureCallback | None,
    enabled: bool | None,
    session: aiohttp.ClientSession | None,
    ssl: ssl_module.SSLContext | None,
    spool_path: str | os.PathLike[str] | None,
    spool_max_bytes: int,
    transport_factory: Callable[[], Transport] | None,
    adaptive: bool,
    spool_options: Mapping[str, Any] | None,
) -> Options:
    """Every argument checked; ``ConfigurationError`` names the first that is wrong."""
    settings = resolve_settings(api_key, website_id, base_url, enabled)
    if on_full not in _ON_FULL:
        raise ConfigurationError(f"on_full must be one of {_ON_FULL}, got {on_full!r}")
    if retry is None:
        retry = RetryPolicy()
    elif not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    for label, callback in (("on_success", on_success), ("on_failure", on_failure)):
        if callback is not None and not callable(callback):
            raise ConfigurationError(f"{label} must be callable or None")
    if session is not None and not isinstance(session, aiohttp.ClientSession):
        raise ConfigurationError("session must be an aiohttp.ClientSession")
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise ConfigurationError("ssl must be an ssl.SSLContext or None")
    if ssl is not None and session is not None:
        raise ConfigurationError(
            "ssl= and session= together: configure the SSL context on your own session "
            "(its connector) instead"
        )
    return Options(
        settings=settings,
        concurrency=check_count("concurrency", concurrency),
        max_queue_size=check_count("max_queue_size", max_queue_size),
        on_full=on_full,
        timeout=check_positive("timeout", timeout),
        shutdown_timeout=check_positive("shutdown_timeout", shutdown_timeout, allow_zero=True),
        retry=retry,
        on_success=on_success,
        on_failure=on_failure,
        session=session,
        ssl=ssl,
        spool_path=_spool_path(spool_path, settings.enabled),
        spool_max_bytes=check_count("spool_max_bytes", spool_max_bytes),
        spool_options=dict(spool_options or {}),
        transport_factory=transport_factory,
        adaptive=adaptive,
    )


def _spool_path(spool_path: str | os.PathLike[str] | None, enabled: bool) -> str | None:
    if spool_path is None:
        spool_path = os.environ.get("DATAFAST_SPOOL_PATH") or None
    if spool_path is None or not enabled:
        return None
    try:
        path = os.fspath(spool_path)
    except TypeError:
        raise ConfigurationError(
            f"spool_path must be a str or a path, got {type(spool_path).__name__}"
        ) from None
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"spool_path must be a directory's path, got {path!r}")
    if not available():
        raise ConfigurationError(
            "spool_path needs POSIX file locks (fcntl.flock), which this platform does not "
            "have: leave spool_path and DATAFAST_SPOOL_PATH unset here"
        )
    path = os.path.expanduser(path)
    # An absolute path (the usual one) is made absolute without a getcwd() call: the
    # client is often built in a coroutine (a lifespan), where that is a blocking call.
    return os.path.normpath(path) if os.path.isabs(path) else os.path.abspath(path)
