"""Cisco Secure Email Gateway (IronPort, ESA) logs: consolidated event logs and text mail logs.

Two log subscriptions of the appliance can be read, each from files (written by the
appliance and fetched by FTP/SCP, or written by a syslog collector):

* **Consolidated event logs** (AsyncOS 13.0+; ``format: cef``): one CEF line per message,
  ``CEF:0|Cisco|<product>|<version>|ESA_CONSOLIDATED_LOG_EVENT|Consolidated Log Event|5|``
  then ``key=value`` pairs. Read: ``suser`` (envelope sender), ``duser`` (recipients,
  separated by ``;`` or ``,``), ``act`` (final action), ``startTime``/``start`` (received;
  else ``endTime``/``end``, else the syslog time), ``ESAMsgSize``, ``cs4`` (the
  Message-ID, labelled ``ExternalMsgID``), ``ESAMID`` and ``deviceExternalId`` (a trace id
  when there is no Message-ID), and the spam, anti-virus and AMP verdicts. Every other
  key (the subject ``msg``, ``ESAFriendlyFrom``, ``ESAReplyTo``, IPs, attachment, URL and
  SPF details...) is skipped over without being kept.
* **Text mail logs** (``mail_logs``; ``format: mail_logs``): one line per event, joined on
  the message id (``MID``) by :class:`MidJoiner`. A message yields one row per
  recipient when ``Message finished MID n done`` (or ``aborted``) arrives. ``Subject``
  lines are recognised and dropped first, before anything else looks at them.

Statuses are normalised here (:data:`compliance.events.STATUSES`); see
:func:`cef_status` and :class:`MidJoiner`.

Reading: the CEF files are one unit each (content-addressed, read once). The text mail
logs are read as *one* unit per run, every configured file in the order of their
modification times, so that a message whose lines span a rotation is joined; the unit
is read again on every run (``once = False``) and the store drops what it already has
(keyed by message id, sender and recipient). Messages still open at the end of the
input are held back while they are younger than ``hold_open_hours`` (an audit reads
them all, with the status known so far). Line parsing (:func:`parse_mail_log_line`) and
joining (:class:`MidJoiner`, which reports the oldest message still open and where its
first line was) are pure, so that an incremental reader can drive them instead.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import re
import zoneinfo
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from compliance.errors import InputError
from compliance.events import RAW, bounded_utc, conform_raw, status_of
from connectors.base import (
    Chunk,
    FileOptions,
    FileUnit,
    ReadUnit,
    Source,
    SourceState,
    expand_paths,
)

#: Rows handed to the engine at a time.
CHUNK_ROWS = 1 << 16
#: Open messages the joiner keeps before it gives up on the oldest (read as they are).
MAX_OPEN = 500_000
#: Longer lines are no log lines (a consolidated event is a few kB): skipped, counted.
MAX_LINE_BYTES = 1 << 20
#: Bytes read to recognise a file's format.
_SNIFF_BYTES = 64 << 10

Format = Literal["cef", "mail_logs"]
FORMAT_NAMES: dict[str, str] = {
    "cef": "cisco-consolidated-cef",
    "mail_logs": "cisco-mail-logs",
}


# --------------------------------------------------------------------------- times


#: A time at the start of a line, after an optional syslog priority (``<166>``) and RFC
#: 5424 version: ``Mon Nov 30 06:25:01 2026`` (the appliance's own files, year
#: included), ``Nov 30 06:25:01`` (BSD syslog, no year) or ISO 8601 (RFC 5424).
_STAMP = re.compile(
    r"^(?:<\d{1,3}>)?(?:1 )?\s*"
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(?P<ctime>[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4}):?"
    r"|(?P<bsd>[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))"
)
#: CEF time values: ctime (``Thu Nov  3 14:05:44 2022``), epoch milliseconds, ISO 8601,
#: or ArcSight's ``Nov 03 2022 14:05:44``.
_CEF_CTIME = re.compile(
    r"^(?:[A-Z][a-z]{2} +)?([A-Z][a-z]{2}) +(\d{1,2}) (\d\d:\d\d:\d\d) (\d{4})$"
)
_CEF_ARCSIGHT = re.compile(r"^([A-Z][a-z]{2}) (\d{1,2}) (\d{4}) (\d\d:\d\d:\d\d)(?:\.\d+)?$")
_CEF_ISO = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?$")
_SPACES = re.compile(r" +")
_HAS_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"

# A time is carried as text until rows are built, then converted a chunk at a time:
# "C|Nov 30 06:25:01 2026" (with year), "B|Nov 30 06:25:01" (no year), "I|<iso 8601>",
# "E|<epoch milliseconds>".


def stamp_at_start(line: str) -> tuple[str | None, int]:
    """The time at the start of ``line`` as tagged text (see above) and where it ends;
    (None, 0) when the line does not start with a time."""
    m = _STAMP.match(line)
    if m is None:
        return None, 0
    if m.group("ctime") is not None:
        return "C|" + _SPACES.sub(" ", m.group("ctime")), m.end()
    if m.group("bsd") is not None:
        return "B|" + _SPACES.sub(" ", m.group("bsd")), m.end()
    return "I|" + m.group("iso"), m.end()


def cef_stamp(value: str | None) -> str | None:
    """A CEF ``startTime``/``endTime`` value as tagged text; None when it is no time."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return "E|" + (value if len(value) > 11 else value + "000")
    m = _CEF_CTIME.match(_SPACES.sub(" ", value))
    if m:
        return f"C|{m.group(1)} {m.group(2)} {m.group(3)} {m.group(4)}"
    m = _CEF_ARCSIGHT.match(value)
    if m:
        return f"C|{m.group(1)} {m.group(2)} {m.group(4)} {m.group(3)}"
    if _CEF_ISO.match(value):
        return "I|" + value
    return None


@dataclass(frozen=True)
class Clock:
    """Turns tagged times into UTC: times without a zone are in ``zone`` (the
    appliance's), and a syslog time without a year takes the year that puts it at most a
    day after its file's modification time (``references``, one per file)."""

    zone: str = "UTC"
    references: tuple[dt.datetime, ...] = ()

    def convert(self, texts: Sequence[str | None], refs: Sequence[int] | None = None) -> pd.Series:
        """UTC times (``datetime64[ns, UTC]``) of tagged ``texts``; NaT where a text is
        missing, malformed or out of range. ``refs`` names each text's file (an index
        into ``references``) for times without a year."""
        stamps = pd.Series(list(texts), dtype="string")
        out = pd.Series(pd.NaT, index=stamps.index, dtype="datetime64[ns, UTC]")
        if stamps.empty:
            return out
        kind = stamps.str[:2]
        body = stamps.str[2:]
        naive = pd.Series(pd.NaT, index=stamps.index, dtype="datetime64[ns]")
        with_year = (kind == "C|").fillna(False).to_numpy(bool)
        if with_year.any():
            naive[with_year] = pd.to_datetime(
                body[with_year], format="%b %d %H:%M:%S %Y", errors="coerce"
            ).to_numpy()
        yearless = (kind == "B|").fillna(False).to_numpy(bool)
        if yearless.any():
            naive[yearless] = self._yearless(body[yearless], refs).to_numpy()
        iso = (kind == "I|").fillna(False).to_numpy(bool)
        if iso.any():
            text = body[iso]
            zoned = text.str.contains(_HAS_OFFSET, regex=True).fillna(False).to_numpy(bool)
            if zoned.any():
                parsed = pd.to_datetime(text[zoned], format="ISO8601", utc=True, errors="coerce")
                out[text.index[zoned]] = bounded_utc(parsed)
            plain = text[~zoned]
            if len(plain):
                naive[plain.index] = pd.to_datetime(
                    plain, format="ISO8601", errors="coerce"
                ).to_numpy()
        epoch = (kind == "E|").fillna(False).to_numpy(bool)
        if epoch.any():
            ms = pd.to_numeric(body[epoch], errors="coerce")
            ms = ms.where((ms > 0) & (ms < 7_000_000_000_000))
            out[body.index[epoch]] = bounded_utc(pd.to_datetime(ms, unit="ms", utc=True))
        local = naive.notna().to_numpy()
        if local.any():
            values = naive[local]
            if self.zone != "UTC":
                zoned_values = values.dt.tz_localize(
                    zoneinfo.ZoneInfo(self.zone),
                    ambiguous=np.zeros(len(values), dtype=bool),
                    nonexistent="shift_forward",
                ).dt.tz_convert("UTC")
            else:
                zoned_values = values.dt.tz_localize("UTC")
            out[local] = bounded_utc(zoned_values)
        return out

    def _yearless(self, body: pd.Series, refs: Sequence[int] | None) -> pd.Series:
        if not self.references:
            now = dt.datetime.now(zoneinfo.ZoneInfo(self.zone)).replace(tzinfo=None)
            references: tuple[dt.datetime, ...] = (now,)
        else:
            references = self.references
        ref_index = (
            np.zeros(len(body), dtype=np.int64)
            if refs is None
            else np.asarray(refs, dtype=np.int64)[body.index.to_numpy()]
        )
        ref_times = pd.Series(
            np.array([np.datetime64(r, "ns") for r in references])[ref_index], index=body.index
        )
        years = ref_times.dt.year
        parsed = pd.to_datetime(
            years.astype(str) + " " + body, format="%Y %b %d %H:%M:%S", errors="coerce"
        )
        # later than a day past its file's last write: last year's (December in January);
        # unparsable with this year (29 February): last year's too
        back = parsed.isna() | (parsed > ref_times + pd.Timedelta(days=1))
        if back.any():
            earlier = pd.to_datetime(
                (years[back] - 1).astype(str) + " " + body[back],
                format="%Y %b %d %H:%M:%S",
                errors="coerce",
            )
            parsed[back] = earlier
        return parsed


# --------------------------------------------------------------------------- CEF

#: The CEF header: version and six ``|``-separated fields (``\|`` and ``\\`` escaped).
_CEF_HEADER = re.compile(
    r"CEF:(\d+)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|"
    r"((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|"
)
#: Where a key of the extension starts, `` key=`` (an escaped ``\=`` is never a key),
#: matched on the reversed text: ``=``, the reversed key, then a space or the start.
_CEF_KEY_REVERSED = re.compile(r"=([A-Za-z0-9_]*[A-Za-z])(?!\S)")
#: Quoted values (Cisco writes the subject and the Message-ID as Python literals).
_QUOTED = {
    "'": re.compile(r"'(?:[^'\\\n]|\\.)*'"),
    '"': re.compile(r'"(?:[^"\\\n]|\\.)*"'),
}
#: Tokens of a ``{...}`` value (attachment, URL and SPF details are Python dicts).
_DICT_TOKEN = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[{}]|[^'\"{}]+")
_STRING = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
#: A dict nested at most three deep (Cisco's attachment details are), matched at once.
_DICT_3 = re.compile(
    r"\{(?:[^{}'\"]|%s|\{(?:[^{}'\"]|%s|\{(?:[^{}'\"]|%s)*\})*\})*\}" % ((_STRING,) * 3)
)
_CEF_UNESCAPE = re.compile(r"\\\\=|\\([=\\|nr])")
#: The extension keys read; every other key is skipped over, never kept.
CEF_KEYS = frozenset(
    {
        "suser", "duser", "act", "startTime", "start", "endTime", "end", "ESAMsgSize",
        "cs4", "cs4Label", "ESAMID", "deviceExternalId", "ESAASVerdict", "ESAAVVerdict",
        "ESAAMPVerdict",
    }
)  # fmt: skip
_RECIPIENT_SEPARATORS = re.compile(r"[;,]")

#: ``act`` of a consolidated event, normalised (other spellings: :func:`status_of`).
#: ``DQ`` (held in the delay quarantine for a later rescan) is not final: the store takes
#: the later outcome of the same message. ``ABORTED``: receiving was aborted, nothing was
#: accepted.
CEF_ACTIONS: dict[str, str] = {
    "DELIVERED": "delivered",
    "QUARANTINED": "quarantined",
    "DROPPED": "filtered_as_spam",
    "BOUNCED": "bounced",
    "ABORTED": "rejected",
    "DQ": "deferred",
}
#: Verdicts that make a delivered message ``filtered_as_spam`` (delivered, but marked).
SPAM_VERDICTS = frozenset({"POSITIVE", "SUSPECT", "SPAM"})
VIRUS_VERDICTS = frozenset({"POSITIVE", "VIRAL", "MALICIOUS", "MALWARE"})


def _cef_unescape(value: str) -> str:
    r"""CEF extension escapes: ``\=`` and ``\\`` (Cisco also writes ``\\=`` for ``=``)."""
    if "\\" not in value:
        return value
    return _CEF_UNESCAPE.sub(lambda m: _CEF_UNESCAPE_MAP.get(m.group(1) or "=", "="), value)


_CEF_UNESCAPE_MAP = {"=": "=", "\\": "\\", "|": "|", "n": " ", "r": " "}


_OPENERS = frozenset("'\"{")


def _literal_end(text: str, start: int) -> int:
    """Where a quoted or ``{...}`` value starting at ``start`` ends (``start`` when it is
    not closed: then it is an ordinary value)."""
    first = text[start]
    if first in _QUOTED:
        m = _QUOTED[first].match(text, start)
        return m.end() if m else start
    m = _DICT_3.match(text, start)
    if m is not None:
        return m.end()
    depth = 0
    for token in _DICT_TOKEN.finditer(text, start):
        piece = token.group()
        if piece == "{":
            depth += 1
        elif piece == "}":
            depth -= 1
            if depth == 0:
                return token.end()
    return start


def _key_spans(extension: str) -> list[tuple[int, int, str]]:
    """(start of key, start of value, key) of every `` key=`` of an extension, in order.

    Found on the reversed text (see :func:`cef_extension`).
    """
    size = len(extension)
    spans = [
        (size - m.end(), size - m.start(), m.group(1)[::-1])
        for m in _CEF_KEY_REVERSED.finditer(extension[::-1])
    ]
    spans.reverse()
    return spans


def cef_extension(extension: str, wanted: frozenset[str] = CEF_KEYS) -> dict[str, str]:
    """The ``wanted`` keys of a CEF extension, values unescaped (first occurrence wins).

    A key starts where `` key=`` begins; a value runs to the next key, so it may hold
    spaces. A value that starts as a quoted literal or a ``{...}`` dict runs at least to
    its end, so a subject or an attachment name that contains `` duser=`` is never taken
    for a key. Values of other keys are never copied.
    """
    # split on the reversed text, where each key match starts with a literal "=" that
    # the engine finds quickly: [value of the last key, last key, ..., first key, text
    # before it], every piece reversed
    parts = _CEF_KEY_REVERSED.split(extension[::-1])
    keys, values = parts[1::2], parts[0::2]
    unclosed = any(
        v[-1] in _OPENERS and not _literal_end(v[::-1], 0) for v in values[: len(keys)] if v
    )
    if unclosed:  # a literal holds `` key=``: take the pieces in order
        return _cef_extension_in_order(extension, wanted)
    found: dict[str, str] = {}
    for i in range(len(keys) - 1, -1, -1):  # from the first key on
        key = keys[i][::-1]
        if key in wanted and key not in found:
            found[key] = _cef_unescape(values[i][::-1].rstrip())
    return found


def _cef_extension_in_order(extension: str, wanted: frozenset[str]) -> dict[str, str]:
    """:func:`cef_extension` key by key, skipping keys inside a quoted or dict literal."""
    found: dict[str, str] = {}
    keys = _key_spans(extension)
    count, i, size = len(keys), 0, len(extension)
    while i < count:
        _, value_start, key = keys[i]
        j = i + 1
        if value_start < size and extension[value_start] in _OPENERS:
            limit = _literal_end(extension, value_start)
            while j < count and keys[j][0] < limit:
                j += 1
        if key in wanted and key not in found:
            end = keys[j][0] if j < count else size
            found[key] = _cef_unescape(extension[value_start:end].rstrip())
        i = j
    return found


class CefEvent(NamedTuple):
    """One consolidated event, reduced to what a row needs (addresses still raw)."""

    stamp: str | None  # tagged time (see Clock)
    sender: str | None
    recipients: tuple[str, ...]
    status: str
    size: int | None
    message_id: str | None


def _address(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip("<>").strip()
    return value or None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def cef_status(
    act: str | None,
    spam: str | None = None,
    virus: str | None = None,
    amp: str | None = None,
) -> str:
    """The normalised status of a consolidated event: its ``act`` (:data:`CEF_ACTIONS`,
    else :func:`~compliance.events.status_of`); a delivered message with a positive or
    suspect spam verdict, or a positive anti-virus or AMP verdict, is ``filtered_as_spam``
    (delivered, but marked); ``unknown`` without an ``act``."""
    action = (act or "").strip().upper()
    status = CEF_ACTIONS.get(action) or status_of(action)
    if status == "delivered" and (
        (spam or "").upper() in SPAM_VERDICTS
        or (virus or "").upper() in VIRUS_VERDICTS
        or (amp or "").upper() in VIRUS_VERDICTS
    ):
        return "filtered_as_spam"
    return status


def parse_cef_line(line: str) -> CefEvent | Literal[False] | None:
    """One consolidated event from a line; None for a line that is no ESA event (another
    log, another product's CEF); False for a CEF line that cannot be read."""
    start = line.find("CEF:")
    if start < 0:
        return None
    header = _CEF_HEADER.match(line, start)
    if header is None:
        return False
    vendor, event_class = header.group(2), header.group(5)
    if vendor != "Cisco" or event_class != "ESA_CONSOLIDATED_LOG_EVENT":
        return None
    values = cef_extension(line[header.end() :])
    stamp = cef_stamp(values.get("startTime") or values.get("start"))
    if stamp is None:
        stamp = cef_stamp(values.get("endTime") or values.get("end"))
    if stamp is None:
        stamp = stamp_at_start(line[:start])[0]
    recipients = tuple(
        r for r in (_address(p) for p in _RECIPIENT_SEPARATORS.split(values.get("duser", ""))) if r
    )
    size_text = values.get("ESAMsgSize", "").strip()
    message_id: str | None = None
    label = values.get("cs4Label")
    if "cs4" in values and (label is None or label.strip().lower() == "externalmsgid"):
        message_id = _unquote(values["cs4"]) or None
    if message_id is None and values.get("ESAMID"):
        message_id = f"esa:{values.get('deviceExternalId', '').strip()}:{values['ESAMID'].strip()}"
    return CefEvent(
        stamp,
        _address(values.get("suser")),
        recipients,
        cef_status(
            values.get("act"),
            values.get("ESAASVerdict"),
            values.get("ESAAVVerdict"),
            values.get("ESAAMPVerdict"),
        ),
        int(size_text) if size_text.isdigit() and len(size_text) < 19 else None,
        message_id,
    )


# --------------------------------------------------------------------------- mail_logs

#: The log level after the time and syslog host/tag; the event text follows it.
_LEVEL = re.compile(r"\b(?:Info|Debug|Trace|Warning|Critical|Error|Notice|Alert): ")
_MID_REST = re.compile(r"MID (\d+) ")
_FROM = re.compile(r"ICID \d+ From: <([^<>]*)>")
_TO = re.compile(r"ICID \d+ RID (\d+) To: <([^<>]*)>")
_TO_REJECTED = re.compile(r"ICID \d+ To: <([^<>]*)> Rejected by ")
_READY = re.compile(r"ready (\d+) bytes from ")
_MATCHED = re.compile(r"matched recipients \[([\d, ]*)\] for per-recipient policy ")
_SPLIT = re.compile(r"was split creating MID (\d+)")
_REWRITTEN = re.compile(r"rewritten to (?:MID )?(\d+)")
_VERDICT = re.compile(r"(?:interim verdict )?using engine: \S+ spam (positive|suspect)")
_START = re.compile(r"Start MID (\d+)")
_DONE = re.compile(r"Message done (?:DCID \d+ )?MID (\d+) to RID \[([\d, ]*)\]")
_BOUNCED = re.compile(r"(?:Hard )?[Bb]ounced: (?:DCID \d+ )?MID (\d+) to RID \[?([\d, ]*)\]?")
_DELAYED = re.compile(r"Delayed: (?:DCID \d+ )?MID (\d+) to RID \[?([\d, ]*)\]?")
_FINISHED = re.compile(r"Message finished MID (\d+) (done|aborted)")
_ABORTED = re.compile(r"Message aborted MID (\d+)(.*)")
_EUQ = re.compile(
    r"(?:EUQ|ISQ): Quarantined MID (\d+)|RPC Delivery start RCID \d+ MID (\d+) to .*Quarantine"
)


class LogEvent(NamedTuple):
    """What one mail_logs line says of a message: ``kind`` (see :func:`parse_mail_log_line`),
    the message (``host`` and ``mid``), the line's tagged time, and the event's values."""

    kind: str
    host: str
    mid: int
    stamp: str | None
    value: str | None = None  # an address, the Message-ID, or the other MID
    rids: tuple[int, ...] = ()
    number: int | None = None  # the size in bytes, or the other MID


#: Event kinds: start, from, to, to_rejected, message_id, size, matched, split, rewritten,
#: spam, virus, quarantined, dropped, aborted, delivered, bounced, delayed, finished_done,
#: finished_aborted.
MALFORMED = LogEvent("malformed", "", -1, None)


def _rids(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.replace(",", " ").split() if p.isdigit())


def parse_mail_log_line(line: str) -> LogEvent | None:
    """The event a mail_logs line records about a message, or None for any other line.

    A line whose event text says nothing of a ``MID`` (connections, system lines) is
    None. :data:`MALFORMED` is a line that mentions a ``MID`` but has no time or log
    level where one belongs. A ``Subject`` line is None: the subject is never read.
    """
    if "MID " not in line:
        return None
    stamp, at = stamp_at_start(line)
    level = _LEVEL.search(line, at)
    if stamp is None or level is None:
        return MALFORMED
    host = line[at : level.start()].strip()
    body = line[level.end() :]
    if body.startswith("MID "):
        m = _MID_REST.match(body)
        if m is None:
            return None
        mid, rest = int(m.group(1)), body[m.end() :]
        return _mid_event(rest, host, mid, stamp)
    for pattern, kind in (
        (_START, "start"),
        (_FINISHED, "finished"),
        (_DONE, "delivered"),
        (_BOUNCED, "bounced"),
        (_DELAYED, "delayed"),
    ):
        m = pattern.match(body)
        if m is not None:
            if kind == "finished":
                return LogEvent(f"finished_{m.group(2)}", host, int(m.group(1)), stamp)
            rids = _rids(m.group(2)) if m.lastindex and m.lastindex >= 2 else ()
            return LogEvent(kind, host, int(m.group(1)), stamp, rids=rids)
    m = _ABORTED.match(body)
    if m is not None:
        dropped = "dropped" in m.group(2).lower()
        return LogEvent("dropped" if dropped else "aborted", host, int(m.group(1)), stamp)
    m = _EUQ.match(body)
    if m is not None:
        return LogEvent("quarantined", host, int(m.group(1) or m.group(2)), stamp)
    return None


def _mid_event(rest: str, host: str, mid: int, stamp: str) -> LogEvent | None:
    """The event of a line ``MID <mid> <rest>``."""
    if rest.startswith("Subject"):
        return None  # never read, never kept
    if rest.startswith("ICID "):
        m = _TO.match(rest)
        if m is not None:
            return LogEvent("to", host, mid, stamp, m.group(2), (int(m.group(1)),))
        m = _FROM.match(rest)
        if m is not None:
            return LogEvent("from", host, mid, stamp, m.group(1))
        m = _TO_REJECTED.match(rest)
        if m is not None:
            return LogEvent("to_rejected", host, mid, stamp, m.group(1))
        return None
    if rest.startswith("Message-ID "):
        return LogEvent("message_id", host, mid, stamp, _unquote(rest[11:]) or None)
    m = _READY.match(rest)
    if m is not None:
        return LogEvent("size", host, mid, stamp, number=int(m.group(1)[:18]))
    m = _MATCHED.match(rest)
    if m is not None:
        return LogEvent("matched", host, mid, stamp, rids=_rids(m.group(1)))
    m = _SPLIT.match(rest)
    if m is not None:
        return LogEvent("split", host, mid, stamp, number=int(m.group(1)))
    m = _REWRITTEN.match(rest)
    if m is not None:
        return LogEvent("rewritten", host, mid, stamp, number=int(m.group(1)))
    if rest.startswith(("quarantined to ", "enqueued for transfer to centralized")):
        return LogEvent("quarantined", host, mid, stamp)
    if rest.startswith("antivirus positive"):
        return LogEvent("virus", host, mid, stamp)
    m = _VERDICT.match(rest)
    if m is not None:
        return LogEvent("spam", host, mid, stamp)
    lowered = rest[:16].lower()
    if lowered.startswith("dropped"):
        return LogEvent("dropped", host, mid, stamp)
    if lowered.startswith("aborted"):
        return LogEvent("aborted", host, mid, stamp)
    return None


class Position(NamedTuple):
    """Where a line was read: the file (its index in the unit's order) and the byte offset
    of the line's start."""

    file: int
    offset: int


class JoinedRow(NamedTuple):
    """One (message, recipient) row of a joined message, before times are converted."""

    stamp: str | None  # the message's first line's time, tagged
    file: int  # the file that line was read from (dates a time without a year)
    sender: str | None
    recipient: str
    status: str
    size: int | None
    message_id: str | None


#: Per-recipient outcomes that a later line does not change.
_FINAL = frozenset({"delivered", "bounced"})


@dataclass(slots=True)
class _Message:
    """What the lines read so far say of one message."""

    key: tuple[str, int]
    stamp: str | None
    position: Position
    last: str | None = None
    sender: str | None = None
    message_id: str | None = None
    size: int | None = None
    recipients: dict[int, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    outcome: dict[int, str] = field(default_factory=dict)
    status: str | None = None  # an outcome for every recipient without one of its own
    flagged: bool = False  # spam or virus positive
    matched: frozenset[int] | None = None  # the RIDs its per-recipient policy matched
    handed_on: bool = False  # split or rewritten: another MID carries some recipients


@dataclass(frozen=True)
class OpenMessage:
    """The oldest message still open: its first line's time (tagged) and position."""

    stamp: str | None
    position: Position


class MidJoiner:
    """Joins mail_logs events (:func:`parse_mail_log_line`) on the message id.

    :meth:`add` takes one event and the position of its line and returns the rows of a
    message that the event finished (``Message finished MID n done|aborted``): one per
    recipient, with its status:

    * ``delivered`` (``Message done ... to RID [..]``), ``bounced`` (``Bounced: ...``)
      per recipient; ``deferred`` (``Delayed: ...``) until a later outcome;
    * for every recipient without its own outcome: ``quarantined`` (``quarantined to``,
      the spam quarantine), ``filtered_as_spam`` (dropped by a filter), ``rejected``
      (aborted before it was accepted; and recipients refused in the SMTP dialogue,
      ``To: <..> Rejected by ...``), else ``unknown``;
    * a delivered message that an anti-spam engine called spam (positive or suspect), or
      anti-virus positive, is ``filtered_as_spam``.

    A message split for per-recipient policies, or rewritten to a new MID, hands its
    envelope on to the new MID; the recipients each MID then reports are those it
    ``matched``. :meth:`oldest_open` says which message still waits for its end;
    :meth:`drain` ends the input.
    """

    def __init__(self, max_open: int = MAX_OPEN) -> None:
        self.open: OrderedDict[tuple[str, int], _Message] = OrderedDict()
        self.max_open = max_open
        self.last_stamp: str | None = None
        self.evicted = 0

    def _get(self, key: tuple[str, int], event: LogEvent, at: Position) -> _Message:
        found = self.open.get(key)
        if found is None:
            found = self.open[key] = _Message(key, event.stamp, at)
        return found

    def add(self, event: LogEvent, at: Position) -> list[JoinedRow]:
        """Take one event; the rows of the message it finished, if it finished one."""
        if event.stamp is not None:
            self.last_stamp = event.stamp
        key = (event.host, event.mid)
        kind = event.kind
        out: list[JoinedRow] = []
        if kind == "start":
            stale = self.open.pop(key, None)
            if stale is not None:  # the MID was reused: the old one never finished
                out.extend(self._rows(stale))
            self.open[key] = _Message(key, event.stamp, at)
        elif kind in ("finished_done", "finished_aborted"):
            message = self.open.pop(key, None)
            if message is not None:
                if kind == "finished_aborted" and message.status is None:
                    message.status = "rejected"
                out.extend(self._rows(message))
            return out
        message = self._get(key, event, at)
        message.last = event.stamp
        self._apply(message, event, at)
        if len(self.open) > self.max_open:
            _, oldest = self.open.popitem(last=False)
            self.evicted += 1
            out.extend(self._rows(oldest))
        return out

    def _apply(self, message: _Message, event: LogEvent, at: Position) -> None:
        kind = event.kind
        if kind == "from":
            message.sender = event.value or None  # <> (a bounce) has no sender
        elif kind == "to" and event.value is not None:
            message.recipients[event.rids[0]] = event.value
        elif kind == "to_rejected" and event.value:
            message.refused.append(event.value)
        elif kind == "message_id":
            message.message_id = event.value
        elif kind == "size":
            message.size = event.number
        elif kind in ("delivered", "bounced"):
            status = "delivered" if kind == "delivered" else "bounced"
            for rid in event.rids:
                message.outcome[rid] = status
        elif kind == "delayed":
            for rid in event.rids:
                if message.outcome.get(rid) not in _FINAL:
                    message.outcome[rid] = "deferred"
        elif kind == "quarantined":
            message.status = "quarantined"
        elif kind == "dropped":
            message.status = "filtered_as_spam"
        elif kind == "aborted":
            if message.status is None:
                message.status = "rejected"
        elif kind in ("spam", "virus"):
            message.flagged = True
        elif kind == "matched":
            message.matched = kept = frozenset(event.rids)
            if kept & set(message.recipients):
                message.recipients = {r: a for r, a in message.recipients.items() if r in kept}
        elif kind in ("split", "rewritten") and event.number is not None:
            child = self._get((message.key[0], event.number), event, at)
            child.stamp = message.stamp
            child.position = min(child.position, message.position)
            child.sender = child.sender or message.sender
            child.message_id = child.message_id or message.message_id
            child.size = child.size if child.size is not None else message.size
            child.flagged = child.flagged or message.flagged
            for rid, address in message.recipients.items():
                if child.matched is None or rid in child.matched:
                    child.recipients.setdefault(rid, address)
            message.handed_on = True

    def _rows(self, message: _Message) -> list[JoinedRow]:
        """The message's rows: one per recipient, with the status its lines give it."""
        rows = []
        for rid, address in message.recipients.items():
            status = message.outcome.get(rid)
            if status is None:
                if message.handed_on and message.status is None:
                    continue  # carried by the MID it was handed on to
                status = message.status or "unknown"
            elif status == "deferred" and message.status is not None:
                status = message.status
            if status == "delivered" and message.flagged:
                status = "filtered_as_spam"
            rows.append(
                JoinedRow(
                    message.stamp,
                    message.position.file,
                    message.sender,
                    address,
                    status,
                    message.size,
                    message.message_id or self._trace_id(message),
                )
            )
        for address in message.refused:
            rows.append(
                JoinedRow(
                    message.stamp,
                    message.position.file,
                    message.sender,
                    address,
                    "rejected",
                    message.size,
                    message.message_id or self._trace_id(message),
                )
            )
        return rows

    @staticmethod
    def _trace_id(message: _Message) -> str:
        """A message without a Message-ID line: the appliance (the syslog host, when the
        lines name one), the MID and the time of its first line, ``esa:<host>:<mid>:<time>``."""
        host, mid = message.key
        name = host.split()[0].rstrip(":") if host else ""
        return f"esa:{name or 'esa'}:{mid}:{(message.stamp or '')[2:]}"

    def oldest_open(self) -> OpenMessage | None:
        """The message that has been open longest (by its first line), or None."""
        if not self.open:
            return None
        first = min(self.open.values(), key=lambda m: m.position)
        return OpenMessage(first.stamp, first.position)

    def drain(self, keep: Iterable[tuple[str, int]] = ()) -> list[JoinedRow]:
        """End the input: the rows of every open message except those in ``keep``
        (held back for a later read), with the status known so far."""
        held = set(keep)
        out: list[JoinedRow] = []
        for key in [k for k in self.open if k not in held]:
            message = self.open.pop(key)
            out.extend(self._rows(message))
        return out


# --------------------------------------------------------------------------- files


def _open_binary(path: Path) -> IO[bytes]:
    try:
        handle: IO[bytes] = path.open("rb")
        if handle.read(2) == b"\x1f\x8b":
            handle.close()
            return cast(IO[bytes], gzip.open(path, "rb"))
        handle.seek(0)
        return handle
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a log file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _lines(path: Path, rejected: Counter[str]) -> Iterator[tuple[int, str]]:
    """(byte offset, text) of each line of a file (gzip-compressed or not); a line longer
    than :data:`MAX_LINE_BYTES` is skipped and counted (``line_too_long``)."""
    offset = 0
    try:
        with _open_binary(path) as handle:
            while raw := handle.readline(MAX_LINE_BYTES):
                if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    skipped = len(raw)
                    while more := handle.readline(MAX_LINE_BYTES):
                        skipped += len(more)
                        if more.endswith(b"\n"):
                            break
                    offset += skipped
                    rejected["line_too_long"] += 1
                    continue
                yield offset, raw.decode("utf-8", errors="replace").rstrip("\r\n")
                offset += len(raw)
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def head_text(path: Path, size: int = _SNIFF_BYTES) -> list[str]:
    """The first lines of a file, decoded (for recognising its format)."""
    try:
        with _open_binary(path) as handle:
            head = handle.read(size)
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return head.decode("utf-8", errors="replace").splitlines()[:200]


def detect_format(path: Path) -> Format | None:
    """``cef`` or ``mail_logs`` from a file's first lines; None for an empty file; an
    :class:`InputError` when the lines are neither."""
    lines = [ln for ln in head_text(path) if ln.strip()]
    if not lines:
        return None
    for line in lines:
        if "CEF:" in line and "ESA_CONSOLIDATED_LOG_EVENT" in line:
            return "cef"
    for line in lines:
        stamp, at = stamp_at_start(line)
        if stamp is not None and _LEVEL.search(line, at):
            return "mail_logs"
    raise InputError(
        path,
        f"unknown log format (none of its first {len(lines)} lines is a consolidated event "
        "(CEF ... ESA_CONSOLIDATED_LOG_EVENT) or a text mail log line ('<time> Info: ...')); "
        "set 'format' if the file is right",
    )


def _modified(path: Path) -> tuple[float, dt.datetime]:
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return mtime, dt.datetime.fromtimestamp(mtime, dt.UTC)


def _rows_frame(rows: Sequence[tuple[Any, ...]], clock: Clock) -> pd.DataFrame:
    """A RAW frame of rows (stamp, file, sender, recipient, status, size, message id)."""
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 7
    frame = pd.DataFrame(
        {
            "timestamp": clock.convert(list(columns[0]), list(columns[1])),
            "sender": pd.Series(columns[2], dtype="string"),
            "recipient": pd.Series(columns[3], dtype="string"),
            "status": pd.Series(columns[4], dtype="string"),
            "size": pd.Series(columns[5], dtype="Int64"),
            "message_id": pd.Series(columns[6], dtype="string"),
        }
    )
    return conform_raw(frame)


def _local_references(paths: Sequence[Path], zone: str) -> tuple[dt.datetime, ...]:
    tz = zoneinfo.ZoneInfo(zone)
    return tuple(_modified(p)[1].astimezone(tz).replace(tzinfo=None) for p in paths)


class ConsolidatedFile(FileUnit):
    """One file of consolidated event logs (CEF): a row per (message, recipient)."""

    def __init__(self, path: Path, zone: str = "UTC", chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = path
        self.format = FORMAT_NAMES["cef"]
        self.zone = zone
        self.chunk_rows = chunk_rows

    def chunks(self) -> Iterator[Chunk]:
        clock = Clock(self.zone, _local_references([self.path], self.zone))
        rows: list[tuple[object, ...]] = []
        rejected: Counter[str] = Counter()
        for _, line in _lines(self.path, rejected):
            event = parse_cef_line(line)
            if event is None:
                continue
            if event is False:
                rejected["malformed_line"] += 1
                continue
            if not event.recipients:
                rejected["no_recipient"] += 1
                continue
            for recipient in event.recipients:
                rows.append(
                    (
                        event.stamp,
                        0,
                        event.sender,
                        recipient,
                        event.status,
                        event.size,
                        event.message_id,
                    )
                )
            if len(rows) >= self.chunk_rows:
                yield Chunk(_rows_frame(rows, clock), +rejected)
                rows = []
                rejected.clear()  # the reader counts into it: cleared, never replaced
        if rows or rejected:
            yield Chunk(_rows_frame(rows, clock), +rejected)


class MailLogs(ReadUnit):
    """Text mail log files, read in order as one input and joined on the MID.

    Read again on every run (the store keeps each row once); ``hold_open`` (None in an
    audit) holds back messages whose last line is less than that before the input's
    newest line or the run's start (``now``), whichever is later, for a later run to read
    when they are finished.
    """

    once = False

    def __init__(
        self,
        paths: Sequence[Path],
        zone: str = "UTC",
        hold_open: dt.timedelta | None = None,
        chunk_rows: int = CHUNK_ROWS,
        now: dt.datetime | None = None,
    ) -> None:
        self.paths = list(paths)
        self.format = FORMAT_NAMES["mail_logs"]
        self.zone = zone
        self.hold_open = hold_open
        self.chunk_rows = chunk_rows
        self.now = now
        identity = hashlib.sha256()
        for path in self.paths:
            try:
                stat = path.stat()
            except OSError as exc:
                raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
            identity.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        self.key = identity.hexdigest()
        self.joiner: MidJoiner | None = None

    def chunks(self) -> Iterator[Chunk]:
        clock = Clock(self.zone, _local_references(self.paths, self.zone))
        joiner = self.joiner = MidJoiner()
        rows: list[JoinedRow] = []
        rejected: Counter[str] = Counter()
        for index, path in enumerate(self.paths):
            for offset, line in _lines(path, rejected):
                event = parse_mail_log_line(line)
                if event is None:
                    continue
                if event is MALFORMED:
                    rejected["malformed_line"] += 1
                    continue
                finished = joiner.add(event, Position(index, offset))
                if finished:
                    rows.extend(finished)
                    if len(rows) >= self.chunk_rows:
                        yield Chunk(_rows_frame(rows, clock), +rejected)
                        rows = []
                        rejected.clear()  # the reader counts into it: cleared, never replaced
        skipped: Counter[str] = Counter()
        held = self._held(joiner, clock)
        if held:
            skipped["message_still_open"] = sum(
                len(joiner.open[k].recipients) + len(joiner.open[k].refused) for k in held
            )
        rows.extend(joiner.drain(held))
        counts: tuple[Counter[str], Counter[str]] = (+rejected, skipped)
        for start in range(0, len(rows), self.chunk_rows) or [0]:
            part = rows[start : start + self.chunk_rows]
            yield Chunk(_rows_frame(part, clock), *counts)
            counts = (Counter(), Counter())

    def _held(self, joiner: MidJoiner, clock: Clock) -> list[tuple[str, int]]:
        """The open messages to hold back: last line within ``hold_open`` of the end."""
        if self.hold_open is None or not joiner.open or joiner.last_stamp is None:
            return []
        keys = list(joiner.open)
        last = [joiner.open[k].last or joiner.open[k].stamp for k in keys]
        files = [joiner.open[k].position.file for k in keys]
        end_file = len(self.paths) - 1
        times = clock.convert([*last, joiner.last_stamp], [*files, end_file])
        end = times.max()
        if self.now is not None:
            now = pd.Timestamp(self.now).tz_convert("UTC")
            end = now if pd.isna(end) else max(end, now)
        if pd.isna(end):
            return []  # no time to judge by: read them as they are
        recent = times.iloc[:-1] > end - self.hold_open
        return [k for k, young in zip(keys, recent.to_numpy(bool), strict=True) if young]


# --------------------------------------------------------------------------- the source


class CiscoOptions(FileOptions):
    """Options of a ``cisco`` source (``path`` from :class:`FileOptions`)."""

    format: Format | None = Field(
        None,
        description="cef (consolidated event logs) or mail_logs (text mail logs); "
        "recognised from each file's first lines when omitted",
    )
    timezone: str = Field(
        "UTC",
        description="IANA time zone of the appliance's log times (e.g. Europe/Berlin): "
        "the appliance writes local times without a zone",
    )
    hold_open_hours: float = Field(
        72.0,
        ge=0,
        le=24 * 90,
        description="mail_logs: hours a message may stay open (no 'Message finished' yet) "
        "before a scheduled run reads it with the status known so far (72: the "
        "appliance's default maximum time in queue)",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "time_zone", "not a known IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return value


class CiscoSource(Source):
    """Cisco Secure Email Gateway log files: consolidated event logs or text mail logs."""

    options_model = CiscoOptions
    reads = "files"
    collects = tuple(RAW)

    @classmethod
    def from_options(cls, name: str, options: CiscoOptions, base_dir: Path) -> Source:
        return cls(name, options, base_dir)

    def __init__(self, name: str, options: CiscoOptions, base_dir: Path) -> None:
        super().__init__(name)
        self.options = options
        self.base_dir = base_dir

    @property
    def paths(self) -> list[Path]:
        """The files the configured paths name now (logs rotate between runs)."""
        return list(dict.fromkeys(expand_paths(self.options.path, self.base_dir)))

    def _formats(self) -> list[tuple[Path, Format]]:
        """Every configured file that holds lines, with its format, in the order of
        their last modification (rotated files before the current one)."""
        found: list[tuple[float, str, Path, Format]] = []
        for path in self.paths:
            mtime, _ = _modified(path)
            fmt = self.options.format or detect_format(path)
            if self.options.format is not None:
                head_text(path, 1)  # readable, before any unit is read
            if fmt is not None:
                found.append((mtime, str(path), path, fmt))
        return [(path, fmt) for _, _, path, fmt in sorted(found)]

    def _units(self, hold_open: dt.timedelta | None, now: dt.datetime | None) -> list[ReadUnit]:
        files = self._formats()
        zone = self.options.timezone
        units: list[ReadUnit] = [ConsolidatedFile(p, zone) for p, f in files if f == "cef"]
        text = [p for p, f in files if f == "mail_logs"]
        if text:
            units.append(MailLogs(text, zone, hold_open, now=now))
        return units

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        if state is None:
            return self._units(None, None)  # an audit: every message, open or not
        return self._units(dt.timedelta(hours=self.options.hold_open_hours), state.started)

    def check(self) -> list[tuple[bool, str]]:
        paths = self.paths
        if not paths:
            return [(False, "no file matches the configured path")]
        try:
            files = self._formats()
        except InputError as exc:
            return [(False, str(exc))]
        kinds = Counter(fmt for _, fmt in files)
        described = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "all empty"
        return [(True, f"{len(paths)} file(s) readable, formats recognised: {described}")]
