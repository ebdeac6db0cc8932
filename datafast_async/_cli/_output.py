"""What the command line writes: results on stdout, messages and progress on stderr.

Every line goes through ``Console``, which masks the API key wherever it would appear and keeps
the live status line (the progress bar) intact: a message clears the bar, is written, and the
bar is drawn again on its next tick.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from typing import TextIO

from .._config import mask_key

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "Console",
    "format_count",
    "format_duration",
    "format_rate",
    "table",
]

PROG = "datafast-async"

EXIT_OK = 0  # every goal delivered
EXIT_FAILED = 1  # some goals were not delivered
EXIT_USAGE = 2  # bad usage or settings (also: the API refused the key)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

# Something that looks like a DataFast key or token, for text that may echo raw arguments.
_KEY_LIKE = re.compile(r"\bdft?_[A-Za-z0-9_\-]{6,}")


class CLIError(Exception):
    """A failure the command line reports as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Console:
    """stdout for results, stderr for messages, errors and the live status line.

    Args:
        out: Where results go (``sys.stdout``).
        err: Where messages, errors and progress go (``sys.stderr``).
        secrets: Strings never to be written whole (the API key); they are masked.
    """

    def __init__(self, out: TextIO, err: TextIO, secrets: Iterable[str | None] = ()) -> None:
        self.out = out
        self.err = err
        self._secrets: list[str] = []
        self._status_width = 0
        for secret in secrets:
            self.add_secret(secret)

    @property
    def err_is_tty(self) -> bool:
        isatty = getattr(self.err, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # closed stream
            return False

    def add_secret(self, secret: str | None) -> None:
        """Mask ``secret`` in everything written from now on."""
        if secret and secret.strip() and secret not in self._secrets:
            # Longest first, so a key that contains another one is masked whole.
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str, *, key_like: bool = False) -> str:
        """``text`` with every known secret masked (and, with ``key_like``, anything that
        looks like a DataFast key, for text that echoes raw arguments)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, mask_key(secret))
        if key_like:
            text = _KEY_LIKE.sub(lambda match: mask_key(match.group(0)), text)
        return text

    # -- stdout ----------------------------------------------------------------------------

    def result(self, text: str = "") -> None:
        """A line of results on stdout."""
        self._write(self.out, self.redact(text) + "\n")

    # -- stderr ----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A message line on stderr (clearing the status line first)."""
        self.clear_status()
        self._write(self.err, self.redact(text) + "\n")

    def error(self, text: str, *, key_like: bool = False) -> None:
        """The one-line error report: ``datafast-async: error: ...``."""
        first_line = " ".join(text.split()) or "unknown error"
        self.note(f"{PROG}: error: {self.redact(first_line, key_like=key_like)}")

    def status(self, text: str) -> None:
        """Draw the live status line (a terminal only): redrawn in place with ``\\r``."""
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        line = self.redact(text)[:width]
        padding = " " * max(0, self._status_width - len(line))
        self._status_width = len(line)
        self._write(self.err, "\r" + line + padding)

    def clear_status(self) -> None:
        """Erase the status line, if one is drawn."""
        if self._status_width:
            self._write(self.err, "\r" + " " * self._status_width + "\r")
            self._status_width = 0

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()


class ConsoleLogHandler(logging.Handler):
    """Routes the SDK's log records to the console as ``datafast-async: ...`` lines."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        if self.level > logging.WARNING and getattr(record, "datafast_event", None) == "circuit":
            return  # the commands say in their own words that the API refused the key
        try:
            message = record.getMessage()
        except Exception:  # a bad log call must not break the command
            message = str(record.msg)
        level = record.levelname.lower()
        self._console.note(f"{PROG}: {level}: {message}")


def format_count(value: int) -> str:
    return f"{value:,}"


def format_rate(count: int, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    rate = count / seconds
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def table(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """Rows of ``(label, value, note)`` as aligned lines: labels left, values right."""
    label_width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    lines = []
    for row in rows:
        line = f"  {row[0]:<{label_width}}  {row[1]:>{value_width}}"
        if row[2]:
            line += f"   {row[2]}"
        lines.append(line.rstrip())
    return lines
