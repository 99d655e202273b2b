"""Every output the system writes, scanned for the people of its input.

The fixtures' people have distinctive names and addresses, which also appear in the
subjects of their mail. The suite runs the job, a second run with bad input, an audit in
every format, broad and team reports, cases and reveals refused, the audit log, the
inventory, debug-level logs and error messages; then scans every byte written or printed
(UTF-8 and UTF-16) for each name, address and local part.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ps_row, read_all_bytes, write_config, write_ps_export

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = [
    ("Zebulon Quackenbush", "zebulon.quackenbush", "zq"),
    ("Philippa Thistlewood", "philippa.thistlewood", "pthistle"),
    ("Ignatius Marchbanks", "ignatius.marchbanks", "imarch"),
    ("Ottoline Fairweather", "ottoline.fairweather", "ofair"),
    ("Barnaby Wolstenholme", "barnaby.wolstenholme", "bwolst"),
    ("Clementine Haverbrook", "clementine.haverbrook", "chaver"),
]
EXTERNAL = "bookings.velvetroom@escort-ads.test"


def needles() -> list[str]:
    out = [EXTERNAL, "bookings.velvetroom"]
    for name, local, alias in PEOPLE:
        out += [name, name.split()[1], f"{local}@corp.example", local, f"{alias}@corp.example"]
    return out


@pytest.fixture
def deployment(tmp_path: Path, escort_feed: Path) -> Path:
    directory = tmp_path / "directory.csv"
    lines = ["displayName,mail,id,department,proxyAddresses,jobTitle"]
    for n, (name, local, alias) in enumerate(PEOPLE):
        lines.append(
            f"{name},{local}@corp.example,5e1f0000-0000-4000-8000-{n:012d},Trading,"
            f'"SMTP:{local}@corp.example;smtp:{alias}@corp.example",Trader'
        )
    directory.write_text("\n".join(lines) + "\n")
    rows = []
    for n, (name, local, alias) in enumerate(PEOPLE):
        for day in (3, 5, 9):
            rows.append(
                ps_row(
                    f"11/{day}/2026 10:0{n}:00 AM",
                    f"{alias if day == 5 else local}@corp.example",
                    EXTERNAL,
                    index=n * 10 + day,
                    subject=f"{name} booking for Thursday",
                )
            )
        rows.append(
            ps_row(
                f"11/4/2026 11:0{n}:00 AM",
                "client@partner.example",
                f"{local}@corp.example",
                index=500 + n,
                subject=f"Hello {name}",
            )
        )
    # malformed rows that carry a person's address where it does not belong
    rows.append(ps_row("not a date", "zq@corp.example", EXTERNAL, index=900))
    rows.append(ps_row("11/6/2026 9:00:00 AM", "zebulon quackenbush@@corp", EXTERNAL, index=901))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "export.csv", rows)
    config = write_config(
        tmp_path / "compliance.yaml",
        directory,
        escort_feed,
        """
        store: var/store.db
        reports: {dir: reports, formats: [html, json, csv], min_group_size: 3}
        schedule: {lock: var/run.lock}
        accountability: {approvers: [dpo, lead], identity: {env: COMPLIANCE_ACTOR}}
        lint_exceptions:
          - {policy: escort-ads, check: WC005, approved_by: [works-council],
             approved_on: 2026-11-01, reason: a test desk of six traders in one unit}
        """,
    )
    return config


def _cli(config: Path, *args: str, actor: str = "analyst", key: str | None = None) -> str:
    env = {**os.environ, "COMPLIANCE_ACTOR": actor}
    if key is not None:
        env["COMPLIANCE_PSEUDONYM_KEY"] = key
    result = subprocess.run(
        [sys.executable, "-m", "compliance", "-vv", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr + f"\n[exit {result.returncode}]\n"


def test_no_output_names_anyone(deployment: Path, tmp_path: Path, escort_feed: Path) -> None:
    printed = [
        _cli(deployment, "run", "--today", "2026-11-20"),
        _cli(deployment, "run", "--today", "2026-11-21"),
    ]
    with sqlite3.connect(deployment.parent / "var" / "store.db") as db:
        person = str(
            db.execute("SELECT min(id) FROM alerts WHERE person IS NOT NULL").fetchone()[0]
        )
    printed += [
        _cli(deployment, "alerts", "list"),
        _cli(deployment, "alerts", "list", "--format", "json"),
        _cli(deployment, "alerts", "list", "--format", "csv"),
        _cli(deployment, "alerts", "triage", person, "--to", "in_review", "--note", "checking"),
        _cli(
            deployment, "alerts", "triage", person, "--to", "confirmed", "--note", "zq@corp.example"
        ),
        _cli(deployment, "alerts", "show", person),
        _cli(deployment, "alerts", "stats"),
        _cli(deployment, "case", "open", person, "--reason", "repeated bookings, policy 4"),
        _cli(deployment, "case", "open", person, "--reason", "about zq@corp.example again"),
        _cli(deployment, "case", "reveal", "1"),  # refused: no approvals
        _cli(deployment, "case", "approve", "1", actor="dpo"),
        _cli(deployment, "case", "reveal", "1"),  # refused: one approval
        _cli(deployment, "case", "list"),
        _cli(deployment, "report", "--audience", "broad", "--last", "2026-11-20"),
        _cli(deployment, "log", "show", "--json"),
        _cli(deployment, "log", "verify"),
        _cli(deployment, "privacy", "inventory"),
        _cli(deployment, "run", "--today", "2026-11-22", key="another-key-" + "x" * 40),
    ]
    audit_out = tmp_path / "audit"
    audit_out.mkdir()
    for fmt in ("table", "json", "csv", "html"):
        printed.append(
            subprocess.run(
                [
                    sys.executable, "-m", "compliance", "-vv", "audit",
                    "--logs", str(deployment.parent / "inbox"),
                    "--feed", f"{escort_feed}:escort-ads",
                    "--policies", str(ROOT / "policies"),
                    "--directory", str(deployment.parent / "directory.csv"),
                    "--org-domain", "corp.example", "--format", fmt,
                    "--out", str(audit_out / f"audit.{fmt}"),
                ],
                env=os.environ,
                capture_output=True,
                text=True,
                check=False,
            ).stderr
        )  # fmt: skip
    text = "\n".join(printed)
    # the scan can fail: every needle is in the input it was given
    given = (
        read_all_bytes(deployment.parent / "inbox")
        + (deployment.parent / "directory.csv").read_bytes()
    )
    assert all(n.encode() in given or n.encode("utf-16-le") in given for n in needles())
    assert "7 new alert(s)" in text  # six person alerts and one cluster alert were raised
    assert "[exit 8]" in text  # the refused reveals and the reason with an address
    assert "has 0 valid approval(s)" in text and "has 1 valid approval(s)" in text
    assert "does not fit the store" in text  # the wrong key
    assert "DEBUG" in text  # debug logs were on
    blobs = {
        "printed": text.encode(),
        "store": read_all_bytes(deployment.parent / "var"),
        "reports": read_all_bytes(deployment.parent / "reports"),
        "audit": read_all_bytes(audit_out),
    }
    assert list((deployment.parent / "reports").glob("*.broad.html"))
    for where, blob in blobs.items():
        for needle in needles():
            for encoding in ("utf-8", "utf-16-le"):
                assert needle.encode(encoding) not in blob, (where, needle)
                assert needle.lower().encode(encoding) not in blob.lower(), (where, needle)


def test_an_internal_error_says_where_not_what(
    deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import compliance.engine
    from compliance.cli import cli

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("cannot parse zebulon.quackenbush@corp.example")

    monkeypatch.setattr(compliance.engine, "process_chunk", broken)
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(deployment), "--today", "2026-11-20"]
    )
    assert result.exit_code == 70
    assert "internal error: ValueError in" in result.output
    assert "zebulon" not in result.output
    store = read_all_bytes(deployment.parent / "var")
    assert b"zebulon" not in store  # the failed run's record names the error type only
