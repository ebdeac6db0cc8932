"""Dramatiq: a middleware that gives each worker process a ``BackgroundClient``, flushed after
each message and closed at the worker's shutdown.

::

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from datafast_async.workers.dramatiq import DataFastMiddleware, client

    broker = RedisBroker(url="redis://127.0.0.1:6379/0")
    broker.add_middleware(DataFastMiddleware())  # the DataFast settings: DATAFAST_API_KEY, ...
    dramatiq.set_broker(broker)

    @dramatiq.actor
    def confirm_signup(visitor_id: str) -> None:
        client().track_nowait(visitor_id, "signup_confirmed")

Dramatiq's actors run in the threads of forked worker processes, with no event loop. The
middleware's hooks, in each worker process:

- ``after_process_boot``: the process's client is started, so a spool an earlier worker left
  is taken over and sent at once;
- ``after_process_message`` (a message that succeeded or failed) and ``after_skip_message``:
  the client is flushed, at most ``flush_timeout`` seconds, before the message is acknowledged
  (and, with the middleware added after ``Results``, as by default, before its result is
  stored: Dramatiq calls the ``after_`` hooks last-added first); a flush that times out is
  said in a WARNING, never raised;
- ``after_worker_shutdown``: once the worker's threads have finished their messages, the
  client is closed within ``close_timeout``: what cannot be delivered by then is kept in the
  spool (with ``spool_path``), or said in the shutdown WARNING.

The module imports Dramatiq; the package never imports this module.
"""

from __future__ import annotations

from typing import Any

from .._background import BackgroundClient
from ._per_process import PerProcess, check_timeouts, import_error

try:
    import dramatiq
    from dramatiq.broker import Broker, MessageProxy
    from dramatiq.worker import Worker
except ImportError as exc:  # pragma: no cover - the test extra installs it
    error = import_error("dramatiq", "dramatiq", exc)
    if error is None:
        raise
    raise error from exc

__all__ = ["DataFastMiddleware", "client"]


class DataFastMiddleware(dramatiq.Middleware):
    """One ``BackgroundClient`` per Dramatiq worker process, flushed after each message.

    Args:
        flush_timeout: Seconds the flush after each message waits at most (``0``: it only
            starts delivery of what is queued).
        flush_after_message: ``False`` leaves the messages' requests to go in the
            background, without the flush after each message.
        close_timeout: Seconds the close at the worker's shutdown takes at most (``None``:
            ``shutdown_timeout``, 10 s by default).
        **settings: The ``DataFast`` settings (``api_key``, ``website_id``, ``spool_path``,
            ...); each missing one is read from the environment as ``DataFast`` does, in each
            worker process, when its client is built.

    Nothing starts in a process that only sends messages: a client is built and started in
    the worker processes, and wherever ``client`` is used.

    Raises:
        ConfigurationError: ``flush_timeout`` or ``close_timeout`` is wrong, or ``session=``
            is given (a client's settings are checked when it is built).
    """

    def __init__(
        self,
        *,
        flush_timeout: float = 5.0,
        flush_after_message: bool = True,
        close_timeout: float | None = None,
        **settings: Any,
    ) -> None:
        flush, close = check_timeouts(flush_timeout, close_timeout)
        self._process = PerProcess(settings)
        self._flush_timeout = flush if flush_after_message else None
        self._close_timeout = close

    @property
    def client(self) -> BackgroundClient:
        """This process's ``BackgroundClient`` (built on first use).

        Raises:
            ConfigurationError: A setting is missing or wrong.
        """
        return self._process.client()

    def after_process_boot(self, broker: Broker) -> None:
        self._process.start()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self._flush(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._flush(message)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._process.close(self._close_timeout)

    def _flush(self, message: MessageProxy) -> None:
        if self._flush_timeout is not None:
            after = f"message {message.actor_name}[{message.message_id}]"
            self._process.flush(after, self._flush_timeout)


def client() -> BackgroundClient:
    """This process's ``BackgroundClient``, for actors: ``client().track_nowait(...)``: the
    client of the ``DataFastMiddleware`` on the global broker (``dramatiq.set_broker``).

    Raises:
        RuntimeError: No broker is set, or it has no ``DataFastMiddleware``.
        ConfigurationError: A setting is missing or wrong.
    """
    broker = dramatiq.broker.global_broker
    if broker is None:
        raise RuntimeError(
            "datafast_async.workers.dramatiq: no broker is set (dramatiq.set_broker(broker)); "
            "or use your DataFastMiddleware's .client"
        )
    for middleware in broker.middleware:
        if isinstance(middleware, DataFastMiddleware):
            return middleware.client
    raise RuntimeError(
        "datafast_async.workers.dramatiq: the broker has no DataFastMiddleware "
        "(broker.add_middleware(DataFastMiddleware()))"
    )
