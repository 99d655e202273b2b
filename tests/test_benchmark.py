"""The benchmark's two engines do the same job: equal matched counts on its data."""

from __future__ import annotations

from pathlib import Path

from tests.benchmark import parse_count, prepare, run_duckdb, run_incremental, run_project


def test_project_and_duckdb_match_the_same_rows(tmp_path: Path) -> None:
    data = prepare(20_000, 5_000, tmp_path)
    head = data.export.read_text().splitlines()[:3]
    assert head[0].startswith("#TYPE Deserialized.Microsoft.Exchange")
    assert head[1].startswith('"PSComputerName","RunspaceId"')
    seconds, peak, matched = run_project(data)
    duck_seconds, duck_matched = run_duckdb(data)
    assert matched == duck_matched
    assert 100 < matched < 400  # about 1% of 20,000 rows go to listed sites
    assert seconds > 0 and duck_seconds > 0 and peak > 50 * 2**20


def test_sizes_read_like_the_issue_writes_them() -> None:
    assert [parse_count(x) for x in ("1M", "100k", "20M", "5000")] == [
        1_000_000,
        100_000,
        20_000_000,
        5_000,
    ]


def test_a_scheduled_run_evaluates_the_policy_windows_not_the_whole_history(
    tmp_path: Path,
) -> None:
    history, stored, evaluated, evaluation_s, run_s = run_incremental(
        120, per_day=20, new_rows=2_000, feed=2_000, cache=tmp_path
    )
    from compliance.policy.loader import load_policies
    from tests.benchmark import ROOT

    lookback = max(lp.policy.lookback_days for lp in load_policies([ROOT / "policies"]))
    assert lookback < 120  # the store holds more history than the policies need
    assert (history, stored) == (120, 120 * 20)
    # the stored days inside the lookback, plus today's new matches (about 1% of 2,000)
    assert lookback * 20 <= evaluated <= lookback * 20 + 100
    assert 0 < evaluation_s < run_s
