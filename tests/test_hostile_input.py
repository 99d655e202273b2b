"""Hostile input: a wrong date, deep JSON or undecodable bytes are a counted, named
rejection (or a clear error naming the file), never a wrapped date or an internal error.

Every case goes through `compliance audit --format json`; each file holds good rows, whose
day must come out right (never 1816 or 1678)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from tests.conftest import PS_HEADER, audit_cli, ps_row, write_config, write_ps_export

GOOD_DAY = "2026-11-02"


def _ok(code: int, output: str) -> dict[str, Any]:
    assert code == 0, output
    assert "Traceback" not in output and "internal error" not in output, output
    data: dict[str, Any] = json.loads(output)
    assert (data["first_day"], data["last_day"]) == (GOOD_DAY, GOOD_DAY), data
    return data


def _good(index: int = 1, received: str = "11/2/2026 10:00:00 AM") -> list[str]:
    return ps_row(received, "u1@corp.example", "x@partner.example", index=index)


def _bad(received: str, index: int = 2) -> list[str]:
    return ps_row(received, "u2@corp.example", "y@partner.example", index=index)


# --- 1. timestamps out of range --------------------------------------------------------


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("11/2/2026 10:00:00 AM", "1/1/1600 1:00:00 PM"),  # en-US: was exit 70
        ("11/2/2026 10:00:00 AM", "9/21/1677 1:00:00 PM"),  # was stored as 2262
        ("11/2/2026 10:00:00 AM", "12/31/9999 1:00:00 PM"),  # was stored as 1816-03-29
        ("11/2/2026 10:00:00 AM", "1/1/2263 1:00:00 PM"),  # was stored as 1678-06-12
        ("11/2/2026 10:00 AM", "12/31/9999 1:00 PM"),  # en-US without seconds
        ("02/11/2026 10:00:00", "31/12/9999 13:00:00"),  # en-GB, fr-FR
        ("02.11.2026 10:00:00", "31.12.9999 13:00:00"),  # de-DE
        ("2026/11/02 10:00:00", "1600/01/01 13:00:00"),
        ("2026-11-02T10:00:00Z", "0000-01-01T00:00:00Z"),  # ISO year 0: was exit 70
        ("2026-11-02T10:00:00Z", "10000-01-01T00:00:00Z"),
        ("2026-11-02T10:00:00Z", "1600-01-01T13:00:00"),
        ("2026-11-02T10:00:00Z", "9999-12-31T13:00:00Z"),
        ("2026-11-02T10:00:00Z", "1985-06-01T13:00:00Z"),  # before the default 1990
    ],
)
def test_a_time_out_of_range_is_a_bad_timestamp(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, good: str, bad: str
) -> None:
    path = write_ps_export(
        tmp_path / "trace.csv", [_good(1, good), _bad(bad, 2), _good(3, good)], encoding="utf-16"
    )
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["events"] == 3
    assert data["rejected_by_reason"] == {"bad_timestamp": 1}


def test_a_time_too_far_ahead_is_a_bad_timestamp(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = write_ps_export(tmp_path / "trace.csv", [_good(1, "2026-11-02T10:00:00Z"), _bad(ahead)])
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"bad_timestamp": 1}


def test_sizes_read_as_dates_are_bad_timestamps(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """A header whose columns are in another order: sizes under 'Received'."""
    header = list(PS_HEADER)
    at_received, at_size = header.index("Received"), header.index("Size")
    header[at_received], header[at_size] = "Size", "Received"
    rows = []
    for i, size in enumerate(("20480", "1999", "2026", "99999999999", "1e300"), start=2):
        row = _bad("11/2/2026 10:00:00 AM", i)
        row[at_size] = size  # what the header calls Received
        rows.append(row)
    good = _good(1)
    good[at_size] = "2026-11-02T10:00:00Z"
    lines = ["#TYPE x", *(",".join(f'"{f}"' for f in r) for r in [header, good, *rows])]
    path = tmp_path / "shuffled.csv"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"bad_timestamp": 5}


def test_eac_reports_with_times_out_of_range(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    summary = tmp_path / "summary.csv"
    summary.write_text(
        "origin_timestamp_utc,sender_address,recipient_status,message_subject,total_bytes,"
        "message_id,network_message_id\r\n"
        '2026-11-02T09:03:00Z,u1@corp.example,"a@partner.example##Receive, Send",Hi,5,<m1@x>,n1\r\n'
        '1600-11-05T09:03:00Z,u1@corp.example,"a@partner.example##Receive, Send",Hi,5,<m2@x>,n2\r\n'
        '9999-12-31T09:03:00Z,u1@corp.example,"a@partner.example##Receive, Send",Hi,5,<m3@x>,'
        "n3\r\n",
        encoding="utf-16",
    )
    data = _ok(*audit_cli(summary, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"bad_timestamp": 2}
    header = (
        "date_time_utc,event_id,message_id,network_message_id,recipient_address,total_bytes,"
        "message_subject,sender_address"
    )
    rows = [
        "2026-11-02T09:03:00Z,SEND,<m1@x>,n1,a@partner.example,5,Hi,u1@corp.example",
        "0000-01-01T09:03:00Z,SEND,<m2@x>,n2,a@partner.example,5,Hi,u1@corp.example",
        "10000-01-01T09:03:00Z,SEND,<m3@x>,n3,a@partner.example,5,Hi,u1@corp.example",
    ]
    extended = tmp_path / "extended.csv"
    extended.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode("utf-16-le"))
    data = _ok(*audit_cli(extended, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"bad_timestamp": 2}


def _json_row(received: Any, index: int) -> dict[str, Any]:
    return {
        "Received": received,
        "SenderAddress": "u1@corp.example",
        "RecipientAddress": "x@partner.example",
        "Size": 100,
        "MessageId": f"<m{index}@mail.corp.example>",
    }


ODD_TIMES: list[Any] = [
    20261102,  # a number that reads as a date
    2026,
    1700000000,
    1.5e300,
    True,
    {"DateTime": "2026-11-02T10:00:00Z"},
    ["2026-11-02T10:00:00Z"],
    "1600-01-01T00:00:00Z",
    "9999-12-31T13:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026",
]


def test_oddly_typed_json_lines_times_are_bad_timestamps(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    path = tmp_path / "trace.jsonl"
    rows = [_json_row("2026-11-02T10:00:00Z", 0)]
    rows += [_json_row(value, i) for i, value in enumerate(ODD_TIMES, start=1)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["events"] == len(rows)
    assert data["rejected_by_reason"] == {"bad_timestamp": len(ODD_TIMES)}


def test_a_json_page_with_times_out_of_range(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [
        {
            "receivedDateTime": t,
            "senderAddress": "u1@corp.example",
            "recipientAddress": "x@partner.example",
            "id": f"t{i}",
        }
        for i, t in enumerate(("2026-11-02T10:00:00Z", "10000-01-01T00:00:00Z", 12345, None))
    ]
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"value": rows}, indent=1), encoding="utf-8")
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"bad_timestamp": 3}


def _config_audit(config: Path, *extra: str) -> tuple[int, str]:
    args = ["audit", "--config", str(config), "--format", "json", *extra]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_generic_csv_with_a_timestamp_format(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    log = tmp_path / "gateway.csv"
    log.write_text(
        "time;from;to\n"
        "02/11/2026 10:00:00;u1@corp.example;x@partner.example\n"
        "01/01/1600 10:00:00;u1@corp.example;x@partner.example\n"
        "31/12/9999 13:00:00;u1@corp.example;x@partner.example\n"
        "01/01/2263 13:00:00;u1@corp.example;x@partner.example\n",
        encoding="utf-8",
    )
    source = (
        f"[{{name: gw, type: generic, path: {log}, delimiter: ';', "
        "timestamp_format: '%d/%m/%Y %H:%M:%S', "
        "columns: {timestamp: time, sender: from, recipient: to}}]"
    )
    config = write_config(tmp_path / "c.yaml", directory_csv, escort_feed, sources=source)
    data = _ok(*_config_audit(config, "--source", "gw"))
    assert data["rejected_by_reason"] == {"bad_timestamp": 3}


@pytest.mark.parametrize(
    "kind",
    [pa.timestamp("us"), pa.timestamp("ms"), pa.timestamp("ms", tz="UTC"), pa.timestamp("s")],
)
def test_parquet_typed_times_out_of_range(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, kind: pa.DataType
) -> None:
    times = [dt.datetime(2026, 11, 2, 10), dt.datetime(1500, 1, 1), dt.datetime(9999, 12, 31)]
    if kind.tz is not None:
        times = [t.replace(tzinfo=dt.UTC) for t in times]
    table = pa.table(
        {
            "time": pa.array(times, type=kind),
            "from": ["u1@corp.example"] * 3,
            "to": ["x@partner.example"] * 3,
        }
    )
    archive = tmp_path / "archive.parquet"
    pq.write_table(table, archive)
    source = (
        f"[{{name: archive, type: generic, path: {archive}, "
        "columns: {timestamp: time, sender: from, recipient: to}}]"
    )
    config = write_config(tmp_path / "c.yaml", directory_csv, escort_feed, sources=source)
    data = _ok(*_config_audit(config, "--source", "archive"))
    assert data["rejected_by_reason"] == {"bad_timestamp": 2}


def test_graph_rows_out_of_range_or_oddly_typed_have_no_time() -> None:
    from compliance.pipeline import Context, process_chunk  # noqa: F401  (the schema)
    from connectors.m365 import page_to_chunk

    begin = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    end = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)

    def row(received: Any, i: int) -> dict[str, Any]:
        return {
            "receivedDateTime": received,
            "senderAddress": "u1@corp.example",
            "recipientAddress": "x@partner.example",
            "status": "Delivered",
            "size": 1,
            "id": f"t{i}",
        }

    odd = ["1600-01-01T00:00:00Z", "9999-12-31T00:00:00Z", "10000-01-01T00:00:00Z", 20261102]
    page = [row("2026-11-02T10:00:00Z", 0)] + [row(v, i) for i, v in enumerate(odd, 1)]
    chunk = page_to_chunk(page, begin, end)
    stamps = chunk.frame["timestamp"]
    assert str(stamps.dtype) == "datetime64[ns, UTC]"
    assert stamps.iloc[0] == pd.Timestamp("2026-11-02T10:00:00Z")
    assert stamps.iloc[1:].isna().all()  # each rejected downstream as bad_timestamp


def test_the_configured_range_applies_in_the_pipeline(tmp_path: Path) -> None:
    from compliance.config import Ingest
    from compliance.events import empty_raw
    from compliance.pipeline import Context, org_index, process_chunk
    from compliance.privacy import Pseudonymiser
    from connectors.directory import load_directory

    ingest = Ingest.model_validate({"earliest": "2026-11-02", "latest_ahead": "12h"})
    assert ingest.latest_ahead == dt.timedelta(hours=12)
    raw = empty_raw().reindex(range(3))
    raw["timestamp"] = pd.to_datetime(
        ["2026-11-01T23:00:00Z", "2026-11-02T10:00:00Z", "2026-12-20T10:00:00Z"], utc=True
    ).astype("datetime64[ns, UTC]")
    raw["sender"] = pd.Series(["u1@corp.example"] * 3, dtype="string")
    raw["recipient"] = pd.Series(["x@partner.example"] * 3, dtype="string")
    ctx = Context(
        org_index(["corp.example"]),
        load_directory(None),
        Pseudonymiser(b"k" * 32, "never"),
        org_index(["escort-ads.test"]),
        timestamps=ingest.timestamp_range(),
    )
    result = process_chunk(raw, "t", ctx)
    assert result.rejected == {"bad_timestamp": 2}  # before earliest, and too far ahead
    # a run of a later day (--today) counts that day's end as now
    ctx.timestamps = ingest.timestamp_range(dt.date(2026, 12, 20))
    assert process_chunk(raw, "t", ctx).rejected == {"bad_timestamp": 1}


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("{latest_ahead: 5y}", "ingest.latest_ahead"),
        ("{latest_ahead: 400d}", "ingest.latest_ahead"),
        ("{latest_ahead: true}", "ingest.latest_ahead"),
        ("{earliest: 1600-01-01}", "ingest.earliest"),
        ("{earliest: 2999-01-01}", "ingest.earliest"),
        ("{earliest: never}", "ingest.earliest"),
        ("{latest: 1d}", "ingest.latest"),
    ],
)
def test_the_ingest_section_is_validated(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, section: str, field: str
) -> None:
    config = write_config(tmp_path / "c.yaml", directory_csv, escort_feed, f"ingest: {section}\n")
    code, output = _config_audit(config, "--logs", str(tmp_path))
    assert code == 2, output
    assert field in output and str(config) in output


# --- 2. deep nesting and long lines in JSON ----------------------------------------------


def test_a_json_document_nested_too_deep_is_an_input_error(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000, encoding="utf-8")
    code, output = audit_cli(path, directory_csv, escort_feed)
    assert code == 4, output  # was 70 (RecursionError)
    assert str(path) in output and "nested deeper than" in output


def test_a_json_lines_row_nested_too_deep_or_too_long_is_counted(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connectors.textfile as textfile

    monkeypatch.setattr(textfile, "MAX_JSON_LINE", 50_000)
    path = tmp_path / "trace.jsonl"
    good = json.dumps(_json_row("2026-11-02T10:00:00Z", 1))
    long = json.dumps({**_json_row("2026-11-02T11:00:00Z", 2), "Subject": "x" * 60_000})
    deep = "[" * 20_000 + "]" * 20_000
    deep_row = json.dumps({**_json_row("2026-11-02T12:00:00Z", 3), "x": [[[[[[[[[[[[]]]]]]]]]]]]})
    deep_row = deep_row.replace("[[[[[[", "[[[[[[" * 10).replace("]]]]]]", "]]]]]]" * 10)
    path.write_text("\n".join([good, deep, long, deep_row, good]) + "\n", encoding="utf-8")
    data = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert data["rejected_by_reason"] == {"nested_too_deep": 2, "line_too_long": 1}
    assert data["skipped_by_reason"] == {"duplicate_message": 1}


# --- 3. invalid UTF-8 ----------------------------------------------------------------------


def _big_export(path: Path) -> bytes:
    """An export beyond the 64 KiB the encoding is guessed from (so: UTF-8)."""
    rows = [_good(i) for i in range(1, 300)]
    return write_ps_export(path, rows).read_bytes()


def test_invalid_utf8_in_a_short_row_is_counted(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "trace.csv"
    data = _big_export(path)
    assert len(data) > 64 << 10
    last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[1].replace(b"<m000299@", b"<m000300@")
    path.write_bytes(data + b'"short","row \xff\xfe here"\r\n' + last + b"\r\n")
    result = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert result["events"] == 301
    assert result["rejected_by_reason"] == {"bad_encoding": 1}
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err and "\\xff" not in err


def test_invalid_utf8_in_a_field_is_counted_and_elsewhere_harmless(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    path = tmp_path / "trace.csv"
    data = _big_export(path)
    rows = data.rstrip(b"\r\n").rsplit(b"\r\n", 2)[1:]
    in_sender = rows[0].replace(b"u1@corp", b"u1\xff@corp").replace(b"<m000298@", b"<m1298@")
    in_subject = rows[1].replace(b"Quarterly", b"Quar\xe9\xffterly").replace(b"<m000299@", b"<m1@")
    path.write_bytes(data + in_sender + b"\r\n" + in_subject + b"\r\n")
    result = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert result["events"] == 301
    assert result["rejected_by_reason"] == {"bad_encoding": 1}  # the subject is never read


def test_invalid_utf8_in_a_json_lines_row_is_counted(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    path = tmp_path / "trace.jsonl"
    lines = [json.dumps(_json_row("2026-11-02T10:00:00Z", i)).encode() for i in range(2000)]
    lines.append(
        json.dumps(_json_row("2026-11-02T10:00:00Z", 9000)).encode().replace(b"u1@", b"u\xff@")
    )
    lines.append(json.dumps(_json_row("2026-11-02T10:00:00Z", 9001)).encode())
    # a genuine U+FFFD (valid text, as an upstream system's replacement writes it) is text
    genuine = _json_row("2026-11-02T10:00:00Z", 9002)
    genuine["MessageId"] = "<m9002\ufffd@mail.corp.example>"
    lines.append(json.dumps(genuine, ensure_ascii=False).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert result["events"] == 2003
    assert result["rejected_by_reason"] == {"bad_encoding": 1}


# --- found by review: more shapes of real archives and exports -------------------------


def _parquet_audit(tmp_path: Path, directory: Path, feed: Path, archive: Path) -> tuple[int, str]:
    source = (
        f"[{{name: archive, type: generic, path: {archive}, "
        "columns: {timestamp: time, sender: from, recipient: to}}]"
    )
    config = write_config(tmp_path / "c.yaml", directory, feed, sources=source)
    return _config_audit(config, "--source", "archive")


def test_int96_parquet_times_do_not_wrap(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # Spark, Hive and Impala archives store INT96 times, which pyarrow would read as
    # nanoseconds: 2580 would wrap to 1995 and be accepted
    times = [dt.datetime(2026, 11, 2, 10), dt.datetime(2580, 6, 1), dt.datetime(1500, 1, 1)]
    table = pa.table(
        {
            "time": pa.array(times, type=pa.timestamp("us")),
            "from": ["u1@corp.example"] * 3,
            "to": ["x@partner.example"] * 3,
        }
    )
    archive = tmp_path / "spark.parquet"
    pq.write_table(table, archive, use_deprecated_int96_timestamps=True)
    data = _ok(*_parquet_audit(tmp_path, directory_csv, escort_feed, archive))
    assert data["rejected_by_reason"] == {"bad_timestamp": 2}


@pytest.mark.parametrize("kind", ["date32", "int64"])
def test_parquet_times_typed_as_dates_or_numbers(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, kind: str
) -> None:
    if kind == "date32":
        column = pa.array([dt.date(2026, 11, 2), dt.date(1500, 1, 1)], type=pa.date32())
        expected = {"bad_timestamp": 1}
    else:
        column = pa.array([1_793_613_600, 1_793_613_600], type=pa.int64())  # not a time
        expected = {"bad_timestamp": 2}
    table = pa.table({"time": column, "from": ["u1@corp.example"] * 2,
                      "to": ["x@partner.example"] * 2})  # fmt: skip
    archive = tmp_path / "typed.parquet"
    pq.write_table(table, archive)
    code, output = _parquet_audit(tmp_path, directory_csv, escort_feed, archive)
    assert code in (0, 4) and "internal error" not in output, output
    if code == 0:
        assert json.loads(output)["rejected_by_reason"] == expected


def test_one_stray_byte_does_not_switch_a_utf8_export_to_ansi(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # PowerShell 7 writes UTF-8 without a BOM; one bad byte in a subject near the top must
    # not turn every other row's non-ASCII address into garbage
    rows = [ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "info@bücher.test", index=i)
            for i in range(1, 5)]  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    data = export.read_bytes().replace(b"Quarterly figures", b"Quarterly \xe9 figures", 1)
    export.write_bytes(data)
    result = _ok(*audit_cli(export, directory_csv, escort_feed))
    assert result["rejected_by_reason"] == {}  # the bad byte sat in a subject: harmless
    assert result["events"] == 4


def test_a_genuine_replacement_character_does_not_switch_a_utf8_export_to_ansi(
    tmp_path: Path,
) -> None:
    """A UTF-8 export without a BOM whose only non-ASCII text near the top is a U+FFFD an
    upstream system wrote (valid text) is read as UTF-8, not as Windows-1252 (which would
    garble every non-ASCII address and message id of the file without a word)."""
    from connectors.textfile import iter_csv, sniff_csv

    rows = [ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "x@partner.example", index=i)
            for i in range(1, 400)]  # fmt: skip
    rows[0] = ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "a\ufffdb@partner.example")
    rows.append(ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "info@bücher.test"))
    export = write_ps_export(tmp_path / "trace.csv", rows)
    layout = sniff_csv(export)
    assert layout.encoding == "utf-8"
    frames = [f for f, _ in iter_csv(export, layout, ["RecipientAddress"])]
    recipients = pd.concat(frames)["RecipientAddress"].tolist()
    assert recipients[0] == "a\ufffdb@partner.example"
    assert recipients[-1] == "info@bücher.test"


def test_an_escaped_noncharacter_in_a_json_row_is_text(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """The JSON reader marks undecodable bytes with U+FDD0; the same character written as
    a JSON escape (a sender chooses the Message-ID) is text, and its row is read."""
    path = tmp_path / "trace.jsonl"
    row = _json_row("2026-11-02T10:00:00Z", 1)
    row["MessageId"] = "<m1\ufdd0@mail.corp.example>"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")  # ensure_ascii: an escape
    assert "\\ufdd0" in path.read_text(encoding="utf-8")
    result = _ok(*audit_cli(path, directory_csv, escort_feed))
    assert result["events"] == 1 and result["rejected_by_reason"] == {}


def test_a_json_line_of_quotes_is_refused_in_linear_time(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    import time

    good = json.dumps(_json_row("2026-11-02T10:00:00Z", 1))
    hostile = '{"x": "' + '\\"[' * 60_000 + "\n"
    log = tmp_path / "rows.jsonl"
    log.write_text(good + "\n" + hostile, encoding="utf-8")
    started = time.perf_counter()
    code, output = audit_cli(log, directory_csv, escort_feed)
    assert time.perf_counter() - started < 10
    assert code == 0 and "internal error" not in output, output


def test_an_out_of_range_latest_ahead_is_a_config_error(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    for value in ("1000000000000", "-5", "400d"):
        config = write_config(
            tmp_path / "c.yaml", directory_csv, escort_feed, f"ingest: {{latest_ahead: {value}}}\n"
        )
        code, output = _config_audit(config, "--logs", str(tmp_path))
        assert code == 2, (value, output)
        assert "latest_ahead" in output and str(config) in output


def test_one_hostile_row_of_a_saved_page_costs_only_itself(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    rows = [_json_row("2026-11-02T10:00:00Z", i) for i in range(1, 201)]
    deep = _json_row("2026-11-02T10:00:00Z", 999)
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    deep["Extra"] = nested  # a field nobody reads, nested 40 deep
    page = {"value": [*rows[:100], deep, 7, *rows[100:]]}
    log = tmp_path / "pages.jsonl"
    log.write_text(json.dumps(page) + "\n", encoding="utf-8")
    data = _ok(*audit_cli(log, directory_csv, escort_feed))
    assert data["events"] == 202
    assert data["rejected_by_reason"] == {"nested_too_deep": 1, "malformed_row": 1}
