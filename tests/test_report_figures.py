"""One figure, one definition: the same run's figures agree across places and formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import compliance.scheduled
from compliance.cli import cli
from tests.conftest import killed, ps_row, run_cli, write_config, write_ps_export

POLICY = """\
id: small-units
title: Small units
version: 1
match: {categories: [escort-ads]}
rules:
  - {id: team, kind: cluster, window: 30d, min_people: 3, severity: critical}
privacy: {min_group_size: %d}
"""


def _directory(path: Path, units: dict[str, int]) -> Path:
    lines = ["mail,id,department"]
    n = 0
    for unit, size in units.items():
        for _ in range(size):
            n += 1
            lines.append(f"p{n}@corp.example,00000000-0000-4000-8000-{n:012d},{unit}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _deploy(tmp_path: Path, feed: Path, units: dict[str, int], k_policy: int) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(POLICY % k_policy, encoding="utf-8")
    (tmp_path / "inbox").mkdir()
    return write_config(
        tmp_path / "compliance.yaml",
        _directory(tmp_path / "directory.csv", units),
        feed,
        """
        store: var/store.db
        feed_cache: false
        reports: {dir: reports, formats: [json, html], min_group_size: 5}
        schedule: {lock: var/run.lock}
        privacy: {key_rotation: quarterly}
        """,
        policies=policies,
    )


def _report(config: Path, day: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (config.parent / "reports" / f"report-{day}.json").read_text(encoding="utf-8")
    )
    return data


def test_people_active_on_both_sides_of_a_key_rotation_are_counted_once(
    tmp_path: Path, escort_feed: Path
) -> None:
    config = _deploy(tmp_path, escort_feed, {"Audit": 12, "Brokers": 12, "Claims": 12}, 5)
    rows, n = [], 0
    # 3 people of Audit and 6 of Brokers write on both sides of 1 October (a new
    # quarter: new pseudonyms), 7 of Claims only after it
    for first, count, days in ((1, 3, (28, 2)), (13, 6, (28, 2)), (25, 7, (2,))):
        for person in range(first, first + count):
            for day in days:
                n += 1
                month = 9 if day == 28 else 10
                stamp = f"{month}/{day}/2026 10:00:00 AM"
                rows.append(ps_row(stamp, f"p{person}@corp.example", "a@escort-ads.test", index=n))
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    assert run_cli(config, "2026-10-10")[0] == 0
    report = _report(config, "2026-10-10")
    units = {u["unit"]: u for u in report["org_units"]}  # type: ignore[attr-defined]
    # Audit's 3 people (6 pseudonyms) stay under the threshold of 5: withheld
    assert units["Audit"]["people"] is None and units["Audit"]["sent"] is None
    totals = report["org_units_total"]
    assert totals["people"] in (None, 16)  # type: ignore[index]  # never 25
    # the cluster alerts count people, not pseudonyms
    alerts = {a["org_unit"]: a for a in report["alerts"]}  # type: ignore[attr-defined]
    assert alerts["Brokers"]["people"] == 6
    assert alerts["Audit"]["people"] == 3


def test_an_alert_and_the_org_unit_table_place_a_unit_alike(
    tmp_path: Path, escort_feed: Path
) -> None:
    # North has 7 people: its own row at the report's threshold of 5, but rolled into
    # Sales/EMEA by the policy's 10; one threshold per report (10) places both alike
    config = _deploy(tmp_path, escort_feed, {"Sales/EMEA": 30, "Sales/EMEA/North": 7}, 10)
    rows = [
        ps_row(
            f"11/{2 + i}/2026 10:00:00 AM", f"p{31 + i}@corp.example", "a@escort-ads.test", index=i
        )
        for i in range(3)
    ]
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    assert run_cli(config, "2026-11-20")[0] == 0
    report = _report(config, "2026-11-20")
    [alert] = report["alerts"]  # type: ignore[misc]
    units = {u["unit"]: u for u in report["org_units"]}  # type: ignore[attr-defined]
    assert alert["org_unit"] == "Sales/EMEA"
    assert "Sales/EMEA/North" not in units
    assert units["Sales/EMEA"]["alerts"] == 1


def test_data_quality_counts_the_rows_of_runs_that_were_killed(
    tmp_path: Path, escort_feed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _deploy(tmp_path, escort_feed, {"Sales": 20}, 5)
    inbox = tmp_path / "inbox"
    total = 0
    for week in range(3):
        rows = [
            ps_row(
                f"11/{2 + week * 7 + i % 5}/2026 9:00:00 AM",
                f"p{1 + i % 20}@corp.example",
                f"x{i}@partner.example",
                index=week * 1000 + i,
            )
            for i in range(100 + week * 10)
        ]
        total += len(rows)
        write_ps_export(inbox / f"week{week}.csv", rows)
        if week < 2:  # two runs die after committing their files
            with monkeypatch.context() as patch:
                patch.setattr(compliance.scheduled, "evaluate_stored", killed)
                assert run_cli(config, "2026-11-25")[0] == 70
    assert run_cli(config, "2026-11-25")[0] == 0
    report = _report(config, "2026-11-25")
    quality = report["data_quality"]
    assert quality["rows_read"] == total  # type: ignore[index]
    outbound = sum(u["outbound"] for u in report["org_units"])  # type: ignore[attr-defined]
    assert outbound == total  # the org-unit table counts the same messages
    sources = quality["sources"]  # type: ignore[index]
    assert sum(s["rows"] for s in sources) == total


def test_a_run_that_rejects_every_row_says_so_and_fails(tmp_path: Path, escort_feed: Path) -> None:
    config = _deploy(tmp_path, escort_feed, {"Sales": 20}, 5)
    rows = [ps_row("someday", "p1@corp.example", "x@partner.example", index=i) for i in range(4)]
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    code, output = run_cli(config, "2026-11-25")
    assert code == 4
    assert "every one of the 4 rows read was rejected (bad_timestamp 4)" in output


def test_scheduled_report_formats_agree_on_every_figure(tmp_path: Path, escort_feed: Path) -> None:
    from compliance.demo import DEMO_LAST_DAY

    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    stem = tmp_path / "demo" / "reports" / f"report-{DEMO_LAST_DAY}"
    report = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    html = stem.with_suffix(".html").read_text(encoding="utf-8")
    summary = report["summary"]
    assert summary["matched"] is None  # every unit with evidence is small: withheld
    assert summary["received_only"] == report["org_units_total"]["received_only"] == 57
    assert "matched withheld, received only 57" in result.output
    cards = dict(
        (label.strip(), re.sub(r"<[^>]+>", "", value).strip())
        for value, label in re.findall(r'<div class="card"><b[^>]*>(.*?)</b>([^<]+)</div>', html)
    )
    assert cards["matched messages (evidence)"] == "withheld"
    assert cards["received only"] == "57"
    assert cards["alerts"] == str(summary["alerts"]) == "3"
    for change, count in summary["by_change"].items():
        assert cards[change] == str(count)


def test_reports_show_how_each_rule_fares_in_triage(
    tmp_path: Path, escort_feed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _deploy(tmp_path, escort_feed, {"Sales": 20}, 5)
    rows = [
        ps_row(
            f"11/{2 + i}/2026 10:00:00 AM", f"p{1 + i}@corp.example", "a@escort-ads.test", index=i
        )
        for i in range(3)
    ]
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    assert run_cli(config, "2026-11-20")[0] == 0
    monkeypatch.setenv("COMPLIANCE_ACTOR", "reviewer")
    config.write_text(config.read_text() + "accountability: {identity: {env: COMPLIANCE_ACTOR}}\n")
    for step in (["--to", "in_review"], ["--to", "dismissed", "--reason", "duplicate"]):
        result = CliRunner().invoke(cli, ["alerts", "triage", "1", *step, "--config", str(config)])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["report", "--config", str(config), "--last", "2026-11-20"])
    assert result.exit_code == 0, result.output
    report = _report(config, "2026-11-20")
    rows_by_week = {r["week"]: r for r in report["effectiveness"]}  # type: ignore[attr-defined]
    week = rows_by_week["2026-W45"]
    assert (week["raised"], week["confirmed"], week["dismissed"]) == (1, 0, 1)
    assert week["precision"] == 0.0
    assert week["top_dismissal_reasons"] == [{"reason": "duplicate", "count": 1}]
    assert rows_by_week[None]["raised"] == 1
    html = (config.parent / "reports" / "report-2026-11-20.html").read_text(encoding="utf-8")
    assert "Effectiveness of the rules" in html and "duplicate (1)" in html


def test_an_idle_run_may_be_normal_where_configured(tmp_path: Path, escort_feed: Path) -> None:
    config = _deploy(tmp_path, escort_feed, {"Sales": 20}, 5)
    rows = [ps_row("11/3/2026 9:00:00 AM", "p1@corp.example", "x@partner.example", index=1)]
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    assert run_cli(config, "2026-11-20")[0] == 0
    assert run_cli(config, "2026-11-21")[0] == 4  # nothing new: said, and a failure by default
    text = config.read_text().replace(
        "schedule: {lock: var/run.lock}", "schedule: {lock: var/run.lock, fail_when_idle: false}"
    )
    config.write_text(text)
    code, output = run_cli(config, "2026-11-22")
    assert code == 0 and "0 rows read" in output


def test_draft_findings_and_waiting_alerts_cannot_be_acted_on(
    tmp_path: Path, escort_feed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _deploy(tmp_path, escort_feed, {"Sales": 20, "Legal": 20}, 5)
    policy = tmp_path / "policies" / "p.yaml"
    policy.write_text(policy.read_text() + "max_alerts_per_day: 1\n", encoding="utf-8")
    rows = [  # three people in each unit on one site: two cluster alerts on 11-04
        ps_row(
            f"11/{2 + i % 3}/2026 10:00:00 AM",
            f"p{1 + i}@corp.example",
            "a@escort-ads.test",
            index=i,
        )
        for i in (0, 1, 2, 20, 21, 22)
    ]
    write_ps_export(tmp_path / "inbox" / "export.csv", rows)
    assert run_cli(config, "2026-11-04")[0] == 0
    monkeypatch.setenv("COMPLIANCE_ACTOR", "reviewer")
    config.write_text(config.read_text() + "accountability: {identity: {env: COMPLIANCE_ACTOR}}\n")

    def triage(alert: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            cli, ["alerts", "triage", alert, "--to", "in_review", "--config", str(config)]
        )
        return result.exit_code, result.output

    listed = CliRunner().invoke(
        cli, ["alerts", "list", "--config", str(config), "--format", "json"]
    )
    waiting = [a for a in json.loads(listed.output)["alerts"] if a["state"] == "waiting"]
    [held] = waiting  # the second alert of the day waits for 11-05
    code, output = triage(str(held["id"]))
    assert code == 11 and "waits until 2026-11-05" in output
    # once the job has run on 11-05, it joins the queue
    assert run_cli(config, "2026-11-05")[0] == 4  # nothing new to read, said so
    assert triage(str(held["id"]))[0] == 0
    # a draft policy's findings never alert: no triage, no case
    policy.write_text(policy.read_text() + "status: draft\nversion: 2\n", encoding="utf-8")
    text = policy.read_text().replace("version: 1\n", "", 1)
    policy.write_text(text, encoding="utf-8")
    (tmp_path / "var" / "store.db").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / "var" / f"store.db{extra}").unlink(missing_ok=True)
    assert run_cli(config, "2026-11-04")[0] == 0
    code, output = triage("1")
    assert code == 11 and "draft policy" in output
