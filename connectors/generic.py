"""Any CSV, JSON Lines or Parquet mail log, read through a column mapping in the config.

Example::

    sources:
      - name: gateway
        type: generic
        path: /var/log/gateway/*.csv
        format: csv            # csv, jsonl or parquet; default from the file extension
        columns:               # raw column: source column (or a list: first non-empty)
          timestamp: time
          sender: from
          recipient: to
          status: result       # optional
          size: bytes          # optional
          message_id: msgid    # optional
        recipient_separator: ";"    # optional: one field holds several recipients
        timestamp_format: "%d/%m/%Y %H:%M:%S"   # optional: detected when omitted
        delimiter: ";"         # optional (CSV): detected from the header when omitted

Options are validated by :class:`GenericOptions`: a misspelt one is refused, naming the
source and the option (:func:`parse_options`, shared with the ``exchange`` source).

Parquet archives (a file, a folder, or a pattern such as ``archive/**/*.parquet``) are
read by column (only the mapped ones) and by row group, in batches; typed timestamp
columns are taken as they are (naive ones as UTC).

On a Dask cluster, a Parquet file splits into runs of row groups and a large CSV file into
byte ranges cut where records start (:mod:`connectors.csvsplit`), so that one file spreads
over every worker.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from compliance.errors import InputError
from connectors.base import (
    Chunk,
    FileOptions,
    FileUnit,
    ReadUnit,
    Source,
    SourceState,
    expand_paths,
)
from connectors.textfile import (
    build_raw,
    csv_parts,
    detect_timestamp_format,
    iter_csv,
    iter_json_rows,
    iter_parquet,
    parquet_columns,
    parquet_row_groups,
    sniff_csv,
)

REQUIRED = ("timestamp", "sender", "recipient")
OPTIONAL = ("status", "size", "message_id")


class GenericOptions(FileOptions):
    """Options of a ``generic`` source."""

    columns: dict[str, str | list[str]] = Field(
        description=f"maps {', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)} to "
        "a source column or a list of them, of which the first non-empty is taken"
    )
    format: Literal["csv", "jsonl", "parquet"] | None = Field(
        None, description="csv, jsonl or parquet; default: from each file's extension"
    )
    recipient_separator: str | None = Field(
        None, description="splits a field that holds several recipients"
    )
    timestamp_format: str | None = Field(
        None,
        description="format of the time column (e.g. %d/%m/%Y %H:%M:%S); detected when omitted",
    )
    delimiter: str | None = Field(
        None, description="CSV field delimiter; detected from the header when omitted"
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            raise PydanticCustomError("columns", "must map raw columns to source columns")
        unknown = set(value) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise PydanticCustomError(
                "columns",
                "unknown column(s) {unknown}; known: {known}",
                {
                    "unknown": ", ".join(sorted(str(c) for c in unknown)),
                    "known": ", ".join(REQUIRED + OPTIONAL),
                },
            )
        missing = [c for c in REQUIRED if c not in value]
        if missing:
            raise PydanticCustomError("columns", "needs {missing}", {"missing": ", ".join(missing)})
        mapping: dict[str, object] = {}
        for raw, source in value.items():
            if isinstance(source, str):
                mapping[raw] = source
            elif isinstance(source, list):
                mapping[raw] = [str(x) for x in source]
            else:
                raise PydanticCustomError(
                    "columns",
                    "{raw}: must be a source column or a list of them",
                    {"raw": raw},
                )
        return mapping


class MappedFile(FileUnit):
    """One CSV or JSON Lines file read through a column mapping."""

    def __init__(
        self,
        path: Path,
        kind: str,
        mapping: dict[str, str | list[str]],
        recipient_separator: str | None,
        timestamp_format: str | None,
        delimiter: str | None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.format = f"generic-{kind}"
        self.mapping = mapping
        self.recipient_separator = recipient_separator
        self.timestamp_format = timestamp_format
        self.columns = list(dict.fromkeys(_flatten(mapping)))
        self.layout = sniff_csv(path, delimiter) if kind == "csv" else None
        header: list[str] | None = self.layout.header if self.layout is not None else None
        if kind == "parquet":
            header = parquet_columns(path)
        if header is not None:
            missing = [c for c in self.columns if c not in header]
            if missing:
                raise InputError(
                    path, f"mapped column(s) {', '.join(sorted(missing))} not in the header"
                )

    row_groups: tuple[int, ...] | None = None  # a part of a Parquet file (see split)
    byte_range: tuple[int, int] | None = None  # a part of a CSV file (see split)
    column_names: list[str] | None = None  # the header's names, for a part after it

    def split(self, parts: int) -> list[ReadUnit]:
        """A Parquet file splits into runs of whole row groups; a CSV file of at least two
        parts' size (:data:`connectors.csvsplit.MIN_PART_BYTES`) into byte ranges cut where
        records start, each told the header's names and the format of the file's times
        (found in its first chunk, as the whole file's reading finds it); other files, and
        CSV files that cannot be cut safely, stay whole."""
        if parts < 2 or self.row_groups is not None or self.byte_range is not None:
            return [self]
        if self.kind == "csv":
            return self._csv_parts(parts)
        if self.kind != "parquet":
            return [self]
        count = parquet_row_groups(self.path)
        if count < 2:
            return [self]
        out: list[ReadUnit] = []
        for groups in np.array_split(np.arange(count), min(parts, count)):
            part = copy.copy(self)
            part.row_groups = tuple(int(g) for g in groups)
            out.append(part)
        return out

    def _csv_parts(self, parts: int) -> list[ReadUnit]:
        if self.layout is None:
            return [self]
        return list(csv_parts(self, self.layout, parts, self._first_format))

    def _first_format(self) -> str | None:
        """The time format the whole file's reading finds in its first chunk, or None."""
        frames = self._frames()
        try:
            for frame, _ in frames:
                return detect_timestamp_format(frame[self._first_time])
        finally:
            frames.close()
        return None

    @property
    def _first_time(self) -> str:
        stamp = self.mapping["timestamp"]
        return stamp if isinstance(stamp, str) else stamp[0]

    def _frames(self) -> Generator[tuple[pd.DataFrame, Counter[str]], None, None]:
        if self.kind == "parquet":
            yield from iter_parquet(self.path, self.columns, row_groups=self.row_groups)
        elif self.layout is not None:
            yield from iter_csv(
                self.path,
                self.layout,
                self.columns,
                byte_range=self.byte_range,
                column_names=self.column_names,
            )
        else:
            stamp = self.mapping["timestamp"]
            times = [stamp] if isinstance(stamp, str) else stamp
            yield from iter_json_rows(self.path, self.columns, text_only=times)

    def chunks(self) -> Iterator[Chunk]:
        ts_format = self.timestamp_format
        first = self._first_time
        for frame, dropped in self._frames():
            if ts_format is None and not pd.api.types.is_datetime64_any_dtype(frame[first]):
                ts_format = detect_timestamp_format(frame[first])
            raw = build_raw(frame, self.mapping, ts_format, self.recipient_separator)
            yield Chunk(raw, Counter(dropped))


def _flatten(mapping: Mapping[str, str | list[str]]) -> list[str]:
    out: list[str] = []
    for value in mapping.values():
        out.extend([value] if isinstance(value, str) else value)
    return out


class GenericSource(Source):
    """Files read through a configured column mapping."""

    options_model = GenericOptions
    reads = "files"

    @classmethod
    def from_options(cls, name: str, options: GenericOptions, base_dir: Path) -> Source:
        return cls(name, expand_paths(options.path, base_dir), options)

    def __init__(self, name: str, paths: list[Path], options: GenericOptions) -> None:
        super().__init__(name)
        self.paths = paths
        self.mapping: dict[str, str | list[str]] = dict(options.columns)
        self.kind = options.format
        self.options = options

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        units: list[ReadUnit] = []
        for path in self.paths:
            suffix = path.suffix.lower()
            kind = self.kind or (
                "jsonl"
                if suffix in (".jsonl", ".json", ".ndjson")
                else "parquet"
                if suffix in (".parquet", ".pq")
                else "csv"
            )
            units.append(
                MappedFile(
                    path,
                    kind,
                    self.mapping,
                    self.options.recipient_separator,
                    self.options.timestamp_format,
                    self.options.delimiter,
                )
            )
        return units
