"""``kind: person``: an alert on one pseudonymous person."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from compliance.policy.fields import Count
from compliance.policy.rules.base import Figures, RuleKind, RuleModel


class PersonRule(RuleModel):
    """Alert on one pseudonymous person."""

    kind: Literal["person"]
    min_messages: Count = Field(1, ge=1, description="at least this many matching messages")
    min_days: Count = Field(1, ge=1, description="on at least this many distinct days")

    @model_validator(mode="after")
    def _fits_window(self) -> PersonRule:
        if self.min_days > self.window:
            raise ValueError(f"min_days ({self.min_days}) exceeds the window ({self.window} days)")
        if self.min_days > self.min_messages:
            raise ValueError("min_days cannot exceed min_messages")
        return self


class Person(RuleKind):
    """Messages and days of one person's evidence."""

    name = "person"
    model = PersonRule
    order = 10
    on_person = True

    def keys(self, rule: PersonRule) -> list[str]:
        return ["person"]

    def ok(self, figures: Figures, rule: PersonRule) -> Any:
        return (figures.messages >= rule.min_messages) & (figures.days >= rule.min_days)
