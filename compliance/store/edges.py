"""Internal edges for ring rules: keyed pair digests of internal mail from people with
evidence to colleagues, with counts per day; never an address or a pseudonym pair."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compliance.store.database import Database, Repository
from compliance.store.seen import SeenKeys


class Edges(Repository):
    """The ``internal_edges`` table."""

    def __init__(self, db: Database, seen: SeenKeys) -> None:
        super().__init__(db)
        self.seen = seen

    def add(self, edges: pd.DataFrame) -> int:
        """Count a part's internal edges (``day``, ``pair_digest``, ``event_key``: one row
        per message and recipient, :attr:`compliance.pipeline.ChunkResult.edges`) into
        ``internal_edges``, each message once: call before the part's messages are marked
        seen (:meth:`compliance.store.ingest.Ingest.add_totals`), so that a message read
        again adds nothing. Returns how many messages were counted."""
        if edges.empty:
            return 0
        unique = edges.drop_duplicates(["event_key", "pair_digest"])
        known = self.seen.seen(unique["day"], unique["event_key"].to_numpy(dtype=np.int64))
        kept = unique[~known]
        if kept.empty:
            return 0
        counts = kept.groupby(["day", "pair_digest"], sort=False).size()
        self.conn.executemany(
            "INSERT INTO internal_edges (day, pair_digest, messages) VALUES (?, ?, ?) "
            "ON CONFLICT (day, pair_digest) DO UPDATE SET messages = messages + excluded.messages",
            (
                (str(day), int(digest), int(n))
                for (day, digest), n in zip(counts.index, counts.to_numpy(), strict=True)
            ),
        )
        return len(kept)

    def since(self, day: str) -> pd.DataFrame:
        """The edges kept on or after ``day``: ``day``, ``pair_digest``, ``messages``."""
        frame = pd.read_sql_query(
            "SELECT day, pair_digest, messages FROM internal_edges WHERE day >= ?",
            self.conn,
            params=(day,),
        )
        return frame.astype({"day": "string", "pair_digest": "int64", "messages": "int64"})

    def purge(self, before_day: str) -> int:
        """Delete the edges before ``before_day`` (past the rings' longest window)."""
        return self.conn.execute("DELETE FROM internal_edges WHERE day < ?", (before_day,)).rowcount

    def clear(self) -> int:
        """Delete every edge (no policy has a ring rule any more)."""
        return self.conn.execute("DELETE FROM internal_edges").rowcount
