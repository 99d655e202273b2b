"""The privacy layer: the pseudonymisation key, pseudonyms, event keys and org-unit roll-up.

Pseudonyms are HMAC-SHA256 of a person's stable key (directory id, else primary
address) under a secret key that never leaves the process. The same key gives the
same pseudonym; another key gives unrelated ones. Nothing that maps pseudonyms back
to people is ever stored: re-identification recomputes pseudonyms over the directory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from compliance.errors import ConfigError, KeyMissingError

KEY_ENV: Final = "COMPLIANCE_PSEUDONYM_KEY"
KEY_FILE_ENV: Final = "COMPLIANCE_PSEUDONYM_KEY_FILE"
MIN_KEY_LENGTH: Final = 32
ROOT_UNIT: Final = "(organisation)"
#: Only for `compliance demo`: never accepted by any other command.
DEMO_KEY: Final = b"demo-key-not-secret-do-not-use-outside-the-demo-0000"

_KEY_HELP = (
    f"set {KEY_ENV} to a secret of at least {MIN_KEY_LENGTH} characters, or {KEY_FILE_ENV} "
    "to a file holding one (readable by its owner only); generate one with: "
    "python -c 'import secrets; print(secrets.token_hex(32))'"
)


def load_key(environ: Mapping[str, str] | None = None) -> bytes:
    """Read the pseudonymisation key from the environment, or refuse with what to do."""
    env = os.environ if environ is None else environ
    value, path = env.get(KEY_ENV), env.get(KEY_FILE_ENV)
    if value and path:
        raise ConfigError(f"both {KEY_ENV} and {KEY_FILE_ENV} are set; keep only one")
    if path:
        key_path = Path(path)
        try:
            mode = key_path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"{KEY_FILE_ENV}: {key_path} is readable by group or others; "
                    f"run: chmod 600 {key_path}"
                )
            value = key_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{KEY_FILE_ENV}: cannot read {key_path}: {exc.strerror or exc}"
            ) from None
    if not value:
        raise KeyMissingError(f"no pseudonymisation key: {_KEY_HELP}")
    if len(value) < MIN_KEY_LENGTH:
        raise KeyMissingError(f"the pseudonymisation key is too short: {_KEY_HELP}")
    key = value.encode("utf-8")
    if key == DEMO_KEY:
        raise KeyMissingError(f"the demo key may not be used outside the demo: {_KEY_HELP}")
    return key


#: Epoch of a store without key rotation: pseudonyms under the key itself.
NO_EPOCH: Final = "-"
ROTATIONS: Final = ("never", "yearly", "quarterly", "monthly")


def epoch_of(day: str, rotation: str) -> str:
    """The key epoch a day (``YYYY-MM-DD``) belongs to: ``2026``, ``2026-Q4``, ``2026-11``."""
    if rotation == "never":
        return NO_EPOCH
    year, month = day[:4], int(day[5:7])
    if rotation == "yearly":
        return year
    if rotation == "quarterly":
        return f"{year}-Q{(month - 1) // 3 + 1}"
    return f"{year}-{month:02d}"


class Pseudonymiser:
    """Keyed pseudonyms for people and keyed 64-bit keys for events.

    With key rotation, each epoch's pseudonyms use a key derived from the secret key
    and the epoch's name, so that pseudonyms of one epoch cannot be linked to another's
    without the secret key; the store records which epochs it has seen.
    """

    def __init__(self, key: bytes, rotation: str = "never") -> None:
        if rotation not in ROTATIONS:
            raise ConfigError(f"key rotation must be one of {', '.join(ROTATIONS)}")
        self._key = key
        self.rotation = rotation
        self._event_key = hmac.new(key, b"event-key", hashlib.sha256).digest()[:32]
        self._domain_key = hmac.new(key, b"retro-domain", hashlib.sha256).digest()[:32]
        self._pair_key = hmac.new(key, b"ring-edge", hashlib.sha256).digest()[:32]
        self._epoch_keys: dict[str, bytes] = {NO_EPOCH: key}
        self._pseudonyms: dict[tuple[str, str], str] = {}

    @property
    def key_id(self) -> str:
        """A fingerprint of the key, stored to detect a run with the wrong key."""
        return hmac.new(self._key, b"key-check", hashlib.sha256).hexdigest()[:16]

    def _epoch_key(self, epoch: str) -> bytes:
        key = self._epoch_keys.get(epoch)
        if key is None:
            key = hmac.new(self._key, b"epoch\x00" + epoch.encode(), hashlib.sha256).digest()
            self._epoch_keys[epoch] = key
        return key

    def epoch_id(self, epoch: str) -> str:
        """A fingerprint of one epoch's key."""
        return hmac.new(self._epoch_key(epoch), b"key-check", hashlib.sha256).hexdigest()[:16]

    def epoch(self, day: str) -> str:
        """The epoch of a day under this pseudonymiser's rotation."""
        return epoch_of(day, self.rotation)

    def pseudonym(self, person_key: str, epoch: str = NO_EPOCH) -> str:
        """The pseudonym of the person whose stable key is ``person_key``, in ``epoch``."""
        found = self._pseudonyms.get((person_key, epoch))
        if found is None:
            key = self._epoch_key(epoch)
            digest = hmac.new(key, b"person\x00" + person_key.encode(), hashlib.sha256)
            found = "p-" + digest.hexdigest()[:20]
            if len(self._pseudonyms) >= 1 << 18:
                self._pseudonyms.clear()  # bounded memory
            self._pseudonyms[(person_key, epoch)] = found
        return found

    def event_keys(self, *columns: pd.Series) -> np.ndarray:
        """A keyed signed 64-bit key per row from the given string columns."""
        parts = [c.fillna("").astype(str).to_numpy(dtype=object) for c in columns]
        key = self._event_key
        out = np.empty(len(parts[0]) if parts else 0, dtype=np.int64)
        for i, values in enumerate(zip(*parts, strict=True)):
            digest = hashlib.blake2b("\x00".join(values).encode(), key=key, digest_size=8)
            out[i] = int.from_bytes(digest.digest(), "big", signed=True)
        return out

    def domain_digests(self, domains: Iterable[str]) -> np.ndarray:
        """A keyed signed 64-bit digest of each registrable domain, for retro-hunt.

        Keyed BLAKE2b under a key derived from the secret key for this use only (neither
        the key of pseudonyms nor of event keys), the same in every key epoch: a digest
        names no domain to anyone without the secret key, and one listed domain is
        digested once however many epochs its earlier traffic spans. One hash call per
        value (about a second for a million; give distinct values).
        """
        template = hashlib.blake2b(key=self._domain_key, digest_size=8)

        def digest(value: str) -> int:
            one = template.copy()
            one.update(value.encode())
            return int.from_bytes(one.digest(), "big", signed=True)

        values = list(domains)
        return np.fromiter(map(digest, values), dtype=np.int64, count=len(values))

    def pair_digests(self, senders: Iterable[str], recipients: Iterable[str]) -> np.ndarray:
        """A keyed signed 64-bit digest of each (sender pseudonym, recipient pseudonym)
        pair, in that order, for ring rules: keyed BLAKE2b under a key derived for this use
        only, so that nobody without the secret key can tell which pair a digest is or test
        a guess. One hash call per pair (give distinct pairs)."""
        template = hashlib.blake2b(key=self._pair_key, digest_size=8)

        def digest(pair: tuple[str, str]) -> int:
            one = template.copy()
            one.update(f"{pair[0]}\x00{pair[1]}".encode())
            return int.from_bytes(one.digest(), "big", signed=True)

        pairs = list(zip(senders, recipients, strict=True))
        return np.fromiter(map(digest, pairs), dtype=np.int64, count=len(pairs))


def normalise_unit(value: object) -> str | None:
    """``' Sales / EMEA/ '`` becomes ``'Sales/EMEA'``; empty becomes ``None``."""
    if not isinstance(value, str):
        return None
    parts = [p.strip() for p in value.split("/")]
    path = "/".join(p for p in parts if p)
    return path or None


def parent_unit(unit: str) -> str:
    """The parent path of an org unit; top-level units have the organisation as parent."""
    head, sep, _ = unit.rpartition("/")
    return head if sep else ROOT_UNIT


def rollup_map(headcounts: Mapping[str, int], min_group_size: int) -> dict[str, str]:
    """Map every org unit to the unit it is reported as, given a minimum group size.

    A unit whose people (its own plus those of children merged into it) number fewer
    than ``min_group_size`` merges into its parent, recursively, deepest first; a
    top-level unit merges into the whole organisation. Units not in ``headcounts``
    but on a listed path (intermediate levels) count as empty.
    """
    own: dict[str, int] = {}
    for unit, count in headcounts.items():
        own[unit] = own.get(unit, 0) + count
        parent = parent_unit(unit)
        while parent != ROOT_UNIT and parent not in own:
            own[parent] = 0
            parent = parent_unit(parent)
    merged_into: dict[str, str] = {}
    for unit in sorted(own, key=lambda u: (-u.count("/"), u)):
        if own[unit] < min_group_size:
            parent = parent_unit(unit)
            merged_into[unit] = parent
            if parent != ROOT_UNIT:
                own[parent] += own[unit]
    result: dict[str, str] = {}
    for unit in own:
        target = unit
        while target in merged_into:
            target = merged_into[target]
        result[unit] = target
    return result


def suppress_small_cells(
    rows: list[dict[str, Any]], k: int, columns: tuple[str, ...] = ("people", "matched")
) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
    """Suppress cells that count fewer than ``k`` people, and enough others to protect them.

    ``columns`` are a count of people and one or more counts of their messages, per row.
    A row is a *primary* suppression when it counts 1 to k-1 people; all its cells in
    ``columns`` are withheld. The column totals are published, so withheld cells could
    be recovered by subtraction: *complementary* rows (of at least k people, smallest
    first) are withheld too, until an attacker who knows the rule (primaries hold 1 to
    k-1 people and at least one message in each column they count, complements at least
    k) cannot narrow any primary below the whole range 1..k-1. When no complement is
    left, the totals are withheld instead.

    Returns the rows (withheld cells are None) and the totals (None when withheld).
    """
    people = columns[0]
    out = [dict(r) for r in rows]
    totals: dict[str, int | None] = {c: sum(int(r[c]) for r in rows) for c in columns}
    primary = [i for i, r in enumerate(rows) if 0 < int(r[people]) < k]
    if not primary:
        return out, totals

    # slack: how far the withheld cells exceed the lower bounds an attacker can assume
    # (a primary row holds at least 1 person, a complement at least k; message cells are
    # bounded below the same way when nonzero, and by 0 otherwise)
    def floor(value: int, low: int) -> int:
        return low if value > 0 else 0

    slack = {c: sum(int(rows[i][c]) - floor(int(rows[i][c]), 1) for i in primary) for c in columns}
    chosen: list[int] = []
    candidates = sorted(
        (i for i, r in enumerate(rows) if int(r[people]) >= k),
        key=lambda i: tuple(int(rows[i][c]) for c in columns),
    )

    def short() -> bool:
        return not chosen or any(slack[c] < k - 2 for c in columns if totals[c])

    while candidates and short():
        need = {c: k - 2 - slack[c] for c in columns}
        enough = [
            i
            for i in candidates
            if all(
                int(rows[i][c]) - floor(int(rows[i][c]), k) >= need[c] for c in columns if totals[c]
            )
        ]
        pick = enough[0] if enough else candidates[-1]
        candidates.remove(pick)
        chosen.append(pick)
        for c in columns:
            slack[c] += int(rows[pick][c]) - floor(int(rows[pick][c]), k)
    for i in primary + chosen:
        for c in columns:
            out[i][c] = None
    if short():
        totals = {c: None for c in columns}
    return out, totals


class PersonLinker:
    """Who is the same person across key epochs, in memory only, for counting people.

    With key rotation a person has one pseudonym per epoch, so counting distinct
    pseudonyms would count someone active on both sides of a rotation twice (and could
    lift a small group over the suppression threshold). The job holds the key and the
    directory, so it can recompute each listed person's pseudonym in every epoch the
    data touches and map them to one number. That mapping lives only in this object:
    it is never stored, logged or shown. People the directory does not list cannot be
    linked; :func:`count_people` counts them as a lower bound.
    """

    def __init__(self, pseudonymiser: Pseudonymiser, person_keys: list[str]) -> None:
        self._pseudonymiser = pseudonymiser
        self._keys = sorted(set(person_keys))
        self._by_epoch: dict[str, dict[str, int]] = {}

    def _epoch_map(self, epoch: str) -> dict[str, int]:
        found = self._by_epoch.get(epoch)
        if found is None:
            pseudonym = self._pseudonymiser.pseudonym
            found = {pseudonym(key, epoch): i for i, key in enumerate(self._keys)}
            self._by_epoch[epoch] = found
        return found

    def ids(self, subjects: pd.Series, epochs: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(person number, linked) per row: one number per listed person across epochs;
        an unlisted pseudonym gets a number of its own (``linked`` False)."""
        return _link(subjects, epochs, self._epoch_map if self._keys else None)


def _link(
    subjects: pd.Series, epochs: pd.Series, epoch_map: Any | None
) -> tuple[np.ndarray, np.ndarray]:
    pairs = pd.MultiIndex.from_arrays([subjects.astype("string"), epochs.astype("string")])
    codes, uniques = pd.factorize(pairs)
    listed = 1 << 40  # listed people and unlisted pseudonyms never share a number
    ids = np.empty(len(uniques), dtype=np.int64)
    linked = np.zeros(len(uniques), dtype=bool)
    own: dict[str, int] = {}
    for i, (subject, epoch) in enumerate(uniques):
        person = epoch_map(str(epoch)).get(subject) if epoch_map is not None else None
        if person is None:
            ids[i] = listed + own.setdefault(str(subject), len(own))
        else:
            ids[i], linked[i] = person, True
    return ids[codes], linked[codes]


def plain_ids(subjects: pd.Series, epochs: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Person numbers without a linker: one per pseudonym; linked only without rotation."""
    ids, _ = _link(subjects, epochs, None)
    no_rotation = (epochs.astype("string") == NO_EPOCH).to_numpy(dtype=bool, na_value=False)
    return ids, no_rotation


def count_people(ids: np.ndarray, linked: np.ndarray, epochs: np.ndarray) -> int:
    """Distinct people: listed people once across epochs; unlisted ones, who cannot be
    linked, as many as the largest number seen in any one epoch (a lower bound, so a
    small group is never counted above its size). Pure NumPy: it runs per alert."""
    if not len(ids):
        return 0
    if linked.all() or (not linked.any() and (epochs == epochs[0]).all()):
        return len(np.unique(ids))  # all linked, or all in one epoch: exact
    total = len(np.unique(ids[linked]))
    rest = ~linked
    if rest.any():
        _, epoch_code = np.unique(epochs[rest], return_inverse=True)
        pairs = np.unique((epoch_code.astype(np.int64) << 42) + ids[rest])  # ids < 2**41
        total += int(np.bincount(pairs >> 42).max())
    return total
