"""Org units from a directory CSV (an Entra ID users export, or any CSV with those columns).

Only these columns are read, matched case-insensitively: ``mail`` (required),
``userPrincipalName``, ``proxyAddresses`` (``SMTP:a@x.test;smtp:b@x.test``), ``id`` or
``objectId`` (the person's stable key) and ``department`` (a ``/``-separated path).
Names and every other column are never loaded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from compliance.domains import CACHE_SIZE, normalise_domain, split_address, with_exact
from compliance.errors import InputError
from compliance.events import UNKNOWN_UNIT
from compliance.privacy import normalise_unit
from connectors.textfile import open_text

UNASSIGNED_UNIT = "unassigned"
_ALIASES = {
    "mail": ("mail", "email", "primarysmtpaddress"),
    "upn": ("userprincipalname",),
    "proxy": ("proxyaddresses",),
    "id": ("id", "objectid", "object id", "externaldirectoryobjectid"),
    "department": ("department",),
}
_PROXY_SPLIT = re.compile(r"[;,\s\[\]\"']+")


def normalise_address(value: object) -> str | None:
    """``' <Alice@Corp.EXAMPLE.> '`` becomes ``'alice@corp.example'``; invalid becomes None."""
    return _normalise_address(value) if isinstance(value, str) else None


# Addresses that are plain ASCII, with one "@", no white space or brackets, a valid
# label-wise domain and no IDNA label: their canonical form is simply their lower case.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_PLAIN_ADDRESS = rf"^[^\s@<>]+@{_LABEL}(?:\.{_LABEL})*$"


def normalise_addresses(values: pd.Series) -> pd.Series:
    """:func:`normalise_address` over a column, the same result, vectorised."""
    array = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    out = normalise_address_array(array).to_numpy(zero_copy_only=False)
    return pd.Series(out, index=values.index, dtype=object)


def normalise_address_array(values: pa.Array) -> pa.Array:
    """:func:`normalise_address` over an Arrow string array, the same result, vectorised.

    Plain addresses (nearly all of them) are lower-cased by Arrow in one pass; every
    other value (IDN, brackets, spaces, anything odd) goes through the exact scalar
    function once per distinct value.
    """
    import pyarrow.compute as pc

    lower = pc.utf8_lower(values)
    at = pc.find_substring(lower, "@")
    domain_length = pc.subtract(pc.subtract(pc.utf8_length(lower), at), 1)
    plain = pc.and_(
        pc.and_(pc.string_is_ascii(values), pc.match_substring_regex(lower, _PLAIN_ADDRESS)),
        pc.and_(pc.invert(pc.match_substring(lower, "xn--")), pc.less_equal(domain_length, 253)),
    ).fill_null(False)
    out = pc.if_else(plain, lower, pa.scalar(None, pa.string()))
    return with_exact(values, out, plain, normalise_address)


@lru_cache(maxsize=CACHE_SIZE)  # bounded: the same addresses recur chunk after chunk
def _normalise_address(value: str) -> str | None:
    parts = split_address(value)
    if parts is None:
        return None
    domain = normalise_domain(parts[1])
    if domain is None:
        return None
    return f"{parts[0].lower()}@{domain}"


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
        import pyarrow.compute as pc

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


def load_directory(path: Path | None) -> Directory:
    """Read a directory CSV; ``None`` gives an empty directory (everyone ``unknown``)."""
    directory = Directory()
    if path is None:
        return directory
    with open_text(path) as (stream, _encoding):
        try:
            frame = pd.read_csv(stream, dtype=str, keep_default_na=False, nrows=0)
            header = {c.strip().lower(): c for c in frame.columns}
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as exc:
            raise InputError(path, f"not a readable CSV directory: {exc}") from None
        wanted = {
            role: next((header[a] for a in names if a in header), None)
            for role, names in _ALIASES.items()
        }
        if wanted["mail"] is None and wanted["upn"] is None:
            raise InputError(path, "directory CSV needs a 'mail' column")
        stream.seek(0)
        columns = [c for c in wanted.values() if c is not None]
        frame = pd.read_csv(stream, dtype=str, keep_default_na=False, usecols=columns)
    for row in frame.itertuples(index=False):
        values = dict(zip(frame.columns, row, strict=True))
        addresses = [
            normalise_address(values[c])
            for c in (wanted["mail"], wanted["upn"])
            if c is not None and values[c]
        ]
        if wanted["proxy"] is not None:
            for token in _PROXY_SPLIT.split(values[wanted["proxy"]]):
                if token.lower().startswith("smtp:"):
                    addresses.append(normalise_address(token[5:]))
        stable = values[wanted["id"]] if wanted["id"] is not None else ""
        unit = None
        if wanted["department"] is not None:
            unit = normalise_unit(values[wanted["department"]])
        directory.add(addresses, stable, unit)
    return directory
