"""Proofpoint on Demand (PoD) message log, read from the PoD Log API websocket (type
``proofpoint``).

The PoD Log API streams one JSON object per message over a secure websocket::

    wss://logstream.proofpoint.com:443/v1/stream?cid=<cluster id>&type=message
        &sinceTime=<ISO 8601>&toTime=<ISO 8601>
    Authorization: Bearer <API key>

What this module relies on, and where it comes from (public material only):

* Endpoint, ``cid`` and ``type=message``, bearer authentication: Elastic's
  ``proofpoint_on_demand`` integration (``data_stream/message/agent/stream/websocket.yml.hbs``:
  ``{{url}}/v1/stream?cid={{cluster_id}}&type=message``, ``auth.bearer_token``; its mock
  server answers 401 to a wrong bearer token) and Microsoft Sentinel's PoD function
  (``wss://logstream.proofpoint.com:443/v1/stream?cid=…&type=…&sinceTime=…&toTime=…`` with
  ``Authorization: Bearer``, reading one hour at a time).
* ``sinceTime``/``toTime`` as ISO 8601 UTC with a ``Z`` (Sekoia's PoD connector,
  ``format_datetime``); the archive reaches 30 days back and is served in hourly
  intervals (PoD Log API Rev C, Nov. 2020, as summarised by its public copies; Sekoia
  clamps ``sinceTime`` to 30 days; Cortex XSOAR rounds its backfill bounds to hours).
  Without ``toTime`` the API streams live; with it, the server closes the stream when
  ``toTime`` is reached. A key serves one session at a time (Rev C, "Connection Notes";
  XSOAR's "Known Limitations").
* Fields of a ``message`` record (Elastic's ``message`` data stream and its pipeline test
  records): ``ts`` (``2024-05-22T12:10:03.058340-0700``), ``guid``, ``envelope.from``,
  ``envelope.rcpts[]``, ``filter.disposition`` (``accept``, ``continue``, ``discard``,
  ``reject``, ``retry`` seen), ``filter.quarantine.folder`` (also present on delivered
  mail, e.g. ``{"rule": "audit", "folder": "Audit"}``: a copy kept, not a hold),
  ``filter.routeDirection``, ``msg.header["message-id"]`` (a list), ``msg.header.subject``,
  ``msg.sizeBytes``, ``filter.msgSizeBytes``, ``connection.ip`` and ``msgParts[]`` (file
  names, ``dataBase64`` and ``textExtracted`` of each body part and attachment).

A run reads from its bookmark minus an overlap up to the run's start, in windows of at
most ``window_hours`` aligned to whole hours; each window is one websocket session and one
read unit, committed with its end as the new bookmark, so a killed run resumes at the
last complete window. A window is complete only when the server closes the stream
normally (close code 1000). A dropped connection, an abnormal close or a silent stream is
reconnected (capped exponential back-off with jitter, tenacity) and the window read again
from its start; messages already read in this window are recognised by ``guid`` and
skipped (``repeated_message``). Overlap re-reads across windows and runs are counted once
by the store (keyed message id, sender and recipient).

Privacy: ``msgParts`` (bodies, file names, URLs) is cut out of each frame's text before
the JSON is decoded, so none of it ever becomes a Python object; of the rest only time,
envelope sender and recipients, disposition, quarantine folder, size, Message-ID and guid
are taken, inside the parse function. Subjects, header addresses and IPs are dropped
there. The API key is sent only in the ``Authorization`` header: it is never logged (the
websocket library's wire log, which would print headers and frames, is kept quiet), never
put in a URL and never in an error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import urlencode, urlsplit

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from compliance.errors import ComplianceError, ConfigError, RetriableSourceError, SourceError
from compliance.events import conform_raw, empty_raw, status_of
from compliance.secrets import SecretRef, no_inline_secret, resolve_path
from connectors.base import Chunk, PeriodRequired, ReadUnit, Source, SourceState
from connectors.common import retry_after
from connectors.textfile import iso_timestamps

log = logging.getLogger(__name__)
#: The websocket library logs request headers (the bearer token) and frame contents
#: (addresses) at DEBUG: its logger for our connections never does.
_WIRE = logging.getLogger(__name__ + ".wire")
_WIRE.setLevel(logging.WARNING)

ENDPOINT: Final = "wss://logstream.proofpoint.com:443/v1/stream"
FORMAT: Final = "pod-message-log"
#: How far back the PoD archive reaches, and the margin kept from its edge.
REACH: Final = dt.timedelta(days=30)
REACH_MARGIN: Final = dt.timedelta(minutes=30)
#: Rows per chunk (the house bound is about 65k).
CHUNK_ROWS: Final = 65_536
RETRY_STATUSES: Final = frozenset({409, 429, 500, 502, 503, 504})

Sleep = Callable[[float], None]
Data = str | bytes


# --- options ---------------------------------------------------------------------------
class ProofpointOptions(BaseModel):
    """Options of a ``proofpoint`` source: the PoD cluster, its log API key, how to read."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cluster_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="the PoD cluster id (cid), shown top right in the PoD admin console",
    )
    api_key: SecretRef = Field(
        description="the log API key Proofpoint issued for the cluster: {$env: NAME} or "
        "{$file: PATH} (a file only its owner may read)",
    )
    endpoint: str = Field(
        ENDPOINT, description="the log stream's wss:// URL (another one for a proxy or a test)"
    )
    ca_bundle: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's (proxies, tests)"
    )
    start_days: int = Field(7, ge=1, le=29, description="how far back the first run reads")
    window_hours: int = Field(
        1, ge=1, le=24, description="hours per websocket session and per commit"
    )
    overlap_minutes: int = Field(
        60, ge=0, le=1440, description="re-read this much before the bookmark each run"
    )
    timeout: float = Field(
        30.0, ge=1, le=600, description="seconds for the TLS and websocket handshake"
    )
    idle_seconds: float = Field(
        120.0,
        ge=1,
        le=3600,
        description="a stream silent this long is reconnected (or ends, with end_on_idle)",
    )
    end_on_idle: bool = Field(
        False,
        description="take a silent stream as the end of its window, for a server that "
        "does not close at toTime",
    )
    max_retries: int = Field(
        5, ge=0, le=20, description="reconnections per window after drops and 5xx answers"
    )
    spam_score: int | None = Field(
        None,
        ge=1,
        le=100,
        description="report delivered mail the spam module scored at least this (0-100) "
        "as filtered_as_spam; default: the disposition alone decides",
    )
    max_message_mb: int = Field(
        64, ge=1, le=1024, description="largest message frame accepted, in MiB"
    )

    _key = field_validator("api_key", mode="before")(no_inline_secret)

    @field_validator("endpoint")
    @classmethod
    def _wss(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "wss" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be a wss:// URL without a query")
        return value


# --- parsing -------------------------------------------------------------------------
class PodMessage(NamedTuple):
    """What is kept of one message record: no subject, no body, no IP."""

    ts: str | None
    sender: str | None
    recipients: list[str]
    status: str
    size: int | None
    message_id: str | None
    guid: str | None


#: From a position inside an array or object, everything up to the next bracket outside a
#: string, and that bracket. Possessive: no backtracking on hostile input.
_TO_BRACKET = re.compile(r'(?:[^"\[\]{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+([\[\]{}])')
_SCALAR = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^,}\]\s]++')
_BLANK = " \t\r\n"


def _skip_blanks(text: str, at: int) -> int:
    while at < len(text) and text[at] in _BLANK:
        at += 1
    return at


def _value_end(text: str, start: int) -> int | None:
    """Where the JSON value starting at ``start`` ends, its strings skipped unread."""
    if start < len(text) and text[start] in "[{":
        depth, at = 0, start
        while (found := _TO_BRACKET.match(text, at)) is not None:
            at = found.end()
            depth += 1 if found.group(1) in "[{" else -1
            if depth == 0:
                return at
        return None
    scalar = _SCALAR.match(text, start)
    return scalar.end() if scalar is not None else None


def without_parts(text: str) -> str | None:
    """``text`` with the value of every ``msgParts`` key replaced by ``null``, before any
    decoding (its strings never become Python objects); None if the value never ends.

    Only a real key is cut: inside a JSON string every quote is escaped, so a quoted
    ``"msgParts"`` preceded by ``{`` or ``,`` and followed by ``:`` is a key."""
    at = text.find('"msgParts"')
    while at >= 0:
        before = at - 1
        while before >= 0 and text[before] in _BLANK:
            before -= 1
        colon = _skip_blanks(text, at + 10)
        if before < 0 or text[before] not in "{," or text[colon : colon + 1] != ":":
            at = text.find('"msgParts"', at + 10)
            continue
        start = _skip_blanks(text, colon + 1)
        end = _value_end(text, start)
        if end is None:
            return None
        text = text[:start] + "null" + text[end:]
        at = text.find('"msgParts"', start + 4)
    return text


#: Dispositions (``filter.disposition``) and the status each gives. ``discard`` with a
#: quarantine folder is a message held in the quarantine (releasable): ``quarantined``.
_DISPOSITIONS: Final[dict[str, str]] = {
    "accept": "delivered",
    "continue": "delivered",
    "deliver": "delivered",
    "quarantine": "quarantined",
    "discard": "filtered_as_spam",
    "reject": "rejected",
    "retry": "deferred",
    "tempfail": "deferred",
    "defer": "deferred",
    "bounce": "bounced",
}


def disposition_status(disposition: object, quarantine_folder: object) -> str:
    """The normalised status of a message from its disposition and quarantine folder.

    ``continue``/``accept`` is delivered even when a copy went to a quarantine folder (the
    ``Audit`` copy of delivered mail); ``discard`` is ``quarantined`` when a folder holds
    the message, else ``filtered_as_spam``; anything else goes through
    :func:`compliance.events.status_of`.
    """
    if not isinstance(disposition, str):
        return "unknown"
    key = disposition.strip().lower()
    status = _DISPOSITIONS.get(key)
    if status is None:
        return status_of(key)
    if key == "discard" and isinstance(quarantine_folder, str) and quarantine_folder.strip():
        return "quarantined"
    return status


def _first_text(value: object) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _size(*values: object) -> int | None:
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, float) and value >= 0 and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
    return None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _spam_score(filt: dict[str, Any]) -> int | None:
    modules = _object(filt.get("modules"))
    overall = _object(_object(modules.get("spam")).get("scores")).get("overall")
    return _size(overall)


def parse_frame(frame: Data, spam_score: int | None = None) -> PodMessage | str:
    """One websocket frame as a :class:`PodMessage`, or the reason it is refused
    (``malformed_json``, ``not_a_message``). Never raises for a bad frame.

    With ``spam_score``, a delivered message whose spam module scored it at least that
    (``filter.modules.spam.scores.overall``, 0 to 100) is ``filtered_as_spam``."""
    if isinstance(frame, bytes | bytearray | memoryview):
        try:
            frame = bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            return "malformed_json"
    text = without_parts(frame)
    if text is None:
        return "malformed_json"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return "malformed_json"
    if not isinstance(record, dict):
        return "malformed_json"
    envelope = record.get("envelope")
    if not isinstance(envelope, dict) or "rcpts" not in envelope:
        return "not_a_message"
    rcpts = envelope.get("rcpts")
    found = rcpts if isinstance(rcpts, list) else [rcpts]
    recipients = list(dict.fromkeys(r.strip() for r in found if isinstance(r, str) and r.strip()))
    sender = envelope.get("from")
    filt = _object(record.get("filter"))
    msg = _object(record.get("msg"))
    header = _object(msg.get("header"))
    guid = record.get("guid")
    guid = guid if isinstance(guid, str) and guid else None
    ts = record.get("ts")
    status = disposition_status(
        filt.get("disposition"), _object(filt.get("quarantine")).get("folder")
    )
    if status == "delivered" and spam_score is not None:
        score = _spam_score(filt)
        if score is not None and score >= spam_score:
            status = "filtered_as_spam"
    return PodMessage(
        ts=ts if isinstance(ts, str) else None,
        sender=sender.strip() if isinstance(sender, str) and sender.strip() else None,
        recipients=recipients,
        status=status,
        size=_size(msg.get("sizeBytes"), filt.get("msgSizeBytes")),
        message_id=_first_text(header.get("message-id")) or guid,
        guid=guid,
    )


@dataclass
class _Rows:
    """Rows of parsed messages, column by column, until a chunk is built."""

    ts: list[str | None] = field(default_factory=list)
    sender: list[str | None] = field(default_factory=list)
    recipient: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    size: list[int | None] = field(default_factory=list)
    message_id: list[str | None] = field(default_factory=list)

    def add(self, message: PodMessage) -> None:
        n = len(message.recipients)
        self.ts += [message.ts] * n
        self.sender += [message.sender] * n
        self.recipient += message.recipients
        self.status += [message.status] * n
        self.size += [message.size] * n
        self.message_id += [message.message_id] * n

    def __len__(self) -> int:
        return len(self.recipient)

    def frame(self, begin: dt.datetime, end: dt.datetime) -> tuple[pd.DataFrame, int]:
        """The rows as a raw frame of the window ``[begin, end)`` (rows without a valid
        time are kept: the pipeline rejects them); and how many fell outside."""
        if not self.recipient:
            return empty_raw(), 0
        frame = pd.DataFrame(
            {
                "timestamp": iso_timestamps(pd.Series(self.ts, dtype="string")),
                "sender": pd.Series(self.sender, dtype="string"),
                "recipient": pd.Series(self.recipient, dtype="string"),
                "status": pd.Series(self.status, dtype="string"),
                "size": pd.Series(self.size, dtype="Int64"),
                "message_id": pd.Series(self.message_id, dtype="string"),
            }
        )
        stamps = frame["timestamp"]
        inside = stamps.isna() | ((stamps >= begin) & (stamps < end))
        outside = int((~inside).sum())
        frame = frame.loc[inside] if outside else frame
        return conform_raw(frame.reset_index(drop=True)), outside


# --- the log stream --------------------------------------------------------------------
def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _short(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Transient(Exception):
    """A failure worth another attempt (the message names no content)."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


@dataclass
class _Session:
    """The connection of one window, and what happened to it."""

    begin: dt.datetime
    end: dt.datetime
    ws: ClientConnection | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    drops: int = 0
    last: str = ""

    @property
    def label(self) -> str:
        return f"{_short(self.begin)}/{_short(self.end)}"

    def close(self) -> None:
        self.ws = None
        with contextlib.suppress(OSError):  # already gone
            self.stack.close()


class PodClient:
    """Sessions of one cluster's log stream: TLS, bearer key, reconnection."""

    def __init__(
        self, name: str, options: ProofpointOptions, base_dir: Path, sleep: Sleep = time.sleep
    ) -> None:
        self.name = name
        self.options = options
        self.base_dir = base_dir
        self.sleep = sleep
        self.connections = 0
        self._key: str | None = None
        self.context = ssl.create_default_context()
        if options.ca_bundle:  # instead of the system's CAs
            bundle = resolve_path(options.ca_bundle, base_dir)
            if not bundle.is_file():
                raise ConfigError(f"source {name!r}: ca_bundle {bundle} does not exist")
            try:
                self.context = ssl.create_default_context(cafile=str(bundle))
            except (OSError, ssl.SSLError):
                raise ConfigError(
                    f"source {name!r}: ca_bundle {bundle} holds no PEM certificate"
                ) from None
        self.host = urlsplit(options.endpoint).hostname or "?"

    def key(self) -> str:
        """The API key (resolved once; a clear ConfigError when it is missing)."""
        if self._key is None:
            self._key = self.options.api_key.resolve(
                self.base_dir, f"source {self.name!r}: api_key"
            )
        return self._key

    def url(self, begin: dt.datetime, end: dt.datetime) -> str:
        """The stream URL of one window (both bounds: the server closes at ``toTime``)."""
        query = {
            "cid": self.options.cluster_id,
            "type": "message",
            "sinceTime": _iso(begin),
            "toTime": _iso(end),
        }
        return f"{self.options.endpoint}?{urlencode(query, safe=':')}"

    # --- one connection -------------------------------------------------------------
    def _open(self, session: _Session) -> ClientConnection:
        """Open the stream of a window (closed with the session): fatal problems raise
        SourceError, others _Transient."""
        self.connections += 1
        try:
            connection = connect(
                self.url(session.begin, session.end),
                ssl=self.context,
                additional_headers={"Authorization": f"Bearer {self.key()}"},
                open_timeout=self.options.timeout,
                close_timeout=min(self.options.timeout, 10.0),
                max_size=self.options.max_message_mb << 20,
                max_queue=64,
                logger=_WIRE,
            )
            return session.stack.enter_context(connection)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in RETRY_STATUSES:
                log.info("source %s: the log API answered %d; will retry", self.name, status)
                hint = " (another session uses the key)" if status == 409 else ""
                raise _Transient(f"HTTP {status}{hint}", retry_after(exc.response)) from None
            raise SourceError(self.explain(status)) from None
        except ssl.SSLCertVerificationError:
            raise SourceError(
                f"source {self.name!r}: the TLS certificate of {self.host} is not trusted "
                "(set ca_bundle if a proxy or a private CA is in the way)"
            ) from None
        except InvalidURI:
            raise SourceError(f"source {self.name!r}: endpoint is not a valid URL") from None
        except TimeoutError:
            raise _Transient(f"no handshake within {self.options.timeout:g} s") from None
        except (OSError, InvalidHandshake, ConnectionClosed) as exc:
            raise _Transient(f"connection failed ({type(exc).__name__})") from None

    def explain(self, status: int) -> str:
        """What a refused handshake means and which option to fix (never the key)."""
        head = f"source {self.name!r}: the PoD log API at {self.host} answered HTTP {status}."
        if status in (401, 403):
            return head + (
                " It refused the key: check api_key (the log API token Proofpoint issued "
                f"for this cluster, not an admin password) and cluster_id "
                f"({self.options.cluster_id!r}, shown top right in the PoD admin console); "
                "the log API also needs its licence enabled for the cluster."
            )
        if status == 404:
            return head + " Check endpoint (…/v1/stream)."
        if status == 400:
            return head + (
                " It refused the query: check cluster_id; the archive reaches 30 days back."
            )
        return head

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(wait_exponential_jitter(initial=1, max=30, jitter=1)(state))

    def _drop(self, session: _Session, what: str) -> _Transient:
        session.close()
        session.drops += 1
        session.last = what
        log.info(
            "source %s: the stream of window %s %s; reconnecting (%d)",
            self.name,
            session.label,
            what,
            session.drops,
        )
        return _Transient(what)

    def _receive_once(self, session: _Session) -> Data | None:
        if session.ws is None:
            if session.drops > self.options.max_retries:
                raise RetriableSourceError(
                    f"source {self.name!r}: the log stream of window {session.label} was "
                    f"interrupted {session.drops} times (last: it {session.last}); the next "
                    "run reads it again"
                )
            session.ws = self._open(session)
        return self._recv(session, session.ws)

    def _recv(self, session: _Session, ws: ClientConnection) -> Data | None:
        try:
            return ws.recv(timeout=self.options.idle_seconds)
        except TimeoutError:
            if self.options.end_on_idle:
                log.info(
                    "source %s: window %s silent for %g s: taken as complete (end_on_idle)",
                    self.name,
                    session.label,
                    self.options.idle_seconds,
                )
                session.close()
                return None
            raise self._drop(session, f"sent nothing for {self.options.idle_seconds:g} s") from None
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CloseCode.NORMAL_CLOSURE:
                session.close()
                return None
            what = (
                f"was closed with code {int(exc.rcvd.code)}" if exc.rcvd is not None else "was cut"
            )
            raise self._drop(session, what) from None

    def receive(self, session: _Session) -> Data | None:
        """The window's next frame; None once the server has closed the stream normally.

        A drop reconnects and reads the window again from its start (the caller skips
        what it has read); 5xx and 429 handshake answers are retried with back-off.
        """
        if session.ws is not None:
            try:  # the usual case, without the cost of the retry machinery per frame
                return self._recv(session, session.ws)
            except _Transient:
                pass  # dropped (and counted): reconnect under the retry policy
        retrying = Retrying(
            stop=stop_after_attempt(self.options.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._receive_once(session)
        except _Transient as exc:
            session.close()
            raise RetriableSourceError(
                f"source {self.name!r}: the PoD log API at {self.host} still failing after "
                f"{self.options.max_retries + 1} attempts ({exc}); the next run reads window "
                f"{session.label} again"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def probe(self, begin: dt.datetime, end: dt.datetime, limit: float) -> int:
        """Open the stream of a window and discard what comes within ``limit`` seconds
        (for ``check``): how many frames came, none of them read."""
        session = _Session(begin, end)
        retrying = Retrying(
            stop=stop_after_attempt(min(self.options.max_retries, 2) + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )
        frames = 0
        deadline = time.monotonic() + limit
        try:
            ws = retrying(self._open, session)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ws.recv(timeout=left)
                except (TimeoutError, ConnectionClosed):
                    break
                frames += 1
        except _Transient as exc:
            raise RetriableSourceError(
                f"source {self.name!r}: the PoD log API at {self.host} is not reachable ({exc})"
            ) from None
        finally:
            session.close()
        return frames


# --- units and the source ----------------------------------------------------------------
class StreamWindow(ReadUnit):
    """One window of the message log, read in one websocket session."""

    format = FORMAT
    once = False
    distributable = False

    def __init__(self, client: PodClient, begin: dt.datetime, end: dt.datetime) -> None:
        self.client = client
        self.begin = begin
        self.end = end
        self.key = f"{_short(begin)}/{_short(end)}"
        self.bookmark = _short(end)

    def chunks(self) -> Iterator[Chunk]:
        session = _Session(self.begin, self.end)
        rows = _Rows()
        rejected: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        seen: set[int] = set()  # hashes of the guids read in this window
        messages = 0
        try:
            while (frame := self.client.receive(session)) is not None:
                parsed = parse_frame(frame, self.client.options.spam_score)
                del frame
                if isinstance(parsed, str):
                    rejected[parsed] += 1
                    continue
                if parsed.guid is not None:
                    mark = hash(parsed.guid)
                    if mark in seen:
                        skipped["repeated_message"] += len(parsed.recipients)
                        continue
                    seen.add(mark)
                if not parsed.recipients:
                    rejected["no_recipient"] += 1
                    continue
                messages += 1
                rows.add(parsed)
                if len(rows) >= CHUNK_ROWS:
                    yield self._chunk(rows, rejected, skipped)
                    rows, rejected, skipped = _Rows(), Counter(), Counter()
        finally:
            session.close()
        yield self._chunk(rows, rejected, skipped)
        log.info(
            "source %s: window %s read: %d message(s), %d reconnection(s)",
            self.client.name,
            self.key,
            messages,
            session.drops,
        )

    def _chunk(self, rows: _Rows, rejected: Counter[str], skipped: Counter[str]) -> Chunk:
        frame, outside = rows.frame(self.begin, self.end)
        if outside:
            skipped["outside_window"] += outside
        return Chunk(frame, rejected, skipped)


def _parse_bookmark(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def split_windows(
    begin: dt.datetime, end: dt.datetime, size: dt.timedelta
) -> list[tuple[dt.datetime, dt.datetime]]:
    """``[begin, end)`` cut at the multiples of ``size`` (whole hours, UTC) between them."""
    step = int(size.total_seconds())
    out = []
    while begin < end:
        seconds = int(begin.timestamp())
        cut = dt.datetime.fromtimestamp((seconds // step + 1) * step, dt.UTC)
        stop = min(cut, end)
        out.append((begin, stop))
        begin = stop
    return out


class ProofpointSource(Source):
    """The message log of one Proofpoint on Demand cluster."""

    options_model = ProofpointOptions
    reads = "stream"
    collects = ("timestamp", "sender", "recipient", "status", "size", "message_id")

    @classmethod
    def from_options(cls, name: str, options: ProofpointOptions, base_dir: Path) -> Source:
        return cls(name, options, base_dir)

    def __init__(
        self,
        name: str,
        options: ProofpointOptions,
        base_dir: Path,
        client: PodClient | None = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self.client = client or PodClient(name, options, base_dir)

    def plan(self, state: SourceState) -> tuple[dt.datetime, dt.datetime]:
        """The range a run reads: bookmark minus overlap (or the first backfill) to the start."""
        now = state.started.astimezone(dt.UTC).replace(microsecond=0)
        oldest = now - REACH + REACH_MARGIN
        if state.bookmark is None:
            return now - dt.timedelta(days=self.options.start_days), now
        mark = _parse_bookmark(state.bookmark)
        if mark < oldest:
            raise SourceError(
                f"source {self.name!r}: the last complete read ended {_short(mark)}, longer "
                f"ago than the 30 days the PoD log archive keeps: messages from {_short(mark)} "
                f"to {_short(oldest)} can no longer be fetched. Run `compliance sources reset "
                f"{self.name}` to continue with what the archive still keeps."
            )
        return max(mark - dt.timedelta(minutes=self.options.overlap_minutes), oldest), now

    def windows(self, begin: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[StreamWindow]:
        """Read units for ``[begin, end)``; refused when it reaches past the 30-day archive."""
        if begin < now - REACH:
            raise SourceError(
                f"source {self.name!r}: {_short(begin)} is more than 30 days before "
                f"{_short(now)}; the PoD log archive keeps 30 days"
            )
        self.client.key()  # a missing key fails before any unit is read
        size = dt.timedelta(hours=self.options.window_hours)
        return [StreamWindow(self.client, b, e) for b, e in split_windows(begin, end, size)]

    def units_between(
        self, begin: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
    ) -> list[ReadUnit]:
        if begin is None:
            raise PeriodRequired("the PoD log archive keeps 30 days")
        return list(self.windows(begin, min(end, now) if end is not None else now, now))

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        state = state or SourceState(None, dt.datetime.now(dt.UTC))
        begin, end = self.plan(state)
        return list(self.windows(begin, end, state.started))

    def check(self) -> list[tuple[bool, str]]:
        try:
            self.client.key()
        except ComplianceError as exc:
            return [(False, str(exc))]
        results = [(True, "api_key resolved")]
        now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        try:
            frames = self.client.probe(
                now - dt.timedelta(minutes=2), now - dt.timedelta(minutes=1), self.options.timeout
            )
        except ComplianceError as exc:
            results.append((False, str(exc)))
        else:
            results.append(
                (
                    True,
                    f"log stream of cluster {self.options.cluster_id} at {self.client.host} "
                    f"reachable: a one-minute window opened, {frames} frame(s) discarded unread",
                )
            )
        return results
