"""The shared reader of growing, rotating line logs (connectors.logfiles), through the
``postfix`` source: rotation and compression, identity and offsets, bookmarks that hold
no content, messages open at the end of a run, syslog times, and a run killed mid-read."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
import lzma
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.errors import ConfigError
from connectors import logfiles
from connectors.base import Chunk, ReadUnit, SourceState, create_source
from connectors.logfiles import (
    Bookmark,
    LogFile,
    SyslogClock,
    find_series,
    parse_syslog,
    rotation_of,
)
from tests.conftest import TEST_KEY, read_all_bytes, run_cli, store_db, write_config

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NOV = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def stamp(at: dt.datetime) -> str:
    return f"{MONTHS[at.month - 1]} {at.day:>2} {at:%H:%M:%S}"


def line(at: dt.datetime, daemon: str, text: str, host: str = "mx1") -> str:
    return f"{stamp(at)} {host} postfix/{daemon}[321]: {text}"


def start_lines(qid: str, at: dt.datetime, sender: str, recipient: str, word: str) -> list[str]:
    """A message's first lines: arrival, id, sender, one delivery attempt."""
    second = dt.timedelta(seconds=1)
    return [
        line(at, "smtpd", f"{qid}: client=client.example[192.0.2.44]"),
        line(at, "cleanup", f"{qid}: message-id=<{qid.lower()}@corp.example>"),
        line(at + second, "qmgr", f"{qid}: from=<{sender}>, size=1234, nrcpt=1 (queue active)"),
        line(
            at + 2 * second,
            "smtp",
            f"{qid}: to=<{recipient}>, relay=mx.example[203.0.113.2]:25, delay=1, "
            f"delays=0/0/0/1, dsn={'2.0.0' if word == 'sent' else '4.4.1'}, status={word} (x)",
        ),
    ]


def end_lines(qid: str, at: dt.datetime, recipient: str | None = None) -> list[str]:
    """A message's last lines: (a retry delivered, then) removed."""
    out = []
    if recipient:
        out.append(
            line(
                at,
                "smtp",
                f"{qid}: to=<{recipient}>, relay=mx.example[203.0.113.2]:25, delay=900, "
                "delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
            )
        )
    out.append(line(at + dt.timedelta(seconds=1), "qmgr", f"{qid}: removed"))
    return out


def message(qid: str, at: dt.datetime, sender: str, recipient: str) -> list[str]:
    return start_lines(qid, at, sender, recipient, "sent") + end_lines(qid, at)


def traffic(first: int, count: int, at: dt.datetime, step: float = 60.0) -> list[str]:
    """``count`` complete messages between people of corp.example and partners."""
    out = []
    for n in range(first, first + count):
        when = at + dt.timedelta(seconds=step * (n - first))
        sender = f"u{n % 17 + 1}@corp.example"
        out += message(f"{n:010X}", when, sender, f"desk{n}@partner{n % 23}.example")
    return out


def write(
    path: Path, lines: list[str], modified: dt.datetime | None = None, mode: str = "w"
) -> Path:
    with path.open(mode, encoding="utf-8") as handle:
        handle.write("".join(f"{text}\n" for text in lines))
    when = (modified or NOV + dt.timedelta(days=20)).timestamp()
    os.utime(path, (when, when))
    return path


def compress(path: Path, target: Path) -> None:
    """What logrotate's compress does: a .gz copy (same modification time), then delete."""
    with path.open("rb") as plain, gzip.open(target, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    shutil.copystat(path, target)
    path.unlink()


def source(folder: Path, **options: Any) -> Any:
    return create_source("postfix", "mx", {"path": "mail.log", **options}, folder)


def read_units(units: list[ReadUnit]) -> tuple[pd.DataFrame, list[Chunk]]:
    chunks = [chunk for unit in units for chunk in unit.chunks()]
    return pd.concat([c.frame for c in chunks], ignore_index=True), chunks


def scheduled(
    folder: Path, bookmark: str | None, started: dt.datetime | None = None, **options: Any
) -> tuple[pd.DataFrame, str | None]:
    """One scheduled read as the engine does it: from ``bookmark``, every unit in order;
    the frame read and the bookmark kept (the store keeps a bookmark only when it does
    not sort before the one it has)."""
    started = started or dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    units = source(folder, **options).units(SourceState(bookmark, started))
    frames = []
    for unit in units:
        frames += [c.frame for c in unit.chunks()]
        assert unit.bookmark is not None
        if bookmark is None or unit.bookmark >= bookmark:
            bookmark = unit.bookmark
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), bookmark


def totals(config: Path) -> tuple[int, int, list[tuple[str, int]]]:
    with store_db(config) as db:
        messages = db.execute("SELECT coalesce(sum(messages), 0) FROM daily_totals").fetchone()
        events = db.execute("SELECT count(*) FROM events").fetchone()
        duplicates = db.execute("SELECT id, rows_duplicate FROM runs ORDER BY id").fetchall()
    return int(messages[0]), int(events[0]), duplicates


@pytest.fixture
def job(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\nschedule: {fail_when_idle: false}\n",
        sources="[{name: mx, type: postfix, path: logs/mail.log}]",
    )


# --- files and series ----------------------------------------------------------------------
def test_rotated_names_form_series_oldest_first(tmp_path: Path) -> None:
    assert rotation_of("mail.log") == ("mail.log", (2, "", 0))
    assert rotation_of("mail.log.1")[0] == rotation_of("mail.log.12.gz")[0] == "mail.log"
    assert rotation_of("mail.log-20261129.gz")[0] == "mail.log"
    assert rotation_of("main-2026-11-29.log")[0] == "main.log"
    assert rotation_of("mainlog.2.bz2")[0] == "mainlog"
    names = [
        "mail.log", "mail.log.1", "mail.log.2.gz", "mail.log.10.gz", "mail.err", "mainlog",
        "mainlog.1", "other.log-20261128.xz", "other.log-20261129", "other.log",
    ]  # fmt: skip
    for n, name in enumerate(names):
        write(tmp_path / name, [line(NOV, "qmgr", f"{n:010X}: removed")])
    found = {
        s.name.rsplit("/", 1)[-1]: [f.name for f in s.files] for s in find_series("*", tmp_path)
    }
    assert found == {
        "mail.log": ["mail.log.10.gz", "mail.log.2.gz", "mail.log.1", "mail.log"],
        "mail.err": ["mail.err"],
        "mainlog": ["mainlog.1", "mainlog"],
        "other.log": ["other.log-20261128.xz", "other.log-20261129", "other.log"],
    }
    # a current file named alone brings its rotations; a rotated one named alone does not
    assert [f.name for f in find_series("mainlog", tmp_path)[0].files] == ["mainlog.1", "mainlog"]
    assert [f.name for f in find_series("mainlog.1", tmp_path)[0].files] == ["mainlog.1"]


def test_compressed_copies_read_alike_and_keep_their_identity(tmp_path: Path) -> None:
    lines = traffic(1, 40, NOV)
    plain = write(tmp_path / "plain.log", lines)
    data = plain.read_bytes()
    (tmp_path / "g.log.1.gz").write_bytes(gzip.compress(data))
    (tmp_path / "b.log.1.bz2").write_bytes(bz2.compress(data))
    (tmp_path / "x.log.1.xz").write_bytes(lzma.compress(data))
    (tmp_path / "named.gz").write_bytes(data)  # the name says gzip, the content does not
    files = [
        LogFile(tmp_path / n)
        for n in ("plain.log", "g.log.1.gz", "b.log.1.bz2", "x.log.1.xz", "named.gz")
    ]
    assert [f.compression for f in files] == [None, "gzip", "bzip2", "xz", None]
    assert len({f.identity() for f in files}) == 1
    assert files[0].identity().length == logfiles.HEAD_BYTES
    frames = []
    for f in files:
        shutil.copystat(plain, f.path)
        frame, _ = read_units(create_source("postfix", "mx", {"path": f.name}, tmp_path).units())
        frames.append(frame)
    assert len(frames[0]) == 40
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])


def test_a_damaged_archive_is_read_up_to_the_damage(tmp_path: Path) -> None:
    data = "".join(f"{t}\n" for t in traffic(1, 3000, NOV, step=1)).encode()
    packed = gzip.compress(data)
    (tmp_path / "mail.log.2.gz").write_bytes(packed[: len(packed) // 2])
    write(tmp_path / "mail.log", traffic(500, 3, NOV + dt.timedelta(days=1)))
    frame, chunks = read_units(source(tmp_path).units())
    rejected = sum((c.rejected for c in chunks), Counter())
    assert rejected["corrupt_file"] == 1
    assert 3 + 100 < len(frame) < 3003


# --- messages across runs and rotations ------------------------------------------------------
def test_a_message_split_across_rotations_is_joined_once(job: Path) -> None:
    """Its first lines in mail.log, rotated to mail.log.1 and then compressed to
    mail.log.2.gz; its last lines in the newest mail.log: one row, counted once."""
    logs = job.parent / "logs"
    day = dt.timedelta(days=1)
    escort = start_lines(
        "A0A0A0A0A0", NOV + 2 * day, "u1@corp.example", "book@escort-ads.test", "deferred"
    )
    write(logs / "mail.log", traffic(1, 5, NOV) + escort, NOV + 2 * day)
    assert run_cli(job, "2026-11-20")[0] == 0
    assert totals(job)[:2] == (5, 0)  # the open message is not emitted (nor kept anywhere)

    (logs / "mail.log").rename(logs / "mail.log.1")  # rotation 1
    write(logs / "mail.log", traffic(10, 4, NOV + 3 * day), NOV + 3 * day)
    assert run_cli(job, "2026-11-20")[0] == 0
    assert totals(job)[:2] == (9, 0)

    compress(logs / "mail.log.1", logs / "mail.log.2.gz")  # rotation 2, compressed
    (logs / "mail.log").rename(logs / "mail.log.1")
    last = end_lines("A0A0A0A0A0", NOV + 4 * day, "book@escort-ads.test")
    write(logs / "mail.log", [*last, *traffic(20, 3, NOV + 4 * day)], NOV + 5 * day)
    assert run_cli(job, "2026-11-20")[0] == 0
    messages, events, runs = totals(job)
    assert (messages, events) == (13, 1)
    assert runs[2][1] == 4  # mail.log.1 read again from the open message: its 4 repeated
    with store_db(job) as db:
        assert db.execute("SELECT status, day FROM events").fetchall() == [
            ("delivered", "2026-11-04")
        ]

    # an audit of the three files joins it once too
    audit = CliRunner().invoke(
        cli,
        ["audit", "--config", str(job), "--source", "mx", "--since", "2026-11-01",
         "--until", "2026-11-30", "--format", "json"],
    )  # fmt: skip
    assert audit.exit_code == 0, audit.output
    report = json.loads(audit.output)
    assert (report["events"], report["rejected"], report["skipped_by_reason"]) == (13, 0, {})


def test_a_message_open_at_the_end_of_a_run_is_emitted_once_by_the_next(job: Path) -> None:
    logs = job.parent / "logs"
    start = start_lines("B0B0B0B0B0", NOV, "u2@corp.example", "book@escort-ads.test", "deferred")
    write(logs / "mail.log", [*traffic(1, 3, NOV - dt.timedelta(hours=1)), *start], NOV)
    assert run_cli(job, "2026-11-20")[0] == 0
    assert totals(job)[:2] == (3, 0)
    with store_db(job) as db:
        (bookmark,) = db.execute("SELECT watermark FROM bookmarks").fetchone()
    assert "@" not in bookmark and "B0B0" not in bookmark and "corp" not in bookmark
    write(
        logs / "mail.log",
        end_lines("B0B0B0B0B0", NOV + dt.timedelta(minutes=15), "book@escort-ads.test"),
        NOV + dt.timedelta(hours=1),
        mode="a",
    )
    assert run_cli(job, "2026-11-20")[0] == 0
    assert totals(job)[:2] == (4, 1)
    assert run_cli(job, "2026-11-20")[0] == 0  # nothing new
    assert totals(job)[:2] == (4, 1)
    blob = read_all_bytes(job.parent / "var")
    for needle in (
        b"u2@corp",
        b"book@",
        b"partner",
        b"B0B0B0B0B0",
        b"client.example",
        b"192.0.2.44",
    ):
        assert needle not in blob


def test_copytruncate_and_replaced_files_are_read_from_their_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, traffic(1, 20, NOV))
    first, mark = scheduled(tmp_path, None)
    assert len(first) == 20 and log.stat().st_size > 2 * logfiles.HEAD_BYTES
    # replaced in place by a shorter file with the same head: read again from its start
    head = log.read_text().splitlines()[:40]
    write(log, head + traffic(300, 1, NOV + dt.timedelta(days=1)))
    second, mark = scheduled(tmp_path, mark)
    assert "desk300@partner1.example" in set(second["recipient"])
    # copytruncate: the content copied to mail.log.1, mail.log emptied and written again
    shutil.copy2(log, tmp_path / "mail.log.1")
    write(log, traffic(100, 2, NOV + dt.timedelta(days=2)))
    third, _ = scheduled(tmp_path, mark)
    assert sorted(third["recipient"]) == ["desk100@partner8.example", "desk101@partner9.example"]


def test_a_file_rotated_while_a_run_begins_is_read_under_its_new_name(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, traffic(1, 3, NOV))
    _, mark = scheduled(tmp_path, None)
    write(log, traffic(10, 2, NOV + dt.timedelta(hours=1)), mode="a")
    units = source(tmp_path).units(SourceState(mark, NOV + dt.timedelta(days=30)))
    log.rename(tmp_path / "mail.log.1")  # logrotate, between planning and reading
    write(log, traffic(20, 1, NOV + dt.timedelta(hours=2)))
    frame, _ = read_units(units)
    assert frame.empty
    after = json.loads(units[-1].bookmark or "")
    assert after["files"][0]["at"] == json.loads(mark or "")["files"][0]["at"]  # no line lost
    # the next run finds the file by its content, and reads on where the last one stopped
    frame, _ = scheduled(tmp_path, units[-1].bookmark)
    assert sorted(frame["recipient"]) == [
        "desk10@partner10.example", "desk11@partner11.example", "desk20@partner20.example",
    ]  # fmt: skip
    # between logrotate's rename and create, the current file is missing: not an error
    log.unlink()
    assert [f.name for f in find_series("mail.log", tmp_path)[0].files] == ["mail.log.1"]


def test_bookmarks_sort_like_progress_and_hold_no_content(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    marks: list[str] = []
    mark: str | None = None
    rows = 0
    for day in range(6):
        at = NOV + dt.timedelta(days=day)
        write(log, traffic(day * 10, 3, at), at + dt.timedelta(hours=1), mode="a")
        if day == 3:
            compress(log, tmp_path / "mail.log.1.gz")
            write(log, [], at + dt.timedelta(hours=1))
        frame, mark = scheduled(tmp_path, mark, started=at + dt.timedelta(hours=2))
        rows += len(frame)
        assert mark is not None
        marks.append(mark)
    assert marks == sorted(marks)
    assert rows == 18  # nothing read twice (no message was open), nothing lost
    for text in marks:
        document = json.loads(text)
        assert set(document) == {"v", "hw", "lw", "files"}
        assert "@" not in text and "partner" not in text and "mail.log" not in text
        assert document["hw"] <= "2026-11-08"  # never past the run's start


def test_a_line_being_written_is_read_when_it_is_complete(tmp_path: Path) -> None:
    lines = traffic(1, 2, NOV)
    log = tmp_path / "mail.log"
    log.write_text("".join(f"{t}\n" for t in lines[:-1]) + lines[-1][:20])
    os.utime(log, (NOV.timestamp() + 3600,) * 2)
    first, mark = scheduled(tmp_path, None)
    assert len(first) == 1  # the second message's "removed" is not written whole yet
    with log.open("a") as handle:
        handle.write(lines[-1][20:] + "\n")
    second, _ = scheduled(tmp_path, mark)
    assert len(second) == 1
    # an audit reads what there is, an unfinished last line included
    log.write_text("".join(f"{t}\n" for t in lines[:-1]) + lines[-1])
    frame, _ = read_units(source(tmp_path).units())
    assert len(frame) == 2


def test_a_message_that_never_completes_is_released_after_max_open_hours(tmp_path: Path) -> None:
    stuck = start_lines("C0C0C0C0C0", NOV, "u3@corp.example", "x@dead.test", "deferred")
    later = traffic(1, 2, NOV + dt.timedelta(hours=30))
    write(tmp_path / "mail.log", [*stuck, *later])
    # scheduled, 24 h: released while reading (a newer line is 30 h later), not pinned
    frame, mark = scheduled(tmp_path, None, max_open_hours=24)
    assert ("x@dead.test", "deferred") in set(zip(frame["recipient"], frame["status"], strict=True))
    assert json.loads(mark or "")["files"][0]["at"] > 0
    # scheduled, default (124 h): kept open, the next run starts at its first line...
    frame, mark = scheduled(tmp_path, None)
    assert "x@dead.test" not in set(frame["recipient"])
    assert json.loads(mark or "")["files"][0]["at"] == 0
    # ...until the log goes on long enough after it
    write(tmp_path / "mail.log", traffic(9, 1, NOV + dt.timedelta(days=6)), mode="a")
    frame, mark = scheduled(tmp_path, mark)
    assert "x@dead.test" in set(frame["recipient"])
    assert json.loads(mark or "")["files"][0]["at"] > 0
    # an audit emits it at the end with what is known
    write(tmp_path / "mail.log", [*stuck, *later])
    frame, _ = read_units(source(tmp_path).units())
    assert len(frame) == 3


def test_units_read_out_of_order_or_twice_give_the_same_rows(tmp_path: Path) -> None:
    write(
        tmp_path / "mail.log.1",
        traffic(1, 4, NOV)
        + start_lines(
            "D0D0D0D0D0", NOV + dt.timedelta(hours=2), "u4@corp.example", "y@p.example", "deferred"
        ),
    )
    write(
        tmp_path / "mail.log",
        end_lines("D0D0D0D0D0", NOV + dt.timedelta(hours=3), "y@p.example")
        + traffic(10, 2, NOV + dt.timedelta(hours=4)),
    )
    units = source(tmp_path).units()
    assert len(units) == 2 and not units[0].distributable and not units[0].once
    whole, _ = read_units(units)
    alone, _ = read_units([units[1]])
    again, _ = read_units([units[1]])
    assert len(whole) == 7
    assert len(alone) == len(again) == 3  # the message begun in mail.log.1, and two more
    assert [u.key for u in source(tmp_path).units()] == [u.key for u in units]


def test_chunks_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfiles, "CHUNK_ROWS", 50)
    write(tmp_path / "mail.log", traffic(1, 400, NOV, step=5))
    _, chunks = read_units(source(tmp_path).units())
    assert sum(len(c.frame) for c in chunks) == 400
    assert max(len(c.frame) for c in chunks) <= 50


def test_bad_lines_are_counted_and_reading_goes_on(tmp_path: Path) -> None:
    good = traffic(1, 3, NOV)
    bad = [
        "this is no syslog line",
        "Feb 30 10:00:00 mx1 postfix/qmgr[1]: 1234567890: removed",  # no such day
        "Nov 30 10:00:00 mx1 postfix/smtp[1]: 1234567890: to=<a@b.test> relay",  # no status
        "x" * (logfiles.MAX_LINE_BYTES + 10),
        "\x00\x01\x02 binary",
        "",
    ]
    write(tmp_path / "mail.log", good[:7] + bad + good[7:])
    frame, chunks = read_units(source(tmp_path).units())
    assert len(frame) == 3
    rejected = sum((c.rejected for c in chunks), Counter())
    assert rejected == {"malformed_line": 3, "bad_timestamp": 1, "line_too_long": 1}


# --- times -------------------------------------------------------------------------------------
def _times(tmp_path: Path, lines: list[str], modified: dt.datetime, **options: Any) -> list[str]:
    write(tmp_path / "mail.log", lines, modified)
    frame, _ = read_units(source(tmp_path, **options).units())
    return [str(t) for t in frame["timestamp"]]


def test_new_year_inside_a_file(tmp_path: Path) -> None:
    eve = dt.datetime(2026, 12, 31, 23, 59, 58, tzinfo=dt.UTC)
    lines = [
        *message("E000000001", eve, "u1@corp.example", "a@p.example"),
        *message("E000000002", eve + dt.timedelta(seconds=5), "u1@corp.example", "b@p.example"),
        # another host's clock, a second behind, after the new year's first line
        *[
            text.replace("mx1", "mx2")
            for text in message(
                "E000000003", eve + dt.timedelta(seconds=1), "u2@corp.example", "c@p.example"
            )
        ],
    ]
    times = _times(tmp_path, lines, dt.datetime(2027, 1, 1, 0, 10, tzinfo=dt.UTC))
    assert times == [
        "2026-12-31 23:59:58+00:00",
        "2027-01-01 00:00:03+00:00",
        "2026-12-31 23:59:59+00:00",
    ]
    # a file written in January that holds December only: the year before
    times = _times(
        tmp_path,
        message("E000000004", eve, "u1@corp.example", "a@p.example"),
        dt.datetime(2027, 1, 3, tzinfo=dt.UTC),
    )
    assert times == ["2026-12-31 23:59:58+00:00"]


def test_the_configured_zone_dates_zoneless_times(tmp_path: Path) -> None:
    winter = message(
        "F000000001",
        dt.datetime(2026, 11, 30, 7, 25, 1, tzinfo=dt.UTC),
        "u1@corp.example",
        "a@p.example",
    )
    summer = message(
        "F000000002",
        dt.datetime(2026, 7, 1, 12, 0, 0, tzinfo=dt.UTC),
        "u1@corp.example",
        "b@p.example",
    )
    iso_stamps = ("2026-11-30T07:25:01.250+01:00", "2026-11-30T07:25:02+01:00")
    iso = [
        f"{iso_stamps[0]} mx1 postfix/smtpd[1]: {text}" if n == 0 else f"{iso_stamps[1]} {text}"
        for n, text in enumerate(
            [
                "F000000003: client=c[192.0.2.1]",
                "mx1 postfix/cleanup[1]: F000000003: message-id=<f3@corp.example>",
                "mx1 postfix/qmgr[1]: F000000003: from=<u1@corp.example>, size=1, nrcpt=1",
                "mx1 postfix/smtp[1]: F000000003: to=<c@p.example>, relay=r, status=sent (ok)",
                "mx1 postfix/qmgr[1]: F000000003: removed",
            ]
        )
    ]
    times = _times(
        tmp_path,
        summer + winter + iso,
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        timezone="Europe/Berlin",
    )
    assert times == [
        "2026-07-01 10:00:00+00:00",
        "2026-11-30 06:25:01+00:00",
        "2026-11-30 06:25:01.250000+00:00",
    ]
    with pytest.raises(ConfigError, match=r"timezone: .*IANA"):
        source(tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="unknown option"):
        source(tmp_path, time_zone="UTC")


def test_syslog_line_forms() -> None:
    clock = SyslogClock()
    clock.start_file(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp())
    bsd = parse_syslog("Nov  3 06:25:01 mx1 postfix/smtpd[12]: text", clock)
    assert bsd == (
        int(dt.datetime(2026, 11, 3, 6, 25, 1, tzinfo=dt.UTC).timestamp()) * 10**6,
        "mx1",
        "postfix/smtpd",
        "text",
    )
    postlogd = parse_syslog("Nov  3 06:25:01.25 mx1 postfix/qmgr[9]: text", clock)
    assert not isinstance(postlogd, str) and postlogd.time_us == bsd[0] + 250_000  # type: ignore[index]
    assert parse_syslog("<22>Nov  3 06:25:01 mx1 postfix/qmgr: text", clock)[2] == "postfix/qmgr"  # type: ignore[index]
    rfc = parse_syslog("2026-11-30T06:25:01.123456789Z mx1 exim[7]: 2026-11-30 06:25:01 x", clock)
    assert not isinstance(rfc, str) and rfc.time_us % 10**6 == 123456
    journal = json.dumps(
        {
            "__REALTIME_TIMESTAMP": "1764483901000000",
            "_HOSTNAME": "mx3",
            "SYSLOG_IDENTIFIER": "postfix/qmgr",
            "MESSAGE": [65, 66, 255],
        }
    )
    parsed = parse_syslog(journal, clock)
    assert not isinstance(parsed, str) and parsed.message == "AB\ufffd" and parsed.host == "mx3"
    assert parse_syslog("Nov 31 06:25:01 mx1 postfix/qmgr: x", clock) == "bad_timestamp"
    assert parse_syslog("no header here", clock) == "malformed_line"
    assert parse_syslog('{"MESSAGE": 1}', clock) == "malformed_line"


def test_a_bookmark_that_is_not_a_log_position_reads_everything(tmp_path: Path) -> None:
    write(tmp_path / "mail.log", traffic(1, 2, NOV))
    for foreign in ("2026-11-05", '{"v": 9}', "{not json"):
        frame, _ = scheduled(tmp_path, foreign)
        assert len(frame) == 2
    assert Bookmark.loads(None, "mx").positions == []


def test_sources_check_names_files_not_content(job: Path) -> None:
    logs = job.parent / "logs"
    write(logs / "mail.log.1", traffic(1, 2, NOV))
    write(logs / "mail.log", traffic(5, 2, NOV + dt.timedelta(days=1)))
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(job)])
    assert "source mx (postfix)" in result.output
    assert "2 file(s) readable in 1 series" in result.output
    assert "@" not in result.output.replace(str(job.parent), "")
    (logs / "mail.log").unlink()
    (logs / "mail.log.1").unlink()
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(job)])
    assert result.exit_code == 5 and "FAIL" in result.output


# --- a run killed mid-read ---------------------------------------------------------------------
def _state(config: Path) -> dict[str, Any]:
    with sqlite3.connect(config.parent / "var" / "store.db") as db:
        return {
            "totals": db.execute(
                "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3"
            ).fetchall(),
            "events": db.execute(
                "SELECT event_key, person, org_unit, domain, status FROM events ORDER BY 1"
            ).fetchall(),
            "alerts": db.execute("SELECT policy, rule_id, person, org_unit FROM alerts").fetchall(),
        }


def _committed_units(config: Path) -> int:
    try:
        with sqlite3.connect(f"file:{config.parent / 'var' / 'store.db'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM ingested_units").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_run_killed_mid_read_loses_and_doubles_nothing(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """SIGKILL a real `compliance run` after it committed its first file and while it reads
    the next; the run after it ends with exactly what one uninterrupted run stores."""
    logs = tmp_path / "logs"
    logs.mkdir()
    hour = dt.timedelta(hours=1)
    at = NOV
    for n, name in enumerate(("mail.log.3.gz", "mail.log.2.gz", "mail.log.1", "mail.log")):
        lines = traffic(n * 20_000, 12_000, at, step=6.0)
        # a message open across the rotation, and u1's contacts with an escort site
        lines += start_lines(
            f"{n:02d}EEEEEEEE",
            at + 20 * hour,
            "u1@corp.example",
            "book@escort-ads.test",
            "deferred",
        )
        if n:
            lines = end_lines(f"{n - 1:02d}EEEEEEEE", at + hour / 2, "book@escort-ads.test") + lines
        at += 21 * hour
        plain = write(logs / name.removesuffix(".gz"), lines, at)
        if name.endswith(".gz"):
            compress(plain, logs / name)

    def config(folder: Path) -> Path:
        folder.mkdir()
        (folder / "logs").symlink_to(logs)
        return write_config(
            folder / "compliance.yaml", directory_csv, escort_feed, "store: var/store.db\n",
            sources="[{name: mx, type: postfix, path: logs/mail.log}]",
        )  # fmt: skip

    killed = config(tmp_path / "killed")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compliance",
            "run",
            "--config",
            str(killed),
            "--today",
            "2026-11-20",
        ],
        env={**os.environ, "COMPLIANCE_PSEUDONYM_KEY": TEST_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _committed_units(killed) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
    crashed = _state(killed)
    assert 0 < sum(r[3] for r in crashed["totals"]) < 4 * 12_000
    code, output = run_cli(killed, "2026-11-20")
    assert code == 0, output

    clean = config(tmp_path / "clean")
    code, output = run_cli(clean, "2026-11-20")
    assert code == 0, output
    resumed, reference = _state(killed), _state(clean)
    assert sum(r[3] for r in reference["totals"]) == 4 * 12_000 + 3
    assert resumed == reference
    assert len(reference["events"]) == 3 and len(reference["alerts"]) == 1
