"""`compliance audit`: no config, no store; JSON, CSV, HTML and table outputs."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from tests.conftest import audit_cli, ps_row, write_ps_export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    rows = [
        ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "book@www.escort-ads.test", index=1),
        ps_row("11/2/2026 11:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=2),
        ps_row("11/4/2026 10:00:00 AM", "reply@Escort-Ads.Test.", "alias1@corp.example", index=3),
        ps_row("11/4/2026 10:00:00 AM", "u2@corp.example", "x@notescort-ads.test", index=4),
        ps_row("11/5/2026 10:00:00 AM", "u2@corp.example", "x@notescort-ads.test", index=5),
        ps_row("11/6/2026 10:00:00 AM", "u2@corp.example", "x@notescort-ads.test", index=6),
        ps_row("11/4/2026 10:00:00 AM", "u3@corp.example", "x@partner.example", index=7),
        ps_row("bad", "u3@corp.example", "x@partner.example", index=8),
    ]
    return write_ps_export(tmp_path / "trace.csv", rows, encoding="utf-16")


def test_json_output(export: Path, directory_csv: Path, escort_feed: Path) -> None:
    code, output = audit_cli(export, directory_csv, escort_feed, "--format", "json")
    assert code == 0, output
    data = json.loads(output)
    assert data["events"] == 8
    assert data["rejected"] == 1
    assert data["rejected_by_reason"] == {"bad_timestamp": 1}
    # one person's evidence: withheld, as in the table and HTML (the alert counts the
    # messages: 3, the look-alike is not matched)
    assert data["matched"] is None
    [alert] = data["alerts"]
    assert alert["policy"] == "escort-ads"
    assert alert["policy_version"] == 2
    assert alert["rule"] == "person"
    assert alert["severity"] == "high"
    assert alert["subject"].startswith("p-")
    assert alert["org_unit"] == "Sales/EMEA"
    assert (alert["messages"], alert["people"]) == (3, 1)
    assert alert["domains"] == ["escort-ads.test"]
    assert alert["categories"] == ["escort-ads"]
    assert (alert["first_day"], alert["last_day"]) == ("2026-11-02", "2026-11-04")


def test_since_until_limit_the_period(export: Path, directory_csv: Path, escort_feed: Path) -> None:
    code, output = audit_cli(
        export, directory_csv, escort_feed, "--format", "json", "--since", "2026-11-03",
        "--until", "2026-11-05",
    )  # fmt: skip
    data = json.loads(output)
    assert code == 0
    assert data["matched"] == 0  # the one match in the period was received: no evidence
    assert (data["first_day"], data["last_day"]) == ("2026-11-03", "2026-11-05")
    assert data["events"] == 8 and data["skipped_by_reason"] == {"outside_period": 3}
    assert data["alerts"] == []


def test_outputs_hold_no_identity(
    export: Path, directory_csv: Path, escort_feed: Path, tmp_path: Path
) -> None:
    for fmt in ("json", "csv", "html", "table"):
        out = tmp_path / f"audit.{fmt}"
        code, output = audit_cli(
            export, directory_csv, escort_feed, "--format", fmt, "--out", str(out)
        )
        assert code == 0, output
        text = out.read_text()
        for needle in ("u1@", "u2@", "alias1", "book@", "reply@", "Test Person", "Quarterly"):
            assert needle not in text, (fmt, needle)
            assert needle not in output, (fmt, needle)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
            if name == "id":
                self.sections.append(value or "")


def test_html_report_is_self_contained(
    export: Path, directory_csv: Path, escort_feed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "audit.html"
    assert (
        audit_cli(export, directory_csv, escort_feed, "--format", "html", "--out", str(out))[0] == 0
    )
    html = out.read_text()
    parser = _Assets()
    parser.feed(html)
    assert parser.external == []
    assert {"summary", "alerts", "units", "quality"} <= set(parser.sections)
    assert "bad_timestamp" in html
    assert "get-messagetrace-csv" in html


def test_report_escapes_policy_text(
    export: Path, directory_csv: Path, escort_feed: Path, tmp_path: Path
) -> None:
    policy = (ROOT / "policies" / "escort-ads.yaml").read_text()
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.yaml").write_text(
        policy.replace(
            "title: Corporate mail exchanged with escort-advertising sites",
            'title: "<script>alert(1)</script>"',
        )
    )
    args = [
        "audit", "--logs", str(export), "--feed", f"{escort_feed}:escort-ads",
        "--policies", str(folder), "--org-domain", "corp.example", "--format", "html",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert "<script>" not in result.output
    assert "&lt;script&gt;" in result.output


def test_audit_errors(export: Path, directory_csv: Path, escort_feed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: t\nversion: 1\nmatch: {categories: [a]}\nrules: []\n")
    result = CliRunner().invoke(
        cli,
        ["audit", "--logs", str(export), "--feed", str(escort_feed), "--policies", str(bad),
         "--org-domain", "corp.example"],
    )  # fmt: skip
    assert result.exit_code == 3
    assert f"{bad}:5: rules:" in result.output
    code, output = audit_cli(
        tmp_path / "missing.csv", directory_csv, escort_feed, "--format", "table"
    )
    assert code == 4
    assert "missing.csv" in output


def test_audit_without_key(
    export: Path, directory_csv: Path, escort_feed: Path, no_key: None
) -> None:
    code, output = audit_cli(export, directory_csv, escort_feed, "--format", "table")
    assert code == 2
    assert "no pseudonymisation key" in output


def test_an_audit_names_a_file_without_the_local_part_of_an_address_in_its_name(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """Per-mailbox exports are named after the person: every message about such a file
    (here: it holds no row; another of an unknown format) shows the name masked."""
    empty = write_ps_export(tmp_path / "trace-zz.person@corp.example.csv", [])
    code, output = audit_cli(empty, directory_csv, escort_feed)
    assert code == 4 and "…@corp.example.csv" in output, output
    unknown = tmp_path / "other-zz.person@corp.example.csv"
    unknown.write_text("a,b,c\n1,2,3\n")
    code, output = audit_cli(unknown, directory_csv, escort_feed)
    assert code == 4 and "unknown log format" in output, output
    assert "zz.person" not in output
