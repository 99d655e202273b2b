"""The HTML reports in a real headless browser (Debian's Chromium).

Chromium loads each report from a file, dumps the DOM it built and writes its network
log: the tests check what a reader sees (sections, tables, withheld cells, charts) and that
the page made no request of its own (Chromium's own background requests are told apart by
their origin). A control page with a tracking pixel and no Content-Security-Policy shows
that the check sees such a request. The layout is measured at 1280 and 400 px wide: the
report is loaded into an iframe of that width (headless Chromium keeps its window at least
500 px wide) with a probe script added (the report's own policy forbids scripts) that
posts what it measured to the frame's page. Skipped where Chromium is absent
(`apt-get install chromium`).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.config import load_config
from compliance.outbox import compose
from compliance.store import OutboxItem

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


_PAGE_REQUEST = re.compile(r'"host":"(https?://[^"]+)"[^{}]*"network_anonymization_key":"file://')
_CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def _chromium(page: Path, tmp_path: Path, *options: str) -> str:
    """The DOM of ``page`` after load in headless Chromium."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", *options,
            "--virtual-time-budget=3000", "--dump-dom", page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def render(page: Path, tmp_path: Path) -> tuple[str, set[str]]:
    """(DOM after load, hosts the page itself asked for) in headless Chromium."""
    dom = _chromium(page, tmp_path, f"--log-net-log={tmp_path / 'net.json'}")
    netlog = (tmp_path / "net.json").read_text(errors="replace")
    return dom, set(_PAGE_REQUEST.findall(netlog))


_PROBE = """<script>
addEventListener("load", () => {
  const root = document.documentElement;
  const scrolled = (e) => e.parentElement && e.parentElement.closest(".scroll");
  const outside = (e) => !e.closest("svg") && !scrolled(e);
  const box = (e) => e.getBoundingClientRect();
  parent.postMessage(JSON.stringify({
    width: innerWidth,
    scrollWidth: root.scrollWidth,
    overflowing: [...document.body.querySelectorAll("*")]
      .filter((e) => outside(e) && box(e).right > innerWidth + 0.5)
      .map((e) => e.tagName + "." + e.className),
    scrolling: [...document.querySelectorAll(".scroll")]
      .filter((e) => e.scrollWidth > e.clientWidth)
      .map((e) => (e.querySelector("caption, th") || e).textContent.trim()),
    svgs: [...document.querySelectorAll("svg")].map((e) => ({
      id: e.closest("figure") ? e.closest("figure").id : "",
      width: box(e).width, height: box(e).height, right: box(e).right,
      label: e.getAttribute("aria-label"),
    })),
  }), "*");
});
</script>"""


def layout(page: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """What the page's layout looks like in a viewport ``width`` px wide (see the module)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    probe = tmp_path / "probe.html"
    probe.write_text(_CSP.sub("", page.read_text()).replace("</body>", _PROBE + "</body>"))
    frame = tmp_path / "frame.html"
    frame.write_text(
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe src="probe.html" style="border:0;width:{width}px;height:900px"></iframe>'
        '<script>addEventListener("message", (e) => '
        'document.body.setAttribute("data-layout", e.data));</script></body></html>'
    )
    dom = _chromium(frame, tmp_path, "--window-size=1400,1000")
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, dom[-2000:]
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    assert measured["width"] == width
    return measured


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.slow
def test_team_report_renders_and_loads_nothing_from_elsewhere(job: Path, tmp_path: Path) -> None:
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(job), "--today", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    page = job.parent / "reports" / "report-2026-11-20.html"
    dom, requests = render(page, tmp_path / "report")
    text = _text(dom)
    for heading in ("Summary", "Alerts", "Org units", "Data quality"):
        assert f">{heading}</h2>" in dom
    assert "repeated-contact" in text
    assert re.search(r"<code[^>]*>p-[0-9a-f]{20}</code>", dom)
    assert "withheld" in text  # one person with matches in Sales/EMEA
    assert "Withheld: fewer than" in text  # and why
    assert re.search(r'<span class="nowrap">\d{4}-\d\d-\d\d\.\.\d{4}-\d\d-\d\d</span>', dom)
    assert requests == set()  # charts included: inline SVG, nothing fetched
    assert dom.count("<svg") >= 2 and 'id="chart-weeks"' in dom and 'id="chart-units"' in dom
    for width in (1280, 400):
        measured = layout(page, width, tmp_path / f"layout-{width}")
        assert measured["scrollWidth"] <= width, measured  # no horizontal overflow
        assert measured["overflowing"] == [], measured
        svgs = [s for s in measured["svgs"] if s["width"] > 0 and s["height"] > 0]
        assert len(svgs) >= 2, measured  # the charts are drawn, whole, with alt text
        assert {"chart-weeks", "chart-units"} <= {s["id"] for s in svgs}
        assert all(s["right"] <= width and s["label"] for s in svgs), svgs
        if width == 1280:  # wide enough for every table without scrolling
            assert measured["scrolling"] == [], measured
    # the control: a page wider than 400 px is caught
    wide = tmp_path / "wide.html"
    wide.write_text(page.read_text().replace("</body>", '<div style="width:900px">x</div></body>'))
    assert layout(wide, 400, tmp_path / "layout-wide")["scrollWidth"] > 400
    # the control: the same page with a tracking pixel and without its CSP is caught
    control = tmp_path / "control.html"
    html = page.read_text()
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    control.write_text(html.replace("</body>", '<img src="https://pixel.test/p.gif"></body>'))
    assert render(control, tmp_path / "control")[1] == {"https://pixel.test"}


@pytest.mark.slow
def test_broad_report_renders_without_people(job: Path, tmp_path: Path) -> None:
    text = job.read_text().replace(
        "reports: {dir: reports, formats: [html, json]}",
        "reports: {dir: reports, formats: [html], audience: broad}",
    )
    job.write_text(text)
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(job), "--today", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    page = job.parent / "reports" / "report-2026-11-20.broad.html"
    dom, requests = render(page, tmp_path)
    assert "differential privacy" in _text(dom)
    assert "Sales/EMEA" in dom
    assert not re.search(r"p-[0-9a-f]{20}", dom)
    assert requests == set()
    assert layout(page, 400, tmp_path / "layout")["scrollWidth"] <= 400


@pytest.mark.slow
def test_the_mail_html_is_safe_and_fits_a_phone(job: Path, tmp_path: Path) -> None:
    """The HTML part of a delivered report (email-safe: inline styles, no script, nothing
    remote) loads nothing and fits 1280 and 400 px."""
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(job), "--today", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(job)
    folder = job.parent / "reports"
    item = OutboxItem(
        1, "key", "report", "team", "2026-10-22", "2026-11-20", "mail",
        ["report-2026-11-20.html", "report-2026-11-20.json"], "pending", 0, "", None, None, "",
    )  # fmt: skip
    message = compose(config.model_copy(update={"reports": config.reports.model_copy(
        update={"mail_body": "summary"})}), item)  # fmt: skip
    assert message.html is not None
    assert not re.search(r"<script|<link|https?://|<style", message.html)
    # the only images are the charts, carried by the message itself
    images = re.findall(r'<img src="([^"]*)"', message.html)
    inline = {a.inline_id: a for a in message.attachments if a.inline_id}
    assert images and all(src.startswith("cid:") for src in images)
    assert {src[4:] for src in images} == set(inline)
    page = folder / "mail.html"
    page.write_text(message.html, encoding="utf-8")
    dom, requests = render(page, tmp_path / "mail")
    assert requests == set()
    assert "Alerts: 1 (new 1" in _text(dom)
    for width in (1280, 400):
        measured = layout(page, width, tmp_path / f"mail-{width}")
        assert measured["scrollWidth"] <= width, measured
        assert measured["overflowing"] == [], measured


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
def test_a_mailed_summary_carries_its_charts_as_images_beside_their_figures(
    job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``mail_body: summary``, each chart of the report travels as a PNG drawn by the
    browser from the report's own SVG (so it shows the same figures), shown by ``cid:``
    with its alt text, and the report's table of its figures beside it."""
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(job), "--today", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(job)
    item = OutboxItem(
        1, "key", "report", "team", "2026-10-22", "2026-11-20", "mail",
        ["report-2026-11-20.html", "report-2026-11-20.json"], "pending", 0, "", None, None, "",
    )  # fmt: skip
    summary = config.reports.model_copy(update={"mail_body": "summary"})
    message = compose(config.model_copy(update={"reports": summary}), item)
    assert message.html is not None
    report = (job.parent / "reports" / "report-2026-11-20.html").read_text()
    charts = [a for a in message.attachments if a.inline_id]
    assert [a.inline_id for a in charts] == [
        f"chart-{name}@compliance"
        for name in re.findall(r'<figure class="chart" id="chart-([a-z]+)"', report)
    ]
    assert "chart-weeks@compliance" in [a.inline_id for a in charts]
    for chart in charts:
        assert chart.content_type == "image/png"
        width, height = _png_size(chart.data)
        assert width == 2 * 520 and height > 100  # drawn at twice the SVG's size
        # its alt text is the SVG's own label, in the HTML and the text part alike
        alt = re.search(
            rf'<img src="cid:{re.escape(chart.inline_id or "")}" alt="([^"]*)"', message.html
        )
        assert alt and html.unescape(alt.group(1)) in message.text
    # the weekly figures' table travels beside the chart, with inline styles only
    assert "Alerts per week raised" in message.html
    assert 'class="' not in message.html.split("<h1", 1)[1]
    # a mail without a browser keeps the alt texts and tables, and no image
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    bare = compose(config.model_copy(update={"reports": summary}), item)
    assert not [a for a in bare.attachments if a.inline_id]
    assert "<img" not in (bare.html or "")
    assert "Alerts per week raised" in (bare.html or "")


@pytest.mark.slow
def test_a_board_report_is_printed_to_pdf_by_the_browser(job: Path, tmp_path: Path) -> None:
    """``formats: [pdf]`` prints the very HTML report through headless Chromium: a real
    PDF with pages, written whole, and nothing else written for it."""
    job.write_text(
        job.read_text().replace(
            "reports: {dir: reports, formats: [html, json]}",
            "reports: {dir: reports, formats: [html, json], schedules: [{name: board, "
            "every: month, audience: team, formats: [pdf]}]}",
        )
    )
    result = CliRunner(env={"COMPLIANCE_ACTOR": "svc"}).invoke(
        cli, ["run", "--config", str(job), "--today", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    folder = job.parent / "reports"
    pdf = folder / "board-2026-11-20.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 1
    assert not (folder / "board-2026-11-20.html").exists()  # only what was asked for
    assert not list(folder.glob("*.tmp"))
