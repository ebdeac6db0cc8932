"""Live progress without a dependency: a one-line bar on a terminal, plain lines elsewhere.

On a terminal the line is redrawn in place (``\\r``) at most ``REDRAWS_PER_SECOND`` times a
second. When stderr is not a terminal (a log file, CI, a pipe) or with ``--no-progress``, a
plain line is written after ``PLAIN_FIRST`` seconds and then every ``PLAIN_EVERY`` seconds, so
a long backfill leaves a readable trail in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ._output import Console

__all__ = ["Progress", "bar"]

REDRAWS_PER_SECOND = 10
PLAIN_FIRST = 0.5  # seconds before the first plain progress line
PLAIN_EVERY = 5.0  # seconds between two plain progress lines


def bar(fraction: float, width: int = 24) -> str:
    """``[=========>          ]`` for a fraction between 0 and 1."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * width)
    if filled >= width:
        return "[" + "=" * width + "]"
    return "[" + "=" * filled + ">" + " " * (width - filled - 1) + "]"


class Progress:
    """Shows ``render()`` periodically while a job runs, as an asyncio task.

    Args:
        console: Where to draw.
        render: Returns the progress text; called with ``True`` for the live bar (a terminal)
            and ``False`` for a plain line.
        live: Draw a bar redrawn in place (a terminal, without ``--no-progress``); else plain
            periodic lines.
    """

    def __init__(self, console: Console, render: Callable[[bool], str], *, live: bool) -> None:
        self._console = console
        self._render = render
        self._live = live
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start drawing (in the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="progress")

    async def stop(self) -> None:
        """Stop drawing and erase the bar (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._console.clear_status()

    def refresh(self) -> None:
        """Redraw the bar now (a terminal only), e.g. after a message was written."""
        if self._live and self._task is not None:
            self._console.status(self._render(True))

    async def _run(self) -> None:
        if self._live:
            while True:
                self._console.status(self._render(True))
                await asyncio.sleep(1.0 / REDRAWS_PER_SECOND)
        await asyncio.sleep(PLAIN_FIRST)
        while True:
            self._console.note(self._render(False))
            await asyncio.sleep(PLAIN_EVERY)
