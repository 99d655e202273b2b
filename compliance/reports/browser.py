"""A headless browser for what a report needs one for: the PDF of a board report, and the
charts of a mail as PNG images. Both come from the very HTML and SVG the report already
holds, so a PDF page or a mailed chart shows the same figures as the HTML report.

Chromium (or Google Chrome, or Microsoft Edge: the same engine and the same switches) is
run once per file, headless, with a profile of its own in a temporary folder that is
removed afterwards, and with every host name resolving to nothing: the page loads nothing
from elsewhere (the report's own Content-Security-Policy forbids it too), and the browser's
background services cannot reach the network. As root (a container), Chromium's sandbox
cannot start and ``--no-sandbox`` is added.

The browser is ``reports.browser`` when set, else the first of :data:`CANDIDATES` found
on ``PATH``. Without one, a PDF cannot be written (the config check says so) and a mail
carries its charts' tables only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compliance.errors import ComplianceError, ConfigError

#: Browsers tried, in order, when ``reports.browser`` is not set.
CANDIDATES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "microsoft-edge",
    "microsoft-edge-stable",
)
#: Seconds one rendering may take.
TIMEOUT = 120
#: Pixels per CSS pixel of a chart image: sharp on high-density screens.
SCALE = 2

_VIEWBOX = re.compile(r'viewBox="0 0 ([0-9.]+) ([0-9.]+)"')
_SWITCHES = (
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_browser(configured: str | None = None) -> Path | None:
    """The browser to use: ``configured`` (a path or a command name) or the first candidate
    on ``PATH``; None when there is none. A configured one that is missing is an error."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise ConfigError(
                f"reports.browser: {configured!r} is not an executable (install Chromium, "
                "e.g. apt-get install chromium, or give the browser's full path)"
            )
        return Path(found)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def choose_browser(configured: str | None, needed_for: str | None = None) -> Browser | None:
    """The browser (see :func:`find_browser`), or None; when one is ``needed_for`` a
    format (``pdf``) and there is none, a :class:`ConfigError` says what to do."""
    found = find_browser(configured)
    if found is None and needed_for is not None:
        raise ConfigError(
            f"reports: a report is to be written as {needed_for}, which needs a headless "
            "Chromium (or Chrome, or Edge) and none is installed: install one (e.g. apt-get "
            f"install chromium), set reports.browser: to its path, or remove {needed_for} "
            "from formats"
        )
    return None if found is None else Browser(found)


@dataclass(frozen=True)
class Browser:
    """One installed Chromium-family browser."""

    path: Path

    def _run(self, page: Path, *switches: str) -> None:
        with tempfile.TemporaryDirectory(prefix="compliance-browser-") as profile:
            args = [str(self.path), *_SWITCHES, f"--user-data-dir={profile}", *switches]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                args.append("--no-sandbox")  # Chromium's sandbox cannot start as root
            try:
                done = subprocess.run(  # noqa: S603 (a fixed browser, our own page)
                    [*args, page.as_uri()],
                    capture_output=True,
                    timeout=TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ComplianceError(
                    f"the browser ({self.path.name}) took more than {TIMEOUT} s to render a "
                    "report; nothing was written"
                ) from None
            except OSError as exc:
                raise ComplianceError(
                    f"the browser ({self.path}) cannot be started: {exc.strerror or exc}"
                ) from None
            if done.returncode != 0:
                last = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise ComplianceError(
                    f"the browser ({self.path.name}) failed to render a report (exit "
                    f"{done.returncode}{': ' + last[0][:200] if last else ''})"
                )

    def pdf(self, page: Path, out: Path) -> None:
        """``page`` (an HTML file) printed to ``out`` as PDF (A4, the report's print styles,
        no browser header or footer); written whole or not at all."""
        tmp = out.with_suffix(".pdf.tmp")
        try:
            self._run(page, f"--print-to-pdf={tmp}", "--no-pdf-header-footer")
            if not tmp.is_file() or not tmp.read_bytes().startswith(b"%PDF-"):
                raise ComplianceError(f"the browser ({self.path.name}) wrote no PDF")
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)

    def png(self, svg: str) -> bytes:
        """A chart (a self-contained SVG with a ``viewBox``) as a PNG image at
        :data:`SCALE` times its size, on white."""
        found = _VIEWBOX.search(svg)
        if found is None:
            raise ValueError("the chart has no viewBox")
        width, height = (round(float(v)) for v in found.groups())
        with tempfile.TemporaryDirectory(prefix="compliance-chart-") as folder:
            page, shot = Path(folder) / "chart.html", Path(folder) / "chart.png"
            page.write_text(
                '<!DOCTYPE html><html><head><meta charset="utf-8">'
                '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                "style-src 'unsafe-inline'; img-src data:\">"
                f"<style>html,body{{margin:0;background:#fff}}svg{{display:block;"
                f"width:{width}px;height:{height}px}}</style></head>"
                f"<body>{svg}</body></html>",
                encoding="utf-8",
            )
            self._run(
                page,
                f"--screenshot={shot}",
                f"--window-size={width},{height}",
                f"--force-device-scale-factor={SCALE}",
                "--default-background-color=ffffffff",
            )
            if not shot.is_file():
                raise ComplianceError(f"the browser ({self.path.name}) wrote no chart image")
            return shot.read_bytes()
