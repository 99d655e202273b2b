"""The keys of counted messages (``seen_keys``, compliance/store/seen.py): a message is
counted once however often it is read, over many runs a day, across a failed unit's
rollback and another process's commits, with a few rows per day; purges drop whole days.

The store is a real SQLite file; the end-to-end tests run the real CLI over real exports.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.errors import StoreError
from compliance.store import Store
from compliance.store.seen import MAX_ROWS, _Day, unpack
from tests.conftest import ps_row, run_cli, store_db, write_config, write_ps_export

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-07"]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _rows_per_day(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT day, count(*) FROM seen_keys GROUP BY day").fetchall())
    db.close()
    return rows


def _keys(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --- the repository -------------------------------------------------------------------------


def test_a_message_is_known_by_its_key_within_a_day_of_its_own(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.db") as store:
        fresh = store.seen.add(
            pd.Series(["2026-11-02", "2026-11-02", "2026-11-03", "2026-11-02"], dtype="string"),
            _keys([5, -(2**63), 5, 5]),
        )
        # the same key again, on its day or the next (a delivery past midnight): once
        assert fresh.tolist() == [True, True, False, False]
        asked = store.seen.seen(
            np.array(["2026-11-01", "2026-11-03", "2026-11-04", "2026-11-02"], dtype=object),
            _keys([-(2**63), 5, 5, 2**63 - 1]),
        )
        # two days apart is another message; another key, too
        assert asked.tolist() == [True, True, False, False]
    with Store.open(tmp_path / "store.db") as store:  # kept, not only cached
        assert store.seen.counts() == {"2026-11-02": 2}


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(INT64 | st.integers(-50, 50), max_size=600), min_size=1, max_size=10),
    asked=st.lists(INT64 | st.integers(-50, 50), max_size=200),
)
def test_a_days_filter_never_hides_a_key_it_holds(
    batches: list[list[int]], asked: list[int]
) -> None:
    """A day's keys grow batch by batch, past the sizes where its filter is rebuilt (small
    keys crowd into one bucket): every key held is found, every other key is not."""
    day = _Day(np.empty(0, dtype=np.int64), rows=0, text=False)
    model: set[int] = set()
    written: set[int] = set()
    for batch in batches:
        new = np.array(sorted(set(batch) - model), dtype=np.int64)
        day.add(new)
        assert day.staged().tolist() == sorted(set(day.keys.tolist()) - written)
        if len(model) % 3 == 0:  # now and then, the day is written
            day.written(day.rows + 1, text=False)
            written = set(day.keys.tolist())
        model |= set(batch)
        wanted = np.array(sorted(set(asked) | set(batch)), dtype=np.int64)
        assert day.holds(wanted).tolist() == [int(k) in model for k in wanted]
    assert day.keys.tolist() == sorted(model)


def test_a_day_read_from_the_table_is_filtered_alike(tmp_path: Path) -> None:
    """Keys of a day stored by one run are found by the next (its filter built from them),
    and twenty thousand other keys are not."""
    path = tmp_path / "store.db"
    rng = np.random.default_rng(7)
    held = rng.integers(-(2**63), 2**63 - 1, 30_000, dtype=np.int64)
    with Store.open(path) as store, store.transaction():
        store.seen.add(pd.Series(["2026-11-03"] * len(held)), held)
    others = rng.integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64)
    with Store.open(path) as store:
        days = pd.Series(["2026-11-03"] * (len(held) + len(others)))
        seen = store.seen.seen(days, np.concatenate([held, others]))
    assert seen[: len(held)].all() and not seen[len(held) :].any()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from(DAYS), INT64 | st.integers(0, 40)), max_size=60),
        min_size=1,
        max_size=12,
    ),
    reopen_at=st.integers(0, 12),
)
def test_add_counts_each_pair_once_as_a_set_would(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[str, int]]], reopen_at: int
) -> None:
    """Batches of (day, key), each in its transaction, the store reopened once on the way:
    exactly the pairs whose key a Python set does not hold within a day of theirs are new,
    at their first row (within a batch, on the earliest day)."""
    path = tmp_path_factory.mktemp("seen") / "store.db"
    model: set[tuple[str, int]] = set()

    def near(day: str) -> set[str]:
        date = dt.date.fromisoformat(day)
        return {(date + dt.timedelta(days=step)).isoformat() for step in (-1, 0, 1)}

    store = Store.open(path)
    try:
        for number, batch in enumerate(batches):
            if number == reopen_at:
                store.close()
                store = Store.open(path)
            expected = [False] * len(batch)
            # within one call, days are taken earliest first, rows in their order
            for i in sorted(range(len(batch)), key=lambda i: batch[i][0]):
                day, key = batch[i]
                if not any((near_day, key) in model for near_day in near(day)):
                    expected[i] = True
                    model.add((day, key))
            days = pd.Series([d for d, _ in batch], dtype="string")
            keys = _keys([k for _, k in batch])
            with store.transaction():
                fresh = store.seen.add(days, keys)
            assert fresh.tolist() == expected
            assert store.seen.seen(days, keys).all()
        assert sum(store.seen.counts().values()) == len(model)
    finally:
        store.close()


def test_a_rolled_back_unit_leaves_no_key_behind(tmp_path: Path) -> None:
    """A unit that fails after its keys were added rolls back: its keys are neither kept
    nor remembered by the repository, so reading the unit again counts them."""
    days = pd.Series(["2026-11-02"] * 3, dtype="string")
    with Store.open(tmp_path / "store.db") as store:
        with store.transaction():
            assert store.seen.add(days[:1], _keys([1])).all()  # committed

        def failing_unit() -> None:
            with store.transaction():
                assert store.seen.add(days, _keys([1, 2, 3])).tolist() == [False, True, True]
                assert store.seen.seen(days, _keys([1, 2, 3])).all()  # within the unit: seen
                raise RuntimeError("the unit failed")

        with pytest.raises(RuntimeError, match="the unit failed"):
            failing_unit()
        assert store.seen.seen(days, _keys([1, 2, 3])).tolist() == [True, False, False]
        with store.transaction():
            assert store.seen.add(days, _keys([1, 2, 3])).tolist() == [False, True, True]
        assert store.seen.counts() == {"2026-11-02": 3}


def test_a_large_unit_writes_each_day_once_at_its_commit(tmp_path: Path) -> None:
    """A unit read in many chunks adds keys to the same days chunk after chunk: they are
    in no row until the unit commits, then in one row per day; a failure while they are
    written leaves none of them, and the unit read again counts them all."""
    path = tmp_path / "store.db"
    rng = np.random.default_rng(11)
    batches = [rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64) for _ in range(20)]
    days = pd.Series(["2026-11-02", "2026-11-03"] * 250, dtype="string")
    with Store.open(path) as store:
        with store.transaction():
            for keys in batches:
                assert store.seen.add(days, keys).all()
            assert _rows_per_day(path) == {}  # written at the commit
        assert _rows_per_day(path) == {"2026-11-02": 1, "2026-11-03": 1}
        assert store.seen.counts() == {"2026-11-02": 5000, "2026-11-03": 5000}

        other = pd.Series(["2026-11-09"] * 500, dtype="string")

        def failing_unit() -> None:
            with store.transaction():
                assert store.seen.add(other, batches[0]).all()
                # the keys are written before the commit; a write after them fails
                store.before_commit(
                    lambda: store.conn.execute("INSERT INTO seen_keys (day) VALUES (NULL)"),
                    lambda: None,
                )

        with pytest.raises(sqlite3.IntegrityError):
            failing_unit()
        assert store.seen.counts() == {"2026-11-02": 5000, "2026-11-03": 5000}
        with store.transaction():
            assert store.seen.add(other, batches[0]).all()


def test_a_day_of_more_keys_than_a_row_holds_is_written_in_several_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit's new keys of one day are written at its commit in rows of at most
    ``ROW_KEYS`` keys (far below SQLite's limit on a value), and read back whole."""
    from compliance.store import seen

    monkeypatch.setattr(seen, "ROW_KEYS", 100)
    path = tmp_path / "store.db"
    keys = np.arange(1, 1001, dtype=np.int64) * 7919
    days = pd.Series(["2026-11-02"] * len(keys), dtype="string")
    with Store.open(path) as store, store.transaction():
        assert store.seen.add(days, keys).all()
    with sqlite3.connect(path) as db:
        sizes = [n for (n,) in db.execute("SELECT length(keys) / 8 FROM seen_keys")]
    db.close()
    assert max(sizes) <= 100 and sum(sizes) == 1000
    with Store.open(path) as store:
        assert store.seen.seen(days, keys).all()
        assert not store.seen.seen(days, keys + 1).any()


def test_a_units_totals_are_added_at_its_commit_once_per_group(tmp_path: Path) -> None:
    """Chunks of one unit count into the same (day, unit, direction) groups: the groups are
    summed in memory and added to ``daily_totals`` at the commit, one row each; a unit that
    fails adds nothing, and the next adds to what is there."""

    def chunk(first: int, count: int, day: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "day": [day] * count,
                "org_unit": ["Sales", "Legal"] * (count // 2),
                "direction": ["outbound"] * count,
                "event_key": np.arange(first, first + count, dtype=np.int64),
            }
        )

    def totals(store: Store) -> dict[tuple[str, str, str], int]:
        frame = store.events.totals_between("2026-11-01", "2026-11-30")
        return {(r.day, r.org_unit, r.direction): int(r.messages) for r in frame.itertuples()}

    with Store.open(tmp_path / "store.db") as store:
        with store.transaction():
            assert store.ingest.add_totals(chunk(0, 10, "2026-11-02")) == 0
            assert store.ingest.add_totals(chunk(5, 10, "2026-11-02")) == 5  # 5 repeats
            assert store.ingest.add_totals(chunk(100, 4, "2026-11-05")) == 0
            assert totals(store) == {}  # written at the commit
        expected = {
            ("2026-11-02", "Sales", "outbound"): 7,  # 5, then 2 of the second chunk's 5
            ("2026-11-02", "Legal", "outbound"): 8,
            ("2026-11-05", "Sales", "outbound"): 2,
            ("2026-11-05", "Legal", "outbound"): 2,
        }
        assert totals(store) == expected

        def failing_unit() -> None:
            with store.transaction():
                store.ingest.add_totals(chunk(200, 6, "2026-11-02"))
                raise RuntimeError("the unit failed")

        with pytest.raises(RuntimeError, match="the unit failed"):
            failing_unit()
        assert totals(store) == expected
        with store.transaction():
            store.ingest.add_totals(chunk(200, 6, "2026-11-02"))
        expected[("2026-11-02", "Sales", "outbound")] += 3
        expected[("2026-11-02", "Legal", "outbound")] += 3
        assert totals(store) == expected


def test_keys_another_process_commits_are_seen(tmp_path: Path) -> None:
    days = pd.Series(["2026-11-02"], dtype="string")
    with Store.open(tmp_path / "store.db") as ours, Store.open(tmp_path / "store.db") as theirs:
        assert not ours.seen.seen(days, _keys([42])).any()  # the day is now in our cache
        with theirs.transaction():
            theirs.seen.add(days, _keys([42]))
        assert ours.seen.seen(days, _keys([42])).all()
        assert not ours.seen.add(days, _keys([42])).any()


def test_many_small_runs_a_day_keep_a_few_rows(tmp_path: Path) -> None:
    """A run every 15 minutes adds a row to its day; the rows are merged before there
    are more than a few, and every key stays known, in the store as in memory."""
    rng = np.random.default_rng(17)
    added = []
    with Store.open(tmp_path / "store.db") as store:
        for _run in range(96):
            keys = rng.integers(-(2**63), 2**63 - 1, size=50, dtype=np.int64)
            with store.transaction():
                assert store.seen.add(pd.Series(["2026-11-03"] * 50), keys).all()
            added.append(keys)
            assert _rows_per_day(tmp_path / "store.db")["2026-11-03"] <= MAX_ROWS + 1
    every = np.concatenate(added)
    with Store.open(tmp_path / "store.db") as store:
        assert store.seen.seen(pd.Series(["2026-11-03"] * len(every)), every).all()
        assert store.seen.counts() == {"2026-11-03": len(every)}


def test_purge_forgets_whole_days_before_the_cut(tmp_path: Path) -> None:
    days = pd.Series(["2026-11-02", "2026-11-03", "2026-11-04"], dtype="string")
    with Store.open(tmp_path / "store.db") as store:
        store.seen.add(days, _keys([1, 2, 3]))
        assert store.seen.seen(days, _keys([1, 2, 3])).all()
        assert store.ingest.purge_seen("2026-11-04") == 2
        assert store.seen.seen(days, _keys([1, 2, 3])).tolist() == [False, False, True]
        assert store.seen.counts() == {"2026-11-04": 1}


def test_a_damaged_row_is_a_store_error(tmp_path: Path) -> None:
    Store.open(tmp_path / "store.db").close()
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("INSERT INTO seen_keys (day, keys) VALUES ('2026-11-02', x'0102')")
    db.close()
    with Store.open(tmp_path / "store.db") as store, pytest.raises(StoreError, match="seen_keys"):
        store.seen.seen(pd.Series(["2026-11-02"]), _keys([1]))
    with pytest.raises(StoreError, match="damaged"):
        unpack("not hex")


# --- the job ----------------------------------------------------------------------------------


def _slice(first: int, last: int) -> list[list[str]]:
    """Mail of 3 November 2026, messages ``first`` to ``last - 1`` (one per minute)."""
    return [
        ps_row(
            f"11/3/2026 {8 + i // 60}:{i % 60:02d}:00 AM",
            f"u{1 + i % 17}@corp.example",
            f"contact{i}@partner.example",
            index=i,
        )
        for i in range(first, last)
    ]


def test_runs_every_quarter_hour_over_overlapping_exports_count_each_message_once(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """Twelve runs, each over a new export that repeats half of the one before: the day's
    total is the number of distinct messages, each run counts the repeats it read, the
    day keeps a few rows of keys, and one more export holding everything adds nothing."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = write_config(
        tmp_path / "compliance.yaml", directory_csv, escort_feed, "store: var/store.db\n"
    )
    for run in range(12):
        write_ps_export(inbox / f"trace{run:02d}.csv", _slice(run * 20, run * 20 + 40))
        code, output = run_cli(config, "2026-11-05")
        assert code == 0, output
    with store_db(config) as db:
        totals = db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0]
        repeats = db.execute("SELECT sum(duplicates) FROM ingested_units").fetchone()[0]
    db.close()
    assert totals == 11 * 20 + 40
    assert repeats == 11 * 20
    rows = _rows_per_day(config.parent / "var" / "store.db")
    assert list(rows) == ["2026-11-03"] and 1 <= rows["2026-11-03"] <= MAX_ROWS + 1

    write_ps_export(inbox / "everything.csv", _slice(0, 11 * 20 + 40))
    code, output = run_cli(config, "2026-11-05")
    assert code == 0, output
    with store_db(config) as db:
        assert db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0] == totals
        assert (
            db.execute(
                "SELECT duplicates FROM ingested_units ORDER BY run_id DESC LIMIT 1"
            ).fetchone()[0]
            == 11 * 20 + 40
        )
    db.close()
