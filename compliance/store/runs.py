"""The runs of the job: when they started and ended, how, and what they read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from compliance.store.database import Repository, utcnow


class Runs(Repository):
    """One row per scheduled run or audit."""

    def begin(self, kind: str, policies: Mapping[str, Any], feeds: Mapping[str, Any]) -> int:
        """Record a run as started (committed at once, so a crash leaves a trace).

        Runs hold the run lock, so a run still marked as running was interrupted.
        """
        with self.db.transaction() as conn:
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

    def finish(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        stats: Mapping[str, int] | None = None,
    ) -> None:
        """Record a run's outcome and counts."""
        columns = ("rows_read", "rows_rejected", "rows_duplicate", "rows_matched", "alerts_new")
        values = [int((stats or {}).get(c, 0)) for c in columns]
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, error = ?, "  # noqa: S608 (fixed names)
                + ", ".join(f"{c} = ?" for c in columns)
                + " WHERE id = ?",
                (utcnow(), status, error, *values, run_id),
            )

    def latest(self) -> int:
        """The id of the latest scheduled run (0 before the first)."""
        row = self.conn.execute(
            "SELECT coalesce(max(id), 0) FROM runs WHERE kind = 'run'"
        ).fetchone()
        return int(row[0])

    def quality_since(self, started_after: str) -> dict[str, Any]:
        """Rows read, repeats, rejected and skipped rows by reason and sources, over the
        units committed by runs started after a time: whatever the store kept counts,
        including the units a run committed before it was killed or failed."""
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
        skipped = dict(
            self.conn.execute(
                "SELECT reason, sum(count) FROM skipped_rows JOIN runs ON runs.id = run_id "
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
            "skipped": skipped,
            "sources": [
                {"source": s, "format": f, "units": n, "rows": r} for s, f, n, r in sources
            ],
        }

    # --- read-only queries for `compliance status` -----------------------------------------

    def last(self, status: str | None = None) -> dict[str, Any] | None:
        """The latest scheduled run (with ``status``: the latest in that state), or None:
        its id, times (UTC), status and counts, never its error text."""
        where = "kind = 'run'" + (" AND status = ?" if status else "")
        row = self.conn.execute(
            "SELECT id, started_at, finished_at, status, rows_read, rows_rejected, alerts_new "  # noqa: S608 (fixed text)
            f"FROM runs WHERE {where} ORDER BY id DESC LIMIT 1",
            (status,) if status else (),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "started_at", "finished_at", "status", "rows_read", "rows_rejected")
        return {**dict(zip(keys, row[:6], strict=True)), "alerts_new": row[6]}
