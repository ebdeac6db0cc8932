"""Test helpers for code that uses ``datafast_async``.

``FakeDataFast`` is a real HTTP server on 127.0.0.1 that enforces DataFast's goals API contract
and records what it received; ``ThreadedFakeDataFast`` runs it on a background thread. The
pytest plugin (``datafast_async.testing.pytest_plugin``, registered automatically) provides a
``datafast_fake`` fixture built on the threaded one.
"""

from ._fake import FakeDataFast, FakeRequest
from ._threaded import ThreadedFakeDataFast

__all__ = ["FakeDataFast", "FakeRequest", "ThreadedFakeDataFast"]
