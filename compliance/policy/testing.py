"""Running a policy's inline ``tests``: synthetic events in, the exact alerts expected out.

Needs no store, no key and no real data: test people are labels (``a``, ``b``) that
stand where pseudonyms would.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from compliance.alerts import Alert
from compliance.domains import DomainIndex, Label, normalise_domain, registrable_domain
from compliance.events import MINIMISED, status_of
from compliance.policy.evaluate import add_policy_domains, evaluate_policy
from compliance.policy.loader import LoadedPolicy
from compliance.policy.model import Expectation, PolicyTest
from compliance.policy.rules import RULE_KINDS


@dataclass
class TestOutcome:
    """The result of one inline test."""

    policy: str
    name: str
    path: str
    line: int | None
    passed: bool
    problems: list[str]


def _events(loaded: LoadedPolicy, test: PolicyTest) -> pd.DataFrame:
    policy = loaded.policy
    index = DomainIndex()
    for category, domains in test.feed.items():
        for raw in domains:
            domain = normalise_domain(raw)
            if domain:
                index.add(domain, Label(category, "test"))
    add_policy_domains(index, [policy])
    default_direction = "outbound" if policy.match.direction == "any" else policy.match.direction
    rows = []
    for n, event in enumerate(test.events):
        domain = normalise_domain(event.domain) or event.domain
        labels = index.lookup(domain)
        for i in range(event.count):
            rows.append(
                {
                    "event_key": n * 100_000 + i,
                    "timestamp": pd.Timestamp(event.day, tz="UTC")
                    + pd.Timedelta(hours=event.hour, seconds=i),
                    "day": event.day.isoformat(),
                    "source": "test",
                    "person": event.person,
                    "org_unit": event.org_unit,
                    "direction": event.direction or default_direction,
                    "domain": domain,
                    "reg_domain": registrable_domain(domain),
                    "categories": ";".join(sorted({lb.category for lb in labels})),
                    "feeds": ";".join(sorted({lb.feed for lb in labels})),
                    "status": status_of(event.status),
                    "size": 1000,
                    "epoch": "-",
                }
            )
    frame = pd.DataFrame(rows, columns=list(MINIMISED))
    return frame.astype(MINIMISED)


def _matches(expect: Expectation, alert: Alert) -> bool:
    return (
        expect.kind == alert.rule
        and (expect.person is None or expect.person == alert.person)
        and (expect.org_unit is None or expect.org_unit == alert.org_unit)
        and (expect.rule is None or expect.rule == alert.rule_id)
        and (expect.messages is None or expect.messages == alert.messages)
        and (expect.days is None or expect.days == alert.days)
    )


def _describe(alert: Alert) -> str:
    who = RULE_KINDS.get(alert.rule)().describe(alert)
    return (
        f"{alert.rule} alert ({alert.rule_id}) for {who} on {alert.trigger_day} "
        f"({alert.messages} messages on {alert.days} days)"
    )


def run_tests(loaded: LoadedPolicy) -> list[TestOutcome]:
    """Run every inline test of one policy."""
    outcomes = []
    for i, test in enumerate(loaded.policy.tests):
        alerts = evaluate_policy(
            loaded.policy.model_copy(update={"status": "active"}),
            _events(loaded, test),
            test.headcounts or None,
        )
        unmatched = list(alerts)
        problems = []
        for expect in test.expect:
            found = next((a for a in unmatched if _matches(expect, a)), None)
            if found is None:
                target = expect.person or expect.org_unit or "anyone"
                problems.append(f"expected a {expect.kind} alert for {target}; none was raised")
            else:
                unmatched.remove(found)
        problems.extend(f"unexpected {_describe(a)}" for a in unmatched)
        outcomes.append(
            TestOutcome(
                loaded.policy.id,
                test.name,
                str(loaded.path),
                loaded.line_of("tests", i),
                not problems,
                problems,
            )
        )
    return outcomes
