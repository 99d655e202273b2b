"""Listings as every command prints them: plain aligned text tables, JSON and CSV.

A command that lists or reports builds a :class:`Listing` (its columns and rows) and
renders it in the format asked for with ``--format``: ``table`` for people, ``json`` for
programs (the columns as keys, in the same order every time), ``csv`` for spreadsheets
(every cell through :mod:`compliance.csvsafe`, so that a cell cannot run as a formula).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compliance.csvsafe import write_csv

#: The formats of a listing.
FORMATS = ("table", "json", "csv")


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header and rows as lines, each column padded to its widest cell, two spaces
    between columns, no trailing spaces."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]


def to_json(data: Any) -> str:
    """``data`` as indented JSON, ending with a line break."""
    return json.dumps(data, indent=2) + "\n"


def cell_text(value: Any) -> str:
    """A value as a table shows it: ``-`` for nothing, lists joined with ``, ``."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


@dataclass(frozen=True)
class Listing:
    """Rows of one kind: ``columns`` are the JSON keys and the CSV header, in order;
    ``headings`` the table's header (default: the columns); ``empty`` what the table says
    when there is no row; ``note`` a line under the table."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    headings: tuple[str, ...] | None = None
    empty: str = "nothing to list"
    note: str | None = None
    #: how a column's value is shown in the table, where :func:`cell_text` will not do
    shown: dict[str, Callable[[Any], str]] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """The rows with exactly the columns, in order (the JSON)."""
        return [{c: row.get(c) for c in self.columns} for row in self.rows]

    def json(self) -> str:
        """A JSON list of the rows."""
        return to_json(self.records())

    def csv(self) -> str:
        """The CSV, safe to open in a spreadsheet (lists joined with ``;``, dicts as JSON)."""
        return write_csv(
            self.columns,
            (
                [
                    json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                    for v in (row.get(c) for c in self.columns)
                ]
                for row in self.rows
            ),
        )

    def table(self) -> str:
        """The aligned text table (or :attr:`empty`), then :attr:`note`."""
        if not self.rows:
            return self.empty + "\n"
        body = [
            [self.shown.get(c, cell_text)(row.get(c)) for c in self.columns] for row in self.rows
        ]
        lines = aligned(self.headings or self.columns, body)
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def render(self, fmt: str) -> str:
        """The listing in ``fmt``: ``table``, ``json`` or ``csv``."""
        if fmt == "json":
            return self.json()
        if fmt == "csv":
            return self.csv()
        if fmt == "table":
            return self.table()
        raise ValueError(f"no listing format {fmt!r}")
