"""A policy in plain words: the notice to staff, or the works-council annex, generated.

Every sentence is built here from the loaded policy (and, when given, the facts of a
deployment: sources, feeds, retention, reports, approvers), never written by hand for one
policy: change a threshold and the text changes with it. The templates
(``templates/explain.md.j2`` and ``templates/explain.html.j2``) only lay the sentences out.

This module sits below the configuration layer, so it takes the deployment as plain values
(:class:`Deployment`); the command line builds them from the config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jinja2

from compliance import __version__
from compliance.errors import shown_url
from compliance.policy.evidence import BLOCKED_STATUSES
from compliance.policy.model import Policy
from compliance.policy.rules import RuleModel, kind_of

#: What each raw field of a mail log is, in words (the fields a source collects).
FIELD_WORDS: dict[str, str] = {
    "timestamp": "the time it was received",
    "sender": "the sender's address",
    "recipient": "the recipient's address",
    "status": "its delivery status",
    "size": "its size",
    "message_id": "its technical message identifier",
}

_ROTATION_WORDS = {
    "never": "that does not change",
    "yearly": "that changes every year",
    "quarterly": "that changes every quarter",
    "monthly": "that changes every month",
}


@dataclass(frozen=True)
class SourceFacts:
    """One configured source: its name, type and the raw fields it reads."""

    name: str
    type: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class FeedFacts:
    """One configured feed or allow-list and where it comes from."""

    name: str
    kind: str  # list | allow
    category: str | None = None
    categories: tuple[str, ...] = ()  # the policy categories a mapping gives
    url: str | None = None
    licence: str | None = None
    attribution: str | None = None


@dataclass(frozen=True)
class ReportFacts:
    """One report the deployment writes: who reads it and how small groups are protected."""

    name: str  # as a reader knows it: "each run's report", "the leadership report"
    audience: str  # team | broad
    period: int
    min_group_size: int
    epsilon: float


@dataclass(frozen=True)
class RetentionFacts:
    """Days each kind of record is kept."""

    events_days: int
    alerts_days: int
    cases_days: int
    dedup_days: int


@dataclass(frozen=True)
class Deployment:
    """What a deployment adds to a policy's notice, as plain values.

    ``configured`` is False when the values are the defaults of an unconfigured install
    (the text then says that the deployment decides them).
    """

    retention: RetentionFacts
    min_approvals: int
    key_rotation: str
    configured: bool = False
    sources: tuple[SourceFacts, ...] = ()
    feeds: tuple[FeedFacts, ...] = ()
    reports: tuple[ReportFacts, ...] = ()
    approvers: tuple[str, ...] = ()
    retro_hunt_days: int | None = None


@dataclass(frozen=True)
class Item:
    """One statement: an optional label (a rule's name, a feed's) and its sentence."""

    text: str
    label: str | None = None


@dataclass
class Part:
    """A paragraph (may be empty) and the list of statements that follows it."""

    text: str
    items: list[Item] = field(default_factory=list)


@dataclass
class Section:
    """A heading and its parts, in order."""

    heading: str
    parts: list[Part] = field(default_factory=list)

    def say(self, text: str, items: list[Item] | None = None) -> None:
        """A new paragraph (and the list after it)."""
        self.parts.append(Part(text, items or []))

    def add(self, item: Item) -> None:
        """One more statement in the list of the last paragraph."""
        if not self.parts:
            self.say("")
        self.parts[-1].items.append(item)


@dataclass
class Notice:
    """The whole explanation, ready for a template."""

    title: str
    policy_id: str
    version: int
    status: str
    owner: str | None
    description: str
    status_note: str | None
    sections: list[Section]
    configured: bool = False  # the deployment's facts are in it


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _listing(values: list[str] | tuple[str, ...], last: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _status_words(statuses: Iterable[str]) -> list[str]:
    return [s.replace("_", " ") for s in sorted(statuses)]


def _status_note(policy: Policy) -> str | None:
    if policy.status == "draft":
        return (
            "This policy is a draft. What it finds is reported to the ethics team as draft "
            "findings, to judge the policy before it is adopted; it raises no alert and is "
            "not in force."
        )
    if policy.status == "disabled":
        return "This policy is disabled: nothing is evaluated under it and it raises no alert."
    return None


def _evidence_sentences(policy: Policy) -> list[str]:
    m = policy.match
    if m.evidence == "outbound":
        what = "Only the messages you sent to a listed site count."
    elif m.evidence == "conversation":
        what = (
            "The messages you sent to a listed site count, and the messages from that site "
            f"that reply to them within {_plural(m.reply_window, 'day')}."
        )
    else:
        what = (
            "Every message exchanged with a listed site counts, including mail you only "
            "received (which anyone could have sent you)."
        )
    out = [what]
    if m.sent == "attempted":
        out.append("A message you sent counts even when it was not delivered.")
    else:
        out.append("A message you sent counts only when it was delivered.")
    if m.status:
        out.append(
            "Only messages whose delivery status is "
            f"{_listing(_status_words(m.status), 'or')} count."
        )
    if m.direction == "outbound":
        out.append("Only mail sent from inside the organisation is looked at.")
    elif m.direction == "inbound":
        out.append("Only mail received from outside the organisation is looked at.")
    return out


def _sites_sentence(policy: Policy) -> str:
    m = policy.match
    parts = []
    if m.categories:
        noun = "category" if len(m.categories) == 1 else "categories"
        parts.append(f"a feed lists under the {noun} {_listing(m.categories, 'or')}")
    if m.domains:
        parts.append(f"the policy names itself: {_listing(m.domains)}")
    return (
        "A site counts when its domain, or a domain above it, is one "
        + " or one ".join(parts)
        + " (each with all its subdomains)."
    )


def _feed_items(policy: Policy, deployment: Deployment) -> list[Item]:
    wanted = set(policy.match.categories)
    items = []
    for feed in deployment.feeds:
        provides = set(feed.categories) | ({feed.category} if feed.category else set())
        if feed.kind == "list" and provides and not provides & wanted:
            continue  # a list of other categories: not this policy's
        details = []
        if feed.kind == "allow":
            details.append("an allow-list: its domains are never counted, whatever a list says")
        elif provides:
            details.append(f"lists {_listing(sorted(provides))}")
        else:
            details.append("categories from its folders")
        if feed.attribution:
            details.append(f"published by {feed.attribution}")
        if feed.licence:
            details.append(f"licence {feed.licence}")
        if feed.url:
            details.append(f"fetched from {shown_url(feed.url)}")
        items.append(Item("; ".join(details) + ".", label=feed.name))
    return items


def _field_words(name: str) -> str:
    return FIELD_WORDS.get(name, name.replace("_", " "))


def _looked_at(policy: Policy, deployment: Deployment | None) -> Section:
    section = Section("What is looked at")
    if deployment is not None and deployment.sources:
        section.say(
            "Only the metadata of mail messages is read, from these logs:",
            [
                Item(
                    f"from the {source.type} mail logs, for each message only "
                    f"{_listing([_field_words(f) for f in source.fields])}.",
                    label=source.name,
                )
                for source in deployment.sources
            ],
        )
    else:
        words = [FIELD_WORDS[f] for f in ("timestamp", "sender", "recipient", "status", "size")]
        section.say(
            f"Only the metadata of mail messages is read: {_listing(words)}, as the mail "
            "gateway logs them."
        )
    section.say(
        "Addresses are used only while a log is read: to tell colleagues from outside "
        "parties and to find a person's org unit. Before anything is kept, a person is "
        "replaced by a pseudonym and an outside party by its domain."
    )
    section.say(
        "Only mail exchanged with a listed site is kept as a record: the pseudonym, the "
        "org unit, the site's domain, the day and time, the delivery status and the size. "
        "Every other message is only counted, per day and org unit, without saying who "
        "or with whom."
    )
    feeds = _feed_items(policy, deployment) if deployment is not None else []
    section.say(_sites_sentence(policy) + (" The lists come from:" if feeds else ""), feeds)
    section.say(" ".join(_evidence_sentences(policy)))
    scope = policy.scope.org_units
    if scope:
        section.say(
            f"Only people in the org units {_listing(scope)} (and the units below them) "
            "are covered."
        )
    else:
        section.say("Everyone in the organisation is covered, except as said below.")
    if deployment is not None and deployment.retro_hunt_days:
        section.say(
            f"For {_plural(deployment.retro_hunt_days, 'day')}, mail with sites no list "
            "named when it was read is remembered as a keyed digest of the site's "
            "registrable domain (never the domain itself) with the pseudonym, so that a "
            "site listed later can be found in that earlier mail."
        )
    return section


def _never(policy: Policy) -> Section:
    m = policy.match
    section = Section("What is never looked at")
    items = [
        "The content of any message: bodies, subjects and attachments are never read.",
        "IP addresses and names.",
        "Mail between colleagues: internal mail never matches.",
    ]
    if m.evidence == "conversation":
        items.append(
            "Mail you only received from a listed site, however much of it, unless it "
            "replies to a message you sent there."
        )
    elif m.evidence == "outbound":
        items.append("Mail you received, however much of it.")
    items.append(f"Received mail the gateway {_listing(_status_words(BLOCKED_STATUSES), 'or')}.")
    if policy.scope.exclude_org_units:
        items.append(
            f"People in the org units {_listing(policy.scope.exclude_org_units)} (and the "
            "units below them)."
        )
    if m.exclude_domains:
        items.append(
            f"The domains {_listing(m.exclude_domains)} (with their subdomains), even where "
            "a list names them."
        )
    section.say("", [Item(t) for t in items])
    return section


def _rule_sentence(policy: Policy, index: int) -> str:
    rule = policy.rules[index]
    window = _plural(rule.window, "day")
    kind = rule.kind
    if kind == "person":
        messages = getattr(rule, "min_messages", 1)
        days = getattr(rule, "min_days", 1)
        spread = f" on at least {days} different days" if days > 1 else ""
        sent = getattr(rule.for_evidence(policy.match.evidence), "min_sent", None)
        own = (
            f", at least {sent} of them sent by the person themselves (replies alone never "
            "make one message repeated contact)"
            if sent and sent < messages and policy.match.evidence != "outbound"
            else ""
        )
        return (
            f"an alert on one person who has {messages} or more such messages{spread}{own} "
            f"within {window} (severity {rule.severity})."
        )
    if kind == "cluster":
        people = getattr(rule, "min_people", 2)
        site = " with the same site" if getattr(rule, "same_domain", False) else ""
        return (
            f"an alert on an org unit, never on a person, when at least {people} different "
            f"people of the unit exchange such messages{site} within {window} "
            f"(severity {rule.severity})."
        )
    thresholds = [
        f"{name.replace('_', ' ')} {value}"
        for name, value in rule.model_dump().items()
        if name not in {*RuleModel.model_fields, "kind"}
    ]
    on = "one person" if kind_of(rule).on_person else "a group, never on a person"
    return (
        f"an alert on {on} by the rule kind {kind!r} over {window}"
        + (f" ({_listing(thresholds)})" if thresholds else "")
        + f" (severity {rule.severity})."
    )


def _alerts(policy: Policy) -> Section:
    section = Section("When an alert is raised")
    if policy.status == "draft":
        section.say(
            "As a draft, the policy raises no alert: what these rules find is only reported "
            "as draft findings."
        )
    section.say(
        "Each rule is checked over a window of days that slides day by day; an alert is "
        "raised on the first day the window meets the rule."
    )
    for i in range(len(policy.rules)):
        section.add(Item(_rule_sentence(policy, i), label=policy.rule_id(i)))
    person_minimums = [getattr(r, "min_messages", 1) for r in policy.rules if kind_of(r).on_person]
    if person_minimums and min(person_minimums) > 1:
        fewest = min(person_minimums)
        section.add(
            Item(
                f"Fewer than {fewest} such messages never raise an alert on a person"
                + (": a single message never does." if fewest == 2 else ".")
            )
        )
    quiet = sorted({policy.suppress_days(i) for i in range(len(policy.rules))})
    section.add(
        Item(
            "An alert covers an episode: later messages of the same person (or unit) join it "
            f"until they have been quiet for {_listing([str(q) for q in quiet], 'or')} days; "
            "only then can a new alert begin."
        )
    )
    if policy.max_alerts_per_day is not None:
        section.add(
            Item(
                f"At most {_plural(policy.max_alerts_per_day, 'new alert')} a day reach the "
                "ethics team; the others wait for the next days, none is dropped."
            )
        )
    section.add(
        Item(
            "An alert is a reason for the ethics team to look, not a finding: each is "
            "reviewed, and can be dismissed."
        )
    )
    return section


def _who_sees(policy: Policy, deployment: Deployment) -> Section:
    section = Section("Who sees what")
    rotation = _ROTATION_WORDS.get(deployment.key_rotation, deployment.key_rotation)
    if not deployment.configured:
        rotation = f"by default one {rotation}"
    section.say(f"You appear only as a pseudonym: a code computed with a secret key, {rotation}.")
    section.add(
        Item(
            f"In alerts, org units with fewer than {policy.privacy.min_group_size} people "
            "are named as their parent unit."
        )
    )
    for report in deployment.reports:
        if report.audience == "team":
            text = (
                f"the ethics team, every {_plural(report.period, 'day')}: pseudonymous "
                f"alerts; org units with fewer than {report.min_group_size} people are "
                "shown as their parent unit."
            )
        else:
            text = (
                f"a broad audience, every {_plural(report.period, 'day')}: only noisy "
                f"counts per org unit (differential privacy, epsilon {report.epsilon}), "
                "no alert and no pseudonym."
            )
        section.add(Item(text, label=report.name))
    if not deployment.configured:
        section.say("Who receives reports is set by each deployment.")
    approvals = deployment.min_approvals
    if deployment.configured and not deployment.approvers:
        section.add(
            Item("No one is configured to approve a reveal: no pseudonym can be re-identified.")
        )
    else:
        who = f" (the approvers: {_listing(deployment.approvers)})" if deployment.approvers else ""
        section.add(
            Item(
                "Who is behind a pseudonym can be found out only through a case opened on "
                f"one alert, after at least {approvals} different approvers, never the person "
                f"who asked, have approved it{who}. Only that alert's person is revealed, the "
                "name is never stored, and every step is written to a tamper-evident audit "
                "log."
            )
        )
    return section


def _kept(deployment: Deployment) -> Section:
    r = deployment.retention
    section = Section("How long data is kept")
    if not deployment.configured:
        section.say("Each deployment sets these periods; by default:")
    else:
        section.say("")
    section.parts[-1].items = [
        Item(
            f"{_plural(r.events_days, 'day')} for the records of mail with listed sites "
            "(those of a person whose episode is still open stay until it ends), and for the "
            "daily counts per org unit."
        ),
        Item(
            f"{_plural(r.alerts_days, 'day')} for alerts after their episode ends (longer "
            "while a case is open on them)."
        ),
        Item(f"{_plural(r.cases_days, 'day')} for cases after they are closed."),
        Item(
            f"{_plural(r.dedup_days, 'day')} for message fingerprints, used only to count "
            "each message once (no content, no address)."
        ),
    ]
    if deployment.retro_hunt_days:
        section.add(
            Item(
                f"{_plural(deployment.retro_hunt_days, 'day')} for the keyed digests of "
                "sites no list named when the mail was read."
            )
        )
    return section


def explain(policy: Policy, deployment: Deployment) -> Notice:
    """The notice of ``policy`` under ``deployment`` (its facts, or an install's defaults)."""
    return Notice(
        title=policy.title,
        policy_id=policy.id,
        version=policy.version,
        status=policy.status,
        owner=policy.owner,
        description=" ".join(policy.description.split()),
        status_note=_status_note(policy),
        sections=[
            _looked_at(policy, deployment if deployment.configured else None),
            _never(policy),
            _alerts(policy),
            _who_sees(policy, deployment),
            _kept(deployment),
        ],
        configured=deployment.configured,
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")


def markdown_text(value: Any) -> str:
    """``value`` as literal Markdown text: markup characters escaped, and HTML's ``<``,
    ``>`` and ``&`` as entities (a Markdown viewer passes raw HTML through)."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _environment(markdown: bool) -> jinja2.Environment:
    """HTML: autoescaped. Markdown: every value written is escaped by ``finalize`` as
    literal text (:func:`markdown_text`), so that nothing in a policy becomes markup."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("compliance.policy", "templates"),
        autoescape=not markdown,  # noqa: S701 (Markdown is escaped by finalize)
        finalize=markdown_text if markdown else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_markdown(notice: Notice) -> str:
    """The notice as Markdown (every value escaped as literal text)."""
    return _environment(True).get_template("explain.md.j2").render(n=notice, version=__version__)


def render_html(notice: Notice) -> str:
    """The notice as a complete, self-contained HTML document (autoescaped)."""
    return _environment(False).get_template("explain.html.j2").render(n=notice, version=__version__)
