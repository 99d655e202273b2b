"""Evaluating policies over minimised, matched events: evidence, qualifying days, episodes.

Semantics, identical for a one-year audit, for daily scheduled runs and for a run
resumed after an interruption:

* Only *evidence* counts (:mod:`compliance.policy.evidence`): what a person sent, and,
  with ``evidence: conversation``, what they received from a site they had written to
  within the reply window. What was merely sent to them never counts.
* A rule *qualifies* on day D when the evidence in the window of ``window`` days ending
  on D, (D - window, D], meets its thresholds.
* The first qualifying day starts an *episode* (its trigger day). The episode covers
  all evidence of its subject (a person, or an org unit [and site] for cluster rules)
  under that rule from the first day of the triggering window until the subject has
  been quiet for ``suppress`` days, or the end of the data; it is *ended* once that
  quiet period has passed. Only evidence after an episode's last day can start the
  next one, so episodes never share a message.
* An alert describes its episode: messages, people (one person is one person across
  key epochs when a linker is given), days with activity, distinct registrable
  domains, categories, first and last day. Its figures grow as later data extends it.
* Org units are reported rolled up to the policy's minimum group size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.groupby import DataFrameGroupBy

from compliance.alerts import Alert
from compliance.domains import DomainIndex, Label
from compliance.events import UNKNOWN_UNIT
from compliance.policy.evidence import (
    EXCHANGE_COLUMNS,
    classify,
    confirmed_exchanges,
    counts_as_evidence,
)
from compliance.policy.model import SEVERITY_ORDER, Policy
from compliance.policy.rules import RuleKind, RuleModel, kind_of
from compliance.policy.rules.ring import ROLES, Links, RingRule, find_rings
from compliance.privacy import count_people, plain_ids, rollup_map


def policy_label(policy_id: str) -> Label:
    """The label the index gives a policy's own extra domains."""
    return Label(f"policy:{policy_id}", f"policy:{policy_id}")


def add_policy_domains(index: DomainIndex, policies: list[Policy]) -> None:
    """Put each policy's extra domains into the match index under its own label."""
    for policy in policies:
        for domain in policy.match.domains:
            index.add(domain, policy_label(policy.id))


def _unit_filter(units: pd.Series, prefixes: list[str]) -> pd.Series:
    """Rows whose org unit is one of ``prefixes`` or below one, whatever the case of
    either (a directory's ``legal/investigations`` is the policy's
    ``Legal/Investigations``: an excluded team is excluded however HR spells it)."""
    codes, distinct = pd.factorize(units.astype("string"), use_na_sentinel=True)
    folded = pd.Series(distinct, dtype="string").str.casefold()
    hit = pd.Series(False, index=folded.index)
    for prefix in (p.casefold() for p in prefixes):
        hit |= (folded == prefix) | folded.str.startswith(prefix + "/")
    found = np.append(hit.to_numpy(dtype=bool, na_value=False), False)  # code -1: no unit
    return pd.Series(found[codes], index=units.index)


def select_events(policy: Policy, events: pd.DataFrame) -> pd.DataFrame:
    """The events a policy looks at (categories or own domains, exclusions, scope, direction);
    evidence is decided later, by :func:`evidence_of`."""
    if events.empty:
        return events
    return events.loc[_selected(policy, events)]


#: The columns rule evaluation reads.
_EVALUATED = ["person", "org_unit", "day", "reg_domain", "categories", "epoch"]
#: And those evidence is decided on.
_CLASSIFIED = ["timestamp", "direction", "status", "person", "reg_domain"]

PeopleIds = Callable[[pd.Series, pd.Series], tuple[np.ndarray, np.ndarray]]


def _selected(policy: Policy, events: pd.DataFrame, direction: bool = True) -> pd.Series:
    """Which events a policy looks at, as a boolean mask (without its ``direction`` filter
    when ``direction`` is False)."""
    m = policy.match
    mask = pd.Series(True, index=events.index)
    if direction and m.direction != "any":
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


def evidence_of(policy: Policy, events: pd.DataFrame) -> pd.DataFrame:
    """The events that count against people under ``policy`` (see the module docstring)."""
    return _evidence(policy, events)[1]


def _evidence(policy: Policy, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the events ``policy`` looks at in either direction, the evidence among them)."""
    if events.empty:
        return events, events
    selected = events.loc[_selected(policy, events, direction=False)]
    if selected.empty:
        return selected, selected
    # replies are recognised by the person's sent mail even where `direction` keeps only
    # received mail
    classes = classify(selected[_CLASSIFIED], policy.match.reply_window)
    counted = counts_as_evidence(classes, policy.match.evidence, policy.match.sent)
    if policy.match.direction != "any":
        counted &= (selected["direction"] == policy.match.direction).to_numpy(dtype=bool)
    if policy.match.status:
        counted &= selected["status"].isin(policy.match.status).to_numpy(dtype=bool)
    return selected, selected.loc[counted]


def _rolled_units(units: pd.Series, mapping: Mapping[str, str] | None) -> pd.Series:
    if mapping is None:
        return units
    return units.map(lambda u: u if u == UNKNOWN_UNIT else mapping.get(u, u))


def _days(values: pd.Series) -> np.ndarray:
    """ISO days (``YYYY-MM-DD``) as numpy days: parsed by numpy, no format guessing."""
    return np.asarray(values.astype(str).to_numpy(), dtype="datetime64[D]")


def _day_number(day: str) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


def _day_text(number: int) -> str:
    return str(np.datetime64(int(number), "D"))


def evaluate_policy(
    policy: Policy,
    events: pd.DataFrame,
    headcounts: Mapping[str, int] | None,
    *,
    as_of: str | None = None,
    counted_from: str | None = None,
    prev_end: Mapping[tuple[str, str], str] | None = None,
    people: PeopleIds | None = None,
    links: Links | None = None,
) -> list[Alert]:
    """The episodes a policy finds in ``events`` (minimised schema), as alerts.

    ``headcounts`` (people per org unit) drive the roll-up; ``None`` means none.
    ``as_of`` is the end of the data (default: its last day): an episode is ended once
    its subject has been quiet for the whole suppression period before ``as_of`` (the
    day ``as_of`` itself may still be filling, and evidence on it would continue an
    episode whose quiet period ends that day). Events before
    ``counted_from`` only serve to recognise replies; they are not evidence here (a
    scheduled run loads them for that). ``prev_end`` maps (rule id, episode key) to the
    last day of an earlier episode that the events do not cover: only later evidence
    can start a new one. ``people`` numbers people across key epochs (default: one
    number per pseudonym). ``links`` is the internal mail ring rules look up (None: they
    find nothing, as in an audit).

    Which days qualify is computed for every group at once on integer arrays (sliding
    windows by binary search over cumulative counts); Python runs per qualifying group
    only, to cut episodes and describe them.
    """
    if policy.status == "disabled" or events.empty:
        return []
    as_of_day = _day_number(as_of or str(events["day"].max()))
    looked_at, evidence = _evidence(policy, events)
    if counted_from is not None:
        evidence = evidence.loc[evidence["day"] >= counted_from]
    selected = evidence[_EVALUATED]  # only what rules read
    if selected.empty:
        return []
    # the person's own messages (sent or attempted), as against the replies they received
    own = (evidence["direction"] == "outbound").to_numpy(dtype=np.int64, na_value=0)
    mapping = (
        rollup_map(headcounts, policy.privacy.min_group_size) if headcounts is not None else None
    )
    ids, linked = (people or plain_ids)(selected["person"], selected["epoch"])
    selected = selected.assign(
        unit=_rolled_units(selected["org_unit"], mapping),
        _d=_days(selected["day"]),
        person_no=ids,
        linked=linked,
        _own=own,
    )
    ends = prev_end or {}
    alerts: list[Alert] = []
    for index, rule in enumerate(policy.rules):
        rule = rule.for_evidence(policy.match.evidence)
        rule_id = policy.rule_id(index)
        suppress = policy.suppress_days(index)
        if isinstance(rule, RingRule):
            if links is not None:
                floors = {k: v for (r, k), v in ends.items() if r == rule_id}
                found = _ring_alerts(policy, rule_id, rule, selected, links, floors)
                for alert in found:
                    alert.ended = as_of_day - _day_number(alert.last_day) > suppress
                alerts.extend(found)
            continue
        kind = kind_of(rule)
        keys = kind.keys(rule)
        looked = selected
        if not kind.on_person and "unit" in keys:
            # people the directory does not list share no team: `unknown` is no group
            looked = selected.loc[(selected["unit"] != UNKNOWN_UNIT).to_numpy(dtype=bool)]
        frame = _eligible(looked, keys, kind, rule)
        if frame.empty:
            continue
        groups = _Groups(frame, keys, kind.on_person)
        for g, candidates in groups.qualifying(kind, rule):
            base = _alert_base(kind, groups.key(g))
            earlier = ends.get((rule_id, base["_key"]))
            floor = _day_number(earlier) if earlier is not None else None
            for a, b, trigger in groups.episodes(g, candidates, kind, rule, floor, suppress):
                figures = groups.figures(a, b, trigger)
                alerts.append(
                    Alert(
                        policy=policy.id,
                        policy_version=policy.version,
                        rule=rule.kind,
                        rule_id=rule_id,
                        severity=rule.severity,
                        person=base["person"],
                        trigger_day=_day_text(trigger),
                        raised_day=_day_text(trigger),
                        draft=policy.status == "draft",
                        window_days=rule.window,
                        ended=as_of_day - _day_number(figures["last_day"]) > suppress,
                        extra={
                            "same_domain": "reg_domain" in keys,
                            "epoch": groups.value("epoch", a),
                        },
                        **figures,
                    )
                )
    if any(a.person is not None for a in alerts):
        mark_exchanges(alerts, confirmed_exchanges(looked_at[_EXCHANGED]))
    return alerts


def _ring_alerts(
    policy: Policy,
    rule_id: str,
    rule: RingRule,
    selected: pd.DataFrame,
    links: Links,
    floors: Mapping[str, str],
) -> list[Alert]:
    """The alerts of one ring rule: one per ring found (see
    :func:`compliance.policy.rules.ring.find_rings`), keyed on ``ring|`` and the ring's
    first site; evidence of a site on or before the last day of an earlier episode keyed
    on it (``floors``) is left to that episode."""
    frame = selected
    if floors:
        sites = frame["reg_domain"].astype(str)
        floor = sites.map({k.split("|", 1)[1]: v for k, v in floors.items() if "|" in k})
        frame = frame.loc[~(floor.notna() & (frame["day"].astype(str) <= floor.fillna("")))]
    alerts: list[Alert] = []
    for ring in find_rings(frame, rule, links):
        rows = frame.iloc[ring.rows]
        units = rows["unit"].astype(str)
        size = sum(len(v) for v in ring.roles.values())
        categories = {
            c for value in rows["categories"].dropna().unique() for c in str(value).split(";") if c
        }
        alerts.append(
            Alert(
                policy=policy.id,
                policy_version=policy.version,
                rule=rule.kind,
                rule_id=rule_id,
                severity=rule.severity,
                person=None,
                org_unit=str(units.value_counts().sort_index().idxmax()),
                messages=len(rows),
                people=size,
                domains=ring.domains,
                categories=sorted(categories),
                first_day=str(rows["day"].min()),
                last_day=str(rows["day"].max()),
                trigger_day=ring.trigger_day,
                raised_day=ring.trigger_day,
                draft=policy.status == "draft",
                window_days=rule.window,
                days=int(rows["day"].nunique()),
                ring={
                    "size": size,
                    "units": sorted(set(units)),
                    "domains": ring.domains,
                    "roles": {role: len(ring.roles[role]) for role in ROLES},
                },
                extra={"episode_key": ring.key, "ring_people": ring.roles},
            )
        )
    return alerts


#: The columns the verification pattern reads.
_EXCHANGED = ["timestamp", "direction", "status", "person", "reg_domain"]


def mark_exchanges(alerts: list[Alert], exchanges: pd.DataFrame) -> None:
    """Mark ``exchange_confirmed`` on each person's alert whose episode holds the first
    message of a confirmed exchange (:func:`compliance.policy.evidence.confirmed_exchanges`)
    with one of its domains; the pairs are kept in ``extra["exchanges"]`` as (domain,
    day), for a scheduled run to check against the history it did not load. The other
    figures are unchanged. Python runs per confirmed pair and per alert only."""
    found: dict[str, list[tuple[str, str]]] = {}
    for person, domain, day in exchanges[list(EXCHANGE_COLUMNS)].itertuples(index=False):
        found.setdefault(str(person), []).append((str(domain), str(day)))
    for alert in alerts:
        if alert.person is None:
            continue
        pairs = [
            (domain, day)
            for domain, day in found.get(alert.person, [])
            if domain in alert.domains and alert.first_day <= day <= alert.last_day
        ]
        alert.exchange_confirmed = bool(pairs)
        if pairs:
            alert.extra["exchanges"] = pairs


class _Groups:
    """One rule's groups (people, or org units [and sites]) as arrays sorted by group and day."""

    def __init__(self, frame: pd.DataFrame, keys: list[str], on_person: bool) -> None:
        codes = frame.groupby(keys, sort=True).ngroup().to_numpy()
        days = frame["_d"].to_numpy().astype("datetime64[D]").astype(np.int64)
        self.order = np.lexsort((days, codes))  # stable: equal days keep their input order
        self.g, self.d = codes[self.order], days[self.order]
        self.frame = frame
        self.keys = keys
        self.on_person = on_person
        self.starts = np.searchsorted(self.g, np.arange(int(self.g.max()) + 1))
        self.ends = np.append(self.starts[1:], len(self.g))
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.person = frame["person_no"].to_numpy()[self.order]
        self.linked = frame["linked"].to_numpy(dtype=bool)[self.order]
        self.own = frame["_own"].to_numpy(dtype=np.int64)[self.order]

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

    def qualifying(self, kind: RuleKind, rule: RuleModel) -> list[tuple[int, np.ndarray]]:
        """(group, day numbers on which the rule qualifies) for every group that qualifies.

        Days are the group's active days; a rule qualifies on day D when the window
        (D - window, D] meets its thresholds. People are counted here per person number
        (an upper bound when unlisted people cross a key rotation); :meth:`episodes`
        checks each candidate exactly.
        """
        width = rule.window
        base = int(self.d.min())
        span = int(self.d.max()) - base + 2 * width + 2  # keys of groups never overlap
        pair_key, counts = np.unique(self.g * span + (self.d - base + width), return_counts=True)
        group, offset = np.divmod(pair_key, span)
        start = group * span + offset - width  # the window is (day - width, day]
        first = np.searchsorted(pair_key, start, side="right")
        windows = _WindowFigures(self, pair_key, counts, first, (span, base, width))
        hits = np.flatnonzero(kind.ok(windows, rule))  # sorted by group, then day
        hit_group, hit_day = group[hits], offset[hits] + base - width
        cuts = np.flatnonzero(np.diff(hit_group)) + 1
        return [
            (int(g[0]), days)
            for g, days in zip(np.split(hit_group, cuts), np.split(hit_day, cuts), strict=True)
            if len(g)
        ]

    def _people_in_windows(
        self, pair_key: np.ndarray, span: int, base: int, width: int
    ) -> np.ndarray:
        """Distinct people in the window ending on each (group, day) of ``pair_key``.

        Each appearance of a person on day t counts for window ends in
        [t, min(t + width, next appearance)): disjoint intervals per person, so the
        distinct count at D is the number of intervals that contain D.
        """
        person = self.codes("person_no")[0].astype(np.int64)
        triples = np.unique(np.stack([self.g, person, self.d]), axis=1)
        g, s, t = triples
        same_next = np.append((g[1:] == g[:-1]) & (s[1:] == s[:-1]), False)
        next_t = np.where(same_next, np.append(t[1:], 0), t + width)
        stop = np.minimum(t + width, next_t)
        opens = np.sort(g * span + (t - base + width))
        closes = np.sort(g * span + (stop - base + width))
        return np.searchsorted(opens, pair_key, side="right") - np.searchsorted(
            closes, pair_key, side="right"
        )

    def _people(self, a: int, b: int) -> int:
        """People among rows [a, b) (listed people once across epochs)."""
        epochs = self.codes("epoch")[0][a:b]
        return count_people(self.person[a:b], self.linked[a:b], epochs)

    def _meets(self, kind: RuleKind, rule: RuleModel, a: int, b: int) -> bool:
        """Whether rows [a, b) (one window of one group) meet the rule's thresholds."""
        return bool(kind.ok(_SpanFigures(self, a, b), rule))

    def episodes(
        self,
        g: int,
        candidates: np.ndarray,
        kind: RuleKind,
        rule: RuleModel,
        floor: int | None,
        suppress: int,
    ) -> list[tuple[int, int, int]]:
        """(first row, last row, trigger day) of each episode of group ``g``, in order.

        ``candidates`` are the days on which the rule qualifies counting all of the
        group's evidence; an episode can only start on one whose window meets the
        thresholds with the evidence after ``floor`` (the last day of the previous
        episode). The episode then runs on while no gap between evidence days exceeds
        ``suppress`` days.
        """
        lo, hi = int(self.starts[g]), int(self.ends[g])
        days = self.d[lo:hi]
        low = floor
        found: list[tuple[int, int, int]] = []
        for trigger in candidates.tolist():
            if low is not None and trigger <= low:
                continue
            start = trigger - rule.window if low is None else max(low, trigger - rule.window)
            a = int(np.searchsorted(days, start, side="right"))
            b = int(np.searchsorted(days, trigger, side="right"))
            if not self._meets(kind, rule, lo + a, lo + b):
                continue
            gaps = np.flatnonzero(np.diff(days[b - 1 :]) > suppress)
            last = b - 1 + int(gaps[0]) if len(gaps) else len(days) - 1
            found.append((lo + a, lo + last, int(trigger)))
            low = int(days[last])
        return found

    def figures(self, a: int, b: int, trigger: int) -> dict[str, Any]:
        """What an alert says of its episode, rows [a, b] (inclusive) of one group."""
        end = b + 1
        domain_codes, domain_values = self.codes("reg_domain")
        category_codes, category_values = self.codes("categories")
        domains = np.unique(domain_codes[a:end])
        categories = np.unique(category_codes[a:end])
        at_trigger = a + int(np.searchsorted(self.d[a:end], trigger, side="right")) - 1
        return {
            "org_unit": str(self.value("unit", at_trigger)),
            "messages": end - a,
            "people": 1 if self.on_person else self._people(a, end),
            "days": len(np.unique(self.d[a:end])),
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
            "last_day": str(self.value("day", b)),
        }


class _GroupFigures:
    """Each group's figures over its whole period (pandas Series by group)."""

    def __init__(self, grouped: DataFrameGroupBy[Any, Any]) -> None:
        self._grouped = grouped

    @cached_property
    def messages(self) -> pd.Series:
        return pd.Series(self._grouped.size())

    @cached_property
    def days(self) -> pd.Series:
        return pd.Series(self._grouped["_d"].nunique())

    @cached_property
    def people(self) -> pd.Series:
        return pd.Series(self._grouped["person_no"].nunique())

    @cached_property
    def sent(self) -> pd.Series:
        return pd.Series(self._grouped["_own"].sum())


class _WindowFigures:
    """The figures of the window ending on each (group, active day) (NumPy arrays).

    People are counted per person number here (an upper bound when unlisted people
    cross a key rotation); :class:`_SpanFigures` counts them exactly.
    """

    def __init__(
        self,
        groups: _Groups,
        pair_key: np.ndarray,
        counts: np.ndarray,
        first: np.ndarray,
        layout: tuple[int, int, int],
    ) -> None:
        self._groups, self._pair_key, self._counts, self._first = groups, pair_key, counts, first
        self._layout = layout  # (span, base, width) of the pair keys

    def _in_window(self, per_day: np.ndarray) -> np.ndarray:
        """The sum of ``per_day`` (one value per (group, active day)) over each window."""
        total = np.concatenate([[0], np.cumsum(per_day, dtype=np.int64)])
        return np.asarray(total[1:] - total[self._first])

    @cached_property
    def messages(self) -> np.ndarray:
        return self._in_window(self._counts)

    @cached_property
    def days(self) -> np.ndarray:
        return np.asarray(np.arange(len(self._pair_key)) - self._first + 1)

    @cached_property
    def people(self) -> np.ndarray:
        return self._groups._people_in_windows(self._pair_key, *self._layout)

    @cached_property
    def sent(self) -> np.ndarray:
        groups = self._groups
        span, base, width = self._layout
        pair = np.searchsorted(self._pair_key, groups.g * span + (groups.d - base + width))
        per_pair = np.bincount(pair, weights=groups.own, minlength=len(self._pair_key))
        return self._in_window(per_pair.astype(np.int64))


class _SpanFigures:
    """The exact figures of rows [a, b) of one group (plain numbers)."""

    def __init__(self, groups: _Groups, a: int, b: int) -> None:
        self._groups, self._a, self._b = groups, a, b

    @property
    def messages(self) -> int:
        return self._b - self._a

    @property
    def days(self) -> int:
        return len(np.unique(self._groups.d[self._a : self._b]))

    @property
    def people(self) -> int:
        return self._groups._people(self._a, self._b)

    @property
    def sent(self) -> int:
        return int(self._groups.own[self._a : self._b].sum())


def _eligible(
    frame: pd.DataFrame, keys: list[str], kind: RuleKind, rule: RuleModel
) -> pd.DataFrame:
    """Only the groups that could meet the rule in some window.

    A window holds at most a group's whole period, so a group with fewer messages,
    days or people than the rule asks for over the whole period can never qualify;
    dropping it first changes no result and spares the per-group work for most people.
    """
    ok = kind.ok(_GroupFigures(frame.groupby(keys, sort=False)), rule)
    wanted = ok[ok].index
    if len(keys) == 1:
        return frame.loc[frame[keys[0]].isin(wanted)]
    return frame.loc[pd.MultiIndex.from_frame(frame[keys]).isin(wanted)]


def _alert_base(kind: RuleKind, key: tuple[Any, ...]) -> dict[str, Any]:
    if kind.on_person:
        return {"person": str(key[0]), "_key": str(key[0])}
    return {"person": None, "_key": "|".join(str(p) for p in key)}


def evaluate(
    policies: list[Policy],
    events: pd.DataFrame,
    headcounts: Mapping[str, int] | None,
    *,
    as_of: str | None = None,
    counted_from: str | None = None,
    prev_end: Mapping[tuple[str, str, str], str] | None = None,
    people: PeopleIds | None = None,
    links: Links | None = None,
) -> list[Alert]:
    """Episodes of every policy (see :func:`evaluate_policy`); ``prev_end`` keys are
    (policy id, rule id, episode key). Alerts come raised on their trigger day; see
    :func:`schedule_raises` for a policy's daily limit."""
    alerts: list[Alert] = []
    for policy in policies:
        own = {
            (rule, key): day
            for (pid, rule, key), day in (prev_end or {}).items()
            if pid == policy.id
        }
        alerts.extend(
            evaluate_policy(
                policy,
                events,
                headcounts,
                as_of=as_of,
                counted_from=counted_from,
                prev_end=own,
                people=people,
                links=links,
            )
        )
    return alerts


def raise_order(alert: Alert) -> tuple[Any, ...]:
    """The order in which new alerts of one day take the day's places."""
    return (alert.trigger_day, SEVERITY_ORDER[alert.severity], alert.rule_id, alert.episode_key)


def schedule_raises(
    new: list[Alert], limit: int | None, taken: Mapping[str, int] | None = None
) -> None:
    """Set ``raised_day`` of one policy's new alerts: at most ``limit`` a day (``taken``
    counts the places already used per day); the rest wait for the next free day, in
    :func:`raise_order`. Nothing is dropped.

    Alerts come in trigger order, so the days between an earlier trigger and the first
    free day found for it stay full: the search resumes there (linear overall).
    """
    used = {_day_number(day): n for day, n in (taken or {}).items()}
    cursor: int | None = None  # every day from the previous trigger up to it is full
    for alert in sorted(new, key=raise_order):
        day = _day_number(alert.trigger_day)
        if limit is not None:
            if cursor is not None and day < cursor:
                day = cursor
            while used.get(day, 0) >= limit:
                day += 1
            cursor = day
        used[day] = used.get(day, 0) + 1
        alert.raised_day = _day_text(day)
