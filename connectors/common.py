"""Small mechanisms the connectors (and the job's feed fetcher) share: how long a server's
``Retry-After`` asks to wait, and a compact set of 64-bit keys seen in one read."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import numpy as np

from compliance.hashing import members, sorted_members

#: The longest wait a server's Retry-After is followed for (seconds).
MAX_RETRY_AFTER = 300.0


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, Any]: ...


def retry_after(response: _HasHeaders, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds a response's ``Retry-After`` asks for (seconds or an HTTP date), capped to
    ``cap``; None when it asks nothing readable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        try:
            delay = parsedate_to_datetime(str(value)).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
        return min(max(delay, 0.0), cap)


class KeySet:
    """64-bit keys seen so far in one read, 8 bytes each, as a few sorted runs, each at
    least twice as long as the next: adding a chunk costs its own sort and a logarithmic
    number of merges, so n keys cost about n log n, not n per chunk."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` were added before."""
        return members(keys, *self.runs)

    def contains_sorted(self, keys: np.ndarray) -> np.ndarray:
        """:meth:`contains` of sorted ``keys`` (no sort of them again)."""
        return sorted_members(keys, *self.runs)

    def add(self, keys: np.ndarray) -> None:
        """Remember ``keys`` (best given only those not seen before: a key added twice is
        kept twice, which costs memory, never a wrong answer)."""
        self.add_sorted(np.unique(keys))

    def add_sorted(self, keys: np.ndarray) -> None:
        """:meth:`add` of sorted, distinct ``keys`` (kept as they are, not copied: give an
        array of their own)."""
        if not len(keys):
            return
        self.runs.append(keys)
        while len(self.runs) > 1 and len(self.runs[-2]) < 2 * len(self.runs[-1]):
            later = self.runs.pop()
            # two sorted runs: a stable sort (timsort) merges them in linear time
            self.runs.append(np.sort(np.concatenate([self.runs.pop(), later]), kind="stable"))
