"""Matched events held compactly across many chunks come back exactly as they went in."""

from __future__ import annotations

import pandas as pd

from compliance.events import MINIMISED
from compliance.pipeline import ChunkResult
from compliance.tally import Tally


def _part(start: int, rows: int) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "event_key": [start + i for i in range(rows)],
            "timestamp": pd.Timestamp("2026-11-02T10:00:00Z") + pd.to_timedelta(range(rows), "s"),
            "day": "2026-11-02",
            "source": "exports",
            "person": [f"p-{(start + i) % 7:020x}" for i in range(rows)],
            "org_unit": ["Sales/EMEA", "unknown"] * (rows // 2) + ["Sales/EMEA"] * (rows % 2),
            "direction": "outbound",
            "domain": [f"www.site{i % 3}.test" for i in range(rows)],
            "reg_domain": [f"site{i % 3}.test" for i in range(rows)],
            "categories": "escort-ads",
            "feeds": "feed",
            "status": [None if i % 4 == 0 else "delivered" for i in range(rows)],
            "size": [None if i % 5 == 0 else 100 + i for i in range(rows)],
            "epoch": "2026Q4",
        }
    )
    return frame.astype(MINIMISED)


def test_compacted_matched_events_equal_the_plain_concatenation() -> None:
    parts = [_part(start * 5, 7) for start in range(40)]  # overlapping keys: duplicates
    tally = Tally()
    for part in parts:
        tally.add(ChunkResult(rows=len(part), matched=part))
    assert len(tally.matched_parts) < len(parts)  # it did compact
    expected = pd.concat(parts, ignore_index=True).drop_duplicates("event_key", ignore_index=True)
    got = tally.matched()
    pd.testing.assert_frame_equal(got, expected)
    assert dict(got.dtypes.astype(str)) == dict(expected.dtypes.astype(str))

    other = Tally()  # another worker's partial tally, itself compacted
    for start in range(20):
        other.add(ChunkResult(rows=7, matched=_part(1000 + 7 * start, 7)))
    tally.merge(other)
    assert len(tally.matched()) == len(expected) + 20 * 7
