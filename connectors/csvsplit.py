"""Where a large CSV file can be cut into parts that are read apart (on Dask workers).

A record of a CSV file may hold line breaks inside a quoted field (Exchange exports quote
every field, and subjects carry newlines), so a line break is a record's end only outside
quotes. The only safe general rule is quote parity from the start of the file: a quote
opens or closes a quoted field, and ``""`` inside one (an escaped quote) closes and opens
it again, which keeps the parity (RFC 4180). A line feed after an even number of quotes
ends a record; the next byte starts one.

That rule is Arrow's reading of a file only while every quote is where RFC 4180 puts it:
Arrow sees a quote as a quote only at the start of a field, and as a plain character
anywhere else (``5" disk``, ``"a"b"c``). So every opening quote (even parity before it)
must start a field: follow a delimiter, a line break, the start of the file, or the quote
before it (the second quote of ``""``). A file with a quote anywhere else, or with an
unterminated quote (parity odd at the end), is not split: it is read whole, and its reader
reports what it reports today.

The file is scanned once, in blocks of :data:`SCAN_BYTES`, with NumPy: quotes are counted
per block (the parity carried from block to block), and line feeds looked at only near
the targets. UTF-16 files are scanned as 16-bit code units (a quote is 0x0022, a line feed
0x000A, never part of a surrogate pair); UTF-8 and single-byte files as bytes (in UTF-8, the
bytes of a quote and a line feed never occur inside a multi-byte character).
"""

from __future__ import annotations

import bisect
import codecs
import itertools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compliance.errors import InputError

log = logging.getLogger(__name__)

#: Bytes scanned at a time (the scan holds a few arrays of this many entries).
SCAN_BYTES = 4 << 20
#: The smallest part a file is cut into: a file is split into at most its size divided by
#: this many parts (a smaller part costs a task more than it saves). Tests lower it.
MIN_PART_BYTES = 64 << 20


@dataclass(frozen=True)
class _Units:
    """How a file's text is scanned: the code unit's NumPy type and where its text starts
    (after a byte-order mark)."""

    dtype: np.dtype
    start: int  # bytes of the byte-order mark

    @property
    def size(self) -> int:
        return self.dtype.itemsize


def _units(head: bytes, encoding: str) -> _Units | None:
    """The code units of a file in ``encoding`` (as :func:`connectors.textfile.detect_encoding`
    names it) that starts with ``head``; None for an encoding that cannot be scanned."""
    if encoding == "utf-16":  # with a byte-order mark, either order
        if head.startswith(codecs.BOM_UTF16_LE):
            return _Units(np.dtype("<u2"), 2)
        if head.startswith(codecs.BOM_UTF16_BE):
            return _Units(np.dtype(">u2"), 2)
        return None
    if encoding == "utf-16-le":
        return _Units(np.dtype("<u2"), 2 if head.startswith(codecs.BOM_UTF16_LE) else 0)
    if encoding == "utf-16-be":
        return _Units(np.dtype(">u2"), 2 if head.startswith(codecs.BOM_UTF16_BE) else 0)
    if encoding in ("utf-8", "utf-8-sig", "cp1252", "latin-1", "ascii"):
        return _Units(np.dtype("u1"), 3 if head.startswith(codecs.BOM_UTF8) else 0)
    return None


def part_encoding(encoding: str, head: bytes) -> str:
    """The codec that reads a part of a file that does not start at its beginning: without
    a byte-order mark, so ``utf-16`` (which expects one) becomes the file's byte order, and
    ``utf-8-sig`` plain ``utf-8``."""
    if encoding == "utf-16":
        return "utf-16-be" if head.startswith(codecs.BOM_UTF16_BE) else "utf-16-le"
    if encoding == "utf-8-sig":
        return "utf-8"
    return encoding


_QUOTE, _LF, _CR = 0x22, 0x0A, 0x0D
#: Blocks scanned at once (NumPy releases the GIL while it compares and gathers).
THREADS = max(1, min(4, os.cpu_count() or 1))


def record_starts(
    path: Path,
    targets: Sequence[int],
    encoding: str,
    delimiter: str = ",",
    *,
    after_records: int = 0,
) -> list[int] | None:
    """Byte offsets where records of the CSV file ``path`` start: for each of ``targets``
    (byte offsets), the first record start at or after it, past the first
    ``after_records`` records (a preamble and the header); sorted, each once, none at the
    end of the file. A target inside a long quoted field moves on to the record after it;
    targets past the last record give none (so there may be fewer offsets than targets).

    None when the file cannot be cut safely: an encoding or delimiter that cannot be
    scanned, a quote where RFC 4180 puts none (Arrow would read the file otherwise), or
    an unterminated quote.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
            units = _units(head, encoding)
            if units is None or len(delimiter) != 1 or ord(delimiter) > 0x7F:
                return None
            scan = _Scan(handle.fileno(), path.stat().st_size, units, ord(delimiter))
            return scan.record_starts(sorted(targets), after_records)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _Block:
    """What a block holds of quotes: how many, and whether every opening quote starts a
    field when the parity before the block is even, and when it is odd."""

    quotes: int
    fine: tuple[bool, bool]


class _Scan:
    """One file's scan: blocks summarised in parallel, then walked in order with the
    parity carried; line feeds are looked at only in the blocks that hold a target."""

    def __init__(self, fd: int, size: int, units: _Units, delimiter: int) -> None:
        self.fd, self.units, self.delimiter = fd, units, delimiter
        self.step = max(units.size, SCAN_BYTES - SCAN_BYTES % units.size)
        end = size - (size - units.start) % units.size  # whole code units only
        self.offsets = list(range(units.start, end, self.step))
        self.end = end

    def _read(self, offset: int) -> tuple[np.ndarray, int]:
        """The block at ``offset`` and the code unit before it (a line feed at the start)."""
        unit = self.units.size
        ahead = unit if offset > self.units.start else 0
        raw = os.pread(self.fd, min(self.step, self.end - offset) + ahead, offset - ahead)
        units = np.frombuffer(raw, dtype=self.units.dtype)
        return units[ahead // unit :], int(units[0]) if ahead else _LF

    def _summary(self, offset: int) -> _Block:
        block, previous = self._read(offset)
        quotes = np.flatnonzero(block == _QUOTE)
        fine = []
        for parity in (0, 1):  # an opening quote must start a field
            opening = quotes[parity::2]
            before = block[np.maximum(opening - 1, 0)]
            if len(opening) and opening[0] == 0:
                before[0] = previous
            ok = (before == self.delimiter) | (before == _LF) | (before == _CR)
            fine.append(bool((ok | (before == _QUOTE)).all()))
        return _Block(len(quotes), (fine[0], fine[1]))

    def _starts(self, offset: int, parity: int) -> np.ndarray:
        """Byte offsets of the records that start in the block at ``offset`` (after a line
        feed outside quotes), given the parity of the quotes before it."""
        block, _ = self._read(offset)
        quotes = np.flatnonzero(block == _QUOTE)
        feeds = np.flatnonzero(block == _LF)
        even = (np.searchsorted(quotes, feeds) + parity) % 2 == 0
        starts: np.ndarray = offset + (feeds[even] + 1) * self.units.size
        return starts

    def record_starts(self, targets: list[int], after_records: int) -> list[int] | None:
        """See :func:`record_starts`."""
        with ThreadPoolExecutor(THREADS, thread_name_prefix="csvsplit") as pool:
            blocks = list(pool.map(self._summary, self.offsets))
        parities, parity = [], 0
        for offset, block in zip(self.offsets, blocks, strict=True):
            if not block.fine[parity]:
                log.debug("no split: a quote inside a field in the block at byte %d", offset)
                return None
            parities.append(parity)
            parity = (parity + block.quotes) % 2
        if parity:
            log.debug("no split: an unterminated quote")
            return None
        floor = self._floor(parities, after_records)
        if floor is None:
            return []
        found: list[int] = []
        at = 0  # the block where the search goes on
        for target in targets:
            want = max(target, floor + 1)
            at = max(at, bisect.bisect_right(self.offsets, want) - 1)
            while at < len(self.offsets):
                starts = self._starts(self.offsets[at], parities[at])
                hit = int(np.searchsorted(starts, want))
                if hit < len(starts):
                    start = int(starts[hit])
                    if start < self.end and (not found or start > found[-1]):
                        found.append(start)
                    break
                at += 1  # in a long quoted field: on to the next block
        return found

    def _floor(self, parities: list[int], records: int) -> int | None:
        """The start of the record after the first ``records`` (the first that may begin a
        part), or None when the file has no more."""
        if not records:
            return self.units.start
        for offset, parity in zip(self.offsets, parities, strict=True):
            starts = self._starts(offset, parity)
            if len(starts) >= records:
                return int(starts[records - 1])
            records -= len(starts)
        return None


def byte_ranges(
    path: Path,
    parts: int,
    encoding: str,
    delimiter: str = ",",
    *,
    after_records: int = 0,
    min_part_bytes: int | None = None,
) -> list[tuple[int, int]]:
    """Up to ``parts`` byte ranges ``[start, stop)`` of the CSV file ``path`` that together
    hold each of its records once, each cut at a record's start (:func:`record_starts`),
    none smaller than about ``min_part_bytes`` (default :data:`MIN_PART_BYTES`) except
    where records are larger. The first range starts at 0 (with the preamble and the
    header, ``after_records`` records); one range, the whole file, when it cannot be cut.
    """
    size = path.stat().st_size
    smallest = MIN_PART_BYTES if min_part_bytes is None else min_part_bytes
    count = min(parts, size // max(1, smallest))
    if count < 2:
        return [(0, size)]
    targets = [size * k // count for k in range(1, count)]
    starts = record_starts(path, targets, encoding, delimiter, after_records=after_records)
    if not starts:
        return [(0, size)]
    edges = [0, *starts, size]
    return list(itertools.pairwise(edges))


def shown(path: Path) -> str:
    """A file's name for a log line: never one that may hold an address."""
    return "a file" if "@" in path.name else path.name


def log_split(logger: logging.Logger, path: Path, kind: str, ranges: list[tuple[int, int]]) -> None:
    """Say that a file is read as several parts (its name when it holds no address)."""
    largest = max(stop - start for start, stop in ranges)
    logger.info(
        "%s (%s) is read as %d parts of at most %.1f MiB",
        shown(path),
        kind,
        len(ranges),
        largest / (1 << 20),
    )
