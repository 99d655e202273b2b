"""Message keys seen: the keyed 64-bit event key of every message counted in
``daily_totals``, by day, so that a message read again (overlapping exports, a window read
again, a unit retried after a failure) is counted once. Kept ``dedup_days``.

The table ``seen_keys`` is columnar: each row holds many keys of one day, packed in one
BLOB (int64, big-endian, 8 bytes each, sorted). Why this shape:

* A run asks about keys by the thousand. With one row per key (``seen_messages``, until
  the ``seen_keys`` migration) every key was a probe into a B-tree of every key kept, and
  every new key a random insert into it: most of a scheduled run's time. Here a run
  reads each day it meets once (a few sequential BLOB reads), looks keys up in memory
  with ``np.searchsorted`` on the day's sorted array, and appends a day's new keys as one
  row.
* The day is the unit of lookup, of caching and of purging: a run's mail is mostly in
  one or two days; ``purge`` drops whole rows. A message is known by its key within a
  day of its own: a key is looked for under the message's day and the days either side,
  so that a read of it with a time a little apart (another source's event, past
  midnight) still finds it.
* The index on ``day`` finds a day's rows; there are few (days times a few), so it is
  small. The rows of a day are merged into one when there are more than
  :data:`MAX_ROWS` (a run every 15 minutes adds a row to each day it reads; a merge
  rewrites the day, so a day's keys are written a few times over a day), so a day is
  always a few BLOB reads; a day of more than :data:`ROW_KEYS` keys is kept in several
  rows of consecutive key ranges, each well below SQLite's limit on a value.
* Big-endian, because that is what SQL can write: the migration from ``seen_messages``
  runs in plain SQL (SQLite 3.40 has no ``unhex``), and keeps each day's keys as the hex
  TEXT of the same bytes (``printf('%016X')``); :func:`unpack` reads both, and a day's
  TEXT rows become one BLOB the next time keys are added to it.

The repository caches the days it has read (:class:`SeenKeys`), with a filter of each
day's keys that rules out most new keys without a search. A transaction's new keys go
into the cache at once and into the table just before it commits, one row per day
(:meth:`Database.before_commit <compliance.store.database.Database.before_commit>`): the
keys of a read unit are committed in the unit's transaction, or not at all, and a large
unit writes each day once, not once per chunk. The cache never outlives what it mirrors:
a rolled-back transaction or another process's commit empties it
(:meth:`SeenKeys._check`).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from compliance.errors import StoreError
from compliance.hashing import sorted_firsts, sorted_members
from compliance.store.database import Database, Repository

#: How a key is stored: 8 bytes, big-endian, signed.
KEY = np.dtype(">i8")
#: A day's rows are merged when there are more than this many beyond those its size needs.
MAX_ROWS = 4
#: Keys of one row at most (128 MiB, far below SQLite's limit of 1 GB on a value).
ROW_KEYS = 1 << 24
#: Keys the cache holds at most (256 MiB); the days used longest ago are dropped first
#: (they are in the table: dropping one only means reading it again when needed).
CACHE_KEYS = 1 << 25

_EMPTY = np.empty(0, dtype=np.int64)
#: Tokens that mark the cache's writes in the connection's temporary table.
_TOKENS = itertools.count(1)


def pack(keys: np.ndarray) -> bytes:
    """The stored form of ``keys`` (int64, in the order given: sort them first)."""
    return np.ascontiguousarray(keys, dtype=KEY).tobytes()


def unpack(value: bytes | str) -> np.ndarray:
    """The keys (int64) of one stored row: a BLOB, or the hex TEXT of the same bytes that
    the ``seen_keys`` migration wrote."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    except ValueError:
        raw = b"?"
    if len(raw) % KEY.itemsize:
        raise StoreError("a row of the store's seen_keys table is damaged (not whole keys)")
    return np.frombuffer(raw, dtype=KEY).astype(np.int64)


def _pieces(count: int) -> int:
    """Rows a day of ``count`` keys needs."""
    return max(1, -(-count // ROW_KEYS))


def _by_day(
    days: pd.Series | np.ndarray, keys: np.ndarray
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Per distinct day, earliest first: the day, the positions of its rows (in their given
    order) and their keys (so that a message given on two neighbouring days in one call
    counts on the earlier). Days are coded once per distinct value; rows are grouped by a stable
    counting sort of the codes (no sort of the keys)."""
    codes, names = pd.factorize(pd.Series(days, copy=False), sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError("message keys without a day")
    if len(names) == 1:
        yield str(names[0]), np.arange(len(keys)), keys
        return
    small = np.int16 if len(names) < (1 << 15) else np.int64  # a radix sort for int16
    order = np.argsort(codes.astype(small), kind="stable")
    counts = np.bincount(codes, minlength=len(names))
    ends = np.cumsum(counts)
    for code, (start, end) in enumerate(zip((ends - counts).tolist(), ends.tolist(), strict=True)):
        at = order[start:end]
        yield str(names[code]), at, keys[at]


def _neighbours(day: str) -> tuple[str, ...]:
    """The days before and after ``day`` (none for a value that is not a date)."""
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        return ()
    out = []
    for step in (-1, 1):
        try:
            out.append((date + dt.timedelta(days=step)).isoformat())
        except OverflowError:  # the first or last day there is
            continue
    return tuple(out)


@dataclass
class _Day:
    """A day's keys as the table holds them: sorted, with the number of rows they are
    in and whether one is migrated hex TEXT; and a filter of them.

    The filter is one bit per bucket of keys that share their top bits, at least 4 buckets
    a key (a Bloom filter of one hash: keys are keyed hashes, spread evenly). A key whose
    bucket is empty is not among the keys; only the others are looked for by binary
    search. Most keys a run asks about are new, and most of those are ruled out by one
    look at the filter instead of a search of the day's keys."""

    keys: np.ndarray
    rows: int
    text: bool
    _bits: np.ndarray = field(init=False, repr=False)
    _shift: np.uint64 = field(init=False, repr=False)
    #: per key, whether it was added since the day was last written (None: none was)
    _staged: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rebuild()

    def holds(self, wanted: np.ndarray) -> np.ndarray:
        """Which of ``wanted`` (sorted) are among the keys."""
        found = np.zeros(len(wanted), dtype=bool)
        if not len(wanted) or not len(self.keys):
            return found
        maybe = np.flatnonzero(self._marked(wanted))
        if len(maybe):
            found[maybe] = sorted_members(wanted[maybe], self.keys)
        return found

    def add(self, new: np.ndarray) -> None:
        """Take ``new`` (sorted, distinct, none held) among the keys, staged: marked as
        not in the table yet (one byte a key of the day while any is staged)."""
        at = np.searchsorted(self.keys, new)
        staged = self._staged if self._staged is not None else np.zeros(len(self.keys), bool)
        self.keys = np.insert(self.keys, at, new)
        self._staged = np.insert(staged, at, True)
        if 4 * len(self.keys) > 8 * len(self._bits):
            self._rebuild()  # grown past 4 buckets a key: sized again
        else:
            self._mark(new)

    def staged(self) -> np.ndarray:
        """The keys added since the day was last written (sorted)."""
        return _EMPTY if self._staged is None else self.keys[self._staged]

    def written(self, rows: int, text: bool) -> None:
        """The staged keys are in the table now, which holds the day in ``rows`` rows."""
        self._staged, self.rows, self.text = None, rows, text

    def _rebuild(self) -> None:
        width = max(10, len(self.keys).bit_length() + 3)  # 8 to 16 buckets a key
        self._shift = np.uint64(64 - width)
        self._bits = np.zeros(1 << (width - 3), dtype=np.uint8)
        self._mark(self.keys)

    def _buckets(self, keys: np.ndarray) -> np.ndarray:
        return (keys.view(np.uint64) >> self._shift).astype(np.intp)

    def _mark(self, keys: np.ndarray) -> None:
        bucket = self._buckets(keys)
        np.bitwise_or.at(self._bits, bucket >> 3, np.left_shift(1, bucket & 7).astype(np.uint8))

    def _marked(self, keys: np.ndarray) -> np.ndarray:
        bucket = self._buckets(keys)
        marked: np.ndarray = (self._bits[bucket >> 3] >> (bucket & 7).astype(np.uint8)) & 1 == 1
        return marked


class SeenKeys(Repository):
    """The ``seen_keys`` table, with the days it has read in memory.

    Days and keys come as columns (a Series or array of ISO days, an int64 array of
    keys); every method works per distinct day, never per key. Call :meth:`add` inside
    the transaction that counts the messages (one per read unit).
    """

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._days: OrderedDict[str, _Day] = OrderedDict()
        #: What the cache was filled under: the connection's data version (another
        #: process's commit changes it) and the token of its last write (a rollback
        #: takes the token back with the write).
        self._version: int | None = None
        self._token: int | None = None
        #: The days with keys of the open transaction, in the cache already and written
        #: once, at its commit (:meth:`_flush`): a large read unit adds keys to a day chunk
        #: after chunk, and writing each batch as it came would rewrite the day's rows
        #: again and again as they were merged.
        self._pending: dict[str, None] = {}

    def seen(self, days: pd.Series | np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Whether each (day, key) was seen: stored, or added earlier in this transaction.
        Rows repeated among ``keys`` are all True or all False."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return out
        self._check()
        for day, at, day_keys in _by_day(days, keys):
            out[at] = self._known(day, day_keys)
        self._bound()
        return out

    def add(self, days: pd.Series | np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Remember these (day, key) pairs; return which rows were new: the first row of
        each pair not seen before. The keys are written at the commit of the caller's
        transaction if there is one, else of one of its own: one row per day met (a day's
        rows are merged when there are too many)."""
        keys = np.asarray(keys, dtype=np.int64)
        fresh = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return fresh
        with self.db.writing():
            self._check()
            for day, at, day_keys in _by_day(days, keys):
                entry = self._day(day)
                order, ordered, new = sorted_firsts(day_keys)
                new &= ~self._known_sorted(day, ordered)
                if new.any():  # each new key once, at the first row that has it
                    self._stage(day, entry, ordered[new])
                    fresh[at[order[new]]] = True
        self._bound()
        return fresh

    def purge(self, before_day: str) -> int:
        """Forget the keys of the days before ``before_day``; how many."""
        count = self.conn.execute(
            "SELECT coalesce(sum(CASE typeof(keys) WHEN 'text' THEN length(keys) / 16 "
            "ELSE length(keys) / 8 END), 0) FROM seen_keys WHERE day < ?",
            (before_day,),
        ).fetchone()[0]
        self.conn.execute("DELETE FROM seen_keys WHERE day < ?", (before_day,))
        for day in [d for d in self._pending if d < before_day]:
            del self._pending[day]
            count += len(self._days[day].staged())
        for day in [d for d in self._days if d < before_day]:
            del self._days[day]  # a rollback brings them back: they are read again then
        return int(count)

    def counts(self) -> dict[str, int]:
        """Keys kept per day (for tests and status)."""
        out: dict[str, int] = {}
        for day, value in self.conn.execute("SELECT day, keys FROM seen_keys ORDER BY day"):
            out[day] = out.get(day, 0) + len(unpack(value))
        return out

    def _known(self, day: str, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` are kept under ``day`` or the day before or after it: a
        message read again from another source or event may carry a time a little apart
        (a delivery after midnight), and is still the same message."""
        order = np.argsort(keys)
        found = np.zeros(len(keys), dtype=bool)
        found[order] = self._known_sorted(day, keys[order])
        return found

    def _known_sorted(self, day: str, keys: np.ndarray) -> np.ndarray:
        """:meth:`_known` of sorted ``keys``."""
        found = np.zeros(len(keys), dtype=bool)
        for each in (day, *_neighbours(day)):
            found |= self._day(each).holds(keys)
        return found

    # --- the cache ------------------------------------------------------------------------

    def _check(self) -> None:
        """Empty the cache if it may differ from the table: another connection committed
        (``PRAGMA data_version`` changed), or a transaction that wrote keys was rolled back
        (its token in the temporary table went back with it)."""
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen_cache (token INTEGER NOT NULL)")
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        token = conn.execute("SELECT max(token) FROM temp.seen_cache").fetchone()[0]
        if version != self._version or token != self._token:
            if self._pending:  # never: the open transaction holds the write lock
                raise StoreError("the store changed under an open transaction")
            self._days.clear()
            self._version, self._token = version, token

    def _mark(self) -> None:
        """Mark the cache's coming write in the current transaction (see :meth:`_check`)."""
        self._token = next(_TOKENS)
        self.conn.execute("DELETE FROM temp.seen_cache")
        self.conn.execute("INSERT INTO temp.seen_cache VALUES (?)", (self._token,))

    def _day(self, day: str) -> _Day:
        """A day's keys, read from the table the first time."""
        entry = self._days.get(day)
        if entry is None:
            values = [
                row[0]
                for row in self.conn.execute("SELECT keys FROM seen_keys WHERE day = ?", (day,))
            ]
            arrays = [unpack(v) for v in values]
            keys = np.sort(np.concatenate(arrays), kind="stable") if arrays else _EMPTY
            entry = _Day(keys, len(values), any(isinstance(v, str) for v in values))
            self._days[day] = entry
        else:
            self._days.move_to_end(day)
        return entry

    def _bound(self) -> None:
        """Drop the days used longest ago while the cache holds more than CACHE_KEYS."""
        held = sum(len(e.keys) for e in self._days.values())
        for day in list(self._days):
            if held <= CACHE_KEYS or len(self._days) == 1:
                break
            if day not in self._pending:  # a day with keys to write stays
                held -= len(self._days.pop(day).keys)

    def _stage(self, day: str, entry: _Day, new: np.ndarray) -> None:
        """Take a day's new keys (sorted, distinct, none known) into the cache now, and
        into the table at the open transaction's commit."""
        if not self._pending:
            self._mark()
            self.db.before_commit(self._flush, self._discard)
        entry.add(new)
        self._pending[day] = None

    def _flush(self) -> None:
        """Write each day's staged keys as one row, then merge the day's rows if there are
        too many or some are migrated TEXT (called before the transaction commits)."""
        pending, self._pending = self._pending, {}
        for day in pending:
            entry = self._days[day]  # staged days stay in the cache
            new = entry.staged()
            self.conn.executemany(
                "INSERT INTO seen_keys (day, keys) VALUES (?, ?)",
                (
                    (day, pack(new[start : start + ROW_KEYS]))
                    for start in range(0, len(new), ROW_KEYS)
                ),
            )
            keys, rows = entry.keys, entry.rows + _pieces(len(new))
            if entry.text or rows > _pieces(len(keys)) + MAX_ROWS:
                self.conn.execute("DELETE FROM seen_keys WHERE day = ?", (day,))
                self.conn.executemany(
                    "INSERT INTO seen_keys (day, keys) VALUES (?, ?)",
                    (
                        (day, pack(keys[start : start + ROW_KEYS]))
                        for start in range(0, len(keys), ROW_KEYS)
                    ),
                )
                entry.written(_pieces(len(keys)), False)
            else:
                entry.written(rows, entry.text)

    def _discard(self) -> None:
        """The transaction rolled back: its staged keys are not in the table, nor is the
        cache what the table holds (read again when needed)."""
        self._pending.clear()
        self._days.clear()
        self._version = self._token = None
