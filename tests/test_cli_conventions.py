"""The command line behaves as the tools its users know: a reader that closes the pipe early
(`| head -1`) ends the command quietly, and a misspelt key, option or command is answered
with the closest valid one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import EXIT_CLOSED_PIPE, cli
from tests.conftest import as_actor, audit_args, week_of_mail_rows, write_ps_export


def _closed_reader(*args: str, cwd: Path) -> tuple[int, str]:
    """Run `compliance ARGS` with its standard output a pipe whose reader has already
    gone, as under `| head -1` once head has its line; (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "compliance", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "COMPLIANCE_ACTOR": "svc"},
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    error = process.stderr.read().decode()
    return process.wait(timeout=120), error


@pytest.mark.slow
def test_a_closed_pipe_ends_listings_and_audits_quietly(
    job: Path, tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    done = as_actor("svc", job, "run", "--today", "2026-11-20")
    assert done.exit_code == 0, done.output
    export = tmp_path / "export.csv"
    write_ps_export(export, week_of_mail_rows())
    for args in (
        ["alerts", "list", "--config", str(job)],
        ["log", "show", "--config", str(job)],
        audit_args(export, directory_csv, escort_feed),
    ):
        code, error = _closed_reader(*args, cwd=tmp_path)
        assert (code, error) == (EXIT_CLOSED_PIPE, ""), args


def test_a_misspelt_policy_field_is_answered_with_the_closest_one(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "id: p\ntitle: T\nversion: 1\n"
        "match: {categories: [escort-ads], evidnce: outbound}\n"
        "rules:\n"
        "  - {id: r, kind: person, window: 30d, min_mesages: 3, min_days: 2, severity: high}\n"
    )
    result = CliRunner().invoke(cli, ["policy", "lint", str(policy)])
    assert result.exit_code == 3
    assert f"{policy}:4: match.evidnce: unknown field (did you mean `evidence`?)" in result.output
    assert f"{policy}:6: rules[0].min_mesages: unknown field (did you mean `min_messages`?)" in (
        result.output
    )


def test_a_misspelt_config_key_or_source_option_is_answered_with_the_closest_one(
    job: Path,
) -> None:
    text = job.read_text()
    job.write_text(text.replace("reports:", "reprots:", 1))
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(job)])
    assert result.exit_code == 2
    assert "reprots: unknown field (did you mean `reports`?)" in result.output
    job.write_text(text.replace("type: exchange", "type: exchange, timestamp_fromat: '%d'", 1))
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(job)])
    assert "timestamp_fromat: unknown option (did you mean `timestamp_format`?)" in result.output


def test_a_misspelt_command_or_option_is_answered_with_the_closest_one() -> None:
    result = CliRunner().invoke(cli, ["alerts", "lsit"])
    assert result.exit_code == 2 and "Did you mean 'list'?" in result.output
    result = CliRunner().invoke(cli, ["alerts", "list", "--fromat", "json"])
    assert result.exit_code == 2 and "'--format'" in result.output
