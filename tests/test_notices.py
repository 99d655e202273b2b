"""Deterrence notices: sent exactly once, through a real SMTP server on loopback, to the
person behind the pseudonym, with nobody else able to see who; the holdout; the effect
figure; the template's review by `policy lint`.

The deployment runs the job (`compliance run`) on the week of
:func:`tests.conftest.week_of_mail_rows`: u1 (writing as alias1) contacts escort-ads.test on
three days, which raises one person alert of the shipped escort-ads policy, here with
``notice:``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.events import MINIMISED
from compliance.notices import arms, effect, holdout_draws
from compliance.policy.loader import load_policies
from compliance.reports import notice_effect_rows
from compliance.store.notices import NoticeRow, Notices
from tests.conftest import (
    SHIPPED_POLICIES,
    as_actor,
    run_cli,
    store_db,
    week_of_mail_rows,
    write_config,
    write_ps_export,
)
from tests.smtp_server import QUEUE_REPLY, Running, identities_in, serve

TODAY = "2026-11-20"
#: Who the alert is on: u1, who wrote as alias1. Nothing but the SMTP server may see these.
RECIPIENT = "u1@corp.example"
IDENTITIES = [RECIPIENT, "alias1@corp.example", "alias1"]
APPROVAL = (
    "{approved_by: [works-council chair], approved_on: 2026-10-01, "
    "reference: 'Agreement on mail monitoring, annex B'}"
)


@pytest.fixture(autouse=True)
def _operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPLIANCE_ACTOR", "scheduler")


@pytest.fixture
def smtp() -> Iterator[Running]:
    with serve() as running:
        yield running


def _deployment(
    folder: Path,
    directory: Path,
    feed: Path,
    port: int,
    *,
    notice: str = "{every: 90d}",
    approval: str | None = APPROVAL,
    status: str = "active",
) -> Path:
    (folder / "inbox").mkdir(parents=True)
    write_ps_export(folder / "inbox" / "week1.csv", week_of_mail_rows())
    shutil.copytree(SHIPPED_POLICIES, folder / "policies")
    policy = folder / "policies" / "escort-ads.yaml"
    text = policy.read_text(encoding="utf-8").replace("status: active", f"status: {status}")
    policy.write_text(text + f"\nnotice: {notice}\n", encoding="utf-8")
    approved = f"\n          works_council_approval: {approval}" if approval else ""
    return write_config(
        folder / "compliance.yaml",
        directory,
        feed,
        f"""
        store: var/store.db
        reports: {{dir: reports, formats: [html, json, csv]}}
        schedule: {{lock: var/run.lock}}
        accountability:
          approvers: [lead, dpo]
          identity: {{env: COMPLIANCE_ACTOR}}
        deliveries:
          - name: notice-mail
            type: smtp
            host: 127.0.0.1
            port: {port}
            security: none
            from_address: Ethics office <ethics@corp.example>
            to: [ethics@corp.example]
            timeout: 5
        notices:
          channel: notice-mail
          organisation_name: Example Corporation
          help_contacts:
            - "Employee assistance programme: free and confidential, by phone or chat"
            - "Your company doctor, bound by medical secrecy"{approved}
        """,
        policies="policies",
    )


@pytest.fixture
def deployment(tmp_path: Path, directory_csv: Path, escort_feed: Path, smtp: Running) -> Path:
    return _deployment(tmp_path / "job", directory_csv, escort_feed, smtp.port)


def _notices(config: Path) -> list[tuple[object, ...]]:
    with store_db(config) as conn:
        return list(
            conn.execute("SELECT arm, state, alert_id, message_sha256 FROM notices ORDER BY id")
        )


def _audit(config: Path, action: str) -> list[dict[str, object]]:
    shown = as_actor("auditor", config, "log", "show", "--action", action, "--json")
    assert shown.exit_code == 0, shown.output
    return [json.loads(line) for line in shown.output.splitlines()]


def test_a_notice_reaches_the_person_once_and_nobody_else_can_see_who(
    deployment: Path, smtp: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    [mail] = smtp.recorder.received
    assert mail.rcpt_tos == [RECIPIENT]  # the person's primary address, not the alias used
    message = mail.message()
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "A reminder of the acceptable-use policy for corporate mail"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for said in (
        "Corporate mail exchanged with escort-advertising sites",  # the policy's title
        "logged, and reviewed",
        "may be illegal",
        "exploited",
        "Employee assistance programme: free and confidential",
        "Example Corporation",
    ):
        assert said in text, said
        assert said in html, said
    # nothing of the alert: no site, no figure, no day
    assert not re.search(r"escort-ads\.test|\d", text), text
    # the arm and the state are recorded; the audit log names the notice, never who
    [(arm, state, alert_id, digest)] = _notices(deployment)
    assert (arm, state) == ("notice", "sent")
    [entry] = _audit(deployment, "notice.sent")
    details = entry["details"]
    assert isinstance(details, dict)
    assert details["alert"] == alert_id
    assert details["message_sha256"] == digest
    assert details["template"] == "default"
    assert len(str(details["template_sha256"])) == 64
    # a rerun sends nothing again
    code, output = run_cli(deployment, TODAY)
    assert code == 4, output  # nothing new was read
    assert len(smtp.recorder.received) == 1
    assert [row[:2] for row in _notices(deployment)] == [("notice", "sent")]
    # nobody but the SMTP server sees who: the store, the reports, the logs, the audit log
    var = deployment.parent / "var"
    stored = [p.read_bytes() for p in var.iterdir() if p.is_file()]
    reports = [p.read_bytes() for p in (deployment.parent / "reports").rglob("*") if p.is_file()]
    audit = as_actor("auditor", deployment, "log", "show", "--json").output.encode()
    # every log line of ours (the server's own log, "mail.log", is the receiving side)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    seen = [*stored, *reports, audit, logged.encode(), output.encode()]
    assert identities_in(seen, IDENTITIES) == set()
    assert not any(re.search(rb"\bu1\b", blob) for blob in seen)  # nor the local part
    # nor the server's queue id, which its own log holds beside the recipient's address
    # (a stranger's check joined the two and named the person behind the alert)
    queue_id = QUEUE_REPLY.rsplit(" ", 1)[1].encode()
    assert not any(queue_id in blob for blob in seen)
    with store_db(deployment) as conn:
        assert [r[0] for r in conn.execute("SELECT receipt FROM notices")] == ["250"]
    assert "notice 1 sent" in logged  # the log does say that a notice went


def test_a_crash_after_recording_sends_it_on_the_next_run_once(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def died(*_args: object) -> None:
        raise SystemExit(137)  # killed after the decision was recorded, before the send

    with monkeypatch.context() as patch:
        patch.setattr(Notices, "sending", died)
        code, _ = run_cli(deployment, TODAY)
    assert code == 137
    assert smtp.recorder.received == []
    assert [row[:2] for row in _notices(deployment)] == [("notice", "pending")]
    code, output = run_cli(deployment, TODAY)
    assert code == 4, output
    assert [m.rcpt_tos for m in smtp.recorder.received] == [[RECIPIENT]]
    assert [row[:2] for row in _notices(deployment)] == [("notice", "sent")]
    run_cli(deployment, TODAY)
    assert len(smtp.recorder.received) == 1


def test_a_run_that_stops_before_deciding_leaves_the_decision_to_the_next_run(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compliance.job

    def died(*_args: object, **_kwargs: object) -> None:
        raise SystemExit(137)  # killed after the run stored its alerts, before deciding

    with monkeypatch.context() as patch:
        patch.setattr(compliance.job.notices, "process", died)
        code, _ = run_cli(deployment, TODAY)
    assert code == 137
    assert _notices(deployment) == []
    code, output = run_cli(deployment, TODAY)  # reads nothing new: its alert is not new
    assert code == 4, output
    assert [m.rcpt_tos for m in smtp.recorder.received] == [[RECIPIENT]]
    run_cli(deployment, TODAY)
    assert len(smtp.recorder.received) == 1


def test_alerts_from_before_notices_were_enabled_bring_none(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, smtp: Running
) -> None:
    config = _deployment(tmp_path / "job", directory_csv, escort_feed, smtp.port)
    policy = config.parent / "policies" / "escort-ads.yaml"
    text = policy.read_text()
    policy.write_text(text.replace("notice: {every: 90d}", "notice: {every: 90d, enabled: false}"))
    code, output = run_cli(config, TODAY)
    assert code == 0, output
    policy.write_text(text)  # notices turned on after the alert was raised
    run_cli(config, TODAY)
    assert smtp.recorder.received == []
    assert _notices(config) == []


def test_a_notice_interrupted_while_being_sent_is_never_sent_twice(
    deployment: Path, smtp: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compliance.notices

    class Dies:
        def deliver(self, _message: object) -> str:
            raise SystemExit(137)  # killed while the server may have taken it

    with monkeypatch.context() as patch:
        patch.setattr(compliance.notices, "channel", lambda *_args: Dies())
        code, _ = run_cli(deployment, TODAY)
    assert code == 137
    assert [row[:2] for row in _notices(deployment)] == [("notice", "sending")]
    run_cli(deployment, TODAY)
    assert smtp.recorder.received == []  # it may have reached the person: not sent again
    assert [row[:2] for row in _notices(deployment)] == [("notice", "failed")]
    [entry] = _audit(deployment, "notice.failed")
    assert "never sent twice" in json.dumps(entry)


def test_a_server_down_is_retried_later_and_its_error_names_nobody(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    with serve() as running:
        port = running.port  # a port where nothing listens once the server stops
    config = _deployment(tmp_path / "job", directory_csv, escort_feed, port)
    code, output = run_cli(config, TODAY)
    assert code == 0, output
    [(arm, state, _alert, digest)] = _notices(config)
    assert (arm, state, digest) == ("notice", "pending", None)
    [entry] = _audit(config, "notice.retry")
    assert entry["details"]["why"] == "RetriableDeliveryError"  # type: ignore[index]
    with store_db(config) as conn:
        [(error,)] = conn.execute("SELECT last_error FROM notices")
    assert error == "RetriableDeliveryError"


def test_no_notice_without_the_works_council_approval(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, smtp: Running
) -> None:
    config = _deployment(tmp_path / "job", directory_csv, escort_feed, smtp.port, approval=None)
    code, output = run_cli(config, TODAY)
    assert code == 0, output
    assert smtp.recorder.received == []
    assert _notices(config) == []


def test_no_notice_for_a_draft_policy(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, smtp: Running
) -> None:
    config = _deployment(tmp_path / "job", directory_csv, escort_feed, smtp.port, status="draft")
    code, output = run_cli(config, TODAY)
    assert code == 0, output
    with store_db(config) as conn:
        [(drafts,)] = conn.execute("SELECT count(*) FROM alerts WHERE draft = 1")
    assert drafts == 1  # the episode was found, as a draft finding
    assert smtp.recorder.received == []
    assert _notices(config) == []


def test_a_held_out_person_gets_no_notice(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, smtp: Running
) -> None:
    """With a holdout, the keyed hash decides; the decision is recorded either way."""
    config = _deployment(
        tmp_path / "job", directory_csv, escort_feed, smtp.port, notice="{holdout: 0.5}"
    )
    code, output = run_cli(config, TODAY)
    assert code == 0, output
    [(arm, state, _alert, _digest)] = _notices(config)
    assert (arm, state) in (("holdout", "held"), ("notice", "sent"))
    assert len(smtp.recorder.received) == (1 if arm == "notice" else 0)


def test_only_person_rules_bring_a_notice(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    text = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8")
    policy.write_text(text + "\nnotice: {rules: [team-cluster]}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["policy", "lint", str(policy)])
    assert result.exit_code == 3, result.output
    assert "team-cluster" in result.output and "cluster rule" in result.output


def test_lint_refuses_a_template_that_uses_the_alert(tmp_path: Path) -> None:
    (tmp_path / "mine.txt.j2").write_text(
        "Dear colleague, you wrote to {{ alert.domains | join(', ') }}.\n"
        "Policy: {{ policy_title }}\n",
        encoding="utf-8",
    )
    policy = tmp_path / "p.yaml"
    text = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8")
    policy.write_text(text + "\nnotice: {template: mine.txt.j2}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["policy", "lint", str(policy)])
    assert result.exit_code == 3, result.output
    assert "WC015" in result.output and "'alert'" in result.output
    # a site's name or a figure in the template's own words is refused too
    (tmp_path / "mine.txt.j2").write_text(
        "We saw 12 messages to escort-ads.test. {{ policy_title }}\n", encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["policy", "lint", str(policy)])
    assert result.exit_code == 3, result.output
    assert "escort-ads.test" in result.output and "'12'" in result.output
    # the shipped template passes
    policy.write_text(text + "\nnotice: {every: 90d}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["policy", "lint", str(policy)])
    assert "WC015" not in result.output, result.output


# --- the holdout ------------------------------------------------------------------------

PSEUDONYMS = [f"p-{n:020x}" for n in range(20_000)]


def test_the_holdout_is_stable_keyed_and_near_its_share() -> None:
    key = b"k" * 32
    first = arms(key, "escort-ads", PSEUDONYMS, 0.3)
    assert first == arms(key, "escort-ads", PSEUDONYMS, 0.3)  # the same in every run
    share = first.count("holdout") / len(first)
    assert abs(share - 0.3) < 0.015
    other = arms(b"o" * 32, "escort-ads", PSEUDONYMS, 0.3)
    assert abs(other.count("holdout") / len(other) - 0.3) < 0.015
    # another key splits other people: about 0.3 * 0.3 of all are held out by both
    both = sum(a == b == "holdout" for a, b in zip(first, other, strict=True)) / len(first)
    assert abs(both - 0.09) < 0.015
    assert arms(key, "escort-ads", PSEUDONYMS, 0.0).count("holdout") == 0
    draws = holdout_draws(key, "escort-ads", PSEUDONYMS)
    assert draws.min() >= 0.0 and draws.max() < 1.0


# --- did it work ------------------------------------------------------------------------


def _events(rows: list[tuple[str, str]]) -> pd.DataFrame:
    """Matched outbound events to escort-ads.test, one per (person, day)."""
    stamps = pd.to_datetime([f"{day}T10:00:00Z" for _p, day in rows], utc=True)
    frame = pd.DataFrame(
        {
            "event_key": np.arange(len(rows), dtype=np.int64),
            "timestamp": stamps,
            "day": [day for _p, day in rows],
            "source": "exports",
            "person": [p for p, _d in rows],
            "org_unit": "Sales/EMEA",
            "direction": "outbound",
            "domain": "escort-ads.test",
            "reg_domain": "escort-ads.test",
            "categories": "escort-ads",
            "feeds": "escort",
            "status": "delivered",
            "size": 1000,
            "epoch": "-",
        }
    )
    return frame.astype(MINIMISED)


def _decision(i: int, person: str, day: str, arm: str) -> NoticeRow:
    key = f"notice|escort-ads|alert:{i}"
    state = "sent" if arm == "notice" else "held"
    return NoticeRow(
        i, key, "escort-ads", i, person, "-", day, arm, "default", "0" * 64, None, state, 1,
        day, day, None, None, None,
    )  # fmt: skip


def test_the_effect_figure_finds_a_known_effect() -> None:
    """200 people per arm decided on 2026-06-01: of the holdout, 60% write to the site
    again within 30 days; of those noticed, 35%. Some write again only after 45 days."""
    start = dt.date(2026, 6, 1)
    decisions, later = [], []
    for i in range(400):
        arm = "holdout" if i < 200 else "notice"
        person = f"p-{i:020x}"
        decisions.append(_decision(i, person, start.isoformat(), arm))
        later.append((person, start.isoformat()))  # the evidence that raised the alert
        rank = i % 200
        if rank < (120 if arm == "holdout" else 70):
            later.append((person, (start + dt.timedelta(days=3 + rank % 20)).isoformat()))
        elif rank < (150 if arm == "holdout" else 100):
            later.append((person, (start + dt.timedelta(days=45)).isoformat()))
    [policy] = load_policies([SHIPPED_POLICIES / "escort-ads.yaml"])
    rows = effect(decisions, _events(later), [policy], "2026-11-30")
    got = {(r["window"], r["arm"]): (r["people"], r["continued"]) for r in rows}
    assert got[(30, "holdout")] == (200, 120)
    assert got[(30, "notice")] == (200, 70)
    assert got[(90, "holdout")] == (200, 150)
    assert got[(90, "notice")] == (200, 100)
    shown = notice_effect_rows(rows, 10)
    shares = {(r["window"], r["arm"]): r["share"] for r in shown}
    assert shares[(30, "holdout")] == 0.6
    assert shares[(30, "notice")] == 0.35
    # a window that has not passed counts nobody yet
    early = effect(decisions, _events(later), [policy], "2026-06-20")
    assert {r["people"] for r in early if r["window"] >= 30} == {0}


def test_small_arms_are_withheld() -> None:
    rows = [
        {"policy": "p", "window": 30, "arm": "notice", "people": 40, "continued": 3},
        {"policy": "p", "window": 30, "arm": "holdout", "people": 4, "continued": 2},
        {"policy": "p", "window": 90, "arm": "notice", "people": 40, "continued": 20},
        {"policy": "p", "window": 90, "arm": "holdout", "people": 30, "continued": 15},
    ]
    shown = {(r["window"], r["arm"]): r for r in notice_effect_rows(rows, 5)}
    assert shown[(30, "holdout")]["people"] is None  # 4 people: fewer than 5
    assert shown[(30, "notice")]["continued"] is None  # 3 people continued: fewer than 5
    assert shown[(30, "notice")]["share"] is None
    assert shown[(90, "notice")]["share"] == 0.5
