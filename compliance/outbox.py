"""Reports delivered exactly once, through the store's outbox.

When a report is written, one outbox row per channel of ``reports.send_to`` is recorded
under an idempotency key (report, period, audience, channel, the channel's recipients),
in the same run; a key already there is not added again, so a rerun of the same period
sends nothing twice. Rows are then sent in order: each is marked ``sending`` (committed)
before the channel is called and ``sent`` (with the channel's receipt and a hash of what
was sent) after. A channel that is down leaves the row ``pending`` with a later attempt
(back-off from 5 minutes, doubling, at most a day); a refusal that retrying cannot fix
marks it ``failed``. Later runs, or ``compliance outbox retry``, try again.

The one gap no protocol closes: the server accepted a message and the process died
before the store recorded it. The row is still ``sending``; the next run sends it again
with the same message id (derived from the key), so mail clients and SIEMs can drop the
copy. Every attempt is in the audit log, with the hash of what was sent, never its
content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance.config import Config
from compliance.delivery import DELIVERIES, Attachment, Delivery, Message, WrittenReport
from compliance.errors import ComplianceError, RetriableDeliveryError
from compliance.reports.browser import Browser, choose_browser
from compliance.store import OutboxItem, Store

log = logging.getLogger(__name__)

#: First wait after a failure worth retrying, and the longest.
FIRST_RETRY = dt.timedelta(minutes=5)
LONGEST_RETRY = dt.timedelta(days=1)
#: Attachment types by file suffix.
CONTENT_TYPES = {".html": "text/html", ".json": "application/json", ".csv": "text/csv"}


def channel(config: Config, name: str) -> Delivery:
    """The configured delivery ``name``, built by its registered type."""
    found = next((d for d in config.deliveries if d.name == name), None)
    if found is None:
        raise ComplianceError(f"no delivery is named {name!r} in the configuration")
    kind = DELIVERIES.get(found.type, f"delivery {name!r}")
    return kind.create(name, found.options(), config.base_dir)


def delivery_key(report: WrittenReport, name: str, channel_name: str, fingerprint: str) -> str:
    """The idempotency key of one report, for one period and audience, over one channel to
    one recipient list."""
    parts = [name, report.audience, report.first_day, report.last_day, channel_name, fingerprint]
    return "|".join(parts)


def enqueue(
    store: Store,
    config: Config,
    report: WrittenReport,
    run_id: int | None,
    name: str,
    send_to: Sequence[str],
) -> int:
    """Record the report's delivery over every channel of ``send_to`` (once per key); the
    number of rows added."""
    added = 0
    folder = config.path(config.reports.dir)
    for channel_name in send_to:
        key = delivery_key(report, name, channel_name, channel(config, channel_name).fingerprint())
        if store.outbox.has(key):
            continue  # this report went (or goes) to these recipients already
        period = (report.first_day, report.last_day)
        files = _snapshot(folder, key, report.files)
        added += store.outbox.enqueue(
            key, name, report.audience, period, channel_name, files, run_id
        )
    return added


#: Where the files a delivery sends are kept until it is sent (inside the reports folder).
SNAPSHOTS = ".outbox"


def _snapshot(folder: Path, key: str, files: list[Path]) -> list[str]:
    """Copies of the report's files as they are now, for its delivery: a later run that
    writes the same report again (same day, same period) cannot change what this delivery
    sends. Their paths, relative to the reports folder."""
    target = folder / SNAPSHOTS / hashlib.sha256(key.encode()).hexdigest()[:32]
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, target / file.name)
    return [str((target / f.name).relative_to(folder)) for f in files]


@dataclass
class Outcome:
    """What one pass over the outbox did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0


def deliver_due(
    store: Store, config: Config, actor: str, now: dt.datetime | None = None
) -> Outcome:
    """Try every delivery that is due (and every one a crash left ``sending``)."""
    now = now or dt.datetime.now(dt.UTC)
    outcome = Outcome()
    for item in store.outbox.due(now.isoformat(timespec="seconds")):
        _attempt(store, config, actor, item, now, outcome)
    return outcome


def _attempt(
    store: Store, config: Config, actor: str, item: OutboxItem, now: dt.datetime, out: Outcome
) -> None:
    details: dict[str, Any] = {"outbox": item.id, "channel": item.channel, "report": item.report}
    try:
        delivery = channel(config, item.channel)
        message = compose(config, item)
    except Exception as exc:  # misconfigured, the report's files gone or unreadable
        why = str(exc) if isinstance(exc, ComplianceError) else type(exc).__name__
        store.outbox.failed(item.id, why)
        store.audit.append(actor, "delivery.failed", {**details, "why": _for_log(exc)})
        out.failed += 1
        return
    digest = _digest(message)
    store.outbox.sending(item.id)
    try:
        receipt = delivery.deliver(message)
    except Exception as exc:
        if isinstance(exc, ComplianceError) and not isinstance(exc, RetriableDeliveryError):
            _failed(store, actor, item, details, exc, out)
            return
        # a channel's unforeseen error (a bug, a library's) is retried later, like an
        # outage: its message may quote what was sent, so only its type is kept
        why = str(exc) if isinstance(exc, RetriableDeliveryError) else type(exc).__name__
        wait = min(FIRST_RETRY * 2 ** min(item.attempts, 16), LONGEST_RETRY)
        when = (now + wait).isoformat(timespec="seconds")
        store.outbox.retry_at(item.id, when, why)
        store.audit.append(actor, "delivery.retry", {**details, "why": _for_log(exc), "at": when})
        log.warning("delivery %d over %s will be retried at %s", item.id, item.channel, when)
        out.retrying += 1
        return
    with store.transaction():
        store.outbox.sent(item.id, receipt, digest)
        store.audit.append(
            actor, "delivery.sent", {**details, "receipt": receipt, "sha256": digest}
        )
    _forget_snapshot(config, item)
    out.sent += 1


def _failed(
    store: Store,
    actor: str,
    item: OutboxItem,
    details: dict[str, Any],
    exc: ComplianceError,
    out: Outcome,
) -> None:
    store.outbox.failed(item.id, str(exc))
    store.audit.append(actor, "delivery.failed", {**details, "why": _for_log(exc)})
    out.failed += 1


def _for_log(exc: BaseException) -> str:
    """What the append-only audit log keeps of a failure: its kind and the server's status
    code, never the server's words (they may name a recipient). The operator reads the
    full, masked message in ``compliance outbox list`` until retention removes the row."""
    code = _STATUS.search(str(exc)) if isinstance(exc, ComplianceError) else None
    return type(exc).__name__ + (f" {code.group(1)}" if code else "")


_STATUS = re.compile(r"\b((?:HTTP )?[2-5]\d\d)\b")


def _forget_snapshot(config: Config, item: OutboxItem) -> None:
    """Remove a sent delivery's copies of the report (the report itself stays)."""
    folder = config.path(config.reports.dir)
    for name in item.files:
        path = folder / name
        if path.parent.parent.name == SNAPSHOTS:
            shutil.rmtree(path.parent, ignore_errors=True)
            return


def compose(config: Config, item: OutboxItem) -> Message:
    """The message of one outbox row, built from the report's files on disk: the same on
    every attempt. Its subject names the report and period only; with ``mail_body:
    attachment`` (the default), the body says nothing of a team report's content."""
    folder = config.path(config.reports.dir)
    files = [folder / name for name in item.files]
    missing = [Path(n).name for n, f in zip(item.files, files, strict=True) if not f.is_file()]
    if missing:
        raise ComplianceError(f"the report's files are gone: {', '.join(missing)}")
    report = WrittenReport(files, item.audience, item.first_day, item.last_day, {})
    title = "Acceptable-use report" + (" (summary)" if item.audience == "broad" else "")
    subject = f"{title} {item.first_day} to {item.last_day}"
    lines = [
        f"{title} for {item.first_day} to {item.last_day}.",
        "",
        "The report is attached"
        + (
            ". Open it where only its readers can see it."
            if item.audience == "team"
            else "; it holds noisy counts only, no alert and no person."
        ),
    ]
    if _nothing_new(files):
        lines[0:0] = [
            "Nothing new since the previous report: no alert is new, updated or ended.",
            "",
        ]
    charts: list[MailChart] = []
    if config.reports.mail_body == "summary":
        lines += ["", *_summary(files)]
        page = next((f for f in files if f.suffix == ".html"), None)
        if page is not None and item.audience == "team":
            charts = mail_charts(page.read_text(encoding="utf-8"), _browser(config))
            lines += [line for c in charts for line in ("", c.alt)]
    attachments = tuple(
        Attachment(f.name, CONTENT_TYPES.get(f.suffix, "application/octet-stream"), f.read_bytes())
        for f in files
    ) + tuple(
        Attachment(f"{c.name}.png", "image/png", c.png, c.cid) for c in charts if c.png is not None
    )
    events = tuple(_events(files, item))
    text = "\n".join(lines) + "\n"
    body = _html(subject, [line for line in lines if not any(line == c.alt for c in charts)])
    body = body.replace("</body>", "".join(c.html() for c in charts) + "</body>")
    return Message(item.key, subject, text, body, attachments, events, report)


def _browser(config: Config) -> Browser | None:
    """The browser that draws mailed charts; None (tables only) when there is none."""
    try:
        return choose_browser(config.reports.browser)
    except ComplianceError as exc:
        log.warning("charts are mailed as tables only: %s", exc)
        return None


def _html(title: str, lines: list[str]) -> str:
    """The message as email-safe HTML: inline styles only, no script, no remote resource;
    the same words as the text part."""
    paragraphs = "\n".join(
        f'<p style="margin:0 0 12px 0">{html.escape(line)}</p>' for line in lines if line
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family:Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;'
        'color:#1b1b1b;max-width:640px;margin:0;padding:16px">'
        f'<h1 style="font-size:18px;margin:0 0 16px 0">{html.escape(title)}</h1>\n'
        f"{paragraphs}</body></html>"
    )


# --- charts of a mailed summary ---------------------------------------------------------
# They are taken from the HTML report the message carries (its figures, as the report
# shows them, suppression included): each chart's SVG drawn as a PNG image by the
# report browser, shown with ``cid:``, with its alt text and the report's table of its
# figures beside it. Without a browser, the alt text and the table remain.

_FIGURE = re.compile(r'<figure class="chart" id="chart-([a-z]+)">(.*?)</figure>', re.S)
_SVG = re.compile(r"<svg\b.*?</svg>", re.S)
_LABEL = re.compile(r'<svg\b[^>]*\baria-label="([^"]*)"')
_TABLE = re.compile(r"<table>.*?</table>", re.S)
_CLASS = re.compile(r'\s+class="[^"]*"')
#: Inline styles of the mailed tables (a mail client drops a <style> sheet).
_TABLE_STYLES = {
    "<table>": '<table style="border-collapse:collapse;font-size:13px;margin:0 0 16px 0">',
    "<caption>": '<caption style="text-align:left;color:#5b6672;padding:0 0 4px 0">',
    "<th>": '<th style="text-align:left;padding:2px 8px;border-bottom:1px solid #d8dee4">',
    "<td>": '<td style="padding:2px 8px;border-bottom:1px solid #eef1f4">',
}


@dataclass(frozen=True)
class MailChart:
    """One chart of a mailed summary."""

    name: str  # weeks, units, triage
    alt: str  # what the chart shows, in words (its SVG's label)
    table: str  # the report's table of its figures, email-safe; "" when it has none
    png: bytes | None  # the chart drawn; None without a browser
    cid: str

    def html(self) -> str:
        """The chart's image (when drawn), its alt text as caption, and its table."""
        image = (
            f'<img src="cid:{self.cid}" alt="{html.escape(self.alt)}" width="520" '
            'style="display:block;max-width:100%;height:auto;border:0">'
            if self.png is not None
            else ""
        )
        return (
            f'<div style="margin:0 0 20px 0">{image}'
            f'<p style="margin:4px 0 8px 0;color:#5b6672;font-size:13px">'
            f"{html.escape(self.alt)}</p>{self.table}</div>"
        )


def mail_charts(report_html: str, browser: Browser | None) -> list[MailChart]:
    """The charts of an HTML report written by this program, for a mail."""
    out = []
    for name, figure in _FIGURE.findall(report_html):
        svg, label = _SVG.search(figure), _LABEL.search(figure)
        if svg is None or label is None:
            continue
        table = _TABLE.search(figure)
        styled = _CLASS.sub("", table.group(0)) if table else ""
        for plain, inline in _TABLE_STYLES.items():
            styled = styled.replace(plain, inline)
        png = browser.png(svg.group(0)) if browser is not None else None
        out.append(
            MailChart(name, html.unescape(label.group(1)), styled, png, f"chart-{name}@compliance")
        )
    return out


#: What an event (for a SIEM) says of an alert: no pseudonym, no address, the unit as the
#: report rolls it up.
EVENT_FIELDS = (
    "id", "policy", "rule", "rule_id", "severity", "change", "org_unit", "messages", "people",
    "days", "domains", "categories", "first_day", "last_day", "trigger_day", "state",
)  # fmt: skip


def _events(files: list[Path], item: OutboxItem) -> list[dict[str, Any]]:
    """One event per alert the report shows as new, updated or ended (drafts left out)."""
    data = next((f for f in files if f.suffix == ".json"), None)
    if data is None or item.audience != "team":
        return []
    report: Mapping[str, Any] = json.loads(data.read_text(encoding="utf-8"))
    return [
        {
            **{"alert_id" if k == "id" else k: alert.get(k) for k in EVENT_FIELDS},
            "report_period": [item.first_day, item.last_day],
        }
        for alert in report.get("alerts", [])
        if alert.get("change") in ("new", "updated", "ended") and not alert.get("draft")
    ]


def _nothing_new(files: list[Path]) -> bool:
    """Whether a team report shows no alert new, updated or ended since the previous one."""
    data = next((f for f in files if f.suffix == ".json"), None)
    if data is None:
        return False
    report: Mapping[str, Any] = json.loads(data.read_text(encoding="utf-8"))
    changes = (report.get("summary") or {}).get("by_change")
    if not isinstance(changes, dict):
        return False
    return not any(changes.get(k) for k in ("new", "updated", "ended"))


def _summary(files: list[Path]) -> list[str]:
    """The report's alert counts, from its JSON file, as the report shows them: counts of
    the whole organisation only (no unit, no person, no small group)."""
    data = next((f for f in files if f.suffix == ".json"), None)
    if data is None:
        return []
    report: Mapping[str, Any] = json.loads(data.read_text(encoding="utf-8"))
    figures = report.get("summary") or {}
    if "alerts" not in figures:
        return []
    changes = figures.get("by_change") or {}
    parts = ", ".join(f"{k} {v}" for k, v in changes.items() if k != "unchanged")
    return [f"Alerts: {figures['alerts']}" + (f" ({parts})" if parts else "")]


def _digest(message: Message) -> str:
    """A hash of everything sent (for the audit log; the content itself is not kept)."""
    digest = hashlib.sha256()
    for part in (message.subject, message.text, message.html or ""):
        digest.update(part.encode())
    for attachment in message.attachments:
        digest.update(attachment.name.encode())
        digest.update(attachment.data)
    return digest.hexdigest()
