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
