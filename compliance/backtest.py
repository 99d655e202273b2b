"""Backtests: what a new or changed policy, or a changed feed, would have raised over the
stored history, compared with what the configured setup raises over the same events.

Nothing is written: the store is opened read-only. Both sides of a comparison are
evaluated by the function the scheduled run uses (:func:`compliance.policy.evaluate.evaluate`)
over the same stored, minimised events, with the directory's headcounts for the roll-up
and the run's person linker, so that a difference is the policy's (or the feed's), never
the method's. The stored alerts of the configured version are counted and checked against
that evaluation too (they differ only where evidence was purged, or the policy changed
since the last run).

What stored history cannot tell is said, never left out: a window or quiet period that
reaches before the first stored day, a ``--since`` before it, and what a feed addition
or a policy's new domain would add (the store keeps only messages that matched when
they were read).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from compliance.alerts import Alert
from compliance.config import Config
from compliance.domains import DomainIndex, Label
from compliance.engine import Prepared
from compliance.errors import ConfigError, PolicyError, Problem
from compliance.feeds import FeedSpec, load_feeds
from compliance.feeds.diff import diff_indexes, load_version
from compliance.job import open_store, prepare_from_config
from compliance.pipeline import retro_events, retro_listings
from compliance.policy.evaluate import PeopleIds, add_policy_domains, evaluate, schedule_raises
from compliance.policy.loader import load_policies
from compliance.policy.model import Policy
from compliance.privacy import rollup_map
from compliance.store import AlertFilter, Store
from compliance.tables import aligned

#: The key of an evaluated alert's ``extra`` naming the stored alert of its episode.
STORED = "stored_alert"

#: What a comparison looks at in two alerts of one episode.
FIGURES = (
    "severity",
    "org_unit",
    "trigger_day",
    "first_day",
    "last_day",
    "messages",
    "days",
    "people",
    "domains",
    "categories",
    "ended",
    "draft",
)


# --- comparing two sets of alerts ------------------------------------------------------


@dataclass(frozen=True)
class AlertChange:
    """One episode in a comparison: ``added`` (only after), ``removed`` (only before),
    ``changed`` (both, with other figures: ``fields``) or ``unchanged``."""

    change: str
    before: Alert | None
    after: Alert | None
    fields: tuple[str, ...] = ()

    @property
    def alert(self) -> Alert:
        """The alert shown: the one after the change, or the one removed."""
        found = self.after or self.before
        assert found is not None
        return found


def _overlaps(a: Alert, b: Alert) -> bool:
    """Two alerts of one subject describe one episode (as :mod:`compliance.episodes`
    joins a recomputed episode to a stored one)."""
    return a.trigger_day == b.trigger_day or (
        a.first_day <= b.last_day and b.first_day <= a.last_day
    )


def _key(alert: Alert) -> tuple[str, str, str]:
    return (alert.policy, alert.rule_id, alert.episode_key)


def compare(
    before: Sequence[Alert], after: Sequence[Alert], figures: Sequence[str] = FIGURES
) -> list[AlertChange]:
    """Join the alerts ``after`` a change to those ``before`` it, episode by episode: the same
    policy, rule and subject, and overlapping days. Work is per subject (alerts are few
    next to events); the result is in trigger order."""
    waiting: dict[tuple[str, str, str], list[Alert]] = {}
    for alert in sorted(before, key=lambda a: (a.trigger_day, a.first_day)):
        waiting.setdefault(_key(alert), []).append(alert)
    out: list[AlertChange] = []
    for alert in sorted(after, key=lambda a: (a.trigger_day, a.first_day)):
        group = waiting.get(_key(alert), [])
        match = next((b for b in group if _overlaps(b, alert)), None)
        if match is None:
            out.append(AlertChange("added", None, alert))
            continue
        group.remove(match)
        differs = tuple(f for f in figures if getattr(match, f) != getattr(alert, f))
        if "raised_day" in differs and all(a.raised_day == a.trigger_day for a in (match, alert)):
            differs = tuple(f for f in differs if f != "raised_day")  # the trigger says it
        out.append(AlertChange("changed" if differs else "unchanged", match, alert, differs))
    out += [AlertChange("removed", b, None) for group in waiting.values() for b in group]
    return sorted(out, key=lambda c: (c.alert.trigger_day, c.alert.rule_id, c.alert.org_unit))


@dataclass(frozen=True)
class RuleCounts:
    """One rule's alerts before and after, and how they changed."""

    policy: str
    rule_id: str
    before: int = 0
    after: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0


def rule_counts(
    changes: Sequence[AlertChange], rules: Sequence[tuple[str, str]]
) -> list[RuleCounts]:
    """Counts per (policy, rule id): every rule of ``rules`` (in that order), then any
    other rule an alert names."""
    names = list(dict.fromkeys([*rules, *((c.alert.policy, c.alert.rule_id) for c in changes)]))
    out = []
    for policy, rule in names:
        mine = [c for c in changes if (c.alert.policy, c.alert.rule_id) == (policy, rule)]
        kinds = [c.change for c in mine]
        out.append(
            RuleCounts(
                policy,
                rule,
                before=sum(c.before is not None for c in mine),
                after=sum(c.after is not None for c in mine),
                added=kinds.count("added"),
                removed=kinds.count("removed"),
                changed=kinds.count("changed"),
                unchanged=kinds.count("unchanged"),
            )
        )
    return out


# --- evaluating one side ---------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What both sides of a comparison share: the day evaluated as of, the roll-up and
    the person linker of the deployment, and the reports' group size for showing units."""

    as_of: dt.date
    headcounts: Mapping[str, int] | None
    people: PeopleIds | None
    report_group_size: int

    def shown_unit(self, unit: str) -> str:
        """An alert's org unit rolled up as the team report shows it."""
        if not self.headcounts:
            return unit
        return rollup_map(self.headcounts, self.report_group_size).get(unit, unit)


def evaluate_side(
    policies: Sequence[Policy],
    events: pd.DataFrame,
    setting: Setting,
    counted_from: str | None = None,
) -> list[Alert]:
    """The alerts ``policies`` find in ``events``, as a scheduled run finds them (the
    same function, headcounts and person linker), with each policy's daily limit."""
    found = evaluate(
        list(policies),
        events,
        setting.headcounts,
        as_of=setting.as_of.isoformat(),
        counted_from=counted_from,
        people=setting.people,
    )
    for policy in policies:
        schedule_raises([a for a in found if a.policy == policy.id], policy.max_alerts_per_day)
    return found


@dataclass
class Comparison:
    """Two evaluations over stored events and how their alerts differ."""

    before: list[Alert]
    after: list[Alert]
    changes: list[AlertChange]
    rules: list[RuleCounts]

    def of(self, change: str) -> list[AlertChange]:
        """The changes of one kind (``added``, ``removed``, ``changed``, ``unchanged``)."""
        return [c for c in self.changes if c.change == change]


def _reaching(alerts: Sequence[Alert], since: str | None) -> list[Alert]:
    return [a for a in alerts if since is None or a.last_day >= since]


def compare_sides(
    before: tuple[Sequence[Policy], pd.DataFrame],
    after: tuple[Sequence[Policy], pd.DataFrame],
    setting: Setting,
    *,
    counted_from: str | None = None,
    since: str | None = None,
    extra_events: pd.DataFrame | None = None,
) -> Comparison:
    """Evaluate both sides (policies over events) the same way and compare their alerts,
    keeping the episodes that reach ``since``.

    ``extra_events`` are events (minimised schema) the ``after`` side has on top of its
    own: rows a retro-hunt would materialise for domains a new feed version lists, which
    the store cannot hold (it keeps only messages that matched when read).
    """
    after_events = after[1]
    if extra_events is not None and len(extra_events):
        after_events = pd.concat([after_events, extra_events], ignore_index=True)
    old = _reaching(evaluate_side(before[0], before[1], setting, counted_from), since)
    new = _reaching(evaluate_side(after[0], after_events, setting, counted_from), since)
    changes = compare(old, new, (*FIGURES, "raised_day"))
    rules = [(p.id, p.rule_id(i)) for p in [*before[0], *after[0]] for i in range(len(p.rules))]
    return Comparison(old, new, changes, rule_counts(changes, rules))


# --- what the stored history covers ----------------------------------------------------


@dataclass(frozen=True)
class History:
    """The stored history a comparison runs over."""

    first_day: str | None  # the first day the store holds (totals or events)
    last_day: str | None
    events: int  # matched events loaded
    events_days: int  # how long the store keeps events
    as_of: str


def _history(store: Store, events: pd.DataFrame, as_of: dt.date, events_days: int) -> History:
    totals = store.events.totals_between("0001-01-01", "9999-12-31")["day"]
    days = pd.concat([totals.astype("string"), events["day"].astype("string")]).dropna()
    return History(
        first_day=str(days.min()) if len(days) else None,
        last_day=str(days.max()) if len(days) else None,
        events=len(events),
        events_days=events_days,
        as_of=as_of.isoformat(),
    )


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _day(text: str, days: int) -> str:
    return (dt.date.fromisoformat(text) + dt.timedelta(days=days)).isoformat()


def history_limits(
    history: History,
    policies: Sequence[Policy],
    since: str | None,
    asked: str = "You asked for results from",
) -> list[str]:
    """Plain sentences for every way the stored history is too short for these policies
    from ``since`` (default: its first day; ``asked`` introduces it): never silently
    incomplete."""
    if history.first_day is None:
        return ["The store holds no history yet: nothing can be assessed (run the job first)."]
    first, keeps = history.first_day, history.events_days
    kept_from = _day(history.as_of, -keeps)
    out = []
    start = since or first
    if since is not None and since < first:
        out.append(
            f"{asked} {since}; the stored history starts on {first} (the "
            f"store keeps {keeps} days of events): nothing before {first} can be assessed."
        )
        start = first
    elif since is not None and since < kept_from:
        out.append(
            f"{asked} {since}; the store keeps {keeps} days of events "
            f"(from {kept_from} as of {history.as_of}), and the next run purges older ones."
        )
    reaches: dict[tuple[int, int], list[str]] = {}
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            names = reaches.setdefault((rule.window, policy.suppress_days(i)), [])
            if policy.rule_id(i) not in names:
                names.append(policy.rule_id(i))
    for (window, quiet), names in reaches.items():
        reach = window + quiet
        if _day(start, -reach) >= first:
            continue
        until = _day(first, reach)
        subject = f"Rules {_and(names)} look" if len(names) > 1 else f"Rule {names[0]} looks"
        text = (
            f"{subject} back {reach} days (a {window}-day window and {quiet} quiet days that "
            f"end an episode); the stored history starts on {first}: results before {until} "
            "are incomplete" + (" (all of them, here)" if until > history.as_of else "")
        )
        if reach > keeps:
            text += (
                f"; the store keeps only {keeps} days of events, so "
                + ("these rules" if len(names) > 1 else "this rule")
                + " can never be assessed in full from stored history"
            )
        out.append(text + ".")
    replies = sorted(
        {p.match.reply_window for p in policies if p.match.evidence != "outbound"}, reverse=True
    )
    if replies and _day(start, -replies[0]) < first:
        out.append(
            f"Replies count up to {replies[0]} days after a person's own message: replies in "
            f"the first {replies[0]} days of the history (before {_day(first, replies[0])}) "
            "to messages sent earlier are not recognised."
        )
    return out


# --- the policy backtest -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAlerts:
    """The stored alerts of the configured version, against its evaluation now."""

    total: int
    by_version: dict[int, int]
    same: int  # stored alerts the evaluation finds with the same figures
    differ: int  # stored alerts the evaluation finds otherwise, or not at all


@dataclass
class BacktestResult:
    """What a policy version would have raised over the stored history, against the
    configured version."""

    candidate: Policy
    path: str
    current: Policy | None
    history: History
    since: str | None
    comparison: Comparison
    stored: StoredAlerts
    limits: list[str]
    notes: list[str]
    setting: Setting


def _own_domains(events: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """``events`` with the label of ``policy``'s own extra domains (``policy:ID``) set as
    that policy lists them (the stored label is the configured version's); events left
    with no category are dropped. Once per distinct category text and domain."""
    if events.empty:
        return events
    label = f"policy:{policy.id}"
    cat_codes, cats = pd.factorize(events["categories"].astype("string"), use_na_sentinel=True)
    split = [[c for c in str(t).split(";") if c] for t in cats]
    if not policy.match.domains and not any(label in c for c in split):
        return events  # no own domains, and no event carries their label: nothing to set
    stripped = [[c for c in cs if c != label] for cs in split]
    own = DomainIndex.from_domains(policy.match.domains, Label(label, label))
    dom_codes, doms = pd.factorize(events["domain"].astype("string"), use_na_sentinel=True)
    in_list = np.zeros(len(events), dtype=bool)
    if policy.match.domains:
        listed = own.contains_all(pa.array(list(doms), pa.string()))
        in_list = np.append(listed, False)[dom_codes]
    pair, pairs = pd.factorize(pd.MultiIndex.from_arrays([cat_codes, in_list]))
    texts = np.array(
        [
            ";".join(sorted([*(stripped[c] if c >= 0 else []), *([label] if flag else [])]))
            for c, flag in pairs
        ],
        dtype=object,
    )
    categories = texts[pair]
    keep = categories != ""
    out: pd.DataFrame = events.loc[keep].copy()
    out["categories"] = pd.array(categories[keep], dtype="string")
    return out


def _one_policy(path: Path) -> Policy:
    loaded = load_policies([path])
    if len(loaded) != 1:
        raise PolicyError(
            [Problem(str(path), None, None, f"holds {len(loaded)} policies; give one policy file")]
        )
    return loaded[0].policy


def _as_of(store: Store, today: dt.date | None) -> dt.date:
    if today is not None:
        return today
    evaluated = store.meta.evaluated_through()
    return dt.date.fromisoformat(evaluated) if evaluated else dt.datetime.now(dt.UTC).date()


def _setting(config: Config, prepared: Prepared, as_of: dt.date) -> Setting:
    return Setting(
        as_of, prepared.directory.headcounts or None, prepared.people(),
        config.reports.min_group_size,
    )  # fmt: skip


def _stored(
    store: Store, policy_id: str, evaluated: Sequence[Alert], since: str | None
) -> StoredAlerts:
    stored = _reaching(store.alerts.find(AlertFilter(policy=policy_id)), since)
    versions: dict[int, int] = {}
    for alert in stored:
        versions[alert.policy_version] = versions.get(alert.policy_version, 0) + 1
    changes = compare(stored, evaluated)
    for c in changes:  # each evaluated episode learns the stored alert it is
        if c.before is not None and c.after is not None and c.before.id is not None:
            c.after.extra[STORED] = int(c.before.id)
    same = sum(c.change == "unchanged" for c in changes)
    return StoredAlerts(len(stored), dict(sorted(versions.items())), same, len(stored) - same)


def _policy_notes(
    candidate: Policy, current: Policy | None, same_file: bool, known: set[str]
) -> list[str]:
    notes = []
    if current is None:
        notes.append(
            f"No configured policy has the id {candidate.id}: this is a new policy, and every "
            "alert it finds is added."
        )
    elif same_file:
        notes.append(
            "This is the configured policy file itself, so both sides are the same: to see "
            "what a change does, edit a copy and backtest the copy."
        )
    elif current.model_dump() != candidate.model_dump() and candidate.version <= current.version:
        notes.append(
            f"This version differs from the configured one but keeps version "
            f"{candidate.version}: raise `version` before it replaces the configured one "
            "(each alert records the version that raised it)."
        )
    if candidate.status == "draft":
        notes.append(
            "This version is a draft: the job would report what it finds as draft findings, "
            "never as alerts; the backtest shows exactly those."
        )
    if candidate.status == "disabled":
        notes.append("This version is disabled: it raises nothing.")
    missing = [c for c in candidate.match.categories if c not in known]
    if missing:
        notes.append(
            "No configured feed provides the categor"
            + ("y " if len(missing) == 1 else "ies ")
            + ", ".join(missing)
            + ": the stored history holds no mail matched by them."
        )
    new_domains = sorted(
        set(candidate.match.domains) - set(current.match.domains if current else [])
    )
    if new_domains:
        notes.append(
            f"This version names {len(new_domains)} domain(s) of its own that the configured "
            "version does not: the store keeps only messages that matched when they were "
            "read, so their mail counts here only where a feed listed them then."
        )
    return notes


def backtest(
    config: Config,
    key: bytes,
    path: Path,
    since: dt.date | None = None,
    today: dt.date | None = None,
) -> BacktestResult:
    """What the policy at ``path`` would have raised over the stored history (episodes
    reaching ``since``, default: all), against the configured version with the same id,
    both evaluated as of ``today`` (default: the day of the last scheduled evaluation).
    Nothing is written."""
    candidate = _one_policy(path)
    prepared = prepare_from_config(config, key)
    configured = {lp.policy.id: lp for lp in prepared.policies}
    found = configured.get(candidate.id)
    current = found.policy if found is not None else None
    same_file = found is not None and found.path.resolve() == path.resolve()
    with open_store(config, read_only=True) as store:
        store.keys.bind(prepared.context.pseudonymiser.key_id)  # the key fits (a read)
        as_of = _as_of(store, today)
        events = store.events.since("")  # the whole stored history (bounded by retention)
        history = _history(store, events, as_of, config.retention.events_days)
        setting = _setting(config, prepared, as_of)
        since_text = since.isoformat() if since else None
        before = [current] if current is not None else []
        current_events = _own_domains(events, current) if current is not None else events
        comparison = compare_sides(
            (before, current_events),
            ([candidate], _own_domains(events, candidate)),
            setting,
            since=since_text,
        )
        stored = _stored(store, candidate.id, comparison.before, since_text)
    notes = _policy_notes(candidate, current, same_file, prepared.index.categories())
    return BacktestResult(
        candidate=candidate,
        path=str(path),
        current=current,
        history=history,
        since=since_text,
        comparison=comparison,
        stored=stored,
        limits=history_limits(history, [*before, candidate], since_text),
        notes=notes,
        setting=setting,
    )


# --- the impact of a feed change ---------------------------------------------------------


@dataclass
class LabelChanges:
    """How the events of the period change when the feed changes."""

    events: int = 0  # matched events of the period, as the old version labels them
    unmatched: dict[str, int] = field(default_factory=dict)  # reason -> events
    unmatched_domains: dict[str, int] = field(default_factory=dict)  # reason -> domains
    recategorised: dict[tuple[str, str], int] = field(default_factory=dict)  # (old, new) -> events
    relabelled_in_store: int = 0  # stored events whose labels the old version does not give


@dataclass
class ImpactResult:
    """What replacing one feed version by another would have done to the last days."""

    feed: str
    old: str
    new: str
    days: int
    period: tuple[str, str]
    history: History
    labels: LabelChanges
    added_domains: int  # domains the new version lists that the old one did not
    removed_domains: int
    comparison: Comparison
    limits: list[str]
    notes: list[str]
    setting: Setting
    #: with retro-hunt on: (messages found, registrable domains) among the kept contacts
    retro_found: tuple[int, int] | None = None


#: Why an event no longer matches.
REMOVED = "no longer listed"
ALLOWED = "allow-listed or excepted"


def _label_texts(index: DomainIndex) -> tuple[np.ndarray, np.ndarray]:
    """(categories, feeds) text per label set of ``index``, as the pipeline writes them,
    with a final empty entry for a domain no set lists."""
    sets = index.sets
    categories = [";".join(sorted({lb.category for lb in s})) for s in sets]
    feeds = [";".join(sorted({lb.feed for lb in s})) for s in sets]
    return np.array([*categories, ""], dtype=object), np.array([*feeds, ""], dtype=object)


def relabel(events: pd.DataFrame, index: DomainIndex) -> pd.DataFrame:
    """``events`` labelled by ``index`` as the pipeline would label them when read (their
    categories and feeds), dropping those it does not list. Once per distinct domain."""
    if events.empty:
        return events
    codes, domains = pd.factorize(events["domain"].astype("string"), use_na_sentinel=True)
    ids = index.lookup_ids(pa.array(list(domains), pa.string()))
    ids = np.append(ids, -1)[codes]  # -1: unlisted (also the missing-domain sentinel)
    categories, feeds = _label_texts(index)
    keep = ids >= 0
    out = events.loc[keep].copy()
    out["categories"] = pd.array(categories[ids[keep]], dtype="string")
    out["feeds"] = pd.array(feeds[ids[keep]], dtype="string")
    return out


def _feed_position(
    config: Config, specs: list[FeedSpec], old: Path, new: Path, name: str | None
) -> int:
    """Which configured feed ``old`` and ``new`` are versions of: the one named, else the
    one installed at either path."""
    names = [f.name or Path(f.path).stem for f in config.feeds]
    where = config.file or "the config"
    if name is not None:
        if name not in names:
            raise ConfigError(
                f"{where}: no feed is named {name!r} (configured: {', '.join(names)})"
            )
        return names.index(name)
    wanted = {old.resolve(), new.resolve()}
    for i, spec in enumerate(specs):
        if spec.path.resolve() in wanted:
            return i
    raise ConfigError(
        f"{where}: neither {old} nor {new} is the path of a configured feed: name the "
        f"feed they are versions of with --feed NAME (configured: {', '.join(names)})"
    )


def _label_changes(
    before: pd.DataFrame,
    after: pd.DataFrame,
    stored: pd.DataFrame,
    period_from: str,
    old_only: DomainIndex,
    new_only: DomainIndex,
) -> LabelChanges:
    """How the period's events change from the old labels (``before``) to the new ones
    (``after``); ``stored`` are the events as stored (all share the stored index)."""
    changes = LabelChanges()
    b = before.loc[before["day"] >= period_from]
    changes.events = len(b)
    a = after.loc[after["day"] >= period_from, "categories"]
    new_cats = a.reindex(b.index)
    lost = new_cats.isna().to_numpy()
    if lost.any():
        gone = b.loc[lost, "domain"].astype("string")
        codes, domains = pd.factorize(gone)
        listed = pa.array(list(domains), pa.string())
        removed = old_only.contains_all(listed) & ~new_only.contains_all(listed)
        reason = np.where(removed, REMOVED, ALLOWED)
        per_event = pd.Series(reason[codes])
        changes.unmatched = {str(k): int(v) for k, v in per_event.value_counts().items()}
        changes.unmatched_domains = {
            str(k): int(v) for k, v in pd.Series(reason).value_counts().items()
        }
    moved = ~lost & (new_cats.fillna("").to_numpy() != b["categories"].astype("string").to_numpy())
    if moved.any():
        pairs = pd.DataFrame(
            {"old": b.loc[moved, "categories"].astype(str), "new": new_cats[moved].astype(str)}
        )
        counted = pairs.groupby(["old", "new"]).size()
        changes.recategorised = {
            (str(o), str(n)): int(v)
            for o, n, v in zip(
                counted.index.get_level_values(0),
                counted.index.get_level_values(1),
                counted.to_numpy(),
                strict=True,
            )
        }
    in_period = stored.loc[stored["day"] >= period_from, "categories"].astype("string")
    relabelled = in_period.reindex(b.index) != b["categories"].astype("string")
    changes.relabelled_in_store = int(relabelled.sum()) + int(len(in_period) - len(b))
    return changes


@dataclasses.dataclass(frozen=True)
class _RetroFound:
    """Kept contacts (retro-hunt) with domains the new version lists and the old does not."""

    events: pd.DataFrame
    domains: int
    skipped: int


def _retro_additions(
    store: Store,
    prepared: Prepared,
    policies: list[Policy],
    indexes: list[DomainIndex],
    since: str,
) -> _RetroFound:
    """The events retro-hunt would make of kept contacts when the new version replaced the
    old: listings found under the new index and not under the old, read, never taken."""
    excluded = [d for p in policies if p.status != "disabled" for d in p.match.exclude_domains]
    wanted = store.retro.digests_since(since)
    pseudonymiser = prepared.context.pseudonymiser
    old = retro_listings(indexes[0], pseudonymiser, wanted, excluded)
    new = retro_listings(indexes[1], pseudonymiser, wanted, excluded)
    fresh = ~np.isin(new.digests, old.digests)
    listings = dataclasses.replace(
        new,
        digests=new.digests[fresh],
        domains=new.domains[fresh],
        categories=new.categories[fresh],
        feeds=new.feeds[fresh],
    )
    events = retro_events(store.retro.take(listings.digests, since), listings)
    skipped = max(0, new.ambiguous - old.ambiguous) + max(
        0, new.not_registrable - old.not_registrable
    )
    return _RetroFound(events, int(fresh.sum()), skipped)


def feed_impact(
    config: Config,
    key: bytes,
    old: Path,
    new: Path,
    days: int = 30,
    feed: str | None = None,
    today: dt.date | None = None,
    extra_events: pd.DataFrame | None = None,
) -> ImpactResult:
    """What replacing the feed version ``old`` by ``new`` would have done to the stored
    matches and alerts of the last ``days`` days (as of ``today``, default: the day of the
    last scheduled evaluation): both event sets are labelled from the configured feeds
    with one version or the other, and the configured policies are evaluated over each.
    ``extra_events`` are added to the new side (see :func:`compare_sides`). Nothing is
    written."""
    prepared = prepare_from_config(config, key)
    policies = [lp.policy for lp in prepared.policies]
    specs = config.feed_specs()
    at = _feed_position(config, specs, old, new, feed)
    name = config.feeds[at].name or Path(config.feeds[at].path).stem
    old_specs = [*specs[:at], dataclasses.replace(specs[at], path=old), *specs[at + 1 :]]
    new_specs = [*specs[:at], dataclasses.replace(specs[at], path=new), *specs[at + 1 :]]
    indexes = []
    for chosen in (old_specs, new_specs):
        if chosen == specs:  # the configured feeds as they are: already loaded
            indexes.append(prepared.index)
            continue
        index, _ = load_feeds(chosen, None)
        add_policy_domains(index, policies)
        indexes.append(index)
    old_alone, _ = load_version(old_specs[at])
    new_alone, _ = load_version(new_specs[at])
    added, removed, _, _ = diff_indexes(old_alone, new_alone)
    with open_store(config, read_only=True) as store:
        store.keys.bind(prepared.context.pseudonymiser.key_id)  # the key fits (a read)
        as_of = _as_of(store, today)
        period_from = (as_of - dt.timedelta(days=days - 1)).isoformat()
        lookback = max((p.lookback_days for p in policies), default=0)
        counted_from = _day(period_from, -lookback)
        reply = max((p.match.reply_window for p in policies), default=0)
        stored_events = store.events.since(_day(counted_from, -reply))
        history = _history(store, stored_events, as_of, config.retention.events_days)
        setting = _setting(config, prepared, as_of)
        before = relabel(stored_events, indexes[0])
        after = relabel(stored_events, indexes[1])
        found = None
        if extra_events is None and config.retro_hunt_days:
            found = _retro_additions(store, prepared, policies, indexes, counted_from)
            extra_events = found.events
        comparison = compare_sides(
            (policies, before),
            (policies, after),
            setting,
            counted_from=counted_from,
            since=period_from,
            extra_events=extra_events,
        )
        for policy in policies:
            _stored(store, policy.id, comparison.before, period_from)
    labels = _label_changes(
        before, after, stored_events, period_from, DomainIndex(old_alone), DomainIndex(new_alone)
    )
    notes = []
    if added and found is not None:
        notes.append(
            f"The new version lists {added:,} domain(s) the old one does not. Retro-hunt "
            f"keeps {config.retro_hunt_days} days of unmatched contacts: "
            f"{len(found.events):,} message(s) to {found.domains:,} newly listed registrable "
            "domain(s) were found there and are counted on the new side"
            + (
                f" ({found.skipped:,} listing(s) of subdomains, or with something below them "
                "that decides otherwise, cannot be looked for)"
                if found.skipped
                else ""
            )
            + "; mail older than that is not assessed."
        )
    elif added:
        notes.append(
            f"The new version lists {added:,} domain(s) the old one does not. Mail with them is "
            "not in the store (it keeps only messages that matched when they were read), so "
            "what they would have raised cannot be assessed from stored events (with "
            "retro_hunt_days set, it could be for that many days)."
        )
    if labels.relabelled_in_store:
        notes.append(
            f"{labels.relabelled_in_store:,} stored event(s) of the period were matched under "
            "other labels than the old version gives them today (an earlier feed version or "
            "configuration): both sides use today's configuration, with the old or the new "
            "version."
        )
    return ImpactResult(
        feed=name,
        old=str(old),
        new=str(new),
        days=days,
        period=(period_from, as_of.isoformat()),
        history=history,
        labels=labels,
        added_domains=added,
        removed_domains=removed,
        comparison=comparison,
        limits=history_limits(history, policies, period_from, f"The last {days} days start on"),
        notes=notes,
        setting=setting,
        retro_found=None if found is None else (len(found.events), found.domains),
    )


# --- output ---------------------------------------------------------------------------------


def _alert_record(change: AlertChange, setting: Setting) -> dict[str, Any]:
    alert = change.alert
    stored = change.before.extra.get(STORED) if change.before is not None else None
    record: dict[str, Any] = {
        "change": change.change,
        "policy": alert.policy,
        "rule": alert.rule_id,
        "kind": alert.rule,
        "severity": alert.severity,
        "org_unit": setting.shown_unit(alert.org_unit),
        "trigger_day": alert.trigger_day,
        "raised_day": alert.raised_day,
        "first_day": alert.first_day,
        "last_day": alert.last_day,
        "days": alert.days,
        "messages": alert.messages,
        "people": alert.people,
        "ended": alert.ended,
        "draft": alert.draft,
        "stored_alert": stored,
    }
    if change.change == "changed" and change.before is not None and change.after is not None:
        record["was"] = {
            f: _shown(change.before, f, setting)
            for f in change.fields
            if f not in ("domains", "categories")
        }
        if "domains" in change.fields:
            record["was"]["domains"] = len(change.before.domains)
            record["domains"] = len(change.after.domains)
    return record


def _shown(alert: Alert, name: str, setting: Setting) -> Any:
    value = getattr(alert, name)
    return setting.shown_unit(value) if name == "org_unit" else value


def _rules_json(comparison: Comparison) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in comparison.rules]


def _changes_json(comparison: Comparison, setting: Setting) -> list[dict[str, Any]]:
    return [_alert_record(c, setting) for c in comparison.changes]


def backtest_json(result: BacktestResult) -> dict[str, Any]:
    """The backtest as plain data (``--format json``): pseudonymous aggregates only."""
    c, s = result.candidate, result.current
    return {
        "policy": {"id": c.id, "version": c.version, "status": c.status, "path": result.path},
        "configured": None if s is None else {"version": s.version, "status": s.status},
        "as_of": result.history.as_of,
        "since": result.since,
        "history": dataclasses.asdict(result.history),
        "rules": _rules_json(result.comparison),
        "alerts": _changes_json(result.comparison, result.setting),
        "stored": {
            "alerts": result.stored.total,
            "by_version": {str(k): v for k, v in result.stored.by_version.items()},
            "same_as_configured": result.stored.same,
            "different": result.stored.differ,
        },
        "limits": result.limits,
        "notes": result.notes,
        "written": False,
    }


def impact_json(result: ImpactResult) -> dict[str, Any]:
    """The feed impact as plain data (``--format json``): counts and pseudonymous alerts."""
    labels = result.labels
    return {
        "feed": result.feed,
        "old": result.old,
        "new": result.new,
        "days": result.days,
        "period": list(result.period),
        "history": dataclasses.asdict(result.history),
        "domains": {"added": result.added_domains, "removed": result.removed_domains},
        "events": {
            "in_period": labels.events,
            "no_longer_matched": labels.unmatched,
            "no_longer_matched_domains": labels.unmatched_domains,
            "categories_changed": [
                {"old": o, "new": n, "events": v} for (o, n), v in labels.recategorised.items()
            ],
            "stored_under_other_labels": labels.relabelled_in_store,
        },
        "rules": _rules_json(result.comparison),
        "alerts": _changes_json(result.comparison, result.setting),
        "additions_assessed": result.retro_found is not None,
        "additions_found": (
            None
            if result.retro_found is None
            else {"messages": result.retro_found[0], "domains": result.retro_found[1]}
        ),
        "limits": result.limits,
        "notes": result.notes,
        "written": False,
    }


def _n(value: int, one: str, many: str | None = None) -> str:
    return f"{value:,} {one if value == 1 else (many or one + 's')}"


def _rule_table(comparison: Comparison, before: str, after: str, with_policy: bool) -> list[str]:
    header = [*(["policy"] if with_policy else []), "rule", before, after, "added", "removed",
              "changed", "unchanged"]  # fmt: skip
    rows = [
        [*([r.policy] if with_policy else []), r.rule_id, str(r.before), str(r.after),
         str(r.added), str(r.removed), str(r.changed), str(r.unchanged)]
        for r in comparison.rules
    ]  # fmt: skip
    return ["  " + line for line in aligned(header, rows)]


def _change_lines(
    title: str,
    changes: Sequence[AlertChange],
    setting: Setting,
    with_policy: bool,
) -> list[str]:
    """A titled table of alerts (nothing when there are none); for changed ones, then
    what changed in each, as ``messages 3 -> 5``."""
    if not changes:
        return []
    header = [*(["policy"] if with_policy else []), "rule", "org unit", "trigger", "episode",
              "days", "messages", "people", "stored"]  # fmt: skip
    rows, differences = [], []
    for change in changes:
        record = _alert_record(change, setting)
        stored = record["stored_alert"]
        episode = f"{record['first_day']} to {record['last_day']}" + (
            " (ended)" if record["ended"] else ""
        )
        rows.append(
            [*([record["policy"]] if with_policy else []), record["rule"],
             record["org_unit"], record["trigger_day"], episode, str(record["days"]),
             str(record["messages"]), str(record["people"]),
             f"alert {stored}" if stored is not None else "-"]
        )  # fmt: skip
        if "was" in record:
            parts = [
                f"{name.replace('_', ' ')} {was} -> {record[name]}"
                for name, was in record["was"].items()
            ]
            differences.append(
                f"    {record['rule']} {record['org_unit']} (trigger {record['trigger_day']}): "
                + "; ".join(parts)
            )
    lines = ["", title, *("  " + line for line in aligned(header, rows))]
    if differences:
        lines += ["  what changed:", *differences]
    return lines


def _history_line(history: History) -> str:
    if history.first_day is None:
        return "Stored history: none yet."
    return (
        f"Stored history: {history.first_day} to {history.last_day}, "
        f"{_n(history.events, 'matched event')} "
        f"(the store keeps {history.events_days} days of events); evaluated as of {history.as_of}."
    )


def _tail(limits: list[str], notes: list[str]) -> list[str]:
    out = []
    if limits:
        out += ["", "History limits:", *(f"  - {line}" for line in limits)]
    if notes:
        out += ["", "Notes:", *(f"  - {line}" for line in notes)]
    out += ["", "Nothing was written: the store was read only."]
    return out


def backtest_table(result: BacktestResult) -> str:
    """The backtest for a person: counts per rule, then each added, removed or changed
    alert (pseudonymous aggregates: unit, days, messages), the limits and notes."""
    c, s = result.candidate, result.current
    against = (
        f"the configured version {s.version} ({s.status})"
        if s is not None
        else "nothing (no configured policy has this id)"
    )
    lines = [
        f"Backtest of policy {c.id} version {c.version} ({c.status}) from {result.path}",
        f"against {against}, both evaluated the same way over the same stored events.",
        _history_line(result.history),
    ]
    if result.since:
        lines.append(f"Shown: the episodes that reach {result.since} or later.")
    lines += ["", *_rule_table(result.comparison, "configured", "this version", False)]
    comparison = result.comparison
    lines += _change_lines(
        "Added: alerts only this version raises", comparison.of("added"), result.setting, False
    )
    lines += _change_lines(
        "Removed: alerts only the configured version raises",
        comparison.of("removed"), result.setting, False,
    )  # fmt: skip
    lines += _change_lines(
        "Changed: the same episode with other figures",
        comparison.of("changed"), result.setting, False,
    )  # fmt: skip
    if not any(c.change != "unchanged" for c in comparison.changes):
        lines += ["", "No difference: this version raises the same alerts as the configured one."]
    stored = result.stored
    versions = ", ".join(f"version {v}: {n}" for v, n in stored.by_version.items())
    text = f"Stored alerts of {c.id}: {stored.total}" + (f" ({versions})" if versions else "")
    if stored.total:
        text += (
            f"; the configured version, evaluated now, finds {stored.same} of them with the "
            "same figures"
            + (
                f" ({stored.differ} differ: evidence purged by retention, or the policy "
                "changed since the last run)"
                if stored.differ
                else ""
            )
        )
    lines += ["", text + "."]
    return "\n".join([*lines, *_tail(result.limits, result.notes)]) + "\n"


def impact_table(result: ImpactResult) -> str:
    """The feed impact for a person: what the change does to the period's matched events
    (counts), then to its alerts (as a backtest shows them), the limits and notes."""
    labels = result.labels
    first, last = result.period
    lines = [
        f"Impact of replacing feed {result.feed}: {result.old} -> {result.new}",
        f"on the stored matches and alerts of the last {result.days} days ({first} to {last}).",
        _history_line(result.history),
        "",
        f"The new version adds {_n(result.added_domains, 'domain')} and removes "
        f"{_n(result.removed_domains, 'domain')}.",
        f"Matched events of the period: {labels.events:,}.",
    ]
    if labels.unmatched:
        for reason, count in labels.unmatched.items():
            domains = labels.unmatched_domains.get(reason, 0)
            lines.append(
                f"  would no longer match ({reason}): {_n(count, 'event')}, {_n(domains, 'domain')}"
            )
    else:
        lines.append("  none would stop matching.")
    for (old, new), count in labels.recategorised.items():
        lines.append(f"  categories {old} -> {new}: {_n(count, 'event')}")
    lines += ["", "Alerts reaching the period, configured policies re-evaluated:"]
    lines += _rule_table(result.comparison, "old feed", "new feed", True)
    comparison = result.comparison
    lines += _change_lines(
        "Removed: alerts only the old version raises",
        comparison.of("removed"), result.setting, True,
    )  # fmt: skip
    lines += _change_lines(
        "Added: alerts only the new version raises",
        comparison.of("added"), result.setting, True,
    )  # fmt: skip
    lines += _change_lines(
        "Changed: the same episode with other figures",
        comparison.of("changed"), result.setting, True,
    )  # fmt: skip
    if not any(c.change != "unchanged" for c in comparison.changes):
        lines += ["", "No alert changes."]
    return "\n".join([*lines, *_tail(result.limits, result.notes)]) + "\n"
