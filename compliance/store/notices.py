"""Deterrence notices: each decided once (sent or held back for the holdout); never the
recipient.

A row is recorded under its idempotency key before anything is sent. The notice arm's
row is ``pending`` until it is tried, ``sending`` while it is (a row found ``sending``
by a later run was interrupted mid-send and is sent again, with the same message id),
then ``sent`` (with the channel's receipt and the hash of the message), or back to
``pending`` with a later ``next_attempt`` after a failure worth retrying, or ``failed``.
The holdout arm's row is ``held``: nothing is ever sent for it. No row holds an address,
a name or the message's text.
"""

from __future__ import annotations

from dataclasses import dataclass

from compliance.store.database import Repository, utcnow

STATES = ("pending", "sending", "sent", "failed", "held")
ARMS = ("notice", "holdout")


@dataclass(frozen=True)
class NoticeRow:
    """One notice decided: its arm and state; the person only as a pseudonym."""

    id: int
    key: str
    policy: str
    alert_id: int
    person: str
    epoch: str
    day: str
    arm: str
    template: str
    template_sha256: str
    channel: str | None
    state: str
    attempts: int
    next_attempt: str
    sent_day: str | None
    message_sha256: str | None
    receipt: str | None
    last_error: str | None


_COLUMNS = (
    "id, key, policy, alert_id, person, epoch, day, arm, template, template_sha256, channel, "
    "state, attempts, next_attempt, sent_day, message_sha256, receipt, last_error"
)


def _row(values: tuple[object, ...]) -> NoticeRow:
    return NoticeRow(*values)  # type: ignore[arg-type]


class Notices(Repository):
    """The ``notices`` table."""

    def record(
        self,
        key: str,
        policy: str,
        alert_id: int,
        person: str,
        epoch: str,
        day: str,
        arm: str,
        template: tuple[str, str],
        channel: str | None,
        run_id: int | None,
    ) -> int | None:
        """Record one decision under ``key`` (once: None when the key is there already);
        the notice arm starts ``pending``, the holdout arm ``held``. Its id."""
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}")
        now = utcnow()
        state = "pending" if arm == "notice" else "held"
        with self.db.writing() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO notices (key, policy, alert_id, person, epoch, day, arm, "
                "template, template_sha256, channel, state, next_attempt, created_at, "
                "updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    policy,
                    alert_id,
                    person,
                    epoch,
                    day,
                    arm,
                    *template,
                    channel,
                    state,
                    now,
                    now,
                    now,
                    run_id,
                ),
            )
            return cur.lastrowid if cur.rowcount > 0 else None

    def has(self, key: str) -> bool:
        """Whether a decision with this key was ever recorded."""
        row = self.conn.execute("SELECT 1 FROM notices WHERE key = ?", (key,)).fetchone()
        return row is not None

    def last_day(self, policy: str, person: str) -> str | None:
        """The day of the latest decision (either arm) on ``person`` under ``policy``."""
        row = self.conn.execute(
            "SELECT max(day) FROM notices WHERE policy = ? AND person = ?", (policy, person)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def due(self, now: str) -> list[NoticeRow]:
        """Notices to send now: pending and due, or interrupted mid-send, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM notices WHERE (state = 'pending' AND next_attempt <= ?) "  # noqa: S608
            "OR state = 'sending' ORDER BY id",
            (now,),
        ).fetchall()
        return [_row(r) for r in rows]

    def sent_on(self, day: str) -> int:
        """Notices sent on ``day`` (the daily limit counts them)."""
        row = self.conn.execute(
            "SELECT count(*) FROM notices WHERE state = 'sent' AND sent_day = ?", (day,)
        ).fetchone()
        return int(row[0])

    def all(self, policy: str | None = None) -> list[NoticeRow]:
        """Every decision kept (of ``policy``), oldest first."""
        where, args = ("WHERE policy = ?", (policy,)) if policy else ("", ())
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM notices {where} ORDER BY id",  # noqa: S608
            args,
        ).fetchall()
        return [_row(r) for r in rows]

    def _set(self, notice_id: int, assignments: str, *values: object) -> None:
        with self.db.writing() as conn:
            conn.execute(
                f"UPDATE notices SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                (*values, utcnow(), notice_id),
            )

    def sending(self, notice_id: int) -> None:
        """About to send (committed first: a crash from here on is seen next run)."""
        self._set(notice_id, "state = 'sending', attempts = attempts + 1")

    def sent(self, notice_id: int, day: str, receipt: str, message_sha256: str) -> None:
        """Sent on ``day``: the channel's receipt and the hash of the message."""
        self._set(
            notice_id,
            "state = 'sent', sent_day = ?, receipt = ?, message_sha256 = ?, last_error = NULL",
            day,
            receipt,
            message_sha256,
        )

    def retry_at(self, notice_id: int, when: str, error: str) -> None:
        """Failed in a way worth retrying (``error`` sanitised): try again from ``when``."""
        self._set(notice_id, "state = 'pending', next_attempt = ?, last_error = ?", when, error)

    def failed(self, notice_id: int, error: str) -> None:
        """Failed in a way retrying cannot fix (``error`` sanitised)."""
        self._set(notice_id, "state = 'failed', last_error = ?", error)
