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
