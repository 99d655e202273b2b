"""`compliance feeds diff` on known feeds (any format, UT1 folders, category moves, a large
feed), and `compliance feeds impact` over a real store made by running the job: a domain
removed from the feed removes the known alert, a category change and an allow-list entry
are counted, additions are said to be unassessable, and retro-hunt rows can be added
through the comparison's seam."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner, Result

from compliance.backtest import feed_impact
from compliance.cli import cli
from compliance.config import load_config
from compliance.privacy import load_key
from compliance.store import Store
from tests.conftest import as_actor, store_db, week_of_mail_rows, write_ps_export


def diff(*args: str) -> Result:
    return CliRunner().invoke(cli, ["feeds", "diff", *args])


def diff_json(*args: str) -> dict[str, Any]:
    result = diff(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_diff_of_two_lists_gives_counts_then_the_domains(tmp_path: Path) -> None:
    old = write(tmp_path / "old.txt", "# v1", "a.test", "b.test", "c.test")
    new = write(tmp_path / "new.txt", "# v2", "b.test", "c.test", "d.test", "www.e.test")
    result = diff(f"{old}:escort-ads", f"{new}:escort-ads")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2] == "2 domains added, 1 removed, categories changed for 0"
    assert lines[lines.index("added to escort-ads (2):") + 1 :][:2] == ["  d.test", "  www.e.test"]
    assert lines[lines.index("removed from escort-ads (1):") + 1] == "  a.test"
    data = diff_json(f"{old}:escort-ads", f"{new}:escort-ads")
    assert (data["added"], data["removed"], data["recategorised"]) == (2, 1, 0)
    [category] = data["categories"]
    assert category == {
        "category": "escort-ads", "old": 3, "new": 4, "added": 2, "removed": 1,
        "added_domains": ["d.test", "www.e.test"], "removed_domains": ["a.test"],
    }  # fmt: skip
    # without a category, two plain lists are still compared
    assert diff_json(str(old), str(new))["categories"][0]["category"] == "(none)"


def test_diff_across_formats_ut1_folders_and_category_moves(tmp_path: Path) -> None:
    old = tmp_path / "ut1-old"
    write(old / "adult" / "domains", "a.test", "x.test")
    write(old / "dating" / "domains", "y.test")
    new = tmp_path / "ut1-new"
    write(new / "adult" / "domains", "a.test", "y.test")
    write(new / "dating" / "domains", "x.test")
    write(new / "gambling" / "domains", "g.test")
    data = diff_json(str(old), str(new))
    assert (data["added"], data["removed"], data["recategorised"]) == (1, 0, 2)
    assert data["recategorised_domains"] == [
        {"domain": "x.test", "old": ["adult"], "new": ["dating"]},
        {"domain": "y.test", "old": ["dating"], "new": ["adult"]},
    ]
    by_name = {c["category"]: c for c in data["categories"]}
    assert by_name["gambling"]["added_domains"] == ["g.test"]
    assert by_name["dating"]["removed_domains"] == ["y.test"]
    only = diff_json(str(old), str(new), "--category", "gambling")
    assert [c["category"] for c in only["categories"]] == ["gambling"]
    assert only["recategorised_domains"] == []
    text = diff(str(old), str(new), "--category", "dating").output
    assert "categories changed (2):" in text and "  x.test: adult -> dating" in text
    assert "gambling" not in text.split("\n", 3)[3]

    # a hosts file against an adblock list: any format, and an exception shown as allowed
    hosts = write(tmp_path / "hosts", "0.0.0.0 a.test b.test", "127.0.0.1 localhost")
    adblock = write(tmp_path / "list.txt", "[Adblock Plus]", "||a.test^", "@@||b.test^")
    data = diff_json(f"{hosts}:adult", f"{adblock}:adult")
    assert data["recategorised_domains"] == [
        {"domain": "b.test", "old": ["adult"], "new": ["(allowed)"]}
    ]


def test_diff_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    old = write(tmp_path / "old.txt", "a.test")
    result = diff(f"{old}:adult", str(tmp_path / "missing.txt"))
    assert result.exit_code == 4
    assert f"{tmp_path / 'missing.txt'}: feed file or folder not found" in result.output


def test_diff_of_a_large_feed_is_exact(tmp_path: Path) -> None:
    """300,000 domains, 1% removed and 1% added, one category moved: exact counts."""
    names = np.char.add(np.char.add("site", np.arange(303_000).astype(str)), ".test")
    old = tmp_path / "old.txt"
    old.write_text("\n".join(names[:300_000].tolist()) + "\n")
    new = tmp_path / "new.csv"
    kept = names[3_000:303_000].tolist()
    rows = [f"{d},{'dating' if d == 'site5000.test' else 'adult'}" for d in kept]
    new.write_text("domain,category\n" + "\n".join(rows) + "\n")
    data = diff_json(f"{old}:adult", str(new))
    assert (data["added"], data["removed"], data["recategorised"]) == (3_000, 3_000, 1)
    adult = next(c for c in data["categories"] if c["category"] == "adult")
    assert (adult["old"], adult["new"], adult["added"], adult["removed"]) == (
        300_000, 299_999, 3_000, 3_001,
    )  # fmt: skip


# --- impact over a real store ------------------------------------------------------------


def run(job: Path, rows: list[list[str]] | None = None) -> None:
    write_ps_export(job.parent / "inbox" / "week1.csv", rows or week_of_mail_rows())
    result = as_actor("svc", job, "run", "--today", "2026-11-10")
    assert result.exit_code == 0, result.output


def impact(job: Path, *args: str) -> Result:
    return CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["feeds", "impact", "--config", str(job), *args]
    )


def impact_json(job: Path, *args: str) -> dict[str, Any]:
    result = impact(job, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def store_digest(job: Path) -> str:
    folder = job.parent / "var"
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def the_alert(job: Path) -> int:
    with store_db(job) as db:
        [(alert_id,)] = db.execute("SELECT id FROM alerts").fetchall()
    return int(alert_id)


def test_removing_a_domain_from_the_feed_removes_the_known_alert(
    job: Path, escort_feed: Path, tmp_path: Path
) -> None:
    run(job)  # u1 writes to escort-ads.test on 2, 4 and 9 November: one alert
    alert = the_alert(job)
    before = store_digest(job)
    new = write(tmp_path / "escort-new.txt", "velvet-club.test")

    data = impact_json(job, "--old", str(escort_feed), "--new", str(new), "--days", "14")

    assert store_digest(job) == before  # nothing written
    assert data["period"] == ["2026-10-28", "2026-11-10"]
    assert data["domains"] == {"added": 0, "removed": 1}
    assert data["events"]["in_period"] == 3
    assert data["events"]["no_longer_matched"] == {"no longer listed": 3}
    assert data["events"]["no_longer_matched_domains"] == {"no longer listed": 1}
    person = next(r for r in data["rules"] if r["rule_id"] == "repeated-contact")
    assert (person["before"], person["after"], person["removed"]) == (1, 0, 1)
    [removed] = data["alerts"]
    assert removed["change"] == "removed" and removed["stored_alert"] == alert
    assert (removed["messages"], removed["days"], removed["org_unit"]) == (3, 3, "Sales/EMEA")

    text = impact(job, "--old", str(escort_feed), "--new", str(new)).output
    assert "would no longer match (no longer listed): 3 events, 1 domain" in text
    assert "Removed: alerts only the old version raises" in text and f"alert {alert}" in text
    assert "escort-ads.test" not in text  # the traffic's domains are not shown
    assert store_digest(job) == before
    # the installed copy, by the feed's name
    named = impact_json(job, "--feed", "escort", "--new", str(new))
    assert named["alerts"] == data["alerts"]


def test_a_category_change_is_counted_and_additions_are_not_assessed(
    job: Path, escort_feed: Path, tmp_path: Path
) -> None:
    run(job)
    new = write(
        tmp_path / "escort-new.csv",
        "domain,category",
        "escort-ads.test,dating",
        "velvet-club.test,escort-ads",
        "new-site.test,escort-ads",
    )
    data = impact_json(job, "--old", str(escort_feed), "--new", str(new))
    assert data["events"]["categories_changed"] == [
        {"old": "escort-ads", "new": "dating", "events": 3}
    ]
    assert data["events"]["no_longer_matched"] == {}
    assert [a["change"] for a in data["alerts"]] == ["removed"]  # the policy reads escort-ads
    assert data["domains"]["added"] == 1 and data["additions_assessed"] is False
    text = impact(job, "--old", str(escort_feed), "--new", str(new)).output
    assert "categories escort-ads -> dating: 3 events" in text
    assert (
        "The new version lists 1 domain(s) the old one does not. Mail with them is not in "
        "the store (it keeps only messages that matched when they were read), so what they "
        "would have raised cannot be assessed from stored events (with retro_hunt_days set, "
        "it could be for that many days)." in text
    )


def test_an_allow_list_that_now_lists_a_site_unlists_its_matches(
    job: Path, escort_feed: Path, tmp_path: Path
) -> None:
    allow = write(tmp_path / "allow.txt", "webmail.example")
    exceptions = write(tmp_path / "exceptions.txt", "[Adblock Plus]", "@@||unrelated.test^")
    text = job.read_text()
    line = f"feeds: [{{path: {escort_feed}, category: escort-ads}}]"
    assert line in text
    job.write_text(
        text.replace(
            line,
            f"feeds: [{{path: {escort_feed}, category: escort-ads}}, "
            f"{{path: {allow}, kind: allow, name: webmail}}, "
            f"{{path: {exceptions}, category: misc, name: exceptions}}]",
        )
    )
    run(job)
    # an allow-list feed (kind: allow) whose new version names the site
    new = write(tmp_path / "allow-new.txt", "webmail.example", "escort-ads.test")
    data = impact_json(job, "--old", str(allow), "--new", str(new))
    assert data["feed"] == "webmail"
    assert data["events"]["no_longer_matched"] == {"allow-listed or excepted": 3}
    assert [a["change"] for a in data["alerts"]] == ["removed"]
    # an exception (@@) in another list's new version does the same
    new = write(tmp_path / "exceptions-new.txt", "[Adblock Plus]", "@@||escort-ads.test^")
    data = impact_json(job, "--old", str(exceptions), "--new", str(new))
    assert data["feed"] == "exceptions"
    assert data["events"]["no_longer_matched"] == {"allow-listed or excepted": 3}
    assert [a["change"] for a in data["alerts"]] == ["removed"]


def test_retro_hunt_rows_join_the_new_side_through_the_seam(job: Path, escort_feed: Path) -> None:
    """Rows a retro-hunt would materialise (another person's mail with a newly listed site)
    are evaluated with the new version's events."""
    run(job)
    config = load_config(job)
    with Store.open_read_only(job.parent / "var" / "store.db") as store:
        events = store.events.since("")
    extra = events.copy()
    extra["person"] = "p-00000000000000000001"
    extra["event_key"] = extra["event_key"] + 1
    result = feed_impact(
        config, load_key(), escort_feed, escort_feed, 30, today=dt.date(2026, 11, 10),
        extra_events=extra,
    )  # fmt: skip
    changes = sorted(c.change for c in result.comparison.changes)
    assert changes == ["added", "unchanged"]
    [added] = result.comparison.of("added")
    assert added.alert.person == "p-00000000000000000001" and added.alert.messages == 3


def test_problems_name_the_feed_or_the_option(job: Path, tmp_path: Path) -> None:
    run(job)
    a = write(tmp_path / "a.txt", "a.test")
    b = write(tmp_path / "b.txt", "b.test")
    result = impact(job, "--old", str(a), "--new", str(b))
    assert result.exit_code == 2
    assert "is the path of a configured feed: name the feed they are versions of" in result.output
    result = impact(job, "--feed", "nothing", "--new", str(b))
    assert result.exit_code == 2 and "nothing" in result.output
    result = impact(job, "--new", str(b))
    assert result.exit_code == 2 and "--old" in result.output
    bad = write(tmp_path / "bad.txt", "not a domain!", "also/not")
    result = impact(job, "--feed", "escort", "--new", str(bad))
    assert result.exit_code == 4 and str(bad) in result.output
