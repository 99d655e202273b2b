"""The connector conformance kit: checks any source type against the connector contract.

A connector's author describes how to build their source and how to write its input
(a :class:`Harness`); :func:`check_source` then reads that input the way the engine
does and checks, with nothing but the contract of :mod:`connectors.base`:

``declarations``
    the class says what it is: an options model that is frozen, forbids unknown
    options and describes every option; secrets only as references; ``reads`` and
    ``collects`` within their vocabularies.
``units``
    units are planned again with the same keys; keys, formats and bookmarks name no
    person; distributable units can be sent to a worker (they pickle); a split unit
    reads exactly what the whole does; a source that reads a service by time refuses
    an open period (:class:`~connectors.base.PeriodRequired`); ``check()`` passes.
``schema``
    every chunk has exactly the columns and dtypes of :data:`compliance.events.RAW`,
    statuses the engine understands, reasons that are plain names.
``chunks``
    no chunk holds more than a bounded number of rows.
``rows``
    valid input is read completely, nothing more, nothing rejected, with the values
    written.
``collects``
    the fields the class says it collects are filled, the others empty.
``malformed``
    given input with known bad rows, each is counted by its reason (by the connector
    in :attr:`Chunk.rejected`, or left empty for the pipeline to reject) and every
    good row is read; nothing raises.
``resume``
    a kill after any chunk of any unit, then a run planned from the last committed
    bookmark, loses nothing and reads no ``once`` unit twice; the final bookmark is a
    clean run's.
``reread``
    planning again after a complete read yields no row not seen before.
``append``
    more input (a log that grows, a new file, new rows in a service) is read on the
    next run, with nothing lost.
``identity``
    subjects, bodies, IPs and names the input planted never reach a raw row; with a
    ``minimise`` function (the real pipeline), no address or local part survives it.
``memory`` (opt-in)
    reading ten times more input does not need much more memory.

The engine's rules are simulated here exactly as :mod:`compliance.scheduled` applies
them: a unit is committed whole with its bookmark (or, without one, the latest day
read), bookmarks never move backwards, and ``once`` units whose key was committed are
skipped. A kill drops the unit being read. Rows are identified as the store does, by
(message id, normalised sender, normalised recipient).

Nothing here imports pytest; use it from any test::

    def test_conformance(tmp_path):
        check_source(FileHarness(MySource, {"path": "logs"}, write=write_logs), tmp_path)

Findings name checks, counts, unit numbers and row positions, never a value read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import pickle
import random
import re
import tracemalloc
import typing
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from compliance.addresses import normalise_addresses
from compliance.events import RAW, STATUSES, TimestampRange, conform_raw, status_of
from compliance.secrets import SecretRef
from connectors.base import (
    READ_KINDS,
    Chunk,
    PeriodRequired,
    ReadUnit,
    Source,
    SourceState,
    create_source,
)

__all__ = [
    "CHECKS",
    "LISTED_SITES",
    "MAX_CHUNK_ROWS",
    "ORGANISATION",
    "ConformanceError",
    "FileHarness",
    "Finding",
    "Harness",
    "Message",
    "Minimiser",
    "Person",
    "Report",
    "Writer",
    "Written",
    "check_chunks",
    "check_collects",
    "check_declarations",
    "check_identity",
    "check_malformed",
    "check_memory",
    "check_rows",
    "check_source",
    "identity_texts",
    "pipeline_rejects",
    "row_keys",
    "staff",
    "traffic",
]

#: Every check :func:`check_source` runs, in order (``memory`` only when asked).
CHECKS = (
    "declarations",
    "units",
    "schema",
    "chunks",
    "rows",
    "collects",
    "identity",
    "resume",
    "reread",
    "append",
    "malformed",
    "memory",
)
#: Rows a chunk may hold (the export readers gather 128k rows, the line-log readers 64k;
#: a few more after one line of several recipients became several rows is fine, a whole
#: file is not).
MAX_CHUNK_ROWS = 1 << 18
#: The organisation of the synthetic traffic, and sites the feeds of a test list.
ORGANISATION = "corp.example"
LISTED_SITES = ("bookings.agency.escorts.test", "www.escort-ads.test")

#: The real pipeline, or any function standing for it: a raw chunk in, everything the
#: engine keeps from it out (minimised events, totals, message keys).
Minimiser = Callable[[pd.DataFrame], Sequence[pd.DataFrame]]


# --- what the kit reports ---------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One way a source breaks the contract: the check and what was seen (counts, never
    values)."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


class ConformanceError(AssertionError):
    """A source failed conformance checks; the message lists every finding."""

    def __init__(self, source: str, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        lines = "\n".join(f"  - {f}" for f in self.findings)
        super().__init__(
            f"source type {source!r} fails {len(self.findings)} conformance finding(s):\n{lines}"
        )


@dataclass
class Report:
    """What :func:`check_source` did: the findings, which checks ran and which were skipped
    (and why), and what was read."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rows: int = 0  # rows of a clean read
    units: int = 0  # units of a clean read
    chunks: int = 0  # chunks of a clean read
    kills: int = 0  # kills simulated
    memory: tuple[int, int] | None = None  # peak bytes reading the input and 10 times it

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def raise_for_findings(self) -> None:
        """Raise :class:`ConformanceError` listing the findings, if any."""
        if self.findings:
            raise ConformanceError(self.source, self.findings)


# --- what the harness writes --------------------------------------------------------------
@dataclass(frozen=True)
class Written:
    """What a harness wrote: the raw rows a reader must yield (a frame with some of the
    :data:`~compliance.events.RAW` columns; ``message_id``, ``sender`` and ``recipient``
    at least), the rows it must reject by reason, and text of the input that must never
    come out of it (subjects, body markers, client IPs, display names)."""

    rows: pd.DataFrame
    rejected: Mapping[str, int] = field(default_factory=dict)
    forbidden: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        rows: pd.DataFrame | Iterable[Mapping[str, object]],
        rejected: Mapping[str, int] | None = None,
        forbidden: Iterable[str] = (),
    ) -> Written:
        """From rows given as a frame or as mappings of raw column to value."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        missing = [c for c in ("message_id", "sender", "recipient") if c not in frame.columns]
        if missing:
            raise ValueError(f"written rows need the columns {', '.join(missing)}")
        unknown = [c for c in frame.columns if c not in RAW]
        if unknown:
            raise ValueError(f"written rows hold columns outside RAW: {', '.join(unknown)}")
        out = conform_raw(frame.reset_index(drop=True))
        return cls(out[list(frame.columns)], dict(rejected or {}), tuple(forbidden))

    @classmethod
    def of_messages(
        cls,
        messages: Iterable[Message],
        spell: Callable[[str], str] | None = None,
        rejected: Mapping[str, int] | None = None,
    ) -> Written:
        """The rows of synthetic ``messages`` (one per recipient), statuses as ``spell``
        writes them (the engine compares them through
        :func:`~compliance.events.status_of`), and their planted text as forbidden."""
        items = list(messages)
        rows = [row for m in items for row in m.rows()]
        if spell is not None:
            for row in rows:
                row["status"] = spell(str(row["status"]))
        if not rows:
            rows_frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW.items()})
            return cls(rows_frame, dict(rejected or {}), ())
        return cls.of(rows, rejected, (text for m in items for text in m.planted()))

    def __add__(self, other: Written) -> Written:
        rejected = Counter(self.rejected)
        rejected.update(other.rejected)
        frames = [f for f in (self.rows, other.rows) if len(f)]
        rows = pd.concat(frames, ignore_index=True) if frames else self.rows
        return Written(rows, dict(rejected), self.forbidden + other.forbidden)


# --- synthetic traffic --------------------------------------------------------------------
_FIRST = (
    "amelia", "bruno", "chiara", "dmitri", "esther", "farid", "greta", "hiroshi", "ines",
    "jonas", "kamala", "lars", "marisol", "nikolai", "oksana", "pietro", "quentin",
    "rosalind", "soren", "tamsin", "ulrike", "viktor", "wilhelmina", "xavier", "yolanda",
    "zoltan",
)  # fmt: skip
_LAST = (
    "hartley", "okonkwo", "lindqvist", "moreau", "castellano", "nakamura", "brennan",
    "vasquez", "oyelaran", "whitcombe", "delacroix", "fairbanks", "kowalczyk", "abernathy",
)  # fmt: skip
_PARTNERS = (
    "partner.example", "supplier.example", "lawfirm.example", "bank.test", "logistics.test",
    "auditors.example", "university.test", "travel-agency.test", "printing.example",
)  # fmt: skip
_DESKS = ("sales", "accounts", "orders", "support", "frontdesk", "bookings", "invoices")
_TOPICS = (
    "Quarterly figures", "Contract renewal", "Meeting notes", "Invoice", "Travel plans",
    "Shipment update", "Draft agreement", "Team offsite", "Budget review", "Welcome aboard",
)  # fmt: skip


@dataclass(frozen=True)
class Person:
    """A member of the organisation: primary address, display name and directory id."""

    address: str
    name: str
    key: str


def staff(count: int = 60, organisation: str = ORGANISATION) -> list[Person]:
    """``count`` distinct people of ``organisation`` (every fifth in a subdomain of it)."""
    out = []
    for n in range(count):
        first, last = _FIRST[n % len(_FIRST)], _LAST[(n // len(_FIRST) + n) % len(_LAST)]
        domain = f"eu.{organisation}" if n % 5 == 4 else organisation
        suffix = "" if n < len(_FIRST) else str(n // len(_FIRST))
        out.append(
            Person(
                f"{first}.{last}{suffix}@{domain}",
                f"{first.title()} {last.title()}",
                f"5e1d0c4a-0000-4000-8000-{n:012d}",
            )
        )
    return out


@dataclass(frozen=True)
class Message:
    """One synthetic message: its envelope, one status per recipient, and the text a
    gateway log may carry that no connector may let through (``planted``)."""

    timestamp: dt.datetime  # UTC, whole seconds
    sender: str
    recipients: tuple[str, ...]
    statuses: tuple[str, ...]  # one of STATUSES per recipient
    size: int
    message_id: str  # RFC 5322, with angle brackets
    subject: str
    client_ip: str
    sender_name: str
    kind: str  # outbound, internal, inbound, spam, bounce, rejected, deferred, listed

    def rows(self) -> list[dict[str, object]]:
        """One raw row per recipient."""
        return [
            {
                "timestamp": pd.Timestamp(self.timestamp),
                "sender": self.sender,
                "recipient": recipient,
                "status": status,
                "size": self.size,
                "message_id": self.message_id,
            }
            for recipient, status in zip(self.recipients, self.statuses, strict=True)
        ]

    def planted(self) -> tuple[str, ...]:
        """Text of the message that must never come out of a connector."""
        return (self.subject, self.client_ip, self.sender_name)


def traffic(
    count: int,
    seed: int = 0,
    *,
    start: dt.datetime = dt.datetime(2026, 11, 2, 7, 0, tzinfo=dt.UTC),
    span: dt.timedelta = dt.timedelta(days=5),
    people: Sequence[Person] | None = None,
    one_status: bool = False,
) -> list[Message]:
    """``count`` messages of realistic mail between ``start`` and ``start + span``, in time
    order: outbound mail to partners (several recipients, some internal in copy),
    internal mail, inbound mail, inbound spam and quarantined mail, bounces, refused and
    deferred deliveries, all with distinct message ids. The first person of ``people``
    (default: :func:`staff`) writes three times, on three days, to a site of
    :data:`LISTED_SITES` (what a policy that repeats contact would flag); the same sites
    also send spam to others. With ``one_status``, all recipients of a message share its
    first recipient's status (a gateway that logs one line per message). Deterministic
    for a seed.
    """
    rng = random.Random(seed)
    team = list(people) if people is not None else staff()
    seconds = max(int(span.total_seconds()), 1)
    out: list[Message] = []
    for n in range(count):
        planted = count >= 3 and n < 3
        at = start + dt.timedelta(
            seconds=int(seconds * (0.1, 0.45, 0.8)[n]) + 37 if planted else rng.randrange(seconds)
        )
        roll = rng.random()
        person = team[rng.randrange(len(team))]
        partner = _PARTNERS[rng.randrange(len(_PARTNERS))]
        external = f"{_DESKS[rng.randrange(len(_DESKS))]}{rng.randrange(40)}@{partner}"
        sender, name, kind = person.address, person.name, "outbound"
        recipients: list[str]
        statuses: list[str] = []
        if planted:
            sender, name, kind = team[0].address, team[0].name, "listed"
            recipients = [f"reservations@{LISTED_SITES[0]}"]
        elif roll < 0.30:
            recipients = [
                f"{_DESKS[rng.randrange(len(_DESKS))]}{rng.randrange(40)}@{partner}"
                for _ in range(rng.choice((1, 1, 1, 2, 3)))
            ]
            if rng.random() < 0.25:
                recipients.append(_colleagues(rng, team, person, 1)[0])
            statuses = [
                rng.choice(("delivered",) * 18 + ("deferred", "bounced")) for _ in recipients
            ]
        elif roll < 0.50:
            kind = "internal"
            recipients = _colleagues(rng, team, person, rng.choice((1, 1, 2, 4)))
        elif roll < 0.72:
            kind = "inbound"
            sender, name = external, f"{partner.split('.')[0].title()} Desk"
            recipients = [p.address for p in rng.sample(team, rng.choice((1, 1, 2)))]
        elif roll < 0.85:
            kind = "spam"
            site = rng.choice((*LISTED_SITES, f"promo{rng.randrange(30)}.spam.test"))
            sender, name = f"offers{rng.randrange(9)}@{site}", "Special Offers"
            recipients = [p.address for p in rng.sample(team[1:], rng.choice((1, 2, 3)))]
            statuses = [rng.choice(("filtered_as_spam", "filtered_as_spam", "quarantined"))] * len(
                recipients
            )
        elif roll < 0.91:
            kind = "bounce"
            recipients = [f"former.contact{rng.randrange(99)}@{partner}"]
            statuses = ["bounced"]
        elif roll < 0.95:
            kind = "rejected"
            sender, name = (
                f"bulk{rng.randrange(50)}@mailer{rng.randrange(9)}.spam.test",
                "Mass Mailer Ltd",
            )
            recipients = [rng.choice(team).address]
            statuses = ["rejected"]
        else:
            kind = "deferred"
            recipients = [f"{_DESKS[rng.randrange(len(_DESKS))]}@{partner}"]
            statuses = ["deferred"]
        recipients = list(dict.fromkeys(recipients))
        if len(statuses) != len(recipients):
            statuses = ["delivered"] * len(recipients)
        if one_status:
            statuses = [statuses[0]] * len(recipients)
        digest = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()[:20].upper()
        host = (
            "mail.corp.example" if sender.endswith(ORGANISATION) else f"mx.{sender.split('@')[1]}"
        )
        out.append(
            Message(
                timestamp=at.replace(microsecond=0),
                sender=sender,
                recipients=tuple(recipients),
                statuses=tuple(statuses),
                size=rng.randrange(900, 4_000_000),
                message_id=f"<{digest}.{seed}.{n}@{host}>",
                subject=f"{_TOPICS[rng.randrange(len(_TOPICS))]} [ref {seed}-{n:05d}X]",
                client_ip=f"{rng.choice(('198.51.100', '203.0.113'))}.{rng.randrange(1, 255)}",
                sender_name=name,
                kind=kind,
            )
        )
    out.sort(key=lambda m: (m.timestamp, m.message_id))
    return out


def _colleagues(
    rng: random.Random, team: Sequence[Person], person: Person, count: int
) -> list[str]:
    """``count`` addresses of people of ``team`` other than ``person``."""
    picked = rng.sample(range(len(team)), min(count + 1, len(team)))
    return [team[i].address for i in picked if team[i] is not person][:count]


# --- the harness ----------------------------------------------------------------------------
class Harness(ABC):
    """What the kit needs from a connector's author: how to build the source, and how to
    write its input. Override :meth:`source` and :meth:`write`; the rest is optional.

    Each ``write*`` call gets a new, empty folder, except :meth:`append`, which adds to
    the folder :meth:`write` filled. A harness that serves its input from a server may
    replace what the server holds on each ``write`` and ``write_malformed`` call.
    """

    @abstractmethod
    def source(self, folder: Path) -> Source:
        """A new source reading the input in ``folder`` (a new one for every simulated run,
        as a new process would build it)."""

    @abstractmethod
    def write(self, folder: Path, messages: int, seed: int) -> Written:
        """Write valid input of ``messages`` messages into ``folder``; what a reader must
        yield from it."""

    def write_malformed(self, folder: Path) -> Written | None:
        """Write input with known bad rows into ``folder``: the good rows and the bad rows'
        counts by reason (None: the check is skipped)."""
        return None

    def append(self, folder: Path, messages: int, seed: int) -> Written | None:
        """Add ``messages`` more messages to the input :meth:`write` wrote (more lines in a
        growing log, a new file, new rows on a server); None: the check is skipped."""
        return None

    def now(self) -> dt.datetime:
        """The start of the next simulated run (UTC)."""
        return dt.datetime.now(dt.UTC)


Writer = Callable[[Path, int, int], Written]


class FileHarness(Harness):
    """A harness for a source of files: its type (a class, or a registered type name), its
    options (paths relative to the folder), and functions that write its input."""

    def __init__(
        self,
        source: type[Source] | str,
        options: Mapping[str, Any],
        write: Writer,
        malformed: Callable[[Path], Written] | None = None,
        append: Writer | None = None,
        name: str = "conformance",
    ) -> None:
        self.source_type = source
        self.options = dict(options)
        self._write = write
        self._malformed = malformed
        self._append = append
        self.name = name

    def source(self, folder: Path) -> Source:
        if isinstance(self.source_type, str):
            return create_source(self.source_type, self.name, self.options, folder)
        return self.source_type.create(self.name, self.options, folder)

    def write(self, folder: Path, messages: int, seed: int) -> Written:
        return self._write(folder, messages, seed)

    def write_malformed(self, folder: Path) -> Written | None:
        return None if self._malformed is None else self._malformed(folder)

    def append(self, folder: Path, messages: int, seed: int) -> Written | None:
        return None if self._append is None else self._append(folder, messages, seed)


# --- rows and keys ------------------------------------------------------------------------
def _frame_of(chunks: Iterable[Chunk]) -> pd.DataFrame:
    frames = [c.frame for c in chunks if isinstance(c, Chunk) and len(c.frame)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW.items()})
    return conform_raw(pd.concat(frames, ignore_index=True))


def _address_key(values: pd.Series) -> pd.Series:
    text = values.astype("string")
    normal = normalise_addresses(text).astype("string")
    return normal.fillna(text.str.strip().str.lower()).fillna("")


def row_keys(frame: pd.DataFrame) -> pd.Series:
    """The store's identity of each row: (message id, normalised sender, normalised
    recipient), as one string per row."""
    if not len(frame):
        return pd.Series([], dtype="string")
    mid = frame["message_id"].astype("string").fillna("")
    return mid + "\x1f" + _address_key(frame["sender"]) + "\x1f" + _address_key(frame["recipient"])


def pipeline_rejects(frame: pd.DataFrame) -> tuple[Counter[str], pd.Series]:
    """The rows of a raw frame the pipeline will reject whatever the organisation (no time
    or one out of range, no or an invalid sender or recipient), counted by the reason it
    gives, first reason first; and which rows are kept.

    A connector may reject a bad row itself (:attr:`Chunk.rejected`) or pass it on with
    the field empty; the kit counts both.
    """
    earliest, latest = TimestampRange().bounds()
    stamps = frame["timestamp"]
    bad_time = ~(stamps.notna() & (stamps >= earliest) & (stamps <= latest)).fillna(False)
    sender, recipient = frame["sender"].astype("string"), frame["recipient"].astype("string")
    checks = (
        ("bad_timestamp", bad_time),
        ("no_sender", sender.isna()),
        ("no_recipient", recipient.isna()),
        ("invalid_sender", sender.notna() & normalise_addresses(sender).isna()),
        ("invalid_recipient", recipient.notna() & normalise_addresses(recipient).isna()),
    )
    rejected: Counter[str] = Counter()
    bad = pd.Series(False, index=frame.index)
    for reason, mask in checks:
        mask = mask.astype(bool) & ~bad
        if mask.any():
            rejected[reason] += int(mask.sum())
        bad |= mask
    return rejected, ~bad


def _first(positions: Iterable[int]) -> str:
    found = sorted(positions)[:3]
    return ", ".join(str(p) for p in found) + (" ..." if len(found) == 3 else "")


def check_rows(
    read: pd.DataFrame, written: Written, check: str = "rows", what: str = "valid input"
) -> list[Finding]:
    """Compare rows read with rows written, by the store's identity (:func:`row_keys`),
    and per identity the set of values of every column the written rows give (statuses
    through :func:`~compliance.events.status_of`). Findings count rows and name the
    written rows' positions, never values."""
    findings: list[Finding] = []
    expected = written.rows
    got = pd.Series(row_keys(read).to_numpy(), dtype=object)
    want = pd.Series(row_keys(expected).to_numpy(), dtype=object)
    got_set, want_set = set(got), set(want)
    missing = want[~want.isin(got_set)]
    if len(missing):
        findings.append(
            Finding(
                check,
                f"{what}: {len(missing)} of {len(want)} rows written were not read "
                f"(written rows {_first(missing.index)})",
            )
        )
    extra = got[~got.isin(want_set)]
    if len(extra):
        findings.append(
            Finding(
                check,
                f"{what}: {len(extra)} rows read were never written "
                f"(rows read {_first(extra.index)})",
            )
        )
    for column in expected.columns:
        if column in ("message_id", "sender", "recipient") or column not in read.columns:
            continue
        given = expected[column].notna().to_numpy()
        if not given.any():
            continue
        mine = _comparable(expected[column], column)[given]
        theirs = _comparable(read[column], column)
        want_values = pd.DataFrame({"k": want[given].to_numpy(), "v": mine.to_numpy()})
        got_values = pd.DataFrame({"k": got.to_numpy(), "v": theirs.to_numpy()})
        got_values = got_values[got_values["k"].isin(set(want_values["k"]))]
        a = want_values.groupby("k")["v"].agg(frozenset)
        b = got_values.groupby("k")["v"].agg(frozenset)
        both = a.index.intersection(b.index)
        differ = [k for k in both if a[k] != b[k]]
        if differ:
            where = want[want.isin(set(differ))].index
            findings.append(
                Finding(
                    check,
                    f"{what}: {column} differs from what was written for {len(differ)} "
                    f"row(s) (written rows {_first(where)})",
                )
            )
    return findings


def _comparable(values: pd.Series, column: str) -> pd.Series:
    if column == "status":
        return values.map(status_of).astype(object)
    if column == "timestamp":
        stamps = pd.to_datetime(values, utc=True)
        return pd.Series(stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").to_numpy(), dtype=object)
    if column == "size":
        return values.astype("Int64").astype(object)
    return values.astype(object)


# --- declarations -------------------------------------------------------------------------
_SECRET_NAMES = re.compile(r"secret|password|passwd|token|api_?key|private_?key|credential", re.I)


def _mentions(annotation: object, target: type) -> bool:
    if annotation is target:
        return True
    return any(_mentions(a, target) for a in typing.get_args(annotation))


def check_declarations(source_type: object) -> list[Finding]:
    """The class says what a user and ``compliance sources types`` need to know: an
    options model that is frozen, refuses unknown options, describes each option, and
    takes secrets only as references; how it reads; what it collects."""
    check, found = "declarations", []
    if not (isinstance(source_type, type) and issubclass(source_type, Source)):
        return [Finding(check, "not a connectors.base.Source subclass")]
    inherited = getattr(Source.from_options, "__func__", None)
    if getattr(source_type.from_options, "__func__", None) is inherited:
        found.append(Finding(check, "from_options is not implemented"))
    model: object = source_type.options_model
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return [*found, Finding(check, "options_model is not a pydantic model")]
    config = model.model_config
    if config.get("extra") != "forbid":
        found.append(Finding(check, f"{model.__name__} accepts unknown options (extra='forbid')"))
    if not config.get("frozen"):
        found.append(Finding(check, f"{model.__name__} is not frozen (frozen=True)"))
    undescribed = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
    if undescribed:
        found.append(
            Finding(check, f"option(s) without a description: {', '.join(sorted(undescribed))}")
        )
    inline = [
        n
        for n, f in model.model_fields.items()
        if _SECRET_NAMES.search(n) and not _mentions(f.annotation, SecretRef)
    ]
    if inline:
        found.append(
            Finding(
                check, f"secret option(s) not a SecretRef ({{$env}}/{{$file}}): {', '.join(inline)}"
            )
        )
    if source_type.reads not in READ_KINDS:
        found.append(Finding(check, f"reads is {source_type.reads!r}, not one of {READ_KINDS}"))
    collects = tuple(source_type.collects)
    outside = [c for c in collects if c not in RAW]
    if outside:
        found.append(Finding(check, f"collects names field(s) outside RAW: {', '.join(outside)}"))
    needed = [c for c in ("timestamp", "sender", "recipient") if c not in collects]
    if needed:
        found.append(Finding(check, f"collects lacks {', '.join(needed)} (the engine needs them)"))
    return found


# --- chunks ---------------------------------------------------------------------------------
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_STATUS_WORD = re.compile(r"^[A-Za-z][A-Za-z _-]{0,31}$")


def check_chunks(chunks: Sequence[Chunk], max_rows: int = MAX_CHUNK_ROWS) -> list[Finding]:
    """Every chunk is a :class:`Chunk` whose frame has exactly the raw columns, in order and
    dtype (times in UTC), statuses the engine can map, at most ``max_rows`` rows, and
    counts of rejected and skipped rows under plain reason names."""
    found: list[Finding] = []
    not_chunks = sum(1 for c in chunks if not isinstance(c, Chunk))
    if not_chunks:
        found.append(Finding("schema", f"{not_chunks} item(s) yielded are not Chunk objects"))
    real = [c for c in chunks if isinstance(c, Chunk)]
    columns = sum(1 for c in real if list(c.frame.columns) != list(RAW))
    if columns:
        found.append(
            Finding(
                "schema",
                f"{columns} chunk(s) do not have exactly the RAW columns "
                f"{', '.join(RAW)}, in order (use compliance.events.conform_raw)",
            )
        )
    dtypes: Counter[str] = Counter()
    for chunk in real:
        for column, dtype in RAW.items():
            if column in chunk.frame.columns and str(chunk.frame[column].dtype) != dtype:
                dtypes[f"{column} is {chunk.frame[column].dtype}, not {dtype}"] += 1
    for text, count in sorted(dtypes.items()):
        found.append(Finding("schema", f"{count} chunk(s): {text}"))
    spellings: Counter[str] = Counter()
    unreadable = 0
    for chunk in real:
        if "status" not in chunk.frame.columns:
            continue
        values = chunk.frame["status"].dropna().astype(str)
        for value, count in values.value_counts().items():
            value = str(value)
            if value in STATUSES or status_of(value) != "unknown":
                continue
            if _STATUS_WORD.match(value):
                spellings[value] += int(count)
            else:
                unreadable += int(count)
    if spellings:
        listed = ", ".join(f"{s!r} ({n})" for s, n in sorted(spellings.items()))
        found.append(
            Finding(
                "schema",
                f"statuses status_of() cannot map (they become 'unknown'): {listed}; "
                f"yield one of {', '.join(STATUSES)}",
            )
        )
    if unreadable:
        found.append(Finding("schema", f"{unreadable} row(s) hold a status that is no word"))
    for counts_name in ("rejected", "skipped"):
        bad_names = bad_counts = 0
        for chunk in real:
            counts = getattr(chunk, counts_name)
            if not isinstance(counts, Mapping):
                bad_counts += 1
                continue
            bad_names += sum(1 for k in counts if not (isinstance(k, str) and _REASON.match(k)))
            bad_counts += sum(1 for v in counts.values() if not (isinstance(v, int) and v >= 0))
        if bad_names:
            found.append(
                Finding(
                    "schema",
                    f"{bad_names} {counts_name} reason(s) are not plain names "
                    "(lower case, digits, _): a reason names a problem, never a value",
                )
            )
        if bad_counts:
            found.append(Finding("schema", f"{bad_counts} {counts_name} count(s) are not counts"))
    big = [len(c.frame) for c in real if len(c.frame) > max_rows]
    if big:
        found.append(
            Finding("chunks", f"{len(big)} chunk(s) exceed {max_rows} rows (largest {max(big)})")
        )
    return found


#: Raw fields a gateway may not know for every message even when it logs them: the size
#: of a message refused before it was accepted (a Postfix NOQUEUE reject) is unknown.
#: Collected, they must be filled in some rows, not in every one.
WHEN_KNOWN = frozenset({"size"})


def check_collects(frame: pd.DataFrame, collects: Sequence[str], rows: int) -> list[Finding]:
    """On valid input, each collected field is filled in every row (those of
    :data:`WHEN_KNOWN` in at least one) and each other field is empty in every row."""
    found = []
    for column in RAW:
        if column not in frame.columns:
            continue
        values = frame[column]
        empty = values.isna()
        if values.dtype == "string":
            empty = empty | (values.str.strip() == "").fillna(True)
        if column in collects and column in WHEN_KNOWN and len(empty) and empty.all():
            found.append(Finding("collects", f"{column} is collected but empty in every row"))
            continue
        if column in collects and column not in WHEN_KNOWN and empty.any():
            found.append(
                Finding(
                    "collects",
                    f"{column} is collected but empty in {int(empty.sum())} of {rows} valid rows",
                )
            )
        if column not in collects and (~empty).any():
            found.append(
                Finding(
                    "collects",
                    f"{column} is not in collects but filled in {int((~empty).sum())} rows",
                )
            )
    return found


# --- identity -------------------------------------------------------------------------------
def identity_texts(written: Written) -> tuple[list[str], list[str]]:
    """What must not come out of a source, from what a harness wrote: (the addresses, as
    written and normalised, and their local parts of 4 characters or more that are no part
    of a domain written; the planted text of 4 characters or more)."""
    addresses: set[str] = set()
    domains: set[str] = set()
    for column in ("sender", "recipient"):
        values = written.rows[column].dropna().astype(str)
        addresses.update(v.strip() for v in values if v.strip())
        addresses.update(str(v) for v in normalise_addresses(values).dropna())
    for address in list(addresses):
        domains.add(address.rpartition("@")[2].lower())
    locals_ = set()
    for address in addresses:
        local = address.rpartition("@")[0].strip("<> \"'")
        if len(local) >= 4 and not any(local.lower() in d for d in domains):
            locals_.add(local)
    people = sorted(addresses | locals_, key=len, reverse=True)
    planted = sorted({t for t in written.forbidden if len(t.strip()) >= 4}, key=len, reverse=True)
    return people, planted


def _texts(frame: pd.DataFrame) -> str:
    """Every value of a frame (and its column names) as one searchable text."""
    parts = [str(c) for c in frame.columns]
    for column in frame.columns:
        values = frame[column].dropna()
        if len(values):
            parts.extend(str(v) for v in pd.unique(values.astype(str)))
    return "\x00".join(parts)


def _hits(text: str, needles: Sequence[str]) -> int:
    lower = text.lower()
    return sum(1 for n in needles if n.lower() in lower)


def check_identity(
    chunks: Sequence[Chunk],
    written: Written,
    minimise: Minimiser | None = None,
    units: Sequence[ReadUnit] = (),
) -> list[Finding]:
    """No planted text (subject, body marker, IP, name) in any raw row, reason, unit key,
    format or bookmark; no address either in a unit's key, format or bookmark; and with
    ``minimise``, nothing of an address (nor a local part) or planted text in anything the
    pipeline keeps of the chunks."""
    check, found = "identity", []
    people, planted = identity_texts(written)
    raw_hits = 0
    for chunk in chunks:
        if isinstance(chunk, Chunk):
            raw_hits += _hits(_texts(chunk.frame), planted)
    if raw_hits:
        found.append(
            Finding(
                check,
                f"{raw_hits} planted text(s) (subjects, IPs, names) reach raw rows: "
                "drop every field but the raw ones when parsing",
            )
        )
    labels = [
        str(x)
        for chunk in chunks
        if isinstance(chunk, Chunk)
        for x in (*chunk.rejected, *chunk.skipped)
    ]
    if _hits("\x00".join(labels), people + planted):
        found.append(Finding(check, "a rejected or skipped reason quotes input text"))
    for number, unit in enumerate(units):
        for what in ("key", "format", "bookmark"):
            value = getattr(unit, what, None)
            if value is None:
                continue
            text = str(value)
            if "@" in text or _hits(text, people + planted):
                found.append(
                    Finding(check, f"unit {number}: its {what} holds an address or input text")
                )
    if minimise is None:
        return found
    kept = 0
    leaks = Counter[str]()
    for chunk in chunks:
        if not isinstance(chunk, Chunk) or not len(chunk.frame):
            continue
        for frame in minimise(chunk.frame):
            kept += len(frame)
            text = _texts(frame)
            leaks["address or local part"] += _hits(text, people)
            leaks["planted text"] += _hits(text, planted)
            if "@" in text:
                leaks["'@'"] += 1
    for what, count in sorted(leaks.items()):
        if count:
            found.append(Finding(check, f"{count} {what}(s) survive the pipeline"))
    if not kept:
        found.append(Finding(check, "the pipeline kept nothing of the input: nothing was checked"))
    return found


# --- reading as the engine does -----------------------------------------------------------
@dataclass
class _Store:
    """The engine's commit rules, in memory: units whole, bookmarks forward only."""

    bookmark: str | None = None
    done: set[str] = field(default_factory=set)
    frames: list[pd.DataFrame] = field(default_factory=list)
    keyed: set[str] = field(default_factory=set)
    once_rows: Counter[str] = field(default_factory=Counter)
    problems: set[str] = field(default_factory=set)

    def commit(self, unit: ReadUnit, chunks: list[Chunk], started: dt.datetime) -> None:
        frame = _frame_of(chunks)
        self.frames.append(frame)
        keys = set(row_keys(frame))
        self.keyed |= keys
        if unit.once:
            self.done.add(unit.key)
            self.once_rows.update(keys)
        given: object = unit.bookmark
        mark: str | None = None
        if given is not None:
            mark = given if isinstance(given, str) else str(given)
            if not isinstance(given, str):
                self.problems.add("a unit's bookmark is not a string")
            moment = _as_time(mark)
            if moment is not None and moment > started:
                self.problems.add("a unit's bookmark is past the run's start (Singer rule)")
        else:  # the latest day read (the engine's is that of rows it kept)
            earliest, latest = TimestampRange().bounds()
            stamps = frame["timestamp"]
            stamps = stamps[stamps.notna() & (stamps >= earliest) & (stamps <= latest)]
            mark = None if stamps.empty else str(stamps.max().date())
        if mark is not None and (self.bookmark is None or mark > self.bookmark):
            self.bookmark = mark

    def keys(self) -> set[str]:
        return set(self.keyed)

    def duplicates(self) -> int:
        return sum(1 for n in self.once_rows.values() if n > 1)


def _as_time(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass
class _Run:
    completed: bool
    read: list[tuple[ReadUnit, list[Chunk]]]
    planned: list[ReadUnit]


def _run(
    harness: Harness, folder: Path, store: _Store, kill: tuple[int, int] | None = None
) -> _Run:
    """One simulated scheduled run: plan from the store's bookmark, skip ``once`` units
    done, commit each unit whole; ``kill`` = (unit, chunks taken) stops it there."""
    started = harness.now()
    source = harness.source(folder)
    read: list[tuple[ReadUnit, list[Chunk]]] = []
    try:
        planned = source.units(SourceState(store.bookmark, started))
        todo = [u for u in planned if not (u.once and u.key in store.done)]
        for number, unit in enumerate(todo):
            taken: list[Chunk] = []
            chunks: Iterator[Chunk] = iter(unit.chunks())
            try:
                for count in itertools.count():
                    if kill == (number, count):
                        return _Run(False, read, planned)
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    taken.append(chunk)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            store.commit(unit, taken, started)
            read.append((unit, taken))
        return _Run(True, read, planned)
    finally:
        source.close()


def _failure(check: str, what: str, exc: BaseException, people: Sequence[str] = ()) -> Finding:
    text = str(exc).splitlines()[0] if str(exc) else ""
    quoted = bool(text) and ("@" in text or _hits(text, people) > 0)
    said = " (its message quotes input: never put a value in an error)" if quoted else f": {text}"
    return Finding(check, f"{what} raised {type(exc).__name__}{said if text else ''}")


# --- the checks that read ---------------------------------------------------------------------
def check_malformed(harness: Harness, folder: Path) -> list[Finding] | None:
    """Input with known bad rows: each counted by its reason (by the connector, or left
    empty for the pipeline), every good row read, nothing raised. None when the harness
    writes no such input."""
    folder.mkdir(parents=True, exist_ok=True)
    written = harness.write_malformed(folder)
    if written is None:
        return None
    people, _ = identity_texts(written)
    chunks: list[Chunk] = []
    source = harness.source(folder)
    try:
        for unit in source.units(SourceState(None, harness.now())):
            chunks.extend(unit.chunks())
    except Exception as exc:
        return [_failure("malformed", "reading input with bad rows", exc, people)]
    finally:
        source.close()
    found = [f for f in check_chunks(chunks) if f.check == "schema"]
    frame = _frame_of(chunks)
    counted: Counter[str] = Counter()
    for chunk in chunks:
        counted.update(chunk.rejected)
    downstream, kept = pipeline_rejects(frame)
    counted.update(downstream)
    expected = Counter({k: v for k, v in written.rejected.items() if v})
    for reason in sorted(set(counted) | set(expected)):
        if counted[reason] != expected[reason]:
            found.append(
                Finding(
                    "malformed",
                    f"expected {expected[reason]} row(s) rejected as {reason}, counted "
                    f"{counted[reason]}",
                )
            )
    found += check_rows(frame[kept.to_numpy()], written, "malformed", "input with bad rows")
    return found


def _peak(harness: Harness, folder: Path) -> tuple[int, int]:
    """Peak bytes (Python and NumPy by tracemalloc, Arrow's pool sampled at each chunk) of
    reading everything in ``folder`` one chunk at a time, keeping nothing; and the rows
    of the largest chunk."""
    source = harness.source(folder)
    arrow_base = pa.total_allocated_bytes()
    arrow_peak = rows = 0
    tracemalloc.start()
    try:
        for unit in source.units(SourceState(None, harness.now())):
            for chunk in unit.chunks():
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_base)
                rows = max(rows, len(chunk.frame))
                del chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        source.close()
    return int(peak + arrow_peak), rows


def check_memory(
    harness: Harness,
    folder: Path,
    messages: int = 10_000,
    factor: int = 10,
    growth: float = 2.0,
    slack: int = 48 << 20,
) -> tuple[list[Finding], tuple[int, int]]:
    """Reading ``factor`` times more input needs no more memory than its larger chunks
    explain: the peak may grow with the largest chunk's rows, at most ``growth`` times
    as much per row (plus ``slack`` bytes: read-ahead buffers), never with the input.
    A reader that loads a whole file, or keeps what it read, fails. Most telling when
    ``messages`` already fill a chunk or two. Returns the findings and the two peaks in
    bytes."""
    small, large = folder / "small", folder / "large"
    small.mkdir(parents=True, exist_ok=True)
    large.mkdir(parents=True, exist_ok=True)
    harness.write(small, messages, 101)
    harness.write(large, messages * factor, 102)
    (little, little_rows), (big, big_rows) = _peak(harness, small), _peak(harness, large)
    scale = max(1.0, big_rows / max(little_rows, 1))
    allowed = growth * little * scale + slack
    found = []
    if big > allowed:
        found.append(
            Finding(
                "memory",
                f"reading {factor}x the input took {big / 2**20:.0f} MiB (chunks of up to "
                f"{big_rows} rows) against {little / 2**20:.0f} MiB (chunks of up to "
                f"{little_rows} rows); allowed {allowed / 2**20:.0f} MiB: read in bounded "
                "chunks and keep nothing between them",
            )
        )
    return found, (little, big)


def _units_checks(
    harness: Harness, folder: Path, first: list[ReadUnit], people: Sequence[str]
) -> list[Finding]:
    check, found = "units", []
    again_source = harness.source(folder)
    try:
        again = again_source.units(SourceState(None, harness.now()))
        source_type = type(again_source)
        try:
            if source_type.reads in ("window", "stream"):
                try:
                    again_source.units_between(None, None, harness.now())
                except PeriodRequired:
                    pass
                else:
                    found.append(
                        Finding(
                            check,
                            "units_between without a begin does not raise "
                            "PeriodRequired (a service read by time needs one)",
                        )
                    )
        except Exception as exc:
            found.append(_failure(check, "units_between(None, None, now)", exc, people))
        try:
            steps = again_source.check()
            if not all(isinstance(s, tuple) and len(s) == 2 for s in steps):
                found.append(Finding(check, "check() does not return (ok, text) steps"))
            elif not all(ok for ok, _ in steps):
                found.append(Finding(check, "check() reports a failed step on a working setup"))
            if _hits("\x00".join(str(s) for s in steps), people):
                found.append(Finding(check, "check() quotes an address"))
        except Exception as exc:
            found.append(_failure(check, "check()", exc, people))
    finally:
        again_source.close()
    once_first = [u.key for u in first if u.once]
    once_again = [u.key for u in again if u.once]
    if once_first != once_again:
        found.append(
            Finding(
                check,
                "planning twice gives once-units different keys: a key must "
                "identify the content (a file's SHA-256), not the plan",
            )
        )
    for number, unit in enumerate(first):
        if not isinstance(unit.key, str) or not unit.key:
            found.append(Finding(check, f"unit {number}: its key is not a non-empty string"))
        fmt = unit.format
        if not isinstance(fmt, str) or not fmt or any(c in fmt for c in "/\\@"):
            found.append(Finding(check, f"unit {number}: its format is not a plain name"))
        if unit.distributable:
            try:
                pickle.loads(pickle.dumps(unit))  # noqa: S301 (our own object)
            except Exception as exc:
                found.append(
                    Finding(
                        check,
                        f"unit {number} is distributable but cannot be sent to a "
                        f"worker ({type(exc).__name__}); set distributable = False",
                    )
                )
    return found


def _split_checks(units: Sequence[ReadUnit], people: Sequence[str]) -> list[Finding]:
    found = []
    for number, unit in enumerate(units):
        try:
            parts = unit.split(3)
            if len(parts) < 2:
                continue
            whole = Counter(row_keys(_frame_of(unit.chunks())))
            pieces = Counter(k for p in parts for k in row_keys(_frame_of(p.chunks())))
        except Exception as exc:
            found.append(_failure("units", f"unit {number}: split(3)", exc, people))
            continue
        if whole != pieces:
            found.append(
                Finding(
                    "units",
                    f"unit {number}: its {len(parts)} parts do not read exactly "
                    "what the whole unit reads",
                )
            )
    return found


def _resume(
    harness: Harness, folder: Path, clean: _Store, counts: Sequence[int], max_kills: int | None
) -> tuple[list[Finding], int]:
    check = "resume"
    points = [(u, k) for u, n in enumerate(counts) for k in range(n + 1)]
    if max_kills is not None and len(points) > max_kills:
        step = len(points) / max_kills
        points = sorted({points[int(i * step)] for i in range(max_kills)} | {points[-1]})
    want = clean.keys()
    lost: list[str] = []
    extra: list[str] = []
    twice: list[str] = []
    marks: list[str] = []
    problems: set[str] = set()
    for unit, taken in points:
        store = _Store()
        where = f"unit {unit} after {taken} chunk(s)"
        first = _run(harness, folder, store, (unit, taken))
        if first.completed:
            problems.add("a second plan of the same input differs from the first")
            continue
        _run(harness, folder, store)
        got = store.keys()
        if want - got:
            lost.append(f"{where}: {len(want - got)} row(s) lost")
        if got - want:
            extra.append(f"{where}: {len(got - want)} row(s) that a clean read does not yield")
        if store.duplicates() > clean.duplicates():
            twice.append(f"{where}: {store.duplicates() - clean.duplicates()} row(s) read twice")
        if store.bookmark != clean.bookmark:
            marks.append(where)
        problems |= store.problems
    found = [Finding(check, text) for text in sorted(problems)]
    for items, what in (
        (lost, "a run resumed after a kill loses rows"),
        (extra, "a run resumed after a kill reads rows a clean run does not"),
        (twice, "a run resumed after a kill reads a once-unit's rows again"),
        (marks, "a run resumed after a kill ends with another bookmark than a clean run"),
    ):
        if items:
            shown = "; ".join(items[:3]) + (
                f"; and {len(items) - 3} more" if len(items) > 3 else ""
            )
            found.append(Finding(check, f"{what} ({len(items)} of {len(points)} kills): {shown}"))
    return found, len(points)


def check_source(
    harness: Harness,
    folder: Path,
    *,
    messages: int = 300,
    seed: int = 7,
    minimise: Minimiser | None = None,
    max_chunk_rows: int = MAX_CHUNK_ROWS,
    max_kills: int | None = None,
    memory: bool = False,
    memory_messages: int = 10_000,
    skip: Iterable[str] = (),
    raise_on_findings: bool = True,
) -> Report:
    """Run every check of :data:`CHECKS` over the source ``harness`` builds, with input it
    writes into subfolders of ``folder`` (a new, empty folder: a test's ``tmp_path``).

    ``messages``: how much valid input to write (every unit's every chunk is killed
    once, so keep it small). ``minimise``: the real pipeline (see the guide), for the
    ``identity`` check to look past the connector. ``max_kills``: at most this many
    kill points (spread evenly; default all). ``memory``: also run :func:`check_memory`
    (slow: it writes ``memory_messages`` and ten times as many). ``skip``: checks not
    to run. Raises :class:`ConformanceError` listing every finding unless
    ``raise_on_findings`` is False; returns the :class:`Report`.
    """
    skipped = set(skip)
    unknown = skipped - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(sorted(unknown))}; known: {CHECKS}")
    folder.mkdir(parents=True, exist_ok=True)
    inputs = folder / "input"
    inputs.mkdir(exist_ok=True)
    written = harness.write(inputs, messages, seed)
    people, _ = identity_texts(written)
    probe = harness.source(inputs)
    probe.close()
    report = Report(source=type(probe).__name__)

    def wanted(check: str) -> bool:
        if check in skipped:
            report.skipped[check] = "asked to skip"
            return False
        report.ran.append(check)
        return True

    def add(findings: Iterable[Finding]) -> None:
        report.findings.extend(f for f in findings if f.check not in skipped)

    if wanted("declarations"):
        add(check_declarations(type(probe)))

    clean = _Store()
    try:
        run = _run(harness, inputs, clean)
    except Exception as exc:
        report.findings.append(_failure("rows", "a clean read of valid input", exc, people))
        return _finish(report, raise_on_findings)
    chunks = [c for _, taken in run.read for c in taken]
    units = [u for u, _ in run.read]
    frame = _frame_of(chunks)
    report.rows, report.units, report.chunks = len(frame), len(units), len(chunks)

    if wanted("units"):
        add(_units_checks(harness, inputs, run.planned, people))
        add(_split_checks(units, people))
    schema = check_chunks(chunks, max_chunk_rows)
    if wanted("schema"):
        add(f for f in schema if f.check == "schema")
    if wanted("chunks"):
        add(f for f in schema if f.check == "chunks")
    if wanted("rows"):
        rejected: Counter[str] = Counter()
        for chunk in chunks:
            rejected.update(chunk.rejected)
        downstream, _ = pipeline_rejects(frame)
        rejected.update(downstream)
        if +rejected:
            reasons = ", ".join(f"{r} ({n})" for r, n in sorted(rejected.items()) if n)
            add([Finding("rows", f"valid input: rows rejected: {reasons}")])
        add(check_rows(frame, written))
    if wanted("collects"):
        add(check_collects(frame, type(probe).collects, len(frame)))
    if wanted("identity"):
        add(check_identity(chunks, written, minimise, units))
    if wanted("resume"):
        try:
            counts = [len(taken) for _, taken in run.read]
            found, report.kills = _resume(harness, inputs, clean, counts, max_kills)
            add(found)
        except Exception as exc:
            add([_failure("resume", "a run resumed after a kill", exc, people)])
    if wanted("reread"):
        try:
            again = _run(harness, inputs, clean)
            fresh = {k for _, t in again.read for k in row_keys(_frame_of(t))} - set(
                row_keys(frame)
            )
            if fresh:
                add(
                    [
                        Finding(
                            "reread",
                            f"planning again after a complete read yields "
                            f"{len(fresh)} row(s) never read before",
                        )
                    ]
                )
            repeated = [u for u, _ in again.read if u.once]
            if repeated:
                add(
                    [
                        Finding(
                            "reread",
                            f"{len(repeated)} once-unit(s) read again after a "
                            "complete read (their keys changed)",
                        )
                    ]
                )
        except Exception as exc:
            add([_failure("reread", "planning again after a complete read", exc, people)])
    if wanted("append"):
        try:
            more = harness.append(inputs, max(messages // 3, 1), seed + 1)
            if more is None:
                report.ran.remove("append")
                report.skipped["append"] = "the harness cannot append"
            else:
                later = _run(harness, inputs, clean)
                every = written + more
                add(
                    check_rows(
                        pd.concat(clean.frames, ignore_index=True),
                        every,
                        "append",
                        "input and appended input",
                    )
                )
                added = [c for _, t in later.read for c in t]
                add(
                    f
                    for f in check_chunks(added, max_chunk_rows)
                    if f.check in ("schema", "chunks")
                )
                if "identity" not in skipped:
                    add(check_identity(added, more, minimise, [u for u, _ in later.read]))
        except Exception as exc:
            add([_failure("append", "reading appended input", exc, people)])
    if wanted("malformed"):
        try:
            found_malformed = check_malformed(harness, folder / "malformed")
        except Exception as exc:
            found_malformed = [_failure("malformed", "writing input with bad rows", exc)]
        if found_malformed is None:
            report.ran.remove("malformed")
            report.skipped["malformed"] = "the harness writes no malformed input"
        else:
            add(found_malformed)
    if memory and "memory" not in skipped:
        report.ran.append("memory")
        found_memory, report.memory = check_memory(harness, folder / "memory", memory_messages)
        add(found_memory)
    elif "memory" not in skipped:
        report.skipped["memory"] = "not asked (memory=True)"
    return _finish(report, raise_on_findings)


def _finish(report: Report, raise_on_findings: bool) -> Report:
    if raise_on_findings:
        report.raise_for_findings()
    return report
