"""The connector conformance kit (connectors.testing) over every built-in source type, over
connectors broken on purpose (each break is found), over a real sample, and one kill and
resume through the real engine and `compliance run`.

Adding a source type: write its input from :func:`connectors.testing.traffic` in the
format the type reads (a writer ``(folder, messages, seed) -> Written``, and one with
known bad rows), and add one line to :data:`FILE_HARNESSES`.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import io
import itertools
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict, Field

import compliance.scheduled
from compliance.engine import UnitPart, unit_parts
from compliance.errors import InputError
from compliance.events import conform_raw
from compliance.pipeline import Context
from connectors.base import (
    SOURCES,
    Chunk,
    FileOptions,
    FileUnit,
    ReadUnit,
    Source,
    SourceState,
    expand_paths,
)
from connectors.exchange import ExchangeExportSource
from connectors.generic import GenericSource
from connectors.graph import reset_shared_state
from connectors.m365 import M365Source
from connectors.testing import (
    LISTED_SITES,
    ConformanceError,
    FileHarness,
    Harness,
    Message,
    Minimiser,
    Written,
    check_chunks,
    check_declarations,
    check_memory,
    check_source,
    identity_texts,
    staff,
    traffic,
)
from tests.conftest import (
    PS_HEADER,
    SHIPPED_POLICIES,
    kit_minimiser,
    run_cli,
    sample,
    write_config,
)
from tests.graph_server import SECRET, Running, start, trace_row


# --- the real pipeline, as the identity check's minimiser ------------------------------------
def pipeline_minimiser(
    organisation: Sequence[str] = ("corp.example",), listed: Sequence[str] = LISTED_SITES
) -> Minimiser:
    """What the engine keeps of a raw chunk (compliance.pipeline.process_chunk with a test
    key, the organisation's domains and a feed of ``listed`` sites): matched events,
    totals and keyed messages."""
    return kit_minimiser(listed, organisation)


def _parts(mail: Sequence[Message], parts: int) -> list[list[Message]]:
    """Messages split into ``parts`` runs in time order (one export file each)."""
    size = -(-len(mail) // parts) if mail else 1
    return [list(mail[i : i + size]) for i in range(0, len(mail), size)]


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- exchange: Get-MessageTrace CSV, message-trace JSON Lines, EAC summary report ------------
EXCHANGE_STATUS = {
    "delivered": "Delivered", "deferred": "Pending", "bounced": "Failed", "rejected": "Failed",
    "quarantined": "Quarantined", "filtered_as_spam": "FilteredAsSpam",
}  # fmt: skip


def _ps_time(at: dt.datetime) -> str:
    """en-US culture, as Windows PowerShell 5.1's Export-Csv writes it: 11/5/2026 9:03:00 AM."""
    hour = at.hour % 12 or 12
    return f"{at.month}/{at.day}/{at.year} {hour}:{at:%M:%S} {'AM' if at.hour < 12 else 'PM'}"


def _ps_rows(mail: Sequence[Message]) -> list[list[str]]:
    rows = []
    for m in mail:
        for n, (recipient, status) in enumerate(zip(m.recipients, m.statuses, strict=True)):
            inbound = not m.sender.endswith("corp.example")
            rows.append(
                [
                    "outlook.office365.com", "5c5b2f7e-0000-4000-8000-000000000001", "False",
                    "corp.example", m.message_id, _ps_time(m.timestamp), m.sender, recipient,
                    m.subject, EXCHANGE_STATUS[status], "" if inbound else "203.0.113.250",
                    m.client_ip, str(m.size), str(uuid.uuid5(uuid.NAMESPACE_OID, m.message_id)),
                    "11/1/2026 12:00:00 AM", "11/10/2026 12:00:00 AM", str(n),
                ]
            )  # fmt: skip
    return rows


def _ps_text(rows: Sequence[Sequence[str]]) -> str:
    lines = ["#TYPE Deserialized.Microsoft.Exchange.Management.FfoReporting.MessageTrace"]
    lines += [",".join('"' + f.replace('"', '""') + '"' for f in row) for row in [PS_HEADER, *rows]]
    return "\r\n".join(lines) + "\r\n"


def write_powershell(folder: Path, messages: int, seed: int) -> Written:
    """Four Get-MessageTrace exports (one per part of the period) as Export-Csv writes them."""
    mail = traffic(messages, seed)
    (folder / "inbox").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 4)):
        text = _ps_text(_ps_rows(group))
        (folder / "inbox" / f"trace-{seed}-{part}.csv").write_bytes(text.encode("utf-8-sig"))
    return Written.of_messages(mail, EXCHANGE_STATUS.get)


def write_powershell_malformed(folder: Path) -> Written:
    """An export with 24 good messages and six bad rows, each bad in its own way."""
    mail = traffic(24, 3)
    good = _ps_rows(mail)
    good[1][8] = "Réunion à Zürich"  # UTF-8 text (a stray byte below is then bad text)
    bad = [row[:] for row in good[:4]]
    bad[0][5] = "13/45/2026 9:00:00 AM"  # no date
    bad[1][7] = ""  # no recipient
    bad[2][6] = "not-an-address"  # no address
    bad[3][4] = "<late@mail.corp.example>"
    bad[3][6] = "caf\udcff@corp.example"  # an undecodable byte, written raw below
    text = _ps_text([*good, *bad[:3]])
    broken = _ps_text([bad[3]]).split("\r\n", 2)[2]  # the row alone
    cut = '"' + '","'.join(good[0][:9]) + '"\r\n'  # a row cut short: 9 of 17 fields
    body = text.encode("utf-8") + broken.encode("utf-8", "surrogateescape") + cut.encode()
    body += b'"one field only"\r\n'
    (folder / "inbox").mkdir(exist_ok=True)
    (folder / "inbox" / "trace.csv").write_bytes(body)
    rejected = {
        "bad_timestamp": 1, "no_recipient": 1, "invalid_sender": 1, "bad_encoding": 1,
        "malformed_row": 2,
    }  # fmt: skip
    return Written.of_messages(mail, EXCHANGE_STATUS.get, rejected)


def append_powershell(folder: Path, messages: int, seed: int) -> Written:
    """A fifth export, of the days after the first four."""
    later = dt.datetime(2026, 11, 9, 7, tzinfo=dt.UTC)
    mail = traffic(messages, seed, start=later, span=dt.timedelta(days=2))
    text = _ps_text(_ps_rows(mail))
    (folder / "inbox" / f"trace-{seed}-later.csv").write_bytes(text.encode("utf-8-sig"))
    return Written.of_messages(mail, EXCHANGE_STATUS.get)


def _trace_json(m: Message, recipient: str, status: str) -> dict[str, Any]:
    """A message-trace row as the Reporting Web Service and ConvertTo-Json spell it."""
    return {
        "Organization": "corp.example", "MessageId": m.message_id,
        "Received": m.timestamp.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "SenderAddress": m.sender, "RecipientAddress": recipient, "Subject": m.subject,
        "Status": EXCHANGE_STATUS[status], "ToIP": None, "FromIP": m.client_ip, "Size": m.size,
        "MessageTraceId": str(uuid.uuid5(uuid.NAMESPACE_OID, m.message_id + recipient)),
        "StartDate": "2026-11-01T00:00:00Z", "EndDate": "2026-11-10T00:00:00Z", "Index": 0,
    }  # fmt: skip


def write_trace_jsonl(folder: Path, messages: int, seed: int) -> Written:
    """Message trace as JSON Lines: rows one per line, and a saved OData page per line."""
    mail = traffic(messages, seed)
    (folder / "inbox").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 3)):
        rows = [
            _trace_json(m, r, s)
            for m in group
            for r, s in zip(m.recipients, m.statuses, strict=True)
        ]
        if part == 1:  # a page as the API returns it, on one line
            lines = [
                json.dumps({"odata.metadata": "https://reports.test/$metadata", "value": rows})
            ]
        else:
            lines = [json.dumps(r) for r in rows]
        (folder / "inbox" / f"trace-{part}.json").write_text("\n".join(lines) + "\n")
    return Written.of_messages(mail, EXCHANGE_STATUS.get)


def write_trace_jsonl_malformed(folder: Path) -> Written:
    mail = traffic(30, 5)
    rows = [
        _trace_json(m, r, s) for m in mail for r, s in zip(m.recipients, m.statuses, strict=True)
    ]
    late = _trace_json(mail[0], "someone@corp.example", "delivered")
    lines = [json.dumps(r) for r in rows]
    lines += [
        "{this is no json",
        json.dumps([1, 2, 3]),  # JSON, but no row
        json.dumps({**late, "Received": 20261102}),  # a number where a time belongs
        json.dumps({**late, "MessageId": "<x1@corp.example>", "SenderAddress": None}),
        '{"a": ' * 40 + "1" + "}" * 40,  # nested deeper than a trace row ever is
    ]
    (folder / "inbox").mkdir(exist_ok=True)
    (folder / "inbox" / "trace.json").write_text("\n".join(lines) + "\n")
    rejected = {"malformed_row": 2, "bad_timestamp": 1, "no_sender": 1, "nested_too_deep": 1}
    return Written.of_messages(mail, EXCHANGE_STATUS.get, rejected)


EAC_EVENT = {
    "delivered": "Receive, Deliver", "deferred": "Receive, Defer", "bounced": "Receive, Fail",
    "rejected": "Fail", "quarantined": "Receive, Quarantine", "filtered_as_spam": "Receive, Fail",
}  # fmt: skip
EAC_HEADER = [
    "origin_timestamp_utc", "sender_address", "recipient_status", "message_subject",
    "total_bytes", "message_id", "network_message_id", "original_client_ip", "directionality",
    "connector_id", "delivery_priority",
]  # fmt: skip


def write_eac_summary(folder: Path, messages: int, seed: int) -> Written:
    """Exchange admin center enhanced summary reports, saved as UTF-16 LE by Excel."""
    mail = traffic(messages, seed)
    (folder / "inbox").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 2)):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(EAC_HEADER)
        for m in group:
            status = ";".join(
                f"{r}##{EAC_EVENT[s]}" for r, s in zip(m.recipients, m.statuses, strict=True)
            )
            writer.writerow(
                [
                    m.timestamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"), m.sender, status, m.subject,
                    m.size, m.message_id, str(uuid.uuid5(uuid.NAMESPACE_URL, m.message_id)),
                    m.client_ip, "Originating" if m.sender.endswith("corp.example") else "Incoming",
                    "", "Normal",
                ]
            )  # fmt: skip
        (folder / "inbox" / f"summary-{part}.csv").write_bytes(out.getvalue().encode("utf-16"))
    return Written.of_messages(mail, lambda s: EAC_EVENT[s].rsplit(",", 1)[-1].strip())


# --- generic: CSV, JSON Lines and Parquet through a column mapping ---------------------------
GENERIC_CSV = {
    "path": "logs/*.csv",
    "columns": {
        "timestamp": "time", "sender": "from", "recipient": "to", "status": "result",
        "size": "bytes", "message_id": "msgid",
    },
    "recipient_separator": ";",
}  # fmt: skip
GENERIC_JSONL = {
    "path": "logs",
    "format": "jsonl",
    "columns": {
        "timestamp": "ts", "sender": "envelope_from", "recipient": "rcpt", "status": "verdict",
        "size": "bytes", "message_id": ["mid", "queue_id"],
    },
    "recipient_separator": ";",
}  # fmt: skip
GENERIC_PARQUET = {
    "path": "archive/**/*.parquet",
    "columns": {
        "timestamp": "received", "sender": "sender", "recipient": "recipient",
        "status": "action", "size": "bytes", "message_id": "message_id",
    },
}  # fmt: skip


def _generic_csv_rows(mail: Sequence[Message]) -> list[list[object]]:
    return [
        [
            m.timestamp.strftime("%Y-%m-%d %H:%M:%S"), m.sender, ";".join(m.recipients),
            m.statuses[0], m.size, m.message_id, m.subject, m.client_ip,
        ]
        for m in mail
    ]  # fmt: skip


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "from", "to", "result", "bytes", "msgid", "subject", "client"])
        writer.writerows(rows)


def write_generic_csv(folder: Path, messages: int, seed: int) -> Written:
    mail = traffic(messages, seed, one_status=True)
    (folder / "logs").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 3)):
        _write_csv(folder / "logs" / f"gateway-{seed}-{part}.csv", _generic_csv_rows(group))
    return Written.of_messages(mail)


def write_generic_csv_malformed(folder: Path) -> Written:
    mail = traffic(20, 9, one_status=True)
    rows = _generic_csv_rows(mail)
    late = list(rows[0])
    late[5] = "<late@mail.corp.example>"
    bad = [
        [late[0], late[1], "", *late[3:]],  # no recipient
        ["yesterday", *late[1:]],  # no time
        ["2026-11-02 10:00:00", "alice@corp.example"],  # a line cut short
    ]
    (folder / "logs").mkdir(exist_ok=True)
    _write_csv(folder / "logs" / "gateway.csv", [*rows, *bad])
    return Written.of_messages(
        mail, rejected={"no_recipient": 1, "bad_timestamp": 1, "malformed_row": 1}
    )


def append_generic_csv(folder: Path, messages: int, seed: int) -> Written:
    """The day's log grows: more lines at the end of the last file."""
    later = dt.datetime(2026, 11, 8, 7, tzinfo=dt.UTC)
    mail = traffic(messages, seed, start=later, span=dt.timedelta(hours=20), one_status=True)
    last = sorted((folder / "logs").glob("*.csv"))[-1]
    with last.open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(_generic_csv_rows(mail))
    return Written.of_messages(mail)


def _jsonl_row(m: Message) -> dict[str, Any]:
    return {
        "ts": _iso(m.timestamp), "envelope_from": m.sender, "rcpt": list(m.recipients),
        "verdict": m.statuses[0].upper(), "bytes": m.size, "mid": m.message_id,
        "headers": {"subject": m.subject, "from": f'"{m.sender_name}" <{m.sender}>'},
        "client": {"ip": m.client_ip},
    }  # fmt: skip


def write_generic_jsonl(folder: Path, messages: int, seed: int) -> Written:
    mail = traffic(messages, seed, one_status=True)
    (folder / "logs").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 2)):
        text = "\n".join(json.dumps(_jsonl_row(m)) for m in group) + "\n"
        (folder / "logs" / f"gateway-{seed}-{part}.jsonl").write_text(text)
    return Written.of_messages(mail)


def write_generic_jsonl_malformed(folder: Path) -> Written:
    mail = traffic(20, 11, one_status=True)
    lines = [json.dumps(_jsonl_row(m)) for m in mail]
    late = _jsonl_row(next(m for m in mail if len(m.recipients) == 1))
    lines += [
        '{"ts": "2026-11-02T10:00:00Z", "envelope_from": ',  # a line cut short
        json.dumps({**late, "mid": "<y1@corp.example>", "ts": {"when": "today"}}),  # no time
        json.dumps({**late, "mid": "<y2@corp.example>", "rcpt": ["nobody"]}),  # no address
    ]
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "gateway.jsonl").write_text("\n".join(lines) + "\n")
    rejected = {"malformed_row": 1, "bad_timestamp": 1, "invalid_recipient": 1}
    return Written.of_messages(mail, rejected=rejected)


def write_generic_parquet(folder: Path, messages: int, seed: int) -> Written:
    """A Parquet archive in two parts, one row per recipient, typed times, small row groups
    (a unit splits into runs of them)."""
    mail = traffic(messages, seed)
    rows = [
        {**row, "subject": m.subject, "client_ip": m.client_ip} for m in mail for row in m.rows()
    ]
    frame = pd.DataFrame(rows).rename(columns={"timestamp": "received", "status": "action"})
    frame = frame.rename(columns={"size": "bytes"})
    frame["received"] = pd.to_datetime(frame["received"], utc=True).astype("datetime64[us, UTC]")
    half = frame["received"].iloc[len(frame) // 2]
    for part, group in enumerate(
        (frame[frame["received"] < half], frame[frame["received"] >= half])
    ):
        week = folder / "archive" / f"part={part}"
        week.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(group.reset_index(drop=True), preserve_index=False)
        pq.write_table(table, week / f"mail-{seed}.parquet", row_group_size=60)
    return Written.of_messages(mail)


#: Every file source type with its harness: type -> a harness. One line per connector.
FILE_HARNESSES: dict[str, Callable[[], Harness]] = {
    "exchange-powershell": lambda: FileHarness(
        ExchangeExportSource, {"path": "inbox"}, write_powershell,
        write_powershell_malformed, append_powershell,
    ),
    "exchange-jsonl": lambda: FileHarness(
        "exchange", {"path": "inbox/*.json"}, write_trace_jsonl, write_trace_jsonl_malformed
    ),
    "exchange-eac-summary": lambda: FileHarness(
        ExchangeExportSource, {"path": "inbox"}, write_eac_summary
    ),
    "generic-csv": lambda: FileHarness(
        GenericSource, GENERIC_CSV, write_generic_csv, write_generic_csv_malformed,
        append_generic_csv,
    ),
    "generic-jsonl": lambda: FileHarness(
        "generic", GENERIC_JSONL, write_generic_jsonl, write_generic_jsonl_malformed
    ),
    "generic-parquet": lambda: FileHarness(GenericSource, GENERIC_PARQUET, write_generic_parquet),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FILE_HARNESSES))
def test_every_file_source_type_conforms(name: str, tmp_path: Path) -> None:
    # conformance: exchange, generic
    report = check_source(FILE_HARNESSES[name](), tmp_path, minimise=pipeline_minimiser())
    assert report.ok
    assert report.rows > 400  # 300 messages, some of several recipients
    assert report.kills >= report.units * 2  # before and after every chunk of every unit
    assert {"resume", "reread", "identity", "schema", "collects"} <= set(report.ran)
    if name == "generic-parquet":  # the units check compared split parts with the whole
        source = GenericSource.create("gw", GENERIC_PARQUET, tmp_path / "input")
        assert [len(u.split(3)) for u in source.units()] == [3, 3]


def test_a_large_parquet_file_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    rows = 300_000
    stamps = pd.date_range("2026-11-02", periods=rows, freq="s", tz="UTC")
    people = [p.address for p in staff()]
    table = pa.table(
        {
            "received": pa.array(stamps.astype("datetime64[us, UTC]")),
            "sender": [people[i % len(people)] for i in range(rows)],
            "recipient": [f"desk{i % 700}@partner.example" for i in range(rows)],
        }
    )
    pq.write_table(table, tmp_path / "big.parquet")
    columns = {"timestamp": "received", "sender": "sender", "recipient": "recipient"}
    source = GenericSource.create("gw", {"path": "big.parquet", "columns": columns}, tmp_path)
    chunks = [chunk for unit in source.units() for chunk in unit.chunks()]
    assert sum(len(c.frame) for c in chunks) == rows
    assert check_chunks(chunks) == []


# --- m365: message trace from the Graph-compatible server on loopback ------------------------
GRAPH_STATUS = {
    "delivered": "delivered", "deferred": "pending", "bounced": "failed", "rejected": "failed",
    "quarantined": "quarantined", "filtered_as_spam": "filteredAsSpam",
}  # fmt: skip


class M365Harness(Harness):
    """Trace rows served by the Graph server; runs start at a clock that ``append`` moves on
    (new rows arrive after the last run)."""

    def __init__(self, graph: Running) -> None:
        self.graph = graph
        self.clock = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def source(self, folder: Path) -> Source:
        reset_shared_state()  # a new process: its own request budget and token cache
        options = self.graph.options(start_days=3, window_hours=12, page_size=40)
        return M365Source.create("m365", options, folder)

    def now(self) -> dt.datetime:
        return self.clock

    def _serve(self, mail: Sequence[Message], replace: bool) -> Written:
        rows, expected = [], []
        for m in mail:
            for recipient, status in zip(m.recipients, m.statuses, strict=True):
                row = trace_row(
                    m.timestamp, m.sender, recipient, status=GRAPH_STATUS[status],
                    size=m.size, subject=m.subject,
                )  # fmt: skip
                row["fromIP"] = m.client_ip
                rows.append(row)
                expected.append(
                    {
                        "timestamp": pd.Timestamp(m.timestamp),
                        "sender": m.sender,
                        "recipient": recipient,
                        "status": row["status"],
                        "size": m.size,
                        "message_id": row["id"],
                    }
                )
        self.graph.state.traces = (
            rows if replace else sorted([*self.graph.state.traces, *rows], key=str)
        )
        forbidden = [t for m in mail for t in m.planted()]
        return Written.of(expected, forbidden=forbidden)

    def write(self, folder: Path, messages: int, seed: int) -> Written:
        begin = self.clock - dt.timedelta(hours=60)
        return self._serve(traffic(messages, seed, start=begin, span=dt.timedelta(hours=59)), True)

    def append(self, folder: Path, messages: int, seed: int) -> Written:
        mail = traffic(messages, seed, start=self.clock, span=dt.timedelta(minutes=50))
        self.clock += dt.timedelta(hours=1)
        return self._serve(mail, False)

    def write_malformed(self, folder: Path) -> Written:
        mail = traffic(
            30, 13, start=self.clock - dt.timedelta(hours=20), span=dt.timedelta(hours=8)
        )
        written = self._serve(mail, True)
        late = dict(self.graph.state.traces[0])
        # (the server filters by time itself: rows without a valid one never leave it)
        self.graph.state.traces += [
            {**late, "id": str(uuid.uuid4()), "recipientAddress": None},
            {**late, "id": str(uuid.uuid4()), "senderAddress": "MAILER-DAEMON", "size": "n/a"},
        ]
        return Written(written.rows, {"no_recipient": 1, "invalid_sender": 1})


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("M365_TEST_SECRET", SECRET)
    reset_shared_state()
    yield from start(tmp_path)
    reset_shared_state()


@pytest.mark.slow
def test_m365_conforms_against_the_graph_server(graph: Running, tmp_path: Path) -> None:
    # conformance: m365
    report = check_source(
        M365Harness(graph),
        tmp_path,
        messages=160,
        minimise=pipeline_minimiser(),
        skip=["declarations"],  # see test_m365_options_are_declared_as_the_house_requires
    )
    assert report.units == 6  # 3 days in windows of 12 hours
    assert report.chunks > report.units  # pages of 40 rows: kills fall between pages
    assert {"append", "malformed", "resume"} <= set(report.ran)


def test_m365_options_are_declared_as_the_house_requires() -> None:
    assert check_declarations(M365Source) == []


# --- every built-in source type has a conformance run ------------------------------------------
#: Built-in source types whose conformance run is still being added to their own test
#: module (a ``# conformance: <type>`` comment beside its check_source call). The
#: integrator empties it: a type listed here that has a run fails the test below.
PENDING: set[str] = {"google-workspace"}
_MARKER = re.compile(r"#\s*conformance:\s*(.+?)\s*$")
TESTS = Path(__file__).resolve().parent


def _calls_check_source(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call)
        and "check_source" in (getattr(n.func, "id", None), getattr(n.func, "attr", None))
        for n in ast.walk(node)
    )


def conformance_runs(tests: Path = TESTS) -> dict[str, set[str]]:
    """Source type -> the tests that run the kit over it: functions of tests/test_*.py that
    call check_source and hold a ``# conformance: <type>[, <type>...]`` comment."""
    runs: dict[str, set[str]] = {}
    for path in sorted(tests.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        if "check_source(" not in text:
            continue
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not _calls_check_source(node):
                continue
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            for line in lines[first - 1 : node.end_lineno]:
                if found := _MARKER.search(line):
                    for kind in found.group(1).split(","):
                        runs.setdefault(kind.strip(), set()).add(f"{path.name}::{node.name}")
    return runs


def test_every_built_in_source_type_has_a_conformance_run() -> None:
    built_in = {e.name: e.target for e in SOURCES.entries() if e.origin == "built-in"}
    runs = conformance_runs()
    missing = sorted(set(built_in) - set(runs) - PENDING)
    assert not missing, (
        f"built-in source type(s) without a conformance run: {', '.join(missing)}; run "
        "connectors.testing.check_source over each in its test module, with a "
        "'# conformance: <type>' comment in that test"
    )
    unknown = sorted(set(runs) - set(built_in))
    assert not unknown, f"'# conformance:' names no built-in source type: {unknown}"
    done = sorted(PENDING & set(runs))
    assert not done, f"remove {done} from PENDING: they have a conformance run now"
    stale = sorted(PENDING - set(built_in))
    assert not stale, f"PENDING names no built-in source type: {stale}"
    for kind, tests in sorted(runs.items()):  # the marker is where that type is built
        class_name = built_in[kind].rpartition(":")[2]
        for test in sorted(tests):
            text = (TESTS / test.partition("::")[0]).read_text(encoding="utf-8")
            assert class_name in text or f'"{kind}"' in text, f"{test} never builds {kind}"


def test_the_meta_test_sees_a_run_only_beside_check_source(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(
        "def test_kit(tmp_path):\n    # conformance: cisco, mimecast\n"
        "    check_source(harness, tmp_path)\n\n\n"
        "def test_other():\n    # conformance: postfix\n    assert True\n"
    )
    (tmp_path / "test_b.py").write_text("# conformance: exim\n")
    runs = conformance_runs(tmp_path)
    assert runs == {"cisco": {"test_a.py::test_kit"}, "mimecast": {"test_a.py::test_kit"}}


# --- connectors broken on purpose: the kit finds each break ---------------------------------
class LineOptions(FileOptions):
    """Options of the test-only ``lines`` source."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    lines_per_chunk: int = Field(40, ge=1, description="lines per chunk")


FIELDS = ["timestamp", "sender", "recipient", "status", "size", "message_id"]


class LineUnit(FileUnit):
    """``time|sender|recipient;recipient|status|size|message id|subject|client ip`` lines."""

    format = "test-lines"

    def __init__(self, path: Path, per_chunk: int) -> None:
        self.path = path
        self.per_chunk = per_chunk

    def records(self) -> Iterator[list[list[str]]]:
        with self.path.open(encoding="utf-8") as handle:
            lines = (line.rstrip("\n").split("|") for line in handle if line.strip())
            while batch := list(itertools.islice(lines, self.per_chunk)):
                yield batch

    def frame(self, part: list[list[str]]) -> tuple[pd.DataFrame, Counter[str]]:
        good = [f for f in part if len(f) == 8]  # the subject and the IP are never taken
        rows = [(f[0], f[1], r, f[3], f[4], f[5]) for f in good for r in f[2].split(";")]
        frame = pd.DataFrame(rows, columns=FIELDS)
        frame["timestamp"] = pd.to_datetime(
            frame["timestamp"], format="ISO8601", utc=True, errors="coerce"
        )
        frame["size"] = pd.to_numeric(frame["size"], errors="coerce")
        return frame, Counter({"malformed_line": len(part) - len(good)})

    def chunks(self) -> Iterator[Chunk]:
        for part in self.records():
            frame, rejected = self.frame(part)
            yield Chunk(conform_raw(frame), +rejected)


class LineSource(Source):
    """A file source done right: the control of the broken ones below."""

    options_model = LineOptions
    unit_type: type[LineUnit] = LineUnit

    @classmethod
    def from_options(cls, name: str, options: LineOptions, base_dir: Path) -> Source:
        return cls(name, expand_paths(options.path, base_dir), options.lines_per_chunk)

    def __init__(self, name: str, paths: list[Path], per_chunk: int) -> None:
        super().__init__(name)
        self.paths, self.per_chunk = paths, per_chunk

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        return [self.unit_type(p, self.per_chunk) for p in self.paths]


def _line(m: Message) -> str:
    fields = [_iso(m.timestamp), m.sender, ";".join(m.recipients), m.statuses[0], str(m.size)]
    return "|".join([*fields, m.message_id, m.subject, m.client_ip])


def write_lines(folder: Path, messages: int, seed: int) -> Written:
    mail = traffic(messages, seed, one_status=True)
    (folder / "logs").mkdir(exist_ok=True)
    for part, group in enumerate(_parts(mail, 3)):
        text = "\n".join(_line(m) for m in group) + "\n"
        (folder / "logs" / f"{seed}-{part}.log").write_text(text)
    return Written.of_messages(mail)


def write_lines_malformed(folder: Path) -> Written:
    mail = traffic(20, 4, one_status=True)
    lines = [_line(m) for m in mail] + ["2026-11-02T10:00:00Z|walter.white@corp.example", "||"]
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "bad.log").write_text("\n".join(lines) + "\n")
    return Written.of_messages(mail, rejected={"malformed_line": 2})


def _harness(source: type[LineSource], per_chunk: int = 25) -> FileHarness:
    options = {"path": "logs/*.log", "lines_per_chunk": per_chunk}
    return FileHarness(source, options, write_lines, write_lines_malformed)


def _findings(source: type[LineSource], tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConformanceError) as failed:
        check_source(
            _harness(source), tmp_path, messages=120, minimise=pipeline_minimiser(), **kwargs
        )
    return [str(f) for f in failed.value.findings]


def test_a_correct_connector_passes_with_kills_between_its_chunks(tmp_path: Path) -> None:
    report = check_source(
        _harness(LineSource), tmp_path, messages=120, minimise=pipeline_minimiser()
    )
    assert report.units == 3
    assert report.chunks == 6  # 40 lines per file, 25 per chunk
    assert report.kills == 9  # 0, 1 or 2 chunks taken of each of 3 units


class Leaky(LineSource):
    class unit_type(LineUnit):
        def frame(self, part: list[list[str]]) -> tuple[pd.DataFrame, Counter[str]]:
            good = [f for f in part if len(f) == 8]
            frame, rejected = super().frame(good)
            frame["message_id"] = [f[6] for f in good for _ in f[2].split(";")]  # the subject
            return frame, rejected


def test_a_subject_in_a_raw_field_is_found(tmp_path: Path) -> None:
    found = _findings(Leaky, tmp_path)
    assert any("[identity]" in f and "planted text(s)" in f and "raw rows" in f for f in found)


class ExtraColumn(LineSource):
    class unit_type(LineUnit):
        def chunks(self) -> Iterator[Chunk]:
            for chunk in super().chunks():
                chunk.frame["subject"] = "kept"
                chunk.frame["size"] = chunk.frame["size"].astype("float64")
                yield chunk


def test_columns_beyond_raw_and_wrong_dtypes_are_found(tmp_path: Path) -> None:
    found = _findings(ExtraColumn, tmp_path, skip=["malformed"])
    assert any("do not have exactly the RAW columns" in f for f in found)
    assert any("size is float64, not Int64" in f for f in found)


class SideProgress(LineSource):
    """Keeps its own progress in the folder as it reads (outside the engine's transaction):
    a kill after a chunk makes the next run skip what was never committed."""

    class unit_type(LineUnit):
        def chunks(self) -> Iterator[Chunk]:
            mark = self.path.with_suffix(".offset")
            done = int(mark.read_text()) if mark.exists() else 0
            for n, part in enumerate(self.records()):
                if n < done:
                    continue
                frame, rejected = self.frame(part)
                mark.write_text(str(n + 1))
                yield Chunk(conform_raw(frame), +rejected)


def test_progress_kept_outside_the_bookmark_loses_rows_after_a_kill(tmp_path: Path) -> None:
    found = _findings(SideProgress, tmp_path, skip=["malformed", "reread"])
    assert any("a run resumed after a kill loses rows" in f for f in found)


class Unstable(LineSource):
    """Names each file's unit by the plan, not by its content."""

    class unit_type(LineUnit):
        def __init__(self, path: Path, per_chunk: int) -> None:
            super().__init__(path, per_chunk)
            self.__dict__["_key"] = uuid.uuid4().hex


def test_unit_keys_that_change_between_plans_are_found(tmp_path: Path) -> None:
    found = _findings(Unstable, tmp_path, skip=["malformed"])
    assert any("[units] planning twice gives once-units different keys" in f for f in found)
    assert any("[reread]" in f and "read again" in f for f in found)
    assert any("reads a once-unit's rows again" in f for f in found)


class TellingBookmark(LineSource):
    """Bookmarks the last sender it read, and a time a day ahead of the run."""

    class unit_type(LineUnit):
        def chunks(self) -> Iterator[Chunk]:
            for chunk in super().chunks():
                if self.bookmark is None or "@" in self.bookmark:
                    self.bookmark = str(chunk.frame["sender"].iloc[-1])
                yield chunk

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        units = super().units(state)
        if state is not None:
            units[-1].bookmark = (state.started + dt.timedelta(days=1)).isoformat()
        return units


def test_a_bookmark_naming_a_person_or_past_the_start_is_found(tmp_path: Path) -> None:
    found = _findings(TellingBookmark, tmp_path, skip=["malformed"])
    assert any("[identity]" in f and "bookmark holds an address" in f for f in found)
    assert any("bookmark is past the run's start" in f for f in found)


class Raising(LineSource):
    class unit_type(LineUnit):
        def frame(self, part: list[list[str]]) -> tuple[pd.DataFrame, Counter[str]]:
            for fields in part:
                if len(fields) != 8:
                    raise InputError(self.path, f"bad line: {'|'.join(fields)}")
            return super().frame(part)


def test_a_connector_that_stops_on_a_bad_row_is_found(tmp_path: Path) -> None:
    found = _findings(Raising, tmp_path)
    assert any("[malformed] reading input with bad rows raised InputError" in f for f in found)
    # the finding does not repeat what the error quoted of the input
    assert not any("walter" in f for f in found)


class WholeFile(LineSource):
    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        return [self.unit_type(p, 10**9) for p in self.paths]


def test_a_chunk_over_the_bound_is_found(tmp_path: Path) -> None:
    found = _findings(WholeFile, tmp_path, max_chunk_rows=45, skip=["malformed"])
    assert any("[chunks] 3 chunk(s) exceed 45 rows" in f for f in found)


class Undeclared(LineSource):
    collects = ("timestamp", "sender", "recipient", "status", "subject")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str = Field(description="where the logs are")
    api_key: str = ""


class Careless(LineSource):
    options_model = Loose


def test_declarations_are_checked() -> None:
    assert check_declarations(LineSource) == []
    undeclared = [f.message for f in check_declarations(Undeclared)]
    assert undeclared == ["collects names field(s) outside RAW: subject"]
    careless = [f.message for f in check_declarations(Careless)]
    assert "Loose accepts unknown options (extra='forbid')" in careless
    assert "Loose is not frozen (frozen=True)" in careless
    assert "option(s) without a description: api_key" in careless
    assert any(m.startswith("secret option(s) not a SecretRef") for m in careless)


def test_undeclared_fields_left_empty_are_found(tmp_path: Path) -> None:
    class NoSize(LineSource):
        collects = ("timestamp", "sender", "recipient", "status", "message_id")

    found = _findings(NoSize, tmp_path, skip=["malformed"])
    assert any("[collects] size is not in collects but filled" in f for f in found)


# --- a real sample: Exchange Online message trace rows (Elastic's test log, read only) --------
def test_a_real_message_trace_sample_conforms(tmp_path: Path) -> None:
    """The four rows of Elastic's Reporting Web Service test log (one time without a zone
    and with 7 fractional digits, one empty OData page), read in place, never copied into
    the repository: every field read as written, subjects and IPs gone."""
    path = sample(
        "elastic__integrations", "microsoft_exchange_online_message_trace", "test-log.log"
    )
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in records if "SenderAddress" in r]

    def write(folder: Path, _messages: int, _seed: int) -> Written:
        (folder / "inbox").mkdir(exist_ok=True)
        shutil.copyfile(path, folder / "inbox" / "trace.json")
        expected = [
            {"timestamp": pd.Timestamp(r["Received"], tz="UTC") if "Z" not in r["Received"]
             else pd.Timestamp(r["Received"]), "sender": r["SenderAddress"],
             "recipient": r["RecipientAddress"], "status": r["Status"], "size": r["Size"],
             "message_id": r["MessageId"]}
            for r in rows
        ]  # fmt: skip
        planted = {r["Subject"] for r in rows} | {
            r[k] for r in rows for k in ("FromIP", "ToIP") if r[k]
        }
        return Written.of(expected, forbidden=planted)

    harness = FileHarness(ExchangeExportSource, {"path": "inbox"}, write)
    report = check_source(
        harness, tmp_path, minimise=pipeline_minimiser(("contoso.com",), ("microsoft.com",))
    )
    assert report.rows == 4
    assert len(rows) == 4


# --- end to end: a kill and a resume through the real engine and `compliance run` ------------
UNITS = {"Sales/EMEA": 20, "Finance": 15, "Engineering/Platform": 25}


def _directory(path: Path) -> Path:
    people = staff()
    units = [unit for unit, size in UNITS.items() for _ in range(size)]
    lines = ["userPrincipalName,displayName,mail,id,department"]
    lines += [
        f"{p.address},{p.name},{p.address},{p.key},{unit}"
        for p, unit in zip(people, units, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _deployment(folder: Path) -> tuple[Path, Written]:
    folder.mkdir()
    written = write_powershell(folder, 500, 21)
    feed = folder / "escorts.txt"
    feed.write_text("# test feed\nescorts.test\nescort-ads.test\n")
    config = write_config(
        folder / "compliance.yaml",
        _directory(folder / "directory.csv"),
        feed,
        "store: var/store.db\nreports: {dir: reports, formats: [html, json]}\n",
        sources="[{name: gateway, type: exchange, path: inbox}]",
        policies=SHIPPED_POLICIES,
    )
    return config, written


def _stored(config: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(config.parent / "var" / "store.db") as db:
        return {
            "totals": db.execute("SELECT * FROM daily_totals ORDER BY 1, 2, 3").fetchall(),
            "events": db.execute(
                "SELECT event_key, ts, person, org_unit, direction, domain, status "
                "FROM events ORDER BY 1"
            ).fetchall(),
            "alerts": db.execute(
                "SELECT policy, rule_id, person, org_unit, messages, days FROM alerts"
            ).fetchall(),
            "units": db.execute("SELECT COUNT(*), SUM(rows) FROM ingested_units").fetchall(),
        }


def test_a_run_killed_mid_unit_resumes_to_a_clean_runs_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean, written = _deployment(tmp_path / "clean")
    code, output = run_cli(clean, "2026-11-10")
    assert code == 0, output
    expected = _stored(clean)
    assert [a[:2] + a[3:] for a in expected["alerts"]] == [
        ("escort-ads", "repeated-contact", "Sales/EMEA", 3, 3)
    ]
    assert expected["units"] == [(4, len(written.rows))]
    assert sum(row[3] for row in expected["totals"]) > 400  # messages, each counted once

    killed_config, _ = _deployment(tmp_path / "killed")
    calls = Counter[str]()

    def dying(unit: ReadUnit, context: Context, source: str) -> Iterator[UnitPart]:
        calls["units"] += 1
        for part in unit_parts(unit, context, source):
            if calls["units"] == 3:  # the third file: killed after its first chunk was processed
                raise RuntimeError("killed")
            yield part

    with monkeypatch.context() as patched:
        patched.setattr(compliance.scheduled, "unit_parts", dying)
        code, output = run_cli(killed_config, "2026-11-10")
    assert code != 0
    halfway = _stored(killed_config)
    assert halfway["units"][0][0] == 2 and halfway["alerts"] == []
    code, output = run_cli(killed_config, "2026-11-10")
    assert code == 0, output
    assert _stored(killed_config) == expected

    stored = b"".join(
        p.read_bytes() for p in (tmp_path / "killed" / "var").rglob("*") if p.is_file()
    )
    stored += b"".join(
        p.read_bytes() for p in (tmp_path / "killed" / "reports").rglob("*") if p.is_file()
    )
    addresses, planted = identity_texts(written)  # addresses, local parts; subjects, names
    assert len(addresses) > 200
    for value in [*addresses, *planted, *(p.key for p in staff())]:
        assert value.encode() not in stored
    assert b"escorts.test" in stored  # the site is kept, as a domain


# --- memory: reading ten times more needs about the same ------------------------------------
@pytest.mark.slow
def test_an_exchange_reader_stays_flat_in_memory(tmp_path: Path) -> None:
    report = check_source(
        FILE_HARNESSES["exchange-powershell"](),
        tmp_path,
        messages=30,
        memory=True,
        memory_messages=int(os.environ.get("CONFORMANCE_MEMORY_MESSAGES", "5000")),
        skip=["resume", "malformed", "append", "reread"],
    )
    assert report.memory is not None
    assert report.memory[1] < 20 * report.memory[0]


class Slurping(LineSource):
    """Reads a whole file before it yields bounded chunks of it."""

    class unit_type(LineUnit):
        def records(self) -> Iterator[list[list[str]]]:
            with self.path.open(encoding="utf-8") as handle:
                lines = [line.rstrip("\n").split("|") for line in handle if line.strip()]
            for at in range(0, len(lines), self.per_chunk):
                yield lines[at : at + self.per_chunk]


@pytest.mark.slow
def test_a_reader_that_loads_whole_files_is_found_by_its_memory(tmp_path: Path) -> None:
    found, (small, large) = check_memory(
        _harness(Slurping, 500), tmp_path / "slurp", 1500, slack=1 << 20
    )
    assert [f.check for f in found] == ["memory"] and large > 5 * small
    found, (small, large) = check_memory(
        _harness(LineSource, 500), tmp_path / "flat", 1500, slack=1 << 20
    )
    assert found == [] and large < 2 * small
