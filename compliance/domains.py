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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import idna
import numpy as np
import pandas as pd
from publicsuffixlist import PublicSuffixList

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_ASCII_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
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

    Surrounding white space and one pair of angle brackets are removed; the domain is
    everything after the last ``@``. The domain is not normalised here.
    """
    return _split_address(value) if isinstance(value, str) else None


@lru_cache(maxsize=CACHE_SIZE)
def _split_address(value: str) -> tuple[str, str] | None:
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain:
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
def _icann() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True, accept_unknown=False)


def registrable_domain(domain: str) -> str:
    """The registrable domain ("eTLD+1") of a normalised domain.

    A domain that is itself a public suffix is its own registrable domain.
    """
    found = _psl().privatesuffix(domain)
    return str(found) if found else domain


def is_public_suffix(domain: str) -> bool:
    """True when ``domain`` is an ICANN public suffix (``com``, ``com.au``) or a bare TLD."""
    return "." not in domain or bool(_icann().is_public(domain))


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


_EXCEPTION = -1


class DomainIndex:
    """A suffix index from normalised domains to the labels feeds give them.

    Distinct label sets are interned, so the index holds one small integer per
    domain; lookups walk a domain's parents, most specific first.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._sets: list[frozenset[Label]] = []
        self._set_ids: dict[frozenset[Label], int] = {}
        self._lookups: dict[str, frozenset[Label]] = {}  # cleared by every change

    def __len__(self) -> int:
        return len(self._ids)

    def _intern(self, labels: frozenset[Label]) -> int:
        found = self._set_ids.get(labels)
        if found is None:
            found = len(self._sets)
            self._sets.append(labels)
            self._set_ids[labels] = found
        return found

    def add(self, domain: str, label: Label) -> None:
        """List ``domain`` (already normalised) and its subdomains under ``label``."""
        current = self._ids.get(domain)
        if current == _EXCEPTION:
            return
        labels = self._sets[current] if current is not None else frozenset()
        if label not in labels:
            self._ids[domain] = self._intern(labels | {label})
            self._lookups.clear()

    def add_exception(self, domain: str) -> None:
        """Un-list ``domain`` and its subdomains, even under a listed parent."""
        self._ids[domain] = _EXCEPTION
        self._lookups.clear()

    def lookup(self, domain: str) -> frozenset[Label]:
        """Labels of the most specific listed suffix of ``domain`` (empty if none)."""
        cached = self._lookups.get(domain)
        if cached is not None:
            return cached
        labels: frozenset[Label] = frozenset()
        for suffix in parent_suffixes(domain):
            found = self._ids.get(suffix)
            if found is not None:
                labels = frozenset() if found == _EXCEPTION else self._sets[found]
                break
        if len(self._lookups) >= CACHE_SIZE:
            self._lookups.clear()  # bounded: distinct domains seen recently stay fast
        self._lookups[domain] = labels
        return labels

    def contains(self, domain: str) -> bool:
        """True when ``domain`` or one of its parents is listed (and not excepted)."""
        return bool(self.lookup(domain))

    def contains_all(self, domains: pd.Series) -> np.ndarray:
        """:meth:`contains` over a column of normalised domains (missing ones: False).

        A small index without exceptions (an organisation's accepted domains) is matched
        by Arrow, entry by entry: equal, or ending in ``.`` + the entry; any other index
        per distinct value.
        """
        if len(self._ids) > 64 or _EXCEPTION in self._ids.values():
            return unique_map(domains, self.contains).fillna(False).astype(bool).to_numpy()
        import pyarrow as pa
        import pyarrow.compute as pc

        array = pa.array(domains.astype(object), type=pa.string(), from_pandas=True)
        found = pa.array(np.zeros(len(array), dtype=bool))
        for entry in self._ids:
            hit = pc.or_(pc.equal(array, entry), pc.ends_with(array, "." + entry))
            found = pc.or_(found, hit)
        return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)

    def categories(self) -> set[str]:
        """Every category present in the index."""
        return {label.category for labels in self._sets for label in labels}

    def merge(self, other: DomainIndex) -> None:
        """Add every entry of ``other`` to this index."""
        for domain, found in other._ids.items():
            if found == _EXCEPTION:
                self.add_exception(domain)
            else:
                for label in other._sets[found]:
                    self.add(domain, label)

    @classmethod
    def from_domains(cls, domains: Iterable[str], label: Label) -> DomainIndex:
        """An index of already-normalised ``domains`` all carrying ``label``."""
        index = cls()
        for domain in domains:
            index.add(domain, label)
        return index
