"""``kind: person``: an alert on one pseudonymous person."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from compliance.policy.fields import Count, PositiveCount
from compliance.policy.rules.base import Figures, RuleKind, RuleModel

#: The person's own messages a window needs where replies count (``evidence:
#: conversation``) and a rule does not say: one message of theirs, however many replies
#: and newsletters follow it, is not repeated contact.
DEFAULT_MIN_SENT = 2


class PersonRule(RuleModel):
    """Alert on one pseudonymous person."""

    kind: Literal["person"]
    min_messages: Count = Field(1, ge=1, description="at least this many matching messages")
    min_days: Count = Field(1, ge=1, description="on at least this many distinct days")
    min_sent: PositiveCount | None = Field(
        None,
        description="of them, at least this many the person sent (or tried to) "
        "themselves: a site's replies confirm an exchange, never make one message "
        "repeated contact (default: 2 with evidence: conversation, at most min_messages)",
    )

    @model_validator(mode="after")
    def _fits_window(self) -> PersonRule:
        if self.min_days > self.window:
            raise ValueError(f"min_days ({self.min_days}) exceeds the window ({self.window} days)")
        if self.min_days > self.min_messages:
            raise ValueError("min_days cannot exceed min_messages")
        if self.min_sent is not None and self.min_sent > self.min_messages:
            raise ValueError("min_sent cannot exceed min_messages")
        return self

    def for_evidence(self, evidence: str) -> PersonRule:
        """This rule as a policy with ``evidence`` evaluates it: with ``conversation``,
        an unset ``min_sent`` is :data:`DEFAULT_MIN_SENT` (never more than
        ``min_messages``); with ``outbound`` every message is the person's own, and with
        ``any`` the author chose to count received mail, so it stays unset."""
        if self.min_sent is not None or evidence != "conversation":
            return self
        return self.model_copy(update={"min_sent": min(DEFAULT_MIN_SENT, self.min_messages)})


class Person(RuleKind):
    """Messages and days of one person's evidence."""

    name = "person"
    model = PersonRule
    order = 10
    on_person = True

    def keys(self, rule: PersonRule) -> list[str]:
        return ["person"]

    def ok(self, figures: Figures, rule: PersonRule) -> Any:
        met = (figures.messages >= rule.min_messages) & (figures.days >= rule.min_days)
        if rule.min_sent is not None:
            met = met & (figures.sent >= rule.min_sent)
        return met
