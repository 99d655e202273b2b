"""`compliance audit`'s figures: each message counted once, the period read, the rows of
each file, refusing to report on nothing, and one withholding rule for every format."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from compliance.hashing import string_hashes
from compliance.pipeline import ChunkResult, message_keys
from compliance.tally import Tally
from tests.conftest import audit_cli, audit_json, ps_row, write_ps_export


def _october(first: int, last: int, *, sender_case: bool = False) -> list[list[str]]:
    """Days ``first``..``last`` of October 2026: each day, three of the twelve people of
    Sales/EMEA write to a partner, receive from one, and write to an escort site. A
    message's index (so its message id) depends only on its day and place, so
    overlapping exports hold the same messages."""
    rows = []
    for day in range(first, last + 1):
        for k in range(3):
            person = f"u{1 + (3 * day + k) % 12}@corp.example"
            if sender_case:
                person = person.upper()
            index = day * 10 + k
            stamp = f"10/{day}/2026 {9 + k}:00:00 AM"
            rows += [
                ps_row(stamp, person, "sales@partner.example", index=3 * index),
                ps_row(stamp, "news@partner.example", person, index=3 * index + 1),
                ps_row(stamp, person, "book@escort-ads.test", index=3 * index + 2),
            ]
    return rows


def _json(files: list[Path], directory: Path, feed: Path, *extra: str) -> dict[str, object]:
    """The JSON result of a successful audit of ``files``, its feed compiled afresh."""
    return audit_json(files, directory, feed, "--no-feed-cache", *extra)


class _Tables(HTMLParser):
    """The report's tables, by section id (and caption), as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.section = ""
        self.name = ""
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self.section = dict(attrs).get("id") or ""
        elif tag == "table":
            self.name = self.section
        elif tag == "caption":
            self.in_caption, self.name = True, ""
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self.in_caption = False
            self.name = f"{self.section}/{self.name.strip()}"
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables.setdefault(self.name, []).append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.in_caption:
            self.name += data
        elif self.cell is not None:
            self.cell.append(data)


def _html(files: list[Path], directory: Path, feed: Path, *extra: str) -> _Tables:
    """The tables of a successful audit of ``files`` as HTML, its feed compiled afresh."""
    code, output = audit_cli(files, directory, feed, "--format", "html", "--no-feed-cache", *extra)
    assert code == 0, output
    parser = _Tables()
    parser.feed(output)
    return parser


def _units(tables: _Tables) -> list[list[str]]:
    """The org-unit table (header, units, footer): unit, external messages out and in,
    sent to listed sites, replies, people with evidence, received only, alerts."""
    return tables.tables["units"]


def _number(text: str) -> int:
    return int(text.replace(",", ""))


# --- 1. each message counted once ---------------------------------------------------------


@pytest.fixture
def whole(tmp_path: Path) -> Path:
    return write_ps_export(tmp_path / "october.csv", _october(1, 31))


def test_the_same_export_given_twice_counts_each_message_once(
    whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    once = _html([whole], directory_csv, escort_feed)
    twice = _html([whole, whole], directory_csv, escort_feed)
    assert _units(once)[1][:7] == ["Sales/EMEA", str(31 * 3 * 2), str(31 * 3), "93", "0", "12", "0"]
    assert _units(twice) == _units(once)
    data = _json([whole, whole], directory_csv, escort_feed)
    assert data["events"] == 2 * 31 * 9  # both were read
    assert data["skipped_by_reason"] == {"duplicate_message": 31 * 9}
    assert data["matched"] == 93


def test_overlapping_exports_count_the_overlap_once(
    tmp_path: Path, whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    early = write_ps_export(tmp_path / "oct-01-15.csv", _october(1, 15))
    late = write_ps_export(tmp_path / "oct-10-31.csv", _october(10, 31), encoding="utf-16")
    assert _units(_html([early, late], directory_csv, escort_feed)) == _units(
        _html([whole], directory_csv, escort_feed)
    )
    data = _json([early, late], directory_csv, escort_feed)
    assert data["skipped_by_reason"] == {"duplicate_message": 6 * 9}  # Oct 10-15
    assert (data["first_day"], data["last_day"]) == ("2026-10-01", "2026-10-31")
    # every format shows the repeats it skipped, with the same figure
    quality = _html([early, late], directory_csv, escort_feed).tables["quality"]
    assert ["Skipped: duplicate_message", "54"] in quality
    code, table = audit_cli(
        [early, late], directory_csv, escort_feed, "--no-feed-cache", "--format", "table"
    )
    assert code == 0, table
    assert "skipped: duplicate_message 54" in table.splitlines()


def test_repeated_rows_within_one_file_count_once(
    tmp_path: Path, whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = _october(1, 31)
    doubled = write_ps_export(tmp_path / "doubled.csv", [*rows, *rows[::-1]])
    assert _units(_html([doubled], directory_csv, escort_feed)) == _units(
        _html([whole], directory_csv, escort_feed)
    )


def test_a_message_is_its_id_and_normalised_addresses(
    tmp_path: Path, whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    shouted = write_ps_export(tmp_path / "shouted.csv", _october(1, 31, sender_case=True))
    assert _units(_html([whole, shouted], directory_csv, escort_feed)) == _units(
        _html([whole], directory_csv, escort_feed)
    )
    other_ids = [[*row[:4], row[4].replace("<m", "<n"), *row[5:]] for row in _october(1, 31)]
    renamed = write_ps_export(tmp_path / "renamed.csv", other_ids)
    units = _units(_html([whole, renamed], directory_csv, escort_feed))
    assert units[1][:3] == ["Sales/EMEA", str(2 * 31 * 3 * 2), str(2 * 31 * 3)]


@pytest.mark.slow
def test_the_dask_engine_counts_each_message_once_too(
    tmp_path: Path, whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    early = write_ps_export(tmp_path / "oct-01-15.csv", _october(1, 15))
    late = write_ps_export(tmp_path / "oct-10-31.csv", _october(10, 31))
    files = [early, late, whole]
    local = _html(files, directory_csv, escort_feed)
    on_dask = _html(files, directory_csv, escort_feed, "--engine", "dask")
    assert _units(on_dask) == _units(local) == _units(_html([whole], directory_csv, escort_feed))
    assert _json(files, directory_csv, escort_feed, "--engine", "dask") == _json(
        files, directory_csv, escort_feed
    )


def test_string_hashes_depend_on_the_string_alone() -> None:
    values = ["", "a", "abcdefgh", "abcdefghi", None, "abcdefgh" * 3, "é", "x" * 300, "<m1@x>"]
    array = pa.array(values, pa.string())
    hashes = string_hashes(array)
    for i, value in enumerate(values):  # not on neighbours, slicing or offset width
        assert string_hashes(array.slice(i, 1))[0] == hashes[i]
        assert string_hashes(pa.array([value], pa.large_string()))[0] == hashes[i]
    assert hashes[0] == hashes[4]  # null counts as ""
    assert len(set(hashes.tolist())) == len(values) - 1


def test_message_keys_tell_the_parts_apart() -> None:
    mid, sender, recipient = string_hashes(
        pa.array(["<m1@x>", "u1@corp.example", "x@partner.example"])
    )

    def key(*parts: np.uint64) -> int:
        return int(message_keys(*(np.array([p], dtype=np.uint64) for p in parts))[0])

    assert key(mid, sender, recipient) == key(mid, sender, recipient)
    swapped = {
        key(mid, sender, recipient),
        key(mid, recipient, sender),
        key(sender, mid, recipient),
    }
    assert len(swapped) == 3  # the order of the parts counts


# the tally: first occurrence wins, the same in one tally as in merged partials


def _counted(pairs: list[tuple[int, str]]) -> ChunkResult:
    """A chunk's result as process_chunk gives it for an audit: messages (key, day) of
    Sales/EMEA going out, grouped per day, with each message's key and group."""
    days = sorted({day for _, day in pairs})
    totals = pd.DataFrame(
        {
            "day": pd.Series(days, dtype="string"),
            "org_unit": pd.Series(["Sales/EMEA"] * len(days), dtype="string"),
            "direction": pd.Series(["outbound"] * len(days), dtype="string"),
            "messages": [sum(d == day for _, d in pairs) for day in days],
        }
    )
    return ChunkResult(
        rows=len(pairs),
        totals=totals,
        message_keys=np.array([key for key, _ in pairs], dtype=np.int64),
        message_groups=np.array([days.index(day) for _, day in pairs], dtype=np.int32),
    )


def _per_day(tally: Tally) -> dict[str, int]:
    totals = tally.totals
    return dict(zip(totals["day"].tolist(), totals["messages"].tolist(), strict=True))


def test_each_message_counts_once_on_the_day_it_first_occurs() -> None:
    chunks = [
        [(1, "2026-10-01"), (2, "2026-10-01"), (3, "2026-10-02"), (2, "2026-10-01")],
        [(3, "2026-10-03"), (4, "2026-10-03"), (1, "2026-10-01")],  # 3 again, a day later
        [(5, "2026-10-02"), (5, "2026-10-02")],
    ]
    expected = {"2026-10-01": 2, "2026-10-02": 2, "2026-10-03": 1}
    whole = Tally()
    for pairs in chunks:
        whole.add(_counted(pairs))
    assert _per_day(whole) == expected
    assert whole.skipped == {"duplicate_message": 4}

    merged = Tally(mergeable=False)  # partial tallies (one per unit), merged in order
    for pairs in chunks:
        partial = Tally()
        partial.add(_counted(pairs))
        partial.settle()
        merged.merge(partial)
    assert _per_day(merged) == expected
    assert merged.skipped == {"duplicate_message": 4}
    with pytest.raises(ValueError, match="mergeable"):
        Tally().merge(merged)


def test_many_chunks_and_partials_count_like_a_plain_drop_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import compliance.tally

    monkeypatch.setattr(compliance.tally, "_SETTLE_EVERY", 500)  # settle often
    rng = np.random.default_rng(7)
    days = [f"2026-10-{d:02d}" for d in range(1, 29)]
    chunks = []
    spread = np.uint64(0x9E3779B97F4A7C15)  # keys over the whole int64 range (all buckets)
    for _ in range(60):
        drawn = rng.integers(0, 20_000, 300)  # many repeats, within and across chunks
        keys = (drawn.astype(np.uint64) * spread).view(np.int64)
        later = rng.integers(0, 2, len(drawn)) * 7  # a repeat may come a week later
        chunks.append(
            [
                (int(k), days[int(d) % 7 + int(w)])
                for k, d, w in zip(keys, drawn, later, strict=True)
            ]
        )
    rows = pd.DataFrame([pair for pairs in chunks for pair in pairs], columns=["key", "day"])
    first = rows.drop_duplicates("key")
    expected = first.groupby("day").size().to_dict()

    whole = Tally()
    for pairs in chunks:
        whole.add(_counted(pairs))
    assert _per_day(whole) == expected
    assert whole.skipped["duplicate_message"] == len(rows) - len(first)

    merged = Tally(mergeable=False)
    for start in range(0, len(chunks), 7):  # units of 7 chunks each, read "elsewhere"
        partial = Tally()
        for pairs in chunks[start : start + 7]:
            partial.add(_counted(pairs))
        partial.settle()
        merged.merge(partial)
    assert _per_day(merged) == expected
    assert merged.skipped["duplicate_message"] == len(rows) - len(first)


# --- 2. the period read ----------------------------------------------------------------


def test_the_period_is_the_days_read_not_the_days_matched(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [
        ps_row("not a date", "u1@corp.example", "x@partner.example", index=1),
        ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "x@partner.example", index=2),
        ps_row("11/4/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test", index=3),
        ps_row("11/9/2026 11:59:59 PM", "u2@corp.example", "", index=4),  # rejected, but read
    ]
    export = write_ps_export(tmp_path / "trace.csv", rows)
    data = _json([export], directory_csv, escort_feed)
    assert (data["first_day"], data["last_day"]) == ("2026-11-02", "2026-11-09")
    code, table = audit_cli(
        [export], directory_csv, escort_feed, "--format", "table", "--no-feed-cache"
    )
    assert code == 0, table
    assert table.startswith("Acceptable-use audit: 2026-11-02 to 2026-11-09\n")
    data = _json([export], directory_csv, escort_feed, "--since", "2026-11-03")
    assert (data["first_day"], data["last_day"]) == ("2026-11-03", "2026-11-09")
    data = _json([export], directory_csv, escort_feed, "--until", "2026-11-30")
    assert (data["first_day"], data["last_day"]) == ("2026-11-02", "2026-11-30")


def test_an_audit_without_matches_still_has_a_period(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [ps_row(f"11/{d}/2026 10:00:00 AM", "u1@corp.example", "x@partner.example", index=d)
            for d in (3, 5, 7)]  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    data = _json([export], directory_csv, escort_feed)
    assert (data["first_day"], data["last_day"]) == ("2026-11-03", "2026-11-07")
    assert data["matched"] == 0


# --- 3. the rows of each file ----------------------------------------------------------


def test_the_sources_table_shows_each_file_and_its_rows(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    first = write_ps_export(tmp_path / "week1.csv", _october(1, 7))
    rows = _october(8, 9)
    rows.append(ps_row("bad", "u1@corp.example", "x@partner.example", index=9999))
    second = write_ps_export(tmp_path / "trace-for-u1@corp.example.csv", rows, encoding="utf-16")
    tables = _html([first, second, first], directory_csv, escort_feed)
    sources = tables.tables["quality/Sources"]
    assert sources == [
        ["Source", "Format", "Files / units", "Rows"],
        ["week1.csv", "get-messagetrace-csv", "1", str(7 * 9)],
        ["file 2", "get-messagetrace-csv", "1", str(2 * 9 + 1)],
        ["week1.csv", "get-messagetrace-csv", "1", str(7 * 9)],
    ]
    quality = {row[0]: row[1] for row in tables.tables["quality"] if len(row) == 2}
    assert _number(quality["Rows read"]) == sum(_number(row[3]) for row in sources[1:])
    code, html = audit_cli(
        [first, second], directory_csv, escort_feed, "--format", "html", "--no-feed-cache"
    )
    assert code == 0
    assert "u1@corp.example" not in html


# --- 4. nothing read, or nothing usable ------------------------------------------------


def test_an_audit_of_empty_exports_says_so(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    empty = [write_ps_export(tmp_path / f"empty{i}.csv", []) for i in range(2)]
    code, output = audit_cli(
        empty, directory_csv, escort_feed, "--format", "table", "--no-feed-cache"
    )
    assert code == 4
    assert output.strip() == (
        f"error: no rows read from 2 files ({empty[0]}, {empty[1]}): nothing to audit"
    )


def test_an_audit_that_rejects_every_row_says_why(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [ps_row("31/31/2026 10:00", f"u{i}@corp.example", "x@partner.example", index=i)
            for i in range(10)]  # fmt: skip
    rows += [ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "", index=11 + i)
             for i in range(2)]  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    for fmt in ("json", "table", "html"):
        code, output = audit_cli(
            [export], directory_csv, escort_feed, "--format", fmt, "--no-feed-cache"
        )
        assert code == 4
        assert output.strip() == (
            f"error: every one of the 12 rows read from 1 file ({export}) was rejected "
            "(bad_timestamp 10, no_recipient 2): check the export's format"
        )


# --- 5. one withholding rule for every format ------------------------------------------


def _matched_everywhere(files: list[Path], directory: Path, feed: Path) -> list[object]:
    """The matched figure of one audit as JSON, the table and the HTML report give it."""
    data = _json(files, directory, feed)
    code, table = audit_cli(files, directory, feed, "--format", "table", "--no-feed-cache")
    assert code == 0, table
    summary = table.splitlines()[1]  # rows read N, rejected N, matched X, alerts N
    in_table = summary.split("matched ")[1].split(",")[0]
    tables = _html(files, directory, feed)
    quality = {row[0]: row[1] for row in tables.tables["quality"] if len(row) == 2}
    in_html = quality["Matched messages (evidence)"]
    footer = tables.tables["units"][-1][3].split()[0]  # All units: "N in all"
    return [
        data["matched"],
        None if in_table == "withheld" else int(in_table),
        None if in_html == "withheld" else _number(in_html),
        None if footer == "withheld" else _number(footer),
    ]


def test_a_small_group_is_withheld_in_every_format(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [ps_row(f"11/{d}/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test",
                   index=d) for d in range(2, 9)]  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    assert _matched_everywhere([export], directory_csv, escort_feed) == [None] * 4


def test_a_big_enough_group_is_counted_in_every_format(
    whole: Path, directory_csv: Path, escort_feed: Path
) -> None:
    assert _matched_everywhere([whole, whole], directory_csv, escort_feed) == [93] * 4
