"""``kind: cluster``: an alert on an org unit where several people match."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from compliance.policy.fields import Count
from compliance.policy.rules.base import Figures, RuleKind, RuleModel


class ClusterRule(RuleModel):
    """Alert on an org unit where several people match."""

    kind: Literal["cluster"]
    min_people: Count = Field(ge=2, description="at least this many distinct people in one unit")
    same_domain: bool = Field(
        False, description="count only people who used the same registrable domain"
    )


class Cluster(RuleKind):
    """Distinct people of one org unit (and site, with ``same_domain``)."""

    name = "cluster"
    model = ClusterRule
    order = 20

    def keys(self, rule: ClusterRule) -> list[str]:
        return ["unit", "reg_domain"] if rule.same_domain else ["unit"]

    def ok(self, figures: Figures, rule: ClusterRule) -> Any:
        return figures.people >= rule.min_people
