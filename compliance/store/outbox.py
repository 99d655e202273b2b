"""The outbox: every delivery of a report, recorded before it is sent and after.

A row is ``pending`` until its channel is tried, ``sending`` while it is (a row found
``sending`` by a later run was interrupted mid-send: it is sent again, with the same
message id), then ``sent``, or back to ``pending`` with a later ``next_attempt`` after a
failure worth retrying, or ``failed`` after one that is not; an operator may ``drop``
it. Rows hold the report's file names, never their content or any recipient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from compliance.store.database import Repository, utcnow

STATES = ("pending", "sending", "sent", "failed", "dropped")


@dataclass(frozen=True)
class OutboxItem:
    """One delivery of one report over one channel."""

    id: int
    key: str
    report: str
    audience: str
    first_day: str
    last_day: str
    channel: str
    files: list[str]
    state: str
    attempts: int
    next_attempt: str
    last_error: str | None
    receipt: str | None
    updated_at: str


_COLUMNS = (
    "id, key, report, audience, first_day, last_day, channel, files, state, attempts, "
    "next_attempt, last_error, receipt, updated_at"
)


def _item(row: tuple[object, ...]) -> OutboxItem:
    values = list(row)
    values[7] = json.loads(str(values[7]))
    return OutboxItem(*values)  # type: ignore[arg-type]


class Outbox(Repository):
    """``outbox``: deliveries waiting, in flight, sent, failed or dropped."""

    def has(self, key: str) -> bool:
        """Whether a delivery with this key was ever recorded."""
        row = self.conn.execute("SELECT 1 FROM outbox WHERE key = ?", (key,)).fetchone()
        return row is not None

    def enqueue(
        self,
        key: str,
        report: str,
        audience: str,
        period: tuple[str, str],
        channel: str,
        files: list[str],
        run_id: int | None,
    ) -> bool:
        """Record a delivery to make, once per key; True when it is new. A delivery of the
        same report and period over the same channel still waiting under another key (its
        recipients changed) is superseded: it is dropped, and this one goes instead."""
        now = utcnow()
        with self.db.writing() as conn:
            if self.has(key):
                return False
            conn.execute(
                "UPDATE outbox SET state = 'dropped', updated_at = ?, last_error = "
                "'superseded: the channel now sends to other recipients' WHERE report = ? "
                "AND audience = ? AND first_day = ? AND last_day = ? AND channel = ? "
                "AND state IN ('pending', 'failed')",
                (now, report, audience, *period, channel),
            )
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (key, report, audience, first_day, last_day, "
                "channel, files, next_attempt, created_at, updated_at, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, report, audience, *period, channel, json.dumps(files), now, now, now, run_id),
            )
            return cur.rowcount > 0

    def due(self, now: str) -> list[OutboxItem]:
        """Deliveries to try now: pending and due, or interrupted mid-send, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE (state = 'pending' AND next_attempt <= ?) "  # noqa: S608
            "OR state = 'sending' ORDER BY id",
            (now,),
        ).fetchall()
        return [_item(r) for r in rows]

    def all(self, states: tuple[str, ...] = ()) -> list[OutboxItem]:
        """Every delivery recorded (in these states, if given), newest first."""
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY id DESC",  # noqa: S608
            states,
        ).fetchall()
        return [_item(r) for r in rows]

    def get(self, item_id: int) -> OutboxItem | None:
        """One delivery, or None."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE id = ?",  # noqa: S608
            (item_id,),
        ).fetchone()
        return None if row is None else _item(row)

    def _set(self, item_id: int, assignments: str, *values: object) -> None:
        with self.db.writing() as conn:
            conn.execute(
                f"UPDATE outbox SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                (*values, utcnow(), item_id),
            )

    def sending(self, item_id: int) -> None:
        """About to send (committed first: a crash from here on is seen next run)."""
        self._set(item_id, "state = 'sending', attempts = attempts + 1")

    def sent(self, item_id: int, receipt: str, sha256: str) -> None:
        """Sent: the channel's receipt and the hash of what was sent."""
        self._set(
            item_id, "state = 'sent', receipt = ?, sha256 = ?, last_error = NULL", receipt, sha256
        )

    def retry_at(self, item_id: int, when: str, error: str) -> None:
        """Failed in a way worth retrying: try again from ``when``."""
        self._set(item_id, "state = 'pending', next_attempt = ?, last_error = ?", when, error)

    def failed(self, item_id: int, error: str) -> None:
        """Failed in a way retrying cannot fix (until an operator retries it)."""
        self._set(item_id, "state = 'failed', last_error = ?", error)

    def retry(self, item_id: int) -> None:
        """An operator asks for another attempt now."""
        self._set(item_id, "state = 'pending', next_attempt = ?", utcnow())

    def drop(self, item_id: int) -> None:
        """An operator gives a delivery up."""
        self._set(item_id, "state = 'dropped'")

    def oldest_waiting(self) -> str | None:
        """When the oldest delivery still waiting (``pending``, or ``sending`` when a send
        was interrupted) was recorded, or None."""
        row = self.conn.execute(
            "SELECT min(created_at) FROM outbox WHERE state IN ('pending', 'sending')"
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])
