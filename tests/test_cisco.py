"""Cisco Secure Email Gateway (ESA) logs: consolidated event logs (CEF) and text mail_logs.

The generators below write realistic traffic in both formats (many addresses, MIDs
interleaved, inbound spam quarantined or dropped, outbound mail delivered, bounces,
deferrals, several recipients, split and rewritten messages, a message spanning two
files) and return the rows a reader must yield; the conformance kit can drive them.
Fixture lines imitate the shapes and quirks of the real samples in
../shared/samples/elastic__integrations/cisco_secure_email_gateway (Elastic License: read,
never copied).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import random
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.errors import ConfigError, InputError
from compliance.events import RAW, STATUSES
from connectors.base import Chunk, ReadUnit, Source, SourceState, create_source
from connectors.cisco import (
    CefEvent,
    CiscoSource,
    Clock,
    MidJoiner,
    Position,
    cef_extension,
    cef_status,
    detect_format,
    parse_cef_line,
    parse_mail_log_line,
)
from connectors.testing import (
    CHECKS,
    LISTED_SITES,
    FileHarness,
    Minimiser,
    Writer,
    Written,
    check_source,
)
from connectors.testing import Message as KitMessage
from connectors.testing import traffic as kit_traffic
from tests.conftest import (
    DIRECTORY_PEOPLE,
    kit_minimiser,
    read_all_bytes,
    run_cli,
    sample,
    store_db,
    write_config,
)

SAMPLES = ("elastic__integrations", "cisco_secure_email_gateway")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
START = dt.datetime(2026, 11, 2, 7, 0, tzinfo=dt.UTC)
SUBJECT_MARK = "zebra-plans"  # in every subject; must never be read


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Row:
    """A row a reader must yield (RAW columns)."""

    timestamp: pd.Timestamp
    sender: str | None
    recipient: str
    status: str
    size: int | None
    message_id: str


def _rows(frame: pd.DataFrame) -> list[Row]:
    return sorted(
        (
            Row(
                r.timestamp,
                None if pd.isna(r.sender) else r.sender,
                r.recipient,
                r.status,
                None if pd.isna(r.size) else int(r.size),
                r.message_id,
            )
            for r in frame.itertuples(index=False)
        ),
        key=_order,
    )


def _order(row: Row) -> tuple[str, str, str]:
    return (row.message_id, row.recipient, row.status)


def _read(
    source: Source, state: SourceState | None = None
) -> tuple[pd.DataFrame, Counter[str], Counter[str]]:
    frames, rejected, skipped = [], Counter[str](), Counter[str]()
    for unit in source.units(state):
        for chunk in unit.chunks():
            assert isinstance(chunk, Chunk)
            assert len(chunk.frame) <= 1 << 16
            assert list(chunk.frame.columns) == list(RAW)
            assert {str(t) for t in chunk.frame.dtypes} == set(RAW.values())
            frames.append(chunk.frame)
            rejected.update(chunk.rejected)
            skipped.update(chunk.skipped)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RAW))
    return frame, rejected, skipped


def _source(folder: Path, **options: Any) -> Source:
    return create_source("cisco", "esa", {"path": str(folder), **options}, folder)


def _scheduled(started: dt.datetime) -> SourceState:
    """The state of a scheduled run that starts at ``started`` (with no bookmark)."""
    return SourceState(None, started)


# --------------------------------------------------------------------------- text mail_logs

PARTNER_DOMAINS = ("partner.example", "supplier.test", "bank.example", "clients.agency.test")
PARTNERS = [
    f"{n}@{d}" for d in PARTNER_DOMAINS for n in ("sales", "info", "anna.berg", "ops", "jobs")
]
SPAMMERS = [f"promo{i}@bulk{i % 7}.spam.test" for i in range(40)]


def _ctime(at: dt.datetime) -> str:
    return f"{at:%a %b} {at.day:2d} {at:%H:%M:%S %Y}"


def mail_log_line(at: dt.datetime, text: str, style: str, zone: dt.tzinfo) -> str:
    """One mail_logs line: the appliance's own file (``Mon Nov  2 08:00:00 2026 Info:``) or
    syslog as forwarded (``<22>Nov  2 08:00:00 esa1.corp.example mail_logs: Info:``)."""
    local = at.astimezone(zone)
    if style == "syslog":
        stamp = f"{local:%b} {local.day:2d} {local:%H:%M:%S}"
        return f"<22>{stamp} esa1.corp.example mail_logs: Info: {text}"
    return f"{_ctime(local)} Info: {text}"


@dataclass
class Traffic:
    """Generated mail_logs: the lines in time order, the rows they must yield, and the
    MIDs whose lines are cut by a file boundary."""

    lines: list[tuple[dt.datetime, str]]
    rows: list[Row]
    addresses: set[str]
    subjects: list[str]


def mail_log_traffic(
    messages: int, start: dt.datetime = START, seed: int = 7, escort_days: Sequence[int] = ()
) -> Traffic:
    """Realistic text mail log events for ``messages`` messages from ``start``.

    Kinds, in turn: outbound delivered (1-3 recipients), inbound spam to the spam
    quarantine, inbound delivered, internal, outbound with one bounce, a deferral then
    delivery, a deferral then expiry, inbound dropped by anti-spam, a split for a
    per-recipient policy, a rewritten MID, spam delivered with a tag, a recipient refused
    in the SMTP dialogue, a null-sender bounce from outside, receiving aborted.
    ``escort_days``: u1 writes to book@escort-ads.test that many days after ``start``.
    """
    rng = random.Random(seed)
    events: list[tuple[dt.datetime, int, str]] = []
    rows: list[Row] = []
    addresses: set[str] = set()
    subjects: list[str] = []
    seq = 0
    mid = 40_000
    icid = 9_000
    dcid = 3_000

    def emit(at: dt.datetime, text: str) -> None:
        nonlocal seq
        seq += 1
        events.append((at, seq, text))

    def message(
        at: dt.datetime,
        sender: str,
        recipients: list[str],
        kind: str,
        index: int,
    ) -> None:
        nonlocal mid, icid, dcid
        mid += rng.randint(1, 3)
        icid += 1
        m, c = mid, icid
        size = rng.randint(900, 4_000_000)
        domain = sender.split("@")[-1] or "null.test"
        message_id = f"<{index:06d}.{seed}.{rng.getrandbits(32):08x}@mail.{domain}>"
        subject = (
            f"Re: offer {index} {SUBJECT_MARK} 'quoted' duser=evil@escort-ads.test "
            f"Message finished MID {m + 1} done"
        )
        subjects.append(subject)
        addresses.update(a for a in [sender, *recipients] if a)
        t = at
        step = dt.timedelta(seconds=1)
        emit(
            t,
            f"New SMTP ICID {c} interface Data 1 (192.0.2.10) address 198.51.100.{index % 250} "
            "reverse dns host mx.sender.test verified yes",
        )
        emit(t, f"ICID {c} ACCEPT SG UNKNOWNLIST match sbrs[-1.0:10.0] SBRS 3.5 country Germany")
        emit(t, f"Start MID {m} ICID {c}")
        emit(t, f"MID {m} ICID {c} From: <{sender}>")
        refused: list[str] = []
        if kind == "refused":
            refused = [f"nobody{index}@corp.example"]
            addresses.update(refused)
            emit(t, f"MID {m} ICID {c} To: <{refused[0]}> Rejected by Receiving Control")
        for rid, rcpt in enumerate(recipients):
            emit(t + step, f"MID {m} ICID {c} RID {rid} To: <{rcpt}>")
        stamp = pd.Timestamp(at).tz_convert("UTC")
        if kind == "aborted":
            emit(t + 3 * step, f"Message aborted MID {m} Receiving aborted by sender")
            emit(t + 3 * step, f"Message finished MID {m} aborted")
            rows.extend(
                Row(stamp, sender or None, r, "rejected", None, f"esa-mid:{m}@") for r in recipients
            )
            return
        emit(t + 2 * step, f"MID {m} Message-ID '{message_id}'")
        emit(t + 2 * step, f"MID {m} Subject '{subject}'")
        emit(t + 3 * step, f"MID {m} ready {size} bytes from <{sender}>")
        direction = "outbound" if sender.endswith("@corp.example") else "inbound"
        emit(
            t + 3 * step,
            f"MID {m} matched all recipients for per-recipient policy DEFAULT in the "
            f"{direction} table",
        )
        emit(t + 4 * step, f"ICID {c} close")
        verdict = (
            "positive" if kind in ("spam_quarantine", "spam_drop", "spam_tagged") else "negative"
        )
        emit(t + 5 * step, f"MID {m} interim verdict using engine: CASE spam {verdict}")
        emit(t + 5 * step, f"MID {m} using engine: CASE spam {verdict}")
        emit(t + 5 * step, f"MID {m} interim AV verdict using Sophos CLEAN")
        emit(t + 5 * step, f"MID {m} antivirus negative")
        statuses = ["delivered"] * len(recipients)
        live = m
        t = t + 6 * step
        if kind == "spam_quarantine":
            if index % 2:
                emit(t, f'MID {m} quarantined to "Spam Quarantine" (a/s verdict SPAM_POSITIVE)')
            else:
                emit(t, f"EUQ: Tagging MID {m} for quarantine")
                emit(t, f"RPC Delivery start RCID {dcid} MID {m} to local IronPort Spam Quarantine")
                emit(t, f"EUQ: Quarantined MID {m}")
                emit(t, f"RPC Message done RCID {dcid} MID {m}")
            emit(t + step, f"Message finished MID {m} done")
            statuses = ["quarantined"] * len(recipients)
        elif kind == "spam_drop":
            emit(t, f"Message aborted MID {m} Dropped by antispam")
            emit(t, f"Message finished MID {m} aborted")
            statuses = ["filtered_as_spam"] * len(recipients)
        elif kind == "split":
            child = mid = mid + 1
            emit(
                t,
                f"MID {m} was split creating MID {child} due to a per-recipient policy Legal "
                f"in the {direction} table",
            )
            emit(
                t,
                f"MID {m} matched recipients [0] for per-recipient policy DEFAULT in the "
                f"{direction} table",
            )
            emit(
                t,
                f"MID {child} matched recipients [1] for per-recipient policy Legal in the "
                f"{direction} table",
            )
            dcid += 1
            emit(t + step, f"Delivery start DCID {dcid} MID {m} to RID [0]")
            emit(t + step, f"Message done DCID {dcid} MID {m} to RID [0]")
            emit(t + step, f"Message finished MID {m} done")
            emit(t + 2 * step, f'MID {child} quarantined to "Policy" (content filter:legal_hold)')
            emit(t + 2 * step, f"Message finished MID {child} done")
            statuses = ["delivered", "quarantined"]
        elif kind == "rewritten":
            child = mid = mid + 1
            # the new MID's lines may come before the line that names it
            dcid += 1
            emit(t, f"Delivery start DCID {dcid} MID {child} to RID {list(range(len(recipients)))}")
            emit(t, f"MID {m} rewritten to MID {child} by alt-rcpt-to-filter filter 'archive'")
            emit(t, f"Message finished MID {m} done")
            emit(
                t + step,
                f"Message done DCID {dcid} MID {child} to RID {list(range(len(recipients)))}",
            )
            emit(t + step, f"Message finished MID {child} done")
        else:
            emit(t, f"MID {m} queued for delivery")
            rids = list(range(len(recipients)))
            if kind in ("deferred_then_delivered", "deferred_then_expired"):
                dcid += 1
                emit(t, f"New SMTP DCID {dcid} interface 192.0.2.20 address 203.0.113.9 port 25")
                emit(t, f"Delivery start DCID {dcid} MID {m} to RID {rids}")
                for rid in rids:
                    emit(
                        t,
                        f"Delayed: DCID {dcid} MID {m} to RID {rid} - 4.4.0 - Other network "
                        "problem ('421', ['Try again later'])",
                    )
                t = t + dt.timedelta(hours=2)
            if kind == "deferred_then_expired":
                for rid in rids:
                    emit(
                        t,
                        f"Bounced: DCID 0 MID {m} to RID {rid} - Bounced by DCID 0. 5.4.7 - "
                        "Delivery expired (message too old) ('000', [])",
                    )
                statuses = ["bounced"] * len(recipients)
                bounce = mid = mid + 1
                emit(t, f"MID {bounce} was generated for bounce of MID {m}")
                emit(t, f"Delivery start DCID {dcid + 1} MID {bounce} to RID [0]")
                emit(t, f"Message done DCID {dcid + 1} MID {bounce} to RID [0]")
                emit(t, f"Message finished MID {bounce} done")
            else:
                dcid += 1
                emit(
                    t,
                    f"New SMTP DCID {dcid} interface 192.0.2.20 address "
                    f"203.0.113.{index % 250} port 25",
                )
                emit(t, f"Delivery start DCID {dcid} MID {m} to RID {rids}")
                if kind == "bounce":
                    emit(
                        t + step,
                        f"Bounced: DCID {dcid} MID {m} to RID 0 - 5.1.1 - Bad destination "
                        "email address ('550', ['5.1.1 User unknown'])",
                    )
                    statuses[0] = "bounced"
                    if len(rids) > 1:
                        emit(
                            t + step,
                            f"Message done DCID {dcid} MID {m} to RID {rids[1:]} "
                            "[('X-Mailer', 'Outlook 16.0')]",
                        )
                else:
                    emit(
                        t + step,
                        f"Message done DCID {dcid} MID {m} to RID {rids} "
                        "[('X-Mailer', 'Outlook 16.0')]",
                    )
                emit(t + step, f"MID {m} RID {rids} Response '2.0.0 Ok: queued as 4Ab{index}'")
                if kind == "spam_tagged":
                    statuses = ["filtered_as_spam" if s == "delivered" else s for s in statuses]
            emit(t + 2 * step, f"Message finished MID {live} done")
            emit(t + 3 * step, f"DCID {dcid} close")
        for rcpt, status in zip(recipients, statuses, strict=True):
            rows.append(Row(stamp, sender or None, rcpt, status, size, message_id))
        for rcpt in refused:
            rows.append(Row(stamp, sender or None, rcpt, "rejected", size, message_id))

    kinds = [
        "outbound", "spam_quarantine", "inbound", "internal", "bounce", "deferred_then_delivered",
        "spam_drop", "outbound", "split", "rewritten", "spam_tagged", "refused", "null_sender",
        "deferred_then_expired", "inbound", "aborted",
    ]  # fmt: skip
    gap = dt.timedelta(minutes=7)
    for i in range(messages):
        at = start + i * gap + dt.timedelta(seconds=rng.randint(0, 400))
        kind = kinds[i % len(kinds)]
        person = DIRECTORY_PEOPLE[rng.randrange(len(DIRECTORY_PEOPLE))]
        count = rng.randint(1, 3)
        outside = rng.sample(PARTNERS, count)
        if kind in (
            "outbound",
            "bounce",
            "deferred_then_delivered",
            "deferred_then_expired",
            "rewritten",
        ):
            message(at, person, outside, kind, i)
        elif kind in ("spam_quarantine", "spam_drop", "spam_tagged"):
            message(at, rng.choice(SPAMMERS), rng.sample(DIRECTORY_PEOPLE, count), kind, i)
        elif kind == "internal":
            others = [p for p in rng.sample(DIRECTORY_PEOPLE, 3) if p != person][:2]
            message(at, person, others, kind, i)
        elif kind == "split":
            message(at, rng.choice(PARTNERS), rng.sample(DIRECTORY_PEOPLE, 2), kind, i)
        elif kind == "null_sender":
            message(at, "", [person], kind, i)
        else:
            message(at, rng.choice(PARTNERS), [person], kind, i)
    for day in escort_days:
        at = start + dt.timedelta(days=day, minutes=30)
        message(at, "u1@corp.example", ["book@escort-ads.test"], "outbound", 900 + day)
    events.sort()
    return Traffic([(at, text) for at, _, text in events], rows, addresses, subjects)


def write_mail_logs(
    folder: Path,
    traffic: Traffic,
    *,
    files: int = 2,
    style: str = "file",
    zone: dt.tzinfo = dt.UTC,
) -> list[Path]:
    """The traffic as ``files`` consecutive log files (an appliance's rotated
    ``mail.@<time>.s`` files and ``mail.current``), each last written at its last line."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(traffic.lines) // files)
    paths = []
    for n in range(files):
        part = traffic.lines[n * per : (n + 1) * per]
        name = "mail.current" if n == files - 1 else f"mail.@{part[0][0]:%Y%m%dT%H%M%S}.s"
        path = folder / name
        path.write_text(
            "".join(mail_log_line(at, text, style, zone) + "\n" for at, text in part),
            encoding="utf-8",
        )
        last = part[-1][0].timestamp()
        os.utime(path, (last, last))
        paths.append(path)
    return paths


def expected_rows(traffic: Traffic, style: str = "file", zone: dt.tzinfo = dt.UTC) -> list[Row]:
    """The rows of ``traffic`` written in ``style``: a message without a Message-ID (receiving
    aborted) is known by ``esa:<host>:<mid>:<time of its first line>``."""
    out = []
    for row in traffic.rows:
        if row.message_id.startswith("esa-mid:"):
            mid = row.message_id.removeprefix("esa-mid:").rstrip("@")
            local = row.timestamp.to_pydatetime().astimezone(zone)
            if style == "syslog":
                trace = f"esa:esa1.corp.example:{mid}:{local:%b} {local.day} {local:%H:%M:%S}"
            else:
                trace = f"esa:esa:{mid}:{local:%b} {local.day} {local:%H:%M:%S %Y}"
            row = Row(row.timestamp, row.sender, row.recipient, row.status, row.size, trace)
        out.append(row)
    return sorted(out, key=_order)


def write_messages(folder: Path, messages: int, fmt: str = "mail_logs") -> list[Row]:
    """For the conformance kit: ``messages`` messages of realistic traffic written to
    ``folder`` as text mail logs (two rotated files) or consolidated events (one file);
    the rows a ``cisco`` source on ``folder`` must yield."""
    if fmt == "cef":
        lines, rows = cef_traffic(messages)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "consolidated.current").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return sorted(rows, key=_order)
    traffic = mail_log_traffic(messages)
    write_mail_logs(folder, traffic)
    return expected_rows(traffic)


@pytest.mark.parametrize(("style", "zone"), [("file", dt.UTC), ("syslog", BERLIN)])
def test_mail_logs_join_every_message_of_realistic_traffic(
    tmp_path: Path, style: str, zone: dt.tzinfo
) -> None:
    traffic = mail_log_traffic(160)
    paths = write_mail_logs(tmp_path / "logs", traffic, style=style, zone=zone)
    first_mids = {
        t.split("MID ")[1].split()[0] for t in paths[0].read_text().splitlines() if "MID " in t
    }
    last_mids = {
        t.split("MID ")[1].split()[0] for t in paths[1].read_text().splitlines() if "MID " in t
    }
    assert first_mids & last_mids, "some message must span the two files"
    source = _source(tmp_path / "logs", timezone=str(zone))
    frame, rejected, skipped = _read(source)
    assert not rejected and not skipped
    assert _rows(frame) == expected_rows(traffic, style, zone)
    assert set(frame["status"]) <= set(STATUSES)
    assert set(frame["status"]) == {
        "delivered", "quarantined", "bounced", "filtered_as_spam", "rejected",
    }  # fmt: skip
    [unit] = source.units()
    assert unit.format == "cisco-mail-logs"
    assert unit.once is False


def test_mail_logs_read_in_modification_order_whatever_the_names(tmp_path: Path) -> None:
    traffic = mail_log_traffic(40)
    paths = write_mail_logs(tmp_path / "logs", traffic, files=3)
    # rsyslog's names sort the other way round: cisco.log, cisco.log.1, cisco.log.2.gz
    renamed = []
    for path, name in zip(paths, ["cisco.log.2.gz", "cisco.log.1", "cisco.log"], strict=True):
        target = path.with_name(name)
        stat = path.stat()
        if name.endswith(".gz"):
            target.write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
        else:
            path.rename(target)
        os.utime(target, (stat.st_mtime, stat.st_mtime))
        renamed.append(target)
    frame, rejected, _ = _read(_source(tmp_path / "logs"))
    assert not rejected
    assert _rows(frame) == expected_rows(traffic)


def test_no_subject_text_reaches_a_frame(tmp_path: Path) -> None:
    traffic = mail_log_traffic(48)
    write_mail_logs(tmp_path / "logs", traffic)
    frame, _, _ = _read(_source(tmp_path / "logs"))
    text = frame.astype("string").fillna("").to_csv()
    assert SUBJECT_MARK not in text
    assert "evil@" not in text
    assert "Outlook" not in text  # logged headers are not read either


def test_a_message_still_open_is_held_in_a_scheduled_run_and_read_in_an_audit(
    tmp_path: Path,
) -> None:
    traffic = mail_log_traffic(32)
    # the last message's lines stop before its end
    cut = max(i for i, (_, text) in enumerate(traffic.lines) if text.startswith("Message finished"))
    *_, (_, last_finish) = traffic.lines[: cut + 1]
    open_mid = last_finish.split()[3]
    ready = next(
        i for i, (_, t) in enumerate(traffic.lines) if t.startswith(f"MID {open_mid} ready")
    )
    lines = [
        (at, t)
        for i, (at, t) in enumerate(traffic.lines)
        if i <= ready or f"MID {open_mid} " not in t
    ]
    held = Traffic(lines, traffic.rows, traffic.addresses, traffic.subjects)
    write_mail_logs(tmp_path / "logs", held)
    source = _source(tmp_path / "logs")
    end = held.lines[-1][0]
    scheduled, _, skipped = _read(source, _scheduled(end + dt.timedelta(minutes=5)))
    audit, _, _ = _read(source)
    open_rows = [r for r in audit.itertuples() if r.message_id not in set(scheduled["message_id"])]
    assert open_rows and skipped["message_still_open"] == len(open_rows)
    assert {r.status for r in open_rows} == {"unknown"}
    assert len(audit) == len(scheduled) + len(open_rows)
    # with no hold, or once it is open longer than the hold, a run reads it as it stands
    frame, _, skipped = _read(
        _source(tmp_path / "logs", hold_open_hours=0), _scheduled(end + dt.timedelta(minutes=5))
    )
    assert len(frame) == len(audit) and not skipped
    later, _, skipped = _read(source, _scheduled(end + dt.timedelta(hours=73)))
    assert _rows(later) == _rows(audit) and not skipped


def test_joiner_reports_the_oldest_open_message() -> None:
    joiner = MidJoiner()
    lines = [
        "Mon Nov  2 08:00:00 2026 Info: Start MID 7 ICID 1",
        "Mon Nov  2 08:00:00 2026 Info: MID 7 ICID 1 From: <a@partner.example>",
        "Mon Nov  2 08:00:01 2026 Info: MID 7 ICID 1 RID 0 To: <u1@corp.example>",
        "Mon Nov  2 08:00:02 2026 Info: Start MID 8 ICID 2",
        "Mon Nov  2 08:00:02 2026 Info: MID 8 ICID 2 From: <u2@corp.example>",
        "Mon Nov  2 08:00:02 2026 Info: MID 8 ICID 2 RID 0 To: <b@partner.example>",
        "Mon Nov  2 08:00:03 2026 Info: Message done DCID 5 MID 7 to RID [0]",
        "Mon Nov  2 08:00:04 2026 Info: Message finished MID 7 done",
    ]
    finished = []
    offset = 0
    for line in lines:
        event = parse_mail_log_line(line)
        assert event is not None
        finished += joiner.add(event, Position(0, offset))
        offset += len(line) + 1
    assert [(r.recipient, r.status) for r in finished] == [("u1@corp.example", "delivered")]
    oldest = joiner.oldest_open()
    assert oldest is not None
    assert oldest.position == Position(0, len(lines[0]) + len(lines[1]) + len(lines[2]) + 3)
    assert oldest.stamp == "C|Nov 2 08:00:02 2026"
    assert [(r.recipient, r.status) for r in joiner.drain()] == [("b@partner.example", "unknown")]
    assert joiner.oldest_open() is None


def test_mail_log_lines_that_are_not_message_events_are_ignored() -> None:
    assert parse_mail_log_line("Mon Nov  2 08:00:00 2026 Info: ICID 5 close") is None
    assert (
        parse_mail_log_line(
            "Mon Nov  2 08:00:00 2026 Info: MID 5 Subject 'MID 9 ICID 1 From: <x@y.test>'"
        )
        is None
    )
    assert (
        parse_mail_log_line(
            '<22>Nov  2 08:00:00 esa1 mail_logs: Info: MID 5 Subject "Message finished MID 5 done"'
        )
        is None
    )
    assert parse_mail_log_line("garbage MID 5 without a time") is not None  # counted as malformed
    event = parse_mail_log_line(
        "2026-11-02T08:00:00+01:00 esa1 mail_logs: Info: MID 5 ICID 2 RID 3 To: <x@y.test>"
    )
    assert event is not None and (event.kind, event.mid, event.rids, event.value) == (
        "to",
        5,
        (3,),
        "x@y.test",
    )


def test_malformed_message_lines_are_counted_and_reading_goes_on(tmp_path: Path) -> None:
    traffic = mail_log_traffic(16)
    [path] = write_mail_logs(tmp_path / "logs", traffic, files=1)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("truncated line about MID 12\n\x00\xff binary MID junk\n")
    frame, rejected, _ = _read(_source(tmp_path / "logs"))
    assert rejected == Counter({"malformed_line": 2})
    assert len(frame) == len(traffic.rows)


# --------------------------------------------------------------------------- CEF

CEF_HEAD = (
    "CEF:0|Cisco|C300V Secure Email Gateway Virtual|15.0.1-030|ESA_CONSOLIDATED_LOG_EVENT|"
    "Consolidated Log Event|5|"
)


def _cef_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=")


def cef_line(
    at: dt.datetime,
    sender: str,
    recipients: list[str],
    act: str,
    *,
    mid: int,
    size: int,
    message_id: str,
    subject: str,
    direction: int,
    spam: str = "NEGATIVE",
    separator: str = ";",
    zone: dt.tzinfo = dt.UTC,
    syslog: bool = True,
) -> str:
    """A consolidated event as the appliance writes it (fields in a configured order,
    ``=`` escaped, the subject and Message-ID as Python literals, dict-valued details)."""
    local = at.astimezone(zone)
    details = {"DELIVERED": "", "QUARANTINED": "ESAFinalActionDetails=To SPAM ",
               "BOUNCED": "ESAFinalActionDetails=5.1.0 - Unknown address error ",
               "DROPPED": "ESAFinalActionDetails=Dropped by antispam "}[act]  # fmt: skip
    subject_literal = repr(subject).replace("=", "\\=")
    message_literal = repr(message_id).replace("=", "\\\\=")  # as real appliances write it
    parts = [
        "deviceExternalId=4235746AE34E6DD44EB8-CE101C994AA5",
        f"ESAMID={mid}",
        f"ESAICID={mid + 7000}",
        "ESAAMPVerdict=SKIPPED",
        f"ESAASVerdict={spam}",
        "ESAAVVerdict=NEGATIVE ",  # a doubled space, as in real lines
        f"endTime={_ctime(local + dt.timedelta(seconds=3))}",
        "dvc=192.0.2.1",
        "ESAAttachmentDetails={'offer duser\\=x@escort-ads.test.pdf': {'AMP': {'Verdict': "
        "'FILE UNKNOWN', 'fileHash': 'ab12'}, 'BodyScanner': {'fsize': 1024}}}",
        f"ESAFriendlyFrom=Display Name <{_cef_escape(sender)}>",
        f"startTime={_ctime(local)}",
        f"deviceDirection={direction}",
        f"suser={_cef_escape(sender)}",
        "cs1Label=MailPolicy cs1=DEFAULT cs2Label=SenderCountry cs2=not enabled",
        f"act={act} {details}cs4Label=ExternalMsgID cs4={message_literal}",
        f"ESAMsgSize={size}",
        f"duser={separator.join(_cef_escape(r) for r in recipients)}",
        "ESAHeloDomain=mx.sender.test ESAHeloIP=198.51.100.7",
        "ESASDRDomainAge=27 years 2 months 15 days",
        "ESASPFVerdict={'mailfrom': {'result': 'Pass', 'sender': 'x'}}",
        "sourceAddress=198.51.100.7",
        f"msg={subject_literal}",
        "ESAURLDetails={'https://www.partner.example/?a\\=b': {'WbrsScore': 3.0}}",
        "ESATLSInProtocol=TLSv1.2 ESAAMPVerdict=SKIPPED",
    ]
    body = CEF_HEAD + " ".join(parts)
    if syslog:
        return f"<14>{local:%b %d %H:%M:%S} consolidated_event: {body}"
    return f"{_ctime(local)}: {body}"


def cef_traffic(
    messages: int, start: dt.datetime = START, seed: int = 11, zone: dt.tzinfo = dt.UTC
) -> tuple[list[str], list[Row]]:
    """Consolidated events of realistic traffic and the rows they must yield."""
    rng = random.Random(seed)
    lines, rows = [], []
    for i in range(messages):
        at = start + dt.timedelta(minutes=5 * i, seconds=rng.randint(0, 200))
        kind = i % 6
        person = DIRECTORY_PEOPLE[rng.randrange(len(DIRECTORY_PEOPLE))]
        if kind in (0, 3):  # outbound, delivered or (3) bounced
            sender, rcpts, act, status, spam, direction = (
                person,
                rng.sample(PARTNERS, rng.randint(1, 3)),
                "DELIVERED",
                "delivered",
                "NOT_EVALUATED",
                1,
            )
            if kind == 3:
                act, status = "BOUNCED", "bounced"
        elif kind == 1:  # inbound spam, quarantined
            sender, rcpts, act, status, spam, direction = (
                rng.choice(SPAMMERS),
                rng.sample(DIRECTORY_PEOPLE, 2),
                "QUARANTINED",
                "quarantined",
                "POSITIVE",
                0,
            )
        elif kind == 2:  # inbound, delivered
            sender, rcpts, act, status, spam, direction = (
                rng.choice(PARTNERS),
                [person],
                "DELIVERED",
                "delivered",
                "NEGATIVE",
                0,
            )
        elif kind == 4:  # inbound spam, dropped
            sender, rcpts, act, status, spam, direction = (
                rng.choice(SPAMMERS),
                [person],
                "DROPPED",
                "filtered_as_spam",
                "POSITIVE",
                0,
            )
        else:  # suspected spam delivered with a tag
            sender, rcpts, act, status, spam, direction = (
                rng.choice(SPAMMERS),
                [person],
                "DELIVERED",
                "filtered_as_spam",
                "SUSPECT",
                0,
            )
        size = rng.randint(800, 9_000_000)
        message_id = f"<CAK{i:05d}x\\=q{seed}=@mail.{sender.split('@')[1]}>"
        lines.append(
            cef_line(
                at, sender, rcpts, act, mid=1000 + i, size=size, message_id=message_id,
                subject=f"Invoice {i} {SUBJECT_MARK} duser=evil@escort-ads.test act=DELIVERED",
                direction=direction, spam=spam, separator=";" if i % 2 else ",",
                zone=zone, syslog=bool(i % 3),
            )
        )  # fmt: skip
        stamp = pd.Timestamp(at.replace(microsecond=0)).tz_convert("UTC")
        rows += [
            Row(stamp, sender, r, status, size, message_id.replace("\\\\", "\\")) for r in rcpts
        ]
    return lines, rows


def test_cef_extension_escapes_spaces_duplicates_and_literals() -> None:
    ext = (
        r"suser=a\=b@x.test duser=c@y.test;d@y.test ESASDRDomainAge=27 years 2 months "
        r"msg='a duser=evil@z.test \' act=DELIVERED' act=QUARANTINED act=DELIVERED "
        r"ESAAttachmentDetails={'x suser=evil@z.test': {'k': '}'}} cs4='<id\\=1@x.test>' "
        r"ESAFriendlyFrom=\"Castle. B (Bouncy)\" <bouncy@castle.test> end=Tue Sep 16 16:56:06 2023"
    )
    values = cef_extension(
        ext, frozenset({"suser", "duser", "act", "cs4", "end", "msg", "ESASDRDomainAge"})
    )
    assert values == {
        "suser": "a=b@x.test",
        "duser": "c@y.test;d@y.test",
        "ESASDRDomainAge": "27 years 2 months",
        "msg": r"'a duser=evil@z.test \' act=DELIVERED'",
        "act": "QUARANTINED",
        "cs4": "'<id=1@x.test>'",
        "end": "Tue Sep 16 16:56:06 2023",
    }


def test_cef_lines_with_the_quirks_of_real_appliances() -> None:
    lines = [
        # syslog-wrapped, short start=/end= names, no syslog year, display names
        "Sep 16 16:56:06 consolidated_event: " + CEF_HEAD + "deviceExternalId=42-AB ESAMID=2348764 "
        "end=Tue Sep 16 16:56:06 2026 ESAFriendlyFrom=Bouncy Castle - No Reply "
        "start=Tue Sep 16 16:56:04 2026 deviceDirection=0 suser=0101016d-28ea@bounce.supplier.test "
        "act=DELIVERED cs4Label=ExternalMsgID cs4='' ESAMsgSize=3518 duser=support@corp.example "
        "msg='Alert - wireless' ESAAMPVerdict=SKIPPED ESAASVerdict=NEGATIVE",
        # act DQ (delay quarantine), escaped = in the sender, subject in double quotes
        "<14>Jul 04 06:21:54 consolidated_event: "
        + CEF_HEAD
        + "ESAMID=54376810 startTime=Sat Jul  4 16:12:44 2026 "
        r"suser=westinghouse-thoreau\\=partner.example@srs.partner.example act=DQ "
        "ESAFinalActionDetails=Message held temporarily in Delay Quarantine "
        "cs4Label=ExternalMsgID cs4='<2403354681.734500@mail.partner.example>' ESAMsgSize=18675 "
        'duser=smith@corp.example msg="Demande d\'achat, ref: X"',
        # receiving aborted: no recipient, no Message-ID
        "<166>Mar 17 18:24:37 consolidated_event: "
        + CEF_HEAD
        + "ESAMID=164226 endTime=Mon Nov 14 15:32:05 2022 "
        "startTime=Mon Nov 14 15:32:05 2022 suser=x@spam.test act=ABORTED "
        "ESAFinalActionDetails=Receiving aborted by sender msg=''",
        # a broken header
        "<166>Mar 17 18:24:37 consolidated_event: CEF:0|Cisco|C300V",
        # another product's CEF and an ordinary log line
        "CEF:0|Other|Firewall|1.0|100|Blocked|5|src=192.0.2.1",
        "Mon Nov  2 08:00:00 2026 Info: Begin Logfile",
    ]
    parsed = [parse_cef_line(line) for line in lines]
    assert parsed[0] == CefEvent(
        "C|Sep 16 16:56:04 2026", "0101016d-28ea@bounce.supplier.test", ("support@corp.example",),
        "delivered", 3518, "esa:42-AB:2348764",
    )  # fmt: skip
    assert parsed[1] == CefEvent(
        "C|Jul 4 16:12:44 2026", "westinghouse-thoreau=partner.example@srs.partner.example",
        ("smith@corp.example",), "deferred", 18675, "<2403354681.734500@mail.partner.example>",
    )  # fmt: skip
    assert parsed[2] is not None and parsed[2] is not False
    assert (parsed[2].recipients, parsed[2].status) == ((), "rejected")
    assert parsed[3] is False
    assert parsed[4] is None and parsed[5] is None


def test_cef_status_mapping() -> None:
    assert cef_status("DELIVERED") == "delivered"
    assert cef_status("delivered", spam="SUSPECT") == "filtered_as_spam"
    assert cef_status("DELIVERED", virus="POSITIVE") == "filtered_as_spam"
    assert cef_status("QUARANTINED", spam="POSITIVE") == "quarantined"
    assert cef_status("DROPPED") == "filtered_as_spam"
    assert cef_status("BOUNCED") == "bounced"
    assert cef_status("ABORTED") == "rejected"
    assert cef_status("DQ") == "deferred"
    assert cef_status(None) == "unknown"
    assert cef_status("SOMETHING_NEW") == "unknown"


@pytest.mark.parametrize("zone", [dt.UTC, BERLIN])
def test_cef_file_yields_one_row_per_recipient(tmp_path: Path, zone: dt.tzinfo) -> None:
    lines, expected = cef_traffic(300, zone=zone)
    folder = tmp_path / "cef"
    folder.mkdir()
    (folder / "consolidated.@20261102T070000.s").write_text("\n".join(lines[:150]) + "\n")
    (folder / "consolidated.current").write_text("\n".join(lines[150:]) + "\n")
    source = _source(folder, timezone=str(zone))
    frame, rejected, _ = _read(source)
    assert not rejected
    assert _rows(frame) == sorted(expected, key=_order)
    text = frame.astype("string").fillna("").to_csv()
    assert SUBJECT_MARK not in text and "evil@" not in text and "Display Name" not in text
    assert "198.51.100" not in text and "192.0.2" not in text
    assert {u.format for u in source.units()} == {"cisco-consolidated-cef"}
    assert all(u.once for u in source.units())


def test_cef_rows_without_recipient_or_header_are_counted(tmp_path: Path) -> None:
    lines, expected = cef_traffic(12)
    lines.insert(3, "<166>Mar 17 18:24:37 consolidated_event: CEF:0|Cisco|broken")
    lines.insert(
        5,
        "<166>Nov  2 07:40:00 consolidated_event: "
        + CEF_HEAD
        + "ESAMID=9 suser=x@spam.test act=ABORTED msg=''",
    )
    (tmp_path / "cef.log").write_text("\n".join(lines) + "\n")
    frame, rejected, _ = _read(_source(tmp_path / "cef.log"))
    assert rejected == Counter({"malformed_line": 1, "no_recipient": 1})
    assert len(frame) == len(expected)


# --------------------------------------------------------------------------- the source


def test_format_detection_explicit_format_and_empty_files(tmp_path: Path) -> None:
    lines, _ = cef_traffic(3)
    (tmp_path / "a.log").write_text("\n".join(lines) + "\n")
    write_mail_logs(tmp_path / "text", mail_log_traffic(5), files=1)
    (tmp_path / "empty.log").write_text("")
    assert detect_format(tmp_path / "a.log") == "cef"
    assert detect_format(tmp_path / "text" / "mail.current") == "mail_logs"
    assert detect_format(tmp_path / "empty.log") is None
    (tmp_path / "other.log").write_text('{"destination_domain": "x.test"}\n')
    with pytest.raises(InputError, match=r"other\.log: unknown log format"):
        detect_format(tmp_path / "other.log")
    both = _source(tmp_path, path=[str(tmp_path / "*.log"), str(tmp_path / "text" / "*")])
    with pytest.raises(InputError, match=r"other\.log"):
        both.units()
    (tmp_path / "other.log").unlink()
    assert sorted(u.format for u in both.units()) == ["cisco-consolidated-cef", "cisco-mail-logs"]
    forced = _source(tmp_path / "a.log", format="mail_logs")
    frame, rejected, _ = _read(forced)
    assert frame.empty and not rejected  # CEF lines are no mail_logs events


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"timezone: .*IANA"):
        _source(tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="unknown option"):
        _source(tmp_path, fromat="cef")
    with pytest.raises(ConfigError, match="format"):
        _source(tmp_path, format="xml")
    with pytest.raises(ConfigError, match="hold_open_hours"):
        _source(tmp_path, hold_open_hours=-1)


def test_check_reads_no_data(tmp_path: Path) -> None:
    write_mail_logs(tmp_path / "logs", mail_log_traffic(5), files=2)
    results = _source(tmp_path / "logs").check()
    assert results == [(True, "2 file(s) readable, formats recognised: 2 mail_logs")]
    assert _source(tmp_path / "nothing-*.log").check()[0][0] is False
    (tmp_path / "logs" / "junk").write_text("not a mail log\n")
    ok, text = _source(tmp_path / "logs").check()[0]
    assert not ok and "junk" in text and "@" not in text


def test_yearless_syslog_times_take_the_year_of_their_file() -> None:
    clock = Clock("UTC", (dt.datetime(2027, 1, 2, 3, 0),))
    times = clock.convert(["B|Dec 31 23:59:59", "B|Jan 2 01:00:00", "B|Feb 29 10:00:00"], [0, 0, 0])
    assert [str(t) for t in times] == [
        "2026-12-31 23:59:59+00:00", "2027-01-02 01:00:00+00:00", "NaT",
    ]  # fmt: skip


# --------------------------------------------------------------------------- real samples


def test_real_consolidated_event_sample_is_read(tmp_path: Path) -> None:
    path = sample(*SAMPLES, "test-common-consolidated-event.EXCERPT-lines1-3-4-6.log")
    lines = path.read_text(encoding="utf-8").splitlines()
    events = [parse_cef_line(line) for line in lines]
    assert all(isinstance(e, CefEvent) for e in events)
    frame, rejected, _ = _read(_source(path))
    # four events: quarantined, delivered (outbound), aborted (no recipient), delivered
    assert rejected == Counter({"no_recipient": 1})
    assert list(frame["status"]) == ["quarantined", "delivered", "delivered"]
    assert list(frame["size"]) == [11873, 8893, 1411]
    assert list(frame["message_id"]) == ["<example.com>"] * 3
    assert [str(t) for t in frame["timestamp"]] == [
        "2021-03-18 08:04:29+00:00", "2022-11-03 14:05:43+00:00", "2022-11-14 15:40:47+00:00",
    ]  # fmt: skip
    assert "Testing" not in frame.astype("string").to_csv()


def test_real_text_mail_log_sample_is_read(tmp_path: Path) -> None:
    path = sample(*SAMPLES, "test-common-text-mail.log")
    lines = path.read_text(encoding="utf-8").splitlines()
    kinds = Counter(e.kind for e in (parse_mail_log_line(line) for line in lines) if e is not None)
    assert kinds == Counter({"start": 1, "from": 1, "to": 1, "size": 1, "delivered": 1})
    frame, rejected, _ = _read(_source(path))  # an audit: the open message is read as it is
    assert not rejected
    assert _rows(frame) == [
        Row(
            frame["timestamp"][0],
            "example.com",
            "example.com",
            "delivered",
            100,
            frame["message_id"][0],
        )
    ]
    assert frame["timestamp"][0].strftime("%m-%d %H:%M:%S") == "03-17 18:24:37"
    soon = frame["timestamp"][0].to_pydatetime() + dt.timedelta(hours=1)
    scheduled, _, skipped = _read(_source(path), _scheduled(soon))
    assert scheduled.empty and skipped == Counter({"message_still_open": 1})


def test_real_delivery_status_sample_is_refused_by_name() -> None:
    path = sample(*SAMPLES, "test-delivery-success.log")
    with pytest.raises(InputError, match=r"test-delivery-success\.log: unknown log format"):
        _source(path).units()


# --------------------------------------------------------------------------- end to end


def test_compliance_run_end_to_end_with_a_held_message(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # a run of today, over mail of the last two weeks
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = (now - dt.timedelta(days=14)).replace(hour=9, minute=0, second=0)
    traffic = mail_log_traffic(220, start=start, escort_days=(1, 3, 7))
    logs = tmp_path / "logs"
    paths = write_mail_logs(logs, traffic, zone=BERLIN)
    # the newest message is still open: its delivery has not been logged yet
    late = now - dt.timedelta(hours=2)
    tail = [
        (late, "Start MID 99001 ICID 77001"),
        (late, "MID 99001 ICID 77001 From: <u5@corp.example>"),
        (late, "MID 99001 ICID 77001 RID 0 To: <late.reply@partner.example>"),
        (late, "MID 99001 ICID 77001 RID 1 To: <u6@corp.example>"),
        (late, "MID 99001 Message-ID '<late.1@mail.corp.example>'"),
        (late, f"MID 99001 Subject 'late {SUBJECT_MARK}'"),
        (late, "MID 99001 ready 5120 bytes from <u5@corp.example>"),
    ]
    with paths[-1].open("a", encoding="utf-8") as handle:
        handle.writelines(mail_log_line(at, text, "file", BERLIN) + "\n" for at, text in tail)
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        """
        store: var/store.db
        reports: {dir: reports, formats: [html, json]}
        """,
        sources="[{name: esa, type: cisco, path: logs, timezone: Europe/Berlin}]",
    )
    code, output = run_cli(config, now.date())
    assert code == 0, output
    countable = [r for r in traffic.rows if r.sender]  # a null sender has no party to count
    with store_db(config) as db:
        totals = db.execute("SELECT coalesce(sum(messages), 0) FROM daily_totals").fetchone()[0]
        events = db.execute("SELECT domain, status, direction FROM events ORDER BY ts").fetchall()
        alerts = db.execute("SELECT policy, rule_id, org_unit FROM alerts").fetchall()
        rejected = dict(
            db.execute("SELECT reason, sum(count) FROM rejected_rows GROUP BY reason").fetchall()
        )
    assert totals == len(countable)
    assert events == [("escort-ads.test", "delivered", "outbound")] * 3
    assert alerts == [("escort-ads", "repeated-contact", "Sales/EMEA")]
    assert rejected == {"no_sender": len(traffic.rows) - len(countable)}
    blob = read_all_bytes(tmp_path / "var") + read_all_bytes(tmp_path / "reports")
    for address in traffic.addresses | {"u5@corp.example", "late.reply@partner.example"}:
        assert address.encode() not in blob, address
    assert SUBJECT_MARK.encode() not in blob
    assert b"evil@" not in blob

    # the held message is finished later: the next run counts it, and nothing twice
    done = late + dt.timedelta(minutes=30)
    more = [
        (done, "Delivery start DCID 88001 MID 99001 to RID [0, 1]"),
        (done, "Message done DCID 88001 MID 99001 to RID [0, 1]"),
        (done, "Message finished MID 99001 done"),
    ]
    with paths[-1].open("a", encoding="utf-8") as handle:
        handle.writelines(mail_log_line(at, text, "file", BERLIN) + "\n" for at, text in more)
    code, output = run_cli(config, now.date())
    assert code == 0, output
    with store_db(config) as db:
        again = db.execute("SELECT coalesce(sum(messages), 0) FROM daily_totals").fetchone()[0]
        alerts_again = db.execute("SELECT count(*) FROM alerts").fetchone()[0]
    assert again == totals + 2
    assert alerts_again == 1


def test_compliance_audit_of_consolidated_events(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    lines, expected = cef_traffic(120)
    for n, day in enumerate((3, 4, 10)):
        at = dt.datetime(2026, 11, day, 9, 0, tzinfo=dt.UTC)
        lines.append(
            cef_line(
                at, "u2@corp.example", ["book@velvet-club.test"], "DELIVERED", mid=5000 + n,
                size=2048, message_id=f"<esc{n}@mail.corp.example>", subject="hello",
                direction=1,
            )
        )  # fmt: skip
    folder = tmp_path / "cef"
    folder.mkdir()
    (folder / "consolidated.current").write_text("\n".join(lines) + "\n")
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        sources="[{name: esa, type: cisco, path: cef, format: cef}]",
    )
    result = CliRunner().invoke(
        cli,
        ["audit", "--config", str(config), "--source", "esa", "--since", "2026-11-01",
         "--until", "2026-11-20", "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["events"] == len(expected) + 3
    assert report["rejected"] == 0
    [alert] = report["alerts"]
    assert (alert["rule_id"], alert["org_unit"], alert["messages"], alert["days"]) == (
        "repeated-contact",
        "Sales/EMEA",
        3,
        3,
    )
    assert alert["domains"] == ["velvet-club.test"]
    assert "u2@corp.example" not in result.output and SUBJECT_MARK not in result.output


def test_a_split_message_whose_policy_lines_come_first() -> None:
    lines = [
        "Start MID 10 ICID 1",
        "MID 10 ICID 1 From: <a@partner.example>",
        "MID 10 ICID 1 RID 0 To: <u1@corp.example>",
        "MID 10 ICID 1 RID 1 To: <u2@corp.example>",
        "MID 10 Message-ID '<s1@partner.example>'",
        "MID 11 matched recipients [1] for per-recipient policy Legal in the inbound table",
        "MID 10 was split creating MID 11 due to a per-recipient policy Legal in the inbound table",
        "MID 10 matched recipients [0] for per-recipient policy DEFAULT in the inbound table",
        "Message done DCID 3 MID 10 to RID [0]",
        "Message finished MID 10 done",
        "Bounced: DCID 4 MID 11 to RID 1 - 5.1.1 - Bad destination email address",
        "Message finished MID 11 done",
    ]
    joiner = MidJoiner()
    rows = []
    for n, text in enumerate(lines):
        event = parse_mail_log_line(f"Mon Nov  2 08:00:{n:02d} 2026 Info: {text}")
        assert event is not None
        rows += joiner.add(event, Position(0, n))
    assert [(r.recipient, r.status, r.message_id) for r in rows] == [
        ("u1@corp.example", "delivered", "<s1@partner.example>"),
        ("u2@corp.example", "bounced", "<s1@partner.example>"),
    ]
    assert {r.stamp for r in rows} == {"C|Nov 2 08:00:00 2026"}


@pytest.mark.parametrize("fmt", ["mail_logs", "cef"])
def test_small_chunks_hold_the_same_rows(tmp_path: Path, fmt: str) -> None:
    expected = write_messages(tmp_path / "logs", 64, fmt)
    [unit] = _source(tmp_path / "logs").units()
    unit.chunk_rows = 10  # type: ignore[attr-defined]
    chunks = list(unit.chunks())
    assert len(chunks) > 5
    assert all(len(c.frame) <= 12 for c in chunks)  # a message's recipients stay together
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert _rows(frame) == expected


# --------------------------------------------------------------------------- conformance kit
#: How each normalised status of the kit's traffic is written in each format.
KIT_ACT = {
    "delivered": "DELIVERED", "quarantined": "QUARANTINED", "filtered_as_spam": "DROPPED",
    "bounced": "BOUNCED", "rejected": "ABORTED", "deferred": "DQ",
}  # fmt: skip


def _kit_mail_log_events(
    messages: Sequence[KitMessage], base: int
) -> list[tuple[dt.datetime, int, str]]:
    """The kit's messages as text mail log events (time, order, text)."""
    out: list[tuple[dt.datetime, int, str]] = []
    for n, m in enumerate(messages):
        mid, icid, dcid = base + n, 50_000 + base + n, 90_000 + base + n
        t, s = m.timestamp, dt.timedelta(seconds=1)

        def at(when: dt.datetime, text: str) -> None:
            out.append((when, len(out), text))

        at(t, f"New SMTP ICID {icid} interface Data 1 (192.0.2.10) address {m.client_ip} "
           "reverse dns host unknown verified no")  # fmt: skip
        at(t, f"Start MID {mid} ICID {icid}")
        at(t, f"MID {mid} ICID {icid} From: <{m.sender}>")
        by_status: dict[str, list[int]] = {}
        for rid, (rcpt, status) in enumerate(zip(m.recipients, m.statuses, strict=True)):
            if status == "rejected":
                at(t, f"MID {mid} ICID {icid} To: <{rcpt}> Rejected by Receiving Control")
            else:
                at(t, f"MID {mid} ICID {icid} RID {rid} To: <{rcpt}>")
                by_status.setdefault(status, []).append(rid)
        at(t + s, f"MID {mid} Message-ID '{m.message_id}'")
        at(t + s, f"MID {mid} Subject {m.subject!r}")
        at(t + s, f"MID {mid} ready {m.size} bytes from <{m.sender}>")
        t += 2 * s
        end = "done"
        for status, rids in by_status.items():
            if status == "delivered":
                at(t, f"Delivery start DCID {dcid} MID {mid} to RID {rids}")
                at(t, f"Message done DCID {dcid} MID {mid} to RID {rids}")
            elif status in ("bounced", "deferred"):
                word = "Bounced" if status == "bounced" else "Delayed"
                for rid in rids:
                    at(t, f"{word}: DCID {dcid} MID {mid} to RID {rid} - 5.1.0 - Unknown address")
            elif status == "quarantined":
                at(t, f'MID {mid} quarantined to "Spam Quarantine" (a/s verdict SPAM_POSITIVE)')
            elif status == "filtered_as_spam":
                at(t, f"Message aborted MID {mid} Dropped by antispam")
                end = "aborted"
        if not by_status:
            at(t, f"Message aborted MID {mid} Receiving aborted by sender")
            end = "aborted"
        if "deferred" not in by_status:  # still queued: the message stays open
            at(t + s, f"Message finished MID {mid} {end}")
    return out


def _write_kit_lines(
    path: Path, events: list[tuple[dt.datetime, int, str]], mode: str = "w"
) -> None:
    events = sorted(events)
    with path.open(mode, encoding="utf-8") as handle:
        handle.writelines(mail_log_line(t, text, "file", dt.UTC) + "\n" for t, _, text in events)
    last = max(events[-1][0].timestamp(), path.stat().st_mtime if mode == "a" else 0)
    os.utime(path, (last, last))


def write_kit_mail_logs(folder: Path, messages: int, seed: int) -> Written:
    """The conformance kit's traffic as two rotated text mail log files."""
    items = kit_traffic(messages, seed)
    events = sorted(_kit_mail_log_events(items, 1_000 + seed * 10_000))
    half = len(events) // 2
    _write_kit_lines(folder / "mail.@20261102T070000.s", events[:half])
    _write_kit_lines(folder / "mail.current", events[half:])
    return Written.of_messages(items)


def append_kit_mail_logs(folder: Path, messages: int, seed: int) -> Written:
    items = kit_traffic(messages, seed + 1, start=dt.datetime(2026, 11, 8, tzinfo=dt.UTC))
    _write_kit_lines(folder / "mail.current", _kit_mail_log_events(items, 500_000), "a")
    return Written.of_messages(items)


def write_kit_mail_logs_malformed(folder: Path) -> Written:
    written = write_kit_mail_logs(folder, 20, 3)
    with (folder / "mail.current").open("a", encoding="utf-8") as handle:
        handle.write("MID 77 ICID 5 From: <x@spam.test> (no time)\n")
        handle.write("Mon Nov  9 10:00:00 2026 MID 78 without a level\n")
    return Written(written.rows, {"malformed_line": 2}, written.forbidden)


def _kit_cef_lines(messages: Sequence[KitMessage], base: int) -> list[str]:
    lines = []
    for n, m in enumerate(messages):
        groups: dict[str, list[str]] = {}
        for rcpt, status in zip(m.recipients, m.statuses, strict=True):
            groups.setdefault(status, []).append(rcpt)
        for status, rcpts in groups.items():  # one event per outcome
            line = cef_line(
                m.timestamp, m.sender, rcpts, "DELIVERED", mid=base + n, size=m.size,
                message_id=m.message_id, subject=m.subject, direction=1, separator=";",
            )  # fmt: skip
            line = line.replace("act=DELIVERED ", f"act={KIT_ACT[status]} ")
            line = line.replace("Display Name", m.sender_name).replace("198.51.100.7", m.client_ip)
            lines.append(line)
    return lines


def write_kit_cef(folder: Path, messages: int, seed: int) -> Written:
    items = kit_traffic(messages, seed)
    lines = _kit_cef_lines(items, 1_000)
    (folder / "consolidated.@20261102T070000.s").write_text("\n".join(lines[:100]) + "\n")
    (folder / "consolidated.current").write_text("\n".join(lines[100:]) + "\n")
    return Written.of_messages(items)


def append_kit_cef(folder: Path, messages: int, seed: int) -> Written:
    items = kit_traffic(messages, seed + 1, start=dt.datetime(2026, 11, 8, tzinfo=dt.UTC))
    with (folder / "consolidated.current").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(_kit_cef_lines(items, 500_000)) + "\n")
    return Written.of_messages(items)


def write_kit_cef_malformed(folder: Path) -> Written:
    written = write_kit_cef(folder, 20, 3)
    with (folder / "consolidated.current").open("a", encoding="utf-8") as handle:
        handle.write("<14>Nov  9 10:00:00 consolidated_event: CEF:0|Cisco|cut short\n")
        handle.write(f"<14>Nov  9 10:00:00 consolidated_event: {CEF_HEAD}ESAMID=9 act=ABORTED\n")
    return Written(written.rows, {"malformed_line": 1, "no_recipient": 1}, written.forbidden)


#: Rows a unit of the kit's source reads into a chunk (a message's recipients stay in one:
#: the kit's traffic has at most four, so a chunk may hold three more).
KIT_CHUNK_ROWS = 40


class KitCisco(CiscoSource):
    """The cisco source as configured, its units reading :data:`KIT_CHUNK_ROWS` rows a chunk
    (their ``chunk_rows``), so that the kit's kills fall inside units too."""

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        units = super().units(state)
        for unit in units:
            unit.chunk_rows = KIT_CHUNK_ROWS  # type: ignore[attr-defined]
        return units


def pipeline_minimiser(listed: Sequence[str] = LISTED_SITES) -> Minimiser:
    """The real pipeline (as tests/test_conformance.py builds it): what the engine keeps of
    a raw chunk of corp.example's mail with a test key and a feed of ``listed`` sites."""
    return kit_minimiser(listed)


def _recorded(writer: Writer, into: list[Written]) -> Writer:
    """``writer``, keeping what it wrote (the kit's first call writes the valid input)."""

    def write(folder: Path, messages: int, seed: int) -> Written:
        written = writer(folder, messages, seed)
        into.append(written)
        return written

    return write


KIT_WRITERS = {
    "cef": (write_kit_cef, write_kit_cef_malformed, append_kit_cef),
    "mail_logs": (write_kit_mail_logs, write_kit_mail_logs_malformed, append_kit_mail_logs),
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mail_logs", "cef"])
def test_the_full_conformance_kit_passes(tmp_path: Path, fmt: str) -> None:
    """Every check of the kit over two rotated files of 300 messages (several recipients,
    spam, bounces, deferrals, refusals): declarations, units, schema, chunks of at most
    KIT_CHUNK_ROWS and a message's recipients, every row with its values, collects,
    identity through the real pipeline, a kill after every chunk of every unit, a re-read,
    lines appended to the current file, bad lines counted; memory flat for 10 times the
    input."""
    write, malformed, append = KIT_WRITERS[fmt]
    written: list[Written] = []
    harness = FileHarness(KitCisco, {"path": "."}, _recorded(write, written), malformed, append)
    # conformance: cisco
    report = check_source(
        harness,
        tmp_path,
        minimise=pipeline_minimiser(),
        max_chunk_rows=KIT_CHUNK_ROWS + 3,
        memory=True,
        memory_messages=1_000,
        raise_on_findings=False,
    )
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert report.ran == list(CHECKS) and not report.skipped
    assert report.memory is not None
    # the kit compares rows by identity: a row read twice would pass it, not this
    assert report.rows == len(written[0].rows) > 400
    assert report.chunks > 3 * report.units  # kills fall between chunks of one unit
    assert report.kills == report.units + report.chunks  # before and after every chunk


def test_overlong_lines_are_skipped_and_counted_across_chunks(tmp_path: Path) -> None:
    lines, expected = cef_traffic(40)
    lines[5] = "x" * (3 << 20)  # no log line is 3 MB: skipped unread
    lines[30] = "<14>Nov  2 09:00:00 consolidated_event: CEF:0|Cisco|cut"
    (tmp_path / "cef.log").write_text("\n".join(lines) + "\n")
    [unit] = _source(tmp_path / "cef.log").units()
    unit.chunk_rows = 7  # type: ignore[attr-defined]
    chunks = list(unit.chunks())
    rejected = sum((c.rejected for c in chunks), Counter[str]())
    assert rejected == Counter({"line_too_long": 1, "malformed_line": 1})
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    kept = [
        r for r in expected if "CAK00005" not in r.message_id and "CAK00030" not in r.message_id
    ]
    assert _rows(frame) == sorted(kept, key=_order)
