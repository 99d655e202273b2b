"""Retro-hunt (opt-in, ``retro_hunt_days``): external messages not matched when read, kept
for N days with the registrable domain only as a keyed digest, so that a domain a feed
lists later is found in that earlier traffic.

One row per (message, internal person), with the event key the message's event would
have (so that a message is never counted twice: events are keyed by it); no domain, host
or address, only ``domain_digest``. Internal mail is never written here. Call the writing
methods inside a transaction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compliance.store.database import Database, Repository
from compliance.store.ingest import NON_FINAL_STATUSES
from compliance.store.seen import SeenKeys

#: The columns of ``retro_contacts``, in order.
COLUMNS: tuple[str, ...] = (
    "event_key",
    "hour",
    "day",
    "source",
    "person",
    "org_unit",
    "direction",
    "status",
    "epoch",
    "domain_digest",
)
#: Where the index the store was last hunted with is remembered (in ``meta``).
_HUNTED = "retro_hunt_index"


#: Statuses a later read may replace, as SQL literals (fixed: the partial index on
#: ``event_key`` names the same ones, and SQLite uses it only for literal terms).
_PENDING = "(" + ", ".join(f"'{s}'" for s in NON_FINAL_STATUSES) + ")"


class Retro(Repository):
    """The ``retro_contacts`` table."""

    def __init__(self, db: Database, seen: SeenKeys) -> None:
        super().__init__(db)
        self.seen = seen

    def add(self, contacts: pd.DataFrame) -> int:
        """Keep unmatched external contacts (:data:`COLUMNS`); return how many were new.

        Call before :meth:`~compliance.store.ingest.Ingest.add_totals` counts the same
        messages: a message counted before (its key seen on its day, a re-read) is not
        kept again, but its final status replaces one that was not final yet (deferred,
        unknown), as it does for stored events.
        """
        if contacts.empty:
            return 0
        frame = contacts.drop_duplicates("event_key")
        conn = self.conn
        final = frame["status"].notna() & ~frame["status"].isin(NON_FINAL_STATUSES)
        pending = conn.execute(
            f"SELECT 1 FROM retro_contacts WHERE status IN {_PENDING} LIMIT 1"  # noqa: S608
        ).fetchone()
        if pending is not None and final.any():  # a re-read's final status replaces one
            conn.executemany(
                f"UPDATE retro_contacts SET status = ? WHERE status IN {_PENDING} "  # noqa: S608
                "AND event_key = ?",
                zip(
                    frame["status"][final].tolist(),
                    frame["event_key"][final].tolist(),
                    strict=True,
                ),
            )
        known = self.seen.seen(frame["day"], frame["event_key"].to_numpy(dtype=np.int64))
        kept = frame[~known]
        if kept.empty:
            return 0
        conn.executemany(
            f"INSERT INTO retro_contacts ({', '.join(COLUMNS)}) "  # noqa: S608 (fixed names)
            f"VALUES ({', '.join('?' * len(COLUMNS))})",
            zip(*(kept[c].to_numpy(dtype=object).tolist() for c in COLUMNS), strict=True),
        )
        return len(kept)

    def has_since(self, day: str) -> bool:
        """Whether any contact on or after ``day`` is kept."""
        row = self.conn.execute(
            "SELECT 1 FROM retro_contacts WHERE day >= ? LIMIT 1", (day,)
        ).fetchone()
        return row is not None

    def digests_since(self, day: str) -> np.ndarray:
        """The distinct domain digests of the contacts on or after ``day`` (sorted int64)."""
        rows = self.conn.execute(
            "SELECT domain_digest FROM retro_contacts WHERE day >= ?", (day,)
        ).fetchall()
        return np.unique(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def _wanted(self, values: np.ndarray) -> None:
        """Fill the temporary table ``retro_wanted`` with ``values`` (int64)."""
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS retro_wanted (value INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM retro_wanted")
        conn.executemany(
            "INSERT OR IGNORE INTO retro_wanted VALUES (?)",
            ((v,) for v in np.asarray(values, dtype=np.int64).tolist()),
        )

    def take(self, digests: np.ndarray, since: str) -> pd.DataFrame:
        """The contacts on or after ``since`` whose domain digest is one of ``digests``:
        their row ``id`` and every column of :data:`COLUMNS` (one scan: hunts are rare)."""
        self._wanted(digests)
        frame = pd.read_sql_query(
            f"SELECT id, {', '.join(COLUMNS)} FROM retro_contacts "  # noqa: S608 (fixed names)
            "WHERE day >= ? AND domain_digest IN (SELECT value FROM retro_wanted) ORDER BY id",
            self.conn,
            params=(since,),
        )
        self.conn.execute("DELETE FROM retro_wanted")
        numbers = {"id": "int64", "event_key": "int64", "domain_digest": "int64"}
        return frame.astype({c: numbers.get(c, "string") for c in ("id", *COLUMNS)})

    def delete(self, ids: np.ndarray) -> int:
        """Forget the contacts with these row ids (found by :meth:`take`); how many."""
        if not len(ids):
            return 0
        self._wanted(ids)
        deleted = self.conn.execute(
            "DELETE FROM retro_contacts WHERE id IN (SELECT value FROM retro_wanted)"
        ).rowcount
        self.conn.execute("DELETE FROM retro_wanted")
        return int(deleted)

    def purge(self, before_day: str) -> int:
        """Forget the contacts of days before ``before_day``; how many."""
        return int(
            self.conn.execute("DELETE FROM retro_contacts WHERE day < ?", (before_day,)).rowcount
        )

    def clear(self) -> int:
        """Forget every contact (retro-hunt was turned off) and the index last hunted with;
        how many contacts."""
        self.conn.execute("DELETE FROM meta WHERE key = ?", (_HUNTED,))
        return int(self.conn.execute("DELETE FROM retro_contacts").rowcount)

    def count(self) -> int:
        """Contacts kept."""
        return int(self.conn.execute("SELECT count(*) FROM retro_contacts").fetchone()[0])

    def hunted_with(self) -> str | None:
        """The version of the match index the contacts were last hunted with."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (_HUNTED,)).fetchone()
        return None if row is None else str(row[0])

    def remember_hunt(self, version: str) -> None:
        """Remember the version of the match index the contacts were hunted with."""
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_HUNTED, version),
        )
