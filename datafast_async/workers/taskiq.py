"""taskiq: ``DataFastMiddleware``, one ``DataFast`` per worker process, started in the worker's
event loop, flushed after each task and closed at the worker's shutdown.

::

    from taskiq import TaskiqDepends
    from taskiq_redis import ListQueueBroker

    from datafast_async import DataFast
    from datafast_async.workers.taskiq import DataFastMiddleware, get_client

    broker = ListQueueBroker("redis://localhost:6379").with_middlewares(DataFastMiddleware())

    @broker.task
    async def confirm_signup(visitor_id: str, df: DataFast = TaskiqDepends(get_client)) -> None:
        df.track_nowait(visitor_id, "signup_confirmed")

A task reaches the client through the ``get_client`` dependency (taskiq's own injection, as
for its ``Context`` and ``TaskiqState``), or through the middleware's ``client`` property.

On the sending side (the web app that ``kiq()``-s the tasks, whose ``broker.startup()`` runs
the middlewares too) the middleware does nothing: no client is built, no key is read, nothing
is sent. An ``InMemoryBroker`` runs its tasks in its own process, so there the middleware runs
a client as in a worker (with taskiq < 0.13, whose ``InMemoryBroker`` runs no middleware's
start-up or shutdown, the client starts at the first task and ``await middleware.shutdown()``
closes it).

taskiq itself is imported when this module is (the ``taskiq`` extra installs it); the package
never imports this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._client import DataFast
from .._errors import ConfigurationError
from ._in_loop import ClientSource, InLoop, import_error

try:
    from taskiq import Context, InMemoryBroker, TaskiqDepends, TaskiqMiddleware
    from taskiq.message import TaskiqMessage
    from taskiq.result import TaskiqResult
except ImportError as exc:
    error = import_error("taskiq", "taskiq", exc)
    if error is None:
        raise
    raise error from exc

__all__ = ["DataFastMiddleware", "get_client"]


class DataFastMiddleware(TaskiqMiddleware):
    """Runs a ``DataFast`` in each taskiq worker process, and flushes it after each task.

    - ``startup`` (the worker's, in its event loop): build the client and start it; a spool
      left by an earlier worker is taken over then, its requests sent first.
    - ``post_execute`` (after each task, failed or not, before its result is saved): wait until
      the requests accepted so far are delivered or have finally failed, at most
      ``flush_timeout`` seconds; a flush that does not end is said in a WARNING (at most one
      a minute, counting the others), never raised.
      taskiq calls ``on_error`` and then ``post_execute`` for a task that raised: one flush.
    - ``shutdown``: ``aclose()`` within ``close_timeout``: what is undelivered at the
      deadline stays in the spool (with one) or fails with ``ShutdownError``, said in one
      WARNING.

    Args:
        client: The client to run: a ``DataFast``, or a function that builds one (called in
            the worker at start-up). ``None`` (the default) builds ``DataFast(**settings)`` in
            the worker, reading ``DATAFAST_API_KEY``, ``DATAFAST_SPOOL_PATH``, ... there.
        flush_timeout: The most seconds to wait after each task (``None``: as long as it
            takes).
        close_timeout: ``aclose()``'s deadline (``None``: the client's ``shutdown_timeout``).
            Keep it about 1 s below taskiq worker's ``--shutdown-timeout`` (5 s by default),
            which bounds the whole broker shutdown.
        **settings: ``DataFast`` settings (``spool_path``, ``on_failure``, ...), when
            ``client`` is ``None``. Their names are checked now, their values in the worker.

    Raises:
        ConfigurationError: A setting that ``DataFast`` does not take, ``client`` together
            with settings, or a negative timeout.
    """

    def __init__(
        self,
        client: ClientSource = None,
        *,
        flush_timeout: float | None = 5.0,
        close_timeout: float | None = 3.0,
        **settings: Any,
    ) -> None:
        super().__init__()
        self._in_loop = InLoop(client, settings, flush_timeout, close_timeout)
        self._client: DataFast | None = None
        self._starting: asyncio.Future[DataFast] | None = None

    def __repr__(self) -> str:
        state = "running" if self._client is not None else "not started"
        return (
            f"DataFastMiddleware(flush_timeout={self._in_loop.flush_timeout!r}, "
            f"close_timeout={self._in_loop.close_timeout!r}, {state})"
        )

    @property
    def client(self) -> DataFast:
        """The worker process's client (after the worker's start-up).

        Raises:
            ConfigurationError: No client runs here: the sending side of the broker, or the
                worker has not started (or the middleware is not on the broker).
        """
        client = self._client
        if client is None:
            raise ConfigurationError(
                "no DataFast client runs in this process: DataFastMiddleware starts one in "
                "each taskiq worker process, at the worker's start-up (on the sending side, "
                "use a DataFast of your own, e.g. datafast_async.starlette's lifespan)"
            )
        return client

    def _runs_tasks(self) -> bool:
        broker = self.broker
        return broker is not None and (
            broker.is_worker_process or isinstance(broker, InMemoryBroker)
        )

    async def startup(self) -> None:
        """Start the worker's client (nothing on the sending side)."""
        if not self._runs_tasks():
            return
        self._client = await self._in_loop.start()

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Start the client at the first task where no start-up ran: an ``InMemoryBroker`` of
        taskiq < 0.13 runs no middleware's ``startup`` (nor ``shutdown``)."""
        if self._client is None and isinstance(self.broker, InMemoryBroker):
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._in_loop.start())
            starting = self._starting
            try:
                self._client = await asyncio.shield(starting)
            finally:
                if starting.done():
                    self._starting = None
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Flush after the task (at most ``flush_timeout`` seconds)."""
        client = self._client
        if client is not None:
            await self._in_loop.flush(
                client, f"taskiq task {message.task_name} ({message.task_id})"
            )

    async def shutdown(self) -> None:
        """``aclose()`` the worker's client within ``close_timeout``."""
        client = self._client
        if client is not None:
            await self._in_loop.close(client)


def get_client(context: Context = TaskiqDepends()) -> DataFast:  # noqa: B008  (taskiq's way)
    """The worker's client, as a taskiq dependency:
    ``df: DataFast = TaskiqDepends(get_client)`` in a task's parameters.

    Raises:
        ConfigurationError: The broker has no ``DataFastMiddleware``, or it has not started.
    """
    for middleware in context.broker.middlewares:
        if isinstance(middleware, DataFastMiddleware):
            return middleware.client
    raise ConfigurationError(
        "no DataFastMiddleware on this broker: add it with "
        "broker.with_middlewares(DataFastMiddleware()) (or broker.add_middlewares(...))"
    )
