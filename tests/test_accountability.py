"""Cases and dual-approved reveals, the hash-chained audit log, retention and key epochs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from tests.conftest import as_actor, read_all_bytes, store_db, week_of_mail_rows, write_ps_export


def run(config: Path, today: str = "2026-11-20") -> None:
    """A scheduled run; a run after the first finds no new export and says so (exit 4)."""
    result = as_actor("svc-compliance", config, "run", "--today", today)
    idle = result.exit_code == 4 and "the run read nothing" in result.output
    assert result.exit_code == 0 or idle, result.output


def test_a_reveal_needs_two_listed_approvers_other_than_the_requester(job: Path) -> None:
    run(job)
    listed = as_actor("lead", job, "alerts", "list", "--today", "2026-11-20")
    assert "escort-ads/repeated-contact" in listed.output
    alert_id = listed.output.splitlines()[1].split()[0]

    refused = as_actor(
        "lead", job, "case", "open", alert_id, "--reason", "repeated contact, policy 4.2"
    )
    assert (refused.exit_code, "a case can be opened only on an alert" in refused.output) == (
        8,
        True,
    )
    assert as_actor("lead", job, "alerts", "triage", alert_id, "--to", "in_review").exit_code == 0
    opened = as_actor(
        "lead", job, "case", "open", alert_id, "--reason", "repeated contact, policy 4.2"
    )
    assert opened.exit_code == 0, opened.output
    steps = [
        ("lead", "reveal", 8, "0 valid approval(s) of the 2 needed"),
        ("lead", "approve", 8, "the requester cannot approve their own case"),
        ("mallory", "approve", 8, "not on the approvers list"),
        ("dpo", "approve", 0, "1 of 2 approvals"),
        ("dpo", "approve", 8, "already approved"),
        ("lead", "reveal", 8, "1 valid approval(s) of the 2 needed"),
        ("works-council", "approve", 0, "2 of 2 approvals"),
        ("dpo", "reveal", 8, "only the requester (lead)"),
    ]
    for actor, step, code, text in steps:
        result = as_actor(actor, job, "case", step, "1")
        assert (result.exit_code, text in result.output) == (code, True), (actor, step, result)
        assert "@corp.example" not in result.output

    store_before = read_all_bytes(job.parent / "var")
    revealed = as_actor("lead", job, "case", "reveal", "1")
    assert revealed.exit_code == 0, revealed.output
    assert "id:00000000-0000-4000-8000-000000000001" in revealed.output
    assert "alias1@corp.example, u1@corp.example" in revealed.output
    assert "Sales/EMEA" in revealed.output
    # the identity is printed, never stored
    for blob in (store_before, read_all_bytes(job.parent / "var")):
        assert b"u1@corp.example" not in blob
        assert b"alias1@" not in blob

    closed = as_actor("lead", job, "case", "close", "1", "--outcome", "advice")
    assert closed.exit_code == 0
    assert (
        as_actor("lead", job, "case", "reveal", "1").exit_code == 8
    )  # closed cases reveal nothing

    trail = as_actor("auditor", job, "log", "show", "--case", "1", "--json")
    actions = [(e["actor"], e["action"]) for e in map(json.loads, trail.output.splitlines())]
    assert actions == [
        ("lead", "case.open"),
        ("lead", "case.reveal.refused"),
        ("lead", "case.approve.refused"),
        ("mallory", "case.approve.refused"),
        ("dpo", "case.approve"),
        ("dpo", "case.approve.refused"),
        ("lead", "case.reveal.refused"),
        ("works-council", "case.approve"),
        ("dpo", "case.reveal.refused"),
        ("lead", "case.reveal"),
        ("lead", "case.close"),
        ("lead", "case.reveal.refused"),
    ]


def test_case_rules_for_alerts_and_reasons(job: Path) -> None:
    run(job)
    missing = as_actor("lead", job, "case", "open", "99", "--reason", "looking at it closely")
    assert (missing.exit_code, "there is no alert 99" in missing.output) == (8, True)
    named = as_actor("lead", job, "case", "open", "1", "--reason", "about u1@corp.example again")
    assert (named.exit_code, "must not contain a mail address" in named.output) == (8, True)
    short = as_actor("lead", job, "case", "open", "1", "--reason", "why")
    assert short.exit_code == 8


def test_without_an_identity_the_step_is_refused(job: Path) -> None:
    run(job)
    result = CliRunner(env={"COMPLIANCE_ACTOR": ""}).invoke(
        cli, ["case", "open", "1", "--config", str(job), "--reason", "repeated contact seen"]
    )
    assert result.exit_code == 2
    assert "COMPLIANCE_ACTOR is not set" in result.output
    # an address or a full name as the identity would be written into the audit log for
    # good (a stranger's check): refused, unquoted, and nothing is logged
    before = as_actor("auditor", job, "log", "show", "--json").output
    for actor in ("zanzibar.quixote@corp.example", "Yolanda Frobisher"):
        result = CliRunner(env={"COMPLIANCE_ACTOR": actor}).invoke(
            cli, ["case", "open", "1", "--config", str(job), "--reason", "repeated contact seen"]
        )
        assert result.exit_code == 2, result.output
        assert "must be a user name" in result.output and actor not in result.output
    assert as_actor("auditor", job, "log", "show", "--json").output == before


def test_the_store_and_the_reports_are_no_other_user_s_to_read(job: Path) -> None:
    """A stranger's check: the store (pseudonyms with their exact units and sites) and the
    reports were created readable by every user of the machine."""
    run(job)
    var, reports = job.parent / "var", job.parent / "reports"
    written = [*var.glob("store.db*"), *reports.iterdir()]
    assert any(p.name == "store.db" for p in written) and any(reports.iterdir())
    for path in written:
        assert path.stat().st_mode & 0o007 == 0, (path.name, oct(path.stat().st_mode))


def test_runs_reports_and_changes_are_logged(job: Path) -> None:
    run(job)
    policy = job.parent / "policies" / "escort-ads.yaml"
    policy.write_text(policy.read_text().replace("version: 2", "version: 3"))
    run(job)
    entries = [
        json.loads(line)
        for line in as_actor("auditor", job, "log", "show", "--json").output.splitlines()
    ]
    actions = [e["action"] for e in entries]
    assert actions[:6] == [
        "key.epoch",
        "config.changed",
        "policy.changed",
        "feed.changed",
        "run",
        "report.written",
    ]
    assert actions[6:] == ["policy.changed", "run", "report.written"]
    change = entries[6]["details"]
    assert change["before"]["escort-ads"]["version"] == 2
    assert change["now"]["escort-ads"]["version"] == 3
    report = entries[5]["details"]
    assert report["files"] == ["report-2026-11-20.html", "report-2026-11-20.json"]
    assert all(e["actor"] == "svc-compliance" for e in entries)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))


def _tamper(config: Path, *statements: str) -> None:
    with store_db(config) as conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        for statement in statements:
            conn.execute(statement)


def test_log_is_append_only(job: Path) -> None:
    run(job)
    with store_db(job) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
    with store_db(job) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 1")


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (
            ["UPDATE audit_log SET details = '{\"run\": 7}' WHERE seq = 5"],
            "entry 5 was edited",
        ),
        (["DELETE FROM audit_log WHERE seq = 3"], "entry 3 is missing"),
        (
            [
                "UPDATE audit_log SET seq = -2 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -2",
            ],
            "entry 2 holds what was entry 3: entries were reordered",
        ),
    ],
    ids=["edited", "removed", "reordered"],
)
def test_log_verify_names_the_first_tampered_entry(
    job: Path, statements: list[str], message: str
) -> None:
    run(job)
    intact = as_actor("auditor", job, "log", "verify")
    assert intact.exit_code == 0
    assert "audit log intact: 6 entries" in intact.output
    _tamper(job, *statements)
    broken = as_actor("auditor", job, "log", "verify")
    assert broken.exit_code == 9
    assert message in broken.output


def test_an_exported_head_catches_a_rewritten_or_cut_chain(job: Path, tmp_path: Path) -> None:
    run(job)
    head = tmp_path / "head.json"
    head.write_text(as_actor("auditor", job, "log", "head").output)
    assert json.loads(head.read_text())["seq"] == 6
    run(job, "2026-11-21")
    assert as_actor("auditor", job, "log", "verify", "--head", str(head)).exit_code == 0
    _tamper(job, "DELETE FROM audit_log WHERE seq >= 6")  # the tail is cut: the chain still links
    assert as_actor("auditor", job, "log", "verify").exit_code == 0
    cut = as_actor("auditor", job, "log", "verify", "--head", str(head))
    assert cut.exit_code == 9
    assert "entries were removed from the end" in cut.output


def test_retention_purges_old_events_and_logs_it(job: Path) -> None:
    run(job)
    with store_db(job) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    run(job, "2027-06-30")  # 180 days after the events: they go, the alert stays (365 days)
    with store_db(job) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1
    purge = as_actor("auditor", job, "log", "show", "--action", "retention", "--json")
    details = json.loads(purge.output.splitlines()[0])["details"]
    assert details["events"] == 3
    assert details["alerts"] == 0


def test_alerts_with_a_case_outlive_their_retention(job: Path) -> None:
    run(job)
    assert as_actor("lead", job, "alerts", "triage", "1", "--to", "in_review").exit_code == 0
    assert (
        as_actor("lead", job, "case", "open", "1", "--reason", "repeated contact, rule 4").exit_code
        == 0
    )
    run(job, "2028-01-31")
    with store_db(job) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1


def test_key_rotation_changes_pseudonyms_per_epoch_and_reveals_in_the_right_one(
    job: Path,
) -> None:
    text = job.read_text() + "privacy: {key_rotation: monthly}\n"
    job.write_text(text)
    inbox = job.parent / "inbox"
    rows = [r[:] for r in week_of_mail_rows(start=100)]
    for row in rows:  # the same people, one month later
        row[5] = row[5].replace("11/", "12/", 1)
    write_ps_export(inbox / "week5.csv", rows)
    run(job, "2026-12-20")
    with store_db(job) as conn:
        epochs = [r[0] for r in conn.execute("SELECT epoch FROM key_epochs ORDER BY epoch")]
        by_epoch = dict(conn.execute("SELECT epoch, count(DISTINCT person) FROM events GROUP BY 1"))
        subjects = conn.execute("SELECT DISTINCT person FROM events").fetchall()
        alerts = conn.execute("SELECT id, epoch FROM alerts ORDER BY trigger_day").fetchall()
    assert epochs == ["2026-11", "2026-12"]
    assert by_epoch == {"2026-11": 1, "2026-12": 1}
    assert len(subjects) == 2  # one person, two unlinkable pseudonyms
    assert [a[1] for a in alerts] == ["2026-11", "2026-12"]
    december = str(alerts[1][0])
    assert as_actor("lead", job, "alerts", "triage", december, "--to", "in_review").exit_code == 0
    assert (
        as_actor("lead", job, "case", "open", december, "--reason", "december contact").exit_code
        == 0
    )
    assert as_actor("dpo", job, "case", "approve", "1").exit_code == 0
    assert as_actor("works-council", job, "case", "approve", "1").exit_code == 0
    revealed = as_actor("lead", job, "case", "reveal", "1")
    assert revealed.exit_code == 0, revealed.output
    assert "u1@corp.example" in revealed.output


def test_an_audit_over_a_configured_deployment_is_logged(job: Path) -> None:
    run(job)
    inbox = str(job.parent / "inbox")
    result = as_actor("auditor", job, "audit", "--logs", inbox, "--format", "json")
    assert result.exit_code == 0, result.output
    entries = as_actor("auditor", job, "log", "show", "--action", "audit", "--json").output
    (entry,) = [json.loads(line) for line in entries.splitlines()]
    assert entry["actor"] == "auditor"
    assert entry["details"]["alerts"] == 1
