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
    _cache: _View | None = field(default=None, init=False, repr=False, compare=False)

    def lookup(self, address: str) -> tuple[str, str]:
        """(person key, org unit) for a normalised address; unknown people keep their address."""
        return self.people.get(address, (address, UNKNOWN_UNIT))

    def lookup_all(self, addresses: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lookup` over normalised addresses, vectorised.

        Returns (entry per address, -1 when not listed; unit code per address), where
        an entry indexes :attr:`keys` and a unit code indexes :attr:`units` (unlisted
        people are in ``unknown``).
        """
        view = self._view()
        found = pc.index_in(addresses, value_set=view.addresses)
        entry = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
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

    def add(self, addresses: list[str | None], stable_id: str, unit: str | None) -> None:
        """Add one person: every address (aliases too) maps to one stable key and unit.

        The key is the directory's immutable id when there is one, so that a renamed
        address keeps its pseudonym; else the first valid address.
        """
        valid = [a for a in addresses if a]
        if not valid:
            self.rejected["no_valid_address"] += 1
            return
        stable = stable_id.strip().lower()
        person_key = f"id:{stable}" if stable else valid[0]
        unit = unit or UNASSIGNED_UNIT
        self._cache = None
        for address in valid:
            self.people[address] = (person_key, unit)
        self.headcounts[unit] += 1

    @property
    def size(self) -> int:
        """Number of people listed."""
        return sum(self.headcounts.values())
