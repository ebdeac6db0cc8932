"""``datafast-async spool DIR``: what a durable spool holds; ``--replay`` sends it.

Looking changes nothing: every journal file is read (``_spool.inspect``), never locked for
longer than an instant, and goal bodies are never printed (they hold visitor ids): ``--show N``
prints the first N pending goals' names and when they were journaled, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from .._client import DataFast
from .._config import GOALS_PATH
from .._errors import DataFastError
from .._models import Goal, GoalResult
from .._spool import FileInfo, inspect, namespace
from .._spool._records import parse_name, read_lines
from ._common import STOP_SIGNALS, Interruptible, client_settings, positive_int
from ._output import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    CLIError,
    Console,
    format_count,
    format_duration,
    format_rate,
    table,
)
from ._progress import Progress, bar

__all__ = ["add_parser"]

# What a pending record that is not a goal is shown as (its body holds a customer or a user).
_WHAT = {"/api/v1/payments": "a payment", "/api/v1/identify": "an identify"}
REPLAY_GRACE = 10.0  # seconds to deliver at the end of a replay before the rest is kept

DESCRIPTION = """\
Show what a durable spool (spool_path, DATAFAST_SPOOL_PATH) holds: for each namespace (the
website and a fingerprint of the key, never the key), the goals not yet delivered, the files,
who holds them (the pid of a live client, or nobody: orphaned, sent by the next client that
starts with that key), the age of the oldest goal, the bytes on disk and the damaged lines
skipped. Looking changes nothing. Goals' bodies hold visitor ids: they are never printed;
--show N prints the first N pending goals' names (a payment or an identify by its kind only:
its body names a customer or a user).

With --replay, the goals of the configured key's namespace (--api-key / DATAFAST_API_KEY, and
--website-id for a dft_ token) are sent now: a client takes over every file of that namespace
that no live client holds, sends what they hold, and deletes them once delivered. Goals of
other namespaces are left alone (they need their own key); files a live client holds are its
own to send. With --namespace NS, the goals of namespace NS are sent with the configured key
instead: those of a key that was rotated or revoked since (they count for the configured
key's website). While it sends, a progress bar is drawn on a terminal (plain progress lines
every few seconds elsewhere, or with --no-progress), as import does.

Exit codes: 0 (looking; or every goal replayed); 1 some goals were not delivered (they stay in
the spool, or failed finally); 2 bad usage or settings; 130 interrupted (what is left stays).
"""

EPILOG = """\
example:
  datafast-async spool /var/lib/myapp/datafast
  datafast-async spool /var/lib/myapp/datafast --json | jq '.namespaces[].pending'
  DATAFAST_API_KEY=df_... datafast-async spool /var/lib/myapp/datafast --replay
"""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "spool",
        parents=[common],
        help="show what a durable spool holds; --replay sends it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="the spool's directory")
    parser.add_argument(
        "--replay", action="store_true", help="send the goals of the configured key's namespace"
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help="with --replay: send the goals of namespace NS (as listed) with the configured "
        "key instead: the goals of a rotated or revoked key",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--files", action="store_true", help="also list every file (owner, goals, bytes)"
    )
    parser.add_argument(
        "--show",
        metavar="N",
        type=positive_int,
        help="print the first N pending goals of each namespace: name and age, never the body",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=None,
        help="with --replay: stop after S seconds; what is left stays in the spool",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="with --replay: no progress bar: plain progress lines every few seconds instead",
    )
    parser.set_defaults(run=run)


# -- looking ------------------------------------------------------------------------------------


def _look(directory: str) -> list[FileInfo]:
    try:
        return inspect(directory)
    except FileNotFoundError:
        raise CLIError(f"{directory}: no such directory") from None
    except NotADirectoryError:
        raise CLIError(f"{directory}: not a directory") from None
    except OSError as exc:
        raise CLIError(f"cannot read {directory}: {exc.strerror or exc}") from None


def _owner(info: FileInfo) -> int | None:
    """The pid of the live client that holds the file (its name says which), or ``None``."""
    if not info.locked:
        return None
    name = parse_name(info.file)
    return name.order[1] if name is not None else None


def _split(space: str) -> tuple[str, str | None]:
    """A namespace's key fingerprint (kind and hex) and website (for a ``dft_`` token)."""
    kind, _, rest = space.partition("-")
    website, _, fingerprint = rest.rpartition("-")
    return f"{kind}-{fingerprint}", website or None


def _names(directory: str, infos: Iterable[FileInfo], count: int) -> list[dict[str, Any]]:
    """The first ``count`` pending goals' names and journaling times (never the body)."""
    shown: list[dict[str, Any]] = []
    for info in infos:
        if len(shown) >= count or not info.pending:
            continue
        try:
            with open(os.path.join(directory, info.file), "rb") as stream:
                parsed = read_lines(stream.read())
        except OSError:
            continue
        for record in parsed.pending:
            if len(shown) >= count:
                break
            name = None
            if record.path == GOALS_PATH:  # a payment's "name" is its customer's: never shown
                try:
                    body = json.loads(record.body)
                    name = body.get("name") if isinstance(body, dict) else None
                except ValueError:
                    pass
            shown.append(
                {
                    "name": name if isinstance(name, str) else None,
                    "at": record.at,
                    "path": record.path,
                }
            )
    return shown


def summarize(
    directory: str, infos: list[FileInfo], *, show: int | None, yours: str | None
) -> dict[str, Any]:
    """What ``spool DIR --json`` prints."""
    now = time.time()
    spaces: dict[str, list[FileInfo]] = {}
    for info in infos:
        spaces.setdefault(info.namespace, []).append(info)
    out: list[dict[str, Any]] = []
    for space, files in spaces.items():
        key, website = _split(space)
        oldest = min((f.oldest for f in files if f.oldest is not None), default=None)
        owners = sorted({pid for pid in map(_owner, files) if pid is not None})
        entry: dict[str, Any] = {
            "namespace": space,
            "key": key,
            "website": website,
            "yours": space == yours,
            "pending": sum(f.pending or 0 for f in files),
            "files": len(files),
            "bytes": sum(f.size for f in files),
            "damaged": sum(f.damaged for f in files),
            "unreadable": sum(1 for f in files if f.error is not None),
            "owners": owners,
            "orphaned_files": sum(1 for f in files if not f.locked),
            "oldest": oldest,
            "oldest_age": None if oldest is None else max(0.0, now - oldest),
            "file_list": [
                {
                    "file": f.file,
                    "owner": _owner(f),
                    "pending": f.pending,
                    "bytes": f.size,
                    "oldest": f.oldest,
                    "damaged": f.damaged,
                    "error": f.error,
                }
                for f in files
            ],
        }
        if show:
            entry["first"] = _names(directory, files, show)
        out.append(entry)
    return {
        "directory": os.path.abspath(directory),
        "pending": sum(entry["pending"] for entry in out),
        "files": len(infos),
        "bytes": sum(info.size for info in infos),
        "namespaces": out,
    }


def _yours(args: argparse.Namespace) -> str | None:
    """The namespace of the configured key, if one is configured."""
    settings = client_settings(args)
    key = settings["api_key"] or os.environ.get("DATAFAST_API_KEY")
    if not key or not key.strip():
        return None
    website = settings["website_id"] or os.environ.get("DATAFAST_WEBSITE_ID")
    return namespace(key.strip(), website.strip() if website else None)


def _owners_text(entry: dict[str, Any]) -> str:
    parts = [f"pid {pid}" for pid in entry["owners"]]
    if entry["orphaned_files"]:
        parts.append(f"nobody ({entry['orphaned_files']} orphaned)")
    return ", ".join(parts) or "-"


def _print(console: Console, summary: dict[str, Any], *, files: bool) -> None:
    spaces = summary["namespaces"]
    if not spaces:
        console.result(f"spool {summary['directory']}: empty (no journal files)")
        return
    console.result(
        f"spool {summary['directory']}: {format_count(summary['pending'])} goals pending in "
        f"{format_count(summary['files'])} files ({format_count(summary['bytes'])} bytes), "
        f"{len(spaces)} namespace{'' if len(spaces) == 1 else 's'}"
    )
    for entry in spaces:
        console.result()
        mark = "  (the configured key)" if entry["yours"] else ""
        console.result(f"namespace {entry['namespace']}{mark}")
        age = entry["oldest_age"]
        rows = [
            ("key", entry["key"], "a fingerprint, never the key"),
            ("website", entry["website"] or "-", "" if entry["website"] else "the key's own"),
            ("pending", format_count(entry["pending"]), "goals not yet delivered"),
            ("files", format_count(entry["files"]), ""),
            ("owners", _owners_text(entry), ""),
            ("oldest", "-" if age is None else format_duration(age) + " ago", ""),
            ("bytes", format_count(entry["bytes"]), ""),
            ("damaged", format_count(entry["damaged"]), "lines skipped (torn or corrupt)"),
        ]
        if entry["unreadable"]:
            rows.append(("unreadable", format_count(entry["unreadable"]), "files"))
        for line in table(rows):
            console.result(line)
        if files:
            for f in entry["file_list"]:
                owner = f"pid {f['owner']}" if f["owner"] is not None else "nobody"
                detail = (
                    f.get("error")
                    or f"{format_count(f['pending'] or 0)} pending, "
                    f"{format_count(f['bytes'])} bytes, {f['damaged']} damaged"
                )
                console.result(f"    {f['file']}  {owner}  {detail}")
        for goal in entry.get("first", []):
            ago = format_duration(max(0.0, time.time() - goal["at"]))
            what = _WHAT.get(goal["path"])
            if what is None:
                console.result(f"    goal {goal['name']!r}, journaled {ago} ago")
            else:
                console.result(f"    {what}, journaled {ago} ago")


# -- replaying ----------------------------------------------------------------------------------


class Replay(Interruptible):
    def __init__(self, console: Console, *, live_progress: bool) -> None:
        super().__init__()
        self.delivered = 0
        self.failed: dict[str, int] = {}
        self.refused: DataFastError | None = None
        self.found = 0
        self.flushed = False
        self.started = time.monotonic()
        self.progress = Progress(console, self._render, live=live_progress)

    def on_success(self, goal: Goal, result: GoalResult) -> None:
        self.delivered += 1

    def on_failure(self, goal: Goal, error: DataFastError) -> None:
        kind = str(getattr(error, "status", None) or type(error).__name__)
        self.failed[kind] = self.failed.get(kind, 0) + 1

    async def run(self, client: DataFast, timeout: float | None) -> tuple[int, int]:
        self.started = time.monotonic()
        await client.start()
        self.found = client.stats().enqueued

        async def work() -> None:
            self.flushed = await client.flush(timeout)
            if not self.flushed:
                self._halt_grace = 0.0  # parked on disk (API down) or out of time: keep them

        self.progress.start()
        try:
            stats = await self.work_then_close(client, work())
        finally:
            await self.progress.stop()
        return stats.spooled, stats.enqueued

    def _render(self, live: bool) -> str:
        """The progress text, in import's words: delivered of found, failed, the rate."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        failed = sum(self.failed.values())
        counts = (
            f"{format_count(self.delivered)} of {format_count(self.found)} delivered, "
            f"{format_count(failed)} failed, {format_rate(self.delivered, elapsed)}/s"
        )
        fraction = (self.delivered + failed) / self.found if self.found else 1.0
        if not live:
            return f"{PROG}: progress: replay ({fraction:.0%}): {counts}"
        eta = ""
        if 0.001 < fraction < 1:
            left = elapsed * (1 - fraction) / fraction
            eta = f", {left:.0f} s left" if left < 60 else f", {format_duration(left)} left"
        return f"{bar(fraction, 12)} {fraction:4.0%} {counts}{eta}"


def _replay(args: argparse.Namespace, console: Console, before: dict[str, Any]) -> int:
    replay = Replay(console, live_progress=console.err_is_tty and not args.no_progress)
    other: str | None = args.namespace
    if other is not None and other not in {entry["namespace"] for entry in before["namespaces"]}:
        raise CLIError(
            f"no namespace {other!r} in {args.directory} (`{PROG} spool DIR` lists them)"
        )
    client = DataFast(  # ConfigurationError: exit 2 in main
        **client_settings(args),
        spool_path=args.directory,
        on_success=replay.on_success,
        on_failure=replay.on_failure,
        shutdown_timeout=REPLAY_GRACE,
        _spool_options={"namespace": other} if other is not None else None,
    )
    if client._options.spool_path is None:
        raise CLIError("--replay needs the client enabled (DATAFAST_ENABLED is off)")
    settings = client._options.settings
    assert settings.api_key is not None
    mine = other or namespace(settings.api_key, settings.website_id)
    if other is not None:
        console.note(
            f"{PROG}: sending the goals of namespace {other} with the configured key "
            f"(namespace {namespace(settings.api_key, settings.website_id)})"
        )
    left, _ = asyncio.run(replay.run(client, args.timeout))
    failed = sum(replay.failed.values())
    failed_text = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(replay.failed.items()))
    console.result(f"replay {os.path.abspath(args.directory)}: namespace {mine}")
    for line in table(
        [
            ("found", format_count(replay.found), "goals taken over from the spool"),
            ("delivered", format_count(replay.delivered), ""),
            ("failed", format_count(failed), failed_text),
            ("left", format_count(left), "still in the spool" if left else ""),
        ]
    ):
        console.result(line)
    after = summarize(args.directory, _look(args.directory), show=None, yours=mine)
    for entry in after["namespaces"]:
        if entry["namespace"] == mine:
            if entry["owners"]:
                console.note(
                    f"{PROG}: {entry['pending']:,} goals of this namespace are in files live "
                    f"clients hold ({_owners_text(entry)}): those clients send them"
                )
            continue
        if entry["pending"]:
            console.note(
                f"{PROG}: left alone: {entry['pending']:,} goals of namespace "
                f"{entry['namespace']} (another key or website): replay them with that key, "
                f"or with this one: --replay --namespace {entry['namespace']}"
            )
    if left:
        why = "the API is down or refused every request (see -v)"
        if replay.stopped_by is not None:
            why = "interrupted"
        elif args.timeout is not None and not replay.flushed:
            why = f"not done within --timeout {args.timeout:g} s"
        console.note(f"{PROG}: {left:,} goals left in the spool: {why}; replay again later")
    if replay.stopped_by is not None:
        return STOP_SIGNALS.get(replay.stopped_by, 130)
    return EXIT_FAILED if left or failed else EXIT_OK


def run(args: argparse.Namespace, console: Console) -> int:
    if args.namespace is not None and not args.replay:
        raise CLIError("--namespace goes with --replay")
    infos = _look(args.directory)
    summary = summarize(args.directory, infos, show=args.show, yours=_yours(args))
    if args.replay:
        return _replay(args, console, summary)
    if args.json:
        console.result(json.dumps(summary, indent=2))
    else:
        _print(console, summary, files=args.files)
    return EXIT_OK
