"""Broad-audience reports: OpenDP noise, no alerts or pseudonyms, a budget that refuses."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from compliance.reports.broad import (
    BroadRelease,
    compute_release,
    epochs_between,
    noisy_counts,
    render_broad_html,
    render_broad_json,
)
from tests.conftest import as_actor, store_db


def _broad(job: Path, **settings: object) -> None:
    extra = ", ".join(f"{k}: {v}" for k, v in settings.items())
    text = job.read_text().replace(
        "reports: {dir: reports, formats: [html, json]}",
        f"reports: {{dir: reports, formats: [html, json], audience: broad, {extra}}}".replace(
            ", }", "}"
        ),
    )
    job.write_text(text)


def test_noise_has_the_scale_epsilon_asks_for() -> None:
    exact = [100] * 4000
    for epsilon, expected in ((1.0, 0.85), (0.1, 10.0)):
        noise = [abs(v - 100) for v in noisy_counts(exact, 1, epsilon)]
        mean = statistics.mean(noise)
        assert expected * 0.85 < mean < expected * 1.15, (epsilon, mean)
    capped = [abs(v - 100) for v in noisy_counts(exact, 10, 1.0)]  # sensitivity 10: 10× noise
    assert 8.5 < statistics.mean(capped) < 11.5


def test_a_period_counts_each_key_epoch_a_person_has() -> None:
    assert epochs_between("2026-10-15", "2026-11-14", "monthly") == 2
    assert epochs_between("2026-10-15", "2026-11-14", "quarterly") == 1
    assert epochs_between("2026-09-15", "2026-10-14", "quarterly") == 2
    assert epochs_between("2026-01-01", "2026-12-31", "never") == 1


def test_broad_report_shows_noisy_counts_only(job: Path) -> None:
    _broad(job)
    result = as_actor("svc", job, "run", "--today", "2026-11-20")
    assert result.exit_code == 0, result.output
    folder = job.parent / "reports"
    assert sorted(p.name for p in folder.iterdir()) == [
        "report-2026-11-20.broad.html",
        "report-2026-11-20.broad.json",
    ]
    report = json.loads((folder / "report-2026-11-20.broad.json").read_text())
    assert report["differential_privacy"]["epsilon"] == 1.0
    # the units come from the directory's structure, not from the data (Legal's two people
    # and Ops are the whole organisation's row together)
    assert [u["unit"] for u in report["org_units"]] == ["(organisation)", "Sales/EMEA", "unknown"]
    text = "".join(p.read_text() for p in folder.iterdir())
    assert not re.search(r"p-[0-9a-f]{20}", text)  # no pseudonym
    assert "repeated-contact" not in text  # no alert
    assert "escort-ads.test" not in text  # no site
    log = as_actor("svc", job, "log", "show", "--action", "dp", "--json")
    (entry,) = [json.loads(line) for line in log.output.splitlines()]
    assert entry["details"]["epsilon"] == 1.0
    assert entry["details"]["spent"] == 1.0


def test_rerendering_spends_nothing_and_the_budget_refuses(job: Path) -> None:
    _broad(job, epsilon=1.0, dp_budget=2.5)
    assert as_actor("svc", job, "run", "--today", "2026-11-20").exit_code == 0
    first = (job.parent / "reports" / "report-2026-11-20.broad.json").read_text()
    again = as_actor("svc", job, "report", "--last", "2026-11-20")
    assert again.exit_code == 0, again.output
    assert (job.parent / "reports" / "report-2026-11-20.broad.json").read_text() == first
    assert as_actor("svc", job, "report", "--last", "2026-11-21").exit_code == 0  # spent: 2.0
    refused = as_actor("svc", job, "report", "--last", "2026-11-22")
    assert refused.exit_code == 10
    assert "budget" in refused.output
    with store_db(job) as conn:
        assert conn.execute("SELECT sum(epsilon) FROM dp_releases").fetchone()[0] == 2.0
    refusals = as_actor("svc", job, "log", "show", "--action", "dp.refused")
    assert "2026-11-22" in refusals.output
    team = as_actor("svc", job, "report", "--last", "2026-11-22", "--audience", "team")
    assert team.exit_code == 0  # the ethics team's report is not budgeted


@pytest.mark.parametrize("value", ["0", "-1", "11"])
def test_epsilon_must_be_sensible(job: Path, value: str) -> None:
    _broad(job, epsilon=value)
    result = as_actor("svc", job, "run", "--today", "2026-11-20")
    assert result.exit_code == 2
    assert "reports.epsilon" in result.output


def test_the_notices_effect_is_released_with_noise_within_the_same_epsilon() -> None:
    # 2,000 noticed people of whom 700 went on, 2,000 held out of whom 1,200 went on
    effect = [
        {"policy": "escort-ads", "window": w, "arm": arm, "people": 2000, "continued": went}
        for w in (7, 30, 90)
        for arm, went in (("notice", 700), ("holdout", 1200))
    ]
    headcounts = {"Sales/EMEA": 40}
    empty = pd.DataFrame({"day": [], "person": [], "org_unit": []}, dtype="string")
    args = (empty, headcounts, 5, "2026-11-01", "2026-11-30", 1.0, 10, "never")
    released = compute_release(*args, effect)
    rows = [r for r in released if "policy" in r]
    assert [(r["window"], r["arm"]) for r in rows] == [(r["window"], r["arm"]) for r in effect]
    assert all(0 <= r["continued"] <= r["people"] for r in rows)
    # epsilon 1/3 for the effect, sensitivity 2 x 3 windows: noise of scale 18 on each count
    errors = [
        abs(r["people"] - 2000) + abs(r["continued"] - e["continued"])
        for _ in range(40)
        for r, e in zip(
            [x for x in compute_release(*args, effect) if "policy" in x], effect, strict=True
        )
    ]
    assert 0 < statistics.mean(errors) < 2 * 2 * 18 * 1.3
    # without notices the units keep half the epsilon each, as before
    assert all("unit" in r for r in compute_release(*args))
    # the difference survives the noise, on average
    notice = [r["continued"] / max(r["people"], 1) for r in rows if r["arm"] == "notice"]
    holdout = [r["continued"] / max(r["people"], 1) for r in rows if r["arm"] == "holdout"]
    assert statistics.mean(notice) < statistics.mean(holdout)


def test_a_broad_report_shows_the_notices_effect_section(tmp_path: Path) -> None:
    effect = [{"policy": "escort-ads", "window": 30, "arm": "notice", "people": 9, "continued": 3}]
    data = BroadRelease(
        "2026-11-01", "2026-11-30", 1.0, 10, [{"unit": "(organisation)", "people": 4,
        "matched": 9}], 1.0, 6.0, 365, notices=effect,
    )  # fmt: skip
    html = render_broad_html(data)
    assert "Deterrence notices: did they work?" in html and "got a notice" in html
    assert json.loads(render_broad_json(data))["notice_effect"] == effect
    plain = BroadRelease("2026-11-01", "2026-11-30", 1.0, 10, [], 1.0, 6.0, 365)
    assert "Deterrence notices" not in render_broad_html(plain)
