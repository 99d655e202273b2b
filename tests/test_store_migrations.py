"""Schema migrations: a store written by an earlier version opens with its data intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from compliance.errors import StoreError
from compliance.store import MIGRATIONS, Store, schema_statements


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
