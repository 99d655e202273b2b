"""The webhook and Teams deliveries against a real HTTPS server on loopback
(tests/https_server.py): TLS from a throwaway CA (trustme), nothing mocked; the server keeps
every header and body byte it received."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from compliance.deliveries.webhook import (
    ADAPTIVE_CARD,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Teams,
    Webhook,
    parse_endpoint,
    sign,
)
from compliance.delivery import Attachment, Message, WrittenReport
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from tests.https_server import REQUEST_ID, Reply, Running, serve

SECRET_ENV = "WEBHOOK_TEST_SECRET"
SECRET = "whsec-0123456789abcdef0123456789abcdef"
TEAMS_ENV = "TEAMS_TEST_URL"
SIG = "Zx9sig-Very-Secret-Signature-Value"
TEAMS_PATH = f"/workflows/4f1c/triggers/manual/paths/invoke?api-version=1&sp=run&sig={SIG}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
REPORT_BYTES = b"<html><body>report body: p-3f9a0c1e2b7d Sales/EMEA</body></html>"


# --- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path) -> Iterator[Running]:
    with serve(ca, tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def message(key: str = "report=monthly|2026-10-01..2026-10-31|team|abc|hook") -> Message:
    return Message(
        key=key,
        subject="Compliance report 2026-10-01 to 2026-10-31",
        text="3 new alert(s), 1 updated.\n\nOpen the attached report for details.",
        html="<p>chart <img src='cid:chart1'></p>",
        attachments=(
            Attachment("report.html", "text/html", REPORT_BYTES),
            Attachment("chart.png", "image/png", PNG, inline_id="chart1"),
        ),
        events=(
            {
                "alert": "A-17",
                "policy": "gambling",
                "severity": "high",
                "state": "new",
                "first_day": dt.date(2026, 10, 3),
            },
            {"alert": "A-09", "policy": "adult", "severity": "medium", "state": "updated"},
        ),
        report=WrittenReport(
            files=[Path("/srv/reports/report.html"), Path("/srv/reports/report.json")],
            audience="team",
            first_day="2026-10-01",
            last_day="2026-10-31",
        ),
    )


def webhook(server: Running | None, tmp_path: Path, **overrides: Any) -> Webhook:
    options: dict[str, Any] = {
        "url": server.url() if server else "https://hooks.corp.example/compliance",
        "secret": {"$env": SECRET_ENV},
        "ca_bundle": str(server.ca_bundle) if server else None,
        "timeout": 5,
        **overrides,
    }
    delivery = Webhook.create("soc-hook", options, tmp_path)
    assert isinstance(delivery, Webhook)
    return delivery


def teams(server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Teams:
    monkeypatch.setenv(TEAMS_ENV, server.url(TEAMS_PATH))
    options = {"url": {"$env": TEAMS_ENV}, "ca_bundle": str(server.ca_bundle), "timeout": 5, **kw}
    delivery = Teams.create("ethics-teams", options, tmp_path)
    assert isinstance(delivery, Teams)
    return delivery


def expected_signature(timestamp: str, body: bytes) -> str:
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the signed JSON POST ---------------------------------------------------------------
def test_body_and_signature_verify_with_the_secret(server: Running, tmp_path: Path) -> None:
    delivery = webhook(server, tmp_path)
    msg = message()
    assert delivery.deliver(msg) == f"HTTP 200 (request id {REQUEST_ID})"

    [got] = server.recorder.received
    assert got.target == "/hooks/compliance"
    assert got.header("Content-Type") == "application/json; charset=utf-8"
    timestamp = got.header(TIMESTAMP_HEADER)
    assert timestamp is not None and timestamp.isdigit()
    assert got.header(SIGNATURE_HEADER) == expected_signature(timestamp, got.body)
    assert hmac.compare_digest(
        got.header(SIGNATURE_HEADER) or "", sign(SECRET, int(timestamp), got.body)
    )
    assert got.header(DELIVERY_HEADER) == msg.digest()

    body = got.json()
    assert list(body) == ["id", "subject", "text", "report", "events"]
    assert body["id"] == msg.digest()
    assert body["subject"] == msg.subject
    assert body["text"] == msg.text
    assert body["report"] == {
        "audience": "team",
        "first_day": "2026-10-01",
        "last_day": "2026-10-31",
        "files": ["report.html", "report.json"],
    }
    assert body["events"][0] == {
        "alert": "A-17", "policy": "gambling", "severity": "high", "state": "new",
        "first_day": "2026-10-03",
    }  # fmt: skip
    assert len(body["events"]) == 2
    # the summary and events only: no file's content, no folder
    assert b"report body" not in got.body
    assert base64.b64encode(REPORT_BYTES) not in got.body
    assert b"/srv/reports" not in got.body


def test_a_tampered_body_or_old_timestamp_does_not_verify(server: Running, tmp_path: Path) -> None:
    delivery = webhook(server, tmp_path)
    delivery.clock = lambda: 1_800_000_000.7
    delivery.deliver(message())
    [got] = server.recorder.received
    assert got.header(TIMESTAMP_HEADER) == "1800000000"
    signature = got.header(SIGNATURE_HEADER)
    assert signature == expected_signature("1800000000", got.body)
    assert signature != expected_signature("1800000000", got.body.replace(b"3 new", b"0 new"))
    assert signature != expected_signature("1799999000", got.body)  # the time is signed
    wrong = hmac.new(b"another-secret-0123456789", b"1800000000." + got.body, hashlib.sha256)
    assert signature != "sha256=" + wrong.hexdigest()


def test_the_delivery_id_is_the_same_on_a_second_attempt(server: Running, tmp_path: Path) -> None:
    server.recorder.replies.append(Reply(status=500))
    delivery = webhook(server, tmp_path)
    with pytest.raises(RetriableDeliveryError, match="HTTP 500"):
        delivery.deliver(message())
    assert delivery.deliver(message()).startswith("HTTP 200")  # a later run, same Message
    first, second = server.recorder.received
    assert first.header(DELIVERY_HEADER) == second.header(DELIVERY_HEADER) == message().digest()
    assert first.body == second.body  # the same bytes, so the same audit hash
    # another message (another period) has another id
    webhook(server, tmp_path).deliver(message(key="report=monthly|2026-11-01..2026-11-30"))
    assert server.recorder.received[2].header(DELIVERY_HEADER) != first.header(DELIVERY_HEADER)


def test_attach_sends_the_files_base64(server: Running, tmp_path: Path) -> None:
    webhook(server, tmp_path, attach=True).deliver(message())
    body = server.recorder.received[0].json()
    assert body["attachments"] == [
        {
            "name": "report.html",
            "content_type": "text/html",
            "size": len(REPORT_BYTES),
            "data": base64.b64encode(REPORT_BYTES).decode(),
        }
    ]  # the inline chart of the HTML (which a webhook does not carry) is not sent


def test_extra_headers_are_sent_with_credentials_resolved(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIEM_API_KEY", "k-123456")
    headers = {"X-Tenant": "corp", "X-Api-Key": {"$env": "SIEM_API_KEY"}}
    webhook(server, tmp_path, headers=headers).deliver(message())
    [got] = server.recorder.received
    assert got.header("X-Tenant") == "corp"
    assert got.header("X-Api-Key") == "k-123456"


def test_any_2xx_is_success_and_the_receipt_holds_no_content(
    server: Running, tmp_path: Path
) -> None:
    server.recorder.replies.append(Reply(status=204, headers={"X-Request-Id": "bad id\twith"}))
    assert webhook(server, tmp_path).deliver(message()) == "HTTP 204"


# --- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply(status=500), "unavailable or busy: HTTP 500"),
        (Reply(status=503, headers={"Retry-After": "120"}), "Retry-After: 120 s"),
        (
            Reply(status=429, body={"error": {"code": "TooManyRequests"}}),
            "HTTP 429 TooManyRequests",
        ),
        (Reply(status=408), "HTTP 408"),
        (Reply(drop=True), "closed the connection"),
    ],
    ids=["500", "503", "429", "408", "dropped"],
)
def test_server_failures_are_retriable(
    server: Running, tmp_path: Path, reply: Reply, text: str
) -> None:
    server.recorder.replies.append(reply)
    with pytest.raises(RetriableDeliveryError, match=text):
        webhook(server, tmp_path).deliver(message())
    assert len(server.recorder.received) == 1


def test_a_timeout_is_retriable(server: Running, tmp_path: Path) -> None:
    server.recorder.replies.append(Reply(hang=True))
    with pytest.raises(RetriableDeliveryError, match=r"no answer within 0.3 s"):
        webhook(server, tmp_path, timeout=0.3).deliver(message())


def test_a_refused_connection_is_retriable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(RetriableDeliveryError, match="connection refused"):
        webhook(None, tmp_path, url=url).deliver(message())


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (400, "HTTP 400: the endpoint refused the payload"),
        (401, "not authorised"),
        (404, "no such endpoint"),
        (410, "gone"),
        (302, "a redirect"),
    ],
)
def test_refusals_are_not_retriable(
    server: Running, tmp_path: Path, status: int, text: str
) -> None:
    server.recorder.replies.append(Reply(status=status, headers={"Location": "https://x.test/"}))
    with pytest.raises(DeliveryError, match=text) as caught:
        webhook(server, tmp_path).deliver(message())
    assert not isinstance(caught.value, RetriableDeliveryError)


def test_an_untrusted_certificate_is_refused(server: Running, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    for bundle in (None, str(other)):  # the system's CAs; another CA
        with pytest.raises(DeliveryError, match="TLS certificate not trusted") as caught:
            webhook(server, tmp_path, ca_bundle=bundle).deliver(message())
        assert not isinstance(caught.value, RetriableDeliveryError)
        assert "ca_bundle" in str(caught.value)
    assert server.recorder.received == []  # nothing was sent


def test_missing_or_short_secret_is_a_delivery_error(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(DeliveryError, match="shorter than 16"):
        webhook(server, tmp_path).deliver(message())
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(DeliveryError, match=f"{SECRET_ENV} is not set"):
        webhook(server, tmp_path).deliver(message())
    assert server.recorder.received == []


def test_an_event_json_cannot_encode_is_refused(server: Running, tmp_path: Path) -> None:
    bad = Message(key="k", subject="s", text="t", events=({"x": object()},))
    with pytest.raises(DeliveryError, match="cannot be encoded as JSON") as caught:
        webhook(server, tmp_path).deliver(bad)
    assert not isinstance(caught.value, RetriableDeliveryError)


def test_query_strings_are_masked_and_no_content_is_logged(
    server: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    delivery = webhook(server, tmp_path, url=server.url(f"/hook?code={SIG}"))
    errors = []
    for status in (200, 500, 404):
        server.recorder.replies.append(Reply(status=status))
        try:
            delivery.deliver(message())
        except DeliveryError as exc:
            errors.append(str(exc))
    seen = "\n".join([*errors, caplog.text])
    assert "/hook?…" in seen
    msg = message()
    for secret in (SIG, SECRET, msg.subject, msg.text, "A-17", "gambling"):
        assert secret not in seen
    assert "delivered message" in caplog.text


# --- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"url": "http://hooks.corp.example/x"}, "url: .*only to a loopback host"),
        ({"url": "ftp://hooks.corp.example/x"}, "url: must be an https:// URL"),
        ({"url": "https://user:pw@hooks.corp.example/x"}, "must not carry a user name"),
        ({"url": "https:///x"}, "must name a host"),
        ({"timout": 5}, "'soc-hook': timout: unknown option"),
        ({"secret": SECRET}, "secret: .*write a reference"),
        ({"headers": {"Authorization": "Bearer abc"}}, "Authorization carries a credential"),
        ({"headers": {"X-Compliance-Signature": "x"}}, "set by the delivery itself"),
        ({"headers": {"Bad Name": "x"}}, "HTTP token"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_invalid_options_are_refused_at_config_time(
    tmp_path: Path, overrides: dict[str, Any], text: str
) -> None:
    with pytest.raises(ConfigError, match=text) as caught:
        webhook(None, tmp_path, **overrides)
    assert "Bearer abc" not in str(caught.value)


def test_http_only_to_loopback_and_secret_option_required(tmp_path: Path) -> None:
    for url in ("http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x"):
        assert webhook(None, tmp_path, url=url).settings.url == url
    with pytest.raises(ConfigError, match="secret: Field required"):
        Webhook.create("h", {"url": "https://hooks.corp.example/"}, tmp_path)
    assert (
        parse_endpoint("https://h.example/p?sig=1").shown(secret=False) == "https://h.example/p?…"
    )
    assert parse_endpoint("https://h.example:8443").target == "/"


def test_check_connects_and_sends_nothing(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = webhook(server, tmp_path).check()
    assert all(ok for ok, _ in results), results
    assert "TLS verified" in results[-1][1]
    monkeypatch.delenv(SECRET_ENV)
    ok, text = webhook(server, tmp_path).check()[-1]
    assert not ok and SECRET_ENV in text
    assert server.recorder.received == []


# --- Teams ------------------------------------------------------------------------------
def test_teams_posts_an_adaptive_card(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.recorder.replies.append(Reply(status=202, headers={"x-ms-workflow-run-id": "0858"}))
    msg = message()
    assert teams(server, tmp_path, monkeypatch).deliver(msg) == "HTTP 202 (request id 0858)"
    [got] = server.recorder.received
    assert got.target == TEAMS_PATH
    assert got.header(SIGNATURE_HEADER) is None  # the URL's own signature authorises
    payload = got.json()
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == ADAPTIVE_CARD
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert all(b["type"] == "TextBlock" and isinstance(b["text"], str) for b in card["body"])
    assert all(b["wrap"] is True for b in card["body"])
    texts = [b["text"] for b in card["body"]]
    assert texts == [
        msg.subject,
        "3 new alert(s), 1 updated.",
        "Open the attached report for details.",
    ]
    assert card["body"][0]["weight"] == "Bolder"
    assert card["body"][2]["spacing"] == "Medium"  # a new paragraph
    # the card carries no event, no file
    assert b"A-17" not in got.body and b"report body" not in got.body


def test_teams_card_is_shortened_to_fit() -> None:
    long = Message(
        key="k", subject="s", text="\n".join(f"line {i} " + "x" * 200 for i in range(400))
    )
    card = Teams.card(long)
    body = card["attachments"][0]["content"]["body"]
    assert len(str(card)) < 28_000
    assert body[-1]["text"].startswith("(") and "more line(s) not shown" in body[-1]["text"]


def test_teams_url_never_appears_in_errors_or_logs(
    server: Running,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    delivery = teams(server, tmp_path, monkeypatch)
    errors: list[str] = []
    server.recorder.replies += [
        Reply(status=202),
        Reply(status=400, body={"error": {"code": "TriggerInputSchemaMismatch", "message": SIG}}),
        Reply(status=404),
        Reply(status=429),
        Reply(status=502),
        Reply(drop=True),
    ]
    for _ in range(6):
        try:
            delivery.deliver(message())
        except DeliveryError as exc:
            errors.append(str(exc))
    assert len(errors) == 5
    assert "HTTP 400 TriggerInputSchemaMismatch" in errors[0]
    # a certificate not trusted, a URL that is not https, a missing variable
    untrusted = Teams.create("ethics-teams", {"url": {"$env": TEAMS_ENV}}, tmp_path)
    monkeypatch.setenv("TEAMS_PLAIN_URL", f"http://teams.corp.example{TEAMS_PATH}")
    plain = Teams.create("ethics-teams", {"url": {"$env": "TEAMS_PLAIN_URL"}}, tmp_path)
    unset = Teams.create("ethics-teams", {"url": {"$env": "TEAMS_UNSET_URL"}}, tmp_path)
    for other in (untrusted, plain, unset):
        with pytest.raises(DeliveryError) as caught:
            other.deliver(message())
        errors.append(str(caught.value))
        errors += [text for _, text in other.check()]
    assert any("(from its reference) http:// (no encryption)" in e for e in errors)
    assert any("TLS certificate not trusted" in e for e in errors)
    assert any("TEAMS_UNSET_URL is not set" in e for e in errors)
    seen = "\n".join([*errors, caplog.text])
    for secret in (SIG, TEAMS_PATH, server.url(TEAMS_PATH), "/workflows/", "teams.corp.example"):
        assert secret not in seen
    assert "teams delivery 'ethics-teams' (127.0.0.1)" in seen


def test_teams_url_must_be_a_reference(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"url: .*write a reference") as caught:
        Teams.create("t", {"url": f"https://prod.example{TEAMS_PATH}"}, tmp_path)
    assert SIG not in str(caught.value)
    with pytest.raises(ConfigError, match="headers: unknown option"):
        Teams.create("t", {"url": {"$env": TEAMS_ENV}, "headers": {}}, tmp_path)


# --- through a proxy --------------------------------------------------------------------
class _ConnectProxy(socketserver.ThreadingTCPServer):
    """A real HTTP proxy on loopback that tunnels CONNECT and records each request line
    and its Proxy-Authorization; it never sees inside the TLS it relays."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.seen: list[tuple[str, str | None]] = []


class _Tunnel(socketserver.StreamRequestHandler):
    server: _ConnectProxy

    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").strip()
        auth = None
        while line := self.rfile.readline().decode("latin-1").strip():
            name, _, value = line.partition(":")
            if name.lower() == "proxy-authorization":
                auth = value.strip()
        self.server.seen.append((request, auth))
        method, target, _ = request.split(" ", 2)
        if method != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        sockets = [self.connection, upstream]
        with upstream:
            while True:
                ready, _, _ = select.select(sockets, [], [], 5)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)


@pytest.fixture
def proxy() -> Iterator[_ConnectProxy]:
    server = _ConnectProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_environment_proxy_tunnels_the_request_and_no_proxy_bypasses_it(
    server: Running, tmp_path: Path, proxy: _ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = proxy.server_address[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://relay:s3cret@127.0.0.1:{port}")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    delivery = webhook(server, tmp_path)
    assert delivery.deliver(message()).startswith("HTTP 200")
    target = server.url().split("://", 1)[1].split("/", 1)[0]
    assert proxy.seen == [
        (f"CONNECT {target} HTTP/1.0", "Basic " + base64.b64encode(b"relay:s3cret").decode())
    ]
    assert len(server.recorder.received) == 1  # the TLS went end to end, checked by our CA
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    webhook(server, tmp_path).deliver(message())
    assert len(proxy.seen) == 1 and len(server.recorder.received) == 2


def test_a_configured_proxy_wins_and_none_connects_directly(
    server: Running, tmp_path: Path, proxy: _ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    port = proxy.server_address[1]
    webhook(server, tmp_path, proxy=f"http://127.0.0.1:{port}").deliver(message())
    assert len(proxy.seen) == 1 and proxy.seen[0][1] is None
    webhook(server, tmp_path, proxy="none").deliver(message())
    assert len(proxy.seen) == 1 and len(server.recorder.received) == 2
    with pytest.raises(DeliveryError, match="proxy must be an http:// URL"):
        webhook(server, tmp_path, proxy="socks5://127.0.0.1:1080").deliver(message())
