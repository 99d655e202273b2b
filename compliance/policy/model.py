"""The policy model: what a policy author may write, every field documented.

The JSON Schema for editors is exported from these models
(``compliance policy schema``). Nothing in a policy is ever evaluated as code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from compliance.domains import is_public_suffix, normalise_domain
from compliance.events import Status
from compliance.policy.fields import Count, Days, PositiveCount, Strict
from compliance.policy.rules import RuleModel, kinds

SEVERITY_ORDER: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: The days a test event may fall on (test events become timestamps, which end in 2262).
TEST_DAYS = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))


def check_domains(values: Iterable[str], *, narrowing: bool = False) -> list[str]:
    """Domains a person wrote (a policy's lists, a reviewer's ``--domain``), normalised;
    refuses invalid ones and public suffixes (which would cover a whole zone). A list that
    only narrows (``narrowing``: exclusions) may name a hosting platform's zone."""
    out = []
    for raw in values:
        domain = normalise_domain(raw)
        if domain is None:
            raise ValueError(f"{raw!r} is not a valid domain")
        if is_public_suffix(domain, private=not narrowing):
            raise ValueError(f"{raw!r} is a public suffix: it would cover a whole zone")
        out.append(domain)
    return out


Evidence = Literal["outbound", "conversation", "any"]


class Match(Strict):
    """Which messages the policy looks at, and which of them show that a person took part."""

    evidence: Evidence = Field(
        "conversation",
        description="what counts against a person: outbound (messages they sent); "
        "conversation (those, and messages received from a site they wrote to within "
        "reply_window before); any (also messages they only received: not recommended)",
    )
    reply_window: Days = Field(
        14,
        description="with evidence: conversation, how long after a person wrote to a site "
        "its messages to them count as a reply, e.g. 14d",
    )
    sent: Literal["attempted", "delivered"] = Field(
        "attempted",
        description="attempted: every message a person sent counts, whatever its delivery "
        "status (an attempt shows intent); delivered: only those delivered",
    )
    status: list[Status] = Field(
        default_factory=list,
        description="only messages with one of these delivery statuses count: delivered, "
        "deferred, bounced, rejected, quarantined, filtered_as_spam, unknown (every source "
        "maps its own to these); default: any, as evidence and sent decide",
    )
    direction: Literal["outbound", "inbound", "any"] = Field(
        "any",
        description="an extra filter, rarely needed: outbound (sent by an internal person) "
        "or inbound (received by one) only; evidence decides what counts",
    )
    categories: list[str] = Field(
        default_factory=list, description="feed categories whose domains count, e.g. escort-ads"
    )
    domains: list[str] = Field(
        default_factory=list,
        description="extra domains that count (each with its subdomains), beyond the feeds",
    )
    exclude_domains: list[str] = Field(
        default_factory=list,
        description="domains (with their subdomains) that never count, even if a feed lists them",
    )

    _domains = field_validator("domains")(check_domains)

    @field_validator("exclude_domains")
    @classmethod
    def _exclusions(cls, values: list[str]) -> list[str]:
        return check_domains(values, narrowing=True)

    @model_validator(mode="after")
    def _something_to_match(self) -> Match:
        if not self.categories and not self.domains:
            raise ValueError("give at least one of 'categories' or 'domains'")
        return self


class Scope(Strict):
    """Which org units the policy covers (a unit includes everything below it)."""

    org_units: list[str] = Field(default_factory=list, description="only these units (empty: all)")
    exclude_org_units: list[str] = Field(default_factory=list, description="never these units")


def _no_kinds(value: Any) -> Any:
    raise ValueError(
        "no rule kind is registered: is compliance-monitor installed (pip install .)? "
        "Its entry points (compliance.rule_kinds) are missing"
    )


def _rule_type() -> Any:
    """Every registered rule kind's model, told apart by ``kind``."""
    models = tuple(k.model for k in kinds())
    if not models:  # a checkout that was never installed: no entry points
        return Annotated[Any, BeforeValidator(_no_kinds)]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 (built at run time)


if TYPE_CHECKING:
    Rule = RuleModel
else:
    Rule = _rule_type()


class Privacy(Strict):
    """Small-group protection."""

    min_group_size: Count = Field(
        5, ge=1, description="org units with fewer people roll up to their parent"
    )


class Notice(Strict):
    """A deterrence notice: when an episode of a person rule starts, the person behind the
    pseudonym is reminded of this policy by mail, automatically; no human sees who."""

    enabled: bool = Field(True, description="false: no notice is decided or sent")
    template: str | None = Field(
        None,
        description="a jinja2 text template (relative to the policy file) for the notice; "
        "default: the shipped one. It may use only policy_title, policy_description, "
        "organisation and help_contacts (policy lint checks it, WC015)",
    )
    html_template: str | None = Field(
        None,
        description="a jinja2 HTML template for the notice's HTML part (relative to the "
        "policy file); default: the shipped one with the shipped text, else the text only",
    )
    every: Days = Field(
        90, description="at most one notice per person per this many days, e.g. 90d"
    )
    holdout: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="the share of people (0 to 0.5) who get no notice, to measure whether "
        "notices work; assigned by a keyed hash of the pseudonym, so that nobody picks who",
    )
    rules: list[str] = Field(
        default_factory=list,
        description="the person rules whose episodes bring a notice (their ids); empty: "
        "every person rule of the policy",
    )


class TestEvent(Strict):
    """A synthetic matched message for an inline test."""

    day: dt.date
    person: str
    org_unit: str = "unknown"
    domain: str
    direction: Literal["outbound", "inbound"] | None = Field(
        None, description="outbound (the person sent it, the default) or inbound"
    )
    status: str = Field(
        "delivered",
        description="the delivery status: delivered, deferred, bounced, rejected, "
        "quarantined, filtered_as_spam or unknown (a gateway's own spelling is mapped)",
    )
    hour: int = Field(12, ge=0, le=23, description="hour of the day (UTC) of the messages")
    count: int = Field(1, ge=1, le=10_000)

    @field_validator("day")
    @classmethod
    def _day_in_range(cls, value: dt.date) -> dt.date:
        first, last = TEST_DAYS
        if not first <= value <= last:
            raise ValueError(f"must be a day from {first} to {last}")
        return value


class Expectation(Strict):
    """An alert a test expects."""

    kind: str = Field(json_schema_extra={"enum": [k.name for k in kinds()]})
    person: str | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        names = [k.name for k in kinds()]
        if value not in names:
            raise ValueError(f"unknown rule kind {value!r}; known: {', '.join(names)}")
        return value

    org_unit: str | None = None
    rule: str | None = None
    messages: int | None = Field(None, description="the alert's messages, when given")
    days: int | None = Field(None, description="the alert's days with activity, when given")


class PolicyTest(Strict):
    """An inline test: events in, the exact alerts expected out."""

    name: str
    feed: dict[str, list[str]] = Field(
        default_factory=dict, description="category: domains, the feed the test runs against"
    )
    headcounts: dict[str, int] = Field(
        default_factory=dict, description="people per org unit (roll-up); empty: no roll-up"
    )
    events: list[TestEvent] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounded(self) -> PolicyTest:
        total = sum(e.count for e in self.events)
        if total > MAX_TEST_MESSAGES:
            raise ValueError(
                f"the test's events make {total:,} messages; at most {MAX_TEST_MESSAGES:,} "
                "(lower their counts)"
            )
        return self


#: Synthetic messages one inline test may make (each event's ``count`` added up).
MAX_TEST_MESSAGES = 100_000


class Policy(Strict):
    """One acceptable-use policy."""

    id: str = Field(description="stable identifier: lower case, digits, '-' and '_'")
    title: str
    description: str = ""
    version: Count = Field(ge=1, description="raise it on every change")
    status: Literal["active", "draft", "disabled"] = Field(
        "active", description="draft: evaluated and reported, never alerted"
    )
    owner: str | None = None
    match: Match
    scope: Scope = Scope()
    rules: list[Rule] = Field(min_length=1)
    privacy: Privacy = Privacy()
    suppress: Days | None = Field(
        None,
        description="an alert's episode ends once its subject has been quiet this many days; "
        "only then can a new alert on the same subject begin (default: the rule's window)",
    )
    max_alerts_per_day: PositiveCount | None = Field(
        None,
        description="at most this many new alerts a day; the rest wait for the next days "
        "(counted and shown, never dropped)",
    )
    tests: list[PolicyTest] = Field(default_factory=list)
    notice: Notice | None = Field(
        None,
        description="opt-in: a deterrence notice to the person when an episode of a person "
        "rule starts (sent only where the configuration has notices: with a works-council "
        "approval)",
    )

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use lower-case letters, digits, '-' and '_' (at most 64)")
        return value

    @model_validator(mode="after")
    def _rule_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            rid = rule.id or rule.kind
            if rid in seen:
                raise ValueError(f"two rules are named {rid!r}: give each rule its own 'id'")
            seen.add(rid)
        return self

    @model_validator(mode="after")
    def _notice_rules(self) -> Policy:
        if self.notice is None:
            return self
        kinds_by_id = {self.rule_id(i): r.kind for i, r in enumerate(self.rules)}
        for name in self.notice.rules:
            if name not in kinds_by_id:
                raise ValueError(f"notice.rules: the policy has no rule {name!r}")
            if kinds_by_id[name] != "person":
                raise ValueError(
                    f"notice.rules: rule {name!r} is a {kinds_by_id[name]} rule: a notice "
                    "goes to one person, so only person rules can bring one"
                )
        if not any(kind == "person" for kind in kinds_by_id.values()):
            raise ValueError("notice: the policy has no person rule to bring a notice")
        return self

    def notice_rules(self) -> set[str]:
        """The rules whose new episodes bring a notice (none without an enabled notice)."""
        if self.notice is None or not self.notice.enabled:
            return set()
        persons = {self.rule_id(i) for i, r in enumerate(self.rules) if r.kind == "person"}
        return set(self.notice.rules) & persons if self.notice.rules else persons

    def rule_id(self, index: int) -> str:
        """The rule's name: its ``id``, else its kind."""
        rule = self.rules[index]
        return rule.id or rule.kind

    def suppress_days(self, index: int) -> int:
        """Quiet days that end an episode of rule ``index``."""
        return self.suppress if self.suppress is not None else self.rules[index].window

    @property
    def lookback_days(self) -> int:
        """History a scheduled evaluation needs to decide consistently (the windows and the
        quiet days that end an episode; replies need ``reply_window`` more, loaded apart)."""
        return max(r.window + self.suppress_days(i) for i, r in enumerate(self.rules))


#: The published JSON Schema of policy files, shipped with the package (editors read it:
#: ``# yaml-language-server: $schema=...``). Regenerate it with
#: ``compliance policy schema --out compliance/policy/policy.schema.json``; a test fails
#: when it differs from :func:`schema_text`.
SCHEMA_FILE = Path(__file__).with_name("policy.schema.json")


def schema_text() -> str:
    """The JSON Schema of policy files, as ``compliance policy schema`` prints it."""
    return json.dumps(Policy.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
