"""The HTML reports in a real headless browser (Debian's Chromium).

Chromium loads each report from a file, dumps the DOM it built and writes its network
log: the tests check what a reader sees (sections, tables, withheld cells) and that the
page made no request of its own (Chromium's own background requests are told apart by
their origin). A control page with a tracking pixel and no Content-Security-Policy shows
that the check sees such a request. Skipped where Chromium is absent
(`apt-get install chromium`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


_PAGE_REQUEST = re.compile(r'"host":"(https?://[^"]+)"[^{}]*"network_anonymization_key":"file://')


def render(page: Path, tmp_path: Path) -> tuple[str, set[str]]:
    """(DOM after load, hosts the page itself asked for) in headless Chromium."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--log-net-log={tmp_path / 'net.json'}", "--virtual-time-budget=2000",
            "--dump-dom", page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    netlog = (tmp_path / "net.json").read_text(errors="replace")
    return result.stdout, set(_PAGE_REQUEST.findall(netlog))


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
    assert requests == set()
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
