"""Reports delivered exactly once through the outbox, to a real SMTP server on loopback.

Each test runs the job (`compliance run`) on a week of mail, with the report sent over
STARTTLS with AUTH to an aiosmtpd server whose certificate comes from a throwaway CA,
and counts what the server received.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from compliance.config import load_config
from compliance.outbox import compose
from compliance.store import Store
from compliance.store.outbox import Outbox
from tests.conftest import (
    DIRECTORY_PEOPLE,
    SHIPPED_POLICIES,
    as_actor,
    run_cli,
    week_of_mail_rows,
    write_config,
    write_ps_export,
)
from tests.smtp_server import PASSWORD, USERNAME, Recorder, Running, identities_in, serve

TODAY = "2026-11-20"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp(ca: trustme.CA) -> Iterator[Running]:
    with serve(cert=ca.issue_cert("localhost", "127.0.0.1"), auth=True) as running:
        yield running


def _deployment(
    folder: Path, directory: Path, feed: Path, ca: trustme.CA, port: int, body: str = ""
) -> Path:
    (folder / "inbox").mkdir(parents=True)
    write_ps_export(folder / "inbox" / "week1.csv", week_of_mail_rows())
    shutil.copytree(SHIPPED_POLICIES, folder / "policies")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return write_config(
        folder / "compliance.yaml",
        directory,
        feed,
        f"""
        store: var/store.db
        reports: {{dir: reports, formats: [html, json], send_to: [ethics-mail]{body}}}
        schedule: {{lock: var/run.lock}}
        deliveries:
          - name: ethics-mail
            type: smtp
            host: 127.0.0.1
            port: {port}
            username: {USERNAME}
            password: {{$env: SMTP_TEST_PASSWORD}}
            from_address: compliance@corp.example
            to: [ethics@corp.example]
            ca_bundle: ca.pem
            timeout: 5
        """,
        policies="policies",
    )


@pytest.fixture
def deployment(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    ca: trustme.CA,
    smtp: Running,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.setenv("SMTP_TEST_PASSWORD", PASSWORD)
    return _deployment(tmp_path / "job", directory_csv, escort_feed, ca, smtp.port)


def _outbox(config: Path) -> list[dict[str, object]]:
    listed = as_actor("lead", config, "outbox", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows: list[dict[str, object]] = json.loads(listed.output)
    return rows


def test_a_report_reaches_the_mailbox_once(deployment: Path, smtp: Running) -> None:
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    assert len(smtp.recorder.received) == 1
    mail = smtp.recorder.received[0]
    assert mail.authenticated
    assert mail.rcpt_tos == ["ethics@corp.example"]
    message = mail.message()
    assert message["Subject"] == "Acceptable-use report 2026-10-22 to 2026-11-20"
    names = sorted(part.get_filename() for part in message.iter_attachments())
    assert names == ["report-2026-11-20.html", "report-2026-11-20.json"]
    assert [r["state"] for r in _outbox(deployment)] == ["sent"]
    # the same period again (a rerun, a second run that day): nothing is sent twice
    code, output = run_cli(deployment, TODAY)
    assert code == 4, output  # nothing new was read, as documented
    assert len(smtp.recorder.received) == 1
    sent = as_actor("auditor", deployment, "log", "show", "--action", "delivery", "--json")
    entries = [json.loads(line) for line in sent.output.splitlines()]
    assert [e["action"] for e in entries] == ["delivery.sent"]
    assert len(entries[0]["details"]["sha256"]) == 64
    assert entries[0]["details"]["receipt"].startswith("250")


def test_nothing_the_server_received_names_anyone(deployment: Path, smtp: Running) -> None:
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    with Store.open(deployment.parent / "var" / "store.db") as store:
        pseudonyms = {str(a.person) for a in store.alerts.all() if a.person}
    assert pseudonyms  # the report has a person alert, so the scan below means something
    people = [*DIRECTORY_PEOPLE, *(f"alias{n}@corp.example" for n in range(1, 18))]
    names = [f"Test Person {n}" for n in range(1, 18)]
    everything = [bytes(t) for t in smtp.recorder.transcripts]
    assert identities_in(everything, [*people, *names]) == set()
    # the report itself (attached, for the team) holds pseudonyms; the message does not
    message = smtp.recorder.received[0].message()
    bodies = [message.get_body(preferencelist=(kind,)) for kind in ("plain", "html")]
    visible = [str(message["Subject"]), *(b.get_content() for b in bodies if b is not None)]
    assert len(visible) == 3
    assert not [p for p in pseudonyms if any(p in text for text in visible)]
    assert not [u for u in ("Sales/EMEA", "Legal") if any(u in text for text in visible)]


def test_a_server_that_is_down_gets_the_report_on_a_later_attempt(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMTP_TEST_PASSWORD", PASSWORD)
    cert = ca.issue_cert("localhost", "127.0.0.1")
    with serve(cert=cert, auth=True) as first:
        port = first.port  # a port that is closed once this server stops
    config = _deployment(tmp_path / "job", directory_csv, escort_feed, ca, port)
    code, output = run_cli(config, TODAY)
    assert code == 0, output  # the report is written; its delivery waits
    [row] = _outbox(config)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert "127.0.0.1" in str(row["last_error"])
    retried = as_actor("lead", config, "outbox", "retry", str(row["id"]))
    assert "to retry 1" in retried.output  # still down
    recorder = Recorder()
    with serve(cert=cert, auth=True, recorder=recorder) as second:
        # the operator points the channel at the right port, and the job runs again the
        # same day (it rewrites the day's report, which now shows nothing new)
        config.write_text(config.read_text().replace(f"port: {port}", f"port: {second.port}"))
        code, output = run_cli(config, TODAY)
        assert code == 4, output
        assert recorder.received == []  # the waiting delivery keeps its back-off
        retried = as_actor("lead", config, "outbox", "retry", str(row["id"]))
        assert retried.exit_code == 0, retried.output
        assert "sent 1" in retried.output
        assert len(recorder.received) == 1
    # the same recipients: one row, one message, never a second one for the new port
    assert [r["state"] for r in _outbox(config)] == ["sent"]
    # and it is the report as it was when the delivery was recorded: its alert is new
    message = recorder.received[0].message()
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Nothing new" not in body.get_content()
    attached = next(p for p in message.iter_attachments() if p.get_filename().endswith(".json"))
    report = json.loads(attached.get_content())
    assert [a["change"] for a in report["alerts"]] == ["new"]


def test_a_crash_after_sending_resends_the_same_message(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one gap no protocol closes: the server took the message, then the process died
    before the store recorded it. The next run sends it again under the same Message-ID."""

    def died(*_args: object) -> None:
        raise SystemExit(137)  # as if killed right after the server accepted the message

    with monkeypatch.context() as patch:
        patch.setattr(Outbox, "sent", died)
        code, _ = run_cli(deployment, TODAY)
    assert code == 137
    assert len(smtp.recorder.received) == 1
    assert [r["state"] for r in _outbox(deployment)] == ["sending"]
    code, output = run_cli(deployment, TODAY)
    assert code == 4, output
    assert len(smtp.recorder.received) == 2
    ids = {m.message()["Message-ID"] for m in smtp.recorder.received}
    assert len(ids) == 1
    assert [r["state"] for r in _outbox(deployment)] == ["sent"]


def test_a_refused_login_fails_the_delivery_until_an_operator_acts(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_TEST_PASSWORD", "not-the-password")
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    [row] = _outbox(deployment)
    assert row["state"] == "failed"
    assert "535" in str(row["last_error"])
    assert "not-the-password" not in str(row["last_error"])
    assert smtp.recorder.received == []
    logged = as_actor("auditor", deployment, "log", "show", "--action", "delivery", "--json")
    [entry] = [json.loads(line) for line in logged.output.splitlines()]
    assert entry["details"]["why"] == "DeliveryError 535"  # never the server's words
    dropped = as_actor("lead", deployment, "outbox", "drop", str(row["id"]))
    assert dropped.exit_code == 0, dropped.output
    again = as_actor("lead", deployment, "outbox", "drop", str(row["id"]))
    assert again.exit_code == 2
    assert "dropped" in again.output


def test_send_to_must_name_a_configured_delivery(deployment: Path) -> None:
    deployment.write_text(deployment.read_text().replace("[ethics-mail]", "[ethics-mial]"))
    code, output = run_cli(deployment, TODAY)
    assert code == 2
    assert "reports.send_to names no configured delivery: ethics-mial" in output


def test_sources_check_logs_in_to_the_mail_server_and_sends_nothing(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = as_actor("lead", deployment, "sources", "check")
    assert "delivery ethics-mail (smtp)" in checked.output
    assert checked.exit_code == 0, checked.output
    assert smtp.recorder.received == []
    monkeypatch.setenv("SMTP_TEST_PASSWORD", "not-the-password")
    refused = as_actor("lead", deployment, "sources", "check")
    assert refused.exit_code != 0
    assert "535" in refused.output


def test_every_new_alert_reaches_the_report_even_from_last_month(
    deployment: Path, smtp: Running
) -> None:
    """A run a month after the mail it reads (last month's export) still reports the alerts
    it raises, though their episodes lie before the report's period; and the delivered
    message's events (for a SIEM) describe them without a pseudonym."""
    code, output = run_cli(deployment, "2026-12-31")
    assert code == 0, output
    assert "1 new alert(s)" in output
    report = json.loads((deployment.parent / "reports" / "report-2026-12-31.json").read_text())
    assert report["first_day"] == "2026-12-02"
    assert [(a["rule_id"], a["change"], a["last_day"]) for a in report["alerts"]] == [
        ("repeated-contact", "new", "2026-11-09")
    ]
    config = load_config(deployment)
    with Store.open(deployment.parent / "var" / "store.db") as store:
        [item] = store.outbox.all()
        pseudonyms = {str(a.person) for a in store.alerts.all() if a.person}
    assert not (deployment.parent / "reports" / ".outbox").exists() or not any(
        (deployment.parent / "reports" / ".outbox").iterdir()
    )  # a sent delivery's copies of the report are gone; the report stays
    files = ["report-2026-12-31.html", "report-2026-12-31.json"]
    message = compose(config, dataclasses.replace(item, files=files))
    assert [(e["rule_id"], e["change"], e["org_unit"]) for e in message.events] == [
        ("repeated-contact", "new", "Sales/EMEA")
    ]
    assert not [p for p in pseudonyms if p in json.dumps(list(message.events))]
    assert "@" not in json.dumps(list(message.events))


WEEKLY = "schedules: [{name: weekly-digest, every: week, send_to: [ethics-mail]WHEN}]"


def _with_weekly(config: Path, when: str = "") -> None:
    """The deployment's run report sent nowhere, and a weekly digest sent by mail."""
    text = config.read_text().replace(
        "send_to: [ethics-mail]}", "send_to: [], " + WEEKLY.replace("WHEN", when) + "}"
    )
    config.write_text(text)


def test_a_weekly_report_is_sent_when_due_and_says_when_nothing_is_new(
    deployment: Path, smtp: Running
) -> None:
    _with_weekly(deployment)
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    subjects = [m.message()["Subject"] for m in smtp.recorder.received]
    assert subjects == ["Acceptable-use report 2026-11-14 to 2026-11-20"]  # 7 days
    assert (deployment.parent / "reports" / "weekly-digest-2026-11-20.html").is_file()
    code, _ = run_cli(deployment, "2026-11-21")  # not due: nothing more is sent
    assert len(smtp.recorder.received) == 1
    code, _ = run_cli(deployment, "2026-11-27")  # due again, with nothing new
    assert len(smtp.recorder.received) == 2
    second = smtp.recorder.received[1].message()
    for kind in ("plain", "html"):
        part = second.get_body(preferencelist=(kind,))
        assert part is not None
        assert "Nothing new since the previous report" in part.get_content()
    html = second.get_body(preferencelist=("html",))
    assert html is not None
    assert not [w for w in ("<script", "http://", "https://", "<img") if w in html.get_content()]
    first = smtp.recorder.received[0].message().get_body(preferencelist=("plain",))
    assert first is not None
    assert "Nothing new" not in first.get_content()


def test_a_schedule_may_skip_a_report_with_nothing_new(deployment: Path, smtp: Running) -> None:
    _with_weekly(deployment, ", when_nothing_new: skip")
    run_cli(deployment, TODAY)
    run_cli(deployment, "2026-11-27")
    assert len(smtp.recorder.received) == 1
    skipped = as_actor("auditor", deployment, "log", "show", "--action", "report", "--json")
    actions = [json.loads(line)["action"] for line in skipped.output.splitlines()]
    assert "report.not_sent" in actions
    assert (deployment.parent / "reports" / "weekly-digest-2026-11-27.html").is_file()


def test_a_named_report_is_sent_on_demand_once(deployment: Path, smtp: Running) -> None:
    _with_weekly(deployment)
    run_cli(deployment, TODAY)
    sent = as_actor("lead", deployment, "report", "send", "weekly-digest", "--last", "2026-11-22")
    assert sent.exit_code == 0, sent.output
    assert [m.message()["Subject"] for m in smtp.recorder.received][-1] == (
        "Acceptable-use report 2026-11-16 to 2026-11-22"
    )
    count = len(smtp.recorder.received)
    # the same period asked for again (the older spelling of the command): not sent twice
    again = as_actor(
        "lead", deployment, "report", "--schedule", "weekly-digest", "--last", "2026-11-22"
    )
    assert again.exit_code == 0, again.output
    assert len(smtp.recorder.received) == count
    unknown = as_actor("lead", deployment, "report", "send", "monthly")
    assert unknown.exit_code == 2
    assert "no report schedule is named 'monthly' (known: weekly-digest)" in unknown.output


def test_a_pdf_report_without_a_browser_is_refused_before_anything_is_read(
    deployment: Path, smtp: Running
) -> None:
    deployment.write_text(
        deployment.read_text().replace("formats: [html, json]", "formats: [html, pdf]") + "\n"
    )
    text = deployment.read_text().replace(
        "reports: {dir: reports,", "reports: {browser: /nonexistent/chromium, dir: reports,"
    )
    deployment.write_text(text)
    code, output = run_cli(deployment, TODAY)
    assert code == 2, output
    assert "reports.browser: '/nonexistent/chromium' is not an executable" in output
    assert not (deployment.parent / "var" / "store.db").exists()
    assert smtp.recorder.received == []


def test_a_monthly_broad_report_is_written_once_a_month(deployment: Path) -> None:
    """A broad schedule spends privacy budget once per period, not once per run."""
    deployment.write_text(
        deployment.read_text().replace(
            "send_to: [ethics-mail]}",
            "send_to: [], schedules: [{name: board, every: month, audience: broad}]}",
        )
    )
    for day in ("2026-11-20", "2026-11-21", "2026-11-30"):
        run_cli(deployment, day)
    reports = deployment.parent / "reports"
    assert sorted(p.name for p in reports.glob("board-*")) == [
        "board-2026-11-20.broad.html",
        "board-2026-11-20.broad.json",
    ]
    run_cli(deployment, "2026-12-01")  # a new calendar month
    assert (reports / "board-2026-12-01.broad.html").is_file()


@dataclass
class KillingRecorder(Recorder):
    """Takes the message, then kills the sending process with SIGKILL before it can read
    the server's reply: the one moment no protocol can close."""

    victim: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim:
            os.kill(self.victim, signal.SIGKILL)
            self.victim = 0
        return reply


def _run_process(config: Path, day: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COMPLIANCE_NO_PLUGINS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "compliance", "run", "--config", str(config), "--today", day],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_run_killed_while_the_server_takes_the_message_resends_it_once(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real `compliance run` process, killed with SIGKILL by the server right after it
    accepted the message: the next run sends it once more, under the same Message-ID, and
    never a third time."""
    monkeypatch.setenv("SMTP_TEST_PASSWORD", PASSWORD)
    recorder = KillingRecorder()
    with serve(cert=ca.issue_cert("localhost", "127.0.0.1"), auth=True, recorder=recorder) as s:
        config = _deployment(tmp_path / "job", directory_csv, escort_feed, ca, s.port)
        first = _run_process(config, TODAY)
        recorder.victim = first.pid
        assert first.wait(timeout=120) == -signal.SIGKILL
        assert len(recorder.received) == 1
        with Store.open_read_only(config.parent / "var" / "store.db") as store:
            assert [i.state for i in store.outbox.all()] == ["sending"]
        for _ in range(2):
            later = _run_process(config, TODAY)
            assert later.wait(timeout=120) in (0, 4)
        assert len(recorder.received) == 2
        assert len({m.message()["Message-ID"] for m in recorder.received}) == 1
        with Store.open_read_only(config.parent / "var" / "store.db") as store:
            assert [i.state for i in store.outbox.all()] == ["sent"]


def test_a_new_recipient_list_gets_the_report_and_replaces_a_waiting_delivery(
    deployment: Path, smtp: Running
) -> None:
    with Store.open(deployment.parent / "var" / "store.db") as store:
        args = ("report", "team", ("2026-10-22", "2026-11-20"), "ethics-mail", ["r.html"], None)
        assert store.outbox.enqueue("old-list", *args)
        assert not store.outbox.enqueue("old-list", *args)  # once per key
        assert store.outbox.enqueue("new-list", *args)
        states = {i.key: i.state for i in store.outbox.all()}
    assert states == {"old-list": "dropped", "new-list": "pending"}
