"""Internal edges for ring rules: keyed pair digests of internal mail from people with
evidence to colleagues, with counts per day; never an address or a pseudonym pair."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compliance.store.database import Repository


class Edges(Repository):
    """The ``internal_edges`` table."""

    def add(self, edges: pd.DataFrame) -> int:
        """Count a part's internal edges (``day``, ``pair_digest``, ``event_key``: one row
        per message and recipient, :attr:`compliance.pipeline.ChunkResult.edges`) into
        ``internal_edges``, each message once: call before the part's messages are marked
        seen (:meth:`compliance.store.ingest.Ingest.add_totals`), so that a message read
        again adds nothing. Returns how many messages were counted."""
        if edges.empty:
            return 0
        unique = edges.drop_duplicates(["event_key", "pair_digest"])
        conn = self.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS part_edges "
            "(event_key INTEGER, pair_digest INTEGER, day TEXT)"
        )
        conn.execute("DELETE FROM part_edges")
        conn.executemany(
            "INSERT INTO part_edges VALUES (?, ?, ?)",
            zip(
                unique["event_key"].to_numpy(dtype=np.int64).tolist(),
                unique["pair_digest"].to_numpy(dtype=np.int64).tolist(),
                unique["day"].astype(str).tolist(),
                strict=True,
            ),
        )
        conn.execute(
            "DELETE FROM part_edges WHERE event_key IN (SELECT event_key FROM seen_messages)"
        )
        counted = int(conn.execute("SELECT count(*) FROM part_edges").fetchone()[0])
        conn.execute(
            "INSERT INTO internal_edges (day, pair_digest, messages) "
            "SELECT day, pair_digest, count(*) FROM part_edges WHERE true "
            "GROUP BY day, pair_digest "
            "ON CONFLICT (day, pair_digest) DO UPDATE SET messages = messages + excluded.messages"
        )
        conn.execute("DELETE FROM part_edges")
        return counted

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
