"""The README stays a first screen and an index; the pages it points to hold the rest.

A maintainer meets the project through the README, so it keeps to what the project is, how to run
and test it, the architecture at a glance and where everything else lives. These tests keep it
that way and keep its links, and those between the pages, pointing at something.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
BENCH = REPO_ROOT / "bench"
PAGES = [README, BENCH / "README.md", BENCH / "RESULTS.md", *sorted(DOCS.glob("*.md"))]

_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading: lower case, punctuation
    other than ``-`` and ``_`` dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose(path: Path) -> str:
    """The page without its fenced code blocks (whose brackets are code, not links)."""
    return _FENCED.sub("", path.read_text())


def test_the_readme_fits_in_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_every_page_under_docs_is_named_in_the_readme():
    text = README.read_text()
    assert [page.name for page in DOCS.glob("*.md") if f"docs/{page.name}" not in text] == []


def test_every_relative_link_reaches_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in _LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target}")
            elif fragment and fragment not in {anchor(h) for h in _HEADING.findall(prose(linked))}:
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target}")
    assert broken == []


def test_anchors_follow_the_renderers_rule():
    cursors = "Cursors: resume where you left off, on any replica"
    assert anchor(cursors) == "cursors-resume-where-you-left-off-on-any-replica"
    assert anchor("The JavaScript client: `siscom-stream.js`") == "the-javascript-client-siscom-streamjs"
    assert anchor("Map subscriptions: `bbox`, `max_hz`, `fields`") == "map-subscriptions-bbox-max_hz-fields"
