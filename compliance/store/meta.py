"""Small facts the job keeps between runs (what was evaluated, what changed)."""

from __future__ import annotations

from compliance.store.database import Repository


class Meta(Repository):
    """Named values in ``meta``."""

    def get(self, name: str) -> str | None:
        """A value of ``meta``, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def remember(self, name: str, value: str) -> str | None:
        """Store a value in ``meta``; return the one it replaces (for change detection)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (name, value),
        )
        return None if row is None else str(row[0])

    def evaluated_through(self) -> str | None:
        """The day the latest scheduled evaluation ran as of: alerts raised later wait."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'evaluated_through'").fetchone()
        return None if row is None else str(row[0])

    def mark_pending(self, day: str) -> None:
        """Remember that events from ``day`` on have been ingested but not evaluated."""
        self.conn.execute(
            "INSERT INTO meta VALUES ('pending_from', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = min(value, excluded.value)",
            (day,),
        )

    def pending_from(self) -> str | None:
        """The earliest day ingested and not yet evaluated."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'pending_from'").fetchone()
        return None if row is None else str(row[0])

    def clear_pending(self) -> None:
        """Everything ingested has been evaluated."""
        self.conn.execute("DELETE FROM meta WHERE key = 'pending_from'")
