"""The privacy-budget ledger of broad reports: each noisy release, kept so that it is
published once and its epsilon counted against the budget."""

from __future__ import annotations

import json
from typing import Any

from compliance.store.database import Repository, utcnow


class Ledger(Repository):
    """``dp_releases``. Call inside a transaction, so that checking the budget and spending
    it are one step."""

    def release(self, report: str, period: str) -> tuple[float, list[dict[str, Any]]] | None:
        """(epsilon, released units) of the release for ``report`` over ``period``, if made."""
        row = self.conn.execute(
            "SELECT epsilon, released FROM dp_releases WHERE report = ? AND period = ?",
            (report, period),
        ).fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def spent_since(self, since: str) -> float:
        """Epsilon spent by releases made at or after ``since`` (ISO time)."""
        row = self.conn.execute(
            "SELECT coalesce(sum(epsilon), 0) FROM dp_releases WHERE at >= ?", (since,)
        ).fetchone()
        return float(row[0])

    def record(self, report: str, period: str, epsilon: float, units: list[dict[str, Any]]) -> None:
        """Keep a new release."""
        self.conn.execute(
            "INSERT INTO dp_releases (report, period, epsilon, released, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (report, period, epsilon, json.dumps(units), utcnow()),
        )
