"""The command line behaves as the tools its users know: a reader that closes the pipe early
(`| head -1`) ends the command quietly, and a misspelt key, option or command is answered
with the closest valid one."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import EXIT_CLOSED_PIPE, cli, hoist_global_flags
from tests.conftest import (
    as_actor,
    audit_args,
    audit_cli,
    week_of_mail_rows,
    write_ps_export,
)


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


# --- inputs given as folders and globs ---------------------------------------------------
def test_a_folder_of_logs_is_searched_with_its_subfolders_and_stray_files_are_skipped(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "2026" / "11").mkdir(parents=True)
    write_ps_export(inbox / "week1.csv", week_of_mail_rows())
    write_ps_export(inbox / "2026" / "11" / "week2.csv", week_of_mail_rows())
    (inbox / "README.md").write_text("# Exports\nDropped here by the mail team.\n")
    (inbox / "notes.txt").write_text("ticket 4711: export re-run on Monday\n")
    (inbox / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (inbox / "2026" / "budget.csv").write_text("year,amount\n2026,100\n")
    with caplog.at_level("INFO", logger="compliance.audit"):
        code, output = audit_cli(inbox, directory_csv, escort_feed)
    assert code == 0, output
    report = json.loads(output)
    assert report["events"] == 2 * len(week_of_mail_rows())
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [
        # hidden files (.DS_Store) are not even looked at
        "--logs: skipped 3 file(s) that are not logs (budget.csv, README.md, notes.txt)"
    ]
    # a glob reads what it matches, skipping what is no log
    code, output = audit_cli(Path(f"{inbox}/**/*.csv"), directory_csv, escort_feed)
    assert code == 0 and json.loads(output)["events"] == 2 * len(week_of_mail_rows())
    # a file named on its own must be a log
    code, output = audit_cli(inbox / "notes.txt", directory_csv, escort_feed)
    assert code != 0 and "unknown log format" in output
    # a folder without any log says so
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("nothing yet\n")
    code, output = audit_cli(empty, directory_csv, escort_feed)
    assert code == 2 and "--logs names no log file (1 file(s) found" in output


def test_feeds_may_be_given_as_a_glob(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    export = tmp_path / "export.csv"
    write_ps_export(export, week_of_mail_rows())
    whole = len(json.loads(audit_cli(export, directory_csv, escort_feed)[1])["alerts"])
    assert whole > 0
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text("velvet-club.test\n")  # not in the week's mail
    (lists / "b.txt").write_text("escort-ads.test\n")
    args = audit_args(export, directory_csv, escort_feed)
    at = args.index("--feed") + 1
    for feed, matched in ((f"{lists}/a.txt:escort-ads", 0), (f"{lists}/*.txt:escort-ads", whole)):
        args[at] = feed
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (0, 4), result.output
        assert len(json.loads(result.output).get("alerts", [])) == matched, feed
    args[at] = f"{lists}/*.hosts:escort-ads"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "the pattern matches no file" in result.output


@pytest.mark.parametrize("cache", [True, False])
def test_a_feed_that_yields_no_domain_is_refused_with_its_reason(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, cache: bool
) -> None:
    export = tmp_path / "export.csv"
    write_ps_export(export, week_of_mail_rows())
    urls = tmp_path / "urls"  # UT1's adult/urls given where adult/domains belongs
    urls.write_text("escort-ads.test/escorts/berlin\nvelvet-club.test/booking.php\n")
    args = audit_args(export, directory_csv, escort_feed)
    args[args.index("--feed") + 1] = f"{urls}:adult"
    extra = ["--feed-cache", str(tmp_path / "cache")] if cache else ["--no-feed-cache"]
    for _ in range(2):  # the second time from the cache, when there is one
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 4, result.output
        assert "urls: holds no domain as a plain list: every line was skipped (2 url)" in (
            result.output
        )
        assert "UT1's `urls` file" in result.output
