"""``LineSource``: a file (or stdin) read line by line without blocking the event loop.

A daemon thread reads a chunk of whole lines at a time and hands it to the loop; at most
``max_chunks`` chunks wait there, so memory stays bounded however long the file is, and a slow
pipe (``psql ... | datafast-async import -``) never stalls the sender. The thread is a daemon:
a read blocked on a pipe that never ends does not keep the process alive after an interrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from typing import BinaryIO

__all__ = ["LineSource"]

CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a longer line is cut there (it cannot be a valid goal)


class LineSource:
    """Chunks of lines (``bytes``, newline included) from a binary stream.

    Args:
        stream: The open binary stream; it is closed when reading ends.
        chunk_bytes: About how many bytes one chunk holds (whole lines).
        max_chunks: The most chunks read ahead of the consumer.
    """

    def __init__(
        self, stream: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES, max_chunks: int = 4
    ) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._room = threading.Semaphore(max_chunks)
        self._queue: asyncio.Queue[list[bytes] | BaseException] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = False
        self._thread: threading.Thread | None = None

    @property
    def size(self) -> int | None:
        """The size in bytes of a regular file, for a percentage; ``None`` for a pipe."""
        try:
            info = os.fstat(self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def start(self) -> None:
        """Start the reading thread (in the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        # Owned here; it ends at the end of the input. A read blocked on a pipe cannot be
        # interrupted, so it is a daemon: on Ctrl-C the process exits without waiting for it.
        self._thread = threading.Thread(
            target=self._pump, name="datafast-import-reader", daemon=True
        )
        self._thread.start()

    async def next_chunk(self) -> list[bytes]:
        """The next chunk of lines; an empty list at the end of the input.

        Raises:
            OSError: Reading failed.
        """
        if self._done:
            return []
        assert self._queue is not None
        item = await self._queue.get()
        self._room.release()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
        return item

    def _pump(self) -> None:
        # read1 returns what one read gives (a pipe's lines as soon as they come, never
        # waiting to fill a buffer); the lines are cut here, at b"\n" only.
        read = getattr(self._stream, "read1", self._stream.read)
        rest = b""
        skipping = False  # inside a line longer than MAX_LINE_BYTES, after its first part
        try:
            while True:
                self._room.acquire()
                data = read(self._chunk_bytes)
                if not data:
                    if rest and not skipping:
                        if not self._hand_over([rest]):
                            return
                        self._room.acquire()
                    self._hand_over([])
                    return
                if skipping:
                    cut = data.find(b"\n") + 1
                    if not cut:
                        self._room.release()
                        continue
                    data, skipping = data[cut:], False
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if not cut and len(data) <= MAX_LINE_BYTES:
                    rest = data  # no whole line yet
                    self._room.release()
                    continue
                if not cut:  # a line too long to be a goal: hand over its start only
                    lines, rest, skipping = [data[:MAX_LINE_BYTES]], b"", True
                else:
                    rest = data[cut:]
                    lines = [
                        line + b"\n" if len(line) < MAX_LINE_BYTES else line[:MAX_LINE_BYTES]
                        for line in data[: cut - 1].split(b"\n")
                    ]
                if not self._hand_over(lines):
                    return
        except Exception as exc:
            self._hand_over(exc)
        finally:
            with contextlib.suppress(OSError):
                self._stream.close()

    def _hand_over(self, item: list[bytes] | BaseException) -> bool:
        loop, queue = self._loop, self._queue
        assert loop is not None
        assert queue is not None
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has ended: nobody reads any more
            return False
        return True
