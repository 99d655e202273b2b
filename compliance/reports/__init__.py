"""Reports for compliance staff: one data model, rendered as HTML, JSON, CSV or a text table.

The same :class:`ReportData` is built from an audit (in memory) or from the store (a
scheduled run), and it passes the privacy layer once more on the way out: org units
are rolled up to the report's minimum group size and only pseudonyms appear.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2
import numpy as np
import pandas as pd

from compliance import __version__
from compliance.alerts import Alert
from compliance.csvsafe import write_csv
from compliance.episodes import describe_change
from compliance.errors import shown_url
from compliance.events import UNKNOWN_UNIT
from compliance.feeds import FeedInfo
from compliance.policy.evaluate import PeopleIds
from compliance.policy.evidence import (
    BLOCKED,
    RECEIVED_ONLY,
    REPLY,
    SENT,
    UNDELIVERED,
    classify,
)
from compliance.policy.loader import LoadedPolicy
from compliance.policy.model import SEVERITY_ORDER
from compliance.privacy import count_people, plain_ids, rollup_map, suppress_small_cells
from compliance.reports.charts import ReportCharts, report_charts, withheld_why
from compliance.tables import aligned

ALERT_FIELDS = (
    "id", "policy", "policy_version", "rule", "rule_id", "severity", "subject", "org_unit",
    "messages", "people", "days", "domains", "categories", "first_day", "last_day",
    "trigger_day", "raised_day", "ended", "state", "change", "draft", "exchange_confirmed",
    "ring",
)  # fmt: skip

#: How an alert's marks read in every format (one definition): the verification pattern,
#: and a ring's figures.
EXCHANGE_MARK = "exchange confirmed"
RING_ROLES = ("first", "introducer", "member")


def ring_text(ring: Mapping[str, Any] | None) -> str:
    """A ring alert's figures in words (CSV, table, HTML): ``ring of 5 people, 2 units,
    3 domains; roles: first 1, introducer 1, member 3``; "" for other alerts."""
    if not ring:
        return ""
    roles = ring.get("roles") or {}
    named = [r for r in RING_ROLES if r in roles] + sorted(set(roles) - set(RING_ROLES))
    said = ", ".join(f"{r} {roles[r]}" for r in named)
    return (
        f"ring of {_count(ring.get('size'))} people, {_count(ring.get('units'))} units, "
        f"{_count(ring.get('domains'))} domains" + (f"; roles: {said}" if said else "")
    )


def _count(value: Any) -> str:
    """A ring figure: a count, or the length of a list of names."""
    if isinstance(value, list | tuple):
        return str(len(value))
    return "?" if value is None else str(value)


def alert_marks(alert: Alert) -> str:
    """The alert's marks in words: ``exchange confirmed``, a ring's figures, or ""."""
    marks = [EXCHANGE_MARK] if alert.exchange_confirmed else []
    if alert.ring:
        marks.append(ring_text(alert.ring))
    return "; ".join(marks)


#: Columns of the notice-effect table and what they count (one definition for every
#: format): per policy with deterrence notices, follow-up window and arm.
NOTICE_EFFECT_COLUMNS = {
    "policy": "the policy whose notices are measured",
    "window": "days after the notice was decided (or held back) in which further evidence "
    "is looked for; only people whose window has passed are counted",
    "arm": "notice: people sent a notice; holdout: people the keyed hash held back, who got "
    "none (the comparison)",
    "people": "people in the arm (each person's first decision)",
    "continued": "of them, people with further evidence under the policy within the window",
    "share": "continued / people",
}

#: Columns of the org-unit table and what they count (one definition for every format).
UNIT_COLUMNS = {
    "outbound": "external messages sent (all mail, matched or not)",
    "inbound": "external messages received (all mail, matched or not)",
    "sent": "messages people of the unit sent to listed sites (any delivery status)",
    "replies": "messages from listed sites that answered a person's own message",
    "people": "people with evidence: they sent to, or were answered by, a listed site",
    "received_only": "messages from listed sites that answered nobody (spam waves, "
    "newsletters, mistyped addresses), including those the gateway filtered: no person "
    "is behind this figure",
    "alerts": "alerts of the period",
}


@dataclass
class ReportData:
    """Everything a report shows; no address or name can be in it."""

    title: str
    first_day: str | None
    last_day: str | None
    alerts: list[Alert]
    policies: list[dict[str, Any]]
    units: list[dict[str, Any]]
    rows_read: int
    rejected: dict[str, int]
    skipped: dict[str, int]
    matched: int | None  # evidence messages (sent + replies); None: withheld
    sources: list[dict[str, Any]]
    feeds: list[dict[str, Any]]
    min_group_size: int
    people: int | None = None  # people with evidence, None when withheld
    received_only: int | None = None  # None when withheld
    as_of: str | None = None  # alerts raised after this day wait for a daily limit
    effectiveness: list[dict[str, Any]] = field(default_factory=list)
    #: deterrence notices' effect: rows of :data:`NOTICE_EFFECT_COLUMNS`, suppressed
    notice_effect: list[dict[str, Any]] = field(default_factory=list)
    generated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def live_alerts(self) -> list[Alert]:
        """Alerts that count: not drafts, not waiting for a later day."""
        return [a for a in self.alerts if not a.draft and not self.waiting(a)]

    def waiting(self, alert: Alert) -> bool:
        """Whether an alert waits for a later day (a policy's max_alerts_per_day)."""
        return alert.waits_after(self.as_of)

    @property
    def waiting_count(self) -> int:
        """Alerts held back by a policy's daily limit."""
        return sum(1 for a in self.alerts if self.waiting(a))

    @property
    def by_severity(self) -> list[tuple[str, int]]:
        """Alert counts per severity, most severe first."""
        counts = Counter(a.severity for a in self.live_alerts)
        return [(s, counts[s]) for s in sorted(SEVERITY_ORDER, key=lambda s: SEVERITY_ORDER[s])]

    @property
    def by_change(self) -> list[tuple[str, int]]:
        """Alerts new, updated, ended and unchanged since the previous report (waiting ones
        are counted apart: :attr:`waiting_count`)."""
        counts = Counter(a.change for a in self.live_alerts)
        return [(c, counts[c]) for c in ("new", "updated", "ended", "unchanged")]

    @property
    def by_policy(self) -> list[tuple[str, int, int]]:
        """(policy, alerts, draft alerts) per policy."""
        alerts = Counter(a.policy for a in self.live_alerts)
        drafts = Counter(a.policy for a in self.alerts if a.draft)
        return [(p["id"], alerts[p["id"]], drafts[p["id"]]) for p in self.policies]

    @property
    def charts(self) -> ReportCharts:
        """The HTML report's charts (inline SVG) and the tables of their figures: alerts
        per ISO week (live alerts only), matched traffic per org unit, triage outcomes."""
        return report_charts(self.live_alerts, self.units, self.effectiveness, self.min_group_size)

    @property
    def withheld_why(self) -> str:
        """Why a figure of this report is withheld (for readers, not a bare "withheld")."""
        return withheld_why(self.min_group_size)

    def sorted_alerts(self) -> list[Alert]:
        """Alerts, most severe first, then by day."""
        return sorted(
            self.alerts, key=lambda a: (a.draft, SEVERITY_ORDER[a.severity], a.trigger_day)
        )

    def summary_line(self) -> str:
        """The one-line summary every format shares."""
        changes = ", ".join(f"{n} {c}" for c, n in self.by_change if n)
        return (
            f"rows read {self.rows_read}, rejected {sum(self.rejected.values())}, "
            f"matched {_figure(self.matched)}, received only {_figure(self.received_only)}, "
            f"alerts {len(self.live_alerts)}"
            + (f" ({changes})" if changes else "")
            + (f", waiting {self.waiting_count}" if self.waiting_count else "")
        )


def _figure(value: int | None) -> str:
    return "withheld" if value is None else str(value)


def change_text(alert: Alert) -> str:
    """``new``, ``updated +3 msgs +1 day``, ``ended``, ``unchanged`` (as ``alerts list``)."""
    return describe_change(alert.change, alert.delta)


def report_threshold(min_group_size: int, policies: list[LoadedPolicy]) -> int:
    """One roll-up threshold per report: the report's, or a policy's if larger, so that an
    alert and the org-unit table always place a unit alike."""
    sizes = [lp.policy.privacy.min_group_size for lp in policies if lp.policy.status != "disabled"]
    return max([min_group_size, *sizes])


def reply_window(policies: list[LoadedPolicy]) -> int:
    """The reply window the org-unit table classifies with: the policies' longest."""
    return max((lp.policy.match.reply_window for lp in policies), default=14)


class Partitioned(Protocol):
    """Matched events too many for memory (an audit's, spilled to disk): read in
    partitions, each holding every event of the org units it covers."""

    def partitions(self) -> Iterator[pd.DataFrame]:
        """The events, partition by partition (minimised frames)."""
        ...


def matched_partitions(matched: pd.DataFrame | Partitioned) -> Iterator[pd.DataFrame]:
    """Matched events partition by partition: a frame is one partition."""
    if isinstance(matched, pd.DataFrame):
        yield matched
    else:
        yield from matched.partitions()


def unit_table(
    inputs: ReportInputs, alerts: list[Alert], min_group_size: int
) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
    """Per reported org unit: external messages by direction, matched traffic by evidence
    class (see :data:`UNIT_COLUMNS`), people with evidence, alerts.

    Units smaller than ``min_group_size`` are merged into their parent (by headcount);
    cells counting fewer people than that are then withheld, with complementary cells,
    so that no withheld cell can be recovered from the totals (returned alongside). The
    received-only figure is protected the same way by the number of its recipients.
    Matched events before ``counted_from`` only serve to recognise replies; replies are
    recognised with the policies' longest reply window.

    Matched events come in partitions (one frame, or an audit's spilled partitions), each
    holding all the events of the reported units it covers: each unit's matched figures
    are computed in its one partition (:func:`matched_unit_figures`), and suppression
    runs once over all units.
    """
    totals, headcounts = inputs.totals, inputs.headcounts
    mapping = rollup_map(headcounts, min_group_size) if headcounts else {}

    def roll(units: pd.Series) -> pd.Series:
        return units.map(lambda u: u if u == UNKNOWN_UNIT else mapping.get(u, u))

    rows: dict[str, dict[str, Any]] = {}

    def row(unit: str) -> dict[str, Any]:
        return rows.setdefault(
            unit,
            {
                "unit": unit, "outbound": 0, "inbound": 0, "sent": 0, "replies": 0,
                "people": 0, "received_only": 0, "recipients": 0, "alerts": 0,
            },
        )  # fmt: skip

    if not totals.empty:
        t = totals.assign(unit=roll(totals["org_unit"]))
        t = t[t["direction"].isin(["outbound", "inbound"])]
        sums = t.groupby(["unit", "direction"])["messages"].sum()
        for (unit, direction), n in zip(sums.index.tolist(), sums.tolist(), strict=True):
            row(str(unit))[str(direction)] = int(n)
    counted: set[str] = set()
    for part in matched_partitions(inputs.matched):
        for unit, figures in matched_unit_figures(part, inputs, roll).items():
            if unit in counted:  # a person counted in two partitions would count twice
                raise ValueError("a reported unit's matched events span two partitions")
            counted.add(unit)
            row(unit).update(figures)
    for alert in alerts:
        if not alert.draft:
            row(alert.org_unit)["alerts"] += 1
    ordered = sorted(
        rows.values(), key=lambda r: (-r["alerts"], -(r["sent"] + r["replies"]), r["unit"])
    )
    published, evidence_totals = suppress_small_cells(
        ordered, min_group_size, ("people", "sent", "replies")
    )
    published, received_totals = suppress_small_cells(
        published, min_group_size, ("recipients", "received_only")
    )
    for r in published:
        r.pop("recipients")
    # listed by what is published only: an order taken from the hidden figures would place a
    # withheld unit between the units whose counts bound it
    published.sort(key=_published_order)
    sent, replies = evidence_totals["sent"], evidence_totals["replies"]
    return published, {
        "matched": None if sent is None or replies is None else sent + replies,
        "people": evidence_totals["people"],
        "sent": sent,
        "replies": replies,
        "received_only": received_totals["received_only"],
    }


def matched_unit_figures(
    matched: pd.DataFrame, inputs: ReportInputs, roll: Callable[[pd.Series], pd.Series]
) -> dict[str, dict[str, int]]:
    """The matched figures of each reported unit (``roll``: an org unit to the unit it is
    reported as) in ``matched``, which holds every event of those units: messages sent
    and replies, received only, people with evidence and recipients of received-only
    mail (:data:`UNIT_COLUMNS`), before suppression."""
    if matched.empty:
        return {}
    classes = classify(matched, reply_window(inputs.policies))
    ids, linked = (inputs.people_ids or plain_ids)(matched["person"], matched["epoch"])
    m = matched.assign(unit=roll(matched["org_unit"]), _class=classes, _id=ids, _linked=linked)
    if inputs.counted_from is not None:
        m = m[m["day"] >= inputs.counted_from]
    found: dict[str, dict[str, int]] = {}
    for unit, group in m.groupby("unit"):
        cls = group["_class"].to_numpy()
        evidence = np.isin(cls, [SENT, UNDELIVERED, REPLY])
        # neither an automatic reply nor a copy of a message counted already
        received = np.isin(cls, [RECEIVED_ONLY, BLOCKED])
        ids_, linked_ = group["_id"].to_numpy(), group["_linked"].to_numpy(dtype=bool)
        epochs = group["epoch"].astype(str).to_numpy()
        found[str(unit)] = {
            "sent": int(np.isin(cls, [SENT, UNDELIVERED]).sum()),
            "replies": int((cls == REPLY).sum()),
            "received_only": int(received.sum()),
            "people": count_people(ids_[evidence], linked_[evidence], epochs[evidence]),
            "recipients": count_people(ids_[received], linked_[received], epochs[received]),
        }
    return found


@dataclass(frozen=True)
class ReportInputs:
    """What a report is built from: the same for an audit (from memory) and a scheduled
    report (from the store)."""

    title: str
    first_day: str | None
    last_day: str | None
    as_of: str | None  # alerts raised after this day wait (a policy's daily limit)
    alerts: list[Alert]
    policies: list[LoadedPolicy]
    totals: pd.DataFrame  # daily totals: day, org_unit, direction, messages
    matched: pd.DataFrame | Partitioned  # matched events, minimised schema
    headcounts: Mapping[str, int] | None
    min_group_size: int
    rows_read: int
    rejected: Mapping[str, int]
    skipped: Mapping[str, int]
    sources: list[dict[str, Any]]
    feeds: list[FeedInfo]
    people_ids: PeopleIds | None = None
    counted_from: str | None = None  # matched events before it only recognise replies
    effectiveness: list[dict[str, Any]] | None = None
    notice_effect: list[dict[str, Any]] | None = None  # compliance.notices.effect rows


def notice_effect_rows(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The notice-effect figure as reports show it: per policy and window, the two arms'
    counts through :func:`~compliance.privacy.suppress_small_cells` (an arm of fewer than
    ``k`` people is withheld, with a complement), and a ``continued`` count, or the count
    of those who stopped, of 1 to k-1 people withheld too (it would single them out);
    ``share`` only where both counts are shown."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["policy"]), int(row["window"])), []).append(row)
    for (_policy, _window), group in sorted(groups.items()):
        shown, _totals = suppress_small_cells(group, k, ("people", "continued"))
        for row in shown:
            people, continued = row["people"], row["continued"]
            if people is not None and continued is not None:
                stopped = people - continued
                if 0 < continued < k or 0 < stopped < k:
                    continued = None
            row["continued"] = continued
            row["share"] = (
                round(continued / people, 3) if people and continued is not None else None
            )
            out.append(row)
    return out


def _published_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Units with most alerts first, then most matched traffic as published (withheld
    units after those shown), then by name."""
    withheld = row["sent"] is None or row["replies"] is None
    traffic = 0 if withheld else row["sent"] + row["replies"]
    return (-row["alerts"], withheld, -traffic, row["unit"])


def build_report(inputs: ReportInputs) -> ReportData:
    """The report data of an audit or of a scheduled report: the one place every figure
    of every format (table, JSON, HTML, CSV) is computed."""
    k = report_threshold(inputs.min_group_size, inputs.policies)
    if inputs.headcounts:  # one roll-up for alerts and the org-unit table alike
        mapping = rollup_map(inputs.headcounts, k)
        for alert in inputs.alerts:
            if alert.org_unit != UNKNOWN_UNIT:
                alert.org_unit = mapping.get(alert.org_unit, alert.org_unit)
    live = [a for a in inputs.alerts if not a.waits_after(inputs.as_of)]
    units, unit_totals = unit_table(inputs, live, k)
    return ReportData(
        title=inputs.title,
        first_day=inputs.first_day,
        last_day=inputs.last_day,
        alerts=inputs.alerts,
        policies=policy_rows(inputs.policies),
        units=units,
        rows_read=inputs.rows_read,
        rejected=dict(inputs.rejected),
        skipped=dict(inputs.skipped),
        matched=unit_totals["matched"],
        people=unit_totals["people"],
        received_only=unit_totals["received_only"],
        sources=inputs.sources,
        feeds=feed_rows(inputs.feeds),
        min_group_size=k,
        as_of=inputs.as_of,
        effectiveness=inputs.effectiveness or [],
        notice_effect=notice_effect_rows(inputs.notice_effect or [], k),
    )


def policy_rows(policies: list[LoadedPolicy]) -> list[dict[str, Any]]:
    """Policy id, title, version and status, for the report header."""
    return [
        {
            "id": lp.policy.id,
            "title": lp.policy.title,
            "version": lp.policy.version,
            "status": lp.policy.status,
        }
        for lp in policies
    ]


#: Columns of the feed table and their headings (one definition for every format): each
#: feed's version (the digest of its content as loaded) and where it came from.
FEED_COLUMNS = {
    "name": "Feed",
    "kind": "Kind",
    "format": "Format",
    "entries": "Entries",
    "categories": "Categories",
    "skipped": "Skipped entries",
    "sha256": "Version (SHA-256)",
    "fetched_at": "Fetched at (UTC)",
    "url": "Source",
    "licence": "Licence",
    "attribution": "Attribution",
}


def feed_rows(feeds: list[FeedInfo]) -> list[dict[str, Any]]:
    """Feed provenance for the data-quality section: the version each feed was loaded at
    (the first 12 hex digits of its content digest, as `compliance feeds history` names
    it), when it was fetched (where the store knows the version), its source URL,
    licence and attribution; None where unknown."""
    return [
        {
            "name": f.name,
            "kind": f.kind,
            "format": f.format,
            "entries": f.entries,
            "categories": ", ".join(f"{c} ({n})" for c, n in sorted(f.categories.items())),
            "skipped": sum(f.skipped.values()),
            "sha256": f.sha256[:12],
            "fetched_at": f.fetched_at,
            "url": shown_url(f.url) if f.url else f.url,
            "licence": f.licence,
            "attribution": f.attribution,
        }
        for f in feeds
    ]


def feed_line(row: dict[str, Any]) -> str:
    """One feed row of :func:`feed_rows` in words, for the text table."""
    said = [
        f"{row['kind']} ({row['format']}), {row['entries']:,} entries"
        + (f", {row['skipped']:,} skipped" if row["skipped"] else ""),
        f"version {row['sha256']}",
    ]
    if row["fetched_at"]:
        said.append(f"fetched {row['fetched_at']}")
    for key, label in (("url", "from"), ("licence", "licence"), ("attribution", "by")):
        if row[key]:
            said.append(f"{label} {row[key]}")
    return f"feed {row['name']}: " + "; ".join(said)


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("compliance.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(data: ReportData) -> str:
    """The self-contained HTML report."""
    return _env.get_template("report.html.j2").render(
        r=data,
        version=__version__,
        change_text=change_text,
        feed_columns=FEED_COLUMNS,
        alert_marks=alert_marks,
        notice_effect_columns=NOTICE_EFFECT_COLUMNS,
    )


def report_document(data: ReportData) -> dict[str, Any]:
    """The report as plain data, without its alerts (JSON output; see :func:`alert_record`)."""
    return {
        "title": data.title,
        "first_day": data.first_day,
        "last_day": data.last_day,
        "generated_at": data.generated_at,
        "policies": data.policies,
        "summary": {
            "alerts": len(data.live_alerts),
            "by_change": dict(data.by_change),
            "by_severity": dict(data.by_severity),
            "waiting": data.waiting_count,
            "matched": data.matched,
            "people": data.people,
            "received_only": data.received_only,
        },
        "org_units": data.units,
        "org_units_total": {
            "matched": data.matched,
            "people": data.people,
            "received_only": data.received_only,
        },
        "org_unit_columns": UNIT_COLUMNS,
        "withheld": "null counts are withheld: they count fewer than "
        f"{data.min_group_size} people, or would let such a count be recovered",
        "effectiveness": data.effectiveness,
        "notice_effect": data.notice_effect,
        "notice_effect_columns": NOTICE_EFFECT_COLUMNS,
        "data_quality": {
            "rows_read": data.rows_read,
            "rejected": data.rejected,
            "skipped": data.skipped,
            "matched": data.matched,
            "sources": data.sources,
            "feeds": data.feeds,
            "feed_columns": FEED_COLUMNS,
        },
    }


def alert_record(data: ReportData, alert: Alert) -> dict[str, Any]:
    """One alert as the JSON outputs write it."""
    record = alert.as_dict()
    record["waiting"] = data.waiting(alert)
    return record


def render_json(data: ReportData) -> str:
    """The report as one JSON document."""
    document = report_document(data)
    document["alerts"] = [alert_record(data, a) for a in data.sorted_alerts()]
    return json.dumps(document, indent=2)


def render_csv(alerts: list[Alert]) -> str:
    """Alerts as CSV, one row each (lists joined with ';').

    Through :func:`compliance.csvsafe.write_csv`: org units, rule ids and categories come
    from directories, policies and feeds, and a cell that begins like a formula is
    written as text (a quote in front) so that opening the file in a spreadsheet cannot
    run it.
    """
    dicts = (alert.as_dict() for alert in alerts)
    return write_csv(
        ALERT_FIELDS,
        ([ring_text(data[f]) if f == "ring" else data[f] for f in ALERT_FIELDS] for data in dicts),
    )


def render_table(data: ReportData) -> str:
    """A plain-text summary for the terminal."""
    lines = [
        f"{data.title}: {data.first_day or '-'} to {data.last_day or '-'}",
        data.summary_line(),
    ]
    for label, counts in (("rejected", data.rejected), ("skipped", data.skipped)):
        if counts:
            lines.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines.extend(feed_line(row) for row in data.feeds)
    if not data.alerts:
        lines.append("no alerts")
        return "\n".join(lines) + "\n"
    header: tuple[str, ...] = (
        "id", "change", "severity", "policy", "rule", "subject", "org unit", "msgs", "people",
        "days", "episode", "triage", "marks",
    )  # fmt: skip
    body: list[tuple[str, ...]] = [
        (
            "-" if a.id is None else str(a.id),
            change_text(a),
            a.severity + (" (draft)" if a.draft else ""),
            a.policy,
            a.rule_id,
            a.person or "-",
            a.org_unit,
            str(a.messages),
            str(a.people),
            str(a.days),
            f"{a.first_day}..{a.last_day}" + (" ended" if a.ended else ""),
            f"waiting until {a.raised_day}" if data.waiting(a) else a.state,
            alert_marks(a) or "-",
        )
        for a in data.sorted_alerts()
    ]
    if not any(row[-1] != "-" for row in body):  # a column of nothing but dashes says nothing
        header, body = header[:-1], [row[:-1] for row in body]
    lines.append("")
    lines.extend(aligned(header, body))
    lines.extend(notice_effect_lines(data))
    return "\n".join(lines) + "\n"


def notice_effect_lines(data: ReportData) -> list[str]:
    """The notice-effect table for the terminal ("" lines when there is none)."""
    if not data.notice_effect:
        return []
    header = ("policy", "window", "arm", "people", "continued", "share")
    body = [
        (
            str(row["policy"]),
            f"{row['window']} days",
            str(row["arm"]),
            _figure(row["people"]),
            _figure(row["continued"]),
            "withheld" if row["share"] is None else f"{row['share']:.0%}",
        )
        for row in data.notice_effect
    ]
    title = "deterrence notices: further evidence after the notice, against the holdout"
    return ["", title, *aligned(header, body)]
