"""Unkeyed 64-bit hashes of strings, vectorised over Arrow buffers: for telling equal
strings apart in memory, where a collision someone arranged could do no harm: a feed
index's lookup table (a hit is confirmed by comparing the names), and the message keys
an audit counts its totals by (a sender who arranged a collision would take a message off
the totals, never off the evidence: matched events are counted by keyed event keys).
Never for anything that decides what is evidence, or that anyone could read back: the
keyed hashes (pseudonyms, event keys, an extended report's repeated events) are
SipHash-2-4 in :mod:`compliance.privacy`.

Sets of such 64-bit keys are kept as sorted arrays; :func:`members` is the one test of
membership every such set uses, and :func:`sorted_firsts` the one way of keeping the first
row of each key. :func:`distinct_codes` is ``np.unique`` of small integer codes, counted.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def string_offsets(values: pa.Array) -> np.ndarray:
    """The offsets of a string (or large string) array's values in its data buffer, as
    the array's own buffer holds them (a view, no copy): value ``i`` is the bytes from
    ``offsets[i]`` to ``offsets[i + 1]``, the array's slice taken into account."""
    width = np.dtype(np.int64 if pa.types.is_large_string(values.type) else np.int32)
    offsets: np.ndarray = np.frombuffer(
        values.buffers()[1],
        dtype=width,
        count=len(values) + 1,
        offset=values.offset * width.itemsize,
    )
    return offsets


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bytes of a string array (followed by 8 zero bytes, so that the word at any
    string's end can be read), and each string's start in them and length: what the
    vectorised hashes (:func:`compliance.privacy.siphash24`, :func:`string_hashes`) read
    8 bytes at a time."""
    data_buffer = values.buffers()[2]
    offsets = string_offsets(values).astype(np.int64)
    first, end = int(offsets[0]), int(offsets[-1])
    data = np.zeros(end - first + 8, dtype=np.uint8)
    if end > first and data_buffer is not None:
        data[: end - first] = np.frombuffer(data_buffer, np.uint8, end - first, offset=first)
    return data, offsets[:-1] - first, offsets[1:] - offsets[:-1]


_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
#: Longer strings (garbage, not ids or addresses) are hashed one by one (BLAKE2b).
_LONG_STRING = 256


def mix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place: a bijection of 64-bit words that spreads every
    input bit over the whole output."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def string_hashes(values: pa.Array) -> np.ndarray:
    """An unkeyed 64-bit hash of each string of an Arrow string array (null as ``""``).

    Vectorised over the array's own buffers: every string is read 8 bytes at a time, and
    word ``j`` of all strings is absorbed at once (``h = mix(h ^ word)``, starting from
    the length), so the work is one NumPy pass per word of the longest string, over the
    strings that long; strings longer than ``_LONG_STRING`` bytes (never a message id or
    an address) are hashed one by one instead. Not a secret: only for telling equal
    strings apart in memory. The feed cache stores these hashes of its domains: a change
    to this function must bump ``compliance.feeds.cache.COMPILER_VERSION``.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    values = values.fill_null("")
    count = len(values)
    if not count:
        return np.empty(0, dtype=np.uint64)
    data, starts, lengths = string_buffers(values)  # a zero tail: the last word can be read
    # the little-endian 8-byte word at every byte position (an unaligned view, no copy)
    word_at = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    hashes = mix64(lengths.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    long = np.flatnonzero(lengths > _LONG_STRING)
    if len(long):  # rare (garbage in a column): hashed one by one, not word by word
        for i in long.tolist():
            start = int(starts[i])
            value = data[start : start + int(lengths[i])].tobytes()
            digest = hashlib.blake2b(value, digest_size=8).digest()
            hashes[i] = np.uint64(int.from_bytes(digest, "little"))
        lengths = lengths.copy()
        lengths[long] = 0  # done
    whole_words = int(lengths.min()) // 8  # words every string fills completely
    for j in range(int(lengths.max() + 7) // 8):
        if j < whole_words:
            hashes = mix64(hashes ^ word_at[starts + 8 * j])
            continue
        active = np.flatnonzero(lengths > 8 * j)
        left = lengths[active] - 8 * j
        mask = np.where(
            left >= 8,
            _ALL_BITS,
            (np.uint64(1) << (np.minimum(left, 7).astype(np.uint64) * np.uint64(8))) - 1,
        )
        hashes[active] = mix64(hashes[active] ^ (word_at[starts[active] + 8 * j] & mask))
    return hashes


def sorted_members(wanted: np.ndarray, *known: np.ndarray) -> np.ndarray:
    """Which of ``wanted`` (sorted) are in one of the ``known`` arrays (each sorted), by
    binary search: sorted queries keep each search near the last, in the CPU's cache."""
    found = np.zeros(len(wanted), dtype=bool)
    if not len(wanted):
        return found
    for keys in known:
        if len(keys):
            at = np.searchsorted(keys, wanted)
            np.minimum(at, len(keys) - 1, out=at)
            found |= keys[at] == wanted
    return found


def members(values: np.ndarray, *known: np.ndarray) -> np.ndarray:
    """Which of ``values`` (in any order) are in one of the ``known`` arrays (each sorted):
    :func:`sorted_members` of the values sorted once, in their own order again."""
    found = np.zeros(len(values), dtype=bool)
    if not len(values) or not any(len(k) for k in known):
        return found
    order = np.argsort(values)
    found[order] = sorted_members(values[order], *known)
    return found


def sorted_firsts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keys`` sorted once, stably: (the order, the sorted keys, whether each sorted key
    is the first of its value), so that of equal keys the earliest row is the first."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order, ordered, first


def distinct_codes(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True, return_counts=True)`` for codes in
    ``range(size)``: by counting rather than sorting when ``size`` is not much larger."""
    if size > 4 * len(codes) + 1024:
        distinct, at, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return distinct, at, counts
    counts = np.bincount(codes, minlength=size)
    distinct = np.flatnonzero(counts)
    number = np.cumsum(counts > 0) - 1  # of each code among the distinct ones
    return distinct, number[codes], counts[distinct]
