"""The job: from a configuration to a prepared engine, a run, and its reports.

Shared by the scheduled commands (`run`, `schedule`, `report`, `demo`) and the
accountability commands; no command-line code here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from compliance import feedkeeper, notices, outbox
from compliance.config import (
    Config,
    EntraDirectory,
    ReportSchedule,
    config_digest,
    current_actor,
)
from compliance.delivery import WrittenReport
from compliance.directory import Directory
from compliance.engine import Prepared, all_rejected, prepare
from compliance.episodes import mark_changes
from compliance.errors import ConfigError, InputError, StorageError
from compliance.policy.lint import Approval, LintContext, LintResult, enforce, feed_categories
from compliance.policy.loader import load_policies
from compliance.progress import SILENT, Progress
from compliance.reports import (
    ReportData,
    ReportInputs,
    build_report,
    render_csv,
    render_html,
    render_json,
    reply_window,
)
from compliance.reports.broad import BroadSettings, release, render_broad_html, render_broad_json
from compliance.reports.browser import Browser, choose_browser
from compliance.scheduled import Retention, RunOptions, RunSummary, run_once
from compliance.scheduler import check_lock_folder
from compliance.store import Store, check_folder, check_store_path
from compliance.triage import iso_week, stats
from connectors.base import create_source

log = logging.getLogger(__name__)

#: meta: the id of the last alert whose notice was decided (notices follow episodes
#: stored after it)
NOTICES_FROM = "notices_decided_through_alert"


def _entra() -> ModuleType:
    """The Entra ID connector, imported when a config names it: it loads msal and requests
    (about 0.15 s), which no other command should pay for."""
    import connectors.entra

    return connectors.entra


def _entra_client(config: Config, entra: EntraDirectory) -> Any:
    source = next(s for s in config.sources if s.name == entra.source)
    return _entra().entra_client(source.name, source.options(), config.base_dir)


def directory_for(config: Config) -> Directory | Path | None:
    """The config's directory: a CSV path, or the directory read from Entra ID now."""
    if config.directory is None:
        return None
    if isinstance(config.directory, str):
        return config.path(config.directory)
    client = _entra_client(config, config.directory)
    directory: Directory = _entra().read_directory(client, config.directory.org_unit)
    return directory


def directory_checks(config: Config, entra: EntraDirectory) -> list[tuple[bool, str]]:
    """`sources check` of an Entra ID directory: permission and reachability, no data."""
    checks: list[tuple[bool, str]] = _entra().directory_checks(_entra_client(config, entra))
    return checks


def prepare_from_config(config: Config, key: bytes, progress: Progress = SILENT) -> Prepared:
    """Policies, feeds and the directory of a config, loaded before any input is read
    (``progress``: told of a feed compilation)."""
    policies = [config.path(p) for p in config.policies]
    load_policies(policies)  # policy mistakes are reported before anything is fetched
    return prepare(
        policies,
        config.feed_specs(),
        directory_for(config),
        config.organisation.domains,
        key,
        key_rotation=config.privacy.key_rotation,
        feed_cache=config.feed_cache_folder(),
        progress=progress,
    )


def sources_for(config: Config) -> list[Any]:
    return [create_source(s.type, s.name, s.options(), config.base_dir) for s in config.sources]


def report_from_store(
    store: Store, prepared: Prepared, spec: ReportSpec, min_group_size: int, last: dt.date
) -> ReportData:
    """Build the periodic report from the store: the alerts whose episode overlaps the
    period or changed since the previous report, each marked new, updated, ended or
    unchanged against what that report showed."""
    period_days = spec.period
    first = last - dt.timedelta(days=period_days - 1)
    first_s, last_s = first.isoformat(), last.isoformat()
    baseline = store.reports.baseline("team", spec.name)
    alerts = store.alerts.between(first_s, last_s, also=store.alerts.changed_since(baseline))
    mark_changes(alerts, store.alerts.figures_at(baseline))
    reply = dt.timedelta(days=reply_window(prepared.policies))
    events = store.events.since((first - reply).isoformat())  # earlier: to recognise replies
    events = events[events["day"] <= last_s]
    quality = store.runs.quality_since(first_s)
    weeks = {iso_week((first + dt.timedelta(days=n)).isoformat()) for n in range(period_days)}
    effectiveness = [
        row.as_dict() for row in stats(store.triage.facts()) if row.week in weeks | {None}
    ]
    return build_report(
        ReportInputs(
            title="Acceptable-use report",
            first_day=first_s,
            last_day=last_s,
            as_of=last_s,
            alerts=alerts,
            policies=prepared.policies,
            totals=store.events.totals_between(first_s, last_s),
            matched=events,
            headcounts=prepared.directory.headcounts or None,
            min_group_size=min_group_size,
            rows_read=quality["rows_read"],
            rejected=quality["rejected"],
            skipped=quality["skipped"]
            | ({"duplicate_message": quality["duplicates"]} if quality["duplicates"] else {}),
            sources=quality["sources"],
            feeds=feedkeeper.with_fetch_times(store, prepared.feeds),
            people_ids=prepared.people(),
            counted_from=first_s,
            effectiveness=effectiveness,
            notice_effect=notice_effect(store, prepared, last_s),
        )
    )


def notice_effect(store: Store, prepared: Prepared, last: str) -> list[dict[str, Any]]:
    """The deterrence notices' follow-up counts (one definition for team and broad
    reports; each report suppresses or adds noise)."""
    decided = store.notices.all()
    if not decided:
        return []
    events = store.events.since(min(r.day for r in decided))
    return notices.effect(decided, events[events["day"] <= last], prepared.policies, last)


def write_reports(
    data: ReportData,
    folder: Path,
    formats: list[str],
    name: str = "report",
    browser: Browser | None = None,
) -> list[Path]:
    """Write the report in each format; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    renderers: dict[str, Callable[[], str]] = {
        "html": lambda: render_html(data),
        "json": lambda: render_json(data),
        "csv": lambda: render_csv(data.sorted_alerts()),
    }
    stem = f"{name}-{data.last_day}"
    files = _write_files(folder, stem, {f: renderers[f] for f in formats if f in renderers})
    return _with_pdf(files, folder, stem, formats, renderers["html"], browser)


def _with_pdf(
    files: list[Path],
    folder: Path,
    stem: str,
    formats: Sequence[str],
    html: Callable[[], str],
    browser: Browser | None,
) -> list[Path]:
    """``files`` and, when ``formats`` asks for it, the HTML report printed to PDF by
    ``browser`` (from the HTML file written, else from a temporary copy)."""
    if "pdf" not in formats:
        return files
    if browser is None:
        raise ConfigError("a pdf report needs a browser (reports.browser)")
    out = folder / f"{stem}.pdf"
    page = next((f for f in files if f.suffix == ".html"), None)
    if page is not None:
        browser.pdf(page, out)
    else:
        with tempfile.TemporaryDirectory(prefix="compliance-report-") as tmp:
            page = Path(tmp) / f"{stem}.html"
            page.write_text(html(), encoding="utf-8")
            browser.pdf(page, out)
    os.chmod(out, REPORT_MODE)
    return [*files, out]


@dataclass(frozen=True)
class ReportSpec:
    """One report to write: the one every run writes (``report``), or a named schedule's."""

    name: str
    audience: str
    period: int
    formats: tuple[str, ...]
    send_to: tuple[str, ...]
    when_nothing_new: str = "send"

    @classmethod
    def of_run(
        cls, config: Config, audience: str | None = None, period: int | None = None
    ) -> ReportSpec:
        """The report every run writes (``reports``), optionally for another audience or
        period (`compliance report`)."""
        rc = config.reports
        return cls(
            "report",
            audience or rc.audience,
            period or rc.period,
            tuple(rc.formats),
            tuple(rc.send_to),
        )

    @classmethod
    def of_schedule(cls, schedule: ReportSchedule, period: int | None = None) -> ReportSpec:
        """A named schedule's report."""
        return cls(
            schedule.name,
            schedule.audience,
            period or schedule.days,
            tuple(schedule.formats),
            tuple(schedule.send_to),
            schedule.when_nothing_new,
        )


def produce_report(
    store: Store,
    prepared: Prepared,
    config: Config,
    actor: str,
    last: dt.date,
    spec: ReportSpec,
    run_id: int | None = None,
) -> tuple[list[Path], ReportData | None]:
    """Write ``spec``'s report for the period ending ``last``, log it, and record its
    deliveries in the outbox (unless it has nothing new and its schedule says skip)."""
    rc = config.reports
    folder = config.path(rc.dir)
    # both are written below: refuse now, before a privacy budget is spent or a file written
    check_folder(folder, "the reports folder", folder, REPORTS_SETTING)
    check_store_path(store.path)
    data: ReportData | None = None
    if spec.audience == "broad":
        first = (last - dt.timedelta(days=spec.period - 1)).isoformat()
        broad = release(
            store,
            "broad" if spec.name == "report" else spec.name,
            store.events.since(first),
            prepared.directory.headcounts,
            rc.min_group_size,
            first,
            last.isoformat(),
            BroadSettings(
                rc.epsilon,
                rc.dp_budget,
                rc.dp_budget_days,
                rc.message_cap,
                config.privacy.key_rotation,
            ),
            actor,
            notice_effect(store, prepared, last.isoformat()),
        )
        renderers: dict[str, Callable[[], str]] = {
            "html": lambda: render_broad_html(broad),
            "json": lambda: render_broad_json(broad),
        }
        chosen = {str(f): renderers[f] for f in spec.formats if f in renderers}  # no alert CSV
        stem = f"{spec.name}-{last.isoformat()}.broad"
        files = _write_files(folder, stem, chosen)
        files = _with_pdf(
            files, folder, stem, spec.formats, renderers["html"], report_browser(config)
        )
        span: list[str | None] = [broad.first_day, broad.last_day]
        news = True
        seq = 0
    else:
        seq = store.alerts.update_seq()
        data = report_from_store(store, prepared, spec, rc.min_group_size, last)
        files = write_reports(data, folder, list(spec.formats), spec.name, report_browser(config))
        span = [data.first_day, data.last_day]
        news = any(a.change in ("new", "updated", "ended") for a in data.alerts)
    # the report's record, its log entry and its deliveries in one transaction: a crash
    # leaves either all of them (the report is done and will be sent) or none (a later
    # run writes it again)
    with store.transaction():
        if data is not None:
            store.reports.record("team", str(data.first_day), str(data.last_day), seq, spec.name)
        elif spec.name != "report":  # a schedule's reports are recorded, to know when it is due
            store.reports.record("broad", str(span[0]), str(span[1]), 0, spec.name)
        store.audit.append(
            actor,
            "report.written",
            {
                "run": run_id,
                "report": spec.name,
                "audience": spec.audience,
                "period": span,
                "files": [f.name for f in files],
                "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
                "to": str(folder),
            },
        )
        if span[0] is None or span[1] is None or not spec.send_to:
            return files, data
        if not news and spec.when_nothing_new == "skip":
            store.audit.append(
                actor, "report.not_sent", {"report": spec.name, "why": "nothing new"}
            )
            return files, data
        written = WrittenReport(files, spec.audience, str(span[0]), str(span[1]))
        outbox.enqueue(store, config, written, run_id, spec.name, spec.send_to)
    return files, data


def due_schedules(store: Store, config: Config, today: dt.date) -> list[ReportSchedule]:
    """The named reports due on ``today``: never written, or written on a day of a
    period that has passed (the previous day, 7 days ago, a previous calendar month)."""
    due = []
    for schedule in config.reports.schedules:
        last = store.reports.last_day(schedule.name)
        if last is None:
            due.append(schedule)
            continue
        previous = dt.date.fromisoformat(last)
        if schedule.every == "day":
            passed = today > previous
        elif schedule.every == "week":
            passed = (today - previous).days >= 7
        else:
            passed = (today.year, today.month) != (previous.year, previous.month)
        if passed:
            due.append(schedule)
    return due


#: A report file's permissions: the service writes it, its group (the ethics team's
#: readers) reads it, nobody else on the machine does.
REPORT_MODE = 0o640


def _write_files(folder: Path, stem: str, renderers: dict[str, Callable[[], str]]) -> list[Path]:
    """Write each rendering to a temporary file, then move it into place: a report file is
    whole or absent. A full disk or a read-only folder raises :class:`StorageError` (and
    leaves no temporary file)."""
    written = []
    for fmt, render in renderers.items():
        path = folder / f"{stem}.{fmt}"
        tmp = path.with_suffix(f".{fmt}.tmp")
        text = render()
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, REPORT_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.chmod(tmp, REPORT_MODE)  # a leftover temporary file kept its old mode
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            error = StorageError.from_os(exc, "the report", path, REPORTS_SETTING)
            if error is None:
                raise
            raise error from None
        written.append(path)
    return written


#: What to do instead, when the reports' folder cannot be written.
REPORTS_SETTING = "set reports.dir: to a writable path"


def check_writable(config: Config) -> None:
    """Pre-flight of a run: raise :class:`StorageError` now, before anything is read, when
    the store's folder (or the store), the run lock's folder or the reports' folder cannot
    be written. Missing folders are created, as the run would. The feed cache is optional
    (a cache that cannot be written only warns) and is not checked."""
    check_store_path(config.path(config.store))
    check_lock_folder(config.path(config.schedule.lock))
    folder = config.path(config.reports.dir)
    check_folder(folder, "the reports folder", folder, REPORTS_SETTING)
    report_browser(config)


def report_browser(config: Config) -> Browser | None:
    """The browser that prints PDF reports and draws mailed charts, or None; raises
    :class:`ConfigError` when a report is to be written as PDF and there is none."""
    return choose_browser(config.reports.browser, "pdf" if config.reports.wants_pdf() else None)


def works_council_lint(config: Config, prepared: Prepared) -> LintResult:
    """The works-council checks over the configured policies, as `policy lint --config`
    runs them: raises :class:`PolicyError` (exit 3) naming every error no approved
    exception covers; logs each open warning; returns the exceptions in effect."""
    headcounts = dict(prepared.directory.headcounts)
    context = LintContext(
        org_domains=list(config.organisation.domains),
        feed_categories=feed_categories(prepared.feeds),
        headcounts=headcounts or None,
        missing={"headcounts": "the configuration has no directory: scope not checked"},
    )
    where = str(config.file or "")
    approvals = [Approval.of(e, where) for e in config.lint_exceptions]
    result = enforce(prepared.policies, context, approvals)
    for finding in result.open:
        log.warning("policy lint: %s %s: %s", finding.check, finding.subject, finding.message)
    return result


def log_lint_exceptions(store: Store, actor: str, lint: LintResult) -> None:
    """Write the lint exceptions in effect to the audit log when they change (the first
    run that applies an approved exception logs it, with who approved it and why)."""
    current = sorted((f.as_dict() for f in lint.excepted), key=lambda d: json.dumps(d))
    text = json.dumps(current, sort_keys=True)
    with store.transaction():
        if store.meta.remember("last_lint_exceptions", text) == text:
            return
        for finding in current:
            store.audit.append(actor, "policy.lint_exception", finding)


def do_run(
    config: Config, key: bytes, today: dt.date | None = None, progress: Progress = SILENT
) -> tuple[RunSummary, list[Path], ReportData | None]:
    """One run from a config: update the feeds that are due (``update_every``), ingest,
    evaluate, write reports. Returns the run's summary, the files written and the team
    report's data. A feed update that is refused or fails is logged and recorded, and
    the run goes on with the feed's last good copy."""
    actor = current_actor(config.accountability)
    feedkeeper.update_due(config, actor)
    prepared = prepare_from_config(config, key, progress)
    lint = works_council_lint(config, prepared)  # a policy with an open error never runs
    prepared.context.timestamps = config.ingest.timestamp_range(today)
    sources = sources_for(config)
    with Store.open(config.path(config.store)) as store:
        log_lint_exceptions(store, actor, lint)
        r = config.retention
        options = RunOptions(
            today=today,
            actor=actor,
            config_sha256=config_digest(config.file) if config.file else None,
            engine=config.engine.type,
            scheduler=config.engine.scheduler,
            progress=progress,
            retention=Retention(r.dedup_days, r.events_days, r.alerts_days, r.cases_days),
            retro_hunt_days=config.retro_hunt_days,
        )
        noticing = bool(notices.notice_policies(prepared.policies))
        if noticing and store.meta.get(NOTICES_FROM) is None:  # only episodes from now on
            with store.transaction():
                store.meta.remember(NOTICES_FROM, str(store.alerts.last_id()))
        summary = run_once(prepared, sources, store, options)
        last = today or dt.datetime.now(dt.UTC).date()
        if noticing:
            # every alert stored since the last decision (not only this run's: a run that
            # stopped between storing its alerts and deciding leaves them to this one)
            after = int(store.meta.get(NOTICES_FROM) or 0)
            stored = store.alerts.after_id(after)
            # an alert held back by max_alerts_per_day brings its notice once it is raised
            waiting = [a.id or 0 for a in stored if a.raised_day > last.isoformat()]
            fresh = [a for a in stored if (a.id or 0) < min(waiting, default=1 << 62)]
            notices.process(
                store,
                config,
                prepared.policies,
                prepared.directory,
                prepared.context.pseudonymiser,
                key,
                fresh,
                last,
                actor,
                summary.run_id,
            )
            with store.transaction():
                store.meta.remember(NOTICES_FROM, str(max([after, *(a.id or 0 for a in fresh)])))
        files, data = produce_report(
            store, prepared, config, actor, last, ReportSpec.of_run(config), summary.run_id
        )
        for schedule in due_schedules(store, config, last):
            files += produce_report(
                store,
                prepared,
                config,
                actor,
                last,
                ReportSpec.of_schedule(schedule),
                summary.run_id,
            )[0]
        outbox.deliver_due(store, config, actor)
    log.info(
        "run %d: %d rows, %d rejected, %d new matched events, %d new, %d updated, %d ended alerts",
        summary.run_id,
        summary.rows,
        sum(summary.rejected.values()),
        summary.matched_new,
        len(summary.alerts_new),
        len(summary.alerts_updated),
        len(summary.alerts_ended),
    )
    return summary, files, data


def check_input(summary: RunSummary, where: str, fail_when_idle: bool = True) -> None:
    """Refuse, after the fact, a run that read nothing (unless ``fail_when_idle`` is off) or
    rejected every row it read: it says so (exit 4) rather than report an empty period as a
    quiet one."""
    if not summary.rows:
        if not fail_when_idle:
            log.warning("the run read nothing: no source had new input")
            return
        skipped = f" ({summary.units_skipped} already read before)" if summary.units_skipped else ""
        raise InputError(
            where,
            f"the run read nothing: no source had new input{skipped}; the report covers "
            "what the store already held",
        )
    refused = all_rejected(summary.rows, summary.rejected, "", "the sources' format and settings")
    if refused:
        raise InputError(where, refused)


def open_store(config: Config, read_only: bool = False) -> Store:
    """The configured store, which must exist (commands other than `run` never create one);
    ``read_only`` for commands that only read it (they then work on a read-only copy)."""
    path = config.path(config.store)
    if not path.exists():
        raise ConfigError(f"there is no store at {path} yet: run the job first")
    return Store.open_read_only(path) if read_only else Store.open(path)
