"""The SQLite store: versioned migrations, and one repository per group of tables.

All of the project's SQL lives in this package; the rest of the code reaches the
database through :class:`Store`'s repositories (``store.alerts``, ``store.ingest`` ...).

What it holds, and what it never holds:

* ``events``: matched messages only, minimised (pseudonym, org unit, external domain,
  day, categories); keyed by a keyed 64-bit hash so re-reading adds nothing;
* ``seen_keys``: keyed hashes of every message counted in ``daily_totals``, packed per
  day (:mod:`compliance.store.seen`), so that overlapping exports never count a message
  twice; purged after ``dedup_days``;
* ``daily_totals``: messages per day, org unit and direction;
* ``alerts`` (with ``alert_updates``, ``triage``, ``reports``), ``cases``, ``runs``,
  ``rejected_rows`` and ``skipped_rows`` (counts by reason), ``ingested_units`` (content
  hashes of files already read, never their names), ``bookmarks``, ``dp_releases``,
  ``audit_log``.

No table holds an address, a local part, a name, a mail subject or a file name; a
person appears only as a keyed pseudonym (the ``person`` columns).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from compliance.store.alerts import AlertFilter, Alerts
from compliance.store.auditlog import AuditLog
from compliance.store.cases import Case, Cases
from compliance.store.database import Database, utcnow
from compliance.store.edges import Edges
from compliance.store.events import Events
from compliance.store.feeds import FeedVersions
from compliance.store.files import (
    STORE_SETTING,
    check_file,
    check_folder,
    check_store_path,
    is_write_fault,
    probe_folder,
)
from compliance.store.ingest import NON_FINAL_STATUSES, Ingest
from compliance.store.keys import Keys
from compliance.store.ledger import Ledger
from compliance.store.meta import Meta
from compliance.store.notices import Notices
from compliance.store.outbox import STATES as OUTBOX_STATES
from compliance.store.outbox import Outbox, OutboxItem
from compliance.store.reports import ReportLog
from compliance.store.retention import Retention
from compliance.store.retro import Retro
from compliance.store.runs import Runs
from compliance.store.schema import MIGRATIONS, describe, schema_statements
from compliance.store.seen import SeenKeys
from compliance.store.triage import TriageLog

__all__ = [
    "MIGRATIONS",
    "NON_FINAL_STATUSES",
    "OUTBOX_STATES",
    "STATES",
    "STORE_SETTING",
    "AlertFilter",
    "Case",
    "OutboxItem",
    "Store",
    "check_file",
    "check_folder",
    "check_store_path",
    "describe",
    "is_write_fault",
    "probe_folder",
    "schema_statements",
    "utcnow",
]


class Store(Database):
    """The store, reached through its repositories."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        super().__init__(conn, path)
        self.audit = AuditLog(self)
        self.keys = Keys(self, self.audit)
        self.meta = Meta(self)
        self.runs = Runs(self)
        self.seen = SeenKeys(self)
        self.ingest = Ingest(self, self.seen)
        self.events = Events(self)
        self.alerts = Alerts(self)
        self.reports = ReportLog(self, self.runs)
        self.triage = TriageLog(self)
        self.cases = Cases(self)
        self.ledger = Ledger(self)
        self.retention = Retention(self)
        self.outbox = Outbox(self)
        self.retro = Retro(self, self.seen)
        self.feeds = FeedVersions(self)
        self.edges = Edges(self, self.seen)
        self.notices = Notices(self)
