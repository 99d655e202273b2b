"""Deleting what is past its retention period."""

from __future__ import annotations

from compliance.store.database import Repository


class Retention(Repository):
    """Purges by age, keeping what an open episode or a kept case still needs."""

    def purge(
        self, events_before: str, alerts_before: str, cases_closed_before: str
    ) -> dict[str, int]:
        """Delete minimised events, alerts and closed cases past their retention.

        Alerts with a case still kept are kept with it. Call inside a transaction.
        """
        conn = self.conn
        counts = {
            # an open person episode keeps its evidence until it ends, so that its figures
            # stay complete and keep growing (an episode ends after its quiet period)
            "events": conn.execute(
                "DELETE FROM events WHERE day < ? AND person NOT IN (SELECT person FROM "
                "alerts WHERE ended = 0 AND person IS NOT NULL AND merged_into IS NULL)",
                (events_before,),
            ).rowcount,
            "daily_totals": conn.execute(
                "DELETE FROM daily_totals WHERE day < ?", (events_before,)
            ).rowcount,
        }
        old_cases = "SELECT id FROM cases WHERE state = 'closed' AND closed_at < ?"
        conn.execute(
            f"DELETE FROM case_approvals WHERE case_id IN ({old_cases})",  # noqa: S608
            (cases_closed_before,),
        )
        counts["cases"] = conn.execute(
            "DELETE FROM cases WHERE state = 'closed' AND closed_at < ?", (cases_closed_before,)
        ).rowcount
        old_alerts = (
            "SELECT id FROM alerts WHERE last_day < ? AND ended = 1 "
            "AND id NOT IN (SELECT alert_id FROM cases)"
        )
        for table in ("alert_updates", "triage", "notices"):
            conn.execute(
                f"DELETE FROM {table} WHERE alert_id IN ({old_alerts})",  # noqa: S608 (fixed)
                (alerts_before,),
            )
        counts["outbox"] = conn.execute(
            "DELETE FROM outbox WHERE state IN ('sent', 'dropped') AND updated_at < ?",
            (alerts_before,),
        ).rowcount
        counts["alerts"] = conn.execute(
            f"DELETE FROM alerts WHERE id IN ({old_alerts})",  # noqa: S608 (fixed)
            (alerts_before,),
        ).rowcount
        return counts
