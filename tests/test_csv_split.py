"""One large CSV split across Dask workers: record boundaries found safely (quoted line
breaks are no boundary), parts that read exactly what the whole file reads, and an audit
on a two-worker cluster that equals the in-process one while it reads a file as parts."""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import itertools
import logging
import pickle
import random
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compliance.audit import AuditRequest, run_audit
from compliance.privacy import load_key
from connectors import csvsplit
from connectors.base import ReadUnit, create_source
from connectors.exchange import ExportFile, detect_file
from connectors.textfile import CsvLayout, csv_header, iter_csv, sniff_csv
from tests.conftest import (
    DIRECTORY_PEOPLE,
    EAC_HEADER,
    SHIPPED_POLICIES,
    audit_json,
    ps_row,
    week_of_mail_rows,
    write_ps_export,
)

# --- Boundaries, property-based -------------------------------------------------------

#: Characters of field values: quotes, line breaks of every kind, the delimiter, text
#: outside ASCII (two-, three- and four-byte UTF-8; a surrogate pair in UTF-16).
_CHARS = ['"', "\r", "\n", ",", " ", "a", "Z", "0", "é", "€", "😀", ";"]
values = st.lists(st.sampled_from(["\r\n", '""', *_CHARS]), max_size=8).map("".join)
COLUMNS = ["when", "from", "to"]


def _field(value: str, quote_all: bool) -> str:
    """A field as RFC 4180 writes it: quoted when it must be (or always, as PowerShell)."""
    if quote_all or any(c in value for c in '",\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_text(rows: Sequence[Sequence[str]], quote_all: bool, newline: str, type_line: bool) -> str:
    lines = ["#TYPE Deserialized.Test"] if type_line else []
    lines += [",".join(_field(v, quote_all) for v in row) for row in [COLUMNS, *rows]]
    return newline.join(lines) + newline


def _rows(path: Path, layout: CsvLayout, ranges: Sequence[tuple[int, int]]) -> list[list[str]]:
    """The rows the real reader reads from each range, one after the other."""
    names = csv_header(path, layout)
    out: list[list[str]] = []
    for start, stop in ranges:
        frames = iter_csv(
            path,
            layout,
            COLUMNS,
            byte_range=(start, stop),
            column_names=names if start else None,
        )
        for frame, dropped in frames:
            assert not dropped
            out += frame[COLUMNS].astype(object).values.tolist()
    return out


@contextlib.contextmanager
def _scan_blocks(size: int) -> Iterator[None]:
    """Scan in blocks of ``size`` bytes (block edges inside quotes and line breaks)."""
    before = csvsplit.SCAN_BYTES
    csvsplit.SCAN_BYTES = size
    try:
        yield
    finally:
        csvsplit.SCAN_BYTES = before


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=25),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le"]),
    newline=st.sampled_from(["\r\n", "\n"]),
    quote_all=st.booleans(),
    type_line=st.booleans(),
    fractions=st.lists(st.floats(0.0, 1.0), max_size=6),
    block=st.sampled_from([1, 2, 3, 7, 64, 4096]),
)
@example(  # a target inside a quoted field of line breaks: the boundary moves on
    rows=[["a", "\r\n\r\n\n\n\r\n", "b"], ["c", "d", "e"]],
    encoding="utf-16",
    newline="\r\n",
    quote_all=True,
    type_line=True,
    fractions=[0.4, 0.45, 0.5],
    block=2,
)
def test_every_boundary_is_a_record_start(
    rows: list[list[str]],
    encoding: str,
    newline: str,
    quote_all: bool,
    type_line: bool,
    fractions: list[float],
    block: int,
) -> None:
    text = _csv_text(rows, quote_all, newline, type_line)
    # without a byte-order mark, UTF-16 is told by its NUL bytes, and U+xx00 characters
    # (the low half of 😀 is U+DE00) hide it in a tiny file: not what is tested here
    assume(encoding != "utf-16-le" or "😀" not in text)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.csv"
        path.write_bytes(text.encode(encoding))
        layout = sniff_csv(path)
        size = path.stat().st_size
        with _scan_blocks(block):
            starts = csvsplit.record_starts(
                path,
                [int(f * size) for f in fractions],
                layout.encoding,
                after_records=layout.skip_rows + 1,
            )
        assert starts is not None  # every quote is where RFC 4180 puts one
        assert starts == sorted(set(starts)) and all(0 < s < size for s in starts)
        edges = [0, *starts, size]
        ranges = list(itertools.pairwise(edges))
        # the rows written, read whole and read as pieces: the same, in order, once each
        assert _rows(path, layout, [(0, size)]) == rows
        assert _rows(path, layout, ranges) == rows


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> tuple[Path, CsvLayout]:
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode(encoding))
    return path, sniff_csv(path)


def test_a_target_inside_a_long_quoted_field_moves_on_to_the_next_record(
    tmp_path: Path,
) -> None:
    subject = "line\r\n" * 2000  # 12 kB of line breaks inside one field
    text = f'"when","from","to"\r\n"1","{subject}","x"\r\n"2","y","z"\r\n'
    path, _ = _write(tmp_path, text)
    with _scan_blocks(1024):  # many blocks inside the field
        starts = csvsplit.record_starts(path, [100, 5000, 9000], "utf-8", after_records=1)
    assert starts == [text.index('"2"')]


def test_boundaries_come_after_the_type_line_and_the_header(tmp_path: Path) -> None:
    text = '#TYPE X\r\n"when","from","to"\r\n"1","a","b"\r\n"2","c","d"\r\n'
    path, _ = _write(tmp_path, text)
    first, second = text.index('"1"'), text.index('"2"')
    assert csvsplit.record_starts(path, [0, 1, 10], "utf-8", after_records=2) == [second]
    assert csvsplit.record_starts(path, [first], "utf-8", after_records=1) == [first]
    assert csvsplit.record_starts(path, [len(text) - 1], "utf-8", after_records=2) == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('"when","from","to"\r\n"1","a","b\r\n"2","c","d"\r\n', "an unterminated quote"),
        ('when,from,to\r\n1,5" disk,b\r\n2,"c\r\nd",e\r\n3,f,g\r\n', "a quote inside a field"),
        ('when,from,to\r\n1,"a"b"c,d\r\n2,"c\r\nd",e\r\n3,f,g\r\n', "a quote after a quoted part"),
    ],
)
def test_a_file_whose_quotes_break_rfc_4180_is_not_split(
    tmp_path: Path, text: str, why: str
) -> None:
    path, _ = _write(tmp_path, text)
    assert csvsplit.record_starts(path, [20, 30], "utf-8", after_records=1) is None, why
    ranges = csvsplit.byte_ranges(path, 4, "utf-8", after_records=1, min_part_bytes=1)
    assert ranges == [(0, len(text))]  # read whole: the reader reports what it reports


def test_a_small_file_gives_fewer_parts_than_asked(tmp_path: Path) -> None:
    rows = "".join(f'"{i}","a","b"\r\n' for i in range(100))
    path, _ = _write(tmp_path, '"when","from","to"\r\n' + rows)
    size = path.stat().st_size
    assert csvsplit.byte_ranges(path, 8, "utf-8", after_records=1) == [(0, size)]
    ranges = csvsplit.byte_ranges(path, 8, "utf-8", after_records=1, min_part_bytes=size // 3)
    assert len(ranges) == 3
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_a_part_of_a_utf16_file_with_a_bom_reads_without_one() -> None:
    assert csvsplit.part_encoding("utf-16", codecs.BOM_UTF16_LE) == "utf-16-le"
    assert csvsplit.part_encoding("utf-16", codecs.BOM_UTF16_BE) == "utf-16-be"
    assert csvsplit.part_encoding("utf-8-sig", codecs.BOM_UTF8) == "utf-8"
    assert csvsplit.part_encoding("utf-16-le", b"w\x00") == "utf-16-le"


# --- Read units split into parts --------------------------------------------------------


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of a few kB split (the real minimum is tens of MB)."""
    monkeypatch.setattr(csvsplit, "MIN_PART_BYTES", 512)


def _read(units: Sequence[ReadUnit]) -> tuple[pd.DataFrame, Counter[str], Counter[str]]:
    frames, rejected, skipped = [], Counter[str](), Counter[str]()
    for unit in units:
        for chunk in unit.chunks():
            frames.append(chunk.frame)
            rejected.update(chunk.rejected)
            skipped.update(chunk.skipped)
    return pd.concat(frames, ignore_index=True), rejected, skipped


def _assert_parts_read_the_whole(unit: ReadUnit, parts: int) -> list[ReadUnit]:
    # as a worker gets them
    pieces = [pickle.loads(pickle.dumps(p)) for p in unit.split(parts)]  # noqa: S301
    assert len(pieces) > 1
    whole, split = _read([unit]), _read(pieces)
    pd.testing.assert_frame_equal(split[0], whole[0])
    assert split[1:] == whole[1:]
    return pieces


def _traffic(count: int, start: int = 0) -> list[list[str]]:
    """Get-MessageTrace rows whose subjects hold quotes, commas and line breaks."""
    rng = random.Random(start)
    rows = []
    for i in range(start, start + count):
        person = DIRECTORY_PEOPLE[i % len(DIRECTORY_PEOPLE)]
        site = ("book@escort-ads.test", "sales@partner.example")[i % 5 != 0]
        subject = rng.choice(['Re: "offer", with a comma\r\nand a line', "Hi\n\n", "Q3"])
        rows.append(
            ps_row(
                f"11/{2 + i % 7}/2026 10:{i % 60:02d}:00 AM", person, site, index=i, subject=subject
            )
        )
    return rows


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le"])
def test_an_export_splits_into_parts_that_read_exactly_the_whole(
    tmp_path: Path, small_parts: None, encoding: str
) -> None:
    rows = [*_traffic(200), ["too", "few", "fields"], *_traffic(50, start=500)]
    unit = detect_file(write_ps_export(tmp_path / "trace.csv", rows, encoding=encoding))
    parts = _assert_parts_read_the_whole(unit, 4)
    assert len(parts) == 4
    assert all(p.key == unit.key for p in parts)  # the file's identity, for a scheduled run
    assert [p.format for p in parts] == [unit.format] * 4


def test_the_parts_read_times_in_the_format_of_the_whole_file(
    tmp_path: Path, small_parts: None
) -> None:
    # month first with a 24-hour clock: only the first rows (day 13 and later) tell; the
    # rest alone would read as day first, 3 November as 11 March
    rows = [ps_row(f"11/{13 + i % 5}/2026 17:0{i % 10}:00", "u1@corp.example", "x@a.test", index=i)
            for i in range(30)]  # fmt: skip
    rows += [ps_row("11/3/2026 17:00:00", "u2@corp.example", "x@a.test", index=i)
             for i in range(30, 300)]  # fmt: skip
    unit = detect_file(write_ps_export(tmp_path / "trace.csv", rows))
    parts = _assert_parts_read_the_whole(unit, 3)
    last = _read(parts[-1:])[0]
    assert set(last["timestamp"]) == {pd.Timestamp("2026-11-03 17:00", tz="UTC")}


def _eac_rows(count: int) -> list[str]:
    """An extended report: per message a RECEIVE event for its recipients, then a SEND
    event per recipient, and a late DELIVER of the first message (a repeat far away)."""
    rows = []
    for i in range(count):
        sender = DIRECTORY_PEOPLE[i % len(DIRECTORY_PEOPLE)]
        to = ["book@escort-ads.test", f"x{i}@partner.example"][: 1 + i % 2]
        nmid = f"0f1e2d3c-0000-4000-8000-{i:012d}"
        stamp = f"2026-11-{2 + i % 7:02d}T09:{i % 60:02d}:00Z"
        common = f"{i},<m{i}@corp.example>,{nmid}"
        subject = '"Re: ""offer"",\r\nsecond line"'
        rows.append(
            f"{stamp},,,,,,,SMTP,RECEIVE,{common},{';'.join(to)},,4096,{len(to)},,,"
            f"{subject},{sender},,,Originating,,,,"
        )
        for address in to:
            rows.append(
                f"{stamp},,,,,,,SMTP,SEND,{common},{address},250 OK,4096,1,,,"
                f"{subject},{sender},,,Originating,,,,"
            )
    rows.append(rows[0].replace("RECEIVE", "DELIVER"))
    return rows


def _write_eac(path: Path, count: int = 120, encoding: str = "utf-8") -> Path:
    path.write_bytes(("\r\n".join([EAC_HEADER, *_eac_rows(count)]) + "\r\n").encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_an_extended_report_splits_with_the_repeats_of_the_whole_file(
    tmp_path: Path, small_parts: None, encoding: str
) -> None:
    unit = detect_file(_write_eac(tmp_path / "extended.csv", encoding=encoding))
    assert unit.format == "eac-extended-report"
    parts = _assert_parts_read_the_whole(unit, 4)
    _, _, skipped = _read(parts)
    # each recipient's RECEIVE row counts; its SEND and the late DELIVER are repeats,
    # whichever part they fall in
    assert skipped == {"repeated_transport_event": 180 + 1}
    assert sum(len(p.seen_before) for p in parts if isinstance(p, ExportFile)) > 0


def test_a_generic_csv_splits_too(tmp_path: Path, small_parts: None) -> None:
    lines = ["time;from;to;subject"]
    for i in range(300):
        person = DIRECTORY_PEOPLE[i % len(DIRECTORY_PEOPLE)]
        lines.append(f'2026-11-{2 + i % 7:02d} 10:00:{i % 60:02d};{person};x{i}@a.test;"a;\nb"')
    (tmp_path / "gateway.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    columns = {"timestamp": "time", "sender": "from", "recipient": "to"}
    (unit,) = create_source(
        "generic", "gw", {"path": "gateway.csv", "columns": columns}, tmp_path
    ).units()
    assert len(_assert_parts_read_the_whole(unit, 3)) == 3


def test_parts_are_told_the_header_and_the_time_format(tmp_path: Path, small_parts: None) -> None:
    unit = detect_file(write_ps_export(tmp_path / "trace.csv", _traffic(200)))
    first, second = unit.split(2)
    assert isinstance(first, ExportFile) and isinstance(second, ExportFile)
    assert first.column_names is None  # it reads the header itself
    assert second.column_names is not None and second.column_names[:2] == [
        "PSComputerName",
        "RunspaceId",
    ]
    assert first.timestamp_format == second.timestamp_format == "%m/%d/%Y %I:%M:%S %p"
    assert first.seen_before is None and second.seen_before is None  # not an extended report


def test_a_part_is_never_split_again_and_json_stays_whole(
    tmp_path: Path, small_parts: None
) -> None:
    unit = detect_file(write_ps_export(tmp_path / "trace.csv", _traffic(200)))
    part = unit.split(2)[1]
    assert part.split(4) == [part]
    json_file = tmp_path / "trace.json"
    json_file.write_text(
        '{"Received": "2026-11-02T10:00:00Z", "SenderAddress": "u1@corp.example", '
        '"RecipientAddress": "x@a.test"}\n' * 2000
    )
    whole = detect_file(json_file)
    assert whole.split(4) == [whole]


# --- End to end: an audit on a local two-worker cluster ---------------------------------


@pytest.fixture
def big_exports(tmp_path: Path) -> Path:
    """One Get-MessageTrace export in UTF-8, one in UTF-16, and one extended report, each
    with quoted line breaks in subjects, and the week of mail with its alert."""
    folder = tmp_path / "exports"
    folder.mkdir()
    rows = [*week_of_mail_rows(), *_traffic(300, start=100)]
    for i, row in enumerate(rows):
        row[8] = f'Re: "offer" {i},\r\nsecond line'
    write_ps_export(folder / "trace.csv", rows)
    write_ps_export(folder / "trace-utf16.csv", _traffic(300, start=1000), encoding="utf-16")
    _write_eac(folder / "extended.csv", 150)
    return folder


@pytest.mark.slow
def test_the_dask_engine_reads_one_large_file_as_parts_and_equals_the_local_engine(
    big_exports: Path,
    directory_csv: Path,
    escort_feed: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="connectors")
    caplog.set_level(logging.INFO, logger="compliance.executors")
    local = audit_json(big_exports, directory_csv, escort_feed)
    assert not [r for r in caplog.records if "parts" in r.getMessage()]  # read whole here
    monkeypatch.setattr(csvsplit, "MIN_PART_BYTES", 4096)
    on_dask = audit_json(big_exports, directory_csv, escort_feed, "--engine", "dask")
    said = [r.getMessage() for r in caplog.records]
    for name, kind in (
        ("extended.csv", "eac-extended-report"),
        ("trace-utf16.csv", "get-messagetrace-csv"),
        ("trace.csv", "get-messagetrace-csv"),
    ):
        assert any(m.startswith(f"{name} ({kind}) is read as 2 parts") for m in said), said
    assert "dask: 6 unit(s) on 2 worker(s)" in said  # three files, two parts each
    assert on_dask == local
    # the extended report: 225 (message, recipient) pairs, each a RECEIVE and a SEND row,
    # and one late DELIVER
    assert local["events"] == (3 + 17 + 1 + 300) + 300 + (225 + 225 + 1)
    assert local["skipped_by_reason"] == {"repeated_transport_event": 226}
    assert local["alerts"]


@pytest.mark.slow
def test_one_large_export_spreads_over_both_workers_with_its_rows_counted_once(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = write_ps_export(tmp_path / "trace.csv", [*week_of_mail_rows(), *_traffic(400, 100)])
    small = write_ps_export(tmp_path / "small.csv", week_of_mail_rows(start=2000)[:4])
    request = AuditRequest(
        logs=(big, small),
        feeds=(f"{escort_feed}:escort-ads",),
        policies=(SHIPPED_POLICIES,),
        directory=directory_csv,
        org_domains=("corp.example",),
    )
    key = load_key()
    local = run_audit(request, key)
    monkeypatch.setattr(csvsplit, "MIN_PART_BYTES", 4096)
    caplog.set_level(logging.INFO)
    on_dask = run_audit(dataclasses.replace(request, engine="dask"), key)
    # two parts a file for two workers' four tasks; the small file is too small to split
    assert "trace.csv (get-messagetrace-csv) is read as 2 parts" in caplog.text
    assert "dask: 3 unit(s) on 2 worker(s)" in caplog.text
    # the rows of each file, as the report's sources table shows them
    assert on_dask.result.unit_rows == local.result.unit_rows == [21 + 400, 4]
    assert on_dask.report.sources == local.report.sources
    assert [a.as_dict() for a in on_dask.result.alerts] == [
        a.as_dict() for a in local.result.alerts
    ]
    assert local.result.alerts
