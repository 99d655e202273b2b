"""Exchange Server (on-premises) message tracking logs: ``MSGTRK*.LOG`` files.

Every Mailbox and Edge Transport server writes one line per *event* of a message
(``RECEIVE``, ``AGENTINFO``, ``SEND``, ``DELIVER``, ``FAIL``, ``DEFER``, ``DSN``...) to
the message tracking log of each of its transport services, in a W3C-like CSV format:
``#Software``, ``#Version``, ``#Log-type``, ``#Date`` and ``#Fields`` header lines, then
comma-separated fields, quoted when they hold a comma or a quote. Several recipients
share one line (``recipient-address`` separated by ``;``).

This module turns the events into one raw row per (message, final recipient) with the
message's outcome, in three pure steps that know nothing of files:

* :func:`parse_header` reads a ``#Fields`` line into a :class:`Layout` (the field list can
  change between versions, and a second ``#Fields`` line in a file switches it);
* :func:`parse_line` splits one line into an :data:`Event` (only the fields needed; the
  subject, IPs, host names, statuses' texts and custom data are never kept), and
  :class:`LineParser` does it for a block of a file (with Arrow's CSV reader), counting
  malformed lines by reason;
* :class:`Joiner` accepts events, joins those of each message (by
  ``network-message-id``, which is the same on every server, else by
  ``internal-message-id`` per server; and ``message-id``), and gives back the rows of
  messages that are finished, while it can say how old its oldest still open one is.

:class:`TrackingLogs` (one read unit per run, ``once = False``) reads each server's folder
as one time-ordered stream and the streams side by side, so that a message that crosses
servers, or files (rollover), is joined once. It reads incrementally on
:mod:`connectors.logfiles`: files are recognised by a digest of their head
(:class:`~connectors.logfiles.LogFile`), each stream is resumed at the offset the last
run's bookmark (a :class:`~connectors.logfiles.Bookmark`: positions and log times only)
names, with the ``#Fields`` mapping in force there read again from the file's head
(:meth:`~connectors.logfiles.LogFile.lines_before`); a message still open at the end of a
run is carried (the bookmark stops at its first line, the next run reads it again), not
given early. Content read again is deduplicated by the store (keyed message id, sender and
recipient).

Options (:class:`ExchangeServerOptions`): ``path`` and ``services``. See
docs/sources/exchange-server.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import operator
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field

from compliance.errors import InputError
from compliance.events import conform_raw, empty_raw
from connectors.base import (
    Chunk,
    FileOptions,
    ReadUnit,
    Source,
    SourceState,
    expand_paths,
)
from connectors.logfiles import Bookmark, Identity, LogFile, Mark, Position
from connectors.textfile import UNDECODABLE, UNDECODABLE_ERRORS, iso_timestamps

log = logging.getLogger(__name__)

FORMAT: Final = "exchange-message-tracking"

#: The fields of Exchange 2013, 2016 and 2019 (and Subscription Edition), in order: what a
#: line without a ``#Fields`` header above it is read as when it has this many fields.
FIELDS_2013: Final = (
    "date-time", "client-ip", "client-hostname", "server-ip", "server-hostname",
    "source-context", "connector-id", "source", "event-id", "internal-message-id",
    "message-id", "network-message-id", "recipient-address", "recipient-status",
    "total-bytes", "recipient-count", "related-recipient-address", "reference",
    "message-subject", "sender-address", "return-path", "message-info", "directionality",
    "tenant-id", "original-client-ip", "original-server-ip", "custom-data",
    "transport-traffic-type", "log-id", "schema-version",
)  # fmt: skip
#: The fields of Exchange 2010 (no network-message-id).
FIELDS_2010: Final = tuple(
    f
    for f in FIELDS_2013
    if f not in ("network-message-id", "transport-traffic-type", "log-id", "schema-version")
)

#: The fields an :data:`Event` holds, in its order. Everything else on a line (subject,
#: client and server IPs and host names, recipient-status texts, message-info,
#: custom-data, directionality) is dropped when the line is split.
WANTED: Final = (
    "date-time", "event-id", "source", "internal-message-id", "message-id",
    "network-message-id", "recipient-address", "total-bytes", "related-recipient-address",
    "reference", "sender-address", "return-path",
)  # fmt: skip
(
    _TIME, _EVENT, _SOURCE, _INTERNAL, _MSGID, _NETID, _RCPT, _SIZE, _RELATED, _REFERENCE,
    _SENDER, _RETURN,
) = range(len(WANTED))  # fmt: skip

#: One line's :data:`WANTED` fields, as text ("" where the line or its version has none).
Event = tuple[str, ...]

# Normalised statuses (compliance.events.STATUSES), coded in the low bits of a score.
_NONE, _DEFERRED, _QUARANTINED, _DELIVERED, _BOUNCED, _REJECTED, _FILTERED = range(7)
_STATUS_NAMES: Final = (
    "deferred", "deferred", "quarantined", "delivered", "bounced", "rejected", "filtered_as_spam",
)  # fmt: skip
#: Event ids that carry a recipient's outcome: (status, terminal). A terminal outcome wins
#: over any later non-terminal one (a ``SEND`` from one server, then ``FAIL`` on the next,
#: is bounced; ``DEFER`` then ``SEND`` is delivered).
EVENT_STATUS: Final[dict[str, tuple[int, bool]]] = {
    "DELIVER": (_DELIVERED, True),
    "DUPLICATEDELIVER": (_DELIVERED, True),
    "SEND": (_DELIVERED, False),  # handed on by SMTP: out of the organisation, or next hop
    "FAIL": (_BOUNCED, True),  # source AGENT: refused by a transport agent (see below)
    "BADMAIL": (_BOUNCED, True),
    "SUBMITFAIL": (_BOUNCED, True),
    "RESUBMITFAIL": (_BOUNCED, True),
    "MODERATORREJECT": (_BOUNCED, True),
    "MODERATIONEXPIRE": (_BOUNCED, True),
    "MODERATORSALLNDR": (_BOUNCED, True),
    "DROP": (_FILTERED, True),  # dropped without an NDR: spam, completed approvals
    "DEFER": (_DEFERRED, False),
    "SUBMITDEFER": (_DEFERRED, False),
    "RESUBMITDEFER": (_DEFERRED, False),
    "POISONMESSAGE": (_QUARANTINED, False),  # held in the poison queue for an admin
}
#: Events that say a message exists and whom it is for (besides the outcomes). A group of
#: events with none of these (a shadow copy's HARECEIVE/HADISCARD, a late AGENTINFO) is
#: no message of its own and yields no row.
ORIGIN_EVENTS: Final = frozenset(
    {
        "RECEIVE", "SUBMIT", "CLIENTSUBMISSION", "RESUBMIT", "EXPAND", "REDIRECT",
        "RESOLVE", "TRANSFER", "INITMESSAGECREATED",
    }
)  # fmt: skip
#: Events whose related-recipient-address is replaced by their recipients: a group by its
#: members, an address by its alternate or its primary address.
REPLACING_EVENTS: Final = frozenset({"EXPAND", "REDIRECT", "RESOLVE"})
#: The Exchange system mailbox that sends NDRs and other system messages.
_SYSTEM_SENDER: Final = "microsoftexchange329e71ec88ae4615bbc36ab6ce41109e@"
_NULL_SENDER: Final = re.compile(r"<\s*>")
_ADDRESS_JUNK: Final = "<> \t"

_TERMINAL: Final = 1 << 62
_LOW: Final = 0xF


@dataclass(frozen=True)
class Layout:
    """The fields of a section of a log file, and where the wanted ones are."""

    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        at = {name: i for i, name in enumerate(self.fields)}
        # a field this version lacks is read from an empty one put after the line's last
        positions = [at.get(name, len(self.fields)) for name in WANTED]
        object.__setattr__(self, "pick", operator.itemgetter(*positions))

    @property
    def present(self) -> list[str]:
        """The :data:`WANTED` fields this layout has."""
        return [name for name in WANTED if name in self.fields]

    def problem(self) -> str | None:
        """Why lines of this layout cannot be read (a field missing), or None."""
        names = set(self.fields)
        missing = [f for f in ("date-time", "event-id", "recipient-address") if f not in names]
        if not names & {"sender-address", "return-path"}:
            missing.append("sender-address")
        if not names & {"message-id", "network-message-id", "internal-message-id"}:
            missing.append("message-id")
        if len(names) != len(self.fields):
            return "#Fields names a field twice"
        return f"#Fields lacks {', '.join(missing)}" if missing else None


def parse_header(line: str) -> Layout | None:
    """The layout a ``#Fields:`` line declares; None for any other line."""
    text = line.lstrip("\ufeff").strip()
    if text[:8].lower() != "#fields:":
        return None
    return Layout(tuple(n.strip().lower() for n in text[8:].split(",")))


#: What a line without a ``#Fields`` line above it is read as, by its number of fields.
HEADERLESS: Final = {len(f): Layout(f) for f in (FIELDS_2013, FIELDS_2010)}


def _split(line: str) -> list[str] | None:
    """The fields of one line (CSV: quoted fields may hold commas and doubled quotes);
    None when its quoting is broken."""
    if '"' not in line:
        return line.split(",")
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def parse_line(line: str, layout: Layout | None) -> Event | None:
    """The wanted fields of one data line, or None when it is malformed (broken quoting, a
    number of fields that is not the layout's). Without a layout (no ``#Fields`` line
    above it), a line of 30 or 26 fields is read as Exchange 2013+ or 2010 writes it."""
    fields = _split(line)
    if fields is None:
        return None
    if layout is None:
        layout = HEADERLESS.get(len(fields))
        if layout is None:
            return None
    elif len(fields) != len(layout.fields):
        return None
    fields.append("")
    picked: Event = layout.pick(fields)  # type: ignore[attr-defined]
    return picked


_BOM: Final = b"\xef\xbb\xbf"
_STRING = pa.string()


def _utf8(data: bytes) -> bytes:
    """``data``, with any byte that is not UTF-8 marked (:data:`UNDECODABLE`, as the
    other text readers mark it: a genuine U+FFFD is text)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors=UNDECODABLE_ERRORS).encode("utf-8")
    return data


def empty_events() -> pa.Table:
    """A table of no events (the :data:`WANTED` fields, as text)."""
    return pa.table({name: pa.array([], _STRING) for name in WANTED})


class LineParser:
    """The lines of one file, in order, to events: a table of the :data:`WANTED` fields
    as text (empty where a version has none), following the file's ``#Fields`` lines, and
    the lines rejected by reason (``malformed_line``, ``unusable_fields``).

    Lines under a ``#Fields`` line are split by Arrow's CSV reader, converting only the
    wanted fields; lines without one (a fragment of a log) by :func:`parse_line`. Every
    line that is neither a header, blank nor read is counted, whatever made it fail.
    """

    def __init__(self) -> None:
        self.layout: Layout | None = None

    def feed(self, data: bytes) -> tuple[pa.Table, Counter[str]]:
        """The events of ``data``: whole lines of the file, in order."""
        tables: list[pa.Table] = []
        rejected: Counter[str] = Counter()
        size, at = len(data), 0
        found: dict[bytes, int] = {}

        def following(mark: bytes) -> int:
            """Where the next line that starts with ``mark`` starts (or the end)."""
            where = found.get(mark, -2)
            if where != -1 and where < at - 1:
                where = found[mark] = data.find(b"\n" + mark, max(at - 1, 0))
            return size if where < 0 else where + 1

        while at < size:
            if data.startswith(_BOM, at):
                at += len(_BOM)
                continue
            first = data[at : at + 1]
            if first in (b"#", b"\n") or data.startswith(b"\r\n", at):
                end = data.find(b"\n", at)
                end = size if end < 0 else end + 1
                if first == b"#":
                    header = parse_header(data[at:end].decode("utf-8", errors="replace"))
                    if header is not None:
                        self.layout = header
                at = end
                continue
            end = min(following(b"#"), following(_BOM))
            self._segment(data[at:end], tables, rejected)
            at = end
        if not tables:
            return empty_events(), rejected
        return pa.concat_tables(tables), rejected

    def feed_lines(self, lines: Iterable[str]) -> tuple[pa.Table, Counter[str]]:
        """:meth:`feed` for lines of text (without line ends)."""
        return self.feed("".join(line + "\n" for line in lines).encode("utf-8"))

    def _segment(self, data: bytes, tables: list[pa.Table], rejected: Counter[str]) -> None:
        """Lines of one layout (no header line among them)."""
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        layout = self.layout
        if layout is not None and layout.problem():
            rejected["unusable_fields"] += lines
            return
        data = _utf8(data)
        if layout is None:
            texts = [line for line in data.decode("utf-8").splitlines() if line.strip()]
            good = [e for e in (parse_line(line, None) for line in texts) if e is not None]
            if len(good) < len(texts):
                rejected["malformed_line"] += len(texts) - len(good)
            if good:
                columns = list(zip(*good, strict=True))
                tables.append(
                    pa.table(
                        {n: pa.array(c, _STRING) for n, c in zip(WANTED, columns, strict=True)}
                    )
                )
            return
        present = layout.present
        invalid = 0

        def skip(_row: object) -> str:
            nonlocal invalid
            invalid += 1
            return "skip"

        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=list(layout.fields)),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                include_columns=present,
                column_types=dict.fromkeys(present, _STRING),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        unread = lines - table.num_rows - invalid
        if unread > 0:  # blank lines, which are no rows; or lines a broken quote swallowed
            unread -= sum(1 for line in data.split(b"\n")[:lines] if line in (b"", b"\r"))
        if invalid + unread > 0:
            rejected["malformed_line"] += invalid + unread
        missing = [name for name in WANTED if name not in present]
        for name in missing:
            table = table.append_column(name, pa.array([""] * table.num_rows, _STRING))
        tables.append(table.select(list(WANTED)))


def event_times(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """ISO 8601 UTC times (``2026-11-30T06:25:01.123Z``) as nanoseconds since the epoch
    (int64); null for anything else, or out of range."""
    try:
        stamps = pc.cast(values, pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a bad one among them
        text = pd.Series(values.to_pylist(), dtype="string")
        parsed = iso_timestamps(text).to_numpy(dtype="datetime64[ns]")
        return pa.array(parsed.astype(np.int64), pa.int64(), mask=np.isnat(parsed))
    if isinstance(stamps, pa.ChunkedArray):
        stamps = stamps.combine_chunks()
    return stamps.cast(pa.int64())


@dataclass(slots=True)
class _Message:
    """What is known of one message: its first and last event times, sender, size and
    Message-ID (first known), flags, and each recipient's best outcome score."""

    first: int
    last: int
    sender: str
    size: int | None
    message_id: str
    origin: bool = False
    ndr: bool = False
    null_sender: bool = False
    recipients: dict[str, int] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)

    def finished(self) -> bool:
        """True when every recipient that counts has an outcome (delivered, failed...)."""
        for recipient, score in self.recipients.items():
            if score >= _TERMINAL or (score & _LOW) == _DELIVERED:
                continue
            if score == 0 and recipient in self.replaced:
                continue
            return False
        return True


_ORIGIN, _NDR, _NULL = 1, 2, 4


class _Columns:
    """The fields of a table of events, cleaned for all events at once."""

    def __init__(self, events: pa.Table, stream: str) -> None:
        def text(name: str) -> pa.ChunkedArray:
            return pc.utf8_trim_whitespace(events.column(name))

        def address(name: str) -> pa.ChunkedArray:
            return pc.utf8_lower(pc.utf8_trim(events.column(name), characters=_ADDRESS_JUNK))

        self.times = event_times(events.column("date-time"))
        netid, internal, msgid = (
            pc.utf8_lower(text("network-message-id")),
            text("internal-message-id"),
            text("message-id"),
        )
        has_netid, has_internal = pc.not_equal(netid, ""), pc.not_equal(internal, "")
        has_msgid = pc.not_equal(msgid, "")
        self.identified = _bools(pc.or_(pc.or_(has_netid, has_internal), has_msgid))
        self.bad_text = _bools(
            pc.or_(
                pc.or_(
                    pc.match_substring(events.column("recipient-address"), UNDECODABLE),
                    pc.match_substring(events.column("sender-address"), UNDECODABLE),
                ),
                pc.match_substring(events.column("return-path"), UNDECODABLE),
            )
        )
        local = pc.binary_join_element_wise(stream, internal, ":")
        base = pc.if_else(has_netid, netid, pc.if_else(has_internal, local, ""))
        self.key = pc.binary_join_element_wise(base, msgid, "\x1f")
        self.kind = pc.utf8_upper(text("event-id"))
        self.source = pc.utf8_upper(text("source"))
        envelope = text("return-path")
        self.header = address("sender-address")
        self.sender = pc.if_else(pc.not_equal(envelope, ""), address("return-path"), self.header)
        self.null_sender = pc.match_substring_regex(envelope, r"^<\s*>$")
        size = text("total-bytes")
        digits = pc.utf8_is_digit(size)
        self.size = pc.if_else(digits, pc.cast(pc.if_else(digits, size, "0"), pa.int64()), None)
        self.message_id = pc.if_else(
            has_msgid,
            msgid,
            pc.if_else(
                has_netid, netid, pc.binary_join_element_wise("exchange-internal", internal, ":")
            ),
        )
        self.recipients = pc.utf8_lower(events.column("recipient-address"))
        self.related = pc.utf8_lower(events.column("related-recipient-address"))
        reference = text("reference")
        forks = pc.and_(
            pc.and_(pc.equal(self.kind, "TRANSFER"), pc.invert(has_netid)),
            pc.utf8_is_digit(reference),
        )
        original = pc.binary_join_element_wise(
            pc.binary_join_element_wise(stream, reference, ":"), msgid, "\x1f"
        )
        self.fork = pc.if_else(forks, original, None)
        self._codes()

    def per_event(self) -> list[pa.ChunkedArray]:
        """key, sender, size, message id, recipients, related, fork: one list each."""
        return [
            self.key, self.sender, self.size, self.message_id, self.recipients, self.related,
            self.fork,
        ]  # fmt: skip

    def _codes(self) -> None:
        """Status code, terminal flag and origin flag of every event."""
        encoded = pc.dictionary_encode(self.kind).combine_chunks()
        names = encoded.dictionary.to_pylist()
        at = encoded.indices.to_numpy(zero_copy_only=False)
        outcome = [EVENT_STATUS.get(n, (_NONE, False)) for n in names]
        code = np.array([c for c, _ in outcome] or [0], dtype=np.int64)[at]
        terminal = np.array([t for _, t in outcome] or [False], dtype=bool)[at]
        origin = np.array([n in ORIGIN_EVENTS for n in names] or [False], dtype=bool)[at]
        agent = _bools(pc.and_(pc.equal(self.kind, "FAIL"), pc.equal(self.source, "AGENT")))
        code[agent] = _REJECTED
        self.code, self.terminal, self.origin = code, terminal, origin | (code > 0)

    def scores(self, times: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Each kept event's outcome score: terminal flag, time (µs) and status code, so
        that a recipient's highest score is its outcome; 0 for an event of no outcome."""
        code, terminal = self.code[keep], self.terminal[keep]
        value = np.where(terminal, _TERMINAL, 0) + (np.maximum(times, 0) // 1000 << 4) + code
        return np.where(code > 0, value, 0)

    def flags(self) -> np.ndarray:
        """Each event's flags: origin, delivery status notification, null sender."""
        ndr = pc.or_(
            pc.or_(pc.equal(self.kind, "DSN"), pc.equal(self.source, "DSN")),
            pc.or_(
                pc.starts_with(self.sender, _SYSTEM_SENDER),
                pc.starts_with(self.header, _SYSTEM_SENDER),
            ),
        )
        out = self.origin * _ORIGIN + _bools(ndr) * _NDR + _bools(self.null_sender) * _NULL
        return np.asarray(out, dtype=np.int64)


def _bools(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


#: How long a message whose recipients all have an outcome stays open for more events
#: (another server's, the mailbox delivery service's) before its rows are given.
SETTLE: Final = dt.timedelta(minutes=30)
#: How long a message without an outcome for every recipient (still queued, deferred)
#: stays open; then its rows are given as they are (``deferred``), and a later outcome
#: gives them again (the store replaces a deferred status by the final one).
MAX_OPEN: Final = dt.timedelta(days=1)


class Joiner:
    """Joins the events of each message and gives one raw row per (message, final
    recipient) once the message is finished.

    Feed it events in roughly the order they were logged, one (:meth:`add`) or a table of
    them (:meth:`add_table`); :meth:`pop` with a *watermark* (the time up to which every
    stream of events has been read) gives the rows of the messages that are finished by
    then; :meth:`finish` gives the rest at the end of the input, still open ones as
    ``deferred``. :meth:`oldest_open` is the first event time of the oldest message still
    held: input before it need not be read again to finish what is open.

    Events are joined by ``network-message-id`` (the same on every server and in every
    copy of a message), else by ``internal-message-id`` within one server (``stream``),
    and by ``message-id``. A message is finished when every recipient has an outcome
    (delivered, failed, dropped...) and it has had no event for :data:`SETTLE`, or when
    it has had none for :data:`MAX_OPEN`. Its row's time is its first event's (when the
    organisation received it); its sender, size and Message-ID are the first known.
    Recipients that an EXPAND, REDIRECT or RESOLVE replaced (a group, an alias) are not
    final and yield no row, unless an outcome names them. A delivery status notification
    generated by Exchange (a DSN event, the system mailbox's messages) and any message
    with a null envelope sender (``<>``: bounces, automatic replies) yield no row: nobody
    sent them; they are counted as skipped.
    """

    def __init__(self, settle: dt.timedelta = SETTLE, max_open: dt.timedelta = MAX_OPEN) -> None:
        self.settle = int(settle.total_seconds() * 1e9)
        self.max_open = int(max_open.total_seconds() * 1e9)
        self._open: dict[str, _Message] = {}

    def __len__(self) -> int:
        """Messages held open."""
        return len(self._open)

    def add(self, event: Event, stream: str = "") -> str | None:
        """Take in one event (its :data:`WANTED` fields) logged by server ``stream``; the
        reason when it is refused, or None."""
        table = pa.table(
            {name: pa.array([value], _STRING) for name, value in zip(WANTED, event, strict=True)}
        )
        refused, _ = self.add_table(table, stream)
        return next(iter(refused), None)

    def add_table(self, events: pa.Table, stream: str) -> tuple[Counter[str], int | None]:
        """Take in a table of events (:class:`LineParser`) of one server's log; the events
        refused, by reason (``bad_timestamp``, ``no_message_id``, ``bad_encoding``), and
        the latest event time (ns) of the table.

        Each field is cleaned for all events at once (Arrow); each event then updates its
        message."""
        rejected: Counter[str] = Counter()
        if not events.num_rows:
            return rejected, None
        e = _Columns(events, stream)
        timed = _bools(e.times.is_valid())
        rejected.update(
            {
                "bad_timestamp": int((~timed).sum()),
                "no_message_id": int((timed & ~e.identified).sum()),
                "bad_encoding": int((timed & e.identified & e.bad_text).sum()),
            }
        )
        rejected = +rejected
        latest = pc.max(e.times).as_py()
        # events that neither name recipients for a message nor decide an outcome
        # (AGENTINFO, HAREDIRECT, HADISCARD...) are left out here
        flags = e.flags()
        keep = timed & e.identified & ~e.bad_text & (flags & (_ORIGIN | _NDR) > 0)
        if not keep.any():
            return rejected, latest
        rows = pa.array(np.flatnonzero(keep))
        times = e.times.take(rows).to_pylist()
        columns = [c.take(rows).to_pylist() for c in e.per_event()]
        kinds = e.kind.take(rows).to_pylist()
        scores = e.scores(np.asarray(times, dtype=np.int64), keep)
        flags = flags[keep]
        open_ = self._open
        for at, kind, score, flag, (
            key,
            sender,
            size,
            message_id,
            recipients,
            related,
            fork,
        ) in zip(
            times, kinds, scores.tolist(), flags.tolist(), zip(*columns, strict=True), strict=True
        ):
            m = open_.get(key)
            if m is None:
                m = open_[key] = _Message(at, at, sender, size, message_id)
            else:
                if at < m.first:
                    m.first = at
                    if sender:
                        m.sender = sender
                elif at > m.last:
                    m.last = at
                if not m.sender:
                    m.sender = sender
                if m.size is None:
                    m.size = size
            if flag:
                m.origin |= bool(flag & _ORIGIN)
                m.ndr |= bool(flag & _NDR)
                m.null_sender |= bool(flag & _NULL)
            held = m.recipients
            for text in recipients.split(";"):
                recipient = text.strip(_ADDRESS_JUNK)
                if recipient and held.get(recipient, -1) < score:
                    held[recipient] = score
            if kind in REPLACING_EVENTS:
                m.replaced.update(
                    a for a in (t.strip(_ADDRESS_JUNK) for t in related.split(";")) if a
                )
            elif fork is not None and (forked := open_.get(fork)) is not None:
                # recipients moved to a fork (TRANSFER, no network id) leave the original
                forked.replaced.update(r for r in m.recipients)
        return rejected, latest

    def oldest_open(self) -> pd.Timestamp | None:
        """The first event time of the oldest message held open, or None."""
        if not self._open:
            return None
        return pd.Timestamp(min(m.first for m in self._open.values()), tz="UTC")

    def pop(self, watermark: int | pd.Timestamp) -> tuple[pd.DataFrame, Counter[str]]:
        """Raw rows of the messages finished by ``watermark`` (ns since the epoch, or a
        time), and rows skipped by reason."""
        mark = watermark.value if isinstance(watermark, pd.Timestamp) else int(watermark)
        quiet, expired = mark - self.settle, mark - self.max_open
        ready = [
            key
            for key, m in self._open.items()
            if m.last <= expired or (m.last <= quiet and m.finished())
        ]
        return self._emit(ready)

    def finish(self) -> tuple[pd.DataFrame, Counter[str]]:
        """Raw rows of every message held (the input has ended), and rows skipped."""
        return self._emit(list(self._open))

    def _emit(self, keys: list[str]) -> tuple[pd.DataFrame, Counter[str]]:
        skipped: Counter[str] = Counter()
        stamps: list[int] = []
        senders: list[str] = []
        recipients: list[str] = []
        statuses: list[str] = []
        sizes: list[int | None] = []
        ids: list[str] = []
        held = self._open
        for key in keys:
            m = held.pop(key)
            if not m.origin:
                continue  # a shadow copy's or a late event: no message of its own
            replaced = m.replaced
            final = [(r, score) for r, score in m.recipients.items() if score or r not in replaced]
            if m.ndr or m.null_sender:
                skipped["delivery_status_notification" if m.ndr else "null_sender"] += len(final)
                continue
            for recipient, score in final:
                recipients.append(recipient)
                statuses.append(_STATUS_NAMES[score & _LOW])
            count = len(final)
            stamps += [m.first] * count
            senders += [m.sender] * count
            sizes += [m.size] * count
            ids += [m.message_id] * count
        if not stamps:
            return empty_raw(), skipped
        sender = pa.array(senders, _STRING)
        out = pd.DataFrame(
            {
                "timestamp": pd.to_datetime(np.array(stamps, dtype=np.int64), unit="ns", utc=True),
                "sender": pc.if_else(pc.equal(sender, ""), None, sender).to_pandas(),
                "recipient": pa.array(recipients, _STRING).to_pandas(),
                "status": pa.array(statuses, _STRING).to_pandas(),
                "size": pd.array(sizes, dtype="Int64"),
                "message_id": pa.array(ids, _STRING).to_pandas(),
            }
        )
        return conform_raw(out), skipped


# ----- files -----------------------------------------------------------------------------

Service = Literal["transport", "mailbox-delivery", "mailbox-submission"]
#: File name prefixes of each service's log (``MSGTRK`` + date is the Transport
#: service's); ``MSGTRKMA`` (moderated transport) is never read.
_PREFIX: Final[dict[str, str]] = {
    "transport": "",
    "mailbox-delivery": "MD",
    "mailbox-submission": "MS",
    "moderation": "MA",
}
_NAME = re.compile(r"^MSGTRK(MA|MD|MS)?(\d{8,10})-(\d+)\.LOG$", re.IGNORECASE)
#: Bytes of a file parsed (and joined) at a time.
BLOCK_BYTES: Final = 8 << 20
#: Rows given to the engine at a time, at most.
CHUNK_ROWS: Final = 1 << 16
_HEAD_BYTES: Final = 8 << 10


def service_of(path: Path) -> str | None:
    """The transport service whose log ``path`` is, from its name (None: not named like a
    message tracking log)."""
    found = _NAME.match(path.name)
    if found is None:
        return None
    prefix = (found.group(1) or "").upper()
    return next(s for s, p in _PREFIX.items() if p == prefix)


def _order(path: Path) -> tuple[str, int, str]:
    """Files of one service in the order they were written: by date (and hour), then
    instance number (``-2`` after ``-1``, ``-10`` after ``-9``)."""
    found = _NAME.match(path.name)
    if found is None:
        return ("", 0, path.name)
    return (found.group(2).ljust(10, "0"), int(found.group(3)), path.name)


def detect(path: Path) -> str:
    """What ``path``'s head says it is (``fields N``, ``headerless`` or ``empty``); an
    :class:`InputError` when it is no message tracking log (an empty file is a log just
    created)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a log file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    lines = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    if len(head) == _HEAD_BYTES and len(lines) > 1:
        lines.pop()  # possibly cut
    for line in lines:
        header = parse_header(line)
        if header is not None:
            problem = header.problem()
            if problem:
                raise InputError(path, f"message tracking log whose {problem}")
            return f"fields {len(header.fields)}"
        if line.startswith("#") or not line.strip():
            continue  # #Software, #Version, #Log-type, #Date
        event = parse_line(line, None)
        if event is not None and re.match(r"\d{4}-\d\d-\d\dT", event[_TIME]):
            return "headerless"
        break
    else:
        if not any(line.strip() for line in lines):
            return "empty"
    raise InputError(
        path,
        "not an Exchange message tracking log (no '#Fields:' header line, and no line of "
        "the 30 fields of Exchange 2013 and later or the 26 of Exchange 2010)",
    )


_FROM_START: Final = Mark(0, 0)


@dataclass(slots=True)
class _Block:
    """What a run read of a stream, a block at a time: where in which file (its number in
    the stream), the layout at its start, and its latest event time (ns; None: none)."""

    file: int
    start: int
    end: int
    layout: Layout | None
    latest: int | None = None


@dataclass
class _Stream:
    """One service's log files of one server (one folder), read in order as one stream,
    from ``start`` (a file's number and an offset in it: where the last run left it)."""

    name: str
    files: list[Path]
    start: Mark = _FROM_START
    latest: int = -(1 << 63)  # the latest event time read so far (ns)
    #: the blocks read, in order (a few numbers each: what the low-water mark is found in)
    read: list[_Block] = field(default_factory=list)
    #: where reading ended: after the last whole line of the last file read
    end: Mark | None = None

    def blocks(
        self, block_bytes: int
    ) -> Iterator[tuple[_Block | None, tuple[pa.Table, Counter[str]], Counter[str]]]:
        """Events of about ``block_bytes`` of whole lines at a time (with the block they
        were read from), and lines skipped."""
        for index in range(self.start.file, len(self.files)):
            path = self.files[index]
            offset = self.start.offset if index == self.start.file else 0
            current = index == len(self.files) - 1  # the one still being written
            parser = LineParser()
            try:
                handle = path.open("rb")
                if offset:
                    # resumed inside the file: its #Fields line(s) before the offset say
                    # how the lines after it read (read again from the file's head)
                    parser.layout = layout_before(path, offset)
                    handle.seek(offset)
            except FileNotFoundError:
                # circular logging deleted it since the run was planned
                log.warning("message tracking log %s was removed before it was read", path.name)
                continue
            except OSError as exc:
                raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
            with handle:
                rest = b""
                position = offset  # the file offset of rest's first byte
                try:
                    while True:
                        data = handle.read(block_bytes)
                        if not data:
                            break
                        data, end = rest + data, (rest + data).rfind(b"\n") + 1
                        data, rest = data[:end], data[end:]
                        if data:
                            block = _Block(index, position, position + end, parser.layout)
                            self.read.append(block)
                            position += end
                            self.end = Mark(index, position)
                            yield block, parser.feed(data), Counter()
                except OSError as exc:
                    raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
                if rest and current:
                    # being written: the rest of this line comes with the next read
                    self.end = Mark(index, position)
                    yield None, (empty_events(), Counter()), Counter(incomplete_line=1)
                elif rest:
                    block = _Block(index, position, position + len(rest), parser.layout)
                    self.read.append(block)
                    self.end = Mark(index, position + len(rest))
                    yield block, parser.feed(rest + b"\n"), Counter()
                elif self.end is None or self.end.file < index:
                    self.end = Mark(index, position)

    def low_water(self, oldest: int | None) -> tuple[Mark, int | None]:
        """Where the next run must start reading this stream so as to see every event of
        the messages still open (``oldest``: the first event time of the oldest, ns; None:
        none is open): the first line whose event time is not before ``oldest``, else the
        end of what was read; and the event time there (ns; None: unknown)."""
        if oldest is not None:
            for block in self.read:
                if block.latest is not None and block.latest >= oldest:
                    return Mark(
                        block.file, _first_at(self.files[block.file], block, oldest)
                    ), oldest
        if self.end is None:
            return self.start, None
        return self.end, self.latest if self.latest > -(1 << 63) else None


def layout_before(path: Path, offset: int) -> Layout | None:
    """The layout in force at ``offset`` of a message tracking log: its last ``#Fields``
    line before it (None: none, headerless lines)."""
    layout = None
    for line in LogFile(path).lines_before(offset, b"#"):
        found = parse_header(line.decode("utf-8", errors="replace"))
        if found is not None:
            layout = found
    return layout


def _first_at(path: Path, block: _Block, oldest: int) -> int:
    """The offset of the first line of ``block`` whose event time is not before
    ``oldest`` (ns); the block's start when none can be told (read again from there)."""
    try:
        with path.open("rb") as handle:
            handle.seek(block.start)
            data = handle.read(block.end - block.start)
    except OSError:
        return block.start
    layout, at = block.layout, 0
    starts: list[int] = []
    stamps: list[str] = []
    for raw in data.split(b"\n"):
        text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
        if text.startswith("#"):
            layout = parse_header(text) or layout
        elif text.strip():
            index = layout.fields.index("date-time") if layout is not None else 0
            fields = text.split(",", 1) if index == 0 else _split(text)
            if fields is not None and len(fields) > index:
                starts.append(block.start + at)
                stamps.append(fields[index].strip())
        at += len(raw) + 1
    times = event_times(pa.array(stamps, _STRING)).to_numpy(zero_copy_only=False)
    for start, time_ns in zip(starts, times, strict=True):
        if time_ns == time_ns and time_ns >= oldest:  # not NaN (no time), not before
            return start
    return block.start


def read_streams(
    streams: Sequence[Sequence[Path]],
    block_bytes: int = BLOCK_BYTES,
    chunk_rows: int = CHUNK_ROWS,
    joiner: Joiner | None = None,
) -> Iterator[Chunk]:
    """Raw chunks of message tracking logs: each stream is one server's files of one
    service, in the order written. Streams are read side by side, the one read least far
    in time first, so that a message is held open only until every stream has passed
    it (its events on the next server, in the next file). Everything is read; messages
    still open at the end are given as they are (``deferred``)."""
    readers = [_Stream(f"s{i}", list(files)) for i, files in enumerate(streams) if files]
    return _read(readers, joiner or Joiner(), block_bytes, chunk_rows, None)


def _read(
    readers: list[_Stream],
    joiner: Joiner,
    block_bytes: int,
    chunk_rows: int,
    until: int | None,
) -> Iterator[Chunk]:
    """The streams read side by side (see :func:`read_streams`). At the end, with
    ``until`` (ns: the run's start, up to which every server has written its events)
    the messages finished by then are given and the others kept open in ``joiner`` (the
    next run reads them again); without it, every message is given."""
    blocks = {id(r): r.blocks(block_bytes) for r in readers}
    rejected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    active = list(readers)
    while active:
        reader = min(active, key=lambda r: r.latest)
        found = next(blocks[id(reader)], None)
        if found is None:
            active.remove(reader)
        else:
            block, (events, bad), passed = found
            refused, latest = joiner.add_table(events, reader.name)
            rejected.update(bad + refused)
            skipped.update(passed)
            if latest is not None:
                reader.latest = max(reader.latest, latest)
                if block is not None:
                    block.latest = latest
        if not active:
            break
        rows, dropped = joiner.pop(min(r.latest for r in active))
        skipped.update(dropped)
        if len(rows):
            yield from _chunks(rows, rejected, skipped, chunk_rows)
            rejected, skipped = Counter(), Counter()
    rows, dropped = joiner.finish() if until is None else joiner.pop(until)
    skipped.update(dropped)
    yield from _chunks(rows, rejected, skipped, chunk_rows, always=True)


def _chunks(
    rows: pd.DataFrame,
    rejected: Counter[str],
    skipped: Counter[str],
    size: int,
    always: bool = False,
) -> Iterator[Chunk]:
    if not len(rows):
        if always:
            yield Chunk(rows, rejected, skipped)
        return
    for start in range(0, len(rows), size):
        part = rows.iloc[start : start + size].reset_index(drop=True)
        first = start == 0
        yield Chunk(part, rejected if first else Counter(), skipped if first else Counter())


class TrackingLogs(ReadUnit):
    """Every message tracking log of a source, read as one unit in each run: each
    stream (a server's folder, a service) from where the last run left it, all side by
    side (a message crosses servers and files).

    A scheduled run (``started``: its start) gives the messages finished by then and
    keeps the others open; its bookmark (a :class:`~connectors.logfiles.Bookmark`:
    per stream a file's identity and an offset, and log times; never a line) is each
    stream's low-water mark: the first line not older than the oldest message still
    open, so that the next run reads every event of it again and gives it once it is
    finished (or, after :data:`MAX_OPEN`, as ``deferred``). Messages finished before
    and read again are given again; the store counts each once. An audit
    (``started`` None) reads everything and gives every message.

    Its key changes whenever a file is added or grows, or reading resumes elsewhere
    (names, sizes and times of the files, hashed: no name is stored); ``once`` is False.
    The unit is committed whole with its bookmark: a run killed while reading it leaves
    the bookmark before it, and the next run reads from there.
    """

    format = FORMAT
    once = False
    distributable = False  # its bookmark is made while it is read, here

    def __init__(
        self,
        streams: list[list[Path]],
        starts: Sequence[Mark] | None = None,
        started: dt.datetime | None = None,
        previous: Bookmark | None = None,
    ) -> None:
        self.streams = streams
        self.starts = list(starts) if starts is not None else [Mark(0, 0)] * len(streams)
        self.started = started
        self.previous = previous or Bookmark()
        digest = hashlib.sha256()
        for files, start in zip(streams, self.starts, strict=True):
            digest.update(f"{start.file}+{start.offset}\n".encode())
            for path in files[start.file :]:
                try:
                    info = path.stat()
                except OSError:
                    continue
                digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        self.key = digest.hexdigest()
        self.bookmark = None

    def chunks(self) -> Iterator[Chunk]:
        readers = [
            _Stream(f"s{i}", list(files), start)
            for i, (files, start) in enumerate(zip(self.streams, self.starts, strict=True))
        ]
        joiner = Joiner()
        until = None if self.started is None else pd.Timestamp(self.started).value
        yield from _read(readers, joiner, BLOCK_BYTES, CHUNK_ROWS, until)
        if self.started is not None:
            self.bookmark = self._bookmark(readers, joiner)

    def _bookmark(self, readers: list[_Stream], joiner: Joiner) -> str:
        """Per stream its low-water position, and the newest log time read (never past
        the run's start)."""
        assert self.started is not None
        oldest_open = joiner.oldest_open()
        oldest = None if oldest_open is None else oldest_open.value
        positions: list[Position] = []
        newest = self.previous.high_us
        for reader in readers:
            if not reader.files:
                continue
            mark, time_ns = reader.low_water(oldest)
            if reader.latest > -(1 << 63):
                newest = max(newest, reader.latest // 1000)
            position = _position(reader, mark, time_ns)
            if position is not None and not position.time_us:  # nothing read: as it was
                key = (position.identity, position.offset)
                same = (p for p in self.previous.positions if (p.identity, p.offset) == key)
                position = next(same, position)
            if position is not None:
                positions.append(position)
        started_us = pd.Timestamp(self.started).value // 1000
        return Bookmark(positions, min(newest, started_us)).dumps()


def _position(reader: _Stream, mark: Mark, time_ns: int | None) -> Position | None:
    """``mark`` of a stream as a bookmark's position: the identity of the file (its head)
    and the offset; in an empty file (just created), the end of the one before it."""
    files = reader.files
    number, offset = mark
    while number >= 0:
        try:
            identity = LogFile(files[number]).identity()
        except InputError:  # removed since (circular logging)
            identity = Identity("", 0)
        if identity.length:
            return Position(identity, offset, (time_ns or 0) // 1000)
        if number == 0 or offset:
            return None
        number -= 1
        try:
            offset = files[number].stat().st_size
        except OSError:
            return None
    return None


def resume_at(files: Sequence[Path], positions: Sequence[Position], source: str) -> Mark:
    """Where a run starts reading a stream: in the newest file that a bookmarked position
    names (by its identity: the digest of its head), at its offset; at the oldest file's
    start when none does (a new stream, or its file was removed meanwhile)."""
    for number in range(len(files) - 1, -1, -1):
        try:
            file = LogFile(files[number])
        except InputError:
            continue
        for position in positions:
            if not file.matches(position.identity):
                continue
            if file.size < position.offset:
                log.info(
                    "source %s: %s is shorter than where reading stopped; read from its start",
                    source,
                    file.name,
                )
                return Mark(number, 0)
            return Mark(number, position.offset)
    return Mark(0, 0)


def _default_services() -> list[Service]:
    return ["transport"]


class ExchangeServerOptions(FileOptions):
    """Options of an ``exchange-server`` source (``path`` from :class:`FileOptions`)."""

    services: list[Service] = Field(
        default_factory=_default_services,
        min_length=1,
        description=(
            "which transport services' logs to read, by file name: transport (MSGTRK, the "
            "default: every message that crosses the organisation, with its outcome), "
            "mailbox-delivery (MSGTRKMD: deliveries into mailboxes), mailbox-submission "
            "(MSGTRKMS: submissions from mailboxes)"
        ),
    )


class ExchangeServerSource(Source):
    """Message tracking logs of Exchange Server: one folder per server, a file or a glob."""

    options_model = ExchangeServerOptions
    reads = "files"

    @classmethod
    def from_options(cls, name: str, options: ExchangeServerOptions, base_dir: Path) -> Source:
        return cls(name, options.path, base_dir, tuple(options.services))

    def __init__(
        self,
        name: str,
        path: str | list[str],
        base_dir: Path,
        services: Sequence[str] = ("transport",),
    ) -> None:
        super().__init__(name)
        self.patterns = [path] if isinstance(path, str) else list(path)
        self.base_dir = base_dir
        self.services = frozenset(services)

    def files(self) -> tuple[list[Path], Counter[str]]:
        """The files to read, and files left out by the service their name says."""
        found: list[Path] = []
        left_out: Counter[str] = Counter()
        for item in self.patterns:
            folder = Path(item).expanduser()
            folder = folder if folder.is_absolute() else self.base_dir / folder
            if folder.is_dir():
                candidates = sorted(p for p in folder.iterdir() if p.is_file())
                candidates = [p for p in candidates if service_of(p) is not None]
            else:
                candidates = expand_paths([item], self.base_dir)
            for path in candidates:
                service = service_of(path) or "transport"
                if service in self.services:
                    found.append(path)
                else:
                    left_out[service] += 1
        return list(dict.fromkeys(found)), left_out

    def streams(self, paths: Sequence[Path]) -> list[list[Path]]:
        """Files grouped by server folder and service, each group in written order."""
        groups: dict[tuple[Path, str], list[Path]] = {}
        for path in paths:
            groups.setdefault((path.parent, service_of(path) or ""), []).append(path)
        return [sorted(files, key=_order) for _, files in sorted(groups.items())]

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        paths, _ = self.files()
        if not paths:
            return []
        for path in paths:
            detect(path)
        streams = self.streams(paths)
        if state is None:  # an audit: everything, every message given
            return [TrackingLogs(streams)]
        previous = Bookmark.loads(state.bookmark, self.name)
        starts = [resume_at(files, previous.positions, self.name) for files in streams]
        return [TrackingLogs(streams, starts, state.started.astimezone(dt.UTC), previous)]

    def check(self) -> list[tuple[bool, str]]:
        paths, left_out = self.files()
        if not paths:
            return [(False, f"no message tracking log found in {len(self.patterns)} path(s)")]
        steps: list[tuple[bool, str]] = []
        try:
            kinds = Counter(detect(p) for p in paths)
        except InputError as exc:
            return [(False, str(exc))]
        folders = len({p.parent for p in paths})
        steps.append(
            (
                True,
                f"{len(paths)} log file(s) in {folders} folder(s) readable, headers recognised "
                f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})",
            )
        )
        for service, count in sorted(left_out.items()):
            why = "never read" if service == "moderation" else "not read (option services)"
            steps.append((True, f"{count} {service} log file(s) {why}"))
        return steps
