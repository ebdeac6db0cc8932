"""Celery: one ``BackgroundClient`` per worker process, flushed after each task, closed at the
worker's shutdown.

::

    from celery import Celery

    from datafast_async.workers.celery import client, setup_celery

    app = Celery("shop", broker="redis://127.0.0.1:6379/0")
    setup_celery()  # the DataFast settings: DATAFAST_API_KEY, DATAFAST_SPOOL_PATH, ... or keywords

    @app.task
    def confirm_signup(visitor_id: str) -> None:
        client().track_nowait(visitor_id, "signup_confirmed")

Celery runs sync tasks (an ``async def`` task is not awaited), and its default pool, prefork,
forks child processes that run them. ``setup_celery()`` connects Celery's signals:

- ``worker_process_init`` (each prefork child, and the solo pool) and ``worker_ready`` (the
  threads pool): the process's client is started, so a spool an earlier worker left is taken
  over and sent at once;
- ``task_postrun``: the process's client is flushed, at most ``flush_timeout`` seconds, so the
  child takes its next task (and with ``task_acks_late`` acknowledges this one) once the task's
  goals are out; a flush that times out is said in a WARNING, never raised;
- ``worker_process_shutdown`` (each prefork child) and ``worker_shutdown`` (the solo and
  threads pools): the client is closed within ``close_timeout``: what cannot be delivered by
  then is kept in the spool (with ``spool_path``), or said in the shutdown WARNING.

Celery stores a task's result (``AsyncResult.get()``) before ``task_postrun``: a caller waiting
for the result may see it before the flush ends.

The module imports Celery; the package never imports this module.
"""

from __future__ import annotations

from typing import Any

from .._background import BackgroundClient
from ._per_process import PerProcess, check_timeouts, import_error

try:
    from celery import signals  # type: ignore[import-untyped]
    from celery.concurrency.prefork import (  # type: ignore[import-untyped]
        TaskPool as _PreforkPool,
    )
except ImportError as exc:  # pragma: no cover - the test extra installs it
    error = import_error("celery", "celery", exc)
    if error is None:
        raise
    raise error from exc

__all__ = ["client", "setup_celery"]

_process: PerProcess | None = None
_flush_timeout: float | None = None
_close_timeout: float | None = None


def setup_celery(
    *,
    flush_timeout: float = 5.0,
    flush_after_task: bool = True,
    close_timeout: float | None = None,
    **settings: Any,
) -> None:
    """Give each Celery worker process a ``BackgroundClient``; call it once, in the module that
    defines your Celery app (the worker and its children import it).

    Args:
        flush_timeout: Seconds the flush after each task waits at most (``0``: it only
            starts delivery of what is queued).
        flush_after_task: ``False`` leaves the tasks' requests to go in the background,
            without the flush after each task.
        close_timeout: Seconds the close at the worker's shutdown takes at most (``None``:
            ``shutdown_timeout``, 10 s by default).
        **settings: The ``DataFast`` settings (``api_key``, ``website_id``, ``spool_path``,
            ``on_failure``, ...); each missing one is read from the environment as
            ``DataFast`` does, in each worker process, when its client is built.

    Nothing starts in a process that only sends tasks (a web app): a client is built and
    started in the worker's processes, and wherever ``client()`` is called.

    Raises:
        RuntimeError: It was called already in this process.
        ConfigurationError: ``flush_timeout`` or ``close_timeout`` is wrong, or ``session=``
            is given (a client's settings are checked when it is built).
    """
    global _process, _flush_timeout, _close_timeout
    if _process is not None:
        raise RuntimeError("setup_celery() was called already in this process")
    flush, close = check_timeouts(flush_timeout, close_timeout)
    _process = PerProcess(settings)
    _flush_timeout = flush if flush_after_task else None
    _close_timeout = close
    uid = "datafast_async.workers.celery"
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid=uid)
    signals.worker_process_init.connect(_on_process_init, weak=False, dispatch_uid=uid)
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid=uid)
    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid=uid)
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False, dispatch_uid=uid)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid=uid)


def client() -> BackgroundClient:
    """This process's ``BackgroundClient``, for tasks: ``client().track_nowait(...)``.

    Raises:
        RuntimeError: ``setup_celery()`` was not called.
        ConfigurationError: A setting is missing or wrong.
    """
    if _process is None:
        raise RuntimeError(
            "datafast_async.workers.celery: call setup_celery() in the module that defines "
            "your Celery app"
        )
    return _process.client()


def _on_worker_init(**_: Any) -> None:
    # The worker's main process: the settings are checked at start-up (an error is logged by
    # Celery), without starting anything (prefork children build their own client).
    if _process is not None:
        _process.client()


def _on_process_init(**_: Any) -> None:
    if _process is not None:
        _process.start()


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # The threads pool runs tasks in the main process, which worker_process_init skips; the
    # prefork pool's main process runs none.
    if _process is not None and not isinstance(getattr(sender, "pool", None), _PreforkPool):
        _process.start()


def _on_task_postrun(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    if _process is not None and _flush_timeout is not None:
        name = getattr(sender, "name", None) or "a task"
        _process.flush(f"task {name}[{task_id}]", _flush_timeout)


def _on_process_shutdown(**_: Any) -> None:
    if _process is not None:
        _process.close(_close_timeout)


def _on_worker_shutdown(**_: Any) -> None:
    if _process is not None:
        _process.close(_close_timeout)
