"""Delivery of alert events to a SIEM over syslog: CEF or JSON, RFC 5424, TLS, TCP or UDP.

A :class:`~compliance.delivery.Message` carries one event per new, updated or ended alert
(``message.events``; a broad report has none). Each event becomes one RFC 5424 message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [compliance@32473 eventId="…" alertId="…"] MSG

- PRI is ``facility * 8 + severity`` (RFC 5424 §6.2.1): the configured facility (default
  ``local0``) and the alert's severity (critical → 2 crit, high → 3 err, medium → 4
  warning, low → 5 notice).
- TIMESTAMP is the sending time, UTC, in milliseconds; HOSTNAME this machine's name (or
  ``hostname``); APP-NAME ``app_name``; PROCID this process's id; MSGID the kind of
  message (``alert-new``, ``alert-updated``, ``alert-ended``: RFC 5424 §6.2.7, the type
  of message).
- The structured data ``compliance@32473`` holds the event id and the alert's id. 32473 is
  the Private Enterprise Number that RFC 5612 reserves for documentation; RFC 5424 §7.2.2
  names private SD-IDs ``name@<PEN>``.
- MSG is the event in CEF (:func:`cef`) or as one JSON object (:func:`json_event`): UTF-8,
  without the byte-order mark RFC 5424 §6.4 asks for, because collectors' CEF parsers
  expect ``CEF:`` right at the start of MSG (the JSON form is plain ASCII anyway).

The event id is derived from the message's idempotency key (:meth:`Message.digest`) and
the alert's id: a batch sent again after a crash or a dropped connection carries the same
ids, so that the SIEM can drop the copies (CEF ``externalId``, JSON ``event_id``, the
structured data's ``eventId``).

Transports: ``tls`` (RFC 5425: TLS 1.2 or later, the server's certificate and name
verified against the system's CAs or ``ca_bundle``), ``tcp`` (the same octet-counting
framing, ``LEN SP MSG``, RFC 6587 §3.4.1, in clear text) and ``udp`` (RFC 5426: one
datagram per message, in clear text, with no delivery guarantee: a collector that is down
or drops a datagram is not noticed). The two clear-text transports are allowed to a
loopback host only (a forwarder on this machine: rsyslog, syslog-ng, the SIEM's agent), as
the SMTP channel refuses clear text over a network: the events name org units, domains
and categories.

Syslog has no acknowledgement: over TLS and TCP, a batch the server's socket accepted is
delivered. A connection that fails part-way raises
:class:`~compliance.errors.RetriableDeliveryError`, and the retry sends the whole batch
again under the same event ids.

Only the fields of :data:`EVENT_FIELDS` leave this machine; any other key of an event (a
pseudonym, an address) is dropped, its name logged. Errors and log lines name the
channel, host, port and counts, never an event's content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from compliance import __version__
from compliance.deliveries.net import connection_failure, tls_context
from compliance.deliveries.smtp import is_loopback
from compliance.delivery import Delivery, Message
from compliance.errors import DeliveryError, RetriableDeliveryError

log = logging.getLogger(__name__)

#: The port each transport uses when none is configured (RFC 5425 §4.1; RFC 5426 §3.3).
DEFAULT_PORTS: Mapping[str, int] = {"tls": 6514, "tcp": 514, "udp": 514}
#: RFC 5424 §6.2.1 facility codes, by their usual names.
FACILITIES: Mapping[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
Facility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7",
]  # fmt: skip
#: An alert's severity as RFC 5424 §6.2.1 severity: crit, err, warning, notice.
SYSLOG_SEVERITY: Mapping[str, int] = {"critical": 2, "high": 3, "medium": 4, "low": 5}
#: An alert's severity on CEF's 0-10 scale (0-3 low, 4-6 medium, 7-8 high, 9-10 very high).
CEF_SEVERITY: Mapping[str, int] = {"critical": 10, "high": 8, "medium": 5, "low": 3}
#: A severity this version does not know (never expected): notice, and CEF medium.
UNKNOWN_SEVERITY = (5, 5)
#: The structured data's SD-ID: 32473 is the Private Enterprise Number reserved for
#: documentation (RFC 5612).
SD_ID = "compliance@32473"
PRODUCT = "compliance-monitor"
#: The largest datagram UDP over IPv4 carries; RFC 5426 §3.2 asks receivers to take 2048
#: octets, and larger ones may be truncated on the way.
MAX_DATAGRAM = 65507
#: The CEF specification the escaping and the extension keys follow (its sections
#: "Character Encoding" and "ArcSight Extension Dictionary").
CEF_SPEC = "Micro Focus, Implementing ArcSight Common Event Format (CEF), version 25, 2017"
#: What an event may carry to the SIEM, in this order (anything else is dropped).
EVENT_FIELDS = (
    "alert_id", "change", "severity", "policy", "rule", "rule_id", "state", "org_unit",
    "messages", "people", "days", "domains", "categories", "first_day", "last_day",
    "trigger_day", "report_period",
)  # fmt: skip

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_PRINTUSASCII = re.compile(r"^[\x21-\x7e]+$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SyslogOptions(BaseModel):
    """Options of a syslog delivery to a SIEM (``type: syslog``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str = Field(description="the syslog server (collector): a host name or an IP address")
    port: int | None = Field(
        None, ge=1, le=65535, description="its port; default 6514 with tls, 514 with tcp and udp"
    )
    transport: Literal["tls", "tcp", "udp"] = Field(
        "tls",
        description="tls (RFC 5425, verified certificate), tcp (clear text, octet-counted "
        "frames) or udp (clear text, one datagram per event, no delivery guarantee); tcp "
        "and udp to a loopback host only",
    )
    format: Literal["cef", "json"] = Field(
        "cef", description="cef (ArcSight Common Event Format) or json (one JSON object)"
    )
    facility: Facility = Field(
        "local0", description="the syslog facility of every message (kern … local7)"
    )
    ca_bundle: str | None = Field(
        None,
        description="with tls, a PEM file of CAs to trust instead of the system's (relative "
        "to the config file)",
    )
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per network operation")
    app_name: str = Field(
        PRODUCT, description="the APP-NAME of every message (printable ASCII, at most 48)"
    )
    hostname: str | None = Field(
        None,
        description="the HOSTNAME of every message (printable ASCII, at most 255); default: "
        "this machine's name",
    )

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: object) -> object:
        if isinstance(value, str) and not is_loopback(value) and not _HOST.match(value):
            try:
                ipaddress.ip_address(value.strip("[]"))
            except ValueError:
                raise PydanticCustomError(
                    "host", "must be a host name or an IP address (no scheme, no port)"
                ) from None
        return value

    @field_validator("transport")
    @classmethod
    def _clear_only_on_loopback(cls, value: str, info: ValidationInfo) -> str:
        host = info.data.get("host")
        if value != "tls" and isinstance(host, str) and not is_loopback(host):
            raise PydanticCustomError(
                "clear_text",
                "{transport} (no encryption) is allowed only to a loopback host (a forwarder "
                "on this machine: localhost, 127.0.0.1, ::1), never over a network: use tls",
                {"transport": value},
            )
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _bundle_with_tls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("transport", "tls") != "tls":
            raise PydanticCustomError("ca_bundle", "applies to transport tls only")
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not _PRINTUSASCII.match(value) or len(value) > 48:
            raise PydanticCustomError(
                "app_name", "must be 1 to 48 printable ASCII characters, without spaces"
            )
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and (not _PRINTUSASCII.match(value) or len(value) > 255):
            raise PydanticCustomError(
                "hostname", "must be 1 to 255 printable ASCII characters, without spaces"
            )
        return value

    @property
    def resolved_port(self) -> int:
        """The configured port, or the transport's usual one."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.transport]


# --- the events -------------------------------------------------------------------------
def event_ids(message: Message) -> list[str]:
    """Each event's id: 32 hex digits of SHA-256 over the message's digest and the alert's
    id (its index when it has none), the same for every attempt of the message."""
    digest = message.digest()
    seen: dict[str, int] = {}
    ids = []
    for i, event in enumerate(message.events):
        alert = event.get("alert_id")
        ident = f"alert {alert}" if alert is not None else f"index {i}"
        seen[ident] = seen.get(ident, 0) + 1
        if seen[ident] > 1:  # the same alert twice in one message: still distinct ids
            ident = f"{ident} #{seen[ident]}"
        ids.append(hashlib.sha256(f"{digest}\n{ident}".encode()).hexdigest()[:32])
    return ids


def kept(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's fields that may leave this machine (:data:`EVENT_FIELDS`), in order."""
    return {k: event.get(k) for k in EVENT_FIELDS}


def _clean(text: str) -> str:
    """``text`` without control characters other than line breaks (each becomes a space)."""
    return (
        "".join(c if c in "\r\n" or unicodedata.category(c) != "Cc" else " " for c in text)
        .replace("\u2028", " ")
        .replace("\u2029", " ")
    )


def cef_header(value: object) -> str:
    """A CEF header field: ``\\`` and ``|`` escaped with a backslash; no line break may be
    in a header, so each becomes a space.

    (:data:`CEF_SPEC`, "Character Encoding": in the prefix, a pipe is escaped as
    ``\\|`` and a backslash as ``\\\\``; multi-line values are allowed in the extension
    only.)"""
    text = _clean(str(value)).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return text.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(value: object) -> str:
    """A CEF extension value: ``\\`` and ``=`` escaped with a backslash, line breaks
    written ``\\n`` and ``\\r``; a pipe needs no escape there.

    (:data:`CEF_SPEC`, "Character Encoding": in the extension, a backslash is
    ``\\\\``, an equal sign ``\\=``, and a multi-line value uses ``\\n`` or ``\\r``; spaces
    are not escaped.)"""
    text = _clean(str(value)).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _day_ms(day: object, end: bool = False) -> int | None:
    """A ``YYYY-MM-DD`` day as milliseconds since the epoch: its start, or with ``end``
    its last millisecond, UTC (CEF timestamps: ``MMM dd yyyy HH:mm:ss`` or milliseconds
    since the epoch)."""
    if not isinstance(day, str) or not _DAY.match(day):
        return None
    try:
        start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    ms = int(start.timestamp() * 1000)
    return ms + 86_399_999 if end else ms


def _period(value: object) -> str | None:
    """The report period as an ISO 8601 interval, ``first/last``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        parts = [str(v) for v in value if v is not None]
        return "/".join(parts) if parts else None
    return None if value is None else str(value)


def _listed(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)
    return str(value)


def _severities(severity: object) -> tuple[int, int]:
    """(syslog severity, CEF severity) of an alert's severity."""
    name = str(severity).lower()
    if name in SYSLOG_SEVERITY:
        return SYSLOG_SEVERITY[name], CEF_SEVERITY[name]
    return UNKNOWN_SEVERITY


def cef(event: Mapping[str, Any], event_id: str, now: dt.datetime) -> str:
    """The event in CEF::

    CEF:0|compliance-monitor|compliance-monitor|VERSION|POLICY/RULE_ID|NAME|SEVERITY|EXTENSION

    NAME is ``CHANGE RULE alert: POLICY RULE_ID``; SEVERITY 3, 5, 8 or 10 for low, medium,
    high, critical. The extension: externalId (the event id), rt (sending time), act
    (new, updated, ended), cat (person, cluster), start and end (the alert's first day's
    start and last day's end, UTC), cs1 policy, cs2 ruleId, cs3 orgUnit, cs4 domains and
    cs5 categories (comma-separated), cs6 alertId, cn1 messages, cn2 people (absent when
    withheld), cn3 days, flexString1 state, flexString2 reportPeriod (``first/last``),
    flexDate1 triggerDay, msg (a sentence); each custom field with its label. A field the
    event lacks is left out with its label.
    """
    e = kept(event)
    change = e["change"] or "new"
    name = f"{change} {e['rule'] or ''} alert: {e['policy']} {e['rule_id']}".replace("  ", " ")
    header = [
        "CEF:0",
        PRODUCT,
        PRODUCT,
        __version__,
        f"{e['policy']}/{e['rule_id']}",
        name,
        str(_severities(e["severity"])[1]),
    ]
    # Keys of the CEF extension dictionary (CEF_SPEC, "ArcSight Extension Dictionary"):
    # externalId (an id from the originating device, at most 40 characters), rt
    # (receiptTime), start/end (startTime/endTime; milliseconds since the epoch), act
    # (deviceAction), cat (deviceEventCategory), msg, csN/csNLabel (deviceCustomStringN),
    # cnN/cnNLabel (deviceCustomNumberN), flexStringN/flexStringNLabel, flexDate1/Label.
    pairs: list[tuple[str, object]] = [
        ("externalId", event_id),
        ("rt", int(now.timestamp() * 1000)),
        ("act", change),
        ("cat", e["rule"]),
        ("start", _day_ms(e["first_day"])),
        ("end", _day_ms(e["last_day"], end=True)),
        ("cs1Label", "policy"),
        ("cs1", e["policy"]),
        ("cs2Label", "ruleId"),
        ("cs2", e["rule_id"]),
        ("cs3Label", "orgUnit"),
        ("cs3", e["org_unit"]),
        ("cs4Label", "domains"),
        ("cs4", _listed(e["domains"])),
        ("cs5Label", "categories"),
        ("cs5", _listed(e["categories"])),
        ("cs6Label", "alertId"),
        ("cs6", e["alert_id"]),
        ("cn1Label", "messages"),
        ("cn1", e["messages"]),
        ("cn2Label", "people"),
        ("cn2", e["people"]),
        ("cn3Label", "days"),
        ("cn3", e["days"]),
        ("flexString1Label", "state"),
        ("flexString1", e["state"]),
        ("flexString2Label", "reportPeriod"),
        ("flexString2", _period(e["report_period"])),
        ("flexDate1Label", "triggerDay"),
        ("flexDate1", _day_ms(e["trigger_day"])),
        ("msg", _summary(e)),
    ]
    present = {k for k, v in pairs if v is not None and not k.endswith("Label")}
    extension = " ".join(
        f"{k}={cef_value(v)}"
        for k, v in pairs
        if v is not None and (not k.endswith("Label") or k.removesuffix("Label") in present)
    )
    return "|".join([*header[:1], *(cef_header(h) for h in header[1:]), extension])


def _summary(e: Mapping[str, Any]) -> str:
    """The event in a sentence (CEF ``msg``)."""
    people = "withheld" if e["people"] is None else e["people"]
    return (
        f"{e['change'] or 'new'} {e['severity']} alert {e['alert_id']} (policy "
        f"{e['policy']}, rule {e['rule_id']}): messages {e['messages']}, people {people}, "
        f"days {e['days']}, {e['first_day']} to {e['last_day']}"
    )


def json_event(event: Mapping[str, Any], event_id: str) -> str:
    """The event as one JSON object on one line, ASCII only: ``event_id``, ``product``,
    ``version``, then :data:`EVENT_FIELDS` (null when the event lacks one; ``people`` null
    when withheld)."""
    e = kept(event)
    body = {"event_id": event_id, "product": PRODUCT, "version": __version__, **e}
    if isinstance(body["report_period"], Sequence) and not isinstance(body["report_period"], str):
        body["report_period"] = list(body["report_period"])
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str)


def _sd_value(value: object) -> str:
    """An SD-PARAM value: ``"``, ``\\`` and ``]`` escaped (RFC 5424 §6.3.3)."""
    text = _clean(str(value)).replace("\r", " ").replace("\n", " ")
    return re.sub(r'(["\\\]])', r"\\\1", text)


def _header_field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable ASCII without spaces, else ``-`` (NILVALUE)."""
    return value if _PRINTUSASCII.match(value) and len(value) <= limit else "-"


# --- the channel ------------------------------------------------------------------------
class Syslog(Delivery):
    """Sends each event of a message as one syslog message to a SIEM's collector."""

    name: ClassVar[str] = "syslog"
    options_model: ClassVar[type[BaseModel]] = SyslogOptions
    destination: ClassVar[tuple[str, ...]] = ("host", "port", "transport")

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        if not isinstance(options, SyslogOptions):
            raise TypeError(f"syslog delivery {name!r} needs SyslogOptions")
        super().__init__(name, options, base_dir)
        self.settings = options

    @property
    def where(self) -> str:
        """The channel and collector, as every message about it starts."""
        s = self.settings
        return f"syslog delivery {self.channel!r} ({s.transport} {s.host}:{s.resolved_port})"

    # --- the messages --------------------------------------------------------------------
    def records(self, message: Message, now: dt.datetime | None = None) -> list[bytes]:
        """The RFC 5424 message of each event, encoded (not yet framed)."""
        s = self.settings
        now = now or dt.datetime.now(dt.UTC)
        stamp = now.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        host = _header_field(s.hostname or socket.gethostname(), 255)
        procid = str(os.getpid())
        facility = FACILITIES[s.facility]
        dropped: set[str] = set()
        out = []
        for event, event_id in zip(message.events, event_ids(message), strict=True):
            if not isinstance(event, Mapping):
                raise DeliveryError(f"{self.where}: an event is not a mapping")
            dropped.update(str(k) for k in event if k not in EVENT_FIELDS)
            severity = _severities(event.get("severity"))[0]
            change = str(event.get("change") or "new")
            msgid = _header_field(f"alert-{change}", 32)
            sd = f'[{SD_ID} eventId="{event_id}"'
            if event.get("alert_id") is not None:
                sd += f' alertId="{_sd_value(event["alert_id"])}"'
            sd += "]"
            body = cef(event, event_id, now) if s.format == "cef" else json_event(event, event_id)
            line = f"<{facility * 8 + severity}>1 {stamp} {host} {s.app_name} {procid} {msgid} "
            out.append(f"{line}{sd} {body}".encode())
        if dropped:
            log.warning(
                "%s: event fields not sent (not among the documented ones): %s",
                self.where,
                ", ".join(sorted(dropped)),
            )
        return out

    # --- sending -------------------------------------------------------------------------
    def deliver(self, message: Message) -> str:
        s = self.settings
        endpoint = f"{s.host}:{s.resolved_port}"
        if not message.events:
            return f"0 events: nothing sent to {endpoint}"
        records = self.records(message)
        if s.transport == "udp":
            too_long = [i for i, r in enumerate(records) if len(r) > MAX_DATAGRAM]
            if too_long:
                raise DeliveryError(
                    f"{self.where}: event {too_long[0] + 1} is {len(records[too_long[0]])} "
                    f"bytes, more than a UDP datagram carries; use tls or tcp"
                )
            self._send_datagrams(records)
            size = sum(len(r) for r in records)
        else:
            data = b"".join(b"%d %s" % (len(r), r) for r in records)  # RFC 5425 §4.3
            self._send_stream(data)
            size = len(data)
        log.info("%s: sent %d %s event(s), %d bytes", self.where, len(records), s.format, size)
        return f"{len(records)} events over {s.transport} to {endpoint}"

    def check(self) -> list[tuple[bool, str]]:
        """Connect (and verify TLS) without sending anything; for udp, resolve the host."""
        results = [(True, "configuration valid")]
        s = self.settings
        endpoint = f"{s.host}:{s.resolved_port}"
        try:
            if s.transport == "udp":
                with self._mapped("resolve"):
                    socket.getaddrinfo(s.host.strip("[]"), s.resolved_port, 0, socket.SOCK_DGRAM)
                results.append(
                    (True, f"{endpoint} resolved (udp: no connection, delivery not confirmed)")
                )
            else:
                with self._stream():
                    pass
                how = "TLS, certificate verified" if s.transport == "tls" else "no TLS (loopback)"
                results.append((True, f"connected to {endpoint} ({how}); nothing sent"))
        except DeliveryError as exc:
            results.append((False, str(exc)))
        return results

    def _send_stream(self, data: bytes) -> None:
        with self._stream() as sock, self._mapped("send"):
            sock.sendall(data)

    def _send_datagrams(self, records: list[bytes]) -> None:
        s = self.settings
        with self._mapped("resolve"):
            family, kind, proto, _, address = socket.getaddrinfo(
                s.host.strip("[]"), s.resolved_port, 0, socket.SOCK_DGRAM
            )[0]
        with self._mapped("send"), socket.socket(family, kind, proto) as sock:
            sock.settimeout(s.timeout)
            sock.connect(address)  # a refusal (ICMP) of a datagram then fails the next one
            for record in records:
                sock.send(record)

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.settings.ca_bundle, self.base_dir, self.where)

    @contextmanager
    def _stream(self) -> Iterator[socket.socket]:
        """A TCP connection, with TLS as configured; closed afterwards (TLS with a
        close_notify first)."""
        s = self.settings
        host = s.host.strip("[]")
        context = self._tls_context() if s.transport == "tls" else None
        with self._mapped("connect"):
            raw = socket.create_connection((host, s.resolved_port), timeout=s.timeout)
        sock: socket.socket = raw
        try:
            if context is not None:
                with self._mapped("TLS handshake"):
                    sock = context.wrap_socket(raw, server_hostname=host)
            yield sock
        except BaseException:
            sock.close()
            raise
        if isinstance(sock, ssl.SSLSocket):
            with suppress(OSError):  # the data is sent: a failed goodbye changes nothing
                sock.settimeout(min(s.timeout, 2.0))
                sock.unwrap()
        else:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        sock.close()

    @contextmanager
    def _mapped(self, stage: str) -> Iterator[None]:
        """Turn what ``socket`` and ``ssl`` raise during ``stage`` into a
        :class:`DeliveryError` (permanent) or :class:`RetriableDeliveryError`."""
        try:
            yield
        except OSError as exc:
            retriable, detail = self._classify(exc)
            error = RetriableDeliveryError if retriable else DeliveryError
            raise error(f"{self.where}: {stage}: {detail}") from None

    def _classify(self, exc: OSError) -> tuple[bool, str]:
        """(worth retrying, what happened) for an exception; never an event's content."""
        s = self.settings
        found = connection_failure(
            exc,
            s.timeout,
            host_hint="check host (it must match the certificate) and ca_bundle",
            tls_hint="check port and transport (tls for a TLS port such as 6514)",
            peer="collector",
        )
        if found is not None:
            return found
        if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return True, "the server closed the connection"
        return True, f"network error: {exc.strerror or exc.__class__.__name__}"
