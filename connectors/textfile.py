"""Reading exported text files: encodings, chunked CSV and JSON Lines, timestamps.

Exports arrive as UTF-8 with or without a BOM, or as UTF-16 LE (with a BOM when
re-saved by Excel, sometimes without one from the Exchange admin center), with
Windows PowerShell's ``#TYPE`` first line, fully quoted fields and CRLF line ends.
Everything here streams: a file is read in blocks whatever its size.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from compliance.errors import InputError

log = logging.getLogger(__name__)

#: Bytes the CSV reader parses at a time. Arrow's reader keeps up to 32 blocks read
#: ahead of a slower consumer, so this bounds that buffer (32 MiB), not the chunk size.
DEFAULT_BLOCK_BYTES = 1 << 20
#: Rows handed to the engine at a time (blocks are gathered up to this).
DEFAULT_CHUNK_ROWS = 1 << 16
DEFAULT_JSON_ROWS = 50_000
_SNIFF_BYTES = 64 << 10


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
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sample is still UTF-8
        if exc.start < len(head) - 4:
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
) -> Iterator[tuple[pd.DataFrame, int]]:
    """Yield (frame of the named columns as strings, malformed rows skipped) per chunk.

    Only ``columns`` are converted: other fields (subjects among them) are parsed by
    the CSV reader and dropped there, never turned into Python objects. Blocks are
    gathered into chunks of about ``chunk_rows`` rows.
    """
    malformed = 0

    def on_invalid(_row: Any) -> str:
        nonlocal malformed
        malformed += 1
        return "skip"

    arrow_encoding = {"utf-8-sig": "utf8", "utf-8": "utf8"}.get(layout.encoding, layout.encoding)
    read_options = pacsv.ReadOptions(
        encoding=arrow_encoding,
        skip_rows=layout.skip_rows,
        block_size=block_bytes,
        column_names=None,
        # parsed in the calling thread; the engine overlaps reading and processing
        # itself (compliance.engine.THREADS)
        use_threads=False,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=layout.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
    )
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        reader = pacsv.open_csv(
            path, read_options=read_options, parse_options=parse_options, convert_options=convert
        )
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in itertools.chain(reader, [None]):
            if batch is not None:
                batches.append(batch)
                rows += batch.num_rows
            if batches and (batch is None or rows >= chunk_rows):
                table = pa.Table.from_batches(batches).combine_chunks()
                batches, rows = [], 0
                frame = table.to_pandas(types_mapper=pd.ArrowDtype)
                frame.columns = [str(c) for c in frame.columns]
                yield frame.astype("string"), malformed
                malformed = 0
        if malformed:
            yield pd.DataFrame({c: pd.Series(dtype="string") for c in columns}), malformed
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot parse as CSV: {_safe_arrow_message(exc)}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _safe_arrow_message(exc: Exception) -> str:
    """Arrow's message without any row content it may quote."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(":", 1)[0] if "Row #" in text or "row" in text.lower() else text


def iter_json_rows(
    path: Path, fields: Sequence[str], rows_per_chunk: int = DEFAULT_JSON_ROWS
) -> Iterator[tuple[pd.DataFrame, int]]:
    """Yield (frame of ``fields`` as strings, malformed lines) from a JSON Lines file.

    A line holding an OData page (``{"value": [...]}``) contributes its rows; a file
    holding one such JSON document (a saved Graph page) is read the same way.
    """
    with open_text(path) as (stream, _encoding):
        first = stream.read(1)
        while first and first.isspace():
            first = stream.read(1)
        if first == "[" or (first == "{" and _is_single_document(path)):
            stream.seek(0)
            try:
                document = json.load(stream)
            except json.JSONDecodeError:
                raise InputError(path, "is not valid JSON") from None
            rows = document.get("value", []) if isinstance(document, dict) else document
            if not isinstance(rows, list):
                raise InputError(path, "JSON document holds no list of rows")
            for start in range(0, len(rows), rows_per_chunk):
                part = rows[start : start + rows_per_chunk]
                good = [r for r in part if isinstance(r, dict)]
                yield _rows_frame(good, fields), len(part) - len(good)
            return
        stream.seek(0)
        buffer: list[dict[str, Any]] = []
        malformed = 0
        for line in stream:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                malformed += 1
                continue
            if isinstance(value, dict) and isinstance(value.get("value"), list):
                buffer.extend(v for v in value["value"] if isinstance(v, dict))
            elif isinstance(value, dict):
                buffer.append(value)
            else:
                malformed += 1
            if len(buffer) >= rows_per_chunk:
                yield _rows_frame(buffer, fields), malformed
                buffer, malformed = [], 0
        if buffer or malformed:
            yield _rows_frame(buffer, fields), malformed


def _is_single_document(path: Path) -> bool:
    """True when the file is one (possibly pretty-printed) JSON object, not JSON Lines."""
    lines, _ = head_lines(path, 2)
    return len(lines) > 1 and lines[0].strip() == "{"


def _rows_frame(rows: list[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    data = {f: [_as_text(r.get(f)) for r in rows] for f in fields}
    return pd.DataFrame(data, dtype="string")


def _as_text(value: Any) -> str | None:
    if value is None:
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
    """The known format that parses most non-empty values of ``sample`` (earlier wins ties).

    A few malformed values do not hide the format of the rest: they are rejected later.
    Day-first comes before month-first for 24-hour slashed dates: Windows PowerShell
    writes month-first dates only in en-US, and then always with AM/PM.
    """
    values = sample.dropna().str.strip()
    values = values[values != ""].head(2000)
    best, best_count = None, 0
    for fmt in _TIMESTAMP_FORMATS:
        parsed = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
        count = int(parsed.notna().sum())
        if count > best_count:
            best, best_count = fmt, count
    return best


def parse_timestamps(values: pd.Series, fmt: str | None) -> pd.Series:
    """Parse to UTC; naive values are taken as UTC; unparseable ones become NaT.

    ISO 8601 goes to pandas. A ``DATE TIME`` format (the culture-dependent exports) is
    parsed by Arrow, whose calendar is lenient (it rolls 30 February over to 2
    March): each distinct date is therefore checked once with Python's strict
    ``strptime``, and a row keeps Arrow's result only when its day is that date's.
    Every other value goes to pandas (``to_datetime`` with ``format``).
    """
    if fmt is None:
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    text = values.str.strip()
    date_format, space, _ = fmt.partition(" ")
    if fmt == "ISO8601" or not space or any(d in date_format for d in _TIME_DIRECTIVES):
        return _pandas_timestamps(text, fmt)
    import pyarrow.compute as pc

    array = pa.array(text, type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    try:
        parsed = pc.strptime(array, format=fmt, unit="s", error_is_null=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _pandas_timestamps(text, fmt)
    dates = pc.dictionary_encode(pc.struct_field(pc.extract_regex(array, r"^(?P<d>[^ ]+)"), [0]))
    strict = np.array([_epoch_day(d, date_format) for d in dates.dictionary.to_pylist()] + [-1])
    expected = strict[np.asarray(dates.indices.fill_null(-1).to_numpy(zero_copy_only=False))]
    seconds = parsed.cast(pa.int64()).fill_null(-1).to_numpy()
    good = (
        np.asarray(pc.is_valid(parsed).to_numpy(zero_copy_only=False), dtype=bool)
        & (expected >= 0)
        & (np.floor_divide(seconds, 86_400) == expected)
    )
    stamps = seconds.astype("datetime64[s]").astype("datetime64[ns]")
    stamps[~good] = np.datetime64("NaT")
    out = pd.Series(stamps, index=values.index).dt.tz_localize("UTC")
    rest = ~good & text.notna().to_numpy()
    if rest.any():
        out[rest] = _pandas_timestamps(text[rest], fmt)
    return out.astype("datetime64[ns, UTC]")


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


def _pandas_timestamps(text: pd.Series, fmt: str) -> pd.Series:
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    return parsed.astype("datetime64[ns, UTC]")


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
    """
    from compliance.events import conform_raw  # local: connectors stay import-light

    out = pd.DataFrame(index=frame.index)
    for target, source in mapping.items():
        names = [source] if isinstance(source, str) else source
        value: pd.Series | None = None
        for name in names:
            if name not in frame.columns:
                continue
            if target == "timestamp" and pd.api.types.is_datetime64_any_dtype(frame[name]):
                stamps = frame[name]  # typed input (Parquet): no parsing, naive means UTC
                stamps = (
                    stamps.dt.tz_localize("UTC")
                    if stamps.dt.tz is None
                    else stamps.dt.tz_convert("UTC")
                ).astype("datetime64[ns, UTC]")
                value = stamps if value is None else value.fillna(stamps)
                continue
            column = frame[name].astype("string").str.strip()
            column = column.where(column != "")
            value = column if value is None else value.fillna(column)
        if value is not None:
            out[target] = value
    if recipient_separator and "recipient" in out.columns:
        out["recipient"] = out["recipient"].str.split(recipient_separator)
        out = out.explode("recipient", ignore_index=True)
        recipients = out["recipient"].astype("string").str.strip()
        out["recipient"] = recipients.where(recipients != "")
    if "timestamp" in out.columns and not pd.api.types.is_datetime64_any_dtype(out["timestamp"]):
        out["timestamp"] = parse_timestamps(out["timestamp"], timestamp_format)
    if "size" in out.columns:
        out["size"] = _sizes(out["size"])
    return conform_raw(out)


def _sizes(values: pd.Series) -> pd.Series:
    """Byte counts as Int64; anything that is not a whole number of bytes becomes missing."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64")
    import pyarrow.compute as pc

    array = pa.array(values, type=pa.string(), from_pandas=True)
    whole = pc.match_substring_regex(array, r"^[0-9]{1,18}$")
    if pc.all(pc.or_kleene(whole, pc.is_null(array))).as_py():  # the usual case: by Arrow
        numbers = array.cast(pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return pd.Series(numbers.to_numpy(), index=values.index, dtype="Int64")
    number = pd.to_numeric(values, errors="coerce")  # "1e3", "+12", "2.5", "n/a"
    number = number.where(number.notna() & (number % 1 == 0) & (number >= 0))
    return number.astype("Int64")


PARQUET_BATCH_ROWS = 200_000


def parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file (its footer only is read)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None


def parquet_row_groups(path: Path) -> int:
    """How many row groups a Parquet file has (its footer only is read)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_row_groups)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None


def iter_parquet(
    path: Path,
    columns: list[str],
    batch_rows: int = PARQUET_BATCH_ROWS,
    row_groups: Sequence[int] | None = None,
) -> Iterator[tuple[pd.DataFrame, int]]:
    """The named columns of a Parquet file (or of some of its row groups), one bounded
    batch at a time."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(
            batch_size=batch_rows,
            columns=columns,
            row_groups=list(row_groups) if row_groups is not None else None,
        )
        for batch in batches:
            yield batch.to_pandas(), 0
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read Parquet: {exc}") from None
