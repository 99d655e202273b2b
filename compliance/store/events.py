"""Reading the minimised events and daily totals back (evaluation and reports)."""

from __future__ import annotations

import pandas as pd

from compliance.events import MINIMISED
from compliance.store.database import Repository


class Events(Repository):
    """Matched minimised events and daily totals."""

    def since(self, day: str) -> pd.DataFrame:
        """Matched minimised events on or after ``day``."""
        frame = pd.read_sql_query(
            "SELECT event_key, ts AS timestamp, day, source, person, org_unit, direction, "
            "domain, reg_domain, categories, feeds, status, size, epoch FROM events WHERE day >= ?",
            self.conn,
            params=(day,),
        )
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame.astype(MINIMISED)

    def totals_between(self, first: str, last: str) -> pd.DataFrame:
        """Daily totals in [first, last]."""
        return pd.read_sql_query(
            "SELECT day, org_unit, direction, messages FROM daily_totals WHERE day BETWEEN ? AND ?",
            self.conn,
            params=(first, last),
        )

    def pairs_before(self, people: list[str], day: str) -> set[tuple[str, str]]:
        """(pseudonym, registrable domain) of every event of ``people`` before ``day``:
        contacts a scheduled evaluation did not load (the verification pattern's first
        message must be the first one kept)."""
        found: set[tuple[str, str]] = set()
        wanted = sorted(set(people))
        for start in range(0, len(wanted), 500):  # within SQLite's variable limit
            part = wanted[start : start + 500]
            found.update(
                (str(p), str(d))
                for p, d in self.conn.execute(
                    "SELECT DISTINCT person, reg_domain FROM events "  # noqa: S608 (placeholders)
                    f"WHERE day < ? AND person IN ({','.join('?' * len(part))})",
                    (day, *part),
                )
            )
        return found

    def people_since(self, day: str) -> frozenset[str]:
        """Pseudonyms with an outbound matched event on or after ``day``: the people whose
        internal mail ring rules keep (their evidence is what they sent)."""
        return frozenset(
            str(r[0])
            for r in self.conn.execute(
                "SELECT DISTINCT person FROM events WHERE day >= ? AND direction = 'outbound'",
                (day,),
            )
        )
