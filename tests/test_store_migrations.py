"""Schema migrations: a store written by an earlier version opens with its data intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compliance.errors import StoreError
from compliance.store import MIGRATIONS, Store, schema_statements
from compliance.store.seen import unpack
from tests.conftest import run_cli, store_db, week_of_mail_rows, write_config, write_ps_export


def _old_store(path: Path, version: int) -> None:
    """A store as a version that knew only the first ``version`` migrations wrote it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL)"
    )
    for number, (name, script) in enumerate(MIGRATIONS[:version], start=1):
        for statement in schema_statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-10-01')", (number, name))
    conn.execute("INSERT INTO runs (kind, started_at, status) VALUES ('run', '2026-10-01', 'ok')")
    conn.execute(
        "INSERT INTO events (event_key, ts, day, source, subject, org_unit, direction, domain, "
        "reg_domain, categories, feeds, run_id, epoch) VALUES (7, '2026-10-01T10:00:00', "
        "'2026-10-01', 's', 'p-0123456789abcdef0123', 'Sales', 'outbound', 'm.site.test', "
        "'site.test', 'escort-ads', 'f', 1, '2026-Q4')"
    )
    conn.execute(
        "INSERT INTO alerts (policy, policy_version, rule, rule_id, severity, subject, "
        "subject_key, org_unit, messages, people, domains, categories, first_day, last_day, "
        "trigger_day, window_days, draft, created_at, run_id) VALUES ('p', 1, 'person', "
        "'repeated', 'high', 'p-0123456789abcdef0123', 'p-0123456789abcdef0123', 'Sales', 3, "
        "1, '[\"site.test\"]', '[\"escort-ads\"]', '2026-10-01', '2026-10-03', '2026-10-03', "
        "30, 0, '2026-10-03', 1)"
    )
    conn.close()


def test_a_store_of_schema_3_gets_person_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_store(path, 3)
    with Store.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        events = store.events.since("2026-01-01")
        assert events["person"].tolist() == ["p-0123456789abcdef0123"]
        alert = store.alerts.get(1)
        assert alert is not None
        assert alert.person == "p-0123456789abcdef0123"
        assert alert.extra["episode_key"] == "p-0123456789abcdef0123"  # read from its column
        assert alert.as_dict()["subject"] == "p-0123456789abcdef0123"  # the documented key
    conn = sqlite3.connect(path)
    for table in ("events", "alerts"):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert not {c for c in columns if c.startswith("subject")}, table
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "alerts_episode" in indexes
    conn.close()


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO schema_migrations VALUES (?, 'future', '2027-01-01')", (len(MIGRATIONS) + 1,)
    )
    conn.close()
    with pytest.raises(StoreError, match="newer version"):
        Store.open(path)


def _store_before(path: Path, migration: str) -> sqlite3.Connection:
    """An empty store as the version before ``migration`` wrote it; a connection to it."""
    upto = next(n for n, (name, _) in enumerate(MIGRATIONS, start=1) if name == migration)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL)"
    )
    for number, (name, script) in enumerate(MIGRATIONS[: upto - 1], start=1):
        for statement in schema_statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-10-01')", (number, name))
    return conn


def _store_before_seen_keys(path: Path) -> sqlite3.Connection:
    """An empty store as the version before ``seen_keys`` (the keys of counted messages
    packed per day) wrote it (one row per counted message in ``seen_messages``)."""
    return _store_before(path, "seen_keys")


def test_counted_message_keys_move_into_packed_rows_per_day(tmp_path: Path) -> None:
    """Every (day, key) of ``seen_messages`` is known after the migration, the extremes of
    int64 too, and nothing else; the old table is gone; a day's migrated rows become one
    BLOB when keys are next added to it."""
    rng = np.random.default_rng(3)
    drawn = np.unique(rng.integers(-(2**63), 2**63 - 1, 9000, dtype=np.int64))
    keys = np.r_[drawn, -(2**63), 2**63 - 1, 0]
    days = np.array(["2026-10-01", "2026-10-02", "2026-10-03"], dtype=object)[
        rng.integers(0, 3, len(keys))
    ]
    path = tmp_path / "old.db"
    conn = _store_before_seen_keys(path)
    conn.executemany(
        "INSERT INTO seen_messages VALUES (?, ?)", zip(keys.tolist(), days.tolist(), strict=True)
    )
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.seen.counts() == dict(zip(*np.unique(days, return_counts=True), strict=True))
        assert store.seen.seen(pd.Series(days), keys).all()
        far_day = np.full(len(days), "2026-10-09", dtype=object)  # not a neighbour's
        assert not store.seen.seen(pd.Series(far_day), keys).any()
        assert not store.seen.seen(pd.Series(days), keys ^ 1).any()
        with store.transaction():
            fresh = store.seen.add(pd.Series(["2026-10-01"] * 2), np.array([keys[0] ^ 1, 7]))
        assert fresh.tolist() == [keys[0] ^ 1 not in keys, 7 not in keys]
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    kinds = conn.execute(
        "SELECT day, typeof(keys), count(*) FROM seen_keys GROUP BY 1, 2"
    ).fetchall()
    conn.close()
    assert "seen_messages" not in tables
    assert ("2026-10-01", "blob", 1) in kinds  # rewritten when added to
    assert {k for d, k, _ in kinds if d != "2026-10-01"} == {"text"}  # as migrated
    with Store.open(path) as store:
        assert store.seen.seen(pd.Series(days), keys).all()


def test_rereading_an_export_after_the_migration_counts_nothing_twice(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """A store of the version before, holding what a run over an export counted (its
    totals and the keys of its messages, one row each): after the migration, a run over
    the same export read again counts every message as a repeat and changes no total."""

    def deployment(name: str) -> Path:
        (tmp_path / name / "inbox").mkdir(parents=True)
        write_ps_export(tmp_path / name / "inbox" / "week1.csv", week_of_mail_rows())
        return write_config(
            tmp_path / name / "compliance.yaml", directory_csv, escort_feed, "store: var/store.db\n"
        )

    counted = deployment("counted")  # what the run before the upgrade counted
    code, output = run_cli(counted, "2026-11-10")
    assert code == 0, output
    with store_db(counted) as db:
        seen = [
            (unpack(value), day) for day, value in db.execute("SELECT day, keys FROM seen_keys")
        ]
    db.close()
    messages = sum(len(keys) for keys, _ in seen)
    assert messages == len(week_of_mail_rows())

    upgraded = deployment("upgraded")
    (upgraded.parent / "var").mkdir()
    conn = _store_before_seen_keys(upgraded.parent / "var" / "store.db")
    conn.execute("ATTACH DATABASE ? AS counted", (str(counted.parent / "var" / "store.db"),))
    for table in ("meta", "key_epochs", "daily_totals"):
        conn.execute(f"INSERT INTO {table} SELECT * FROM counted.{table}")  # noqa: S608
    conn.execute("DETACH DATABASE counted")
    conn.executemany(
        "INSERT INTO seen_messages VALUES (?, ?)",
        [(int(key), day) for keys, day in seen for key in keys],
    )
    conn.close()

    code, output = run_cli(upgraded, "2026-11-10")
    assert code == 0, output
    with store_db(upgraded) as db, store_db(counted) as before:
        totals = "SELECT * FROM daily_totals ORDER BY 1, 2, 3"
        assert db.execute(totals).fetchall() == before.execute(totals).fetchall()
        assert db.execute("SELECT rows, duplicates FROM ingested_units").fetchall() == [
            (messages, messages)
        ]
        assert db.execute(
            "SELECT version FROM schema_migrations WHERE name = 'seen_keys'"
        ).fetchone()
    db.close()
    before.close()


def test_notice_receipts_keep_their_status_code_only(tmp_path: Path) -> None:
    """A store written before ``notice_receipts`` holds servers' receipts whole: their
    queue ids and request ids, which the servers' own logs hold beside the recipient's
    address, go; the status code stays."""
    path = tmp_path / "old.db"
    conn = _store_before(path, "notice_receipts")
    receipts = [
        "250 2.0.0 Ok: queued as 4F1A2B3C",
        "250 2.6.0 <a1b2@corp.example> [InternalId=123] Queued mail for delivery",
        "HTTP 202 (request id 7f3e)",
        "202 accepted by Microsoft Graph",
        "sent",
        None,
    ]
    for n, receipt in enumerate(receipts):
        conn.execute(
            "INSERT INTO notices (key, policy, alert_id, person, epoch, day, arm, template, "
            "template_sha256, state, next_attempt, receipt, created_at, updated_at) VALUES "
            "(?, 'p', ?, 'p-1', '-', '2026-10-01', 'notice', 'default', 'x', 'sent', '', ?, "
            "'', '')",
            (f"k{n}", n, receipt),
        )
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
    conn = sqlite3.connect(path)
    kept = [r[0] for r in conn.execute("SELECT receipt FROM notices ORDER BY id")]
    conn.close()
    assert kept == ["250", "250", "HTTP 202", "202", "accepted", None]
