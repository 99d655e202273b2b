"""One SQLite database file in WAL mode: opening, transactions, migrations; and the base of
the repositories that hold all of the store's SQL."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn, Self

from compliance.errors import StorageError, StoreError
from compliance.store.files import STORE_SETTING, is_write_fault, storage_reason
from compliance.store.schema import MIGRATIONS, schema_statements

log = logging.getLogger(__name__)


def utcnow() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class Database:
    """One SQLite database file in WAL mode."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        #: Called, in order, at the end of the open transaction, before its commit (what
        #: a repository held back to write once); then forgotten.
        self._before_commit: list[Callable[[], None]] = []
        #: Called when the open transaction rolls back (what a repository holds in memory
        #: of its writes is void); then forgotten.
        self._on_rollback: list[Callable[[], None]] = []

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open (creating if needed) and migrate the store at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = StorageError.from_os(exc, "the store", path, STORE_SETTING)
            raise error or StoreError(f"cannot open the store {path}: {exc}") from None
        store: Self | None = None
        try:
            _create_private(path)
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

    @classmethod
    def open_read_only(cls, path: Path) -> Self:
        """Open an existing store for reading only: nothing is created, migrated or
        written, so a store on a read-only mount (a copy for an auditor, a health check)
        can be read. A store of another schema version is refused: the job must open it
        first."""
        store: Self | None = None
        try:
            try:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # no -shm can be made: read the file as it is
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
            store = cls(conn, path)
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        except sqlite3.Error as exc:
            if store is not None:
                store.close()
            raise StoreError(f"cannot read the store {path}: {exc}") from None
        if max(done, default=0) != len(MIGRATIONS):
            store.close()
            raise StoreError(
                f"{path} is at schema {max(done, default=0)}, not {len(MIGRATIONS)}: run the "
                "job once (compliance run) before reading it"
            )
        return store

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Self:
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
            while self._before_commit:
                self._before_commit.pop(0)()
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
        self._on_rollback.clear()

    def before_commit(self, hook: Callable[[], None], on_rollback: Callable[[], None]) -> None:
        """Call ``hook`` at the end of the open transaction, before it commits (inside it:
        what ``hook`` writes commits with the rest, or nothing does), and ``on_rollback``
        instead if it rolls back."""
        if not self.conn.in_transaction:
            raise RuntimeError("before_commit needs an open transaction")
        self._before_commit.append(hook)
        self._on_rollback.append(on_rollback)

    def _rollback(self) -> None:
        """Roll back what is still open (SQLite may have rolled back already, e.g. on a
        full disk); a rollback that fails too leaves the first error to tell. Whatever the
        repositories held for the commit is dropped."""
        self._before_commit.clear()
        hooks, self._on_rollback = self._on_rollback, []
        for hook in hooks:
            hook()
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
                for statement in schema_statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, utcnow())
                )

    @property
    def schema_version(self) -> int:
        """The highest migration applied."""
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)


class Repository:
    """One group of the store's tables, reached through one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        """The database's connection (the store package's own: SQL lives here only)."""
        return self.db.conn


#: A new store's permissions: its owner (the service) reads and writes, its group (the
#: people who may read it) reads, nobody else: pseudonyms with their exact units and
#: sites are no one else's business. SQLite gives its -wal and -shm files the same.
STORE_MODE = 0o640


def _create_private(path: Path) -> None:
    """Create an empty store file at ``path`` with :data:`STORE_MODE` (an empty file is a
    new SQLite database); an existing one keeps the permissions its operator gave it. A
    failure is SQLite's to report, in the store's own words, when it opens the path."""
    with suppress(OSError):  # FileExistsError: an existing store
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, STORE_MODE))
