"""Small facts the job keeps between runs (what was evaluated, what changed)."""

from __future__ import annotations

import json

from compliance.store.database import Repository

#: The ``meta`` entry of how the store keys messages (see :meth:`Meta.event_key_cutover`).
EVENT_KEYS = "event_keys"


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

    def event_key_scheme(self) -> dict[str, object] | None:
        """How this store keys messages (``{"scheme": 2, "scheme1_through": day or
        None}``), or None before the first run that keys with scheme 2. Read-only."""
        value = self.get(EVENT_KEYS)
        if value is None:
            return None
        recorded: dict[str, object] = json.loads(value)
        return recorded

    def event_key_cutover(self) -> tuple[str | None, bool]:
        """The last UTC day whose messages are keyed with scheme 1 (None: none are), and
        whether it was recorded just now.

        Recorded once, the first time a run keying with scheme 2 opens the store: the
        latest day of ``daily_totals`` and ``seen_keys`` (every message counted has its
        day there, and the keys outlive the totals when they are kept longer), so
        that a message counted before under its scheme-1 key gets the same key again,
        and every later day, never counted before, scheme 2. A store with no message
        counted records None: scheme 2 throughout. Call inside a transaction.
        """
        recorded = self.event_key_scheme()
        if recorded is not None:
            through = recorded.get("scheme1_through")
            return (None if through is None else str(through)), False
        row = self.conn.execute(
            "SELECT max(day) FROM (SELECT max(day) AS day FROM daily_totals "
            "UNION ALL SELECT max(day) FROM seen_keys)"
        ).fetchone()
        through = None if row is None or row[0] is None else str(row[0])
        value = {"scheme": 2, "scheme1_through": through}
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?)", (EVENT_KEYS, json.dumps(value, sort_keys=True))
        )
        return through, True
