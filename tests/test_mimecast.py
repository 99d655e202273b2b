"""The mimecast source against a Mimecast-compatible HTTPS server on loopback.

The server (a throwaway CA from trustme) speaks what Mimecast API 2.0 speaks to a SIEM
collector: the OAuth client-credentials token endpoint, the Cloud Gateway batch listing
(``type``, ``dateRangeStartsAt``/``EndsAt``, ``pageSize``, ``nextPage``; ``value``,
``@nextPage``, ``isCaughtUp``; ``{"fail": [...]}`` errors) and pre-signed links to
gzip-compressed NDJSON files whose events are shaped like the API's delivery, receipt
and process events (subjects, IPs and the rest included, to be dropped). Faults can be
scheduled per request. Nothing is mocked.

:func:`mimecast_traffic` makes ``n`` messages of realistic traffic and the rows they must
end as; :meth:`MimecastServer.load` serves them, :func:`write_batches` writes them as
batch files into a folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import os
import random
import secrets
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import trustme
import yaml
from click.testing import CliRunner

from compliance.cli import cli
from compliance.errors import ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW
from connectors.base import PeriodRequired, Source, SourceState, create_source, parse_options
from connectors.graph import RequestBudget
from connectors.mimecast import (
    BATCH_PATH,
    OAUTH_PATH,
    TYPES,
    BadGzip,
    BatchFile,
    Caught,
    EventReader,
    HeldMessages,
    MimecastClient,
    MimecastOptions,
    MimecastSource,
    delivery_status,
    event_lines,
    reset_shared_state,
)
from connectors.testing import CHECKS, Harness, Minimiser, Written, check_source
from tests.conftest import DIRECTORY_PEOPLE, kit_minimiser, read_all_bytes, sample

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID = "mc-api2-7f3a2b91"
SECRET = "mimecast-client-secret-0c5e"
ACCOUNT = "CUSC4E021"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


# --- the server ------------------------------------------------------------------------
@dataclass
class Fault:
    """What to do instead of the real answer to one request: a status with headers and a
    body; ``hang`` (answer nothing until released); ``cut`` (a file's first half, then
    the connection closes)."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"fail": [{"code": "server_error", "message": "try again"}]}'
    hang: bool = False
    cut: bool = False


@dataclass
class Batch:
    """One batch file: its event type, the day it belongs to, its gzip bytes."""

    kind: str
    day: dt.date
    data: bytes
    name: str


@dataclass
class Seen:
    """A request as the server saw it (never a token's or a secret's value)."""

    endpoint: str  # token, list, file, other
    path: str
    query: dict[str, list[str]]
    authorization: bool


class MimecastServer:
    """State and behaviour; the HTTP layer is :class:`_Handler`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.secret = SECRET
        self.expires_in = 1800
        self.accept_tokens = True
        self.batches: dict[str, list[Batch]] = {kind: [] for kind in TYPES}
        self.faults: dict[tuple[str, int], Fault] = {}
        self.always: dict[str, Fault] = {}  # a fault for every request of an endpoint
        self.counts: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.link_ttl = 900.0  # seconds a pre-signed link lives (wall clock)
        self.hung = threading.Event()
        self.release = threading.Event()
        self.base = ""
        self._tokens: dict[str, float] = {}  # token -> expiry (server clock)
        self._links: dict[str, float] = {}  # signature -> expiry (wall clock)
        self._lock = threading.Lock()

    # --- for tests ----------------------------------------------------------------
    def load(self, traffic: Traffic, per_file: int) -> None:
        """Serve ``traffic``'s events, ``per_file`` events to a batch file."""
        for kind, events in traffic.events.items():
            for start in range(0, len(events), per_file):
                part = events[start : start + per_file]
                self.add(kind, [json.dumps(e).encode() for e in part], _day(part))

    def add(self, kind: str, lines: list[bytes], day: dt.date, data: bytes | None = None) -> Batch:
        """One more batch file of ``kind`` (its lines gzip-compressed, or ``data`` as is)."""
        number = len(self.batches[kind])
        body = data if data is not None else gzip.compress(b"\n".join(lines) + b"\n")
        name = f"{ACCOUNT}/{kind}/{day.isoformat()}/{number:05d}-{secrets.token_hex(4)}.json.gz"
        batch = Batch(kind, day, body, name)
        self.batches[kind].append(batch)
        return batch

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def expire_links(self) -> None:
        with self._lock:
            self._links.clear()

    def files(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def requests(self, endpoint: str) -> list[Seen]:
        return [s for s in self.seen if s.endpoint == endpoint]

    # --- endpoints --------------------------------------------------------------------
    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != self.secret:
            return 401, {"fail": [{"code": "invalid_client", "message": "Invalid client"}]}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self.clock() + self.expires_in
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}

    def authorised(self, header: str) -> bool:
        token = header.removeprefix("Bearer ")
        with self._lock:
            expiry = self._tokens.get(token)
        return self.accept_tokens and expiry is not None and self.clock() < expiry

    def listing(self, query: dict[str, list[str]], header: str) -> tuple[int, dict[str, Any]]:
        if not self.authorised(header):
            return 401, {"fail": [{"code": "token_expired", "message": "Unauthorized"}]}
        kind = query.get("type", [""])[0]
        if kind not in self.batches:
            return 400, {"fail": [{"code": "invalid_type", "message": "unknown type"}]}
        size = int(query.get("pageSize", ["100"])[0])
        if not 1 <= size <= 1000:
            return 400, {"fail": [{"code": "invalid_page_size", "message": "1..1000"}]}
        if "nextPage" in query:
            cursor = json.loads(base64.urlsafe_b64decode(query["nextPage"][0]))
            if cursor["k"] != kind:
                return 400, {"fail": [{"code": "invalid_token", "message": "bad token"}]}
            start, end, offset = cursor["s"], cursor["e"], cursor["o"]
        elif "dateRangeStartsAt" in query:
            start, end, offset = query["dateRangeStartsAt"][0], None, 0
            end = query.get("dateRangeEndsAt", [None])[0]
        else:
            return 400, {"fail": [{"code": "missing_range", "message": "dateRangeStartsAt"}]}
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end) if end else None
        files = [
            b for b in self.batches[kind] if b.day >= first and (last is None or b.day <= last)
        ]
        page = files[offset : offset + size]
        cursor = {"k": kind, "s": start, "e": end, "o": offset + len(page)}
        token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        return 200, {
            "value": [self._link(b) for b in page],
            "@nextPage": token,
            "isCaughtUp": offset + len(page) >= len(files),
        }

    def _link(self, batch: Batch) -> dict[str, Any]:
        signature = secrets.token_hex(16)
        expiry = time.time() + self.link_ttl
        with self._lock:
            self._links[signature] = expiry
        moment = dt.datetime.fromtimestamp(expiry, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {
            "url": f"{self.base}/storage/{batch.name}?X-Amz-Expires={int(self.link_ttl)}"
            f"&X-Amz-Signature={signature}",
            "expiry": moment,
            "size": len(batch.data),
        }

    def file(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        signature = query.get("X-Amz-Signature", [""])[0]
        with self._lock:
            expiry = self._links.get(signature)
        if expiry is None or time.time() >= expiry:
            return 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
        name = path.removeprefix("/storage/")
        for batches in self.batches.values():
            for batch in batches:
                if batch.name == name:
                    return 200, batch.data
        return 404, b"<Error><Code>NoSuchKey</Code></Error>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client killed mid-answer is part of the tests


def _endpoint(path: str) -> str:
    if path == BATCH_PATH:
        return "list"
    return "file" if path.startswith("/storage/") else "other"


class _Handler(BaseHTTPRequestHandler):
    server_version = "mimecast-test"
    state: MimecastServer

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        kind = "application/json" if body[:1] in (b"{", b"[") else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, endpoint: str) -> Fault | None:
        state = self.state
        with state._lock:
            state.counts[endpoint] += 1
            n = state.counts[endpoint]
        return state.faults.get((endpoint, n)) or state.always.get(endpoint)

    def _record(self, endpoint: str, path: str, query: dict[str, list[str]]) -> None:
        auth = self.headers.get("Authorization") is not None
        self.state.seen.append(Seen(endpoint, path, query, auth))

    def do_GET(self) -> None:
        state = self.state
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        endpoint = _endpoint(url.path)
        self._record(endpoint, url.path, query)
        if endpoint == "other":
            self._send(404, b'{"fail": [{"code": "not_found", "message": "no such path"}]}')
            return
        fault = self._fault(endpoint)
        if fault is not None and fault.hang:
            state.hung.set()
            state.release.wait(60)
            self.close_connection = True
            return
        if endpoint == "list":
            if fault is not None:
                self._send(fault.status, fault.body, fault.headers)
                return
            status, body = state.listing(query, self.headers.get("Authorization", ""))
            self._send(status, json.dumps(body).encode())
            return
        status, data = state.file(url.path, query)
        if fault is not None and status == 200:
            if fault.cut:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            status, data = fault.status, fault.body
        self._send(status, data, fault.headers if fault is not None else None)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if url.path != OAUTH_PATH:
            self._record("other", url.path, {})
            self._send(404, b'{"fail": [{"code": "not_found", "message": "no such path"}]}')
            return
        self._record("token", url.path, {})
        fault = self._fault("token")
        if fault is not None:
            self._send(fault.status, fault.body, fault.headers)
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        status, body = self.state.token(form)
        self._send(status, json.dumps(body).encode())


@dataclass
class Running:
    """A started server: its state, base URL and the CA bundle that trusts it."""

    state: MimecastServer
    base: str
    ca_bundle: Path

    def options(self, **extra: Any) -> dict[str, Any]:
        """A mimecast source's options for this server (secret from $MIMECAST_TEST_SECRET)."""
        return {
            "client_id": CLIENT_ID,
            "client_secret": {"$env": "MIMECAST_TEST_SECRET"},
            "base_url": self.base,
            "ca_bundle": str(self.ca_bundle),
            **extra,
        }


def start(tmp: Path, clock: Callable[[], float] = time.monotonic) -> Iterator[Running]:
    """Start a server on a free loopback port; stop it when the generator is closed."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    state = MimecastServer(clock)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = _Server(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    bundle = tmp / "mimecast-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(state, state.base, bundle)
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()


# --- realistic traffic --------------------------------------------------------------------
Key = tuple[str, str, str]  # message id, sender, recipient


@dataclass
class Traffic:
    """Events by type (in time order), and the row each (message, sender, recipient)
    must end as: (status, receipt time in ms, size or None)."""

    events: dict[str, list[dict[str, Any]]]
    expected: dict[Key, tuple[str, int, int | None]]

    def addresses(self) -> set[str]:
        return {a for key in self.expected for a in key[1:]}

    def merge(self, other: Traffic) -> Traffic:
        events = {k: sorted(v + other.events[k], key=_ms) for k, v in self.events.items()}
        return Traffic(events, {**self.expected, **other.expected})


PARTNER_DOMAINS = [
    "partner.example", "supplier.test", "logistics.example", "bank.test", "lawfirm.example",
    "mail.customer-one.test", "eu.distributor.example", "travel-agency.test",
]  # fmt: skip
SPAM_DOMAINS = ["cheap-pills.test", "bulk-offers.example", "lottery-win.test"]


def _ms(event: dict[str, Any]) -> int:
    return int(event["timestamp"])


def _day(events: list[dict[str, Any]]) -> dt.date:
    return dt.datetime.fromtimestamp(_ms(events[0]) / 1000, dt.UTC).date()


class _Builder:
    """Events of one message as Mimecast API 2.0 writes them (with the fields a collector
    must drop: subjects, IPs, TLS details, file names)."""

    def __init__(self, traffic: Traffic, rng: random.Random) -> None:
        self.traffic = traffic
        self.rng = rng
        self.offset = 70_000

    def _common(self, kind: str, at: int, aggregate: str) -> dict[str, Any]:
        self.offset += 1
        return {
            "_offset": self.offset,
            "_partition": 60,
            "accountId": ACCOUNT,
            "aggregateId": aggregate,
            "processingId": secrets.token_urlsafe(32) + f"_{at // 1000}",
            "subtype": None,
            "timestamp": at,
            "type": kind,
        }

    def message(
        self,
        at: int,
        sender: str,
        recipients: list[str],
        direction: str,
        outcome: dict[str, str],
        *,
        hold: str | None = None,
        rejected: bool = False,
        subject: str = "Quarterly plan for Distinctive Client",
    ) -> None:
        """One message: its receipt(s), process and delivery events, and its expected rows.
        ``outcome`` gives each recipient's delivery: delivered, bounced, deferred, or
        retried (deferred first, delivered 15 minutes later)."""
        rng = self.rng
        aggregate = secrets.token_urlsafe(16) + f"_{at // 1000}"
        domain = sender.rsplit("@", 1)[1]
        message_id = None if rejected else f"<{secrets.token_hex(8)}-{at}@{domain}>"
        size = rng.randint(2_000, 400_000)
        ip = f"198.51.100.{rng.randint(1, 254)}"
        receipt_fields = {
            "action": "Rej" if rejected else "Acc",
            "direction": direction,
            "messageId": message_id,
            "numberAttachments": str(rng.randint(0, 2)),
            "receiptErrors": None,
            "rejectionCode": "550" if rejected else None,
            "rejectionInfo": "Envelope blocked - User Entry" if rejected else None,
            "rejectionType": "Manual Envelope Rejection" if rejected else None,
            "senderEnvelope": sender,
            "senderHeader": sender,
            "senderIp": ip,
            "spamDetectionLevel": "7",
            "spamInfo": "[]",
            "spamProcessingDetail": '{"spf":{"allow":true,"info":"ALLOW"}}',
            "spamScore": str(rng.randint(0, 30)),
            "subject": None if rejected else subject,
            "tlsCipher": "TLS_AES_256_GCM_SHA384",
            "tlsVersion": "TLSv1.3",
            "virusFound": None,
        }
        events = self.traffic.events
        # one receipt per recipient, or one naming them all ("a, b")
        groups = (
            [recipients]
            if len(recipients) > 1 and rng.random() < 0.5
            else [[r] for r in recipients]
        )
        for group in groups:
            receipt = self._common("receipt", at, aggregate) | receipt_fields
            receipt["recipients"] = ", ".join(group)
            events["receipt"].append(receipt)
        ident = message_id or aggregate
        if rejected:
            for r in recipients:
                self.traffic.expected[(ident, sender, r)] = ("rejected", at, None)
            return
        process = self._common("process", at + rng.randint(200, 1500), aggregate) | {
            "action": "Hld" if hold else "Acc",
            "attachments": '"attach-report.pdf"' if rng.random() < 0.3 else None,
            "emailSize": str(size),
            "holdReason": hold,
            "messageId": message_id,
            "numberAttachments": "0",
            "senderEnvelope": sender,
            "subject": subject,
            "totalSizeAttachments": "0",
        }
        events["process"].append(process)
        if hold:
            for r in recipients:
                self.traffic.expected[(ident, sender, r)] = ("quarantined", at, None)
            return
        for r in recipients:
            result = outcome.get(r, "delivered")
            attempts = (
                [("deferred", 0), ("delivered", 900_000)] if result == "retried" else [(result, 0)]
            )
            for state, later in attempts:
                delay = rng.randint(800, 6_000) + later
                delivered = state == "delivered"
                code = {"bounced": "550", "deferred": "451"}.get(state)
                events["delivery"].append(
                    self._common("delivery", at + delay, aggregate)
                    | {
                        "Hostname": "mx.corp.example",
                        "delivered": "true" if delivered else "false",
                        "deliveryAttempts": "1",
                        "deliveryErrors": None if delivered else f"{code} try later or never",
                        "deliveryTime": str(delay),
                        "destinationIp": f"203.0.113.{rng.randint(1, 254)}",
                        "direction": direction,
                        "emailSize": str(size),
                        "messageId": message_id,
                        "numberAttachments": "0",
                        "recipients": r,
                        "rejectionCode": code,
                        "rejectionInfo": None if delivered else "5.1.1 User unknown",
                        "rejectionType": (
                            "Recipient email address is possibly incorrect"
                            if state == "bounced"
                            else None
                        ),
                        "route": "Office365",
                        "senderEnvelope": sender,
                        "subject": subject,
                        "tlsCipher": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                        "tlsUsed": "Yes",
                        "tlsVersion": "TLSv1.2",
                        "totalSizeAttachments": "0",
                    }
                )
            final = "delivered" if result == "retried" else result
            self.traffic.expected[(ident, sender, r)] = (final, at, size)


def mimecast_traffic(
    count: int, now: dt.datetime = NOW, *, hours: float = 60.0, seed: int = 7
) -> Traffic:
    """``count`` messages over the ``hours`` before ``now``: outbound mail to partners with
    several recipients (some bounced, some deferred then delivered, some still deferred),
    inbound mail, internal mail, inbound spam held for review, inbound mail refused at the
    gateway, and outbound mail held by a DLP policy. Many distinct addresses."""
    rng = random.Random(seed)
    traffic = Traffic({kind: [] for kind in TYPES}, {})
    build = _Builder(traffic, rng)
    people = DIRECTORY_PEOPLE
    end = int(now.timestamp() * 1000) - 3_600_000  # the last message an hour ago
    step = int(hours * 3_600_000 / max(count, 1))
    for i in range(count):
        at = end - (count - i) * step + rng.randint(0, step // 2)
        person = people[i % len(people)]
        partner = PARTNER_DOMAINS[i % len(PARTNER_DOMAINS)]
        outside = [f"contact{i}.{k}@{partner}" for k in range(1 + i % 3)]
        scenario = i % 10
        if scenario in (0, 1, 2):  # outbound, 1-3 recipients
            outcome = {}
            if scenario == 1 and len(outside) > 1:
                outcome[outside[-1]] = "bounced"
            if scenario == 2:
                outcome[outside[0]] = "retried"
            build.message(at, person, outside, "Outbound", outcome)
        elif scenario in (3, 4):  # inbound to one or two people
            to = [person, people[(i + 5) % len(people)]][: 1 + i % 2]
            build.message(at, f"sales{i}@{partner}", to, "Inbound", {})
        elif scenario == 5:  # internal
            to = [people[(i + 1) % len(people)], people[(i + 2) % len(people)]]
            build.message(at, person, to, "Internal", {})
        elif scenario == 6:  # inbound spam, held for review
            spam = SPAM_DOMAINS[i % len(SPAM_DOMAINS)]
            build.message(at, f"promo{i}@{spam}", [person], "Inbound", {}, hold="Spm")
        elif scenario == 7:  # refused at the gateway
            spam = SPAM_DOMAINS[i % len(SPAM_DOMAINS)]
            build.message(at, f"noreply{i}@{spam}", [person], "Inbound", {}, rejected=True)
        elif scenario == 8:  # outbound, still deferred
            build.message(at, person, outside[:1], "Outbound", {outside[0]: "deferred"})
        else:  # outbound held by a DLP policy
            build.message(at, person, outside[:1], "Outbound", {}, hold="Dlp")
    for kind in TYPES:
        traffic.events[kind].sort(key=_ms)
    return traffic


def escort_contacts(now: dt.datetime = NOW) -> Traffic:
    """u1 writes to an escort site on three days (once to a deeper name of it, once as an
    alias); u3's attempt is held by a DLP policy; u2 receives a newsletter of another
    listed site (received only)."""
    traffic = Traffic({kind: [] for kind in TYPES}, {})
    build = _Builder(traffic, random.Random(11))
    for days, sender, to in (
        (2, "u1@corp.example", "book@escort-ads.test"),
        (1, "alias1@corp.example", "desk@bookings.agency.escort-ads.test"),
        (0, "u1@corp.example", "book@escort-ads.test"),
    ):
        at = int((now - dt.timedelta(days=days, hours=2)).timestamp() * 1000)
        build.message(at, sender, [to], "Outbound", {}, subject="Booking for Friday")
    at = int((now - dt.timedelta(hours=30)).timestamp() * 1000)
    build.message(at, "u3@corp.example", ["book@escort-ads.test"], "Outbound", {}, hold="Dlp")
    at = int((now - dt.timedelta(hours=20)).timestamp() * 1000)
    build.message(at, "news@mail.velvet-club.test", ["u2@corp.example"], "Inbound", {})
    return traffic


def write_batches(folder: Path, count: int, per_file: int = 500) -> Traffic:
    """``count`` messages of :func:`mimecast_traffic` as batch files in ``folder``
    (``<type>-<n>.json.gz``, as a collector would have saved them); the traffic."""
    traffic = mimecast_traffic(count)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, events in traffic.events.items():
        for n, start in enumerate(range(0, len(events), per_file)):
            lines = "\n".join(json.dumps(e) for e in events[start : start + per_file])
            (folder / f"{kind}-{n:04d}.json.gz").write_bytes(gzip.compress(lines.encode() + b"\n"))
    return traffic


# --- helpers ---------------------------------------------------------------------------
_RANK = {"unknown": 0, "deferred": 1, "delivered": 3}


def final_rows(frame: pd.DataFrame) -> dict[Key, tuple[str, int, int | None]]:
    """Each (message, sender, recipient) of ``frame`` with its most final status (what a
    store ends with), its time in ms and size."""
    out: dict[Key, tuple[str, int, int | None]] = {}
    for row in frame.itertuples(index=False):
        key = (row.message_id, row.sender, row.recipient)
        size = None if pd.isna(row.size) else int(row.size)
        value = (str(row.status), int(row.timestamp.timestamp() * 1000), size)
        old = out.get(key)
        if old is None or _RANK.get(value[0], 2) > _RANK.get(old[0], 2):
            out[key] = value if old is None or old[2] is None else (value[0], old[1], old[2])
    return out


@dataclass
class Read:
    frame: pd.DataFrame
    rejected: Counter[str]
    skipped: Counter[str]


def read_units(units: list[Any]) -> Read:
    frames, rejected, skipped = [], Counter[str](), Counter[str]()
    for unit in units:
        for chunk in unit.chunks():
            assert list(chunk.frame.columns) == list(RAW)
            assert len(chunk.frame) <= 1 << 16
            frames.append(chunk.frame)
            rejected.update(chunk.rejected)
            skipped.update(chunk.skipped)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RAW))
    return Read(frame, rejected, skipped)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("MIMECAST_TEST_SECRET", SECRET)
    reset_shared_state()
    yield from start(tmp_path)
    reset_shared_state()


def make_source(
    server: Running,
    tmp_path: Path,
    *,
    sleeps: list[float] | None = None,
    clock: Callable[[], float] = time.monotonic,
    **extra: Any,
) -> MimecastSource:
    options = parse_options(MimecastOptions, "gateway", server.options(**extra))
    sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    budget = RequestBudget(options.requests_per_minute, 60.0)
    client = MimecastClient("gateway", options, tmp_path, budget, sleep, clock)
    return MimecastSource("gateway", options, tmp_path, client)


def first_run(source: MimecastSource) -> list[Any]:
    return source.units(SourceState(None, NOW))


# --- the connector ------------------------------------------------------------------------
def test_three_listing_pages_and_every_row_with_its_final_status(
    server: Running, tmp_path: Path
) -> None:
    traffic = mimecast_traffic(60)
    server.state.load(traffic, per_file=9)
    source = make_source(server, tmp_path, page_size=3)
    units = first_run(source)
    assert [u.listed.kind for u in units if isinstance(u, BatchFile)] == [
        kind for kind in TYPES for _ in server.state.batches[kind]
    ]
    assert isinstance(units[-1], Caught)
    read = read_units(units)
    assert final_rows(read.frame) == traffic.expected
    assert set(read.frame["status"]) <= {
        "delivered", "bounced", "deferred", "rejected", "quarantined", "unknown",
    }  # fmt: skip
    assert not read.rejected
    # the delivery listing: 9 files, 3 a page, each page asked for with the last token
    listing = [s.query for s in server.state.requests("list") if s.query["type"] == ["delivery"]]
    assert len(server.state.batches["delivery"]) == 9
    assert len(listing) == 3
    assert "nextPage" not in listing[0]
    assert listing[0]["dateRangeStartsAt"] == [(NOW - dt.timedelta(days=7)).date().isoformat()]
    assert all("nextPage" in q and q["pageSize"] == ["3"] for q in listing[1:])
    assert len(server.state.requests("file")) == server.state.files()
    assert len(server.state.requests("token")) == 1


def test_only_the_needed_fields_leave_the_parser(server: Running, tmp_path: Path) -> None:
    traffic = mimecast_traffic(30)
    server.state.load(traffic, per_file=50)
    source = make_source(server, tmp_path)
    read = read_units(first_run(source))
    text = read.frame.astype(str).to_csv()
    for dropped in ("Distinctive Client", "198.51.100.", "203.0.113.", "TLS_", "attach-report"):
        assert dropped not in text
    # a pre-signed link is fetched without the API token
    assert not any(s.authorization for s in server.state.requests("file"))
    assert all(s.authorization for s in server.state.requests("list"))
    # several recipients in one receipt string become one row each
    multi = [e for e in traffic.events["receipt"] if "," in e["recipients"]]
    assert multi
    for event in multi:
        for recipient in event["recipients"].split(", "):
            assert (read.frame["recipient"] == recipient).any()


def test_statuses_of_delivery_attempts() -> None:
    assert delivery_status("true", None, None) == "delivered"
    assert delivery_status(True, None, None) == "delivered"
    assert delivery_status("false", "451", None) == "deferred"
    assert delivery_status("false", "550", None) == "bounced"
    assert delivery_status(False, None, "Recipient email address is possibly incorrect") == (
        "bounced"
    )
    assert delivery_status("false", None, None) == "deferred"
    assert delivery_status(None, None, None) == "unknown"


def test_a_receipt_takes_the_hold_of_its_process_event_else_unknown() -> None:
    held = HeldMessages()
    process = EventReader("process", held)
    process.add(b'{"type":"process","action":"Hld","holdReason":"Spm","aggregateId":"A1"}')
    process.add(b'{"type":"process","action":"Rej","aggregateId":"A2"}')
    process.add(b'{"type":"process","action":"Acc","aggregateId":"A3"}')
    assert len(process.take().frame) == 0
    receipts = EventReader("receipt", held)
    for n in (1, 2, 3, 4):
        receipts.add(
            json.dumps(
                {
                    "type": "receipt",
                    "action": "Acc",
                    "aggregateId": f"A{n}",
                    "timestamp": 1_731_454_605_992,
                    "senderEnvelope": f"s{n}@spam.test",
                    "recipients": "u1@corp.example",
                    "messageId": f"<m{n}@spam.test>",
                }
            ).encode()
        )
    receipts.add(
        b'{"type":"receipt","action":"Rej","aggregateId":"A5","messageId":null,'
        b'"timestamp":1731454605992,"senderEnvelope":"x@spam.test","recipients":"u2@corp.example"}'
    )
    frame = receipts.take().frame
    assert frame["status"].tolist() == [
        "quarantined", "filtered_as_spam", "unknown", "unknown", "rejected",
    ]  # fmt: skip
    assert frame["message_id"].tolist()[-1] == "A5"  # no Message-ID: the trace id


def _quirky(traffic: Traffic) -> dict[str, list[bytes]]:
    """``traffic``'s lines, with the quirks a parser must survive, in the JSON types of API
    2.0 (so that Arrow may read them)."""
    lines = {
        kind: [json.dumps(e).encode() for e in events] for kind, events in traffic.events.items()
    }
    odd = [
        {"recipients": " <Angle@Partner.Example> ; second@partner.example,third@x.test "},
        {"recipients": " , ; "},  # no recipient at all
        {"recipients": None},
        {"delivered": None},
        {"delivered": "TRUE"},
        {"delivered": "no", "rejectionCode": " 421 ", "rejectionType": "Throttled"},
        {"delivered": "false", "rejectionCode": None, "rejectionType": ""},
        {"deliveryTime": "abc"},
        {"deliveryTime": "99999999999"},  # beyond 30 days: no delay
        {"messageId": " ", "aggregateId": None},  # falls back to processingId
        {"senderEnvelope": "<>"},
        {"timestamp": None},
        {"emailSize": "12.5"},
        {"type": "journal"},
        {"type": " Delivery "},
    ]
    base = traffic.events["delivery"][0]
    lines["delivery"] += [json.dumps(base | change).encode() for change in odd]
    lines["delivery"].append(b"")  # an empty line
    receipt = traffic.events["receipt"][0]
    lines["receipt"] += [json.dumps(receipt | {"action": " REJ "}).encode()]
    lines["receipt"] += [json.dumps(receipt | {"action": None}).encode()]
    return lines


def test_arrow_and_line_by_line_parsing_give_the_same_rows() -> None:
    lines = _quirky(mimecast_traffic(120))
    careful, fast = HeldMessages(), HeldMessages()
    for kind in TYPES:
        one = EventReader(kind, careful)
        for line in lines[kind]:
            one.add(line)
        block = EventReader(kind, fast)
        block.add_lines(list(lines[kind]))
        if kind != "process":
            assert block.frames  # Arrow read the block
        left, right = one.take(), block.take()
        pd.testing.assert_frame_equal(left.frame, right.frame)
        assert (left.rejected, left.skipped) == (right.rejected, right.skipped)
        assert len(careful) == len(fast)
    assert len(fast) == 24  # 12 held for spam, 12 by the DLP policy


def test_a_retried_delivery_keeps_its_last_attempt_and_the_receipt_time() -> None:
    reader = EventReader("delivery", HeldMessages())
    base = {"type": "delivery", "senderEnvelope": "u1@corp.example", "messageId": "<r@x>"}
    for delivered, code, at, delay in (
        ("false", "451", 1_000_000, 2_000),
        ("true", None, 1_900_000, 902_000),
    ):
        reader.add(
            json.dumps(
                base
                | {
                    "recipients": "c@partner.example",
                    "delivered": delivered,
                    "rejectionCode": code,
                    "timestamp": 1_731_000_000_000 + at,
                    "deliveryTime": str(delay),
                    "emailSize": "4096",
                }
            ).encode()
        )
    chunk = reader.take()
    assert chunk.frame["status"].tolist() == ["delivered"]
    assert chunk.skipped == Counter({"repeated_event": 1})
    receipt = pd.Timestamp(1_731_000_998_000, unit="ms", tz="UTC")  # both attempts agree
    assert chunk.frame["timestamp"].iloc[0] == receipt
    assert chunk.frame["size"].iloc[0] == 4096


def test_a_malformed_line_and_a_bad_gzip_file_are_counted_and_reading_goes_on(
    server: Running, tmp_path: Path
) -> None:
    traffic = mimecast_traffic(40)
    server.state.load(traffic, per_file=15)
    day = NOW.date()
    good = [json.dumps(e).encode() for e in traffic.events["delivery"][:4]]
    extra = [
        json.dumps(
            e | {"messageId": f"<late-{n}@x.test>", "recipients": f"late{n}@partner.example"}
        ).encode()
        for n, e in enumerate(traffic.events["delivery"][:40])
    ]
    server.state.add("delivery", [good[0], b'{"type": "delivery", "recipients": ', good[1]], day)
    truncated = gzip.compress(b"\n".join(extra) + b"\n")
    server.state.add("delivery", [], day, data=truncated[: len(truncated) * 2 // 3])
    sleeps: list[float] = []
    source = make_source(server, tmp_path, sleeps=sleeps, max_retries=2)
    read = read_units(first_run(source))
    assert read.rejected == Counter({"malformed_line": 1, "bad_gzip": 1})
    assert final_rows(read.frame).keys() >= traffic.expected.keys()  # every other file read
    # the readable part of the bad file was read, once, though it was downloaded 3 times
    late = read.frame[read.frame["message_id"].str.startswith("<late-")]
    assert 0 < len(late) < 40
    assert late["message_id"].is_unique
    bad_name = server.state.batches["delivery"][-1].name
    assert sum(1 for s in server.state.requests("file") if s.path.endswith(bad_name)) == 3
    assert len(sleeps) == 2


def test_a_download_cut_short_is_fetched_again_without_repeating_rows(
    server: Running, tmp_path: Path
) -> None:
    traffic = mimecast_traffic(80)
    server.state.load(traffic, per_file=400)
    server.state.faults[("file", 2)] = Fault(cut=True)
    source = make_source(server, tmp_path)
    read = read_units(first_run(source))
    assert final_rows(read.frame) == traffic.expected
    assert len(server.state.requests("file")) == server.state.files() + 1
    assert not read.rejected
    # no row twice: the lines read before the cut were skipped the second time
    assert not read.frame.duplicated().any()


def test_429_waits_as_mimecast_says_then_succeeds(server: Running, tmp_path: Path) -> None:
    server.state.load(mimecast_traffic(20), per_file=5)
    server.state.faults[("list", 2)] = Fault(429, {"X-RateLimit-Reset": "2500"})
    server.state.faults[("list", 4)] = Fault(429, {"Retry-After": "7"})
    sleeps: list[float] = []
    source = make_source(server, tmp_path, sleeps=sleeps, page_size=2)
    units = first_run(source)
    assert sleeps == [2.5, 7.0]
    assert len([u for u in units if isinstance(u, BatchFile)]) == server.state.files()


def test_500_then_success_and_a_5xx_that_persists(server: Running, tmp_path: Path) -> None:
    traffic = mimecast_traffic(20)
    server.state.load(traffic, per_file=10)
    server.state.faults[("list", 1)] = Fault(500)
    server.state.faults[("file", 1)] = Fault(503)
    sleeps: list[float] = []
    source = make_source(server, tmp_path, sleeps=sleeps)
    assert final_rows(read_units(first_run(source)).frame) == traffic.expected
    assert len(sleeps) == 2
    assert all(1 <= s <= 2 for s in sleeps)  # 1 s, plus up to 1 s of jitter

    server.state.always["list"] = Fault(502)
    failing = make_source(server, tmp_path, max_retries=3)
    with pytest.raises(RetriableSourceError, match="still failing after 4 attempts"):
        first_run(failing)


def test_an_expiring_token_is_renewed_before_it_expires_and_once_on_401(
    server: Running, tmp_path: Path
) -> None:
    clock = Clock()
    server.state.clock = clock
    server.state.expires_in = 120
    server.state.load(mimecast_traffic(10), per_file=50)
    source = make_source(server, tmp_path, clock=clock)
    source.client.list_page({"type": "delivery", "dateRangeStartsAt": NOW.date().isoformat()})
    assert len(server.state.requests("token")) == 1
    clock.now += 59
    source.client.list_page({"type": "delivery", "dateRangeStartsAt": NOW.date().isoformat()})
    assert len(server.state.requests("token")) == 1  # still well within its life
    clock.now += 2  # a minute before it expires: renewed first, never refused
    source.client.list_page({"type": "delivery", "dateRangeStartsAt": NOW.date().isoformat()})
    assert len(server.state.requests("token")) == 2
    lists = len(server.state.requests("list"))

    server.state.revoke_tokens()  # e.g. the app's keys were rotated: 401, renewed once
    source.client.list_page({"type": "delivery", "dateRangeStartsAt": NOW.date().isoformat()})
    assert len(server.state.requests("token")) == 3
    assert len(server.state.requests("list")) == lists + 2

    server.state.accept_tokens = False
    with pytest.raises(SourceError, match="refused even when renewed"):
        source.client.list_page({"type": "delivery", "dateRangeStartsAt": NOW.date().isoformat()})


def test_wrong_credentials_and_missing_permission_are_explained(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIMECAST_TEST_SECRET", "not-the-secret")
    source = make_source(server, tmp_path)
    with pytest.raises(SourceError, match="refused a token") as refused:
        source.client.token()
    assert "invalid_client" in str(refused.value)
    assert "not-the-secret" not in str(refused.value)

    monkeypatch.setenv("MIMECAST_TEST_SECRET", SECRET)
    server.state.always["list"] = Fault(
        403, body=b'{"fail": [{"code": "forbidden", "message": "Forbidden"}]}'
    )
    with pytest.raises(SourceError, match="Threat and Security Events"):
        first_run(make_source(server, tmp_path))


def test_options_refuse_an_inline_secret_http_and_too_long_a_reach(server: Running) -> None:
    with pytest.raises(ConfigError, match=r"client_secret: .*reference"):
        parse_options(MimecastOptions, "gateway", server.options(client_secret="plain"))
    with pytest.raises(ConfigError, match=r"base_url: .*https"):
        parse_options(MimecastOptions, "gateway", server.options(base_url="http://x.test"))
    with pytest.raises(ConfigError, match="start_days"):
        parse_options(MimecastOptions, "gateway", server.options(start_days=30))
    with pytest.raises(ConfigError, match="typo: unknown option"):
        parse_options(MimecastOptions, "gateway", server.options(typo=1))
    assert all(f.description for f in MimecastOptions.model_fields.values())
    built = create_source("mimecast", "gateway", server.options(), Path("."))
    assert isinstance(built, MimecastSource)
    assert built.options.base_url == server.base


def test_expired_links_are_listed_again_and_vanished_files_skipped(
    server: Running, tmp_path: Path
) -> None:
    traffic = mimecast_traffic(30)
    server.state.load(traffic, per_file=20)
    source = make_source(server, tmp_path)
    units = first_run(source)
    lists = len(server.state.requests("list"))
    server.state.expire_links()  # the run took longer than the links live
    read = read_units(units)
    assert final_rows(read.frame) == traffic.expected
    files = [u for u in units if isinstance(u, BatchFile)]
    assert len(server.state.requests("list")) == lists + len(files)  # one listing each

    again = make_source(server, tmp_path)
    units = first_run(again)
    gone = server.state.batches["receipt"].pop()  # gone from Mimecast since the listing
    server.state.expire_links()
    read = read_units(units)
    assert read.skipped["batch_gone"] == 1
    fetched = [s.path for s in server.state.requests("file")]
    # refused (expired) then fetched with a fresh link; refused, then no longer listed
    assert fetched.count(f"/storage/{gone.name}") == 3


def test_plan_bookmark_overlap_and_reach(server: Running, tmp_path: Path) -> None:
    source = make_source(server, tmp_path, overlap_days=1, start_days=3)
    assert source.plan(SourceState(None, NOW)) == (NOW - dt.timedelta(days=3)).date()
    mark = NOW - dt.timedelta(hours=30)
    state = SourceState(mark.strftime("%Y-%m-%dT%H:%M:%SZ"), NOW)
    assert source.plan(state) == (mark - dt.timedelta(days=1)).date()
    stale = (NOW - dt.timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(SourceError, match="compliance sources reset gateway"):
        source.units(SourceState(stale, NOW))

    server.state.load(mimecast_traffic(10), per_file=50)
    units = source.units(state)
    assert [u.bookmark for u in units[:-1]] == [state.bookmark] * (len(units) - 1)
    assert units[-1].bookmark == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")  # the run's start
    assert [u.once for u in units] == [u.listed.kind != "process" for u in units[:-1]] + [False]
    keys = [u.key for u in units[:-1]]
    assert keys == [u.key for u in source.units(state)[:-1]]  # new links, same files

    with pytest.raises(PeriodRequired, match="7 days"):
        source.units_between(None, None, NOW)
    with pytest.raises(SourceError, match="7 days"):
        source.units_between(NOW - dt.timedelta(days=9), None, NOW)
    window = source.units_between(NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1), NOW)
    assert not any(isinstance(u, Caught) for u in window)
    last = server.state.requests("list")[-1].query
    assert last["dateRangeEndsAt"] == [
        (NOW - dt.timedelta(days=1, microseconds=1)).date().isoformat()
    ]


def test_the_real_sample_in_the_legacy_spelling() -> None:
    """Elastic's Mimecast SIEM test file (API 1.0 spelling: Rcpt, Sender, Delivered,
    Act, aCode; its line 4 holds two objects joined by a comma; read, not copied)."""
    path = sample("elastic__integrations", "mimecast", "test-siem-logs.log")
    held = HeldMessages()
    reader = EventReader(None, held)
    lines = list(event_lines([path.read_bytes()]))
    assert len(lines) == 8  # the last one empty
    for line in lines:
        assert line is not None
        reader.add(line)
    chunk = reader.take()
    again = EventReader(None, HeldMessages())
    again.add_lines(lines)  # no "type": Arrow declines, line by line
    assert not again.frames
    pd.testing.assert_frame_equal(again.take().frame, chunk.frame)
    frame = chunk.frame
    # two delivery lines (one of them two events of one message and recipient: delivered,
    # then refused a second later; delivered wins), one receipt
    assert frame["status"].tolist() == ["bounced", "delivered", "unknown"]
    assert frame["sender"].isna().tolist() == [True, False, False]  # "<>": a bounce's sender
    assert frame["timestamp"].dt.strftime("%H:%M:%S").tolist() == [
        "06:06:40", "06:04:55", "12:10:19",
    ]  # fmt: skip
    assert frame["message_id"].tolist()[1].startswith("<137188507-")
    assert len(frame["message_id"].tolist()[0]) == 36  # no MsgId: the aCode
    assert chunk.skipped == Counter({"other_event_type": 2, "repeated_event": 1})
    assert not chunk.rejected
    assert len(held) == 1  # the process line that held a message for spam
    text = frame.astype(str).to_csv()
    assert "Recipient address rejected" not in text
    assert "67.43.156.15" not in text
    assert "held messages" not in text


def test_gzip_members_padding_and_plain_content() -> None:
    lines = [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    two = gzip.compress(lines[0] + b"\n") + gzip.compress(b"\n".join(lines[1:]) + b"\n")
    blocks = [two[i : i + 7] for i in range(0, len(two), 7)] + [b"\0" * 16]
    assert list(event_lines(blocks)) == lines
    assert list(event_lines([b"\n".join(lines)])) == lines  # already inflated
    long = b'{"x": "' + b"y" * (2 << 20) + b'"}'
    data = gzip.compress(lines[0] + b"\n" + long + b"\n" + lines[1])
    assert list(event_lines([data[i : i + 4096] for i in range(0, len(data), 4096)])) == [
        lines[0], None, lines[1],
    ]  # fmt: skip
    with pytest.raises(BadGzip, match="cut short"):
        list(event_lines([data[: len(data) // 2]]))
    with pytest.raises(BadGzip, match="not gzip"):
        list(event_lines([b"\x1f\x8b not really gzip"]))


# --- the conformance kit ---------------------------------------------------------------------
#: Fields of the generated events that no row may carry.
PLANTED_FIELDS = (
    "subject", "senderIp", "destinationIp", "rejectionInfo", "deliveryErrors", "attachments",
    "tlsCipher", "spamProcessingDetail", "Hostname", "processingId",
)  # fmt: skip
#: The kit's feed: sites of :func:`mimecast_traffic` (the pipeline keeps matched events).
KIT_LISTED = (*SPAM_DOMAINS, *PARTNER_DOMAINS[:3])


def pipeline_minimiser(listed: Sequence[str] = KIT_LISTED) -> Minimiser:
    """The real pipeline (as tests/test_conformance.py builds it): what the engine keeps of
    a raw chunk of corp.example's mail with a test key and a feed of ``listed`` sites."""
    return kit_minimiser(listed)


def kit_written(traffic: Traffic, rejected: dict[str, int] | None = None) -> Written:
    """The raw rows a reader yields for ``traffic`` (each message's events of one type in
    one batch file): per (message, sender, recipient) its final status, and, unless its
    receipt already says it (refused, held), ``unknown`` from the receipt; all at the
    receipt's time. Sizes are left out (a receipt has none: a row without one beside the
    delivery's row with one)."""
    rows = []
    for (ident, sender, recipient), (status, at, _size) in traffic.expected.items():
        row = {
            "timestamp": pd.Timestamp(at, unit="ms", tz="UTC"), "sender": sender,
            "recipient": recipient, "status": status, "message_id": ident,
        }  # fmt: skip
        rows.append(row)
        if status not in ("rejected", "quarantined"):
            rows.append(row | {"status": "unknown"})
    planted = {
        str(event[name])
        for events in traffic.events.values()
        for event in events
        for name in PLANTED_FIELDS
        if event.get(name)
    }
    return Written.of(rows, rejected, sorted(planted))


class MimecastHarness(Harness):
    """:func:`mimecast_traffic` served as batch files, six or more of each type (a
    message's events of one type in one file), listed four to a page; each run a new
    client (a new process), the clock still but for appended mail, which arrives after
    it."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.clock = NOW

    def source(self, folder: Path) -> Source:
        options = parse_options(
            MimecastOptions,
            "conformance",
            self.server.options(page_size=4, start_days=3, max_retries=1, requests_per_minute=6000),
        )
        budget = RequestBudget(options.requests_per_minute, 60.0)
        client = MimecastClient("conformance", options, folder, budget, lambda _s: None)
        return MimecastSource("conformance", options, folder, client)

    def now(self) -> dt.datetime:
        return self.clock

    def _serve(self, traffic: Traffic) -> None:
        per_file = max(len(traffic.events["receipt"]) // 6, 20)
        for kind, events in traffic.events.items():
            messages: dict[str, list[dict[str, Any]]] = {}
            for event in events:
                messages.setdefault(event["aggregateId"], []).append(event)
            groups = list(messages.values())
            for start in range(0, len(groups), per_file):
                part = [e for group in groups[start : start + per_file] for e in group]
                self.server.state.add(kind, [json.dumps(e).encode() for e in part], _day(part))

    def write(self, folder: Path, messages: int, seed: int) -> Written:
        traffic = mimecast_traffic(messages, self.clock, hours=40, seed=seed)
        self.server.state.batches = {kind: [] for kind in TYPES}
        self._serve(traffic)
        return kit_written(traffic)

    def append(self, folder: Path, messages: int, seed: int) -> Written:
        later = self.clock + dt.timedelta(hours=3)  # mail of the 2 hours after the last run
        traffic = mimecast_traffic(messages, later, hours=1.5, seed=seed)
        self.clock = later
        self._serve(traffic)
        return kit_written(traffic)

    def write_malformed(self, folder: Path) -> Written:
        """30 messages, a delivery file of bad lines among good ones (cut short, no
        object, no recipient, bad UTF-8, too long, no time, no address, a journal event
        not read), and a file whose gzip stays cut short (nothing whole in it)."""
        traffic = mimecast_traffic(30, self.clock, hours=20, seed=5)
        self.server.state.batches = {kind: [] for kind in TYPES}
        self._serve(traffic)
        late = traffic.events["receipt"][0]
        day = _day([late])
        bad = [
            b'{"type": "delivery", "recipients": ',
            b'"just a string"',
            json.dumps(late | {"recipients": ""}).encode(),
            b'{"type": "receipt", "subject": "caf\xe9"}',
            b'{"type": "delivery", "subject": "' + b"x" * (1 << 20) + b'"}',
            json.dumps(late | {"messageId": "<t1@x.test>", "timestamp": "yesterday"}).encode(),
            json.dumps(late | {"messageId": "<t2@x.test>", "senderEnvelope": "nobody"}).encode(),
            json.dumps(late | {"type": "journal", "messageId": "<t3@x.test>"}).encode(),
        ]
        self.server.state.add("delivery", bad, day)
        whole = gzip.compress(json.dumps(late | {"messageId": "<t4@x.test>"}).encode() + b"\n")
        self.server.state.add("delivery", [], day, data=whole[: len(whole) // 2])
        rejected = {
            "malformed_line": 2, "no_recipient": 1, "bad_encoding": 1, "line_too_long": 1,
            "bad_timestamp": 1, "invalid_sender": 1, "bad_gzip": 1,
        }  # fmt: skip
        return kit_written(traffic, rejected)


@pytest.mark.slow
def test_the_full_conformance_kit_passes(server: Running, tmp_path: Path) -> None:
    """Every check of the kit over 300 messages of :func:`mimecast_traffic` in 3 event
    types' batch files, listed in pages: declarations, units (an audit refuses an open
    period), schema, chunks, every row with its values, collects, identity through the
    real pipeline, a kill after every chunk of every unit, a re-read, mail arriving
    after a run, bad lines and a corrupt file counted; memory flat for 10 times the
    input."""
    written: list[Written] = []
    harness = MimecastHarness(server)
    write = harness.write

    def recorded(folder: Path, messages: int, seed: int) -> Written:
        written.append(write(folder, messages, seed))
        return written[-1]

    harness.write = recorded  # type: ignore[method-assign]
    # conformance: mimecast
    report = check_source(
        harness,
        tmp_path,
        minimise=pipeline_minimiser(),
        memory=True,
        memory_messages=1_000,
        raise_on_findings=False,
    )
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert report.ran == list(CHECKS) and not report.skipped
    assert report.memory is not None
    # the kit compares rows by identity: a row read twice would pass it, not this
    assert report.rows == len(written[0].rows) > 400
    assert report.kills == report.units + report.chunks  # before and after every chunk


# --- end to end -----------------------------------------------------------------------------
def _config(folder: Path, server: Running, feed: Path, directory: Path, **source: Any) -> Path:
    folder.mkdir(exist_ok=True)
    config = {
        "organisation": {"domains": ["corp.example"]},
        "directory": str(directory),
        "sources": [{"name": "gateway", "type": "mimecast", **server.options(**source)}],
        "feeds": [{"path": str(feed), "category": "escort-ads"}],
        "policies": [str(ROOT / "policies")],
        "store": "store.db",
        "reports": {"dir": "reports", "formats": ["html", "json"]},
        "schedule": {"lock": "run.lock"},
        "privacy": {"key_rotation": "never"},  # the data is relative to today
    }
    path = folder / "compliance.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _state(config: Path) -> dict[str, Any]:
    with sqlite3.connect(config.parent / "store.db") as db:
        return {
            "totals": db.execute(
                "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3"
            ).fetchall(),
            "events": db.execute(
                "SELECT event_key, person, org_unit, domain, status FROM events ORDER BY 1"
            ).fetchall(),
            "alerts": db.execute("SELECT policy, rule_id, person, org_unit FROM alerts").fetchall(),
            "runs": db.execute("SELECT status FROM runs ORDER BY id").fetchall(),
            "bookmark": db.execute("SELECT watermark FROM bookmarks").fetchall(),
            "units": db.execute("SELECT count(*) FROM ingested_units").fetchone()[0],
        }


def _traffic() -> Traffic:
    return mimecast_traffic(120).merge(escort_contacts())


def _people_rows(traffic: Traffic) -> int:
    """Rows the store counts: (message, sender, recipient) with a party of corp.example."""
    return sum(1 for key in traffic.expected if any(a.endswith("@corp.example") for a in key[1:]))


def test_run_end_to_end_figures_and_no_address_in_the_store(
    server: Running, tmp_path: Path, escort_feed: Path, directory_csv: Path
) -> None:
    traffic = _traffic()
    server.state.load(traffic, per_file=25)
    config = _config(tmp_path / "job", server, escort_feed, directory_csv, page_size=4)
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 new alert(s)" in result.output
    state = _state(config)
    assert sum(row[3] for row in state["totals"]) == _people_rows(traffic)
    assert [(a[0], a[1], a[3]) for a in state["alerts"]] == [
        ("escort-ads", "repeated-contact", "Sales/EMEA")
    ]
    assert sorted((e[3], e[4]) for e in state["events"]) == [
        ("bookings.agency.escort-ads.test", "delivered"),
        ("escort-ads.test", "delivered"),
        ("escort-ads.test", "delivered"),
        ("escort-ads.test", "quarantined"),  # u3's attempt, held by a DLP policy
        ("mail.velvet-club.test", "delivered"),  # u2's newsletter
    ]
    (bookmark,) = state["bookmark"][0]
    assert NOW.strftime("%Y-%m-%dT%H:%M:%SZ") <= bookmark <= _now()
    blob = read_all_bytes(tmp_path / "job")
    for address in traffic.addresses():
        assert address.encode() not in blob, address
        assert address.split("@")[0].encode() + b"@" not in blob
    for text in (b"Distinctive Client", b"Booking for Friday", b"198.51.100.", SECRET.encode()):
        assert text not in blob
    assert b"escort-ads.test" in blob  # the external site is kept, as a domain

    # the next run lists again, skips every delivery and receipt file, reads the process
    # files again (no rows): nothing new, which a run says (exit 4, schedule.fail_when_idle)
    files = len(server.state.requests("file"))
    again = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert again.exit_code == 4, again.output
    assert "the run read nothing" in again.output
    assert "0 new alert(s)" in again.output
    second = _state(config)
    assert second["totals"] == state["totals"]
    assert second["events"] == state["events"]
    assert second["bookmark"][0][0] >= bookmark
    listed_from = (dt.datetime.fromisoformat(bookmark) - dt.timedelta(days=1)).date()
    downloads = len(server.state.requests("file")) - files
    assert downloads == sum(1 for b in server.state.batches["process"] if b.day >= listed_from)
    assert server.state.requests("list")[-1].query["dateRangeStartsAt"] == [str(listed_from)]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
def test_a_run_killed_mid_read_resumes_without_loss_or_double_count(
    server: Running, tmp_path: Path, escort_feed: Path, directory_csv: Path
) -> None:
    traffic = _traffic()
    server.state.load(traffic, per_file=25)
    config = _config(tmp_path / "job", server, escort_feed, directory_csv)
    files = server.state.files()
    receipt_files = len(server.state.batches["receipt"])
    hang_at = files - receipt_files + 2  # the second receipt file never answers
    server.state.faults[("file", hang_at)] = Fault(hang=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance", "run", "--config", str(config)],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert server.state.hung.wait(90), "the run never reached the hung file"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    server.state.release.set()
    crashed = _state(config)
    assert crashed["runs"] == [("running",)]
    assert crashed["units"] == hang_at - 1  # every file before the hung one committed
    assert crashed["bookmark"][0][0] < NOW.strftime("%Y-%m-%dT%H:%M:%SZ")  # not caught up
    assert 0 < sum(row[3] for row in crashed["totals"]) < _people_rows(traffic)

    before = len(server.state.requests("file"))
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    resumed = _state(config)
    assert resumed["runs"] == [("interrupted",), ("ok",)]
    # process files again, the rest of the files once; committed ones skipped
    downloads = len(server.state.requests("file")) - before
    assert downloads == len(server.state.batches["process"]) + files - (hang_at - 1)

    reference = _config(tmp_path / "reference", server, escort_feed, directory_csv)
    assert CliRunner().invoke(cli, ["run", "--config", str(reference)]).exit_code == 0
    clean = _state(reference)
    assert sum(row[3] for row in resumed["totals"]) == _people_rows(traffic)
    assert resumed["totals"] == clean["totals"]
    assert [e[1:] for e in resumed["events"]] == [e[1:] for e in clean["events"]]
    assert resumed["alerts"] == clean["alerts"]


def test_sources_check_and_an_audit_of_a_window(
    server: Running, tmp_path: Path, escort_feed: Path, directory_csv: Path
) -> None:
    server.state.load(_traffic(), per_file=25)
    config = _config(tmp_path / "job", server, escort_feed, directory_csv)
    checked = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert checked.exit_code == 0, checked.output
    assert "source gateway (mimecast)" in checked.output
    assert "token acquired" in checked.output
    assert "SIEM batch listing reachable" in checked.output
    assert "all checks passed" in checked.output
    assert SECRET not in checked.output
    assert not server.state.requests("file")  # nothing downloaded
    (probe,) = server.state.requests("list")
    assert probe.query["pageSize"] == ["1"]

    since = (NOW - dt.timedelta(days=3)).date().isoformat()
    audit = CliRunner().invoke(
        cli,
        ["audit", "--config", str(config), "--source", "gateway", "--since", since,
         "--format", "json"],
    )  # fmt: skip
    assert audit.exit_code == 0, audit.output
    report = json.loads(audit.output)
    assert [(a["rule_id"], a["org_unit"]) for a in report["alerts"]] == [
        ("repeated-contact", "Sales/EMEA")
    ]
    assert not (tmp_path / "job" / "store.db").exists()
    assert "@corp.example" not in audit.output
    old = (NOW - dt.timedelta(days=10)).date().isoformat()
    refused = CliRunner().invoke(
        cli, ["audit", "--config", str(config), "--source", "gateway", "--since", old]
    )
    assert refused.exit_code == 5
    assert "7 days" in refused.output
    open_ended = CliRunner().invoke(cli, ["audit", "--config", str(config), "--source", "gateway"])
    assert open_ended.exit_code == 2
    assert "needs --since" in open_ended.output

    server.state.secret = "rotated"
    failed = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert failed.exit_code == 5
    assert "FAIL" in failed.output
    assert "refused a token" in failed.output


@pytest.mark.slow
def test_throughput_of_a_large_batch(capsys: pytest.CaptureFixture[str]) -> None:
    """Delivery events of 40,000 messages through the parser (gzip, NDJSON, rows), read in
    chunks of at most 64k rows; the rate is printed, not asserted (a busy machine would
    fail a bound, and a speed is a benchmark's to measure)."""
    traffic = mimecast_traffic(40_000, seed=3)
    lines = b"\n".join(json.dumps(e).encode() for e in traffic.events["delivery"])
    data = gzip.compress(lines, compresslevel=6)
    clock = time.perf_counter()
    reader = EventReader("delivery", HeldMessages())
    rows = 0
    blocks = [data[i : i + (1 << 16)] for i in range(0, len(data), 1 << 16)]
    for line in event_lines(blocks):
        assert line is not None
        reader.add(line)
        if len(reader) >= 1 << 16:
            rows += len(reader.take().frame)
    rows += len(reader.take().frame)
    seconds = time.perf_counter() - clock
    events = len(traffic.events["delivery"])
    with capsys.disabled():
        print(f"\n{events} delivery events ({len(data)} bytes gzip): {events / seconds:,.0f}/s")
    assert rows > 0.9 * events
