"""The README is a short front page: every page under ``docs/`` is linked from it, and every
link of the README and of the pages leads to a file and a heading that exist."""

from __future__ import annotations

import re

import pytest

from ._docs import DOCS, README, ROOT

PAGES = sorted(DOCS.glob("*.md"))
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    fenced, found = False, set()
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6} (.*)$", line)):
            found.add(_anchor(match.group(1)))
    return found


def test_the_front_page_is_short_and_links_every_page() -> None:
    front = README.read_text(encoding="utf-8")
    assert len(front.splitlines()) <= 200
    assert PAGES, "docs/ holds no page"
    linked = {target.split("#", 1)[0] for target in _LINK.findall(front)}
    for path in PAGES:
        assert f"docs/{path.name}" in linked, f"the README does not link docs/{path.name}"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_leads_to_a_file_and_a_heading_that_exist(path: object) -> None:
    assert isinstance(path, type(README))
    text = path.read_text(encoding="utf-8")
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:: not ours to check (no network)
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.is_file(), f"{path.name}: {target} leads to no file"
        if anchor and linked.suffix == ".md":
            anchors = _anchors(linked.read_text(encoding="utf-8"))
            assert anchor in anchors, f"{path.name}: {target} leads to no heading"
