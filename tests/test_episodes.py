"""Episodes are a function of the data, not of how it arrived.

The same month of generated mail (dozens of people in several units, senders, replies,
spam, look-alikes, two policies with overlapping rules) gives identical episodes when
it is audited in one go, fed day by day to scheduled runs, or fed in batches with a run
that fails after ingesting and is resumed by the next.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

import compliance.scheduled
from compliance.alerts import Alert
from compliance.config import load_config
from compliance.engine import audit
from compliance.events import MINIMISED
from compliance.job import prepare_from_config
from compliance.store import Store
from connectors.exchange import detect_file
from tests.conftest import (
    SHIPPED_POLICIES,
    TEST_KEY,
    killed,
    ps_row,
    run_cli,
    write_config,
    write_ps_export,
)

FIRST = dt.date(2026, 10, 1)
DAYS = 31
UNITS = {"Sales/EMEA": 22, "Sales/EMEA/North": 4, "Engineering": 24, "Finance": 14}
SITES = ("escort-ads.test", "velvet-club.test", "night-companions.test")
#: The works council's approvals of SHORT_POLICY's short episodes and pairs (config YAML).
SHORT_APPROVALS = """\
lint_exceptions:
  - {policy: escort-short, check: WC003, approved_by: [works-council],
     approved_on: 2026-10-01, reason: short episodes tried on a test deployment}
  - {policy: escort-short, check: WC009, approved_by: [works-council],
     approved_on: 2026-10-01, reason: pairs of people tried on a test deployment}
"""
SHORT_POLICY = """\
id: escort-short
title: Short episodes
version: 1
match: {categories: [escort-ads], evidence: conversation, reply_window: 5d}
rules:
  - {id: burst, kind: person, window: 7d, min_messages: 2, min_days: 2, severity: medium}
  - {id: site-pair, kind: cluster, window: 14d, min_people: 2, same_domain: true,
     severity: high}
privacy: {min_group_size: 5}
suppress: 4d
max_alerts_per_day: 3
"""


def _people() -> list[tuple[str, str]]:
    out, n = [], 0
    for unit, size in UNITS.items():
        for _ in range(size):
            n += 1
            out.append((f"e{n}@corp.example", unit))
    return out


def _month(seed: int) -> dict[dt.date, list[list[str]]]:
    """Rows of each day: ordinary mail, internal mail, repeat contacts with sites (and
    their replies), one-off contacts, spam and newsletters from listed sites, look-alikes."""
    rng = random.Random(seed)
    people = _people()
    days: dict[dt.date, list[list[str]]] = {FIRST + dt.timedelta(d): [] for d in range(DAYS)}
    index = 0

    def add(day: dt.date, sender: str, recipient: str, hour: int, status: str = "OK") -> None:
        nonlocal index
        index += 1
        stamp = f"{day.month}/{day.day}/{day.year} {hour % 12 or 12}:{rng.randint(0, 59):02d}:00 "
        stamp += "AM" if hour < 12 else "PM"
        status = "Delivered" if status == "OK" else status
        days[day].append(ps_row(stamp, sender, recipient, index=index, status=status))

    for day in days:
        for _ in range(40):  # ordinary external and internal mail
            person = rng.choice(people)[0]
            other = f"c{rng.randint(1, 5000)}@{rng.choice(['partner.example', 'supplier.test'])}"
            if rng.random() < 0.5:
                add(day, person, other, rng.randint(7, 18))
            else:
                add(day, other, person, rng.randint(7, 18))
        a, b = rng.sample(people, 2)
        add(day, a[0], b[0], 10)
    regulars = rng.sample(people, 14)
    for person, _unit in regulars:  # repeat contacts, in bursts with quiet gaps
        site = rng.choice(SITES)
        day = rng.randint(0, 10)
        while day < DAYS:
            when = FIRST + dt.timedelta(day)
            for _ in range(rng.randint(1, 2)):
                add(when, person, f"book{rng.randint(1, 99)}@{site}", rng.randint(8, 12))
            if rng.random() < 0.6:  # the site answers
                add(when, f"no-reply@www.{site}", person, 15)
            day += rng.choice([1, 2, 3, 6, 9, 12])
    for person, _unit in rng.sample(people, 10):  # one message each: clusters, never persons
        when = FIRST + dt.timedelta(rng.randint(0, DAYS - 1))
        add(when, person, f"members@{rng.choice(SITES)}", 9, rng.choice(["Delivered", "Failed"]))
    for person, _unit in rng.sample(people, 12):  # received only: spam and newsletters
        for _ in range(rng.randint(3, 10)):
            when = FIRST + dt.timedelta(rng.randint(0, DAYS - 1))
            status = rng.choice(["Delivered", "FilteredAsSpam", "Quarantined"])
            add(when, f"offers{rng.randint(1, 500)}@{rng.choice(SITES)}", person, 6, status)
    for person, _unit in rng.sample(people, 4):  # look-alikes
        for d in range(0, DAYS, 5):
            add(FIRST + dt.timedelta(d), person, "x@notescort-ads.test", 11)
    return days


@pytest.fixture
def deployment(tmp_path: Path, escort_feed: Path) -> Path:
    directory = tmp_path / "directory.csv"
    lines = ["mail,id,department"]
    for n, (address, unit) in enumerate(_people(), start=1):
        lines.append(f"{address},00000000-0000-4000-8000-{n:012d},{unit}")
    directory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "escort-ads.yaml").write_bytes((SHIPPED_POLICIES / "escort-ads.yaml").read_bytes())
    (policies / "escort-short.yaml").write_text(SHORT_POLICY, encoding="utf-8")
    for folder in ("all", "inbox"):
        (tmp_path / folder).mkdir()
    for day, rows in _month(20261001).items():
        write_ps_export(tmp_path / "all" / f"trace-{day}.csv", rows)
    return write_config(
        tmp_path / "compliance.yaml",
        directory,
        escort_feed,
        "store: var/store.db\nfeed_cache: false\nreports: {dir: reports, formats: [json]}\n"
        "schedule: {lock: var/run.lock}\n" + SHORT_APPROVALS,
        policies=policies,
    )


def _episode(a: Alert) -> tuple[Any, ...]:
    return (
        a.policy, a.rule_id, a.person, a.org_unit, a.trigger_day, a.raised_day, a.first_day,
        a.last_day, a.messages, a.people, a.days, tuple(a.domains), tuple(a.categories), a.ended,
    )  # fmt: skip


def _deliver(config: Path, day: dt.date) -> None:
    name = f"trace-{day}.csv"
    (config.parent / "inbox" / name).write_bytes((config.parent / "all" / name).read_bytes())


def _stored(config: Path) -> list[tuple[Any, ...]]:
    with Store.open(config.parent / "var" / "store.db") as store:
        return sorted(_episode(a) for a in store.alerts.all())


def _audited(config: Path) -> list[tuple[Any, ...]]:
    loaded = load_config(config)
    prepared = prepare_from_config(loaded, TEST_KEY.encode())
    files = sorted((config.parent / "all").glob("*.csv"))
    last = str(FIRST + dt.timedelta(DAYS - 1))
    result = audit(prepared, [detect_file(f) for f in files], as_of=last)
    return sorted(_episode(a) for a in result.alerts)


@pytest.mark.slow
def test_audit_daily_runs_and_an_interrupted_run_give_the_same_episodes(
    deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = FIRST + dt.timedelta(DAYS - 1)
    audited = _audited(deployment)
    kinds = {(e[0], e[1]) for e in audited}
    assert len(audited) >= 10 and len(kinds) == 4, audited  # every rule of both policies fires
    assert any(e[-1] for e in audited) and not all(e[-1] for e in audited)  # ended and open
    assert any(e[8] > 3 for e in audited if e[1] == "repeated-contact")  # grew past trigger
    assert any(e[4] != e[5] for e in audited)  # the daily limit delayed some

    for n in range(DAYS):  # one scheduled run a day
        _deliver(deployment, FIRST + dt.timedelta(n))
        code, output = run_cli(deployment, FIRST + dt.timedelta(n))
        assert code == 0, output
    assert _stored(deployment) == audited

    # again from scratch, in batches of 1 to 5 days, one run failing after it ingested
    for folder in ("var", "inbox"):
        shutil.rmtree(deployment.parent / folder)
    (deployment.parent / "inbox").mkdir()
    rng = random.Random(7)
    day, runs = 0, 0
    while day < DAYS:
        batch = min(rng.randint(1, 5), DAYS - day)
        for n in range(day, day + batch):
            _deliver(deployment, FIRST + dt.timedelta(n))
        day += batch
        today = FIRST + dt.timedelta(day - 1)
        runs += 1
        if runs == 3:  # this run dies after committing its files, before evaluating
            with monkeypatch.context() as patch:
                patch.setattr(compliance.scheduled, "evaluate_stored", killed)
                code, output = run_cli(deployment, today)
            assert code == 70, output
            continue  # its files stay committed; the next run evaluates them
        code, output = run_cli(deployment, today)
        assert code == 0, output
    assert today == last
    assert _stored(deployment) == audited


@pytest.mark.slow
def test_an_episode_longer_than_the_lookback_grows_whole_across_runs(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # u1 writes to a site every third day for six weeks: one episode, far longer than
    # the policy's 11-day lookback, that every run must extend from its first day
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "short.yaml").write_text(
        SHORT_POLICY.replace("max_alerts_per_day: 3\n", ""), encoding="utf-8"
    )
    (tmp_path / "inbox").mkdir()
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\nfeed_cache: false\nreports: {dir: reports, formats: [json]}\n"
        "schedule: {lock: var/run.lock}\n" + SHORT_APPROVALS,
        policies=policies,
    )
    days = [FIRST + dt.timedelta(n) for n in range(0, 45, 3)]
    for n, day in enumerate(days):
        stamp = f"{day.month}/{day.day}/{day.year} 10:00:00 AM"
        rows = [ps_row(stamp, "u1@corp.example", "book@escort-ads.test", index=n)]
        write_ps_export(tmp_path / "inbox" / f"trace-{day}.csv", rows)
        code, output = run_cli(config, day)
        assert code == 0, output
    [alert] = [a for a in _stored_alerts(config) if a.rule_id == "burst"]
    assert (alert.first_day, alert.last_day) == (str(days[0]), str(days[-1]))
    assert (alert.messages, alert.days, alert.ended) == (15, 15, False)
    with Store.open(config.parent / "var" / "store.db") as store:
        history = store.alerts.history(alert.id or 0)
    assert [h["messages"] for h in history] == list(range(2, 16))  # what each run added


def _stored_alerts(config: Path) -> list[Alert]:
    with Store.open(config.parent / "var" / "store.db") as store:
        return store.alerts.all()


def _stored_run(store: Store, rows: list[dict[str, Any]], today: str, policies: list[Any]) -> None:
    """One scheduled evaluation after storing ``rows`` (what `run_once` does, minus reading)."""
    import pandas as pd

    from compliance.episodes import evaluate_stored
    from compliance.events import MINIMISED

    run_id = store.runs.begin("run", {}, {})
    with store.transaction():
        frame = pd.DataFrame(rows, columns=list(MINIMISED)).astype(MINIMISED)
        store.ingest.add_events(frame, run_id)
        store.meta.mark_pending(min(r["day"] for r in rows))
        evaluate_stored(store, policies, None, None, dt.date.fromisoformat(today), run_id)
        store.meta.clear_pending()
    store.runs.finish(run_id, "ok")


def test_late_data_that_joins_two_episodes_folds_them_into_one_alert(tmp_path: Path) -> None:
    import pandas as pd

    from compliance.policy.evaluate import evaluate
    from compliance.policy.model import Policy

    policy = Policy.model_validate(
        {
            "id": "p", "title": "t", "version": 1, "match": {"categories": ["escort-ads"]},
            "rules": [{"id": "r", "kind": "person", "window": "30d", "min_messages": 3,
                       "min_days": 2, "severity": "medium"}],
            "suppress": "30d",
        }
    )  # fmt: skip

    def event(n: int, day: str) -> dict[str, Any]:
        return {
            "event_key": n, "timestamp": pd.Timestamp(f"{day}T12:00:00Z"), "day": day,
            "source": "s", "person": "p-a", "org_unit": "U", "direction": "outbound",
            "domain": "escort.test", "reg_domain": "escort.test", "categories": "escort-ads",
            "feeds": "f", "status": "delivered", "size": 1, "epoch": "-",
        }  # fmt: skip

    first = [event(n, d) for n, d in enumerate(["2026-01-10", "2026-01-11", "2026-01-12"])]
    second = [event(10 + n, d) for n, d in enumerate(["2026-03-01", "2026-03-02", "2026-03-03"])]
    late = [event(20, "2026-02-05")]  # arrives last, and bridges the 48-day gap
    with Store.open(tmp_path / "store.db") as store:
        _stored_run(store, first, "2026-01-12", [policy])
        _stored_run(store, second, "2026-03-03", [policy])
        assert len(store.alerts.all()) == 2  # two episodes, as the data then said
        _stored_run(store, late, "2026-03-04", [policy])
        [kept] = store.alerts.all()
        merged = store.alerts.get(2)
        log = [r[0] for r in store.conn.execute("SELECT action FROM audit_log")]
    frame = pd.DataFrame(first + second + late).astype(MINIMISED)
    [audited] = evaluate([policy], frame, None, as_of="2026-03-04")
    assert _episode(kept) == _episode(audited)
    assert (kept.id, kept.messages, kept.first_day, kept.last_day) == (
        1,
        7,
        "2026-01-10",
        "2026-03-03",
    )
    assert merged is not None and merged.ended  # kept for its history, no longer listed
    assert "alert.merged" in log


def test_an_open_episode_keeps_its_evidence_past_the_events_retention(tmp_path: Path) -> None:
    import pandas as pd

    from compliance.policy.model import Policy

    policy = Policy.model_validate(
        {
            "id": "p", "title": "t", "version": 1, "match": {"categories": ["escort-ads"]},
            "rules": [{"id": "r", "kind": "person", "window": "30d", "min_messages": 3,
                       "min_days": 2, "severity": "medium"}],
        }
    )  # fmt: skip
    start = dt.date(2026, 1, 1)
    sent = 0
    with Store.open(tmp_path / "store.db") as store:
        for n in range(0, 260, 5):  # two messages every five days for 260 days
            day = (start + dt.timedelta(n)).isoformat()
            rows = [
                {
                    "event_key": n * 10 + i,
                    "timestamp": pd.Timestamp(f"{day}T1{i}:00:00Z"),
                    "day": day,
                    "source": "s",
                    "person": "p-a",
                    "org_unit": "U",
                    "direction": "outbound",
                    "domain": "escort.test",
                    "reg_domain": "escort.test",
                    "categories": "escort-ads",
                    "feeds": "f",
                    "status": "delivered",
                    "size": 1,
                    "epoch": "-",
                }
                for i in range(2)
            ]
            sent += 2
            _stored_run(store, rows, day, [policy])
            with store.transaction():  # the run's retention purge, 180 days
                horizon = (start + dt.timedelta(n - 180)).isoformat()
                store.retention.purge(horizon, "2000-01-01", "2000-01-01")
        [alert] = store.alerts.all()
    assert (alert.first_day, alert.messages, alert.ended) == ("2026-01-01", sent, False)
