"""Reports for a broad audience: differentially private counts per org unit, no alerts.

Leadership and other broad audiences see, per reported org unit, how many people
exchanged mail with listed sites and how many such messages there were, with noise
from OpenDP's Laplace mechanism (discrete, on integers). One person changes the
people count of one unit by at most one per key epoch, and the message count by at
most ``message_cap`` per epoch (each person's messages are capped first), so the
noise scales are set from those sensitivities and the release's epsilon, and
OpenDP's own privacy map confirms the loss. The units listed come from the
directory's structure, never from the data, so a unit's presence reveals nothing.

Each release spends its epsilon from a budget kept in the store: the released
numbers are stored with it, so re-rendering the same report spends nothing, and a
release past the budget is refused.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from compliance import __version__
from compliance.errors import PrivacyBudgetError
from compliance.events import UNKNOWN_UNIT
from compliance.privacy import ROOT_UNIT, epoch_of, rollup_map
from compliance.reports import _env
from compliance.store import Store


@dataclass(frozen=True)
class BroadRelease:
    """What a broad report shows: noisy counts only."""

    first_day: str
    last_day: str
    epsilon: float
    message_cap: int
    units: list[dict[str, Any]]
    spent: float
    budget: float
    budget_days: int
    #: per policy with deterrence notices, days after the notice and arm: noisy counts of
    #: the people whose follow-up had passed and of those with further evidence
    notices: list[dict[str, Any]] = field(default_factory=list)

    title: str = "Acceptable-use overview"

    @property
    def people(self) -> int:
        """Sum of the noisy people counts (post-processing: no extra privacy loss)."""
        return sum(int(u["people"]) for u in self.units)

    @property
    def matched(self) -> int:
        """Sum of the noisy message counts."""
        return sum(int(u["matched"]) for u in self.units)


def noisy_counts(values: list[int], sensitivity: int, epsilon: float) -> list[int]:
    """Integer counts with discrete Laplace noise for an L1 ``sensitivity`` and ``epsilon``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)),
        dp.l1_distance(T=int),
        scale=sensitivity / epsilon,
    )
    loss = measurement.map(sensitivity)  # type: ignore[no-untyped-call]
    if loss > epsilon * (1 + 1e-9):
        raise PrivacyBudgetError(f"the noise would spend {loss} > {epsilon}")  # pragma: no cover
    return [max(0, int(v)) for v in measurement([int(v) for v in values])]


def epochs_between(first: str, last: str, rotation: str) -> int:
    """How many key epochs a period touches (a person has one pseudonym in each)."""
    day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    seen = set()
    while day <= end:
        seen.add(epoch_of(day.isoformat(), rotation))
        day += dt.timedelta(days=1)
    return len(seen)


def release_units(headcounts: Mapping[str, int], min_group_size: int) -> list[str]:
    """The units a broad report lists: the directory's, after roll-up, plus 'unknown'."""
    mapping = rollup_map(headcounts, min_group_size) if headcounts else {}
    units = {mapping.get(u, u) for u in headcounts} or {ROOT_UNIT}
    return [*sorted(units), UNKNOWN_UNIT]


def compute_release(
    events: pd.DataFrame,
    headcounts: Mapping[str, int],
    min_group_size: int,
    first: str,
    last: str,
    epsilon: float,
    message_cap: int,
    rotation: str,
    effect: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Noisy people and (capped) message counts per listed unit; with ``effect`` (the
    deterrence notices' follow-up counts per policy, window and arm), noisy counts of it
    too, tagged by ``policy``. The epsilon is split evenly between the vectors
    (sequential composition)."""
    units = release_units(headcounts, min_group_size)
    mapping = rollup_map(headcounts, min_group_size) if headcounts else {}
    people = dict.fromkeys(units, 0)
    messages = dict.fromkeys(units, 0)
    window = events[(events["day"] >= first) & (events["day"] <= last)]
    if len(window):
        per_person = (
            window.groupby(["person", "org_unit"]).size().clip(upper=message_cap).reset_index()
        )
        for unit, count in zip(per_person["org_unit"], per_person[0], strict=True):
            shown = mapping.get(str(unit), str(unit))
            if shown not in people:  # a unit the directory no longer lists
                shown = UNKNOWN_UNIT
            people[shown] += 1
            messages[shown] += int(count)
    epochs = epochs_between(first, last, rotation)
    share = epsilon / (3 if effect else 2)
    noisy_people = noisy_counts([people[u] for u in units], epochs, share)
    noisy_messages = noisy_counts([messages[u] for u in units], epochs * message_cap, share)
    out: list[dict[str, Any]] = [
        {"unit": u, "people": p, "matched": m}
        for u, p, m in zip(units, noisy_people, noisy_messages, strict=True)
    ]
    if effect:
        out.extend(noisy_effect(effect, epochs, share))
    return out


def noisy_effect(
    effect: Sequence[Mapping[str, Any]], epochs: int, epsilon: float
) -> list[dict[str, Any]]:
    """The notices' follow-up counts with discrete Laplace noise. In one key epoch a person
    is decided once per policy, in one arm, and counts in each window's ``people`` and
    ``continued``: an L1 sensitivity of two per window and policy. Noisy counts are then
    clipped to 0 <= continued <= people (post-processing: no further loss)."""
    windows = {int(r["window"]) for r in effect}
    policies = {str(r["policy"]) for r in effect}
    sensitivity = 2 * len(windows) * len(policies) * epochs
    values = [int(v) for r in effect for v in (r["people"], r["continued"])]
    noisy = noisy_counts(values, sensitivity, epsilon)
    out = []
    for i, row in enumerate(effect):
        people = max(0, noisy[2 * i])
        continued = min(max(0, noisy[2 * i + 1]), people)
        out.append(
            {
                "policy": str(row["policy"]),
                "window": int(row["window"]),
                "arm": str(row["arm"]),
                "people": people,
                "continued": continued,
            }
        )
    return out


def release(
    store: Store,
    report: str,
    events: pd.DataFrame,
    headcounts: Mapping[str, int],
    min_group_size: int,
    first: str,
    last: str,
    settings: BroadSettings,
    actor: str,
    effect: Sequence[Mapping[str, Any]] = (),
) -> BroadRelease:
    """The release for ``report`` over ``[first, last]``: stored, or new within budget
    (``effect``: the notices' follow-up counts, released with noise too)."""
    period = f"{first}..{last}"
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.budget_days)).isoformat()
    with store.transaction():
        made = store.ledger.release(report, period)
        spent = store.ledger.spent_since(since)
        if made is not None:
            epsilon, units = made
            return _made(first, last, epsilon, settings, units, spent)
        refused = spent + settings.epsilon > settings.budget * (1 + 1e-9)
        if not refused:
            units = compute_release(
                events, headcounts, min_group_size, first, last,
                settings.epsilon, settings.message_cap, settings.rotation, effect,
            )  # fmt: skip
            store.ledger.record(report, period, settings.epsilon, units)
            spent += settings.epsilon
            store.audit.append(
                actor,
                "dp.release",
                {
                    "report": report,
                    "period": period,
                    "epsilon": settings.epsilon,
                    "spent": spent,
                    "budget": settings.budget,
                },
            )
    if refused:
        store.audit.append(
            actor,
            "dp.refused",
            {"report": report, "period": period, "epsilon": settings.epsilon, "spent": spent},
        )
        raise PrivacyBudgetError(
            f"the broad report {report} for {period} would spend epsilon "
            f"{settings.epsilon:g}, but {spent:g} of the budget {settings.budget:g} for "
            f"{settings.budget_days} days is spent: no broad report is released until "
            "older releases leave the budget window"
        )
    return _made(first, last, settings.epsilon, settings, units, spent)


def _made(
    first: str,
    last: str,
    epsilon: float,
    settings: BroadSettings,
    released: list[dict[str, Any]],
    spent: float,
) -> BroadRelease:
    """A release from its stored rows: units, then the notices' rows (tagged ``policy``)."""
    return BroadRelease(
        first, last, epsilon, settings.message_cap,
        [r for r in released if "unit" in r], spent, settings.budget, settings.budget_days,
        notices=[r for r in released if "policy" in r],
    )  # fmt: skip


@dataclass(frozen=True)
class BroadSettings:
    """The configured privacy parameters of broad reports."""

    epsilon: float
    budget: float
    budget_days: int
    message_cap: int
    rotation: str


def render_broad_html(data: BroadRelease) -> str:
    """The broad report as self-contained HTML."""

    return _env.get_template("broad.html.j2").render(r=data, version=__version__)


def render_broad_json(data: BroadRelease) -> str:
    """The broad report as JSON."""
    return json.dumps(
        {
            "title": data.title,
            "audience": "broad",
            "first_day": data.first_day,
            "last_day": data.last_day,
            "differential_privacy": {
                "mechanism": "discrete Laplace (OpenDP)",
                "epsilon": data.epsilon,
                "message_cap_per_person": data.message_cap,
                "budget": data.budget,
                "budget_days": data.budget_days,
                "spent": data.spent,
            },
            "org_units": data.units,
            "total": {"people": data.people, "matched": data.matched},
            "notice_effect": data.notices,
        },
        indent=2,
    )
