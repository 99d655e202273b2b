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


@dataclass(slots=True)
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
    return events.loc[_selected(policy, events)]


#: The columns rule evaluation reads.
_EVALUATED = ["subject", "org_unit", "day", "reg_domain", "categories", "epoch"]


def _selected(policy: Policy, events: pd.DataFrame) -> pd.Series:
    """Which events a policy looks at, as a boolean mask."""
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
    return mask


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


def evaluate_policy(
    policy: Policy,
    events: pd.DataFrame,
    headcounts: Mapping[str, int] | None,
    previous: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[Alert]:
    """Alerts a policy raises over ``events`` (minimised schema).

    ``headcounts`` (people per org unit) drive the roll-up; ``None`` means none.
    ``previous`` maps (rule id, subject key) to trigger days already raised.

    Which days qualify is computed for every group at once on integer arrays (sliding
    windows by binary search over cumulative counts); Python runs per alerting group
    only, to apply suppression and describe each alert's window.
    """
    if policy.status == "disabled" or events.empty:
        return []
    selected = events.loc[_selected(policy, events), _EVALUATED]  # only what rules read
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
        frame = _eligible(selected, keys, rule)
        if frame.empty:
            continue
        groups = _Groups(frame, keys)
        for g, candidates in groups.qualifying(rule):
            base = _alert_base(rule, groups.key(g))
            for day in _triggers(candidates, previous.get((rule_id, base["_key"]), []), suppress):
                figures = groups.figures(g, day, rule.window)
                alerts.append(
                    Alert(
                        policy=policy.id,
                        policy_version=policy.version,
                        rule=rule.kind,
                        rule_id=rule_id,
                        severity=rule.severity,
                        subject=base["subject"],
                        trigger_day=str(day),
                        draft=policy.status == "draft",
                        window_days=rule.window,
                        extra={
                            "same_domain": isinstance(rule, ClusterRule) and rule.same_domain,
                            "epoch": groups.value("epoch", groups.starts[g]),
                        },
                        **figures,
                    )
                )
    return alerts


class _Groups:
    """One rule's groups (people, or org units [and sites]) as arrays sorted by group and day."""

    def __init__(self, frame: pd.DataFrame, keys: list[str]) -> None:
        codes = frame.groupby(keys, sort=True).ngroup().to_numpy()
        days = frame["_d"].to_numpy().astype("datetime64[D]").astype(np.int64)
        self.order = np.lexsort((days, codes))  # stable: equal days keep their input order
        self.g, self.d = codes[self.order], days[self.order]
        self.frame = frame
        self.keys = keys
        self.starts = np.searchsorted(self.g, np.arange(int(self.g.max()) + 1))
        self.ends = np.append(self.starts[1:], len(self.g))
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(code per row in group order, distinct values; code -1 is missing) of a column."""
        found = self._columns.get(name)
        if found is None:
            codes, uniques = pd.factorize(self.frame[name], use_na_sentinel=True)
            values = np.asarray(uniques.astype(object), dtype=object)
            found = (codes[self.order], values)
            self._columns[name] = found
        return found

    def value(self, name: str, row: int) -> Any:
        codes, values = self.codes(name)
        return values[codes[row]] if codes[row] >= 0 else None

    def key(self, g: int) -> tuple[Any, ...]:
        row = int(self.starts[g])
        return tuple(self.value(k, row) for k in self.keys)

    def qualifying(self, rule: PersonRule | ClusterRule) -> list[tuple[int, list[np.datetime64]]]:
        """(group, days on which the rule qualifies) for every group that qualifies at all.

        Days are the group's active days; a rule qualifies on day D when the window
        (D - window, D] meets its thresholds.
        """
        width = rule.window
        base = int(self.d.min())
        span = int(self.d.max()) - base + 2 * width + 2  # keys of groups never overlap
        pair_key, counts = np.unique(self.g * span + (self.d - base + width), return_counts=True)
        group, offset = np.divmod(pair_key, span)
        start = group * span + offset - width  # the window is (day - width, day]
        first = np.searchsorted(pair_key, start, side="right")
        if isinstance(rule, PersonRule):
            total = np.concatenate([[0], np.cumsum(counts)])
            messages = total[np.arange(1, len(pair_key) + 1)] - total[first]
            active_days = np.arange(len(pair_key)) - first + 1
            ok = (messages >= rule.min_messages) & (active_days >= rule.min_days)
        else:
            people = self._people_in_windows(pair_key, span, base, width)
            ok = people >= rule.min_people
        hits = np.flatnonzero(ok)  # sorted by group, then day
        hit_group, hit_day = group[hits], offset[hits] + base - width
        cuts = np.flatnonzero(np.diff(hit_group)) + 1
        return [
            (int(g[0]), [np.datetime64(int(d), "D") for d in days])
            for g, days in zip(np.split(hit_group, cuts), np.split(hit_day, cuts), strict=True)
            if len(g)
        ]

    def _people_in_windows(
        self, pair_key: np.ndarray, span: int, base: int, width: int
    ) -> np.ndarray:
        """Distinct subjects in the window ending on each (group, day) of ``pair_key``.

        Each appearance of a subject on day t counts for window ends in
        [t, min(t + width, next appearance)): disjoint intervals per subject, so the
        distinct count at D is the number of intervals that contain D.
        """
        subject = self.codes("subject")[0].astype(np.int64)
        triples = np.unique(np.stack([self.g, subject, self.d]), axis=1)
        g, s, t = triples
        same_next = np.append((g[1:] == g[:-1]) & (s[1:] == s[:-1]), False)
        next_t = np.where(same_next, np.append(t[1:], 0), t + width)
        stop = np.minimum(t + width, next_t)
        opens = np.sort(g * span + (t - base + width))
        closes = np.sort(g * span + (stop - base + width))
        return np.searchsorted(opens, pair_key, side="right") - np.searchsorted(
            closes, pair_key, side="right"
        )

    def figures(self, g: int, day: np.datetime64, width: int) -> dict[str, Any]:
        """What an alert says of its window (day - width, day] in group ``g``."""
        lo, hi = int(self.starts[g]), int(self.ends[g])
        end = int(day.astype(np.int64))
        days = self.d[lo:hi]
        a = lo + int(np.searchsorted(days, end - width, side="right"))
        b = lo + int(np.searchsorted(days, end, side="right"))
        people = self.codes("subject")[0][a:b]
        domain_codes, domain_values = self.codes("reg_domain")
        category_codes, category_values = self.codes("categories")
        domains = np.unique(domain_codes[a:b])
        categories = np.unique(category_codes[a:b])
        return {
            "org_unit": str(self.value("unit", b - 1)),
            "messages": b - a,
            "people": len(np.unique(people)),
            "domains": sorted(str(domain_values[c]) for c in domains if c >= 0),
            "categories": sorted(
                {
                    c
                    for code in categories
                    if code >= 0
                    for c in category_values[code].split(";")
                    if c
                }
            ),
            "first_day": str(self.value("day", a)),
            "last_day": str(self.value("day", b - 1)),
        }


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


def _alert_base(rule: PersonRule | ClusterRule, key: tuple[Any, ...]) -> dict[str, Any]:
    if isinstance(rule, PersonRule):
        return {"subject": str(key[0]), "_key": str(key[0])}
    return {"subject": None, "_key": "|".join(str(p) for p in key)}


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
