"""Which alert updates each report showed, so the next one can say what changed."""

from __future__ import annotations

from compliance.store.database import Database, Repository, utcnow
from compliance.store.runs import Runs


class ReportLog(Repository):
    """One row per report written."""

    def __init__(self, db: Database, runs: Runs) -> None:
        super().__init__(db)
        self.runs = runs

    def record(self, audience: str, first_day: str, last_day: str, seq: int) -> None:
        """Remember that a report showed every alert update up to ``seq``."""
        self.conn.execute(
            "INSERT INTO reports (audience, first_day, last_day, at, run_id, update_seq) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (audience, first_day, last_day, utcnow(), self.runs.latest(), seq),
        )

    def baseline(self, audience: str) -> int:
        """What the previous report showed: the updates seen by the last report written
        before the latest run (so a run's report, and anything read after it, compare
        with the report before that run)."""
        row = self.conn.execute(
            "SELECT coalesce(max(update_seq), 0) FROM reports WHERE audience = ? AND run_id < ?",
            (audience, self.runs.latest()),
        ).fetchone()
        return int(row[0])
