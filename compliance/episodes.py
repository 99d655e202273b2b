"""Episodes across scheduled runs: what an evaluation loads, and how what it finds joins
the alerts already stored.

A scheduled run does not re-read all history. It evaluates the evidence from
``counted_from`` on: far enough back for every window and quiet period that new data
can touch (the policies' lookback before the earliest day ingested but not evaluated),
and further back where a stored episode is still open or reaches into that period, so
that such an episode is always recomputed whole. Events up to the longest reply window
before that are loaded too, only to recognise replies. Episodes that ended before
``counted_from`` are final; their last day is the floor for the next episode of the
same subject.

Recomputed episodes then join the stored alerts: one that overlaps a stored episode of
the same policy, rule and subject updates it (its figures grow; the store keeps each
run's figures in ``alert_updates``); one that overlaps none is a new alert, raised on
its trigger day or, past the policy's ``max_alerts_per_day``, on the next day with room;
one that overlaps several (late data joined episodes) keeps the earliest, and the others
are folded into it (kept with their triage and cases, no longer listed; logged).
So the same data gives the same episodes whether it is audited at once, fed day by
day, or split by an interrupted run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from compliance.alerts import Alert
from compliance.policy.evaluate import (
    PeopleIds,
    evaluate,
    raise_order,
    schedule_raises,
)
from compliance.policy.model import Policy
from compliance.policy.rules.ring import Links
from compliance.store import Store


@dataclass
class EpisodeChanges:
    """What one evaluation did to the stored alerts."""

    new: list[Alert] = field(default_factory=list)
    updated: list[Alert] = field(default_factory=list)
    ended: list[Alert] = field(default_factory=list)
    merged: list[Alert] = field(default_factory=list)  # folded into an earlier alert
    evaluated_events: int = 0


def evaluation_days(
    store: Store, policies: list[Policy], today: dt.date, pending: str | None
) -> tuple[str, str]:
    """(first day loaded, first day counted as evidence) for a scheduled evaluation."""
    lookback = dt.timedelta(days=max((p.lookback_days for p in policies), default=30))
    start = today - lookback
    if pending is not None:  # a backfill, or a failed run's units, reach further back
        start = min(start, dt.date.fromisoformat(pending) - lookback)
    counted_from = store.alerts.episode_reach(start.isoformat())
    reply = max((p.match.reply_window for p in policies), default=0)
    loaded_from = dt.date.fromisoformat(counted_from) - dt.timedelta(days=reply)
    return loaded_from.isoformat(), counted_from


def evaluate_stored(
    store: Store,
    policies: list[Policy],
    headcounts: Mapping[str, int] | None,
    people: PeopleIds | None,
    today: dt.date,
    run_id: int,
    actor: str = "compliance",
    links: Links | None = None,
) -> EpisodeChanges:
    """Evaluate the stored evidence a run needs and join the episodes to stored alerts.

    ``links`` looks up internal mail for ring rules (None: ring rules find nothing).
    Call inside the run's transaction.
    """
    loaded_from, counted_from = evaluation_days(store, policies, today, store.meta.pending_from())
    events = store.events.since(loaded_from)
    found = evaluate(
        policies,
        events,
        headcounts,
        as_of=today.isoformat(),
        counted_from=counted_from,
        prev_end=store.alerts.episode_ends(counted_from),
        people=people,
        links=links,
    )
    first_contacts_only(store, found, loaded_from)
    changes = reconcile(store, policies, found, run_id, today.isoformat(), counted_from, actor)
    store.meta.remember("evaluated_through", today.isoformat())
    changes.evaluated_events = int((events["day"] >= counted_from).sum()) if len(events) else 0
    return changes


def first_contacts_only(store: Store, found: list[Alert], loaded_from: str) -> None:
    """Unmark ``exchange_confirmed`` where the stored history before ``loaded_from`` (not
    loaded) holds an earlier contact of the person with the domain: the message the
    evaluation saw first was not the first. One query for all marked alerts."""
    marked = [a for a in found if a.exchange_confirmed and a.person is not None]
    if not marked:
        return
    earlier = store.events.pairs_before([str(a.person) for a in marked], loaded_from)
    for alert in marked:
        pairs = [
            (d, day)
            for d, day in alert.extra.get("exchanges", [])
            if (alert.person, d) not in earlier
        ]
        alert.exchange_confirmed = bool(pairs)
        alert.extra["exchanges"] = pairs


def _overlaps(stored: Alert, found: Alert) -> bool:
    return stored.trigger_day == found.trigger_day or (
        stored.first_day <= found.last_day and found.first_day <= stored.last_day
    )


def reconcile(
    store: Store,
    policies: list[Policy],
    found: list[Alert],
    run_id: int,
    as_of: str,
    since: str,
    actor: str = "compliance",
) -> EpisodeChanges:
    """Store recomputed episodes: update the stored alert each one continues, insert the
    others as new alerts, and end stored episodes whose subject has gone quiet."""
    changes = EpisodeChanges()
    stored: dict[tuple[str, str, str], list[Alert]] = {}
    for alert in store.alerts.episodes_since(since):
        stored.setdefault((alert.policy, alert.rule_id, alert.episode_key), []).append(alert)
    used: set[int] = set()
    fresh: dict[str, list[Alert]] = {}
    for alert in sorted(found, key=raise_order):
        key = (alert.policy, alert.rule_id, alert.episode_key)
        matches = [s for s in stored.get(key, []) if s.id not in used and _overlaps(s, alert)]
        if not matches:
            fresh.setdefault(alert.policy, []).append(alert)
            continue
        match = matches[0]  # the earliest: late data may have joined several episodes
        assert match.id is not None
        used.add(match.id)
        for other in matches[1:]:
            assert other.id is not None
            used.add(other.id)
            store.alerts.merge(other.id, match.id, run_id)
            store.audit.append(
                actor, "alert.merged", {"alert": other.id, "into": match.id, "run": run_id}
            )
            changes.merged.append(other)
        if alert.messages < match.messages:  # evidence purged by retention: keep what was seen
            alert = _with_figures(match, ended=alert.ended)
        if alert.figures() != match.figures() or _marks(alert) != _marks(match):
            store.alerts.update(match.id, alert, run_id)
            _keep(alert, match)
            (changes.ended if alert.ended and not match.ended else changes.updated).append(alert)
    limits = {p.id: p.max_alerts_per_day for p in policies}
    for policy_id, new in fresh.items():
        schedule_raises(new, limits.get(policy_id), store.alerts.raised_per_day(policy_id))
        for alert in sorted(new, key=raise_order):
            alert.id = store.alerts.insert(alert, run_id)
            changes.new.append(alert)
    quiet = {
        (p.id, p.rule_id(i)): p.suppress_days(i) for p in policies for i in range(len(p.rules))
    }
    today = pd.Timestamp(as_of)
    for group in stored.values():
        for alert in group:
            if alert.id in used or alert.ended:
                continue
            days = quiet.get((alert.policy, alert.rule_id), alert.window_days)
            if (today - pd.Timestamp(alert.last_day)).days > days:
                ended = _with_figures(alert, ended=True)
                store.alerts.update(alert.id or 0, ended, run_id)
                changes.ended.append(ended)
    return changes


def _marks(alert: Alert) -> tuple[bool, Any]:
    """What an update can change besides the figures: the verification mark, the ring."""
    return alert.exchange_confirmed, alert.ring


def _with_figures(alert: Alert, ended: bool) -> Alert:
    """A copy of a stored alert with another ``ended`` flag."""
    copy = Alert(**{k: getattr(alert, k) for k in Alert.__slots__})
    copy.ended = ended
    return copy


def _keep(alert: Alert, stored: Alert) -> None:
    """What a recomputed episode keeps of its stored alert: identity, trigger, triage."""
    alert.id, alert.trigger_day, alert.raised_day = stored.id, stored.trigger_day, stored.raised_day
    alert.state = stored.state
    alert.extra = {**alert.extra, "episode_key": stored.episode_key}


_UNITS = {
    "messages": ("msg", "msgs"),
    "people": ("person", "people"),
    "days": ("day", "days"),
    "domains": ("domain", "domains"),
}


def change_since(alert: Alert, before: Mapping[str, Any] | None) -> tuple[str, dict[str, int]]:
    """What changed in ``alert`` since the figures a previous report showed (``before``,
    from :meth:`compliance.store.Store.alerts.figures_at`; None when it did not show the alert):
    ``new``, ``ended`` (its episode ended since; figures may have grown too), ``updated``
    (figures grew or shrank) or ``unchanged``, and the figures added. Sets
    ``alert.change`` and ``alert.delta`` too (as :func:`mark_changes` does for many)."""
    if before is None:
        change, delta = "new", {}
    else:
        now = {
            "messages": alert.messages,
            "people": alert.people,
            "days": alert.days,
            "domains": len(alert.domains),
        }
        delta = {k: int(v) - int(before.get(k) or 0) for k, v in now.items()}
        delta = {k: v for k, v in delta.items() if v}
        if alert.ended and not before.get("ended"):
            change = "ended"
        elif delta:
            change = "updated"
        else:
            change = "unchanged"
    alert.change, alert.delta = change, delta
    return change, delta


def describe_delta(delta: Mapping[str, int]) -> str:
    """``+3 msgs +1 day`` (empty when nothing was added)."""
    parts = []
    for key, (one, many) in _UNITS.items():
        value = delta.get(key, 0)
        if value:
            parts.append(f"{value:+d} {one if abs(value) == 1 else many}")
    return " ".join(parts)


def describe_change(change: str, delta: Mapping[str, int]) -> str:
    """``updated +3 msgs +1 day``; ``new``; ``unchanged``."""
    return f"{change} {describe_delta(delta)}".strip()


def mark_changes(alerts: list[Alert], before: Mapping[int, Mapping[str, Any]]) -> None:
    """:func:`change_since` for each alert, against the figures of a previous report by
    alert id (from :meth:`Store.alerts.figures_at`)."""
    for alert in alerts:
        change_since(alert, before.get(alert.id) if alert.id is not None else None)
