"""A scheduled run: every new read unit of every source ingested into the store, each in
one transaction with its bookmark; then, with retro-hunt on, earlier traffic with domains
the feeds list since turned into events; then the policies evaluated over the stored
events, alerts kept, old records purged, and the run logged.

A run that fails keeps the units it completed; the next run resumes from the last
bookmark and evaluates whatever was not evaluated. With ``engine="dask"``, file units
are processed on a Dask cluster (:mod:`compliance.executors`) and committed here, in
order, exactly as in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from compliance.alerts import Alert
from compliance.engine import Prepared, UnitPart, unit_part, unit_parts
from compliance.episodes import evaluate_stored
from compliance.errors import ComplianceError
from compliance.executors import Executor, executor
from compliance.pipeline import (
    ChunkResult,
    Context,
    cutover_days,
    pair_digests,
    retro_events,
    retro_listings,
)
from compliance.policy.model import Policy
from compliance.policy.rules.ring import Links, RingRule
from compliance.progress import SILENT, Progress, total_size, unit_size
from compliance.store import Store
from connectors.base import ReadUnit, Source, SourceState

log = logging.getLogger(__name__)


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
    alerts_new: list[Alert] = field(default_factory=list)
    alerts_updated: list[Alert] = field(default_factory=list)
    alerts_ended: list[Alert] = field(default_factory=list)
    evaluated_events: int = 0  # events the policies looked at (their windows only)
    evaluation_seconds: float = 0.0
    retro_kept: int = 0  # unmatched external contacts kept for retro-hunt
    retro_found: int = 0  # events retro-hunt added from earlier contacts
    edges_kept: int = 0  # internal messages counted into ring rules' edges

    def stats(self) -> dict[str, int]:
        """The counts recorded with the run."""
        return {
            "rows_read": self.rows,
            "rows_rejected": sum(self.rejected.values()),
            "rows_duplicate": self.duplicates,
            "rows_matched": self.matched_new,
            "alerts_new": len(self.alerts_new),
        }


@dataclass(frozen=True)
class Retention:
    """Days each kind of record is kept."""

    dedup_days: int = 100
    events_days: int = 180
    alerts_days: int = 365
    cases_days: int = 730


@dataclass(frozen=True)
class RunOptions:
    """How a scheduled run goes: as of which day, by whom, on which engine, keeping what."""

    today: dt.date | None = None  # evaluate as of this day (default: the start's, UTC)
    started: dt.datetime | None = None  # the run's start (default: now, UTC)
    actor: str = "compliance"
    config_sha256: str | None = None  # logged when it changes
    engine: str = "local"  # or "dask"
    scheduler: str | None = None  # a Dask scheduler's address (default: a local cluster)
    retention: Retention = field(default_factory=Retention)
    progress: Progress = SILENT  # what the run reports as it reads (the command line's bar)
    #: retro-hunt (config ``retro_hunt_days``): keep unmatched external contacts this many
    #: days, and find them when a feed lists their domain later; None: off (and any kept
    #: before are deleted)
    retro_hunt_days: int | None = None


def _log_changes(store: Store, prepared: Prepared, actor: str, config_sha256: str | None) -> None:
    """Log the config, policy and feed versions a run used, when they changed."""
    watched = {
        "config": {"sha256": config_sha256} if config_sha256 else None,
        "policy": prepared.policy_versions(),
        "feed": prepared.feed_versions(),
    }
    for kind, value in watched.items():
        if value is None:
            continue
        text = json.dumps(value, sort_keys=True)
        before = store.meta.remember(f"last_{kind}", text)
        if before != text:
            details: dict[str, Any] = {"now": value}
            if before is not None:
                details["before"] = json.loads(before)
            store.audit.append(actor, f"{kind}.changed", details)


def ring_days(policies: Iterable[Policy]) -> int | None:
    """The longest window of the enabled policies' ring rules (None: no ring rule): how
    long internal-mail edges are kept, and how far back evidence makes them kept."""
    windows = [
        rule.window
        for policy in policies
        if policy.status != "disabled"
        for rule in policy.rules
        if isinstance(rule, RingRule)
    ]
    return max(windows) if windows else None


def _reported(parts: Iterable[UnitPart], progress: Progress) -> Iterator[UnitPart]:
    """``parts``, each reported to ``progress`` as it is read."""
    for part in parts:
        progress.rows(part.rows)
        yield part


def _processed(
    runner: Executor, units: list[ReadUnit], context: Context, source: str
) -> Iterator[tuple[ReadUnit, Iterable[UnitPart]]]:
    """Each unit with its processed parts, in order: streamed chunk by chunk here, or
    whole from a cluster's worker (units holding a live connection are read here)."""
    if runner.remote and all(u.distributable for u in units):
        for unit, part in runner.map(unit_part, units, context, source):
            yield unit, [part]
        return
    for unit in units:
        yield unit, unit_parts(unit, context, source)


def run_once(
    prepared: Prepared, sources: list[Source], store: Store, options: RunOptions | None = None
) -> RunSummary:
    """Ingest every new unit of every source, then evaluate, store alerts and purge.

    Each read unit is committed with its bookmark in one transaction; evaluation,
    alerts, retention and the run's audit-log entry in another. A run that fails keeps
    the units it completed, and the next run resumes from the last bookmark and
    evaluates whatever was not evaluated.

    With ``engine="dask"``, file units are read and processed on a Dask cluster
    (``scheduler``, or a local one) and committed here, in order, exactly as
    in-process; units holding a live connection (Graph windows) are read here.
    """
    run = _Run(prepared, store, options or RunOptions())
    run.check_keys()
    # plan and validate every source (formats, bookmarks, reach) before reading
    units = {
        s.name: s.units(SourceState(store.ingest.bookmark(s.name), run.started)) for s in sources
    }
    run.begin()
    try:
        run.ingest(sources, units)
        run.retro_hunt()
        run.evaluate_and_purge()
    except BaseException as exc:
        run.failed(exc)
        raise
    finally:
        for source in sources:
            source.close()
    store.runs.finish(run.summary.run_id, "ok", stats=run.summary.stats())
    return run.summary


class _Run:
    """One scheduled run's steps, and what they share."""

    def __init__(self, prepared: Prepared, store: Store, options: RunOptions) -> None:
        self.prepared, self.store, self.options = prepared, store, options
        self.actor = options.actor
        self.started = options.started or dt.datetime.now(dt.UTC)
        self.today = options.today or self.started.date()
        self.epochs: set[str] = set()
        self.scheme1_through: str | None = None  # see _event_key_cutover
        self.summary = RunSummary(0)
        self.ring_days = ring_days(lp.policy for lp in prepared.policies)

    def ring_from(self) -> str:
        """The first day of the rings' longest window (edges before it are purged)."""
        return (self.today - dt.timedelta(days=self.ring_days or 0)).isoformat()

    def links(self) -> Links | None:
        """What ring rules see of internal mail (None without a ring rule)."""
        if self.ring_days is None:
            return None
        return Links(
            self.store.edges.since(self.ring_from()),
            partial(pair_digests, self.prepared.context.pseudonymiser),
        )

    def check_keys(self) -> None:
        """Bind the store to the key, record today's key epoch, and read (the first time,
        record) the store's event-key cutover."""
        pseudo = self.prepared.context.pseudonymiser
        self.store.keys.bind(pseudo.key_id)
        self._check_epoch(pseudo.epoch(self.today.isoformat()))
        self._event_key_cutover()

    def _event_key_cutover(self) -> None:
        """The last day keyed with scheme 1, recorded the first time: a store written
        before scheme 2 keeps its keys for the days it has counted (so that re-read mail
        is never counted twice), and the audit log says from which day on scheme 2 holds."""
        store = self.store
        with store.transaction():
            through, now = store.meta.event_key_cutover()
            if now and through is not None:
                store.audit.append(
                    self.actor, "event_keys.scheme", {"scheme": 2, "scheme1_through": through}
                )
        if now:
            log.info(
                "event keys: scheme 2 %s",
                "for every day" if through is None else f"for days after {through}",
            )
        self.scheme1_through = through

    def _check_epoch(self, epoch: str) -> None:
        pseudo = self.prepared.context.pseudonymiser
        self.store.keys.check_epoch(epoch, pseudo.epoch_id(epoch), self.actor)
        self.epochs.add(epoch)

    def begin(self) -> None:
        """Record the run as started."""
        prepared = self.prepared
        run_id = self.store.runs.begin("run", prepared.policy_versions(), prepared.feed_versions())
        self.summary = RunSummary(run_id)

    def ingest(self, sources: list[Source], units: dict[str, list[ReadUnit]]) -> None:
        """Every unit not ingested before, source by source, each in its transaction."""
        progress = self.options.progress
        todo = {s.name: [u for u in units[s.name] if not self._done(s.name, u)] for s in sources}
        every: list[object] = [u for name in todo for u in todo[name]]
        progress.start("run", len(every), total_size(every))
        context = replace(self.prepared.context, scheme1_through=self.scheme1_through)
        if self.options.retro_hunt_days is not None:  # keep the contacts no feed matched
            context = replace(context, retro_from=self.retro_from())
        if self.ring_days is not None:  # keep internal mail of people with evidence
            people = self.store.events.people_since(self.ring_from())
            context = replace(context, ring_people=people)
        with executor(self.options.engine, self.options.scheduler) as runner:
            for source in sources:
                for unit, parts in _processed(runner, todo[source.name], context, source.name):
                    self._ingest_unit(source.name, unit, _reported(parts, progress))
                    progress.unit_done(unit_size(unit))
        progress.finish()

    def _done(self, source_name: str, unit: ReadUnit) -> bool:
        if unit.once and self.store.ingest.unit_done(source_name, unit.key):
            self.summary.units_skipped += 1
            log.info(
                "source %s: a unit (%s) was ingested before; skipped", source_name, unit.format
            )
            return True
        return False

    def _ingest_unit(self, source_name: str, unit: ReadUnit, parts: Iterable[UnitPart]) -> None:
        """Commit one unit's parts with its bookmark, in one transaction."""
        store, summary = self.store, self.summary
        rows = duplicates = 0
        rejected: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        latest: str | None = None
        with store.transaction():
            for part in parts:
                result = self._known_keys(part.result)
                rows += part.rows
                rejected.update(part.rejected)
                skipped.update(part.skipped)
                for epoch in set(result.matched["epoch"].dropna().unique()) - self.epochs:
                    self._check_epoch(str(epoch))
                if result.retro is not None and len(result.retro):  # before add_totals:
                    self._keep_contacts(result.retro)  # messages counted before are not kept
                if result.edges is not None and len(result.edges):  # before add_totals too
                    summary.edges_kept += store.edges.add(result.edges)
                keyed = result.keyed_messages
                assert keyed is not None  # unit_parts asks for them
                duplicates += store.ingest.add_totals(keyed)
                summary.matched_new += store.ingest.add_events(result.matched, summary.run_id)
                if len(result.totals):
                    top, low = str(result.totals["day"].max()), str(result.totals["day"].min())
                    latest = top if latest is None or top > latest else latest
                    store.meta.mark_pending(low)
            store.ingest.record_unit(
                source_name, unit.key, unit.format, rows, summary.run_id, duplicates
            )
            store.ingest.add_rejects(summary.run_id, source_name, rejected)
            store.ingest.add_skipped(summary.run_id, source_name, skipped)
            bookmark = unit.bookmark or latest
            if bookmark is not None:
                store.ingest.set_bookmark(source_name, bookmark, summary.run_id)
        summary.rows += rows
        summary.duplicates += duplicates
        summary.rejected.update(rejected)
        summary.units_read += 1
        log.info(
            "source %s: read %d rows (%s), rejected %d",
            source_name,
            rows,
            unit.format,
            sum(rejected.values()),
        )

    def _known_keys(self, result: ChunkResult) -> ChunkResult:
        """``result`` with the keys of messages dated either side of the event-key cutover
        made those the store knows them by (see :func:`compliance.pipeline.keyed_messages`):
        a message counted under its scheme-1 key keeps it when read again dated a day
        later, and the reverse; and of two copies of one message in ``result``, dated
        either side, the one dated after the cutover takes the other's scheme-1 key. Every
        output that carries event keys (messages, matched events, edges, contacts) is
        mapped alike, so that the message is counted and stored once."""
        keyed = result.keyed_messages
        if keyed is None or "other_key" not in keyed.columns:
            return result
        own = keyed["event_key"].to_numpy(dtype=np.int64)
        other = keyed["other_key"].to_numpy(dtype=np.int64)
        near = np.flatnonzero(own != other)
        if not len(near):
            return result
        day = keyed["day"].to_numpy(dtype=object)
        known = self.store.seen.seen(day[near], other[near])
        assert self.scheme1_through is not None
        _, after = cutover_days(self.scheme1_through)
        in_result = np.isin(other[near], own[near]) & (day[near] == after)
        take = near[known | in_result]
        if not len(take):
            return result
        source, order = np.unique(own[take], return_index=True)
        target = other[take][order]

        def mapped(frame: pd.DataFrame) -> pd.DataFrame:
            if not len(frame):
                return frame
            keys = frame["event_key"].to_numpy(dtype=np.int64).copy()
            at = np.minimum(np.searchsorted(source, keys), len(source) - 1)
            hit = source[at] == keys
            keys[hit] = target[at[hit]]
            return frame.assign(event_key=keys)

        return replace(
            result,
            keyed_messages=mapped(keyed),
            matched=mapped(result.matched),
            edges=None if result.edges is None else mapped(result.edges),
            retro=None if result.retro is None else mapped(result.retro),
        )

    def _keep_contacts(self, contacts: pd.DataFrame) -> None:
        """Keep a part's unmatched contacts for retro-hunt (inside its unit's transaction)."""
        store = self.store
        for epoch in set(contacts["epoch"].dropna().unique()) - self.epochs:
            self._check_epoch(str(epoch))
        self.summary.retro_kept += store.retro.add(contacts)
        if store.retro.hunted_with() is None:  # none kept before: all under this index
            store.retro.remember_hunt(self.prepared.index_version())

    def retro_from(self) -> str:
        """The first day retro-hunt keeps contacts of and looks in: ``retro_hunt_days``
        back, and never before the events' retention (an event older would be purged)."""
        days = min(self.options.retro_hunt_days or 0, self.options.retention.events_days)
        return (self.today - dt.timedelta(days=days)).isoformat()

    def retro_hunt(self) -> None:
        """With retro-hunt on and the match index changed since the last hunt: the kept
        contacts with a registrable domain the index lists now become the events they
        would have been (each message once: same event key), their earliest day is
        marked for evaluation, and the audit log gets the counts (never a domain, a
        digest or a pseudonym). One transaction."""
        if self.options.retro_hunt_days is None:
            return
        store, prepared = self.store, self.prepared
        version = prepared.index_version()
        if store.retro.hunted_with() in (version, None):  # None: nothing kept yet
            return
        since = self.retro_from()
        with store.transaction():
            if store.retro.has_since(since):
                self._hunt(since)
            store.retro.remember_hunt(version)

    def _hunt(self, since: str) -> None:
        store, prepared, summary = self.store, self.prepared, self.summary
        clock = time.perf_counter()
        excluded = [
            domain
            for lp in prepared.policies
            if lp.policy.status != "disabled"
            for domain in lp.policy.match.exclude_domains
        ]
        listings = retro_listings(
            prepared.index,
            prepared.context.pseudonymiser,
            store.retro.digests_since(since),
            excluded,
        )
        contacts = store.retro.take(listings.digests, since)
        events = retro_events(contacts, listings)
        summary.retro_found = store.ingest.add_events(events, summary.run_id)
        store.retro.delete(contacts["id"].to_numpy())
        if len(contacts):
            store.meta.mark_pending(str(contacts["day"].min()))
        seconds = time.perf_counter() - clock
        details = {
            "run": summary.run_id,
            "since": since,
            "contacts_found": len(contacts),
            "events_added": summary.retro_found,
            "domains_found": len(np.unique(contacts["domain_digest"].to_numpy())),
            "domains_listed_with_contacts": listings.listed,
            "domains_skipped_ambiguous": listings.ambiguous,
            "listings_not_registrable": listings.not_registrable,
        }
        store.audit.append(self.actor, "retro_hunt", details)
        log.info(
            "retro-hunt: %d earlier contacts of %d listed domains found, %d events added, "
            "%d listings skipped as ambiguous, in %.2f s",
            len(contacts),
            details["domains_found"],
            summary.retro_found,
            listings.ambiguous,
            seconds,
        )

    def evaluate_and_purge(self) -> None:
        """In one transaction: evaluate the stored events, keep the alerts, log what
        changed, purge what is past its retention, and log the run."""
        store, prepared, summary, actor = self.store, self.prepared, self.summary, self.actor
        with store.transaction():
            clock = time.perf_counter()
            changes = evaluate_stored(
                store,
                [lp.policy for lp in prepared.policies],
                prepared.directory.headcounts or None,
                prepared.people(),
                self.today,
                summary.run_id,
                actor,
                links=self.links(),
            )
            summary.evaluated_events = changes.evaluated_events
            summary.evaluation_seconds = time.perf_counter() - clock
            log.info(
                "evaluated %d events in %.2f s",
                changes.evaluated_events,
                summary.evaluation_seconds,
            )
            summary.alerts_new = changes.new
            summary.alerts_updated = changes.updated
            summary.alerts_ended = changes.ended
            store.meta.clear_pending()
            _log_changes(store, prepared, actor, self.options.config_sha256)
            self._purge()
            store.audit.append(
                actor,
                "run",
                {
                    "run": summary.run_id,
                    "status": "ok",
                    **summary.stats(),
                    "policies": prepared.policy_versions(),
                    "feeds": prepared.feed_versions(),
                },
            )

    def _purge(self) -> None:
        retention, today = self.options.retention, self.today
        self.store.ingest.purge_seen((today - dt.timedelta(days=retention.dedup_days)).isoformat())
        purged = self.store.retention.purge(
            (today - dt.timedelta(days=retention.events_days)).isoformat(),
            (today - dt.timedelta(days=retention.alerts_days)).isoformat(),
            (self.started - dt.timedelta(days=retention.cases_days)).isoformat(),
        )
        if self.options.retro_hunt_days is not None:
            purged["retro_contacts"] = self.store.retro.purge(self.retro_from())
        else:
            cleared = self.store.retro.clear()
            if cleared:  # retro_hunt_days was removed from the config
                self.store.audit.append(
                    self.actor,
                    "retro_hunt.off",
                    {"run": self.summary.run_id, "retro_contacts_deleted": cleared},
                )
        if self.ring_days is not None:
            purged["internal_edges"] = self.store.edges.purge(self.ring_from())
        else:
            purged["internal_edges"] = self.store.edges.clear()
        if any(purged.values()):
            self.store.audit.append(
                self.actor, "retention.purge", {"run": self.summary.run_id, **purged}
            )

    def failed(self, exc: BaseException) -> None:
        """Record and log a failed run (what it committed stays)."""
        error = str(exc) if isinstance(exc, ComplianceError) else type(exc).__name__
        stats = self.summary.stats()
        self.store.runs.finish(self.summary.run_id, "failed", error=error, stats=stats)
        self.store.audit.append(
            self.actor, "run", {"run": self.summary.run_id, "status": "failed", **stats}
        )
