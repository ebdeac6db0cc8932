"""arq: one ``DataFast`` per worker, started in the worker's event loop, flushed at the end of
each job and closed at the worker's shutdown.

::

    from arq.connections import RedisSettings

    from datafast_async.workers.arq import get_client, on_job_end, on_shutdown, on_startup

    async def confirm_signup(ctx, visitor_id):
        get_client(ctx).track_nowait(visitor_id, "signup_confirmed")

    class WorkerSettings:
        functions = [confirm_signup]
        redis_settings = RedisSettings()
        on_startup = on_startup      # DataFast() from DATAFAST_* in ctx["datafast"], started
        on_job_end = on_job_end      # the job is done once its requests are out (5 s at most)
        on_shutdown = on_shutdown    # aclose(): delivered, kept in the spool, or reported

Settings of your own: ``hooks = DataFastHooks(spool_path=..., flush_timeout=2)`` and
``on_startup = hooks.on_startup`` (and so on). With hooks of your own, call ours from them::

    async def startup(ctx):
        ctx["db"] = await connect_database()
        await hooks.on_startup(ctx)

arq itself is imported when this module is (the ``arq`` extra installs it); the package never
imports this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._client import DataFast
from .._errors import ConfigurationError
from ._in_loop import ClientSource, InLoop, import_error, logger

try:
    import arq  # noqa: F401  (what the hooks are for; checked here, so a missing one is said)
except ImportError as exc:
    error = import_error("arq", "arq", exc)
    if error is None:
        raise
    raise error from exc

__all__ = [
    "CTX_KEY",
    "DataFastHooks",
    "after_job_end",
    "get_client",
    "on_job_end",
    "on_shutdown",
    "on_startup",
]

CTX_KEY = "datafast"
"""Where ``on_startup`` puts the worker's client: ``ctx["datafast"]`` (every job's ``ctx``
has it too)."""

Ctx = dict[Any, Any]


class DataFastHooks:
    """The hooks of an arq ``WorkerSettings``, with settings of your own.

    Args:
        client: The client to run: a ``DataFast``, or a function that builds one (called at
            each worker start-up). ``None`` (the default) builds ``DataFast(**settings)`` at
            start-up, reading ``DATAFAST_API_KEY``, ``DATAFAST_SPOOL_PATH``, ... then.
        flush_timeout: The most seconds ``on_job_end`` waits for the job's requests to be out
            (``None``: as long as that takes). A flush that does not end is said in a WARNING
            (at most one a minute, counting the others), never raised: the requests go on
            being sent.
        close_timeout: ``aclose()``'s deadline at the worker's shutdown; ``None`` uses the
            client's ``shutdown_timeout`` (10 s by default).
        **settings: ``DataFast`` settings (``spool_path``, ``on_failure``, ...), when
            ``client`` is ``None``. Their names are checked now, their values at start-up.

    Raises:
        ConfigurationError: A setting that ``DataFast`` does not take, ``client`` together
            with settings, or a negative timeout.
    """

    def __init__(
        self,
        client: ClientSource = None,
        *,
        flush_timeout: float | None = 5.0,
        close_timeout: float | None = None,
        **settings: Any,
    ) -> None:
        self._in_loop = InLoop(client, settings, flush_timeout, close_timeout)

    def __repr__(self) -> str:
        return (
            f"DataFastHooks(flush_timeout={self._in_loop.flush_timeout!r}, "
            f"close_timeout={self._in_loop.close_timeout!r})"
        )

    async def on_startup(self, ctx: Ctx) -> None:
        """arq's ``on_startup``: build the worker's client, start it in the worker's loop (a
        spool left by an earlier worker is taken over now: its requests are sent first), and
        put it in ``ctx["datafast"]``."""
        ctx[CTX_KEY] = await self._in_loop.start()

    async def on_job_end(self, ctx: Ctx) -> None:
        """arq's ``on_job_end``: wait until the requests accepted so far (this job's, and
        those of jobs running beside it) are delivered or have finally failed, at most
        ``flush_timeout`` seconds.

        arq calls ``on_job_end`` before it records the job's result, so the job's result is
        there only once its requests are out. Used as ``after_job_end`` instead, it runs after
        the result is recorded (the caller gets the result sooner; the worker's slot still
        waits for the flush).

        When the worker is stopping (arq cancels its jobs at SIGTERM), it does not wait: the
        shutdown's ``aclose()`` has the pending requests, with its own deadline. It never
        raises into arq (arq would then skip the job's result and ``on_shutdown``).
        """
        client = ctx.get(CTX_KEY)
        if not isinstance(client, DataFast):
            return  # on_startup did not run (or failed): nothing was accepted here
        job = f"arq job {ctx.get('job_id', '?')}"
        task = asyncio.current_task()
        if _cancelling(task):
            return  # the worker is stopping: on_shutdown's aclose() takes over
        try:
            await self._in_loop.flush(client, job)
        except asyncio.CancelledError:
            # arq cancels every job's task at SIGTERM, this one too while it flushes; raised
            # here, arq would record no result (the job runs again) and its close() would
            # stop before on_shutdown. The job is over: let arq finish it.
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            logger.warning(
                "%s: the worker is stopping; its DataFast requests not yet delivered are left "
                "to the shutdown's aclose()",
                job,
            )

    after_job_end = on_job_end

    async def on_shutdown(self, ctx: Ctx) -> None:
        """arq's ``on_shutdown``: ``aclose()`` the worker's client within
        ``close_timeout``: what is undelivered at the deadline stays in the spool (with
        one) or fails with ``ShutdownError``, said in one WARNING. The closed client stays in
        ``ctx["datafast"]`` (its final ``stats()``)."""
        client = ctx.get(CTX_KEY)
        if isinstance(client, DataFast):
            await self._in_loop.close(client)


def _cancelling(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` is being cancelled (Python 3.11+; on 3.10, never known)."""
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def get_client(ctx: Ctx) -> DataFast:
    """The worker's client, from a job's ``ctx``.

    Raises:
        ConfigurationError: No client in ``ctx``: ``on_startup`` is not this module's (or
            does not call it).
    """
    client = ctx.get(CTX_KEY)
    if not isinstance(client, DataFast):
        raise ConfigurationError(
            'no DataFast client in ctx["datafast"]: set on_startup = '
            "datafast_async.workers.arq.on_startup in your WorkerSettings (or await it from "
            "your own on_startup)"
        )
    return client


_hooks = DataFastHooks()

on_startup = _hooks.on_startup
"""``DataFastHooks().on_startup``: ``DataFast()`` from the environment, started, in
``ctx["datafast"]``."""
on_job_end = _hooks.on_job_end
"""``DataFastHooks().on_job_end``: flush after each job, 5 s at most."""
after_job_end = _hooks.after_job_end
"""``DataFastHooks().after_job_end``: the same flush, after arq recorded the result."""
on_shutdown = _hooks.on_shutdown
"""``DataFastHooks().on_shutdown``: ``aclose()`` within the client's ``shutdown_timeout``."""
