"""An out-of-tree connector package: the worked example of docs/WRITING_A_CONNECTOR.md,
built from the guide's own code blocks, installed as pip leaves a package (its module and
its dist-info metadata, entry points read from its pyproject.toml) in a folder on the
path, then listed by `compliance sources types`, run by `compliance run` and checked by
its own conformance test, each in a process of its own as in a deployment."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from connectors.testing import Message, Written, identity_texts, staff, traffic
from tests.conftest import SHIPPED_POLICIES, TEST_KEY, write_config

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "WRITING_A_CONNECTOR.md"
#: A fenced block the guide marks as a file of the package: ```lang title="path"
BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```', re.DOTALL | re.MULTILINE)


def _guide_files() -> dict[str, str]:
    return {path: body for path, body in BLOCK.findall(GUIDE.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the package's project folder, a site folder where it is installed)."""
    root = tmp_path_factory.mktemp("pipe-log")
    project = root / "compliance-pipe-log"
    for name, body in _guide_files().items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body, encoding="utf-8")
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    site = root / "site"
    shutil.copytree(project / "compliance_pipe_log", site / "compliance_pipe_log")
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
            for group, entries in meta["entry-points"].items()
        )
    )
    (info / "top_level.txt").write_text("compliance_pipe_log\n")
    return project, site


def _process(
    site: Path, *args: str, cwd: Path, module: str = "compliance"
) -> subprocess.CompletedProcess[str]:
    """A command in a process of its own, with the package's site on its path and
    plugins on (the suite turns them off for itself)."""
    env = {k: v for k, v in os.environ.items() if k != "COMPLIANCE_NO_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env["COMPLIANCE_PSEUDONYM_KEY"] = TEST_KEY
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_the_guide_holds_a_whole_package_declaring_its_entry_point() -> None:
    files = _guide_files()
    assert set(files) == {
        "pyproject.toml", "compliance_pipe_log/__init__.py", "tests/test_conformance.py"
    }  # fmt: skip
    points = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]
    assert points == {"compliance.sources": {"pipe-log": "compliance_pipe_log:PipeLogSource"}}


def test_sources_types_lists_the_package_with_its_origin(
    package: tuple[Path, Path], tmp_path: Path
) -> None:
    _, site = package
    done = _process(site, "sources", "types", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    types = {t["name"]: t for t in json.loads(done.stdout)}
    pipe = types["pipe-log"]
    assert pipe["origin"] == "compliance-pipe-log 0.3.0"
    assert pipe["reads"] == "files"
    assert pipe["collects"] == ["timestamp", "sender", "recipient", "status", "size", "message_id"]
    assert pipe["options"]["path"].startswith("(required) a file, folder or glob")
    assert pipe["options"]["lines_per_chunk"] == "lines read and handed on at a time"
    assert types["exchange"]["origin"] == "built-in"


def _line(m: Message) -> str:
    stamp = m.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = [stamp, m.sender, ",".join(m.recipients), m.statuses[0], str(m.size)]
    return "|".join([*fields, m.message_id, m.subject]) + "\n"


def _deployment(folder: Path) -> tuple[Path, list[Message]]:
    """A week of a pipe-log gateway (three files, 600 messages and two bad lines), a
    directory of its people in three units, a feed of the listed sites, the shipped
    policies and a store."""
    (folder / "logs").mkdir(parents=True)
    mail = traffic(600, 31, one_status=True)
    for n in range(3):
        part = mail[n * 200 : (n + 1) * 200]
        (folder / "logs" / f"gateway-{n}.log").write_text("".join(map(_line, part)))
    with (folder / "logs" / "gateway-2.log").open("a") as log:
        log.write("2026-11-06T10:00:00Z|cut short\nnot a log line\n")
    units = ["Sales/EMEA"] * 20 + ["Finance"] * 15 + ["Engineering/Platform"] * 25
    directory = folder / "directory.csv"
    directory.write_text(
        "userPrincipalName,displayName,mail,id,department\n"
        + "".join(
            f"{p.address},{p.name},{p.address},{p.key},{u}\n"
            for p, u in zip(staff(), units, strict=True)
        )
    )
    feed = folder / "escorts.txt"
    feed.write_text("escorts.test\nescort-ads.test\n")
    config = write_config(
        folder / "compliance.yaml",
        directory,
        feed,
        "store: var/store.db\nreports: {dir: reports, formats: [json]}\n",
        sources="[{name: gateway, type: pipe-log, path: logs, lines_per_chunk: 150}]",
        policies=SHIPPED_POLICIES,
    )
    return config, mail


@pytest.mark.slow
def test_compliance_run_reads_the_package_source_and_keeps_no_identity(
    package: tuple[Path, Path], tmp_path: Path
) -> None:
    _, site = package
    config, mail = _deployment(tmp_path / "job")
    checked = _process(site, "sources", "check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    done = _process(site, "run", "--config", str(config), "--today", "2026-11-10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 new alert(s)" in done.stdout
    with sqlite3.connect(tmp_path / "job" / "var" / "store.db") as db:
        alerts = db.execute("SELECT policy, rule_id, org_unit, messages, days FROM alerts")
        assert alerts.fetchall() == [("escort-ads", "repeated-contact", "Sales/EMEA", 3, 3)]
        units = db.execute("SELECT format, SUM(rows) FROM ingested_units GROUP BY format")
        rows = sum(len(m.recipients) for m in mail)
        assert units.fetchall() == [("pipe-log", rows + 2)]  # the two bad lines were read too
        rejected = db.execute("SELECT reason, count FROM rejected_rows").fetchall()
        assert ("malformed_line", 2) in rejected
        messages = db.execute("SELECT SUM(messages) FROM daily_totals").fetchone()[0]
    assert messages == rows  # every (message, recipient) once
    again = _process(site, "run", "--config", str(config), "--today", "2026-11-10", cwd=tmp_path)
    assert "no source had new input (3 already read before)" in again.stderr

    stored = b"".join(
        p.read_bytes()
        for folder in ("var", "reports")
        for p in (tmp_path / "job" / folder).rglob("*")
        if p.is_file()
    )
    addresses, planted = identity_texts(Written.of_messages(mail))
    for text in [*addresses, *planted, *(p.key for p in staff())]:
        assert text.encode() not in stored, "an identity reached the store or a report"
    assert b"escorts.test" in stored


@pytest.mark.slow
def test_the_package_passes_its_own_conformance_test(
    package: tuple[Path, Path], tmp_path: Path
) -> None:
    """The guide's test, run by pytest from the package's folder, out of this tree."""
    project, site = package
    done = _process(
        site, "-q", "-p", "no:cacheprovider", "--rootdir", str(project),
        "--basetemp", str(tmp_path / "basetemp"),
        str(project / "tests" / "test_conformance.py"), cwd=project, module="pytest",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
