"""The report's charts: hand-written inline SVG that parses, escapes every name, draws the
report's own figures and never a withheld one."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from compliance.alerts import Alert
from compliance.privacy import suppress_small_cells
from compliance.reports import ReportData, render_html, render_json
from compliance.reports.charts import (
    Chart,
    alert_weeks,
    alerts_per_week,
    report_charts,
    triage_chart,
    triage_outcomes,
    unit_traffic,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE_UNIT = "<script>alert(\"x\")</script> & 'Co'/R&D"
HOSTILE_POLICY = 'ads"><script>x</script>'
HOSTILE_REASON = "<img src=x onerror=alert(1)>"
K = 5
# the withheld unit's real figures: distinctive, so that any trace of them shows
HIDDEN_SENT, HIDDEN_REPLIES = 4321, 987


def _alert(n: int, policy: str, severity: str, trigger: str, raised: str = "", **kw: Any) -> Alert:
    return Alert(
        policy=policy, policy_version=1, rule="person", rule_id="repeated-contact",
        severity=severity, person=f"p-{n:020x}", org_unit="Sales/EMEA", messages=3, people=1,
        domains=["escort-ads.test"], categories=["escort-ads"], first_day=trigger,
        last_day=trigger, trigger_day=trigger, raised_day=raised, days=2, id=n, **kw,
    )  # fmt: skip


ALERTS = [
    _alert(1, "escort-ads", "high", "2026-10-05", "2026-10-05"),  # 2026-W41
    _alert(2, "escort-ads", "critical", "2026-10-06", "2026-10-06", state="confirmed"),
    _alert(3, "escort-ads", "high", "2026-10-11", "2026-10-13"),  # triggered W41, raised W42
    _alert(4, "gambling", "medium", "2026-10-14", "2026-10-14", state="in_review"),
    _alert(5, "gambling", "low", "2026-10-21", ""),  # no raised day: its trigger day (W43)
    _alert(6, HOSTILE_POLICY, "high", "2026-10-22", "2026-10-22"),
]

RAW_UNITS = [  # people first, as unit_table gives them to suppress_small_cells
    {"unit": "Sales/EMEA", "people": 12, "sent": 40, "replies": 9},
    {"unit": "Engineering/Platform", "people": 9, "sent": 22, "replies": 5},
    {"unit": HOSTILE_UNIT, "people": 2, "sent": HIDDEN_SENT, "replies": HIDDEN_REPLIES},
    {"unit": "Finance", "people": 6, "sent": 15, "replies": 2},
    {"unit": "HR", "people": 0, "sent": 0, "replies": 0},
]

EFFECTIVENESS = [
    {"policy": "escort-ads", "rule": "repeated-contact", "week": "2026-W41", "raised": 4,
     "confirmed": 1, "dismissed": 2, "undecided": 1,
     "top_dismissal_reasons": [{"reason": "duplicate", "count": 2}]},
    {"policy": "escort-ads", "rule": "repeated-contact", "week": "2026-W42", "raised": 6,
     "confirmed": 0, "dismissed": 5, "undecided": 1,
     "top_dismissal_reasons": [
         {"reason": "received-only", "count": 2}, {"reason": "duplicate", "count": 1},
         {"reason": HOSTILE_REASON, "count": 1},
     ]},  # one more dismissal than its three top reasons: "other reasons"
    {"policy": "escort-ads", "rule": "repeated-contact", "week": None, "raised": 99,
     "confirmed": 50, "dismissed": 40, "undecided": 9, "top_dismissal_reasons": []},
]  # fmt: skip


for _row in EFFECTIVENESS:  # the rest of what compliance.triage.StatsRow.as_dict gives
    _decided = _row["confirmed"] + _row["dismissed"]
    _row.update(precision=_row["confirmed"] / _decided if _decided else None)
    _row.update(median_hours_to_triage=12.5)


def _units() -> list[dict[str, Any]]:
    rows = [
        {**r, "outbound": 100, "inbound": 100, "received_only": 0, "alerts": 0} for r in RAW_UNITS
    ]
    published, _ = suppress_small_cells(rows, K, ("people", "sent", "replies"))
    return published


def _parse(chart: Chart | None) -> ET.Element:
    assert chart is not None
    root = ET.fromstring(chart.svg)  # noqa: S314  # our own output: is it well-formed XML?
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("aria-label") == chart.summary
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == chart.summary  # the alt text comes first
    for element in root.iter():
        tag = element.tag.removeprefix(SVG)
        assert tag in {"svg", "title", "defs", "pattern", "rect", "line", "text"}, tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), name
            assert "href" not in name.lower(), name
            assert not re.search(r"url\((?!#chart-)", value), value  # only its own pattern
    assert "<script" not in chart.svg and "http" not in chart.svg.replace(SVG[1:-1], "")
    return root


def _texts(root: ET.Element, tag: str) -> list[str]:
    return [e.text or "" for e in root.iter(f"{SVG}{tag}")]


def test_alerts_are_counted_per_week_raised_by_policy_and_severity() -> None:
    rows = {(r.week, r.policy): r.by_severity for r in alert_weeks(ALERTS)}
    assert rows == {
        ("2026-W41", "escort-ads"): {"critical": 1, "high": 1},
        ("2026-W42", "escort-ads"): {"high": 1},  # raised on 10-13, triggered on 10-11
        ("2026-W42", "gambling"): {"medium": 1},
        ("2026-W43", "gambling"): {"low": 1},  # no raised day: the trigger day
        ("2026-W43", HOSTILE_POLICY): {"high": 1},
    }
    root = _parse(alerts_per_week(alert_weeks(ALERTS)))
    segments = [t for t in _texts(root, "title")[1:]]
    assert sum(int(t.rsplit(": ", 1)[1]) for t in segments) == len(ALERTS)
    assert "2026-W42 · gambling · medium: 1" in segments
    assert f"2026-W43 · {HOSTILE_POLICY} · high: 1" in segments  # escaped, and back intact
    # one bar per week, its total above it; a legend entry per policy and severity
    assert [t for t in _texts(root, "text") if t.startswith("2026-W")] == [
        "2026-W41", "2026-W42", "2026-W43",
    ]  # fmt: skip
    assert "gambling · low" in _texts(root, "text")
    summary = alerts_per_week(alert_weeks(ALERTS)).summary  # type: ignore[union-attr]
    assert "6 alert(s) in 3 week(s)" in summary
    assert alerts_per_week([]) is None


def test_a_withheld_unit_is_hatched_without_its_figures() -> None:
    units = _units()
    withheld = [u["unit"] for u in units if u["sent"] is None]
    assert HOSTILE_UNIT in withheld and len(withheld) >= 2  # a primary and its complement
    chart = unit_traffic(units, K)
    root = _parse(chart)
    assert chart is not None
    for secret in (HIDDEN_SENT, HIDDEN_REPLIES, HIDDEN_SENT + HIDDEN_REPLIES):
        assert str(secret) not in chart.svg
    titles = _texts(root, "title")
    assert f"{HOSTILE_UNIT}: withheld (fewer than {K} people, or it would let a count that " in (
        "".join(titles)
    )
    bands = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == "url(#chart-withheld)"]
    assert len(bands) == len(withheld) + 1  # and the legend's swatch
    widths = {b.get("width") for b in bands if b.get("height") != "10"}
    assert len(widths) == 1  # every withheld band spans the whole axis: no length to read
    published = [u for u in units if u["sent"] is not None and u["sent"] + u["replies"]]
    for u in published:
        assert f"{u['unit']}: {u['sent']} sent" in titles
        assert f"{u['sent']} + {u['replies']}" in _texts(root, "text")
    assert "HR" not in chart.svg  # nothing matched: left to the table
    assert "withheld: no value shown" in _texts(root, "text")
    assert f"{HOSTILE_UNIT}: withheld" in chart.summary


def test_a_withheld_units_place_does_not_depend_on_its_hidden_figures() -> None:
    units = _units()
    # the org-unit table is sorted before suppression: feed the chart both orders
    assert unit_traffic(units, K) == unit_traffic(list(reversed(units)), K)


def test_a_report_whose_every_unit_is_withheld_draws_no_scale() -> None:
    units = [
        {"unit": "A", "sent": None, "replies": None},
        {"unit": "B", "sent": None, "replies": None},
    ]
    root = _parse(unit_traffic(units, 10))
    assert _texts(root, "text") == ["A", "withheld: no value shown", "–", "B",
                                    "withheld: no value shown", "–",
                                    "withheld (fewer than 10 people, or reveals one)"]  # fmt: skip
    assert unit_traffic([{"unit": "A", "sent": 0, "replies": 0}], 10) is None


def test_triage_outcomes_come_from_the_report_weeks_effectiveness() -> None:
    outcomes = triage_outcomes(EFFECTIVENESS)
    assert outcomes is not None and outcomes.scope == "the report's weeks"
    assert outcomes.rows == [
        ("confirmed", "confirmed", 1),
        ("dismissed: duplicate", "dismissed", 3),
        ("dismissed: received-only", "dismissed", 2),
        (f"dismissed: {HOSTILE_REASON}", "dismissed", 1),
        ("dismissed: other reasons", "dismissed", 1),
        ("open (new or in review)", "open", 2),
    ]
    assert outcomes.total == 10 == sum(e["raised"] for e in EFFECTIVENESS if e["week"])
    root = _parse(triage_chart(outcomes))
    assert f"dismissed: {HOSTILE_REASON}: 1" in _texts(root, "title")
    # only the whole period's rows: those, said so
    kept = triage_outcomes([e for e in EFFECTIVENESS if e["week"] is None])
    assert kept is not None and kept.scope == "all alerts kept" and kept.total == 99
    assert triage_outcomes([]) is None and triage_chart(None) is None


@pytest.fixture
def report() -> ReportData:
    return ReportData(
        title="Acceptable-use report", first_day="2026-10-01", last_day="2026-10-31",
        alerts=ALERTS, policies=[{"id": "escort-ads", "title": "Escort ads", "version": 1,
                                  "status": "active"}],
        units=_units(), rows_read=5000, rejected={}, skipped={}, matched=None, sources=[],
        feeds=[], min_group_size=K, people=None, received_only=12, as_of="2026-10-31",
        effectiveness=EFFECTIVENESS,
    )  # fmt: skip


def test_the_html_report_holds_three_charts_with_their_tables(report: ReportData) -> None:
    html = render_html(report)
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # noqa: S314  # our own output
    for secret in (HIDDEN_SENT, HIDDEN_REPLIES):
        assert str(secret) not in html
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert", "")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the reason, as text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html or (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    )
    assert re.findall(r"https?://[^\s\"'<>]*", html) == ["http://www.w3.org/2000/svg"] * 3
    # each chart's figures in a table: weeks, the org-unit table, triage outcomes
    assert 'id="chart-weeks"' in html and "Alerts per week raised" in html
    assert 'id="chart-units"' in html and 'id="units-table"' in html
    assert 'id="chart-triage"' in html and "<td>dismissed: other reasons</td>" in html
    assert re.search(r"<td class=\"nowrap\">2026-W42</td><td><code>gambling</code></td>", html)


def test_the_html_report_says_why_a_figure_is_withheld(report: ReportData) -> None:
    html = render_html(report)
    card = re.search(r'<div class="withheld-card">(.*?)</p></div>', html, flags=re.S)
    assert card is not None
    assert f"Withheld: fewer than {K} people, or it would let a count that small" in card.group(1)
    assert "matched messages (evidence)" in card.group(1)
    assert '<div class="card"><b>12</b>received only</div>' in html  # published: no note


def test_pseudonyms_and_date_ranges_never_break(report: ReportData) -> None:
    html = render_html(report)
    assert '<code class="nowrap">p-00000000000000000001</code>' in html
    assert '<span class="nowrap">2026-10-05..2026-10-05</span>' in html
    assert re.search(
        r'<span class="nowrap"><strong>2026-10-01</strong> to <strong>2026-10-31', html
    )
    assert ".nowrap { white-space: nowrap; }" in html
    # every alert shows its id and triage state
    for alert in ALERTS:
        assert f'<td class="num nowrap">{alert.id}</td>' in html
    assert '<span class="nowrap">in review</span>' in html
    assert '<span class="nowrap">confirmed</span>' in html


def test_charts_leave_the_json_report_alone(report: ReportData) -> None:
    assert "svg" not in render_json(report)
    charts = report_charts(report.live_alerts, report.units, report.effectiveness, K)
    assert charts == report.charts
