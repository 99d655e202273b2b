"""The Dask engine: the same alerts and counts as in-process, on a local two-worker cluster."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from tests.conftest import ps_row, write_ps_export
from tests.test_run import _rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """Four exports (one of them UTF-16, one overlapping another) and a malformed row."""
    folder = tmp_path / "exports"
    folder.mkdir()
    write_ps_export(folder / "week1.csv", _rows())
    write_ps_export(folder / "week2.csv", _rows(start=1000), encoding="utf-16")
    write_ps_export(folder / "overlap.csv", _rows()[:5])
    bad = [*_rows(start=2000)[:3], ps_row("not a date", "u3@corp.example", "x@escort-ads.test")]
    write_ps_export(folder / "bad.csv", bad)
    return folder


def _audit(folder: Path, directory: Path, feed: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(
        cli,
        [
            "audit", "--logs", str(folder), "--feed", f"{feed}:escort-ads",
            "--policies", str(ROOT / "policies"), "--directory", str(directory),
            "--org-domain", "corp.example", "--format", "json", *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


@pytest.mark.slow
def test_dask_engine_equals_the_in_process_engine(
    exports: Path, directory_csv: Path, escort_feed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compliance.distributed")
    local = _audit(exports, directory_csv, escort_feed)
    on_dask = _audit(exports, directory_csv, escort_feed, "--engine", "dask")
    assert "dask: 4 unit(s) on 2 worker(s)" in caplog.text  # the cluster read them
    assert on_dask == local
    assert local["events"] == 2 * len(_rows()) + 5 + 4
    assert local["rejected_by_reason"] == {"bad_timestamp": 1}
    assert local["alerts"]  # something to compare


def test_scheduler_needs_the_dask_engine(
    exports: Path, directory_csv: Path, escort_feed: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "audit", "--logs", str(exports), "--feed", f"{escort_feed}:escort-ads",
            "--policies", str(ROOT / "policies"), "--org-domain", "corp.example",
            "--scheduler", "tcp://127.0.0.1:8786",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--scheduler goes with --engine dask" in result.output


def _store_content(db_path: Path) -> dict[str, list[tuple[object, ...]]]:
    import sqlite3

    queries = {
        "events": "SELECT event_key, ts, day, subject, org_unit, direction, domain, categories,"
        " status, size FROM events ORDER BY event_key",
        "totals": "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3",
        "alerts": "SELECT policy, rule_id, subject, org_unit, messages, people, trigger_day"
        " FROM alerts ORDER BY 1, 2, 3, 4, 7",
        "files": "SELECT unit_key, rows FROM ingested_units ORDER BY 1",
        "bookmarks": "SELECT source, watermark FROM bookmarks",
        "rejected": "SELECT reason, sum(count) FROM rejected_rows GROUP BY 1 ORDER BY 1",
        "runs": "SELECT status, rows_read, rows_rejected, rows_duplicate, rows_matched,"
        " alerts_new FROM runs ORDER BY id",
    }
    with sqlite3.connect(db_path) as db:
        return {name: db.execute(sql).fetchall() for name, sql in queries.items()}


@pytest.mark.slow
def test_a_scheduled_run_on_dask_stores_what_an_in_process_run_stores(
    exports: Path, directory_csv: Path, escort_feed: Path, tmp_path: Path
) -> None:
    stores = {}
    for engine in ("local", "dask"):
        config = tmp_path / f"{engine}.yaml"
        config.write_text(
            f"""
organisation: {{domains: [corp.example]}}
directory: {directory_csv}
sources:
  - {{name: exports, type: exchange, path: {exports}}}
feeds:
  - {{path: {escort_feed}, category: escort-ads}}
policies: [{ROOT / "policies"}]
store: {engine}/store.db
feed_cache: false
engine: {{type: {engine}}}
reports: {{dir: {engine}/reports, formats: [json]}}
"""
        )
        for day in ("2026-11-20", "2026-11-21"):  # the second run finds every file read
            result = CliRunner().invoke(cli, ["run", "--config", str(config), "--today", day])
            assert result.exit_code == 0, result.output
        stores[engine] = _store_content(tmp_path / engine / "store.db")
    assert stores["dask"] == stores["local"]
    assert len(stores["local"]["files"]) == 4
    assert stores["local"]["events"] and stores["local"]["alerts"]
    assert stores["local"]["rejected"] == [("bad_timestamp", 1)]
