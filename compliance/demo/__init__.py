"""The bundled demo: synthetic data with reserved names only (``.example``, ``.test``).

The files next to this module are produced by :func:`generate` (a test checks they
still are). The job runs twice, as a scheduled job would: on 15 October over the first
half of the month's export, and on 30 October over the second half. The story they
tell, October 2026, organisation ``corp.example``:

* a salesperson writes to an escort-advertising site on several days and gets a reply:
  a person alert on 15 October, *updated* on 30 October when they write again;
* a member of a four-person team does too: an alert reported under the parent unit,
  *unchanged* in the second report;
* three engineers of one team each write once to the same site: a *new* cluster alert
  on 30 October, and no person alert (one message each);
* a finance employee only *receives* ten messages from a listed site on six days, and
  a spam wave from another reaches two teams: no alert for anyone, only the
  *received only* figure;
* the investigations team contacts such sites on purpose: out of scope;
* a look-alike domain (``notescort-ads.test``) and an adult site of another category
  raise nothing;
* a few malformed rows are rejected and counted.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from importlib import resources
from pathlib import Path

DEMO_FIRST_DAY = dt.date(2026, 10, 1)
DEMO_LAST_DAY = dt.date(2026, 10, 30)
#: The two scheduled runs: each reads the export of its half of the month.
RUNS = (("message_trace_1.csv", dt.date(2026, 10, 15)), ("message_trace_2.csv", DEMO_LAST_DAY))
SPLIT_DAY = 15  # days before it (from 1 October) are in the first export
ORG = "corp.example"
FILES = (
    "message_trace_1.csv",
    "message_trace_2.csv",
    "directory.csv",
    "escort-ads.txt",
    "adult.hosts",
)

UNITS = {
    "Sales/EMEA": 40,
    "Sales/EMEA/North": 4,
    "Sales/Americas": 30,
    "Engineering/Platform": 50,
    "Engineering/Apps": 60,
    "Finance": 30,
    "Legal/Investigations": 6,
    "HR": 20,
}
NORMAL_DOMAINS = (
    "partner.example",
    "supplier.test",
    "customer-one.example",
    "customer-two.example",
    "news.example",
    "travel.test",
    "bank.example",
    "mail.lists.example",
)
ESCORT_DOMAINS = ("escort-ads.test", "velvet-club.test", "night-companions.test")
ADULT_DOMAINS = ("adult-video.test", "cams.adult-video.test")
SUBJECTS = ("Quarterly figures", "Re: order 4471", "Meeting notes", "Invoice", "Hello")

CONFIG = """\
# Demo configuration: every path is relative to this file.
organisation:
  domains: [corp.example]
directory: directory.csv
sources:
  - name: exchange-exports
    type: exchange
    path: exports/
feeds:
  - {path: escort-ads.txt, category: escort-ads, name: demo-escort-ads}
  - {path: adult.hosts, category: adult, name: demo-adult}
policies: [{policies}]
store: var/compliance.db
reports:
  dir: reports
  period: 30d
  min_group_size: 5
  formats: [html, json]
schedule:
  every_minutes: 60
  lock: var/compliance.lock
"""


def _people() -> list[tuple[str, str]]:
    people = []
    n = 0
    for unit, size in UNITS.items():
        for _ in range(size):
            n += 1
            people.append((f"user{n:04d}@{ORG}", unit))
    return people


def _stamp(day: int, rng: random.Random) -> dt.datetime:
    date = DEMO_FIRST_DAY + dt.timedelta(days=day)
    return dt.datetime(date.year, date.month, date.day, rng.randint(7, 19), rng.randint(0, 59))


def _us(ts: dt.datetime) -> str:
    """Windows PowerShell 5.1, en-US culture: 10/5/2026 9:03:00 AM."""
    hour = ts.hour % 12 or 12
    ampm = "AM" if ts.hour < 12 else "PM"
    return f"{ts.month}/{ts.day}/{ts.year} {hour}:{ts.minute:02d}:{ts.second:02d} {ampm}"


def generate_rows() -> list[list[str]]:
    """The demo's message-trace rows (without header), deterministic."""
    rng = random.Random(20261001)
    people = _people()
    by_unit: dict[str, list[str]] = {}
    for address, unit in people:
        by_unit.setdefault(unit, []).append(address)
    events: list[tuple[dt.datetime, str, str, str]] = []

    def add(day: int, sender: str, recipient: str, status: str = "Delivered") -> None:
        events.append((_stamp(day, rng), sender, recipient, status))

    for _ in range(4000):
        person, _unit = rng.choice(people)
        other = f"contact{rng.randint(1, 400)}@{rng.choice(NORMAL_DOMAINS)}"
        day = rng.randint(0, 29)
        if rng.random() < 0.5:
            add(day, person, other)
        else:
            add(day, other, person)
    for _ in range(300):
        a, b = rng.sample(people, 2)
        add(rng.randint(0, 29), a[0], b[0])

    seller = by_unit["Sales/EMEA"][7]
    add(2, seller, "booking@escort-ads.test")
    add(2, seller, "booking@escort-ads.test")
    add(8, seller, "Booking@WWW.Escort-Ads.TEST.")
    add(8, "no-reply@escort-ads.test", seller)  # a reply: part of the exchange
    add(18, seller, "booking@escort-ads.test")  # after the first report: the alert grows
    add(20, seller, "booking@escort-ads.test")

    north = by_unit["Sales/EMEA/North"][1]
    for day in (11, 11, 13):
        add(day, north, "hello@night-companions.test")

    for offset, engineer in zip((14, 16, 19), by_unit["Engineering/Platform"][3:6], strict=True):
        add(offset, engineer, "members@velvet-club.test")

    investigator = by_unit["Legal/Investigations"][0]
    for day in (3, 4, 10, 17, 24):
        add(day, investigator, "ads@escort-ads.test")

    accountant = by_unit["Finance"][2]
    for day in (5, 6, 6, 20):
        add(day, accountant, "sales@notescort-ads.test")

    receiver = by_unit["Finance"][9]  # never writes to the site: received only
    for n, day in enumerate((2, 3, 5, 9, 10, 12, 2, 3, 5, 9)):
        add(day, f"offers{n}@escort-ads.test", receiver)
    for unit, day, reached in (("Engineering/Apps", 17, 25), ("Sales/Americas", 22, 20)):
        for person in by_unit[unit][:reached]:  # a spam wave
            add(day, "promo@velvet-club.test", person, "FilteredAsSpam")

    hr = by_unit["HR"][4]
    for day in (9, 21):
        add(day, "promo@cams.adult-video.test", hr, "FilteredAsSpam")

    add(12, f"contractor@{ORG}", "info@partner.example")
    add(15, "relay@partner.example", "other@supplier.test", "Failed")

    events.sort(key=lambda e: e[0])
    rows = []
    for i, (ts, sender, recipient, status) in enumerate(events):
        size = str(rng.randint(2_000, 900_000))
        trace = f"{rng.getrandbits(32):08x}-0000-4000-8000-{i:012x}"
        rows.append(
            [
                "exchange.corp.example",
                "False",
                ORG,
                f"<{trace}@mail.{ORG}>",
                _us(ts),
                sender,
                recipient,
                rng.choice(SUBJECTS),
                status,
                "",
                "192.0.2.10",
                size,
                trace,
                "10/1/2026 12:00:00 AM",
                "10/31/2026 12:00:00 AM",
                str(i),
            ]
        )
    bad_time = list(rows[100])
    bad_time[4] = "yesterday"
    no_recipient = list(rows[200])
    no_recipient[6] = ""
    rows.insert(101, bad_time)
    rows.insert(202, no_recipient)
    return rows


def _half(row: list[str]) -> int:
    """Which export (0 or 1) a row belongs to, by its day of October."""
    month, day = row[4].split("/")[:2] if "/" in row[4] else ("10", "1")
    return 0 if int(day) <= SPLIT_DAY and month == "10" else 1


HEADER = [
    "PSComputerName", "PSShowComputerName", "Organization", "MessageId", "Received",
    "SenderAddress", "RecipientAddress", "Subject", "Status", "ToIP", "FromIP", "Size",
    "MessageTraceId", "StartDate", "EndDate", "Index",
]  # fmt: skip


def _quoted(fields: list[str]) -> str:
    return ",".join('"' + f.replace('"', '""') + '"' for f in fields)


def generate(folder: Path) -> None:
    """Write the demo's data files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = generate_rows()
    for half, (name, _today) in enumerate(RUNS):
        lines = ["#TYPE Deserialized.Microsoft.Exchange.Management.FfoReporting.MessageTrace"]
        lines.append(_quoted(HEADER))
        mine = [row for row in rows if _half(row) == half]
        for i, row in enumerate(mine):
            lines.append(_quoted(row))
            if i == 300 and half == 0:
                lines.append('"exchange.corp.example","False","truncated row"')
        (folder / name).write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))

    directory = ["userPrincipalName,displayName,mail,id,department,jobTitle,accountEnabled"]
    for n, (address, unit) in enumerate(_people(), start=1):
        directory.append(
            f"{address},Demo User {n:04d},{address},"
            f"00000000-0000-4000-8000-{n:012d},{unit},Staff,True"
        )
    (folder / "directory.csv").write_text("\n".join(directory) + "\n", encoding="utf-8")

    feed = ["# Demo escort-advertising feed: reserved .test names only", "#", *ESCORT_DOMAINS]
    (folder / "escort-ads.txt").write_text("\n".join(feed) + "\n", encoding="utf-8")
    hosts = ["# Demo adult feed in hosts format", "127.0.0.1 localhost"]
    hosts += [f"0.0.0.0 {d}" for d in ADULT_DOMAINS]
    (folder / "adult.hosts").write_text("\n".join(hosts) + "\n", encoding="utf-8")


def bundled(name: str) -> bytes:
    """A bundled demo file's bytes."""
    return resources.files("compliance.demo").joinpath(name).read_bytes()


def shipped_policies() -> list[Path]:
    """The policy files shipped with the package (a wheel), or in the source checkout."""
    try:
        folder = resources.files("compliance.shipped_policies")
        found = [Path(str(e)) for e in folder.iterdir() if e.name.endswith(".yaml")]
    except ModuleNotFoundError:  # editable install: the top-level policies/ folder
        checkout = Path(__file__).resolve().parents[2] / "policies"
        found = list(checkout.glob("*.yaml"))
    return sorted(found)


def install_demo(folder: Path) -> Path:
    """Copy the bundled data and a config into ``folder`` (store and exports reset); return
    the config. The exports folder starts empty: :func:`deliver` drops each run's file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_bytes(bundled(name))
    target = folder / "policies"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for entry in shipped_policies():
        (target / entry.name).write_bytes(entry.read_bytes())
    shutil.rmtree(folder / "var", ignore_errors=True)
    shutil.rmtree(folder / "reports", ignore_errors=True)
    shutil.rmtree(folder / "exports", ignore_errors=True)
    (folder / "exports").mkdir()
    config = folder / "compliance.yaml"
    config.write_text(CONFIG.replace("{policies}", "policies/"), encoding="utf-8")
    return config


def deliver(folder: Path, name: str) -> None:
    """Drop one export into the demo's exports folder, as a mail admin's script would."""
    (folder / "exports" / name).write_bytes((folder / name).read_bytes())
