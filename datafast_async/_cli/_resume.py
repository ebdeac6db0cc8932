"""``import --spool DIR``: where an interrupted import resumes, kept in a small file in DIR.

The goals of the lines read are journaled in the spool as they are accepted (the client's
``spool_path``); what is missing to resume is which lines were read. That is the progress
file, ``DIR/.import-<namespace>-<12 hex of the input's path>.json`` (for ``--kind payments`` or
``identify``, ``...-<12 hex>-payments.json``: a run with the wrong ``--kind``, every line
invalid, does not mark the file read for the right one)::

    {"version": 1, "file": "/abs/goals.jsonl", "line": 1200, "offset": 51234,
     "sha256": "<of the file's first 51234 bytes>", "done": false}

It is written (a temporary file, fsync, rename, fsync of the directory: never half written)
only after every goal of the lines up to ``line`` is on disk: the journal is flushed and
fsynced first (``Journal.flush``), so each of those goals is delivered, failed, or journaled
for the next run. It is written about every ``CHECKPOINT_SECONDS`` while reading, and once
more after the client closed (its goals still pending are then journaled: ``aclose`` keeps
them). The next run of the same command (same file, same key) takes the spool's goals over
and sends them first, checks that the file's first ``offset`` bytes are still the same
(``sha256``), and reads on from ``line + 1``: no line is read twice. A goal is sent twice only
if its request was cut when the client closed (its answer lost: DataFast may have recorded it,
and the spool keeps it), or, after a ``kill -9`` or a machine crash, if its line was read since
the last checkpoint (about a second's). None is lost.

The name does not start like a journal file's, so the journal never reads it; it is 0600 like
the journals (it names the input file, not its contents).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any

import attrs

from .._spool._ownership import make_directory

__all__ = ["CHECKPOINT_SECONDS", "Checkpoint", "ProgressFile"]

CHECKPOINT_SECONDS = 1.0
_VERSION = 1


@attrs.define
class Checkpoint:
    """How far an import got: every line up to ``line`` (``offset`` bytes, whose SHA-256 is
    ``sha256``) is delivered, failed, or journaled in the spool."""

    line: int = 0
    offset: int = 0
    sha256: str = hashlib.sha256().hexdigest()
    #: Every line of the file was read (and its goals handed over).
    done: bool = False


class ProgressFile:
    """The progress file of one import (input file, namespace) in a spool directory.

    Everything here blocks: call it in a thread from a running loop.
    """

    def __init__(
        self, directory: str, source: str, namespace: str, *, kind: str | None = None
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.source = os.path.abspath(source)
        digest = hashlib.sha256(self.source.encode("utf-8", "surrogateescape")).hexdigest()
        suffix = f"-{kind}" if kind is not None else ""  # goals: the name they always had
        self.path = os.path.join(self.directory, f".import-{namespace}-{digest[:12]}{suffix}.json")

    def load(self) -> Checkpoint | None:
        """The progress of an earlier run, or ``None`` if there was none.

        Raises:
            ValueError: The file is not a progress file this version wrote.
            OSError: It cannot be read.
        """
        try:
            with open(self.path, "rb") as stream:
                data: Any = json.loads(stream.read())
        except FileNotFoundError:
            return None
        if (
            not isinstance(data, dict)
            or data.get("version") != _VERSION
            or not isinstance(data.get("line"), int)
            or not isinstance(data.get("offset"), int)
            or not isinstance(data.get("sha256"), str)
        ):
            raise ValueError("not a progress file of this version")
        return Checkpoint(data["line"], data["offset"], data["sha256"], bool(data.get("done")))

    def save(self, progress: Checkpoint) -> None:
        """Replace the progress file atomically (written, fsynced, renamed, directory
        fsynced)."""
        make_directory(self.directory)
        data = json.dumps(
            {
                "version": _VERSION,
                "file": self.source,
                "line": progress.line,
                "offset": progress.offset,
                "sha256": progress.sha256,
                "done": progress.done,
            }
        ).encode()
        temp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _sync_directory(self.directory)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _sync_directory(self.directory)


def _sync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
