"""The SMTP delivery against a real SMTP server on loopback (aiosmtpd, tests/smtp_server.py).

TLS comes from a throwaway CA (trustme); nothing is mocked: smtplib speaks STARTTLS,
implicit TLS and AUTH to the server, which keeps every byte it received.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from compliance.deliveries.smtp import Smtp, SmtpOptions, is_loopback
from compliance.delivery import DELIVERIES, Attachment, Message
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from tests.smtp_server import (
    PASSWORD,
    QUEUE_REPLY,
    USERNAME,
    Recorder,
    Running,
    hang_up_mid_message,
    identities_in,
    serve,
)

PASSWORD_ENV = "SMTP_TEST_PASSWORD"
FROM = "Ethics office <reports@corp.example>"
TO = ["ethics@corp.example", "board@corp.example"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
#: Who the input data was about: none of it may reach a mail server.
IDENTITIES = [
    "alice.martin@corp.example",
    "Alice Martin",
    "amartin",
    "p-3f9a0c1e2b7d",
    "Sales/EMEA",
    "Engineering/Platform",
    "escort-ads.test",
]


# --- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def starttls(cert: trustme.LeafCert) -> Iterator[Running]:
    with serve(cert=cert, auth=True) as running:
        yield running


def options(server: Running | None = None, **overrides: Any) -> dict[str, Any]:
    """A channel's options, as a config file would give them."""
    base: dict[str, Any] = {
        "host": server.host if server else "smtp.corp.example",
        "from_address": FROM,
        "reply_to": "ethics-team@corp.example",
        "to": list(TO),
        "timeout": 5,
    }
    if server is not None:
        base["port"] = server.port
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def authenticated(server: Running, ca_pem: Path, **overrides: Any) -> dict[str, Any]:
    return options(
        server,
        username=USERNAME,
        password={"$env": PASSWORD_ENV},
        ca_bundle=str(ca_pem),
        **overrides,
    )


def channel(opts: dict[str, Any], base_dir: Path) -> Smtp:
    return Smtp.from_config("ethics-mail", opts, base_dir)


def report(key: str = "monthly|2026-10|team|ethics-mail", **overrides: Any) -> Message:
    """A digest as the report schedules will send it: text, HTML, a chart, a CSV."""
    fields: dict[str, Any] = {
        "key": key,
        "subject": "Acceptable-use report: 2026-10-01 to 2026-10-31",
        "text": "3 alerts: 1 new, 1 updated, 1 unchanged.\nOpen the attached report.\n",
        "html": (
            '<p style="font-family:sans-serif">3 alerts: 1 new, 1 updated, 1 unchanged.</p>'
            '<img src="cid:alerts-per-week" alt="Alerts per week by severity">'
        ),
        "attachments": (
            Attachment("alerts-per-week.png", "image/png", PNG, inline_id="alerts-per-week"),
            Attachment("report.csv", "text/csv", b"id,severity,state\n1,high,new\n"),
        ),
    }
    fields.update(overrides)
    return Message(**fields)


def everything(server: Running) -> list[bytes]:
    """Every byte the server received: each connection's transcript and each message."""
    return [bytes(t) for t in server.recorder.transcripts] + [
        r.data for r in server.recorder.received
    ]


# --- delivery ---------------------------------------------------------------------------
def test_starttls_with_auth_delivers_the_whole_message(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    delivery = channel(authenticated(starttls, ca_pem), tmp_path)
    message = report()

    receipt = delivery.deliver(message)

    assert receipt == QUEUE_REPLY
    [got] = starttls.recorder.received
    assert got.authenticated
    assert got.mail_from == "reports@corp.example"
    assert got.rcpt_tos == TO
    assert starttls.recorder.logins == [(USERNAME.encode(), PASSWORD.encode())]
    transcript = bytes(starttls.recorder.transcripts[-1])
    assert transcript.index(b"STARTTLS") < transcript.index(b"AUTH")

    mail = got.message()
    assert mail["Subject"] == message.subject
    assert mail["From"] == FROM
    assert mail["To"] == ", ".join(TO)
    assert mail["Reply-To"] == "ethics-team@corp.example"
    assert mail["Message-ID"] == message.message_id("corp.example")
    assert mail["Date"].datetime.tzinfo is not None
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "multipart/mixed"

    alternative, csv = mail.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, related = alternative.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert text.get_content() == message.text
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert html.get_content().rstrip("\n") == message.html
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<alerts-per-week>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    assert csv.get_content_type() == "text/csv"
    assert csv.get_filename() == "report.csv"
    assert csv.get_content_disposition() == "attachment"
    assert csv.get_content() == "id,severity,state\n1,high,new\n"


def test_a_second_attempt_of_one_key_has_the_same_message_id(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    delivery = channel(authenticated(starttls, ca_pem), tmp_path)
    delivery.deliver(report())
    channel(authenticated(starttls, ca_pem), tmp_path).deliver(report())  # a later run
    delivery.deliver(report(key="monthly|2026-11|team|ethics-mail"))

    first, again, other = (r.message()["Message-ID"] for r in starttls.recorder.received)
    assert first == again == report().message_id("corp.example")
    assert other != first


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_on_its_own_port(cert: trustme.LeafCert, ca_pem: Path, tmp_path: Path) -> None:
    with serve(cert=cert, implicit_tls=True, auth=True) as server:
        delivery = channel(authenticated(server, ca_pem, security="tls"), tmp_path)
        assert delivery.deliver(report()) == QUEUE_REPLY
        [got] = server.recorder.received
        assert got.authenticated
        assert b"STARTTLS" not in bytes(server.recorder.transcripts[-1])


def test_plain_text_only_message(starttls: Running, ca_pem: Path, tmp_path: Path) -> None:
    channel(authenticated(starttls, ca_pem), tmp_path).deliver(report(html=None, attachments=()))
    mail = starttls.recorder.received[0].message()
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content() == report().text


def test_no_tls_is_allowed_to_a_loopback_relay(tmp_path: Path) -> None:
    with serve() as server:
        delivery = channel(options(server, security="none"), tmp_path)
        assert delivery.deliver(report()) == QUEUE_REPLY
        assert len(server.recorder.received) == 1


def test_custom_message_id_domain(starttls: Running, ca_pem: Path, tmp_path: Path) -> None:
    opts = authenticated(starttls, ca_pem, domain="reports.corp.example")
    channel(opts, tmp_path).deliver(report())
    got = starttls.recorder.received[0].message()["Message-ID"]
    assert got == report().message_id("reports.corp.example")


def test_the_receipt_and_the_log_carry_no_content(
    starttls: Running, ca_pem: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="compliance.deliveries.smtp")
    receipt = channel(authenticated(starttls, ca_pem), tmp_path).deliver(report())
    logged = caplog.text + receipt
    assert "ethics-mail" in caplog.text
    assert f"127.0.0.1:{starttls.port}" in caplog.text
    for secret in ("Acceptable-use", "3 alerts", "report.csv", *TO, USERNAME, PASSWORD):
        assert secret not in logged


# --- what the server received -----------------------------------------------------------
def test_no_identity_reaches_the_server(starttls: Running, ca_pem: Path, tmp_path: Path) -> None:
    channel(authenticated(starttls, ca_pem), tmp_path).deliver(report())
    assert starttls.recorder.received
    assert identities_in(everything(starttls), IDENTITIES) == set()


def test_the_byte_scan_sees_through_encodings(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    # a positive control: identities hidden by base64, quoted-printable and RFC 2047
    leaky = report(
        subject="Überblick Alice Martin",  # RFC 2047 encoded word
        html="<p>" + "é" * 80 + " p-3f9a0c1e2b7d</p>",  # quoted-printable, split lines
        attachments=(
            Attachment("x.bin", "application/octet-stream", b"alice.martin@corp.example"),
        ),
    )
    channel(authenticated(starttls, ca_pem), tmp_path).deliver(leaky)
    raw = starttls.recorder.received[0].data
    assert raw.isascii()  # 7-bit: no 8BITMIME or SMTPUTF8 needed
    assert b"alice.martin@corp.example" not in raw  # base64 hides it from a naive scan
    assert identities_in([raw], IDENTITIES) == {
        "Alice Martin",
        "p-3f9a0c1e2b7d",
        "alice.martin@corp.example",
    }


# --- failures ---------------------------------------------------------------------------
def test_authentication_refused_is_not_retriable(
    starttls: Running, ca_pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password-4242")
    delivery = channel(authenticated(starttls, ca_pem), tmp_path)
    with pytest.raises(DeliveryError) as caught:
        delivery.deliver(report())
    assert not isinstance(caught.value, RetriableDeliveryError)
    text = str(caught.value)
    assert "535" in text
    assert f"127.0.0.1:{starttls.port}" in text
    assert "ethics-mail" in text
    assert "wrong-password-4242" not in text
    assert "wrong-password-4242" not in repr(caught.value)
    assert starttls.recorder.received == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"drop_in_data": True}, "closed the connection"),
        ({"data_reply": "421 4.3.2 Service shutting down"}, "421"),
        ({"data_reply": "451 4.3.0 Local error in processing"}, "451"),
    ],
)
def test_a_dropped_or_busy_server_is_retriable(
    cert: trustme.LeafCert, ca_pem: Path, tmp_path: Path, fault: dict[str, Any], expected: str
) -> None:
    with serve(cert=cert, auth=True, recorder=Recorder(**fault)) as server:
        delivery = channel(authenticated(server, ca_pem), tmp_path)
        with pytest.raises(RetriableDeliveryError, match=expected) as caught:
            delivery.deliver(report())
        assert "DATA" in str(caught.value)
        assert server.recorder.received == []
        assert server.recorder.dropped == (1 if fault.get("drop_in_data") else 0)


def test_a_connection_reset_mid_message_is_retriable(tmp_path: Path) -> None:
    big = Attachment("report.pdf", "application/pdf", bytes(range(256)) * 8192)  # 2 MiB
    with hang_up_mid_message() as (host, port):
        opts = options(host=host, port=port, security="none")
        with pytest.raises(RetriableDeliveryError, match="DATA") as caught:
            channel(opts, tmp_path).deliver(report(attachments=(big,)))
    assert "reset" in str(caught.value) or "closed the connection" in str(caught.value)


def test_a_message_refused_permanently_is_not_retriable(
    cert: trustme.LeafCert, ca_pem: Path, tmp_path: Path
) -> None:
    recorder = Recorder(data_reply="554 5.7.1 Message rejected as spam")
    with serve(cert=cert, auth=True, recorder=recorder) as server:
        with pytest.raises(DeliveryError, match="554") as caught:
            channel(authenticated(server, ca_pem), tmp_path).deliver(report())
        assert not isinstance(caught.value, RetriableDeliveryError)


def test_a_recipient_refused_sends_nothing_and_names_no_address(
    cert: trustme.LeafCert, ca_pem: Path, tmp_path: Path
) -> None:
    refused = {"board@corp.example": "550 5.1.1 <board@corp.example>: Recipient unknown"}
    with serve(cert=cert, auth=True, recorder=Recorder(refuse=refused)) as server:
        with pytest.raises(DeliveryError) as caught:
            channel(authenticated(server, ca_pem), tmp_path).deliver(report())
        assert not isinstance(caught.value, RetriableDeliveryError)
        text = str(caught.value)
        assert "550" in text
        assert "1 of 2 recipient(s) refused" in text
        assert "to entry 2" in text
        assert "board@corp.example" not in text
        assert "<address>" in text
        assert server.recorder.received == []
        assert b"DATA" not in bytes(server.recorder.transcripts[-1])


def test_a_recipient_refused_for_now_is_retriable(
    cert: trustme.LeafCert, ca_pem: Path, tmp_path: Path
) -> None:
    refused = {"ethics@corp.example": "450 4.2.1 Mailbox busy, try again later"}
    with serve(cert=cert, auth=True, recorder=Recorder(refuse=refused)) as server:
        with pytest.raises(RetriableDeliveryError, match="450"):
            channel(authenticated(server, ca_pem), tmp_path).deliver(report())
        assert server.recorder.received == []


def test_an_untrusted_certificate_is_refused(starttls: Running, tmp_path: Path) -> None:
    opts = authenticated(starttls, tmp_path / "unused.pem")
    del opts["ca_bundle"]  # the system's CAs do not know the throwaway CA
    with pytest.raises(DeliveryError, match="certificate not trusted") as caught:
        channel(opts, tmp_path).deliver(report())
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert "ca_bundle" in str(caught.value)
    assert b"AUTH" not in bytes(starttls.recorder.transcripts[-1])
    assert starttls.recorder.logins == []


def test_a_certificate_for_another_host_is_refused(
    ca: trustme.CA, ca_pem: Path, tmp_path: Path
) -> None:
    with serve(cert=ca.issue_cert("mail.other.test"), auth=True) as server:
        with pytest.raises(DeliveryError, match="certificate not trusted") as caught:
            channel(authenticated(server, ca_pem), tmp_path).deliver(report())
        assert not isinstance(caught.value, RetriableDeliveryError)
        assert "mismatch" in str(caught.value)


def test_a_server_without_starttls_gets_nothing_in_clear(ca_pem: Path, tmp_path: Path) -> None:
    with serve() as server:  # plain, no STARTTLS offered
        with pytest.raises(DeliveryError, match="does not offer STARTTLS") as caught:
            channel(authenticated(server, ca_pem), tmp_path).deliver(report())
        assert not isinstance(caught.value, RetriableDeliveryError)
        transcript = bytes(server.recorder.transcripts[-1])
        assert b"AUTH" not in transcript
        assert b"MAIL FROM" not in transcript
        assert server.recorder.received == []


def test_implicit_tls_to_a_starttls_port_is_a_configuration_error(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    with pytest.raises(DeliveryError, match="TLS failed") as caught:
        channel(authenticated(starttls, ca_pem, security="tls"), tmp_path).deliver(report())
    assert not isinstance(caught.value, RetriableDeliveryError)


def test_a_refused_connection_is_retriable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    opts = options(host="127.0.0.1", port=port, security="none")
    with pytest.raises(RetriableDeliveryError, match="connection refused"):
        channel(opts, tmp_path).deliver(report())


def test_a_silent_server_times_out_and_is_retriable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        opts = options(host="127.0.0.1", port=sock.getsockname()[1], security="none")
        opts["timeout"] = 0.3
        with pytest.raises(RetriableDeliveryError, match=r"no answer within 0\.3 s"):
            channel(opts, tmp_path).deliver(report())


def test_a_missing_password_is_a_delivery_error(
    starttls: Running, ca_pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(DeliveryError, match=PASSWORD_ENV) as caught:
        channel(authenticated(starttls, ca_pem), tmp_path).deliver(report())
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert starttls.recorder.transcripts[-1] == b""  # only aiosmtpd's start-up probe


def test_an_unreadable_ca_bundle_is_a_delivery_error(starttls: Running, tmp_path: Path) -> None:
    opts = authenticated(starttls, tmp_path / "missing.pem")
    with pytest.raises(DeliveryError, match=r"missing\.pem"):
        channel(opts, tmp_path).deliver(report())


def test_a_subject_with_a_line_break_is_refused_without_quoting_it(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    bad = report(subject="Report\r\nBcc: alice.martin@corp.example")
    with pytest.raises(DeliveryError, match="line break") as caught:
        channel(authenticated(starttls, ca_pem), tmp_path).deliver(bad)
    assert "alice" not in str(caught.value)
    assert starttls.recorder.received == []


# --- check ------------------------------------------------------------------------------
def test_check_verifies_access_without_sending(
    starttls: Running, ca_pem: Path, tmp_path: Path
) -> None:
    results = channel(authenticated(starttls, ca_pem), tmp_path).check()
    assert all(ok for ok, _ in results), results
    assert [what.split(" ")[0] for _, what in results] == [
        "configuration",
        "connected",
        "logged",
        "sender",
    ]
    assert starttls.recorder.received == []
    assert b"DATA" not in bytes(starttls.recorder.transcripts[-1])


def test_check_reports_a_refused_login(
    starttls: Running, ca_pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password-4242")
    results = channel(authenticated(starttls, ca_pem), tmp_path).check()
    ok, what = results[-1]
    assert not ok
    assert "535" in what
    assert "wrong-password-4242" not in what


# --- configuration ----------------------------------------------------------------------
def test_defaults() -> None:
    plain = SmtpOptions.model_validate(options())
    assert plain.security == "starttls"
    assert plain.resolved_port == 587
    assert plain.timeout == 5
    assert plain.message_domain == "corp.example"
    assert SmtpOptions.model_validate(options(security="tls")).resolved_port == 465
    assert SmtpOptions.model_validate(options(timeout=None)).timeout == 30
    fields = SmtpOptions.model_fields
    assert all(f.description for f in fields.values())
    assert set(fields) == {
        "host",
        "port",
        "security",
        "username",
        "password",
        "from_address",
        "reply_to",
        "to",
        "ca_bundle",
        "timeout",
        "domain",
    }


@pytest.mark.parametrize("host", ["smtp.corp.example", "192.0.2.25", "10.0.0.1", "::2"])
def test_no_tls_to_a_network_host_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"security: none .* only to a loopback host"):
        channel(options(host=host, security="none"), tmp_path)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.53", "::1"])
def test_no_tls_to_loopback_is_allowed(host: str, tmp_path: Path) -> None:
    assert is_loopback(host)
    assert channel(options(host=host, security="none"), tmp_path).settings.security == "none"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"pasword": {"$env": PASSWORD_ENV}}, "pasword: unknown option"),
        ({"username": USERNAME, "password": PASSWORD}, "write a reference"),
        ({"username": USERNAME}, "username and password go together"),
        ({"to": []}, "to: "),
        ({"to": ["ethics@corp.example", "Ethics@corp.example"]}, "repeats"),
        ({"to": ["ethics@corp.example\r\nBcc: x@y.example"]}, "to: "),
        ({"from_address": "not an address"}, "from_address: "),
        ({"security": "ssl"}, "security: "),
        ({"host": "smtp://smtp.corp.example:587"}, "host: "),
        ({"port": 0}, "port: "),
        ({"timeout": 0}, "timeout: "),
        ({"from_address": None}, r"from_address: Field required \(the From address"),
    ],
)
def test_bad_options_are_refused(change: dict[str, Any], expected: str, tmp_path: Path) -> None:
    opts = options()
    for key, value in change.items():
        if value is None:
            del opts[key]
        else:
            opts[key] = value
    with pytest.raises(ConfigError, match=expected) as caught:
        channel(opts, tmp_path)
    assert "delivery 'ethics-mail': " in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_registered_under_its_name() -> None:
    DELIVERIES.register("smtp", Smtp)
    try:
        assert DELIVERIES.get("smtp") is Smtp
        assert Smtp.name == "smtp"
        assert Smtp.options_model is SmtpOptions
    finally:
        DELIVERIES.reset()
