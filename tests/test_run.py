"""`compliance run` against a real SQLite store: idempotent, atomic, and identity-free."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compliance.store import MIGRATIONS
from tests.conftest import (
    DIRECTORY_PEOPLE,
    TEST_KEY,
    ps_row,
    read_all_bytes,
    run_cli,
    store_db,
    week_of_mail_rows,
    write_config,
    write_ps_export,
)

ROOT = Path(__file__).resolve().parents[1]

TODAY = "2026-11-20"


@pytest.fixture
def setup(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "week1.csv", week_of_mail_rows())
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        """
        store: var/store.db
        reports: {dir: reports, formats: [html, json, csv]}
        schedule: {lock: var/run.lock, every_minutes: 60}
        """,
    )
    return config


def _counts(config: Path) -> tuple[int, int, int]:
    with store_db(config) as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        totals = db.execute("SELECT coalesce(sum(messages), 0) FROM daily_totals").fetchone()[0]
        alerts = db.execute("SELECT count(*) FROM alerts").fetchone()[0]
    return events, totals, alerts


def test_run_stores_minimised_events_totals_and_alert(setup: Path) -> None:
    code, output = run_cli(setup, TODAY)
    assert code == 0, output
    assert "1 new alert(s)" in output
    assert _counts(setup) == (3, 21, 1)
    with store_db(setup) as db:
        unit, person = db.execute("SELECT org_unit, person FROM alerts").fetchone()
        assert unit == "Sales/EMEA"
        assert person.startswith("p-")
        assert db.execute("SELECT journal_mode FROM pragma_journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == len(
            MIGRATIONS
        )
    html = (setup.parent / "reports" / "report-2026-11-20.html").read_text()
    assert "Sales/EMEA" in html
    assert "escort-ads.test" in html


def test_rereading_the_same_export_adds_nothing(setup: Path) -> None:
    assert run_cli(setup, TODAY)[0] == 0
    first = _counts(setup)
    # the same content under another name, and the same file again
    (setup.parent / "inbox" / "copy.csv").write_bytes(
        (setup.parent / "inbox" / "week1.csv").read_bytes()
    )
    code, output = run_cli(setup, TODAY)
    # nothing new was read: the run says so and exits 4, and counts nothing twice
    assert code == 4, output
    assert "the run read nothing: no source had new input (2 already read before)" in output
    assert _counts(setup) == first


def test_overlapping_export_counts_each_message_once(setup: Path) -> None:
    assert run_cli(setup, TODAY)[0] == 0
    # a new export that repeats two known rows and adds one new message
    new = ps_row("11/10/2026 8:00:00 AM", "u5@corp.example", "x@partner.example", index=99)
    rows = [*week_of_mail_rows()[:2], new]
    write_ps_export(setup.parent / "inbox" / "overlap.csv", rows, encoding="utf-16")
    assert run_cli(setup, TODAY)[0] == 0
    assert _counts(setup) == (3, 22, 1)
    with store_db(setup) as db:
        duplicates = db.execute("SELECT rows_duplicate FROM runs ORDER BY id DESC").fetchone()[0]
    assert duplicates == 2


def test_bad_file_stops_the_run_with_nothing_written(setup: Path) -> None:
    assert run_cli(setup, TODAY)[0] == 0
    before = _counts(setup)
    write_ps_export(setup.parent / "inbox" / "week2.csv", week_of_mail_rows(start=100))
    (setup.parent / "inbox" / "zz-unknown.csv").write_text("a,b,c\n1,2,3\n")
    code, output = run_cli(setup, TODAY)
    assert code == 4
    assert "zz-unknown.csv" in output
    assert "unknown log format" in output
    assert _counts(setup) == before


def test_files_that_are_no_logs_are_skipped_and_a_name_shows_no_local_part(setup: Path) -> None:
    """The inbox holds what people leave there: a README, a spreadsheet, an editor's
    hidden lock file are skipped; a file of an unknown format still stops the run (it may
    be an export whose format changed), named without the local part of an address in its
    name (per-mailbox exports are named after the person)."""
    inbox = setup.parent / "inbox"
    (inbox / "README.md").write_text("exports from the gateway, one a week\n")
    (inbox / "totals.xlsx").write_bytes(b"PK\x03\x04 not a log")
    (inbox / ".~lock.week1.csv#").write_text("x")
    code, output = run_cli(setup, TODAY)
    assert code == 0, output
    assert _counts(setup) == (3, 21, 1)
    (inbox / "trace-zz.person.name@corp.example.csv").write_text("a,b,c\n1,2,3\n")
    code, output = run_cli(setup, TODAY)
    assert code == 4 and "unknown log format" in output, output
    assert "…@corp.example.csv" in output and "zz.person" not in output


def test_rows_set_aside_are_counted_in_the_store_and_the_report(setup: Path) -> None:
    """A scheduled run counts the rows it sets aside without rejecting them, by reason, as
    an audit does: a privacy officer sees what was left out and why."""
    bounces = [
        ps_row(f"11/{day}/2026 10:00:00 AM", "postmaster@corp.example", "x@escort-ads.test",
               index=500 + day)
        for day in (3, 4, 5)
    ]  # fmt: skip
    write_ps_export(setup.parent / "inbox" / "bounces.csv", bounces)
    code, output = run_cli(setup, TODAY)
    assert code == 0, output
    with store_db(setup) as db:
        skipped = db.execute("SELECT reason, sum(count) FROM skipped_rows GROUP BY reason")
        assert dict(skipped.fetchall()) == {"system_mailbox": 3}
    report = json.loads((setup.parent / "reports" / "report-2026-11-20.json").read_text())
    assert "system_mailbox" in json.dumps(report)


def test_invalid_policy_stops_the_run_before_reading(setup: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-policies"
    bad.mkdir()
    (bad / "p.yaml").write_text("id: Bad Id\n")
    setup.write_text(setup.read_text().replace(str(ROOT / "policies"), str(bad)))
    code, output = run_cli(setup, TODAY)
    assert code == 3
    assert "p.yaml:1: id:" in output
    assert not (setup.parent / "var" / "store.db").exists()


def test_rejected_rows_are_counted_by_reason(setup: Path) -> None:
    rows = [
        *week_of_mail_rows(),
        ps_row("not a time", "u3@corp.example", "x@partner.example", index=70),
        ps_row("11/3/2026 9:00:00 AM", "u3@corp.example", "", index=71),
        ps_row("11/3/2026 9:00:00 AM", "a@partner.example", "b@supplier.test", index=72),
        ["broken"],
    ]
    write_ps_export(setup.parent / "inbox" / "week1.csv", rows)
    assert run_cli(setup, TODAY)[0] == 0
    with store_db(setup) as db:
        reasons = dict(db.execute("SELECT reason, count FROM rejected_rows").fetchall())
    assert reasons == {
        "bad_timestamp": 1,
        "no_recipient": 1,
        "no_internal_party": 1,
        "malformed_row": 1,
    }


def test_store_refuses_another_key(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(setup, TODAY)[0] == 0
    monkeypatch.setenv("COMPLIANCE_PSEUDONYM_KEY", "another-key-" + "x" * 40)
    code, output = run_cli(setup, TODAY)
    assert code == 2
    assert "does not fit the store" in output


def test_run_without_key_refuses(setup: Path, no_key: None) -> None:
    code, output = run_cli(setup, TODAY)
    assert code == 2
    assert "COMPLIANCE_PSEUDONYM_KEY" in output


def test_no_identity_in_store_or_reports(setup: Path) -> None:
    assert run_cli(setup, TODAY)[0] == 0
    store_bytes = read_all_bytes(setup.parent / "var")
    report_bytes = read_all_bytes(setup.parent / "reports")
    identities = {
        *DIRECTORY_PEOPLE,
        "alias1@corp.example",
        "book@escort-ads.test",
        "visitor@partner.example",
    }
    local_parts = {"alias1", "book@", "visitor", "sales@", "Test Person", "Quarterly figures"}
    for needle in sorted(identities | local_parts):
        for blob in (store_bytes, report_bytes):
            assert needle.encode() not in blob, needle
            assert needle.encode("utf-16-le") not in blob, needle


def test_schedule_runs_then_stops_cleanly_on_sigterm(setup: Path) -> None:
    env = {**os.environ, "COMPLIANCE_PSEUDONYM_KEY": TEST_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance", "-v", "schedule", "--config", str(setup)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((setup.parent / "reports").glob("*.html")):
            time.sleep(0.2)
        assert list((setup.parent / "reports").glob("*.html")), "no report written"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "scheduler stopped" in output


def test_second_run_is_skipped_while_the_lock_is_held(setup: Path) -> None:
    from compliance.scheduler import run_lock

    with run_lock(setup.parent / "var" / "run.lock"):
        code, output = run_cli(setup, TODAY)
    assert code == 75
    assert "another run holds" in output
