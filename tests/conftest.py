"""Shared fixtures: a key, synthetic exports in the real formats, and paths to samples."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

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
) -> Iterator[None]:
    monkeypatch.setenv("COMPLIANCE_PSEUDONYM_KEY", TEST_KEY)
    # compiled feeds of audits go to a cache of the test session, not the user's
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.delenv("COMPLIANCE_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.setenv("COMPLIANCE_NO_PLUGINS", "1")
    return


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
    """An Entra ID users export: Sales/EMEA (12), Sales/EMEA/North (3), Legal (2)."""
    rows = ["userPrincipalName,displayName,mail,id,department,proxyAddresses"]
    n = 0
    for unit, size in (("Sales/EMEA", 12), ("Sales/EMEA/North", 3), ("Legal", 2)):
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
    import textwrap

    path.write_text(
        "organisation: {domains: [corp.example]}\n"
        f"directory: {directory}\n"
        f"sources: {sources}\n"
        f"feeds: [{{path: {feed}, category: escort-ads}}]\n"
        f"policies: [{policies}]\n" + textwrap.dedent(rest).lstrip("\n")
    )
    return path


def audit_args(export: Path, directory: Path, feed: Path, *extra: str) -> list[str]:
    """`compliance audit` over one export with the escort-ads feed, the shipped policies and
    a directory, as JSON (``extra`` adds or overrides options)."""
    return [
        "audit", "--logs", str(export), "--feed", f"{feed}:escort-ads",
        "--policies", str(SHIPPED_POLICIES), "--directory", str(directory),
        "--org-domain", "corp.example", "--format", "json", *extra,
    ]  # fmt: skip


def killed(*_args: object, **_kwargs: object) -> None:
    """Patched over a stage to make a run die there (after what it committed before)."""
    raise RuntimeError("killed")
