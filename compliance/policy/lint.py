"""Works-council lint: checks that keep a valid policy from singling out a person.

A policy is a promise to staff and to the works council about what is watched. A file
can be valid and still watch people one by one: a rule on a single message, a scope of
three people, an extra domain every private mailbox uses. Each check here has an id
(``WC001`` ...), a severity (an *error* refuses the policy, a *warning* never does), a
one-line title and a rationale (the function's docstring, shown by
``compliance policy lint --explain ID`` and in ``docs/POLICY_LINT.md``).

Everything here is pure: :func:`review` takes a loaded policy and a :class:`LintContext`
of plain values (the organisation's domains, the categories the configured feeds
provide, headcounts per org unit: each ``None`` when not known, and the checks that need
it are reported as not run), and returns :class:`Finding` objects.
:func:`apply_exceptions` turns the findings a deployment approved an exception for into
*excepted* findings, never dropping them, and reports an approval that matches nothing
as stale. :func:`enforce` does both for the job and raises a :class:`PolicyError` when an
error is left open. This module never reads the configuration: the caller passes what
it needs (layering: the configuration is above the policy).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from compliance.domains import normalise_domain
from compliance.errors import PolicyError, Problem
from compliance.feeds import FeedInfo
from compliance.policy.loader import LoadedPolicy
from compliance.policy.providers import mail_provider
from compliance.policy.rules import kind_of

#: The smallest ``privacy.min_group_size`` lint accepts (WC004).
MIN_SAFE_GROUP = 5
#: The shortest rule window lint accepts, in days (WC002): a working week.
MIN_WINDOW_DAYS = 7
#: The fewest people a cluster rule may ask for (WC009).
MIN_CLUSTER_PEOPLE = 3

CheckSeverity = Literal["error", "warning"]
#: ``not-run``: a check that could not run for want of something (see :class:`LintContext`).
FindingSeverity = Literal["error", "warning", "not-run"]
#: What a check may need beyond the policy: a field of :class:`LintContext`.
Need = Literal["org_domains", "feed_categories", "headcounts"]

_NEEDED_FOR: dict[str, str] = {
    "org_domains": "the organisation's domains",
    "feed_categories": "the configured feeds",
    "headcounts": "headcounts from a directory",
}


@dataclass(frozen=True)
class LintContext:
    """What some checks need beyond the policy, as plain values (``None``: not known).

    ``org_domains``: the organisation's own domains (``organisation.domains``);
    ``feed_categories``: the categories the configured feeds provide
    (:func:`feed_categories` of the loaded feeds); ``headcounts``: people per org unit,
    each unit counted alone (a directory's ``headcounts``). ``missing`` says, for a value
    that is ``None``, why (shown in the "not run" line); the default asks for ``--config``.
    """

    org_domains: Sequence[str] | None = None
    feed_categories: Collection[str] | None = None
    headcounts: Mapping[str, int] | None = None
    missing: Mapping[str, str] = field(default_factory=dict)

    def why_missing(self, need: Need) -> str:
        """Why the value ``need`` is not known."""
        return self.missing.get(need, f"needs {_NEEDED_FOR[need]}: run with --config")


def feed_categories(feeds: Iterable[FeedInfo]) -> frozenset[str]:
    """The categories loaded list feeds provide (with at least one entry; an allow-list
    provides none)."""
    return frozenset(
        c
        for info in feeds
        if getattr(info, "kind", "list") != "allow"  # FeedInfo.kind: list or allow
        for c, n in info.categories.items()
        if n > 0
    )


class ApprovalSource(Protocol):
    """An approved exception as the configuration holds it (``lint_exceptions`` items)."""

    @property
    def policy(self) -> str: ...
    @property
    def check(self) -> str: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def approved_by(self) -> Sequence[str]: ...
    @property
    def approved_on(self) -> dt.date: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class Approval:
    """An approved exception to one check for one policy (and maybe one rule of it)."""

    policy: str
    check: str
    rule: str | None
    approved_by: tuple[str, ...]
    approved_on: dt.date
    reason: str
    #: where it is written (the config file and line), for a stale approval's location
    path: str = ""
    line: int | None = None

    @classmethod
    def of(cls, item: ApprovalSource, path: str = "", line: int | None = None) -> Approval:
        """An approval from a config entry (``config.lint_exceptions`` items)."""
        return cls(
            item.policy,
            item.check.strip().upper(),
            item.rule,
            tuple(item.approved_by),
            item.approved_on,
            item.reason,
            path,
            line,
        )

    def matches(self, finding: Finding) -> bool:
        """Whether this approval covers ``finding`` (same policy, check, and rule if named)."""
        return (
            finding.severity != "not-run"
            and finding.policy == self.policy
            and finding.check == self.check
            and (self.rule is None or self.rule == finding.rule)
        )

    def __str__(self) -> str:
        return (
            f"approved by {', '.join(self.approved_by)} on {self.approved_on.isoformat()}: "
            f"{self.reason}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``--format json`` and the audit log."""
        return {
            "policy": self.policy,
            "check": self.check,
            "rule": self.rule,
            "approved_by": list(self.approved_by),
            "approved_on": self.approved_on.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one place of one policy."""

    check: str
    severity: FindingSeverity
    path: str
    line: int | None
    policy: str
    #: what it is about: ``rule 'name'`` or a field such as ``privacy.min_group_size``
    subject: str
    message: str
    rule: str | None = None
    #: the approval that excepts it (then it no longer fails anything)
    approval: Approval | None = None

    @property
    def where(self) -> str:
        """``file:line`` (``file`` when the line is not known)."""
        return self.path if self.line is None else f"{self.path}:{self.line}"

    @property
    def is_open_error(self) -> bool:
        """An error no approval excepts: the policy is refused."""
        return self.severity == "error" and self.approval is None

    def __str__(self) -> str:
        subject = f" {self.subject}" if self.subject else ""
        text = f"{self.where}: {self.severity} {self.check}{subject}: {self.message}"
        return f"excepted: {text} ({self.approval})" if self.approval else text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``--format json``; the audit log of an excepted finding)."""
        return {
            "path": self.path,
            "line": self.line,
            "severity": self.severity,
            "check": self.check,
            "title": CHECKS[self.check].title if self.check in CHECKS else None,
            "policy": self.policy,
            "rule": self.rule,
            "subject": self.subject,
            "message": self.message,
            "excepted": self.approval.as_dict() if self.approval else None,
        }


@dataclass(frozen=True)
class Hit:
    """What a check found: where (a path into the policy, for its line) and why."""

    loc: tuple[Any, ...]
    subject: str
    message: str
    rule: str | None = None


CheckFunction = Callable[[LoadedPolicy, LintContext], Iterator[Hit]]


@dataclass(frozen=True)
class Check:
    """A works-council check: an id, a severity, a title, what it needs and its rationale."""

    id: str
    severity: CheckSeverity
    title: str
    rationale: str
    exception_note: str
    needs: Need | None
    find: CheckFunction

    def run(self, loaded: LoadedPolicy, context: LintContext) -> list[Finding]:
        """This check's findings on one policy (one ``not-run`` when it cannot run)."""
        path, policy = str(loaded.path), loaded.policy.id
        if self.needs is not None and getattr(context, self.needs) is None:
            return [
                Finding(self.id, "not-run", path, None, policy, "", context.why_missing(self.needs))
            ]
        return [
            Finding(
                self.id,
                self.severity,
                path,
                loaded.line_of(*hit.loc),
                policy,
                hit.subject,
                hit.message,
                hit.rule,
            )
            for hit in self.find(loaded, context)
        ]


#: Every check by id, in id order.
CHECKS: dict[str, Check] = {}
#: The check an approval that matches nothing is reported under.
STALE_CHECK = "WC014"


def check(
    id: str,
    severity: CheckSeverity,
    title: str,
    *,
    needs: Need | None = None,
    exception: str = "",
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; its docstring is its rationale, ``exception`` when to approve one."""

    def register(find: CheckFunction) -> CheckFunction:
        if id in CHECKS:
            raise ValueError(f"two lint checks are named {id}")
        rationale = " ".join((find.__doc__ or "").split())
        CHECKS[id] = Check(id, severity, title, rationale, exception, needs, find)
        return find

    return register


def _rule(loaded: LoadedPolicy, index: int) -> tuple[Any, str, str]:
    """(rule, its name, ``rule 'name'``)."""
    name = loaded.policy.rule_id(index)
    return loaded.policy.rules[index], name, f"rule {name!r}"


def _set_or_default(rule: Any, name: str) -> str:
    return "" if name in rule.model_fields_set else " (not set: that is the default)"


# --- errors -----------------------------------------------------------------------------


@check(
    "WC001",
    "error",
    "a rule on one person fires on one message or on one day",
    exception="hardly ever: only for a rule whose one message is itself the misconduct "
    "(there is none in mail metadata)",
)
def _one_message_or_day(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """One message is not a pattern: a mistyped address, an unsolicited mail, a link
    someone else sent or a single curious click would accuse a person. Nor is one day: a
    burst on one afternoon is one event, not repeated behaviour. A rule whose alerts name
    one person must ask for at least two messages on at least two different days
    (`min_messages: 2` and `min_days: 2` or more). Where a site's replies count
    (`evidence: conversation`), two of the messages must be the person's own: one message
    and the newsletters that follow it are not repeated contact (`min_sent`, 2 unless set
    lower). Any rule kind whose alerts are on one person and that has these fields is held
    to it."""
    conversation = loaded.policy.match.evidence == "conversation"
    for i in range(len(loaded.policy.rules)):
        rule, name, subject = _rule(loaded, i)
        if not kind_of(rule).on_person:
            continue
        for field_name, what in (("min_messages", "message"), ("min_days", "day")):
            value = getattr(rule, field_name, None)
            if value == 1:
                yield Hit(
                    ("rules", i, field_name),
                    subject,
                    f"{field_name} is 1{_set_or_default(rule, field_name)}: one {what} would "
                    f"single a person out; ask for at least 2",
                    name,
                )
        if conversation and getattr(rule, "min_sent", None) == 1:
            yield Hit(
                ("rules", i, "min_sent"),
                subject,
                "min_sent is 1: one message of the person's own, with a site's replies or "
                "newsletters after it, would single them out; ask for at least 2",
                name,
            )


@check(
    "WC002",
    "error",
    f"a rule window is shorter than {MIN_WINDOW_DAYS} days",
    exception="a rule about a short, known event (a week-long trade fair), approved for "
    "that period only",
)
def _short_window(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """A rule looks for repeated behaviour over its window. Over fewer days than a working
    week the window measures bursts (one project, one trip, one busy afternoon) rather
    than habits, and whether a person reaches the threshold depends on which days they
    happened to work. A week is the shortest window in which "repeatedly" means the same
    for everyone, whatever their working pattern."""
    for i in range(len(loaded.policy.rules)):
        rule, name, subject = _rule(loaded, i)
        if rule.window < MIN_WINDOW_DAYS:
            yield Hit(
                ("rules", i, "window"),
                subject,
                f"window is {rule.window} day(s): shorter than {MIN_WINDOW_DAYS} days it "
                "measures a burst, not a pattern",
                name,
            )


@check(
    "WC003",
    "error",
    "suppress is shorter than a rule's window",
    exception="none expected: lengthen suppress instead",
)
def _short_suppression(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """An alert is one episode: it grows with every later message until its subject has
    been quiet for `suppress` days. A quiet period shorter than the window splits one
    continuing pattern into several alerts, so the same person (or team) is reported again
    and again for the same conduct, and the number of alerts overstates what happened.
    `suppress` must be at least as long as every rule's window (leaving it out uses the
    window)."""
    policy = loaded.policy
    if policy.suppress is None:
        return
    for i in range(len(policy.rules)):
        rule, name, subject = _rule(loaded, i)
        if policy.suppress < rule.window:
            yield Hit(
                ("suppress",),
                subject,
                f"suppress ({policy.suppress} days) is shorter than its window "
                f"({rule.window} days): one pattern would raise several alerts",
                name,
            )


@check(
    "WC004",
    "error",
    f"privacy.min_group_size is below {MIN_SAFE_GROUP}",
    exception="none expected: reports on fewer people than this identify them",
)
def _small_group(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Org units with fewer people than `min_group_size` are reported as their parent.
    Below five, a unit's figures point at one of very few colleagues, whom anyone in the
    team can name: "two people in Legal/Contracts" is not anonymous. Five is the smallest
    group size statistical offices publish; larger is better."""
    size = loaded.policy.privacy.min_group_size
    if size < MIN_SAFE_GROUP:
        yield Hit(
            ("privacy", "min_group_size"),
            "privacy.min_group_size",
            f"{size} is below {MIN_SAFE_GROUP}: figures of so few people single them out",
        )


def _subtree(headcounts: Mapping[str, int], unit: str) -> int:
    """People in `unit` and every unit below it (in any case, as evaluation scopes them)."""
    return sum(n for u, n in headcounts.items() if _within(u, unit))


def _within(unit: str, parent: str) -> bool:
    unit, parent = unit.casefold(), parent.casefold()
    return unit == parent or unit.startswith(parent + "/")


@check(
    "WC005",
    "error",
    "a scoped org unit has fewer people than min_group_size",
    needs="headcounts",
    exception="a small unit with a documented, specific reason to be watched (approved "
    "by name for that unit's rules only), never to watch one person",
)
def _narrow_scope(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """A policy scoped to a unit of three people watches those three people, whatever its
    rules say: every alert, and every figure of the report, is about one of them. Each
    unit in `scope.org_units` (with everything below it, less what
    `scope.exclude_org_units` takes out) must hold at least `min_group_size` people in
    the directory; a unit the directory does not know holds no one and is refused too (it
    is usually misspelt). When the whole organisation is in scope, what the exclusions
    leave must hold that many. Without a directory this check cannot run and says so."""
    headcounts = context.headcounts
    assert headcounts is not None
    policy = loaded.policy
    size = policy.privacy.min_group_size
    excluded = policy.scope.exclude_org_units

    def remaining(unit: str | None) -> int:
        total = sum(headcounts.values()) if unit is None else _subtree(headcounts, unit)
        tops = [x for x in excluded if unit is None or _within(x, unit)]
        # an exclusion inside another one is counted once
        tops = [x for x in tops if not any(y != x and _within(x, y) for y in tops)]
        return total - sum(_subtree(headcounts, x) for x in tops)

    for j, unit in enumerate(policy.scope.org_units):
        if any(_within(unit, x) for x in excluded):
            continue  # excluded whole: it adds no one
        people = remaining(unit)
        if people < size:
            where = "no one in the directory" if people <= 0 else f"{people} people"
            yield Hit(
                ("scope", "org_units", j),
                f"scope.org_units[{j}]",
                f"{unit!r} holds {where} (min_group_size is {size}): the policy would "
                "watch individuals, not a group",
            )
    if not policy.scope.org_units and excluded:
        people = remaining(None)
        if people < size:
            yield Hit(
                ("scope", "exclude_org_units"),
                "scope.exclude_org_units",
                f"the exclusions leave {max(people, 0)} people in scope (min_group_size "
                f"is {size}): the policy would watch individuals, not a group",
            )


@check(
    "WC006",
    "error",
    "an extra domain is a large mail provider",
    exception="none expected: a provider's domain is everyone's private mail",
)
def _mail_provider(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Anyone can have a mailbox at gmail.com, outlook.com, web.de or qq.com. Listing such
    a domain in `match.domains` flags everyone who writes to a friend, a relative or
    their own private address, and says nothing about the sites the policy is about.
    Domains are compared by their registrable domain, so a provider's subdomains count
    (`mx.gmail.com`) and look-alikes do not (`notgmail.com`). The list is
    `compliance/policy/providers.py`."""
    for j, domain in enumerate(loaded.policy.match.domains):
        provider = mail_provider(domain)
        if provider is not None:
            yield Hit(
                ("match", "domains", j),
                f"match.domains[{j}]",
                f"{domain} is a large mail provider ({provider}): it would flag everyone "
                "who mails a friend",
            )


@check(
    "WC007",
    "error",
    "an extra domain is one the organisation owns",
    needs="org_domains",
    exception="none expected: a site of the organisation's own is not a matter for this policy",
)
def _own_domain(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """The organisation's own domains (`organisation.domains`, with their subdomains)
    are its staff. Mail between colleagues never matches, so listing one matches nothing
    at best; at worst a subdomain that is not configured as internal (a shop, a
    newsletter) turns staff writing to their own employer into evidence. A domain that
    contains one of the organisation's (`corp.example` when `mail.corp.example` is
    internal) is refused too."""
    assert context.org_domains is not None
    own = [d for d in (normalise_domain(x) for x in context.org_domains) if d]
    for j, domain in enumerate(loaded.policy.match.domains):
        for mine in own:
            if _within_domain(domain, mine) or _within_domain(mine, domain):
                yield Hit(
                    ("match", "domains", j),
                    f"match.domains[{j}]",
                    f"{domain} is the organisation's own domain ({mine}): that is mail of "
                    "its own staff",
                )
                break


def _within_domain(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


@check(
    "WC008",
    "error",
    "a category no configured feed provides",
    needs="feed_categories",
    exception="none: configure a feed that provides it, or remove the category",
)
def _unknown_category(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """A category in `match.categories` that no configured feed provides matches
    nothing: the policy promises to watch something it cannot see (usually a misspelling,
    or a feed whose categories are mapped to other names), and its reports show zero
    where the truth is "not looked at". Only list (not allow-list) feeds with at least one
    entry in the category count; a feed's category mapping applies first."""
    known = context.feed_categories
    assert known is not None
    for j, category in enumerate(loaded.policy.match.categories):
        if category not in known:
            offered = ", ".join(sorted(known)[:8]) or "none"
            yield Hit(
                ("match", "categories", j),
                f"match.categories[{j}]",
                f"no configured feed provides {category!r} (feeds provide: {offered})",
            )


@check(
    "WC009",
    "error",
    f"a cluster rule counts fewer than {MIN_CLUSTER_PEOPLE} people",
    exception="none expected: two people are a person and a friend",
)
def _small_cluster(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """A cluster alert says "several people of this unit did this": it is meant to show
    a pattern of a team, not of a person. A "cluster" of two is a person and a friend,
    and names both to anyone who knows the team. Any rule kind with a `min_people` field
    is held to it."""
    for i in range(len(loaded.policy.rules)):
        rule, name, subject = _rule(loaded, i)
        people = getattr(rule, "min_people", None)
        if isinstance(people, int) and people < MIN_CLUSTER_PEOPLE:
            yield Hit(
                ("rules", i, "min_people"),
                subject,
                f"min_people is {people}: a cluster of fewer than {MIN_CLUSTER_PEOPLE} "
                "people points at individuals",
                name,
            )


# --- warnings ---------------------------------------------------------------------------


@check(
    "WC010",
    "warning",
    "evidence: any counts mail a person only received",
    exception="not needed (a warning never refuses a policy)",
)
def _evidence_any(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Anyone can be sent spam, or be written to by a site they never contacted. With
    `evidence: any` such mail counts against the person who received it, so an alert
    could accuse someone of what others did to them. `conversation` still counts a
    site's replies to a person's own messages."""
    if loaded.policy.match.evidence == "any":
        yield Hit(
            ("match", "evidence"),
            "match.evidence",
            "any counts mail a person only received: anyone can be sent spam, so an alert "
            "could accuse someone of what others did to them (use conversation)",
        )


@check(
    "WC011",
    "warning",
    "direction: inbound keeps only received mail",
    exception="not needed (a warning never refuses a policy)",
)
def _inbound_only(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Received mail counts only as replies to a person's own messages, and with
    `direction: inbound` nothing a person sent is seen, so the policy finds almost
    nothing while appearing to watch."""
    if loaded.policy.match.direction == "inbound":
        yield Hit(
            ("match", "direction"),
            "match.direction",
            "inbound keeps only received mail, which counts only as replies to a "
            "person's own messages: the policy finds almost nothing",
        )


@check(
    "WC012",
    "warning",
    "the policy has no tests",
    exception="not needed (a warning never refuses a policy)",
)
def _no_tests(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Inline tests show, in the file a works council reads, what raises an alert and
    what does not (one message, mail only received, a small team). A policy without them
    makes a promise nobody has checked."""
    if not loaded.policy.tests:
        yield Hit((), "tests", "the policy has no tests (see `compliance policy test`)")


@check(
    "WC013",
    "warning",
    "a rule kind's own warning",
    exception="not needed (a warning never refuses a policy)",
)
def _kind_warnings(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """Each rule kind (built in or from a plugin) may warn about rules of its kind that
    are valid but likely to hurt someone or do nothing; its `lint` says why."""
    for i in range(len(loaded.policy.rules)):
        rule, name, subject = _rule(loaded, i)
        for warning in kind_of(rule).lint(rule):
            yield Hit(("rules", i), subject, warning, name)


@check(
    STALE_CHECK,
    "warning",
    "an approved exception matches nothing",
    exception="not applicable: remove or correct the exception",
)
def _stale(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """An exception in `lint_exceptions` that no finding matches (the policy was fixed,
    renamed, or the exception names the wrong check or rule) is reported, so that an
    approval does not linger, unread, until it silently covers a future change.
    (Reported by :func:`apply_exceptions`, not per policy.)"""
    return iter(())


# --- deterrence notice templates -------------------------------------------------------

#: The only variables a notice template receives: the policy's public text and the
#: configuration's organisation name and help contacts; nothing of the alert.
NOTICE_VARIABLES = frozenset(
    {"policy_title", "policy_description", "organisation", "help_contacts"}
)
#: The shipped default notice (text and HTML parts), in compliance/policy/templates/.
SHIPPED_NOTICE = ("notice.txt.j2", "notice.html.j2")
_SHIPPED_FOLDER = Path(__file__).with_name("templates")
#: A token that looks like a domain (a site's name) or a digit (a figure, a day).
_DOMAIN_TOKEN = re.compile(
    r"(?i)(?<![\w.@-])[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"\.[a-z][a-z0-9-]*[a-z0-9](?![\w-])"
)
_DIGITS = re.compile(r"\d+")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class NoticeTemplate:
    """A policy's notice template: its name, sources (text, and HTML or None), version."""

    name: str  # "default", or the path as the policy gives it
    text: str
    html: str | None

    @property
    def sha256(self) -> str:
        """The template's version: a hash of its parts."""
        digest = hashlib.sha256(self.text.encode())
        digest.update(b"\0" + (self.html or "").encode())
        return digest.hexdigest()


def notice_template(loaded: LoadedPolicy) -> NoticeTemplate:
    """The notice template of a policy with ``notice:``: its own (paths relative to the
    policy file) or the shipped default. OSError when a file cannot be read."""
    notice = loaded.policy.notice
    if notice is None or notice.template is None:
        text, html = (
            (_SHIPPED_FOLDER / name).read_text(encoding="utf-8") for name in SHIPPED_NOTICE
        )
        if notice is not None and notice.html_template is not None:
            html = (loaded.path.parent / notice.html_template).read_text(encoding="utf-8")
        return NoticeTemplate("default", text, html)
    text = (loaded.path.parent / notice.template).read_text(encoding="utf-8")
    own_html: str | None = None
    if notice.html_template is not None:
        own_html = (loaded.path.parent / notice.html_template).read_text(encoding="utf-8")
    return NoticeTemplate(notice.template, text, own_html)


#: The environment notice templates are parsed and rendered in: sandboxed (no attribute
#: of Python objects), strict (an unknown name is an error, never an empty string).
NOTICE_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)
NOTICE_HTML_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=True
)


def template_problems(source: str, html: bool = False) -> list[str]:
    """What makes a notice template unfit: a syntax error, a variable outside
    :data:`NOTICE_VARIABLES` (the alert's figures, domains or days are never given to
    it), or literal text (the template's own words and constants) holding a token that
    looks like a domain or a digit (a figure, a day). HTML tags are not text."""
    try:
        tree = NOTICE_ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    problems = [
        f"uses {name!r}: a notice may use only {', '.join(sorted(NOTICE_VARIABLES))}"
        for name in sorted(meta.find_undeclared_variables(tree) - NOTICE_VARIABLES)
    ]
    texts = [n.data for n in tree.find_all(nodes.TemplateData)]
    texts += [str(n.value) for n in tree.find_all(nodes.Const) if n.value is not None]
    for text in texts:
        words = _TAG.sub(" ", text) if html else text
        for found in _DOMAIN_TOKEN.findall(words):
            problems.append(f"its text names {found!r}, which looks like a domain")
        for found in _DIGITS.findall(words):
            problems.append(
                f"its text holds the number {found!r}: a notice states no figure or day"
            )
    return list(dict.fromkeys(problems))


@check(
    "WC015",
    "error",
    "a notice template uses more than the policy's public text",
    exception="never: write the notice from the policy's public text (help contacts go in "
    "the configuration's notices.help_contacts)",
)
def _notice_template(loaded: LoadedPolicy, context: LintContext) -> Iterator[Hit]:
    """A deterrence notice goes to a person, automatically, with nobody reading it first.
    It must remind them of the policy and say where to find help, and tell nothing of
    what was seen: no site, no count, no day. So a notice template may use only the
    policy's title and description, the organisation's name and the configured help
    contacts, and its own words may hold nothing that looks like a domain or a figure."""
    notice = loaded.policy.notice
    if notice is None:
        return
    try:
        template = notice_template(loaded)
    except OSError as exc:
        why = f"the template cannot be read: {exc.strerror}"
        yield Hit(("notice", "template"), "notice", why)
        return
    parts = (("template", template.text, False), ("html_template", template.html, True))
    for part, source, html in parts:
        if source is None:
            continue
        for problem in template_problems(source, html):
            yield Hit(("notice", part), f"notice {part} {template.name}", problem)


# --- running the checks -----------------------------------------------------------------


def review(loaded: LoadedPolicy, context: LintContext) -> list[Finding]:
    """Every check's findings on one policy, in line order (a check that cannot run for
    want of a :class:`LintContext` value gives one ``not-run`` finding)."""
    out = [f for c in CHECKS.values() for f in c.run(loaded, context)]
    return sorted(out, key=lambda f: (f.line is None, f.line or 0, f.check))


def apply_exceptions(
    findings: Sequence[Finding], approvals: Iterable[Approval]
) -> tuple[list[Finding], list[Finding]]:
    """(open, excepted): each finding an approval matches moves to *excepted*, with that
    approval; every other finding stays *open*. Give the approvals of the policies the
    findings are about: an approval that matches no finding is added to *open* as a
    :data:`STALE_CHECK` warning, unless its check did not run (nothing to match)."""
    approvals = list(approvals)
    used: set[int] = set()
    open_, excepted = [], []
    for finding in findings:
        match = next((i for i, a in enumerate(approvals) if a.matches(finding)), None)
        if match is None:
            open_.append(finding)
        else:
            used.add(match)
            excepted.append(replace(finding, approval=approvals[match]))
    not_run = {(f.policy, f.check) for f in findings if f.severity == "not-run"}
    for i, approval in enumerate(approvals):
        if i in used or (approval.policy, approval.check) in not_run:
            continue
        if approval.check not in CHECKS:
            why = f"names no lint check ({approval.check}; see `compliance policy lint --checks`)"
        else:
            rule = f" rule {approval.rule!r}" if approval.rule else ""
            why = (
                f"matches nothing: policy {approval.policy!r}{rule} has no "
                f"{approval.check} finding (remove the exception, or correct it)"
            )
        open_.append(
            Finding(
                STALE_CHECK,
                "warning",
                approval.path,
                approval.line,
                approval.policy,
                f"lint_exceptions {approval.check}",
                why,
                approval.rule,
            )
        )
    return open_, excepted


@dataclass
class LintResult:
    """Lint of several policies: what is open, what is excepted."""

    open: list[Finding]
    excepted: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        """Open errors: any of them refuses its policy."""
        return [f for f in self.open if f.is_open_error]


def lint_policies(
    policies: Sequence[LoadedPolicy],
    context: LintContext,
    approvals: Iterable[Approval] = (),
    *,
    all_policies: bool = False,
) -> LintResult:
    """:func:`review` every policy and :func:`apply_exceptions` of its approvals.

    ``all_policies``: these are all the deployment's policies, so an approval naming a
    policy not among them is stale too (else it is left alone: another file's).
    """
    approvals = list(approvals)
    ids = {lp.policy.id for lp in policies}
    result = LintResult([], [])
    for lp in policies:
        mine = [a for a in approvals if a.policy == lp.policy.id]
        open_, excepted = apply_exceptions(review(lp, context), mine)
        result.open.extend(open_)
        result.excepted.extend(excepted)
    if all_policies:
        for a in approvals:
            if a.policy not in ids:
                result.open.append(
                    Finding(
                        STALE_CHECK,
                        "warning",
                        a.path,
                        a.line,
                        a.policy,
                        f"lint_exceptions {a.check}",
                        f"names no configured policy ({a.policy!r})",
                        a.rule,
                    )
                )
    return result


def enforce(
    policies: Sequence[LoadedPolicy], context: LintContext, approvals: Iterable[Approval]
) -> LintResult:
    """For the job: lint every configured policy (a disabled one, never evaluated, is
    left out: its approvals are not reported stale either); raise a :class:`PolicyError` naming
    every open error (file, line, check and reason), else return the result, whose
    ``excepted`` findings are the exceptions in effect (write each to the audit log)."""
    disabled = {lp.policy.id for lp in policies if lp.policy.status == "disabled"}
    result = lint_policies(
        [lp for lp in policies if lp.policy.id not in disabled],
        context,
        [a for a in approvals if a.policy not in disabled],
        all_policies=True,
    )
    errors = result.errors
    if errors:
        raise PolicyError(
            [
                Problem(f.path, f.line, None, f"error {f.check} {f.subject}: {f.message}")
                for f in errors
            ]
        )
    return result
