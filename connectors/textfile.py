"""Reading exported text files: encodings, chunked CSV and JSON Lines, timestamps.

Exports arrive as UTF-8 with or without a BOM, or as UTF-16 LE (with a BOM when
re-saved by Excel, sometimes without one from the Exchange admin center), with
Windows PowerShell's ``#TYPE`` first line, fully quoted fields and CRLF line ends.
Everything here streams: a file is read in blocks whatever its size.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import datetime as dt
import io
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO, TypeVar, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from compliance.errors import InputError
from compliance.events import (
    RAW,
    TIMESTAMP_CEILING,
    TIMESTAMP_FLOOR,
    bounded_utc,
)
from compliance.hashing import string_offsets
from connectors.csvsplit import byte_ranges, log_split, part_encoding

log = logging.getLogger(__name__)

#: Bytes the CSV reader parses at a time. Arrow's reader keeps up to 32 blocks read
#: ahead of a slower consumer, so this bounds that buffer (32 MiB), not the chunk size.
DEFAULT_BLOCK_BYTES = 1 << 20
#: Rows handed to the engine at a time (blocks are gathered up to this). Twice 64k: what
#: each chunk costs whatever its size is paid half as often (5M rows: 12% less time, 90 MB
#: more at the peak, measured with `tests.benchmark`).
DEFAULT_CHUNK_ROWS = 1 << 17
DEFAULT_JSON_ROWS = 50_000
_SNIFF_BYTES = 64 << 10
#: JSON nested deeper than this is refused (a message-trace row needs 3 levels: a page,
#: its list of rows, a row); deeper nesting is no message trace, only a way to exhaust
#: the parser.
MAX_JSON_DEPTH = 32
#: Characters of one JSON Lines line (a whole OData page of 5,000 rows is a few MB).
MAX_JSON_LINE = 64 << 20
#: Put where a reader found bytes that are not text in the file's encoding: a
#: noncharacter, which Unicode keeps for a program's own use, so that a genuine U+FFFD
#: in the file (an upstream system's replacement, valid text) is read as text.
UNDECODABLE = "\ufdd0"
#: The codec error handler that puts :data:`UNDECODABLE` for each undecodable sequence.
UNDECODABLE_ERRORS = "compliance-undecodable"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return UNDECODABLE, exc.end


codecs.register_error(UNDECODABLE_ERRORS, _mark_undecodable)


def detect_encoding(head: bytes) -> str:
    """The Python codec name for a file that starts with ``head``."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4:
        odd_nuls = sample[1::2].count(0)
        even_nuls = sample[0::2].count(0)
        if odd_nuls > len(sample) // 4 and even_nuls == 0:
            return "utf-16-le"
        if even_nuls > len(sample) // 4 and odd_nuls == 0:
            return "utf-16-be"
    # UTF-8 unless invalid sequences are common: a stray bad byte in an otherwise UTF-8
    # file (PowerShell 7 writes no BOM) rejects only its row (bad_encoding), while a
    # legacy ANSI export is full of them, and never has a valid multi-byte sequence
    text = head.decode("utf-8", errors=UNDECODABLE_ERRORS)  # a genuine U+FFFD is text
    bad = text[:-2].count(UNDECODABLE)  # a character cut at the end of the sample is fine
    multibyte = sum(1 for ch in text if ord(ch) > 0x7F and ch != UNDECODABLE)
    if bad and (bad * 50 > len(head) or not multibyte):
        return "cp1252"
    return "utf-8"


def read_head(path: Path, size: int = _SNIFF_BYTES) -> bytes:
    """The first ``size`` bytes of ``path``, with a clear error when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a log file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


@contextmanager
def open_text(path: Path) -> Iterator[tuple[TextIO, str]]:
    """Open ``path`` as text in its detected encoding; yields (stream, encoding)."""
    encoding = detect_encoding(read_head(path))
    try:
        with path.open("r", encoding=encoding, newline="") as stream:
            yield stream, encoding
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, f"is not valid {encoding} text") from None


def head_lines(path: Path, count: int = 5) -> tuple[list[str], str]:
    """The first ``count`` lines of a text file (decoded) and the encoding used."""
    head = read_head(path)
    encoding = detect_encoding(head)
    text = head.decode(encoding, errors="replace")
    return text.splitlines()[:count], encoding


@dataclass
class CsvLayout:
    """How a delimited export is laid out, found from its first lines."""

    encoding: str
    skip_rows: int  # lines before the header (PowerShell's '#TYPE ...')
    header: list[str]
    delimiter: str = ","


def sniff_csv(path: Path, delimiter: str | None = None) -> CsvLayout:
    """Find encoding, preamble lines and header of a delimited export."""
    lines, encoding = head_lines(path, 10)
    skip = 0
    while skip < len(lines) and (lines[skip].startswith("#TYPE") or not lines[skip].strip()):
        skip += 1
    if skip >= len(lines):
        raise InputError(path, "is empty: no header line found")
    first = lines[skip]
    if delimiter is None:
        delimiter = max((",", ";", "\t", "|"), key=first.count)
    try:
        frame = pd.read_csv(io.StringIO(first), sep=delimiter, dtype=str, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        raise InputError(path, "has no readable CSV header") from None
    return CsvLayout(encoding, skip, [str(c).strip() for c in frame.columns], delimiter)


def iter_csv(
    path: Path,
    layout: CsvLayout,
    columns: Sequence[str],
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    byte_range: tuple[int, int] | None = None,
    column_names: Sequence[str] | None = None,
) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
    """Yield (frame of the named columns as strings, rows dropped by reason) per chunk.

    Only ``columns`` are converted: other fields (subjects among them) are parsed by
    the CSV reader and dropped there, never turned into Python objects. Blocks are
    gathered into chunks of about ``chunk_rows`` rows.

    Rows with the wrong number of fields are dropped as ``malformed_row``; rows with
    bytes that are not text in the file's encoding, in a converted field or in a
    malformed row, as ``bad_encoding`` (elsewhere, in a subject, they do no harm).

    A UTF-8 file is handed to Arrow as it is (read and parsed in Arrow's own threads,
    never through Python): converted fields arrive as bytes and are checked for UTF-8
    chunk by chunk. Arrow cannot hand over a malformed row that is not UTF-8 either; on
    such a row the file is read again through :class:`_Utf8Reader`, which marks the bad
    bytes, from the first row not yet yielded, so that nothing is lost or read twice.
    Other encodings always go through :class:`_Utf8Reader`.

    ``byte_range`` (start, stop) reads only the records that start in those bytes of the
    file: both ends must be record starts (:func:`connectors.csvsplit.record_starts`), or
    0 and the file's size. A range that does not start at 0 holds no preamble and no
    header: ``column_names`` (the header's, as :func:`csv_header` reads them) name its
    fields, and no row is skipped.
    """
    if byte_range is not None and byte_range[0] > 0 and column_names is None:
        raise ValueError("a byte range after the file's start needs the header's column names")
    part = _CsvPart(path, layout, byte_range, column_names)
    if byte_range is not None and byte_range[0] > 0:
        part.encoding = part_encoding(layout.encoding, read_head(path, 4))
    direct = layout.encoding in ("utf-8", "utf-8-sig")
    done = _CsvProgress()
    try:
        if direct:
            try:
                yield from _csv_chunks(path, part, columns, block_bytes, chunk_rows, done, True)
                return
            except (pa.ArrowInvalid, UnicodeDecodeError):
                if not done.undecodable:
                    raise  # a parse error of the file itself, not of its encoding
                log.debug("%s: a malformed row is not UTF-8; reading on with replacement", path)
        yield from _csv_chunks(path, part, columns, block_bytes, chunk_rows, done, False)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot parse as CSV: {_safe_arrow_message(exc)}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def csv_ranges(path: Path, layout: CsvLayout, parts: int) -> list[tuple[int, int]]:
    """Up to ``parts`` byte ranges of a delimited export that together hold each of its
    records once, cut where records start past the preamble and the header
    (:func:`connectors.csvsplit.byte_ranges`); the whole file when it cannot be cut."""
    return byte_ranges(
        path, parts, layout.encoding, layout.delimiter, after_records=layout.skip_rows + 1
    )


class CsvPartOf(Protocol):
    """A read unit that can read a byte range of its CSV file (see :func:`csv_parts`)."""

    path: Path
    format: str
    timestamp_format: str | None
    byte_range: tuple[int, int] | None
    column_names: list[str] | None


_Part = TypeVar("_Part", bound=CsvPartOf)


def csv_parts(
    unit: _Part, layout: CsvLayout, parts: int, first_format: Callable[[], str | None]
) -> list[_Part]:
    """``unit`` as up to ``parts`` copies that each read one byte range of its file, cut
    where records start (:func:`csv_ranges`), and that together read exactly what the
    whole file reads: each told the header's names and the format of the file's times
    (``unit``'s, else ``first_format()``: what the whole file's reading finds in its first
    chunk). ``[unit]`` when the file is too small, cannot be cut safely, or its first
    chunk tells no time format (the whole file's reading looks further), or its header
    cannot be read (the whole file's reading says why)."""
    ranges = csv_ranges(unit.path, layout, parts)
    if len(ranges) < 2:
        return [unit]
    stamps = unit.timestamp_format or first_format()
    if stamps is None:
        log.debug("%s: times of an unknown format first; read whole", unit.format)
        return [unit]
    try:
        names = csv_header(unit.path, layout)
    except InputError:
        return [unit]
    out = []
    for start, stop in ranges:
        part = copy.copy(unit)
        part.byte_range = (start, stop)
        part.column_names = names if start else None
        part.timestamp_format = stamps
        out.append(part)
    log_split(log, unit.path, unit.format, ranges)
    return out


def csv_header(path: Path, layout: CsvLayout) -> list[str]:
    """The names of the header's fields as Arrow reads them, in order: what a part of the
    file after the header is told (``column_names`` of :func:`iter_csv`)."""
    direct = layout.encoding in ("utf-8", "utf-8-sig")
    read_options = pacsv.ReadOptions(
        encoding="utf8", skip_rows=layout.skip_rows, block_size=DEFAULT_BLOCK_BYTES
    )
    parse_options = pacsv.ParseOptions(
        delimiter=layout.delimiter,
        newlines_in_values=True,
        invalid_row_handler=_quiet_when_undecodable(lambda _row: "skip"),
    )
    try:
        with contextlib.ExitStack() as stack:
            source = _CsvPart(path, layout).open(stack, direct)
            reader = pacsv.open_csv(source, read_options=read_options, parse_options=parse_options)
            return [str(name) for name in reader.schema.names]
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot parse as CSV: {_safe_arrow_message(exc)}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


@dataclass
class _CsvPart:
    """What one reading of :func:`iter_csv` reads: a file's layout, and a byte range with
    the header's names (None: the whole file, its header read from it); ``encoding`` is
    the codec of what is read (a part after the file's start has no byte-order mark)."""

    path: Path
    layout: CsvLayout
    byte_range: tuple[int, int] | None = None
    column_names: Sequence[str] | None = None
    encoding: str = ""

    def __post_init__(self) -> None:
        self.encoding = self.encoding or self.layout.encoding

    def open(self, stack: contextlib.ExitStack, direct: bool) -> Any:
        """The bytes to hand Arrow: the file (or its range) as it is, or as UTF-8."""
        if self.byte_range is None:
            if direct:
                return stack.enter_context(pa.OSFile(str(self.path)))
            return _Utf8Reader(stack.enter_context(self.path.open("rb")), self.encoding)
        start, stop = self.byte_range
        whole = stack.enter_context(pa.OSFile(str(self.path)))
        stream = stack.enter_context(whole.get_stream(start, max(0, stop - start)))
        return stream if direct else _Utf8Reader(cast(BinaryIO, stream), self.encoding)


@dataclass
class _CsvProgress:
    """How far :func:`iter_csv` got: rows parsed and malformed rows counted in the chunks
    it yielded (a second reading skips them), and whether a malformed row could not be
    handed over for its bytes."""

    rows: int = 0
    malformed: int = 0
    undecodable: bool = False


def _csv_chunks(
    path: Path,
    part: _CsvPart,
    columns: Sequence[str],
    block_bytes: int,
    chunk_rows: int,
    done: _CsvProgress,
    direct: bool,
) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
    """One reading of ``path`` (or of its ``part``) for :func:`iter_csv`, after the
    ``done.rows`` parsed rows and ``done.malformed`` malformed rows already yielded
    (``direct``: by Arrow alone, with converted fields as bytes; else through
    :class:`_Utf8Reader`)."""
    layout = part.layout
    dropped: Counter[str] = Counter()
    skip_rows, skip_malformed = done.rows, done.malformed
    malformed = 0  # counted by the handler since the last chunk

    @_quiet_when_undecodable
    def on_invalid(row: Any) -> str:
        # the row's text is never logged: only whether it held undecodable bytes
        nonlocal skip_malformed, malformed
        if skip_malformed:
            skip_malformed -= 1
        else:
            dropped["bad_encoding" if UNDECODABLE in str(row.text) else "malformed_row"] += 1
            malformed += 1
        return "skip"

    named = part.column_names is not None  # a part after the header: named, nothing skipped
    read_options = pacsv.ReadOptions(
        encoding="utf8",  # UTF-8 already, or transcoded by _Utf8Reader
        skip_rows=0 if named else layout.skip_rows,
        block_size=block_bytes,
        column_names=list(part.column_names) if part.column_names is not None else None,
        # parsed in the calling thread; the engine overlaps reading and processing
        # itself (compliance.engine.THREADS)
        use_threads=False,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=layout.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
    )
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: pa.binary() if direct else pa.string() for c in columns},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    with contextlib.ExitStack() as stack:
        source = part.open(stack, direct)
        reader: pacsv.CSVStreamingReader | None = None
        batches: list[pa.RecordBatch] = []
        rows = 0
        while True:
            try:
                if reader is None:  # opening parses the first block
                    reader = pacsv.open_csv(
                        source,
                        read_options=read_options,
                        parse_options=parse_options,
                        convert_options=convert,
                    )
                batch = reader.read_next_batch()
            except StopIteration:
                batch = None
            except pa.ArrowInvalid:
                # the handler never saw the row: Arrow could not decode it for it
                done.undecodable = direct and "Row #" in str(sys.exc_info()[1])
                raise
            if batch is not None:
                if skip_rows:  # yielded by an earlier reading
                    cut = min(skip_rows, batch.num_rows)
                    batch, skip_rows = batch.slice(cut), skip_rows - cut
                batches.append(batch)
                rows += batch.num_rows
            if batches and (batch is None or rows >= chunk_rows):
                table = pa.Table.from_batches(batches).combine_chunks()
                batches, parsed, rows = [], rows, 0
                if direct:
                    table = _utf8_only(table, dropped)
                elif isinstance(source, _Utf8Reader) and source.replaced:
                    table = _drop_bad_text(table, dropped)
                frame = table.to_pandas(types_mapper=pd.ArrowDtype)
                frame.columns = [str(c) for c in frame.columns]
                done.rows += parsed
                done.malformed += malformed
                malformed = 0
                yield frame.astype("string"), Counter(dropped)
                dropped.clear()
            if batch is None:
                break
        if dropped:
            done.malformed += malformed
            yield pd.DataFrame({c: pd.Series(dtype="string") for c in columns}), dropped


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _quiet_when_undecodable(handler: _Handler) -> _Handler:
    """Mark an invalid-row handler whose row Arrow may fail to decode (a malformed row
    that is not UTF-8): Arrow then reports a parse error, which :func:`iter_csv` handles,
    and Python would print the decoding error too, as an exception "ignored" in the
    handler. That print is dropped; any other stays."""
    handler.__dict__["_csv_handler"] = True
    if not isinstance(sys.unraisablehook, _QuietHook):
        sys.unraisablehook = _QuietHook(sys.unraisablehook)
    return handler


class _QuietHook:
    """``sys.unraisablehook`` without the decoding errors of marked CSV row handlers."""

    def __init__(self, previous: Callable[[Any], Any]) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        marked = getattr(unraisable.object, "_csv_handler", False)
        if marked and isinstance(unraisable.exc_value, UnicodeDecodeError):
            return
        self.previous(unraisable)


def _utf8_only(table: pa.Table, dropped: Counter[str]) -> pa.Table:
    """``table``'s binary columns as strings, without the rows holding bytes that are not
    UTF-8 in one of them (counted as ``bad_encoding``). Checked per column by Arrow; only
    a column that fails is looked at value by value."""
    text: dict[str, Any] = {}
    bad: np.ndarray | None = None
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            text[name] = column.cast(pa.string())
        except pa.ArrowInvalid:
            invalid = np.fromiter(
                (not _is_utf8(v) for v in column.to_pylist()), dtype=bool, count=len(column)
            )
            bad = invalid if bad is None else bad | invalid
    if bad is None:
        return pa.table(text)
    dropped["bad_encoding"] += int(bad.sum())
    kept = table.filter(pa.array(~bad))
    return pa.table({name: kept[name].cast(pa.string()) for name in kept.column_names})


def _is_utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Utf8Reader(io.RawIOBase):
    """A binary file as UTF-8 for Arrow, whatever its encoding: bytes that are not text
    in that encoding become :data:`UNDECODABLE` (``replaced`` says whether any did), so
    that one bad row is rejected on its own instead of the whole file.

    UTF-8 blocks that are plain ASCII (the usual export) pass through as they are.
    """

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        super().__init__()
        self._raw = raw
        self._utf8 = encoding in ("utf-8", "utf-8-sig")
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=UNDECODABLE_ERRORS)
        self._ready = b""  # transcoded, not yet read
        self.replaced = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = size if size is not None and size > 0 else DEFAULT_BLOCK_BYTES
        while len(self._ready) < want:
            block = self._raw.read(want)
            if self._utf8 and block.isascii() and not self._decoder.getstate()[0]:
                self._ready += block
            else:
                text = self._decoder.decode(block, final=not block)
                if UNDECODABLE in text:
                    self.replaced = True
                self._ready += text.encode("utf-8")
            if not block:
                break
        out, self._ready = self._ready[:want], self._ready[want:]
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _drop_bad_text(table: pa.Table, dropped: Counter[str]) -> pa.Table:
    """``table`` without the rows holding undecodable bytes in a converted field."""

    bad = None
    for column in table.columns:
        found = pc.fill_null(pc.match_substring(column, UNDECODABLE), False)
        bad = found if bad is None else pc.or_(bad, found)
    if bad is None:
        return table
    count = int(pc.sum(bad).as_py() or 0)
    if not count:
        return table
    dropped["bad_encoding"] += count
    return table.filter(pc.invert(bad))


def _safe_arrow_message(exc: Exception) -> str:
    """Arrow's message without any row content it may quote."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(":", 1)[0] if "Row #" in text or "row" in text.lower() else text


def iter_json_rows(
    path: Path,
    fields: Sequence[str],
    rows_per_chunk: int = DEFAULT_JSON_ROWS,
    text_only: Sequence[str] = (),
) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
    """Yield (frame of ``fields`` as strings, rows dropped by reason) from a JSON Lines file.

    A line holding an OData page (``{"value": [...]}``) contributes its rows; a file
    holding one such JSON document (a saved Graph page) is read the same way.

    ``text_only`` fields keep only JSON strings (a number or an object where a time
    belongs is no time). A line that is not JSON, nested deeper than
    ``MAX_JSON_DEPTH`` or longer than ``MAX_JSON_LINE`` is dropped (``malformed_row``,
    ``nested_too_deep``, ``line_too_long``), as is a row with bytes that are not text
    in the file's encoding in one of ``fields`` (``bad_encoding``). A whole document
    nested too deep is refused (:class:`InputError`).
    """
    encoding = detect_encoding(read_head(path))
    try:
        with path.open("r", encoding=encoding, errors=UNDECODABLE_ERRORS, newline=None) as stream:
            yield from _json_rows(path, stream, fields, rows_per_chunk, text_only)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _json_rows(
    path: Path,
    stream: TextIO,
    fields: Sequence[str],
    rows_per_chunk: int,
    text_only: Sequence[str],
) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
    first = stream.read(1)
    while first and first.isspace():
        first = stream.read(1)
    if first == "[" or (first == "{" and _is_single_document(path)):
        stream.seek(0)
        text = stream.read()
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise InputError(path, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise InputError(path, "is not valid JSON") from None
        whole = UNDECODABLE in text
        del text
        rows = document.get("value", []) if isinstance(document, dict) else document
        if not isinstance(rows, list):
            raise InputError(path, "JSON document holds no list of rows")
        for start in range(0, len(rows), rows_per_chunk):
            part = rows[start : start + rows_per_chunk]
            good = [r for r in part if isinstance(r, dict)]
            dropped = Counter({"malformed_row": len(part) - len(good)})
            yield _rows_frame(good, fields, text_only, dropped, whole), +dropped
        return
    stream.seek(0)
    buffer: list[dict[str, Any]] = []
    marked: list[bool] = []  # per row: whether its line held undecodable bytes
    dropped = Counter[str]()
    while True:
        line = stream.readline(MAX_JSON_LINE)
        if not line:
            break
        if len(line) >= MAX_JSON_LINE and not line.endswith("\n"):
            while (rest := stream.readline(MAX_JSON_LINE)) and not rest.endswith("\n"):
                pass  # the rest of the line, never held whole
            dropped["line_too_long"] += 1
            continue
        if not line.strip():
            continue
        try:  # the C parser stops deep nesting with a RecursionError, which is caught
            value = json.loads(line)
        except RecursionError:
            dropped["nested_too_deep"] += 1
            continue
        except json.JSONDecodeError:
            dropped["malformed_row"] += 1
            continue
        page = isinstance(value, dict) and isinstance(value.get("value"), list)
        # a saved page's rows are judged one by one: one hostile row costs only itself
        for row in value["value"] if page else [value]:
            if not isinstance(row, dict):
                dropped["malformed_row"] += 1
            elif _object_depth(row) > MAX_JSON_DEPTH - (2 if page else 0):
                dropped["nested_too_deep"] += 1
            else:
                buffer.append(row)
                marked.append(UNDECODABLE in line)
        if len(buffer) >= rows_per_chunk:
            yield _rows_frame(buffer, fields, text_only, dropped, marked), +dropped
            buffer, marked, dropped = [], [], Counter()
    if buffer or +dropped:
        yield _rows_frame(buffer, fields, text_only, dropped, marked), +dropped


#: A JSON string; an unterminated one (or a lone backslash) runs to the end of the text, so
#: that every match succeeds from its first quote: one linear pass, whatever the input.
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.?)*(?:"|$)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _json_depth(text: str) -> int:
    """How deep brackets nest in JSON ``text`` (strings skipped); cheap when few."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    brackets = _NOT_BRACKETS.sub("", _JSON_STRINGS.sub("", text))
    steps = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    level = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return int(level.max()) if len(level) else 0


def _object_depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _is_single_document(path: Path) -> bool:
    """True when the file is one (possibly pretty-printed) JSON object, not JSON Lines."""
    lines, _ = head_lines(path, 2)
    return len(lines) > 1 and lines[0].strip() == "{"


def _rows_frame(
    rows: list[dict[str, Any]],
    fields: Sequence[str],
    text_only: Sequence[str] = (),
    dropped: Counter[str] | None = None,
    marked: Sequence[bool] | bool = True,
) -> pd.DataFrame:
    """``fields`` of ``rows`` as strings; rows with undecodable text in one are dropped
    (counted in ``dropped`` as ``bad_encoding``). ``marked`` says, per row or once for
    all, whether its text held the reader's mark of undecodable bytes at all: a row
    without one is not looked at, so that a JSON escape of the mark (``\\ufdd0``) is
    text like any other."""
    every = [marked] * len(rows) if isinstance(marked, bool) else marked
    kept = [
        r
        for r, look in zip(rows, every, strict=True)
        if not (look and any(UNDECODABLE in str(r.get(f, "")) for f in fields))
    ]
    if len(kept) != len(rows) and dropped is not None:
        dropped["bad_encoding"] += len(rows) - len(kept)
    data = {f: [_as_text(r.get(f), f in text_only) for r in kept] for f in fields}
    return pd.DataFrame(data, dtype="string")


def _as_text(value: Any, text_only: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if text_only or isinstance(value, dict):
        return None
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


#: Timestamp formats tried, in order, when a file's format is not configured.
_TIMESTAMP_FORMATS = (
    "ISO8601",
    "%m/%d/%Y %I:%M:%S %p",  # Windows PowerShell 5.1, en-US culture
    "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y %H:%M:%S",  # en-GB, fr-FR: day first, 24 h
    "%m/%d/%Y %H:%M:%S",  # 24 h month first (only when day-first cannot parse)
    "%d.%m.%Y %H:%M:%S",  # de-DE
    "%Y/%m/%d %H:%M:%S",
)


def detect_timestamp_format(sample: pd.Series) -> str | None:
    """The known format that parses most non-empty values of ``sample`` (earlier wins ties);
    a column that is not text (a Parquet date or number) is read as its text.

    A few malformed values do not hide the format of the rest: they are rejected later.
    Day-first comes before month-first for 24-hour slashed dates: Windows PowerShell
    writes month-first dates only in en-US, and then always with AM/PM.
    """
    if not isinstance(sample.dtype, pd.StringDtype):  # a Parquet date or number column
        sample = sample.astype("string")
    values = sample.dropna().str.strip()
    values = values[values != ""].head(2000)
    best, best_count = None, 0
    for fmt in _TIMESTAMP_FORMATS:
        count = int(_pandas_timestamps(values, fmt).notna().sum())
        if count > best_count:
            best, best_count = fmt, count
    return best


def parse_timestamps(values: pd.Series, fmt: str | None) -> pd.Series:
    """Parse to UTC; naive values are taken as UTC; unparseable ones become NaT (see
    :func:`timestamp_array`, which this is for a column of any type)."""
    return _utc_series(timestamp_array(trimmed_text(_text_array(values)), fmt), values.index)


def timestamp_array(text: pa.Array, fmt: str | None) -> np.ndarray:
    """Parse trimmed text (:func:`trimmed_text`) to naive UTC ``datetime64[ns]``; naive
    values are taken as UTC; unparseable ones become NaT.

    ISO 8601 is read field by field where an export's values are of one fixed width
    (:func:`_iso_timestamps`), by pandas otherwise. A ``DATE TIME`` format (the
    culture-dependent exports) is parsed by Arrow, whose calendar is lenient (it rolls 30
    February over to 2 March): each distinct date is therefore checked once with Python's
    strict ``strptime`` (:func:`_strict_days`), and a row keeps Arrow's result only when
    its day is that date's. Every other value goes to pandas (``to_datetime`` with
    ``format``).

    Times outside ``TIMESTAMP_FLOOR`` .. ``TIMESTAMP_CEILING`` (the year 1600, 9999...)
    become NaT, checked before the conversion to nanoseconds, which would wrap them.
    ISO 8601 values need a whole date (``YYYY-MM-DD``): a bare number is no time.
    """
    if fmt is None:
        return np.full(len(text), np.datetime64("NaT"), dtype="datetime64[ns]")
    if fmt == "ISO8601":
        return _iso_timestamps(text)
    date_format, space, _ = fmt.partition(" ")
    if not space or any(d in date_format for d in _TIME_DIRECTIVES):
        return _naive(_pandas_timestamps(_string_series(text), fmt))
    try:
        parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _naive(_pandas_timestamps(_string_series(text), fmt))
    expected = _strict_days(text, date_format)
    seconds = parsed.cast(pa.int64()).fill_null(-1).to_numpy()
    valid = np.asarray(pc.is_valid(parsed).to_numpy(zero_copy_only=False), dtype=bool)
    inside = (seconds >= _FLOOR_SECONDS) & (seconds < _CEILING_SECONDS)
    good = valid & inside & (expected >= 0) & (np.floor_divide(seconds, 86_400) == expected)
    stamps = np.where(good, seconds, 0).astype("datetime64[s]").astype("datetime64[ns]")
    stamps[~good] = np.datetime64("NaT")
    # a valid time out of range is refused here; pandas tries only what Arrow could not
    rest = ~good & ~(valid & ~inside)
    rest &= np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), dtype=bool)
    if rest.any():
        stamps[rest] = _naive(_pandas_timestamps(_string_series(text.filter(pa.array(rest))), fmt))
    return stamps


def _iso_timestamps(text: pa.Array) -> np.ndarray:
    """ISO 8601 times, as pandas reads them (see :func:`_pandas_timestamps`): those of one
    fixed width in ``YYYY-MM-DDTHH:MM:SS``, with or without a fraction of 1 to 9 digits
    and a ``Z`` (what gateways write, each export in one width) are read as a matrix of
    bytes, field by field, in NumPy; every other value, and any this could not read or
    that is out of range, by pandas."""
    stamps, read = _fixed_iso(text)
    if read.all():
        return stamps
    rest = np.flatnonzero(~read)
    others = text if not read.any() else text.take(pa.array(rest))
    stamps[rest] = _naive(_pandas_timestamps(_string_series(others), "ISO8601"))
    return stamps


#: Where the digits and separators of ``YYYY-MM-DDTHH:MM:SS`` are.
_ISO_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_ISO_MARKS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":")}
_ISO_WIDEST = 19 + 1 + 9 + 1  # with nine digits of fraction and a Z


def _fixed_iso(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Naive UTC ``datetime64[ns]`` of each value (NaT where not read), and which values
    were read: none unless every value has the same width, and then each value that has
    the shape :func:`_iso_timestamps` names and is a real time of 1970..2199 (no 30
    February, no hour 24, no leap second), as pandas would read it."""
    count = len(text)
    stamps = np.full(count, np.datetime64("NaT"), dtype="datetime64[ns]")
    none = np.zeros(count, dtype=bool)
    data_buffer = text.buffers()[2]
    if not count or text.null_count or data_buffer is None or text.type != pa.string():
        return stamps, none
    offsets = string_offsets(text)
    width = int(offsets[1] - offsets[0])
    if not 19 <= width <= _ISO_WIDEST or not (np.diff(offsets) == width).all():
        return stamps, none
    data = np.frombuffer(data_buffer, np.uint8, width * count, int(offsets[0]))
    chars = data.reshape(count, width)  # a view: one row of bytes per value
    digits = chars[:, _ISO_DIGITS] - np.uint8(ord("0"))  # a digit: 0..9; else wraps past
    ok = (digits <= 9).all(axis=1)
    for column, mark in _ISO_MARKS.items():
        ok &= chars[:, column] == mark
    # the tail: nothing, Z, or a dot, 1 to 9 digits and maybe a Z (the same for every row)
    tail = width - 19
    zone = tail > 0 and chars[0, width - 1] == ord("Z")
    fraction = tail - int(zone)
    if zone:
        ok &= chars[:, width - 1] == ord("Z")
    nanoseconds = np.zeros(count, dtype=np.int64)
    if fraction:
        if not 2 <= fraction <= 10:
            return stamps, none
        ok &= chars[:, 19] == ord(".")
        for place, column in enumerate(range(20, 19 + fraction)):
            digit = chars[:, column] - np.uint8(ord("0"))
            ok &= digit <= 9
            nanoseconds += digit.astype(np.int64) * 10 ** (8 - place)

    def field(at: int) -> np.ndarray:  # two digits as a number
        pair: np.ndarray = digits[:, at].astype(np.int32) * 10 + digits[:, at + 1]
        return pair

    hour, minute, second = field(8), field(10), field(12)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    epoch_day = _strict_days(text, "%Y-%m-%d", width=10)  # once per distinct date
    ok &= (epoch_day >= 0) & (epoch_day < _CEILING_SECONDS // 86_400)
    seconds = epoch_day * 86_400 + (hour * 3_600 + minute * 60 + second)
    instants = (seconds * 1_000_000_000 + nanoseconds).view("datetime64[ns]")
    return (instants if ok.all() else np.where(ok, instants, stamps)), ok


def _string_series(text: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(text))


def _naive(stamps: pd.Series) -> np.ndarray:
    """UTC times as naive ``datetime64[ns]`` values."""
    return np.asarray(stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"))


#: Bytes of a time's head that hold its date and the space after it, in every date
#: format known (``12/31/2026 ``); a longer date is read from the whole value.
_DATE_HEAD = 11


def _strict_days(text: pa.Array, date_format: str, width: int | None = None) -> np.ndarray:
    """The day (since 1970-01-01) of each value's date, read strictly, once per distinct
    date; -1 where it is no valid date. The date is what comes before the value's first
    space, or with ``width`` its first ``width`` bytes (a fixed-width format's).

    The dates are told apart by each value's first bytes (a fixed slice, which is cheap,
    and holds few distinct values); only values whose head holds no space are split."""
    size = width or _DATE_HEAD
    heads = pc.dictionary_encode(pc.binary_slice(text.cast(pa.binary()), 0, size))
    days, long = [], []
    for code, head in enumerate(heads.dictionary.to_pylist()):
        date, space, _ = (head, b"", b"") if width else head.partition(b" ")
        if not width and not space and len(head) == _DATE_HEAD:
            long.append(code)  # a longer head: its own values are split below
        days.append(_epoch_day(date.decode("utf-8", "replace"), date_format))
    codes = np.asarray(heads.indices.fill_null(len(days)).to_numpy(zero_copy_only=False))
    expected: np.ndarray = np.array([*days, -1])[codes]
    if long:
        rows = np.flatnonzero(np.isin(codes, long))
        whole = text.take(pa.array(rows))
        dates = pc.list_element(pc.split_pattern(whole, " ", max_splits=1), 0)
        expected[rows] = [_epoch_day(d, date_format) for d in dates.to_pylist()]
    return expected


_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%p", "%f", "%z", "%Z", "%T", "%R", "%c")
_EPOCH = dt.date(1970, 1, 1)


def _epoch_day(text: str | None, date_format: str) -> int:
    """Days since 1970-01-01 of a date, read strictly; -1 when it is not a valid date."""
    if text is None:
        return -1
    try:
        return (dt.datetime.strptime(text, date_format).date() - _EPOCH).days
    except ValueError:
        return -1


_FLOOR_SECONDS = int(TIMESTAMP_FLOOR.timestamp())
_CEILING_SECONDS = int(TIMESTAMP_CEILING.timestamp())
#: What an ISO 8601 time must start with: a whole date, four-digit year.
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:$|[T ])"


def _pandas_timestamps(text: pd.Series, fmt: str) -> pd.Series:
    if fmt == "ISO8601":
        text = text.where(text.str.contains(_ISO_DATE, regex=True, na=False))
    try:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    except (ValueError, OverflowError):  # out of any resolution's range: one by one
        parsed = pd.Series(
            [_one_timestamp(v, fmt) for v in text], index=text.index, dtype="datetime64[us, UTC]"
        )
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    return bounded_utc(parsed)


def iso_timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 strings (a whole date first) to UTC; anything else, or out of range, NaT."""
    return _pandas_timestamps(values.astype("string").str.strip(), "ISO8601")


def _one_timestamp(value: Any, fmt: str) -> pd.Timestamp | None:
    try:
        stamp = pd.to_datetime(value, format=fmt, errors="coerce", utc=True)
    except (ValueError, OverflowError):
        return None
    if stamp is None or pd.isna(stamp):
        return None
    if not TIMESTAMP_FLOOR <= stamp.to_pydatetime() < TIMESTAMP_CEILING:
        return None
    return pd.Timestamp(stamp)


def build_raw(
    frame: pd.DataFrame,
    mapping: dict[str, str | list[str]],
    timestamp_format: str | None,
    recipient_separator: str | None = None,
) -> pd.DataFrame:
    """Turn a frame of source columns into the raw schema.

    ``mapping`` maps each raw column to a source column, or to a list of source columns
    of which the first non-empty value is taken. With ``recipient_separator``, a field
    holding several recipients becomes one row per recipient.

    Text fields stay Arrow arrays from the frame to the raw chunk (:func:`trimmed_text`):
    trimmed, emptied, split and parsed by Arrow, then wrapped for pandas once.
    """
    text: dict[str, pa.Array] = {}
    typed: pd.Series | None = None  # a time column with a type of its own (Parquet)
    for target, source in mapping.items():
        names = [n for n in ([source] if isinstance(source, str) else source) if n in frame]
        if target == "timestamp" and any(_is_time(frame[n]) for n in names):
            typed = _typed_times(frame, names, timestamp_format)
            continue
        value: pa.Array | None = None
        for name in names:
            if value is not None and not value.null_count:
                break  # nothing left for a later column to fill
            column = trimmed_text(_text_array(frame[name]))
            value = column if value is None else pc.coalesce(value, column)
        if value is not None:
            text[target] = value
    index: pd.Index = frame.index
    # the times parsed once per row read, before a row becomes one per recipient
    stamps = (
        None
        if "timestamp" not in text
        else timestamp_array(text.pop("timestamp"), timestamp_format)
    )
    if recipient_separator and "recipient" in text:
        parents, text["recipient"] = _recipients(text["recipient"], recipient_separator)
        take = pa.array(parents)
        text = {k: (v if k == "recipient" else v.take(take)) for k, v in text.items()}
        typed = None if typed is None else typed.iloc[parents].reset_index(drop=True)
        stamps = None if stamps is None else stamps[parents]
        index = pd.RangeIndex(len(parents))
    out: dict[str, pd.Series] = {}
    for column, dtype in RAW.items():
        if column == "timestamp" and typed is not None:
            out[column] = typed.set_axis(index)
        elif column == "timestamp" and stamps is not None:
            out[column] = _utc_series(stamps, index)
        elif column not in text:
            out[column] = pd.Series(pd.NA, index=index, dtype=dtype)
        elif column == "size":
            out[column] = _size_series(text[column], index)
        else:
            out[column] = pd.Series(pd.arrays.ArrowStringArray(text[column]), index=index)
    return pd.DataFrame(out, index=index)


def _is_time(values: pd.Series) -> bool:
    return bool(pd.api.types.is_datetime64_any_dtype(values))


def _text_array(values: pd.Series) -> pa.Array:
    """A column as one Arrow string array: zero-copy for Arrow-backed text; anything else
    (numbers, objects) as its text."""
    if not isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype):
        values = values.astype("string")
    array = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


def _may_be_space(byte: np.ndarray) -> np.ndarray:
    """Whether each byte may be the first or last of a white-space character: a control
    or space byte, or a byte of a character beyond ASCII (a superset of the first and last
    bytes of every Unicode space, ``U+00A0``, ``U+2003``, ``U+3000``...)."""
    return (byte - np.uint8(0x21)) >= np.uint8(0x80 - 0x21)  # < 0x21 or >= 0x80, wrapping


def trimmed_text(values: pa.Array) -> pa.Array:
    """Strings trimmed of white space at both ends, an empty one null: what Arrow's
    ``utf8_trim_whitespace`` then emptying gives, with the kernel run only on the values
    whose first or last byte may be white space (found from the array's buffers, in
    one NumPy pass), since nearly none are."""
    count = len(values)
    if not count:
        return values
    validity, _, data_buffer = values.buffers()
    offsets = string_offsets(values)
    lengths = np.diff(offsets)
    if data_buffer is not None and lengths.any():
        data = np.frombuffer(data_buffer, dtype=np.uint8)
        filled = None if lengths.all() else np.flatnonzero(lengths)
        starts = offsets[:-1] if filled is None else offsets[filled]
        ends = offsets[1:] if filled is None else offsets[filled + 1]
        spaced = np.flatnonzero(_may_be_space(data[starts]) | _may_be_space(data[ends - 1]))
        if filled is not None:
            spaced = filled[spaced]
        if len(spaced):
            mask = np.zeros(count, dtype=bool)
            mask[spaced] = True
            trimmed = pc.utf8_trim_whitespace(values.take(pa.array(spaced)))
            values = pc.replace_with_mask(values, pa.array(mask), trimmed)
            lengths = pc.binary_length(values).fill_null(0).to_numpy()
    empty = lengths == 0
    if validity is not None or values.null_count:
        empty &= np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)
    if empty.any():
        values = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), values)
    return values


def _recipients(listed: pa.Array, separator: str) -> tuple[np.ndarray, pa.Array]:
    """The recipients of ``separator``-separated lists, each trimmed (an empty one, or a
    row without any, null), and the row of the list each came from: split and flattened by
    Arrow."""
    lists = pc.split_pattern(listed.fill_null(""), separator)
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
    return parents, trimmed_text(pc.list_flatten(lists))


def _typed_times(frame: pd.DataFrame, names: list[str], fmt: str | None) -> pd.Series:
    """Times from columns of which one at least has a time type of its own (Parquet),
    each row's from the first column with a value there (a time in range, or text that is
    not empty), as for every other field: a time taken as it is (naive means UTC), text
    parsed (NaT when it is no time, and the row is then rejected, not read from a later
    column)."""
    value = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    decided = np.zeros(len(frame), dtype=bool)
    for name in names:
        column = frame[name]
        if _is_time(column):
            stamps = bounded_utc(column)
            present = stamps.notna().to_numpy()
        else:
            text = trimmed_text(_text_array(column))
            stamps = _utc_series(timestamp_array(text, fmt), frame.index)
            present = np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), dtype=bool)
        take = present & ~decided
        value[take] = stamps[take]
        decided |= present
    return value


def _utc_series(stamps: np.ndarray, index: pd.Index) -> pd.Series:
    """Naive UTC ``datetime64[ns]`` values as a ``datetime64[ns, UTC]`` column."""
    return pd.Series(stamps, index=index, copy=False).dt.tz_localize("UTC")


def _size_series(values: pa.Array, index: pd.Index) -> pd.Series:
    """Byte counts as Int64; anything that is not a whole number of bytes becomes missing.
    Plain digits (the usual column) are converted by Arrow; anything else by pandas."""
    whole = pc.and_(pc.ascii_is_decimal(values), pc.less_equal(pc.binary_length(values), 18))
    if pc.all(pc.or_kleene(whole, pc.is_null(values))).as_py() is not False:  # the usual case
        numbers = values.cast(pa.int64())
        return pd.Series(pd.arrays.ArrowExtensionArray(numbers), index=index).astype("Int64")
    text = pd.Series(pd.arrays.ArrowStringArray(values), index=index)
    number = pd.to_numeric(text, errors="coerce")  # "1e3", "+12", "2.5", "n/a"
    number = number.where(number.notna() & (number % 1 == 0) & (number >= 0))
    return number.astype("Int64")


def _sizes(values: pd.Series) -> pd.Series:
    """:func:`_size_series` of a column of any type (integers as they are)."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64")
    return _size_series(_text_array(values), values.index)


PARQUET_BATCH_ROWS = DEFAULT_CHUNK_ROWS  # a chunk of a Parquet file is as big as any other


def parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file (its footer only is read)."""

    try:
        return list(pq.ParquetFile(path, coerce_int96_timestamp_unit="us").schema_arrow.names)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None


def parquet_row_groups(path: Path) -> int:
    """How many row groups a Parquet file has (its footer only is read)."""

    try:
        return int(pq.ParquetFile(path, coerce_int96_timestamp_unit="us").metadata.num_row_groups)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None


def iter_parquet(
    path: Path,
    columns: list[str],
    batch_rows: int = PARQUET_BATCH_ROWS,
    row_groups: Sequence[int] | None = None,
) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
    """The named columns of a Parquet file (or of some of its row groups), one bounded
    batch at a time."""

    try:
        parquet = pq.ParquetFile(path, coerce_int96_timestamp_unit="us")
        batches = parquet.iter_batches(
            batch_size=batch_rows,
            columns=columns,
            row_groups=list(row_groups) if row_groups is not None else None,
        )
        for batch in batches:
            yield batch.to_pandas(), Counter()
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read Parquet: {exc}") from None
