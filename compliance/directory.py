"""The directory in memory: each internal address mapped to its person's stable key and
org unit, with vectorised lookups for the per-chunk pipeline.

Directory *sources* (a CSV export, Entra ID) fill it; see :mod:`connectors.directory`
and :mod:`connectors.entra`. Names are never part of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compliance.events import UNKNOWN_UNIT

UNASSIGNED_UNIT = "unassigned"
#: A sub-address (RFC 5233, Exchange Online's plus addressing): ``alice+tag@corp.example``
#: is delivered to ``alice@corp.example``.
_SUB_ADDRESS = r"^([^+@]+)\+[^@]*@"


@dataclass
class _View:
    """The directory as arrays, for vectorised lookups (rebuilt when people are added)."""

    size: int
    addresses: pa.Array
    keys: list[str]
    unit_codes: np.ndarray
    units: np.ndarray
    unknown_code: int


@dataclass
class Directory:
    """Addresses of internal people mapped to their stable key and org unit."""

    people: dict[str, tuple[str, str]] = field(default_factory=dict)
    headcounts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    #: addresses that two people of the directory claim: listed for neither
    ambiguous: set[str] = field(default_factory=set)
    _cache: _View | None = field(default=None, init=False, repr=False, compare=False)

    def lookup(self, address: str) -> tuple[str, str]:
        """(person key, org unit) for a normalised address: :meth:`lookup_all` of one."""
        entry, unit = self.lookup_all(pa.array([address], pa.string()))
        return self.person_keys(entry, [address])[0], str(self.units[unit[0]])

    def unlisted_key(self, address: str) -> str:
        """The person key of an address the directory does not list: the address itself,
        or, for an address two people claim (:attr:`ambiguous`), the address marked so,
        which no person's key can equal (a person without an id is keyed by their first
        address: that may be this one)."""
        return f"ambiguous:{address}" if address in self.ambiguous else address

    def person_keys(self, entry: np.ndarray, addresses: list[str]) -> list[str]:
        """The person key of each address of :meth:`lookup_all` (``entry`` its result):
        a listed person's key, else :meth:`unlisted_key`."""
        keys = self.keys
        return [
            keys[e] if e >= 0 else self.unlisted_key(a)
            for e, a in zip(entry.tolist(), addresses, strict=True)
        ]

    def lookup_all(self, addresses: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lookup` over normalised addresses, vectorised.

        Returns (entry per address, -1 when not listed; unit code per address), where
        an entry indexes :attr:`keys` and a unit code indexes :attr:`units` (unlisted
        people are in ``unknown``).
        """
        view = self._view()
        found = pc.index_in(addresses, value_set=view.addresses)
        entry = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        # a sub-address (``alice+tag@``) the directory does not list is its mailbox's
        tagged = np.flatnonzero(
            (entry < 0)
            & np.asarray(
                pc.match_substring_regex(addresses, _SUB_ADDRESS)
                .fill_null(False)
                .to_numpy(zero_copy_only=False),
                dtype=bool,
            )
        )
        if len(tagged):
            base = pc.replace_substring_regex(
                addresses.take(pa.array(tagged)), _SUB_ADDRESS, r"\1@"
            )
            found = pc.index_in(base, value_set=view.addresses).fill_null(-1)
            entry[tagged] = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
        unit = np.where(entry >= 0, view.unit_codes[entry], view.unknown_code)
        return entry, unit

    @property
    def keys(self) -> list[str]:
        """Person keys by entry (see :meth:`lookup_all`)."""
        return self._view().keys

    @property
    def units(self) -> np.ndarray:
        """Org-unit names by unit code (see :meth:`lookup_all`)."""
        return self._view().units

    def _view(self) -> _View:
        if self._cache is None or self._cache.size != len(self.people):
            addresses = list(self.people)
            keys = [self.people[a][0] for a in addresses]
            unit_names = sorted({u for _, u in self.people.values()} | {UNKNOWN_UNIT})
            code = {u: i for i, u in enumerate(unit_names)}
            self._cache = _View(
                size=len(addresses),
                addresses=pa.array(addresses, pa.string()),
                keys=keys,
                unit_codes=np.array([code[self.people[a][1]] for a in addresses] + [0]),
                units=np.array(unit_names, dtype=object),
                unknown_code=code[UNKNOWN_UNIT],
            )
        return self._cache

    def add(self, addresses: list[str | None], stable_id: str, unit: str | None) -> int:
        """Add one person: every address (aliases too) maps to one stable key and unit.

        The key is the directory's immutable id when there is one, so that a renamed
        address keeps its pseudonym; else the first valid address. An address another
        person of the directory has too is listed for neither (:attr:`ambiguous`): its
        mail is then keyed by the address itself, in ``unknown``, never given to the
        wrong person's pseudonym or unit. Returns how many of this person's addresses
        were found to be another's.
        """
        valid = [a for a in addresses if a]
        if not valid:
            self.rejected["no_valid_address"] += 1
            return 0
        stable = stable_id.strip().lower()
        person_key = f"id:{stable}" if stable else valid[0]
        unit = unit or UNASSIGNED_UNIT
        self._cache = None
        clashes = 0
        for address in valid:
            held = self.people.get(address)
            if address in self.ambiguous or (held is not None and held[0] != person_key):
                clashes += 1
                self.people.pop(address, None)
                self.ambiguous.add(address)
                continue
            self.people[address] = (person_key, unit)
        if clashes:
            self.rejected["address_of_two_people"] += clashes
        self.headcounts[unit] += 1
        return clashes

    @property
    def size(self) -> int:
        """Number of people listed."""
        return sum(self.headcounts.values())
