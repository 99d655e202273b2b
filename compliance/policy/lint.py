"""Warnings for valid policies that are likely to hurt someone or do nothing."""

from __future__ import annotations

from compliance.policy.loader import LoadedPolicy
from compliance.policy.rules import kind_of

MIN_SAFE_GROUP = 5


def warnings_for(loaded: LoadedPolicy) -> list[str]:
    """Problems that do not make the policy invalid, each located at file:line."""
    policy = loaded.policy
    out: list[str] = []
    for i, rule in enumerate(policy.rules):
        where = f"{loaded.path}:{loaded.line_of('rules', i)}"
        out.extend(f"{where}: rule {policy.rule_id(i)!r} {w}" for w in kind_of(rule).lint(rule))
    if policy.match.evidence == "any":
        out.append(
            f"{loaded.path}:{loaded.line_of('match', 'evidence')}: evidence: any counts mail a "
            "person only received: anyone can be sent spam or be written to by a site they "
            "never contacted, so an alert could accuse someone of what others did to them "
            "(use conversation: replies to their own messages still count)"
        )
    if policy.match.direction == "inbound":
        out.append(
            f"{loaded.path}:{loaded.line_of('match', 'direction')}: direction: inbound keeps "
            "only received mail, which counts only as replies to a person's own messages; "
            "with it nothing a person sent is seen, so the policy finds almost nothing"
        )
    if policy.privacy.min_group_size < MIN_SAFE_GROUP:
        out.append(
            f"{loaded.path}:{loaded.line_of('privacy', 'min_group_size')}: min_group_size "
            f"{policy.privacy.min_group_size} is below {MIN_SAFE_GROUP}: small units may "
            "single people out"
        )
    if not policy.tests:
        out.append(f"{loaded.path}: the policy has no tests")
    return out
