"""Evaluating policies over minimised, matched events.

Semantics, identical for a one-year audit and for an hourly scheduled run:

* A rule *qualifies* on day D when the events in the window of ``window`` days ending
  on D (D - window, D] meet its thresholds.
* The first qualifying day raises an alert (its *trigger day*); the same subject (a
  person, or an org unit for cluster rules) raises no new alert for that rule until
  ``suppress`` days after the previous trigger. Triggers already in the store count as
  previous triggers, so re-running over the same events raises nothing new.
* An alert's figures describe its window: messages, people, distinct registrable
  domains, categories, first and last day with a matching message.
* Org units are reported rolled up to the policy's minimum group size.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from compliance.domains import DomainIndex, Label
from compliance.events import UNKNOWN_UNIT
from compliance.policy.model import ClusterRule, PersonRule, Policy
from compliance.privacy import rollup_map


@dataclass
class Alert:
    """One alert: pseudonymous, aggregated, never an address."""

    policy: str
    policy_version: int
    rule: str  # person | cluster
    rule_id: str
    severity: str
    subject: str | None
    org_unit: str
    messages: int
    people: int
    domains: list[str]
    categories: list[str]
    first_day: str
    last_day: str
    trigger_day: str
    draft: bool = False
    window_days: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def subject_key(self) -> str:
        """What suppression is keyed on: the person, or the unit (and domain) of a cluster."""
        if self.subject is not None:
            return self.subject
        return self.org_unit + ("|" + self.domains[0] if self.extra.get("same_domain") else "")

    def as_dict(self) -> dict[str, Any]:
        """The alert as plain data (JSON output, store)."""
        data = asdict(self)
        data.pop("extra")
        return data


def policy_label(policy_id: str) -> Label:
    """The label the index gives a policy's own extra domains."""
    return Label(f"policy:{policy_id}", f"policy:{policy_id}")


def add_policy_domains(index: DomainIndex, policies: list[Policy]) -> None:
    """Put each policy's extra domains into the match index under its own label."""
    for policy in policies:
        for domain in policy.match.domains:
            index.add(domain, policy_label(policy.id))


def _unit_filter(units: pd.Series, prefixes: list[str]) -> pd.Series:
    mask = pd.Series(False, index=units.index)
    for prefix in prefixes:
        mask |= (units == prefix) | units.str.startswith(prefix + "/")
    return mask


def select_events(policy: Policy, events: pd.DataFrame) -> pd.DataFrame:
    """The events a policy looks at (direction, categories or own domains, scope)."""
    if events.empty:
        return events
    m = policy.match
    mask = pd.Series(True, index=events.index)
    if m.direction != "any":
        mask &= events["direction"] == m.direction
    wanted = set(m.categories) | ({f"policy:{policy.id}"} if m.domains else set())
    cats = events["categories"].astype("string")
    hit = {c: bool(wanted & set(c.split(";"))) for c in cats.dropna().unique()}
    mask &= cats.map(hit).fillna(False).astype(bool)
    if m.exclude_domains:
        excluded = DomainIndex.from_domains(m.exclude_domains, Label("excluded", policy.id))
        doms = events["domain"].astype("string")
        out = {d: excluded.contains(d) for d in doms.dropna().unique()}
        mask &= ~doms.map(out).fillna(False).astype(bool)
    if policy.scope.org_units:
        mask &= _unit_filter(events["org_unit"], policy.scope.org_units)
    if policy.scope.exclude_org_units:
        mask &= ~_unit_filter(events["org_unit"], policy.scope.exclude_org_units)
    return events.loc[mask]


def _rolled_units(units: pd.Series, mapping: Mapping[str, str] | None) -> pd.Series:
    if mapping is None:
        return units
    return units.map(lambda u: u if u == UNKNOWN_UNIT else mapping.get(u, u))


def _days(values: pd.Series) -> np.ndarray:
    """ISO days (``YYYY-MM-DD``) as numpy days: parsed by numpy, no format guessing."""
    return np.asarray(values.astype(str).to_numpy(), dtype="datetime64[D]")


def _triggers(
    candidates: list[np.datetime64], previous: list[str], suppress: int
) -> list[np.datetime64]:
    """Trigger days among qualifying ``candidates``, given triggers already raised."""
    known = sorted(np.datetime64(p, "D") for p in previous)
    out: list[np.datetime64] = []
    last: np.datetime64 | None = None
    for day in candidates:
        i = bisect.bisect_right(known, day)
        if i and (last is None or known[i - 1] > last):
            last = known[i - 1]
        if last is not None and last == day:
            continue
        if last is None or day >= last + np.timedelta64(suppress, "D"):
            out.append(day)
            last = day
    return out


def _window(frame: pd.DataFrame, days: np.ndarray, end: np.datetime64, width: int) -> pd.DataFrame:
    start = end - np.timedelta64(width, "D")
    return frame.loc[(days > start) & (days <= end)]


def _figures(window: pd.DataFrame) -> dict[str, Any]:
    return {
        "messages": len(window),
        "people": int(window["subject"].nunique()),
        "domains": sorted(window["reg_domain"].dropna().unique().tolist()),
        "categories": sorted({c for v in window["categories"].dropna() for c in v.split(";") if c}),
        "first_day": str(window["day"].min()),
        "last_day": str(window["day"].max()),
    }


def evaluate_policy(
    policy: Policy,
    events: pd.DataFrame,
    headcounts: Mapping[str, int] | None,
    previous: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[Alert]:
    """Alerts a policy raises over ``events`` (minimised schema).

    ``headcounts`` (people per org unit) drive the roll-up; ``None`` means none.
    ``previous`` maps (rule id, subject key) to trigger days already raised.
    """
    if policy.status == "disabled":
        return []
    selected = select_events(policy, events)
    if selected.empty:
        return []
    mapping = (
        rollup_map(headcounts, policy.privacy.min_group_size) if headcounts is not None else None
    )
    selected = selected.assign(
        unit=_rolled_units(selected["org_unit"], mapping), _d=_days(selected["day"])
    )
    previous = previous or {}
    alerts: list[Alert] = []
    for index, rule in enumerate(policy.rules):
        rule_id = policy.rule_id(index)
        suppress = policy.suppress_days(index)
        keys = ["subject"] if isinstance(rule, PersonRule) else _cluster_keys(rule)
        groups = _eligible(selected, keys, rule).groupby(keys, sort=True)
        for key, group in groups:
            group = group.sort_values("day")
            days = group["_d"].to_numpy().astype("datetime64[D]")
            active = np.unique(days)
            candidates = [d for d in active if _qualifies(rule, group, days, d)]
            if not candidates:
                continue
            base = _alert_base(policy, rule, rule_id, key, group)
            for day in _triggers(candidates, previous.get((rule_id, base["_key"]), []), suppress):
                window = _window(group, days, day, rule.window)
                unit = str(window["unit"].iloc[-1])
                alerts.append(
                    Alert(
                        policy=policy.id,
                        policy_version=policy.version,
                        rule=rule.kind,
                        rule_id=rule_id,
                        severity=rule.severity,
                        subject=base["subject"],
                        org_unit=unit,
                        trigger_day=str(day),
                        draft=policy.status == "draft",
                        window_days=rule.window,
                        extra={"same_domain": isinstance(rule, ClusterRule) and rule.same_domain},
                        **_figures(window),
                    )
                )
    return alerts


def _cluster_keys(rule: ClusterRule) -> list[str]:
    return ["unit", "reg_domain"] if rule.same_domain else ["unit"]


def _eligible(frame: pd.DataFrame, keys: list[str], rule: PersonRule | ClusterRule) -> pd.DataFrame:
    """Only the groups that could meet the rule in some window.

    A window holds at most a group's whole period, so a group with fewer messages,
    days or people than the rule asks for over the whole period can never qualify;
    dropping it first changes no result and spares the per-group work for most people.
    """
    grouped = frame.groupby(keys, sort=False)
    if isinstance(rule, PersonRule):
        ok = (grouped.size() >= rule.min_messages) & (grouped["_d"].nunique() >= rule.min_days)
    else:
        ok = grouped["subject"].nunique() >= rule.min_people
    wanted = ok[ok].index
    if len(keys) == 1:
        return frame.loc[frame[keys[0]].isin(wanted)]
    return frame.loc[pd.MultiIndex.from_frame(frame[keys]).isin(wanted)]


def _alert_base(
    policy: Policy, rule: PersonRule | ClusterRule, rule_id: str, key: Any, group: pd.DataFrame
) -> dict[str, Any]:
    if isinstance(rule, PersonRule):
        subject = str(key[0] if isinstance(key, tuple) else key)
        return {"subject": subject, "_key": subject}
    parts = key if isinstance(key, tuple) else (key,)
    return {"subject": None, "_key": "|".join(str(p) for p in parts)}


def _qualifies(
    rule: PersonRule | ClusterRule,
    group: pd.DataFrame,
    days: np.ndarray,
    end: np.datetime64,
) -> bool:
    start = end - np.timedelta64(rule.window, "D")
    inside = (days > start) & (days <= end)
    if isinstance(rule, PersonRule):
        return bool(
            inside.sum() >= rule.min_messages and len(np.unique(days[inside])) >= rule.min_days
        )
    return bool(group.loc[inside, "subject"].nunique() >= rule.min_people)


def evaluate(
    policies: list[Policy],
    events: pd.DataFrame,
    headcounts: Mapping[str, int] | None,
    previous: Mapping[tuple[str, str, str], list[str]] | None = None,
) -> list[Alert]:
    """Alerts of every policy; ``previous`` keys are (policy id, rule id, subject key)."""
    alerts: list[Alert] = []
    for policy in policies:
        own = {
            (rule, key): days
            for (pid, rule, key), days in (previous or {}).items()
            if pid == policy.id
        }
        alerts.extend(evaluate_policy(policy, events, headcounts, own))
    return alerts
