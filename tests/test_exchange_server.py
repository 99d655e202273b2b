"""Exchange Server message tracking logs (source type ``exchange-server``): MSGTRK files as
Exchange 2016/2019 write them (headers, quoting, empty fields, several recipients a line,
events of one message across lines, files and servers), joined into one row per
(message, final recipient) with its outcome; end to end through `compliance run`.

The fixtures are written here, shaped like the real sample in
../shared/samples/elastic__integrations/microsoft_exchange_server/ (Elastic License 2.0:
read by one test, never copied) and Microsoft's description of the format.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from compliance.errors import ConfigError, InputError
from compliance.events import RAW, STATUSES
from connectors.base import Chunk, SourceState, create_source, source_type
from connectors.exchange_server import (
    FIELDS_2010,
    FIELDS_2013,
    ExchangeServerSource,
    Joiner,
    LineParser,
    TrackingLogs,
    detect,
    parse_header,
    parse_line,
    read_streams,
)
from connectors.testing import CHECKS, FileHarness, Minimiser, Writer, Written, check_source
from tests.conftest import (
    DIRECTORY_PEOPLE,
    kit_minimiser,
    read_all_bytes,
    run_cli,
    sample,
    store_db,
    write_config,
)

UTC = dt.UTC
START = dt.datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
SYSTEM = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@corp.example"
SUBJECTS = [
    'Re: "offer", today only',
    "Quarterly figures, draft 2",
    "lunch?",
    "Invoice 2026-11, overdue",
    "",
]


def _csv(value: str) -> str:
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@dataclass
class Line:
    """One message tracking event, with every field a real line has."""

    at: dt.datetime
    event: str
    source: str
    internal: int
    message_id: str
    network_id: str
    recipients: Sequence[str]
    sender: str
    return_path: str | None = None
    size: int = 0
    subject: str = ""
    related: str = ""
    reference: str = ""
    statuses: Sequence[str] = ()
    directionality: str = "Originating"
    source_context: str = ""
    connector: str = ""

    def values(self) -> dict[str, str]:
        count = str(len(self.recipients)) if self.recipients else ""
        return {
            "date-time": _stamp(self.at),
            "client-ip": "192.0.2.10" if self.event == "RECEIVE" else "",
            "client-hostname": "exch-cas03.corp.example" if self.event == "RECEIVE" else "",
            "server-ip": "198.51.100.25" if self.event == "SEND" else "",
            "server-hostname": "mx.relay.example" if self.event == "SEND" else "exch-hub07",
            "source-context": self.source_context,
            "connector-id": self.connector,
            "source": self.source,
            "event-id": self.event,
            "internal-message-id": str(self.internal),
            "message-id": self.message_id,
            "network-message-id": self.network_id,
            "recipient-address": ";".join(self.recipients),
            "recipient-status": ";".join(self.statuses),
            "total-bytes": str(self.size) if self.size else "",
            "recipient-count": count,
            "related-recipient-address": self.related,
            "reference": self.reference,
            "message-subject": self.subject,
            "sender-address": self.sender,
            "return-path": self.sender if self.return_path is None else self.return_path,
            "message-info": "0cI: " if self.event == "RECEIVE" else "",
            "directionality": self.directionality,
            "tenant-id": "",
            "original-client-ip": "203.0.113.77" if self.directionality == "Incoming" else "",
            "original-server-ip": "",
            "custom-data": "S:DeliveryPriority=Normal;S:AccountForest=corp.example",
            "transport-traffic-type": "Email",
            "log-id": str(uuid.UUID(int=self.internal * 7919 + len(self.event))),
            "schema-version": "15.02.1544.004",
        }

    def text(self, fields: Sequence[str] = FIELDS_2013, **overrides: str) -> str:
        values = self.values() | {k.replace("_", "-"): v for k, v in overrides.items()}
        return ",".join(_csv(values[f]) for f in fields)


def header(at: dt.datetime, fields: Sequence[str] = FIELDS_2013) -> list[str]:
    return [
        "#Software: Microsoft Exchange Server",
        "#Version: 15.02.1544.004",
        "#Log-type: Message Tracking Log",
        f"#Date: {_stamp(at)}",
        f"#Fields: {','.join(fields)}",
    ]


def write_files(
    folder: Path,
    lines: Iterable[Line],
    *,
    prefix: str = "MSGTRK",
    lines_per_file: int = 10_000_000,
    bom: bool = True,
) -> list[Path]:
    """Lines in time order into hourly files (``MSGTRK2026110206-1.LOG``), a new instance
    (``-2``...) after ``lines_per_file``, each with its header, CRLF, UTF-8 with a BOM."""
    folder.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[str]] = {}
    count: Counter[str] = Counter()
    for line in sorted(lines, key=lambda x: x.at):
        hour = line.at.strftime("%Y%m%d%H")
        instance = count[hour] // lines_per_file + 1
        count[hour] += 1
        name = f"{prefix}{hour}-{instance}.LOG"
        if name not in by_file:
            by_file[name] = header(line.at.replace(minute=0, second=0, microsecond=0))
        by_file[name].append(line.text())
    written = []
    for name, text in by_file.items():
        path = folder / name
        data = ("\r\n".join(text) + "\r\n").encode("utf-8")
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
        written.append(path)
    return written


Row = tuple[pd.Timestamp, str, str, str, int, str]


@dataclass
class Traffic:
    """Realistic mail of corp.example as message tracking events, and the rows a reader
    must give for it (one per message and final recipient)."""

    seed: int = 7
    lines: list[Line] = field(default_factory=list)
    expected: list[Row] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    internal: int = 70_912_345_566_000

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def _ids(self, host: str) -> tuple[int, str, str]:
        self.internal += 1
        token = uuid.UUID(int=self.random.getrandbits(128))
        return self.internal, f"<{token.hex[:20].upper()}@{host}>", str(token)

    def _expect(
        self,
        at: dt.datetime,
        sender: str,
        recipients: Iterable[tuple[str, str]],
        size: int,
        mid: str,
    ) -> None:
        stamp = pd.Timestamp(_stamp(at))
        for recipient, status in recipients:
            self.expected.append((stamp, sender.lower(), recipient.lower(), status, size, mid))

    def message(
        self,
        at: dt.datetime,
        sender: str,
        recipients: Sequence[str],
        outcome: dict[str, str] | None = None,
        *,
        incoming: bool = False,
        expand: tuple[str, list[str]] | None = None,
        resolve: tuple[str, str] | None = None,
        return_path: str | None = None,
        defer_first: bool = False,
        late: dt.timedelta = dt.timedelta(seconds=2),
    ) -> str:
        """One message's events: RECEIVE, AGENTINFO, HAREDIRECT, then per recipient its
        outcome (``delivered``: SEND; ``bounced``: FAIL and an NDR; ``deferred``: DEFER
        only; ``filtered_as_spam``: DROP by an agent; ``rejected``: FAIL by an agent).
        ``expand`` replaces a group by its members, ``resolve`` an alias by its address."""
        host = "mail.sender.example" if incoming else "mbx01.corp.example"
        internal, mid, netid = self._ids(host)
        size = self.random.randint(2_000, 900_000)
        subject = self.random.choice(SUBJECTS)
        direction = "Incoming" if incoming else "Originating"
        common = {
            "internal": internal,
            "message_id": mid,
            "network_id": netid,
            "sender": sender,
            "return_path": return_path,
            "size": size,
            "subject": subject,
            "directionality": direction,
        }
        self.lines.append(
            Line(
                at, "RECEIVE", "SMTP", recipients=recipients,
                statuses=["To"] * len(recipients),
                source_context=f"08DE1DB12C345BE5;{_stamp(at)};0",
                connector="MBX01\\Default MBX01" if incoming else "MBX01\\Client Proxy MBX01",
                **common,
            )
        )  # fmt: skip
        final = list(recipients)
        t = at + dt.timedelta(milliseconds=120)
        if expand:
            group, members = expand
            self.lines.append(
                Line(t, "EXPAND", "ROUTING", recipients=members, related=group, **common)
            )
            final = [r for r in final if r != group] + members
        if resolve:
            alias, address = resolve
            self.lines.append(
                Line(t, "RESOLVE", "ROUTING", recipients=[address], related=alias, **common)
            )
            final = [address if r == alias else r for r in final]
        self.lines.append(
            Line(t, "AGENTINFO", "AGENT", recipients=final, source_context="CFA", **common)
        )
        self.lines.append(Line(t, "HAREDIRECT", "SMTP", recipients=final, **common))
        outcome = outcome or {}
        status = {r: outcome.get(r, "delivered") for r in final}
        t = at + late
        if defer_first:
            self.lines.append(
                Line(
                    at + dt.timedelta(seconds=1), "DEFER", "SMTP", recipients=final,
                    statuses=[
                        "[{LRT=};{LED=451 4.4.0 DNS query failed, retrying};{FQDN=};{IP=}]"
                    ] * len(final),
                    **common,
                )
            )  # fmt: skip
        by_status: dict[str, list[str]] = {}
        for r in final:
            by_status.setdefault(status[r], []).append(r)
        for name, group in by_status.items():
            if name == "delivered":
                self.lines.append(
                    Line(
                        t, "SEND", "SMTP", recipients=group,
                        statuses=["250 2.1.5 Recipient OK"] * len(group),
                        connector="Intra-Organization SMTP Send Connector" if incoming else "Web",
                        source_context=";250 2.6.0 <x@y> [InternalId=1, Hostname=mbx01] Queued",
                        **common,
                    )
                )  # fmt: skip
            elif name == "deferred":
                self.lines.append(
                    Line(
                        t, "DEFER", "SMTP", recipients=group,
                        statuses=[
                            '[{LRT=};{LED=441 4.4.1 Error communicating with ""target"", '
                            "timed out};{FQDN=mx.relay.example};{IP=198.51.100.25}]"
                        ] * len(group),
                        **common,
                    )
                )  # fmt: skip
            elif name == "filtered_as_spam":
                self.lines.append(Line(t, "DROP", "AGENT", recipients=group, **common))
            elif name == "rejected":
                self.lines.append(
                    Line(
                        t, "FAIL", "AGENT", recipients=group,
                        statuses=["550 5.7.1 Message rejected as spam by Content Filtering."]
                        * len(group),
                        **common,
                    )
                )  # fmt: skip
            elif name == "bounced":
                self.lines.append(
                    Line(
                        t, "FAIL", "ROUTING", recipients=group,
                        statuses=["550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"] * len(group),
                        **common,
                    )
                )  # fmt: skip
                self._ndr(t + dt.timedelta(milliseconds=40), sender, mid)
        if return_path == "<>":
            self.skipped["null_sender"] += len(final)
        else:
            self._expect(at, return_path or sender, status.items(), size, mid)
        return mid

    def _ndr(self, at: dt.datetime, to: str, original: str) -> None:
        internal, mid, netid = self._ids("mbx01.corp.example")
        common = {
            "internal": internal,
            "message_id": mid,
            "network_id": netid,
            "sender": SYSTEM,
            "return_path": "<>",
            "size": 6_200,
            "subject": "Undeliverable: something",
            "reference": original,
        }
        self.lines.append(Line(at, "DSN", "DSN", recipients=[to], **common))
        self.lines.append(
            Line(at + dt.timedelta(seconds=1), "SEND", "SMTP", recipients=[to], **common)
        )
        self.skipped["delivery_status_notification"] += 1

    def day_of_mail(self, day: dt.datetime, messages: int) -> None:
        """``messages`` messages through the working hours of ``day``: mail to and from
        many partners, internal mail (groups, aliases), inbound spam, bounces, deferrals."""
        rnd = self.random
        people = [f"u{n}@corp.example" for n in range(1, 18)]
        for _ in range(messages):
            at = day + dt.timedelta(
                seconds=rnd.randint(0, 10 * 3600), milliseconds=rnd.randint(0, 999)
            )
            me = rnd.choice(people)
            kind = rnd.random()
            if kind < 0.35:  # outbound to 1-3 partners
                to = [
                    f"contact{rnd.randint(1, 400)}@partner{rnd.randint(1, 60)}.example"
                    for _ in range(rnd.randint(1, 3))
                ]
                to = list(dict.fromkeys(to))
                outcome = {}
                roll = rnd.random()
                if roll < 0.05:
                    outcome = {to[0]: "bounced"}
                elif roll < 0.10:
                    outcome = {to[-1]: "deferred"}
                self.message(at, me, to, outcome, defer_first=roll > 0.93)
            elif kind < 0.60:  # internal, to people, a group or an alias
                others = rnd.sample([p for p in people if p != me], rnd.randint(1, 3))
                roll = rnd.random()
                if roll < 0.2:
                    members = rnd.sample(people, 4)
                    self.message(
                        at,
                        me,
                        [*others, "team-sales@corp.example"],
                        expand=("team-sales@corp.example", [m for m in members if m not in others]),
                    )
                elif roll < 0.35:
                    n = rnd.randint(1, 17)
                    self.message(
                        at,
                        me,
                        [f"alias{n}@corp.example"],
                        resolve=(f"alias{n}@corp.example", f"u{n}@corp.example"),
                    )
                else:
                    self.message(at, me, others)
            elif kind < 0.80:  # inbound from partners and shops
                sender = f"news{rnd.randint(1, 50)}@shop{rnd.randint(1, 30)}.example"
                self.message(at, sender, rnd.sample(people, rnd.randint(1, 2)), incoming=True)
            elif kind < 0.95:  # inbound spam, dropped or refused by the content filter
                sender = f"promo{rnd.randint(1, 5000)}@spam{rnd.randint(1, 300)}.test"
                to = rnd.sample(people, rnd.randint(1, 3))
                verdict = "filtered_as_spam" if rnd.random() < 0.6 else "rejected"
                self.message(at, sender, to, dict.fromkeys(to, verdict), incoming=True)
            elif kind < 0.98:  # inbound to someone who left: FAIL and an NDR back
                sender = f"info{rnd.randint(1, 99)}@partner{rnd.randint(1, 60)}.example"
                self.message(
                    at,
                    sender,
                    ["left.long.ago@corp.example"],
                    {"left.long.ago@corp.example": "bounced"},
                    incoming=True,
                )
            else:  # a remote server's bounce: null envelope sender
                self.message(
                    at, "MAILER-DAEMON@mx.partner3.example", [me], incoming=True, return_path="<>"
                )


def generate(folder: Path, messages: int, days: int = 2, seed: int = 7) -> Traffic:
    """``messages`` messages a day for ``days`` days as hourly MSGTRK files in ``folder``:
    what a conformance kit needs (the files, and ``.expected`` rows)."""
    traffic = Traffic(seed)
    for d in range(days):
        traffic.day_of_mail(START + dt.timedelta(days=d), messages)
    write_files(folder, traffic.lines)
    return traffic


def _read(chunks: Iterable[Chunk]) -> tuple[pd.DataFrame, Counter[str], Counter[str]]:
    frames, rejected, skipped = [], Counter[str](), Counter[str]()
    for chunk in chunks:
        assert list(chunk.frame.columns) == list(RAW)
        assert len(chunk.frame) <= 1 << 16
        frames.append(chunk.frame)
        rejected.update(chunk.rejected)
        skipped.update(chunk.skipped)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RAW))
    return frame, rejected, skipped


def _source(path: str | list[str], base: Path, **options: object) -> ExchangeServerSource:
    source = create_source("exchange-server", "exch", {"path": path, **options}, base)
    assert isinstance(source, ExchangeServerSource)
    return source


def _read_source(source: ExchangeServerSource) -> tuple[pd.DataFrame, Counter[str], Counter[str]]:
    units = source.units(SourceState(None, dt.datetime.now(UTC)))
    assert len(units) == 1 and isinstance(units[0], TrackingLogs)
    assert units[0].once is False
    return _read(units[0].chunks())


def _rows(frame: pd.DataFrame) -> list[Row]:
    return sorted(
        (r.timestamp, r.sender, r.recipient, r.status, int(r.size), r.message_id)
        for r in frame.itertuples()
    )


# ----- the format --------------------------------------------------------------------------


def test_header_and_line_are_mapped_by_the_fields_line() -> None:
    layout = parse_header("#Fields: " + ",".join(FIELDS_2013))
    assert layout is not None and layout.problem() is None
    assert parse_header("#Software: Microsoft Exchange Server") is None
    line = Line(
        START, "SEND", "SMTP", 7, "<a@b>", "1e6eb197-0000-4000-8000-56dc1db88f50",
        ["x@partner.example", "y@partner.example"], "u1@corp.example", size=7229,
        subject='backup "status", host01: ok', statuses=["250 2.1.5 Recipient OK"] * 2,
    )  # fmt: skip
    event = parse_line(line.text(), layout)
    assert event is not None
    assert event[:3] == ("2026-11-02T06:00:00.000Z", "SEND", "SMTP")
    assert "x@partner.example;y@partner.example" in event
    # nothing else of the line is kept: no subject, IP, host name or status text
    kept = ",".join(event)
    for dropped in ("backup", "192.0.2", "198.51.100", "exch-", "Recipient OK", "S:Delivery"):
        assert dropped not in kept
    # the same line under another order of fields (a later version), and too short
    reordered = tuple(reversed(FIELDS_2013))
    assert (
        parse_line(line.text(reordered), parse_header("#Fields: " + ",".join(reordered))) == event
    )
    assert parse_line(line.text()[:-30], layout) is None
    # a block that starts with lines (no header yet) and switches layout in its middle
    events, rejected = LineParser().feed_lines(
        [line.text(), "#Fields: " + ",".join(reordered), line.text(reordered)]
    )
    assert not rejected
    first, second = events.to_pylist()
    assert first == second and first["event-id"] == "SEND"


def test_quoting_empty_fields_and_broken_lines() -> None:
    layout = parse_header("#Fields: " + ",".join(FIELDS_2013))
    line = Line(
        START, "DEFER", "SMTP", 8, "<c@d>", "", ["x@partner.example"], "u2@corp.example",
        statuses=['[{LRT=};{LED=441 4.4.1 ""Failed"", to connect};{FQDN=mx};{IP=192.0.2.1}]'],
    ).text()  # fmt: skip
    event = parse_line(line, layout)
    assert event is not None and event[1] == "DEFER" and event[5] == ""  # no network id
    assert parse_line(line.replace('""Failed""', '"Failed'), layout) is None  # broken quote
    assert parse_line(line + ',"unclosed', layout) is None
    broken = line.replace('""Failed""', '"Failed')
    lines = [line, "garbage", "", line.replace(",", ";"), broken, line]
    # under a #Fields line (Arrow's reader) and without one (parse_line): the same
    events, rejected = LineParser().feed_lines([*header(START), *lines])
    assert events.num_rows == 2 and rejected == Counter(malformed_line=3)
    events, rejected = LineParser().feed_lines(lines)
    assert events.num_rows == 2 and rejected == Counter(malformed_line=3)
    # a quote left open at the end of a block swallows nothing unnoticed
    events, rejected = LineParser().feed_lines([*header(START), line, line + ',"open', line])
    assert events.num_rows + rejected["malformed_line"] == 3 and rejected["malformed_line"] >= 1


def test_headerless_lines_are_read_by_their_number_of_fields() -> None:
    line = Line(START, "RECEIVE", "SMTP", 9, "<e@f>", "n", ["u1@corp.example"], "a@b.example")
    assert parse_line(line.text(), None) is not None
    old = parse_line(line.text(FIELDS_2010), None)
    assert old is not None and old[0] == "2026-11-02T06:00:00.000Z" and old[5] == ""
    assert parse_line("a,b,c", None) is None


def test_a_second_fields_line_switches_the_mapping(tmp_path: Path) -> None:
    """After a restart the service writes a new header block mid-file, here with Exchange
    2010's fields (no network-message-id): lines after it are read by that list."""
    first = Line(
        START, "RECEIVE", "SMTP", 11, "<m1@corp.example>", "0b70-1", ["ext@partner1.example"],
        "u1@corp.example", size=1000,
    )  # fmt: skip
    send = Line(
        START + dt.timedelta(seconds=5), "SEND", "SMTP", 11, "<m1@corp.example>", "0b70-1",
        ["ext@partner1.example"], "u1@corp.example", size=1000,
    )  # fmt: skip
    after = Line(
        START + dt.timedelta(minutes=5), "RECEIVE", "SMTP", 12, "<m2@corp.example>", "",
        ["u3@corp.example"], "u2@corp.example", size=2000,
    )  # fmt: skip
    after_send = Line(
        START + dt.timedelta(minutes=5, seconds=1), "SEND", "SMTP", 12, "<m2@corp.example>", "",
        ["u3@corp.example"], "u2@corp.example", size=2000,
    )  # fmt: skip
    text = [
        *header(START),
        first.text(),
        send.text(),
        *header(START + dt.timedelta(minutes=4), FIELDS_2010),
        after.text(FIELDS_2010),
        after_send.text(FIELDS_2010),
    ]
    path = tmp_path / "MSGTRK2026110206-1.LOG"
    path.write_text("\r\n".join(text) + "\r\n", encoding="utf-8-sig")
    frame, rejected, _ = _read_source(_source(str(path), tmp_path))
    assert not rejected
    later = START + dt.timedelta(minutes=5)
    assert _rows(frame) == [
        (pd.Timestamp(START), "u1@corp.example", "ext@partner1.example", "delivered", 1000,
         first.message_id),
        (pd.Timestamp(later), "u2@corp.example", "u3@corp.example", "delivered", 2000,
         after.message_id),
    ]  # fmt: skip


def test_malformed_lines_are_counted_by_reason_and_reading_goes_on(tmp_path: Path) -> None:
    good = Line(
        START, "RECEIVE", "SMTP", 5, "<z@corp.example>", "nid", ["u1@corp.example"],
        "a@partner.example", size=10,
    )  # fmt: skip
    lines = [
        *header(START),
        "this is not a tracking line",
        good.text(date_time="02/11/2026 06:00"),
        good.text(date_time="2026-13-02T06:00:00.000Z"),  # no such month
        good.text(message_id="", network_message_id="", internal_message_id=""),
        ",".join(good.text().split(",")[:-3]),  # cut short
        good.text(recipient_address="u1@corp\udcff.example"),  # a byte that is not UTF-8
        good.text(message_id="<y@corp.example>", recipient_address="y\ufffd@corp.example"),
        good.text(),
    ]
    path = tmp_path / "MSGTRK2026110206-1.LOG"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8", errors="surrogateescape")
    assert b"corp\xff.example" in path.read_bytes()
    frame, rejected, _ = _read_source(_source(str(path), tmp_path))
    assert rejected == Counter(malformed_line=2, bad_timestamp=2, no_message_id=1, bad_encoding=1)
    assert "<z@corp.example>" in set(frame["message_id"])
    # a genuine U+FFFD (an upstream system's replacement: valid text) is read as text
    assert "y\ufffd@corp.example" in set(frame["recipient"])


def test_a_fields_line_without_the_needed_fields_rejects_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "MSGTRK2026110206-1.LOG"
    usable = Line(START, "RECEIVE", "SMTP", 5, "<z@x>", "n", ["u1@corp.example"], "a@b.example")
    path.write_text(
        "\n".join([*header(START), usable.text(), "#Fields: date-time,client-ip,event-id", "x,y,z"])
        + "\n"
    )
    frame, rejected, _ = _read_source(_source(str(path), tmp_path))
    assert rejected == Counter(unusable_fields=1)
    assert len(frame) == 1
    bad = tmp_path / "other" / "MSGTRK2026110207-1.LOG"
    bad.parent.mkdir()
    bad.write_text("#Software: Microsoft Exchange Server\n#Fields: date-time,event-id\n")
    with pytest.raises(InputError, match=r"MSGTRK2026110207-1\.LOG: .*lacks recipient-address"):
        _source(str(bad.parent), tmp_path).units()


def test_unknown_files_are_refused_by_name_without_content(tmp_path: Path) -> None:
    path = tmp_path / "MSGTRK2026110206-1.LOG"
    path.write_text("From: secret.person@corp.example\nSubject: private\n")
    with pytest.raises(InputError) as caught:
        _source(str(path), tmp_path).units()
    assert "MSGTRK2026110206-1.LOG" in str(caught.value)
    assert "secret" not in str(caught.value) and "private" not in str(caught.value)
    empty = tmp_path / "new" / "MSGTRK2026110207-1.LOG"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    assert detect(empty) == "empty"
    frame, rejected, skipped = _read_source(_source(str(empty.parent), tmp_path))
    assert frame.empty and not rejected and not skipped


# ----- joining events into rows ------------------------------------------------------------


def test_generated_traffic_gives_exactly_the_expected_rows(tmp_path: Path) -> None:
    traffic = generate(tmp_path / "logs", 600, days=2)
    assert len(list((tmp_path / "logs").glob("MSGTRK*.LOG"))) > 15  # hourly files
    frame, rejected, skipped = _read_source(_source("logs", tmp_path))
    assert not rejected
    assert _rows(frame) == sorted(traffic.expected)
    assert skipped == traffic.skipped
    assert set(frame["status"]) <= set(STATUSES)
    counts = Counter(frame["status"])
    assert {"delivered", "bounced", "deferred", "filtered_as_spam", "rejected"} <= set(counts)
    # groups and aliases are replaced by their members and addresses
    assert "team-sales@corp.example" not in set(frame["recipient"])
    assert not frame["recipient"].str.startswith("alias").any()
    # no NDR of Exchange's, and nothing of the lines but the six raw columns
    assert not frame["sender"].str.startswith("microsoftexchange").any()
    text = frame.astype(str).to_csv()
    for dropped in (
        "Quarterly",
        "offer",
        "192.0.2",
        "198.51.100",
        "exch-",
        "Recipient OK",
        "relay",
    ):
        assert dropped not in text


def test_a_message_across_two_files_is_joined_once(tmp_path: Path) -> None:
    traffic = Traffic()
    at = dt.datetime(2026, 11, 2, 6, 59, 59, 800_000, tzinfo=UTC)
    traffic.message(
        at,
        "u1@corp.example",
        ["a@partner1.example", "b@partner2.example"],
        late=dt.timedelta(seconds=1),
    )
    traffic.message(
        at,
        "u2@corp.example",
        ["c@partner1.example"],
        {"c@partner1.example": "bounced"},
        late=dt.timedelta(minutes=3),
    )
    files = write_files(tmp_path, traffic.lines, lines_per_file=3)
    assert len(files) >= 3  # rolled over by the hour and by size
    frame, rejected, _ = _read_source(_source(str(tmp_path), tmp_path))
    assert not rejected
    assert _rows(frame) == sorted(traffic.expected)
    assert len(frame) == 3


def test_files_are_read_in_written_order(tmp_path: Path) -> None:
    names = [
        "MSGTRK2026110206-10.LOG",
        "MSGTRK2026110206-9.LOG",
        "MSGTRK20261101-2.LOG",
        "MSGTRK2026110205-1.LOG",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a log")
    source = _source(str(tmp_path), tmp_path)
    paths, _ = source.files()
    assert [p.name for p in source.streams(paths)[0]] == [
        "MSGTRK20261101-2.LOG", "MSGTRK2026110205-1.LOG", "MSGTRK2026110206-9.LOG",
        "MSGTRK2026110206-10.LOG",
    ]  # fmt: skip


def test_servers_are_joined_by_network_message_id(tmp_path: Path) -> None:
    """Server A receives and sends on to server B, whose outcome is final: B's folder is
    read beside A's, so A's SEND is not given before B's FAIL or DEFER is known."""
    a, b = [], []
    expected = []
    for i in range(200):
        at = START + dt.timedelta(minutes=2 * i)
        mid, netid = f"<m{i}@corp.example>", f"aa{i:06d}-0000-4000-8000-000000000000"
        to = [f"u{i % 17 + 1}@corp.example", f"u{(i + 5) % 17 + 1}@corp.example"]
        sender = f"contact{i}@partner{i % 9}.example"
        a.append(
            Line(
                at,
                "RECEIVE",
                "SMTP",
                1000 + i,
                mid,
                netid,
                to,
                sender,
                size=500 + i,
                directionality="Incoming",
            )
        )
        a.append(
            Line(
                at + dt.timedelta(seconds=1),
                "SEND",
                "SMTP",
                1000 + i,
                mid,
                netid,
                to,
                sender,
                size=500 + i,
                connector="Intra-Organization SMTP Send Connector",
            )
        )
        b.append(
            Line(
                at + dt.timedelta(seconds=2),
                "RECEIVE",
                "SMTP",
                5000 + i,
                mid,
                netid,
                to,
                sender,
                size=500 + i,
            )
        )
        outcome = ["delivered", "bounced", "deferred"][i % 3]
        event = {"delivered": "SEND", "bounced": "FAIL", "deferred": "DEFER"}[outcome]
        b.append(
            Line(
                at + dt.timedelta(seconds=3),
                event,
                "SMTP",
                5000 + i,
                mid,
                netid,
                to[:1],
                sender,
                size=500 + i,
            )
        )
        b.append(
            Line(
                at + dt.timedelta(seconds=3),
                "SEND",
                "SMTP",
                5000 + i,
                mid,
                netid,
                to[1:],
                sender,
                size=500 + i,
            )
        )
        stamp = pd.Timestamp(_stamp(at))
        expected += [
            (stamp, sender, to[0], outcome, 500 + i, mid),
            (stamp, sender, to[1], "delivered", 500 + i, mid),
        ]
    write_files(tmp_path / "exch01", a)
    write_files(tmp_path / "exch02", b)
    frame, rejected, _ = _read_source(_source(["exch01", "exch02"], tmp_path))
    assert not rejected
    assert _rows(frame) == sorted(expected)


def test_mailbox_services_are_read_only_when_asked(tmp_path: Path) -> None:
    """MSGTRK (transport) says SEND to the mailbox delivery service; MSGTRKMD says whether
    the mailbox took it (here: over quota, FAIL). MSGTRKMS repeats the submissions."""
    transport, delivery, submission = [], [], []
    for i in range(30):
        at = START + dt.timedelta(minutes=i)
        mid, netid = f"<q{i}@corp.example>", f"bb{i:06d}-0000-4000-8000-000000000000"
        to = [f"u{i % 17 + 1}@corp.example"]
        submission.append(
            Line(
                at - dt.timedelta(seconds=1),
                "RECEIVE",
                "STOREDRIVER",
                1,
                mid,
                netid,
                to,
                "u1@corp.example",
                size=900,
            )
        )
        transport.append(
            Line(at, "RECEIVE", "SMTP", 100 + i, mid, netid, to, "u1@corp.example", size=900)
        )
        transport.append(
            Line(
                at + dt.timedelta(seconds=1),
                "SEND",
                "SMTP",
                100 + i,
                mid,
                netid,
                to,
                "u1@corp.example",
                size=900,
            )
        )
        last = "FAIL" if i % 2 else "DELIVER"
        delivery.append(
            Line(
                at + dt.timedelta(seconds=2),
                last,
                "STOREDRIVER",
                7000 + i,
                mid,
                netid,
                to,
                "u1@corp.example",
                size=900,
            )
        )
    write_files(tmp_path, transport)
    write_files(tmp_path, delivery, prefix="MSGTRKMD")
    write_files(tmp_path, submission, prefix="MSGTRKMS")
    (tmp_path / "MSGTRKMA2026110206-1.LOG").write_text("#Software: Microsoft Exchange Server\n")

    default = _source(str(tmp_path), tmp_path)
    frame, _, _ = _read_source(default)
    assert Counter(frame["status"]) == {"delivered": 30}
    assert default.check()[1:] == [
        (True, "1 mailbox-delivery log file(s) not read (option services)"),
        (True, "2 mailbox-submission log file(s) not read (option services)"),
        (True, "1 moderation log file(s) never read"),
    ]
    both = _source(
        str(tmp_path), tmp_path, services=["transport", "mailbox-delivery", "mailbox-submission"]
    )
    frame, rejected, _ = _read_source(both)
    assert not rejected
    assert Counter(frame["status"]) == {"delivered": 15, "bounced": 15}
    # the submission, a second before the transport service's RECEIVE, is the first event
    first = {pd.Timestamp(START + dt.timedelta(minutes=i, seconds=-1)) for i in range(30)}
    assert set(frame["timestamp"]) == first


def test_joiner_holds_open_messages_and_says_how_old_the_oldest_is() -> None:
    """What an incremental reader needs: rows only once a message is finished, and the
    oldest open message (input before it need not be read again)."""
    joiner = Joiner()
    receive = Line(
        START,
        "RECEIVE",
        "SMTP",
        1,
        "<j@corp.example>",
        "n1",
        ["a@partner1.example", "b@partner1.example"],
        "u1@corp.example",
        size=10,
    )
    event = parse_line(receive.text(), None)
    assert event is not None
    assert joiner.add(event, "s0") is None
    assert len(joiner) == 1
    assert joiner.oldest_open() == pd.Timestamp(START)
    rows, _ = joiner.pop(pd.Timestamp(START + dt.timedelta(hours=3)))
    assert rows.empty  # still in transit: no outcome yet
    send = Line(
        START + dt.timedelta(hours=4),
        "SEND",
        "SMTP",
        1,
        "<j@corp.example>",
        "n1",
        ["a@partner1.example"],
        "u1@corp.example",
    )
    fail = Line(
        START + dt.timedelta(hours=4),
        "FAIL",
        "SMTP",
        1,
        "<j@corp.example>",
        "n1",
        ["b@partner1.example"],
        "u1@corp.example",
    )
    events, _ = LineParser().feed_lines([*header(START), send.text(), fail.text()])
    assert joiner.add_table(events, "s0") == (Counter(), pd.Timestamp(send.at).value)
    rows, _ = joiner.pop(pd.Timestamp(START + dt.timedelta(hours=4, minutes=10)))
    assert rows.empty  # settling: another server may still say something
    rows, _ = joiner.pop(pd.Timestamp(START + dt.timedelta(hours=5)))
    assert sorted(zip(rows["recipient"], rows["status"], strict=True)) == [
        ("a@partner1.example", "delivered"), ("b@partner1.example", "bounced"),
    ]  # fmt: skip
    assert list(rows["timestamp"]) == [pd.Timestamp(START)] * 2
    assert joiner.oldest_open() is None and len(joiner) == 0
    # a message never finished is given as deferred after a day, or at the end
    joiner.add(event, "s0")
    assert joiner.add(event[:3] + ("",) * 3 + event[6:], "s0") == "no_message_id"
    rows, _ = joiner.finish()
    assert list(rows["status"]) == ["deferred", "deferred"]


def test_a_message_still_in_transit_is_deferred_then_final_on_the_next_read(tmp_path: Path) -> None:
    """The current file ends with a RECEIVE only (and a line being written): deferred now;
    the next run reads the file again with the outcome, delivered."""
    receive = Line(
        START,
        "RECEIVE",
        "SMTP",
        1,
        "<t@corp.example>",
        "n1",
        ["a@partner1.example"],
        "u1@corp.example",
        size=10,
    )
    send = Line(
        START + dt.timedelta(seconds=3),
        "SEND",
        "SMTP",
        1,
        "<t@corp.example>",
        "n1",
        ["a@partner1.example"],
        "u1@corp.example",
        size=10,
    )
    path = tmp_path / "MSGTRK2026110206-1.LOG"
    text = "\r\n".join([*header(START), receive.text()]) + "\r\n"
    path.write_text(text + send.text()[:40], encoding="utf-8")
    frame, rejected, skipped = _read_source(_source(str(tmp_path), tmp_path))
    assert list(frame["status"]) == ["deferred"] and not rejected
    assert skipped == Counter(incomplete_line=1)
    path.write_text(text + send.text() + "\r\n", encoding="utf-8")
    frame, _, skipped = _read_source(_source(str(tmp_path), tmp_path))
    assert list(frame["status"]) == ["delivered"] and not skipped


def test_chunks_are_bounded(tmp_path: Path) -> None:
    traffic = generate(tmp_path / "logs", 300, days=1)
    source = _source("logs", tmp_path)
    (unit,) = source.units()
    assert isinstance(unit, TrackingLogs)
    frames = [c.frame for c in read_streams(unit.streams, block_bytes=20_000, chunk_rows=100)]
    assert max(len(f) for f in frames) <= 100
    assert len(frames) > 5
    assert _rows(pd.concat(frames, ignore_index=True)) == sorted(traffic.expected)


# ----- the real sample ---------------------------------------------------------------------


def test_every_line_of_the_real_sample_is_read() -> None:
    """Four lines of Exchange 2016/2019 (30 fields, no header lines, as Elastic's pipeline
    test keeps them): a shadow-redundancy failure (HAREDIRECTFAIL, no message of its own),
    two RECEIVEs of backup reports not yet sent on (in transit: deferred), one SEND
    through the intra-organisation connector (delivered)."""
    path = sample("elastic__integrations", "microsoft_exchange_server", "test-messagetracking.log")
    assert detect(path) == "headerless"
    events, rejected = LineParser().feed(path.read_bytes())
    assert events.num_rows == 4 and not rejected
    assert events.column("event-id").to_pylist() == ["HAREDIRECTFAIL", "RECEIVE", "RECEIVE", "SEND"]
    frame, rejected, skipped = _read_source(_source(str(path), path.parent))
    assert not rejected and not skipped
    assert sorted(zip(frame["status"], frame["size"], strict=True)) == [
        ("deferred", 7229), ("deferred", 8251), ("delivered", 38663),
    ]  # fmt: skip
    assert frame["message_id"].notna().all() and frame["timestamp"].notna().all()
    assert not frame.astype(str).to_csv().count("backup")  # the subjects stayed behind


# ----- options, check, registration --------------------------------------------------------


def test_options_are_validated_and_declared() -> None:
    with pytest.raises(ConfigError, match=r"exch.*servces: unknown option"):
        create_source("exchange-server", "exch", {"path": "x", "servces": []}, Path())
    with pytest.raises(ConfigError, match="services"):
        create_source("exchange-server", "exch", {"path": "x", "services": ["moderation"]}, Path())
    declared = source_type("exchange-server")
    assert declared.reads == "files"
    assert set(declared.options) == {"path", "services"}
    assert all(text.strip() for text in declared.options.values())


def test_check_reads_headers_only(tmp_path: Path) -> None:
    generate(tmp_path / "logs", 20, days=1)
    steps = _source("logs", tmp_path).check()
    assert steps[0][0] is True and "fields 30" in steps[0][1]
    assert _source("nothing-here", tmp_path).check()[0][0] is False


# ----- end to end ----------------------------------------------------------------------------


def escort_traffic(folder: Path) -> Traffic:
    """Five days of ordinary mail; u1 writing to an escort site on three days, and its
    reply; spam from another listed site to ten others."""
    traffic = Traffic(11)
    for d in range(5):
        traffic.day_of_mail(START + dt.timedelta(days=d), 50)
    for d, sender in ((0, "u1@corp.example"), (2, "u1@corp.example"), (7, "u1@corp.example")):
        at = START + dt.timedelta(days=d, hours=3, minutes=17)
        traffic.message(at, sender, ["bookings@agency.escort-ads.test"])
    traffic.message(
        START + dt.timedelta(days=2, hours=5),
        "bookings@agency.escort-ads.test",
        ["u1@corp.example"],
        incoming=True,
    )
    for n in range(2, 12):  # spam from listed sites never counts against anyone
        at = START + dt.timedelta(days=n % 5, hours=n)
        traffic.message(
            at,
            f"girls{n}@velvet-club.test",
            [f"u{n}@corp.example"],
            {f"u{n}@corp.example": "filtered_as_spam"},
            incoming=True,
        )
    write_files(folder, traffic.lines)
    return traffic


def test_run_end_to_end_with_an_exchange_server_source(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    traffic = escort_traffic(tmp_path / "logs" / "exch01")
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        """
        store: var/store.db
        reports: {dir: reports, formats: [html, json]}
        schedule: {lock: var/run.lock}
        """,
        sources="[{name: exch, type: exchange-server, path: [logs/exch01]}]",
    )
    code, output = run_cli(config, "2026-11-12")
    assert code == 0, output
    assert "1 new alert(s)" in output
    with store_db(config) as db:
        alerts = db.execute("SELECT policy, rule_id, org_unit, messages FROM alerts").fetchall()
        events = db.execute("SELECT direction, domain, status FROM events ORDER BY ts").fetchall()
        total = db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0]
        rejected = dict(db.execute("SELECT reason, count FROM rejected_rows").fetchall())
    assert alerts == [("escort-ads", "repeated-contact", "Sales/EMEA", 4)]
    assert Counter(events) == {
        ("outbound", "agency.escort-ads.test", "delivered"): 3,
        ("inbound", "agency.escort-ads.test", "delivered"): 1,
        ("inbound", "velvet-club.test", "filtered_as_spam"): 10,
    }
    expected_rows = {(r[5], r[1], r[2]) for r in traffic.expected}
    assert total == len(expected_rows)
    assert not rejected

    # every address of the input stayed out of the store and the reports
    blob = read_all_bytes(tmp_path / "var") + read_all_bytes(tmp_path / "reports")
    addresses = {a for line in traffic.lines for a in (*line.recipients, line.sender)}
    addresses |= {line.related for line in traffic.lines if line.related}
    for address in addresses | {a.lower() for a in addresses} | set(DIRECTORY_PEOPLE):
        assert address.encode() not in blob, address
    for line in traffic.lines:
        assert line.message_id.encode() not in blob
        if line.subject:
            assert line.subject.encode() not in blob

    # the next run goes on where this one stopped: nothing new to read (exit 4, as for any
    # idle run), nothing counted twice
    code, output = run_cli(config, "2026-11-12")
    assert code == 4, output
    assert "0 rows read" in output
    with store_db(config) as db:
        assert db.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0] == total


# ----- the conformance kit -------------------------------------------------------------------
#: The server folder of the kit's input, as configured.
KIT_OPTIONS = {"path": "exch01"}
#: What the generated lines hold that no row may carry: subjects, IPs, host names,
#: recipient-status texts, custom data.
PLANTED = (
    *(s for s in SUBJECTS if s),
    "192.0.2.10", "198.51.100.25", "203.0.113.77", "exch-cas03", "exch-hub07",
    "mx.relay.example", "Recipient OK", "RESOLVER.ADR.RecipNotFound", "DNS query failed",
    "Content Filtering", "DeliveryPriority", "Client Proxy MBX01",
)  # fmt: skip
#: The kit's organisation, and sites of the generated traffic its feed lists (the
#: pipeline then keeps matched events, not only totals).
KIT_LISTED = (*(f"partner{n}.example" for n in range(1, 61)), "spam7.test", "spam99.test")


def pipeline_minimiser(listed: Sequence[str] = KIT_LISTED) -> Minimiser:
    """The real pipeline (as tests/test_conformance.py builds it): what the engine keeps of
    a raw chunk of corp.example's mail with a test key and a feed of ``listed`` sites."""
    return kit_minimiser(listed)


def _written(traffic: Traffic, rejected: dict[str, int] | None = None) -> Written:
    columns = ["timestamp", "sender", "recipient", "status", "size", "message_id"]
    rows = [dict(zip(columns, row, strict=True)) for row in traffic.expected]
    return Written.of(rows, rejected, PLANTED)


def write_kit_logs(folder: Path, messages: int, seed: int) -> Written:
    """Two days of mail (``messages`` messages in all) as one server's hourly files."""
    return _written(generate(folder / "exch01", max(messages // 2, 1), days=2, seed=seed))


def append_kit_logs(folder: Path, messages: int, seed: int) -> Written:
    """A third day: its first events at the end of the current file (the log grows), the
    rest in new hourly files (it rolls over)."""
    traffic = Traffic(seed, internal=80_000_000_000_000 + seed * 1_000_000)
    traffic.day_of_mail(START + dt.timedelta(days=2), messages)
    lines = sorted(traffic.lines, key=lambda x: x.at)
    grows = len(lines) // 3
    current = max((folder / "exch01").glob("MSGTRK*.LOG"), key=lambda p: p.name)
    with current.open("ab") as handle:
        handle.write("".join(line.text() + "\r\n" for line in lines[:grows]).encode())
    write_files(folder / "exch01", lines[grows:])
    return _written(traffic)


def write_kit_logs_malformed(folder: Path) -> Written:
    """A day of mail, and a later file of six bad lines, each bad in its own way."""
    traffic = generate(folder / "exch01", 20, days=1, seed=3)
    at = START + dt.timedelta(hours=14)
    bad = Line(
        at, "RECEIVE", "SMTP", 5, "<bad.1@corp.example>", "nid-bad", ["u1@corp.example"],
        "a@partner.example", size=10,
    )  # fmt: skip
    lines = [
        *header(at),
        "this is not a tracking line",
        bad.text(date_time="02/11/2026 20:00"),
        bad.text(date_time="2026-13-02T20:00:00.000Z"),  # no such month
        bad.text(message_id="", network_message_id="", internal_message_id=""),
        ",".join(bad.text().split(",")[:-3]),  # cut short
        bad.text(recipient_address="u1@corp\udcff.example"),  # a byte that is not UTF-8
    ]
    path = folder / "exch01" / "MSGTRK2026110220-1.LOG"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8", errors="surrogateescape")
    rejected = {"malformed_line": 2, "bad_timestamp": 2, "no_message_id": 1, "bad_encoding": 1}
    return _written(traffic, rejected)


def _recorded(writer: Writer, into: list[Written]) -> Writer:
    """``writer``, keeping what it wrote (the kit's first call writes the valid input)."""

    def write(folder: Path, messages: int, seed: int) -> Written:
        written = writer(folder, messages, seed)
        into.append(written)
        return written

    return write


@pytest.mark.slow
def test_the_full_conformance_kit_passes(tmp_path: Path) -> None:
    """Every check of the kit over two days of one server's hourly files (groups, aliases,
    bounces with their NDRs, deferrals, spam dropped or refused): declarations, units,
    schema, chunks (rows leave an hour's file at a time, never all at the end), every
    row with its values, collects, identity through the real pipeline, a kill after
    every chunk, a re-read, a third day appended to the current file and new ones, bad
    lines counted by reason; memory flat for 10 times the input."""
    written: list[Written] = []
    harness = FileHarness(
        "exchange-server", KIT_OPTIONS, _recorded(write_kit_logs, written),
        write_kit_logs_malformed, append_kit_logs,
    )  # fmt: skip
    # conformance: exchange-server
    report = check_source(
        harness,
        tmp_path,
        minimise=pipeline_minimiser(),
        max_chunk_rows=100,
        memory=True,
        memory_messages=1_000,
        raise_on_findings=False,
    )
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert report.ran == list(CHECKS) and not report.skipped
    assert report.memory is not None
    # the kit compares rows by identity: a row read twice would pass it, not this
    assert report.rows == len(written[0].rows) > 400
    assert report.chunks > 10  # about one an hour's file: kills fall inside the unit
    assert report.kills == report.units + report.chunks  # before and after every chunk


# ----- throughput ----------------------------------------------------------------------------


@pytest.mark.slow
def test_throughput_of_a_large_log(tmp_path: Path) -> None:
    """About 180,000 lines (three days of 12,000 messages) read and joined exactly; the
    rate (in CPU time) is printed, not asserted: a busy machine would fail a bound, and a
    speed is a benchmark's to measure."""
    traffic = generate(tmp_path / "logs", 12_000, days=3, seed=5)
    lines = len(traffic.lines)
    source = _source("logs", tmp_path)
    clock = time.process_time()
    frame, rejected, _ = _read_source(source)
    seconds = time.process_time() - clock
    assert not rejected
    assert _rows(frame) == sorted(traffic.expected)
    print(f"{lines} lines, {len(frame)} rows in {seconds:.2f} s: {lines / seconds:,.0f} lines/s")
