"""The journal's on-disk format: file names, the two kinds of line, and reading a file back.

A journal file is JSON Lines (one object a line, ``\\n``-terminated, UTF-8), readable with
``jq``. Two kinds of line::

    {"id":"3f9c0a1b2c4d-1a","path":"/api/v1/goals","at":1764650000.125,"body":{...}}
    {"ack":"3f9c0a1b2c4d-1a","outcome":"delivered"}

A goal record embeds the request body verbatim: the line is put together from bytes, so the
body read back is exactly the body that was given (and that is sent); nothing is re-encoded.
The endpoint's path is stored beside it, so other endpoints can share the journal: nothing
here knows what a body carries. An acknowledgement settles the goal of the same file whose id
it names. The API key is never part of either.

A file is named ``<namespace>.<segment id>.jsonl``; segment ids sort by creation. A file being
created is named ``.<namespace>.<segment id>.jsonl.new`` until it is locked (see
``_ownership``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import attrs

__all__ = [
    "ACK_RESERVE_BASE",
    "MAX_ID",
    "MAX_OUTCOME",
    "Parsed",
    "Record",
    "SegmentName",
    "ack_line",
    "check_id",
    "check_outcome",
    "parse_name",
    "quote_path",
    "read_lines",
    "record_line",
    "segment_file",
]

#: Longest goal id and outcome, so that an acknowledgement's size is known in advance (the
#: journal reserves it when the goal is appended: acknowledgements never pass the cap).
MAX_ID = 64
MAX_OUTCOME = 16
#: ``len(ack_line(id, outcome)) <= ACK_RESERVE_BASE + len(id)`` for every valid outcome.
ACK_RESERVE_BASE = len(b'{"ack":"","outcome":""}\n') + MAX_OUTCOME

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_OUTCOME = re.compile(r"[a-z_]{1,16}")
_SEGMENT = r"(\d{20})-(\d{1,10})-(\d{1,10})"
_FILE = re.compile(r"([A-Za-z0-9_-]{1,120})\.(" + _SEGMENT + r")\.jsonl")
_NEW_FILE = re.compile(r"\.([A-Za-z0-9_-]{1,120})\.(" + _SEGMENT + r")\.jsonl\.new")

# JSON-quotes a str with every non-ASCII character escaped (C-accelerated).
_quote_ascii: Callable[[str], str] = json.encoder.encode_basestring_ascii


def check_id(goal_id: str) -> None:
    """Raise ``ValueError`` unless ``goal_id`` is 1 to 64 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(goal_id, str) or _ID.fullmatch(goal_id) is None:
        raise ValueError(f"a journal id is 1 to {MAX_ID} of A-Z a-z 0-9 _ . : -, got {goal_id!r}")


def check_outcome(outcome: str) -> None:
    """Raise ``ValueError`` unless ``outcome`` is 1 to 16 of ``a-z _``."""
    if not isinstance(outcome, str) or _OUTCOME.fullmatch(outcome) is None:
        raise ValueError(f"an outcome is 1 to {MAX_OUTCOME} of a-z _, got {outcome!r}")


def quote_path(path: str) -> bytes:
    """An endpoint's path as a JSON string (ASCII, so it is the same bytes on every platform)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"a journal path is a str that starts with '/', got {path!r}")
    return _quote_ascii(path).encode("ascii")


def record_line(goal_id: str, quoted_path: bytes, at: float, body: bytes) -> bytes:
    """One goal record, ``\\n``-terminated; ``body`` is embedded byte for byte.

    ``goal_id`` must have passed ``check_id`` and ``quoted_path`` come from ``quote_path``.
    """
    return b'{"id":"%s","path":%s,"at":%.3f,"body":%s}\n' % (
        goal_id.encode("ascii"),
        quoted_path,
        at,
        body,
    )


def ack_line(goal_id: str, outcome: str) -> bytes:
    """One acknowledgement, ``\\n``-terminated (``goal_id`` and ``outcome`` checked)."""
    return b'{"ack":"%s","outcome":"%s"}\n' % (goal_id.encode("ascii"), outcome.encode("ascii"))


# -- names --------------------------------------------------------------------------------------


@attrs.frozen
class SegmentName:
    """A journal file's name, taken apart: its namespace and its segment id."""

    namespace: str
    segment: str
    #: Sorts files by creation: (time in ns, pid, counter).
    order: tuple[int, int, int]
    #: A file still being created (not yet a journal).
    new: bool = False

    @property
    def file(self) -> str:
        if self.new:
            return f".{self.namespace}.{self.segment}.jsonl.new"
        return f"{self.namespace}.{self.segment}.jsonl"


def segment_file(namespace: str, time_ns: int, pid: int, counter: int) -> SegmentName:
    return SegmentName(
        namespace,
        f"{time_ns:020d}-{pid}-{counter}",
        (time_ns, pid, counter),
    )


def parse_name(name: str) -> SegmentName | None:
    """The parts of a journal file's name, or ``None`` if it is not one."""
    match = _FILE.fullmatch(name)
    if match is not None:
        namespace, segment, when, pid, counter = match.groups()
        return SegmentName(namespace, segment, (int(when), int(pid), int(counter)))
    match = _NEW_FILE.fullmatch(name)
    if match is not None:
        namespace, segment, when, pid, counter = match.groups()
        return SegmentName(namespace, segment, (int(when), int(pid), int(counter)), new=True)
    return None


# -- reading ------------------------------------------------------------------------------------


@attrs.frozen
class Record:
    """One journaled request: its id, the endpoint's path, when it was journaled (Unix time),
    and its JSON body, exactly the bytes that were journaled."""

    id: str
    path: str
    at: float
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    #: The whole line as it is in the file (to write it again elsewhere).
    line: bytes = attrs.field(repr=False, eq=False)


@attrs.define
class Parsed:
    """What one file holds."""

    #: Goal records in file order, each id once (a repeated id is counted in ``duplicates``).
    records: list[Record] = attrs.field(factory=list)
    #: Ids acknowledged in this file, with their outcome.
    acked: dict[str, str] = attrs.field(factory=dict)
    #: A last line cut short (no ``\\n`` and not a whole JSON object): a crash mid-write.
    torn: int = 0
    #: Lines that are not a record or an acknowledgement (not JSON, or not our shape).
    garbage: int = 0
    #: Acknowledgements of an id that no record of the file has.
    unknown_acks: int = 0
    duplicates: int = 0
    #: Whether the file ends with ``\\n`` (or is empty): what is appended starts a new line.
    ends_clean: bool = True

    @property
    def pending(self) -> list[Record]:
        """The records not acknowledged, in file order."""
        acked = self.acked
        return [record for record in self.records if record.id not in acked]

    @property
    def damaged(self) -> int:
        return self.torn + self.garbage + self.unknown_acks


def read_lines(data: bytes) -> Parsed:
    """Read a journal file's bytes; never raises.

    Lines are split on ``\\n`` only (a body may hold U+2028 or other characters that
    ``str.splitlines`` would split on). A torn last line, a line that is not JSON or not of
    our shape, an acknowledgement of an id the file does not hold: each is skipped and counted.
    """
    parsed = Parsed()
    if not data:
        return parsed
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the file ends with "\n"
    parsed.ends_clean = last == b""
    seen: set[str] = set()
    acks: list[tuple[str, str]] = []
    for line in lines:
        if line.strip():
            _read_line(line, parsed, seen, acks)
    if last.strip():
        # No "\n" after it: whole only if it is a complete object (the crash came just before
        # the newline); otherwise it is a write cut short.
        before = parsed.garbage
        _read_line(last, parsed, seen, acks)
        if parsed.garbage != before:
            parsed.garbage = before
            parsed.torn += 1
    for goal_id, outcome in acks:
        if goal_id in seen:
            parsed.acked[goal_id] = outcome
        else:
            parsed.unknown_acks += 1
    return parsed


def _read_line(line: bytes, parsed: Parsed, seen: set[str], acks: list[tuple[str, str]]) -> None:
    try:
        obj = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        parsed.garbage += 1
        return
    if not isinstance(obj, dict):
        parsed.garbage += 1
        return
    if "ack" in obj:
        goal_id, outcome = obj.get("ack"), obj.get("outcome")
        if isinstance(goal_id, str) and isinstance(outcome, str) and len(obj) == 2:
            acks.append((goal_id, outcome))
        else:
            parsed.garbage += 1
        return
    goal_id, path, at = obj.get("id"), obj.get("path"), obj.get("at", 0.0)
    if (
        not isinstance(goal_id, str)
        or _ID.fullmatch(goal_id) is None
        or not isinstance(path, str)
        or "body" not in obj
        or isinstance(at, bool)
        or not isinstance(at, (int, float))
    ):
        parsed.garbage += 1
        return
    if goal_id in seen:
        parsed.duplicates += 1
        return
    seen.add(goal_id)
    parsed.records.append(Record(goal_id, path, float(at), _body_of(line, obj), line + b"\n"))


def _body_of(line: bytes, obj: dict[str, object]) -> bytes:
    """The body's bytes as they are in the line (the bytes that were journaled).

    Our writer puts ``body`` last, after ``id`` (a JSON string, in which a ``"`` is always
    escaped), ``path`` (the same) and ``at`` (a number): the first ``,"body":`` is the one.
    A line a person edited into another shape gets its body encoded again, compactly.
    """
    stripped = line.rstrip(b" \t\r")
    start = stripped.find(b',"body":')
    if list(obj) == ["id", "path", "at", "body"] and start != -1 and stripped.endswith(b"}"):
        return stripped[start + 8 : -1]
    return json.dumps(obj["body"], ensure_ascii=False, separators=(",", ":")).encode()
