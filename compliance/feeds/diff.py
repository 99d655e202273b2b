"""What changed between two versions of a feed: domains added and removed per category,
and domains whose categories changed.

Both versions are read with the feed loader (any registered format, a file or a UT1
folder) and compared as compiled indexes, with Arrow set operations over their sorted
domain arrays: no Python per domain, so a feed of a million domains diffs in seconds.
Feeds are public data: their domains may be printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compliance.domains import CompiledIndex, DomainIndex
from compliance.feeds.load import load_feeds
from compliance.feeds.spec import FeedInfo, FeedSpec
from compliance.tables import aligned

#: The category an exception (an allow-list entry, an adblock ``@@`` rule) is shown under:
#: its domain (with its subdomains) is never matched, whatever a list says.
ALLOWED = "(allowed)"
#: The category of the entries of a plain file given without one.
UNCATEGORISED = "(none)"
#: The columns of :attr:`FeedDiff.recategorised`.
RECATEGORISED = ("domain", "old", "new")


@dataclass(frozen=True)
class CategoryDiff:
    """One category's entries in each version and the domains it gained and lost."""

    category: str
    old: int
    new: int
    added: pa.Array
    removed: pa.Array


@dataclass(frozen=True)
class FeedDiff:
    """What changed from one version of a feed to the next."""

    old: FeedInfo
    new: FeedInfo
    old_domains: int  # distinct entries (listed or allowed)
    new_domains: int
    added: int  # domains the new version has and the old one has not
    removed: int
    categories: list[CategoryDiff] = field(default_factory=list)
    #: domains in both versions whose categories changed: (domain, old, new), the
    #: categories ``;``-joined
    recategorised: pa.Table = field(
        default_factory=lambda: pa.table({n: pa.array([], pa.string()) for n in RECATEGORISED})
    )

    def category(self, name: str) -> CategoryDiff | None:
        """The change of one category, or None when neither version has it."""
        return next((c for c in self.categories if c.category == name), None)


def compiled_of(index: DomainIndex) -> CompiledIndex:
    """The compiled base of an index made by :func:`load_feeds` (empty when it has none)."""
    base = index.compiled  # the loader's compiled form; entries added one by one are not feeds'
    if base is None:
        return CompiledIndex(pa.array([], pa.string()), np.zeros(0, dtype=np.int32), [])
    return base


def _set_categories(compiled: CompiledIndex) -> list[str]:
    """Each label set's categories, sorted and ``;``-joined (one string per set)."""
    return [";".join(sorted({label.category for label in labels})) for labels in compiled.sets]


def _ids(compiled: CompiledIndex) -> np.ndarray:
    """Each domain's label-set id, an exception's as the id after the last set."""
    return np.where(compiled.set_ids < 0, len(compiled.sets), compiled.set_ids).astype(np.int64)


def _set_codes(compiled: CompiledIndex, codes: dict[str, int]) -> np.ndarray:
    """A code per label set (and one more for an exception), the same for the same
    categories in any index sharing ``codes``."""
    texts = [*_set_categories(compiled), ALLOWED]
    return np.array([codes.setdefault(t, len(codes)) for t in texts], dtype=np.int64)


def positions(sorted_values: pa.Array, names: pa.Array) -> np.ndarray:
    """The position of each of ``names`` in ``sorted_values`` (distinct, sorted as Arrow
    sorts), or -1: a binary search per name, no hash table of a million strings."""
    out = np.full(len(names), -1, dtype=np.int64)
    if not len(sorted_values) or not len(names):
        return out
    found = pc.search_sorted(sorted_values, names, side="left").to_numpy()
    at = np.minimum(found.astype(np.int64), len(sorted_values) - 1)
    equal = pc.equal(sorted_values.take(pa.array(at)), names).fill_null(False)
    hit = np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)
    out[hit] = at[hit]
    return out


def diff_indexes(
    old: CompiledIndex, new: CompiledIndex
) -> tuple[int, int, list[CategoryDiff], pa.Table]:
    """(domains added, domains removed, per-category changes, recategorised domains) from
    ``old`` to ``new``.

    Each domain's categories become one integer code (per distinct label set); the
    domains of one version are found in the other by binary search, and only those whose
    code differs are looked at per category.
    """
    codes: dict[str, int] = {}
    old_code = _set_codes(old, codes)[_ids(old)]
    new_code = _set_codes(new, codes)[_ids(new)]
    in_old = positions(old.domains, new.domains)  # per new domain
    in_new = positions(new.domains, old.domains)  # per old domain
    # the code each domain has in the other version (-1: absent there)
    was = np.where(in_old >= 0, old_code[np.maximum(in_old, 0)], -1)
    becomes = np.where(in_new >= 0, new_code[np.maximum(in_new, 0)], -1)
    new_changed = np.flatnonzero(was != new_code)
    old_changed = np.flatnonzero(becomes != old_code)
    texts = sorted(codes, key=codes.__getitem__)
    members = [set(t.split(";")) for t in texts]
    old_counts = np.bincount(old_code, minlength=len(codes))
    new_counts = np.bincount(new_code, minlength=len(codes))
    categories = []
    for name in sorted(set().union(*members) if members else set()):
        has = np.array([name in m for m in members] + [False])  # index -1: absent
        added = new_changed[has[new_code[new_changed]] & ~has[was[new_changed]]]
        removed = old_changed[has[old_code[old_changed]] & ~has[becomes[old_changed]]]
        before, after = int(old_counts[has[:-1]].sum()), int(new_counts[has[:-1]].sum())
        if before or after:
            categories.append(
                CategoryDiff(
                    name,
                    before,
                    after,
                    new.domains.take(pa.array(added)),
                    old.domains.take(pa.array(removed)),
                )
            )
    moved = new_changed[was[new_changed] >= 0]
    text = pa.array(texts, pa.string())
    recategorised = pa.table(
        {
            "domain": new.domains.take(pa.array(moved)),
            "old": text.take(pa.array(was[moved])),
            "new": text.take(pa.array(new_code[moved])),
        }
    )
    return (
        int((in_old < 0).sum()),
        int((in_new < 0).sum()),
        categories,
        recategorised,
    )


def load_version(spec: FeedSpec) -> tuple[CompiledIndex, FeedInfo]:
    """One version of a feed, compiled (a plain file without a category gets
    :data:`UNCATEGORISED`, so that two plain lists can be compared)."""
    if spec.category is None and spec.path.is_file():
        spec = replace(spec, category=UNCATEGORISED)
    index, infos = load_feeds([spec], None)
    return compiled_of(index), infos[0]


def diff_feeds(old: FeedSpec, new: FeedSpec) -> FeedDiff:
    """Read both versions of a feed and compare them (see :class:`FeedDiff`)."""
    old_index, old_info = load_version(old)
    new_index, new_info = load_version(new)
    added, removed, categories, recategorised = diff_indexes(old_index, new_index)
    return FeedDiff(
        old=old_info,
        new=new_info,
        old_domains=len(old_index),
        new_domains=len(new_index),
        added=added,
        removed=removed,
        categories=categories,
        recategorised=recategorised,
    )


def _chosen(diff: FeedDiff, category: str | None) -> list[CategoryDiff]:
    return [c for c in diff.categories if category is None or c.category == category]


def _recategorised(diff: FeedDiff, category: str | None) -> pa.Table:
    """The recategorised domains (those that left or joined ``category``, when given)."""
    table = diff.recategorised
    if category is None or not len(table):
        return table
    pattern = f"(^|;){re.escape(category)}(;|$)"
    hit = pc.or_(
        pc.match_substring_regex(table["old"], pattern),
        pc.match_substring_regex(table["new"], pattern),
    )
    return table.filter(hit)


def diff_json(diff: FeedDiff, category: str | None = None) -> dict[str, Any]:
    """The difference as plain data (``--format json``): counts, then the domains."""
    moved = _recategorised(diff, category)
    return {
        "old": {"feed": diff.old.name, "sha256": diff.old.sha256, "domains": diff.old_domains},
        "new": {"feed": diff.new.name, "sha256": diff.new.sha256, "domains": diff.new_domains},
        "added": diff.added,
        "removed": diff.removed,
        "recategorised": diff.recategorised.num_rows,
        "category": category,
        "categories": [
            {
                "category": c.category,
                "old": c.old,
                "new": c.new,
                "added": len(c.added),
                "removed": len(c.removed),
                "added_domains": c.added.to_pylist(),
                "removed_domains": c.removed.to_pylist(),
            }
            for c in _chosen(diff, category)
        ],
        "recategorised_domains": [
            {"domain": d, "old": o.split(";"), "new": n.split(";")}
            for d, o, n in zip(
                moved["domain"].to_pylist(),
                moved["old"].to_pylist(),
                moved["new"].to_pylist(),
                strict=True,
            )
        ],
    }


def diff_lines(diff: FeedDiff, category: str | None = None) -> Iterator[str]:
    """The difference for a person (``--format table``): counts first, then the domains
    added and removed per category, then those whose categories changed."""
    chosen = _chosen(diff, category)
    yield f"old: {diff.old.name} ({diff.old.format}, sha256 {diff.old.sha256[:12]}): " + (
        f"{diff.old_domains:,} domains"
    )
    yield f"new: {diff.new.name} ({diff.new.format}, sha256 {diff.new.sha256[:12]}): " + (
        f"{diff.new_domains:,} domains"
    )
    yield (
        f"{diff.added:,} domain{'' if diff.added == 1 else 's'} added, {diff.removed:,} "
        f"removed, categories changed for {diff.recategorised.num_rows:,}"
    )
    if category is not None and not chosen:
        yield f"neither version has the category {category}"
        return
    yield ""
    header = ["category", "old", "new", "added", "removed"]
    rows = [
        [c.category, f"{c.old:,}", f"{c.new:,}", f"{len(c.added):,}", f"{len(c.removed):,}"]
        for c in chosen
    ]
    yield from aligned(header, rows)
    for c in chosen:
        for title, domains in (("added to", c.added), ("removed from", c.removed)):
            if len(domains):
                yield ""
                yield f"{title} {c.category} ({len(domains):,}):"
                yield "\n".join("  " + d for d in domains.to_pylist())
    moved = _recategorised(diff, category)
    if moved.num_rows:
        yield ""
        yield f"categories changed ({moved.num_rows:,}):"
        for d, o, n in zip(
            moved["domain"].to_pylist(),
            moved["old"].to_pylist(),
            moved["new"].to_pylist(),
            strict=True,
        ):
            yield f"  {d}: {o.replace(';', ', ')} -> {n.replace(';', ', ')}"
