"""The audit log: an append-only, hash-chained record of every sensitive act.

Each entry carries the SHA-256 of the previous entry, and its own hash covers its
sequence number, time, actor, action, details and that previous hash. Editing,
removing or reordering any entry breaks the chain from that entry on, and
``verify`` names the first entry that no longer fits. SQLite triggers refuse
UPDATE and DELETE on the table, so that only a deliberate act (dropping the
triggers) can try to rewrite it; and the chain head can be exported, so that an
outside party can later confirm that nothing up to it was rewritten, even if the
tail were cut off.

Entries name the acting person (an operator of this tool) and the objects acted on
(run, report, case, alert ids, content hashes), never a monitored person.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compliance.store.database import Repository, utcnow

GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    """One audit-log entry."""

    seq: int
    at: str
    actor: str
    action: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain data."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def entry_hash(seq: int, at: str, actor: str, action: str, details: str, prev_hash: str) -> str:
    """The hash that chains an entry to the one before it."""
    body = json.dumps(
        [seq, at, actor, action, json.loads(details), prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verification:
    """The outcome of checking the chain."""

    entries: int
    head: str
    problem: str | None = None
    first_bad: int | None = None

    @property
    def ok(self) -> bool:
        """True when the whole chain is intact."""
        return self.problem is None


def append(
    conn: sqlite3.Connection, at: str, actor: str, action: str, details: Mapping[str, Any]
) -> Entry:
    """Append one entry (call inside the transaction that does the act)."""
    row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, str(row[1]))
    text = json.dumps(dict(details), sort_keys=True, ensure_ascii=False)
    digest = entry_hash(seq, at, actor, action, text, prev)
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, details, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, text, prev, digest),
    )
    return Entry(seq, at, actor, action, json.loads(text), prev, digest)


def entries(
    conn: sqlite3.Connection,
    action: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    case: int | None = None,
) -> list[Entry]:
    """Entries in order, filtered by action prefix, actor, time and case."""
    query = "SELECT seq, at, actor, action, details, prev_hash, hash FROM audit_log WHERE 1 = 1"
    params: list[Any] = []
    if action:
        query += " AND (action = ? OR action LIKE ?)"
        params += [action, f"{action}.%"]
    if actor:
        query += " AND actor = ?"
        params.append(actor)
    if since:
        query += " AND at >= ?"
        params.append(since)
    if case is not None:
        query += " AND json_extract(details, '$.case') = ?"
        params.append(case)
    rows = conn.execute(query + " ORDER BY seq", params).fetchall()
    return [Entry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]


def verify(conn: sqlite3.Connection, head: Mapping[str, Any] | None = None) -> Verification:
    """Check every link; name the first entry edited, removed or out of order.

    With ``head`` (an exported ``{"seq": n, "hash": h}``), also confirm that entry n
    still has hash h, which catches a rewritten chain and a cut-off tail.
    """
    rows = conn.execute(
        "SELECT seq, at, actor, action, details, prev_hash, hash FROM audit_log ORDER BY seq"
    ).fetchall()
    prev, expected_seq = GENESIS, 1
    hashes: dict[str, int] = {}
    for seq, at, actor, action, details, prev_hash, digest in rows:
        if seq != expected_seq:
            return Verification(
                len(rows),
                prev,
                f"entry {expected_seq} is missing (the sequence jumps to {seq})",
                expected_seq,
            )
        try:
            recomputed = entry_hash(seq, at, actor, action, details, prev_hash)
        except ValueError:
            recomputed = ""
        if recomputed != digest:
            moved = _original_seq(rows, prev_hash, at, actor, action, details, digest)
            why = (
                f"entry {seq} holds what was entry {moved}: entries were reordered"
                if moved is not None
                else f"entry {seq} was edited (its content no longer fits its hash)"
            )
            return Verification(len(rows), prev, why, seq)
        if prev_hash != prev:
            where = hashes.get(prev_hash)
            if where is not None:
                return Verification(
                    len(rows), prev, f"entry {seq} is out of order (it follows entry {where})", seq
                )
            return Verification(
                len(rows),
                prev,
                f"entry {seq - 1} was edited or replaced (entry {seq} no longer follows it)",
                seq - 1,
            )
        hashes[digest] = seq
        prev, expected_seq = digest, seq + 1
    if head is not None:
        seq, digest = int(head["seq"]), str(head["hash"])
        if seq >= expected_seq:
            return Verification(
                len(rows),
                prev,
                f"the exported head is entry {seq}, but the log ends at entry {expected_seq - 1} "
                "(entries were removed from the end)",
                expected_seq,
            )
        found = next(r[6] for r in rows if r[0] == seq)
        if found != digest:
            return Verification(
                len(rows), prev, f"entry {seq} differs from the exported head (rewritten)", seq
            )
    return Verification(len(rows), prev)


def _original_seq(
    rows: list[Any], prev_hash: str, at: str, actor: str, action: str, details: str, digest: str
) -> int | None:
    """The position an entry was written at, when it is intact but was moved."""
    for seq in range(1, len(rows) + 2):
        try:
            if entry_hash(seq, at, actor, action, details, prev_hash) == digest:
                return seq
        except ValueError:
            return None
    return None


def head(conn: sqlite3.Connection) -> dict[str, Any]:
    """The last entry's sequence number, time and hash (to hand to an outside party)."""
    row = conn.execute("SELECT seq, at, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return {"seq": 0, "at": None, "hash": GENESIS}
    return {"seq": int(row[0]), "at": str(row[1]), "hash": str(row[2])}


class AuditLog(Repository):
    """The store's audit log."""

    def append(self, actor: str, action: str, details: Mapping[str, Any]) -> Entry:
        """Append to the log (inside the caller's transaction, or in its own)."""
        with self.db.writing() as conn:
            return append(conn, utcnow(), actor, action, details)

    def entries(
        self,
        action: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        case: int | None = None,
    ) -> list[Entry]:
        """Entries in order, filtered by action prefix, actor, time and case."""
        return entries(self.conn, action, actor, since, case)

    def verify(self, head: Mapping[str, Any] | None = None) -> Verification:
        """Check every link (and, with ``head``, an exported head); see :func:`verify`."""
        return verify(self.conn, head)

    def head(self) -> dict[str, Any]:
        """The last entry's sequence number, time and hash."""
        return head(self.conn)
