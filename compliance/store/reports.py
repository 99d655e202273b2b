"""Which alert updates each report showed, so the next one can say what changed."""

from __future__ import annotations

from typing import Any

from compliance.store.database import Database, Repository, utcnow
from compliance.store.runs import Runs


class ReportLog(Repository):
    """One row per report written."""

    def __init__(self, db: Database, runs: Runs) -> None:
        super().__init__(db)
        self.runs = runs

    def record(
        self, audience: str, first_day: str, last_day: str, seq: int, schedule: str = "report"
    ) -> None:
        """Remember that a report of ``schedule`` showed every alert update up to ``seq``."""
        self.conn.execute(
            "INSERT INTO reports (audience, first_day, last_day, at, run_id, update_seq, "
            "schedule) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (audience, first_day, last_day, utcnow(), self.runs.latest(), seq, schedule),
        )

    def baseline(self, audience: str, schedule: str = "report") -> int:
        """What the previous report showed. For the report every run writes: the updates
        seen by the last report written before the latest run (so a run's report, and
        anything read after it, compare with the report before that run). For a named
        schedule: those seen by its own previous report, whenever it was written."""
        if schedule == "report":
            row = self.conn.execute(
                "SELECT coalesce(max(update_seq), 0) FROM reports WHERE audience = ? "
                "AND schedule = 'report' AND run_id < ?",
                (audience, self.runs.latest()),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT coalesce(max(update_seq), 0) FROM reports WHERE schedule = ?",
                (schedule,),
            ).fetchone()
        return int(row[0])

    def last_day(self, schedule: str) -> str | None:
        """The last day covered by the latest report of ``schedule``, or None."""
        row = self.conn.execute(
            "SELECT max(last_day) FROM reports WHERE schedule = ?", (schedule,)
        ).fetchone()
        return None if row[0] is None else str(row[0])

    def last(self, schedule: str, audience: str) -> dict[str, Any] | None:
        """The latest report of ``schedule`` (``report``: the one every run writes) for
        ``audience``: first and last day, when, by which run; None before the first. Team
        reports are in ``reports``; a broad one is a release of the privacy ledger
        (``dp_releases``, named ``broad`` for the run's report), which names no run."""
        if audience == "broad":
            row = self.conn.execute(
                "SELECT period, at FROM dp_releases WHERE report = ? ORDER BY id DESC LIMIT 1",
                ("broad" if schedule == "report" else schedule,),
            ).fetchone()
            if row is None:
                return None
            first, _, last = str(row[0]).partition("..")
            return {"first_day": first, "last_day": last, "at": row[1], "run_id": None}
        row = self.conn.execute(
            "SELECT first_day, last_day, at, run_id FROM reports WHERE schedule = ? "
            "ORDER BY id DESC LIMIT 1",
            (schedule,),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("first_day", "last_day", "at", "run_id"), row, strict=True))
