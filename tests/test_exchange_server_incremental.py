"""Exchange Server message tracking logs read incrementally (connectors.exchange_server on
connectors.logfiles): the hourly file that grows and the new ones are read from where the
last run stopped (by file identity and offset), the #Fields mapping is known at a resumed
offset, a message still open at the end of a run is carried to the next and given once with
its final status, a run killed mid-read loses and doubles nothing, and the bookmark holds
positions only. The connector conformance kit runs over it with a writer that appends.

The writers are small and written here (no other test module is reused).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.base import Chunk, SourceState, create_source
from connectors.exchange_server import FIELDS_2010, FIELDS_2013, ExchangeServerSource
from connectors.testing import (
    LISTED_SITES,
    FileHarness,
    Message,
    Minimiser,
    Written,
    check_source,
    traffic,
)
from tests.conftest import TEST_KEY, kit_minimiser, run_cli, write_config

UTC = dt.UTC
START = dt.datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


# --- writing message tracking logs ---------------------------------------------------------
def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if "," in value or '"' in value else value


def event(
    at: dt.datetime,
    kind: str,
    internal: int,
    message_id: str,
    recipients: Sequence[str],
    sender: str,
    *,
    source: str = "SMTP",
    size: int = 1234,
    subject: str = "Quarterly figures, draft",
    client_ip: str = "192.0.2.10",
    fields: Sequence[str] = FIELDS_2013,
) -> str:
    """One line with every field a real line has (network-message-id from the internal id)."""
    values = dict.fromkeys(FIELDS_2013, "")
    values.update(
        {
            "date-time": _stamp(at),
            "client-ip": client_ip if kind == "RECEIVE" else "",
            "server-hostname": "exch-hub07",
            "source": source,
            "event-id": kind,
            "internal-message-id": str(internal),
            "message-id": message_id,
            "network-message-id": f"{internal:08x}-0000-4000-8000-000000000000",
            "recipient-address": ";".join(recipients),
            "recipient-count": str(len(recipients)),
            "total-bytes": str(size),
            "message-subject": subject,
            "sender-address": sender,
            "return-path": sender,
            "directionality": "Originating",
            "custom-data": "S:DeliveryPriority=Normal",
            "schema-version": "15.02.1544.004",
        }
    )
    return ",".join(_csv(values[f]) for f in fields)


def header(at: dt.datetime, fields: Sequence[str] = FIELDS_2013) -> list[str]:
    return [
        "#Software: Microsoft Exchange Server",
        "#Version: 15.02.1544.004",
        "#Log-type: Message Tracking Log",
        f"#Date: {_stamp(at)}",
        f"#Fields: {','.join(fields)}",
    ]


def name_of(at: dt.datetime, instance: int = 1) -> str:
    return f"MSGTRK{at:%Y%m%d%H}-{instance}.LOG"


def append(path: Path, lines: Sequence[str], at: dt.datetime | None = None) -> None:
    """Lines added to a log (CRLF); a new file starts with its header and a BOM."""
    data = "".join(line + "\r\n" for line in lines).encode("utf-8")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "".join(h + "\r\n" for h in header(at or START)).encode("utf-8")
        data = b"\xef\xbb\xbf" + head + data
    with path.open("ab") as handle:
        handle.write(data)


def message_lines(
    n: int, at: dt.datetime, status: str = "delivered", domain: str = "partner1.example"
) -> list[str]:
    """A message of u(n%17+1) to two recipients: RECEIVE, then its outcome a second later."""
    sender = f"u{n % 17 + 1}@corp.example"
    to = [f"contact{n % 50}@{domain}", f"desk{n % 7}@{domain}"]
    mid = f"<M{n:07d}@mbx01.corp.example>"
    kind, source = {
        "delivered": ("SEND", "SMTP"),
        "bounced": ("FAIL", "SMTP"),
        "deferred": ("DEFER", "SMTP"),
    }[status]
    return [
        event(at, "RECEIVE", 10_000 + n, mid, to, sender),
        event(at + dt.timedelta(seconds=1), kind, 10_000 + n, mid, to, sender, source=source),
    ]


def hourly(folder: Path, first: int, count: int, start: dt.datetime, step: float) -> None:
    """``count`` delivered messages (numbers from ``first``) every ``step`` seconds from
    ``start``, into hourly files (appended to the file of their hour when it exists)."""
    by_file: dict[Path, tuple[dt.datetime, list[str]]] = {}
    for n in range(first, first + count):
        at = start + dt.timedelta(seconds=(n - first) * step)
        hour = at.replace(minute=0, second=0, microsecond=0)
        by_file.setdefault(folder / name_of(at), (hour, []))[1].extend(message_lines(n, at))
    for path, (hour, lines) in by_file.items():
        append(path, lines, hour)


def _source(path: str, base: Path) -> ExchangeServerSource:
    source = create_source("exchange-server", "exch", {"path": path}, base)
    assert isinstance(source, ExchangeServerSource)
    return source


def scheduled(
    source: ExchangeServerSource, bookmark: str | None, started: dt.datetime | None = None
) -> tuple[pd.DataFrame, Counter[str], str | None]:
    """One scheduled read from ``bookmark``: its rows, rejected rows and new bookmark."""
    (unit,) = source.units(SourceState(bookmark, started or dt.datetime.now(UTC)))
    chunks: list[Chunk] = list(unit.chunks())
    rejected: Counter[str] = Counter()
    for chunk in chunks:
        rejected.update(chunk.rejected)
    frames = [c.frame for c in chunks if len(c.frame)]
    frame = pd.concat(frames, ignore_index=True) if frames else chunks[0].frame
    return frame, rejected, unit.bookmark


def config(folder: Path, directory_csv: Path, escort_feed: Path, logs: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "logs").exists():
        (folder / "logs").symlink_to(logs)
    return write_config(
        folder / "compliance.yaml", directory_csv, escort_feed,
        "store: var/store.db\nschedule: {fail_when_idle: false}\n",
        sources="[{name: exch, type: exchange-server, path: [logs/exch01, logs/exch02]}]",
    )  # fmt: skip


def state(config_path: Path) -> dict[str, Any]:
    with sqlite3.connect(config_path.parent / "var" / "store.db") as db:
        return {
            "totals": db.execute(
                "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3"
            ).fetchall(),
            "events": db.execute(
                "SELECT event_key, person, org_unit, domain, status FROM events ORDER BY 1"
            ).fetchall(),
        }


def units_of(config_path: Path) -> list[tuple[int, int, int]]:
    """(run, rows, duplicates) of each unit ingested, in run order."""
    with sqlite3.connect(config_path.parent / "var" / "store.db") as db:
        return db.execute(
            "SELECT run_id, rows, duplicates FROM ingested_units ORDER BY run_id"
        ).fetchall()


def bookmark_of(config_path: Path) -> str:
    with sqlite3.connect(config_path.parent / "var" / "store.db") as db:
        return str(
            db.execute("SELECT watermark FROM bookmarks WHERE source = 'exch'").fetchone()[0]
        )


# --- (1) a growing file and a new one: only the new bytes are read --------------------------
def test_a_growing_file_and_a_new_one_are_read_from_where_the_last_run_stopped(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    logs = tmp_path / "logs"
    hourly(logs / "exch01", 0, 300, START, 20.0)  # 06:00 to 07:40
    hourly(logs / "exch02", 1000, 100, START, 30.0)
    job = config(tmp_path / "job", directory_csv, escort_feed, logs)
    code, output = run_cli(job, "2026-11-12")
    assert code == 0, output
    first = json.loads(bookmark_of(job))
    # the 07 file grows, an 08 file appears; exch02 does not change
    hourly(logs / "exch01", 300, 50, START + dt.timedelta(hours=1, minutes=50), 15.0)
    assert len(list((logs / "exch01").glob("*.LOG"))) == 3
    code, output = run_cli(job, "2026-11-12")
    assert code == 0, output
    (_, rows1, dup1), (_, rows2, dup2) = units_of(job)
    assert (rows1, dup1) == (800, 0)
    assert (rows2, dup2) == (100, 0)  # 50 new messages of two recipients, nothing again
    second = json.loads(bookmark_of(job))
    ends = {p.name: p.stat().st_size for p in (logs / "exch01").glob("*.LOG")}
    assert sorted(f["at"] for f in second["files"]) == sorted(
        [
            ends[name_of(START + dt.timedelta(hours=2))],
            (logs / "exch02" / name_of(START)).stat().st_size,
        ]
    )
    assert second["hw"] > first["hw"]
    # a third run with nothing new reads nothing
    code, output = run_cli(job, "2026-11-12")
    assert code == 0 and "0 rows read" in output, output
    # the totals are one clean run's over everything
    clean = config(tmp_path / "clean", directory_csv, escort_feed, logs)
    code, output = run_cli(clean, "2026-11-12")
    assert code == 0, output
    assert state(job) == state(clean)
    assert sum(r[3] for r in state(clean)["totals"]) == 900


def test_a_resumed_file_is_read_by_its_last_fields_line(tmp_path: Path) -> None:
    """Resumed after a second #Fields line (Exchange 2010's fields: no network id), the
    lines appended are read by that mapping, re-read from the file's head."""
    path = tmp_path / name_of(START)
    old = [
        event(START, "RECEIVE", 1, "<a@corp.example>", ["x@partner1.example"], "u1@corp.example"),
        event(START, "SEND", 1, "<a@corp.example>", ["x@partner1.example"], "u1@corp.example"),
    ]
    append(path, old, START)
    append(path, header(START + dt.timedelta(minutes=5), FIELDS_2010))
    later = START + dt.timedelta(minutes=6)
    b = ("<b@corp.example>", ["y@partner1.example"], "u2@corp.example")
    append(path, [event(later, "RECEIVE", 2, *b, fields=FIELDS_2010)])
    source = _source(str(tmp_path), tmp_path)
    frame, rejected, bookmark = scheduled(source, None)
    assert not rejected and len(frame) == 2  # b is old: given (deferred) at the run's end
    append(path, [event(later, "SEND", 2, *b, fields=FIELDS_2010)])
    frame, rejected, _ = scheduled(source, bookmark)
    assert not rejected
    assert list(zip(frame["message_id"], frame["status"], strict=True)) == [
        ("<b@corp.example>", "delivered")
    ]


# --- (2) a message open at the end of a run is carried, and given once ---------------------
def test_a_message_open_at_the_end_of_a_run_is_given_once_with_its_final_status(
    tmp_path: Path,
) -> None:
    """RECEIVE in run 1 (in the file of its hour), DELIVER in run 2 (in the next hour's
    file): nothing of it in run 1, one row per recipient in run 2, delivered. Times are
    recent (the run's start says up to when the servers wrote)."""
    now = dt.datetime.now(UTC).replace(microsecond=0)
    t0 = now - dt.timedelta(hours=3)
    folder = tmp_path / "exch01"
    done = message_lines(1, t0 - dt.timedelta(minutes=50))  # finished: given in run 1
    to, sender = ["a@partner1.example", "b@partner2.example"], "u3@corp.example"
    receive = event(t0, "RECEIVE", 7, "<open@corp.example>", to, sender)
    first = folder / name_of(t0)
    append(first, [*done, receive], t0)
    source = _source(str(folder), tmp_path)
    frame, _, bookmark = scheduled(source, None, now)
    assert list(frame["message_id"]) == ["<M0000001@mbx01.corp.example>"] * 2
    assert bookmark is not None
    position = json.loads(bookmark)["files"][0]
    assert position["at"] == first.read_bytes().index(receive.encode())  # its first line
    # run 2 (nothing new yet): still open, nothing given
    frame, _, again = scheduled(source, bookmark, now + dt.timedelta(minutes=5))
    assert frame.empty and json.loads(again or "")["files"] == json.loads(bookmark)["files"]
    # the outcome, an hour later, in the next hour's file
    t1 = t0 + dt.timedelta(hours=1)
    deliver = [event(t1, "SEND", 7, "<open@corp.example>", to, sender)]
    append(folder / name_of(t1), deliver, t1)
    frame, _, final = scheduled(source, again, now + dt.timedelta(minutes=10))
    assert sorted(zip(frame["recipient"], frame["status"], strict=True)) == [
        ("a@partner1.example", "delivered"), ("b@partner2.example", "delivered"),
    ]  # fmt: skip
    assert list(frame["timestamp"]) == [pd.Timestamp(t0.replace(microsecond=0))] * 2
    # and never again
    frame, _, _ = scheduled(source, final, now + dt.timedelta(minutes=15))
    assert frame.empty


def test_a_message_never_finished_is_given_as_deferred_after_a_day(tmp_path: Path) -> None:
    now = dt.datetime.now(UTC).replace(microsecond=0)
    t0 = now - dt.timedelta(hours=5)
    folder = tmp_path / "exch01"
    append(folder / name_of(t0), message_lines(3, t0, "deferred"), t0)
    source = _source(str(folder), tmp_path)
    frame, _, bookmark = scheduled(source, None, now)
    assert frame.empty
    frame, _, _ = scheduled(source, bookmark, now + dt.timedelta(days=1))
    assert list(frame["status"]) == ["deferred", "deferred"]


# --- (3) a run killed mid-read ---------------------------------------------------------------
def _runs(config_path: Path) -> int:
    try:
        uri = f"file:{config_path.parent / 'var' / 'store.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_run_killed_mid_read_loses_and_doubles_nothing(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """Run 1 reads a day of two servers; the logs grow by much more; run 2, a real
    `compliance run`, is SIGKILLed while it reads; run 3 ends with what one clean run
    over everything stores."""
    logs = tmp_path / "logs"
    hourly(logs / "exch01", 0, 2_000, START, 10.0)
    hourly(logs / "exch02", 500_000, 2_000, START, 10.0)
    escort = [
        *message_lines(900_000, START + dt.timedelta(hours=1), domain="escort-ads.test"),
    ]
    append(logs / "exch01" / name_of(START + dt.timedelta(hours=1)), escort)
    job = config(tmp_path / "killed", directory_csv, escort_feed, logs)
    code, output = run_cli(job, "2026-11-20")
    assert code == 0, output
    later = START + dt.timedelta(hours=6)
    hourly(logs / "exch01", 10_000, 60_000, later, 0.5)
    hourly(logs / "exch02", 600_000, 60_000, later, 0.5)
    before = bookmark_of(job)
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance", "run", "--config", str(job), "--today", "2026-11-20"],
        env={**os.environ, "COMPLIANCE_PSEUDONYM_KEY": TEST_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _runs(job) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # well into reading its one unit
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert bookmark_of(job) == before  # nothing of the killed run was committed
    code, output = run_cli(job, "2026-11-20")
    assert code == 0, output
    clean = config(tmp_path / "clean", directory_csv, escort_feed, logs)
    code, output = run_cli(clean, "2026-11-20")
    assert code == 0, output
    resumed, reference = state(job), state(clean)
    assert sum(r[3] for r in reference["totals"]) == 2 * (4_000 + 120_000) + 2
    assert resumed == reference
    assert len(reference["events"]) == 2


# --- (4) the bookmark holds positions only ----------------------------------------------------
def test_the_bookmark_holds_no_address_subject_or_message_id(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    logs = tmp_path / "logs"
    hourly(logs / "exch01", 0, 40, START, 60.0)
    now = dt.datetime.now(UTC)
    open_at = now - dt.timedelta(hours=1)  # still open at the run's end: the low-water
    append(
        logs / "exch02" / name_of(open_at),
        [event(open_at, "RECEIVE", 99, "<secret-id@corp.example>", ["z@partner9.example"],
               "u5@corp.example", subject="Private: salaries")],
        open_at,
    )  # fmt: skip
    job = config(tmp_path / "job", directory_csv, escort_feed, logs)
    code, output = run_cli(job, "2026-11-12")
    assert code == 0, output
    text = bookmark_of(job)
    document = json.loads(text)
    assert set(document) == {"v", "hw", "lw", "files"}
    assert all(set(f) == {"id", "len", "at", "t"} for f in document["files"])
    assert len(document["files"]) == 2
    for forbidden in ("@", "corp.example", "partner", "secret-id", "M000", "Private", "MSGTRK"):
        assert forbidden not in text


# --- the conformance kit, with a writer that appends -------------------------------------------
_EVENTS = {
    "delivered": ("SEND", "SMTP"),
    "deferred": ("DEFER", "SMTP"),
    "bounced": ("FAIL", "SMTP"),
    "rejected": ("FAIL", "AGENT"),
    "filtered_as_spam": ("DROP", "AGENT"),
    "quarantined": ("POISONMESSAGE", "SMTP"),
}


def _lines_of(messages: Sequence[Message], first: int) -> dict[str, list[str]]:
    """Each message's RECEIVE and one outcome event per status, by hourly file name."""
    out: dict[str, list[str]] = {}
    for n, m in enumerate(messages, start=first):
        lines = out.setdefault(name_of(m.timestamp), [])
        lines.append(event(m.timestamp, "RECEIVE", n, m.message_id, m.recipients, m.sender,
                           size=m.size, subject=m.subject, client_ip=m.client_ip))  # fmt: skip
        by_status: dict[str, list[str]] = {}
        for recipient, status in zip(m.recipients, m.statuses, strict=True):
            by_status.setdefault(status, []).append(recipient)
        at = m.timestamp + dt.timedelta(seconds=2)
        for status, group in by_status.items():
            kind, source = _EVENTS[status]
            lines.append(event(at, kind, n, m.message_id, group, m.sender, source=source,
                               size=m.size, subject=m.subject))  # fmt: skip
    return out


def write_tracking(folder: Path, messages: int, seed: int) -> Written:
    mail = traffic(messages, seed)
    for name, lines in _lines_of(mail, 1).items():
        append(folder / name, lines, START)
    return Written.of_messages(mail)


def append_tracking(folder: Path, messages: int, seed: int) -> Written:
    """More mail a day later: a third into the newest file (it grows), the rest into new
    hourly files."""
    mail = traffic(
        messages, seed, start=dt.datetime(2026, 11, 8, 7, 0, tzinfo=UTC), span=dt.timedelta(days=1)
    )
    newest = max(folder.glob("MSGTRK*.LOG"), key=lambda p: p.name)
    split = len(mail) // 3
    grown = _lines_of(mail[:split], 500_000)
    append(newest, [line for lines in grown.values() for line in lines])
    for name, lines in _lines_of(mail[split:], 600_000).items():
        append(folder / name, lines, START)
    return Written.of_messages(mail)


def pipeline_minimiser() -> Minimiser:
    """What the engine keeps of a raw chunk (the real pipeline with a test key, the
    organisation's domain and a feed of the kit's listed sites)."""
    return kit_minimiser(LISTED_SITES)


def test_the_conformance_kit_passes_with_a_log_that_grows(tmp_path: Path) -> None:
    harness = FileHarness(
        "exchange-server", {"path": "."}, write=write_tracking, append=append_tracking
    )
    report = check_source(harness, tmp_path, minimise=pipeline_minimiser(), max_kills=12)
    assert report.ok
    assert {"resume", "reread", "append", "identity", "rows"} <= set(report.ran)
    assert report.rows > 400


def test_an_idle_run_keeps_the_bookmark_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "exch01"
    hourly(folder, 0, 20, START, 60.0)
    source = _source(str(folder), tmp_path)
    _, _, bookmark = scheduled(source, None)
    frame, _, again = scheduled(source, bookmark)
    assert frame.empty and again == bookmark
