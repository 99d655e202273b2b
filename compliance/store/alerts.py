"""Alerts and their episodes: what each run saw (``alert_updates``), merges and lookups."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from compliance.alerts import Alert
from compliance.privacy import NO_EPOCH
from compliance.store.database import Repository, utcnow


@dataclass(frozen=True)
class AlertFilter:
    """Which stored alerts a listing or a bulk triage step means; a part left None (or
    empty) does not filter. ``since``: raised on or after that day."""

    ids: tuple[int, ...] | None = None
    policy: str | None = None
    rule_id: str | None = None
    states: tuple[str, ...] = ()
    severity: str | None = None
    since: str | None = None
    assignee: str | None = None

    def any_given(self) -> bool:
        """Whether any filter (ids aside) is given."""
        parts = (self.policy, self.rule_id, self.severity, self.since, self.assignee)
        return any(p is not None for p in parts) or bool(self.states)


def _ring_text(alert: Alert) -> str | None:
    """A ring alert's figures as stored: ``Alert.ring`` with the pseudonyms of its people
    by role (``extra["ring_people"]``), so that a case can be opened on it; None otherwise."""
    if alert.ring is None:
        return None
    return json.dumps({**alert.ring, "people": alert.extra.get("ring_people", {})}, sort_keys=True)


class Alerts(Repository):
    """Stored alerts, one per episode."""

    _ALERT_COLUMNS = (
        "id, policy, policy_version, rule, rule_id, severity, person, org_unit, messages, "
        "people, domains, categories, first_day, last_day, trigger_day, draft, window_days, "
        "days, ended, raised_day, state, episode_key, epoch, assignee, dismiss_reason, "
        "exchange_confirmed, ring"
    )

    def _select(
        self, where: str, params: tuple[Any, ...] = (), merged: bool = False
    ) -> list[Alert]:
        """Alerts matching ``where``; those merged into another episode only if ``merged``."""
        live = "" if merged else " AND merged_into IS NULL"
        rows = self.conn.execute(
            f"SELECT {self._ALERT_COLUMNS} FROM alerts WHERE ({where}){live} "  # noqa: S608
            "ORDER BY trigger_day, id",
            params,
        ).fetchall()
        out = []
        for r in rows:
            alert = Alert(
                id=r[0], policy=r[1], policy_version=r[2], rule=r[3], rule_id=r[4],
                severity=r[5], person=r[6], org_unit=r[7], messages=r[8], people=r[9],
                domains=json.loads(r[10]), categories=json.loads(r[11]), first_day=r[12],
                last_day=r[13], trigger_day=r[14], draft=bool(r[15]), window_days=r[16],
                days=r[17], ended=bool(r[18]), raised_day=r[19], state=r[20],
                extra={
                    "episode_key": r[21], "epoch": r[22], "assignee": r[23],
                    "dismiss_reason": r[24],
                },
                exchange_confirmed=bool(r[25]), ring=None if r[26] is None else json.loads(r[26]),
            )  # fmt: skip
            if alert.ring is not None:  # the pseudonyms of its people, for a case
                alert.extra["ring_people"] = alert.ring.pop("people", {})
            out.append(alert)
        return out

    def get(self, alert_id: int) -> Alert | None:
        """One stored alert."""
        found = self._select("id = ?", (alert_id,), merged=True)
        return found[0] if found else None

    def all(self) -> list[Alert]:
        """Every stored alert."""
        return self._select("true")

    def after_id(self, alert_id: int) -> list[Alert]:
        """Alerts stored after alert ``alert_id`` (by id), not merged away."""
        return self._select("id > ?", (alert_id,))

    def last_id(self) -> int:
        """The id of the latest alert stored (0 when none)."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()[0])

    def episode_reach(self, default_from: str) -> str:
        """The first day an evaluation must load so that every stored episode that is open,
        or reaches ``default_from``, is recomputed whole."""
        row = self.conn.execute(
            "SELECT min(first_day) FROM alerts WHERE (ended = 0 OR last_day >= ?) "
            "AND merged_into IS NULL",
            (default_from,),
        ).fetchone()
        return min(default_from, row[0]) if row[0] else default_from

    def episode_ends(self, before: str) -> dict[tuple[str, str, str], str]:
        """Last day of the latest episode ending before ``before``, by (policy, rule id,
        episode key): only later evidence may start the next episode."""
        return {
            (str(p), str(r), str(k)): str(d)
            for p, r, k, d in self.conn.execute(
                "SELECT policy, rule_id, episode_key, max(last_day) FROM alerts "
                "WHERE last_day < ? AND merged_into IS NULL GROUP BY policy, rule_id, episode_key",
                (before,),
            )
        }

    def episodes_since(self, day: str) -> list[Alert]:
        """Stored alerts whose episode is open or reaches ``day``."""
        return self._select("ended = 0 OR last_day >= ?", (day,))

    def raised_per_day(self, policy: str) -> dict[str, int]:
        """New alerts of a policy per day they were raised (for its daily limit)."""
        return {
            str(d): int(n)
            for d, n in self.conn.execute(
                "SELECT raised_day, count(*) FROM alerts WHERE policy = ? GROUP BY raised_day",
                (policy,),
            )
        }

    def insert(self, alert: Alert, run_id: int) -> int:
        """Store a new alert (an episode seen for the first time) with its first update."""
        epoch = NO_EPOCH
        if alert.person is not None:  # the epoch of the person's pseudonym
            epoch = alert.extra.get("epoch") or NO_EPOCH
        now = utcnow()
        cur = self.conn.execute(
            "INSERT INTO alerts (policy, policy_version, rule, rule_id, severity, person, "
            "episode_key, org_unit, messages, people, domains, categories, first_day, last_day, "
            "trigger_day, window_days, draft, created_at, run_id, epoch, days, ended, "
            "raised_day, updated_at, exchange_confirmed, ring) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.policy, alert.policy_version, alert.rule, alert.rule_id,
                alert.severity, alert.person, alert.episode_key, alert.org_unit,
                alert.messages, alert.people, json.dumps(alert.domains),
                json.dumps(alert.categories), alert.first_day, alert.last_day,
                alert.trigger_day, alert.window_days, int(alert.draft), now, run_id,
                epoch, alert.days, int(alert.ended), alert.raised_day or alert.trigger_day, now,
                int(alert.exchange_confirmed), _ring_text(alert),
            ),
        )  # fmt: skip
        alert_id = int(cur.lastrowid or 0)
        self._record_update(alert_id, alert, run_id, now)
        return alert_id

    def update(self, alert_id: int, alert: Alert, run_id: int) -> None:
        """Store an episode's new figures (and what this run added, as an update row)."""
        now = utcnow()
        self.conn.execute(
            "UPDATE alerts SET messages = ?, people = ?, days = ?, domains = ?, categories = ?, "
            "first_day = ?, last_day = ?, ended = ?, updated_at = ?, exchange_confirmed = ?, "
            "ring = ? WHERE id = ?",
            (
                alert.messages, alert.people, alert.days, json.dumps(alert.domains),
                json.dumps(alert.categories), alert.first_day, alert.last_day,
                int(alert.ended), now, int(alert.exchange_confirmed), _ring_text(alert),
                alert_id,
            ),
        )  # fmt: skip
        self._record_update(alert_id, alert, run_id, now)

    def merge(self, alert_id: int, into: int, run_id: int) -> None:
        """Fold an alert into another that covers the same episode (late data joined two
        episodes): it is kept, with its triage and cases, but no longer listed or counted."""
        self.conn.execute(
            "UPDATE alerts SET merged_into = ?, ended = 1, updated_at = ? WHERE id = ?",
            (into, utcnow(), alert_id),
        )

    def _record_update(self, alert_id: int, alert: Alert, run_id: int, at: str) -> None:
        self.conn.execute(
            "INSERT INTO alert_updates (alert_id, run_id, at, messages, people, days, domains, "
            "categories, first_day, last_day, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert_id, run_id, at, alert.messages, alert.people, alert.days,
                json.dumps(alert.domains), json.dumps(alert.categories), alert.first_day,
                alert.last_day, int(alert.ended),
            ),
        )  # fmt: skip

    def history(self, alert_id: int) -> list[dict[str, Any]]:
        """Every update of an alert's episode, oldest first (what each run saw)."""
        rows = self.conn.execute(
            "SELECT id, run_id, at, messages, people, days, domains, categories, first_day, "
            "last_day, ended FROM alert_updates WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        ).fetchall()
        return [
            {
                "seq": r[0], "run": r[1], "at": r[2], "messages": r[3], "people": r[4],
                "days": r[5], "domains": json.loads(r[6]), "categories": json.loads(r[7]),
                "first_day": r[8], "last_day": r[9], "ended": bool(r[10]),
            }
            for r in rows
        ]  # fmt: skip

    def update_seq(self) -> int:
        """The latest update of any alert (a report records what it has shown)."""
        row = self.conn.execute("SELECT coalesce(max(id), 0) FROM alert_updates").fetchone()
        return int(row[0])

    def figures_at(self, seq: int) -> dict[int, dict[str, Any]]:
        """Each alert's figures as of update ``seq`` (alerts created later are absent)."""
        rows = self.conn.execute(
            "SELECT u.alert_id, u.messages, u.people, u.days, u.domains, u.ended FROM "
            "alert_updates u JOIN (SELECT alert_id, max(id) AS id FROM alert_updates "
            "WHERE id <= ? GROUP BY alert_id) last ON last.id = u.id",
            (seq,),
        ).fetchall()
        return {
            int(r[0]): {
                "messages": r[1], "people": r[2], "days": r[3],
                "domains": len(json.loads(r[4])), "ended": bool(r[5]),
            }
            for r in rows
        }  # fmt: skip

    def changed_since(self, seq: int) -> set[int]:
        """Alerts with an update after ``seq``."""
        return {
            int(r[0])
            for r in self.conn.execute(
                "SELECT DISTINCT alert_id FROM alert_updates WHERE id > ?", (seq,)
            )
        }

    def between(self, first: str, last: str, also: set[int] | None = None) -> list[Alert]:
        """Alerts whose episode overlaps [first, last], and those with ids in ``also``."""
        extra = ",".join(str(int(i)) for i in sorted(also or ()))
        where = "(first_day <= ? AND last_day >= ?)" + (f" OR id IN ({extra})" if extra else "")
        return self._select(where, (last, first))

    def find(self, selection: AlertFilter) -> list[Alert]:
        """Stored alerts matching every part of ``selection`` that is given."""
        where: list[str] = ["true"]
        params: list[Any] = []
        ids = selection.ids
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})" if ids else "false")
            params.extend(int(i) for i in ids)
        for column, value in (
            ("policy", selection.policy),
            ("rule_id", selection.rule_id),
            ("severity", selection.severity),
            ("assignee", selection.assignee),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if selection.states:
            where.append(f"state IN ({','.join('?' * len(selection.states))})")
            params.extend(selection.states)
        if selection.since is not None:
            where.append("raised_day >= ?")
            params.append(selection.since)
        return self._select(" AND ".join(where), tuple(params))

    def pseudonym(self, alert_id: int) -> tuple[str | None, str]:
        """(pseudonym, key epoch) of an alert's person (None for a cluster alert)."""
        row = self.conn.execute(
            "SELECT person, epoch FROM alerts WHERE id = ?", (alert_id,)
        ).fetchone()
        if row is None:
            return None, ""
        return (None if row[0] is None else str(row[0])), str(row[1])
