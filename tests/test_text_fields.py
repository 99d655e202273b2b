"""Text fields are trimmed and emptied as Arrow's own kernel does, however they are read.

:func:`connectors.textfile.trimmed_text` runs Arrow's ``utf8_trim_whitespace`` only on
the values whose first or last byte may be white space; these tests hold it to the
kernel run on every value, over any Unicode text (every kind of space, at either end,
alone, or none), with nulls, in slices of a larger array, and through
:func:`connectors.textfile.build_raw`.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.textfile import _fixed_iso, build_raw, timestamp_array, trimmed_text

#: Every character Unicode calls white space, and a few that are not but look it.
SPACES = (
    "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a"
    "\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
)

fields = st.one_of(
    st.none(),
    st.text(),
    st.builds(
        lambda a, b, c: a + b + c,
        st.text(alphabet=SPACES, max_size=3),
        st.text(max_size=8),
        st.text(alphabet=SPACES, max_size=3),
    ),
)


def _expected(values: pa.Array) -> list[str | None]:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed).to_pylist()


@settings(max_examples=300, deadline=None)
@given(st.lists(fields, max_size=40), st.integers(0, 5))
@example(["\u3000a@b.example\u00a0", " ", "", None, "x"], 0)
@example(["é ", " é", "\u2028", "a\u202f"], 1)
def test_trimmed_as_arrow_trims(values: list[str | None], cut: int) -> None:
    array = pa.array(["pad"] * cut + values, pa.string()).slice(cut)  # an offset, as a chunk has
    assert trimmed_text(array).to_pylist() == _expected(array)


def test_a_chunk_without_spaces_is_not_copied() -> None:
    array = pa.array(["a@b.example", "c@d.example"])
    assert trimmed_text(array) is array


def test_build_raw_trims_fills_and_splits() -> None:
    frame = pd.DataFrame(
        {
            "When": ["2026-11-02T10:00:00Z", " 2026-11-02T11:00:00Z\u00a0", ""],
            "From": ["\u3000Alice@Corp.example ", "", "bob@corp.example"],
            "To": ["x@a.example; y@b.example ;", "z@c.example", "  "],
            "Id": ["", "<2@corp.example>", " <3@corp.example> "],
            "Trace": ["t1", "t2", "t3"],
            "Bytes": [" 12", "n/a", "7"],
        },
        dtype="string",
    )
    mapping: dict[str, str | list[str]] = {
        "timestamp": "When", "sender": "From", "recipient": "To",
        "message_id": ["Id", "Trace"], "size": "Bytes",
    }  # fmt: skip
    raw = build_raw(frame, mapping, "ISO8601", ";")
    assert raw["recipient"].tolist() == ["x@a.example", "y@b.example", pd.NA, "z@c.example", pd.NA]
    assert raw["sender"].tolist() == ["Alice@Corp.example"] * 3 + [pd.NA, "bob@corp.example"]
    assert raw["message_id"].tolist() == ["t1"] * 3 + ["<2@corp.example>", "<3@corp.example>"]
    assert raw["size"].tolist() == [12] * 3 + [pd.NA, 7]
    assert raw["status"].isna().all()
    stamps = raw["timestamp"]
    assert str(stamps.dtype) == "datetime64[ns, UTC]"
    assert [str(t) for t in stamps[:4]] == ["2026-11-02 10:00:00+00:00"] * 3 + [
        "2026-11-02 11:00:00+00:00"
    ]
    assert pd.isna(stamps[4])
    assert list(raw.columns) == ["timestamp", "sender", "recipient", "status", "size", "message_id"]


def _iso_variant(rng: random.Random, width_tail: str) -> str:
    year = rng.choice([2026, 2024, 1969, 1970, 2199, 2200, 2100, 2000])
    month, day = rng.randint(0, 13), rng.randint(0, 32)
    hour, minute, second = rng.randint(0, 25), rng.randint(0, 60), rng.randint(0, 61)
    head = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if rng.random() < 0.02:  # a damaged one of the same width
        at = rng.randrange(len(head))
        head = head[:at] + rng.choice("x -T:/+0") + head[at + 1 :]
    digits = "".join(rng.choice("0123456789") for _ in range(width_tail.count("f")))
    return head + width_tail.replace("f" * len(digits), digits)


@pytest.mark.parametrize("tail", ["", "Z", ".fff", ".fffZ", ".fZ", ".fffffffZ", ".fffffffff"])
def test_fixed_width_iso_times_read_as_pandas_reads_them(tail: str) -> None:
    """Gateways write ISO 8601 times of one width; those are read field by field, and
    every value (30 February, hour 24, a leap second, year 1969 or 2200, a damaged
    separator) comes out as pandas' ISO 8601 reading gives it."""
    rng = random.Random(len(tail))
    values = [_iso_variant(rng, tail) for _ in range(20_000)]
    values += ["2024-02-29T12:00:00" + tail.replace("f", "5"), "2026-02-29T12:00:00" + tail]
    values = [v for v in values if len(v) == len(values[0])]  # one width, as exported
    text = pa.array(values, pa.string())
    got = timestamp_array(text, "ISO8601")
    expected = pd.to_datetime(pd.Series(values), format="ISO8601", errors="coerce", utc=True)
    expected = expected.where(
        (expected >= pd.Timestamp("1970-01-01", tz="UTC"))
        & (expected < pd.Timestamp("2200-01-01", tz="UTC"))
    )
    want = expected.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    assert np.array_equal(np.isnat(got), np.isnat(want))
    assert (got[~np.isnat(got)] == want[~np.isnat(want)]).all()
    assert (~np.isnat(got)).sum() > 2_000  # many are real times
    _, read = _fixed_iso(text)
    assert not (read & np.isnat(got)).any()
    assert read.sum() > 0.95 * (~np.isnat(got)).sum()  # nearly all read field by field


def test_iso_times_of_mixed_widths_and_zones_go_to_pandas() -> None:
    values = [
        "2026-11-02T10:00:00Z", "2026-11-02T10:00:00.5Z", "2026-11-02 10:00:00",
        "2026-11-02T10:00:00+02:00", "2026-11-02", "20261102T100000Z",
    ]  # fmt: skip
    got = timestamp_array(pa.array(values), "ISO8601")
    assert [str(t) for t in got] == [
        "2026-11-02T10:00:00.000000000", "2026-11-02T10:00:00.500000000",
        "2026-11-02T10:00:00.000000000", "2026-11-02T08:00:00.000000000",
        "2026-11-02T00:00:00.000000000", "NaT",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "values",
    [
        # widths that differ, though their total is three times the first's
        ["2024-01-01T10:00:00.123", "2024-01-01T10:00:00.1", "2024-01-01T10:00:00.12345"],
        ["2024-01-01T10:00:00.123", "2024-01-01T10:00:00.123+05:00", "2024-01-01T10:00Z"],
        ["2024-01-01T10:00:0", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00.1234Z"],
    ],
)
def test_iso_times_of_several_widths_are_each_read_whole(values: list[str]) -> None:
    got = timestamp_array(pa.array(values), "ISO8601")
    expected = pd.to_datetime(pd.Series(values), format="ISO8601", errors="coerce", utc=True)
    want = expected.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    assert [str(t) for t in got] == [str(t) for t in want]
    assert not _fixed_iso(pa.array(values))[1].any()


def test_a_row_takes_its_time_from_the_first_column_with_a_value() -> None:
    """Typed (Parquet) and text time columns mixed: as for every field, the first column
    with a value decides, even when that value is no time (the row is then rejected)."""
    frame = pd.DataFrame(
        {
            "text": pd.Series(["garbage", "", "2026-11-02T08:00:00Z", None], dtype="string"),
            "typed": pd.to_datetime(["2026-11-02 10:00"] * 3 + [None]).as_unit("us"),
        }
    )
    raw = build_raw(frame, {"timestamp": ["text", "typed"]}, "ISO8601")
    assert [str(t) for t in raw["timestamp"]] == [
        "NaT", "2026-11-02 10:00:00+00:00", "2026-11-02 08:00:00+00:00", "NaT",
    ]  # fmt: skip
    raw = build_raw(frame, {"timestamp": ["typed", "text"]}, "ISO8601")
    assert [str(t) for t in raw["timestamp"]][:3] == ["2026-11-02 10:00:00+00:00"] * 3
