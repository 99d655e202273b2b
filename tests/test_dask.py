"""The Dask engine: the same alerts and counts as in-process, on a local two-worker cluster."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from tests.conftest import audit_json, ps_row, week_of_mail_rows, write_config, write_ps_export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """Four exports (one of them UTF-16, one overlapping another) and a malformed row."""
    folder = tmp_path / "exports"
    folder.mkdir()
    write_ps_export(folder / "week1.csv", week_of_mail_rows())
    write_ps_export(folder / "week2.csv", week_of_mail_rows(start=1000), encoding="utf-16")
    write_ps_export(folder / "overlap.csv", week_of_mail_rows()[:5])
    bad = [
        *week_of_mail_rows(start=2000)[:3],
        ps_row("not a date", "u3@corp.example", "x@escort-ads.test"),
    ]
    write_ps_export(folder / "bad.csv", bad)
    return folder


@pytest.mark.slow
def test_dask_engine_equals_the_in_process_engine(
    exports: Path, directory_csv: Path, escort_feed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compliance.executors")
    local = audit_json(exports, directory_csv, escort_feed)
    on_dask = audit_json(exports, directory_csv, escort_feed, "--engine", "dask")
    assert "dask: 4 unit(s) on 2 worker(s)" in caplog.text  # the cluster read them
    assert on_dask == local
    assert local["events"] == 2 * len(week_of_mail_rows()) + 5 + 4
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
        "events": "SELECT event_key, ts, day, person, org_unit, direction, domain, categories,"
        " status, size FROM events ORDER BY event_key",
        "totals": "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3",
        "alerts": "SELECT policy, rule_id, person, org_unit, messages, people, trigger_day"
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
        config = write_config(
            tmp_path / f"{engine}.yaml",
            directory_csv,
            escort_feed,
            f"""
            store: {engine}/store.db
            feed_cache: false
            engine: {{type: {engine}}}
            reports: {{dir: {engine}/reports, formats: [json]}}
            """,
            sources=f"[{{name: exports, type: exchange, path: {exports}}}]",
        )
        for day, code in (("2026-11-20", 0), ("2026-11-21", 4)):  # then every file was read
            result = CliRunner().invoke(cli, ["run", "--config", str(config), "--today", day])
            assert result.exit_code == code, result.output
        stores[engine] = _store_content(tmp_path / engine / "store.db")
    assert stores["dask"] == stores["local"]
    assert len(stores["local"]["files"]) == 4
    assert stores["local"]["events"] and stores["local"]["alerts"]
    assert stores["local"]["rejected"] == [("bad_timestamp", 1)]


def _parquet_archive(path: Path, rows: int = 120) -> None:
    """One Parquet file of many row groups: people writing to listed sites over 10 days."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "time": pd.date_range("2026-11-01 08:00", periods=rows, freq="2h", tz="UTC"),
            "from": [f"u{1 + i % 12}@corp.example" for i in range(rows)],
            "to": [
                f"x{i}@{('www.escort-ads.test', 'other.test')[i % 3 == 0]}" for i in range(rows)
            ],
            "bytes": pa.array(range(100, 100 + rows), pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=10)  # 12 row groups


def test_a_parquet_file_splits_into_row_group_runs_that_read_it_exactly_once(
    tmp_path: Path,
) -> None:
    from connectors.base import create_source

    _parquet_archive(tmp_path / "archive.parquet")
    columns = {"timestamp": "time", "sender": "from", "recipient": "to", "size": "bytes"}
    (unit,) = create_source(
        "generic", "gw", {"path": "archive.parquet", "columns": columns}, tmp_path
    ).units()
    parts = unit.split(5)
    assert len(parts) == 5
    whole = [c.frame for c in unit.chunks()]
    pieces = [c.frame for part in parts for c in part.chunks()]
    pd.testing.assert_frame_equal(
        pd.concat(pieces, ignore_index=True), pd.concat(whole, ignore_index=True)
    )
    assert unit.split(50) and len(unit.split(50)) == 12  # never more parts than row groups


@pytest.mark.slow
def test_a_single_parquet_archive_spreads_over_the_workers(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _parquet_archive(tmp_path / "archive" / "2026-11.parquet")
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\n",
        sources="[{name: archive, type: generic, path: archive/*.parquet, "
        "columns: {timestamp: time, sender: from, recipient: to, size: bytes}}]",
    )
    outputs = []
    caplog.set_level(logging.INFO, logger="compliance.executors")
    for engine in ("local", "dask"):
        result = CliRunner().invoke(
            cli,
            [
                "audit", "--config", str(config), "--source", "archive",
                "--engine", engine, "--format", "json",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert "dask: 4 unit(s) on 2 worker(s)" in caplog.text  # one file, four partitions
    assert outputs[1] == outputs[0]
    assert outputs[0]["matched"] is None  # 8 people with evidence: fewer than the policy's 10
    assert [a["messages"] for a in outputs[0]["alerts"] if a["rule"] == "cluster"] == [80]
