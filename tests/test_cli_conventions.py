"""The command line behaves as the tools its users know: a reader that closes the pipe early
(`| head -1`) ends the command quietly, and a misspelt key, option or command is answered
with the closest valid one."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import EXIT_CLOSED_PIPE, cli, hoist_global_flags
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


def _in_a_terminal(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """Run `compliance ARGS` with standard error a terminal (a pseudo-terminal); (exit
    code, what the terminal showed)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "compliance", *args],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color", **env},
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the process closed its end
            break
        if not data:
            break
        shown += data
    os.close(controller)
    return process.wait(timeout=120), shown.decode(errors="replace")


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.slow
def test_progress_shows_rows_and_files_in_a_terminal_only(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    exports = []
    for n in (1, 2):
        exports.append(tmp_path / f"export{n}.csv")
        write_ps_export(exports[-1], week_of_mail_rows())
    args = [*audit_args(exports, directory_csv, escort_feed), "--out", str(tmp_path / "a.json")]
    code, shown = _in_a_terminal(args, tmp_path)
    assert code == 0, shown
    plain = _COLOUR.sub("", shown)
    assert "2/2 files" in plain and "rows" in plain and "rows/s" in plain
    assert _COLOUR.search(shown)  # coloured in a terminal
    code, shown = _in_a_terminal(args, tmp_path, NO_COLOR="1")
    assert code == 0 and "2/2 files" in shown and not _COLOUR.search(shown)
    code, shown = _in_a_terminal([*args, "--no-color"], tmp_path)
    assert code == 0 and "2/2 files" in shown and not _COLOUR.search(shown)
    code, shown = _in_a_terminal([*args, "-q"], tmp_path)  # -q after the command
    assert code == 0 and "files" not in shown
    # not a terminal: nothing but the result
    done = subprocess.run(
        [sys.executable, "-m", "compliance", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and "files" not in done.stderr


def test_program_flags_may_follow_the_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["policy", "lint", str(tmp_path / "none.yaml"), "-v"])
    assert "No such option" not in result.output
    assert hoist_global_flags(["audit", "--logs", "x", "-vv", "--", "-q"]) == [
        "-vv", "audit", "--logs", "x", "--", "-q",
    ]  # fmt: skip
