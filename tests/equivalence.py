"""Outputs that a refactoring must leave unchanged, written to a folder for `diff -r`.

    python -m tests.equivalence OUT [--rows 1M]

Run it from the root of each tree to compare (for example a ``git worktree`` of the
commit before a refactoring, and the working tree after it), then ``diff -r OUT1 OUT2``.
It writes:

* ``demo/``: what `compliance demo` prints, its reports (JSON, CSV, HTML) and its store;
* ``audit/``: the JSON report of `compliance audit` over the benchmark's N-row export
  (generated once into ``.benchmark/``, as ``tests.benchmark`` does), and ``audit-dask/``
  the same audit on a local Dask cluster (it must equal ``audit/`` too);
* ``scheduled/``: the store after a scheduled `compliance run` over the same export, and
  ``scheduled-dask/`` after the same run with ``engine: {type: dask}``.

A store is written table by table, rows sorted, columns in name order. Wall-clock
columns (when a run started, when a row was written) and the audit log's hash chain,
which covers them, are replaced by ``*``; so are wall-clock times inside report
files. Column names that a schema migration renamed are written under their new name,
so that a store before the rename compares with one after it. Tables of more than
2,000 rows are written as their row count and a SHA-256 over the sorted rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.benchmark import INCREMENTAL_CONFIG, parse_count, prepare

ROOT = Path(__file__).resolve().parents[1]
KEY = "equivalence-key-" + "0" * 40
#: columns whose values are wall-clock times of this run, or depend on them
VOLATILE = {
    "started_at", "finished_at", "updated_at", "created_at", "applied_at", "opened_at",
    "closed_at", "decided_at", "at", "prev_hash", "hash", "released_at", "seconds", "first_used",
}  # fmt: skip
#: old column name → new one, for schema migrations that rename columns
RENAMED = {"subject": "person", "subject_key": "episode_key"}
#: tables that only record the schema's own history
SKIPPED_TABLES = {"schema_migrations", "sqlite_sequence"}
WALL_CLOCK = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?( ?UTC|\+00:00|Z)?")
#: a report file's digest in the audit log covers the time it was written
DIGEST = re.compile(r'(\\"[^"\\]+\.(json|html|csv)\\": \\")[0-9a-f]{64}')
BIG = 2_000


def dump_store(db: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in sorted(t for t in tables if t not in SKIPPED_TABLES):
        names = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        shown = sorted((RENAMED.get(n, n), n) for n in names if n not in VOLATILE)
        rows = con.execute(
            f"SELECT {', '.join(old for _, old in shown) or '1'} FROM {table}"  # noqa: S608
        ).fetchall()
        lines = sorted(
            json.dumps(dict(zip([new for new, _ in shown], row, strict=True)), default=str)
            for row in rows
        )
        if table == "meta":
            lines = [line for line in lines if "schema_version" not in line]
        if table == "audit_log":  # its details may carry a store path or a time
            lines = [DIGEST.sub(r"\1*", WALL_CLOCK.sub("*", line)) for line in lines]
        target = out / f"{RENAMED.get(table, table)}.jsonl"
        if len(lines) > BIG:
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            target.write_text(f"{len(lines)} rows, sha256 {digest}\n")
        else:
            target.write_text("".join(line + "\n" for line in lines))
    con.close()


def normalise_file(path: Path, out: Path) -> None:
    text = path.read_text(errors="replace")
    out.write_text(WALL_CLOCK.sub("*", text))


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compliance", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def demo(out: Path, work: Path, env: dict[str, str]) -> None:
    folder = work / "demo"
    done = run(["demo", "--dir", str(folder)], work, env)
    (out / "demo").mkdir(parents=True)
    (out / "demo" / "stdout.txt").write_text(
        f"exit {done.returncode}\n" + done.stdout.replace(str(folder.resolve()), "<demo>")
    )
    for report in sorted((folder / "reports").rglob("*")):
        if report.is_file():
            normalise_file(report, out / "demo" / f"report-{report.name}")
    dump_store(folder / "var" / "compliance.db", out / "demo" / "store")


def audit(out: Path, work: Path, env: dict[str, str], rows: int, engine: str = "local") -> None:
    data = prepare(rows, 100_000)
    command = [
        "audit", "--logs", str(data.export), "--feed", f"{data.feed}:escort-ads",
        "--policies", str(work / "policies"), "--directory", str(data.directory),
        "--org-domain", "corp.example", "--format", "json",
        "--feed-cache", str(work / "feed-cache"), "--engine", engine,
    ]  # fmt: skip
    done = run(command, work, env)
    folder = out / ("audit" if engine == "local" else f"audit-{engine}")
    folder.mkdir(parents=True)
    failure = done.stderr[-2000:] if done.returncode else ""  # logs hold times and ports
    (folder / "exit.txt").write_text(f"exit {done.returncode}\n{failure}")
    (folder / "report.json").write_text(WALL_CLOCK.sub("*", done.stdout))


#: the benchmark's scheduled deployment, with a CSV report too
SCHEDULED = INCREMENTAL_CONFIG.replace("formats: [json]", "formats: [json, csv]")


def scheduled(out: Path, work: Path, env: dict[str, str], rows: int, engine: str = "local") -> None:
    data = prepare(rows, 100_000)
    name = "scheduled" if engine == "local" else f"scheduled-{engine}"
    folder = work / name
    (folder / "inbox").mkdir(parents=True)
    os.link(data.export, folder / "inbox" / data.export.name)
    config = folder / "compliance.yaml"
    config.write_text(
        f"engine: {{type: {engine}}}\n"
        + SCHEDULED.format(
            directory=data.directory.resolve(),  # the same path from a worktree's link
            feed=data.feed.resolve(),
            policies=work / "policies",
            feed_cache=work / "feed-cache",
        )
    )
    done = run(["run", "--config", str(config), "--today", "2026-12-31"], folder, env)
    (out / name).mkdir(parents=True)
    (out / name / "exit.txt").write_text(
        f"exit {done.returncode}\n" + done.stdout.replace(str(folder), "<run>")
    )
    for report in sorted((folder / "reports").rglob("*")):
        if report.is_file():
            normalise_file(report, out / name / f"report-{report.name}")
    dump_store(folder / "store.db", out / name / "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="1M")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    work = Path(tempfile.gettempdir()) / "compliance-equivalence"  # the same in every tree
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "COMPLIANCE_PSEUDONYM_KEY": KEY,
        "COMPLIANCE_NO_PLUGINS": "1",
        "PYTHONPATH": str(Path.cwd()),
    }
    rows = parse_count(args.rows)
    shutil.copytree(ROOT / "policies", work / "policies")  # the same path in every tree
    demo(out, work, env)
    audit(out, work, env, rows)
    audit(out, work, env, rows, engine="dask")  # the same files on a local Dask cluster
    scheduled(out, work, env, rows)
    scheduled(out, work, env, rows, engine="dask")
    shutil.rmtree(work, ignore_errors=True)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
