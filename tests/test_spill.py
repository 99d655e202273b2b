"""An audit whose matched events pass its memory budget spills them to disk, partitioned by
org unit, and evaluates them one partition group at a time: every output is the one the
same audit gives in memory, and the spill folder is gone afterwards, also after an error.

The budget is lowered to 1 KiB (`--spill-above 1K`), so that every export spills.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import compliance.engine
from compliance.audit import AuditRequest, run_audit
from compliance.cli import cli
from compliance.events import MINIMISED
from compliance.pipeline import ChunkResult
from compliance.privacy import ROOT_UNIT, load_key, rollup_map
from compliance.tally import Spill, SpillFolder, Tally, unit_partitions
from tests.conftest import ps_row, write_ps_export

#: Org units and their people. At the first policy's roll-up (5) Ops (2) merges into the
#: whole organisation while Ops/Night (5) stays; at the second policy's and so the
#: report's (6), Ops/Night merges into Ops, which then stays, and Legal (5) merges into
#: the whole organisation, as Facilities (3) does: roll-ups that do not nest.
#: Sales/EMEA/North merges into Sales/EMEA at both.
UNITS = {
    "Sales/EMEA": 12,
    "Sales/EMEA/North": 2,
    "Ops": 2,
    "Ops/Night": 5,
    "Legal": 5,
    "Facilities": 3,
    "Research": 20,
}
#: People, by unit: ``Sales/EMEA`` -> sales-emea1@corp.example, ...
PEOPLE = {
    unit: [f"{unit.lower().replace('/', '-')}{n}@corp.example" for n in range(1, size + 1)]
    for unit, size in UNITS.items()
}
UNLISTED = [f"temp{n}@corp.example" for n in range(1, 7)]  # in no unit: `unknown`

POLICY = """\
id: {id}
title: Corporate mail with escort-advertising sites ({id})
version: 1
status: active
owner: ethics-office
match:
  evidence: conversation
  reply_window: 14d
  sent: attempted
  categories: [escort-ads]
rules:
  - id: repeated-contact
    kind: person
    window: 30d
    min_messages: {messages}
    min_days: 2
    severity: high
  - id: team-cluster
    kind: cluster
    window: 30d
    min_people: 3
    same_domain: {same_domain}
    severity: critical
privacy:
  min_group_size: {group}
suppress: 30d
{limit}
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A directory, a feed, two policies and three overlapping exports of three weeks."""
    directory = tmp_path / "directory.csv"
    lines = ["mail,id,department"]
    for unit, people in PEOPLE.items():
        for person in people:
            lines.append(f"{person},{len(lines):08d}-0000-4000-8000-000000000000,{unit}")
    directory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    feed = tmp_path / "escort.txt"
    feed.write_text("escort-ads.test\nvelvet-club.test\n", encoding="utf-8")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "narrow.yaml").write_text(
        POLICY.format(
            id="narrow", messages=3, same_domain="true", group=5,
            limit="max_alerts_per_day: 2",
        )
    )  # fmt: skip
    (policies / "wide.yaml").write_text(
        POLICY.format(id="wide", messages=2, same_domain="false", group=6, limit="")
    )
    rows = _mail()
    exports = tmp_path / "exports"
    exports.mkdir()
    # three exports whose periods overlap: the rows of the days both hold are read twice
    for name, first, last in (("a.csv", 1, 10), ("b.csv", 9, 16), ("c.csv", 15, 21)):
        write_ps_export(exports / name, [r for day, r in rows if first <= day <= last])
    spill = tmp_path / "spill"
    spill.mkdir()
    return {
        "directory": directory, "feed": feed, "policies": policies, "exports": exports,
        "spill": spill,
    }  # fmt: skip


def _mail() -> list[tuple[int, list[str]]]:
    """(day of November 2026, Get-MessageTrace row) of three weeks of mail."""
    rows: list[tuple[int, list[str]]] = []

    def mail(day: int, hour: int, sender: str, recipient: str) -> None:
        noon = "AM" if hour < 12 else "PM"
        at = f"11/{day}/2026 {hour % 12 or 12}:{len(rows) % 60:02d}:00 {noon}"
        rows.append((day, ps_row(at, sender, recipient, index=len(rows))))

    people = [p for unit in PEOPLE.values() for p in unit] + UNLISTED
    for person in people:  # everyone writes to a partner; the partner answers some
        mail(3, 9, person, "sales@partner.example")
        mail(12, 9, "news@partner.example", person)
    # repeated contact: three messages on two days each; all trigger on the 19th, more
    # than the narrow policy's two a day, so some wait past the audit's last day
    repeated = [
        PEOPLE["Sales/EMEA"][0], PEOPLE["Sales/EMEA"][1], PEOPLE["Sales/EMEA/North"][0],
        PEOPLE["Ops"][0], PEOPLE["Ops/Night"][0], PEOPLE["Ops/Night"][1], PEOPLE["Legal"][0],
        PEOPLE["Research"][0], PEOPLE["Research"][1], UNLISTED[0],
    ]  # fmt: skip
    for n, person in enumerate(repeated):
        site = "escort-ads.test" if n % 2 else "velvet-club.test"
        mail(16, 10, person, f"book@{site}")
        mail(16, 11, person, f"www@{site}")
        mail(19, 10, person, f"book@{site}")
    # replies from a site a person wrote to, and a site's mail to people who never did
    mail(16, 13, "book@velvet-club.test", PEOPLE["Sales/EMEA"][0])
    mail(16, 14, "book@escort-ads.test", PEOPLE["Ops/Night"][1])
    for person in PEOPLE["Research"][10:16]:
        mail(17, 9, "offers@velvet-club.test", person)
    # clusters: three people of one unit (rolled up) on one site within the window
    for day, person, site in (
        (5, PEOPLE["Research"][2], "velvet-club.test"),
        (6, PEOPLE["Research"][3], "velvet-club.test"),
        (7, PEOPLE["Research"][4], "velvet-club.test"),
        (8, PEOPLE["Ops/Night"][2], "escort-ads.test"),
        (9, PEOPLE["Ops/Night"][3], "escort-ads.test"),
        (10, PEOPLE["Ops"][1], "escort-ads.test"),
        (9, PEOPLE["Sales/EMEA/North"][1], "escort-ads.test"),
        (15, PEOPLE["Sales/EMEA"][2], "escort-ads.test"),
        (15, PEOPLE["Sales/EMEA"][3], "escort-ads.test"),
        (2, PEOPLE["Legal"][1], "velvet-club.test"),
        (4, PEOPLE["Legal"][2], "velvet-club.test"),
        (6, PEOPLE["Legal"][3], "velvet-club.test"),
    ):
        mail(day, 15, person, f"desk@{site}")
    # more people of the two large units on a site once, so that the report can publish
    # their figures; one of each answered
    for unit in ("Research", "Sales/EMEA"):
        for person in PEOPLE[unit][5:11]:
            mail(12, 10, person, "book@escort-ads.test")
        mail(12, 16, "book@escort-ads.test", PEOPLE[unit][5])
    for person in [*PEOPLE["Facilities"], *UNLISTED[1:]]:  # (and no group of 1 to 4)
        mail(13, 10, person, "book@escort-ads.test")
    mail(21, 9, PEOPLE["Research"][6], "sales@partner.example")  # the last day read
    return rows


def _audit(setup: dict[str, Path], *extra: str) -> str:
    """`compliance audit` of the exports with both policies; its output."""
    result = CliRunner().invoke(
        cli,
        [
            "audit", "--logs", str(setup["exports"]), "--feed", f"{setup['feed']}:escort-ads",
            "--policies", str(setup["policies"]), "--directory", str(setup["directory"]),
            "--org-domain", "corp.example", *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def _spilling(setup: dict[str, Path]) -> tuple[str, ...]:
    return ("--spill-above", "1K", "--spill-dir", str(setup["spill"]))


def _generated(html: str) -> str:
    """The HTML report without the minute it was generated in."""
    return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "(generated)", html)


def test_a_spilled_audit_reports_exactly_what_the_audit_in_memory_reports(
    setup: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compliance.engine")
    in_memory = json.loads(_audit(setup, "--format", "json"))
    assert "spilled" not in caplog.text  # the default budget holds this audit
    caplog.clear()
    spilled = json.loads(_audit(setup, "--format", "json", *_spilling(setup)))
    spill = r"spilled to disk: (\d+) rows in (\d+) file\(s\).*in (\d+) group"
    written = re.search(spill, caplog.text)
    matched = re.search(r"(\d+) matched events", caplog.text)
    assert written and matched, caplog.text
    rows, files, groups = map(int, written.groups())
    assert files == 3 and groups > 1  # one file per export; evaluated a group at a time
    assert rows > int(matched.group(1))  # the repeats were written, and dropped on reading
    assert spilled == in_memory
    assert list(setup["spill"].iterdir()) == []  # the private folder went with the audit

    # what the comparison covers: both rule kinds, repeats, alerts held back by a limit
    alerts = in_memory["alerts"]
    assert {a["rule"] for a in alerts} == {"person", "cluster"}
    assert {a["policy"] for a in alerts} == {"narrow", "wide"}
    assert in_memory["skipped_by_reason"]["duplicate_message"] > 0
    assert any(a["raised_day"] > in_memory["last_day"] for a in alerts)
    cluster_units = {a["org_unit"] for a in alerts if a["rule"] == "cluster"}
    assert {"Research", "Ops", ROOT_UNIT} <= cluster_units  # rolled up at 6, into the root

    for fmt in ("csv", "table"):
        assert _audit(setup, "--format", fmt, *_spilling(setup)) == _audit(setup, "--format", fmt)
    html = _audit(setup, "--format", "html", *_spilling(setup))
    assert _generated(html) == _generated(_audit(setup, "--format", "html"))
    assert list(setup["spill"].iterdir()) == []


def test_a_report_rolling_up_further_than_the_policies_gets_whole_units_too(
    setup: dict[str, Path],
) -> None:
    # at 25 every unit merges into the whole organisation, which the policies' roll-ups
    # (5 and 6) never do: partitions follow the report's roll-up as well
    html = ("--format", "html", "--min-group-size", "25")
    spilled = _audit(setup, *html, *_spilling(setup))
    assert _generated(spilled) == _generated(_audit(setup, *html))
    alerts = json.loads(_audit(setup, "--format", "json", "--min-group-size", "25"))["alerts"]
    assert {a["org_unit"] for a in alerts} == {ROOT_UNIT, "unknown"}


def test_the_report_figures_of_a_spilled_audit_are_those_in_memory(
    setup: dict[str, Path],
) -> None:
    def report(**spill: Any) -> dict[str, Any]:
        request = AuditRequest(
            logs=(setup["exports"],),
            feeds=(f"{setup['feed']}:escort-ads",),
            policies=(setup["policies"],),
            directory=setup["directory"],
            org_domains=("corp.example",),
            **spill,
        )
        outcome = run_audit(request, load_key())
        assert outcome.result.matched.spilled == bool(spill)
        data = outcome.report
        return {"units": data.units, "totals": (data.matched, data.people, data.received_only)}

    in_memory = report()
    assert report(spill_above=1024, spill_dir=setup["spill"]) == in_memory
    units = {u["unit"]: u for u in in_memory["units"]}
    # reported at the report's roll-up (6): North in Sales/EMEA, Ops/Night in Ops, Legal
    # in the whole organisation; replies recognised, received-only mail counted
    assert set(units) >= {"Sales/EMEA", "Ops", "Research", ROOT_UNIT}
    assert not {"Sales/EMEA/North", "Ops/Night", "Legal"} & set(units)
    assert any(u["replies"] for u in units.values())
    assert in_memory["totals"][2]  # received only


def test_the_spill_folder_is_private_and_gone_after_an_error_during_evaluation(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = compliance.engine.evaluate
    seen: list[Path] = []

    def evaluate_then_fail(*args: Any, **kwargs: Any) -> Any:
        if seen:  # the second partition group
            raise RuntimeError("killed")
        seen.extend(setup["spill"].rglob("*"))
        return real(*args, **kwargs)

    monkeypatch.setattr(compliance.engine, "evaluate", evaluate_then_fail)
    result = CliRunner().invoke(
        cli,
        [
            "audit", "--logs", str(setup["exports"]), "--feed", f"{setup['feed']}:escort-ads",
            "--policies", str(setup["policies"]), "--directory", str(setup["directory"]),
            "--org-domain", "corp.example", *_spilling(setup),
        ],
    )  # fmt: skip
    assert result.exit_code == 70, result.output  # an internal error
    folders = [p for p in seen if p.is_dir() or p.suffix != ".arrow"]
    files = [p for p in seen if p.suffix == ".arrow"]
    assert len(folders) == 1 and len(files) == 3
    assert folders[0].name.startswith("compliance-spill-")
    assert not folders[0].exists()  # removed, with its files
    assert list(setup["spill"].iterdir()) == []


@pytest.mark.slow
def test_an_audit_stopped_by_sigterm_removes_its_spill_folder(setup: dict[str, Path]) -> None:
    people = [p for unit in PEOPLE.values() for p in unit]
    rows = [
        ps_row(
            f"11/{2 + i % 19}/2026 10:{i % 60:02d}:00 AM",
            people[i % len(people)],
            f"book@{('escort-ads', 'velvet-club')[i % 2]}.test",
            index=i,
        )
        for i in range(150_000)
    ]  # fmt: skip
    big = setup["exports"].parent / "big.csv"
    write_ps_export(big, rows)
    # a second copy keeps the audit reading for a while after its first chunk spills: on
    # a busy machine this poll may not run for a good part of a second
    again = shutil.copy(big, big.with_name("again.csv"))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "compliance", "audit", "--logs", str(big), "--logs", str(again),
            "--feed", f"{setup['feed']}:escort-ads", "--policies", str(setup["policies"]),
            "--directory", str(setup["directory"]), "--org-domain", "corp.example",
            *_spilling(setup),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(setup["spill"].iterdir()) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGTERM)  # the folder exists: the audit is under way
    assert process.communicate(timeout=60)[1].decode().strip().endswith("interrupted")
    assert process.returncode == 130
    assert list(setup["spill"].iterdir()) == []


def test_the_spill_folder_keeps_its_files_to_its_owner(tmp_path: Path) -> None:
    frame = _events([("p-a", "Sales", 1), ("p-b", "Ops", 2)])
    with SpillFolder(tmp_path, above=0) as folder:
        tally = Tally(spill=Spill(folder, {}))
        tally.add(ChunkResult(rows=2, matched=frame))
        made = folder.path()
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
        files = list(made.iterdir())
        assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert all(re.fullmatch(r"spill-\d{6}\.arrow", f.name) for f in files)
    assert not made.exists()


def test_a_spill_dir_that_does_not_exist_is_refused_before_any_work(
    setup: dict[str, Path],
) -> None:
    missing = setup["spill"] / "missing"
    result = CliRunner().invoke(
        cli,
        [
            "audit", "--logs", str(setup["exports"]), "--feed", f"{setup['feed']}:escort-ads",
            "--policies", str(setup["policies"]), "--org-domain", "corp.example",
            "--spill-dir", str(missing),
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert f"{missing}" in result.output and "does not exist" in result.output


@pytest.mark.parametrize("given", ["12x", "-5", "1.5G", "M"])
def test_a_spill_budget_that_is_no_size_is_a_usage_error(
    setup: dict[str, Path], given: str
) -> None:
    result = CliRunner().invoke(
        cli, ["audit", "--logs", str(setup["exports"]), "--spill-above", given]
    )
    assert result.exit_code == 2
    assert "is no size" in result.output


def test_units_rolled_up_together_at_any_threshold_share_a_partition() -> None:
    headcounts = dict(UNITS)
    partitions = unit_partitions(headcounts, [5, 6])
    for size in (5, 6):  # every roll-up target holds the partition of its units
        for unit, target in rollup_map(headcounts, size).items():
            assert partitions[unit] == partitions[target], (size, unit, target)
    # not one partition for all: Research and Sales stand alone at both sizes
    assert len({partitions["Research"], partitions["Sales/EMEA"], partitions["Ops"]}) == 3
    assert partitions["Ops/Night"] == partitions["Ops"] == partitions["Legal"]
    # at 5 alone, Ops/Night stays apart from Ops (which joins the whole organisation)
    alone = unit_partitions(headcounts, [5])
    assert alone["Ops/Night"] != alone["Ops"] == alone[ROOT_UNIT]
    assert unit_partitions(None, [6]) == {}


def test_a_message_read_twice_is_kept_once_when_its_copies_spill_to_different_files(
    tmp_path: Path,
) -> None:
    first = _events([("p-a", "Sales", 1), ("p-b", "Ops", 2), ("p-c", "unknown", 3)])
    again = _events([("p-b", "Ops", 2), ("p-a", "Sales", 1), ("p-d", "Sales", 4)])
    plain = Tally()
    with SpillFolder(tmp_path, above=0) as folder:
        spilled = Tally(spill=Spill(folder, unit_partitions({"Sales": 9, "Ops": 9}, [5])))
        for tally in (plain, spilled):
            tally.add(ChunkResult(rows=3, matched=first))
            tally.add(ChunkResult(rows=3, matched=again))
        assert spilled.spill is not None and len(spilled.spill.files) == 2
        parts = list(spilled.matched_events().partitions())
    assert len(parts) == 3  # Sales, Ops, unknown: one partition each at a budget of 0
    assert _sorted(pd.concat(parts, ignore_index=True)).equals(_sorted(plain.matched()))


def test_more_spill_files_than_the_process_may_open_at_once_are_read_back(
    tmp_path: Path,
) -> None:
    """A small budget makes a file per chunk; reading them back never holds more than one
    open, so an audit with more files than its limit of open files still ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    chunks = [_events([(f"p-{i % 7}", ("Sales", "Ops")[i % 2], i)]) for i in range(120)]
    plain = Tally()
    with SpillFolder(tmp_path, above=0) as folder:
        spilled = Tally(spill=Spill(folder, unit_partitions({"Sales": 9, "Ops": 9}, [5])))
        for chunk in chunks:
            plain.add(ChunkResult(rows=1, matched=chunk))
            spilled.add(ChunkResult(rows=1, matched=chunk))
        assert spilled.spill is not None and len(spilled.spill.files) == 120
        open_now = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 40, hard))
        try:
            parts = list(spilled.matched_events().partitions())
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _sorted(pd.concat(parts, ignore_index=True)).equals(_sorted(plain.matched()))


def test_partial_tallies_merged_into_a_spilling_tally_give_the_same_events(
    tmp_path: Path,
) -> None:
    parts = [
        _events([(f"p-{i % 5}", ("Sales", "Ops", "unknown")[i % 3], i), (f"p-{i % 5}", "Ops", 99)])
        for i in range(40)
    ]
    plain = Tally(mergeable=False)
    with SpillFolder(tmp_path, above=4096) as folder:
        merged = Tally(mergeable=False, spill=Spill(folder, {}))
        for start in range(0, 40, 10):  # four workers' partial tallies, in order
            partial = Tally()
            for part in parts[start : start + 10]:
                partial.add(ChunkResult(rows=2, matched=part))
            plain.merge(partial)
            merged.merge(partial)
        assert merged.spill is not None and merged.spill.files
        got = pd.concat(list(merged.matched_events().partitions()), ignore_index=True)
    assert _sorted(got).equals(_sorted(plain.matched()))
    assert len(got) == 41  # event 99 read by every worker, kept once


@pytest.mark.slow
def test_a_spilled_audit_on_dask_reports_what_the_local_audit_in_memory_reports(
    setup: dict[str, Path],
) -> None:
    on_dask = _audit(setup, "--format", "json", "--engine", "dask", *_spilling(setup))
    assert json.loads(on_dask) == json.loads(_audit(setup, "--format", "json"))
    assert list(setup["spill"].iterdir()) == []


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """Matched events (minimised) of (person, org unit, event key)."""
    n = len(rows)
    frame = pd.DataFrame(
        {
            "event_key": [k for _, _, k in rows],
            "timestamp": pd.Timestamp("2026-11-02T10:00:00Z") + pd.to_timedelta(range(n), "s"),
            "day": "2026-11-02",
            "source": "audit",
            "person": [p for p, _, _ in rows],
            "org_unit": [u for _, u, _ in rows],
            "direction": "outbound",
            "domain": "www.escort-ads.test",
            "reg_domain": "escort-ads.test",
            "categories": "escort-ads",
            "feeds": "feed",
            "status": "delivered",
            "size": [None if k % 3 else 100 + k for _, _, k in rows],
            "epoch": "-",
        }
    )
    return frame.astype(MINIMISED)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("event_key", ignore_index=True)
