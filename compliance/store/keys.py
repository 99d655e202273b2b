"""Key fingerprints: the store is bound to one pseudonymisation key per key epoch."""

from __future__ import annotations

from compliance.errors import KeyMissingError
from compliance.store.auditlog import AuditLog
from compliance.store.database import Database, Repository, utcnow


class Keys(Repository):
    """Which key wrote the store and each key epoch (fingerprints, never keys)."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        super().__init__(db)
        self.audit = audit

    def bind(self, key_id: str) -> None:
        """Bind the store to one key on first use; refuse any other key afterwards."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
        if row is None:
            with self.db.transaction() as conn:
                conn.execute("INSERT INTO meta VALUES ('key_id', ?)", (key_id,))
        elif row[0] != key_id:
            raise KeyMissingError(
                f"the pseudonymisation key does not fit the store {self.db.path}: it was written "
                "with another key, and mixing keys would split each person in two"
            )

    def check_epoch(self, epoch: str, epoch_key_id: str, actor: str) -> None:
        """Record a key epoch on first use (logged); refuse a key that does not fit it."""
        row = self.conn.execute(
            "SELECT key_id FROM key_epochs WHERE epoch = ?", (epoch,)
        ).fetchone()
        if row is None:
            with self.db.writing() as conn:
                conn.execute(
                    "INSERT INTO key_epochs VALUES (?, ?, ?)", (epoch, epoch_key_id, utcnow())
                )
                self.audit.append(actor, "key.epoch", {"epoch": epoch, "key_id": epoch_key_id})
        elif row[0] != epoch_key_id:
            raise KeyMissingError(
                f"the pseudonymisation key does not fit key epoch {epoch} of the store "
                f"{self.db.path}: its pseudonyms were made with another key"
            )

    def epochs(self) -> list[tuple[str, str, str]]:
        """(epoch, key fingerprint, first used) of every key epoch seen."""
        return [
            (str(a), str(b), str(c))
            for a, b, c in self.conn.execute("SELECT * FROM key_epochs ORDER BY first_used")
        ]
