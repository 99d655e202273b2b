"""Org units from a directory CSV (an Entra ID users export, or any CSV with those columns).

Only these columns are read, matched case-insensitively: ``mail`` (required),
``userPrincipalName``, ``proxyAddresses`` (``SMTP:a@x.test;smtp:b@x.test``), ``id`` or
``objectId`` (the person's stable key) and ``department`` (a ``/``-separated path).
Names and every other column are never loaded into a :class:`Directory`; only
:func:`load_directory_names`, when asked, reads the name columns to check a triage note
or a case reason, and what it returns is never stored, logged or printed.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import pandas as pd

from compliance.addresses import normalise_address, normalise_addresses
from compliance.directory import Directory
from compliance.errors import InputError
from compliance.privacy import normalise_unit
from connectors.textfile import open_text

_ALIASES = {
    "mail": ("mail", "email", "primarysmtpaddress"),
    "upn": ("userprincipalname",),
    "proxy": ("proxyaddresses",),
    "id": ("id", "objectid", "object id", "externaldirectoryobjectid"),
    "department": ("department",),
}
_PROXY_SPLIT = re.compile(r"[;,\s\[\]\"']+")
log = logging.getLogger(__name__)


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
        try:
            frame = pd.read_csv(stream, dtype=str, keep_default_na=False, usecols=columns)
        except (pd.errors.ParserError, UnicodeError) as exc:
            raise InputError(path, f"not a readable CSV directory: {exc}") from None
        stream.seek(0)
        short = _short_records(stream, len(frame))
    if short:
        # a lost field shifts the others (an address where the unit belongs, one person's
        # alias as another's): such a row is nobody's rather than someone else's
        frame = frame.drop(index=[row for row, _ in short]).reset_index(drop=True)
        directory.rejected["fewer_fields_than_the_header"] += len(short)
        lines = [line for _, line in short]
        log.warning(
            "%s: %d row(s) with fewer fields than the header (line(s) %s%s) are left out: "
            "their people's mail is keyed by address in the unit 'unknown'; correct the "
            "directory",
            path,
            len(short),
            ", ".join(map(str, lines[:5])),
            ", ..." if len(lines) > 5 else "",
        )
    # every column is normalised once per distinct value, then gathered per person
    count = len(frame)
    per_person: list[list[str | None]] = [[] for _ in range(count)]
    for role in ("mail", "upn"):
        column = wanted[role]
        if column is not None:
            values = frame[column]
            normalised = normalise_addresses(values.where(values != "")).tolist()
            for i, (given, address) in enumerate(zip(values.tolist(), normalised, strict=True)):
                if given:
                    per_person[i].append(address)
    if wanted["proxy"] is not None:
        tokens = frame[wanted["proxy"]].str.split(_PROXY_SPLIT).explode()
        smtp = tokens[tokens.str.lower().str.startswith("smtp:", na=False)]
        normalised = normalise_addresses(smtp.str.slice(5)).tolist()
        for i, address in zip(smtp.index.tolist(), normalised, strict=True):
            per_person[i].append(address)
    stable = frame[wanted["id"]].tolist() if wanted["id"] is not None else [""] * count
    units: list[str | None] = [None] * count
    if wanted["department"] is not None:
        departments = frame[wanted["department"]]
        distinct = departments.unique()
        unit_of = {d: normalise_unit(d) for d in distinct}
        units = [unit_of[d] for d in departments.tolist()]
    first_line: dict[str, int] = {}  # the line that listed an address first
    clashed: set[int] = set()  # the lines of every person whose address another has too
    for row, (addresses, key, unit) in enumerate(zip(per_person, stable, units, strict=True)):
        line = row + 2  # after the header line (a record with a line break counts one)
        if directory.add(addresses, key, unit):
            clashed.add(line)
            clashed.update(first_line[a] for a in addresses if a in first_line)
        for address in addresses:
            if address:
                first_line.setdefault(address, line)
    clashes = sorted(clashed)
    if clashes:
        # the lines are named, never the address: it belongs to two people of the file
        log.warning(
            "%s: %d address(es) listed for two different people (line(s) %s%s): each is "
            "left out of the directory, so its mail is keyed by the address in the unit "
            "'unknown'; correct the directory",
            path,
            len(directory.ambiguous),
            ", ".join(map(str, clashes[:5])),
            ", ..." if len(clashes) > 5 else "",
        )
    return directory


def _short_records(stream: TextIO, rows: int) -> list[tuple[int, int]]:
    """(row, line) of each record of a CSV ``stream`` with fewer fields than its header
    (which pandas fills with empty values): row numbers as pandas counts them (blank
    lines skipped), line numbers of the file. None found when the two readings do not
    agree on the number of rows (nothing to line up)."""
    reader = csv.reader(stream)
    header = next(reader, [])
    found, row = [], 0
    for record in reader:
        if not record:  # a blank line: pandas skips it too
            continue
        if len(record) < len(header):
            found.append((row, reader.line_num))
        row += 1
    return found if row == rows else []


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
    plain = "".join(
        c
        for c in decomposed
        # combining accents, and invisible format characters (a zero-width space inside
        # a name must not split it in two)
        if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    ).casefold()
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


#: Titles written before a surname (``Mr Quixote``), as :func:`name_phrase` leaves them.
_TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "herr", "frau")
#: Initials also read as words (``a long wait``, ``i young``): never taken for a name's.
_WORD_INITIALS = frozenset("ai")


def _other_spellings(given: str, surname: str, display: str) -> set[str]:
    """Further ways free text names a person of two or more name words: written as one
    word (``ZanzibarQuixote``), by initial and surname either way round (``Z. Quixote``,
    ``Quixote, Z.``) and by title (``Mr Quixote``). Without given name and surname
    columns, the display name's first and last words stand for them. Initial forms are
    made for surnames of at least five letters only, so that ordinary words do not
    become names ("a long wait" stays free)."""
    if not (given and surname):
        words = display.split()
        if len(words) < 2:
            return set()
        given, surname = words[0], words[-1]
    out = {f"{given}{surname}".replace(" ", ""), f"{surname}{given}".replace(" ", "")}
    last = surname.split()[-1]
    if len(last) >= 3:
        out.update(f"{title} {last}" for title in _TITLES)
    initial = given[0]
    if len(last) >= 5 and initial not in _WORD_INITIALS:
        out.update({f"{initial} {last}", f"{last} {initial}"})
    return out


def load_directory_names(path: Path) -> set[str]:
    """The people of a directory CSV as phrases to keep out of free text (triage notes,
    case reasons); read only when asked, never kept in a :class:`Directory`.

    Reads ``displayName``, ``givenName`` and ``surname`` (Entra export spellings, matched
    case-insensitively; ``sn`` too) and the address columns, and returns, normalised by
    :func:`name_phrase`: each display name and each "given surname" (and "surname given")
    of at least two words, their other spellings (:func:`_other_spellings`: run together,
    by initial, by title), and the local part of every listed address of at least
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
        display_p = name_phrase(display)
        candidates = [display_p]
        if given_p and surname_p:
            candidates += [f"{given_p} {surname_p}", f"{surname_p} {given_p}"]
        phrases.update(c for c in candidates if len(c.split()) >= 2)
        phrases.update(_other_spellings(given_p, surname_p, display_p))
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
