"""The audit's running sums: totals per day, org unit and direction, matched events, and
the keys of the messages counted, so that a message read twice counts once.

A :class:`Tally` folds in :class:`~compliance.pipeline.ChunkResult` after
:class:`~compliance.pipeline.ChunkResult`, bounded in memory; partial tallies (one per
read unit or Dask task) merge in the units' order into the same figures as one tally
reading everything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from compliance.events import MINIMISED, empty_minimised
from compliance.pipeline import TOTAL_COLUMNS, ChunkResult


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
            wanted = keys[part]
            for run in runs:
                at = np.searchsorted(run, wanted)
                np.minimum(at, len(run) - 1, out=at)
                found[part] |= run[at] == wanted
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
    """

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    matched_parts: list[pd.DataFrame | pa.Table] = field(default_factory=list)
    first_day: str | None = None  # first and last UTC day of the rows with a valid
    last_day: str | None = None  # timestamp in the period
    mergeable: bool = True
    # messages counted per (day, org unit, direction): the group's number, and its count
    _groups: dict[tuple[str, str, str], int] = field(init=False, repr=False)
    _counts: np.ndarray = field(init=False, repr=False)
    # keys gathered (with their groups) since repeats were last looked for, and the held
    _pending: list[tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False)
    _pending_keys: int = field(init=False, repr=False)
    _keys: MessageKeys = field(init=False, repr=False)

    def __post_init__(self) -> None:
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

    def _keep(self, matched: pd.DataFrame) -> None:
        """Hold matched events compactly: every few chunks, the held ones become one Arrow
        table with repetitive columns dictionary-encoded (a fraction of the memory of many
        small frames, and no fragments left behind)."""
        self.matched_parts.append(matched)
        if len(self.matched_parts) >= _COMPACT_EVERY:
            tables = [
                p if isinstance(p, pa.Table) else pa.Table.from_pandas(p, preserve_index=False)
                for p in self.matched_parts
            ]
            table = pa.concat_tables(
                [t.cast(tables[0].schema) for t in tables], promote_options="none"
            ).combine_chunks()
            for name in _DICTIONARY_COLUMNS:
                column = table[name]
                if not pa.types.is_dictionary(column.type):
                    column = pc.dictionary_encode(column)
                table = table.set_column(table.schema.get_field_index(name), name, column)
            self.matched_parts = [table.unify_dictionaries().combine_chunks()]

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
            self._keep(part if isinstance(part, pd.DataFrame) else _frame(part))

    def matched(self) -> pd.DataFrame:
        """Every matched event, each message-recipient once."""
        if not self.matched_parts:
            return empty_minimised()
        frames = [p if isinstance(p, pd.DataFrame) else _frame(p) for p in self.matched_parts]
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates("event_key", ignore_index=True)


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
