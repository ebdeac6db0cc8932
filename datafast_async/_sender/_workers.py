"""The sender's workers and their supervision.

A fixed set of tasks, one per slot of the limiter's ceiling, each running the sender's loop
(``body(index)``). ``Workers`` owns them (it keeps every task and ``stop`` ends them, within a
deadline), knows what each holds (``held``: the ``Job`` it is sending), wakes idle ones when
there is work, and notices a death: a worker that dies of a bug is said with its traceback,
the request it held is handed to ``on_death``, and a new worker takes its place (up to
``_MAX_DEATHS``). A worker cancelled from outside (a loop that is ending) is handed to
``on_cancelled``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from .._reporting import logger
from ._job import Job

__all__ = ["Workers"]

# Worker deaths (bugs) after which no more are started.
_MAX_DEATHS = 100


class Workers:
    """The watched workers of one sender, in the client's loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        count: int,
        body: Callable[[int], Awaitable[None]],
        *,
        on_death: Callable[[Job | None, Exception], None],
        on_cancelled: Callable[[int], Awaitable[None]],
    ) -> None:
        self._loop = loop
        self._count = count
        self._body = body
        self._on_death = on_death
        self._on_cancelled = on_cancelled
        self._tasks: list[asyncio.Task[None]] = []
        self._deaths = 0
        #: The job each worker is sending, by worker index (``None``: none).
        self.held: list[Job | None] = [None] * count
        #: Futures of the workers waiting for work (``track_nowait`` skips ``notify`` when
        #: there are none, its common case under load).
        self.idle: deque[asyncio.Future[None]] = deque()
        #: ``stop()`` has begun: a cancelled worker just ends.
        self.stopping = False

    def start(self) -> None:
        """Spawn the workers (``stop`` ends them)."""
        self._tasks = [self._spawn(index) for index in range(self._count)]

    def _spawn(self, index: int) -> asyncio.Task[None]:
        return self._loop.create_task(self._run(index), name=f"datafast-sender-{index}")

    def replace(self, index: int) -> None:
        """A new worker in the place of worker ``index`` (which is ending)."""
        if not self.stopping:
            self._tasks[index] = self._spawn(index)
            self.notify()

    async def _run(self, index: int) -> None:
        try:
            await self._body(index)
        except asyncio.CancelledError:
            if not self.stopping:
                await self._on_cancelled(index)
            raise
        except Exception as exc:
            self._died(index, exc)

    def _died(self, index: int, exc: Exception) -> None:
        self._deaths += 1
        logger.error("a sender worker died of a bug; a new one takes its place", exc_info=exc)
        job, self.held[index] = self.held[index], None
        self._on_death(job, exc)
        if self.stopping:
            return
        if self._deaths > _MAX_DEATHS:
            logger.critical(
                "%d sender workers died of bugs: no more are started; requests wait for aclose()",
                self._deaths,
            )
            return
        self.replace(index)

    def notify(self, count: int = 1) -> None:
        """Wake up to ``count`` idle workers: there is work. Called in the client's loop."""
        idle = self.idle
        while count > 0 and idle:
            future = idle.popleft()
            if not future.done():
                future.set_result(None)
                count -= 1

    def notify_all(self) -> None:
        self.notify(self._count)

    async def wait_for_work(self, timeout: float | None = None) -> None:
        """An idle worker's wait: until ``notify`` (or ``timeout`` seconds, the end of the
        circuit's cool-down); it holds no request and no slot meanwhile. Without a timeout it
        has no deadline of its own: new work or ``stop()`` ends it."""
        future: asyncio.Future[None] = self._loop.create_future()
        self.idle.append(future)
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait((future,), timeout=max(0.0, timeout))
        finally:
            # (A loop closed with this task still pending closes it here: nothing to cancel.)
            if not future.done() and not self._loop.is_closed():
                future.cancel()
            if future in self.idle:
                self.idle.remove(future)

    def take_held(self) -> list[Job]:
        """What every worker holds, taken (their requests were cut: ``stop()`` ran)."""
        held = [job for job in self.held if job is not None]
        self.held = [None] * self._count
        return held

    async def stop(self, timeout: float) -> None:
        """Cancel the workers (requests in flight are cut) and wait at most ``timeout``
        seconds for them to end; one still running then is said, not waited for."""
        self.stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=max(0.0, timeout))
            if stuck:
                logger.error(
                    "%d sender workers did not stop within %.2g s of being cancelled (a "
                    "callback or a transport that does not yield): they are left to end",
                    len(stuck),
                    timeout,
                )
