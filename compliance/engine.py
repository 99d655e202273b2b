"""Wiring the stages: one scheduled run into the store, or one audit in memory.

Both validate everything they can (policies, feeds, directory, every input's format)
before reading a single row, so that a mistake stops the command with nothing
written. Each read unit (a file, an API window) is committed in one transaction with
its bookmark and rejected-row counts, so a failed run loses at most the unit it was
reading and never counts a message twice (messages are keyed, and the next run
starts from the last bookmark).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from compliance.alerts import Alert
from compliance.directory import Directory
from compliance.domains import DomainIndex
from compliance.errors import ComplianceError, InputError, shown_path
from compliance.executors import executor
from compliance.feeds import FeedInfo, FeedSpec, load_feeds
from compliance.pipeline import (
    ChunkResult,
    Context,
    combine_results,
    org_index,
    process_chunk,
)
from compliance.policy.evaluate import (
    PeopleIds,
    add_policy_domains,
    evaluate,
    schedule_raises,
)
from compliance.policy.loader import LoadedPolicy, load_policies
from compliance.policy.model import Policy
from compliance.policy.rules import kind_of
from compliance.policy.rules.ring import RingRule
from compliance.privacy import PersonLinker, Pseudonymiser
from compliance.progress import SILENT, Progress, total_size, unit_size
from compliance.tally import MatchedEvents, Spill, SpillFolder, Tally, unit_partitions
from connectors.base import Chunk, FileUnit, ReadUnit
from connectors.directory import load_directory

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a run needs, loaded and validated."""

    policies: list[LoadedPolicy]
    index: DomainIndex
    feeds: list[FeedInfo]
    directory: Directory
    context: Context
    _linker: PersonLinker | None = field(default=None, repr=False)

    def policy_versions(self) -> dict[str, Any]:
        """Policy id -> version and content hash, for the run record."""
        return {
            lp.policy.id: {"version": lp.policy.version, "sha256": lp.sha256}
            for lp in self.policies
        }

    def people(self) -> PeopleIds | None:
        """Person numbers across key epochs, or None where pseudonyms never change (one
        linker per run: each epoch's pseudonyms of the directory are computed once)."""
        pseudo = self.context.pseudonymiser
        if pseudo.rotation == "never":
            return None
        if self._linker is None:
            keys = [key for key, _unit in self.directory.people.values()]
            self._linker = PersonLinker(pseudo, keys)
        return self._linker.ids

    def feed_versions(self) -> dict[str, Any]:
        """Feed name -> format, entries and content hash, for the run record."""
        return {
            f.name: {"format": f.format, "entries": f.entries, "sha256": f.sha256}
            for f in self.feeds
        }

    def index_version(self) -> str:
        """A digest of what decides which domains match: the feeds' versions and the
        policies' own and excluded domains (retro-hunt looks again when it changes)."""
        policies = {
            lp.policy.id: [sorted(lp.policy.match.domains), sorted(lp.policy.match.exclude_domains)]
            for lp in self.policies
            if lp.policy.status != "disabled"
        }
        text = json.dumps({"feeds": self.feed_versions(), "policies": policies}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def prepare(
    policy_paths: Iterable[Path],
    feed_specs: Iterable[FeedSpec],
    directory: Directory | Path | None,
    org_domains: Iterable[str],
    key: bytes,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    key_rotation: str = "never",
    feed_cache: Path | None = None,
    progress: Progress = SILENT,
) -> Prepared:
    """Load policies, feeds and the directory; fail before any input is read.

    With ``feed_cache``, compiled feeds are kept in that folder and reused while the
    feed files are unchanged; ``progress`` is told of a compilation (a cache miss).
    """
    policies = load_policies(list(policy_paths))
    index, feeds = load_feeds(feed_specs, feed_cache, progress)
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
    if not isinstance(directory, Directory):
        directory = load_directory(directory)
    context = Context(
        org_index(org_domains), directory, Pseudonymiser(key, key_rotation), index, since, until
    )
    return Prepared(policies, index, feeds, directory, context)


@dataclass
class AuditResult:
    """What an audit found. ``matched``: the matched events, in memory or spilled to
    disk; read them (:meth:`MatchedEvents.partitions`) before the audit's
    :class:`SpillFolder` is closed."""

    tally: Tally
    alerts: list[Alert]
    matched: MatchedEvents
    prepared: Prepared
    formats: Counter[str] = field(default_factory=Counter)
    since: str | None = None
    until: str | None = None
    unit_rows: list[int] = field(default_factory=list)  # rows read from each unit, in order


class NothingReadError(InputError):
    """An audit read no row, or rejected every row it read: there is nothing to report."""

    def __init__(self, message: str) -> None:
        self.path = ""
        ComplianceError.__init__(self, message)


#: Chunks processed at once while the next is read (Arrow kernels release the GIL).
THREADS = max(1, min(2, os.cpu_count() or 1))


def chunk_results(
    unit: ReadUnit, context: Context, source_name: str, *, with_keyed_messages: bool = False
) -> Iterator[tuple[Chunk, ChunkResult]]:
    """Each chunk of ``unit`` with its processed result, in the unit's order.

    Chunks go through :func:`process_chunk` on a small thread pool while the next one
    is read; at most ``THREADS`` chunks are in flight, so memory stays bounded.
    """
    process = partial(process_chunk, with_keyed_messages=with_keyed_messages)
    if THREADS == 1:
        for chunk in unit.chunks():
            yield chunk, process(chunk.frame, source_name, context)
        return
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="chunk") as pool:
        pending: deque[tuple[Chunk, Future[ChunkResult]]] = deque()
        try:
            for chunk in unit.chunks():
                future = pool.submit(process, chunk.frame, source_name, context)
                pending.append((chunk, future))
                if len(pending) >= THREADS:
                    done, result = pending.popleft()
                    yield done, result.result()
            while pending:
                done, result = pending.popleft()
                yield done, result.result()
        finally:
            for _, future in pending:
                future.cancel()


@dataclass
class UnitPart:
    """What part of a unit contributes to a run: rows read (connector drops included),
    rejected rows and rows set aside (skipped) by reason, and the processed result."""

    rows: int
    rejected: Counter[str]
    result: ChunkResult
    skipped: Counter[str] = field(default_factory=Counter)


def unit_parts(unit: ReadUnit, context: Context, source_name: str) -> Iterator[UnitPart]:
    """A unit's chunks processed for a store (one key per message), streamed in order."""
    for chunk, result in chunk_results(unit, context, source_name, with_keyed_messages=True):
        rows = result.rows + sum(chunk.rejected.values()) + sum(chunk.skipped.values())
        yield UnitPart(
            rows, chunk.rejected + result.rejected, result, chunk.skipped + result.skipped
        )


def unit_part(unit: ReadUnit, context: Context, source_name: str) -> UnitPart:
    """A whole unit as one part (what a Dask worker returns for a scheduled run)."""
    parts = list(unit_parts(unit, context, source_name))
    combined = combine_results([p.result for p in parts])
    rejected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for part in parts:
        rejected.update(part.rejected)
        skipped.update(part.skipped)
    return UnitPart(sum(p.rows for p in parts), rejected, combined, skipped)


def read_unit(
    unit: ReadUnit,
    context: Context,
    source_name: str = "audit",
    into: Tally | None = None,
    progress: Progress = SILENT,
) -> Tally:
    """One read unit through every per-chunk stage: its partial tally (bounded, settled:
    each message counted once; mergeable with the other units'), or ``into`` a tally."""
    tally = Tally() if into is None else into
    for chunk, result in chunk_results(unit, context, source_name):
        tally.rejected.update(chunk.rejected)
        tally.skipped.update(chunk.skipped)
        # rows the connector dropped were read too
        dropped = sum(chunk.rejected.values()) + sum(chunk.skipped.values())
        tally.rows += dropped
        tally.add(result)
        progress.rows(result.rows + dropped)
    tally.settle()
    return tally


def audit(
    prepared: Prepared,
    units: list[ReadUnit],
    source_name: str = "audit",
    scheduler: str | None = None,
    engine: str = "local",
    as_of: str | None = None,
    progress: Progress = SILENT,
    spill: SpillFolder | None = None,
    group_sizes: Iterable[int] = (),
) -> AuditResult:
    """Run the engine over ``units`` in memory and evaluate every policy.

    ``as_of`` is the end of the data (an episode whose subject has been quiet for its
    suppression period by then is ended); default: the last day of the rows read. New
    alerts past a policy's daily limit wait for the next days, as in scheduled runs.

    The units are read in order into one tally, which counts a message read twice (the
    same file given twice, overlapping exports) once, where it first occurs. With
    ``engine="dask"`` they are read on a Dask cluster (``scheduler``, or a local one)
    into partial tallies, merged here in the units' order: the result is the same.

    With ``spill``, matched events past the folder's memory budget are written there,
    partitioned by org unit so that every unit a roll-up to the policies' minimum group
    sizes or to ``group_sizes`` (the report's) reports together lands in one partition,
    and evaluated one partition group at a time (:func:`evaluate_events`): the same
    alerts as in memory. The caller closes the folder once it has read ``matched``.

    Raises :class:`NothingReadError` when the units held no row, or every row was
    rejected (a wrong export, or a wrong format), rather than report on nothing.
    """
    formats: Counter[str] = Counter(unit.format for unit in units)
    # the keys of a final tally need no groups (4 bytes less)
    tally = Tally(mergeable=False, spill=_spill_for(prepared, spill, group_sizes))
    unit_rows = [0] * len(units)
    progress.start("audit", len(units), total_size(list(units)))
    with executor(engine, scheduler) as runner:
        if runner.remote:  # partial tallies, merged in the units' order
            indexed = _split(units, runner.workers)
            parts = [part for _, part in indexed]
            results = runner.map(read_unit, parts, prepared.context, source_name)
            for (i, _), (_, partial) in zip(indexed, results, strict=True):
                unit_rows[i] += partial.rows
                tally.merge(partial)
                progress.rows(partial.rows)
            for unit in units:
                progress.unit_done(unit_size(unit))
        else:  # straight into the one tally
            for i, unit in enumerate(units):
                before = tally.rows
                read_unit(unit, prepared.context, source_name, into=tally, progress=progress)
                unit_rows[i] = tally.rows - before
                progress.unit_done(unit_size(unit))
    progress.finish()
    check_read(tally, units)
    matched = tally.matched_events()
    alerts, events, groups = evaluate_events(prepared, matched, as_of or tally.last_day)
    log.info(
        "audit: %d rows from %d unit(s), %d rejected, %d repeated, %d matched events, %d alerts",
        tally.rows,
        len(units),
        sum(tally.rejected.values()),
        tally.skipped["duplicate_message"],
        events,
        len(alerts),
    )
    if matched.spill is not None:
        log.info(
            "audit: matched events spilled to disk: %d rows in %d file(s), %d bytes; "
            "evaluated in %d group(s) of partitions",
            matched.spill.rows,
            len(matched.spill.files),
            matched.spill.nbytes,
            groups,
        )
    return AuditResult(tally, alerts, matched, prepared, formats, unit_rows=unit_rows)


def evaluate_events(
    prepared: Prepared, matched: MatchedEvents, as_of: str | None
) -> tuple[list[Alert], int, int]:
    """(alerts, matched events, partition groups) of every policy over ``matched``.

    Each partition group is evaluated on its own with the same :func:`evaluate`; its
    groups (people, units) are whole in it, so its alerts are those an evaluation of
    everything finds for them. Alerts of several groups are put in the order one
    evaluation gives them (:func:`evaluation_order`); a policy's daily limit then
    applies over all of its alerts together.
    """
    policies = [lp.policy for lp in prepared.policies]
    headcounts = prepared.directory.headcounts or None
    alerts: list[Alert] = []
    events = groups = 0
    for frame in matched.partitions():
        groups += 1
        events += len(frame)
        alerts.extend(evaluate(policies, frame, headcounts, as_of=as_of, people=prepared.people()))
    if groups > 1:
        alerts.sort(key=evaluation_order(policies))
    for policy in policies:
        schedule_raises([a for a in alerts if a.policy == policy.id], policy.max_alerts_per_day)
    return alerts, events, groups


#: The grouping columns whose value an alert shows (its subject, unit or one site), so
#: that alerts evaluated apart can be put back in the order of one evaluation.
_SHOWN_KEYS = {"person", "unit", "reg_domain"}


def evaluation_order(policies: list[Policy]) -> Callable[[Alert], tuple[Any, ...]]:
    """The sort key that orders alerts as :func:`evaluate` does over all events at once:
    by policy, by rule, then by the rule's group (its grouping columns' values, as
    pandas sorts them); a group's episodes keep their order (the sort is stable)."""
    place: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
    for p, policy in enumerate(policies):
        for r, rule in enumerate(policy.rules):
            keys = [] if isinstance(rule, RingRule) else kind_of(rule).keys(rule)
            place[(policy.id, policy.rule_id(r))] = (p, r, keys)

    def key(alert: Alert) -> tuple[Any, ...]:
        p, r, keys = place[(alert.policy, alert.rule_id)]
        return (p, r, tuple(_group_value(alert, k) for k in keys))

    return key


def _group_value(alert: Alert, key: str) -> str:
    """The value of grouping column ``key`` in an alert's group."""
    if key == "person":
        return alert.person or ""
    if key == "unit":
        return alert.org_unit
    return alert.domains[0] if alert.domains else ""


def _unsplittable(policies: list[Policy]) -> list[str]:
    """Rules whose groups could span partitions, or whose alerts do not show their group
    (a rule kind grouping by other columns than a person, a unit and a site): for them
    matched events must stay whole in memory."""
    found = []
    for policy in policies:
        if policy.status == "disabled":
            continue
        for r, rule in enumerate(policy.rules):
            if isinstance(rule, RingRule):  # an audit keeps no internal mail: no ring
                continue
            kind = kind_of(rule)
            keys = set(kind.keys(rule))
            whole = bool(keys & {"person", "unit"})  # a person's or a unit's events
            shown = keys <= _SHOWN_KEYS and ("person" not in keys or kind.on_person)
            if not (whole and shown):
                found.append(f"{policy.id}/{policy.rule_id(r)}")
    return found


def _spill_for(
    prepared: Prepared, folder: SpillFolder | None, group_sizes: Iterable[int]
) -> Spill | None:
    """Where the audit's tally spills matched events, or None (no folder, or a rule that
    needs them whole)."""
    if folder is None:
        return None
    policies = [lp.policy for lp in prepared.policies]
    unsplittable = _unsplittable(policies)
    if unsplittable:
        log.warning(
            "matched events stay in memory (no spill to disk): rule(s) %s group events "
            "by other columns than a person, an org unit and a site",
            ", ".join(unsplittable),
        )
        return None
    sizes = [p.privacy.min_group_size for p in policies if p.status != "disabled"]
    partitions = unit_partitions(prepared.directory.headcounts or None, [*sizes, *group_sizes])
    return Spill(folder, partitions)


def _split(units: list[ReadUnit], workers: int) -> list[tuple[int, ReadUnit]]:
    """(unit index, part) of every unit, enough parts for every worker (Parquet files split
    by row group; a unit that cannot leave this process stays whole)."""
    remote = [unit for unit in units if unit.distributable]
    per_unit = -(-2 * workers // len(remote)) if remote else 1
    return [
        (i, part)
        for i, unit in enumerate(units)
        for part in (unit.split(per_unit) if unit.distributable else [unit])
    ]


def check_read(tally: Tally, units: list[ReadUnit]) -> None:
    """Refuse an audit that read no row, or rejected every row it read (one line, no
    row content: only counts and reasons)."""
    files = [u.path for u in units if isinstance(u, FileUnit)]
    noun = "file" if len(files) == len(units) else "input"
    inputs = f"{len(units)} {noun}{'' if len(units) == 1 else 's'}"
    if files:  # the operator's own paths, never row contents (nor an address in a name)
        shown = ", ".join(shown_path(f) for f in files[:3]) + (", …" if len(files) > 3 else "")
        inputs += f" ({shown})"
    if not tally.rows:
        raise NothingReadError(f"no rows read from {inputs}: nothing to audit")
    refused = all_rejected(tally.rows, tally.rejected, f" from {inputs}", "the export's format")
    if refused:
        raise NothingReadError(refused)


def all_rejected(rows: int, rejected: Mapping[str, int], read: str, check: str) -> str | None:
    """The one-line refusal of input whose every row was rejected (counts and reasons,
    never row content), or None; shared by audits and scheduled runs."""
    if not rows or sum(rejected.values()) < rows:
        return None
    reasons = ", ".join(
        f"{reason} {count}"
        for reason, count in sorted(rejected.items(), key=lambda rc: (-rc[1], rc[0]))
        if count
    )
    every = f"every one of the {rows} rows" if rows > 1 else "the one row"
    return f"{every} read{read} was rejected ({reasons}): check {check}"
