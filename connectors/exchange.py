"""Exchange Online message-trace exports, format detected from the header.

* ``Get-MessageTrace`` / ``Get-MessageTraceV2 | Export-Csv`` files (Windows PowerShell's
  ``#TYPE`` line, full quoting, CRLF, UTF-8 with or without BOM, UTF-16 LE);
* the Exchange admin center's downloadable reports: the enhanced *summary* report
  (``recipient_status`` holds ``addr##event, event`` for one or more recipients) and the
  *extended* report (one row per transport event, ``;``-separated recipients,
  de-duplicated by network message id and recipient);
* message-trace rows as JSON Lines or a saved JSON page: the Reporting Web Service /
  ``ConvertTo-Json`` spelling (``Received``, ``SenderAddress``...) and Microsoft Graph's
  (``receivedDateTime``, ``senderAddress``...).

Subjects, IPs and every other column are never converted out of the file reader.

Options (:class:`ExchangeOptions`): ``path`` (a file, folder or glob, or a list of them) and
``timestamp_format`` (optional; detected when omitted). A misspelt option is refused.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from compliance.errors import InputError
from compliance.hashing import sorted_firsts
from compliance.privacy import row_siphash
from connectors.base import (
    Chunk,
    FileOptions,
    FileUnit,
    ReadUnit,
    Source,
    SourceState,
    searched_paths,
)
from connectors.common import KeySet
from connectors.textfile import (
    CsvLayout,
    build_raw,
    csv_parts,
    detect_timestamp_format,
    head_lines,
    iter_csv,
    iter_json_rows,
    sniff_csv,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportFormat:
    """One known export layout: its signature columns and how they map to raw columns.
    Compared by value (``==``), never by identity: a unit read on a Dask worker holds an
    unpickled copy."""

    name: str
    signature: frozenset[str]  # lower-case header names that identify it
    mapping: Mapping[str, str | list[str]]  # raw column -> lower-case source column(s)
    recipient_separator: str | None = None


POWERSHELL = ExportFormat(
    "get-messagetrace-csv",
    frozenset({"received", "senderaddress", "recipientaddress"}),
    {
        "timestamp": "received",
        "sender": "senderaddress",
        "recipient": "recipientaddress",
        "status": "status",
        "size": "size",
        "message_id": ["messageid", "messagetraceid"],
    },
)
EAC_SUMMARY = ExportFormat(
    "eac-summary-report",
    frozenset({"origin_timestamp_utc", "sender_address", "recipient_status"}),
    {
        "timestamp": "origin_timestamp_utc",
        "sender": "sender_address",
        "recipient": "recipient_status",
        "size": "total_bytes",
        "message_id": ["message_id", "network_message_id"],
    },
)
EAC_EXTENDED = ExportFormat(
    "eac-extended-report",
    frozenset({"date_time_utc", "sender_address", "recipient_address"}),
    {
        "timestamp": "date_time_utc",
        "sender": "sender_address",
        "recipient": "recipient_address",
        "status": "event_id",
        "size": "total_bytes",
        "message_id": ["network_message_id", "message_id"],
    },
    recipient_separator=";",
)
JSON_TRACE = ExportFormat(
    "message-trace-json",
    frozenset(),
    {
        "timestamp": ["Received", "receivedDateTime"],
        "sender": ["SenderAddress", "senderAddress"],
        "recipient": ["RecipientAddress", "recipientAddress"],
        "status": ["Status", "status"],
        "size": ["Size", "size"],
        "message_id": ["MessageId", "messageId", "MessageTraceId", "id"],
    },
)
_SUMMARY_STATUS = "__recipient_event"
CSV_FORMATS = (POWERSHELL, EAC_SUMMARY, EAC_EXTENDED)
_EXPECTED = (
    "a Get-MessageTrace export (Received, SenderAddress, RecipientAddress), "
    "an Exchange admin center summary report (origin_timestamp_utc, sender_address, "
    "recipient_status) or extended report (date_time_utc, sender_address, recipient_address)"
)


def _mapping_to_header(fmt: ExportFormat, header: list[str]) -> dict[str, str | list[str]]:
    by_lower = {h.lower(): h for h in header}
    mapping: dict[str, str | list[str]] = {}
    for target, source in fmt.mapping.items():
        names = [source] if isinstance(source, str) else source
        present = [by_lower[n] for n in names if n in by_lower]
        if present:
            mapping[target] = present
    return mapping


def _source_columns(mapping: Mapping[str, str | list[str]]) -> list[str]:
    columns: list[str] = []
    for source in mapping.values():
        for name in [source] if isinstance(source, str) else source:
            if name not in columns:
                columns.append(name)
    return columns


class ExportFile(FileUnit):
    """One export file of a known format, or a part of a large CSV export (:meth:`split`)."""

    #: a part's bytes of the file (None: the whole file; see :meth:`split`)
    byte_range: tuple[int, int] | None = None
    #: the header's names, for a part after the header
    column_names: list[str] | None = None
    #: an extended report's part: keys of the (message, recipient) events of earlier parts
    seen_before: np.ndarray | None = None

    def __init__(
        self,
        path: Path,
        fmt: ExportFormat,
        layout: CsvLayout | None,
        timestamp_format: str | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.format = fmt.name
        self.layout = layout
        self.timestamp_format = timestamp_format
        header = layout.header if layout else []
        self.mapping = _mapping_to_header(fmt, header) if layout else dict(fmt.mapping)
        self.columns = _source_columns(self.mapping)
        # an extended report's columns that tell mail the system made (bounces, replies
        # of an out-of-office or an inbox rule) from mail a person sent
        by_lower = {h.lower(): h for h in header}
        self._generated: dict[str, str] = (
            {n: by_lower[n] for n in ("event_id", "source", "return_path") if n in by_lower}
            if fmt == EAC_EXTENDED
            else {}
        )
        self.columns += [c for c in self._generated.values() if c not in self.columns]
        recipient = self.mapping["recipient"]
        self._recipient_column = recipient if isinstance(recipient, str) else recipient[0]
        if fmt == EAC_SUMMARY:
            self.mapping["status"] = _SUMMARY_STATUS
        # the key of this reading's (message, recipient) event keys: random, so that no
        # sender can choose a Message-ID whose event passes for another's (a part of a
        # split file is a copy, and keys its events alike)
        self.event_secret = os.urandom(16)

    def split(self, parts: int) -> list[ReadUnit]:
        """A CSV export of at least two parts' size (:data:`connectors.csvsplit.MIN_PART_BYTES`)
        splits into up to ``parts`` byte ranges cut where records start, which together
        read exactly what the whole file reads: each part is told the format of the file's
        times (found in its first chunk, as the whole file's reading finds it), the header's
        names, and, for an extended report, the events of earlier parts (which the whole
        file's reading would skip as repeated). JSON files, and files that cannot be cut
        safely, stay whole."""
        if self.layout is None or parts < 2 or self.byte_range is not None:
            return [self]
        out = csv_parts(self, self.layout, parts, self._first_format)
        if len(out) > 1 and self.fmt == EAC_EXTENDED:
            _carry_events(out)
        return list(out)

    def _frames(self) -> Iterator[tuple[pd.DataFrame, Counter[str]]]:
        if self.layout is None:
            stamps = self.mapping["timestamp"]
            times = [stamps] if isinstance(stamps, str) else list(stamps)
            return iter_json_rows(self.path, self.columns, text_only=times)
        return iter_csv(
            self.path,
            self.layout,
            self.columns,
            byte_range=self.byte_range,
            column_names=self.column_names,
        )

    def _shaped(self) -> Generator[tuple[pd.DataFrame, Counter[str], Counter[str]], None, None]:
        """The file's frames, a summary report's with one row per recipient, an extended
        report's without the mail the system made (:func:`_system_made`); with the rows
        rejected and the rows skipped, by reason."""
        for frame, dropped in self._frames():
            skipped: Counter[str] = Counter()
            if self.fmt == EAC_SUMMARY:
                frame = _split_recipient_status(frame, self._recipient_column)
            elif self._generated and len(frame):
                frame, skipped = _system_made(frame, self._generated)
            yield frame, dropped, skipped

    def _time_format(self, frame: pd.DataFrame) -> str | None:
        """The format of the times in ``frame`` (None: none to tell by, or none known)."""
        stamp_cols = self.mapping["timestamp"]
        names = [stamp_cols] if isinstance(stamp_cols, str) else stamp_cols
        # the time's column in this spelling (Received or receivedDateTime)
        present = [frame[n] for n in names if n in frame and frame[n].notna().any()]
        return detect_timestamp_format(present[0]) if present else None

    def _first_format(self) -> str | None:
        """The time format the whole file's reading finds in its first chunk, or None."""
        frames = self._shaped()
        try:
            for frame, _, _ in frames:
                return self._time_format(frame)
        finally:
            frames.close()
        return None

    def event_keys(self) -> np.ndarray:
        """The distinct keys of the (message, recipient) events this unit reads, as the
        extended report's de-duplication keys them (the times are not parsed)."""
        mapping = {k: v for k, v in self.mapping.items() if k in ("message_id", "recipient")}
        found = [np.empty(0, dtype=np.uint64)]
        for frame, _, _ in self._shaped():
            raw, _ = _identified(build_raw(frame, mapping, None, self.fmt.recipient_separator))
            found.append(_event_keys(raw, self.event_secret))
        return np.unique(np.concatenate(found))

    def chunks(self) -> Iterator[Chunk]:
        ts_format = self.timestamp_format
        detected = ts_format is not None
        seen = KeySet()
        if self.seen_before is not None:
            seen.add(self.seen_before)
        for frame, dropped, skipped in self._shaped():
            if not detected:
                ts_format = self._time_format(frame)
                detected = ts_format is not None
            raw = build_raw(frame, self.mapping, ts_format, self.fmt.recipient_separator)
            rejected: Counter[str] = Counter(dropped)
            if self.fmt == EAC_EXTENDED and len(raw):
                raw, unnamed = _identified(raw)
                if unnamed:
                    rejected["no_message_id"] += unnamed
                raw, repeats = _drop_seen(raw, seen, self.event_secret)
                if repeats:
                    skipped["repeated_transport_event"] = repeats
            yield Chunk(raw, rejected, skipped)


def _carry_events(parts: list[ExportFile]) -> None:
    """Tell each part of an extended report which of its events earlier parts hold (the
    whole file's reading skips those as repeated transport events). Each part's events are
    keyed once here (a reading of the file's key columns); each part is told only the keys
    it shares with earlier ones."""
    seen = KeySet()
    for part in parts:
        keys = part.event_keys()
        earlier = seen.contains(keys)
        part.seen_before = keys[earlier]
        seen.add(keys[~earlier])


def _split_recipient_status(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``a@x##Receive, Send;b@y##Receive, Deliver``: one row per recipient, with its last event."""
    pairs = frame[column].astype("string").str.split(";").explode()
    parts = pairs.str.partition("##")
    out = frame.drop(columns=[column]).loc[pairs.index].reset_index(drop=True)
    out[column] = parts[0].str.strip().to_numpy()
    out[_SUMMARY_STATUS] = parts[2].str.rsplit(",", n=1).str[-1].str.strip().to_numpy()
    return out


def _system_made(
    frame: pd.DataFrame, columns: Mapping[str, str]
) -> tuple[pd.DataFrame, Counter[str]]:
    """An extended report's rows without those of mail the system made, and how many of
    each kind were skipped: a bounce (``event_id`` or ``source`` ``DSN``:
    ``delivery_status_notification``) or mail with the null return path ``<>`` (an
    out-of-office or inbox-rule reply, a read receipt: ``null_sender``), as the Exchange
    Server reader skips them. Such a message answers what someone else sent; it is no
    act of the person whose address it carries."""
    count = len(frame)

    def text(name: str) -> pd.Series:
        column = columns.get(name)
        if column is None:
            return pd.Series([""] * count, index=frame.index, dtype="string")
        return frame[column].astype("string").fillna("").str.strip()

    dsn = (text("event_id").str.upper() == "DSN") | (text("source").str.upper() == "DSN")
    null = ~dsn & (text("return_path").str.replace(" ", "", regex=False) == "<>")
    skipped: Counter[str] = Counter()
    if dsn.any():
        skipped["delivery_status_notification"] = int(dsn.sum())
    if null.any():
        skipped["null_sender"] = int(null.sum())
    if not skipped:
        return frame, skipped
    return frame.loc[~(dsn | null).to_numpy()].reset_index(drop=True), skipped


def _identified(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """An extended report's rows that name their message (a network message id or a
    message id), and how many did not: the transport events of one message are told apart
    from another's only by its id, so a row without one cannot be counted once
    (``no_message_id``)."""
    named = raw["message_id"].notna().to_numpy()
    if named.all():
        return raw, 0
    return raw.loc[named].reset_index(drop=True), int((~named).sum())


def _event_keys(raw: pd.DataFrame, secret: bytes) -> np.ndarray:
    """The key of each row's (message, recipient) event: keyed SipHash-2-4 of the two
    (each distinct value hashed once), under a reading's own random ``secret``, since a
    sender chooses the Message-ID and must not be able to make one event pass for another,
    already seen, and so be skipped."""
    columns = [
        pc.dictionary_encode(pa.array(raw[c], type=pa.string(), from_pandas=True))
        for c in ("message_id", "recipient")
    ]
    return row_siphash(secret, secret, columns)


def _drop_seen(raw: pd.DataFrame, seen: KeySet, secret: bytes) -> tuple[pd.DataFrame, int]:
    """Keep the first row per (message, recipient) across the whole file: the keys sorted
    once (stably, so that of equal keys the earliest row comes first), for the repeats in
    this chunk and the ones seen before alike."""
    keys = _event_keys(raw, secret)
    order, ordered, first = sorted_firsts(keys)
    new = first & ~seen.contains_sorted(ordered)
    seen.add_sorted(ordered[new])
    fresh = np.zeros(len(keys), dtype=bool)
    fresh[order[new]] = True
    return raw.loc[fresh].reset_index(drop=True), int((~fresh).sum())


def detect_file(path: Path, timestamp_format: str | None = None) -> ExportFile:
    """Open ``path`` as whichever export format its header says, or refuse clearly."""
    lines, _ = head_lines(path, 3)
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if not first:
        raise InputError(path, "is empty")
    if first.startswith(("{", "[")):
        return ExportFile(path, JSON_TRACE, None, timestamp_format)
    layout = sniff_csv(path)
    names = {h.lower() for h in layout.header}
    for fmt in CSV_FORMATS:
        if fmt.signature <= names:
            return ExportFile(path, fmt, layout, timestamp_format)
    raise InputError(
        path,
        f"unknown log format (header of {len(layout.header)} columns matches no known "
        f"export); expected {_EXPECTED}, or configure a 'generic' source with a column mapping",
    )


#: Suffixes of files that are never logs, skipped unread in a folder searched for exports.
NOT_LOGS = frozenset(
    {".md", ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".png", ".jpg", ".jpeg", ".gif",
     ".zip", ".7z", ".exe", ".html", ".htm", ".yaml", ".yml", ".py", ".sh"}
)  # fmt: skip


def find_exports(
    paths: Iterable[tuple[Path, bool]],
    timestamp_format: str | None = None,
    *,
    skip_unknown: bool = True,
) -> tuple[list[ExportFile], list[Path]]:
    """The exports among ``paths`` (each with whether it was found by searching a folder
    or a glob, see :func:`connectors.base.searched_paths`), and the files skipped.

    A file named on its own must be an export (else :class:`InputError`). A folder may
    also hold files that are certainly no logs (hidden files, a README, a spreadsheet):
    those are skipped. A file of an unknown format found in a folder is skipped too with
    ``skip_unknown`` (an audit of a folder), else refused (a scheduled source: it may be
    an export whose format changed, whose rows must not go missing without a word)."""
    found: list[ExportFile] = []
    skipped: list[Path] = []
    for path, searched in paths:
        if not searched:
            found.append(detect_file(path, timestamp_format))
        elif path.name.startswith(".") or path.suffix.lower() in NOT_LOGS:
            skipped.append(path)
        elif not skip_unknown:
            found.append(detect_file(path, timestamp_format))
        else:
            try:
                found.append(detect_file(path, timestamp_format))
            except InputError:
                skipped.append(path)
    return found, skipped


def skipped_note(skipped: Sequence[Path]) -> str:
    """`` (a.txt, b.md, …)``: the first names of skipped files, for a log line. A name
    holding an address (a per-mailbox export) is counted, never shown."""
    shown = [p.name for p in skipped if "@" not in p.name][:5]
    if not shown:
        return ""
    return f" ({', '.join(shown)}{', …' if len(skipped) > len(shown) else ''})"


class ExchangeOptions(FileOptions):
    """Options of an ``exchange`` source (``path`` from :class:`FileOptions`)."""

    timestamp_format: str | None = Field(
        None,
        description="format of the export's times (e.g. %d/%m/%Y %H:%M:%S); detected when omitted",
    )


class ExchangeExportSource(Source):
    """Exported message-trace files: a path, a folder or a glob pattern."""

    options_model = ExchangeOptions
    reads = "files"

    @classmethod
    def from_options(cls, name: str, options: ExchangeOptions, base_dir: Path) -> Source:
        found = searched_paths(options.path, base_dir)
        return cls(
            name,
            [p for p, _ in found],
            options.timestamp_format,
            searched={p for p, searched in found if searched},
        )

    def __init__(
        self,
        name: str,
        paths: list[Path],
        timestamp_format: str | None = None,
        searched: set[Path] | None = None,
    ) -> None:
        super().__init__(name)
        self.paths = paths
        self.timestamp_format = timestamp_format
        self.searched = searched or set()  # found in a folder or by a glob: may be no log

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        """An export per file. In a folder, a file that is certainly no log (hidden, a
        README, a spreadsheet) is skipped with a note; one of an unknown format stops the
        run (:class:`InputError`, its name shown without an address's local part)."""
        if not self.paths:
            return []
        found, skipped = find_exports(
            ((p, p in self.searched) for p in self.paths),
            self.timestamp_format,
            skip_unknown=False,
        )
        if skipped:
            log.info(
                "source %s: skipped %d file(s) that are not logs%s",
                self.name,
                len(skipped),
                skipped_note(skipped),
            )
        return list(found)
