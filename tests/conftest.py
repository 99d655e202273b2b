"""Shared fixtures: a key, synthetic exports in the real formats, and paths to samples.

What more than one test module uses lives here, never in a test module: fixtures (pytest
finds them without an import) and the general building blocks (rows, exports, configs, CLI
calls), imported as ``from tests.conftest import ...``. A family of helpers that builds one
area's scenario with its own data gets a helper module of its own instead (e.g.
tests/triage_deployment.py, tests/graph_server.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from compliance.cli import cli
from compliance.directory import Directory
from compliance.domains import DomainIndex, Label
from compliance.pipeline import Context, org_index, process_chunk
from compliance.privacy import Pseudonymiser
from connectors.testing import Minimiser

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
TEST_KEY = "test-key-0123456789abcdef0123456789abcdef"

PS_HEADER = [
    "PSComputerName", "RunspaceId", "PSShowComputerName", "Organization", "MessageId",
    "Received", "SenderAddress", "RecipientAddress", "Subject", "Status", "ToIP", "FromIP",
    "Size", "MessageTraceId", "StartDate", "EndDate", "Index",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("COMPLIANCE_PSEUDONYM_KEY", TEST_KEY)
    # compiled feeds of audits go to a cache of the test session, not the user's
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.delenv("COMPLIANCE_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.setenv("COMPLIANCE_NO_PLUGINS", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Plugins of the developer's environment stay out of the suite, from the start: the
    policy model builds its rule kinds when first imported, during collection."""
    os.environ["COMPLIANCE_NO_PLUGINS"] = "1"


def sample(*parts: str) -> Path:
    """A file of ../shared/samples, or skip the test cleanly when it is absent."""
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared sample {'/'.join(parts)} not present")
    return path


def ps_row(
    received: str,
    sender: str,
    recipient: str,
    *,
    index: int = 0,
    status: str = "Delivered",
    subject: str = "Quarterly figures",
    size: int = 20480,
    message_id: str | None = None,
) -> list[str]:
    """One Get-MessageTrace row, as Export-Csv writes it."""
    mid = message_id or f"<m{index:06d}@mail.corp.example>"
    return [
        "outlook.office365.com", "5c5b2f7e-0000-4000-8000-000000000001", "False",
        "corp.example", mid, received, sender, recipient, subject, status, "",
        "192.0.2.10", str(size), f"8f0c6f4e-0000-4000-8000-{index:012d}",
        "11/1/2026 12:00:00 AM", "11/10/2026 12:00:00 AM", str(index),
    ]  # fmt: skip


#: The header of the Exchange admin center's extended message trace report.
EAC_HEADER = (
    "date_time_utc,client_ip,client_hostname,server_ip,server_hostname,source_context,"
    "connector_id,source,event_id,internal_message_id,message_id,network_message_id,"
    "recipient_address,recipient_status,total_bytes,recipient_count,"
    "related_recipient_address,reference,message_subject,sender_address,return_path,"
    "message_info,directionality,tenant_id,original_client_ip,original_server_ip,custom_data"
)


def write_ps_export(
    path: Path,
    rows: Sequence[Sequence[str]],
    *,
    encoding: str = "utf-8",
    type_line: bool = True,
    newline: str = "\r\n",
) -> Path:
    """Write rows like Windows PowerShell 5.1's Export-Csv (quoted, CRLF, #TYPE)."""
    lines = []
    if type_line:
        lines.append("#TYPE Deserialized.Microsoft.Exchange.Management.FfoReporting.MessageTrace")
    for row in [PS_HEADER, *rows]:
        lines.append(",".join('"' + f.replace('"', '""') + '"' for f in row))
    text = newline.join(lines) + newline
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def directory_csv(tmp_path: Path) -> Path:
    """An Entra ID users export: Sales/EMEA (12), Sales/EMEA/North (3), Legal (2), Ops (10,
    u18..u27: so that Legal's two people are not the whole organisation's roll-up alone;
    Ops joins them there)."""
    rows = ["userPrincipalName,displayName,mail,id,department,proxyAddresses"]
    n = 0
    for unit, size in (("Sales/EMEA", 12), ("Sales/EMEA/North", 3), ("Legal", 2), ("Ops", 10)):
        for _ in range(size):
            n += 1
            rows.append(
                f"u{n}@corp.example,Test Person {n},u{n}@corp.example,"
                f"00000000-0000-4000-8000-{n:012d},{unit},"
                f'"SMTP:u{n}@corp.example;smtp:alias{n}@corp.example"'
            )
    path = tmp_path / "directory.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def escort_feed(tmp_path: Path) -> Path:
    path = tmp_path / "escort.txt"
    path.write_text("# test feed\nescort-ads.test\nvelvet-club.test\n", encoding="utf-8")
    return path


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPLIANCE_PSEUDONYM_KEY", raising=False)


def read_all_bytes(folder: Path) -> bytes:
    """Every file below ``folder`` concatenated (for identity scans)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


os.environ.setdefault("COLUMNS", "200")


SHIPPED_POLICIES = Path(__file__).resolve().parents[1] / "policies"
INBOX_SOURCE = "[{name: exports, type: exchange, path: inbox}]"


def write_config(
    path: Path,
    directory: Path,
    feed: Path,
    rest: str = "",
    *,
    sources: str = INBOX_SOURCE,
    policies: str | Path = SHIPPED_POLICIES,
) -> Path:
    """A deployment's config: corp.example, a directory, the escort-ads feed, the policies,
    the given sources, and whatever else the test is about in ``rest`` (YAML lines)."""
    path.write_text(
        "organisation: {domains: [corp.example]}\n"
        f"directory: {directory}\n"
        f"sources: {sources}\n"
        f"feeds: [{{path: {feed}, category: escort-ads}}]\n"
        f"policies: [{policies}]\n" + textwrap.dedent(rest).lstrip("\n")
    )
    return path


def audit_args(logs: Path | Sequence[Path], directory: Path, feed: Path, *extra: str) -> list[str]:
    """`compliance audit` over one export (or folder), or several, each its own ``--logs``,
    with the escort-ads feed, the shipped policies and a directory, as JSON (``extra`` adds
    or overrides options, e.g. ``"--format", "html"``)."""
    files = [logs] if isinstance(logs, Path) else list(logs)
    return [
        "audit", *(arg for path in files for arg in ("--logs", str(path))),
        "--feed", f"{feed}:escort-ads", "--policies", str(SHIPPED_POLICIES),
        "--directory", str(directory), "--org-domain", "corp.example", "--format", "json",
        *extra,
    ]  # fmt: skip


def audit_cli(
    logs: Path | Sequence[Path], directory: Path, feed: Path, *extra: str
) -> tuple[int, str]:
    """Run `compliance audit` with :func:`audit_args`; its exit code and output."""
    result = CliRunner().invoke(cli, audit_args(logs, directory, feed, *extra))
    return result.exit_code, result.output


def audit_json(
    logs: Path | Sequence[Path], directory: Path, feed: Path, *extra: str
) -> dict[str, object]:
    """:func:`audit_cli` that must succeed; its JSON result."""
    code, output = audit_cli(logs, directory, feed, *extra)
    assert code == 0, output
    return dict(json.loads(output))


def run_cli(config: Path, today: str | dt.date) -> tuple[int, str]:
    """`compliance run` of a deployment's config as on ``today``; its exit code and output."""
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--today", str(today)])
    return result.exit_code, result.output


def as_actor(actor: str, config: Path, *args: str) -> Result:
    """A `compliance` command over a deployment's config, done by ``actor`` (the identity
    the config reads from COMPLIANCE_ACTOR)."""
    return CliRunner(env={"COMPLIANCE_ACTOR": actor}).invoke(cli, [*args, "--config", str(config)])


def store_db(config: Path) -> sqlite3.Connection:
    """A connection to the store of a deployment whose config keeps it at var/store.db."""
    return sqlite3.connect(config.parent / "var" / "store.db")


def killed(*_args: object, **_kwargs: object) -> None:
    """Patched over a stage to make a run die there (after what it committed before)."""
    raise RuntimeError("killed")


#: The primary addresses of the 17 people of :func:`directory_csv` (u1 .. u17).
DIRECTORY_PEOPLE = [f"u{n}@corp.example" for n in range(1, 18)]
#: The reviewers a deployment made by :func:`job` lists as approvers of reveals.
APPROVERS = ["lead", "dpo", "works-council"]


def week_of_mail_rows(start: int = 0) -> list[list[str]]:
    """A week of November 2026 mail as Get-MessageTrace rows (indexes from ``start``):
    u1 (Sales/EMEA, as alias1) writes to escort-ads.test on the 2nd, 4th and 9th, which
    raises one repeated-contact alert; on the 3rd every one of :data:`DIRECTORY_PEOPLE`
    writes to a partner and a visitor from outside writes to u2."""
    rows = []
    for i, day in enumerate((2, 4, 9)):
        rows.append(
            ps_row(
                f"11/{day}/2026 10:00:00 AM",
                "alias1@corp.example",
                "book@escort-ads.test",
                index=start + i,
            )
        )
    for i, person in enumerate(DIRECTORY_PEOPLE):
        rows.append(
            ps_row(
                f"11/3/2026 11:{i:02d}:00 AM", person, "sales@partner.example", index=start + 10 + i
            )
        )
    rows.append(
        ps_row(
            "11/3/2026 9:00:00 AM", "visitor@partner.example", "u2@corp.example", index=start + 50
        )
    )
    return rows


@pytest.fixture
def job(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    """The config of a deployment under accountability, before any run: the week of
    :func:`week_of_mail_rows` in its inbox, its own copy of the shipped policies, a store,
    HTML and JSON reports, a run lock, :data:`APPROVERS` and the actor's identity read from
    COMPLIANCE_ACTOR. (tests/test_triage.py has a ``job`` of its own, already run.)"""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "week1.csv", week_of_mail_rows())
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, policies)
    return write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        f"""
        store: var/store.db
        reports: {{dir: reports, formats: [html, json]}}
        schedule: {{lock: var/run.lock}}
        accountability:
          approvers: [{", ".join(APPROVERS)}]
          identity: {{env: COMPLIANCE_ACTOR}}
        """,
        policies="policies",
    )


def shell(*args: str) -> bool:
    """Run a system command quietly (mount, umount ...); whether it succeeded."""
    return subprocess.run(args, capture_output=True, check=False).returncode == 0


def cannot_stage(reason: str) -> NoReturn:
    """Skip a test whose fault (a read-only mount, a full disk) this machine cannot stage,
    except in CI: CI runs as root on the machine kind these tests were written for, so
    there a missing mechanism is a failure, not a test quietly not run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI cannot stage the fault: {reason}")
    pytest.skip(reason)


def kit_minimiser(
    listed: Sequence[str], organisation: Sequence[str] = ("corp.example",)
) -> Minimiser:
    """The real pipeline for the conformance kit's identity check: what the engine keeps of
    a raw chunk of ``organisation``'s mail, with the test key and a feed of ``listed``
    sites (so matched events are kept, not only totals)."""
    index = DomainIndex()
    for site in listed:
        index.add(site, Label("escort-ads", "conformance"))
    context = Context(
        org_index(list(organisation)), Directory(), Pseudonymiser(TEST_KEY.encode()), index
    )

    def minimise(raw: pd.DataFrame) -> list[pd.DataFrame]:
        result = process_chunk(raw, "conformance", context, with_keyed_messages=True)
        keyed = result.keyed_messages if result.keyed_messages is not None else pd.DataFrame()
        return [result.matched, result.totals, keyed]

    return minimise
