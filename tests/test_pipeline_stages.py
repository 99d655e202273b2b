"""The per-chunk stages of compliance.pipeline, one by one and composed by process_chunk.

A chunk here looks like a day of a mid-sized gateway: hundreds of distinct people, aliases
and spellings of one address, partners under multi-label public suffixes (``co.uk``),
inbound, outbound and internal mail, and the usual junk rows. Every name is reserved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compliance.directory import Directory
from compliance.domains import DomainIndex, Label
from compliance.events import empty_raw
from compliance.pipeline import (
    TOTAL_COLUMNS,
    ChunkResult,
    Context,
    combine_results,
    org_index,
    process_chunk,
    rows_in_period,
    split_parties,
)
from compliance.privacy import Pseudonymiser
from compliance.tally import Tally

PEOPLE = 400  # listed in the directory; person400..person449 are not
UNITS = ("Sales/EMEA", "Sales/EMEA/North", "Legal", "Engineering/Platform", "Finance")
LISTED = {
    "escort-ads.test": Label("escort-ads", "feed-a"),
    "escorts.example.co.uk": Label("escort-ads", "feed-b"),
    "velvet-club.test": Label("adult", "feed-c"),
    # a feed that wrongly lists one of the organisation's own hosts
    "mail.corp.example": Label("escort-ads", "feed-a"),
}
SINCE, UNTIL = pd.Timestamp("2026-10-01", tz="UTC"), pd.Timestamp("2026-11-01", tz="UTC")


def _context() -> Context:
    directory = Directory()
    for i in range(PEOPLE):
        directory.add(
            [f"person{i}@corp.example", f"p{i}.alias@uk.corp.example"],
            f"00000000-0000-4000-8000-{i:012d}",
            UNITS[i % len(UNITS)],
        )
    index = DomainIndex()
    for domain, label in LISTED.items():
        index.add(domain, label)
    return Context(
        org_index(["corp.example"]),
        directory,
        Pseudonymiser(b"k" * 32, "quarterly"),
        index,
        since=SINCE,
        until=UNTIL,
    )


def _raw(rows: list[tuple[str | None, str | None, str | None, str | None]]) -> pd.DataFrame:
    """A raw chunk of (time, sender, recipient, message id) rows."""
    raw = empty_raw().reindex(range(len(rows)))
    raw["timestamp"] = pd.to_datetime([r[0] for r in rows], utc=True).astype("datetime64[ns, UTC]")
    raw["sender"] = pd.Series([r[1] for r in rows], dtype="string")
    raw["recipient"] = pd.Series([r[2] for r in rows], dtype="string")
    raw["status"] = pd.Series(["Delivered"] * len(rows), dtype="string")
    raw["size"] = pd.Series(range(1000, 1000 + len(rows)), dtype="Int64")
    raw["message_id"] = pd.Series([r[3] for r in rows], dtype="string")
    return raw


def _busy_day(n: int = 3000, seed: int = 12) -> pd.DataFrame:
    """Mail of many people with many partners over October: most to or from ordinary
    partners, some with listed sites, internal mail, and messages to several recipients
    (one row each, one message id)."""
    rng = np.random.default_rng(seed)
    partners = [
        *(f"contact{i}@partner{i % 90}.example.co.uk" for i in range(300)),
        *(f"sales{i}@vendor{i % 40}.test" for i in range(200)),
        *(f"bookings{i}@www.escort-ads.test" for i in range(5)),
        "diary@escorts.example.co.uk",
        "info@velvet-club.test",
        "hello@notescort-ads.test",  # a look-alike, not listed
    ]
    staff = [
        *(f"person{i}@corp.example" for i in range(PEOPLE + 50)),
        *(f"P{i}.Alias@UK.corp.example" for i in range(0, PEOPLE, 7)),  # aliases, any case
    ]
    rows = []
    for i in range(n):
        when = SINCE + pd.Timedelta(seconds=int(rng.integers(0, 30 * 86400)))
        person = staff[int(rng.integers(len(staff)))]
        other = partners[int(rng.integers(len(partners)))]
        kind = i % 10
        if kind < 5:
            sender, recipient = person, other
        elif kind < 9:
            sender, recipient = other, person
        else:
            sender, recipient = person, staff[int(rng.integers(len(staff)))]
        rows.append((when.isoformat(), sender, recipient, f"<m{i // 2}@mail.corp.example>"))
    return _raw(rows)


def test_a_row_outside_the_period_is_skipped_not_rejected() -> None:
    ctx = _context()
    raw = _raw(
        [
            ("2026-09-30T23:59:59Z", "person1@corp.example", "a@partner1.example.co.uk", "<1>"),
            ("2026-10-01T00:00:00Z", "person1@corp.example", "a@partner1.example.co.uk", "<2>"),
            ("2026-10-31T23:59:59Z", "person2@corp.example", "a@partner2.example.co.uk", "<3>"),
            ("2026-11-01T00:00:00Z", "person2@corp.example", "a@partner2.example.co.uk", "<4>"),
            (None, "person3@corp.example", "a@partner3.example.co.uk", "<5>"),
        ]
    )
    rows, rejected, skipped = rows_in_period(raw["timestamp"], ctx)
    assert rows.tolist() == [1, 2]  # ``until`` is exclusive
    assert rejected == {"bad_timestamp": 1}
    assert skipped == {"outside_period": 2}

    result = process_chunk(raw, "exports", ctx)
    assert result.rows == 5
    assert result.rejected == {"bad_timestamp": 1}
    assert result.skipped == {"outside_period": 2}
    assert (result.first_day, result.last_day) == ("2026-10-01", "2026-10-31")
    assert int(result.totals["messages"].sum()) == 2


def test_a_timestamp_outside_the_times_a_row_may_have_is_rejected() -> None:
    ctx = _context()
    ctx.since = ctx.until = None
    raw = _raw(
        [
            ("1989-12-31T23:00:00Z", "person1@corp.example", "a@vendor1.test", "<1>"),
            ("2026-10-02T10:00:00Z", "person1@corp.example", "a@vendor1.test", "<2>"),
            ("2250-01-01T00:00:00Z", "person1@corp.example", "a@vendor1.test", "<3>"),
        ]
    )
    result = process_chunk(raw, "exports", ctx)
    assert result.rejected == {"bad_timestamp": 2}  # before 1990, and far ahead
    assert not result.skipped
    assert (result.first_day, result.last_day) == ("2026-10-02", "2026-10-02")


def test_each_rejected_row_counts_once_for_its_first_reason() -> None:
    ctx = _context()
    day = "2026-10-05T09:00:00Z"
    raw = _raw(
        [
            (day, None, None, "<1>"),  # no sender (and no recipient)
            (day, "person1@corp.example", None, "<2>"),
            (day, "not an address", "person1@corp.example", "<3>"),
            (day, "person1@corp.example", "person2@corp..example", "<4>"),
            (day, "a@partner1.example.co.uk", "b@vendor2.test", "<5>"),  # relayed
            (day, "PERSON1@Corp.Example", "a@partner1.example.co.uk", "<6>"),
            (day, "a@partner1.example.co.uk", "p1.alias@uk.corp.example", "<7>"),
            (day, "person1@corp.example", "person2@corp.example", "<8>"),
        ]
    )
    parties, rejected, _ = split_parties(raw, np.arange(len(raw)), ctx.organisation)
    assert rejected == {
        "no_sender": 1,
        "no_recipient": 1,
        "invalid_sender": 1,
        "invalid_recipient": 1,
        "no_internal_party": 1,
    }
    assert parties.rows.tolist() == [5, 6, 7]
    assert parties.direction.tolist() == ["outbound", "inbound", "internal"]
    # one distinct address per spelling, normalised once: PERSON1@Corp.Example is person1
    person = parties.address.take(parties.person).to_pylist()
    assert person == ["person1@corp.example", "p1.alias@uk.corp.example", "person1@corp.example"]
    external = parties.external.tolist()
    assert external[2] == -1  # internal mail has no external party
    assert parties.domain.take(external[:2]).to_pylist() == ["partner1.example.co.uk"] * 2


def test_internal_mail_is_counted_but_never_matched() -> None:
    ctx = _context()  # a feed lists mail.corp.example, one of the organisation's hosts
    day = "2026-10-06T11:00:00Z"
    raw = _raw(
        [
            (day, "person1@corp.example", "person2@mail.corp.example", "<1>"),
            (day, "person3@mail.corp.example", "person4@corp.example", "<2>"),
            (day, "person5@corp.example", "diary@escorts.example.co.uk", "<3>"),
            (day, "person6@corp.example", "hello@notescort-ads.test", "<4>"),
        ]
    )
    result = process_chunk(raw, "exports", ctx)
    matched = result.matched
    assert matched["direction"].tolist() == ["outbound"]
    assert matched["domain"].tolist() == ["escorts.example.co.uk"]
    assert matched["reg_domain"].tolist() == ["example.co.uk"]  # under co.uk
    assert matched["feeds"].tolist() == ["feed-b"]
    per_direction = result.totals.groupby("direction")["messages"].sum().to_dict()
    assert per_direction == {"internal": 2, "outbound": 2}


def test_keyed_rows_are_one_per_kept_message_and_the_totals_hold_the_same_count() -> None:
    ctx = _context()
    raw = _busy_day()
    default = process_chunk(raw, "exports", ctx)
    keyed = process_chunk(raw, "exports", ctx, with_keyed_messages=True)

    # the same grouped totals either way; each way identifies the messages in its own field
    pd.testing.assert_frame_equal(default.totals, keyed.totals)
    assert list(keyed.totals.columns) == [*TOTAL_COLUMNS, "messages"]
    assert default.keyed_messages is None
    assert keyed.message_keys is None and keyed.message_groups is None
    assert default.message_keys is not None and default.message_groups is not None

    rows = keyed.keyed_messages
    assert rows is not None
    kept = default.rows - sum(default.rejected.values()) - sum(default.skipped.values())
    assert len(rows) == len(default.message_keys) == kept
    assert int(keyed.totals["messages"].sum()) == kept
    per_group = (
        rows.astype(dict.fromkeys(TOTAL_COLUMNS, "string"))
        .groupby(list(TOTAL_COLUMNS))
        .size()
        .rename("messages")
        .reset_index()
    )
    assert per_group.astype({"messages": "int64"}).equals(keyed.totals)
    # the unkeyed keys tell the same messages apart as the keyed ones
    assert len(set(default.message_keys.tolist())) == rows["event_key"].nunique()
    # a matched event carries the same key as its message's keyed row
    assert set(keyed.matched["event_key"]) <= set(rows["event_key"])
    pd.testing.assert_frame_equal(default.matched, keyed.matched)


def test_no_address_survives_in_any_output() -> None:
    ctx = _context()
    raw = _busy_day()
    unlisted = "zebulon.quackenbush@corp.example"  # internal, not in the directory
    raw.loc[0, ["sender", "recipient"]] = [unlisted, "bookings0@www.escort-ads.test"]
    results = [
        process_chunk(raw, "exports", ctx),
        process_chunk(raw, "exports", ctx, with_keyed_messages=True),
    ]
    text: list[str] = []
    for result in results:
        assert len(result.matched)
        for frame in (result.totals, result.matched, result.keyed_messages):
            if frame is not None:
                text += [str(v) for c in frame.columns for v in frame[c].tolist()]
        text += [*result.rejected, *result.skipped, str(result.first_day), str(result.last_day)]
    blob = "\n".join(text).lower()
    assert "@" not in blob
    addresses = pd.concat([raw["sender"], raw["recipient"]]).dropna().str.lower()
    local_parts = {a.split("@")[0] for a in addresses if "@" in a}
    assert "zebulon.quackenbush" in local_parts
    assert not [part for part in local_parts if f"\n{part}\n" in f"\n{blob}\n"]
    assert "zebulon" not in blob
    assert results[0].matched["person"].str.fullmatch(r"p-[0-9a-f]{20}").all()


@pytest.mark.parametrize("keyed", [False, True])
def test_a_unit_read_in_chunks_combines_to_what_one_chunk_gives(keyed: bool) -> None:
    ctx = _context()
    raw = _busy_day(2000)
    raw = pd.concat([raw, raw.iloc[100:400]], ignore_index=True)  # a stretch read twice
    whole = process_chunk(raw, "exports", ctx, with_keyed_messages=keyed)
    parts = [
        process_chunk(
            raw.iloc[a:b].reset_index(drop=True), "exports", ctx, with_keyed_messages=keyed
        )
        for a, b in ((0, 700), (700, 1500), (1500, len(raw)))
    ]
    combined = combine_results(parts)
    assert combined.rows == whole.rows
    assert combined.rejected == whole.rejected
    assert (combined.first_day, combined.last_day) == (whole.first_day, whole.last_day)
    pd.testing.assert_frame_equal(combined.totals, whole.totals)
    pd.testing.assert_frame_equal(combined.matched, whole.matched)
    if keyed:
        assert combined.keyed_messages is not None and whole.keyed_messages is not None
        pd.testing.assert_frame_equal(combined.keyed_messages, whole.keyed_messages)
        assert combined.message_keys is None
        return
    assert combined.keyed_messages is None
    one, many = Tally(), Tally()
    one.add(whole)
    many.add(combined)
    pd.testing.assert_frame_equal(many.totals, one.totals)
    assert many.skipped == one.skipped
    assert one.skipped["duplicate_message"] >= 300


def test_nothing_kept_gives_empty_outputs_of_the_usual_shape() -> None:
    ctx = _context()
    raw = _raw([("2026-09-01T10:00:00Z", "person1@corp.example", "a@vendor1.test", "<1>")])
    for keyed in (False, True):
        result = process_chunk(raw, "exports", ctx, with_keyed_messages=keyed)
        assert result.skipped == {"outside_period": 1}
        assert list(result.totals.columns) == [*TOTAL_COLUMNS, "messages"]
        assert result.totals.empty and result.matched.empty
        if keyed:
            assert result.keyed_messages is not None and result.keyed_messages.empty
        else:
            assert result.keyed_messages is None
    assert isinstance(combine_results([]), ChunkResult)


def test_a_chunk_with_nothing_kept_keeps_the_unit_s_duplicate_keys() -> None:
    """A unit whose middle chunk lies wholly outside the period still counts each of its
    messages once when its chunks are combined."""
    ctx = _context()
    raw = _busy_day(500)
    outside = _raw([("2026-09-01T10:00:00Z", "person1@corp.example", "a@vendor1.test", "<9>")])
    parts = [
        process_chunk(chunk.reset_index(drop=True), "exports", ctx)
        for chunk in (raw, outside, raw)  # the same messages read twice around it
    ]
    combined = combine_results(parts)
    assert combined.message_keys is not None
    tally = Tally()
    tally.add(combined)
    tally.settle()
    once = Tally()
    once.add(process_chunk(raw, "exports", ctx))
    once.settle()
    pd.testing.assert_frame_equal(tally.totals, once.totals)
    assert tally.skipped["duplicate_message"] == len(raw)


@pytest.mark.parametrize("keyed", [False, True])
def test_a_row_without_a_message_id_is_its_message_at_its_time(keyed: bool) -> None:
    """A log without message ids (a generic source that has none): a person writing to
    one site on three days is three messages, in memory and in a store's keys alike; the
    same row read twice (overlapping exports) is still one."""
    ctx = _context()
    rows: list[tuple[str | None, str | None, str | None, str | None]] = [
        (f"2026-10-0{day}T09:00:00Z", "person1@corp.example", "book@escort-ads.test", None)
        for day in (2, 3, 5)
    ]
    rows += [
        rows[0],
        ("2026-10-02T09:00:00Z", "person2@corp.example", "book@escort-ads.test", None),
    ]
    result = process_chunk(_raw(rows), "exports", ctx, with_keyed_messages=keyed)
    tally = Tally()
    tally.add(result)
    if keyed:
        assert result.keyed_messages is not None
        assert result.keyed_messages["event_key"].nunique() == 4
    else:
        assert int(tally.totals["messages"].sum()) == 4
        assert tally.skipped == {"duplicate_message": 1}
    assert result.matched["event_key"].nunique() == 4  # the evidence: three of person1's
