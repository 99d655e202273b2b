"""The audit's job layer (compliance.audit): an AuditRequest in, the report's data out, no CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.audit import (
    AuditRequest,
    AuditUsageError,
    audit_units,
    engine_for,
    prepare_audit,
    run_audit,
)
from compliance.cli import cli
from compliance.config import load_config
from compliance.privacy import load_key
from tests.conftest import SHIPPED_POLICIES, audit_args, ps_row, write_config, write_ps_export


@pytest.fixture
def export(tmp_path: Path) -> Path:
    rows = [
        ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=1),
        ps_row("11/3/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=2),
        ps_row("11/4/2026 10:00:00 AM", "u2@corp.example", "x@partner.example", index=3),
    ]
    return write_ps_export(tmp_path / "trace.csv", rows)


def _request(export: Path, directory: Path, feed: Path, **changes: object) -> AuditRequest:
    request = AuditRequest(
        logs=(export,),
        feeds=(f"{feed}:escort-ads",),
        policies=(SHIPPED_POLICIES,),
        directory=directory,
        org_domains=("corp.example",),
    )
    return dataclasses.replace(request, **changes)  # type: ignore[arg-type]


def test_the_job_builds_the_report_the_cli_renders(
    export: Path, directory_csv: Path, escort_feed: Path
) -> None:
    outcome = run_audit(_request(export, directory_csv, escort_feed), load_key())
    result = CliRunner().invoke(cli, audit_args(export, directory_csv, escort_feed))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    report = outcome.report
    assert report.rows_read == shown["events"] == outcome.result.tally.rows == 3
    assert (report.first_day, report.last_day) == (shown["first_day"], shown["last_day"])
    assert [a.as_dict()["id"] for a in report.sorted_alerts()] == [a["id"] for a in shown["alerts"]]
    assert report.sources == [
        {"source": "trace.csv", "format": "get-messagetrace-csv", "units": 1, "rows": 3}
    ]


def test_the_period_asked_for() -> None:
    request = AuditRequest(since="2026-11-02", until="2026-11-04")
    assert (request.first_day, request.last_day) == (dt.date(2026, 11, 2), dt.date(2026, 11, 4))
    assert request.start == pd.Timestamp("2026-11-02", tz="UTC")
    assert request.stop == pd.Timestamp("2026-11-05", tz="UTC")  # the last day is included
    open_ended = AuditRequest()
    assert (open_ended.first_day, open_ended.start, open_ended.stop) == (None, None, None)


def test_the_request_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AuditRequest().fmt = "json"  # type: ignore[misc]


def test_the_engine_is_the_request_s_else_the_config_s_else_local(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rest = "engine: {type: dask, scheduler: 'tcp://10.0.0.1:8786'}\n"
    config = load_config(write_config(tmp_path / "c.yaml", directory_csv, escort_feed, rest))
    assert engine_for(AuditRequest()) == ("local", None)
    assert engine_for(AuditRequest(config=config)) == ("dask", "tcp://10.0.0.1:8786")
    assert engine_for(AuditRequest(config=config, scheduler="tcp://h:1")) == ("dask", "tcp://h:1")
    # an engine given on its own takes no scheduler from the config
    assert engine_for(AuditRequest(config=config, engine="local")) == ("local", None)


def test_a_scheduler_without_dask_is_a_usage_error_of_the_job(
    export: Path, directory_csv: Path, escort_feed: Path
) -> None:
    request = _request(export, directory_csv, escort_feed, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(AuditUsageError, match="--scheduler goes with --engine dask"):
        run_audit(request, load_key())


def test_the_feed_cache_options_leave_the_config_as_loaded(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", directory_csv, escort_feed))
    before = config.feed_cache
    prepare_audit(AuditRequest(config=config, no_feed_cache=True), load_key())
    prepare_audit(AuditRequest(config=config, feed_cache=tmp_path / "cache"), load_key())
    assert config.feed_cache == before
    assert (tmp_path / "cache").is_dir()  # the folder asked for was used


def test_units_are_the_logs_then_the_sources(
    tmp_path: Path, export: Path, directory_csv: Path, escort_feed: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "week.csv", [])
    config = load_config(write_config(tmp_path / "c.yaml", directory_csv, escort_feed))
    request = AuditRequest(config=config, logs=(export,), sources=("exports",))
    named = audit_units(request)
    assert [source for source, _ in named] == [None, "exports"]


def test_the_job_layer_knows_no_command_line() -> None:
    code = "import sys, compliance.audit; print(sorted(m for m in sys.modules if m == 'click'"
    code += " or m.startswith('compliance.cli')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
