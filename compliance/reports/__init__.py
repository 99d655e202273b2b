"""Reports for compliance staff: one data model, rendered as HTML, JSON, CSV or a text table.

The same :class:`ReportData` is built from an audit (in memory) or from the store (a
scheduled run), and it passes the privacy layer once more on the way out: org units
are rolled up to the report's minimum group size and only pseudonyms appear.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import pandas as pd

from compliance import __version__
from compliance.events import UNKNOWN_UNIT
from compliance.feeds import FeedInfo
from compliance.policy.evaluate import Alert
from compliance.policy.loader import LoadedPolicy
from compliance.policy.model import SEVERITY_ORDER
from compliance.privacy import rollup_map, suppress_small_cells

ALERT_FIELDS = (
    "policy", "policy_version", "rule", "rule_id", "severity", "subject", "org_unit",
    "messages", "people", "domains", "categories", "first_day", "last_day", "trigger_day",
    "draft",
)  # fmt: skip


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
    matched: int | None  # None: withheld to protect a small group
    sources: list[dict[str, Any]]
    feeds: list[dict[str, Any]]
    min_group_size: int
    people: int | None = None  # people with matches, None when withheld
    generated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def by_severity(self) -> list[tuple[str, int]]:
        """Alert counts per severity, most severe first."""
        counts = Counter(a.severity for a in self.alerts if not a.draft)
        return [(s, counts[s]) for s in sorted(SEVERITY_ORDER, key=lambda s: SEVERITY_ORDER[s])]

    @property
    def by_policy(self) -> list[tuple[str, int, int]]:
        """(policy, alerts, draft alerts) per policy."""
        alerts = Counter(a.policy for a in self.alerts if not a.draft)
        drafts = Counter(a.policy for a in self.alerts if a.draft)
        return [(p["id"], alerts[p["id"]], drafts[p["id"]]) for p in self.policies]

    def sorted_alerts(self) -> list[Alert]:
        """Alerts, most severe first, then by day."""
        return sorted(
            self.alerts, key=lambda a: (a.draft, SEVERITY_ORDER[a.severity], a.trigger_day)
        )


def unit_table(
    totals: pd.DataFrame,
    matched: pd.DataFrame,
    alerts: list[Alert],
    headcounts: Mapping[str, int] | None,
    min_group_size: int,
) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
    """Per reported org unit: external messages by direction, matches, people, alerts.

    Units smaller than ``min_group_size`` are merged into their parent (by headcount);
    cells counting fewer people than that are then withheld, with complementary cells,
    so that no withheld cell can be recovered from the totals (returned alongside).
    """
    mapping = rollup_map(headcounts, min_group_size) if headcounts else {}

    def roll(units: pd.Series) -> pd.Series:
        return units.map(lambda u: u if u == UNKNOWN_UNIT else mapping.get(u, u))

    rows: dict[str, dict[str, Any]] = {}

    def row(unit: str) -> dict[str, Any]:
        return rows.setdefault(
            unit,
            {"unit": unit, "outbound": 0, "inbound": 0, "matched": 0, "people": 0, "alerts": 0},
        )

    if not totals.empty:
        t = totals.assign(unit=roll(totals["org_unit"]))
        t = t[t["direction"].isin(["outbound", "inbound"])]
        sums = t.groupby(["unit", "direction"])["messages"].sum()
        for (unit, direction), n in zip(sums.index.tolist(), sums.tolist(), strict=True):
            row(str(unit))[str(direction)] = int(n)
    if not matched.empty:
        m = matched.assign(unit=roll(matched["org_unit"]))
        for unit, group in m.groupby("unit"):
            r = row(str(unit))
            r["matched"] = len(group)
            r["people"] = int(group["subject"].nunique())
    for alert in alerts:
        if not alert.draft:
            row(alert.org_unit)["alerts"] += 1
    ordered = sorted(rows.values(), key=lambda r: (-r["alerts"], -r["matched"], r["unit"]))
    return suppress_small_cells(ordered, min_group_size)


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


def feed_rows(feeds: list[FeedInfo]) -> list[dict[str, Any]]:
    """Feed provenance for the data-quality section."""
    return [
        {
            "name": f.name,
            "format": f.format,
            "entries": f.entries,
            "categories": ", ".join(f"{c} ({n})" for c, n in sorted(f.categories.items())),
            "skipped": sum(f.skipped.values()),
            "sha256": f.sha256[:12],
        }
        for f in feeds
    ]


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("compliance.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(data: ReportData) -> str:
    """The self-contained HTML report."""
    return _env.get_template("report.html.j2").render(r=data, version=__version__)


def render_json(data: ReportData) -> str:
    """The report as one JSON document."""
    return json.dumps(
        {
            "title": data.title,
            "first_day": data.first_day,
            "last_day": data.last_day,
            "generated_at": data.generated_at,
            "policies": data.policies,
            "alerts": [a.as_dict() for a in data.sorted_alerts()],
            "org_units": data.units,
            "org_units_total": {"matched": data.matched, "people": data.people},
            "withheld": "null counts are withheld: they count fewer than "
            f"{data.min_group_size} people, or would let such a count be recovered",
            "data_quality": {
                "rows_read": data.rows_read,
                "rejected": data.rejected,
                "skipped": data.skipped,
                "matched": data.matched,
                "sources": data.sources,
                "feeds": data.feeds,
            },
        },
        indent=2,
    )


def render_csv(alerts: list[Alert]) -> str:
    """Alerts as CSV, one row each (lists joined with ';')."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ALERT_FIELDS)
    for alert in alerts:
        data = alert.as_dict()
        writer.writerow(
            [";".join(v) if isinstance(v, list) else v for v in (data[f] for f in ALERT_FIELDS)]
        )
    return out.getvalue()


def render_table(data: ReportData) -> str:
    """A plain-text summary for the terminal."""
    lines = [
        f"{data.title}: {data.first_day or '-'} to {data.last_day or '-'}",
        f"rows read {data.rows_read}, rejected {sum(data.rejected.values())}, "
        f"matched {'withheld' if data.matched is None else data.matched}, "
        f"alerts {len(data.alerts)}",
    ]
    if data.rejected:
        lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(data.rejected.items())))
    if not data.alerts:
        lines.append("no alerts")
        return "\n".join(lines) + "\n"
    header = ("severity", "policy", "rule", "subject", "org unit", "msgs", "people", "days")
    body = [
        (
            a.severity + (" (draft)" if a.draft else ""),
            a.policy,
            a.rule_id,
            a.subject or "-",
            a.org_unit,
            str(a.messages),
            str(a.people),
            f"{a.first_day}..{a.last_day}",
        )
        for a in data.sorted_alerts()
    ]
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines.append("")
    for r in (header, *body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"
