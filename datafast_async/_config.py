"""Settings from arguments or the ``DATAFAST_*`` environment, checked once at construction."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import attrs

from ._errors import ConfigurationError
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "USER_AGENT",
    "Settings",
    "is_loopback",
    "mask_key",
    "resolve_settings",
]

DEFAULT_BASE_URL = "https://datafa.st"
USER_AGENT = f"datafast-async/{__version__}"
GOALS_PATH = "/api/v1/goals"
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def mask_key(key: str | None) -> str:
    """A key as it may be shown: its prefix and its last four characters, never more."""
    if not key:
        return "<none>"
    prefix = "dft_" if key.startswith("dft_") else "df_" if key.startswith("df_") else ""
    rest = key[len(prefix) :]
    if len(rest) <= 8:
        return f"{prefix}…"
    return f"{prefix}…{rest[-4:]}"


@attrs.frozen(repr=False)
class Settings:
    api_key: str | None
    website_id: str | None
    base_url: str
    enabled: bool

    @property
    def url(self) -> str:
        """The goals endpoint's whole URL (the command line names it in its output)."""
        return self.base_url + self.target(GOALS_PATH)

    def target(self, path: str) -> str:
        """An endpoint's ``path`` with the query every request carries: ``?websiteId=`` for
        an account token (``dft_``)."""
        if self.api_key is not None and self.api_key.startswith("dft_"):
            return path + "?websiteId=" + quote(self.website_id or "", safe="")
        return path

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }

    def __repr__(self) -> str:
        return (
            f"Settings(api_key={mask_key(self.api_key)!r}, website_id={self.website_id!r}, "
            f"base_url={self.base_url!r}, enabled={self.enabled!r})"
        )


def resolve_settings(
    api_key: str | None,
    website_id: str | None,
    base_url: str | None,
    enabled: bool | None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Arguments win over ``DATAFAST_API_KEY``, ``DATAFAST_WEBSITE_ID``, ``DATAFAST_BASE_URL``
    and ``DATAFAST_ENABLED``; raise ``ConfigurationError`` for anything unusable."""
    env = os.environ if environ is None else environ
    if enabled is None:  # not given: DATAFAST_ENABLED decides, and it defaults to on
        enabled = env.get("DATAFAST_ENABLED", "").strip().lower() not in _FALSE_WORDS
    key = api_key if api_key is not None else env.get("DATAFAST_API_KEY") or None
    site = website_id if website_id is not None else env.get("DATAFAST_WEBSITE_ID") or None
    url = base_url if base_url is not None else env.get("DATAFAST_BASE_URL") or DEFAULT_BASE_URL
    url = _check_base_url(url)
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(f"api_key must be a str, got {type(key).__name__}")
    if key is not None:
        key = key.strip() or None
    if site is not None:
        site = str(site).strip() or None
    if enabled:
        if key is None:
            raise ConfigurationError(
                "no API key: pass api_key=... or set DATAFAST_API_KEY; to validate goals and "
                "send nothing (tests, local runs), pass enabled=False or set DATAFAST_ENABLED=0"
            )
        if not key.startswith(("df_", "dft_")):
            raise ConfigurationError(
                f"the API key {mask_key(key)!r} starts neither with 'df_' (website key) nor "
                "with 'dft_' (account token)"
            )
        if key.startswith("dft_") and site is None:
            raise ConfigurationError(
                "an account token (dft_...) needs the website id: pass website_id=... or set "
                "DATAFAST_WEBSITE_ID"
            )
        if any(c in key for c in "\r\n\t "):
            raise ConfigurationError(f"the API key {mask_key(key)!r} contains white space")
    return Settings(api_key=key, website_id=site, base_url=url, enabled=enabled)


def _check_base_url(url: str) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a str, got {type(url).__name__}")
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it checks it: a port out of range raises)
    except ValueError as exc:
        raise ConfigurationError(f"base_url is not a usable URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("base_url must not hold credentials (user:password@)")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {url!r} is plain http:// to a host that is not this machine: the API "
            "key would cross the network in clear text. Use https:// (plain http:// is "
            "accepted only for localhost, 127.0.0.0/8 and ::1)"
        )
    return url


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine: exactly ``localhost``, or a literal address in
    ``127.0.0.0/8`` or ``::1``. Nothing that a resolver might send elsewhere: not
    ``app.localhost``, not ``localhost.`` (a fully qualified name goes to DNS)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return value
