"""Cases: a request to reveal the person behind one alert, and its approvals."""

from __future__ import annotations

from dataclasses import dataclass

from compliance.store.database import Repository, utcnow


@dataclass(frozen=True)
class Case:
    """A case as stored (no identity in it)."""

    id: int
    alert_id: int
    opened_by: str
    opened_at: str
    reason: str
    state: str
    approvers: list[str]
    outcome: str | None = None
    person: str | None = None  # a ring case's person (pseudonym); None: the alert's


class Cases(Repository):
    """``cases`` and ``case_approvals``; the rules of who may do what live in
    :mod:`compliance.cases`. Writes join the caller's transaction."""

    def open(self, alert_id: int, actor: str, reason: str, person: str | None = None) -> int:
        """A new open case on an alert (on one ``person`` of a ring alert); its id."""
        cur = self.conn.execute(
            "INSERT INTO cases (alert_id, opened_by, opened_at, reason, person) "
            "VALUES (?, ?, ?, ?, ?)",
            (alert_id, actor, utcnow(), reason, person),
        )
        return int(cur.lastrowid or 0)

    def get(self, case_id: int) -> Case | None:
        """A case and its approvals, or None."""
        row = self.conn.execute(
            "SELECT id, alert_id, opened_by, opened_at, reason, state, outcome, person FROM cases "
            "WHERE id = ?",
            (case_id,),
        ).fetchone()
        if row is None:
            return None
        approvers = [
            str(r[0])
            for r in self.conn.execute(
                "SELECT approver FROM case_approvals WHERE case_id = ? ORDER BY at", (case_id,)
            )
        ]
        return Case(row[0], row[1], row[2], row[3], row[4], row[5], approvers, row[6], row[7])

    def epochs(self) -> list[str]:
        """Every key epoch the store has recorded."""
        return [str(r[0]) for r in self.conn.execute("SELECT epoch FROM key_epochs")]

    def ids(self) -> list[int]:
        """Every case kept, oldest first."""
        return [int(r[0]) for r in self.conn.execute("SELECT id FROM cases ORDER BY id")]

    def approve(self, case_id: int, actor: str) -> None:
        """Record one approval."""
        self.conn.execute("INSERT INTO case_approvals VALUES (?, ?, ?)", (case_id, actor, utcnow()))

    def close(self, case_id: int, actor: str, outcome: str) -> None:
        """Close a case with its outcome."""
        self.conn.execute(
            "UPDATE cases SET state = 'closed', closed_by = ?, closed_at = ?, outcome = ? "
            "WHERE id = ?",
            (actor, utcnow(), outcome, case_id),
        )
