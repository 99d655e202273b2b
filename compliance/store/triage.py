"""Triage steps of alerts, and the facts effectiveness figures are computed from."""

from __future__ import annotations

from typing import Any

from compliance.store.database import Repository, utcnow


class TriageLog(Repository):
    """One row per triage step; the alert's state follows it."""

    def record(
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

    def history(self, alert_id: int) -> list[dict[str, Any]]:
        """Every triage step of an alert, oldest first."""
        rows = self.conn.execute(
            "SELECT at, actor, from_state, to_state, reason, note, assignee FROM triage "
            "WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        ).fetchall()
        keys = ("at", "actor", "from_state", "to_state", "reason", "note", "assignee")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def facts(self) -> list[dict[str, Any]]:
        """Per non-draft alert: policy, rule, raised day, state, dismissal reason, and when it
        was stored and decided (for effectiveness figures)."""
        rows = self.conn.execute(
            "SELECT policy, rule_id, raised_day, state, dismiss_reason, created_at, decided_at "
            "FROM alerts WHERE draft = 0 AND merged_into IS NULL ORDER BY raised_day, id"
        ).fetchall()
        keys = ("policy", "rule_id", "raised_day", "state", "reason", "created_at", "decided_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]
