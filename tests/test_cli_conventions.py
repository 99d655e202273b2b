"""The command line behaves as the tools its users know: a reader that closes the pipe early
(`| head -1`) ends the command quietly, a misspelt key, option or command is answered with
the closest valid one, every exit code comes from one table, every command that lists or
reports takes `--format` and `--out` (checked before any work), and the shells complete."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pty
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from compliance.cli import (
    COMMAND_MODULES,
    EXIT_CLOSED_PIPE,
    EXIT_CODES_POINTER,
    cli,
    hoist_global_flags,
    load_commands,
)
from compliance.errors import EXIT_CODES, ComplianceError, ExitCode
from tests.conftest import (
    as_actor,
    audit_args,
    audit_cli,
    week_of_mail_rows,
    write_ps_export,
)
from tests.markdown import section, table_rows

load_commands()  # the command line loads a command's module when it is used: all, here


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


def test_a_feed_compiled_first_has_a_bar_of_its_own_and_the_logs_theirs(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    export = write_ps_export(tmp_path / "export.csv", week_of_mail_rows())
    args = [
        *audit_args([export], directory_csv, escort_feed), "--no-feed-cache",
        "--out", str(tmp_path / "a.json"),
    ]  # fmt: skip
    code, shown = _in_a_terminal(args, tmp_path)
    assert code == 0, shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours, cursor and line erases
    lines = plain.replace("\r", "\n").splitlines()
    feed_entries = 2  # escort-ads.test, velvet-club.test (the comment is no entry)
    feeds = [ln for ln in lines if ln.lstrip().startswith("feeds: read ")]
    audit = [ln for ln in lines if ln.lstrip().startswith("audit: read ")]
    assert feeds and f"1/1 files {feed_entries:,} rows" in feeds[-1], lines
    # the audit counts the log's rows only, not the feed's as well
    assert audit and f"1/1 files {len(week_of_mail_rows()):,} rows" in audit[-1]


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


# --- one exit-code table -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _error_classes(base: type[ComplianceError]) -> list[type[ComplianceError]]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_error_classes(sub)]
    return found


def test_every_exit_code_has_one_name_and_a_meaning() -> None:
    assert set(EXIT_CODES) == {int(code) for code in ExitCode}
    names = [row.name for row in EXIT_CODES.values()]
    assert len(set(names)) == len(names)
    assert all(len(row.meaning) > 3 for row in EXIT_CODES.values())
    assert EXIT_CODES[ExitCode.STORAGE].name == "storage"
    assert EXIT_CODES[141].name == "closed-pipe" and EXIT_CLOSED_PIPE == 141


def test_every_error_of_the_program_exits_with_a_code_of_the_table() -> None:
    classes = _error_classes(ComplianceError)  # every command module is imported by now
    assert {"StorageError", "TriageError", "Unhealthy", "RunInProgress"} <= {
        c.__name__ for c in classes
    }
    outside = {c.__name__: c.exit_code for c in classes if c.exit_code not in EXIT_CODES}
    assert not outside, f"exit codes missing from EXIT_CODES: {outside}"


_LITERAL_EXIT = re.compile(r"\b(?:exit|Exit)\(\s*\d+\s*\)|\bexit_code\s*(?::\s*int\s*)?=\s*\d+")


def test_the_program_names_every_exit_code_from_the_table() -> None:
    """No exit of the program is a bare number: each is a name of ExitCode (so the table
    and the code cannot drift apart)."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("compliance", "connectors")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _LITERAL_EXIT.search(line)
    ]
    assert not found, "exit codes given as numbers:\n" + "\n".join(found)


def readme_exit_codes(markdown: str) -> list[tuple[str, str, str]]:
    """The rows of the table under the README's "Exit codes" heading: code, name, meaning."""
    rows = table_rows(section(markdown, "Exit codes"))
    return [(code, name.strip("`"), meaning) for code, name, meaning in rows[1:]]


def test_the_guide_lists_the_exit_code_table() -> None:
    readme = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    expected = [(str(code), row.name, row.meaning) for code, row in EXIT_CODES.items()]
    assert readme_exit_codes(readme) == expected


def test_help_ends_with_where_the_exit_codes_are_explained() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert result.output.rstrip().splitlines()[-1].strip() == EXIT_CODES_POINTER


def _reference_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reference_hook", ROOT / "docs/hooks/reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_renders_the_exit_code_table() -> None:
    page = _reference_hook().cli_reference()
    section = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| <a id=")]
    assert len(rows) == len(EXIT_CODES)
    for row, (code, meaning) in zip(rows, EXIT_CODES.items(), strict=True):
        assert row.startswith(f'| <a id="exit-{code}"></a>{code} | `{meaning.name}` |'), row


def test_ctrl_c_ends_a_command_with_130_not_an_internal_error(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # the user pressed Ctrl-C while the store was read

    monkeypatch.setattr("compliance.cli.status.check", interrupted)
    result = CliRunner().invoke(cli, ["status", "--config", str(job)])
    assert result.exit_code == ExitCode.INTERRUPTED == 130
    assert result.stderr == "interrupted\n"


# --- --format and --out on every command that lists or reports -------------------------------

#: command -> (its formats, arguments besides --config)
LISTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alerts list": (("table", "json", "csv"), ()),
    "alerts stats": (("table", "json", "csv"), ()),
    "case list": (("table", "json", "csv"), ()),
    "log show": (("table", "json", "csv"), ()),
    "report": (("table", "json", "csv", "html"), ()),
    "report send": (("table", "json", "csv", "html"), ("weekly",)),
    "sources check": (("table", "json", "csv"), ()),
    "sources types": (("table", "json", "csv"), ()),
    "privacy inventory": (("markdown", "html"), ()),
    "outbox list": (("table", "json", "csv"), ()),
    "status": (("table", "json", "csv"), ()),
    "plugins": (("table", "json", "csv"), ()),
    "audit": (("table", "json", "csv", "html"), ()),
}
#: the listings that take no --config
NO_CONFIG = {"sources types", "plugins"}


def _command(words: str) -> click.Command:
    command: click.Command = cli
    for word in words.split():
        assert isinstance(command, click.Group)
        found = command.commands.get(word)
        assert found is not None, words
        command = found
    return command


@pytest.mark.parametrize("words", list(LISTINGS))
def test_every_listing_takes_format_and_out(words: str) -> None:
    params = {p.name: p for p in _command(words).params}
    fmt, out = params.get("fmt"), params.get("out")
    assert isinstance(fmt, click.Option) and isinstance(out, click.Option), words
    assert fmt.opts == ["--format"] and out.opts == ["--out"]
    assert isinstance(fmt.type, click.Choice)
    assert tuple(fmt.type.choices) == LISTINGS[words][0]


def _args(words: str, *extra: str, config: Path | None = None) -> list[str]:
    args = [*words.split(), *LISTINGS[words][1], *extra]
    if words == "audit":
        return [*args, "--logs", "x.csv", "--feed", "f.txt", "--policies", "p", "--org-domain",
                "corp.example"]  # fmt: skip
    return args if words in NO_CONFIG or config is None else [*args, "--config", str(config)]


@pytest.mark.parametrize("words", list(LISTINGS))
def test_an_out_that_cannot_be_written_is_refused_before_any_work(
    words: str, tmp_path: Path
) -> None:
    """The path is checked as the command line is read: the configuration named here does
    not even exist, and the command still says only what is wrong with --out."""
    missing = Path("/nonexistent") / uuid.uuid4().hex / "x.json"
    under_a_file = tmp_path / "a-file.txt"
    under_a_file.write_text("not a folder\n")
    for out in (missing, under_a_file / "x.json"):
        args = _args(words, "--out", str(out), config=tmp_path / "no-such-config.yaml")
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == ExitCode.STORAGE, (words, out, result.output)
        assert result.output.startswith(f"error: cannot write --out {out}: "), result.output
        assert "choose another --out" in result.output
        assert "no-such-config" not in result.output  # nothing else was looked at
    # a folder where the file should go: click's own check, a usage error naming it
    result = CliRunner().invoke(cli, _args(words, "--out", str(tmp_path), config=tmp_path / "c"))
    assert result.exit_code == ExitCode.USAGE
    assert f"'--out': File '{tmp_path}' is a directory" in result.output
    assert not missing.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file.txt"]


def test_a_missing_required_option_is_named() -> None:
    for args, named in (
        (["alerts", "list"], "--config"),
        (["report"], "--config"),
        (["case", "open", "1", "--config", "c.yaml"], "--reason"),
        (["alerts", "triage", "1", "--config", "c.yaml"], "--to"),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == ExitCode.USAGE, args
        assert f"Missing option '{named}'" in result.output, result.output


def test_demo_into_a_place_that_cannot_be_a_folder_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    """A --dir under a file (as root, a read-only folder cannot be staged without a mount:
    tests/test_storage_faults.py does that where it can)."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file\n")
    result = CliRunner().invoke(cli, ["demo", "--dir", str(blocker / "demo")])
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert "internal error" not in result.output
    assert f"the demo folder {blocker / 'demo'}" in result.output and "--dir" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.fixture
def listed(job: Path) -> Path:
    """A deployment after a run, with an alert in review, a case on it opened by an actor
    whose name begins like a spreadsheet formula, and a named weekly report."""
    text = job.read_text()
    job.write_text(
        text.replace(
            "reports: {dir: reports, formats: [html, json]}",
            "reports:\n  dir: reports\n  formats: [html, json]\n"
            "  schedules: [{name: weekly, every: week, audience: team, formats: [json]}]",
        )
    )
    assert as_actor("svc", job, "run", "--today", "2026-11-20").exit_code == 0
    assert as_actor("lead", job, "alerts", "triage", "1", "--to", "in_review").exit_code == 0
    opened = as_actor(FORMULA_ACTOR, job, "case", "open", "1", "--reason", "repeated, policy 4")
    assert opened.exit_code == 0, opened.output
    return job


FORMULA_ACTOR = "=HYPERLINK(1)"


def _listing(job: Path, words: str, *extra: str, code: int = 0) -> str:
    result = CliRunner(env={"COMPLIANCE_ACTOR": "lead"}).invoke(
        cli, _args(words, *extra, config=job)
    )
    assert result.exit_code == code, (words, extra, result.output)
    return result.stdout


def _json(words: str, text: str) -> object:
    """A listing's JSON (`log show`'s: JSON Lines, one entry a line)."""
    if words == "log show":
        return [json.loads(line) for line in text.splitlines()]
    return json.loads(text)


STORE_LISTINGS = [w for w in LISTINGS if w not in ("audit", "privacy inventory", "report send")]


@pytest.mark.slow
def test_listings_print_the_same_rows_as_table_json_and_csv_and_to_out(
    listed: Path, tmp_path: Path
) -> None:
    for words in STORE_LISTINGS:
        code = 0  # `status` too: the run was a moment ago
        table = _listing(listed, words, code=code)
        assert table.strip(), words
        data = _json(words, _listing(listed, words, "--format", "json", code=code))
        rows = list(csv.reader(io.StringIO(_listing(listed, words, "--format", "csv", code=code))))
        assert rows and all(len(r) == len(rows[0]) for r in rows), words
        out = tmp_path / f"{words.replace(' ', '-')}.json"
        result = CliRunner(env={"COMPLIANCE_ACTOR": "lead"}).invoke(
            cli, _args(words, "--format", "json", "--out", str(out), config=listed)
        )
        assert result.exit_code == code, result.output
        assert result.stdout == "" and f"written: {out}" in result.stderr, words
        if words != "report":  # each report is generated anew (its time differs)
            assert _json(words, out.read_text(encoding="utf-8")) == data, words
    cases = json.loads(_listing(listed, "case list", "--format", "json"))
    assert [(c["id"], c["alert"], c["state"], c["opened_by"]) for c in cases] == [
        (1, 1, "open", FORMULA_ACTOR)
    ]
    assert list(cases[0]) == ["id", "alert", "state", "outcome", "opened_at", "opened_by",
                              "approvals"]  # fmt: skip
    assert "repeated" not in json.dumps(cases)  # the reason is not listed
    assert "case  alert  state" in _listing(listed, "case list")


def test_csv_cells_that_begin_like_a_formula_are_written_as_text(listed: Path) -> None:
    for words in ("case list", "log show"):
        rows = list(csv.DictReader(io.StringIO(_listing(listed, words, "--format", "csv"))))
        column = "opened_by" if words == "case list" else "actor"
        shown = {r[column] for r in rows}
        assert "'" + FORMULA_ACTOR in shown and FORMULA_ACTOR not in shown, words


def test_log_show_json_is_json_lines_and_json_stays_its_alias(listed: Path) -> None:
    lines = _listing(listed, "log show", "--format", "json").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert set(entries[0]) == {"seq", "at", "actor", "action", "details", "prev_hash", "hash"}
    assert _listing(listed, "log show", "--json") == "\n".join(lines) + "\n"
    header = _listing(listed, "log show", "--format", "csv").splitlines()[0]
    assert header == "seq,at,actor,action,details,prev_hash,hash"


def test_report_prints_itself_in_the_format_asked_for(listed: Path, tmp_path: Path) -> None:
    plain = _listing(listed, "report", "--last", "2026-11-20")
    written = listed.parent / "reports" / "report-2026-11-20.json"
    assert plain.startswith("report: ") and str(written) in plain  # as before: the files
    document = json.loads(_listing(listed, "report", "--last", "2026-11-20", "--format", "json"))
    stored = json.loads(written.read_text(encoding="utf-8"))
    assert document["alerts"] == stored["alerts"] and document["alerts"]
    alerts = list(csv.DictReader(io.StringIO(
        _listing(listed, "report", "--last", "2026-11-20", "--format", "csv")
    )))  # fmt: skip
    assert [a["id"] for a in alerts] == [str(a["id"]) for a in stored["alerts"]]
    table = _listing(listed, "report", "--last", "2026-11-20", "--format", "table")
    assert table.startswith("Acceptable-use report: ")
    out = tmp_path / "weekly.html"
    sent = _listing(listed, "report send", "--last", "2026-11-20", "--out", str(out),
                    "--format", "html")  # fmt: skip
    assert sent == "" and out.read_text(encoding="utf-8").lstrip().startswith("<!DOCTYPE html>")
    # a broad report holds counts only: refused before any privacy budget is spent
    result = CliRunner(env={"COMPLIANCE_ACTOR": "lead"}).invoke(
        cli, _args("report", "--audience", "broad", "--format", "csv", config=listed)
    )
    assert result.exit_code == ExitCode.USAGE and "a broad report is printed as" in result.output
    assert not list((listed.parent / "reports").glob("*.broad.*"))
    broad = json.loads(
        _listing(
            listed, "report", "--audience", "broad", "--last", "2026-11-20", "--format", "json"
        )
    )
    written = listed.parent / "reports" / "report-2026-11-20.broad.json"
    assert broad == json.loads(written.read_text(encoding="utf-8"))  # the file, as logged
    assert "alerts" not in broad
    result = CliRunner().invoke(cli, ["report", "--format", "json", "send", "weekly"])
    assert result.exit_code == ExitCode.USAGE and "after `send NAME`" in result.output


def test_privacy_inventory_as_a_page_of_its_own(listed: Path) -> None:
    markdown = _listing(listed, "privacy inventory")
    assert markdown.startswith("# Privacy inventory\n")
    page = _listing(listed, "privacy inventory", "--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "<h1>Privacy inventory</h1>" in page
    assert "<table>" in page and "<script" not in page and "http" not in page.split("<body>")[0]
    for heading in re.findall(r"^## (.+)$", markdown, re.MULTILINE):
        assert f"<h2>{heading}</h2>" in page or "`" in heading, heading


def test_a_sources_check_that_fails_is_listed_in_every_format_and_exits_5(
    listed: Path,
) -> None:
    (listed.parent / "inbox").rename(listed.parent / "gone")
    text = _listing(listed, "sources check", code=ExitCode.SOURCE)
    assert "FAIL" in text and text.rstrip().endswith("check(s) failed")
    data = json.loads(_listing(listed, "sources check", "--format", "json", code=ExitCode.SOURCE))
    assert data["failed"] >= 1 and any(not c["ok"] for c in data["checks"])
    assert set(data["checks"][0]) == {"part", "ok", "check"}


# --- shell completion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _compliance_completion compliance"),
        ("zsh", "#compdef compliance"),
        ("fish", "complete --no-files --command compliance"),
    ],
)
def test_the_completion_script_of_each_shell_is_produced(shell: str, marker: str) -> None:
    program = Path(sys.executable).parent / "compliance"  # the installed console script
    done = subprocess.run(
        [str(program)],
        env={**os.environ, "_COMPLIANCE_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    # and the script's callback completes: commands, then the options of one
    words = {"COMP_WORDS": "compliance ale", "COMP_CWORD": "1"}
    done = subprocess.run(
        [str(program)],
        env={**os.environ, "_COMPLIANCE_COMPLETE": "bash_complete", **words},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "plain,alerts" in done.stdout.splitlines()
    words = {"COMP_WORDS": "compliance alerts list --for", "COMP_CWORD": "3"}
    done = subprocess.run(
        [str(program)],
        env={**os.environ, "_COMPLIANCE_COMPLETE": "bash_complete", **words},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines() == ["plain,--format"]


class _Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def start(self, what: str, units: int, total_bytes: int | None) -> None:
        self.calls.append(("start", what, units, total_bytes))

    def rows(self, count: int) -> None:
        self.calls.append(("rows", count))

    def unit_done(self, nbytes: int | None) -> None:
        self.calls.append(("done", nbytes))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_feed_compilation_reports_its_progress_and_a_cached_load_reports_none(
    tmp_path: Path,
) -> None:
    from compliance.feeds import FeedSpec, load_feeds

    feed = tmp_path / "sites.txt"
    feed.write_text("".join(f"site{i}.test\n" for i in range(1000)) + "not a domain!\n")
    cache, recorder = tmp_path / "cache", _Recorder()
    load_feeds([FeedSpec(feed, "escort-ads")], cache, recorder)
    size = feed.stat().st_size
    assert recorder.calls == [
        ("start", "feeds", 1, size), ("rows", 1001), ("done", size), ("finish",),
    ]  # fmt: skip
    again = _Recorder()
    load_feeds([FeedSpec(feed, "escort-ads")], cache, again)  # memory-mapped: nothing long
    assert again.calls == []


def _tree(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _tree(sub)


def test_each_command_is_loaded_with_the_modules_that_define_it() -> None:
    """Commands are imported when used, by name: the table names every command and,
    for each, every module that adds to it (a subcommand defined elsewhere included)."""
    assert set(cli.commands) == set(COMMAND_MODULES)
    modules = {p.stem for p in (ROOT / "compliance" / "cli").glob("*.py")}
    assert {m for ms in COMMAND_MODULES.values() for m in ms} == modules - {"__init__", "progress"}
    for name, command in cli.commands.items():
        for part in _tree(command):
            assert part.callback is not None
            module = part.callback.__module__.removeprefix("compliance.cli.")
            assert module in COMMAND_MODULES[name], (name, part.name, module)


def test_an_audit_starts_without_the_other_commands_modules() -> None:
    """``compliance audit`` loads the audit's module, not the scheduled job's (feed
    downloads, notices, deliveries), nor the other commands'."""
    probe = (
        "import sys, click\n"
        "from compliance.cli import cli\n"
        "ctx = click.Context(cli)\n"
        "assert cli.get_command(ctx, 'audit') is not None\n"
        "import json\n"
        "names = ('compliance.', 'requests', 'tenacity')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(names))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(done.stdout))
    assert "compliance.cli.audit" in loaded
    assert not loaded & {"compliance.job", "compliance.cli.run", "compliance.cli.alerts"}
    assert not {m for m in loaded if m.startswith(("requests", "tenacity"))}
