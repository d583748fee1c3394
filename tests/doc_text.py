"""The documentation's text, for the tests that run or check it: the pages of the site (``docs/``)
and README.md.

A code block that a test runs is marked on the line before it with ``<!-- MARKER: FILE -->``
(e.g. ``<!-- plugin-example: my_methods.py -->``): :func:`doc_block` finds it wherever it is, so a
block can move between pages without its test changing.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def doc_files() -> list[Path]:
    """README.md and every Markdown page under ``docs/`` (the build hooks' folder excluded)."""
    return [REPO / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)]


def doc_block(marker: str) -> tuple[str, str]:
    """(file name, text) of the one code block right after ``<!-- marker: FILE -->`` in README.md or ``docs/``."""
    pattern = re.compile(rf"<!-- {re.escape(marker)}: (\S+) -->\n+```\w+\n(.*?)```", re.S)
    found = [(path, m) for path in doc_files() for m in pattern.finditer(path.read_text())]
    where = ", ".join(str(path.relative_to(REPO)) for path, _ in found)
    assert len(found) == 1, f"expected one code block marked <!-- {marker}: FILE --> in README.md or docs/, found {len(found)} ({where})"
    match = found[0][1]
    return match.group(1), match.group(2)


def doc_page(rel: str) -> str:
    """The text of a page of the site, by its path under ``docs/``."""
    path = DOCS / rel
    assert path.is_file(), f"docs/{rel} does not exist"
    return path.read_text()


def doc_section(rel: str, title: str) -> str:
    """The text of ``docs/<rel>`` under the heading ``title`` (any level), up to the next heading of the same or a
    higher level (lines in fenced code blocks are not headings)."""
    lines, fenced, start, level = doc_page(rel).splitlines(keepends=True), False, None, 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#+) (.*)$", line.rstrip("\n"))
        if heading and start is None and heading.group(2) == title:
            start, level = i + 1, len(heading.group(1))
        elif heading and start is not None and len(heading.group(1)) <= level:
            return "".join(lines[start:i])
    assert start is not None, f"docs/{rel} has no heading '{title}'"
    return "".join(lines[start:])
