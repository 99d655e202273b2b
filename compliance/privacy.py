"""The privacy layer: the pseudonymisation key, pseudonyms, event keys and org-unit roll-up.

Pseudonyms are HMAC-SHA256 of a person's stable key (directory id, else primary
address) under a secret key that never leaves the process. The same key gives the
same pseudonym; another key gives unrelated ones. Nothing that maps pseudonyms back
to people is ever stored: re-identification recomputes pseudonyms over the directory.

Event keys (what a store counts each message once by) are keyed SipHash-2-4 under a key
derived from the secret key, vectorised over Arrow buffers (:func:`siphash24`); a store
begun before them keeps its keyed BLAKE2b keys for the days it had counted
(:meth:`Pseudonymiser.event_keys`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from compliance.errors import ConfigError, KeyMissingError
from compliance.hashing import string_buffers

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


# SipHash-2-4 (Aumasson and Bernstein, 2012): the keyed PRF of event keys, over NumPy
# uint64 lanes. A 128-bit key (two little-endian words k0, k1) sets the state; every
# 8-byte little-endian word m of the message goes through ``v3 ^= m; 2 rounds; v0 ^= m``;
# the last word holds the 0 to 7 bytes left with the message's length mod 256 in its top
# byte; then ``v2 ^= 0xff``, 4 rounds, and the result is ``v0 ^ v1 ^ v2 ^ v3``.

#: The initial state words ("somepseudorandomlygeneratedbytes").
_SIP_INIT: Final = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)
#: Values hashed together at most: the state of a block stays in the CPU's cache.
_SIP_BLOCK: Final = 16384
#: Longer strings (garbage, never a message id or an address) are hashed one by one.
_SIP_LONG: Final = 1024
_M64: Final = (1 << 64) - 1
_ONE = np.uint64(1)


def _sip_key(key: bytes) -> tuple[int, int]:
    if len(key) != 16:
        raise ValueError("a SipHash key has 16 bytes")
    return int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")


def _sip_state(k0: int, k1: int, count: int) -> list[np.ndarray]:
    c0, c1, c2, c3 = _SIP_INIT
    return [
        np.full(count, np.uint64(v), dtype=np.uint64) for v in (k0 ^ c0, k1 ^ c1, k0 ^ c2, k1 ^ c3)
    ]


def _rotl(x: np.ndarray, bits: int, tmp: np.ndarray) -> None:
    """Rotate the words of ``x`` left by ``bits``, in place (``tmp``: scratch space)."""
    np.left_shift(x, np.uint64(bits), out=tmp)
    np.right_shift(x, np.uint64(64 - bits), out=x)
    np.bitwise_or(x, tmp, out=x)


def _sip_rounds(v: list[np.ndarray], tmp: np.ndarray, rounds: int) -> None:
    """SipRound ``rounds`` times over the state words ``v``, in place."""
    v0, v1, v2, v3 = v
    for _ in range(rounds):
        np.add(v0, v1, out=v0)
        _rotl(v1, 13, tmp)
        np.bitwise_xor(v1, v0, out=v1)
        _rotl(v0, 32, tmp)
        np.add(v2, v3, out=v2)
        _rotl(v3, 16, tmp)
        np.bitwise_xor(v3, v2, out=v3)
        np.add(v0, v3, out=v0)
        _rotl(v3, 21, tmp)
        np.bitwise_xor(v3, v0, out=v3)
        np.add(v2, v1, out=v2)
        _rotl(v1, 17, tmp)
        np.bitwise_xor(v1, v2, out=v1)
        _rotl(v2, 32, tmp)


def _sip_absorb(v: list[np.ndarray], tmp: np.ndarray, word: np.ndarray) -> None:
    """Compress one message word per lane into the state ``v``, in place."""
    np.bitwise_xor(v[3], word, out=v[3])
    _sip_rounds(v, tmp, 2)
    np.bitwise_xor(v[0], word, out=v[0])


def _sip_finish(v: list[np.ndarray], tmp: np.ndarray) -> np.ndarray:
    """The finalisation: the 64-bit result of each lane."""
    np.bitwise_xor(v[2], np.uint64(0xFF), out=v[2])
    _sip_rounds(v, tmp, 4)
    out: np.ndarray = v[0] ^ v[1] ^ v[2] ^ v[3]
    return out


def _siphash24_scalar(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4 of one byte string, in Python integers (for the rare long value)."""
    c0, c1, c2, c3 = _SIP_INIT
    v0, v1, v2, v3 = k0 ^ c0, k1 ^ c1, k0 ^ c2, k1 ^ c3

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64 ^ v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64 ^ v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64 ^ v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64 ^ v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64

    end = len(data) - len(data) % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, end, 8)]
    words.append(int.from_bytes(data[end:], "little") | ((len(data) & 0xFF) << 56))
    for m in words:
        v3 ^= m
        rounds(2)
        v0 ^= m
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def _sip_strings(
    k0: int, k1: int, word_at: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """SipHash-2-4 of strings given by their starts and lengths in ``word_at`` (the word
    at every byte position), ordered by decreasing number of message words: word ``j`` of
    every string that has one is absorbed at once, and those strings are a prefix."""
    count = len(starts)
    blocks = lengths // 8 + 1  # message words, the last one partial (with the length)
    # how many strings have more than j words, for every j (blocks decrease)
    having = np.searchsorted(-blocks, -np.arange(int(blocks[0]) + 1), side="left")
    v, tmp = _sip_state(k0, k1, count), np.empty(count, dtype=np.uint64)
    size = lengths.astype(np.uint64)
    for j in range(int(blocks[0])):
        k, full = int(having[j]), int(having[j + 1])
        word = word_at[starts[:k] + 8 * j]
        if full < k:  # the last word of strings [full, k): the bytes left and the length
            last = word[full:k]
            left = size[full:k] - np.uint64(8 * j)
            last &= (_ONE << (left * np.uint64(8))) - _ONE
            last |= size[full:k] << np.uint64(56)
        _sip_absorb([x[:k] for x in v], tmp[:k], word)
    return _sip_finish(v, tmp)


def siphash24(key: bytes, values: pa.Array) -> np.ndarray:
    """SipHash-2-4 under the 16-byte ``key`` of the UTF-8 bytes of each string of an Arrow
    string array (null as ``""``), as uint64.

    Vectorised over the array's own buffers, as :func:`compliance.hashing.string_hashes`
    is: strings are read 8 bytes at a time through an unaligned view, and word ``j`` of
    all strings is compressed at once, in blocks of strings small enough for the CPU's
    cache; strings longer than ``_SIP_LONG`` bytes (never an id or an address) are hashed
    one by one. Give distinct values: the work is per string.
    """
    k0, k1 = _sip_key(key)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    values = values.fill_null("")
    out = np.empty(len(values), dtype=np.uint64)
    if not len(values):
        return out
    data, starts, lengths = string_buffers(values)
    long = lengths > _SIP_LONG
    for i in np.flatnonzero(long).tolist():  # rare: one by one
        start = int(starts[i])
        out[i] = _siphash24_scalar(k0, k1, data[start : start + int(lengths[i])].tobytes())
    # the little-endian 8-byte word at every byte position (an unaligned view, no copy)
    word_at = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    short = np.flatnonzero(~long)
    order = short[np.argsort(-(lengths[short] // 8), kind="stable")]
    for first in range(0, len(order), _SIP_BLOCK):
        at = order[first : first + _SIP_BLOCK]
        out[at] = _sip_strings(k0, k1, word_at, starts[at], lengths[at])
    return out


def siphash24_words(key: bytes, words: Sequence[np.ndarray]) -> np.ndarray:
    """SipHash-2-4 under the 16-byte ``key`` of a message of ``len(words)`` 64-bit words
    per lane (word ``i`` of lane ``n`` is ``words[i][n]``, read as 8 little-endian bytes),
    as uint64: what :func:`siphash24` gives for those bytes."""
    k0, k1 = _sip_key(key)
    count = len(words[0]) if words else 0
    if any(len(w) != count for w in words):
        raise ValueError("every word column needs one value per lane")
    length_word = np.uint64(((8 * len(words)) & 0xFF) << 56)
    out = np.empty(count, dtype=np.uint64)
    for first in range(0, count, _SIP_BLOCK):
        block = slice(first, min(first + _SIP_BLOCK, count))
        size = block.stop - block.start
        v, tmp = _sip_state(k0, k1, size), np.empty(size, dtype=np.uint64)
        for word in words:
            _sip_absorb(v, tmp, np.asarray(word[block], dtype=np.uint64))
        _sip_absorb(v, tmp, np.full(size, length_word, dtype=np.uint64))
        out[block] = _sip_finish(v, tmp)
    return out


def _days_through(days: pa.Array, last: str | None) -> np.ndarray:
    """Per row, whether its day (``YYYY-MM-DD``) is on or before ``last`` (None: never);
    compared once per distinct day."""
    if last is None:
        return np.zeros(len(days), dtype=bool)
    if isinstance(days, pa.ChunkedArray):
        days = days.combine_chunks()
    encoded = days if pa.types.is_dictionary(days.type) else pc.dictionary_encode(days)
    distinct = [d is not None and d <= last for d in encoded.dictionary.to_pylist()]
    through = np.array([*distinct, False], dtype=bool)  # a day missing: after
    codes = encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
    taken: np.ndarray = through[np.asarray(codes, dtype=np.int64)]
    return taken


def _strings(values: pa.Array) -> np.ndarray:
    """The Python string of each row (null as ``""``), each distinct one built once for a
    dictionary-encoded array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        out: np.ndarray = values.fill_null("").to_numpy(zero_copy_only=False)
        return out
    distinct = np.array([*values.dictionary.fill_null("").to_pylist(), ""], dtype=object)
    codes = values.indices.fill_null(len(distinct) - 1).to_numpy(zero_copy_only=False)
    taken: np.ndarray = distinct[np.asarray(codes, dtype=np.int64)]
    return taken


def _value_hashes(
    key: bytes, values: pa.Array, hashed: list[tuple[pa.Array, np.ndarray]]
) -> np.ndarray:
    """:func:`siphash24` of each row's string, computed once per distinct value of a
    dictionary-encoded array (a dictionary already in ``hashed``, as senders and
    recipients share theirs, is not hashed again), or once per run of equal neighbours
    of a plain one (the rows of one message to several recipients follow each other;
    sorting out every repeat would cost more than hashing it). A few rows of a large
    dictionary (the matched rows of a chunk) hash only the values they use."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        if 4 * len(values) < len(values.dictionary):  # few rows of a large dictionary
            used, codes = np.unique(
                values.indices.fill_null(-1).to_numpy(zero_copy_only=False), return_inverse=True
            )
            present = values.dictionary.take(pa.array(np.maximum(used, 0)))
            hashes = siphash24(key, present.fill_null(""))
            hashes[used < 0] = siphash24(key, pa.array([""]))[0]  # a null row: as ""
            compact: np.ndarray = hashes[codes.reshape(-1)]
            return compact
        dictionary = values.dictionary.fill_null("")
        found = [h for d, h in hashed if d.equals(dictionary)]
        if found:
            hashes = found[0]
        else:  # with the hash of "" for a null row at the end
            hashes = siphash24(key, pa.concat_arrays([dictionary, pa.array([""], dictionary.type)]))
            hashed.append((dictionary, hashes))
        codes = values.indices.fill_null(len(hashes) - 1).to_numpy(zero_copy_only=False)
        by_code: np.ndarray = hashes[np.asarray(codes, dtype=np.int64)]
        return by_code
    count = len(values)
    if count < 2:
        return siphash24(key, values)
    values = values.fill_null("")
    same = pc.equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)
    first = np.concatenate([[True], ~np.asarray(same, dtype=bool)])  # of a run
    if first.all():
        return siphash24(key, values)
    hashes = siphash24(key, values.filter(pa.array(first)))
    taken: np.ndarray = hashes[np.cumsum(first) - 1]
    return taken


def row_siphash(value_key: bytes, row_key: bytes, columns: Sequence[pa.Array]) -> np.ndarray:
    """A keyed 64-bit hash of each row of some string columns (null as ``""``): each
    value's :func:`siphash24` under ``value_key`` (once per distinct value of a
    dictionary-encoded column, see :func:`_value_hashes`), the row's values' hashes then
    combined by :func:`siphash24_words` under ``row_key``. Without the keys, nobody can
    choose rows that share a hash."""
    hashed: list[tuple[pa.Array, np.ndarray]] = []
    words = [_value_hashes(value_key, column, hashed) for column in columns]
    return siphash24_words(row_key, words)


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
        sip = hmac.new(key, b"event-key-siphash", hashlib.sha256).digest()
        self._value_key, self._message_key = sip[:16], sip[16:]
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

    def event_keys(
        self,
        message_ids: pa.Array,
        senders: pa.Array,
        recipients: pa.Array,
        days: pa.Array,
        scheme1_through: str | None = None,
    ) -> np.ndarray:
        """The keyed event key (signed 64-bit) of each row's message: from its message id,
        normalised sender and normalised recipient (Arrow string arrays, plain or
        dictionary-encoded; null counts as ``""``) and its UTC day (``YYYY-MM-DD``, the
        same kind of array).

        A row whose day is on or before ``scheme1_through`` gets a scheme-1 key (keyed
        BLAKE2b of the three strings joined, one call per row: what stores written
        before scheme 2 hold for those days); every other row a scheme-2 key: each
        string's keyed SipHash-2-4, and the three 64-bit results combined by one more
        keyed SipHash-2-4, vectorised (:func:`siphash24`). Both use keys derived from
        the secret key for this use only, so that nobody holding a store can test a
        guess about a message. A key depends on the row only, never on its neighbours.
        """
        count = len(message_ids)
        if not len(senders) == len(recipients) == len(days) == count:
            raise ValueError("event keys need one message id, sender, recipient and day per row")
        old = _days_through(days, scheme1_through)
        if not old.any():
            return self._siphash_keys(message_ids, senders, recipients)
        if old.all():
            return self._blake2b_keys(message_ids, senders, recipients)
        out = np.empty(count, dtype=np.int64)
        new = ~old
        out[new] = self._siphash_keys(
            *(c.filter(pa.array(new)) for c in (message_ids, senders, recipients))
        )
        out[old] = self._blake2b_keys(
            *(c.filter(pa.array(old)) for c in (message_ids, senders, recipients))
        )
        return out

    def _siphash_keys(self, *columns: pa.Array) -> np.ndarray:
        """Scheme 2: keyed SipHash of each value, combined per row by keyed SipHash."""
        return row_siphash(self._value_key, self._message_key, columns).view(np.int64)

    def _blake2b_keys(self, *columns: pa.Array) -> np.ndarray:
        """Scheme 1, as stores written before scheme 2 hold it (never change it): keyed
        BLAKE2b of the row's strings joined by NUL (null as ``""``), one call per row."""
        parts = [_strings(column) for column in columns]
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

    The whole organisation is reported as what merged into it, so it must hold
    ``min_group_size`` people too: when the small top-level units merged into it hold
    fewer (a board of one beside two large divisions), the smallest units standing next
    to it (a top-level unit, or one whose parent merged into it) join it until it does,
    so that ``(organisation)`` is never one person.
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

    def target(unit: str) -> str:
        while unit in merged_into:
            unit = merged_into[unit]
        return unit

    # the whole organisation holds what merged into it: never fewer than the minimum
    at_root = sum(own[u] for u, p in merged_into.items() if p == ROOT_UNIT)
    while 0 < at_root < min_group_size:
        # units standing next to it (their parent is, or merged into, the organisation)
        beside = [
            u
            for u in own
            if u not in merged_into
            and (parent_unit(u) == ROOT_UNIT or target(parent_unit(u)) == ROOT_UNIT)
        ]
        if not beside:
            break
        unit = min(beside, key=lambda u: (own[u], u))
        merged_into[unit] = parent_unit(unit)
        at_root += own[unit]
    return {unit: target(unit) for unit in own}


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
