"""The audit's running sums: totals per day, org unit and direction, matched events, and
the keys of the messages counted, so that a message read twice counts once.

A :class:`Tally` folds in :class:`~compliance.pipeline.ChunkResult` after
:class:`~compliance.pipeline.ChunkResult`, bounded in memory; partial tallies (one per
read unit or Dask task) merge in the units' order into the same figures as one tally
reading everything.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from compliance.errors import StorageError
from compliance.events import MINIMISED, UNKNOWN_UNIT, empty_minimised
from compliance.hashing import sorted_members
from compliance.pipeline import TOTAL_COLUMNS, ChunkResult
from compliance.privacy import rollup_map

log = logging.getLogger(__name__)


class MessageKeys:
    """Distinct message keys, each with the totals group it was counted in (optional).

    The keys are split by value into ``2**_BUCKET_BITS`` buckets, and each bucket holds
    its keys as a few sorted NumPy int64 arrays ("runs"), each at least twice as long as
    the next: a lookup is one binary search per run, so a logarithmic number of them,
    and every key is copied a logarithmic number of times as runs merge.

    Memory: 8 bytes per distinct message (12 with the groups a partial tally keeps for
    its merge). Merging two runs briefly needs as much again for them, so at most a
    bucket's share (1/16) more. Never a Python object per key.
    """

    def __init__(self, with_groups: bool = True) -> None:
        self.with_groups = with_groups
        self._keys: list[list[np.ndarray]] = [[] for _ in range(1 << _BUCKET_BITS)]
        self._groups: list[list[np.ndarray]] = [[] for _ in range(1 << _BUCKET_BITS)]

    def __len__(self) -> int:
        return sum(len(run) for runs in self._keys for run in runs)

    def runs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(sorted keys, their groups) of each run."""
        return [
            (run, groups)
            for runs, runs_groups in zip(self._keys, self._groups, strict=True)
            for run, groups in zip(runs, runs_groups, strict=True)
        ]

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` (sorted) are held."""
        found = np.zeros(len(keys), dtype=bool)
        for runs, part in zip(self._keys, _buckets(keys), strict=True):
            found[part] = sorted_members(keys[part], *runs)
        return found

    def add(self, keys: np.ndarray, groups: np.ndarray) -> None:
        """Hold ``keys`` (sorted, distinct, none of them held yet), counted in ``groups``."""
        for bucket, part in enumerate(_buckets(keys)):
            if part.stop > part.start:
                self._add(bucket, keys[part].copy(), groups[part].copy())

    def _add(self, bucket: int, keys: np.ndarray, groups: np.ndarray) -> None:
        runs, runs_groups = self._keys[bucket], self._groups[bucket]
        runs.append(keys)
        runs_groups.append(groups if self.with_groups else _NO_GROUPS)
        while len(runs) > 1 and len(runs[-2]) < 2 * len(runs[-1]):
            later, later_groups = runs.pop(), runs_groups.pop()
            keys, groups = _merge_runs(runs.pop(), runs_groups.pop(), later, later_groups)
            runs.append(keys)
            runs_groups.append(groups)


#: Keys are split into 2**_BUCKET_BITS buckets by their top bits (by value: int64 order).
_BUCKET_BITS = 4
_BOUNDS = np.array(
    [(i << (64 - _BUCKET_BITS)) - (1 << 63) for i in range(1, 1 << _BUCKET_BITS)],
    dtype=np.int64,
)
_NO_GROUPS = np.empty(0, dtype=np.int32)


def _buckets(keys: np.ndarray) -> list[slice]:
    """The part of sorted ``keys`` in each bucket."""
    cuts = [0, *np.searchsorted(keys, _BOUNDS).tolist(), len(keys)]
    return [slice(a, b) for a, b in pairwise(cuts)]


def _merge_runs(
    keys: np.ndarray, groups: np.ndarray, other: np.ndarray, other_groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs of distinct keys as one (their groups along), in linear time."""
    if not len(groups):
        merged = np.concatenate([keys, other])
        merged.sort(kind="stable")  # in place: Timsort finds the two runs and merges them
        return merged, groups
    at = np.searchsorted(keys, other) + np.arange(len(other))  # places of ``other``
    from_other = np.zeros(len(keys) + len(other), dtype=bool)
    from_other[at] = True
    merged = np.empty(len(from_other), dtype=keys.dtype)
    merged[at], merged[~from_other] = other, keys
    merged_groups = np.empty(len(from_other), dtype=groups.dtype)
    merged_groups[at], merged_groups[~from_other] = other_groups, groups
    return merged, merged_groups


#: Message keys a tally gathers (12 bytes each) before it looks for repeats among them.
_SETTLE_EVERY = 1 << 20


@dataclass(eq=False)
class Tally:
    """Running sums over many chunks, each message counted once.

    Bounded: totals per (day, org unit, direction), matched events only, and the keys
    of the messages counted (:class:`MessageKeys`: 8 bytes per distinct message, 12 in
    a partial tally that will be merged, ``mergeable``) so that a message read twice
    (overlapping exports, the same file given twice, repeated rows) counts once, as
    the store's per-message keys make a scheduled run count it. The keys are unkeyed
    64-bit hashes (:func:`message_keys`) that exist only in memory during the audit;
    two of n distinct messages share one with probability about n**2 / 2**65 (2.7e-8 for
    a million messages, 2.7e-4 for a hundred million), which would count one message
    too few. Repeats are looked for every ``_SETTLE_EVERY`` keys and by
    :meth:`settle` (meanwhile 12 bytes per key gathered, 8 more while sorting them);
    the first occurrence counts, and the others are skipped as ``duplicate_message``.

    Matched events are held compactly (:meth:`_keep`). With a ``spill``, once they take
    more than its folder's ``above`` bytes they are written to disk, partitioned, and only
    what is not yet written stays in memory (:class:`Spill`); :meth:`matched_events` gives
    them back one partition group at a time.
    """

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    matched_parts: list[pd.DataFrame | pa.Table] = field(default_factory=list)
    first_day: str | None = None  # first and last UTC day of the rows with a valid
    last_day: str | None = None  # timestamp in the period
    mergeable: bool = True
    spill: Spill | None = None  # where matched events go past a memory budget (None: stay)
    # messages counted per (day, org unit, direction): the group's number, and its count
    _groups: dict[tuple[str, str, str], int] = field(init=False, repr=False)
    _counts: np.ndarray = field(init=False, repr=False)
    # keys gathered (with their groups) since repeats were last looked for, and the held
    _pending: list[tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False)
    _pending_keys: int = field(init=False, repr=False)
    _keys: MessageKeys = field(init=False, repr=False)
    _held: int = field(init=False, repr=False)  # bytes of matched_parts (with a spill)

    def __post_init__(self) -> None:
        self._held = 0
        self._groups = {}
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending, self._pending_keys = [], 0
        self._keys = MessageKeys(with_groups=self.mergeable)

    @property
    def totals(self) -> pd.DataFrame:
        """Messages per (day, org unit, direction), each message once."""
        self.settle()
        frame = pd.DataFrame(list(self._groups), columns=list(TOTAL_COLUMNS), dtype="string")
        frame["messages"] = self._counts[: len(frame)].astype(np.int64)
        frame = frame[frame["messages"] > 0]
        return frame.sort_values(list(TOTAL_COLUMNS), ignore_index=True)

    def add(self, result: ChunkResult) -> None:
        """Fold one chunk's result in."""
        self.rows += result.rows
        self.rejected.update(result.rejected)
        self.skipped.update(result.skipped)
        self._days(result.first_day, result.last_day)
        if len(result.totals):
            grouped = result.totals
            codes = self._codes(grouped)
            self._counts[codes] += grouped["messages"].to_numpy(dtype=np.int64)
            keys, at = result.message_keys, result.message_groups
            if keys is not None and at is not None:
                self._pending.append((keys, codes[at].astype(np.int32)))
                self._pending_keys += len(keys)
                if self._pending_keys >= _SETTLE_EVERY:
                    self.settle()
        if len(result.matched):
            self._keep(result.matched)

    def _days(self, first: str | None, last: str | None) -> None:
        if first is not None and (self.first_day is None or first < self.first_day):
            self.first_day = first
        if last is not None and (self.last_day is None or last > self.last_day):
            self.last_day = last

    def _codes(self, grouped: pd.DataFrame) -> np.ndarray:
        """This tally's number of each (day, org unit, direction) row of ``grouped``."""
        labels = zip(
            *(grouped[c].to_numpy(dtype=object).tolist() for c in TOTAL_COLUMNS), strict=True
        )
        groups = self._groups
        codes = np.fromiter(
            (groups.setdefault(label, len(groups)) for label in labels),
            dtype=np.int64,
            count=len(grouped),
        )
        if len(groups) > len(self._counts):
            grown = np.zeros(max(len(groups), 2 * len(self._counts)), dtype=np.int64)
            grown[: len(self._counts)] = self._counts
            self._counts = grown
        return codes

    def settle(self) -> None:
        """Count each message once: find the gathered keys seen before (earlier among the
        gathered ones, or held), take them off their groups and hold the new ones."""
        if not self._pending:
            return
        keys = np.concatenate([k for k, _ in self._pending])
        groups = np.concatenate([g for _, g in self._pending])
        self._pending, self._pending_keys = [], 0
        # in key order; the rows' order too where groups go along (a stable sort: equal
        # keys stay in the order read), else only once a repeat needs it (a plain sort
        # is twice as fast)
        order = np.argsort(keys, kind="stable") if self.mergeable else None
        ordered = np.sort(keys) if order is None else keys[order]
        again = ordered[1:] == ordered[:-1]
        held = self._keys.contains(ordered)
        if not again.any() and not held.any():  # nothing read twice: the common case
            self._keys.add(ordered, groups[order] if order is not None else _NO_GROUPS)
            return
        starts = np.flatnonzero(np.concatenate(([True], ~again)))
        distinct, new = ordered[starts], ~held[starts]
        if order is None:
            order = np.argsort(keys, kind="stable")
        first = order[starts[new]]  # the row where each new key first occurs
        self._keys.add(distinct[new], groups[first])
        repeat = np.ones(len(keys), dtype=bool)
        repeat[first] = False
        self._uncount(self._counts, groups[repeat])

    def _uncount(self, counts: np.ndarray, groups: np.ndarray) -> None:
        """Take repeated messages off ``counts``, by the group each was counted in."""
        if len(groups):
            counts -= np.bincount(groups, minlength=len(counts))
            self.skipped["duplicate_message"] += len(groups)

    def _keep(self, matched: pd.DataFrame | pa.Table) -> None:
        """Hold matched events compactly: every few chunks, the held ones become one Arrow
        table with repetitive columns dictionary-encoded (a fraction of the memory of many
        small frames, and no fragments left behind). With a spill, each part becomes Arrow
        at once (its bytes counted), and once the held parts pass the budget they are
        compacted and written to disk."""
        if self.spill is None:
            self.matched_parts.append(matched)
            if len(self.matched_parts) >= _COMPACT_EVERY:
                self._compact()
            return
        part = _table(matched) if isinstance(matched, pd.DataFrame) else matched
        self.matched_parts.append(part)
        self._held += part.nbytes
        if len(self.matched_parts) >= _COMPACT_EVERY:
            self._compact()
        if self._held > self.spill.folder.above:
            self._spill_held()

    def _compact(self) -> None:
        """The held parts as one table, repetitive columns dictionary-encoded."""
        tables = [p if isinstance(p, pa.Table) else _table(p) for p in self.matched_parts]
        table = pa.concat_tables(
            [t.cast(tables[0].schema) for t in tables], promote_options="none"
        ).combine_chunks()
        for name in _DICTIONARY_COLUMNS:
            column = table[name]
            if not pa.types.is_dictionary(column.type):
                column = pc.dictionary_encode(column)
            table = table.set_column(table.schema.get_field_index(name), name, column)
        compacted = table.unify_dictionaries().combine_chunks()
        self.matched_parts = [compacted]
        self._held = compacted.nbytes

    def _spill_held(self) -> None:
        """Write the held matched events to disk, and hold none."""
        if self.spill is None or not self.matched_parts:
            return
        self._compact()
        table = self.matched_parts[0]
        self.matched_parts, self._held = [], 0
        self.spill.write(table)

    def merge(self, other: Tally) -> None:
        """Fold in a later partial tally (of a later unit, or a part of one read elsewhere).

        Messages ``other`` counted that this tally holds already are taken off the
        group ``other`` counted them in, so merging partials in the units' order counts
        every message once, where it first occurred, as one tally reading everything.
        """
        if not other.mergeable and (len(other._keys) or other._pending):
            raise ValueError("a tally made with mergeable=False cannot be merged")
        self.settle()
        other.settle()
        self.rows += other.rows
        self.rejected.update(other.rejected)
        self.skipped.update(other.skipped)
        self._days(other.first_day, other.last_day)
        if other._groups:
            labels = pd.DataFrame(list(other._groups), columns=list(TOTAL_COLUMNS))
            codes = self._codes(labels)
            counts = other._counts[: len(labels)].copy()
            for keys, groups in other._keys.runs():
                held = self._keys.contains(keys)
                if held.any():
                    self._uncount(counts, groups[held])
                    keys, groups = keys[~held], groups[~held]
                self._keys.add(keys, codes[groups].astype(np.int32))
            self._counts[codes] += counts
        for part in other.matched_parts:
            self._keep(part)

    def matched(self) -> pd.DataFrame:
        """Every matched event, each message-recipient once, in one frame (in the order
        read; spilled ones partition by partition: not bounded in memory, see
        :meth:`matched_events`)."""
        if self.spill is not None and self.spill.files:
            frames = list(self.matched_events().partitions())
            return pd.concat(frames, ignore_index=True) if frames else empty_minimised()
        if not self.matched_parts:
            return empty_minimised()
        frames = [p if isinstance(p, pd.DataFrame) else _frame(p) for p in self.matched_parts]
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates("event_key", ignore_index=True)

    def matched_events(self) -> MatchedEvents:
        """The matched events, each message-recipient once: all in memory, or, once any
        were spilled, the rest written too and the whole read back one partition group
        at a time (:meth:`Spill.partitions`)."""
        if self.spill is not None and self.spill.files:
            self._spill_held()
            return MatchedEvents(spill=self.spill)
        return MatchedEvents(frame=self.matched())


_COMPACT_EVERY = 16
#: Minimised columns with few distinct values (days, units, categories...).
_DICTIONARY_COLUMNS = (
    "day",
    "source",
    "org_unit",
    "direction",
    "categories",
    "feeds",
    "status",
    "epoch",
)


def _table(frame: pd.DataFrame) -> pa.Table:
    """A minimised frame as an Arrow table."""
    return pa.Table.from_pandas(frame, preserve_index=False)


def _frame(table: pa.Table) -> pd.DataFrame:
    """A compacted table of matched events back as a minimised frame."""
    columns = {}
    for name in table.column_names:
        column = table[name]
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column
    frame: pd.DataFrame = pa.table(columns).to_pandas().astype(MINIMISED)
    return frame


# --- spilling matched events to disk ----------------------------------------------------

#: Bytes of matched events (their compacted Arrow table) an audit holds in memory before
#: it writes them to disk (`compliance audit --spill-above`).
SPILL_ABOVE = 256 << 20

#: How spill files are written: Arrow IPC files, LZ4-compressed where Arrow has the codec.
_IPC = pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)


def _spill_schema() -> pa.Schema:
    """The one schema of every spill file (dictionary columns stay dictionary-encoded)."""
    arrow = {"int64": pa.int64(), "Int64": pa.int64(), "string": pa.large_string()}
    fields = []
    for name, dtype in MINIMISED.items():
        if name in _DICTIONARY_COLUMNS:
            kind = pa.dictionary(pa.int32(), pa.large_string())
        elif dtype.startswith("datetime64"):
            kind = pa.timestamp("ns", tz="UTC")
        else:
            kind = arrow[dtype]
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


_SPILL_SCHEMA = _spill_schema()


class SpillFolder:
    """The private folder an audit's matched events spill to: made on first use, removed
    with everything in it when the audit ends, also on an error (use it as a context
    manager). ``above``: the bytes of matched events held in memory before they spill.

    What lands there is personal data: MINIMISED rows (pseudonyms, org units, sites,
    times, delivery statuses; never an address), so the folder is made with mode 0700
    (:func:`tempfile.mkdtemp`) under ``parent`` (default: the system's temporary folder),
    its files are 0600 and named by number only, and nothing outlives the audit but what
    a killed process cannot remove (a ``compliance-spill-*`` folder, for the operator).
    """

    def __init__(self, parent: Path | None = None, above: int = SPILL_ABOVE) -> None:
        self.parent = parent
        self.above = above
        self._path: Path | None = None
        self._closed = False

    def path(self) -> Path:
        """The folder, made now if it does not exist yet."""
        if self._closed:
            raise RuntimeError("the audit's spill folder was removed")
        if self._path is None:
            parent = self.parent or Path(tempfile.gettempdir())
            while self._path is None:
                # named before it is made, so that an interrupt (SIGTERM) arriving just as
                # the folder appears still finds it to remove; private, as mkdtemp's
                path = parent / f"compliance-spill-{secrets.token_hex(6)}"
                self._path = path
                try:
                    path.mkdir(mode=0o700)
                except FileExistsError:
                    self._path = None
                except OSError as exc:
                    self._path = None
                    raise _storage_error(exc, parent) from exc
        return self._path

    def close(self) -> None:
        """Remove the folder and everything in it (again, if an interrupt stops the first
        removal half-way)."""
        self._closed = True
        if self._path is not None:
            try:
                shutil.rmtree(self._path, ignore_errors=True)
            finally:
                shutil.rmtree(self._path, ignore_errors=True)
            if self._path.exists():
                log.warning("could not remove the audit's spill folder %s", self._path)
            self._path = None

    def __enter__(self) -> SpillFolder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _storage_error(exc: OSError, folder: Path) -> OSError | StorageError:
    """The error for a failed write in the spill folder: a :class:`StorageError` naming
    the folder (never a row), or ``exc`` itself when the environment is not at fault."""
    return (
        StorageError.from_os(
            exc,
            "the audit's spilled matched events in",
            folder,
            "choose another --spill-dir (or a larger --spill-above)",
        )
        or exc
    )


def unit_partitions(
    headcounts: Mapping[str, int] | None, group_sizes: Iterable[int]
) -> dict[str, int]:
    """A partition number for each org unit of ``headcounts``, so that the units a
    roll-up to any of ``group_sizes`` reports together (:func:`rollup_map`: a small unit
    merges into its parent, a small top-level unit into the whole organisation) share
    one. The roll-ups of two sizes need not nest (a unit too small at 5 merges upwards,
    yet at 10 takes in a child and stays), so units are joined across all of them.

    A unit not listed (``unknown``, or one the directory does not hold) is no roll-up's
    business and gets a partition of its own (:meth:`Spill.number`).
    """
    if not headcounts:
        return {}
    parent: dict[str, str] = {}

    def root(unit: str) -> str:
        parent.setdefault(unit, unit)
        while parent[unit] != unit:
            parent[unit] = parent[parent[unit]]
            unit = parent[unit]
        return unit

    for size in sorted(set(group_sizes)) or [1]:
        for unit, target in rollup_map(headcounts, size).items():
            a, b = root(unit), root(target)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = sorted({root(unit) for unit in parent})
    number = {r: i for i, r in enumerate(roots)}
    return {unit: number[root(unit)] for unit in parent}


@dataclass
class _SpillFile:
    """One spill file: a record batch run per partition it holds, in partition order."""

    path: Path
    parts: np.ndarray  # partition numbers held, ascending
    first: np.ndarray  # the first record batch of each
    batches: np.ndarray  # and how many
    nbytes: np.ndarray  # bytes of each in memory (compacted)


class Spill:
    """An audit's matched events on disk, partitioned so that one partition holds every
    event a policy's rule or a report figure reads together.

    Each event goes to the partition of its org unit (``partition_of``, from
    :func:`unit_partitions`): a person's events all carry their one unit, so a person
    rule, reply recognition and the exchange mark see all of a person's events in one
    partition; a cluster rule's unit and the report's rolled-up unit are joined into one
    too. A message read twice carries the same event key and unit, so its repeats land in
    the same partition, where :meth:`partitions` keeps the first, in the order read.

    Every :meth:`write` makes one Arrow IPC file (``spill-NNNNNN.arrow``) with a run of
    record batches per partition. :meth:`partitions` reads partitions back in groups of at
    most the folder's ``above`` bytes (one partition when it is larger): memory holds one
    group at a time. The files hold personal data (see :class:`SpillFolder`).
    """

    def __init__(self, folder: SpillFolder, partition_of: Mapping[str, int]) -> None:
        self.folder = folder
        self._partition_of = dict(partition_of)
        self._next = max(self._partition_of.values(), default=-1) + 1
        self.files: list[_SpillFile] = []
        self.rows = 0  # events written (repeats included)
        self.nbytes = 0  # bytes written to disk

    def number(self, unit: str) -> int:
        """The partition of ``unit`` (a unit not known before gets one of its own)."""
        found = self._partition_of.get(unit)
        if found is None:
            found = self._partition_of[unit] = self._next
            self._next += 1
        return found

    def _numbers(self, units: pa.ChunkedArray) -> np.ndarray:
        """The partition of each row, looked up once per distinct org unit."""
        column = pc.fill_null(units.combine_chunks(), UNKNOWN_UNIT)
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        values = column.dictionary.to_pylist()
        lookup = np.array([self.number(str(u)) for u in values], dtype=np.int64)
        return np.asarray(lookup[column.indices.to_numpy(zero_copy_only=False)])

    def write(self, table: pa.Table) -> None:
        """Write ``table`` (matched events, compacted) to a new file, partition by
        partition, each in the order read."""
        if not len(table):
            return
        numbers = self._numbers(table["org_unit"])
        order = np.argsort(numbers, kind="stable")
        numbers = numbers[order]
        table = table.replace_schema_metadata(None).select(list(MINIMISED))
        table = table.take(pa.array(order)).cast(_SPILL_SCHEMA).combine_chunks()
        starts = np.flatnonzero(np.concatenate(([True], numbers[1:] != numbers[:-1])))
        stops = np.append(starts[1:], len(numbers))
        folder = self.folder.path()
        path = folder / f"spill-{len(self.files) + 1:06d}.arrow"
        first, batches, nbytes = [], [], []
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with (
                pa.OSFile(str(path), "wb") as sink,
                pa.ipc.new_file(sink, _SPILL_SCHEMA, options=_IPC) as writer,
            ):
                written = 0
                for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                    piece = table.slice(a, b - a)
                    first.append(written)
                    for batch in piece.to_batches():
                        writer.write_batch(batch)
                        written += 1
                    batches.append(written - first[-1])
                    nbytes.append(piece.nbytes)
        except OSError as exc:
            raise _storage_error(exc, folder) from exc
        size = path.stat().st_size
        self.files.append(
            _SpillFile(
                path,
                numbers[starts],
                np.array(first, dtype=np.int64),
                np.array(batches, dtype=np.int64),
                np.array(nbytes, dtype=np.int64),
            )
        )
        self.rows += len(table)
        self.nbytes += size
        log.debug(
            "spilled %d matched events to disk (file %d, %d partitions, %d bytes)",
            len(table),
            len(self.files),
            len(starts),
            size,
        )

    def groups(self) -> list[np.ndarray]:
        """Partition numbers to read together: in order, each group at most ``above``
        bytes in memory (compacted), or one partition where it is larger alone."""
        if not self.files:
            return []
        parts = np.concatenate([f.parts for f in self.files])
        nbytes = np.concatenate([f.nbytes for f in self.files])
        numbers, at = np.unique(parts, return_inverse=True)
        sizes = np.bincount(at, weights=nbytes).astype(np.int64)
        groups: list[np.ndarray] = []
        start, held = 0, 0
        for i, size in enumerate(sizes.tolist()):
            if i > start and held + size > self.folder.above:
                groups.append(numbers[start:i])
                start, held = i, 0
            held += size
        groups.append(numbers[start:])
        return groups

    def partitions(self) -> Iterator[pd.DataFrame]:
        """The spilled events one group of partitions at a time (:meth:`groups`), each a
        minimised frame with each message-recipient once, the first read kept.

        Files are opened one at a time (a small budget makes many of them), in the order
        written, so that the first copy of a message read twice is the one kept."""
        for group in self.groups():
            batches: list[pa.RecordBatch] = []
            for spilled in self.files:
                found = np.flatnonzero(np.isin(spilled.parts, group))
                if not len(found):
                    continue
                try:
                    with pa.OSFile(str(spilled.path), "rb") as source:
                        reader = pa.ipc.open_file(source)
                        for i in found.tolist():
                            first, count = int(spilled.first[i]), int(spilled.batches[i])
                            batches.extend(reader.get_batch(j) for j in range(first, first + count))
                except OSError as exc:
                    raise _storage_error(exc, spilled.path.parent) from exc
            table = pa.Table.from_batches(batches, schema=_SPILL_SCHEMA)
            del batches
            yield _frame(table).drop_duplicates("event_key", ignore_index=True)


class MatchedEvents:
    """An audit's matched events (minimised, each message-recipient once), as partitions
    that each hold every event of the org units they cover: one frame in memory, or the
    groups of a :class:`Spill` read back from disk one at a time."""

    def __init__(self, frame: pd.DataFrame | None = None, spill: Spill | None = None) -> None:
        self._frame = frame
        self.spill = spill

    @property
    def spilled(self) -> bool:
        """Whether the events were written to disk (and are read back by group)."""
        return self.spill is not None

    def partitions(self) -> Iterator[pd.DataFrame]:
        """The events, partition group by partition group (one frame when in memory)."""
        if self.spill is not None:
            yield from self.spill.partitions()
        else:
            yield self._frame if self._frame is not None else empty_minimised()
