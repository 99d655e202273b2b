"""An ad-hoc audit: from what the user asked for to the report's data. Nothing it reads
is stored; with a config whose store exists, the audit is recorded in its audit log.

The job of `compliance audit`, as :mod:`compliance.job` is the scheduled commands': it
prepares the engine (from the request's feeds, policies and directory, or from a
config), lists the files and configured sources to read, runs
:func:`compliance.engine.audit` and builds the report with
:func:`compliance.reports.build_report`, as a scheduled report is built, so that every
format shows the same figures. No command-line code here: the CLI turns its options
into an :class:`AuditRequest` and renders the :class:`AuditOutcome`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compliance.config import Config, current_actor
from compliance.engine import AuditResult, Prepared, audit, prepare
from compliance.errors import ConfigError
from compliance.feeds import FeedSpec
from compliance.feeds.cache import default_folder
from compliance.policy.lint import LintContext, enforce, feed_categories
from compliance.progress import SILENT, Progress
from compliance.reports import ReportData, ReportInputs, build_report, report_threshold
from compliance.store import Store
from compliance.tally import SPILL_ABOVE, SpillFolder
from connectors.base import (
    FileUnit,
    PeriodRequired,
    ReadUnit,
    Source,
    create_source,
    expand_paths,
)
from connectors.exchange import find_exports, skipped_note

log = logging.getLogger(__name__)

#: A unit to read, with the configured source it comes from (None: a ``logs`` file).
NamedUnit = tuple[str | None, ReadUnit]


class AuditUsageError(ConfigError):
    """Options that do not go together, found only once the config or its sources are
    read; the CLI shows it as a usage error."""


@dataclass(frozen=True)
class AuditRequest:
    """What the user asked an audit for.

    Without ``config``: ``logs``, ``feeds`` (``FILE[:CATEGORY]``), ``policies`` and
    ``org_domains`` (and optionally ``directory``). With it, those four come from the
    config, and ``logs`` and/or ``sources`` (names of configured sources) are read.
    ``since`` and ``until`` are ISO dates as given (UTC days, both included); ``fmt``
    and ``out`` say how the caller renders the outcome. Matched events past
    ``spill_above`` bytes in memory are written to a private folder under ``spill_dir``
    (default: the system's temporary folder), removed when the audit ends.
    """

    logs: tuple[Path, ...] = ()
    config: Config | None = None
    sources: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()
    policies: tuple[Path, ...] = ()
    directory: Path | None = None
    org_domains: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    fmt: str = "table"
    out: Path | None = None
    timestamp_format: str | None = None
    min_group_size: int = 5
    engine: str | None = None  # None: the config's engine, else local
    scheduler: str | None = None
    feed_cache: Path | None = None  # None: the config's, else the default folder
    no_feed_cache: bool = False
    spill_dir: Path | None = None  # None: the system's temporary folder
    spill_above: int = SPILL_ABOVE

    @property
    def first_day(self) -> dt.date | None:
        """The first day asked for, if any."""
        return None if self.since is None else dt.date.fromisoformat(self.since)

    @property
    def last_day(self) -> dt.date | None:
        """The last day asked for, if any."""
        return None if self.until is None else dt.date.fromisoformat(self.until)

    @property
    def start(self) -> pd.Timestamp | None:
        """The first instant asked for (UTC), if any."""
        first = self.first_day
        return pd.Timestamp(first, tz="UTC") if first else None

    @property
    def stop(self) -> pd.Timestamp | None:
        """The instant after the last day asked for (UTC), if any."""
        last = self.last_day
        return pd.Timestamp(last + dt.timedelta(days=1), tz="UTC") if last else None


@dataclass(frozen=True)
class AuditOutcome:
    """What an audit found: the report's data, which every format renders, and the
    engine's result it was built from."""

    report: ReportData
    result: AuditResult


def run_audit(request: AuditRequest, key: bytes, progress: Progress = SILENT) -> AuditOutcome:
    """Prepare, read and evaluate what ``request`` asks for with the pseudonymisation
    ``key``; trace the audit in the config's store, if it has one; build the report.

    Matched events too many for memory spill to a private folder (see
    :class:`AuditRequest`), which lives until the report is built and is removed then,
    also when anything on the way fails.

    Raises :class:`AuditUsageError` for options that do not go together, and the
    engine's errors (policies, feeds, inputs) as they come.
    """
    prepared = prepare_audit(request, key, progress)
    works_council_lint(request, prepared)  # a policy with an open error never runs
    engine, scheduler = engine_for(request)
    named = audit_units(request)
    if scheduler and engine != "dask":
        raise AuditUsageError("--scheduler goes with --engine dask")
    units = [unit for _, unit in named]
    as_of = _iso(request.last_day)  # None: the last day read
    # partitions keep whole every unit as the report rolls it up, too
    reported = report_threshold(request.min_group_size, prepared.policies)
    with SpillFolder(request.spill_dir, request.spill_above) as spill:
        result = audit(
            prepared,
            units,
            engine=engine,
            scheduler=scheduler,
            as_of=as_of,
            progress=progress,
            spill=spill,
            group_sizes=(reported,),
        )
        log_audit(request, prepared, result)
        report = audit_report(request, prepared, named, result)
    return AuditOutcome(report, result)


def prepare_audit(request: AuditRequest, key: bytes, progress: Progress = SILENT) -> Prepared:
    """Load the policies, feeds and directory, from the request or from its config
    (``progress``: told of a feed compilation)."""
    if request.config is None:
        return prepare(
            list(request.policies),
            [spec for f in request.feeds for spec in FeedSpec.parse_all(f)],
            request.directory,
            request.org_domains,
            key,
            request.start,
            request.stop,
            feed_cache=None if request.no_feed_cache else request.feed_cache or default_folder(),
            progress=progress,
        )
    config = _with_feed_cache(request.config, request)
    # the scheduled job's module (feed downloads, notices, deliveries) is loaded only for
    # an audit that takes a configuration: an audit of files starts without it
    from compliance.job import prepare_from_config

    prepared = prepare_from_config(config, key, progress)
    prepared.context.since, prepared.context.until = request.start, request.stop
    prepared.context.timestamps = config.ingest.timestamp_range()
    return prepared


def works_council_lint(request: AuditRequest, prepared: Prepared) -> None:
    """The works-council checks over the audit's policies, as a scheduled run applies
    them: raises :class:`PolicyError` (exit 3) naming every error, before anything is
    read, so that an export cannot be audited with a rule the lint refuses (one message
    on one day singling a person out). With a config, its approved ``lint_exceptions``
    apply; without one, the organisation's domains, the feeds and the directory given
    are the context, and there are no exceptions. Each open warning is logged."""
    if request.config is not None:
        from compliance.job import works_council_lint as configured

        configured(request.config, prepared)
        return
    headcounts = dict(prepared.directory.headcounts)
    context = LintContext(
        org_domains=list(request.org_domains),
        feed_categories=feed_categories(prepared.feeds),
        headcounts=headcounts or None,
        missing={"headcounts": "the audit has no --directory with org units: scope not checked"},
    )
    for finding in enforce(prepared.policies, context, ()).open:
        log.warning("policy lint: %s %s: %s", finding.check, finding.subject, finding.message)


def _with_feed_cache(config: Config, request: AuditRequest) -> Config:
    """``config`` with the feed cache the request asks for, if it asks for one."""
    if request.no_feed_cache:
        return config.model_copy(update={"feed_cache": False})
    if request.feed_cache:
        return config.model_copy(update={"feed_cache": str(request.feed_cache.resolve())})
    return config


def engine_for(request: AuditRequest) -> tuple[str, str | None]:
    """The engine and Dask scheduler to use: the request's, else the config's, else local."""
    engine, scheduler = request.engine, request.scheduler
    if request.config is not None and engine is None:
        settings = request.config.engine
        engine, scheduler = settings.type, scheduler or settings.scheduler
    return engine or "local", scheduler


def audit_units(request: AuditRequest) -> list[NamedUnit]:
    """The units to read, in order: the ``logs`` files, then the configured sources'."""
    named: list[NamedUnit] = []
    if request.logs:
        named.extend(_file_units(request.logs, request.timestamp_format))
    if request.config is not None and request.sources:
        named.extend(_source_units(request.config, request.sources, request.start, request.stop))
    return named


def _file_units(logs: tuple[Path, ...], timestamp_format: str | None) -> list[NamedUnit]:
    """One unit per file of ``logs``, its format detected. A file named on its own must be
    a log; a folder (searched with its subfolders) or a glob may also hold other files (a
    README, a spreadsheet): those are skipped, counted and, with -v, named."""
    units: list[NamedUnit] = []
    skipped: list[Path] = []
    for given in logs:
        text = str(given)
        searched = given.is_dir() or any(c in text for c in "*?[")
        pattern = str(given / "**" / "*") if given.is_dir() else text
        paths = ((path, searched) for path in expand_paths([pattern], Path.cwd()))
        found, passed = find_exports(paths, timestamp_format)
        units.extend((None, unit) for unit in found)
        skipped.extend(passed)
    if skipped:
        log.info(
            "--logs: skipped %d file(s) that are not logs%s", len(skipped), skipped_note(skipped)
        )
    if not units:
        raise ConfigError(
            "--logs names no log file"
            + (f" ({len(skipped)} file(s) found, none a known log format)" if skipped else "")
        )
    return units


def _source_units(
    config: Config,
    names: tuple[str, ...],
    start: pd.Timestamp | None,
    stop: pd.Timestamp | None,
) -> list[NamedUnit]:
    """Read units of configured sources, with the source's name: an API source's window,
    a file source's files."""
    known = {s.name: s for s in config.sources}
    units: list[NamedUnit] = []
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for name in names:
        item = known.get(name)
        if item is None:
            raise ConfigError(f"no source named {name!r} in the config")
        source = create_source(item.type, item.name, item.options(), config.base_dir)
        units.extend((name, u) for u in _units_of(source, start, stop, now))
    return units


def _units_of(
    source: Source, start: pd.Timestamp | None, stop: pd.Timestamp | None, now: dt.datetime
) -> list[ReadUnit]:
    """A source's units for an audit over ``start``..``stop`` (see
    :meth:`connectors.base.Source.units_between`)."""
    begin = start.to_pydatetime() if start is not None else None
    end = stop.to_pydatetime() if stop is not None else None
    try:
        return source.units_between(begin, end, now)
    except PeriodRequired as exc:
        raise AuditUsageError(f"--source {source.name} needs --since ({exc})") from None


def log_audit(request: AuditRequest, prepared: Prepared, result: AuditResult) -> None:
    """Trace the audit in the config's store, when there is one: an audit of personal
    data is an act worth a trace."""
    config = request.config
    if config is None or not config.path(config.store).exists():
        return
    with Store.open(config.path(config.store)) as store:
        store.audit.append(
            current_actor(config.accountability),
            "audit",
            {
                "sources": list(request.sources),
                "files": len(request.logs),
                "since": request.since,
                "until": request.until,
                "rows": result.tally.rows,
                "alerts": len(result.alerts),
                "policies": prepared.policy_versions(),
            },
        )


def audit_report(
    request: AuditRequest, prepared: Prepared, named: list[NamedUnit], result: AuditResult
) -> ReportData:
    """The report's data, built as a scheduled report's: every figure of every format
    comes from it. Its period is the days asked for, else the days of the rows read."""
    first = _iso(request.first_day) or result.tally.first_day
    last = _iso(request.last_day) or result.tally.last_day
    return build_report(
        ReportInputs(
            title="Acceptable-use audit",
            first_day=first,
            last_day=last,
            as_of=last,
            alerts=result.alerts,
            policies=prepared.policies,
            totals=result.tally.totals,
            matched=result.matched,
            headcounts=prepared.directory.headcounts or None,
            min_group_size=request.min_group_size,
            rows_read=result.tally.rows,
            rejected=result.tally.rejected,
            skipped=result.tally.skipped,
            sources=_source_rows(named, result.unit_rows),
            feeds=prepared.feeds,
            people_ids=prepared.people(),
        )
    )


def _source_rows(named: list[NamedUnit], rows: list[int]) -> list[dict[str, Any]]:
    """The report's sources table: one entry per file, by its base name ("file N", its
    place among the files, when the name holds an '@': a name must never carry an
    address), and one per configured source of other units (API windows); each with its
    format, units and the rows read from it (summing to the report's rows read)."""
    entries: dict[tuple[str, object], dict[str, Any]] = {}
    files = 0
    for (source, unit), count in zip(named, rows, strict=True):
        if isinstance(unit, FileUnit):
            files += 1
            key: tuple[str, object] = ("file", files)
            label = f"file {files}" if "@" in unit.path.name else unit.path.name
        else:
            label = source if source and "@" not in source else "source"
            key = (label, unit.format)
        entry = entries.setdefault(
            key, {"source": label, "format": unit.format, "units": 0, "rows": 0}
        )
        entry["units"] += 1
        entry["rows"] += count
    return list(entries.values())


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None
