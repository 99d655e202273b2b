"""Ingestion: read units and bookmarks, daily totals (counting each message once, by the
keys in :mod:`compliance.store.seen`), matched events and rejected-row counts. Call inside
a transaction (one per read unit)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from compliance.hashing import distinct_codes
from compliance.store.database import Database, Repository, utcnow
from compliance.store.seen import SeenKeys

#: Delivery statuses that a later read of the same message may replace (a message trace
#: says ``Pending`` or ``GettingStatus`` before the outcome is known).
NON_FINAL_STATUSES: tuple[str, ...] = ("deferred", "unknown")


def _group_counts(rows: pd.DataFrame, keep: np.ndarray) -> list[tuple[str, str, str, int]]:
    """(day, org unit, direction, messages) per distinct triple of the ``keep`` rows of
    ``rows``: each column coded once per distinct value, the codes combined into one
    integer and counted with NumPy (the columns may be categorical: their codes are
    taken as they are)."""
    coded = [pd.factorize(rows[c]) for c in ("day", "org_unit", "direction")]
    combined = np.zeros(len(rows), dtype=np.int64)
    for codes, names in coded:
        if len(codes) and codes.min() < 0:
            raise ValueError("a message without a day, org unit or direction")
        combined = combined * len(names) + codes
    size = int(np.prod([len(names) for _codes, names in coded], dtype=np.int64))
    groups, _, counts = distinct_codes(combined[keep], size)
    parts = []
    for _codes, names in reversed(coded):
        groups, part = np.divmod(groups, len(names))
        parts.append(np.asarray(names, dtype=object)[part].tolist())
    return list(zip(*reversed(parts), counts.tolist(), strict=True))


class Ingest(Repository):
    """What the job writes while it reads its sources."""

    def __init__(self, db: Database, seen: SeenKeys) -> None:
        super().__init__(db)
        self.seen = seen
        #: The open transaction's new messages per (day, org unit, direction), added to
        #: ``daily_totals`` once, at its commit: a read unit counts the same groups chunk
        #: after chunk.
        self._totals: Counter[tuple[str, str, str]] | None = None

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
        chunk's :attr:`~compliance.pipeline.ChunkResult.keyed_messages`. A message is
        known by its (day, event key) (:class:`~compliance.store.seen.SeenKeys`); the new
        ones are remembered, counted per (day, org unit, direction) in memory, and one row per
        group (not per message) is added to ``daily_totals`` when the transaction commits
        (every chunk of a read unit counted into the same rows once).
        """
        if messages.empty:
            return 0
        with self.db.writing():
            fresh = self.seen.add(messages["day"], messages["event_key"].to_numpy(dtype=np.int64))
            counted = int(np.count_nonzero(fresh))
            if counted:
                if self._totals is None:
                    self._totals = Counter()
                    self.db.before_commit(self._write_totals, self._drop_totals)
                for day, unit, direction, count in _group_counts(messages, fresh):
                    self._totals[day, unit, direction] += count
        return len(messages) - counted

    def _write_totals(self) -> None:
        totals, self._totals = self._totals or Counter(), None
        self.conn.executemany(
            "INSERT INTO daily_totals (day, org_unit, direction, messages) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (day, org_unit, direction) "
            "DO UPDATE SET messages = messages + excluded.messages",
            ((*group, count) for group, count in sorted(totals.items())),
        )

    def _drop_totals(self) -> None:
        self._totals = None

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

    def add_skipped(self, run_id: int, source: str, counts: Counter[str]) -> None:
        """Record the counts of rows read and set aside (not rejected), by reason."""
        self.conn.executemany(
            "INSERT INTO skipped_rows VALUES (?, ?, ?, ?) ON CONFLICT (run_id, source, reason) "
            "DO UPDATE SET count = count + excluded.count",
            [(run_id, source, reason, n) for reason, n in counts.items() if n],
        )

    def purge_seen(self, before_day: str) -> int:
        """Forget message keys older than ``before_day`` (no source re-delivers them);
        how many."""
        return self.seen.purge(before_day)

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
