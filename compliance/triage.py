"""Triage of alerts: states, dismissal reasons, notes without names, bulk steps, and how
effective each policy's rules are.

An alert moves ``new → in_review → confirmed | dismissed → resolved``
(:data:`TRANSITIONS`); no other move is allowed. A dismissal names one reason of
:data:`DISMISS_REASONS` (``other`` needs a note). Any step may carry a note and assign
the alert to a reviewer. A note must not name a monitored person: one with a mail
address, the full name of a person of the directory or the local part of a listed
address is refused (see :class:`PeopleNames`), and the audit log records only its length.

A step applies to one alert or to every alert of a selection (bulk), all or nothing:
every alert is checked inside one transaction, and if any cannot take the step nothing
changes and the refusal lists each alert and why. Every step is written to the audit
log as ``alert.triage``, every refusal as ``alert.triage.refused``.

Dismissing with ``wrong-listing`` comes with the exact ``exclude_domains`` change for the
policy file (:func:`exclude_suggestions`); nothing is edited.

:func:`stats` turns :meth:`compliance.store.Store.triage.facts` into effectiveness
figures per policy, rule and ISO week (precision, top dismissal reasons, median time to
triage), and :func:`change_since` tells what changed in an alert since the previous
report. Neither reads the store itself, so reports can reuse them. No SQL here.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from compliance.alerts import STATES, Alert
from compliance.directory import Directory
from compliance.errors import ComplianceError, ExitCode
from compliance.policy.loader import LoadedPolicy
from compliance.policy.model import check_domains as check_policy_domains
from compliance.store import AlertFilter, Store
from connectors.directory import (
    load_directory_names,
    local_part_phrases,
    name_phrase,
)

#: The moves a triage step may make, from each state.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("in_review",),
    "in_review": ("confirmed", "dismissed"),
    "confirmed": ("resolved",),
    "dismissed": ("resolved",),
    "resolved": (),
}
#: States that are a decision on the alert (counted for precision).
DECISIONS = ("confirmed", "dismissed")

#: Why an alert may be dismissed, for help texts and reports.
DISMISS_REASONS: dict[str, str] = {
    "received-only": "the person only received mail from the site, or it was spam",
    "business-need": "a legitimate business need (a supplier, an investigation, a sanctioned "
    "contact)",
    "wrong-listing": "the domain is a look-alike, or the feed or policy lists it wrongly",
    "duplicate": "another alert already covers the same activity",
    "other": "another reason, explained in the note (a note is required)",
}

#: The longest note kept with a step.
MAX_NOTE = 2000

#: A mail address anywhere in a text.
ADDRESS = re.compile(r"[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+")


class TriageError(ComplianceError):
    """A triage step the workflow does not allow; nothing was changed. The message names
    the alerts, their states and the allowed next states, never a person."""

    exit_code = ExitCode.TRIAGE


# --- notes ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class PeopleNames:
    """Phrases that would name a person of the directory in free text: full names and the
    local parts of listed addresses (normalised by
    :func:`connectors.directory.name_phrase`).

    They are compared against, and never stored, logged or printed (the ``repr`` shows
    only how many there are). Matching is on whole words and phrases, case and accents
    ignored, extra spaces and punctuation ignored: ``"Alice  Baker"`` and
    ``"alice.baker"`` both name Alice Baker. A lone surname or given name is not refused:
    common surnames are common words ("Baker", "Long", "Young"), and refusing them would
    refuse ordinary notes; so "the baker site" passes, "Alice Baker" does not. A local part
    is a single word and is refused as one (``sales`` when ``sales@`` is listed).

    From a directory CSV, names come from ``displayName``, ``givenName`` and ``surname``.
    From an Entra (Graph) directory no name is ever requested, so only addresses and their
    local parts are checked there.
    """

    phrases: frozenset[str] = frozenset()
    names_checked: bool = False
    _longest: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        longest = max((len(p.split()) for p in self.phrases), default=0)
        object.__setattr__(self, "_longest", longest)

    def __repr__(self) -> str:
        return f"PeopleNames({len(self.phrases)} phrases, names_checked={self.names_checked})"

    @classmethod
    def of(cls, directory: Directory | Path | None) -> PeopleNames:
        """The phrases of a configured directory: a CSV (names and local parts), an Entra
        directory already loaded (local parts only), or none (nothing beyond addresses)."""
        if directory is None:
            return cls()
        if isinstance(directory, Path):
            return cls(frozenset(load_directory_names(directory)), names_checked=True)
        return cls(frozenset(local_part_phrases(directory.people)), names_checked=False)

    def named_in(self, text: str, min_words: int = 1) -> bool:
        """True when ``text`` holds one of the phrases (of at least ``min_words`` words: 2
        for full names only) as whole words."""
        if not self.phrases:
            return False
        words = name_phrase(text).split()
        for start in range(len(words)):
            for length in range(min_words, min(self._longest, len(words) - start) + 1):
                if " ".join(words[start : start + length]) in self.phrases:
                    return True
        return False


def text_problem(text: str, names: PeopleNames | None, what: str = "note") -> str | None:
    """Why ``text`` may not be kept (an address, or a person of the directory), or None.

    The message never quotes the text. Percent-encoding is read first
    (``alice%2Ebaker%40corp.example`` is an address).
    """
    text = unquote(text)
    if ADDRESS.search(text):
        return f"the {what} must not contain a mail address: refer to the alert, not to a person"
    if names is not None and names.named_in(text):
        return f"the {what} names a person of the directory: refer to the alert, not to a person"
    return None


# --- steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One triage step, as asked for."""

    to_state: str
    reason: str | None = None  # a dismissal reason (DISMISS_REASONS)
    note: str | None = None
    assignee: str | None = None


@dataclass(frozen=True)
class Change:
    """One alert moved by a step."""

    alert_id: int
    from_state: str
    to_state: str
    reason: str | None = None
    assignee: str | None = None

    def describe(self) -> str:
        """``alert 3: in_review -> dismissed (wrong-listing), assigned to lead``."""
        text = f"alert {self.alert_id}: {self.from_state} -> {self.to_state}"
        if self.reason:
            text += f" ({self.reason})"
        if self.assignee:
            text += f", assigned to {self.assignee}"
        return text


def allowed_next(state: str) -> tuple[str, ...]:
    """The states an alert in ``state`` may move to."""
    return TRANSITIONS.get(state, ())


def queue_day(store: Store) -> str:
    """The day the triage queue stands at: that of the latest scheduled evaluation (alerts
    it raised for later days wait), or today."""
    return store.meta.evaluated_through() or dt.datetime.now(dt.UTC).date().isoformat()


def not_actionable(alert: Alert, today: str) -> str | None:
    """Why nobody may act on ``alert`` yet, or None: a draft policy's findings never alert,
    and an alert held back by its policy's daily limit waits for its day (``today``, as
    :func:`queue_day` gives it)."""
    if alert.draft:
        return (
            f"alert {alert.id} is a finding of a draft policy: drafts are evaluated and "
            "reported, never alerted, so it cannot be triaged or have a case"
        )
    if is_waiting(alert, today):
        return (
            f"alert {alert.id} waits until {alert.raised_day} (its policy's "
            "max_alerts_per_day): it cannot be triaged or have a case before then"
        )
    return None


def transition_problem(alert: Alert, to_state: str, today: str) -> str | None:
    """Why ``alert`` cannot move to ``to_state`` on ``today``, or None when it can."""
    if (why := not_actionable(alert, today)) is not None:
        return why
    allowed = allowed_next(alert.state)
    if to_state in allowed:
        return None
    nxt = ", ".join(allowed) if allowed else "none, it is final"
    return f"alert {alert.id} is {alert.state}: it cannot move to {to_state} (allowed next: {nxt})"


def step_problems(step: Step, names: PeopleNames | None = None) -> list[str]:
    """What is wrong with a step whatever the alert: its state, reason, note, assignee."""
    problems = []
    if step.to_state not in STATES:
        problems.append(f"unknown state {step.to_state!r}: one of {', '.join(STATES)}")
    if step.to_state == "dismissed":
        if step.reason is None:
            problems.append(
                "a dismissal needs a reason: one of " + ", ".join(DISMISS_REASONS) + " (--reason)"
            )
        elif step.reason not in DISMISS_REASONS:
            problems.append(
                f"unknown dismissal reason {step.reason!r}: one of {', '.join(DISMISS_REASONS)}"
            )
        elif step.reason == "other" and not (step.note or "").strip():
            problems.append("the dismissal reason 'other' needs a note saying why (--note)")
    elif step.reason is not None:
        problems.append("a reason is given only when dismissing; say more with a note (--note)")
    if step.note is not None:
        if not step.note.strip():
            problems.append("the note is empty")
        elif len(step.note) > MAX_NOTE:
            problems.append(f"the note is longer than {MAX_NOTE} characters")
        else:
            found = text_problem(step.note, names)
            if found:
                problems.append(found)
    if step.assignee is not None:
        problems.extend(_assignee_problems(step.assignee, names))
    return problems


def _assignee_problems(assignee: str, names: PeopleNames | None) -> list[str]:
    """The reviewer to assign is a user name (as ``accountability.approvers`` lists them):
    never a mail address or a person's full name written out, which would put into the
    store and the audit log what no note may carry. A user name has no space and is not
    checked against the directory: a reviewer's (``alice.baker``, ``ethics-lead``) is
    often their own mailbox's local part."""
    if not assignee.strip():
        return ["the reviewer to assign is empty"]
    if "@" in assignee or ADDRESS.search(assignee):
        return ["the reviewer to assign must be a user name, not a mail address"]
    spelled_out = any(c.isspace() for c in assignee.strip())
    if spelled_out and names is not None and names.named_in(assignee, min_words=2):
        return ["the reviewer to assign must be a user name, not a person's name"]
    return []


class _Refused(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def triage(
    store: Store,
    alerts: Sequence[Alert] | Sequence[int],
    step: Step,
    actor: str,
    names: PeopleNames | None = None,
) -> list[Change]:
    """Apply one step to every alert given, all or nothing, in one transaction.

    The alerts are read again inside the transaction, so a step taken meanwhile by
    someone else is seen. Each step is logged as ``alert.triage`` (the note's length,
    never its text); a refusal as ``alert.triage.refused`` with why, and raised as a
    :class:`TriageError` listing every alert that cannot take the step.
    """
    ids = [a.id if isinstance(a, Alert) else int(a) for a in alerts]
    if any(i is None for i in ids):
        raise ValueError("triage needs stored alerts")
    wanted = sorted({int(i) for i in ids if i is not None})
    note = step.note.strip() if step.note is not None else None
    assignee = step.assignee.strip() if step.assignee is not None else None
    step = Step(step.to_state, step.reason, note, assignee)
    changes: list[Change] = []
    try:
        problems = step_problems(step, names)
        if not wanted:
            problems.append("no alert matches the selection: nothing to do")
        if problems:
            raise _Refused(problems)
        with store.transaction():
            current = {a.id: a for a in store.alerts.find(AlertFilter(ids=tuple(wanted)))}
            today = queue_day(store)
            for alert_id in wanted:
                alert = current.get(alert_id)
                if alert is None:
                    problems.append(f"there is no alert {alert_id}")
                elif (why := transition_problem(alert, step.to_state, today)) is not None:
                    problems.append(why)
            if problems:
                raise _Refused(problems)
            for alert_id in wanted:
                changes.append(
                    record_step(
                        store, current[alert_id], step.to_state, actor, step.reason, note, assignee
                    )
                )
    except _Refused as refused:
        store.audit.append(
            actor,
            "alert.triage.refused",
            {"alerts": wanted, "to": step.to_state, "why": refused.problems},
        )
        raise TriageError(_refusal_message(refused.problems, len(wanted))) from None
    return changes


def _refusal_message(problems: list[str], selected: int) -> str:
    if len(problems) == 1:
        return problems[0] + "; nothing was changed"
    head = "the step was refused, nothing was changed"
    if selected > 1:
        head += f" ({len(problems)} problem(s) among {selected} alerts)"
    return head + ":\n" + "\n".join(f"  {p}" for p in problems)


def record_step(
    store: Store,
    alert: Alert,
    to_state: str,
    actor: str,
    reason: str | None = None,
    note: str | None = None,
    assignee: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Change:
    """Record one checked step and log it. Call inside a transaction."""
    if alert.id is None:
        raise ValueError("triage needs stored alerts")
    store.triage.record(alert.id, actor, alert.state, to_state, reason, note, assignee)
    store.audit.append(
        actor,
        "alert.triage",
        {
            "alert": alert.id,
            "from": alert.state,
            "to": to_state,
            "reason": reason,
            "assignee": assignee,
            "note_chars": len(note) if note else 0,
            **(extra or {}),
        },
    )
    return Change(alert.id, alert.state, to_state, reason, assignee)


def resolve_for_case(
    store: Store, alert_id: int, case_id: int, outcome: str, actor: str
) -> Change | None:
    """Move a case's alert to ``resolved`` from whatever state it has, as a recorded and
    logged step with the reason ``case N closed: OUTCOME`` (None when it is resolved
    already, or gone). Call inside the transaction that closes the case."""
    alert = store.alerts.get(alert_id)
    if alert is None or alert.state == "resolved":
        return None
    return record_step(store, alert, "resolved", actor, f"case {case_id} closed: {outcome}")


def assignee_of(store: Store, alert: Alert) -> str | None:
    """The reviewer an alert is assigned to (the latest step that assigned one)."""
    if "assignee" in alert.extra:
        value = alert.extra["assignee"]
        return None if value is None else str(value)
    if alert.id is None:
        return None
    assigned = [s["assignee"] for s in store.triage.history(alert.id) if s["assignee"]]
    return str(assigned[-1]) if assigned else None


def is_waiting(alert: Alert, today: str) -> bool:
    """True when the alert is raised on a later day than ``today`` (a daily limit)."""
    return alert.waits_after(today)


# --- wrong listings ------------------------------------------------------------------


@dataclass(frozen=True)
class ExcludeSuggestion:
    """The ``exclude_domains`` change that would stop a policy matching some domains.

    ``path`` is None when the policy is not among the configured ones; ``add_key`` when
    the policy has no ``exclude_domains`` yet (``line`` is then that of ``match:``);
    ``block`` when the current value is a block list below the key, to be replaced.
    """

    policy: str
    domains: list[str]
    path: Path | None = None
    line: int | None = None
    current: str = ""
    new: str = ""
    add_key: bool = False
    block: bool = False

    @property
    def already(self) -> bool:
        """True when the policy excludes every domain already."""
        return self.path is not None and not self.add_key and self.current == self.new

    def describe(self) -> str:
        """Where and what to change, e.g.
        ``policies/escort-ads.yaml:34: exclude_domains: [] -> exclude_domains: [x.test]``."""
        listed = ", ".join(self.domains)
        if self.path is None:
            return (
                f"policy {self.policy} is not among the configured policies: add {listed} "
                "to its match.exclude_domains by hand"
            )
        where = f"{self.path}:{self.line}"
        if self.already:
            return f"{where}: {self.current} (already excludes {listed}; nothing to change)"
        if self.add_key:
            return f"{where}: {self.current} -> add below it: {self.new}"
        if self.block:
            return f"{where}: {self.current} (and the list below it) -> {self.new}"
        return f"{where}: {self.current} -> {self.new}"


def check_domains(values: Iterable[str]) -> list[str]:
    """Domains given by hand (``--domain``), checked as a policy's own lists are."""
    try:
        return check_policy_domains(values, narrowing=True)
    except ValueError as exc:
        raise TriageError(str(exc)) from None


def exclude_suggestions(
    alerts: Iterable[Alert],
    policies: Sequence[LoadedPolicy],
    domains: Sequence[str] | None = None,
) -> list[ExcludeSuggestion]:
    """Per policy of the alerts, the ``exclude_domains`` line as it is and as it would be
    with the alerts' registrable domains (or ``domains``, when given) added. Reads the
    policy files' lines; edits nothing."""
    by_policy: dict[str, list[str]] = {}
    for alert in alerts:
        wanted = by_policy.setdefault(alert.policy, [])
        for domain in domains if domains else alert.domains:
            if domain not in wanted:
                wanted.append(domain)
    loaded = {lp.policy.id: lp for lp in policies}
    out = []
    for policy_id, wanted in sorted(by_policy.items()):
        lp = loaded.get(policy_id)
        if lp is None:
            out.append(ExcludeSuggestion(policy_id, wanted))
            continue
        out.append(_suggestion(lp, wanted))
    return out


def _suggestion(lp: LoadedPolicy, wanted: list[str]) -> ExcludeSuggestion:
    existing = list(lp.policy.match.exclude_domains)
    merged = existing + [d for d in wanted if d not in existing]
    new = f"exclude_domains: [{', '.join(merged)}]"
    text = lp.path.read_text(encoding="utf-8-sig").splitlines()
    key = ("match", "exclude_domains")
    if key in lp.lines:
        line = lp.lines[key]
        current = text[line - 1].strip() if 0 < line <= len(text) else "exclude_domains:"
        block = current.split("#", 1)[0].rstrip().endswith(":")
        same = merged == existing
        return ExcludeSuggestion(
            lp.policy.id, wanted, lp.path, line, current, current if same else new, block=block
        )
    line = lp.lines.get(("match",)) or lp.line_of("match") or 1
    current = text[line - 1].strip() if 0 < line <= len(text) else "match:"
    indent = "  "
    return ExcludeSuggestion(lp.policy.id, wanted, lp.path, line, current, indent + new, True)


# --- change since the previous report -------------------------------------------------

# --- effectiveness -------------------------------------------------------------------


@dataclass(frozen=True)
class StatsRow:
    """Effectiveness of one rule of one policy, in one ISO week of raising (``week``) or
    over the whole period kept (``week`` None)."""

    policy: str
    rule_id: str
    week: str | None
    raised: int
    confirmed: int
    dismissed: int
    precision: float | None  # confirmed / (confirmed + dismissed); None before a decision
    top_reasons: list[tuple[str, int]]  # up to 3 dismissal reasons, most frequent first
    median_hours: float | None  # stored to first decision, hours; None before a decision

    @property
    def undecided(self) -> int:
        """Alerts neither confirmed nor dismissed (yet)."""
        return self.raised - self.confirmed - self.dismissed

    @property
    def period(self) -> str:
        """The week, or ``all`` for the whole period."""
        return self.week or "all"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "policy": self.policy,
            "rule": self.rule_id,
            "week": self.week,
            "raised": self.raised,
            "confirmed": self.confirmed,
            "dismissed": self.dismissed,
            "undecided": self.undecided,
            "precision": None if self.precision is None else round(self.precision, 4),
            "top_dismissal_reasons": [{"reason": r, "count": n} for r, n in self.top_reasons],
            "median_hours_to_triage": self.median_hours,
        }


def iso_week(day: str) -> str:
    """``2026-10-07`` is in ``2026-W41``; an empty or invalid day gives ``-``."""
    try:
        year, week, _ = dt.date.fromisoformat(day).isocalendar()
    except (TypeError, ValueError):
        return "-"
    return f"{year}-W{week:02d}"


def decision(fact: Mapping[str, Any]) -> str | None:
    """``confirmed``, ``dismissed`` or None: what triage decided on an alert, also once it
    has been resolved (a dismissal keeps its reason; a confirmation its decision time)."""
    state = fact.get("state")
    if state in DECISIONS:
        return str(state)
    if fact.get("reason"):
        return "dismissed"
    if fact.get("decided_at"):
        return "confirmed"
    return None


def _hours(fact: Mapping[str, Any]) -> float | None:
    try:
        stored = dt.datetime.fromisoformat(str(fact["created_at"]))
        decided = dt.datetime.fromisoformat(str(fact["decided_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    if (stored.tzinfo is None) != (decided.tzinfo is None):
        stored, decided = stored.replace(tzinfo=None), decided.replace(tzinfo=None)
    return (decided - stored).total_seconds() / 3600


def _row(policy: str, rule: str, week: str | None, facts: list[Mapping[str, Any]]) -> StatsRow:
    decided = [(f, decision(f)) for f in facts]
    confirmed = sum(1 for _, d in decided if d == "confirmed")
    dismissed = sum(1 for _, d in decided if d == "dismissed")
    reasons = Counter(str(f.get("reason")) for f, d in decided if d == "dismissed")
    top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:3]
    hours = [h for f, d in decided if d is not None and (h := _hours(f)) is not None]
    return StatsRow(
        policy=policy,
        rule_id=rule,
        week=week,
        raised=len(facts),
        confirmed=confirmed,
        dismissed=dismissed,
        precision=confirmed / (confirmed + dismissed) if confirmed + dismissed else None,
        top_reasons=top,
        median_hours=round(statistics.median(hours), 1) if hours else None,
    )


def stats(facts: Iterable[Mapping[str, Any]]) -> list[StatsRow]:
    """Effectiveness per policy, rule and ISO week of the raised day, each policy/rule
    followed by its whole-period row (``week`` None). ``facts`` as
    :meth:`compliance.store.Store.triage.facts` gives them: policy, rule_id, raised_day,
    state, reason (of a dismissal), created_at, decided_at (the first confirm or dismiss).
    """
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for fact in facts:
        key = (str(fact["policy"]), str(fact["rule_id"]))
        groups[key][iso_week(str(fact.get("raised_day") or ""))].append(fact)
    rows = []
    for (policy, rule), weeks in sorted(groups.items()):
        for week, week_facts in sorted(weeks.items()):
            rows.append(_row(policy, rule, week, week_facts))
        rows.append(_row(policy, rule, None, [f for w in weeks.values() for f in w]))
    return rows
