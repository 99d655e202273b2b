"""Ingestion: read units and bookmarks, message keys seen, daily totals, matched events and
rejected-row counts. Call inside a transaction (one per read unit)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from compliance.store.database import Repository, utcnow

#: Delivery statuses that a later read of the same message may replace (a message trace
#: says ``Pending`` or ``GettingStatus`` before the outcome is known).
NON_FINAL_STATUSES: tuple[str, ...] = ("deferred", "unknown")


class Ingest(Repository):
    """What the job writes while it reads its sources."""

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

    def add_totals(self, messages: pd.DataFrame) -> int:
        """Count messages not seen before into ``daily_totals``; return how many were repeats.

        ``messages`` is one row per message (day, org_unit, direction, event_key): a
        chunk's :attr:`~compliance.pipeline.ChunkResult.keyed_messages`.
        """
        if messages.empty:
            return 0
        unique = messages.drop_duplicates("event_key")
        repeats = len(messages) - len(unique)
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
        # a status that was not final yet (deferred, unknown) takes the later value
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
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM bookmarks WHERE source = ?", (source,)).rowcount > 0

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

    def positions(self) -> dict[str, dict[str, object]]:
        """Per source that has one: its bookmark, when and by which run it was last set, and
        the latest run that committed a read unit of it (with that run's start and end).
        Read-only (for `compliance status`)."""
        out: dict[str, dict[str, object]] = {}
        for source, watermark, updated_at, run_id in self.conn.execute(
            "SELECT source, watermark, updated_at, run_id FROM bookmarks"
        ):
            out[source] = {
                "bookmark": watermark,
                "bookmark_set_at": updated_at,
                "bookmark_run": run_id,
            }
        for source, units, run_id, started, finished in self.conn.execute(
            "SELECT u.source, u.units, u.run_id, r.started_at, r.finished_at FROM "
            "(SELECT source, count(*) AS units, max(run_id) AS run_id FROM ingested_units "
            "GROUP BY source) AS u LEFT JOIN runs AS r ON r.id = u.run_id"
        ):
            out.setdefault(source, {}).update(
                {
                    "units": units,
                    "unit_run": run_id,
                    "unit_run_started": started,
                    "unit_run_finished": finished,
                }
            )
        return out
