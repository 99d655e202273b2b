"""`compliance policy backtest`: what a changed or new policy would have raised over a real
store made by running the job, against the configured version evaluated the same way;
nothing written; a draft's backtest equals what the runs stored as its draft findings; and
the limits of the stored history said in words."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from compliance.cli import cli
from tests.conftest import (
    as_actor,
    cannot_stage,
    ps_row,
    shell,
    store_db,
    week_of_mail_rows,
    write_ps_export,
)


def sent(alias: str, days: list[int], start: int, month: int = 11) -> list[list[str]]:
    """Messages from ``alias``@corp.example to escort-ads.test, one on each day (index from
    ``start``)."""
    return [
        ps_row(
            f"{month}/{day}/2026 10:00:00 AM",
            f"{alias}@corp.example",
            "book@escort-ads.test",
            index=start + i,
        )
        for i, day in enumerate(days)
    ]


#: u2 (Sales/EMEA) writes to the site on two days: below the shipped threshold of 3 messages
U2_TWICE = sent("u2", [3, 5], 100)


def run(job: Path, today: str, rows: list[list[str]], name: str = "week1.csv") -> None:
    write_ps_export(job.parent / "inbox" / name, rows)
    result = as_actor("svc", job, "run", "--today", today)
    assert result.exit_code == 0, result.output


def backtest(job: Path, policy: Path, *args: str) -> Result:
    return CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["policy", "backtest", str(policy), "--config", str(job), *args]
    )


def backtest_json(job: Path, policy: Path, *args: str) -> dict[str, Any]:
    result = backtest(job, policy, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def changed_copy(job: Path, name: str, *edits: tuple[str, str]) -> Path:
    """A copy of the deployment's escort-ads policy, with ``edits`` (old, new) made."""
    text = (job.parent / "policies" / "escort-ads.yaml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = job.parent / name
    path.write_text(text)
    return path


def store_files(job: Path) -> dict[str, str]:
    """SHA-256 of every file below the store's folder (the database and its WAL, the
    lock, the feed cache)."""
    folder = job.parent / "var"
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def stored_alerts(job: Path, policy: str) -> list[tuple[Any, ...]]:
    with store_db(job) as db:
        return list(
            db.execute(
                "SELECT id, rule_id, org_unit, trigger_day, first_day, last_day, days, messages, "
                "people, draft FROM alerts WHERE policy = ? ORDER BY trigger_day, id",
                (policy,),
            )
        )


def test_a_lower_threshold_adds_a_known_alert_and_changes_one_and_writes_nothing(
    job: Path,
) -> None:
    run(job, "2026-11-10", week_of_mail_rows() + U2_TWICE)
    [u1] = stored_alerts(job, "escort-ads")  # u1: 2, 4 and 9 November
    assert u1[1:] == (
        "repeated-contact", "Sales/EMEA", "2026-11-09", "2026-11-02", "2026-11-09", 3, 3, 1, 0
    )  # fmt: skip
    before = store_files(job)
    lower = changed_copy(
        job, "lower.yaml", ("min_messages: 3", "min_messages: 2"), ("version: 2", "version: 3")
    )

    data = backtest_json(job, lower)

    assert store_files(job) == before  # nothing written, not even the WAL
    assert len(stored_alerts(job, "escort-ads")) == 1
    assert data["written"] is False
    assert data["policy"]["version"] == 3 and data["configured"]["version"] == 2
    person = next(r for r in data["rules"] if r["rule_id"] == "repeated-contact")
    assert {k: person[k] for k in ("before", "after", "added", "removed", "changed")} == {
        "before": 1, "after": 2, "added": 1, "removed": 0, "changed": 1,
    }  # fmt: skip
    [added] = [a for a in data["alerts"] if a["change"] == "added"]
    assert {k: added[k] for k in ("rule", "org_unit", "trigger_day", "days", "messages")} == {
        "rule": "repeated-contact", "org_unit": "Sales/EMEA", "trigger_day": "2026-11-05",
        "days": 2, "messages": 2,
    }  # fmt: skip
    assert added["stored_alert"] is None
    [changed] = [a for a in data["alerts"] if a["change"] == "changed"]
    # u1's episode is raised on the 4th, when its second message meets the lower threshold
    assert changed["stored_alert"] == u1[0]
    assert changed["trigger_day"] == "2026-11-04"
    assert changed["was"]["trigger_day"] == "2026-11-09"
    assert data["stored"] == {
        "alerts": 1, "by_version": {"2": 1}, "same_as_configured": 1, "different": 0
    }  # fmt: skip
    assert "subject" not in json.dumps(data) and "p-" not in json.dumps(data)  # no pseudonym

    table = backtest(job, lower)
    assert table.exit_code == 0, table.output
    assert "Added: alerts only this version raises" in table.output
    assert "trigger day 2026-11-09 -> 2026-11-04" in table.output
    assert "Nothing was written" in table.output
    assert store_files(job) == before


def test_a_raised_threshold_removes_the_known_alert(job: Path) -> None:
    run(job, "2026-11-10", week_of_mail_rows())
    [u1] = stored_alerts(job, "escort-ads")
    higher = changed_copy(
        job, "higher.yaml", ("min_messages: 3", "min_messages: 4"), ("version: 2", "version: 3")
    )
    data = backtest_json(job, higher)
    [removed] = [a for a in data["alerts"] if a["change"] != "unchanged"]
    assert removed["change"] == "removed"
    assert removed["stored_alert"] == u1[0]
    assert (removed["rule"], removed["messages"], removed["days"]) == ("repeated-contact", 3, 3)
    text = backtest(job, higher).output
    assert "Removed: alerts only the configured version raises" in text
    assert f"alert {u1[0]}" in text


def test_a_drafts_backtest_is_what_the_runs_stored_as_its_draft_findings(job: Path) -> None:
    policies = job.parent / "policies"
    draft_text = (
        (policies / "escort-ads.yaml")
        .read_text()
        .replace("id: escort-ads", "id: escort-ads-strict")
        .replace("status: active", "status: draft")
        .replace("min_messages: 3", "min_messages: 2")
        .replace("min_people: 3", "min_people: 2")
    )
    (policies / "escort-ads-strict.yaml").write_text(draft_text)
    with job.open("a") as config:  # the works council approved trying pairs in a draft
        config.write(
            "lint_exceptions:\n"
            "  - {policy: escort-ads-strict, check: WC009, approved_by: [works-council],\n"
            "     approved_on: 2026-11-01, reason: a stricter draft tried on the history}\n"
        )
    # two runs, a week apart: episodes are stored incrementally and grow
    run(job, "2026-11-10", week_of_mail_rows() + U2_TWICE)
    run(job, "2026-11-17", sent("alias1", [12, 16], 200) + sent("u3", [13, 14], 300), "w2.csv")
    stored = stored_alerts(job, "escort-ads-strict")
    assert len(stored) >= 3 and all(row[-1] == 1 for row in stored)  # draft findings only

    data = backtest_json(job, policies / "escort-ads-strict.yaml")

    assert {a["change"] for a in data["alerts"]} == {"unchanged"}
    found = sorted(
        (
            a["stored_alert"], a["rule"], a["org_unit"], a["trigger_day"], a["first_day"],
            a["last_day"], a["days"], a["messages"], a["people"], int(a["draft"]),
        )
        for a in data["alerts"]
    )  # fmt: skip
    assert found == sorted(stored)
    assert data["stored"]["same_as_configured"] == len(stored)
    assert any("This version is a draft" in note for note in data["notes"])
    assert any("configured policy file itself" in note for note in data["notes"])


def test_a_new_policy_adds_everything_it_finds(job: Path, tmp_path: Path) -> None:
    run(job, "2026-11-10", week_of_mail_rows() + U2_TWICE)
    new = changed_copy(
        job,
        "new.yaml",
        ("id: escort-ads", "id: escort-ads-two-messages"),
        ("min_messages: 3", "min_messages: 2"),
    )
    data = backtest_json(job, new)
    assert data["configured"] is None
    assert sorted(a["change"] for a in data["alerts"]) == ["added", "added"]
    assert any("this is a new policy" in note for note in data["notes"])
    assert data["stored"]["alerts"] == 0


def test_the_limits_of_the_stored_history_are_said_plainly(job: Path) -> None:
    job.write_text(job.read_text() + "retention: {events_days: 30}\n")
    run(job, "2026-11-10", week_of_mail_rows())
    policy = job.parent / "policies" / "escort-ads.yaml"
    data = backtest_json(job, policy, "--since", "2026-10-01")
    limits = " ".join(data["limits"])
    assert (
        "You asked for results from 2026-10-01; the stored history starts on 2026-11-02 (the "
        "store keeps 30 days of events): nothing before 2026-11-02 can be assessed." in limits
    )
    assert (
        "Rules repeated-contact and team-cluster look back 60 days (a 30-day window and 30 "
        "quiet days that end an episode); the stored history starts on 2026-11-02: results "
        "before 2027-01-01 are incomplete (all of them, here); the store keeps only 30 days "
        "of events, so these rules can never be assessed in full from stored history." in limits
    )
    assert "Replies count up to 14 days after a person's own message" in limits
    text = backtest(job, policy, "--since", "2026-10-01").output
    assert "History limits:" in text and "results before 2027-01-01 are incomplete" in text
    # an episode that ended before --since is not shown
    later = backtest_json(job, policy, "--since", "2026-11-10")
    assert later["alerts"] == []


def test_problems_are_named_with_their_file_and_exit_code(job: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: x\ntitle: T\nversion: 1\nmatch: {categories: [a]}\nrules: []\n")
    result = backtest(job, broken)
    assert result.exit_code == 3 and f"{broken}:" in result.output
    policy = job.parent / "policies" / "escort-ads.yaml"
    result = backtest(job, policy)  # no run yet: no store
    assert result.exit_code == 2
    assert "there is no store" in result.output and "run the job first" in result.output
    result = backtest(job, policy, "--since", "yesterday")
    assert result.exit_code == 2 and "--since" in result.output


def test_a_read_only_store_is_enough(job: Path) -> None:
    """The store's folder mounted read-only (for root too): a backtest needs no write."""
    run(job, "2026-11-10", week_of_mail_rows())
    var = job.parent / "var"
    if not shell("mount", "--bind", str(var), str(var)):
        cannot_stage("bind mounts are not allowed here")
    try:
        if not shell("mount", "-o", "remount,bind,ro", str(var), str(var)):
            cannot_stage("read-only remounts are not allowed here")
        higher = changed_copy(job, "higher.yaml", ("min_messages: 3", "min_messages: 4"))
        data = backtest_json(job, higher)
        assert [a["change"] for a in data["alerts"]] == ["removed"]
    finally:
        for _ in range(20):  # a closing connection may hold it for a moment
            if shell("umount", str(var)):
                break
            time.sleep(0.1)
        else:
            shell("umount", "-l", str(var))


def test_own_domains_and_exclusions_of_a_copy_are_applied_to_the_stored_matches(
    job: Path, tmp_path: Path
) -> None:
    """Mail with a site another feed lists is stored; a copy that names the site as its own
    domain counts it, one that excludes the shipped site drops its alert."""
    dating = tmp_path / "dating.txt"
    dating.write_text("dating-site.test\n")
    text = job.read_text()
    job.write_text(
        text.replace("category: escort-ads}]", f"category: escort-ads}}, {{path: {dating}, "
                     "category: dating}]")
    )  # fmt: skip
    rows = [
        ps_row(f"11/{day}/2026 1{i}:00:00 AM", "u4@corp.example", "hi@dating-site.test",
               index=500 + i)
        for i, day in enumerate((3, 3, 6))
    ]  # fmt: skip
    run(job, "2026-11-10", week_of_mail_rows() + rows)
    own = changed_copy(
        job,
        "own.yaml",
        ("\n  domains: []", "\n  domains: [dating-site.test]"),
        ("version: 2", "version: 3"),
    )
    data = backtest_json(job, own)
    [added] = [a for a in data["alerts"] if a["change"] == "added"]
    assert (added["trigger_day"], added["messages"], added["days"]) == ("2026-11-06", 3, 2)
    assert any("names 1 domain(s) of its own" in note for note in data["notes"])
    excluding = changed_copy(
        job,
        "excluding.yaml",
        ("exclude_domains: []", "exclude_domains: [escort-ads.test]"),
        ("version: 2", "version: 3"),
    )
    data = backtest_json(job, excluding)
    assert [a["change"] for a in data["alerts"]] == ["removed"]
