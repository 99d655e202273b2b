"""Wiring the stages: one scheduled run into the store, or one audit in memory.

Both validate everything they can (policies, feeds, directory, every input's format)
before reading a single row, so that a mistake stops the command with nothing
written. A run's data, bookmarks, alerts and rejected-row counts are written in one
transaction: a failed run leaves only its own 'failed' record.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from compliance.domains import DomainIndex
from compliance.errors import ComplianceError
from compliance.feeds import FeedInfo, FeedSpec, load_feeds
from compliance.pipeline import Context, Tally, org_index, process_chunk
from compliance.policy.evaluate import Alert, add_policy_domains, evaluate
from compliance.policy.loader import LoadedPolicy, load_policies
from compliance.privacy import Pseudonymiser
from compliance.store import Store
from connectors.base import ReadUnit, Source
from connectors.directory import Directory, load_directory

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a run needs, loaded and validated."""

    policies: list[LoadedPolicy]
    index: DomainIndex
    feeds: list[FeedInfo]
    directory: Directory
    context: Context

    def policy_versions(self) -> dict[str, Any]:
        """Policy id -> version and content hash, for the run record."""
        return {
            lp.policy.id: {"version": lp.policy.version, "sha256": lp.sha256}
            for lp in self.policies
        }

    def feed_versions(self) -> dict[str, Any]:
        """Feed name -> format, entries and content hash, for the run record."""
        return {
            f.name: {"format": f.format, "entries": f.entries, "sha256": f.sha256}
            for f in self.feeds
        }


def prepare(
    policy_paths: Iterable[Path],
    feed_specs: Iterable[FeedSpec],
    directory_path: Path | None,
    org_domains: Iterable[str],
    key: bytes,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
) -> Prepared:
    """Load policies, feeds and the directory; fail before any input is read."""
    policies = load_policies(list(policy_paths))
    index, feeds = load_feeds(feed_specs)
    known = index.categories()
    for lp in policies:
        missing = [c for c in lp.policy.match.categories if c not in known]
        if missing and lp.policy.status != "disabled":
            log.warning(
                "policy %s: no feed provides categor%s %s",
                lp.policy.id,
                "y" if len(missing) == 1 else "ies",
                ", ".join(missing),
            )
    add_policy_domains(index, [lp.policy for lp in policies])
    directory = load_directory(directory_path)
    context = Context(org_index(org_domains), directory, Pseudonymiser(key), index, since, until)
    return Prepared(policies, index, feeds, directory, context)


@dataclass
class AuditResult:
    """What an audit found."""

    tally: Tally
    alerts: list[Alert]
    matched: pd.DataFrame
    prepared: Prepared
    formats: Counter[str] = field(default_factory=Counter)
    since: str | None = None
    until: str | None = None


def audit(prepared: Prepared, units: list[ReadUnit], source_name: str = "audit") -> AuditResult:
    """Run the engine over ``units`` in memory and evaluate every policy."""
    tally = Tally()
    formats: Counter[str] = Counter()
    for unit in units:
        formats[unit.format] += 1
        for chunk in unit.chunks():
            tally.rejected.update(chunk.rejected)
            tally.skipped.update(chunk.skipped)
            # rows the connector dropped were read too
            tally.rows += sum(chunk.rejected.values()) + sum(chunk.skipped.values())
            tally.add(process_chunk(chunk.frame, source_name, prepared.context))
    matched = tally.matched()
    alerts = evaluate(
        [lp.policy for lp in prepared.policies], matched, prepared.directory.headcounts or None
    )
    return AuditResult(tally, alerts, matched, prepared, formats)


@dataclass
class RunSummary:
    """What one scheduled run did."""

    run_id: int
    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    matched_new: int = 0
    units_read: int = 0
    units_skipped: int = 0
    earliest_day: str | None = None
    alerts_new: list[Alert] = field(default_factory=list)


def run_once(
    prepared: Prepared,
    sources: list[Source],
    store: Store,
    dedup_days: int,
    today: dt.date | None = None,
) -> RunSummary:
    """Ingest every new unit of every source, evaluate, store alerts: all in one transaction."""
    today = today or dt.datetime.now(dt.UTC).date()
    units = {source.name: source.units() for source in sources}  # validates formats first
    store.check_key(prepared.context.pseudonymiser.key_id)
    run_id = store.begin_run("run", prepared.policy_versions(), prepared.feed_versions())
    summary = RunSummary(run_id)
    try:
        with store.transaction():
            for source in sources:
                _ingest_source(source, units[source.name], prepared, store, summary)
            policies = [lp.policy for lp in prepared.policies]
            lookback = dt.timedelta(days=max((p.lookback_days for p in policies), default=30))
            start = today - lookback
            if summary.earliest_day is not None:  # a backfill reaches further back
                start = min(start, dt.date.fromisoformat(summary.earliest_day) - lookback)
            events = store.events_since(start.isoformat())
            alerts = evaluate(
                policies,
                events,
                prepared.directory.headcounts or None,
                store.previous_triggers(),
            )
            summary.alerts_new = store.add_alerts(alerts, run_id)
            store.purge_seen((today - dt.timedelta(days=dedup_days)).isoformat())
    except ComplianceError as exc:
        store.finish_run(run_id, "failed", error=str(exc))
        raise
    except Exception as exc:
        store.finish_run(run_id, "failed", error=f"internal error: {type(exc).__name__}")
        raise
    store.finish_run(
        run_id,
        "ok",
        rows_read=summary.rows,
        rows_rejected=sum(summary.rejected.values()),
        rows_duplicate=summary.duplicates,
        rows_matched=summary.matched_new,
        alerts_new=len(summary.alerts_new),
    )
    return summary


def _ingest_source(
    source: Source, units: list[ReadUnit], prepared: Prepared, store: Store, summary: RunSummary
) -> None:
    watermark: str | None = None
    for unit in units:
        if store.unit_done(source.name, unit.key):
            summary.units_skipped += 1
            log.info(
                "source %s: a unit (%s) was ingested before; skipped", source.name, unit.format
            )
            continue
        rows = 0
        rejected: Counter[str] = Counter()
        for chunk in unit.chunks():
            result = process_chunk(chunk.frame, source.name, prepared.context, keys_for_all=True)
            rows += result.rows + sum(chunk.rejected.values()) + sum(chunk.skipped.values())
            rejected.update(chunk.rejected)
            rejected.update(result.rejected)
            summary.duplicates += store.add_totals(result.totals)
            summary.matched_new += store.add_events(result.matched, summary.run_id)
            if len(result.totals):
                top, low = str(result.totals["day"].max()), str(result.totals["day"].min())
                watermark = top if watermark is None or top > watermark else watermark
                if summary.earliest_day is None or low < summary.earliest_day:
                    summary.earliest_day = low
        store.record_unit(source.name, unit.key, unit.format, rows, summary.run_id)
        store.add_rejects(summary.run_id, source.name, rejected)
        summary.rows += rows
        summary.rejected.update(rejected)
        summary.units_read += 1
        log.info(
            "source %s: read %d rows (%s), rejected %d",
            source.name,
            rows,
            unit.format,
            sum(rejected.values()),
        )
    store.set_bookmark(source.name, watermark, summary.run_id)
