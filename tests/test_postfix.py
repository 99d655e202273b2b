"""The ``postfix`` source: Postfix syslog lines joined by queue id into raw rows.

:func:`postfix_traffic` writes realistic Postfix logs (interleaved messages, several
recipients, internal mail, inbound spam, aliases, deferrals, bounces with their
notifications, refusals) and returns the rows a reader must yield: the conformance kit can
drive the source with :func:`write_postfix`.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from compliance.events import RAW, STATUSES
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
HOST = "mx1"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DOMAINS = (
    [f"partner{k}.example" for k in range(120)]
    + [f"shop{k}.test" for k in range(60)]
    + [f"mail.supplier{k}.example" for k in range(40)]
    + [f"webmail{k}.test" for k in range(8)]
)
_DESKS = ("info", "sales", "j.smith", "orders", "a.jones", "billing", "hr", "m.brown", "team")
_SUBJECT = "Quarterly figures for Mrs Example"  # planted in header_checks lines: never a row
_CLIENT_IP = "198.51.100.77"


def internal(n: int) -> str:
    """Person ``n`` of the organisation: u1..u17 are in the tests' directory, the rest not."""
    return f"u{n}@{ORG}" if n <= 17 else f"staff{n}@{ORG}"


def external(rng: random.Random) -> str:
    return f"{rng.choice(_DESKS)}{rng.randrange(60)}@{rng.choice(_DOMAINS)}"


class PostfixLog:
    """Postfix lines of one host, by time, and the raw rows they must give."""

    def __init__(
        self, seed: int = 1, start: dt.datetime = START, host: str = HOST, micro: bool = False
    ) -> None:
        self.micro = micro  # Postfix's own maillog_file: stamps with microseconds
        self.rng = random.Random(seed)
        self.start = start
        self.host = host
        self.events: list[tuple[float, int, str, str]] = []  # (seconds, order, daemon, text)
        self.rows: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []  # refused rows: their id comes from an offset
        self._queue = seed * 1_000_003
        self._order = 0
        self.skipped: Counter[str] = Counter()

    def qid(self) -> str:
        self._queue += 7919
        return f"{self._queue:010X}"

    def at(self, seconds: float, daemon: str, text: str) -> None:
        self._order += 1
        self.events.append((seconds, self._order, daemon, text))

    def moment(self, seconds: float) -> dt.datetime:
        exact = self.start + dt.timedelta(seconds=seconds)
        return exact if self.micro else exact.replace(microsecond=0)

    def row(
        self, seconds: float, sender: str, recipient: str, status: str, size: int | None, mid: str
    ) -> dict[str, Any]:
        row = {
            "timestamp": pd.Timestamp(self.moment(seconds)),
            "sender": sender,
            "recipient": recipient,
            "status": status,
            "size": size,
            "message_id": mid,
        }
        self.rows.append(row)
        return row

    # --- the kinds of message ------------------------------------------------------------
    def message(
        self,
        t: float,
        sender: str,
        deliveries: list[tuple[str, str | None, list[tuple[float, str]], str]],
        *,
        local: bool = False,
        message_id: str | None = None,
    ) -> str:
        """One queued message: ``deliveries`` = (to, orig_to, [(delay, status word)], agent).
        Returns the queue id."""
        rng, q = self.rng, self.qid()
        size = rng.randrange(900, 400_000)
        mid = message_id or f"<{q.lower()}.{rng.randrange(10**9)}@{sender.split('@')[-1]}>"
        pid = rng.randrange(1000, 60000)
        if local:
            self.at(t, "pickup", f"{q}: uid=1000 from=<{sender.split('@')[0]}>")
        else:
            self.at(t - 0.3, "smtpd", f"connect from client{pid}.example[{_CLIENT_IP}]")
            self.at(t, "smtpd", f"{q}: client=client{pid}.example[{_CLIENT_IP}]")
        self.at(t + 0.1, "cleanup", f"{q}: message-id={mid}")
        nrcpt = len(deliveries)
        self.at(t + 0.2, "qmgr", f"{q}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)")
        if not local:
            self.at(t + 0.4, "smtpd", f"disconnect from client{pid}.example[{_CLIENT_IP}]")
        last = t + 0.3
        outcomes: dict[str, list[str]] = {}
        for to, orig, steps, agent in deliveries:
            for delay, word in steps:
                when = t + 0.3 + delay
                if delay > 60:  # a retry from the deferred queue
                    self.at(
                        when - 0.1,
                        "qmgr",
                        f"{q}: from=<{sender}>, size={size}, nrcpt=1 (queue active)",
                    )
                relay = (
                    "private/dovecot-lmtp"
                    if agent == "lmtp"
                    else f"mx.{to.split('@')[-1]}[203.0.113.5]:25"
                )
                origin = f" orig_to=<{orig}>," if orig else ""
                dsn = {"sent": "2.0.0", "deferred": "4.4.1", "bounced": "5.1.1"}[word]
                self.at(
                    when,
                    agent,
                    f"{q}: to=<{to}>,{origin} relay={relay}, delay={delay:.1f}, "
                    f"delays=0.1/0/0.2/0.3, dsn={dsn}, status={word} (250 2.0.0 Ok)",
                )
                last = max(last, when)
                if word == "bounced":
                    self.notify(when + 0.1, q, sender)
            outcomes.setdefault(orig or to, []).append(steps[-1][1])
        self.at(last + 0.2, "qmgr", f"{q}: removed")
        names = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}
        for reported, words in outcomes.items():
            statuses = [names[w] for w in words]
            status = "delivered" if "delivered" in statuses else statuses[0]
            self.row(t, sender, reported, status, size, mid)
        return q

    def notify(self, t: float, original: str, sender: str) -> None:
        """The bounce daemon's non-delivery notification to ``sender``: from <>, skipped."""
        q = self.qid()
        self.at(t, "bounce", f"{original}: sender non-delivery notification: {q}")
        self.at(t + 0.1, "cleanup", f"{q}: message-id=<{q}.notice@{self.host}.{ORG}>")
        self.at(t + 0.2, "qmgr", f"{q}: from=<>, size=3120, nrcpt=1 (queue active)")
        agent = "lmtp" if sender.endswith(ORG) else "smtp"
        self.at(
            t + 0.3,
            agent,
            f"{q}: to=<{sender}>, relay=none, delay=0.3, dsn=2.0.0, status=sent (ok)",
        )
        self.at(t + 0.4, "qmgr", f"{q}: removed")
        self.skipped["bounce_notification"] += 1

    def refused(self, t: float, sender: str, recipient: str, code: str = "554 5.7.1") -> None:
        """``NOQUEUE: reject: RCPT``: a rejected row (or, with a 4xx code, skipped)."""
        text = (
            f"NOQUEUE: reject: RCPT from unknown[{_CLIENT_IP}]: {code} <{recipient}>: "
            f"Recipient address rejected: Access denied; from=<{sender}> to=<{recipient}> "
            "proto=ESMTP helo=<spam.example>"
        )
        self.at(t - 0.5, "smtpd", f"connect from unknown[{_CLIENT_IP}]")
        self.at(t, "smtpd", text)
        self.at(
            t + 0.5,
            "smtpd",
            f"disconnect from unknown[{_CLIENT_IP}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
        )
        if code.startswith("4"):
            self.skipped["temporary_reject"] += 1
            return
        self.rejects.append(self.row(t, sender, recipient, "rejected", None, ""))

    def spam(self, t: float, sender: str, recipient: str) -> None:
        """Inbound spam refused by a milter at the end of the data: filtered_as_spam."""
        q, pid = self.qid(), self.rng.randrange(1000, 60000)
        mid = f"<{q}.offer@{sender.split('@')[-1]}>"
        self.at(t, "smtpd", f"{q}: client=bulk{pid}.example[{_CLIENT_IP}]")
        self.at(t + 0.1, "cleanup", f"{q}: message-id={mid}")
        self.at(
            t + 0.3,
            "cleanup",
            f"{q}: milter-reject: END-OF-MESSAGE from bulk{pid}.example[{_CLIENT_IP}]: 5.7.1 "
            f"Spam message rejected; from=<{sender}> to=<{recipient}> proto=ESMTP helo=<bulk>",
        )
        self.row(t, sender, recipient, "filtered_as_spam", None, mid)

    def header_reject(self, t: float, sender: str, recipient: str) -> None:
        """A header_checks REJECT: its line quotes the subject, which never comes out."""
        q = self.qid()
        mid = f"<{q}.hc@{sender.split('@')[-1]}>"
        self.at(t, "smtpd", f"{q}: client=unknown[{_CLIENT_IP}]")
        self.at(t + 0.1, "cleanup", f"{q}: message-id={mid}")
        self.at(
            t + 0.2,
            "cleanup",
            f"{q}: reject: header Subject: {_SUBJECT} from unknown[{_CLIENT_IP}]; "
            f"from=<{sender}> to=<{recipient}> proto=ESMTP helo=<x>: 5.7.1 Content rejected",
        )
        self.row(t, sender, recipient, "rejected", None, mid)

    def noise(self, t: float) -> None:
        self.at(t, "postscreen", f"CONNECT from [{_CLIENT_IP}]:51234 to [192.0.2.1]:25")
        self.at(
            t + 0.01,
            "anvil",
            "statistics: max connection rate 3/60s for (smtp:192.0.2.9) at Nov  2 06:00:00",
        )
        self.at(
            t + 0.02,
            "smtp",
            "Untrusted TLS connection established to mx.partner1.example[203.0.113.5]:25: TLSv1.3",
        )

    def traffic(self, messages: int, people: int = 300, gap: float = 20.0) -> None:
        """``messages`` messages of a working day's mix, from ``gap`` seconds apart on average."""
        rng, t = self.rng, 0.0
        for _ in range(messages):
            t += rng.expovariate(1 / gap) + 0.01
            roll = rng.random()
            me = internal(rng.randrange(1, people))
            if roll < 0.40:  # outbound to one to three partners; a few deferred, some bounce
                deliveries = []
                for to in {external(rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))}:
                    fate = rng.random()
                    steps = (
                        [(1.0, "sent")]
                        if fate < 0.86
                        else [(1.5, "deferred"), (900.0, "sent")]
                        if fate < 0.94
                        else [(2.0, "bounced")]
                    )
                    deliveries.append((to, None, steps, "smtp"))
                if rng.random() < 0.1:  # a colleague in copy
                    deliveries.append(
                        (internal(rng.randrange(1, people)), None, [(0.5, "sent")], "lmtp")
                    )
                self.message(t, me, deliveries, local=rng.random() < 0.05)
            elif roll < 0.62:  # inbound, now and then through an alias of two people
                if rng.random() < 0.1:
                    alias = f"sales-team@{ORG}"
                    deliveries = [
                        (internal(rng.randrange(1, people)), alias, [(0.4, "sent")], "lmtp"),
                        (internal(rng.randrange(1, people)), alias, [(0.5, "sent")], "lmtp"),
                    ]
                else:
                    deliveries = [(me, None, [(0.4, "sent")], "lmtp")]
                self.message(t, external(rng), deliveries)
            elif roll < 0.77:  # internal
                other = internal(rng.randrange(1, people))
                self.message(
                    t,
                    me,
                    [(other, None, [(0.3, "sent")], "lmtp")]
                    if other != me
                    else [(f"hr@{ORG}", None, [(0.3, "sent")], "lmtp")],
                )
            elif roll < 0.87:
                self.refused(t, f"bulk{rng.randrange(500)}@spam{rng.randrange(40)}.test", me)
            elif roll < 0.90:
                self.refused(t, external(rng), me, code="450 4.7.1")  # greylisting
            elif roll < 0.96:
                self.spam(t, f"offers{rng.randrange(300)}@promo{rng.randrange(30)}.test", me)
            elif roll < 0.97:
                self.header_reject(t, external(rng), me)
            else:
                self.noise(t)

    # --- writing -----------------------------------------------------------------------------
    def lines(self) -> list[str]:
        out = []
        stamps: dict[int, str] = {}
        for seconds, _, daemon, text in sorted(self.events):
            second = int(seconds)
            stamp = stamps.get(second)
            if stamp is None:
                when = self.moment(second)
                stamp = stamps[second] = f"{_MONTHS[when.month - 1]} {when.day:>2} {when:%H:%M:%S}"
            if self.micro:
                stamp = f"{stamp}.{self.moment(seconds).microsecond:06d}"
            out.append(f"{stamp} {self.host} postfix/{daemon}[{4000 + len(daemon)}]: {text}")
        return out

    def last_moment(self) -> dt.datetime:
        return self.moment(max(e[0] for e in self.events) + 1)

    def write(self, path: Path) -> list[dict[str, Any]]:
        """Write the log (modified at its last line's time); the rows, with the derived ids
        of refused recipients (the file's first line's digest and the line's offset)."""
        lines = self.lines()
        data = "".join(line + "\n" for line in lines).encode()
        path.write_bytes(data)
        stamp = self.last_moment().timestamp()
        os.utime(path, (stamp, stamp))
        origin = hashlib.sha256(data[: data.index(b"\n") + 1]).hexdigest()[:16]
        offsets: dict[tuple[str, str], list[int]] = {}
        position = 0
        for line in lines:
            if "NOQUEUE: reject: RCPT from unknown[" in line and ": 554 " in line:
                sender = line.split("; from=<", 1)[1].split(">", 1)[0]
                recipient = line.split(" to=<", 1)[1].split(">", 1)[0]
                offsets.setdefault((sender, recipient), []).append(position)
            position += len(line.encode()) + 1
        for row in self.rejects:  # in time order, as the lines
            at = offsets[(row["sender"], row["recipient"])].pop(0)
            epoch = int(row["timestamp"].timestamp())
            row["message_id"] = f"<NOQUEUE.{epoch}.{origin}+{at}@{self.host}>"
        return self.rows


def write_postfix(
    folder: Path, messages: int, seed: int = 1, name: str = "mail.log"
) -> list[dict[str, Any]]:
    """Write ``messages`` messages of realistic Postfix traffic to ``folder/name``; the
    raw rows a reader must yield (as mappings of raw column to value)."""
    log = PostfixLog(seed)
    log.traffic(messages)
    return log.write(folder / name)


FIXTURES = Path(__file__).parent / "fixtures" / "postfix"


def _date(path: Path, when: dt.datetime = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)) -> None:
    """Date a log's last write (BSD syslog lines take their year from it)."""
    os.utime(path, (when.timestamp(), when.timestamp()))


def read(path: str | list[str], folder: Path, **options: Any) -> tuple[pd.DataFrame, list[Chunk]]:
    source = create_source("postfix", "mx", {"path": path, **options}, folder)
    chunks = [chunk for unit in source.units() for chunk in unit.chunks()]
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    return frame, chunks


def as_set(rows: pd.DataFrame | Iterable[dict[str, Any]]) -> Counter[tuple[object, ...]]:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
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
@pytest.mark.parametrize("micro", [False, True], ids=["syslog", "maillog_file"])
def test_generated_traffic_is_read_exactly(tmp_path: Path, micro: bool) -> None:
    log = PostfixLog(seed=3, micro=micro)
    log.traffic(600)
    expected = log.write(tmp_path / "mail.log")
    frame, chunks = read("mail.log", tmp_path)
    assert list(frame.columns) == list(RAW)
    assert as_set(frame) == as_set(expected)
    assert set(frame["status"]) <= set(STATUSES)
    assert counts(chunks, "rejected") == Counter()
    assert counts(chunks, "skipped") == log.skipped
    kinds = Counter(frame["status"])
    assert kinds["delivered"] > 300 and kinds["rejected"] > 30 and kinds["filtered_as_spam"] > 10
    assert kinds["bounced"] > 5
    assert frame["sender"].nunique() > 150 and frame["recipient"].nunique() > 300
    # nothing of the header_checks line but the envelope, and no client address
    blob = frame.astype(str).to_csv()
    assert _SUBJECT not in blob and _CLIENT_IP not in blob and "client" not in blob


def test_lines_of_one_message_are_joined_across_interleaving_and_retries(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes((FIXTURES / "interleaved.log").read_bytes())
    _date(log)
    frame, _ = read("mail.log", tmp_path)
    got = {(r.recipient, r.status, r.sender, r.message_id, r.size) for r in frame.itertuples()}
    assert got == {
        ("p@partner.example", "delivered", "u1@corp.example", "<a1@corp.example>", 2048),
        ("q@far.test", "delivered", "u1@corp.example", "<a1@corp.example>", 2048),
        ("r@gone.test", "bounced", "u1@corp.example", "<a1@corp.example>", 2048),
        # an alias of two people: the address written to, delivered to one of them
        ("team@corp.example", "delivered", "x@b.example", "<b1@b.example>", 999),
    }
    assert set(frame["timestamp"]) == {pd.Timestamp("2026-11-30 06:25:01", tz="UTC")}
    final, _ = read("mail.log", tmp_path, recipient="final")
    assert {"u2@corp.example", "u3@corp.example"} <= set(final["recipient"])


def test_verdicts_map_to_statuses(tmp_path: Path) -> None:
    (tmp_path / "mail.log").write_bytes((FIXTURES / "verdicts.log").read_bytes())
    _date(tmp_path / "mail.log")
    frame, chunks = read("mail.log", tmp_path)
    got = {(r.sender, r.recipient, r.status) for r in frame.itertuples()}
    assert got == {
        ("s@spam.test", "u1@corp.example", "rejected"),
        ("s@a.test", "nobody@corp.example", "rejected"),  # a later recipient refused
        ("s@a.test", "u6@corp.example", "filtered_as_spam"),  # the discard agent
        ("s@b.test", "u7@corp.example", "quarantined"),  # milter-hold at the end of data
        ("s@c.test", "u8@corp.example", "quarantined"),  # HOLD at RCPT: the whole message
        ("u9@corp.example", "z@slow.test", "bounced"),  # expired, returned to sender
        ("x@promo.test", "u10@corp.example", "filtered_as_spam"),  # before-queue filter
        ("u11@corp.example", "q@partner.example", "bounced"),
    }
    assert counts(chunks, "skipped") == {
        "temporary_reject": 2,
        "bounce_notification": 2,  # the refused one from <> and the expiry notice
        # an outside client claiming a staff sender (relaying denied, sender not logged in)
        "unauthorised_client": 2,
    }
    assert counts(chunks, "rejected") == Counter()
    refused = frame[frame["recipient"] == "u1@corp.example"]["message_id"].iloc[0]
    assert refused.startswith("<NOQUEUE.") and refused.endswith("@mx1>")
    assert pd.isna(frame[frame["recipient"] == "u1@corp.example"]["size"].iloc[0])


def test_the_same_refusal_read_again_after_rotation_keeps_its_id(tmp_path: Path) -> None:
    log = PostfixLog(seed=5)
    for n in range(5):
        log.refused(10.0 * n, f"s{n}@spam.test", internal(n + 1))
    log.write(tmp_path / "mail.log")
    first, _ = read("mail.log", tmp_path)
    # logrotate: renamed, then compressed; a new, empty mail.log
    rotated = tmp_path / "mail.log.1.gz"
    with (tmp_path / "mail.log").open("rb") as plain, gzip.open(rotated, "wb") as gz:
        gz.write(plain.read())
    (tmp_path / "mail.log").write_text("")
    again, _ = read("mail.log", tmp_path)
    assert len(first) == 5
    assert as_set(first) == as_set(again)


# --- real samples --------------------------------------------------------------------------
#: whyscream/postfix-grok-patterns test cases (BSD-3-Clause) that are delivery or refusal
#: lines, with the row each must give as (recipient, status); every other case gives none.
GROK_ROWS: dict[str, tuple[str, str] | None] = {
    "discard_0001": ("george.desantis@test.example.com", "filtered_as_spam"),
    "error_0001": ("user@yahoo.com", "deferred"),
    "lmtp_0001": ("admin@example.com", "delivered"),
    "local_0001": ("root@localhost", "delivered"),  # orig_to, written without brackets
    "local_0002": ("ghdsgfhdslfh@localhost", "bounced"),
    "pipe_0001": ("tom@example.com", "delivered"),
    "pipe_0002": ("admin@example.com", "delivered"),
    "pipe_0003": ("tom@example.com", "bounced"),
    "pipe_0004": ("user@example.org", "bounced"),
    "smtp_0001": ("admin@example.com", "delivered"),
    "smtp_0002": ("bestuur@example.com", "delivered"),
    "smtp_0017": ("admin@example.com", "delivered"),
    "smtp_0018": ("redacted@gmail.com", "bounced"),
    "smtp_0026": ("whatever-user@lists.example.org", "deferred"),
    "virtual_0001": ("postmaster@example.com", "delivered"),
    "smtpd_0004": ("toernooicommissie@example.com", "rejected"),
    "smtpd_0008": ("user@example.com", "rejected"),
    "smtpd_0009": ("tom@example.com", "rejected"),
    "smtpd_0021": ("user2@example2.com", "filtered_as_spam"),
    "smtpd_0030": ("user@example.com", "rejected"),
}
#: Cases that are understood and deliberately give no row, with what they count instead.
GROK_SKIPS = {
    "error_0002": "address_probe",  # status=undeliverable-but-not-cached
    "smtpd_0022": "bounce_notification",  # proxy-reject of a message from <>
    "smtpd_0038": "temporary_reject",  # milter-reject 451 (greylisting)
}


def test_every_postfix_grok_patterns_sample_line_is_read_without_error(tmp_path: Path) -> None:
    folder = sample("whyscream__postfix-grok-patterns", "test")
    cases = sorted(folder.glob("*.yaml"))
    assert len(cases) > 90
    seen: set[str] = set()
    for case in cases:
        data = yaml.safe_load(case.read_text())["data"]
        daemon = case.stem.split("_")[0]
        qid = str(yaml.safe_load(case.read_text())["results"].get("postfix_queueid", "7E1A2B3C4D"))
        lines = (
            []
            if qid == "NOQUEUE"
            else [
                f"Nov 30 06:25:00 mx1 postfix/smtpd[1]: {qid}: client=c.example[192.0.2.1]",
                f"Nov 30 06:25:00 mx1 postfix/qmgr[2]: {qid}: from=<s@sample.test>, size=10, "
                "nrcpt=1 (queue active)",
            ]
        )
        lines += [f"Nov 30 06:25:01 mx1 postfix/{daemon}[3]: {line}" for line in data.split("\n")]
        if qid != "NOQUEUE":
            lines.append(f"Nov 30 06:25:02 mx1 postfix/qmgr[2]: {qid}: removed")
        frame, chunks = _read_lines(lines, tmp_path / case.stem)
        rows = [(r.recipient, r.status) for r in frame.itertuples()]
        wanted = GROK_ROWS.get(case.stem)
        assert rows == ([wanted] if wanted else []), case.name
        assert counts(chunks, "rejected") == Counter(), case.name
        skipped = counts(chunks, "skipped")
        del skipped["no_recipient_logged"]  # the wrapping message had no delivery
        assert skipped == (
            Counter({GROK_SKIPS[case.stem]: 1}) if case.stem in GROK_SKIPS else Counter()
        ), case.name
        seen.add(case.stem)
    assert set(GROK_ROWS) | set(GROK_SKIPS) <= seen


def _read_lines(lines: list[str], folder: Path) -> tuple[pd.DataFrame, list[Chunk]]:
    folder.mkdir()
    path = folder / "mail.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _date(path)
    return read("mail.log", folder)


def test_pflogsumm_sample_logs_bsd_and_rfc3339() -> None:
    bsd = sample("vignemail1__pflogsumm-go", "testdata", "sample.log")
    frame, chunks = read(str(bsd), bsd.parent)
    got = {(r.sender, r.recipient, r.status, r.message_id) for r in frame.itertuples()}
    assert {(s, r, st) for s, r, st, _ in got} == {
        ("user1@sender.example.com", "recipient1@recipient.example.com", "delivered"),
        ("user2@other.example.com", "recipient2@recipient.example.com", "delivered"),
        ("user2@other.example.com", "recipient3@another.example.com", "delivered"),
        ("localuser@localhost", "recipient4@recipient.example.com", "delivered"),
        ("morning@morning.example.com", "morningrecip@morning.example.com", "delivered"),
    }
    assert {m for *_, m in got} >= {"<msg001@example.com>", "<msg002@example.com>"}
    # two delivery lines whose message began before the file; a spammer denied relaying
    assert counts(chunks, "skipped") == {"message_start_not_read": 2, "unauthorised_client": 1}
    assert counts(chunks, "rejected") == Counter()
    rfc = sample("vignemail1__pflogsumm-go", "testdata", "rfc3339.log")
    frame, _ = read(str(rfc), rfc.parent)
    assert frame["timestamp"].tolist() == [pd.Timestamp("2024-03-22 08:00:01", tz="UTC")]
    assert frame["size"].tolist() == [1234]


def test_maillogger_sample_holds_only_ends_of_messages() -> None:
    path = sample("homoluctus__maillogger", "tests", "fixtures", "source", "maillog")
    frame, chunks = read(str(path), path.parent)
    assert frame.empty  # only delivery lines: no message started in this file
    assert counts(chunks, "skipped") == {"message_start_not_read": 6}
    assert counts(chunks, "rejected") == Counter()


def test_journald_json_export(tmp_path: Path) -> None:
    def entry(seconds: int, program: str, message: str) -> str:
        at = int(dt.datetime(2026, 11, 30, 6, 25, tzinfo=dt.UTC).timestamp() + seconds) * 10**6
        return json.dumps(
            {
                "__REALTIME_TIMESTAMP": str(at + 123),
                "_HOSTNAME": "mx2",
                "SYSLOG_IDENTIFIER": program,
                "_PID": "77",
                "MESSAGE": message,
            }
        )

    lines = [
        entry(
            0,
            "postfix/submission/smtpd",
            "7A8B9C0D1E: client=laptop[192.0.2.7], sasl_method=PLAIN, sasl_username=u1",
        ),
        entry(1, "postfix/cleanup", "7A8B9C0D1E: message-id=<j1@corp.example>"),
        entry(
            1,
            "postfix/qmgr",
            "7A8B9C0D1E: from=<u1@corp.example>, size=4000, nrcpt=1 (queue active)",
        ),
        entry(
            2,
            "postfix/smtp",
            "7A8B9C0D1E: to=<book@escort-ads.test>, relay=mx.escort-ads.test[203.0.113.4]:25, "
            "delay=2, delays=0/0/1/1, dsn=2.0.0, status=sent (250 ok)",
        ),
        entry(2, "postfix/qmgr", "7A8B9C0D1E: removed"),
        json.dumps(
            {"__REALTIME_TIMESTAMP": "soon", "SYSLOG_IDENTIFIER": "postfix/qmgr", "MESSAGE": "x"}
        ),
        "{broken json",
    ]
    (tmp_path / "postfix.json").write_text("\n".join(lines) + "\n")
    frame, chunks = read("postfix.json", tmp_path)
    assert frame[["sender", "recipient", "status", "size", "message_id"]].values.tolist() == [
        ["u1@corp.example", "book@escort-ads.test", "delivered", 4000, "<j1@corp.example>"]
    ]
    assert frame["timestamp"].tolist() == [pd.Timestamp("2026-11-30 06:25:00.000123", tz="UTC")]
    assert counts(chunks, "rejected") == {"bad_timestamp": 1, "malformed_line": 1}


# --- end to end ------------------------------------------------------------------------------
def contact_lines(log: PostfixLog, day: int, sender: str, hour: int = 9) -> None:
    """``sender`` writes to an escort site on November ``day``."""
    seconds = (dt.datetime(2026, 11, day, hour, 5, tzinfo=dt.UTC) - log.start).total_seconds()
    log.message(seconds, sender, [("book@escort-ads.test", None, [(1.0, "sent")], "smtp")])


def test_compliance_run_with_a_postfix_source(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """`compliance run` over a rotated Postfix log: the alert of u1 (three days, once as
    an alias), every message counted once, and no address of the log in the store."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old, new = PostfixLog(seed=11), PostfixLog(seed=12, start=START + dt.timedelta(days=4))
    old.traffic(400, gap=400.0)
    new.traffic(400, gap=400.0)
    for log, day, sender in (
        (old, 2, "u1@corp.example"),
        (old, 4, "alias1@corp.example"),
        (new, 9, "u1@corp.example"),
    ):
        contact_lines(log, day, sender)
    rows = old.write(logs / "mail.log.1") + new.write(logs / "mail.log")
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\nreports: {dir: reports, formats: [json]}\n",
        sources="[{name: mx, type: postfix, path: logs/mail.log}]",
    )
    code, output = run_cli(config, "2026-11-20")
    assert code == 0, output
    assert "1 new alert(s)" in output
    with store_db(config) as db:
        totals = db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0]
        events = db.execute("SELECT domain, org_unit FROM events").fetchall()
        alerts = db.execute("SELECT policy, rule_id, org_unit FROM alerts").fetchall()
        bookmark = db.execute("SELECT watermark FROM bookmarks").fetchone()[0]
    frame = pd.DataFrame(rows)
    kept = frame[frame["status"].notna()]
    org = kept["sender"].str.endswith(ORG) | kept["recipient"].str.endswith(ORG)
    # one per (message, recipient) with a party of the organisation
    assert totals == kept[org].drop_duplicates(["message_id", "sender", "recipient"]).shape[0]
    assert sorted(events) == [("escort-ads.test", "Sales/EMEA")] * 3
    assert alerts == [("escort-ads", "repeated-contact", "Sales/EMEA")]
    blob = read_all_bytes(tmp_path / "var") + read_all_bytes(tmp_path / "reports")
    addresses = set(frame["sender"]) | set(frame["recipient"])
    for needle in [*sorted(a for a in addresses if a), _SUBJECT, _CLIENT_IP, "mail.log"]:
        assert needle.encode() not in blob, needle
    assert "@" not in bookmark and "corp" not in bookmark


# --- scale -------------------------------------------------------------------------------------
_MEASURE = """
import sys, time
from pathlib import Path
from connectors.base import create_source
source = create_source("postfix", "mx", {"path": sys.argv[1]}, Path("/"))
began = time.perf_counter()
rows = chunks = largest = 0
for unit in source.units():
    for chunk in unit.chunks():
        chunks += 1
        rows += len(chunk.frame)
        largest = max(largest, len(chunk.frame))
seconds = time.perf_counter() - began
status = Path("/proc/self/status").read_text()
peak = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
print(rows, chunks, largest, seconds, peak)
"""


@pytest.mark.slow
def test_a_million_lines(tmp_path: Path) -> None:
    """A realistic million-line log is read in bounded chunks, quickly, in flat memory
    (reported: lines/s, rows/s and the reader's peak resident memory)."""
    log = PostfixLog(seed=99)
    log.traffic(160_000, people=2_000, gap=2.0)
    expected = log.write(tmp_path / "mail.log")
    lines = sum(1 for _ in (tmp_path / "mail.log").open("rb"))
    assert lines >= 1_000_000
    del log
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "mail.log")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    began = time.perf_counter()
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert proc.wait() == 0, output
    wall = time.perf_counter() - began
    # the reader's own peak (VmHWM: ru_maxrss would count the forked test process too)
    rows, chunks, largest, seconds, peak_kib = output.split()
    peak_mib = int(peak_kib) / 1024
    print(
        f"\npostfix: {lines:,} lines, {int(rows):,} rows in {float(seconds):.1f} s "
        f"({lines / float(seconds):,.0f} lines/s, {int(rows) / float(seconds):,.0f} rows/s), "
        f"{chunks} chunks (largest {largest}), peak RSS {peak_mib:.0f} MiB, process {wall:.1f} s"
    )
    assert int(rows) == len(expected)
    assert int(largest) <= 1 << 16
    assert peak_mib < 600


# ----- the conformance kit -------------------------------------------------------------------
def _pipeline_minimiser(listed: Sequence[str]) -> Minimiser:
    """The real pipeline (as tests/test_conformance.py builds it): what the engine keeps of
    a raw chunk of corp.example's mail, with a test key and a feed of ``listed`` sites."""
    return kit_minimiser(listed)


def _kit_writer(folder: Path, messages: int, seed: int) -> Written:
    path = folder / "mail.log"
    rows = write_postfix(folder, messages, seed, "mail.log")
    _date(path)
    return Written.of(rows)


@pytest.mark.slow
def test_the_conformance_kit_passes(tmp_path: Path) -> None:
    """The kit over generated traffic: declarations, units, schema, chunks, every row,
    collects, identity through the real pipeline, a kill after every chunk (at most 40
    points), a re-read; appends and bad lines have tests of their own above."""
    # conformance: postfix
    harness = FileHarness("postfix", {"path": "mail.log", "timezone": "UTC"}, _kit_writer)
    (tmp_path / "probe").mkdir()
    probe = write_postfix(tmp_path / "probe", 200, 7, "mail.log")
    sites = {str(r[field]).rpartition("@")[2] for r in probe for field in ("sender", "recipient")}
    report = check_source(
        harness, tmp_path / "kit", messages=200, minimise=_pipeline_minimiser(sorted(sites)),
        max_kills=40, raise_on_findings=False,
    )  # fmt: skip
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert {"rows", "resume", "reread", "identity", "collects", "schema"} <= set(report.ran)
    assert report.rows > 150
