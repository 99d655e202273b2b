"""The benchmark's two engines do the same job: equal matched counts on its data."""

from __future__ import annotations

from pathlib import Path

from tests.benchmark import parse_count, prepare, run_duckdb, run_project


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
