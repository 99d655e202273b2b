"""Line logs that grow and rotate: the shared reader of Postfix, Exim and other text logs.

A source names a log by a path or glob (``/var/log/mail.log*``). The files it names are
grouped into *series*: a current file and its rotations (``mail.log``, ``mail.log.1``,
``mail.log.2.gz``, or dated ``mail.log-20261129.gz``), read oldest first. A plain path also
takes in its rotations, found next to it: reading ``mail.log`` alone would lose the lines
written between the last read and a rotation. gzip, bzip2 and xz files are read
transparently (recognised by their first bytes, not their names); every offset here is an
offset in the decompressed content.

**Identity, not names.** A file is recognised by a SHA-256 of its first bytes (up to
:data:`HEAD_BYTES` of decompressed content; the length is kept with the digest, so a file
that was short when it was bookmarked is still recognised once it has grown). Renaming and
compressing by logrotate keep the identity, so a file is resumed at its offset whatever it
is called now; a file replaced or truncated in place (``copytruncate``) has another head,
or is shorter than the offset, and is read from its start.

**Messages span lines, and files.** A format's :class:`Joiner` joins the lines of one
message (by Postfix queue id, Exim message id...) and emits one row per (message,
recipient) when the message is complete, for instance when Postfix logs ``removed``. A
message can start in ``mail.log.1`` and end in ``mail.log``: one joiner reads a whole series
in order, so it is joined once.

**The bookmark holds positions only.** It is a JSON string (one per source, committed by the
engine with each unit in one transaction): per series the identity of one file and a
*low-water* offset, the start of the first line of the oldest message still open, and log
times (never an address, never a line). Messages still open at the end of a run are not
kept anywhere: the next run reads again from the low-water offset, so it sees them whole.
Messages that were complete and emitted before are emitted again, and the store counts them
once (it deduplicates by keyed message id, sender and recipient); lines of messages whose
start lies before the low-water offset are ignored (their message was emitted whole). A
message that never completes must not pin the offset for ever: once its first line is more
than ``max_open_hours`` older than the newest line read, it is emitted with what is known
(deferred, unknown) and forgotten. Only the log's own times count, never the wall clock, so
reading old logs joins messages as reading them live did. The default,
:data:`DEFAULT_MAX_OPEN_HOURS`, outlasts Postfix's 5-day queue lifetime (and Exim's usual
4-day retry limit), so every message is normally emitted with its final status; a lower
value re-reads less log each run, at the price of an early ``deferred`` for long-queued mail.

**Killed at any point.** A unit is one file of a series (from where reading resumes); its
bookmark is the position after it, committed with its rows. A run killed anywhere leaves
the previous bookmark, and reading again from there is correct by the rules above.

**Times.** :class:`SyslogClock` reads BSD syslog stamps (``Nov 30 06:25:01``: the year comes
from the file's modification time, a line is never later than that; a year boundary inside
a file moves the year on; the zone is the ``timezone`` option), RFC 3339 stamps
(``2026-11-30T06:25:01.123456+01:00``) and journald's JSON export (``journalctl -o json``:
``__REALTIME_TIMESTAMP``, ``MESSAGE``, ``SYSLOG_IDENTIFIER``); :func:`parse_syslog` splits
such a line into time, host, program and message.

**Header state.** Some formats read a file's lines through its header (a W3C log's
``#Fields:`` line names the columns, and a second one further down switches them). A run
that resumes a file at an offset rebuilds that state from the file itself, never from the
bookmark: :meth:`LogFile.lines_before` gives the lines that start with a marker (``b"#"``)
before the offset, read again from the file's start (header lines are at its head, a few
more after a restart). A :class:`Joiner` does it in :meth:`Joiner.start_file`, which gets
the file and the offset it resumes at; a reader of its own (Exchange Server's message
tracking logs, read side by side across servers: :mod:`connectors.exchange_server`) calls
it where it opens the file.

Memory stays flat: files are read in blocks, lines are processed one at a time, rows leave
in chunks of at most :data:`CHUNK_ROWS`, and a joiner keeps only the messages in flight.

To add a format: subclass :class:`Joiner` (usually with :class:`OpenMessages` and
:class:`MailMessage`) and :class:`LogSource` (its ``format_name``, ``options_model`` and
``joiner()``); see :mod:`connectors.postfix` and :mod:`connectors.exim`.
"""

from __future__ import annotations

import bz2
import calendar
import datetime as dt
import gzip
import hashlib
import json
import logging
import lzma
import re
import zoneinfo
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Generic, Literal, NamedTuple, TypeVar, cast

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from compliance.errors import InputError
from compliance.events import RAW, bounded_utc, conform_raw
from connectors.base import Chunk, FileOptions, ReadUnit, Source, SourceState, expand_paths

log = logging.getLogger(__name__)

#: Bytes of a file's (decompressed) head that make its identity.
HEAD_BYTES = 4096
#: Bytes read at a time.
BLOCK_BYTES = 1 << 20
#: A longer line is skipped (counted as ``line_too_long``): no mail log writes one.
MAX_LINE_BYTES = 64 << 10
#: Rows per chunk handed to the engine.
CHUNK_ROWS = 1 << 16
#: Default of ``max_open_hours``: Postfix's maximal_queue_lifetime and
#: bounce_queue_lifetime (5 days) plus 4 hours for the last retry and the bounce.
DEFAULT_MAX_OPEN_HOURS = 124
#: Microseconds per second and per hour.
SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR

_MAGIC: dict[bytes, str] = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


def _decompressing(kind: str, path: Path) -> IO[bytes]:
    """A reader of the decompressed content (the caller closes it)."""
    if kind == "gzip":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if kind == "bzip2":
        return bz2.open(path, "rb")
    return lzma.open(path, "rb")


# --- files and series ---------------------------------------------------------------------
#: A date in a rotated file's name (``-20261129``, ``.2026-11-29``, ``-2026112906``).
_DATE_IN_NAME = re.compile(
    r"[-_.]?(?<!\d)(\d{4})-?(\d\d)-?(\d\d)(?:[-_T]?(\d\d)(?:-?(\d\d))?(?:-?(\d\d))?)?(?!\d)"
)
_NUMBER_SUFFIX = re.compile(r"^(.+)\.(\d{1,4})$")
_COMPRESSED_SUFFIX = re.compile(r"\.(?:gz|bz2|xz)$")


def rotation_of(name: str) -> tuple[str, tuple[int, str, int]]:
    """A file name's series name and its place in the series (older sorts first).

    ``mail.log`` is the current file (newest); ``mail.log.3.gz`` is older than
    ``mail.log.1``; dated names (``mail.log-20261129.gz``, ``main-2026-11-29.log``) sort by
    their date, before numbered ones.
    """
    stem = _COMPRESSED_SUFFIX.sub("", name)
    dated = _DATE_IN_NAME.search(stem)
    if dated is not None and dated.end() - dated.start() >= 8:
        base = stem[: dated.start()] + stem[dated.end() :]
        return base, (0, "".join(g or "" for g in dated.groups()), 0)
    numbered = _NUMBER_SUFFIX.match(stem)
    if numbered is not None:
        return numbered.group(1), (1, "", -int(numbered.group(2)))
    return stem, (2, "", 0)


class Identity(NamedTuple):
    """What recognises a file: the SHA-256 (hex, 32 digits) of its first ``length`` bytes."""

    digest: str
    length: int


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LogFile:
    """One file of a series: its path, its compression (from its first bytes) and its head."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base, self.order = rotation_of(path.name)
        try:
            with path.open("rb") as raw:
                magic = raw.read(6)
            self.mtime = path.stat().st_mtime
            self.size = path.stat().st_size
        except IsADirectoryError:
            raise InputError(path, "is a folder, not a log file") from None
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
        self.compression = next((k for m, k in _MAGIC.items() if magic.startswith(m)), None)
        self._head: bytes | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def open(self) -> IO[bytes]:
        """The file's (decompressed) content as a binary stream."""
        try:
            if self.compression is None:
                return self.path.open("rb")
            return _decompressing(self.compression, self.path)
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from None

    def head(self) -> bytes:
        """The first :data:`HEAD_BYTES` of the content (fewer in a shorter file)."""
        if self._head is None:
            try:
                with self.open() as stream:
                    self._head = stream.read(HEAD_BYTES)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise InputError(self.path, f"cannot read its start: {exc}") from None
        return self._head

    def saw_head(self, data: bytes) -> None:
        """A longer head read while reading the file from its start (it has grown)."""
        if len(data) > len(self.head()) and data.startswith(self.head()):
            self._head = data[:HEAD_BYTES]

    def identity(self) -> Identity:
        head = self.head()
        return Identity(_digest(head), len(head))

    def matches(self, identity: Identity) -> bool:
        """True when this file starts with the content ``identity`` was taken from."""
        head = self.head()
        return len(head) >= identity.length > 0 and _digest(head[: identity.length]) == (
            identity.digest
        )

    def lines_before(self, offset: int, marker: bytes) -> list[bytes]:
        """The lines that start with ``marker`` (after a UTF-8 byte order mark, if any) and
        start before ``offset`` (a line start), in order, without their line ends: the
        header lines a format needs to read a file resumed at ``offset`` (``#Fields:``).
        Read again from the file, block by block; nothing of them is kept elsewhere."""
        found: list[tuple[int, bytes]] = []
        starts = (marker, b"\xef\xbb\xbf" + marker)
        pending = b""  # an unfinished line, carried to the next block
        base = 0  # the offset of pending's first byte
        try:
            with self.open() as stream:
                left = offset
                while left > 0 and (block := stream.read(min(left, BLOCK_BYTES))):
                    left -= len(block)
                    data = pending + block
                    cut = data.rfind(b"\n") + 1
                    for start in starts:
                        at = 0 if data.startswith(start) else data.find(b"\n" + start) + 1
                        while at > 0 or (at == 0 and data.startswith(start)):
                            end = data.find(b"\n", at)
                            if end < 0:
                                break  # unfinished: found with the next block
                            found.append((base + at, data[at:end].rstrip(b"\r")))
                            at = data.find(b"\n" + start, end) + 1 or -1
                    pending, base = data[cut:], base + cut
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(self.path, f"cannot read its header: {exc}") from None
        return [line for _, line in sorted(found)]

    def origin(self) -> str:
        """A stable name of the file's content for ids derived from positions in it: the
        digest of its first line (which never changes once written)."""
        head = self.head()
        end = head.find(b"\n")
        return _digest(head if end < 0 else head[: end + 1])[:16]


@dataclass
class Series:
    """The files of one log, oldest first (one file per identity)."""

    name: str  # folder and series name: for messages, never stored
    files: list[LogFile]


def find_series(patterns: str | list[str], base_dir: Path) -> list[Series]:
    """The series the paths or globs name: files grouped by folder and series name, each
    ordered oldest first. A current file named (``mail.log``, not ``mail.log.2.gz``) brings
    its rotations found next to it. Of files with the same content (a rotated file and its
    compressed copy being written) only one is kept, the uncompressed one."""
    named = expand_paths(patterns, base_dir)
    groups: dict[tuple[Path, str], dict[Path, None]] = {}
    current: set[tuple[Path, str]] = set()
    for path in named:
        base, order = rotation_of(path.name)
        groups.setdefault((path.parent, base), {})[path] = None
        if order[0] == 2:
            current.add((path.parent, base))
    for folder, base in current:
        members = groups[(folder, base)]
        try:
            siblings = sorted(p for p in folder.iterdir() if p.is_file())
        except OSError:
            continue  # the named file itself then says what is wrong
        for sibling in siblings:
            if rotation_of(sibling.name)[0] == base:
                members.setdefault(sibling, None)
    found = []
    for (folder, base), members in groups.items():
        if len(members) > 1:  # the current file, between logrotate's rename and create
            members = {p: None for p in members if p.exists()} or members
        files = sorted((LogFile(p) for p in members), key=lambda f: (f.order, f.name))
        found.append(Series(str(folder / base), _one_per_identity(files)))
    return found


def _one_per_identity(files: list[LogFile]) -> list[LogFile]:
    kept: dict[Identity, LogFile] = {}
    for file in files:
        ident = file.identity()
        if ident.length == 0:
            continue
        other = kept.get(ident)
        if other is None or (other.compression is not None and file.compression is None):
            kept[ident] = file
    chosen = set(map(id, kept.values()))
    out = [f for f in files if id(f) in chosen]
    empty = [f for f in files if f.identity().length == 0]
    # an empty current file (just rotated) is kept last: lines may arrive while reading
    if empty and empty[-1] is files[-1]:
        out.append(empty[-1])
    return out


# --- the bookmark --------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """Where one series is read up to: a file's identity, the low-water offset in it, and
    the log time there (µs; 0 when unknown)."""

    identity: Identity
    offset: int
    time_us: int = 0


def _iso(time_us: int) -> str:
    if time_us <= 0:
        return ""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=time_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_iso(text: object) -> int:
    if not isinstance(text, str) or not text:
        return 0
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


@dataclass
class Bookmark:
    """A log source's bookmark: per series a :class:`Position`, and the newest log time read.

    Serialised as compact JSON whose text sorts like progress: the store keeps a source's
    bookmark only when the new one is not smaller as a string, so the first fields are the
    newest log time read (``hw``, carried over from run to run) and the latest low-water
    time (``lw``). A bookmark that compares smaller (clocks set back) is not kept, and the
    next run reads again from the older one: nothing is lost.
    """

    positions: list[Position] = field(default_factory=list)
    high_us: int = 0

    VERSION: ClassVar[int] = 1

    def dumps(self) -> str:
        files = sorted(self.positions, key=lambda p: p.identity.digest)
        document = {
            "v": self.VERSION,
            "hw": _iso(self.high_us),
            "lw": _iso(max((p.time_us for p in files), default=0)),
            "files": [
                {
                    "id": p.identity.digest,
                    "len": p.identity.length,
                    "at": p.offset,
                    "t": _iso(p.time_us),
                }
                for p in files
            ],
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None, source: str) -> Bookmark:
        """The bookmark in ``text``; an empty one (read everything) when there is none or
        it is not a log bookmark (logged, without its content)."""
        if not text:
            return cls()
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("v") != cls.VERSION:
                raise ValueError("not a log bookmark")
            positions = [
                Position(
                    Identity(str(item["id"]), int(item["len"])),
                    int(item["at"]),
                    _from_iso(item.get("t")),
                )
                for item in document["files"]
            ]
            return cls(positions, _from_iso(document.get("hw")))
        except (ValueError, KeyError, TypeError):
            log.warning(
                "source %s: its bookmark is not a log position; every file is read from its start",
                source,
            )
            return cls()


# --- times -----------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HALF_YEAR = 183 * DAY


def _epoch_us(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def utc_us(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0
) -> int | None:
    """A UTC wall-clock time as µs since 1970; None when there is no such date."""
    try:
        dt.date(year, month, day)  # timegm would roll 30 February over to March
        return calendar.timegm((year, month, day, hour, minute, second)) * SECOND + micro
    except (ValueError, OverflowError):
        return None


class SyslogClock:
    """Times of one file's lines, as UTC microseconds since 1970.

    BSD syslog stamps carry no year and no zone: the zone is configured, and the year is
    found from the file's modification time (a line is never later than its file's last
    write: a ``Dec 31`` line in a file written in January is from the year before), then
    moves on when the months wrap round inside the file (December to January). A line
    that jumps half a year back from the one before (another host's clock just before New
    Year) is taken as from the year before, that line only. A file that spans more than a
    year cannot be dated this way.
    """

    def __init__(self, zone: dt.tzinfo = dt.UTC) -> None:
        self.zone = zone
        self._utc = zone is dt.UTC or getattr(zone, "key", None) in ("UTC", "Etc/UTC")
        self._year: int | None = None
        self._reference_us = 0
        self._previous_us = 0
        self._hours: dict[tuple[int, int, int, int], int | None] = {}  # the hours' starts
        self._this_year: dict[str, int | None] = {}  # stamps of the current year
        self._last_stamp = ""
        self._last_us: int | None = None

    def start_file(self, mtime: float) -> None:
        """A new file begins (or one is resumed): its modification time dates its lines."""
        self._year = None
        self._reference_us = int(mtime * SECOND)
        self._previous_us = 0
        self._this_year = {}
        self._last_stamp = ""

    def local(
        self, year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0
    ) -> int | None:
        """A wall-clock time of the configured zone as UTC µs (None when no such date)."""
        if self._utc:
            return utc_us(year, month, day, hour, minute, second, micro)
        try:
            moment = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=self.zone)
            return _epoch_us(moment)
        except (ValueError, OverflowError):
            return None

    def _in_year(self, year: int, stamp: str) -> int | None:
        """``Mmm dd hh:mm:ss`` of ``year`` as UTC µs (the zone's offset found once an hour)."""
        month = _MONTHS.get(stamp[:3])
        day, hour, minute, second = stamp[4:6].strip(), stamp[7:9], stamp[10:12], stamp[13:15]
        if month is None or not (day + hour + minute + second).isdigit():
            return None
        if len(stamp) != 15 or stamp[9] != ":" or stamp[12] != ":" or int(minute) > 59:
            return None
        key = (year, month, int(day), int(hour))
        start = self._hours.get(key, -1)
        if start == -1:
            start = self._hours[key] = self.local(year, month, int(day), int(hour), 0, 0)
            if len(self._hours) > 50_000:
                self._hours.clear()
        if start is None:
            return None
        return start + (int(minute) * 60 + min(int(second), 59)) * SECOND

    def bsd(self, stamp: str) -> int | None:
        """``Nov 30 06:25:01`` (or ``Nov  3 ...``) as UTC µs; None when not a valid time."""
        if stamp == self._last_stamp:  # most lines share their second with the one before
            return self._last_us
        found = self._bsd(stamp)
        self._last_stamp, self._last_us = stamp, found
        return found

    def _bsd(self, stamp: str) -> int | None:
        year = self._year
        if year is None:  # the first line read of the file: dated by its last write
            year = dt.datetime.fromtimestamp(self._reference_us / SECOND, self.zone).year
            found = self._in_year(year, stamp)
            if found is None or found > self._reference_us + DAY:
                year -= 1
                found = self._in_year(year, stamp)
            if found is None:
                return None
            self._year, self._previous_us = year, found
            self._this_year = {}
            return found
        found = self._this_year.get(stamp, -1)
        if found == -1:
            found = self._this_year[stamp] = self._in_year(year, stamp)
            if len(self._this_year) > 50_000:
                self._this_year.clear()
        if found is None:
            return None
        if found < self._previous_us - _HALF_YEAR:
            year += 1  # New Year inside the file
            found = self._in_year(year, stamp)
            if found is None:
                return None
            self._year, self._this_year = year, {}
        elif found > self._previous_us + _HALF_YEAR:
            return self._in_year(year - 1, stamp)  # a late line from the year before
        self._previous_us = found
        return found

    def iso(self, stamp: str) -> int | None:
        """An RFC 3339 / ISO 8601 time (a zone-less one in the configured zone) as UTC µs."""
        try:
            moment = dt.datetime.fromisoformat(_trim_fraction(stamp))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        try:
            return _epoch_us(moment)
        except OverflowError:
            return None


_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def _trim_fraction(stamp: str) -> str:
    """Nanoseconds cut to microseconds (what Python reads); ``Z`` as ``+00:00``."""
    if "Z" in stamp:
        stamp = stamp.replace("Z", "+00:00")
    return _LONG_FRACTION.sub(r"\1", stamp) if "." in stamp else stamp


class SyslogLine(NamedTuple):
    """A syslog line split: its time (UTC µs), host, program (``postfix/smtpd``) and text."""

    time_us: int
    host: str
    program: str
    message: str


_RFC3339 = re.compile(
    r"(?:<\d{1,3}>(?:1 )?)?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) "
)
_TAG = re.compile(r"([^\s\[\]:]+)(?:\[\d*\])?:(?: |$)")


def parse_syslog(text: str, clock: SyslogClock) -> SyslogLine | str:
    """Split a syslog line (BSD, with or without microseconds; RFC 3339; or a journald JSON
    export line); a reason (``malformed_line``, ``bad_timestamp``) when it is none."""
    if text.startswith("{"):
        return _journald(text)
    if text.startswith("<") and ">" in text[:5]:
        text = text[text.index(">") + 1 :]
    if len(text) > 16 and text[3] == " " and text[15] in " ." and text[:1].isalpha():
        time_us = clock.bsd(text[:15])
        rest = text[16:]
        if text[15] == ".":  # Postfix's own maillog_file: microseconds
            fraction, _, rest = rest.partition(" ")
            if not fraction.isdigit():
                return "malformed_line"
            if time_us is not None:
                time_us += int(fraction[:6].ljust(6, "0"))
    else:
        stamp = _RFC3339.match(text)
        if stamp is None:
            return "malformed_line"
        time_us = clock.iso(stamp.group(1))
        rest = text[stamp.end() :]
    host, _, rest = rest.partition(" ")
    tag = _TAG.match(rest)
    if tag is None or not host:
        return "malformed_line"
    if time_us is None:
        return "bad_timestamp"
    return SyslogLine(time_us, host, tag.group(1), rest[tag.end() :])


def _journald(text: str) -> SyslogLine | str:
    """One line of ``journalctl -o json``."""
    try:
        entry = json.loads(text)
    except (ValueError, RecursionError):
        return "malformed_line"
    if not isinstance(entry, dict):
        return "malformed_line"
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald writes non-UTF-8 text as a list of bytes
        try:
            message = bytes(message).decode("utf-8", "replace")
        except (ValueError, TypeError):
            return "malformed_line"
    program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM")
    if not isinstance(message, str) or not isinstance(program, str):
        return "malformed_line"
    stamp = entry.get("__REALTIME_TIMESTAMP")
    try:
        time_us = int(stamp) if isinstance(stamp, str | int) else None
    except ValueError:
        time_us = None
    if time_us is None or not 0 < time_us < 7_258_118_400 * SECOND:  # before 2200
        return "bad_timestamp"
    host = entry.get("_HOSTNAME")
    return SyslogLine(time_us, host if isinstance(host, str) else "", program, message)


#: Characters of a Message-ID kept (RFC 5322's line limit).
MAX_MESSAGE_ID = 998


def message_id_of(value: str) -> str | None:
    """A logged Message-ID in its RFC 5322 form (``<…>``, as other sources spell it, so that
    a message seen by two gateways is one); None when empty."""
    value = value.strip()[:MAX_MESSAGE_ID]
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return f"<{value}>" if value else None


# --- rows ------------------------------------------------------------------------------------
class RowSink:
    """Rows in the raw schema gathered column by column, handed out as chunks."""

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        #: the rows' times (µs): its length is the rows gathered (cleared in place)
        self.times: list[int] = []
        self._sender: list[str | None] = []
        self._recipient: list[str | None] = []
        self._status: list[str] = []
        self._size: list[int | None] = []
        self._message_id: list[str] = []

    def __len__(self) -> int:
        return len(self.times)

    def add(
        self,
        time_us: int,
        sender: str | None,
        recipient: str | None,
        status: str,
        size: int | None,
        message_id: str,
    ) -> None:
        self.times.append(time_us)
        self._sender.append(sender)
        self._recipient.append(recipient)
        self._status.append(status)
        self._size.append(size)
        self._message_id.append(message_id)

    def take(self) -> Chunk:
        """The rows and counts gathered since the last chunk, as a chunk."""
        stamps = pd.Series(np.asarray(self.times, dtype=np.int64).astype("datetime64[us]"))
        frame = pd.DataFrame(
            {
                "timestamp": bounded_utc(stamps),
                "sender": pd.array(self._sender, dtype="string"),
                "recipient": pd.array(self._recipient, dtype="string"),
                "status": pd.array(self._status, dtype="string"),
                "size": pd.array(self._size, dtype="Int64"),
                "message_id": pd.array(self._message_id, dtype="string"),
            }
        )
        chunk = Chunk(conform_raw(frame), +self.rejected, +self.skipped)
        for column in (self.times, self._sender, self._recipient, self._status, self._size):
            column.clear()
        self._message_id.clear()
        self.rejected = Counter()
        self.skipped = Counter()
        return chunk


class Mark(NamedTuple):
    """Where a line starts: the file's number in its series (this run's list) and the
    byte offset in its decompressed content."""

    file: int
    offset: int


#: How outcomes of one recipient written to combine, when an alias sent it to several
#: addresses: delivered to any is delivered; else still being tried is deferred; else
#: the first outcome.
_COMBINE_RANK = {"delivered": 0, "deferred": 1}


@dataclass(eq=False)
class MailMessage:
    """A message being joined: its first line, what is known of it, and per recipient (as
    reported: the address written to) the status of each address it was delivered to."""

    mark: Mark
    arrival_us: int
    fallback_id: str
    sender: str | None = None
    size: int | None = None
    message_id: str | None = None
    recipients: dict[str, dict[str, str]] = field(default_factory=dict)

    def outcome(self, reported: str, address: str, status: str) -> None:
        """One delivery attempt's outcome for ``address``, written to as ``reported``."""
        self.recipients.setdefault(reported, {})[address] = status

    def listed(self, reported: str) -> None:
        """A recipient known from the arrival, before any delivery was logged."""
        self.recipients.setdefault(reported, {})

    def emit(self, sink: RowSink, complete: bool) -> None:
        """The message's rows, one per recipient reported. A message from the null sender
        (bounces, delivery and read notifications) is nobody's act: its rows are skipped
        (``bounce_notification``). Recipients never attempted get ``unknown``, and are
        dropped when the message is ``complete`` (their delivery was logged under another
        address)."""
        message_id = self.message_id or self.fallback_id
        rows = 0
        for reported, outcomes in self.recipients.items():
            if not outcomes:
                if complete:
                    continue
                status = "unknown"
            else:
                status = min(outcomes.values(), key=lambda s: _COMBINE_RANK.get(s, 2))
            rows += 1
            if self.sender == "":
                sink.skipped["bounce_notification"] += 1
                continue
            sink.add(self.arrival_us, self.sender, reported, status, self.size, message_id)
        if not rows:
            sink.skipped["no_recipient_logged"] += 1


K = TypeVar("K", bound=Hashable)


class OpenMessages(Generic[K]):
    """Messages in flight, oldest first line first (insertion order)."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[K, MailMessage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: K) -> MailMessage | None:
        return self._by_key.get(key)

    def start(self, key: K, message: MailMessage, sink: RowSink) -> MailMessage:
        """A new message under ``key``; one still open under it (its end was never logged,
        and the id came round again) is emitted first with what is known."""
        old = self._by_key.pop(key, None)
        if old is not None:
            old.emit(sink, complete=False)
        self._by_key[key] = message
        return message

    def close(self, key: K, sink: RowSink) -> None:
        """The message's end: its rows are emitted and it is forgotten."""
        message = self._by_key.pop(key, None)
        if message is not None:
            message.emit(sink, complete=True)

    def oldest(self) -> MailMessage | None:
        return next(iter(self._by_key.values()), None)

    def release(self, before_us: int, sink: RowSink) -> int:
        """Emit and forget the messages that arrived before ``before_us``; how many."""
        released = 0
        by_key = self._by_key
        while by_key:
            key, message = next(iter(by_key.items()))
            if message.arrival_us >= before_us:
                break
            del by_key[key]
            message.emit(sink, complete=False)
            released += 1
        return released

    def flush(self, sink: RowSink) -> None:
        """Emit every open message with what is known (the end of an audit)."""
        for message in self._by_key.values():
            message.emit(sink, complete=False)
        self._by_key.clear()


# --- joining -------------------------------------------------------------------------------
class Joiner(ABC):
    """Turns the lines of one series into raw rows, one per (message, recipient).

    The reader calls :meth:`start_file` whenever it starts or resumes a file, then
    :meth:`line` for each complete line with its :class:`Mark`. A joiner adds rows to
    :attr:`sink` (and counts to ``sink.rejected`` / ``sink.skipped``) as messages complete,
    and keeps the open ones in :attr:`open`, whose oldest sets the low-water mark.
    ``resumed`` is true when the run starts inside the series (lines of messages begun
    before are expected, and not counted).
    """

    def __init__(self, sink: RowSink, clock: SyslogClock, max_open_us: int) -> None:
        self.sink = sink
        self.clock = clock
        self.max_open_us = max_open_us
        self.open: OpenMessages[Any] = OpenMessages()
        self.latest_us = 0
        self.resumed = False
        self.file: LogFile | None = None

    def start_file(self, file: LogFile, offset: int) -> None:
        """A file begins at ``offset`` (0: from its start)."""
        self.file = file
        self.clock.start_file(file.mtime)

    @abstractmethod
    def line(self, text: str, mark: Mark) -> None:
        """One complete line (without its end of line) starting at ``mark``."""

    def saw_time(self, time_us: int) -> None:
        """A line's time: messages older than ``max_open_hours`` before it are released."""
        if time_us > self.latest_us:
            self.latest_us = time_us
            oldest = self.open.oldest()
            if oldest is not None and oldest.arrival_us < time_us - self.max_open_us:
                self.open.release(time_us - self.max_open_us, self.sink)

    def position_id(self, mark: Mark) -> str:
        """A stable id of the line at ``mark``: its file's origin and its offset (the same
        after the file is renamed or compressed)."""
        origin = self.file.origin() if self.file is not None else "-"
        return f"{origin}+{mark.offset}"

    def finish(self, final: bool) -> None:
        """The end of the series in this run: an audit (``final``) emits every message
        still open with what is known; a scheduled run keeps them for the next run, which
        reads them again from their first line. (Messages are released by the log's own
        time, never the wall clock's: a backfill of old logs joins as a live log does.)"""
        if final:
            self.open.flush(self.sink)


#: Builds a series' joiner: (sink, clock, max_open_us) -> Joiner.
JoinerFactory = Callable[[RowSink, SyslogClock, int], Joiner]


# --- reading a series in a run ---------------------------------------------------------------
class _SeriesRead:
    """One run's reading of a series, shared by its units (one per file, read in order)."""

    def __init__(
        self,
        source: LogSource,
        series: Series,
        start: Mark,
        state: _SourceState,
        slot: int,
    ) -> None:
        self.source = source
        self.series = series
        self.start = start
        self.state = state
        self.slot = slot  # this series' entry in the state
        self.units: list[LogUnit] = []
        self._reset()

    def _reset(self) -> None:
        self.sink = RowSink()
        clock = SyslogClock(self.source.zone)
        self.joiner = self.source.joiner(self.sink, clock, self.source.max_open_us)
        self.joiner.resumed = self.start != Mark(0, 0)
        self.next_file = self.start.file
        self.end = self.start  # after the last complete line read
        self.ends: dict[int, int] = {}

    def chunks(self, number: int) -> Iterator[Chunk]:
        """The rows of file ``number`` (units are read in order; a unit read out of order
        first reads its predecessors again, quietly)."""
        if number != self.next_file:
            self._reset()
            for earlier in range(self.start.file, number):
                for _ in self._read(earlier):
                    pass
                self.sink.take()  # their rows were, or will be, yielded by their own units
        yield from self._read(number)

    def _read(self, number: int) -> Iterator[Chunk]:
        file = self.series.files[number]
        offset = self.start.offset if number == self.start.file else 0
        joiner, sink = self.joiner, self.sink
        joiner.start_file(file, offset)
        last = number == len(self.series.files) - 1
        stream = LineStream(file, offset, sink.rejected, complete=self.source.final or not last)
        line, gathered = joiner.line, sink.times
        for start, raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            if text:
                line(text, Mark(number, start))
            if len(gathered) >= CHUNK_ROWS:
                yield sink.take()
        self.ends[number] = stream.end
        self.end = Mark(number, stream.end)
        self.next_file = number + 1
        if last:
            joiner.finish(self.source.final)
        self.state.update(self.slot, self._position(), joiner.latest_us)
        if len(sink) or +sink.rejected or +sink.skipped or last:
            yield sink.take()

    def _position(self) -> Position | None:
        """The low-water position: the first line of the oldest open message, else the end
        of what was read (in an empty file: the end of the file before it)."""
        oldest = self.joiner.open.oldest()
        mark, time_us = (oldest.mark, oldest.arrival_us) if oldest else (self.end, 0)
        before = self.state.positions[self.slot]
        time_us = time_us or self.joiner.latest_us or (before.time_us if before else 0)
        files = self.series.files
        if files[mark.file].identity().length == 0:
            if mark.offset or mark.file == 0 or mark.file - 1 not in self.ends:
                return None
            mark = Mark(mark.file - 1, self.ends[mark.file - 1])
        return Position(files[mark.file].identity(), mark.offset, time_us)


class LineStream:
    """Each complete line of a file from an offset, as (its start, its bytes without the end
    of line); :attr:`end` is then the offset after the last complete line. An unfinished
    last line (still being written) is left for the next read, unless ``complete``: the file
    will not grow (a rotated file, or an audit, which reads what there is); a line longer than
    :data:`MAX_LINE_BYTES` is skipped (``line_too_long``); a damaged compressed file is read
    up to the damage (``corrupt_file``)."""

    def __init__(
        self, file: LogFile, offset: int, rejected: Counter[str], complete: bool = False
    ) -> None:
        self.file = file
        self.offset = offset
        self.end = offset
        self.rejected = rejected
        self.complete = complete

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        file, rejected = self.file, self.rejected
        position = self.offset
        rest = b""
        seen = bytearray() if self.offset == 0 else None  # the head, when read from the start
        overlong = False
        try:
            with file.open() as stream:
                pending = self._start(stream)
                if pending is None:
                    return
                # from a compressed file, what one read decompressed (up to any damage)
                read = stream.read if file.compression is None else stream.read1  # type: ignore[attr-defined]
                while block := pending or read(BLOCK_BYTES):
                    pending = b""
                    if seen is not None and len(seen) < HEAD_BYTES:
                        seen += block[: HEAD_BYTES - len(seen)]
                    lines = (rest + block if rest else block).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if overlong:  # the end of a line too long to keep
                            overlong = False
                        elif len(line) > MAX_LINE_BYTES:
                            rejected["line_too_long"] += 1
                        else:
                            yield position, line
                        position += len(line) + 1
                        self.end = position
                    if len(rest) > MAX_LINE_BYTES:
                        if not overlong:
                            rejected["line_too_long"] += 1
                        overlong = True
                        position += len(rest)
                        rest = b""
            if rest and self.complete and not overlong:
                yield position, rest
                self.end = position + len(rest)
        except (EOFError, OSError, lzma.LZMAError, ValueError) as exc:
            rejected["corrupt_file"] += 1
            log.warning("%s: read up to damaged content (%s)", file.path, type(exc).__name__)
        if seen is not None:
            file.saw_head(bytes(seen))

    def _start(self, stream: IO[bytes]) -> bytes | None:
        """Check that the file is still the one planned (logrotate may have renamed it and
        created another under its name since), and go to the offset; the content read past
        it, or None when the file was replaced (it is read under its new name next run)."""
        planned = self.file.head()
        first = stream.read(len(planned)) if planned else b""
        if first != planned:
            log.info("%s was replaced while the run began: read next run", self.file.path)
            return None
        if self.offset <= len(first):
            return first[self.offset :]
        if self.file.compression is None:
            stream.seek(self.offset)
            return b""
        left = self.offset - len(first)
        while left > 0 and (skipped := stream.read(min(left, BLOCK_BYTES))):
            left -= len(skipped)
        return b""


# --- the source ------------------------------------------------------------------------------
def _zone(name: str) -> dt.tzinfo:
    if name in ("UTC", "Etc/UTC"):
        return dt.UTC
    return zoneinfo.ZoneInfo(name)


class LogOptions(FileOptions):
    """Options of a source that reads growing, rotating line logs."""

    timezone: str = Field(
        "UTC",
        description=(
            "IANA time zone of times the log writes without one (BSD syslog stamps, Exim "
            "without log_timezone), e.g. Europe/Berlin"
        ),
    )
    max_open_hours: int = Field(
        DEFAULT_MAX_OPEN_HOURS,
        ge=1,
        le=24 * 60,
        description=(
            "a message still incomplete this long after its first line is emitted with what "
            "is known (deferred, unknown); each run re-reads the log from the oldest open "
            "message, so at most this much"
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            _zone(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "time_zone", "not a known IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return value


class MailLogOptions(LogOptions):
    """Options of a mail log whose lines name the address written to and the address
    delivered to (an alias, a virtual or canonical mapping expanded one to the other)."""

    recipient: Literal["original", "final"] = Field(
        "original",
        description=(
            "which address of an alias-expanded recipient a row names: original (the "
            "address written to) or final (the mailbox delivered to)"
        ),
    )


class _SourceState:
    """The bookmark a run builds as its units complete (one position per series)."""

    def __init__(self, previous: Bookmark, started_us: int | None, series: int) -> None:
        self.positions: list[Position | None] = [None] * series
        self.high_us = previous.high_us
        self.started_us = started_us

    def update(self, slot: int, position: Position | None, time_us: int) -> None:
        """Series ``slot`` is read up to ``position``; the newest line it held is ``time_us``
        (the bookmark's newest time never passes the run's start)."""
        self.positions[slot] = position
        self.high_us = max(self.high_us, time_us)
        if self.started_us is not None:
            self.high_us = min(self.high_us, self.started_us)

    def dumps(self) -> str:
        positions = [p for p in self.positions if p is not None]
        return Bookmark(positions, self.high_us).dumps()


class LogUnit(ReadUnit):
    """One file of a series, read from where the series resumes (its first unit) or from
    its start; its bookmark is the source's position after it. Units of one series share
    their reading, so they are read here, in order (not distributable) and again each run
    (``once`` is false: a growing file is read again from its bookmark)."""

    once = False
    distributable = False

    def __init__(self, read: _SeriesRead, number: int, fmt: str) -> None:
        self._read = read
        self.number = number
        self.format = fmt
        file = read.series.files[number]
        start = read.start.offset if number == read.start.file else 0
        self.path = file.path
        self.key = f"{file.identity().digest}+{start}"
        self.bookmark = None

    def chunks(self) -> Iterator[Chunk]:
        yield from self._read.chunks(self.number)
        self.bookmark = self._read.state.dumps()


class LogSource(Source):
    """A source of growing, rotating line logs; a subclass names its format and joiner."""

    options_model: ClassVar[type[LogOptions]] = LogOptions
    reads = "files"
    collects = tuple(RAW)
    #: the kind of input, for the data-quality section
    format_name: ClassVar[str] = "log"

    def __init__(self, name: str, options: LogOptions, base_dir: Path) -> None:
        super().__init__(name)
        self.options = options
        self.base_dir = base_dir
        self.zone = _zone(options.timezone)
        self.max_open_us = options.max_open_hours * HOUR
        self.final = True

    @classmethod
    def from_options(cls, name: str, options: Any, base_dir: Path) -> Source:
        return cls(name, options, base_dir)

    @abstractmethod
    def joiner(self, sink: RowSink, clock: SyslogClock, max_open_us: int) -> Joiner:
        """A new joiner for one series."""

    def series(self) -> list[Series]:
        return find_series(self.options.path, self.base_dir)

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        """Per series, one unit per file from where it resumes (every file for an audit,
        whose open messages are emitted at the end)."""
        found = self.series()
        self.final = state is None
        previous = Bookmark.loads(state.bookmark if state else None, self.name)
        started_us = _epoch_us(state.started.astimezone(dt.UTC)) if state else None
        shared = _SourceState(previous, started_us, len(found))
        units: list[ReadUnit] = []
        for slot, series in enumerate(found):
            if not series.files:
                continue
            start = _resume_at(series, previous.positions, self.name)
            read = _SeriesRead(self, series, start, shared, slot)
            # until it is read, a series keeps its position
            shared.positions[slot] = _kept(series, previous.positions)
            read.units = [
                LogUnit(read, n, self.format_name) for n in range(start.file, len(series.files))
            ]
            units.extend(read.units)
        return units

    def check(self) -> list[tuple[bool, str]]:
        try:
            found = self.series()
        except InputError as exc:
            denied = "ermission denied" in str(exc)
            hint = ": let the service account read the logs (e.g. group adm)" if denied else ""
            return [(False, f"{exc}{hint}")]
        files = [f for s in found for f in s.files]
        if not files:
            return [(False, f"no file matches {self.options.path!r}")]
        steps = [(True, f"{len(files)} file(s) readable in {len(found)} series")]
        for series in found:
            newest = series.files[-1]
            when = dt.datetime.fromtimestamp(newest.mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            steps.append(
                (True, f"{series.name}: {len(series.files)} file(s), newest written {when}")
            )
        return steps


def _resume_at(series: Series, positions: list[Position], source: str) -> Mark:
    """Where a run starts in ``series``: in the newest file that a bookmarked position
    names, at its offset (at its start when it is now shorter: truncated); at the oldest
    file's start when none does."""
    for number in range(len(series.files) - 1, -1, -1):
        file = series.files[number]
        for position in positions:
            if not file.matches(position.identity):
                continue
            if file.compression is None and file.size < position.offset:
                log.info(
                    "source %s: %s is shorter than where reading stopped; read from its start",
                    source,
                    file.name,
                )
                return Mark(number, 0)
            return Mark(number, position.offset)
    return Mark(0, 0)


def _kept(series: Series, positions: list[Position]) -> Position | None:
    for file in reversed(series.files):
        for position in positions:
            if file.matches(position.identity):
                return position
    return None
