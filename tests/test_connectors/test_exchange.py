"""Exchange exports: every format and encoding the issue names, modelled on the real ones."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compliance.errors import ConfigError, InputError
from connectors.base import create_source
from connectors.common import KeySet
from connectors.exchange import detect_file
from connectors.textfile import _TIMESTAMP_FORMATS, parse_timestamps
from tests.conftest import EAC_HEADER, ps_row, sample, write_ps_export

ROWS = [
    ps_row("11/5/2026 9:03:00 AM", "alice@corp.example", "booking@escort-ads.test", index=1),
    ps_row(
        "11/6/2026 1:03:00 PM",
        "Info@Escort-Ads.TEST.",
        "bob@corp.example",
        index=2,
        subject='Re: "offer", with a comma\nand a second line',
    ),
]


def _read(path: Path) -> tuple[pd.DataFrame, Counter[str], Counter[str], str]:
    unit = detect_file(path)
    frames, rejected, skipped = [], Counter[str](), Counter[str]()
    for chunk in unit.chunks():
        frames.append(chunk.frame)
        rejected.update(chunk.rejected)
        skipped.update(chunk.skipped)
    return pd.concat(frames, ignore_index=True), rejected, skipped, unit.format


@pytest.mark.parametrize(
    ("encoding", "type_line", "newline"),
    [
        ("utf-8", True, "\r\n"),  # Windows PowerShell 5.1
        ("utf-8-sig", True, "\r\n"),  # with a BOM
        ("utf-16", True, "\r\n"),  # UTF-16 LE with BOM (re-saved by Excel)
        ("utf-16-le", True, "\r\n"),  # UTF-16 LE without BOM
        ("utf-8", False, "\n"),  # PowerShell 7
    ],
)
def test_get_messagetrace_export(
    tmp_path: Path, encoding: str, type_line: bool, newline: str
) -> None:
    path = write_ps_export(
        tmp_path / "trace.csv", ROWS, encoding=encoding, type_line=type_line, newline=newline
    )
    frame, rejected, _, fmt = _read(path)
    assert fmt == "get-messagetrace-csv"
    assert not rejected
    assert list(frame["sender"]) == ["alice@corp.example", "Info@Escort-Ads.TEST."]
    assert list(frame["timestamp"]) == [
        pd.Timestamp("2026-11-05 09:03", tz="UTC"),
        pd.Timestamp("2026-11-06 13:03", tz="UTC"),
    ]
    assert list(frame["size"]) == [20480, 20480]
    assert frame["message_id"].iloc[0] == "<m000001@mail.corp.example>"
    assert "subject" not in frame.columns
    assert "Subject" not in frame.columns


def test_malformed_rows_are_counted_and_the_rest_is_read(tmp_path: Path) -> None:
    rows = [*ROWS, ["too", "few", "fields"]]
    path = write_ps_export(tmp_path / "trace.csv", rows)
    frame, rejected, _, _ = _read(path)
    assert len(frame) == 2
    assert rejected == {"malformed_row": 1}


def test_day_first_24h_culture(tmp_path: Path) -> None:
    rows = [ps_row("25/11/2026 17:03:00", "alice@corp.example", "x@escort-ads.test")]
    frame, _, _, _ = _read(write_ps_export(tmp_path / "trace.csv", rows))
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-11-25 17:03", tz="UTC")


def test_unparseable_time_becomes_missing(tmp_path: Path) -> None:
    rows = [*ROWS, ps_row("yesterday", "alice@corp.example", "x@escort-ads.test", index=3)]
    frame, _, _, _ = _read(write_ps_export(tmp_path / "trace.csv", rows))
    assert frame["timestamp"].isna().sum() == 1


def test_eac_summary_report_with_several_recipients(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    path.write_text(
        "origin_timestamp_utc,sender_address,recipient_status,message_subject,total_bytes,"
        "message_id,network_message_id,original_client_ip,directionality,connector_id,"
        "delivery_priority\r\n"
        '2026-11-05T09:03:00.1234567Z,alice@corp.example,"a@escort-ads.test##Receive, Send;'
        'b@partner.example##Receive, Fail",Hello,5120,<m1@corp.example>,'
        "0f1e2d3c-0000-4000-8000-000000000001,192.0.2.1,Originating,,Normal\r\n",
        encoding="utf-16",
    )
    frame, _, _, fmt = _read(path)
    assert fmt == "eac-summary-report"
    assert list(frame["recipient"]) == ["a@escort-ads.test", "b@partner.example"]
    assert list(frame["status"]) == ["Send", "Fail"]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-11-05 09:03:00.1234567", tz="UTC")


def test_eac_extended_report_deduplicates_transport_events(tmp_path: Path) -> None:
    header = EAC_HEADER
    nmid = "0f1e2d3c-0000-4000-8000-000000000002"
    rows = [
        f"2026-11-05T09:03:00Z,,,,,,,SMTP,RECEIVE,1,<m2@corp.example>,{nmid},"
        f"a@escort-ads.test;b@partner.example,,4096,2,,,Hi,alice@corp.example,,,Originating,,,,",
        f"2026-11-05T09:03:01Z,,,,,,,SMTP,SEND,1,<m2@corp.example>,{nmid},"
        f"a@escort-ads.test,250 OK,4096,1,,,Hi,alice@corp.example,,,Originating,,,,",
        f"2026-11-05T09:03:02Z,,,,,,,SMTP,SEND,1,<m2@corp.example>,{nmid},"
        f"b@partner.example,250 OK,4096,1,,,Hi,alice@corp.example,,,Originating,,,,",
    ]
    path = tmp_path / "extended.csv"
    path.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode("utf-16-le"))
    frame, rejected, skipped, fmt = _read(path)
    assert fmt == "eac-extended-report"
    # the first event of each (message, recipient), in the file's order
    assert list(frame["recipient"]) == ["a@escort-ads.test", "b@partner.example"]
    assert list(frame["status"]) == ["RECEIVE", "RECEIVE"]
    assert skipped == {"repeated_transport_event": 2}
    assert not rejected


def _eac_send(
    at: str, internal: int, message_id: str, network_id: str, recipient: str, sender: str
) -> str:
    """One SEND event of an extended report (EAC_HEADER's columns)."""
    return (
        f"{at},,,,,,,SMTP,SEND,{internal},{message_id},{network_id},"
        f"{recipient},250 OK,4096,1,,,Hi,{sender},,,Originating,,,,"
    )


def test_extended_report_rows_without_a_message_id_are_rejected_not_merged(
    tmp_path: Path,
) -> None:
    """Rows with neither a network message id nor a message id cannot be told apart: two
    such messages to one recipient once shared an event, the second skipped as a repeat of
    the first. Each is refused on its own (``no_message_id``), and named rows read on."""
    nmid = "0f1e2d3c-0000-4000-8000-000000000003"
    rows = [
        _eac_send("2026-11-05T09:03:00Z", 1, "", "", "buyer@listed.test", "alice@corp.example"),
        _eac_send("2026-11-05T10:03:00Z", 2, "", "", "buyer@listed.test", "bob@corp.example"),
        _eac_send(
            "2026-11-05T11:03:00Z", 3, "<m3@corp.example>", nmid, "buyer@listed.test",
            "carol@corp.example",
        ),
        _eac_send(
            "2026-11-05T12:03:00Z", 4, "<m4@corp.example>", "", "buyer@listed.test",
            "dave@corp.example",
        ),
    ]  # fmt: skip
    path = tmp_path / "extended.csv"
    path.write_text("\r\n".join([EAC_HEADER, *rows]) + "\r\n")
    frame, rejected, skipped, _ = _read(path)
    assert list(frame["sender"]) == ["carol@corp.example", "dave@corp.example"]
    assert rejected == {"no_message_id": 2}
    assert not skipped


def test_a_crafted_message_id_cannot_pass_for_an_event_already_read(tmp_path: Path) -> None:
    """The sender chooses the Message-ID. The second one was solved (in milliseconds) to
    share the unkeyed hash of the first row's (message, recipient) event, which once made
    the extended report's reading skip the second row, a message to a listed site, as a
    repeated event. Events are keyed under a reading's own random key: both rows stay."""
    rows = [
        _eac_send(
            "2026-11-05T09:03:00Z", 1, "", "<innocuous-1@mail.corp.example>",
            "friend@ok.example", "alice@corp.example",
        ),
        _eac_send(
            "2026-11-05T09:04:00Z", 2, "", "<usmok02u-323MTw@mail.corp.example>",
            "buyer@listed.test", "alice@corp.example",
        ),
    ]  # fmt: skip
    path = tmp_path / "extended.csv"
    path.write_text("\r\n".join([EAC_HEADER, *rows]) + "\r\n")
    frame, rejected, skipped, fmt = _read(path)
    assert fmt == "eac-extended-report"
    assert list(frame["recipient"]) == ["friend@ok.example", "buyer@listed.test"]
    assert not skipped and not rejected
    # each reading keys its events under a key of its own; a split file's parts share it
    first, second = detect_file(path), detect_file(path)
    assert first.event_secret != second.event_secret


events = st.tuples(
    st.sampled_from(["<a@x>", "<b@x>", None, "<c d@x>", "<é@x>"]),
    st.sampled_from(["x@a.example", None, "y@b.example"]),
)


@given(st.lists(st.lists(events, max_size=12), max_size=5))
def test_repeated_events_are_the_ones_read_before(chunks: list[list[tuple]]) -> None:
    """Across chunks, a (message, recipient) event is kept the first time it is read, in
    the file's order, and skipped every later time, nulls being values like any other."""
    from connectors.exchange import _drop_seen

    seen, reference, secret = KeySet(), set(), b"k" * 16
    for rows in chunks:
        raw = pd.DataFrame(rows, columns=["message_id", "recipient"], dtype="string")
        if raw.empty:
            raw = pd.DataFrame({"message_id": [], "recipient": []}, dtype="string")
        kept, repeats = _drop_seen(raw, seen, secret)
        expected = []
        for row in rows:
            if row not in reference:
                reference.add(row)
                expected.append(row)
        got = [
            (None if pd.isna(m) else m, None if pd.isna(r) else r)
            for m, r in zip(kept["message_id"], kept["recipient"], strict=True)
        ]
        assert got == expected
        assert repeats == len(rows) - len(expected)


def test_reporting_web_service_json_lines() -> None:
    path = sample(
        "elastic__integrations",
        "microsoft_exchange_online_message_trace",
        "test-log.log",
    )
    frame, rejected, _, fmt = _read(path)
    assert fmt == "message-trace-json"
    assert len(frame) == 4  # the OData envelope line holds no rows
    assert not rejected
    # 'Received' without a zone and with 7 fractional digits is read as UTC
    assert pd.Timestamp("2022-09-05 18:10:13.4907658", tz="UTC") in set(frame["timestamp"])


def test_graph_page_saved_as_json(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(
        '{\n "@odata.context": "x",\n "value": [\n  {"id": "4f5a", "receivedDateTime": '
        '"2026-11-05T09:03:00Z", "senderAddress": "alice@corp.example", "recipientAddress": '
        '"a@escort-ads.test", "subject": "s", "status": "delivered", "size": 100, '
        '"messageId": "<m@corp.example>"}\n ]\n}\n'
    )
    frame, _, _, fmt = _read(path)
    assert fmt == "message-trace-json"
    assert frame["recipient"].tolist() == ["a@escort-ads.test"]
    assert frame["status"].tolist() == ["delivered"]


def test_unknown_format_is_refused_without_quoting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "msgtrk.log"
    path.write_text(
        "2026-11-05T09:03:00.000Z,192.0.2.1,host,,,,,SMTP,RECEIVE,1,"
        "<m@corp.example>,secret.person@corp.example,Subject line\n"
    )
    with pytest.raises(InputError) as caught:
        detect_file(path)
    message = str(caught.value)
    assert "msgtrk.log" in message
    assert "unknown log format" in message
    assert "secret.person" not in message


@pytest.mark.parametrize("content", [b"", b"\xff\xfe"])
def test_empty_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="empty"):
        detect_file(path)


def test_extended_report_skips_mail_the_system_made(tmp_path: Path) -> None:
    """Bounces (``DSN``) and mail with the null return path ``<>`` (an out-of-office reply
    sent from the person's own address, an inbox rule's, a read receipt) answer what
    someone else sent: skipped and counted, as the Exchange Server reader does; the
    person's own message to the same site is read."""

    def event(at: str, n: int, source: str, event_id: str, sender: str, return_path: str) -> str:
        return (
            f"{at},,,,,,,{source},{event_id},{n},<m{n}@corp.example>,"
            f"0f1e2d3c-0000-4000-8000-00000000001{n},promo@escort-ads.test,250 OK,4096,1,,,"
            f"Hi,{sender},{return_path},,Originating,,,,"
        )

    rows = [
        event("2026-11-05T09:00:00Z", 1, "MAILBOXRULE", "SEND", "alice@corp.example", "<>"),
        event("2026-11-05T09:01:00Z", 2, "STOREDRIVER", "SEND", "alice@corp.example", " < > "),
        event("2026-11-05T09:02:00Z", 3, "DSN", "DSN", "alice@corp.example", "alice@corp.example"),
        event("2026-11-05T09:03:00Z", 4, "SMTP", "DSN", "bob@corp.example", "bob@corp.example"),
        event("2026-11-05T09:04:00Z", 5, "STOREDRIVER", "SEND", "alice@corp.example",
              "alice@corp.example"),
    ]  # fmt: skip
    path = tmp_path / "extended.csv"
    path.write_text("\r\n".join([EAC_HEADER, *rows]) + "\r\n")
    frame, rejected, skipped, _ = _read(path)
    assert list(frame["message_id"]) == ["0f1e2d3c-0000-4000-8000-000000000015"]  # the network id
    assert skipped == {"null_sender": 2, "delivery_status_notification": 2}
    assert not rejected


def test_folder_source_lists_every_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "a.csv", ROWS[:1])
    write_ps_export(inbox / "b.csv", ROWS[1:])
    source = create_source("exchange", "exports", {"path": "inbox"}, tmp_path)
    units = source.units()
    assert [u.format for u in units] == ["get-messagetrace-csv"] * 2
    assert len({u.key for u in units}) == 2


def _random_stamp(rng: random.Random) -> str:
    def pad(x: int) -> str:
        return str(x).zfill(2) if rng.random() < 0.5 else str(x)

    m, d, y = rng.randint(0, 13), rng.randint(0, 32), rng.choice([2026, 2024, 1999, 26, 2100])
    hh, mm, ss = rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 61)
    ap = rng.choice(["AM", "PM", "am", "pm", "", "XM"])
    sep = rng.choice(["/", ".", "-"])
    sp = rng.choice([" ", " ", "  ", "", "\t"])
    return rng.choice(
        [
            f"{pad(m)}{sep}{pad(d)}{sep}{y}{sp}{pad(hh)}:{pad(mm)}:{pad(ss)}{sp}{ap}",
            f"{pad(d)}{sep}{pad(m)}{sep}{y}{sp}{pad(hh)}:{pad(mm)}:{pad(ss)}",
            f"{y}/{pad(m)}/{pad(d)}{sp}{pad(hh)}:{pad(mm)}:{pad(ss)}",
            f"{pad(m)}/{pad(d)}/{y}{sp}{pad(hh)}:{pad(mm)}{sp}{ap}",
            "",
            " x ",
        ]
    )


@pytest.mark.parametrize("fmt", [f for f in _TIMESTAMP_FORMATS if f != "ISO8601"])
def test_fast_timestamp_parsing_equals_pandas_on_every_value(fmt: str) -> None:
    """Arrow parses culture dates; 30 February, 13 PM, bad spacing: exactly pandas' answer."""
    rng = random.Random(3)
    values = pd.Series(
        [_random_stamp(rng) for _ in range(30_000)]
        + ["2/30/2026 1:00:00 PM", "2/29/2024 1:00:00 PM", "31.4.2026 10:00:00", None],
        dtype="str",
    )
    fast = parse_timestamps(values, fmt)
    slow = pd.to_datetime(values.str.strip(), format=fmt, errors="coerce", utc=True)
    assert fast.isna().tolist() == slow.isna().tolist()
    assert (fast[fast.notna()] == slow[slow.notna()]).all()
    assert fast.notna().sum() > 200  # the sample holds many valid times in every format


def test_sizes_that_are_not_whole_byte_counts_become_missing() -> None:
    from connectors.textfile import _sizes

    values = pd.Series(["1", "22", None, "2.5", "-3", "n/a", "1e3", "+12"], dtype="str")
    assert _sizes(values).tolist() == [1, 22, pd.NA, pd.NA, pd.NA, pd.NA, 1000, 12]
    assert _sizes(pd.Series(["7", None], dtype="str")).tolist() == [7, pd.NA]


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("timestamp_fromat", " (did you mean `timestamp_format`?)"),
        ("paht", " (did you mean `path`?)"),
        ("columns", ""),  # a generic source's option: nothing of this one is close
        ("type", ""),
    ],
)
def test_a_misspelt_option_is_refused_naming_the_source_and_the_option(
    tmp_path: Path, typo: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_source("exchange", "exports", {"path": "inbox", typo: "x"}, tmp_path)
    assert str(caught.value) == f"source 'exports': {typo}: unknown option{hint}"


def test_a_misspelt_option_from_the_config_file_is_refused(tmp_path: Path) -> None:
    from compliance.config import SourceConfig

    item = SourceConfig.model_validate(
        {"name": "exports", "type": "exchange", "path": "inbox", "timestamp_fromat": "%d"}
    )
    with pytest.raises(
        ConfigError,
        match=r"^source 'exports': timestamp_fromat: unknown option \(did you mean "
        r"`timestamp_format`\?\)$",
    ):
        create_source(item.type, item.name, item.options(), tmp_path)


def test_a_missing_or_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        create_source("exchange", "exports", {}, tmp_path)
    assert str(caught.value) == (
        "source 'exports': path: Field required "
        "(a file, folder or glob, or a list of them; relative to the config file)"
    )
    for bad in (None, 3, ["inbox", 3]):
        with pytest.raises(ConfigError, match=r"^source 'exports': path: must be a file, folder"):
            create_source("exchange", "exports", {"path": bad}, tmp_path)
    with pytest.raises(ConfigError, match="timestamp_format: Input should be a valid string"):
        create_source("exchange", "exports", {"path": "inbox", "timestamp_format": 1}, tmp_path)


def test_every_option_is_accepted_and_used(tmp_path: Path) -> None:
    from compliance.config import SourceConfig

    # 05/11 without AM/PM: detected as day-first; the configured format reads it month-first
    rows = [ps_row("05/11/2026 9:03:00", "alice@corp.example", "x@escort-ads.test")]
    (tmp_path / "a").mkdir()
    write_ps_export(tmp_path / "a" / "trace.csv", rows)
    write_ps_export(tmp_path / "b.csv", ROWS[:1])
    detected = create_source("exchange", "exports", {"path": ["a", "b.csv"]}, tmp_path)
    assert [u.format for u in detected.units()] == ["get-messagetrace-csv"] * 2
    item = SourceConfig.model_validate(
        {
            "name": "exports",
            "type": "exchange",
            "path": "a/*.csv",
            "timestamp_format": "%m/%d/%Y %H:%M:%S",
        }
    )
    source = create_source(item.type, item.name, item.options(), tmp_path)
    (unit,) = source.units()
    frame = pd.concat([c.frame for c in unit.chunks()])
    assert frame["timestamp"].tolist() == [pd.Timestamp("2026-05-11 09:03", tz="UTC")]
    unset = create_source("exchange", "exports", {"path": "a", "timestamp_format": None}, tmp_path)
    (unit,) = unset.units()
    frame = pd.concat([c.frame for c in unit.chunks()])
    assert frame["timestamp"].tolist() == [pd.Timestamp("2026-11-05 09:03", tz="UTC")]


@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=60), max_size=40), min_size=1, max_size=12)
)
def test_a_repeated_event_is_dropped_in_whichever_later_chunk_it_comes(
    chunks: list[list[int]],
) -> None:
    # the seen keys live in merged sorted runs; a set is the reference
    seen, reference = KeySet(), set()
    for chunk in chunks:
        keys = np.unique(np.array(chunk, dtype=np.uint64))
        known = seen.contains(keys)
        assert known.tolist() == [int(k) in reference for k in keys]
        seen.add(keys[~known])
        reference.update(chunk)
    assert sum(len(r) for r in seen.runs) == len(reference)
