"""The durable spool with real processes (and a client built in a coroutine)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from datafast_async import DataFast

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="the spool needs POSIX file locks"),
]

KEY = "df_spool_process_test_key_01"


# -- building a client with a spool in a coroutine ---------------------------------------------


async def test_a_client_with_a_spool_is_built_and_started_in_a_coroutine(tmp_path: Path) -> None:
    # As in a lifespan: no blocking call (a getcwd() to resolve the path) in the event loop.
    df = DataFast(KEY, base_url="http://127.0.0.1:9", spool_path=tmp_path)
    await df.start()
    await df.aclose()
