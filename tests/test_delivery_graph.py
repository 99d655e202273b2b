"""Delivery by Microsoft Graph sendMail against the Graph-compatible HTTPS server on loopback.

msal and the delivery talk real HTTPS (a throwaway CA) to a server that issues tokens with
roles and checks each sendMail body as Graph does; nothing is mocked.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from compliance.deliveries.graph_mail import ACCEPTED, DELIVERY_HEADER, GraphMail, GraphMailOptions
from compliance.delivery import DELIVERIES, Attachment, Delivery, Message
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from connectors.graph import reset_shared_state
from tests.graph_server import MAIL_SEND_ROLE, SECRET, Fault, Running, start

SENDER = "compliance@corp.example"
TO = ["ethics-team@corp.example", "Ethics lead <lead.person@corp.example>"]
REPLY_TO = "ethics-office@corp.example"
ADDRESSES = [SENDER, "ethics-team@corp.example", "lead.person@corp.example", REPLY_TO]
RECEIPT = "202 accepted by Graph (queued for delivery, not yet delivered)"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00chart" * 50


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("M365_TEST_SECRET", SECRET)
    reset_shared_state()
    yield from start(tmp_path, mail_send=True)
    reset_shared_state()


@pytest.fixture
def bare_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A server whose tokens carry no Mail.Send role."""
    monkeypatch.setenv("M365_TEST_SECRET", SECRET)
    reset_shared_state()
    yield from start(tmp_path)
    reset_shared_state()


def make(
    graph: Running, tmp_path: Path, sleeps: list[float] | None = None, **extra: Any
) -> GraphMail:
    options = graph.options(**{"sender": SENDER, "to": TO, "reply_to": REPLY_TO, **extra})
    delivery = GraphMail.create("reports-graph", options, tmp_path)
    assert isinstance(delivery, GraphMail)
    delivery.sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    return delivery


def message(key: str = "report|2026-10-01|2026-10-30|team|abc|reports-graph") -> Message:
    return Message(
        key=key,
        subject="Acceptable-use report: 2026-10-01 to 2026-10-30",
        text="The report is attached.",
        html='<p>The report is attached.</p><img src="cid:chart-1" alt="alerts per week">',
        attachments=(
            Attachment("report-2026-10-30.pdf", "application/pdf", PDF),
            Attachment("chart.png", "image/png", PNG, inline_id="<chart-1>"),
        ),
    )


def send_mail_path(sender: str = SENDER) -> str:
    return f"/v1.0/users/{quote(sender, safe='@')}/sendMail"


def test_a_message_lands_at_graph_with_the_documented_json(graph: Running, tmp_path: Path) -> None:
    msg = message()
    receipt = make(graph, tmp_path).deliver(msg)

    assert receipt == RECEIPT
    assert ACCEPTED in receipt
    [sent] = graph.state.sent
    assert sent.sender == SENDER
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body["saveToSentItems"] is False
    mail = sent.body["message"]
    assert mail["subject"] == msg.subject
    assert mail["body"] == {"contentType": "HTML", "content": msg.html}
    assert mail["toRecipients"] == [
        {"emailAddress": {"address": "ethics-team@corp.example"}},
        {"emailAddress": {"address": "lead.person@corp.example", "name": "Ethics lead"}},
    ]
    assert mail["replyTo"] == [{"emailAddress": {"address": REPLY_TO}}]
    pdf, png = mail["attachments"]
    assert pdf == {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "report-2026-10-30.pdf",
        "contentType": "application/pdf",
        "contentBytes": base64.b64encode(PDF).decode(),
        "isInline": False,
    }
    assert base64.b64decode(png["contentBytes"]) == PNG
    assert (png["isInline"], png["contentId"]) == (True, "chart-1")
    assert mail["internetMessageHeaders"] == [{"name": DELIVERY_HEADER, "value": msg.digest()}]


def test_two_attempts_of_one_key_carry_the_same_delivery_header(
    graph: Running, tmp_path: Path
) -> None:
    delivery = make(graph, tmp_path)
    delivery.deliver(message())
    delivery.deliver(message())
    delivery.deliver(message(key="another period"))

    values = [s.body["message"]["internetMessageHeaders"][0]["value"] for s in graph.state.sent]
    assert values[0] == values[1] == message().digest()
    assert values[2] != values[0]
    ids = [s.headers["client-request-id"] for s in graph.state.sent]
    assert ids[0] == ids[1] != ids[2]


def test_a_text_only_message_has_a_text_body_and_inline_images_become_files(
    graph: Running, tmp_path: Path
) -> None:
    msg = Message(
        key="k",
        subject="Weekly digest",
        text="Nothing new.",
        attachments=(Attachment("chart.png", "image/png", PNG, inline_id="chart-1"),),
    )
    make(graph, tmp_path, reply_to=None).deliver(msg)

    mail = graph.state.sent[0].body["message"]
    assert mail["body"] == {"contentType": "Text", "content": "Nothing new."}
    assert "replyTo" not in mail
    assert mail["attachments"][0]["isInline"] is False
    assert "contentId" not in mail["attachments"][0]


def test_429_then_202_succeeds_after_the_retry_after_wait(graph: Running, tmp_path: Path) -> None:
    graph.state.send_faults[1] = Fault(
        429,
        {"Retry-After": "7"},
        {"error": {"code": "ApplicationThrottled", "message": "Too many requests."}},
    )
    sleeps: list[float] = []

    assert make(graph, tmp_path, sleeps).deliver(message()) == RECEIPT
    assert sleeps == [7.0]
    assert graph.state.send_requests == 2
    assert len(graph.state.sent) == 1


def test_a_dropped_connection_is_retried(graph: Running, tmp_path: Path) -> None:
    graph.state.send_faults[1] = Fault(0)
    sleeps: list[float] = []

    assert make(graph, tmp_path, sleeps).deliver(message()) == RECEIPT
    assert len(sleeps) == 1
    assert len(graph.state.sent) == 1


def test_500_every_time_is_retriable_after_the_retries(graph: Running, tmp_path: Path) -> None:
    graph.state.send_fault_always = Fault(500)
    sleeps: list[float] = []

    with pytest.raises(RetriableDeliveryError) as caught:
        make(graph, tmp_path, sleeps, max_retries=2).deliver(message())
    assert "still failing after 3 attempt(s)" in str(caught.value)
    assert "HTTP 500" in str(caught.value)
    assert len(sleeps) == 2
    assert graph.state.send_requests == 3
    assert graph.state.sent == []


def test_a_connection_refused_is_retriable(graph: Running, tmp_path: Path) -> None:
    delivery = make(graph, tmp_path, max_retries=1)
    delivery.check()  # a token in msal's cache
    graph.state.send_fault_always = Fault(0)
    with pytest.raises(RetriableDeliveryError, match="connection failed"):
        delivery.deliver(message())


def test_400_is_not_retried(graph: Running, tmp_path: Path) -> None:
    graph.state.send_faults[1] = Fault(
        400, body={"error": {"code": "ErrorInvalidRecipients", "message": "Invalid recipients."}}
    )
    sleeps: list[float] = []
    with pytest.raises(DeliveryError) as caught:
        make(graph, tmp_path, sleeps).deliver(message())
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert "400 (ErrorInvalidRecipients: Invalid recipients.)" in str(caught.value)
    assert (sleeps, graph.state.send_requests) == ([], 1)


def test_an_expired_token_is_renewed_once(graph: Running, tmp_path: Path) -> None:
    delivery = make(graph, tmp_path)
    delivery.deliver(message())
    graph.state.revoke_tokens()
    tokens = graph.state.token_requests

    assert delivery.deliver(message()) == RECEIPT
    assert graph.state.token_requests == tokens + 1
    assert len(graph.state.sent) == 2


def test_without_mail_send_check_fails_and_a_send_is_refused(
    bare_graph: Running, tmp_path: Path
) -> None:
    delivery = make(bare_graph, tmp_path)

    results = delivery.check()
    assert results[:2] == [
        (True, "configuration valid"),
        (True, f"token acquired from {bare_graph.base}/{bare_graph.options()['tenant_id']}"),
    ]
    ok, text = results[-1]
    assert not ok
    assert "no Mail.Send role" in text
    assert "rbac_for_applications" in text

    with pytest.raises(DeliveryError) as caught:
        delivery.deliver(message())
    error = str(caught.value)
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert "403 (ErrorAccessDenied" in error
    assert "Mail.Send" in error
    assert "RBAC for Applications" in error
    assert 'New-ManagementRoleAssignment -App … -Role "Application Mail.Send"' in error
    assert bare_graph.state.sent == []


def test_check_sends_nothing(graph: Running, tmp_path: Path) -> None:
    results = make(graph, tmp_path).check()

    assert all(ok for ok, _ in results)
    assert results[-1] == (True, "permission Mail.Send granted (nothing sent)")
    assert not any(r.path.endswith("/sendMail") for r in graph.state.requests)


def test_rbac_for_applications_sends_as_the_scoped_mailbox_only(
    bare_graph: Running, tmp_path: Path
) -> None:
    bare_graph.state.rbac_send_as = {SENDER}
    delivery = make(bare_graph, tmp_path, rbac_for_applications=True)

    results = delivery.check()
    assert all(ok for ok, _ in results), results
    assert "RBAC for Applications" in results[-1][1]
    assert delivery.deliver(message()) == RECEIPT

    other = make(bare_graph, tmp_path, sender="someone.else@corp.example")
    with pytest.raises(DeliveryError, match="403"):
        other.deliver(message())
    assert len(bare_graph.state.sent) == 1


def test_rbac_for_applications_with_tenant_wide_consent_fails_the_check(
    graph: Running, tmp_path: Path
) -> None:
    ok, text = make(graph, tmp_path, rbac_for_applications=True).check()[-1]
    assert not ok
    assert "tenant-wide Mail.Send" in text
    assert "remove that application permission" in text


def test_an_unknown_sender_is_refused_without_quoting_the_address(
    graph: Running, tmp_path: Path
) -> None:
    graph.state.mailboxes = {"someone.else@corp.example"}
    with pytest.raises(DeliveryError) as caught:
        make(graph, tmp_path).deliver(message())
    error = str(caught.value)
    assert "404 (ErrorInvalidUser: The requested user '<address>' is invalid.)" in error
    assert "sending mailbox was not found" in error
    assert SENDER not in error


def test_the_sender_may_be_a_user_id(graph: Running, tmp_path: Path) -> None:
    user_id = "5f0e7a2c-0000-4000-8000-00000000beef"
    make(graph, tmp_path, sender=user_id).deliver(message())
    assert graph.state.sent[0].sender == user_id


def test_no_address_reaches_the_logs_or_the_errors(
    graph: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="compliance")
    caplog.set_level(logging.INFO)
    graph.state.send_faults[1] = Fault(429, {"Retry-After": "1"})
    delivery = make(graph, tmp_path)
    receipts = [delivery.deliver(message())]
    delivery.check()
    errors = []
    graph.state.mailboxes = {"nobody@corp.example"}
    with pytest.raises(DeliveryError) as caught:
        delivery.deliver(message())
    errors.append(str(caught.value))
    graph.state.mailboxes = None
    graph.state.send_fault_always = Fault(503)
    with pytest.raises(RetriableDeliveryError) as retriable:
        make(graph, tmp_path, max_retries=1).deliver(message())
    errors.append(str(retriable.value))

    text = "\n".join([caplog.text, *receipts, *errors])
    assert "reports-graph" in caplog.text  # the log lines exist
    for address in [*ADDRESSES, "nobody@corp.example"]:
        for form in (address, quote(address), address.replace("@", "%40")):
            assert form not in text, form
    assert message().subject not in text
    assert SECRET not in text


def test_a_line_break_in_the_subject_is_refused_without_quoting_it(
    graph: Running, tmp_path: Path
) -> None:
    msg = Message(key="k", subject="Report\r\nBcc: someone@corp.example", text="x")
    with pytest.raises(DeliveryError) as caught:
        make(graph, tmp_path).deliver(msg)
    assert "line break" in str(caught.value)
    assert "someone" not in str(caught.value)
    assert graph.state.sent == []


def test_a_missing_secret_is_a_delivery_error(graph: Running, tmp_path: Path) -> None:
    delivery = make(graph, tmp_path, client_secret={"$env": "NO_SUCH_SECRET_VARIABLE"})
    with pytest.raises(DeliveryError) as caught:
        delivery.deliver(message())
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert "graph-mail delivery 'reports-graph'" in str(caught.value)
    assert "NO_SUCH_SECRET_VARIABLE is not set" in str(caught.value)
    ok, text = delivery.check()[-1]
    assert not ok
    assert "NO_SUCH_SECRET_VARIABLE" in text


def test_a_wrong_secret_is_a_delivery_error(
    graph: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M365_TEST_SECRET", "not-the-secret")
    with pytest.raises(DeliveryError) as caught:
        make(graph, tmp_path).deliver(message())
    assert not isinstance(caught.value, RetriableDeliveryError)
    assert "refused a token (invalid_client" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sender": None}, "sender: Field required"),
        ({"to": []}, "to: List should have at least 1 item"),
        ({"to": ["not an address"]}, "to: must be a plain ASCII address"),
        ({"sender": "Reports <compliance@corp.example>"}, "sender: the plain address only"),
        ({"sender": "compliance"}, "sender: must be the sending mailbox's address"),
        ({"reply_to": "x@"}, "reply_to: must be a plain ASCII address"),
        ({"client_secret": "inline-secret"}, "client_secret"),
        ({"from_address": SENDER}, "from_address: unknown option"),
    ],
)
def test_bad_options_are_refused(change: dict[str, Any], expected: str, tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "tenant_id": "72f988bf-0000-4000-8000-000000000001",
        "client_id": "2a4c1f3e-0000-4000-8000-0000000000aa",
        "client_secret": {"$env": "M365_TEST_SECRET"},
        "sender": SENDER,
        "to": TO,
    }
    options.update(change)
    options = {k: v for k, v in options.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        GraphMail.create("reports-graph", options, tmp_path)
    assert "delivery 'reports-graph': " in str(caught.value)
    assert expected in str(caught.value)
    assert "inline-secret" not in str(caught.value)


def test_a_single_recipient_may_be_a_string(tmp_path: Path) -> None:
    options = GraphMailOptions.model_validate(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "2a4c1f3e-0000-4000-8000-0000000000aa",
            "certificate": {"pem": "m365.pem"},
            "sender": SENDER,
            "to": "ethics-team@corp.example",
        }
    )
    assert options.to == ["ethics-team@corp.example"]
    assert options.rbac_for_applications is False
    assert options.graph_endpoint == "https://graph.microsoft.com"


def test_registered_under_its_name() -> None:
    DELIVERIES.register("graph-mail", GraphMail)
    try:
        cls = DELIVERIES.get("graph-mail")
        assert cls is GraphMail
        assert issubclass(cls, Delivery)
        assert GraphMail.options_model is GraphMailOptions
    finally:
        DELIVERIES.reset()


def test_the_trace_role_and_server_still_work_alongside(graph: Running) -> None:
    assert MAIL_SEND_ROLE in graph.state.roles
    assert graph.state.trace_requests == 0
