"""The alert record: what evaluation finds, the store keeps, triage acts on and reports show.

A data contract shared by those layers, so that none of them depends on another for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Alert states of triage, in order.
STATES = ("new", "in_review", "confirmed", "dismissed", "resolved")


@dataclass(slots=True)
class Alert:
    """One alert on one episode: pseudonymous, aggregated, never an address."""

    policy: str
    policy_version: int
    rule: str  # person | cluster
    rule_id: str
    severity: str
    person: str | None  # the pseudonym of a person rule's alert; None for a cluster
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
    days: int = 0  # days with evidence in the episode
    ended: bool = False  # its subject has been quiet for the suppression period
    raised_day: str = ""  # when it reached the triage queue (max_alerts_per_day may delay it)
    id: int | None = None  # in the store
    state: str = "new"  # triage state
    change: str = "new"  # since the previous report: new | updated | ended | unchanged
    delta: dict[str, int] = field(default_factory=dict)  # figures added since then
    #: a person's first message to a listed site was answered from it within hours and
    #: followed by more: a work address used as proof of identity (the figures unchanged)
    exchange_confirmed: bool = False
    #: a ring rule's alert: {"size", "units", "domains", "roles": {role: count}} (roles:
    #: first, introducer, member), pseudonymous; None for other kinds
    ring: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def episode_key(self) -> str:
        """What episodes are keyed on: the person, or the unit (and domain) of a cluster."""
        if "episode_key" in self.extra:  # as stored
            return str(self.extra["episode_key"])
        if self.person is not None:
            return self.person
        return self.org_unit + ("|" + self.domains[0] if self.extra.get("same_domain") else "")

    def as_dict(self) -> dict[str, Any]:
        """The alert as plain data (JSON output): the pseudonym keeps its documented key,
        ``subject`` (the subject of the alert, never a mail subject)."""
        data = asdict(self)
        data.pop("extra")
        return {("subject" if k == "person" else k): v for k, v in data.items()}

    def waits_after(self, day: str | None) -> bool:
        """Whether the alert is held back past ``day`` by its policy's daily limit."""
        return bool(day and self.raised_day and self.raised_day > day)

    def figures(self) -> dict[str, Any]:
        """What an update of the episode can change."""
        return {
            "messages": self.messages,
            "people": self.people,
            "days": self.days,
            "domains": list(self.domains),
            "categories": list(self.categories),
            "first_day": self.first_day,
            "last_day": self.last_day,
            "ended": self.ended,
        }
