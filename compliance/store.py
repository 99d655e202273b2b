"""The SQLite store: versioned migrations, bookmarks, minimised events, totals, alerts, runs.

What it holds, and what it never holds:

* ``events``: matched messages only, minimised (pseudonym, org unit, external domain,
  day, categories); keyed by a keyed 64-bit hash so re-reading adds nothing;
* ``seen_messages``: keyed hashes of every message counted in ``daily_totals``, so that
  overlapping exports never count a message twice; purged after ``dedup_days``;
* ``daily_totals``: messages per day, org unit and direction;
* ``alerts``, ``runs``, ``rejected_rows`` (counts by reason), ``ingested_units``
  (content hashes of files already read, never their names), ``bookmarks``.

No table holds an address, a local part, a name, a mail subject or a file name; a
person appears only as a keyed pseudonym (the ``person`` columns).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from compliance import auditlog
from compliance.errors import KeyMissingError, StorageError, StoreError
from compliance.events import MINIMISED
from compliance.policy.evaluate import Alert
from compliance.privacy import NO_EPOCH

log = logging.getLogger(__name__)

#: Delivery statuses that a later read of the same message may replace (lower case).
NON_FINAL_STATUSES: tuple[str, ...] = ("gettingstatus", "pending")

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            rows_read INTEGER NOT NULL DEFAULT 0,
            rows_rejected INTEGER NOT NULL DEFAULT 0,
            rows_duplicate INTEGER NOT NULL DEFAULT 0,
            rows_matched INTEGER NOT NULL DEFAULT 0,
            alerts_new INTEGER NOT NULL DEFAULT 0,
            policies TEXT NOT NULL DEFAULT '{}',
            feeds TEXT NOT NULL DEFAULT '{}',
            error TEXT
        );
        CREATE TABLE bookmarks (
            source TEXT PRIMARY KEY,
            watermark TEXT,
            updated_at TEXT NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id)
        );
        CREATE TABLE ingested_units (
            source TEXT NOT NULL,
            unit_key TEXT NOT NULL,
            format TEXT NOT NULL,
            rows INTEGER NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            PRIMARY KEY (source, unit_key)
        );
        CREATE TABLE seen_messages (event_key INTEGER PRIMARY KEY, day TEXT NOT NULL);
        CREATE TABLE events (
            event_key INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            day TEXT NOT NULL,
            source TEXT NOT NULL,
            subject TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            domain TEXT NOT NULL,
            reg_domain TEXT NOT NULL,
            categories TEXT NOT NULL,
            feeds TEXT NOT NULL,
            status TEXT,
            size INTEGER,
            run_id INTEGER NOT NULL REFERENCES runs(id)
        );
        CREATE INDEX events_day ON events(day);
        CREATE TABLE daily_totals (
            day TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            messages INTEGER NOT NULL,
            PRIMARY KEY (day, org_unit, direction)
        ) WITHOUT ROWID;
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            policy TEXT NOT NULL,
            policy_version INTEGER NOT NULL,
            rule TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            severity TEXT NOT NULL,
            subject TEXT,
            subject_key TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            messages INTEGER NOT NULL,
            people INTEGER NOT NULL,
            domains TEXT NOT NULL,
            categories TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            trigger_day TEXT NOT NULL,
            window_days INTEGER NOT NULL,
            draft INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'new',
            created_at TEXT NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            UNIQUE (policy, rule_id, subject_key, trigger_day)
        );
        CREATE INDEX alerts_trigger ON alerts(trigger_day);
        CREATE TABLE rejected_rows (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, source, reason)
        );
        """,
    ),
    (
        "accountability",
        """
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            opened_by TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            closed_by TEXT,
            closed_at TEXT,
            outcome TEXT
        );
        CREATE TABLE case_approvals (
            case_id INTEGER NOT NULL REFERENCES cases(id),
            approver TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (case_id, approver)
        );
        CREATE TABLE key_epochs (
            epoch TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            first_used TEXT NOT NULL
        );
        CREATE TABLE dp_releases (
            id INTEGER PRIMARY KEY,
            report TEXT NOT NULL,
            period TEXT NOT NULL,
            epsilon REAL NOT NULL,
            released TEXT NOT NULL,
            at TEXT NOT NULL,
            UNIQUE (report, period)
        );
        ALTER TABLE events ADD COLUMN epoch TEXT NOT NULL DEFAULT '-';
        ALTER TABLE alerts ADD COLUMN epoch TEXT NOT NULL DEFAULT '-';
        INSERT INTO key_epochs SELECT '-', value, datetime('now') FROM meta WHERE key = 'key_id'
        """,
    ),
    (
        "episodes_and_triage",
        """
        ALTER TABLE alerts ADD COLUMN days INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN raised_day TEXT NOT NULL DEFAULT '';
        ALTER TABLE alerts ADD COLUMN updated_at TEXT;
        ALTER TABLE alerts ADD COLUMN assignee TEXT;
        ALTER TABLE alerts ADD COLUMN dismiss_reason TEXT;
        ALTER TABLE alerts ADD COLUMN decided_at TEXT;
        ALTER TABLE alerts ADD COLUMN merged_into INTEGER REFERENCES alerts(id);
        UPDATE alerts SET raised_day = trigger_day, ended = 1,
            state = CASE WHEN state = 'closed' THEN 'resolved' ELSE state END;
        CREATE INDEX alerts_subject ON alerts(policy, rule_id, subject_key);
        CREATE TABLE alert_updates (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            run_id INTEGER REFERENCES runs(id),
            at TEXT NOT NULL,
            messages INTEGER NOT NULL,
            people INTEGER NOT NULL,
            days INTEGER NOT NULL,
            domains TEXT NOT NULL,
            categories TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            ended INTEGER NOT NULL
        );
        CREATE INDEX alert_updates_alert ON alert_updates(alert_id, id);
        INSERT INTO alert_updates (alert_id, run_id, at, messages, people, days, domains,
            categories, first_day, last_day, ended)
            SELECT id, run_id, created_at, messages, people, days, domains, categories,
            first_day, last_day, ended FROM alerts;
        CREATE TABLE triage (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT,
            note TEXT,
            assignee TEXT
        );
        CREATE INDEX triage_alert ON triage(alert_id);
        CREATE TABLE reports (
            id INTEGER PRIMARY KEY,
            audience TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            at TEXT NOT NULL,
            run_id INTEGER REFERENCES runs(id),
            update_seq INTEGER NOT NULL
        );
        ALTER TABLE ingested_units ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        # `subject` held a pseudonym, and read like a mail subject
        "person_columns",
        """
        ALTER TABLE events RENAME COLUMN subject TO person;
        ALTER TABLE alerts RENAME COLUMN subject TO person;
        ALTER TABLE alerts RENAME COLUMN subject_key TO episode_key;
        DROP INDEX alerts_subject;
        CREATE INDEX alerts_episode ON alerts(policy, rule_id, episode_key);
        """,
    ),
]


def _statements(script: str) -> list[str]:
    """A script's statements (a trigger's body keeps its inner semicolons)."""
    out, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                out.append(buffer)
            buffer = ""
    if buffer.strip(" \n;"):
        out.append(buffer)
    return out


def utcnow() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


#: What to do instead, when the store's folder cannot be written.
STORE_SETTING = "set store: to a writable path"

#: SQLite result codes (extended names start so) of a write the environment refused.
_WRITE_FAULTS = (
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR_WRITE",
    "SQLITE_IOERR_FSYNC",
    "SQLITE_IOERR_TRUNCATE",
    "SQLITE_IOERR_SHMOPEN",
    "SQLITE_IOERR_SHMSIZE",
)
_WRITE_FAULT_TEXT = ("disk is full", "readonly", "unable to open")


def is_write_fault(exc: sqlite3.Error) -> bool:
    """True for SQLite's errors of a full disk, a read-only file or folder, a file it cannot
    open or a write the operating system refused; false for everything else (a bug, a
    corrupt file, a constraint): those are not the environment's."""
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name.startswith(_WRITE_FAULTS)
    return any(text in str(exc) for text in _WRITE_FAULT_TEXT)


def probe_folder(folder: Path) -> OSError | None:
    """Create, write one byte to and remove a file in ``folder``: the error, or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".compliance-probe-", dir=folder)
    except OSError as exc:
        return exc
    try:
        os.write(fd, b"\0")
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        os.unlink(probe)
    return None


def check_folder(folder: Path, what: str, shown: Path, setting: str, create: bool = True) -> None:
    """Pre-flight: raise :class:`StorageError` at once when files cannot be written in
    ``folder`` (created first when ``create``; else it must exist). ``what`` and ``shown``
    name the output for the message, ``setting`` the other way out."""
    if folder.is_symlink() and not folder.exists():  # a volume not mounted yet, say
        raise StorageError(
            what, shown, f"{folder} is a link to a place that does not exist", setting
        )
    if folder.exists() and not folder.is_dir():
        raise StorageError(what, shown, f"{folder} is not a folder", f"remove it, or {setting}")
    if not create and not folder.exists():
        raise StorageError(what, shown, *StorageError.explain(errno.ENOENT, folder, setting))
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_storage(exc, what, shown, setting)
    fault = probe_folder(folder)
    if fault is not None:
        _raise_storage(fault, what, shown, setting)


def check_file(path: Path, what: str, setting: str) -> None:
    """Pre-flight: raise :class:`StorageError` when an existing ``path`` cannot be opened
    for writing (it is not changed); a folder or a dangling link in its place is refused."""
    if path.is_dir():
        raise StorageError(
            what, path, f"{path} is a folder, not a file", f"remove it, or {setting}"
        )
    if path.is_symlink() and not path.exists():
        raise StorageError(what, path, f"{path} is a link to a place that does not exist", setting)
    if not path.is_file():
        return
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError as exc:
        _raise_storage(exc, what, path, setting)


def check_store_path(path: Path) -> None:
    """Pre-flight for the store: its folder (created if needed) and, when they exist, the
    database and its WAL files must be writable."""
    check_folder(path.parent, "the store", path, STORE_SETTING)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        check_file(file, "the store", STORE_SETTING)


def storage_reason(path: Path, exc: sqlite3.Error) -> tuple[str, Path, str, str]:
    """The :class:`StorageError` arguments for SQLite's write fault ``exc`` on the store at
    ``path``: the folder is probed to tell a read-only disk, a missing permission and a
    missing folder apart (SQLite does not say)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    folder = path.parent
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        return ("the store", path, *StorageError.explain(errno.ENOSPC, folder, STORE_SETTING))
    if not folder.is_dir():
        return ("the store", path, *StorageError.explain(errno.ENOENT, folder, STORE_SETTING))
    fault = probe_folder(folder)
    if fault is None:
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                if file.exists():
                    os.close(os.open(file, os.O_WRONLY))
            except OSError as exc_file:
                fault = exc_file
                break
    if fault is not None and fault.errno in StorageError.ERRNOS:
        return ("the store", path, *StorageError.explain(fault.errno, folder, STORE_SETTING))
    if name.startswith("SQLITE_IOERR") and _file_size_limited():
        return ("the store", path, *StorageError.explain(errno.EFBIG, folder, STORE_SETTING))
    if name.startswith("SQLITE_IOERR"):
        return (
            "the store",
            path,
            f"the operating system refused a write in {folder} ({name})",
            f"check that the disk has space and that large files are allowed, or {STORE_SETTING}",
        )
    return ("the store", path, *StorageError.explain(errno.EACCES, folder, STORE_SETTING))


def _file_size_limited() -> bool:
    """True when this process may not write files of any size (``ulimit -f``)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return False
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


def _raise_storage(exc: OSError, what: str, shown: Path, setting: str) -> NoReturn:
    error = StorageError.from_os(exc, what, shown, setting)
    if error is None:
        raise exc
    raise error from None


class Store:
    """One SQLite database file in WAL mode."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the store at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = StorageError.from_os(exc, "the store", path, STORE_SETTING)
            raise error or StoreError(f"cannot open the store {path}: {exc}") from None
        store: Store | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            store = cls(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            store.migrate()
        except sqlite3.Error as exc:
            if store is not None:
                store.close()
            if is_write_fault(exc):
                raise StorageError(*storage_reason(path, exc)) from None
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        except BaseException:
            if store is not None:
                store.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: everything inside is written, or nothing.

        A full disk or a read-only file met inside (or at the commit) rolls everything
        back and raises :class:`StorageError`; other errors pass unchanged."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._reraise(exc)
        try:
            yield self.conn
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                self._reraise(exc)
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._reraise(exc)

    def _rollback(self) -> None:
        """Roll back what is still open (SQLite may have rolled back already, e.g. on a
        full disk); a rollback that fails too leaves the first error to tell."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                log.warning("the rollback failed too; SQLite recovers at the next open")

    def _reraise(self, exc: sqlite3.Error) -> NoReturn:
        """Raise :class:`StorageError` for a write the environment refused, else ``exc``."""
        if is_write_fault(exc):
            raise StorageError(*storage_reason(self.path, exc)) from None
        raise exc

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """Join the caller's transaction, or run in one of its own."""
        if self.conn.in_transaction:
            yield self.conn
        else:
            with self.transaction() as conn:
                yield conn

    def migrate(self) -> None:
        """Apply the migrations this store has not seen, each in its own transaction."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {r[0] for r in self.conn.execute("SELECT version FROM schema_migrations")}
        if done and max(done) > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer version (schema {max(done)}); upgrade first"
            )
        for version, (name, script) in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            with self.transaction() as conn:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, utcnow())
                )

    @property
    def schema_version(self) -> int:
        """The highest migration applied."""
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # --- key -----------------------------------------------------------------
    def check_key(self, key_id: str) -> None:
        """Bind the store to one key on first use; refuse any other key afterwards."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
        if row is None:
            with self.transaction() as conn:
                conn.execute("INSERT INTO meta VALUES ('key_id', ?)", (key_id,))
        elif row[0] != key_id:
            raise KeyMissingError(
                f"the pseudonymisation key does not fit the store {self.path}: it was written "
                "with another key, and mixing keys would split each person in two"
            )

    def check_epoch(self, epoch: str, epoch_key_id: str, actor: str) -> None:
        """Record a key epoch on first use (logged); refuse a key that does not fit it."""
        row = self.conn.execute(
            "SELECT key_id FROM key_epochs WHERE epoch = ?", (epoch,)
        ).fetchone()
        if row is None:
            with self.writing() as conn:
                conn.execute(
                    "INSERT INTO key_epochs VALUES (?, ?, ?)", (epoch, epoch_key_id, utcnow())
                )
                self.log(actor, "key.epoch", {"epoch": epoch, "key_id": epoch_key_id})
        elif row[0] != epoch_key_id:
            raise KeyMissingError(
                f"the pseudonymisation key does not fit key epoch {epoch} of the store "
                f"{self.path}: its pseudonyms were made with another key"
            )

    def epochs(self) -> list[tuple[str, str, str]]:
        """(epoch, key fingerprint, first used) of every key epoch seen."""
        return [
            (str(a), str(b), str(c))
            for a, b, c in self.conn.execute("SELECT * FROM key_epochs ORDER BY first_used")
        ]

    # --- audit log -----------------------------------------------------------
    def log(self, actor: str, action: str, details: Mapping[str, Any]) -> auditlog.Entry:
        """Append to the audit log (inside the caller's transaction, or in its own)."""
        with self.writing() as conn:
            return auditlog.append(conn, utcnow(), actor, action, details)

    def remember(self, name: str, value: str) -> str | None:
        """Store a value in ``meta``; return the one it replaces (for change detection)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (name, value),
        )
        return None if row is None else str(row[0])

    # --- runs ----------------------------------------------------------------
    def begin_run(self, kind: str, policies: Mapping[str, Any], feeds: Mapping[str, Any]) -> int:
        """Record a run as started (committed at once, so a crash leaves a trace).

        Runs hold the run lock, so a run still marked as running was interrupted.
        """
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
                (utcnow(),),
            )
            cur = conn.execute(
                "INSERT INTO runs (kind, started_at, status, policies, feeds) "
                "VALUES (?, ?, 'running', ?, ?)",
                (kind, utcnow(), json.dumps(policies, sort_keys=True), json.dumps(feeds)),
            )
            return int(cur.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        stats: Mapping[str, int] | None = None,
    ) -> None:
        """Record a run's outcome and counts."""
        columns = ("rows_read", "rows_rejected", "rows_duplicate", "rows_matched", "alerts_new")
        values = [int((stats or {}).get(c, 0)) for c in columns]
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, error = ?, "  # noqa: S608 (fixed names)
                + ", ".join(f"{c} = ?" for c in columns)
                + " WHERE id = ?",
                (utcnow(), status, error, *values, run_id),
            )

    # --- ingest (call inside a transaction) ---------------------------------
    def unit_done(self, source: str, unit_key: str) -> bool:
        """True when this content of this source has been ingested already."""
        row = self.conn.execute(
            "SELECT 1 FROM ingested_units WHERE source = ? AND unit_key = ?", (source, unit_key)
        ).fetchone()
        return row is not None

    def record_unit(
        self, source: str, unit_key: str, fmt: str, rows: int, run_id: int, duplicates: int = 0
    ) -> None:
        """Mark a unit as ingested, with its rows read and the repeats it held."""
        self.conn.execute(
            "INSERT OR REPLACE INTO ingested_units "
            "(source, unit_key, format, rows, run_id, duplicates) VALUES (?, ?, ?, ?, ?, ?)",
            (source, unit_key, fmt, rows, run_id, duplicates),
        )

    def add_totals(self, totals: pd.DataFrame) -> int:
        """Count messages not seen before into ``daily_totals``; return how many were repeats."""
        if totals.empty:
            return 0
        unique = totals.drop_duplicates("event_key")
        repeats = len(totals) - len(unique)
        conn = self.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS chunk_keys "
            "(event_key INTEGER PRIMARY KEY, day TEXT, org_unit TEXT, direction TEXT)"
        )
        conn.execute("DELETE FROM chunk_keys")
        columns = [unique[c].to_numpy(dtype=object).tolist() for c in ("day", "org_unit")]
        conn.executemany(
            "INSERT INTO chunk_keys VALUES (?, ?, ?, ?)",
            zip(
                unique["event_key"].to_numpy(dtype=np.int64).tolist(),
                *columns,
                unique["direction"].to_numpy(dtype=object).tolist(),
                strict=True,
            ),
        )
        conn.execute(
            "DELETE FROM chunk_keys WHERE event_key IN (SELECT event_key FROM seen_messages)"
        )
        fresh = conn.execute("SELECT count(*) FROM chunk_keys").fetchone()[0]
        conn.execute("INSERT INTO seen_messages SELECT event_key, day FROM chunk_keys")
        conn.execute(
            "INSERT INTO daily_totals (day, org_unit, direction, messages) "
            "SELECT day, org_unit, direction, count(*) FROM chunk_keys "
            "WHERE true GROUP BY day, org_unit, direction "
            "ON CONFLICT (day, org_unit, direction) "
            "DO UPDATE SET messages = messages + excluded.messages"
        )
        return repeats + (len(unique) - int(fresh))

    def add_events(self, matched: pd.DataFrame, run_id: int) -> int:
        """Store matched minimised events; return how many were new."""
        if matched.empty:
            return 0
        before = self.conn.total_changes
        rows = matched.assign(
            ts=matched["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            size=matched["size"].astype("object").where(matched["size"].notna(), None),
            run_id=run_id,
        )
        columns = [
            "event_key", "ts", "day", "source", "person", "org_unit", "direction",
            "domain", "reg_domain", "categories", "feeds", "status", "size", "run_id", "epoch",
        ]  # fmt: skip
        self.conn.executemany(
            f"INSERT OR IGNORE INTO events ({', '.join(columns)}) "  # noqa: S608 (fixed names)
            f"VALUES ({', '.join('?' * len(columns))})",
            rows[columns].astype(object).where(rows[columns].notna(), None).itertuples(index=False),
        )
        inserted = self.conn.total_changes - before
        # a status that was not final yet (pending, gettingStatus) takes the later value
        final = rows[~rows["status"].isin(NON_FINAL_STATUSES) & rows["status"].notna()]
        if inserted < len(rows) and len(final):
            self.conn.executemany(
                "UPDATE events SET status = ? WHERE event_key = ? AND status IN "  # noqa: S608
                f"({', '.join('?' * len(NON_FINAL_STATUSES))})",
                (
                    (str(status), int(key), *NON_FINAL_STATUSES)
                    for status, key in zip(final["status"], final["event_key"], strict=True)
                ),
            )
        return inserted

    def bookmark(self, source: str) -> str | None:
        """A source's bookmark, or None before its first complete read."""
        row = self.conn.execute(
            "SELECT watermark FROM bookmarks WHERE source = ?", (source,)
        ).fetchone()
        return None if row is None else row[0]

    def reset_bookmark(self, source: str) -> bool:
        """Forget a source's bookmark; True when there was one."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM bookmarks WHERE source = ?", (source,)).rowcount > 0

    def mark_pending(self, day: str) -> None:
        """Remember that events from ``day`` on have been ingested but not evaluated."""
        self.conn.execute(
            "INSERT INTO meta VALUES ('pending_from', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = min(value, excluded.value)",
            (day,),
        )

    def pending_from(self) -> str | None:
        """The earliest day ingested and not yet evaluated."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'pending_from'").fetchone()
        return None if row is None else str(row[0])

    def clear_pending(self) -> None:
        """Everything ingested has been evaluated."""
        self.conn.execute("DELETE FROM meta WHERE key = 'pending_from'")

    def set_bookmark(self, source: str, watermark: str | None, run_id: int) -> None:
        """Advance a source's bookmark (never backwards)."""
        row = self.conn.execute(
            "SELECT watermark FROM bookmarks WHERE source = ?", (source,)
        ).fetchone()
        if row is not None and row[0] is not None and (watermark is None or watermark < row[0]):
            watermark = row[0]
        self.conn.execute(
            "INSERT OR REPLACE INTO bookmarks VALUES (?, ?, ?, ?)",
            (source, watermark, utcnow(), run_id),
        )

    def add_rejects(self, run_id: int, source: str, counts: Counter[str]) -> None:
        """Record rejected-row counts by reason."""
        self.conn.executemany(
            "INSERT INTO rejected_rows VALUES (?, ?, ?, ?) ON CONFLICT (run_id, source, reason) "
            "DO UPDATE SET count = count + excluded.count",
            [(run_id, source, reason, n) for reason, n in counts.items() if n],
        )

    def purge_seen(self, before_day: str) -> int:
        """Forget message keys older than ``before_day`` (no source re-delivers them)."""
        return self.conn.execute("DELETE FROM seen_messages WHERE day < ?", (before_day,)).rowcount

    # --- evaluation and reports ---------------------------------------------
    def events_since(self, day: str) -> pd.DataFrame:
        """Matched minimised events on or after ``day``."""
        frame = pd.read_sql_query(
            "SELECT event_key, ts AS timestamp, day, source, person, org_unit, direction, "
            "domain, reg_domain, categories, feeds, status, size, epoch FROM events WHERE day >= ?",
            self.conn,
            params=(day,),
        )
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame.astype(MINIMISED)

    # --- alerts and their episodes ------------------------------------------
    _ALERT_COLUMNS = (
        "id, policy, policy_version, rule, rule_id, severity, person, org_unit, messages, "
        "people, domains, categories, first_day, last_day, trigger_day, draft, window_days, "
        "days, ended, raised_day, state, episode_key, epoch, assignee, dismiss_reason"
    )

    def _alerts(
        self, where: str, params: tuple[Any, ...] = (), merged: bool = False
    ) -> list[Alert]:
        """Alerts matching ``where``; those merged into another episode only if ``merged``."""
        live = "" if merged else " AND merged_into IS NULL"
        rows = self.conn.execute(
            f"SELECT {self._ALERT_COLUMNS} FROM alerts WHERE ({where}){live} "  # noqa: S608
            "ORDER BY trigger_day, id",
            params,
        ).fetchall()
        out = []
        for r in rows:
            alert = Alert(
                id=r[0], policy=r[1], policy_version=r[2], rule=r[3], rule_id=r[4],
                severity=r[5], person=r[6], org_unit=r[7], messages=r[8], people=r[9],
                domains=json.loads(r[10]), categories=json.loads(r[11]), first_day=r[12],
                last_day=r[13], trigger_day=r[14], draft=bool(r[15]), window_days=r[16],
                days=r[17], ended=bool(r[18]), raised_day=r[19], state=r[20],
                extra={
                    "episode_key": r[21], "epoch": r[22], "assignee": r[23],
                    "dismiss_reason": r[24],
                },
            )  # fmt: skip
            out.append(alert)
        return out

    def alert(self, alert_id: int) -> Alert | None:
        """One stored alert."""
        found = self._alerts("id = ?", (alert_id,), merged=True)
        return found[0] if found else None

    def all_alerts(self) -> list[Alert]:
        """Every stored alert."""
        return self._alerts("true")

    def episode_reach(self, default_from: str) -> str:
        """The first day an evaluation must load so that every stored episode that is open,
        or reaches ``default_from``, is recomputed whole."""
        row = self.conn.execute(
            "SELECT min(first_day) FROM alerts WHERE (ended = 0 OR last_day >= ?) "
            "AND merged_into IS NULL",
            (default_from,),
        ).fetchone()
        return min(default_from, row[0]) if row[0] else default_from

    def episode_ends(self, before: str) -> dict[tuple[str, str, str], str]:
        """Last day of the latest episode ending before ``before``, by (policy, rule id,
        episode key): only later evidence may start the next episode."""
        return {
            (str(p), str(r), str(k)): str(d)
            for p, r, k, d in self.conn.execute(
                "SELECT policy, rule_id, episode_key, max(last_day) FROM alerts "
                "WHERE last_day < ? AND merged_into IS NULL GROUP BY policy, rule_id, episode_key",
                (before,),
            )
        }

    def episodes_since(self, day: str) -> list[Alert]:
        """Stored alerts whose episode is open or reaches ``day``."""
        return self._alerts("ended = 0 OR last_day >= ?", (day,))

    def evaluated_through(self) -> str | None:
        """The day the latest scheduled evaluation ran as of: alerts raised later wait."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'evaluated_through'").fetchone()
        return None if row is None else str(row[0])

    def raised_per_day(self, policy: str) -> dict[str, int]:
        """New alerts of a policy per day they were raised (for its daily limit)."""
        return {
            str(d): int(n)
            for d, n in self.conn.execute(
                "SELECT raised_day, count(*) FROM alerts WHERE policy = ? GROUP BY raised_day",
                (policy,),
            )
        }

    def insert_alert(self, alert: Alert, run_id: int) -> int:
        """Store a new alert (an episode seen for the first time) with its first update."""
        epoch = NO_EPOCH
        if alert.person is not None:  # the epoch of the person's pseudonym
            epoch = alert.extra.get("epoch") or NO_EPOCH
        now = utcnow()
        cur = self.conn.execute(
            "INSERT INTO alerts (policy, policy_version, rule, rule_id, severity, person, "
            "episode_key, org_unit, messages, people, domains, categories, first_day, last_day, "
            "trigger_day, window_days, draft, created_at, run_id, epoch, days, ended, "
            "raised_day, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.policy, alert.policy_version, alert.rule, alert.rule_id,
                alert.severity, alert.person, alert.episode_key, alert.org_unit,
                alert.messages, alert.people, json.dumps(alert.domains),
                json.dumps(alert.categories), alert.first_day, alert.last_day,
                alert.trigger_day, alert.window_days, int(alert.draft), now, run_id,
                epoch, alert.days, int(alert.ended), alert.raised_day or alert.trigger_day, now,
            ),
        )  # fmt: skip
        alert_id = int(cur.lastrowid or 0)
        self._record_update(alert_id, alert, run_id, now)
        return alert_id

    def update_alert(self, alert_id: int, alert: Alert, run_id: int) -> None:
        """Store an episode's new figures (and what this run added, as an update row)."""
        now = utcnow()
        self.conn.execute(
            "UPDATE alerts SET messages = ?, people = ?, days = ?, domains = ?, categories = ?, "
            "first_day = ?, last_day = ?, ended = ?, updated_at = ? WHERE id = ?",
            (
                alert.messages, alert.people, alert.days, json.dumps(alert.domains),
                json.dumps(alert.categories), alert.first_day, alert.last_day,
                int(alert.ended), now, alert_id,
            ),
        )  # fmt: skip
        self._record_update(alert_id, alert, run_id, now)

    def merge_alert(self, alert_id: int, into: int, run_id: int) -> None:
        """Fold an alert into another that covers the same episode (late data joined two
        episodes): it is kept, with its triage and cases, but no longer listed or counted."""
        self.conn.execute(
            "UPDATE alerts SET merged_into = ?, ended = 1, updated_at = ? WHERE id = ?",
            (into, utcnow(), alert_id),
        )

    def _record_update(self, alert_id: int, alert: Alert, run_id: int, at: str) -> None:
        self.conn.execute(
            "INSERT INTO alert_updates (alert_id, run_id, at, messages, people, days, domains, "
            "categories, first_day, last_day, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert_id, run_id, at, alert.messages, alert.people, alert.days,
                json.dumps(alert.domains), json.dumps(alert.categories), alert.first_day,
                alert.last_day, int(alert.ended),
            ),
        )  # fmt: skip

    def alert_history(self, alert_id: int) -> list[dict[str, Any]]:
        """Every update of an alert's episode, oldest first (what each run saw)."""
        rows = self.conn.execute(
            "SELECT id, run_id, at, messages, people, days, domains, categories, first_day, "
            "last_day, ended FROM alert_updates WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        ).fetchall()
        return [
            {
                "seq": r[0], "run": r[1], "at": r[2], "messages": r[3], "people": r[4],
                "days": r[5], "domains": json.loads(r[6]), "categories": json.loads(r[7]),
                "first_day": r[8], "last_day": r[9], "ended": bool(r[10]),
            }
            for r in rows
        ]  # fmt: skip

    def update_seq(self) -> int:
        """The latest update of any alert (a report records what it has shown)."""
        row = self.conn.execute("SELECT coalesce(max(id), 0) FROM alert_updates").fetchone()
        return int(row[0])

    def latest_run(self) -> int:
        """The id of the latest scheduled run (0 before the first)."""
        row = self.conn.execute(
            "SELECT coalesce(max(id), 0) FROM runs WHERE kind = 'run'"
        ).fetchone()
        return int(row[0])

    def record_report(self, audience: str, first_day: str, last_day: str, seq: int) -> None:
        """Remember that a report showed every alert update up to ``seq``."""
        self.conn.execute(
            "INSERT INTO reports (audience, first_day, last_day, at, run_id, update_seq) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (audience, first_day, last_day, utcnow(), self.latest_run(), seq),
        )

    def report_baseline(self, audience: str) -> int:
        """What the previous report showed: the updates seen by the last report written
        before the latest run (so a run's report, and anything read after it, compare
        with the report before that run)."""
        row = self.conn.execute(
            "SELECT coalesce(max(update_seq), 0) FROM reports WHERE audience = ? AND run_id < ?",
            (audience, self.latest_run()),
        ).fetchone()
        return int(row[0])

    def figures_at(self, seq: int) -> dict[int, dict[str, Any]]:
        """Each alert's figures as of update ``seq`` (alerts created later are absent)."""
        rows = self.conn.execute(
            "SELECT u.alert_id, u.messages, u.people, u.days, u.domains, u.ended FROM "
            "alert_updates u JOIN (SELECT alert_id, max(id) AS id FROM alert_updates "
            "WHERE id <= ? GROUP BY alert_id) last ON last.id = u.id",
            (seq,),
        ).fetchall()
        return {
            int(r[0]): {
                "messages": r[1], "people": r[2], "days": r[3],
                "domains": len(json.loads(r[4])), "ended": bool(r[5]),
            }
            for r in rows
        }  # fmt: skip

    def changed_since(self, seq: int) -> set[int]:
        """Alerts with an update after ``seq``."""
        return {
            int(r[0])
            for r in self.conn.execute(
                "SELECT DISTINCT alert_id FROM alert_updates WHERE id > ?", (seq,)
            )
        }

    def alerts_between(self, first: str, last: str, also: set[int] | None = None) -> list[Alert]:
        """Alerts whose episode overlaps [first, last], and those with ids in ``also``."""
        extra = ",".join(str(int(i)) for i in sorted(also or ()))
        where = "(first_day <= ? AND last_day >= ?)" + (f" OR id IN ({extra})" if extra else "")
        return self._alerts(where, (last, first))

    # --- triage --------------------------------------------------------------
    def find_alerts(
        self,
        ids: list[int] | None = None,
        policy: str | None = None,
        rule_id: str | None = None,
        states: list[str] | None = None,
        severity: str | None = None,
        since: str | None = None,
        assignee: str | None = None,
    ) -> list[Alert]:
        """Stored alerts matching every filter given (``since``: raised on or after)."""
        where: list[str] = ["true"]
        params: list[Any] = []
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})" if ids else "false")
            params.extend(int(i) for i in ids)
        for column, value in (
            ("policy", policy),
            ("rule_id", rule_id),
            ("severity", severity),
            ("assignee", assignee),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if since is not None:
            where.append("raised_day >= ?")
            params.append(since)
        return self._alerts(" AND ".join(where), tuple(params))

    def record_triage(
        self,
        alert_id: int,
        actor: str,
        from_state: str,
        to_state: str,
        reason: str | None = None,
        note: str | None = None,
        assignee: str | None = None,
    ) -> None:
        """One triage step: the alert's new state (and assignee, dismissal reason, time of
        decision) and a row in ``triage``. Call inside a transaction."""
        now = utcnow()
        self.conn.execute(
            "INSERT INTO triage (alert_id, at, actor, from_state, to_state, reason, note, "
            "assignee) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (alert_id, now, actor, from_state, to_state, reason, note, assignee),
        )
        self.conn.execute(
            "UPDATE alerts SET state = ?, assignee = coalesce(?, assignee), "
            "dismiss_reason = CASE WHEN ? = 'dismissed' THEN ? ELSE dismiss_reason END, "
            "decided_at = CASE WHEN ? IN ('confirmed', 'dismissed') AND decided_at IS NULL "
            "THEN ? ELSE decided_at END WHERE id = ?",
            (to_state, assignee, to_state, reason, to_state, now, alert_id),
        )

    def triage_history(self, alert_id: int) -> list[dict[str, Any]]:
        """Every triage step of an alert, oldest first."""
        rows = self.conn.execute(
            "SELECT at, actor, from_state, to_state, reason, note, assignee FROM triage "
            "WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        ).fetchall()
        keys = ("at", "actor", "from_state", "to_state", "reason", "note", "assignee")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def triage_facts(self) -> list[dict[str, Any]]:
        """Per non-draft alert: policy, rule, raised day, state, dismissal reason, and when it
        was stored and decided (for effectiveness figures)."""
        rows = self.conn.execute(
            "SELECT policy, rule_id, raised_day, state, dismiss_reason, created_at, decided_at "
            "FROM alerts WHERE draft = 0 AND merged_into IS NULL ORDER BY raised_day, id"
        ).fetchall()
        keys = ("policy", "rule_id", "raised_day", "state", "reason", "created_at", "decided_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def totals_between(self, first: str, last: str) -> pd.DataFrame:
        """Daily totals in [first, last]."""
        return pd.read_sql_query(
            "SELECT day, org_unit, direction, messages FROM daily_totals WHERE day BETWEEN ? AND ?",
            self.conn,
            params=(first, last),
        )

    def quality_since(self, started_after: str) -> dict[str, Any]:
        """Rows read, repeats, rejected rows by reason and sources, over the units committed
        by runs started after a time: whatever the store kept counts, including the units a
        run committed before it was killed or failed."""
        units = self.conn.execute(
            "SELECT count(DISTINCT run_id), coalesce(sum(rows), 0), coalesce(sum(duplicates), 0) "
            "FROM ingested_units JOIN runs ON runs.id = run_id WHERE started_at >= ?",
            (started_after,),
        ).fetchone()
        rejected = dict(
            self.conn.execute(
                "SELECT reason, sum(count) FROM rejected_rows JOIN runs ON runs.id = run_id "
                "WHERE started_at >= ? GROUP BY reason ORDER BY reason",
                (started_after,),
            ).fetchall()
        )
        sources = self.conn.execute(
            "SELECT source, format, count(*), sum(rows) FROM ingested_units "
            "JOIN runs ON runs.id = run_id WHERE started_at >= ? GROUP BY source, format",
            (started_after,),
        ).fetchall()
        return {
            "runs": units[0],
            "rows_read": units[1],
            "duplicates": units[2],
            "rejected": rejected,
            "sources": [
                {"source": s, "format": f, "units": n, "rows": r} for s, f, n, r in sources
            ],
        }

    # --- retention -----------------------------------------------------------
    def purge(
        self, events_before: str, alerts_before: str, cases_closed_before: str
    ) -> dict[str, int]:
        """Delete minimised events, alerts and closed cases past their retention.

        Alerts with a case still kept are kept with it. Call inside a transaction.
        """
        conn = self.conn
        counts = {
            # an open person episode keeps its evidence until it ends, so that its figures
            # stay complete and keep growing (an episode ends after its quiet period)
            "events": conn.execute(
                "DELETE FROM events WHERE day < ? AND person NOT IN (SELECT person FROM "
                "alerts WHERE ended = 0 AND person IS NOT NULL AND merged_into IS NULL)",
                (events_before,),
            ).rowcount,
            "daily_totals": conn.execute(
                "DELETE FROM daily_totals WHERE day < ?", (events_before,)
            ).rowcount,
        }
        old_cases = "SELECT id FROM cases WHERE state = 'closed' AND closed_at < ?"
        conn.execute(
            f"DELETE FROM case_approvals WHERE case_id IN ({old_cases})",  # noqa: S608
            (cases_closed_before,),
        )
        counts["cases"] = conn.execute(
            "DELETE FROM cases WHERE state = 'closed' AND closed_at < ?", (cases_closed_before,)
        ).rowcount
        old_alerts = (
            "SELECT id FROM alerts WHERE last_day < ? AND ended = 1 "
            "AND id NOT IN (SELECT alert_id FROM cases)"
        )
        for table in ("alert_updates", "triage"):
            conn.execute(
                f"DELETE FROM {table} WHERE alert_id IN ({old_alerts})",  # noqa: S608 (fixed)
                (alerts_before,),
            )
        counts["alerts"] = conn.execute(
            f"DELETE FROM alerts WHERE id IN ({old_alerts})",  # noqa: S608 (fixed)
            (alerts_before,),
        ).rowcount
        return counts
