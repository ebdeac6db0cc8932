"""The pytest plugin of ``datafast_async``: the ``datafast_fake`` fixture.

Registered through the ``pytest11`` entry point, so installing the package is enough. It imports
nothing beyond pytest and the package's runtime dependencies (no async test plugin).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._threaded import ThreadedFakeDataFast

__all__ = ["datafast_fake"]


@pytest.fixture
def datafast_fake() -> Iterator[ThreadedFakeDataFast]:
    """A fake DataFast server on 127.0.0.1, running on a background thread for one test.

    Synchronous, so it serves sync tests and async ones under any async plugin. It serves
    every endpoint the SDK writes to (goals, payments, identify, the deletes). Point the
    client at ``datafast_fake.base_url`` with ``datafast_fake.api_key``; read
    ``datafast_fake.goals``, ``.payments``, ``.identities`` and ``.requests``; script
    failures with ``datafast_fake.fail_next(...)`` (``path=`` for one endpoint only); set
    ``known_visitors`` or, for a ``dft_`` token, ``permissions`` as the test needs. It sets
    no environment variable or other global state.

    Yields:
        ThreadedFakeDataFast: The running server; it is stopped after the test.
    """
    with ThreadedFakeDataFast() as fake:
        yield fake
