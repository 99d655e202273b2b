"""The ``proofpoint`` source (Proofpoint on Demand log API) against a real websocket server
on loopback, with TLS from a throwaway CA (trustme): the server checks the bearer key and
the query, streams message records shaped like PoD's (``msgParts`` with body text and file
names, subjects, IPs), and closes each stream at ``toTime``. Drops, 5xx answers, a wrong
key, malformed frames, a silent stream, ``compliance sources check``, a full ``compliance
run`` and a run killed mid-window then resumed.

The records are written here, imitating the shapes of public PoD samples (Elastic's
``proofpoint_on_demand`` pipeline tests, Elastic License 2.0: read, not copied)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import trustme
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from compliance.cli import cli
from compliance.errors import ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW, STATUSES
from connectors.base import Chunk, PeriodRequired, SourceState, create_source, source_type
from connectors.proofpoint import (
    PodClient,
    ProofpointOptions,
    ProofpointSource,
    disposition_status,
    parse_frame,
    split_windows,
    without_parts,
)
from connectors.testing import Harness, Message, Written, check_source, traffic
from tests.conftest import read_all_bytes, sample, store_db, write_config

KEY = "pod-log-api-key-0f3c9a51e2b74d68"
KEY_ENV = "POD_TEST_KEY"
CID = "corp_hosted"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PDT = dt.timezone(dt.timedelta(hours=-7))


# --- records shaped like the PoD message log ------------------------------------------------
def pod_record(
    at: dt.datetime,
    sender: str,
    rcpts: list[str],
    *,
    n: int,
    disposition: str = "continue",
    folder: str | None = None,
    direction: str = "outbound",
    message_id: str | None = None,
    size: int = 18_211,
) -> dict[str, Any]:
    """One ``type=message`` record: envelope, filter, headers (subject), the connection's IP
    and ``msgParts`` with body text, a file name and a URL (all of which must be dropped)."""
    body = f"BODY-SECRET {n}: please find the contract attached"
    guid = base64.urlsafe_b64encode(hashlib.sha256(f"guid{n}".encode()).digest()[:24]).decode()
    mid = message_id or f"<{hashlib.md5(str(n).encode()).hexdigest()[:20]}@mail.example>"  # noqa: S324
    record: dict[str, Any] = {
        "connection": {
            "country": "us",
            "helo": "mx.sender.example",
            "host": "mx.sender.example",
            "ip": f"198.51.100.{n % 250 + 1}",
            "protocol": "smtp:smtp",
            "resolveStatus": "ok",
            "sid": f"3y{n:08x}",
            "tls": {"inbound": {"cipher": "ECDHE-RSA-AES256-GCM-SHA384", "cipherBits": 256}},
        },
        "envelope": {"from": sender, "rcpts": rcpts},
        "filter": {
            "actions": [{"action": disposition, "isFinal": True, "module": "spam", "rule": "r"}],
            "delivered": {"rcpts": rcpts},
            "disposition": disposition,
            "durationSecs": 0.118,
            "msgSizeBytes": size - 24,
            "qid": f"44AB{n:010d}",
            "routeDirection": direction,
            "routes": ["default_inbound" if direction == "inbound" else "allow_relay"],
            "modules": {
                "spam": {
                    "scores": {"overall": 100 if disposition == "discard" else 12, "engine": 0}
                }
            },
            "verified": {"rcpts": rcpts},
        },
        "guid": guid,
        "metadata": {"origin": {"data": {"agent": "m0000123.ppops.net", "cid": CID}}},
        "msg": {
            "header": {
                "from": [f'"Some Sender" <{sender}>'],
                "message-id": [mid],
                "subject": [f"SUBJECT-SECRET {n}"],
                "to": rcpts,
            },
            "lang": "en",
            "normalizedHeader": {"message-id": [mid.strip("<>")], "subject": ["SUBJECT-SECRET"]},
            "parsedAddresses": {"from": [sender], "to": rcpts},
            "sizeBytes": size,
        },
        "msgParts": [
            {
                "detectedName": "text.txt",
                "detectedMime": "text/plain",
                "dataBase64": base64.b64encode(body.encode()).decode() + "\n",
                "textExtracted": body + ' with "quotes", [brackets] and {braces}\\',
                "urls": [{"url": f"https://files.example/SECRET-URL-{n}", "isRewritten": True}],
                "sizeDecodedBytes": len(body),
            },
            {
                "detectedName": f"invoice-{n}-CONFIDENTIAL.pdf",
                "labeledName": f"invoice-{n}-CONFIDENTIAL.pdf",
                "detectedMime": "application/pdf",
                "md5": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
                "metadata": {"author": "CONFIDENTIAL author"},
            },
        ],
        # PoD writes the agent's local time with its offset: -0700, no colon
        "ts": at.astimezone(PDT).strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
    }
    if folder is not None:
        record["filter"]["quarantine"] = {"rule": "spam", "folder": folder}
    return record


Row = tuple[pd.Timestamp, str | None, str, str, int, str]


def pod_traffic(
    count: int, begin: dt.datetime, end: dt.datetime, start: int = 0
) -> tuple[list[dict[str, Any]], list[Row]]:
    """``count`` messages spread over ``[begin, end)``, and the raw rows they must give
    (one per message and recipient): outbound mail to many partners, multi-recipient
    mail, internal mail, inbound spam quarantined, inbound mail with an audit copy,
    deferrals, rejections, bounces (null sender) and discarded phishing."""
    step = (end - begin) / max(count, 1)
    records: list[dict[str, Any]] = []
    rows: list[Row] = []
    for i in range(count):
        n = start + i
        at = begin + step * i + dt.timedelta(microseconds=n % 997)
        person = f"u{n % 17 + 1}@corp.example"
        other = f"u{(n + 5) % 17 + 1}@corp.example"
        partner = f"contact{n % 311}@partner{n % 23}.example"
        kind = n % 9
        folder = None
        status = "delivered"
        direction = "outbound"
        sender: str = person
        rcpts = [partner]
        disposition = "continue"
        if kind == 1:
            rcpts = [partner, f"desk{n % 41}@shop{n % 7}.example", other][: 2 + n % 2]
        elif kind == 2:
            direction, rcpts = "internal", [other]
        elif kind == 3:
            direction, sender, rcpts = "inbound", f"promo{n % 53}@spam{n % 11}.test", [person]
            disposition, folder, status = "discard", "Spam", "quarantined"
        elif kind == 4:
            direction, sender, rcpts = "inbound", partner, [person, other]
            folder = "Audit"  # a copy kept; the message is delivered
        elif kind == 5:
            disposition, status = "retry", "deferred"
        elif kind == 6:
            direction, sender, rcpts = "inbound", f"x{n % 13}@blocked{n % 5}.test", [person]
            disposition, status = "reject", "rejected"
        elif kind == 7:
            direction, sender, rcpts = "inbound", "", [person]  # a bounce: null sender
        elif kind == 8:
            direction, sender, rcpts = "inbound", f"it{n % 17}@phish.test", [person]
            disposition, status = "discard", "filtered_as_spam"
        size = 4_000 + n * 37 % 90_000
        record = pod_record(
            at,
            sender,
            rcpts,
            n=n,
            disposition=disposition,
            folder=folder,
            direction=direction,
            size=size,
        )
        records.append(record)
        mid = record["msg"]["header"]["message-id"][0]
        stamp = pd.Timestamp(record["ts"]).tz_convert("UTC")
        rows.extend((stamp, sender or None, r, status, size, mid) for r in rcpts)
    return records, rows


def ordered(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r[0].value, r[2], str(r[1]), r[5]))


def rows_of(chunks: list[Chunk]) -> list[Row]:
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert list(frame.columns) == list(RAW)
    assert {str(t) for t in frame.dtypes} == set(RAW.values())
    return [
        (
            r.timestamp,
            None if pd.isna(r.sender) else r.sender,
            r.recipient,
            r.status,
            int(r.size),
            r.message_id,
        )
        for r in frame.itertuples()
    ]


# --- the server ----------------------------------------------------------------------------
@dataclass
class Seen:
    """One connection attempt as the server saw it (the key is only compared)."""

    query: dict[str, list[str]]
    authorised: bool
    frames: int = 0


@dataclass
class PodServer:
    """A PoD log API: ``/v1/stream`` over TLS, bearer key, ``type=message`` records in
    ``[sinceTime, toTime]`` (both ends inclusive, as a server may be), closed at toTime."""

    key: str = KEY
    cid: str = CID
    frames: list[tuple[dt.datetime, str]] = field(default_factory=list)
    status_for: dict[int, int] = field(default_factory=dict)  # attempt -> HTTP status
    status_always: int | None = None
    drop_after: dict[int, int] = field(default_factory=dict)  # attempt -> frames, then cut
    hang_after: dict[int, int] = field(default_factory=dict)  # attempt -> frames, then silent
    seen: list[Seen] = field(default_factory=list)
    attempt_of: dict[int, int] = field(default_factory=dict)  # connection id -> attempt
    hung: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    bundle: Path = Path()

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.frames.append((pd.Timestamp(record["ts"]).to_pydatetime(), json.dumps(record)))
        self.frames.sort(key=lambda f: f[0])

    def windows(self) -> list[tuple[str, str]]:
        return [(s.query["sinceTime"][0], s.query["toTime"][0]) for s in self.seen if s.authorised]

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        authorised = request.headers.get("Authorization") == f"Bearer {self.key}"
        with self.lock:
            attempt = len(self.seen)
            self.seen.append(Seen(query, authorised))
            self.attempt_of[id(connection)] = attempt
        if not authorised:
            return connection.respond(401, "Error: Authentication failed.\n")
        if self.status_always is not None:
            return connection.respond(self.status_always, "unavailable\n")
        if attempt in self.status_for:
            return _respond(self.status_for[attempt], {"Retry-After": "0"})
        ok = (
            parts.path == "/v1/stream"
            and query.get("cid") == [self.cid]
            and query.get("type") == ["message"]
            and all(_utc(query.get(k, [""])[0]) for k in ("sinceTime", "toTime"))
        )
        return None if ok else connection.respond(400, "bad query\n")

    def handler(self, connection: ServerConnection) -> None:
        attempt = self.attempt_of[id(connection)]
        query = self.seen[attempt].query
        since, until = _utc(query["sinceTime"][0]), _utc(query["toTime"][0])
        assert since is not None and until is not None
        sent = 0
        for at, text in self.frames:
            if not since <= at <= until:
                continue
            if self.drop_after.get(attempt) == sent:
                connection.socket.shutdown(socket.SHUT_RDWR)  # cut: no close frame
                return
            if self.hang_after.get(attempt) == sent:
                self.hung.set()
                self.release.wait(120)
                return
            connection.send(text)
            sent += 1
            self.seen[attempt].frames = sent
        connection.close(1000, "toTime reached")


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _respond(status: int, headers: dict[str, str]) -> Response:
    return Response(status, "refused", Headers(headers), b"refused\n")


def _utc(value: str) -> dt.datetime | None:
    if not value.endswith("Z"):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PodServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    state = PodServer()
    server: Server = serve(
        state.handler,
        "127.0.0.1",
        0,
        ssl=context,
        process_request=state.process_request,
        max_size=None,
    )
    state.url = f"wss://127.0.0.1:{server.socket.getsockname()[1]}/v1/stream"
    state.bundle = tmp_path / "pod-ca.pem"
    ca.cert_pem.write_to_path(str(state.bundle))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        thread.join(10)


def options(pod: PodServer, **extra: Any) -> dict[str, Any]:
    return {
        "cluster_id": CID,
        "api_key": {"$env": KEY_ENV},
        "endpoint": pod.url,
        "ca_bundle": str(pod.bundle),
        "idle_seconds": 10,
        **extra,
    }


def source(pod: PodServer, tmp_path: Path, **extra: Any) -> ProofpointSource:
    """The source with a client that does not sleep between retries."""
    opts = ProofpointOptions.model_validate(options(pod, **extra))
    client = PodClient("pod", opts, tmp_path, sleep=lambda _s: None)
    return ProofpointSource("pod", opts, tmp_path, client)


def read(src: ProofpointSource, begin: dt.datetime, end: dt.datetime) -> list[Chunk]:
    return [c for unit in src.units_between(begin, end, NOW) for c in unit.chunks()]


def total(chunks: list[Chunk], what: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for chunk in chunks:
        out.update(getattr(chunk, what))
    return out


SECRETS = (b"BODY-SECRET", b"SUBJECT-SECRET", b"CONFIDENTIAL", b"SECRET-URL", b"198.51.100.")


def frame_bytes(chunks: list[Chunk]) -> bytes:
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    return frame.to_csv(index=False).encode()


# --- parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("disposition", "folder", "status"),
    [
        ("continue", None, "delivered"),
        ("accept", None, "delivered"),
        ("continue", "Audit", "delivered"),  # a copy kept in a folder: still delivered
        ("quarantine", "Quarantine", "quarantined"),
        ("discard", "Spam", "quarantined"),  # held in a folder: releasable
        ("discard", None, "filtered_as_spam"),
        ("discard", "", "filtered_as_spam"),
        ("reject", None, "rejected"),
        ("retry", None, "deferred"),
        ("Continue", None, "delivered"),
        ("something-new", None, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_disposition_gives_a_normalised_status(
    disposition: str | None, folder: str | None, status: str
) -> None:
    assert disposition_status(disposition, folder) == status
    assert status in STATUSES


def test_a_frame_keeps_only_metadata_and_drops_parts_before_decoding() -> None:
    record = pod_record(NOW, "u1@corp.example", ["a@x.example", "b@y.example"], n=7)
    text = json.dumps(record)
    cut = without_parts(text)
    assert cut is not None
    for secret in (b"BODY-SECRET", b"CONFIDENTIAL", b"SECRET-URL"):
        assert secret not in cut.encode()  # never decoded at all
    assert json.loads(cut)["msgParts"] is None
    parsed = parse_frame(text)
    assert not isinstance(parsed, str)
    assert parsed.sender == "u1@corp.example"
    assert parsed.recipients == ["a@x.example", "b@y.example"]
    assert parsed.status == "delivered"
    assert parsed.size == 18_211
    assert parsed.message_id == record["msg"]["header"]["message-id"][0]
    assert parsed.guid == record["guid"]
    kept = repr(parsed).encode()
    for secret in SECRETS:
        assert secret not in kept
    # bytes frames, a string Message-ID, none at all (the guid stands in), a size as text
    record["msg"]["header"]["message-id"] = " <one@x.example> "
    record["msg"]["sizeBytes"] = "512"
    again = parse_frame(json.dumps(record).encode())
    assert not isinstance(again, str)
    assert (again.message_id, again.size) == ("<one@x.example>", 512)
    del record["msg"]["header"]["message-id"]
    del record["msg"]["sizeBytes"]
    last = parse_frame(json.dumps(record))
    assert not isinstance(last, str)
    assert (last.message_id, last.size) == (record["guid"], 18_211 - 24)


def test_spam_score_marks_delivered_mail_only_when_asked() -> None:
    record = pod_record(NOW, "x@partner.example", ["u1@corp.example"], n=3, direction="inbound")
    record["filter"]["modules"]["spam"]["scores"]["overall"] = 95
    text = json.dumps(record)
    statuses = [getattr(parse_frame(text, score), "status", None) for score in (None, 90, 99)]
    assert statuses == ["delivered", "filtered_as_spam", "delivered"]
    record["filter"]["disposition"] = "reject"
    assert getattr(parse_frame(json.dumps(record), 90), "status", None) == "rejected"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "malformed_json"),
        ('{"msgParts": [{"a": "]"}', "malformed_json"),  # never closed
        ("[1, 2]", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        ('{"audit": {"action": "login"}}', "not_a_message"),
        ('{"envelope": {"from": "a@x.example"}}', "not_a_message"),
        # hostile shapes, refused in linear time
        ('{"msgParts": [' + "a" * 200_000 + '"', "malformed_json"),
        ('{"msgParts": [' + '"a\\\\' * 50_000, "malformed_json"),
        ('{"msgParts": ' + "[" * 50_000, "malformed_json"),
        ('{"envelope": ' + "[" * 100_000, "malformed_json"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_bad_frames_are_refused_by_reason(frame: str | bytes, reason: str) -> None:
    assert parse_frame(frame) == reason


_KEYS = st.sampled_from(["msgParts", "envelope", "rcpts", "from", "msg", "ts", "filter"])
_JSON = st.recursive(
    st.none() | st.text(max_size=20),
    lambda inner: st.lists(inner) | st.dictionaries(_KEYS, inner),
    max_leaves=20,
).map(json.dumps)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | _JSON)
def test_parse_frame_never_raises(frame: str) -> None:
    result = parse_frame(frame)
    assert isinstance(result, str) or isinstance(result.recipients, list)


def test_the_real_maillog_sample_is_refused_as_not_message_records() -> None:
    """Elastic's PoD sample holds ``type=maillog`` records (sendmail lines): a source
    pointed at the wrong stream type counts them, reads no row and never fails."""
    path = sample("elastic__integrations", "proofpoint_on_demand", "test-mail.log")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 18
    assert Counter(parse_frame(line) for line in lines) == Counter({"not_a_message": 18})


def test_windows_are_cut_at_whole_hours() -> None:
    begin = dt.datetime(2026, 5, 1, 10, 37, 5, tzinfo=dt.UTC)
    end = dt.datetime(2026, 5, 1, 13, 2, tzinfo=dt.UTC)
    cuts = split_windows(begin, end, dt.timedelta(hours=1))
    assert [(b.strftime("%H:%M:%S"), e.strftime("%H:%M:%S")) for b, e in cuts] == [
        ("10:37:05", "11:00:00"),
        ("11:00:00", "12:00:00"),
        ("12:00:00", "13:00:00"),
        ("13:00:00", "13:02:00"),
    ]
    days = split_windows(begin, begin + dt.timedelta(days=2), dt.timedelta(hours=24))
    assert [e.strftime("%d %H:%M") for _, e in days] == ["02 00:00", "03 00:00", "03 10:37"]


def test_options_refuse_an_inline_key_and_a_plain_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api_key.*reference"):
        create_source("proofpoint", "pod", {"cluster_id": CID, "api_key": KEY}, tmp_path)
    with pytest.raises(ConfigError, match="endpoint"):
        create_source(
            "proofpoint",
            "pod",
            {"cluster_id": CID, "api_key": {"$env": KEY_ENV}, "endpoint": "ws://x/v1/stream"},
            tmp_path,
        )
    declared = source_type("proofpoint")
    assert declared.reads == "stream"
    assert set(declared.collects) == set(RAW)
    assert declared.options["cluster_id"].startswith("(required)")


def test_a_missing_key_fails_before_any_unit_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    src = create_source(
        "proofpoint", "pod", {"cluster_id": CID, "api_key": {"$env": KEY_ENV}}, tmp_path
    )
    with pytest.raises(ConfigError, match=f"api_key: the environment variable {KEY_ENV}"):
        src.units(SourceState(None, NOW))
    with pytest.raises(PeriodRequired):
        src.units_between(None, None, NOW)


# --- reading over the websocket ------------------------------------------------------------
def test_a_window_is_read_whole_over_tls(pod: PodServer, tmp_path: Path) -> None:
    begin = (NOW - dt.timedelta(hours=6)).replace(minute=17, second=0)
    end = begin + dt.timedelta(hours=5)
    records, expected = pod_traffic(900, begin, end)
    # a message on a window's edge: the server sends it with both windows, it is read once
    edge = dt.datetime.fromtimestamp((int(begin.timestamp()) // 3600 + 2) * 3600, dt.UTC)
    extra, extra_rows = pod_traffic(1, edge, edge + dt.timedelta(seconds=1), start=5000)
    extra[0]["ts"] = edge.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    pod.add(records + extra)
    expected += [(pd.Timestamp(edge), *r[1:]) for r in extra_rows]

    chunks = read(source(pod, tmp_path), begin, end)
    assert ordered(rows_of(chunks)) == ordered(expected)
    assert len({r[1] for r in expected} | {r[2] for r in expected}) > 300  # many addresses
    assert Counter(r[3] for r in expected).keys() == {
        "delivered", "quarantined", "deferred", "rejected", "filtered_as_spam"
    }  # fmt: skip
    # the edge message, sent with both windows, is skipped by the earlier one
    assert total(chunks, "skipped") == Counter({"outside_window": len(extra_rows)})
    assert not total(chunks, "rejected")
    # one session per window, each with the key and the window's bounds
    assert all(s.authorised for s in pod.seen)
    assert len(pod.windows()) == 6
    assert pod.windows()[0][0] == begin.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert pod.windows()[-1][1] == end.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert all(w[0][14:] == "00:00.000000Z" for w in pod.windows()[1:])  # whole hours
    blob = frame_bytes(chunks)
    for secret in SECRETS:
        assert secret not in blob, secret


def test_a_wrong_key_fails_naming_the_options_never_the_key(pod: PodServer, tmp_path: Path) -> None:
    pod.key = "another-key"
    with pytest.raises(SourceError) as caught:
        read(source(pod, tmp_path), NOW - dt.timedelta(hours=1), NOW)
    message = str(caught.value)
    assert "HTTP 401" in message
    assert "api_key" in message
    assert "cluster_id" in message
    assert KEY not in message
    assert not isinstance(caught.value, RetriableSourceError)
    assert len(pod.seen) == 1  # no retry of a refused key


def test_a_drop_mid_stream_reconnects_and_skips_what_was_read(
    pod: PodServer, tmp_path: Path
) -> None:
    begin = NOW.replace(minute=0, second=0) - dt.timedelta(hours=1)
    records, expected = pod_traffic(200, begin, begin + dt.timedelta(minutes=59))
    pod.add(records)
    pod.drop_after = {0: 70, 1: 150}  # cut twice, without a close frame
    chunks = read(source(pod, tmp_path), begin, begin + dt.timedelta(hours=1))
    assert ordered(rows_of(chunks)) == ordered(expected)
    assert len(pod.seen) == 3
    assert len(set(pod.windows())) == 1  # the same window, read again from its start
    recipients = [len(json.loads(t)["envelope"]["rcpts"]) for _, t in pod.frames]
    repeated = sum(recipients[:70]) + sum(recipients[:150])
    assert total(chunks, "skipped") == Counter({"repeated_message": repeated})


def test_5xx_handshakes_are_retried_then_reported_as_retriable(
    pod: PodServer, tmp_path: Path
) -> None:
    begin = NOW.replace(minute=0, second=0) - dt.timedelta(hours=1)
    end = begin + dt.timedelta(minutes=55)
    records, expected = pod_traffic(30, begin, end)
    pod.add(records)
    pod.status_for = {0: 503, 1: 502, 2: 429}
    chunks = read(source(pod, tmp_path), begin, end)
    assert ordered(rows_of(chunks)) == ordered(expected)
    assert len(pod.seen) == 4

    pod.seen.clear()
    pod.status_always = 503
    with pytest.raises(RetriableSourceError, match=r"HTTP 503.*reads window .* again"):
        read(source(pod, tmp_path, max_retries=2), begin, end)
    assert len(pod.seen) == 3


def test_a_malformed_frame_is_counted_and_reading_goes_on(pod: PodServer, tmp_path: Path) -> None:
    begin = NOW - dt.timedelta(minutes=40)
    records, expected = pod_traffic(50, begin, NOW)
    pod.add(records)
    middle = pd.Timestamp(records[25]["ts"]).to_pydatetime()
    pod.frames += [
        (middle, '{"envelope": {"from": "x@y.example", "rcpts": ["u1@corp.exa'),
        (middle, "not json at all"),
        (middle, '{"audit": {"action": "login"}, "ts": "2026-01-01T00:00:00Z"}'),
        (
            middle,
            json.dumps(
                {**records[0], "guid": "other", "envelope": {"from": "a@b.example", "rcpts": []}}
            ),
        ),
    ]
    pod.frames.sort(key=lambda f: f[0])
    chunks = read(source(pod, tmp_path), begin, NOW)
    assert ordered(rows_of(chunks)) == ordered(expected)
    assert total(chunks, "rejected") == Counter(
        {"malformed_json": 2, "not_a_message": 1, "no_recipient": 1}
    )


def test_a_silent_stream_is_retried_or_ends_with_end_on_idle(
    pod: PodServer, tmp_path: Path
) -> None:
    # half an hour inside one whole hour: one window (windows are cut at whole hours)
    begin = NOW.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    end = begin + dt.timedelta(minutes=30)
    records, expected = pod_traffic(20, begin, end)
    pod.add(records)
    pod.hang_after = dict.fromkeys(range(10), 12)  # every session: 12 frames, then silence
    with pytest.raises(RetriableSourceError, match="sent nothing for 1 s"):
        read(source(pod, tmp_path, idle_seconds=1, max_retries=1), begin, end)
    assert len(pod.seen) == 2

    pod.seen.clear()
    chunks = read(source(pod, tmp_path, idle_seconds=1, end_on_idle=True), begin, end)
    got = rows_of(chunks)
    assert len(got) > 0
    assert set(got) <= set(expected)


def test_an_untrusted_certificate_is_refused(pod: PodServer, tmp_path: Path) -> None:
    opts = ProofpointOptions.model_validate({**options(pod), "ca_bundle": None})
    src = ProofpointSource("pod", opts, tmp_path, PodClient("pod", opts, tmp_path, lambda _: None))
    with pytest.raises(SourceError, match=r"not trusted.*ca_bundle"):
        read(src, NOW - dt.timedelta(minutes=5), NOW)
    assert pod.seen == []  # the key never left the client


def test_chunks_are_bounded(
    pod: PodServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connectors.proofpoint.CHUNK_ROWS", 1_000)
    begin = NOW.replace(minute=0, second=0) - dt.timedelta(hours=1)
    records, _ = pod_traffic(1_750, begin, begin + dt.timedelta(minutes=50))
    for record in records:  # lighter frames: two recipients each, no parts
        record["msgParts"] = []
        record["envelope"]["rcpts"] = ["a@x.example", "b@y.example"]
    pod.add(records)
    chunks = read(source(pod, tmp_path), begin, begin + dt.timedelta(hours=1))
    assert [len(c.frame) for c in chunks] == [1_000, 1_000, 1_000, 500]


# --- the command line --------------------------------------------------------------------------
def escort_mail() -> list[dict[str, Any]]:
    """u1 writes to an escort site on three days (once as alias1); a spammer of a listed
    site writes to u3 and is quarantined (received only: no evidence)."""
    site = ["book@www.escort-ads.test"]
    records = [
        pod_record(NOW - dt.timedelta(days=d, hours=1), sender, site, n=9000 + d)
        for d, sender in (
            (2, "u1@corp.example"),
            (1, "alias1@corp.example"),
            (0, "u1@corp.example"),
        )
    ]
    records.append(
        pod_record(
            NOW - dt.timedelta(hours=20),
            "offers@velvet-club.test",
            ["u3@corp.example"],
            n=9100,
            disposition="discard",
            folder="Spam",
            direction="inbound",
        )
    )
    return records


def pod_config(folder: Path, pod: PodServer, directory: Path, feed: Path, **extra: Any) -> Path:
    folder.mkdir(exist_ok=True)
    opts = {**options(pod, start_days=3, window_hours=24), **extra}
    flow = ", ".join(f"{k}: {json.dumps(v)}" for k, v in opts.items())
    return write_config(
        folder / "compliance.yaml",
        directory,
        feed,
        """
        store: var/store.db
        reports: {dir: reports, formats: [json]}
        schedule: {lock: var/run.lock}
        privacy: {key_rotation: never}
        """,
        sources=f"[{{name: pod, type: proofpoint, {flow}}}]",
    )


def stored(config: Path) -> dict[str, Any]:
    with store_db(config) as db:
        return {
            "totals": db.execute(
                "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3"
            ).fetchall(),
            "events": db.execute(
                "SELECT event_key, person, org_unit, direction, domain, status FROM events "
                "ORDER BY 1"
            ).fetchall(),
            "alerts": db.execute("SELECT policy, rule_id, person, org_unit FROM alerts").fetchall(),
            "runs": db.execute("SELECT status FROM runs ORDER BY id").fetchall(),
            "bookmark": db.execute("SELECT watermark FROM bookmarks").fetchall(),
        }


def background(pod: PodServer, hours: float = 70, messages: int = 400) -> list[Row]:
    records, rows = pod_traffic(
        messages, NOW - dt.timedelta(hours=hours), NOW - dt.timedelta(minutes=5)
    )
    pod.add(records + escort_mail())
    return rows


def test_run_end_to_end_alerts_and_keeps_no_address(
    pod: PodServer, tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = background(pod)
    config = pod_config(tmp_path / "job", pod, directory_csv, escort_feed)
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 new alert(s)" in result.output
    state = stored(config)
    # every message once: internal, inbound and outbound (a bounce without a sender is refused)
    messages = {(r[5], r[1], r[2]) for r in rows if r[1] is not None}
    assert sum(t[3] for t in state["totals"]) == len(messages) + 4
    escort = [e for e in state["events"] if e[4] == "www.escort-ads.test"]
    assert [(e[2], e[3], e[5]) for e in escort] == [("Sales/EMEA", "outbound", "delivered")] * 3
    assert len({e[1] for e in escort}) == 1  # the alias is the same person
    spam = [e for e in state["events"] if e[4] == "velvet-club.test"]
    assert [(e[3], e[5]) for e in spam] == [("inbound", "quarantined")]
    assert [(a[0], a[1], a[3]) for a in state["alerts"]] == [
        ("escort-ads", "repeated-contact", "Sales/EMEA")
    ]
    (bookmark,) = state["bookmark"][0]
    assert NOW.strftime("%Y-%m-%dT%H:%M:%SZ") <= bookmark
    blob = read_all_bytes(tmp_path / "job")
    for secret in (*SECRETS, KEY.encode(), b"msgParts"):
        assert secret not in blob, secret
    for address in {r[1] for r in rows if r[1]} | {r[2] for r in rows}:
        assert address.encode() not in blob, address
    assert b"escort-ads.test" in blob  # the external site is kept, as a domain

    # the next run re-reads its overlap (an hour before the bookmark): nothing counted twice
    first_run = len(pod.windows())
    again = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "0 new alert(s)" in again.output
    assert stored(config)["totals"] == state["totals"]
    overlap = _utc(bookmark.replace("Z", ".000000Z"))
    assert overlap is not None
    assert pod.windows()[first_run][0] == _stamp(overlap - dt.timedelta(hours=1))


def test_audit_reads_a_period_and_refuses_an_open_one(
    pod: PodServer, tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    background(pod)
    config = pod_config(tmp_path / "job", pod, directory_csv, escort_feed)
    since = (NOW - dt.timedelta(days=3)).date().isoformat()
    args = ["audit", "--config", str(config), "--source", "pod", "--format", "json"]
    result = CliRunner().invoke(cli, [*args, "--since", since])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(a["rule_id"], a["org_unit"]) for a in report["alerts"]] == [
        ("repeated-contact", "Sales/EMEA")
    ]
    assert "@corp.example" not in result.output
    open_ended = CliRunner().invoke(cli, args)
    assert open_ended.exit_code == 2
    assert "--source pod needs --since (the PoD log archive keeps 30 days)" in open_ended.output
    too_old = (NOW - dt.timedelta(days=40)).date().isoformat()
    refused = CliRunner().invoke(cli, [*args, "--since", too_old])
    assert refused.exit_code == 5
    assert "30 days" in refused.output


def test_sources_check_opens_a_past_minute_and_keeps_nothing(
    pod: PodServer, tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    records, _ = pod_traffic(5, NOW - dt.timedelta(minutes=2), NOW - dt.timedelta(minutes=1))
    pod.add(records)
    config = pod_config(tmp_path / "job", pod, directory_csv, escort_feed)
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "source pod (proofpoint)" in result.output
    assert f"log stream of cluster {CID} at 127.0.0.1 reachable" in result.output
    assert "@" not in result.output
    assert KEY not in result.output
    since, until = pod.windows()[0]
    assert _utc(until) - _utc(since) == dt.timedelta(minutes=1)  # type: ignore[operator]
    assert not (tmp_path / "job" / "var" / "store.db").exists()

    pod.key = "rotated-key"
    failed = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert failed.exit_code == 5
    assert "FAIL" in failed.output
    assert "api_key" in failed.output
    assert KEY not in failed.output


def test_a_run_killed_mid_window_resumes_without_loss_or_double_count(
    pod: PodServer, tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # from before the first run's reach (start_days: 3), so that its first window, however
    # short the time of day makes it, holds mail
    background(pod, hours=73, messages=600)
    config = pod_config(tmp_path / "job", pod, directory_csv, escort_feed)
    # the third window's session stops after 25 messages: the two before it are committed,
    # so the resumed run's overlap (an hour before the bookmark) stays within what the first
    # run reached, whatever the time of day (a first window shorter than the overlap would
    # let the resumed run read mail from before the first run's reach)
    pod.hang_after = {2: 25}
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance", "run", "--config", str(config)],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert pod.hung.wait(60), "the run never reached the third window"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    pod.release.set()
    crashed = stored(config)
    assert crashed["runs"] == [("running",)]
    first_end = pod.windows()[1][1]
    assert crashed["bookmark"] == [(first_end.replace(".000000Z", "Z"),)]  # windows 1-2 kept
    assert sum(t[3] for t in crashed["totals"]) > 0

    pod.hang_after = {}
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    resumed = stored(config)
    assert resumed["runs"] == [("interrupted",), ("ok",)]
    # the resumed run starts an hour (the overlap) before the end of the committed window
    first_end_at = _utc(first_end)
    assert first_end_at is not None
    assert pod.windows()[3][0] == _stamp(first_end_at - dt.timedelta(hours=1))

    reference = pod_config(tmp_path / "reference", pod, directory_csv, escort_feed)
    assert CliRunner().invoke(cli, ["run", "--config", str(reference)]).exit_code == 0
    clean = stored(reference)
    assert resumed["totals"] == clean["totals"]
    assert resumed["events"] == clean["events"]
    assert resumed["alerts"] == clean["alerts"]


@pytest.mark.slow
def test_throughput_over_loopback(
    pod: PodServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """50,000 full-size messages (with parts) over TLS in one window: rows per second."""
    begin = NOW - dt.timedelta(minutes=59)
    records, expected = pod_traffic(50_000, begin, NOW)
    pod.add(records)
    clock = time.perf_counter()
    chunks = read(source(pod, tmp_path), begin, NOW)
    seconds = time.perf_counter() - clock
    assert sum(len(c.frame) for c in chunks) == len(expected)
    with capsys.disabled():
        print(
            f"\nPoD over loopback TLS: {len(records)} messages, {len(expected)} rows in "
            f"{seconds:.1f} s: {len(expected) / seconds:,.0f} rows/s"
        )


# --- the conformance kit ---------------------------------------------------------------------
#: How a status of the kit's synthetic mail is written as a PoD disposition (and folder).
DISPOSITIONS = {
    "delivered": ("continue", None),
    "quarantined": ("discard", "Spam"),
    "filtered_as_spam": ("discard", None),
    "rejected": ("reject", None),
    "deferred": ("retry", None),
    "bounced": ("bounce", None),
    "unknown": ("pending-review", None),
}


class PodHarness(Harness):
    """The kit's synthetic mail served as PoD message records. A message whose recipients
    end differently becomes one record per outcome, as PoD splits such messages. The
    clock stands still, except that appended mail arrives later."""

    def __init__(self, pod: PodServer) -> None:
        self.pod = pod
        self.clock = NOW

    def source(self, folder: Path) -> ProofpointSource:
        opts = ProofpointOptions.model_validate(options(self.pod, start_days=3, window_hours=6))
        client = PodClient("conformance", opts, folder, sleep=lambda _s: None)
        return ProofpointSource("conformance", opts, folder, client)

    @staticmethod
    def records(messages: list[Message], first: int) -> list[dict[str, Any]]:
        out = []
        for k, message in enumerate(messages):
            outcomes: dict[str, list[str]] = {}
            for recipient, status in zip(message.recipients, message.statuses, strict=True):
                outcomes.setdefault(status, []).append(recipient)
            for j, (status, rcpts) in enumerate(outcomes.items()):
                disposition, folder = DISPOSITIONS[status]
                record = pod_record(
                    message.timestamp,
                    message.sender,
                    rcpts,
                    n=first + 10 * k + j,
                    disposition=disposition,
                    folder=folder,
                    message_id=message.message_id,
                    size=message.size,
                )
                record["msg"]["header"]["subject"] = [message.subject]
                record["msg"]["header"]["from"] = [f'"{message.sender_name}" <{message.sender}>']
                record["connection"]["ip"] = message.client_ip
                out.append(record)
        return out

    def write(self, folder: Path, messages: int, seed: int) -> Written:
        mail = traffic(
            messages, seed, start=NOW - dt.timedelta(days=2), span=dt.timedelta(hours=40)
        )
        self.pod.frames.clear()
        self.pod.add(self.records(mail, 100_000 * seed))
        return Written.of_messages(mail)

    def write_malformed(self, folder: Path) -> Written:
        written = self.write(folder, 40, 3)
        at = NOW - dt.timedelta(days=1)
        self.pod.frames += [
            (at, '{"envelope": {"from": "x@y.example", "rcpts": ["u1@corp.exa'),
            (at, '{"audit": {"action": "login"}}'),
            (at, "[]"),
        ]
        self.pod.frames.sort(key=lambda f: f[0])
        return Written(written.rows, {"malformed_json": 2, "not_a_message": 1}, written.forbidden)

    def append(self, folder: Path, messages: int, seed: int) -> Written:
        start = self.clock + dt.timedelta(minutes=5)
        mail = traffic(messages, seed, start=start, span=dt.timedelta(hours=1))
        self.clock += dt.timedelta(hours=2)
        self.pod.add(self.records(mail, 100_000 * seed + 50_000))
        return Written.of_messages(mail)

    def now(self) -> dt.datetime:
        return self.clock


@pytest.mark.slow
def test_the_connector_conformance_kit_passes(pod: PodServer, tmp_path: Path) -> None:
    # conformance: proofpoint
    check_source(PodHarness(pod), tmp_path, messages=200, max_kills=12)


def test_ca_bundle_replaces_the_system_cas(tmp_path: Path) -> None:
    opts = {"cluster_id": CID, "api_key": {"$env": KEY_ENV}, "ca_bundle": "missing.pem"}
    with pytest.raises(ConfigError, match=r"ca_bundle .*missing\.pem does not exist"):
        create_source("proofpoint", "pod", opts, tmp_path)
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        create_source("proofpoint", "pod", {**opts, "ca_bundle": "empty.pem"}, tmp_path)
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    src = create_source("proofpoint", "pod", {**opts, "ca_bundle": "ca.pem"}, tmp_path)
    assert isinstance(src, ProofpointSource)
    assert len(src.client.context.get_ca_certs()) == 1


def test_nothing_logged_holds_the_key_or_content_even_at_debug(
    pod: PodServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    begin = NOW.replace(minute=0, second=0) - dt.timedelta(hours=1)
    records, expected = pod_traffic(40, begin, begin + dt.timedelta(minutes=50))
    pod.add(records)
    pod.drop_after = {0: 10}
    caplog.set_level(logging.DEBUG)
    chunks = read(source(pod, tmp_path), begin, begin + dt.timedelta(hours=1))
    assert len(rows_of(chunks)) == len(expected)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("websockets.server")  # the test server's own log
    )
    assert "reconnecting (1)" in logged
    for secret in (KEY, "@", "Bearer", "BODY-SECRET", "SUBJECT-SECRET", "CONFIDENTIAL"):
        assert secret not in logged, secret
