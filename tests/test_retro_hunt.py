"""Retro-hunt (``retro_hunt_days``): earlier traffic with a domain a feed lists later is
found, within N days only, counted once, and kept meanwhile without any domain text.

Every test runs the real job (config, feeds, directory, exports in the Get-MessageTrace
format, a SQLite store) through :func:`compliance.scheduled.run_once`, with
``retro_hunt_days`` taken from the config as the job passes it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.config import load_config
from compliance.inventory import TABLES, retro_hunt_notice
from compliance.job import prepare_from_config, sources_for
from compliance.scheduled import Retention, RunOptions, RunSummary, run_once
from compliance.store import Store
from tests.conftest import (
    SHIPPED_POLICIES,
    TEST_KEY,
    ps_row,
    read_all_bytes,
    store_db,
    write_config,
    write_ps_export,
)

#: A site no feed lists at first; its mail host is a subdomain of it.
SITE = "newsite.test"
#: An address no feed ever lists.
PARTNER = "sales@partner.example"


def run(config: Path, today: str) -> RunSummary:
    """One scheduled run of ``config`` as on ``today`` (what `compliance run` does, with
    ``retro_hunt_days`` from the config)."""
    cfg = load_config(config)
    day = dt.date.fromisoformat(today)
    prepared = prepare_from_config(cfg, TEST_KEY.encode())
    prepared.context.timestamps = cfg.ingest.timestamp_range(day)
    r = cfg.retention
    options = RunOptions(
        today=day,
        retention=Retention(r.dedup_days, r.events_days, r.alerts_days, r.cases_days),
        retro_hunt_days=cfg.retro_hunt_days,
        engine=cfg.engine.type,
        scheduler=cfg.engine.scheduler,
    )
    with Store.open(cfg.path(cfg.store)) as store:
        return run_once(prepared, sources_for(cfg), store, options)


def deployment(
    folder: Path,
    directory: Path,
    rest: str = "retro_hunt_days: 30",
    feed: str = "escort-ads.test\nvelvet-club.test\n",
    policies: Path = SHIPPED_POLICIES,
) -> Path:
    """A deployment in ``folder``: an empty inbox, the escort-ads feed (``feed``), a store
    at var/store.db, and ``rest`` (YAML lines)."""
    folder.mkdir(exist_ok=True)
    (folder / "inbox").mkdir()
    feed_file = folder / "escort.txt"
    feed_file.write_text(feed, encoding="utf-8")
    return write_config(
        folder / "compliance.yaml",
        directory,
        feed_file,
        f"store: var/store.db\n{rest}\n",
        sources=f"[{{name: exports, type: exchange, path: {folder / 'inbox'}}}]",
        policies=policies,
    )


def list_site(config: Path, site: str = SITE) -> None:
    """The feed keeper's update: the feed gains ``site``."""
    feed = config.parent / "escort.txt"
    feed.write_text(feed.read_text() + f"{site}\n", encoding="utf-8")


def export(config: Path, name: str, rows: Sequence[Sequence[str]], encoding: str = "utf-8") -> None:
    """A new export in the deployment's inbox."""
    write_ps_export(config.parent / "inbox" / name, rows, encoding=encoding)


def site_rows(start: int = 0) -> list[list[str]]:
    """November 2026: u1 (as alias1) writes to the site's mail host on the 2nd, 4th and 9th
    and gets one reply on the 4th; a message from the site reached u1 minutes before the
    first one they sent (the same hour: not a reply), and u3 got one they never answered;
    u2 writes to a partner no feed will list; u1 writes to u2 (internal); u4 writes once to
    a site listed from the start."""
    u1, host = "u1@corp.example", f"book@mail.{SITE}"
    return [
        ps_row("11/2/2026 10:10:00 AM", f"news@{SITE}", u1, index=start),
        ps_row("11/2/2026 10:40:00 AM", "alias1@corp.example", host, index=start + 1),
        ps_row("11/4/2026 9:00:00 AM", "alias1@corp.example", host, index=start + 2),
        ps_row("11/4/2026 3:00:00 PM", f"info@{SITE}", u1, index=start + 3),
        ps_row("11/9/2026 8:00:00 AM", u1, host, index=start + 4),
        ps_row("11/5/2026 8:00:00 AM", f"promo@{SITE}", "u3@corp.example", index=start + 5),
        ps_row("11/3/2026 11:00:00 AM", "u2@corp.example", PARTNER, index=start + 6),
        ps_row("11/3/2026 12:00:00 PM", u1, "u2@corp.example", index=start + 7),
        ps_row("11/6/2026 9:00:00 AM", "u4@corp.example", "x@escort-ads.test", index=start + 8),
    ]  # fmt: skip


def alerts(config: Path) -> list[dict[str, object]]:
    """The stored alerts' figures, in a stable order."""
    with store_db(config) as db:
        rows = db.execute(
            "SELECT policy, rule_id, person, epoch, messages, days, domains, categories, "
            "first_day, last_day FROM alerts ORDER BY first_day, person"
        ).fetchall()
    names = ["policy", "rule", "person", "epoch", "messages", "days", "domains", "categories"]
    return [dict(zip([*names, "first_day", "last_day"], row, strict=True)) for row in rows]


def count(config: Path, table: str, where: str = "1") -> int:
    with store_db(config) as db:
        return int(db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])  # noqa: S608


def audit_entries(config: Path, action: str) -> list[dict[str, object]]:
    with store_db(config) as db:
        rows = db.execute(
            "SELECT details FROM audit_log WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


@pytest.fixture
def retro(tmp_path: Path, directory_csv: Path) -> Path:
    """A deployment with retro_hunt_days: 30 that has read :func:`site_rows` on 10 November,
    before any feed listed the site."""
    config = deployment(tmp_path / "retro", directory_csv)
    export(config, "week.csv", site_rows())
    run(config, "2026-11-10")
    return config


def test_a_listing_finds_earlier_traffic_and_raises_the_alert_it_would_have(
    retro: Path, tmp_path: Path, directory_csv: Path
) -> None:
    assert alerts(retro) == []  # the site was not listed: nothing to raise
    # kept meanwhile: the 7 unmatched external messages, never the internal one
    assert count(retro, "retro_contacts") == 7
    assert count(retro, "events") == 1  # the escort-ads one

    list_site(retro)
    summary = run(retro, "2026-11-11")
    assert summary.retro_found == 6  # all the site's messages; the partner's stays
    found = alerts(retro)
    # what a deployment whose feed listed the site all along raises from the same mail
    control = deployment(tmp_path / "control", directory_csv)
    list_site(control)
    export(control, "week.csv", site_rows())
    run(control, "2026-11-11")
    assert found == alerts(control)
    (alert,) = found
    # 3 sent and the reply; neither the message before the first one sent nor u3's count
    assert (alert["messages"], alert["days"]) == (4, 3)
    assert (alert["first_day"], alert["last_day"]) == ("2026-11-02", "2026-11-09")
    assert alert["domains"] == json.dumps([SITE])
    assert count(retro, "retro_contacts") == 1  # the partner's: never listed
    (entry,) = audit_entries(retro, "retro_hunt")
    assert entry["contacts_found"] == 6
    assert entry["events_added"] == 6
    assert entry["domains_found"] == 1
    assert SITE not in json.dumps(entry)


def test_no_domain_text_of_unmatched_traffic_is_stored(retro: Path) -> None:
    stored = read_all_bytes(retro.parent / "var")
    for needle in (SITE, "newsite", "partner.example", "alias1@", "book@", "u2@corp"):
        assert needle.encode() not in stored, needle
        assert needle.encode("utf-16-le") not in stored, needle
    with store_db(retro) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(retro_contacts)")}
        assert "domain" not in columns
        persons = {r[0] for r in db.execute("SELECT DISTINCT person FROM retro_contacts")}
        hours = {r[0] for r in db.execute("SELECT DISTINCT hour FROM retro_contacts")}
    assert all(h.endswith(":00:00Z") for h in hours)  # to the hour, never the minute
    assert persons and all(p.startswith("p-") for p in persons)  # pseudonyms only


def test_internal_mail_is_never_kept(tmp_path: Path, directory_csv: Path) -> None:
    config = deployment(tmp_path / "d", directory_csv)
    rows = [
        ps_row(f"11/{day}/2026 9:00:00 AM", f"u{n}@corp.example", f"u{n + 1}@corp.example",
               index=10 * day + n)
        for day in (2, 3, 4) for n in range(1, 10)
    ]  # fmt: skip
    rows.append(ps_row("11/4/2026 9:30:00 AM", "u9@corp.example", f"a@{SITE}", index=999))
    export(config, "internal.csv", rows)
    summary = run(config, "2026-11-10")
    assert summary.rows == 28
    assert summary.retro_kept == 1
    assert count(config, "retro_contacts") == 1
    assert count(config, "retro_contacts", "direction NOT IN ('inbound', 'outbound')") == 0


def test_traffic_older_than_the_window_is_not_found(tmp_path: Path, directory_csv: Path) -> None:
    config = deployment(tmp_path / "d", directory_csv)
    october = [
        ps_row(f"10/{day}/2026 10:00:00 AM", "u1@corp.example", f"book@{SITE}", index=day)
        for day in (1, 2, 3)
    ]
    export(config, "october.csv", october)
    run(config, "2026-10-05")
    assert count(config, "retro_contacts") == 3
    november = [
        ps_row(f"11/{day}/2026 10:00:00 AM", "u1@corp.example", f"book@{SITE}", index=day + 50)
        for day in (2, 3, 4)
    ]
    export(config, "november.csv", november)
    run(config, "2026-11-05")  # October's contacts are past the 30 days: purged
    assert count(config, "retro_contacts", "day < '2026-10-06'") == 0
    purge = audit_entries(config, "retention.purge")
    assert purge[-1]["retro_contacts"] == 3

    list_site(config)
    summary = run(config, "2026-11-06")
    assert summary.retro_found == 3
    (alert,) = alerts(config)
    assert (alert["first_day"], alert["messages"], alert["days"]) == ("2026-11-02", 3, 3)


def test_on_dask_the_same_contacts_are_kept(tmp_path: Path, directory_csv: Path) -> None:
    kept = []
    for engine in ("local", "dask"):
        config = deployment(
            tmp_path / engine, directory_csv, f"retro_hunt_days: 30\nengine: {{type: {engine}}}"
        )
        export(config, "week.csv", site_rows())
        run(config, "2026-11-10")
        with store_db(config) as db:
            kept.append(db.execute("SELECT * FROM retro_contacts ORDER BY event_key").fetchall())
    assert len(kept[0]) == 7
    assert kept[0] == kept[1]


def test_rows_older_than_the_window_are_never_kept(tmp_path: Path, directory_csv: Path) -> None:
    config = deployment(tmp_path / "d", directory_csv, "retro_hunt_days: 7")
    rows = [
        ps_row(f"11/{day}/2026 10:00:00 AM", "u1@corp.example", f"book@{SITE}", index=day)
        for day in (1, 2, 3, 9)
    ]
    export(config, "late.csv", rows)
    run(config, "2026-11-10")
    with store_db(config) as db:
        days = [r[0] for r in db.execute("SELECT day FROM retro_contacts")]
    assert days == ["2026-11-03", "2026-11-09"]


def test_without_retro_hunt_days_nothing_is_collected(tmp_path: Path, directory_csv: Path) -> None:
    config = deployment(tmp_path / "d", directory_csv, rest="")
    export(config, "week.csv", site_rows())
    run(config, "2026-11-10")
    assert count(config, "retro_contacts") == 0
    list_site(config)
    summary = run(config, "2026-11-11")
    assert summary.retro_found == 0
    assert alerts(config) == []
    assert audit_entries(config, "retro_hunt") == []
    assert count(config, "meta", "key LIKE 'retro%'") == 0


def test_turning_it_off_deletes_what_was_kept(retro: Path) -> None:
    assert count(retro, "retro_contacts") == 7
    retro.write_text(retro.read_text().replace("retro_hunt_days: 30\n", ""))
    run(retro, "2026-11-11")
    assert count(retro, "retro_contacts") == 0
    (entry,) = audit_entries(retro, "retro_hunt.off")
    assert entry["retro_contacts_deleted"] == 7
    # a later listing finds nothing: nothing was kept
    list_site(retro)
    run(retro, "2026-11-12")
    assert alerts(retro) == []


def test_rereading_an_overlapping_export_after_the_hunt_counts_nothing_twice(
    retro: Path,
) -> None:
    list_site(retro)
    run(retro, "2026-11-11")
    (before,) = alerts(retro)
    events = count(retro, "events")
    # the same messages again in another export (UTF-16: another file), and a new one
    rows = [*site_rows(), ps_row("11/10/2026 9:00:00 AM", "u6@corp.example", "x@partner.example",
                                 index=77)]  # fmt: skip
    export(retro, "again.csv", rows, encoding="utf-16")
    summary = run(retro, "2026-11-12")
    assert summary.duplicates == 9
    assert summary.matched_new == 0
    assert count(retro, "events") == events
    (after,) = alerts(retro)
    assert (after["messages"], after["days"]) == (before["messages"], before["days"]) == (4, 3)
    assert count(retro, "retro_contacts") == 2  # the partner's two messages


def test_a_listing_read_in_the_same_overlap_run_counts_once(
    tmp_path: Path, directory_csv: Path
) -> None:
    """The listing arrives with a re-read of the same messages: they are matched at
    ingest, and their kept contacts add nothing when hunted."""
    config = deployment(tmp_path / "d", directory_csv)
    export(config, "week.csv", site_rows())
    run(config, "2026-11-10")
    list_site(config)
    export(config, "again.csv", site_rows(), encoding="utf-16")
    summary = run(config, "2026-11-11")
    assert summary.matched_new == 6
    assert summary.retro_found == 0
    (alert,) = alerts(config)
    assert (alert["messages"], alert["days"]) == (4, 3)
    assert count(config, "retro_contacts") == 1


def test_a_later_final_status_replaces_one_not_final_yet(
    tmp_path: Path, directory_csv: Path
) -> None:
    """A message from the site is first read while pending, then again once quarantined:
    held back by the gateway, it is no reply and never counts (as for a listed site)."""

    def mail(status: str) -> list[list[str]]:
        return [
            ps_row("11/2/2026 9:00:00 AM", "u1@corp.example", f"a@{SITE}", index=1),
            ps_row("11/4/2026 9:00:00 AM", "u1@corp.example", f"a@{SITE}", index=2),
            ps_row("11/5/2026 9:00:00 AM", f"a@{SITE}", "u1@corp.example", index=3, status=status),
        ]

    config = deployment(tmp_path / "d", directory_csv)
    export(config, "first.csv", mail("Pending"))
    run(config, "2026-11-06")
    export(config, "again.csv", mail("Quarantined"), encoding="utf-16")
    run(config, "2026-11-07")
    with store_db(config) as db:
        statuses = sorted(r[0] for r in db.execute("SELECT status FROM retro_contacts"))
    assert statuses == ["delivered", "delivered", "quarantined"]
    list_site(config)
    assert run(config, "2026-11-08").retro_found == 3
    assert alerts(config) == []  # two messages sent: under the three the policy asks for
    # as when the site was listed from the start and the message read once it was final
    control = deployment(tmp_path / "control", directory_csv)
    list_site(control)
    export(control, "mail.csv", mail("Quarantined"))
    run(control, "2026-11-08")
    assert alerts(control) == []


def test_key_epochs_do_not_break_it(tmp_path: Path, directory_csv: Path) -> None:
    rest = "retro_hunt_days: 30\nprivacy: {key_rotation: monthly}"
    rows = [
        ps_row(f"{month}/{day}/2026 10:00:00 AM", "u1@corp.example", f"book@{SITE}",
               index=100 * month + day)
        for month, day in ((10, 20), (10, 22), (10, 27), (11, 2), (11, 3), (11, 5))
    ]  # fmt: skip
    config = deployment(tmp_path / "d", directory_csv, rest)
    export(config, "mail.csv", rows)
    run(config, "2026-11-06")
    with store_db(config) as db:
        epochs = dict(db.execute("SELECT epoch, count(DISTINCT person) FROM retro_contacts "
                                 "GROUP BY epoch").fetchall())  # fmt: skip
    assert epochs == {"2026-10": 1, "2026-11": 1}
    list_site(config)
    assert run(config, "2026-11-07").retro_found == 6

    control = deployment(tmp_path / "control", directory_csv, rest)
    list_site(control)
    export(control, "mail.csv", rows)
    run(control, "2026-11-07")
    found = alerts(config)
    assert found == alerts(control)
    assert sorted(a["epoch"] for a in found) == ["2026-10", "2026-11"]


def test_a_subdomain_listing_is_not_assumed_to_cover_its_registrable_domain(
    retro: Path,
) -> None:
    list_site(retro, f"mail.{SITE}")  # the very host u1 wrote to, but only as a subdomain
    assert run(retro, "2026-11-11").retro_found == 0
    assert alerts(retro) == []
    (entry,) = audit_entries(retro, "retro_hunt")
    assert entry["listings_not_registrable"] == 1
    assert count(retro, "retro_contacts") == 7  # kept: a later listing may still find them


def test_an_exception_below_the_listing_leaves_its_traffic_alone(retro: Path) -> None:
    """The hosts under a listed domain are unknown; when an exception (an allow-list, an
    adblock ``@@`` rule) un-lists one of them, none of its earlier traffic is assumed."""
    feed = retro.parent / "escort.txt"
    feed.write_text(
        f"||escort-ads.test^\n||velvet-club.test^\n||{SITE}^\n@@||forum.{SITE}^\n",
        encoding="utf-8",
    )
    assert run(retro, "2026-11-11").retro_found == 0
    assert alerts(retro) == []
    (entry,) = audit_entries(retro, "retro_hunt")
    assert (entry["domains_listed_with_contacts"], entry["domains_skipped_ambiguous"]) == (1, 1)


def _policies_excluding(folder: Path, domain: str) -> Path:
    policies = folder / "policies"
    shutil.copytree(SHIPPED_POLICIES, policies)
    policy = policies / "escort-ads.yaml"
    policy.write_text(
        policy.read_text().replace("exclude_domains: []", f"exclude_domains: [{domain}]")
    )
    return policies


@pytest.mark.parametrize(
    ("excluded", "found"),
    [(SITE, 6), (f"mail.{SITE}", 0)],
    ids=["the-listed-domain", "a-subdomain-of-it"],
)
def test_policy_exclusions_keep_working(
    tmp_path: Path, directory_csv: Path, excluded: str, found: int
) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    config = deployment(folder, directory_csv, policies=_policies_excluding(folder, excluded))
    export(config, "week.csv", site_rows())
    run(config, "2026-11-10")
    list_site(config)
    # an exclusion of the domain: its events are stored and evaluated, and excluded there;
    # of a subdomain: the host is unknown, so nothing is assumed
    assert run(config, "2026-11-11").retro_found == found
    assert alerts(config) == []


def test_a_policy_naming_the_domain_later_finds_its_earlier_traffic(
    tmp_path: Path, directory_csv: Path
) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    policies = _policies_excluding(folder, "nothing.example")
    config = deployment(folder, directory_csv, policies=policies)
    export(config, "week.csv", site_rows())
    run(config, "2026-11-10")
    policy = policies / "escort-ads.yaml"
    policy.write_text(policy.read_text().replace("  domains: []", f"  domains: [{SITE}]"))
    assert run(config, "2026-11-11").retro_found == 6
    (alert,) = alerts(config)
    assert (alert["messages"], alert["days"]) == (4, 3)
    assert alert["categories"] == json.dumps(["policy:escort-ads"])


def test_the_hunt_runs_once_per_change_of_the_feeds(retro: Path) -> None:
    list_site(retro)
    run(retro, "2026-11-11")
    export(retro, "more.csv", [ps_row("11/11/2026 9:00:00 AM", "u7@corp.example",
                                      "x@other.example", index=500)])  # fmt: skip
    run(retro, "2026-11-12")  # the same feeds: no hunt
    assert len(audit_entries(retro, "retro_hunt")) == 1


def test_the_privacy_inventory_says_whether_it_is_on(retro: Path) -> None:
    on = "\n".join(retro_hunt_notice(load_config(retro)))
    assert "Retro-hunt is **on** (`retro_hunt_days: 30`). For 30 days" in on
    assert "internal mail never" in on
    assert TABLES["retro_contacts"][0] == "P"  # listed as about people (pseudonymous)
    assert "never the domain" in TABLES["retro_contacts"][1]
    retro.write_text(retro.read_text().replace("retro_hunt_days: 30\n", ""))
    off = "\n".join(retro_hunt_notice(load_config(retro)))
    assert "Retro-hunt is **off**" in off


def test_feeds_impact_assesses_additions_from_the_kept_contacts(retro: Path) -> None:
    # the feed keeper asks what listing the site would do, before installing it
    current = retro.parent / "escort.txt"
    candidate = retro.parent / "escort-new.txt"
    candidate.write_text(current.read_text() + f"{SITE}\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "feeds", "impact", "--config", str(retro), "--old", str(current),
            "--new", str(candidate), "--days", "30", "--today", "2026-11-10",
            "--format", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    impact = json.loads(result.output)
    text = json.dumps(impact)
    # the person alert the listing would raise (as the run after it does), from kept contacts
    added = [a for a in impact["alerts"] if a["change"] == "added"]
    assert [(a["rule"], a["messages"], a["days"]) for a in added] == [("repeated-contact", 4, 3)]
    assert impact["additions_assessed"] is True
    assert impact["additions_found"] == {"messages": 6, "domains": 1}
    assert "Retro-hunt keeps 30 days" in text and "6 message(s) to 1 newly listed" in text
    assert SITE not in text  # counts only: never the domains of anyone's mail
    # nothing was taken from the kept contacts or written
    assert count(retro, "retro_contacts") == 7
    assert alerts(retro) == []
