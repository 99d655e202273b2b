"""Small cells are withheld, and no withheld cell can be recovered from published totals."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.privacy import suppress_small_cells
from compliance.reports import ReportInputs, unit_table
from tests.conftest import ps_row, write_config, write_ps_export

ROOT = Path(__file__).resolve().parents[1]


def attack(
    rows: list[dict[str, Any]], published: list[dict[str, Any]], totals: dict[str, Any], k: int
) -> list[tuple[int, str, int, int]]:
    """What an attacker who knows the suppression rule learns about each withheld cell.

    The attacker sees the published rows and totals and knows which withheld rows are
    primary (1..k-1 people, at least one message each) and which complementary (at
    least k people and k messages); each withheld value lies within the bounds implied
    by the column total minus the visible cells. Returns (row, column, low, high).
    """
    found = []
    withheld = [i for i, r in enumerate(published) if r["people"] is None]
    primary = {i for i in withheld if 0 < rows[i]["people"] < k}
    for column in ("people", "matched"):
        if totals[column] is None:
            continue
        rest = totals[column] - sum(r[column] for r in published if r[column] is not None)
        lower = {i: 1 if i in primary else k for i in withheld}
        upper = {i: k - 1 if (i in primary and column == "people") else 10**9 for i in withheld}
        for i in primary:
            others = [j for j in withheld if j != i]
            low = max(lower[i], rest - sum(upper[j] for j in others))
            high = min(upper[i], rest - sum(lower[j] for j in others))
            found.append((i, column, low, high))
    return found


@pytest.mark.parametrize("seed", range(300))
def test_no_withheld_cell_is_narrowed_by_the_totals(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.choice([3, 5, 10])
    rows = []
    for n in range(rng.randint(1, 9)):
        people = rng.choice([0, 0, 1, 2, rng.randint(1, k - 1), rng.randint(k, 4 * k)])
        matched = people * rng.randint(1, 4) if people else 0
        rows.append({"unit": f"U{n}", "people": people, "matched": matched})
    published, totals = suppress_small_cells(rows, k)
    for i, row in enumerate(rows):
        if 0 < row["people"] < k:
            assert published[i]["people"] is None and published[i]["matched"] is None
        if row["people"] == 0:
            assert published[i]["people"] == 0  # nothing to protect in an empty cell
    for i, column, low, high in attack(rows, published, totals, k):
        # the attacker learns nothing beyond what the rule itself says: 1 .. k-1 people
        assert low <= 1, (rows, published, totals, i, column)
        assert high >= k - 1, (rows, published, totals, i, column)
        true = rows[i][column]
        assert low <= true <= high


def test_one_small_cell_takes_a_complement_and_the_totals_stay() -> None:
    rows = [
        {"unit": "A", "people": 1, "matched": 2},
        {"unit": "B", "people": 9, "matched": 20},
        {"unit": "C", "people": 30, "matched": 70},
        {"unit": "D", "people": 0, "matched": 0},
    ]
    published, totals = suppress_small_cells(rows, 5)
    assert [r["people"] for r in published] == [None, None, 30, 0]
    assert totals == {"people": 40, "matched": 92}


def test_a_lone_small_cell_withholds_the_totals() -> None:
    published, totals = suppress_small_cells(
        [{"unit": "A", "people": 2, "matched": 5}, {"unit": "B", "people": 0, "matched": 0}], 5
    )
    assert published[0]["people"] is None
    assert totals == {"people": None, "matched": None}


def test_the_report_withholds_small_cells_end_to_end(tmp_path: Path, escort_feed: Path) -> None:
    """Three units of ten: 1, 6 and 7 people wrote to a listed site."""
    directory = tmp_path / "directory.csv"
    lines = ["mail,id,department"]
    for n in range(30):
        unit = ("Audit", "Brokers", "Claims")[n // 10]
        lines.append(f"p{n}@corp.example,{n:08d}-0000-4000-8000-000000000000,{unit}")
    directory.write_text("\n".join(lines) + "\n")
    writers = [0, *range(10, 16), *range(20, 27)]
    rows = [
        ps_row(f"11/{3 + d}/2026 10:0{d}:00 AM", f"p{n}@corp.example", "x@escort-ads.test", index=i)
        for i, (n, d) in enumerate((n, d) for n in writers for d in range(2))
    ]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "export.csv", rows)
    config = write_config(
        tmp_path / "compliance.yaml",
        directory,
        escort_feed,
        """
        store: store.db
        reports: {dir: reports, formats: [json, html], min_group_size: 5}
        schedule: {lock: run.lock}
        """,
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--today", "2026-11-20"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "reports" / "report-2026-11-20.json").read_text())
    # one threshold per report: the shipped policy's min_group_size (10) outranks the 5
    # of the config, so that alerts and the org-unit table place units alike
    assert "fewer than 10 people" in report["withheld"]
    units = {u["unit"]: u for u in report["org_units"]}
    assert units["Audit"]["people"] is None  # 1 person: withheld
    assert units["Audit"]["sent"] is None
    truth = [
        {"unit": "Audit", "people": 1, "matched": 2},
        {"unit": "Brokers", "people": 6, "matched": 12},
        {"unit": "Claims", "people": 7, "matched": 14},
    ]
    published = [{**units[t["unit"]], "matched": units[t["unit"]]["sent"]} for t in truth]
    totals = report["org_units_total"]
    assert totals["people"] in (None, 14)
    for _i, _column, low, high in attack(truth, published, totals, 10):
        assert (low, high) != (1, 1)
        assert low <= 1 and high >= 9
    html = (tmp_path / "reports" / "report-2026-11-20.html").read_text()
    assert "withheld" in html


def _unit_events(unit: str, people: int, messages: int) -> list[dict[str, Any]]:
    """``people`` people of ``unit`` each sending ``messages`` messages to a listed site."""
    base = {
        "day": "2026-11-02", "source": "s", "org_unit": unit, "direction": "outbound",
        "domain": "site.test", "reg_domain": "site.test", "categories": "escort-ads",
        "feeds": "f", "status": "delivered", "size": 1, "epoch": "-",
    }  # fmt: skip
    return [
        {
            **base,
            "event_key": hash((unit, p, m)) & 0xFFFFFFFF,
            "timestamp": pd.Timestamp("2026-11-02T10:00:00Z") + pd.Timedelta(minutes=m),
            "person": f"p-{unit}-{p}",
        }
        for p in range(people)
        for m in range(messages)
    ]


def test_a_withheld_unit_is_not_placed_by_its_hidden_figures() -> None:
    """The org-unit table is ordered by what it publishes: a withheld unit whose hidden
    traffic lies between two shown units' must not be listed between them."""
    rows = [
        *_unit_events("Big", 12, 3),
        *_unit_events("Small", 2, 15),
        *_unit_events("Mid", 11, 2),
        *_unit_events("Other", 15, 1),
    ]
    totals = pd.DataFrame(columns=["day", "org_unit", "direction", "messages"])
    inputs = ReportInputs(
        title="t", first_day="2026-11-01", last_day="2026-11-30", as_of="2026-11-30",
        alerts=[], policies=[], totals=totals, matched=pd.DataFrame(rows), headcounts=None,
        min_group_size=10, rows_read=len(rows), rejected={}, skipped={}, sources=[], feeds=[],
    )  # fmt: skip
    published, _ = unit_table(inputs, [], 10)
    order = [r["unit"] for r in published]
    shown = [r["unit"] for r in published if r["sent"] is not None]
    assert order[: len(shown)] == shown  # every withheld unit after every shown one
    assert "Small" in {r["unit"] for r in published if r["sent"] is None}
