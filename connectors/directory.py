"""Org units from a directory CSV (an Entra ID users export, or any CSV with those columns).

Only these columns are read, matched case-insensitively: ``mail`` (required),
``userPrincipalName``, ``proxyAddresses`` (``SMTP:a@x.test;smtp:b@x.test``), ``id`` or
``objectId`` (the person's stable key) and ``department`` (a ``/``-separated path).
Names and every other column are never loaded into a :class:`Directory`; only
:func:`load_directory_names`, when asked, reads the name columns to check a triage note
or a case reason, and what it returns is never stored, logged or printed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
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


_NAME_ALIASES = {
    "display": ("displayname", "display name"),
    "given": ("givenname", "given name"),
    "surname": ("surname", "sn"),
}
_WORD = re.compile(r"[^\W_]+")  # letters and digits
#: A local part shorter than this is not checked (``u1``, ``jo``: too many false refusals).
MIN_LOCAL_PART = 3


def name_phrase(text: str) -> str:
    """Text as a phrase of words, for whole-word matching: accents removed, case folded,
    every run of characters other than letters and digits (spaces, dots, hyphens,
    apostrophes, underscores) one space. ``'  José  O'Brien-Smith '`` becomes
    ``'jose o brien smith'``."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_WORD.findall(plain))


def local_part_phrases(addresses: Iterable[str]) -> set[str]:
    """The local parts of ``addresses`` as phrases (see :func:`name_phrase`), those of at
    least :data:`MIN_LOCAL_PART` characters only."""
    out = set()
    for address in addresses:
        local = address.rpartition("@")[0] if "@" in address else ""
        if len(local) >= MIN_LOCAL_PART:
            phrase = name_phrase(local)
            if phrase:
                out.add(phrase)
    return out


def load_directory_names(path: Path) -> set[str]:
    """The people of a directory CSV as phrases to keep out of free text (triage notes,
    case reasons); read only when asked, never kept in a :class:`Directory`.

    Reads ``displayName``, ``givenName`` and ``surname`` (Entra export spellings, matched
    case-insensitively; ``sn`` too) and the address columns, and returns, normalised by
    :func:`name_phrase`: each display name and each "given surname" (and "surname given")
    of at least two words, and the local part of every listed address of at least
    :data:`MIN_LOCAL_PART` characters. A name of one word (a lone surname or given name,
    a one-word display name) is left out on purpose: common surnames are common words
    ("Baker", "Long"), and refusing them would refuse ordinary notes. A directory without
    name columns gives the local parts only. The result must only be compared against,
    never stored, logged or printed.
    """
    with open_text(path) as (stream, _encoding):
        try:
            frame = pd.read_csv(stream, dtype=str, keep_default_na=False, nrows=0)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as exc:
            raise InputError(path, f"not a readable CSV directory: {exc}") from None
        header = {c.strip().lower(): c for c in frame.columns}
        roles = {**_NAME_ALIASES, "mail": _ALIASES["mail"], "upn": _ALIASES["upn"]}
        roles["proxy"] = _ALIASES["proxy"]
        wanted = {
            role: next((header[a] for a in names if a in header), None)
            for role, names in roles.items()
        }
        columns = [c for c in wanted.values() if c is not None]
        if not columns:
            return set()
        stream.seek(0)
        try:
            frame = pd.read_csv(stream, dtype=str, keep_default_na=False, usecols=columns)
        except (pd.errors.ParserError, UnicodeError) as exc:
            raise InputError(path, f"not a readable CSV directory: {exc}") from None

    def column(role: str) -> list[str]:
        name = wanted[role]
        return [""] * len(frame) if name is None else frame[name].tolist()

    phrases: set[str] = set()
    for display, given, surname in zip(
        column("display"), column("given"), column("surname"), strict=True
    ):
        given_p, surname_p = name_phrase(given), name_phrase(surname)
        candidates = [name_phrase(display)]
        if given_p and surname_p:
            candidates += [f"{given_p} {surname_p}", f"{surname_p} {given_p}"]
        phrases.update(c for c in candidates if len(c.split()) >= 2)
    addresses: list[str] = []
    for role in ("mail", "upn"):
        addresses.extend(a for a in map(normalise_address, column(role)) if a)
    for value in column("proxy"):
        for token in _PROXY_SPLIT.split(value):
            if token.lower().startswith("smtp:"):
                found = normalise_address(token[5:])
                if found:
                    addresses.append(found)
    phrases.update(local_part_phrases(addresses))
    return phrases
