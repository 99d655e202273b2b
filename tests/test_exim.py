"""The ``exim`` source: Exim main logs joined by message id into raw rows.

:class:`EximLog` writes realistic main logs (old and 4.97+ message ids, with and without
milliseconds, zone and pid, or through syslog) and returns the rows a reader must yield;
:func:`write_exim` is what the conformance kit can drive the source with.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import random
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from compliance.events import RAW
from connectors.base import Chunk, create_source
from connectors.testing import FileHarness, Minimiser, Written, check_source
from tests.conftest import (
    kit_minimiser,
    read_all_bytes,
    run_cli,
    sample,
    store_db,
    write_config,
)

ORG = "corp.example"
START = dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)
_SUBJECT = "Invoice for Mrs Example id=<fake@x>"  # T="…": never read
_CLIENT_IP = "198.51.100.23"
_PARTNERS = [f"partner{k}.example" for k in range(80)] + [f"shop{k}.test" for k in range(30)]
FIXTURES = Path(__file__).parent / "fixtures" / "exim"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(value: int, width: int) -> str:
    out = ""
    for _ in range(width):
        value, digit = divmod(value, 62)
        out = _B62[digit] + out
    return out


class EximLog:
    """Exim main-log lines, by time, and the raw rows they must give."""

    def __init__(
        self,
        seed: int = 1,
        *,
        start: dt.datetime = START,
        zone: int | None = None,  # minutes east of UTC written (log_timezone), None: none
        millisec: bool = False,
        pid: bool = False,
        new_ids: bool = True,
        syslog_host: str | None = None,  # log_file_path = syslog: lines of this host
    ) -> None:
        self.rng = random.Random(seed)
        self.start, self.zone, self.millisec, self.pid = start, zone, millisec, pid
        self.new_ids, self.syslog_host = new_ids, syslog_host
        self.events: list[tuple[float, int, str]] = []
        self.rows: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.skipped: Counter[str] = Counter()
        self._serial = seed * 7_919
        self._order = 0

    def new_id(self, t: float) -> str:
        self._serial += 1
        clock = int(self.start.timestamp() + t)
        if self.new_ids:  # 4.97+: 6-11-4
            return f"{base62(clock, 6)}-{base62(self._serial, 11)}-{base62(self._serial * 31, 4)}"
        return f"{base62(clock, 6)}-{base62(self._serial, 6)}-{base62(self._serial, 2)}"

    def at(self, t: float, text: str) -> None:
        self._order += 1
        self.events.append((t, self._order, text))

    def moment(self, t: float) -> dt.datetime:
        moment = self.start + dt.timedelta(seconds=t)
        if not self.millisec:
            moment = moment.replace(microsecond=0)
        else:
            moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        return moment

    def row(
        self, t: float, sender: str, recipient: str, status: str, size: int | None, mid: str
    ) -> dict[str, Any]:
        row = {
            "timestamp": pd.Timestamp(self.moment(t)),
            "sender": sender,
            "recipient": recipient,
            "status": status,
            "size": size,
            "message_id": mid,
        }
        self.rows.append(row)
        return row

    # --- kinds of message ----------------------------------------------------------------
    def message(
        self,
        t: float,
        sender: str,
        deliveries: list[tuple[str, str | None, list[tuple[float, str]]]],
        *,
        listed: bool = False,
    ) -> None:
        """``deliveries`` = (delivered address, address written to or None, [(delay, flag)])."""
        rng = self.rng
        xid = self.new_id(t)
        size = rng.randrange(800, 300_000)
        mid = f"{xid}.{rng.randrange(10**6)}@{sender.split('@')[-1]}"
        written = sorted({orig or to for to, orig, _ in deliveries})
        tail = f" for {' '.join(written)}" if listed else ""
        self.at(
            t,
            f"{xid} <= {sender} H=client.example (helo.example) [{_CLIENT_IP}]:50123 "
            f"I=[192.0.2.1]:25 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no S={size} "
            f'id={mid} T="{_SUBJECT}"{tail}',
        )
        last = t
        outcome: dict[str, list[str]] = {}
        for n, (to, orig, steps) in enumerate(deliveries):
            for delay, flag in steps:
                when = t + delay
                shown = f"{to} <{orig}>" if orig else to
                smtp = "R=dnslookup T=remote_smtp H=mx.x [203.0.113.8]"
                error = f"SMTP error from remote mail server after RCPT TO:<{to}>"
                if flag in ("=>", "->"):
                    text = f'{flag} {shown} {smtp} X=TLS1.3 CV=yes C="250 OK id={n}"'
                elif flag == "==":
                    text = f"== {shown} {smtp} defer (-44): {error}: 451 Try later"
                else:
                    text = f"** {shown} {smtp}: {error}: 550 Unknown user"
                self.at(when, f"{xid} {text}")
                last = max(last, when)
            final = steps[-1][1]
            outcome.setdefault(orig or to, []).append(
                {"=>": "delivered", "->": "delivered", "==": "deferred", "**": "bounced"}[final]
            )
            if final == "**":
                self.bounce(last + 0.2, xid, sender)
        self.at(last + 0.3, f"{xid} Completed")
        for recipient, statuses in outcome.items():
            status = "delivered" if "delivered" in statuses else statuses[0]
            self.row(t, sender, recipient, status, size, f"<{mid}>")

    def bounce(self, t: float, original: str, sender: str) -> None:
        xid = self.new_id(t)
        self.at(t, f"{xid} <= <> R={original} U=Debian-exim P=local S=2133")
        self.at(t + 0.1, f"{xid} => {sender.split('@')[0]} <{sender}> R=local_user T=mail_spool")
        self.at(t + 0.2, f"{xid} Completed")
        self.skipped["bounce_notification"] += 1

    def refused(self, t: float, sender: str, recipient: str, temporary: bool = False) -> None:
        how = "temporarily rejected" if temporary else "rejected"
        self.at(
            t,
            f"H=(spam.example) [{_CLIENT_IP}]:41234 I=[192.0.2.1]:25 F=<{sender}> {how} "
            f"RCPT <{recipient}>: Unrouteable address",
        )
        if temporary:
            self.skipped["temporary_reject"] += 1
        else:
            self.rejects.append(self.row(t, sender, recipient, "rejected", None, ""))

    def noise(self, t: float) -> None:
        self.at(t, "Start queue run: pid=4242")
        self.at(t + 0.1, f"SMTP connection from [{_CLIENT_IP}]:41000 (TCP/IP connection count = 1)")
        self.at(t + 0.2, "End queue run: pid=4242")

    def traffic(self, messages: int, people: int = 200, gap: float = 60.0) -> None:
        rng, t = self.rng, 0.0
        for _ in range(messages):
            t += rng.expovariate(1 / gap) + 0.01
            me = f"u{rng.randrange(1, people)}@{ORG}"
            partner = f"desk{rng.randrange(50)}@{rng.choice(_PARTNERS)}"
            roll = rng.random()
            if roll < 0.45:
                deliveries: list[tuple[str, str | None, list[tuple[float, str]]]] = []
                for n, to in enumerate(
                    sorted({partner, f"desk{rng.randrange(50)}@{rng.choice(_PARTNERS)}"})[
                        : rng.choice((1, 1, 2))
                    ]
                ):
                    fate = rng.random()
                    steps = (
                        [(0.5, "=>" if n == 0 else "->")]
                        if fate < 0.85
                        else [(0.5, "=="), (1800.0, "=>")]
                        if fate < 0.95
                        else [(0.6, "**")]
                    )
                    deliveries.append((to, None, steps))
                self.message(t, me, deliveries, listed=rng.random() < 0.3)
            elif roll < 0.7:
                if rng.random() < 0.15:
                    deliveries = [
                        (me, f"sales@{ORG}", [(0.3, "=>")]),
                        (f"u{rng.randrange(1, people)}@{ORG}", f"sales@{ORG}", [(0.4, "=>")]),
                    ]
                else:
                    deliveries = [(me, None, [(0.3, "=>")])]
                self.message(t, partner, deliveries)
            elif roll < 0.82:
                self.message(t, me, [(f"u{rng.randrange(1, people)}@{ORG}", None, [(0.2, "=>")])])
            elif roll < 0.93:
                self.refused(t, f"bulk{rng.randrange(300)}@spam{rng.randrange(20)}.test", me)
            elif roll < 0.97:
                self.refused(t, partner, me, temporary=True)
            else:
                self.noise(t)

    # --- writing -----------------------------------------------------------------------------
    def stamp(self, t: float) -> str:
        moment = self.moment(t)
        if self.zone is not None:
            local = moment + dt.timedelta(minutes=self.zone)
            sign = "+" if self.zone >= 0 else "-"
            zone = f" {sign}{abs(self.zone) // 60:02d}{abs(self.zone) % 60:02d}"
        else:
            local, zone = moment, ""
        text = f"{local:%Y-%m-%d %H:%M:%S}"
        if self.millisec:
            text += f".{local.microsecond // 1000:03d}"
        return text + zone + (" [4321]" if self.pid else "")

    def lines(self) -> list[str]:
        out = []
        for t, _, text in sorted(self.events):
            line = f"{self.stamp(t)} {text}"
            if self.syslog_host:
                moment = self.moment(t)
                out.append(
                    f"{moment:%b} {moment.day:>2} {moment:%H:%M:%S} {self.syslog_host} "
                    f"exim[4321]: {line}"
                )
            else:
                out.append(line)
        return out

    def write(self, path: Path) -> list[dict[str, Any]]:
        lines = self.lines()
        data = "".join(f"{line}\n" for line in lines).encode()
        path.write_bytes(data)
        last = (self.start + dt.timedelta(seconds=max(e[0] for e in self.events) + 1)).timestamp()
        os.utime(path, (last, last))
        origin = hashlib.sha256(data[: data.index(b"\n") + 1]).hexdigest()[:16]
        position, offsets = 0, []
        for line in lines:
            if " rejected RCPT <" in line and "temporarily" not in line:
                offsets.append(position)
            position += len(line.encode()) + 1
        host = self.syslog_host or "exim"
        for row, at in zip(self.rejects, offsets, strict=True):
            row["message_id"] = (
                f"<rejected.{int(row['timestamp'].timestamp())}.{origin}+{at}@{host}>"
            )
        return self.rows


def write_exim(
    folder: Path, messages: int, seed: int = 1, name: str = "mainlog"
) -> list[dict[str, Any]]:
    """Write ``messages`` messages of realistic Exim traffic to ``folder/name``; the raw rows
    a reader must yield."""
    log = EximLog(seed)
    log.traffic(messages)
    return log.write(folder / name)


def read(path: str, folder: Path, **options: Any) -> tuple[pd.DataFrame, list[Chunk]]:
    source = create_source("exim", "exim", {"path": path, **options}, folder)
    chunks = [chunk for unit in source.units() for chunk in unit.chunks()]
    return pd.concat([c.frame for c in chunks], ignore_index=True), chunks


def as_set(rows: pd.DataFrame | list[dict[str, Any]]) -> Counter[tuple[object, ...]]:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    frame = frame.astype(object).where(frame.notna(), None)
    return Counter(
        (str(pd.Timestamp(r.timestamp)), r.sender, r.recipient, r.status, r.size, r.message_id)
        for r in frame.itertuples()
    )


def counts(chunks: list[Chunk], what: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for chunk in chunks:
        out.update(getattr(chunk, what))
    return +out


# --- reading ---------------------------------------------------------------------------------
FLAVOURS = {
    "plain, ids before 4.97": {"new_ids": False},
    "4.97 ids, ms, zone, pid": {"millisec": True, "zone": 60, "pid": True},
    "west of UTC": {"zone": -300},
    "through syslog": {"syslog_host": "mx7", "millisec": True},
}


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_generated_traffic_is_read_exactly(tmp_path: Path, flavour: str) -> None:
    log = EximLog(seed=4, **FLAVOURS[flavour])  # type: ignore[arg-type]
    log.traffic(500)
    expected = log.write(tmp_path / "mainlog")
    frame, chunks = read("mainlog", tmp_path)
    assert list(frame.columns) == list(RAW)
    assert as_set(frame) == as_set(expected)
    assert counts(chunks, "rejected") == Counter()
    assert counts(chunks, "skipped") == log.skipped
    statuses = Counter(frame["status"])
    assert statuses["delivered"] > 250 and statuses["rejected"] > 30 and statuses["bounced"] > 3
    blob = frame.astype(str).to_csv()
    assert "Invoice" not in blob and _CLIENT_IP not in blob and "fake@x" not in blob


def test_a_relay_attempt_claiming_a_staff_sender_is_no_one_s_act(tmp_path: Path) -> None:
    """An outside scanner refused relaying, with a staff address as its sender (the line's
    shape as in fail2ban's Exim samples): no row, counted as skipped; another refusal of
    the same client stays a row."""
    client = "H=(scanner.invalid) [203.0.113.1]:3755 I=[192.0.2.25]:25"
    (tmp_path / "mainlog").write_text(
        f"2026-11-03 02:10:01 {client} F=<s19@corp.example> rejected RCPT "
        "<girls@escort-ads.test>: relay not permitted\n"
        f"2026-11-04 02:10:02 {client} F=<s19@corp.example> rejected RCPT "
        "<more@escort-ads.test>: relay not permitted\n"
        f"2026-11-04 02:11:02 {client} F=<x@spam.test> rejected RCPT "
        "<nobody@corp.example>: Unrouteable address\n"
    )
    frame, chunks = read("mainlog", tmp_path)
    assert list(zip(frame["sender"], frame["status"], strict=True)) == [("x@spam.test", "rejected")]
    assert counts(chunks, "skipped") == {"unauthorised_client": 2}


def test_addresses_written_to_and_delivered_to(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "aliases.log", tmp_path / "mainlog")
    frame, _ = read("mainlog", tmp_path)
    assert sorted(zip(frame["recipient"], frame["status"], strict=True)) == [
        ("jdoe@corp.example", "delivered"),
        ("junk@corp.example", "filtered_as_spam"),
        ("n@corp.example", "unknown"),
        ("team@corp.example", "delivered"),  # delivered to one of the alias's two
    ]
    assert set(frame["message_id"]) == {"<abc@partner.example>"}
    assert set(frame["size"]) == {900}
    final, _ = read("mainlog", tmp_path, recipient="final")
    assert {"u2@corp.example", "u3@corp.example", "jdoe@corp.example"} <= set(final["recipient"])


def test_a_message_still_queued_is_emitted_by_an_audit_with_what_is_known(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "queued.log", tmp_path / "mainlog")
    frame, _ = read("mainlog", tmp_path)
    assert sorted(zip(frame["recipient"], frame["status"], strict=True)) == [
        ("a@x.test", "deferred"),
        ("b@y.test", "unknown"),
    ]
    assert frame["message_id"].tolist() == ["<1RwtJa-0009RI-2d@exim>"] * 2


# --- real samples (Exim's test suite, GPL: read here, never copied) --------------------------
@pytest.mark.parametrize("name", ["0217", "0322", "0615", "5840"])
def test_exim_test_suite_logs(name: str) -> None:
    path = sample("Exim__exim", "test", "log", name)
    frame, chunks = read(str(path), path.parent)
    servers = path.read_text().count("******** SERVER ********")
    assert counts(chunks, "rejected") == (
        Counter({"malformed_line": servers}) if servers else Counter()
    )
    assert frame["sender"].notna().all() and (frame["sender"] != "").all()
    assert frame["size"].isna().all()  # the suite writes S=sss
    if name == "0217":
        first = frame[frame["message_id"] == "<10HmaX-000000005vi-0000@exim>"]
        assert sorted(zip(first["recipient"], first["status"], strict=True)) == [
            ("a@test.ex", "delivered"),
            ("b@test.ex", "deferred"),
            ("c@test.ex", "bounced"),
            ("d@test.ex", "delivered"),
        ]
        assert counts(chunks, "skipped")["bounce_notification"] > 0
    if name == "5840":
        assert frame["recipient"].str.startswith("t").all()
        assert "1999-03-02" in str(frame["timestamp"].iloc[0])


# --- end to end ------------------------------------------------------------------------------
def test_compliance_run_with_an_exim_source(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """mainlog, mainlog.1 and mainlog.2.gz as exicyclog leaves them: u1's contacts with an
    escort site on three days raise the alert; no address of the logs reaches the store."""
    logs = tmp_path / "logs"
    logs.mkdir()
    rows: list[dict[str, Any]] = []
    for n, name in enumerate(("mainlog.2", "mainlog.1", "mainlog")):
        log = EximLog(seed=20 + n, start=START + dt.timedelta(days=3 * n), zone=60, millisec=True)
        log.traffic(300, gap=500.0)
        sender = "alias1@corp.example" if n == 1 else "u1@corp.example"
        log.message(3600.0 * 30, sender, [("book@escort-ads.test", None, [(1.0, "=>")])])
        rows += log.write(logs / name)
    with (logs / "mainlog.2").open("rb") as plain, gzip.open(logs / "mainlog.2.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    shutil.copystat(logs / "mainlog.2", logs / "mainlog.2.gz")
    (logs / "mainlog.2").unlink()
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\nreports: {dir: reports, formats: [html, json]}\n",
        sources="[{name: exim, type: exim, path: logs/mainlog, timezone: Europe/Berlin}]",
    )
    code, output = run_cli(config, "2026-11-20")
    assert code == 0, output
    assert "1 new alert(s)" in output
    with store_db(config) as db:
        total = db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0]
        alerts = db.execute("SELECT rule_id, org_unit FROM alerts").fetchall()
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    frame = pd.DataFrame(rows)
    org = frame["sender"].str.endswith(ORG) | frame["recipient"].str.endswith(ORG)
    assert total == frame[org].drop_duplicates(["message_id", "sender", "recipient"]).shape[0]
    assert (alerts, events) == ([("repeated-contact", "Sales/EMEA")], 3)
    # a second run: nothing new, nothing counted twice
    assert run_cli(config, "2026-11-20")[0] == 4
    with store_db(config) as db:
        assert db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0] == total
    blob = read_all_bytes(tmp_path / "var") + read_all_bytes(tmp_path / "reports")
    for needle in sorted(set(frame["sender"]) | set(frame["recipient"])):
        assert needle.encode() not in blob, needle
    for needle in ("Invoice", _CLIENT_IP, "mainlog", "helo.example"):
        assert needle.encode() not in blob, needle


# ----- the conformance kit -------------------------------------------------------------------
def _pipeline_minimiser(listed: Sequence[str]) -> Minimiser:
    """The real pipeline (as tests/test_conformance.py builds it): what the engine keeps of
    a raw chunk of corp.example's mail, with a test key and a feed of ``listed`` sites."""
    return kit_minimiser(listed)


def _kit_writer(folder: Path, messages: int, seed: int) -> Written:
    rows = write_exim(folder, messages, seed, "mainlog")
    return Written.of(rows)


@pytest.mark.slow
def test_the_conformance_kit_passes(tmp_path: Path) -> None:
    """The kit over generated traffic: declarations, units, schema, chunks, every row,
    collects, identity through the real pipeline, a kill after every chunk (at most 40
    points), a re-read; appends and bad lines have tests of their own above."""
    # conformance: exim
    harness = FileHarness("exim", {"path": "mainlog", "timezone": "UTC"}, _kit_writer)
    (tmp_path / "probe").mkdir()
    probe = write_exim(tmp_path / "probe", 200, 7, "mainlog")
    sites = {str(r[field]).rpartition("@")[2] for r in probe for field in ("sender", "recipient")}
    report = check_source(
        harness, tmp_path / "kit", messages=200, minimise=_pipeline_minimiser(sorted(sites)),
        max_kills=40, raise_on_findings=False,
    )  # fmt: skip
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert {"rows", "resume", "reread", "identity", "collects", "schema"} <= set(report.ran)
    assert report.rows > 150
