"""Reading the project's Markdown the way the documentation tests do: headings, sections
and the rows of pipe tables (fenced code skipped)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_DELIMITER = re.compile(r"^ {0,3}\|?(?:\s*:?-+:?\s*\|)+\s*:?-*:?\s*$")
_CODE = re.compile(r"`([^`]+)`")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")


def sections(markdown: str) -> list[tuple[str, list[str]]]:
    """Each heading's title with the lines directly under it (up to the next heading of any
    level); the lines before the first heading come under the title ``""``. Lines of fenced
    code blocks are left out: a heading or table there is an example, not documentation."""
    out: list[tuple[str, list[str]]] = [("", [])]
    fence = ""
    for line in markdown.splitlines():
        if fence:
            if line.strip().startswith(fence):
                fence = ""
            continue
        if found := _FENCE.match(line):
            fence = found.group(1)
            continue
        if found := _HEADING.match(line):
            out.append(((found.group(1) or "").strip(), []))
        else:
            out[-1][1].append(line)
    return out


def section(markdown: str, title: str) -> list[str]:
    """The lines directly under the one heading titled ``title`` (e.g. "`reports`")."""
    found = [lines for heading, lines in sections(markdown) if heading == title]
    assert len(found) == 1, f"{len(found)} headings titled {title!r} in the guide"
    return found[0]


def _cells(row: str) -> list[str]:
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def table_rows(lines: Iterable[str]) -> list[list[str]]:
    """The cells of every row of every pipe table in ``lines`` (header rows included): a
    table is a row, a delimiter row (``|---|---|``) and the rows up to the first line that is
    not one. ``\\|`` in a cell is a literal ``|``."""
    lines = list(lines)
    rows: list[list[str]] = []
    i = 0
    while i < len(lines):
        is_row = (
            lines[i].lstrip(" ").startswith("|") and len(lines[i]) - len(lines[i].lstrip(" ")) <= 3
        )
        if is_row and i + 1 < len(lines) and _DELIMITER.match(lines[i + 1]):
            rows.append(_cells(lines[i]))
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
        else:
            i += 1
    return rows


def first_cell_names(lines: Iterable[str]) -> list[str]:
    """The code spans in the first cell of each table row: what the table documents."""
    return [name for row in table_rows(lines) for name in _CODE.findall(row[0])]


def documented_command(synopsis: str, commands: Iterable[str]) -> str | None:
    """The longest of ``commands`` that starts ``synopsis``, compared word by word."""
    words = synopsis.split()
    matches = [c for c in commands if words[: len(c.split())] == c.split()]
    return max(matches, key=lambda c: len(c.split()), default=None)


def option_names(synopsis: str) -> set[str]:
    """The options a synopsis names: ``--feed`` and ``--feed-cache`` are different ones."""
    return set(_OPTION.findall(synopsis))


# ---------------------------------------------------------------------------------------
# Commands


#: The user guide: the README and the pages of docs/ that its sections moved to. The
#: documentation tests read them as one text (each heading is still unique in it).
GUIDE_PAGES = (
    "README.md",
    "docs/alerts.md",
    "docs/commands.md",
    "docs/inputs.md",
    "docs/feeds.md",
    "docs/policies.md",
    "docs/accountability.md",
    "docs/reports.md",
    "docs/configuration.md",
    "docs/performance.md",
)


def guide() -> str:
    """The user guide as one Markdown text (:data:`GUIDE_PAGES`, in order)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return "\n\n".join((root / page).read_text(encoding="utf-8") for page in GUIDE_PAGES)
