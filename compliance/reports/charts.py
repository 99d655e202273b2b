"""Charts of the HTML report: small inline SVG, written by hand.

Three charts, each built from figures the report already shows, each with its alt text
(an SVG ``<title>`` and an ``aria-label``) and a table of the same figures beside it:

- alerts per ISO week of their *raised day* (the day an alert reached the triage queue, as
  ``compliance alerts stats`` counts it; the trigger day where none is recorded), stacked
  by policy and severity (:func:`alerts_per_week`);
- matched traffic per org unit (messages sent to listed sites, replies from them) from the
  org-unit table (:func:`unit_traffic`). A withheld unit is drawn as a hatched band that
  spans the whole axis and says why it is withheld: no value, no length, and units are
  ordered by published figures only, so that neither its bar nor its place gives a
  withheld count away;
- triage outcomes (confirmed, dismissed by reason, still open) from the effectiveness
  figures (:func:`triage_outcomes`).

Safety: every text that reaches the SVG (org units, policies, rules, reasons, weeks) is
escaped for XML and HTML alike; the SVG holds no script, no event handler, no link and
no reference outside itself (the hatching is a ``<pattern>`` of the same SVG).
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compliance.alerts import Alert
from compliance.policy.model import SEVERITY_ORDER
from compliance.triage import iso_week

WIDTH = 520  # of the viewBox: drawn at this size at most, scaled down on narrow screens
FONT = 12
SEVERITY_COLOURS = {"critical": "#8b1a1a", "high": "#b3461c", "medium": "#8a6d00", "low": "#3b6e3b"}
SENT_COLOUR, REPLY_COLOUR = "#2f5d8c", "#8fb3da"
OUTCOME_COLOURS = {"confirmed": "#8b1a1a", "dismissed": "#5b6672", "open": "#b38600"}
GRID, MUTED, FG = "#d8dee4", "#5b6672", "#1d232a"
MAX_UNITS = 24  # bars of the unit chart; the org-unit table lists every unit
_LIST = 8  # items an alt text names before it says "and N more"


def withheld_why(min_group_size: int) -> str:
    """Why a figure is withheld, in words a reader understands."""
    return (
        f"fewer than {min_group_size} people, or it would let a count that small be "
        "worked out from the other figures"
    )


def esc(text: object) -> str:
    """Text for an SVG (or HTML) element or attribute: ``& < > " '`` escaped."""
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Chart:
    """One chart: the inline SVG (escaped, self-contained) and its alt text."""

    svg: str
    summary: str

    def __str__(self) -> str:
        return self.svg


# --- data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeekRow:
    """Alerts raised in one ISO week under one policy, by severity."""

    week: str
    policy: str
    by_severity: dict[str, int]

    @property
    def total(self) -> int:
        """Alerts of the row."""
        return sum(self.by_severity.values())


def alert_day(alert: Alert) -> str:
    """The day an alert is counted on: its raised day, else its trigger day."""
    return alert.raised_day or alert.trigger_day


def alert_weeks(alerts: Iterable[Alert]) -> list[WeekRow]:
    """Alerts per ISO week of :func:`alert_day` and policy, by severity (week, policy order)."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for alert in alerts:
        cell = counts[(iso_week(alert_day(alert)), alert.policy)]
        cell[alert.severity] = cell.get(alert.severity, 0) + 1
    return [
        WeekRow(week, policy, {s: cells[s] for s in _severities(cells)})
        for (week, policy), cells in sorted(counts.items())
    ]


def _severities(present: Iterable[str]) -> list[str]:
    return sorted(set(present), key=lambda s: (SEVERITY_ORDER.get(s, len(SEVERITY_ORDER)), s))


def _undecided(row: Mapping[str, Any]) -> int:
    if row.get("undecided") is not None:
        return int(row["undecided"])
    return (
        int(row.get("raised") or 0)
        - int(row.get("confirmed") or 0)
        - int(row.get("dismissed") or 0)
    )


@dataclass(frozen=True)
class Outcomes:
    """Triage outcomes: (label, kind, alerts) rows and what they cover."""

    rows: list[tuple[str, str, int]]
    scope: str  # "the report's weeks" or "all alerts kept"

    @property
    def total(self) -> int:
        """Alerts counted."""
        return sum(n for _, _, n in self.rows)


def triage_outcomes(effectiveness: Sequence[Mapping[str, Any]]) -> Outcomes | None:
    """Confirmed, dismissed by reason and open alerts, summed over the effectiveness rows of
    the report's weeks (those of the whole period kept when no alert was raised in them).
    Effectiveness rows name up to three reasons each; other dismissals are "other reasons".
    None without effectiveness figures."""
    weekly = [e for e in effectiveness if e.get("week")]
    rows = weekly or [e for e in effectiveness if not e.get("week")]
    if not rows:
        return None
    confirmed = sum(int(e.get("confirmed") or 0) for e in rows)
    dismissed = sum(int(e.get("dismissed") or 0) for e in rows)
    undecided = sum(_undecided(e) for e in rows)
    reasons: dict[str, int] = defaultdict(int)
    for e in rows:
        for top in e.get("top_dismissal_reasons") or []:
            reasons[str(top["reason"])] += int(top["count"])
    out = [("confirmed", "confirmed", confirmed)]
    for reason, n in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        out.append((f"dismissed: {reason}", "dismissed", n))
    rest = dismissed - sum(reasons.values())
    if rest > 0 or not reasons:
        out.append(("dismissed: other reasons" if reasons else "dismissed", "dismissed", rest))
    out.append(("open (new or in review)", "open", max(undecided, 0)))
    return Outcomes(out, "the report's weeks" if weekly else "all alerts kept")


# --- drawing ------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text_width(text: str, size: float = FONT) -> float:
    """A generous estimate of a text's width (no font metrics here)."""
    return len(text) * size * 0.6


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _mix(colour: str, t: float) -> str:
    """``colour`` mixed with white by ``t`` (0: itself, 1: white)."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * t):02x}" for c in rgb)


def _ticks(top: int, most: int = 5) -> list[int]:
    """Round tick values from 0 covering ``top`` (at least 1), at most ``most`` + 1 of them."""
    top, magnitude = max(top, 1), 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if top <= step * most:
                return [i * step for i in range(math.ceil(top / step) + 1)]
        magnitude *= 10


@dataclass
class _Svg:
    height: float
    summary: str
    parts: list[str] = field(default_factory=list)
    defs: list[str] = field(default_factory=list)

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, title: str = "", **extra: str
    ) -> None:
        attrs = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in extra.items())
        inner = f"<title>{esc(title)}</title>" if title else ""
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" '
            f'fill="{esc(fill)}"{attrs}>{inner}</rect>'
        )

    def text(self, x: float, y: float, text: str, anchor: str = "start", **extra: str) -> None:
        attrs = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in extra.items())
        self.parts.append(
            f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{attrs}>{esc(text)}</text>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = GRID) -> None:
        self.parts.append(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"/>'
        )

    def render(self) -> Chart:
        height = math.ceil(self.height)
        defs = f"<defs>{''.join(self.defs)}</defs>" if self.defs else ""
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(self.summary)}" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
            f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
            f'font-size="{FONT}" fill="{FG}">'
            f"<title>{esc(self.summary)}</title>{defs}{''.join(self.parts)}</svg>"
        )
        return Chart(svg, self.summary)


def _legend(svg: _Svg, y: float, entries: Sequence[tuple[str, str]], left: float = 8) -> float:
    """Swatches and labels in rows from ``y``; returns the y below them."""
    x, row = left, y
    for label, fill in entries:
        width = 16 + _text_width(label, FONT - 1) + 14
        if x > left and x + width > WIDTH - 4:
            x, row = left, row + 18
        svg.rect(x, row, 10, 10, fill, stroke=MUTED, stroke_width="0.5")
        svg.text(x + 14, row + 9, label, font_size=str(FONT - 1))
        x += width
    return row + 18


def _list(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_LIST])
    return shown + (f"; and {len(items) - _LIST} more" if len(items) > _LIST else "")


# --- the charts ---------------------------------------------------------------------


def alerts_per_week(rows: Sequence[WeekRow]) -> Chart | None:
    """Stacked bars: alerts per ISO week, one segment per policy and severity (severity
    gives the colour, each further policy a lighter shade of it). None without alerts."""
    if not rows:
        return None
    weeks = sorted({r.week for r in rows})
    policies = sorted({r.policy for r in rows})
    series = [
        (policy, severity)
        for policy in policies
        for severity in _severities(s for r in rows if r.policy == policy for s in r.by_severity)
    ]
    shade = {p: 0.5 * i / max(len(policies) - 1, 1) for i, p in enumerate(policies)}

    def colour(policy: str, severity: str) -> str:
        return _mix(SEVERITY_COLOURS.get(severity, MUTED), shade[policy])

    per_week: dict[str, dict[tuple[str, str], int]] = {w: {} for w in weeks}
    for r in rows:
        for severity, n in r.by_severity.items():
            per_week[r.week][(r.policy, severity)] = n
    totals = {w: sum(c.values()) for w, c in per_week.items()}
    total = sum(totals.values())
    busiest = max(weeks, key=lambda w: (totals[w], w))
    summary = (
        f"Alerts per ISO week raised, by policy and severity: {total} alert(s) in "
        f"{len(weeks)} week(s), most in {busiest} ({totals[busiest]}). "
        + _list(
            [
                f"{w}: {totals[w]} ("
                + ", ".join(f"{p} {s} {n}" for (p, s), n in per_week[w].items())
                + ")"
                for w in weeks
            ]
        )
    )
    left, right, top, plot_h = 40.0, 8.0, 16.0, 180.0
    ticks = _ticks(max(totals.values()))
    scale = plot_h / ticks[-1]
    base = top + plot_h
    svg = _Svg(0, summary)
    for t in ticks:
        y = base - t * scale
        svg.line(left, y, WIDTH - right, y)
        svg.text(left - 6, y + 4, str(t), "end", fill=MUTED)
    slot = (WIDTH - left - right) / len(weeks)
    bar = min(56.0, slot * 0.7)
    every = max(1, math.ceil(_text_width("W00", FONT - 1) * 1.4 / slot))
    for i, week in enumerate(weeks):
        x = left + slot * i + (slot - bar) / 2
        y = base
        for policy, severity in series:
            n = per_week[week].get((policy, severity), 0)
            if not n:
                continue
            h = n * scale
            y -= h
            svg.rect(
                x, y, bar, h, colour(policy, severity), f"{week} · {policy} · {severity}: {n}",
                stroke="#ffffff", stroke_width="1",
            )  # fmt: skip
        svg.text(x + bar / 2, y - 4, str(totals[week]), "middle", font_size=str(FONT - 1))
        if i % every == 0:
            label = week if _text_width(week, FONT - 1) < slot - 4 else week.split("-")[-1]
            svg.text(x + bar / 2, base + 15, label, "middle", font_size=str(FONT - 1), fill=MUTED)
    svg.line(left, base, WIDTH - right, base, MUTED)
    entries = [
        (f"{_clip(p, 28)} · {s}" if len(policies) > 1 else s, colour(p, s)) for p, s in series
    ]
    svg.height = _legend(svg, base + 28, entries, left) + 2
    return svg.render()


def unit_traffic(units: Sequence[Mapping[str, Any]], min_group_size: int) -> Chart | None:
    """Horizontal stacked bars per org unit: messages sent to listed sites and replies
    from them. A withheld unit gets a hatched band across the whole axis saying why,
    never a value or a length. Units with published figures come first, largest first;
    withheld ones follow by name (the table's own order is not used: it was sorted
    before suppression). Units with nothing matched are left to the table. None when
    no unit has matched traffic."""
    why = withheld_why(min_group_size)
    shown = [u for u in units if u["sent"] is not None and u["replies"] is not None]
    shown = [u for u in shown if u["sent"] + u["replies"] > 0]
    shown.sort(key=lambda u: (-(u["sent"] + u["replies"]), str(u["unit"])))
    withheld = sorted(
        (u for u in units if u["sent"] is None or u["replies"] is None),
        key=lambda u: str(u["unit"]),
    )
    rows = [*shown, *withheld]
    if not rows:
        return None
    left_out = max(len(rows) - MAX_UNITS, 0)
    rows = rows[:MAX_UNITS]
    described = [
        f"{u['unit']}: withheld"
        if u["sent"] is None or u["replies"] is None
        else f"{u['unit']}: {u['sent']} sent, {u['replies']} replies"
        for u in rows
    ]
    summary = (
        "Messages sent to listed sites and replies from them, per org unit: "
        + _list(described)
        + (f"; {left_out} more unit(s) in the table" if left_out else "")
        + (f". Withheld units count {why}." if withheld else ".")
    )
    label_w, value_w, top, row_h, bar_h = 160.0, 64.0, 8.0, 24.0, 14.0
    x0, x1 = label_w, WIDTH - value_w
    ticks = _ticks(max((u["sent"] + u["replies"] for u in shown), default=1)) if shown else []
    scale = (x1 - x0) / ticks[-1] if ticks else 0.0
    base = top + row_h * len(rows)
    svg = _Svg(0, summary)
    svg.defs.append(
        '<pattern id="chart-withheld" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6f8fa"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{MUTED}" stroke-width="2"/></pattern>'
    )
    for t in ticks:
        x = x0 + t * scale
        svg.line(x, top - 4, x, base)
        svg.text(x, base + 14, str(t), "middle", font_size=str(FONT - 1), fill=MUTED)
    for i, u in enumerate(rows):
        y = top + row_h * i + (row_h - bar_h) / 2
        unit = str(u["unit"])
        svg.text(x0 - 6, y + bar_h - 3, _clip(unit, 21), "end")
        if u["sent"] is None or u["replies"] is None:
            svg.rect(
                x0, y, x1 - x0, bar_h, "url(#chart-withheld)", f"{unit}: withheld ({why})",
                stroke=MUTED, stroke_width="0.5",
            )  # fmt: skip
            note = "withheld: no value shown"
            svg.rect(x0 + 4, y + 1, _text_width(note, FONT - 1) + 8, bar_h - 2, "#ffffff")
            svg.text(x0 + 8, y + bar_h - 3, note, font_size=str(FONT - 1))
            svg.text(x1 + 6, y + bar_h - 3, "–", fill=MUTED)
            continue
        sent, replies = int(u["sent"]), int(u["replies"])
        svg.rect(x0, y, sent * scale, bar_h, SENT_COLOUR, f"{unit}: {sent} sent")
        svg.rect(
            x0 + sent * scale, y, replies * scale, bar_h, REPLY_COLOUR, f"{unit}: {replies} replies"
        )
        svg.text(x1 + 6, y + bar_h - 3, f"{sent} + {replies}")
    svg.line(x0, top - 4, x0, base, MUTED)
    legend = [("sent to listed sites", SENT_COLOUR), ("replies from them", REPLY_COLOUR)]
    legend = legend if shown else []
    if withheld:
        legend.append(
            (
                f"withheld (fewer than {min_group_size} people, or reveals one)",
                "url(#chart-withheld)",
            )
        )
    svg.height = _legend(svg, base + (26 if shown else 8), legend) + 2
    return svg.render()


def triage_chart(outcomes: Outcomes | None) -> Chart | None:
    """Horizontal bars: alerts confirmed, dismissed by reason and open. None without any."""
    if outcomes is None or not outcomes.total:
        return None
    summary = (
        f"Triage outcomes of {outcomes.total} alert(s) raised in {outcomes.scope}: "
        + _list([f"{label} {n}" for label, _, n in outcomes.rows])
        + "."
    )
    label_w, value_w, top, row_h, bar_h = 170.0, 40.0, 8.0, 24.0, 14.0
    x0, x1 = label_w, WIDTH - value_w
    ticks = _ticks(max(n for _, _, n in outcomes.rows))
    scale = (x1 - x0) / ticks[-1]
    base = top + row_h * len(outcomes.rows)
    svg = _Svg(0, summary)
    for t in ticks:
        x = x0 + t * scale
        svg.line(x, top - 4, x, base)
        svg.text(x, base + 14, str(t), "middle", font_size=str(FONT - 1), fill=MUTED)
    for i, (label, kind, n) in enumerate(outcomes.rows):
        y = top + row_h * i + (row_h - bar_h) / 2
        svg.text(x0 - 6, y + bar_h - 3, _clip(label, 26), "end")
        svg.rect(x0, y, n * scale, bar_h, OUTCOME_COLOURS[kind], f"{label}: {n}")
        svg.text(x0 + n * scale + 6, y + bar_h - 3, str(n))
    svg.line(x0, top - 4, x0, base, MUTED)
    svg.height = base + 24
    return svg.render()


@dataclass(frozen=True)
class ReportCharts:
    """The charts of one report and the tables of their figures (None: nothing to draw)."""

    weeks: Chart | None
    week_rows: list[WeekRow]
    severities: list[str]  # the columns of the week table
    units: Chart | None
    triage: Chart | None
    outcomes: Outcomes | None


def report_charts(
    alerts: Sequence[Alert],
    units: Sequence[Mapping[str, Any]],
    effectiveness: Sequence[Mapping[str, Any]],
    min_group_size: int,
) -> ReportCharts:
    """Every chart of a report, from its live alerts, org-unit rows and effectiveness rows."""
    week_rows = alert_weeks(alerts)
    outcomes = triage_outcomes(effectiveness)
    return ReportCharts(
        weeks=alerts_per_week(week_rows),
        week_rows=week_rows,
        severities=_severities(s for r in week_rows for s in r.by_severity),
        units=unit_traffic(units, min_group_size),
        triage=triage_chart(outcomes),
        outcomes=outcomes,
    )
