"""Effectiveness of policies: precision, dismissal reasons and time to triage, per policy,
rule and ISO week, on hand-made facts and on a real store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from compliance.triage import StatsRow, decision, iso_week, stats
from tests.conftest import as_actor
from tests.triage_deployment import alert_ids, make_deployment, run_as_service, triage_step

ROW = "escort-ads", "repeated-contact"


def fact(
    raised: str,
    state: str,
    hours: float | None = None,
    reason: str | None = None,
    rule: str = "repeated-contact",
) -> dict[str, Any]:
    """One alert as Store.triage.facts gives it, stored at 08:00 on its raised day."""
    created = f"{raised}T08:00:00+00:00"
    decided = None
    if hours is not None:
        minutes = round(hours * 60)
        decided = f"{raised}T{8 + minutes // 60:02d}:{minutes % 60:02d}:00+00:00"
    return {
        "policy": "escort-ads",
        "rule_id": rule,
        "raised_day": raised,
        "state": state,
        "reason": reason,
        "created_at": created,
        "decided_at": decided,
    }


FACTS = [
    # 2026-W41
    fact("2026-10-05", "confirmed", 2),
    fact("2026-10-06", "dismissed", 6, "received-only"),
    fact("2026-10-07", "resolved", 3, "received-only"),  # dismissed, then resolved
    fact("2026-10-11", "resolved", 4),  # confirmed, then resolved
    fact("2026-10-11", "new"),
    fact("2026-10-08", "in_review"),
    # 2026-W42
    fact("2026-10-12", "dismissed", 1, "duplicate"),
    fact("2026-10-13", "dismissed", 0.5, "business-need"),
    fact("2026-10-14", "dismissed", 8, "other"),
    fact("2026-10-15", "resolved", 1.5, "duplicate"),
    # another rule, nothing decided
    fact("2026-10-05", "new", rule="team-cluster"),
]


def by_period(rows: list[StatsRow]) -> dict[tuple[str, str, str], StatsRow]:
    return {(r.policy, r.rule_id, r.period): r for r in rows}


def test_stats_on_hand_made_facts() -> None:
    rows = stats(FACTS)
    assert [(r.rule_id, r.period) for r in rows] == [
        ("repeated-contact", "2026-W41"),
        ("repeated-contact", "2026-W42"),
        ("repeated-contact", "all"),
        ("team-cluster", "2026-W41"),
        ("team-cluster", "all"),
    ]
    found = by_period(rows)
    w41 = found[(*ROW, "2026-W41")]
    assert (w41.raised, w41.confirmed, w41.dismissed, w41.undecided) == (6, 2, 2, 2)
    assert w41.precision == pytest.approx(0.5)
    assert w41.top_reasons == [("received-only", 2)]
    assert w41.median_hours == 3.5  # of 2, 6, 3, 4
    w42 = found[(*ROW, "2026-W42")]
    assert (w42.raised, w42.confirmed, w42.dismissed) == (4, 0, 4)
    assert w42.precision == 0.0
    # up to three, most frequent first, ties by name
    assert w42.top_reasons == [("duplicate", 2), ("business-need", 1), ("other", 1)]
    assert w42.median_hours == 1.2  # of 1, 0.5, 8, 1.5: 1.25, one decimal
    whole = found[(*ROW, "all")]
    assert (whole.raised, whole.confirmed, whole.dismissed) == (10, 2, 6)
    assert whole.precision == pytest.approx(0.25)
    assert whole.top_reasons == [("duplicate", 2), ("received-only", 2), ("business-need", 1)]
    assert whole.median_hours == 2.5  # of 0.5, 1, 1.5, 2, 3, 4, 6, 8
    cluster = found[("escort-ads", "team-cluster", "all")]
    assert (cluster.raised, cluster.precision, cluster.median_hours) == (1, None, None)
    assert cluster.top_reasons == []
    data = w41.as_dict()
    assert data["week"] == "2026-W41" and whole.as_dict()["week"] is None
    assert data["precision"] == 0.5
    assert data["top_dismissal_reasons"] == [{"reason": "received-only", "count": 2}]
    json.dumps([r.as_dict() for r in rows])  # plain data


def test_iso_weeks_and_decisions() -> None:
    assert iso_week("2026-10-07") == "2026-W41"
    assert iso_week("2026-10-12") == "2026-W42"
    assert iso_week("2027-01-01") == "2026-W53"  # ISO years differ from calendar years
    assert iso_week("") == "-"
    assert decision({"state": "resolved", "reason": None, "decided_at": None}) is None
    assert decision({"state": "resolved", "reason": "duplicate", "decided_at": "x"}) == "dismissed"
    assert decision({"state": "resolved", "reason": None, "decided_at": "x"}) == "confirmed"
    assert stats([]) == []


def test_stats_on_a_real_store(tmp_path: Path, escort_feed: Path) -> None:
    config = make_deployment(tmp_path, escort_feed)
    run_as_service(config)
    a = alert_ids(config)
    for alert in ("u1", "u2", "h1"):
        assert triage_step(config, str(a[alert]), "--to", "in_review").exit_code == 0
    assert triage_step(config, str(a["u1"]), "--to", "confirmed").exit_code == 0
    assert (
        triage_step(config, str(a["u2"]), "--to", "dismissed", "--reason", "duplicate").exit_code
        == 0
    )
    wrong = triage_step(config, str(a["h1"]), "--to", "dismissed", "--reason", "wrong-listing")
    assert wrong.exit_code == 0
    # resolving keeps the decision
    assert triage_step(config, str(a["u1"]), str(a["u2"]), "--to", "resolved").exit_code == 0

    result = as_actor("lead", config, "alerts", "stats", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {(r["rule"], r["week"]): r for r in json.loads(result.output)}
    person = rows[("repeated-contact", "2026-W46")]
    assert (person["raised"], person["confirmed"], person["dismissed"]) == (3, 1, 2)
    assert person["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert person["top_dismissal_reasons"] == [
        {"reason": "duplicate", "count": 1},
        {"reason": "wrong-listing", "count": 1},
    ]
    assert person["median_hours_to_triage"] == 0.0  # decided within seconds
    assert rows[("repeated-contact", None)]["raised"] == 3
    cluster = rows[("team-cluster", "2026-W45")]
    assert (cluster["raised"], cluster["precision"], cluster["median_hours_to_triage"]) == (
        1,
        None,
        None,
    )

    table = as_actor("lead", config, "alerts", "stats").output
    header, *lines = table.splitlines()
    assert header.split()[:4] == ["policy", "rule", "week", "raised"]
    assert any(
        line.split()[:8]
        == ["escort-ads", "repeated-contact", "2026-W46", "3", "1", "2", "0", "0.33"]
        for line in lines
    )
    assert "duplicate 1, wrong-listing 1" in table

    out = tmp_path / "stats.csv"
    assert (
        as_actor("lead", config, "alerts", "stats", "--format", "csv", "--out", str(out)).exit_code
        == 0
    )
    parsed = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    first = next(r for r in parsed if r["week"] == "2026-W46")
    assert first["top_dismissal_reasons"] == "duplicate:1;wrong-listing:1"
    assert (first["precision"], first["median_hours_to_triage"]) == ("0.3333", "0.0")
    assert next(r for r in parsed if r["rule"] == "team-cluster")["precision"] == ""
