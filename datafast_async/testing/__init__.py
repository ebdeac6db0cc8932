"""Test helpers for code that uses ``datafast_async``.

``FakeDataFast`` is a real HTTP server on 127.0.0.1 that enforces DataFast's write API contract
(goals, payments, identify, and the deletes of goals and payments) and records what it
accepted; ``ThreadedFakeDataFast`` runs it on a background thread. The pytest plugin
(``datafast_async.testing.pytest_plugin``, registered automatically) provides a
``datafast_fake`` fixture built on the threaded one.
"""

from ._fake import FakeDataFast, FakeRequest
from ._threaded import ThreadedFakeDataFast

__all__ = ["FakeDataFast", "FakeRequest", "ThreadedFakeDataFast"]
