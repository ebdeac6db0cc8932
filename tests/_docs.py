"""The README and the pages under ``docs/``, read by the tests that run their examples as
pasted."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_HEADING = re.compile(r"^(#{1,6}) (.*)$")
_PYTHON = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def page(name: str) -> str:
    """The text of ``docs/<name>`` (or of the README, for ``README.md``)."""
    path = README if name == "README.md" else DOCS / name
    return path.read_text(encoding="utf-8")


def section(name: str, heading: str) -> str:
    """The section of the page ``name`` under the heading ``heading`` (of any level), up to the
    next heading of the same level or higher; headings inside code blocks do not count."""
    lines = page(name).split("\n")
    fenced = False
    start = level = None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        if start is None:
            if match.group(2) == heading:
                start, level = i + 1, len(match.group(1))
        elif level is not None and len(match.group(1)) <= level:
            return "\n".join(lines[start:i])
    if start is None:
        raise LookupError(f"{name} has no heading {heading!r}")
    return "\n".join(lines[start:])


def python_blocks(text: str) -> list[str]:
    """Each ``python`` code block of ``text``, in order."""
    return [str(block) for block in _PYTHON.findall(text)]


def first_python_block(name: str, heading: str) -> str:
    """The first ``python`` block of the section ``heading`` of the page ``name``."""
    return python_blocks(section(name, heading))[0]
