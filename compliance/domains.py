"""Exact domain semantics: normalisation, registrable domains and the suffix index.

Rules, in one place because a mistake here accuses somebody:

* A domain is compared in its IDNA (punycode) form, lower case, without surrounding
  white space or angle brackets and without trailing dots; Unicode input is mapped
  with UTS #46 (IDNA 2008), not Python's IDNA 2003 codec.
* A feed entry ``x.test`` matches ``x.test`` and every subdomain of it (label-wise),
  never ``notx.test`` nor ``x.test.other.test``.
* The registrable domain comes from the Public Suffix List bundled with the
  ``publicsuffixlist`` package (works offline); names under a suffix the list does
  not know (``.test``, ``.example``) follow the list's default rule ``*``.
* The most specific entry decides: an exception (``@@||sub.x.test^``) below a
  listed domain un-lists that subdomain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import idna
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from publicsuffixlist import PublicSuffixList

from compliance.hashing import string_hashes

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_ASCII_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# The same rule without look-arounds, for Arrow's RE2 kernels.
_RE2_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_RE2_DOMAIN = rf"^{_RE2_LABEL}(?:\.{_RE2_LABEL})*$"
_MAX_DOMAIN = 253


#: Distinct values remembered across chunks by the per-value functions (bounded memory).
CACHE_SIZE = 1 << 18


def normalise_domain(value: object) -> str | None:
    """Return the canonical form of a domain, or ``None`` when it is not a valid domain.

    >>> normalise_domain("  <Www.Escort-Ads.TEST.> ")
    'www.escort-ads.test'
    >>> normalise_domain("bücher.example")
    'xn--bcher-kva.example'
    """
    return _normalise_domain(value) if isinstance(value, str) else None


@lru_cache(maxsize=CACHE_SIZE)
def _normalise_domain(value: str) -> str | None:
    text = value.strip().strip("<>").strip()
    text = text.rstrip(".").lower() if text.isascii() else text.rstrip(".。．｡")
    if not text or len(text) > 1024:
        return None
    if not text.isascii() or "xn--" in text:
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None
    if len(text) > _MAX_DOMAIN or not _ASCII_DOMAIN.match(text):
        return None
    return text


def split_address(value: object) -> tuple[str, str] | None:
    """Split a mail address into (local part, raw domain); ``None`` if it is not one.

    Surrounding white space is removed, and a value ending in an address in angle
    brackets is that address: ``<a@b>``, and a display name before it (``Alice Example
    <a@b>``, ``"Example, Alice" <a@b>``, RFC 5322's name-addr), which is dropped, so that
    every spelling of one mailbox is one address. The domain is everything after the last
    ``@``. A local part with white space or an angle bracket outside quotes is no address.
    The domain is not normalised here.
    """
    return _split_address(value) if isinstance(value, str) else None


@lru_cache(maxsize=CACHE_SIZE)
def _split_address(value: str) -> tuple[str, str] | None:
    text = value.strip()
    if text.endswith(">"):
        start = text.rfind("<")
        if start < 0:
            return None
        text = text[start + 1 : -1].strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain:
        return None
    quoted = len(local) >= 2 and local[0] == '"' and local[-1] == '"'
    if not quoted and any(c.isspace() or c in "<>" for c in local):
        return None
    return local, domain


def unique_map(series: pd.Series, func: Callable[[Any], object]) -> pd.Series:
    """Apply ``func`` once per distinct value of ``series`` and map the results back.

    This is how every per-value operation in the engine runs: the work grows with the
    number of distinct values in a chunk, not with its rows.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    results = np.empty(len(uniques) + 1, dtype=object)
    values = uniques.to_numpy(dtype=object) if hasattr(uniques, "to_numpy") else list(uniques)
    results[:-1] = [func(u) for u in values]  # a bulk conversion, not one scalar at a time
    results[-1] = None  # the NA sentinel (-1) indexes the last slot
    return pd.Series(results[codes], index=series.index, dtype=object)


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=True)


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    """Every public suffix rule, the private section's too (hosting platforms' zones)."""
    return PublicSuffixList(only_icann=False, accept_unknown=False)


@lru_cache(maxsize=1)
def _icann() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True, accept_unknown=False)


@lru_cache(maxsize=CACHE_SIZE)  # bounded: the same sites recur chunk after chunk
def registrable_domain(domain: str) -> str:
    """The registrable domain ("eTLD+1") of a normalised domain.

    A domain that is itself a public suffix is its own registrable domain.
    """
    found = _psl().privatesuffix(domain)
    return str(found) if found else domain


def is_public_suffix(domain: str, *, private: bool = True) -> bool:
    """True when ``domain`` is a public suffix: an ICANN one (``com``, ``com.au``), a bare
    TLD, or (``private``) one of the list's private section (``github.io``,
    ``blogspot.com``), under which every name is someone else's site: listing one would
    list them all. Where a list only narrows (an allow-list, a policy's exclusions), a
    hosting platform's zone is a fair entry: ``private=False``."""
    rules = _suffixes() if private else _icann()
    return "." not in domain or bool(rules.is_public(domain))


def parent_suffixes(domain: str) -> Iterator[str]:
    """``a.b.c`` yields ``a.b.c``, ``b.c``, ``c``: the domain and every parent, label-wise."""
    yield domain
    start = domain.find(".")
    while start != -1:
        yield domain[start + 1 :]
        start = domain.find(".", start + 1)


@dataclass(frozen=True, order=True)
class Label:
    """What a feed says of a domain: its category and the feed that says it."""

    category: str
    feed: str


_EXCEPTION = -1  # a stored entry that un-lists a domain and its subdomains
_ABSENT = -2  # no entry for exactly this name
#: An index of this many entries or fewer, and no compiled base, compares them directly.
_FEW = 16
NO_LABELS = -1  # what a lookup returns for a domain no feed lists


def normalise_domains(values: pa.Array) -> pa.Array:
    """:func:`normalise_domain` over an Arrow string array, the same result, vectorised.

    Values made only of ASCII letters, digits, ``_``, ``-`` and ``.`` (nearly every
    feed entry and mail domain) are handled by Arrow kernels in one pass; any other
    value goes through the exact scalar function, once per distinct value.
    """

    values = values.cast(pa.string()) if values.type != pa.string() else values
    pure = pc.and_(
        pc.match_substring_regex(values, r"^[A-Za-z0-9_.-]+$"),
        pc.invert(pc.match_substring(values, "xn--", ignore_case=True)),  # IDNA: checked exactly
    ).fill_null(False)
    text = pc.utf8_lower(pc.utf8_rtrim(values, "."))
    ok = pc.and_(
        pc.and_(pc.match_substring_regex(text, _RE2_DOMAIN), pure),
        pc.less_equal(pc.utf8_length(text), _MAX_DOMAIN),
    ).fill_null(False)
    out = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    return with_exact(values, out, pure, normalise_domain)


def with_exact(
    values: pa.Array, fast: pa.Array, handled: pa.Array, exact: Callable[[str], str | None]
) -> pa.Array:
    """``fast`` where ``handled`` is true; elsewhere the exact scalar function of the value.

    The vectorised normalisers handle the common, simple values with Arrow kernels and
    leave every other non-null value to the scalar function that defines the result.
    """

    slow = pc.and_(pc.invert(handled), pc.is_valid(values)).to_numpy(zero_copy_only=False)
    if not slow.any():
        return fast
    rows = np.flatnonzero(slow)
    result = np.asarray(fast.to_numpy(zero_copy_only=False), dtype=object)
    result[rows] = [exact(v) for v in values.take(pa.array(rows)).to_pylist()]
    return pa.array(result, type=pa.string(), from_pandas=True)


def public_suffix_mask(domains: pa.Array, *, private: bool = True) -> np.ndarray:
    """:func:`is_public_suffix` over normalised domains (nulls: False), vectorised.

    A name can only be a public suffix when it is a bare label, is itself a
    rule or the root of a wildcard rule, or its parent is: only those candidates are
    checked with the exact function.
    """

    rules = getattr(_suffixes() if private else _icann(), "_publicsuffix", None)
    if not isinstance(rules, frozenset):  # an unknown publicsuffixlist layout: exact, slower
        values = domains.to_pylist()
        return np.array(
            [bool(v) and is_public_suffix(v, private=private) for v in values], dtype=bool
        )
    plain = pa.array(sorted(r for r in rules if not r.startswith(("*.", "!"))), pa.string())
    wild = pa.array(sorted(r[2:] for r in rules if r.startswith("*.")), pa.string())
    parent = pc.replace_substring_regex(domains, r"^[^.]*\.", "", max_replacements=1)
    candidate = pc.or_(
        pc.or_(pc.is_in(domains, value_set=plain), pc.is_in(domains, value_set=wild)),
        pc.or_(pc.is_in(parent, value_set=wild), pc.invert(pc.match_substring(domains, "."))),
    ).fill_null(False)
    mask = np.asarray(candidate.to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(mask)
    if rows.size:
        values = domains.take(pa.array(rows)).to_pylist()
        mask[rows] = [is_public_suffix(v, private=private) for v in values]
    return mask


@dataclass(frozen=True)
class CompiledIndex:
    """A feed index in Arrow arrays: sorted distinct domains and their label-set ids.

    It is what a feed compiles to, and what the feed cache stores and memory-maps:
    loading it builds no Python object per domain. Names are looked up in a hash table
    (:meth:`hash_table`): each name's unkeyed 64-bit hash is found by a binary search
    among the domains' sorted hashes, and a hit confirmed by an exact comparison.
    """

    domains: pa.Array  # normalised, distinct, sorted ascending
    set_ids: np.ndarray  # int32 per domain: an index into ``sets``, or -1 (exception)
    sets: list[frozenset[Label]]
    #: the domains' hashes (:func:`compliance.hashing.string_hashes`), sorted, and the
    #: position of each in ``domains``: read from the feed cache, or built on first use
    hashes: np.ndarray | None = field(default=None, compare=False, repr=False)
    by_hash: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.domains)

    def hash_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The domains' hashes, sorted, and the position in ``domains`` of each; None when
        two domains share a hash (one chance in 2**64 per pair: names are then found by
        comparing them with the sorted domains instead)."""
        if self.hashes is None or self.by_hash is None:
            hashes = string_hashes(self.domains)
            order = np.argsort(hashes, kind="stable")
            object.__setattr__(self, "hashes", hashes[order])
            object.__setattr__(self, "by_hash", order.astype(np.int32))
        assert self.hashes is not None
        assert self.by_hash is not None
        if self.__dict__.get("_shared") is None:
            shared = bool(np.any(self.hashes[1:] == self.hashes[:-1]))
            object.__setattr__(self, "_shared", shared)
        return None if self.__dict__["_shared"] else (self.hashes, self.by_hash)

    def find(self, names: pa.Array) -> np.ndarray:
        """The set id listed for exactly each name (not its parents); -2 where none."""

        out = np.full(len(names), _ABSENT, dtype=np.int32)
        if not len(self.domains) or not len(names):
            return out
        table = self.hash_table()
        if table is None:
            return self._find_sorted(names)
        hashes, by_hash = table
        wanted = string_hashes(names)
        order = np.argsort(wanted)  # sorted queries: a binary search that stays in cache
        found = np.minimum(np.searchsorted(hashes, wanted[order]), len(hashes) - 1)
        same = hashes[found] == wanted[order]
        rows = order[same]
        at = by_hash[found[same]].astype(np.int64)
        equal = pc.equal(self.domains.take(pa.array(at)), names.take(pa.array(rows)))
        hit = np.asarray(equal.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        out[rows[hit]] = self.set_ids[at[hit]]
        return out

    def _find_sorted(self, names: pa.Array) -> np.ndarray:
        """:meth:`find` by a binary search among the sorted domains themselves."""
        out = np.full(len(names), _ABSENT, dtype=np.int32)
        position = pc.search_sorted(self.domains, names, side="left").fill_null(0)
        at = np.minimum(position.to_numpy(), len(self.domains) - 1).astype(np.int64)
        equal = pc.equal(self.domains.take(pa.array(at)), names).fill_null(False)
        hit = np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)
        out[hit] = self.set_ids[at[hit]]
        return out


class DomainIndex:
    """A suffix index from normalised domains to the labels feeds give them.

    Compiled feeds form an immutable Arrow base; entries added one by one (policies'
    own domains, organisation domains, small inline feeds) live in a dictionary
    overlay that takes precedence for the names it holds. Distinct label sets are
    interned, so each domain carries one small integer. Lookups walk a domain's
    parents, most specific first.
    """

    def __init__(self, base: CompiledIndex | None = None) -> None:
        self._ids: dict[str, int] = {}
        self._sets: list[frozenset[Label]] = list(base.sets) if base else []
        self._set_ids: dict[frozenset[Label], int] = {s: i for i, s in enumerate(self._sets)}
        self._base = base
        self._overlay: tuple[pa.Array, np.ndarray] | None = None  # cleared by every change
        self._lookups: dict[str, frozenset[Label]] = {}  # cleared by every change

    def __len__(self) -> int:
        return len(self._ids) + (len(self._base) if self._base is not None else 0)

    def names(self) -> pa.Array:
        """Every name with an entry of its own (listed or excepted), each once."""
        parts = [pa.array([], pa.string())]
        if self._base is not None and len(self._base):
            parts.append(self._base.domains.cast(pa.string()))
        if self._ids:
            parts.append(pa.array(list(self._ids), pa.string()))
        return pc.unique(pa.concat_arrays(parts))

    @property
    def compiled(self) -> CompiledIndex | None:
        """The compiled base (the feeds loaded by ``load_feeds``), or None."""
        return self._base

    @property
    def sets(self) -> list[frozenset[Label]]:
        """The interned label sets; :meth:`lookup_ids` returns indexes into this list."""
        return self._sets

    def _intern(self, labels: frozenset[Label]) -> int:
        found = self._set_ids.get(labels)
        if found is None:
            found = len(self._sets)
            self._sets.append(labels)
            self._set_ids[labels] = found
        return found

    def _changed(self) -> None:
        self._overlay = None
        self._lookups.clear()

    def _get(self, domain: str) -> int | None:
        """The entry for exactly ``domain``: a set id, -1 (exception) or None."""
        found = self._ids.get(domain)
        if found is None and self._base is not None:
            base = int(self._base.find(pa.array([domain], pa.string()))[0])
            found = None if base == _ABSENT else base
        return found

    def add(self, domain: str, label: Label) -> None:
        """List ``domain`` (already normalised) and its subdomains under ``label``."""
        current = self._get(domain)
        if current == _EXCEPTION:
            return
        labels = self._sets[current] if current is not None else frozenset()
        if label not in labels:
            self._ids[domain] = self._intern(labels | {label})
            self._changed()

    def add_exception(self, domain: str) -> None:
        """Un-list ``domain`` and its subdomains, even under a listed parent."""
        self._ids[domain] = _EXCEPTION
        self._changed()

    def lookup(self, domain: str) -> frozenset[Label]:
        """Labels of the most specific listed suffix of ``domain`` (empty if none)."""
        cached = self._lookups.get(domain)
        if cached is not None:
            return cached
        labels: frozenset[Label] = frozenset()
        for suffix in parent_suffixes(domain):
            found = self._get(suffix)
            if found is not None:
                labels = frozenset() if found == _EXCEPTION else self._sets[found]
                break
        if len(self._lookups) >= CACHE_SIZE:
            self._lookups.clear()  # bounded: distinct domains seen recently stay fast
        self._lookups[domain] = labels
        return labels

    def _find(self, names: pa.Array) -> np.ndarray:
        """Entries for exactly each name: overlay first, then the compiled base."""

        out = (
            self._base.find(names)
            if self._base is not None
            else np.full(len(names), _ABSENT, dtype=np.int32)
        )
        if self._ids:
            if self._overlay is None:
                keys = pa.array(list(self._ids), pa.string())
                self._overlay = (keys, np.fromiter(self._ids.values(), np.int32, len(self._ids)))
            keys, values = self._overlay
            position = pc.index_in(names, value_set=keys).to_numpy(zero_copy_only=False)
            hit = ~np.isnan(position.astype(float))
            out[hit] = values[position[hit].astype(np.int64)]
        return out

    def lookup_ids(self, domains: pa.Array) -> np.ndarray:
        """:meth:`lookup` over an Arrow array of normalised domains, vectorised.

        Returns, per value, the index in :attr:`sets` of the labels of its most
        specific listed suffix, or :data:`NO_LABELS` (not listed, excepted, null).
        """

        domains = domains.cast(pa.string()) if domains.type != pa.string() else domains
        if self._base is None and len(self._ids) <= _FEW:
            return self._lookup_few(domains)
        result = np.full(len(domains), _ABSENT, dtype=np.int32)
        valid = np.asarray(pc.is_valid(domains).to_numpy(zero_copy_only=False), dtype=bool)
        pending = np.flatnonzero(valid)
        current = domains.filter(pa.array(valid)) if not valid.all() else domains
        while pending.size:
            found = self._find(current)
            hit = found != _ABSENT
            result[pending[hit]] = found[hit]
            more = pc.match_substring(current, ".").to_numpy(zero_copy_only=False) & ~hit
            pending = pending[more]
            # the parent: everything after the first dot
            parts = pc.split_pattern(current.filter(pa.array(more)), ".", max_splits=1)
            current = pc.list_element(parts, 1)
        result[result < 0] = NO_LABELS
        return result

    def _lookup_few(self, domains: pa.Array) -> np.ndarray:
        """:meth:`lookup_ids` for an index of a few entries and no compiled base (the
        organisation's domains): each entry compared with every name at once (the name
        itself, or ending in ``.`` and the entry), longer entries last, since a longer
        suffix is a more specific one."""
        result = np.full(len(domains), NO_LABELS, dtype=np.int32)
        for name, found in sorted(self._ids.items(), key=lambda item: len(item[0])):
            hit = pc.or_(pc.equal(domains, name), pc.ends_with(domains, "." + name))
            result[np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), bool)] = found
        result[result < 0] = NO_LABELS
        return result

    def contains(self, domain: str) -> bool:
        """True when ``domain`` or one of its parents is listed (and not excepted)."""
        return bool(self.lookup(domain))

    def contains_all(self, domains: pa.Array | pd.Series) -> np.ndarray:
        """:meth:`contains` over a column of normalised domains (missing ones: False)."""
        if isinstance(domains, pd.Series):
            domains = pa.array(domains, type=pa.string(), from_pandas=True)
        ids = self.lookup_ids(domains)
        if not self._sets:
            return np.zeros(len(ids), dtype=bool)
        nonempty = np.array([bool(s) for s in self._sets] + [False], dtype=bool)
        found: np.ndarray = nonempty[ids]  # NO_LABELS (-1) indexes the final False
        return found

    def categories(self) -> set[str]:
        """Every category present in the index."""
        return {label.category for labels in self._sets for label in labels}

    @classmethod
    def from_domains(cls, domains: Iterable[str], label: Label) -> DomainIndex:
        """An index of already-normalised ``domains`` all carrying ``label``."""
        index = cls()
        for domain in domains:
            index.add(domain, label)
        return index
