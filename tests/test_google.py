"""The ``google-workspace`` source: Gmail logs from BigQuery and from the Reports API.

What is real and what stands in:

* **BigQuery.** google-cloud-bigquery is not installed here. :class:`DuckBigQuery` runs
  the connector's SQL text on DuckDB over tables shaped like the export (``activity``
  with ``record_type``, ``time_usec``, ``_PARTITIONTIME`` and the nested ``gmail`` record;
  legacy ``daily_YYYYMMDD`` tables behind a ``daily_*`` view with ``_TABLE_SUFFIX``). It
  rewrites only parameter markers (``@x`` to ``$x``) and the backquoted table name; the
  rest (nested fields, ``cross join unnest``, ``group by``, the outcome ``case``) runs as
  written. So the query's logic is tested; BigQuery's own dialect, billing and
  :class:`connectors.google.CloudBigQuery` against the real library are not (that class
  is checked only against a fake of the documented API, which catches misspelt calls).
* **Reports API.** :class:`ReportsApi` is a real HTTPS server on loopback (a trustme CA)
  with the token endpoint the service-account key names (google-auth signs a JWT
  assertion; the server verifies it with the key's public half) and the Gmail activities
  endpoint with the documented rules: both bounds required, at most 30 days apart,
  ``maxResults`` at most 1000, ``nextPageToken`` paging, newest first. Where Google does
  not document the shape of ``message_info`` in this API, the server varies it (nested
  records, dotted names, ``flattened_destinations`` only).

:func:`gmail_traffic` makes realistic Gmail logs (several log rows per message and
recipient, internal mail, inbound spam, quarantine, rejections, deferrals, bounces,
several recipients, user actions after delivery) and the rows a reader must yield.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import secrets
import ssl
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import jwt
import pandas as pd
import pyarrow as pa
import pytest
import trustme
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import connectors.google as google
from compliance.cli import cli
from compliance.errors import ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW, STATUSES
from connectors.base import PeriodRequired, Source, SourceState, create_source, source_type
from connectors.google import (
    OUTCOMES,
    GoogleWorkspaceOptions,
    GoogleWorkspaceSource,
    QueryParam,
    activities_chunk,
    flatten_parameters,
    outcome,
    result_chunk,
    split_windows,
    window_params,
)
from connectors.testing import Harness, Written, check_source
from tests.conftest import read_all_bytes, store_db

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PACIFIC = dt.timezone(dt.timedelta(hours=-8))  # the export cuts days at Pacific midnight
PROJECT, DATASET = "corp-logs-prod", "workspace_logs"
ADMIN = "reports-admin@corp.example"  # the impersonated admin: never an input address
ESCORT_SITE = "bookings.agency.escorts.test"
# canaries: in every log row, never in anything the reader yields or the store keeps
SUBJECT = "Quarterly figures for Lisbon"
DISPLAY_NAME = "Distinctive Display Name"
ATTACHMENT = "salary-review-2026.xlsx"
CLIENT_IP = "198.51.100.23"
RELAY_IP = "203.0.113.77"


# --- realistic Gmail logs ------------------------------------------------------------------
@dataclass
class Traffic:
    """Gmail log rows (the BigQuery field names, nested) and the rows to expect."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: (message id, sender, recipient): its final status, all outcomes considered
    final: dict[tuple[str, str, str], str] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    #: (message id, sender, recipient): its outcomes (usec, code, status, size)
    outcomes: dict[tuple[str, str, str], list[tuple[int, int, str, int]]] = field(
        default_factory=dict
    )

    def emit(
        self,
        usec: int,
        *,
        met: int,
        act: int | None,
        mid: str,
        sender: str,
        to: Sequence[str],
        size: int,
        success: bool = True,
        spam: bool | None = False,
        counts_as: str | None = None,
        owner: str | None = None,
    ) -> None:
        """One Gmail log row; ``counts_as`` is the status the row says (None: no outcome),
        as read from Google's documentation by the test's author, not by the connector."""
        inbound = not sender.endswith("@corp.example")
        self.events.append(
            {
                "time_usec": usec,
                "email": owner or (to[0] if inbound else sender),
                "ip_address": CLIENT_IP,
                "event_info": {
                    "timestamp_usec": usec,
                    "elapsed_time_usec": 1200,
                    "success": success,
                    "mail_event_type": met,
                },
                "message_info": {
                    "action_type": act,
                    "rfc2822_message_id": mid,
                    "subject": SUBJECT,
                    "payload_size": size,
                    "source": {
                        "address": sender,
                        "service": "smtp-inbound" if inbound else "gmail-ui",
                        "from_header_address": sender,
                        "from_header_displayname": DISPLAY_NAME,
                    },
                    "destination": [
                        {
                            "address": r,
                            "service": "gmail-for-work-catchall"
                            if r.endswith("@corp.example")
                            else "smtp-outbound",
                            "selector": "",
                        }
                        for r in to
                    ],
                    "is_spam": spam,
                    "attachment": [{"file_name": ATTACHMENT, "sha256": "ab" * 32}],
                    "connection_info": {
                        "client_ip": CLIENT_IP,
                        "smtp_in_connect_ip": RELAY_IP,
                        "is_internal": not inbound,
                    },
                },
            }
        )
        self.addresses.update([sender, *to])
        if counts_as is None:
            return
        code = OUTCOMES.index(counts_as)
        for r in to:
            key_mid = mid or f"gmail-trace:{usec}"
            self.outcomes.setdefault((key_mid, sender, r), []).append((usec, code, counts_as, size))

    def settle(self) -> Traffic:
        for key, found in self.outcomes.items():
            self.final[key] = max(found, key=lambda o: (o[0], o[1]))[2]
        return self


def _usec(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


PEOPLE = [f"u{n}@corp.example" for n in range(1, 18)] + ["u30@corp.example", "u31@corp.example"]
ALIASES = ["alias2@corp.example", "alias5@corp.example", "alias9@corp.example"]
EXTERNAL = (
    [f"partner{k}.example" for k in range(40)]
    + [f"shop{k}.test" for k in range(25)]
    + ["news.letters.example", "mail.vendor.test", "eu.support.saas.example"]
)
LOCAL_PARTS = ["sales", "info", "anna.berg", "j.smith", "noreply", "orders", "team", "k.tanaka"]


def gmail_traffic(
    n: int, start: dt.datetime, hours: float, seed: int = 7, escort: bool = True
) -> Traffic:
    """``n`` messages spread over ``hours`` from ``start``, as Gmail logs them, and what a
    reader must yield (all of it in ``[start, start + hours + 2 h)``). With ``escort``, u1
    writes to an escort-advertising site on three days (a repeated-contact alert when the
    span covers three days), u3's one message there bounces, and the site's spam to u2 is
    filtered (it never counts)."""
    rng = random.Random(seed)
    t = Traffic()
    span = int(hours * 3600)

    def external() -> str:
        return f"{rng.choice(LOCAL_PARTS)}{rng.randrange(90)}@{rng.choice(EXTERNAL)}"

    def internal() -> str:
        return rng.choice(PEOPLE + ALIASES)

    for i in range(n):
        at = _usec(start) + rng.randrange(span * 1_000_000)
        size = rng.randrange(2_000, 4_000_000)
        kind = rng.choices(
            [
                "out",
                "in",
                "internal",
                "deferred",
                "stuck",
                "bounce",
                "spam",
                "quarantine",
                "reject",
                "late-spam",
            ],
            [35, 25, 12, 5, 2, 5, 8, 3, 3, 2],
        )[0]
        gmail_id = f"<CA+{i:06d}{rng.randrange(16**8):08x}@mail.gmail.com>"
        if kind in ("out", "deferred", "stuck", "bounce"):
            sender, to = internal(), [external() for _ in range(rng.choice([1, 1, 1, 2, 3]))]
            t.emit(at, met=0, act=2, mid=gmail_id, sender=sender, to=to, size=size)
            if kind == "out":
                t.emit(
                    at + 1_800_000,
                    met=1,
                    act=10,
                    mid=gmail_id,
                    sender=sender,
                    to=to,
                    size=size,
                    counts_as="delivered",
                )
            else:
                t.emit(
                    at + 2_000_000,
                    met=0,
                    act=14,
                    mid=gmail_id,
                    sender=sender,
                    to=to,
                    size=size,
                    success=False,
                    counts_as="deferred",
                )
            if kind == "deferred":
                t.emit(
                    at + 600_000_000,
                    met=1,
                    act=10,
                    mid=gmail_id,
                    sender=sender,
                    to=to,
                    size=size,
                    counts_as="delivered",
                )
            if kind == "bounce":
                t.emit(
                    at + 3_600_000_000,
                    met=30,
                    act=18,
                    mid=gmail_id,
                    sender=sender,
                    to=to,
                    size=size,
                    success=False,
                    counts_as="bounced",
                )
        elif kind == "internal":
            sender = internal()
            to = rng.sample([p for p in PEOPLE if p != sender], rng.choice([1, 2, 4]))
            t.emit(
                at,
                met=1,
                act=2,
                mid=gmail_id,
                sender=sender,
                to=to,
                size=size,
                counts_as="delivered",
            )
            t.emit(
                at + 900_000,
                met=2,
                act=3,
                mid=gmail_id,
                sender=sender,
                to=to,
                size=size,
                counts_as="delivered",
            )
        else:  # inbound
            domain = rng.choice(EXTERNAL)
            mid = f"<{rng.randrange(16**12):012x}.{i}@{domain}>"
            sender = f"{rng.choice(LOCAL_PARTS)}@{domain}"
            to = rng.sample(PEOPLE, rng.choice([1, 1, 2]))
            if kind == "reject":  # refused during the SMTP dialogue: Gmail has no id yet
                t.emit(
                    at,
                    met=0,
                    act=1,
                    mid="",
                    sender=sender,
                    to=to,
                    size=size,
                    success=False,
                    counts_as="rejected",
                )
                continue
            t.emit(at, met=0, act=1, mid=mid, sender=sender, to=to, size=size)
            t.emit(at + 400_000, met=0, act=2, mid=mid, sender=sender, to=to, size=size)
            if kind == "quarantine":
                t.emit(
                    at + 900_000,
                    met=5,
                    act=19,
                    mid=mid,
                    sender=sender,
                    to=to,
                    size=size,
                    counts_as="quarantined",
                )
                continue
            spam = kind == "spam"
            t.emit(
                at + 900_000,
                met=2,
                act=3,
                mid=mid,
                sender=sender,
                to=to,
                size=size,
                spam=spam,
                counts_as="filtered_as_spam" if spam else "delivered",
            )
            if kind == "late-spam":
                t.emit(
                    at + 3_000_000_000,
                    met=4,
                    act=70,
                    mid=mid,
                    sender=sender,
                    to=to,
                    size=size,
                    counts_as="filtered_as_spam",
                )
            elif not spam and rng.random() < 0.5:  # opened later: a user action, no outcome
                t.emit(
                    at + 5_400_000_000, met=7, act=71, mid=mid, sender=sender, to=to[:1], size=size
                )
    if escort:
        day = 86_400_000_000
        first = _usec(start) + 3_600_000_000
        for k, sender in enumerate(["u1@corp.example", "alias1@corp.example", "u1@corp.example"]):
            mid = f"<CA+escort{k}@mail.gmail.com>"
            at = first + k * day
            t.emit(at, met=0, act=2, mid=mid, sender=sender, to=[f"book@{ESCORT_SITE}"], size=8_000)
            t.emit(
                at + 2_000_000,
                met=1,
                act=10,
                mid=mid,
                sender=sender,
                to=[f"book@{ESCORT_SITE}"],
                size=8_000,
                counts_as="delivered",
            )
        mid = "<CA+escort-bounce@mail.gmail.com>"
        t.emit(
            first + day,
            met=1,
            act=10,
            mid=mid,
            sender="u3@corp.example",
            to=[f"vip@{ESCORT_SITE}"],
            size=9_000,
            counts_as="delivered",
        )
        t.emit(
            first + day + 60_000_000,
            met=30,
            act=18,
            mid=mid,
            sender="u3@corp.example",
            to=[f"vip@{ESCORT_SITE}"],
            size=9_000,
            success=False,
            counts_as="bounced",
        )
        mid = f"<offer.77@{ESCORT_SITE}>"
        t.emit(
            first + 2 * day,
            met=2,
            act=3,
            mid=mid,
            sender=f"offers@{ESCORT_SITE}",
            to=["u2@corp.example"],
            size=40_000,
            spam=True,
            counts_as="filtered_as_spam",
        )
    t.events.sort(key=lambda e: e["time_usec"])
    return t.settle()


def window_rows(
    traffic: Traffic, windows: Sequence[tuple[dt.datetime, dt.datetime]], which: str = "first"
) -> pd.DataFrame:
    """The rows a reader yields for ``windows``, worked out from the outcomes the test
    declared: per window, one row per (message, sender, recipient) with an outcome in it,
    whose status is the window's last outcome and whose time is the window's ``first``
    outcome (BigQuery collapses in SQL) or its ``last`` (the Reports API answers newest
    first, and the first row of a key is the one kept)."""
    rows = []
    for begin, end in windows:
        low, high = _usec(begin), _usec(end)
        for (mid, sender, recipient), found in traffic.outcomes.items():
            inside = [o for o in found if low <= o[0] < high]
            if not inside:
                continue
            last = max(inside, key=lambda o: (o[0], o[1]))
            at = min(o[0] for o in inside) if which == "first" else last[0]
            rows.append(
                {
                    "timestamp": pd.Timestamp(at, unit="us", tz="UTC"),
                    "sender": sender,
                    "recipient": recipient,
                    "status": last[2],
                    "size": max(o[3] for o in inside),
                    "message_id": mid,
                }
            )
    return pd.DataFrame(rows, columns=list(RAW))


def expected_frame(
    traffic: Traffic, windows: Sequence[tuple[dt.datetime, dt.datetime]], which: str = "first"
) -> pd.DataFrame:
    """What the engine keeps of reading ``windows`` in order (:func:`engine_view`)."""
    return engine_view(window_rows(traffic, windows, which))


def engine_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as the store keeps them: the first of each (message id, sender, recipient),
    whose status a later final one replaces while it is deferred or unknown."""
    keys = ["message_id", "sender", "recipient"]
    frame = frame.reset_index(drop=True)
    first = frame.drop_duplicates(keys, keep="first").set_index(keys)
    final = frame[~frame["status"].isin(["deferred", "unknown"])]
    final = final.drop_duplicates(keys, keep="first").set_index(keys)["status"]
    pending = first["status"].isin(["deferred", "unknown"])
    later = final.reindex(first.index)
    first.loc[pending & later.notna(), "status"] = later[pending & later.notna()]
    return sorted_raw(first.reset_index()[list(RAW)])


def spans(
    source: GoogleWorkspaceSource, begin: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(u.begin, u.end) for u in source.units_between(begin, NOW, NOW)]  # type: ignore[attr-defined]


def sorted_raw(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(RAW)  # type: ignore[arg-type]
    return out.sort_values(["message_id", "sender", "recipient"], ignore_index=True)


# --- BigQuery on DuckDB ----------------------------------------------------------------------
_DESTINATION = pa.list_(
    pa.struct([("address", pa.string()), ("service", pa.string()), ("selector", pa.string())])
)
EVENT_INFO = pa.struct(
    [
        ("timestamp_usec", pa.int64()),
        ("elapsed_time_usec", pa.int64()),
        ("success", pa.bool_()),
        ("mail_event_type", pa.int64()),
    ]
)
MESSAGE_INFO = pa.struct(
    [
        ("action_type", pa.int64()),
        ("rfc2822_message_id", pa.string()),
        ("subject", pa.string()),
        ("payload_size", pa.int64()),
        (
            "source",
            pa.struct(
                [
                    ("address", pa.string()),
                    ("service", pa.string()),
                    ("from_header_address", pa.string()),
                    ("from_header_displayname", pa.string()),
                ]
            ),
        ),
        ("destination", _DESTINATION),
        ("is_spam", pa.bool_()),
        ("attachment", pa.list_(pa.struct([("file_name", pa.string()), ("sha256", pa.string())]))),
        (
            "connection_info",
            pa.struct(
                [
                    ("client_ip", pa.string()),
                    ("smtp_in_connect_ip", pa.string()),
                    ("is_internal", pa.bool_()),
                ]
            ),
        ),
    ]
)
ACTIVITY = pa.schema(
    [
        ("record_type", pa.string()),
        ("time_usec", pa.int64()),
        ("_PARTITIONTIME", pa.timestamp("us", tz="UTC")),
        ("email", pa.string()),
        ("ip_address", pa.string()),
        ("gmail", pa.struct([("event_info", EVENT_INFO), ("message_info", MESSAGE_INFO)])),
    ]
)
DAILY = pa.schema([("event_info", EVENT_INFO), ("message_info", MESSAGE_INFO)])


def pacific_day(usec: int) -> dt.date:
    return dt.datetime.fromtimestamp(usec / 1e6, PACIFIC).date()


class DuckBigQuery:
    """A :class:`connectors.google.QueryClient` running the connector's SQL on DuckDB."""

    def __init__(self, traffic: Traffic, project: str = PROJECT, dataset: str = DATASET):
        self.db = duckdb.connect()
        self.queries: list[tuple[str, list[QueryParam]]] = []
        self.pages_served = 0
        self.largest_page = 0
        self.closed = False
        self.scanned: int | None = None
        self.db.execute(f"attach ':memory:' as \"{project}\"")
        self.db.execute(f'create schema "{project}"."{dataset}"')
        where = f'"{project}"."{dataset}"'
        rows = [
            {
                "record_type": "gmail",
                "time_usec": e["time_usec"],
                "_PARTITIONTIME": dt.datetime.combine(
                    pacific_day(e["time_usec"]), dt.time(), dt.UTC
                ),
                "email": e["email"],
                "ip_address": e["ip_address"],
                "gmail": {"event_info": e["event_info"], "message_info": e["message_info"]},
            }
            for e in traffic.events
        ]
        # another application's rows in the same table: record_type keeps them out
        rows += [{**r, "record_type": "drive"} for r in rows[: max(1, len(rows) // 20)]]
        self.db.register("activity_rows", pa.Table.from_pylist(rows, schema=ACTIVITY))
        self.db.execute(f"create table {where}.activity as select * from activity_rows")  # noqa: S608
        self.db.unregister("activity_rows")
        by_day: dict[str, list[dict[str, Any]]] = {}
        for e in traffic.events:
            day = pacific_day(e["time_usec"]).strftime("%Y%m%d")
            by_day.setdefault(day, []).append(
                {"event_info": e["event_info"], "message_info": e["message_info"]}
            )
        parts = []
        for day, day_rows in sorted(by_day.items()):
            self.db.register("daily_rows", pa.Table.from_pylist(day_rows, schema=DAILY))
            self.db.execute(f"create table {where}.daily_{day} as from daily_rows")
            self.db.unregister("daily_rows")
            parts.append(f"select *, '{day}' as _TABLE_SUFFIX from {where}.daily_{day}")  # noqa: S608
        if parts:
            self.db.execute(f'create view {where}."daily_*" as ' + " union all ".join(parts))

    @staticmethod
    def dialect(sql: str) -> str:
        """BigQuery's parameter markers and backquoted table name, in DuckDB's spelling."""
        sql = re.sub(r"@(\w+)", r"$\1", sql)
        return re.sub(
            r"`([^`]+)`", lambda m: ".".join(f'"{p}"' for p in m.group(1).split(".")), sql
        )

    def pages(
        self, sql: str, params: Sequence[QueryParam], page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        self.queries.append((sql, list(params)))
        cursor = self.db.cursor()
        cursor.execute(self.dialect(sql), {p.name: p.value for p in params})
        names = [d[0] for d in cursor.description or ()]
        while True:
            batch = cursor.fetchmany(page_size)
            if not batch:
                return
            self.pages_served += 1
            self.largest_page = max(self.largest_page, len(batch))
            yield [dict(zip(names, row, strict=True)) for row in batch]

    def dry_run(self, sql: str, params: Sequence[QueryParam]) -> int | None:
        self.db.cursor().execute("explain " + self.dialect(sql), {p.name: p.value for p in params})
        return self.scanned

    def close(self) -> None:
        self.closed = True


def bigquery_options(**extra: Any) -> GoogleWorkspaceOptions:
    return GoogleWorkspaceOptions.model_validate(
        {"via": "bigquery", "project": PROJECT, "dataset": DATASET, **extra}
    )


def read_all(source: GoogleWorkspaceSource, begin: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    frames = []
    for unit in source.units_between(begin, end, NOW):
        for chunk in unit.chunks():
            assert list(chunk.frame.columns) == list(RAW)
            frames.append(chunk.frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RAW))


# --- the Reports API on loopback ---------------------------------------------------------------
def reports_activity(event: dict[str, Any], index: int) -> dict[str, Any]:
    """A Gmail log row as the Reports API returns it: an activity with one ``delivery``
    event. ``message_info`` varies (nested records; dotted names; flattened destinations
    only), since Google documents only ``event_info`` for this API."""
    info, msg = event["event_info"], event["message_info"]
    usec = info["timestamp_usec"]
    moment = dt.datetime.fromtimestamp(usec // 1_000_000, dt.UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{usec // 1000 % 1000:03d}Z"
    event_params = [
        {"name": "timestamp_usec", "intValue": str(usec)},
        {"name": "elapsed_time_usec", "intValue": str(info["elapsed_time_usec"])},
        {"name": "success", "boolValue": info["success"]},
        {"name": "mail_event_type", "intValue": str(info["mail_event_type"])},
    ]
    addresses = [d["address"] for d in msg["destination"]]
    flattened = ",".join(
        f"{d['service']}:{d['selector']}:{d['address']}" for d in msg["destination"]
    )
    message = [
        {"name": "rfc2822_message_id", "value": msg["rfc2822_message_id"]},
        {"name": "subject", "value": msg["subject"]},
        {"name": "payload_size", "intValue": str(msg["payload_size"])},
        {"name": "is_spam", "boolValue": bool(msg["is_spam"])},
        {"name": "flattened_destinations", "value": flattened},
        {
            "name": "connection_info",
            "messageValue": {
                "parameter": [
                    {"name": "client_ip", "value": CLIENT_IP},
                    {"name": "is_internal", "boolValue": True},
                ]
            },
        },
        {
            "name": "attachment",
            "multiMessageValue": [{"parameter": [{"name": "file_name", "value": ATTACHMENT}]}],
        },
    ]
    if msg["action_type"] is not None:
        message.append({"name": "action_type", "intValue": str(msg["action_type"])})
    if index % 5 == 1:  # dotted names
        message += [
            {"name": "source.address", "value": msg["source"]["address"]},
            {"name": "source.from_header_displayname", "value": DISPLAY_NAME},
            {"name": "destination.address", "multiValue": addresses},
        ]
    elif index % 7 == 2:  # the recipients only in flattened_destinations
        message.append(
            {
                "name": "source",
                "messageValue": {
                    "parameter": [{"name": "address", "value": msg["source"]["address"]}]
                },
            }
        )
    else:  # nested records
        message += [
            {
                "name": "source",
                "messageValue": {
                    "parameter": [
                        {"name": "address", "value": msg["source"]["address"]},
                        {"name": "from_header_displayname", "value": DISPLAY_NAME},
                    ]
                },
            },
            {
                "name": "destination",
                "multiMessageValue": [
                    {
                        "parameter": [
                            {"name": "address", "value": a},
                            {"name": "service", "value": "smtp"},
                        ]
                    }
                    for a in addresses
                ],
            },
        ]
    return {
        "kind": "admin#reports#activity",
        "id": {
            "time": stamp,
            "uniqueQualifier": str(-(10**18) + index),
            "applicationName": "gmail",
            "customerId": "C03az79cb",
        },
        "etag": f'"etag-{index}"',
        "actor": {"callerType": "USER", "email": event["email"], "profileId": str(10**20 + index)},
        "ipAddress": event["ip_address"],
        "events": [
            {
                "type": "delivery_type",
                "name": "delivery",
                "parameters": [
                    {"name": "event_info", "messageValue": {"parameter": event_params}},
                    {"name": "message_info", "messageValue": {"parameter": message}},
                ],
            }
        ],
    }


def _moment(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


class ReportsApi:
    """State and rules of the token endpoint and the Gmail activities endpoint."""

    def __init__(self, public_key: Any, client_email: str) -> None:
        self.public_key = public_key
        self.client_email = client_email
        self.activities: list[dict[str, Any]] = []
        self.delegated = True
        self.reports_privilege = True
        self.api_enabled = True
        self.faults: dict[int, Fault] = {}
        self.queries: list[dict[str, list[str]]] = []
        self.api_requests = 0
        self.token_requests = 0
        self.base = ""
        self._tokens: set[str] = set()
        self._ordered: list[tuple[dt.datetime, dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key,
                algorithms=["RS256"],
                audience="https://oauth2.googleapis.com/token",  # whatever token_uri says
            )
        except jwt.InvalidTokenError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims.get("iss") != self.client_email:
            return 401, {
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            }
        if not self.delegated or claims.get("scope") != google.REPORTS_SCOPE:
            return 401, {
                "error": "unauthorized_client",
                "error_description": "Client is unauthorized to retrieve access tokens using "
                "this method, or client not authorized for any of the scopes requested.",
            }
        if claims.get("sub") != ADMIN:
            return 400, {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
        access = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(access)
        return 200, {"access_token": access, "expires_in": 3599, "token_type": "Bearer"}

    def list_gmail(self, auth: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.api_requests += 1
            n = self.api_requests
            self.queries.append(query)
            valid = auth.removeprefix("Bearer ") in self._tokens
        if not valid:
            return 401, _google_error(
                401,
                "Request had invalid authentication credentials.",
                "authError",
                "UNAUTHENTICATED",
            )
        if not self.api_enabled:
            return 403, _google_error(
                403,
                "Admin SDK API has not been used in project 1234 before or it is disabled.",
                "accessNotConfigured",
                "PERMISSION_DENIED",
            )
        if not self.reports_privilege:
            return 403, _google_error(
                403, "Not Authorized to access this resource/api", "forbidden", "PERMISSION_DENIED"
            )
        fault = self.faults.get(n)
        if fault is not None:
            return fault.status, fault.body or _google_error(fault.status, "fault", "backendError")
        if "startTime" not in query or "endTime" not in query:
            return 400, _google_error(400, "Missing required field: startTime/endTime", "invalid")
        begin, end = _moment(query["startTime"][0]), _moment(query["endTime"][0])
        if end - begin > dt.timedelta(days=30) or end < begin:
            return 400, _google_error(
                400, "Start time and end time should be within 30 days", "invalid"
            )
        size = int(query.get("maxResults", ["1000"])[0])
        if not 1 <= size <= 1000:
            return 400, _google_error(400, "Invalid value for maxResults", "invalid")
        offset = int(query.get("pageToken", ["0"])[0] or 0)
        rows = [a for at, a in self._newest_first() if begin <= at <= end]
        body: dict[str, Any] = {"kind": "admin#reports#activities", "etag": '"x"'}
        if rows[offset : offset + size]:
            body["items"] = rows[offset : offset + size]
        if offset + size < len(rows):
            body["nextPageToken"] = str(offset + size)
        return 200, body

    def _newest_first(self) -> list[tuple[dt.datetime, dict[str, Any]]]:
        if self._ordered is None or len(self._ordered) != len(self.activities):
            pairs = [(_moment(a["id"]["time"]), a) for a in self.activities]
            self._ordered = sorted(pairs, key=lambda p: p[0], reverse=True)
        return self._ordered


def _google_error(code: int, message: str, reason: str, status: str = "") -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            **({"status": status} if status else {}),
        }
    }


class _Handler(BaseHTTPRequestHandler):
    state: ReportsApi

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != google.REPORTS_PATH:
            self._send(404, _google_error(404, "Not Found", "notFound"))
            return
        n = self.state.api_requests + 1
        fault = self.state.faults.get(n)
        status, body = self.state.list_gmail(
            self.headers.get("Authorization", ""), parse_qs(url.query)
        )
        self._send(status, body, fault.headers if fault and fault.status == status else None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if urlsplit(self.path).path != "/token":
            self._send(404, {"error": "not_found"})
            return
        self._send(*self.state.token({k: v[0] for k, v in parse_qs(raw.decode()).items()}))


@dataclass
class Served:
    """A started server, the CA bundle that trusts it, and a key file it accepts."""

    state: ReportsApi
    base: str
    ca_bundle: Path
    key_file: Path
    private_key_id: str

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "via": "reports_api",
            "credentials": {"$file": str(self.key_file)},
            "admin": ADMIN,
            "endpoint": self.base,
            "ca_bundle": str(self.ca_bundle),
            **extra,
        }


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def reports(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> Iterator[Served]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    email = "compliance-reader@corp-logs-prod.iam.gserviceaccount.com"
    state = ReportsApi(signing_key.public_key(), email)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    bundle = tmp_path / "google-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    key_id = secrets.token_hex(20)
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = tmp_path / "secrets" / "reader-key.json"
    key_file.parent.mkdir()
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": key_id,
                "private_key": pem,
                "client_email": email,
                "client_id": "108234567890123456789",
                "auth_uri": f"{state.base}/auth",
                "token_uri": f"{state.base}/token",
            }
        )
    )
    key_file.chmod(0o600)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Served(state, state.base, bundle, key_file, key_id)
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve(served: Served, traffic: Traffic) -> None:
    served.state.activities = [reports_activity(e, i) for i, e in enumerate(traffic.events)]


def reports_source(served: Served, **extra: Any) -> GoogleWorkspaceSource:
    source = create_source("google-workspace", "gmail", served.options(**extra), Path("/"))
    assert isinstance(source, GoogleWorkspaceSource)
    source.reports.sleep = lambda _seconds: None
    return source


# --- the status rule -------------------------------------------------------------------------
def test_the_outcome_rule_is_the_same_in_python_and_in_the_sql() -> None:
    """Every combination of the four fields, through :func:`outcome` and through the
    ``case`` expression of the query (run by DuckDB)."""
    events, actions = [None, *range(36)], [None, 0, 1, 2, 3, 10, 14, 18, 19, 45, 48, 69, 70, 71]
    grid = [
        (e, a, s, p)
        for e in events
        for a in actions
        for s in (True, False, None)
        for p in (True, False, None)
    ]
    db = duckdb.connect()
    table = pa.Table.from_pylist(
        [
            {
                "event_info": {"mail_event_type": e, "success": s},
                "message_info": {"action_type": a, "is_spam": p},
                "n": n,
            }
            for n, (e, a, s, p) in enumerate(grid)
        ]
    )
    db.register("g", table)
    case = google._outcome_sql("event_info", "message_info")
    sql = f"select n, {case} from g order by n"  # noqa: S608
    in_sql = [code or 0 for _n, code in db.execute(sql).fetchall()]
    assert in_sql == [outcome(*g) for g in grid]
    # every status the rule gives is a normalised one
    assert set(OUTCOMES) <= set(STATUSES)
    named = Counter(OUTCOMES[c] for c in in_sql if c)
    assert set(named) == set(OUTCOMES) - {"unknown"}
    # the documented cases
    assert outcome(1, 10, True, False) == OUTCOMES.index("delivered")
    assert outcome(2, 3, True, True) == OUTCOMES.index("filtered_as_spam")
    assert outcome(0, 1, False, None) == OUTCOMES.index("rejected")
    assert outcome(2, None, False, None) == OUTCOMES.index("rejected")  # Reports API, no stage
    assert outcome(0, 14, False, None) == OUTCOMES.index("deferred")
    assert outcome(30, 18, False, None) == OUTCOMES.index("bounced")
    assert outcome(5, 19, True, None) == OUTCOMES.index("quarantined")
    assert outcome(7, 71, True, None) == 0  # opened: what a user did, no outcome
    assert outcome(0, 2, True, None) == 0  # a stage before the outcome


# --- BigQuery --------------------------------------------------------------------------------
def _bigquery_source(
    monkeypatch: pytest.MonkeyPatch, traffic: Traffic, **extra: Any
) -> tuple[GoogleWorkspaceSource, DuckBigQuery]:
    stand_in = DuckBigQuery(traffic)
    monkeypatch.setattr(google, "BIGQUERY_CLIENT", lambda name, options, base: stand_in)
    source = GoogleWorkspaceSource("gmail", bigquery_options(**extra), Path("/"))
    return source, stand_in


def test_bigquery_windows_yield_one_row_per_message_and_recipient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = NOW - dt.timedelta(days=3)
    traffic = gmail_traffic(600, start, 60)
    source, stand_in = _bigquery_source(monkeypatch, traffic, window_hours=12, page_size=97)
    got = read_all(source, start - dt.timedelta(hours=1), NOW)
    # within a window, one row per key; a message with outcomes on both sides of a window
    # edge comes from both windows, and the store keeps one (a deferral made final later)
    windows = spans(source, start - dt.timedelta(hours=1))
    assert 0 < got.duplicated(["message_id", "sender", "recipient"]).sum() < 30
    expected = expected_frame(traffic, windows, "first")
    pd.testing.assert_frame_equal(engine_view(got), expected)
    assert len(expected) == len(traffic.outcomes) > 700  # several recipients per message
    assert set(expected["status"]) == set(OUTCOMES) - {"unknown"}
    assert expected["message_id"].str.startswith("gmail-trace:").sum() > 0  # SMTP rejections
    # one window holding everything gives each key its final status
    whole, _ = _bigquery_source(monkeypatch, traffic, window_hours=720)
    final = engine_view(read_all(whole, start - dt.timedelta(hours=1), NOW))
    assert (
        dict(
            zip(
                zip(final["message_id"], final["sender"], final["recipient"], strict=True),
                final["status"],
                strict=True,
            )
        )
        == traffic.final
    )

    # bounded pages, one query per window, and never the subject, attachments or IPs
    assert stand_in.largest_page == 97 and stand_in.pages_served >= len(got) / 97
    assert len(stand_in.queries) == len(
        source.units_between(start - dt.timedelta(hours=1), NOW, NOW)
    )
    sql = stand_in.queries[0][0]
    for unwanted in ("subject", "attachment", "connection_info", "ip", "from_header", "email"):
        assert not re.search(rf"\b{unwanted}\b", sql), unwanted
    text = got.to_csv()
    for canary in (SUBJECT, DISPLAY_NAME, ATTACHMENT, CLIENT_IP, RELAY_IP):
        assert canary not in text


def test_the_legacy_daily_tables_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    start = NOW - dt.timedelta(days=2)
    traffic = gmail_traffic(250, start, 40, seed=11)
    source, stand_in = _bigquery_source(monkeypatch, traffic, table="daily", window_hours=24)
    got = engine_view(read_all(source, start - dt.timedelta(hours=1), NOW))
    windows = spans(source, start - dt.timedelta(hours=1))
    pd.testing.assert_frame_equal(got, expected_frame(traffic, windows, "first"))
    sql, params = stand_in.queries[0]
    assert f"`{PROJECT}.{DATASET}.daily_*`" in sql
    assert "_TABLE_SUFFIX between @suffix_begin and @suffix_end" in sql
    assert {p.name for p in params} == {"begin_usec", "end_usec", "suffix_begin", "suffix_end"}


def test_a_window_reads_only_the_partitions_around_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions are cut at Pacific midnight: the day before the window's start to the
    day of its end hold all of it, and nothing else is scanned."""
    begin = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    end = begin + dt.timedelta(days=1)
    params = {p.name: p.value for p in window_params("activity", begin, end)}
    assert params["partition_begin"] == dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    assert params["partition_end"] == dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert params["begin_usec"] == _usec(begin) and params["end_usec"] == _usec(end)
    daily = {p.name: p.value for p in window_params("daily", begin, end)}
    assert (daily["suffix_begin"], daily["suffix_end"]) == ("20261102", "20261103")
    assert "partition_begin" not in {p.name for p in window_params("activity", begin, end, False)}

    # rows logged just after UTC midnight sit in the previous Pacific day's partition
    traffic = Traffic()
    for minute in (5, 60 * 23 + 55):
        at = _usec(begin + dt.timedelta(minutes=minute))
        traffic.emit(
            at,
            met=1,
            act=10,
            mid=f"<m{minute}@mail.gmail.com>",
            sender="u4@corp.example",
            to=["sales@partner1.example"],
            size=900,
            counts_as="delivered",
        )
    source, stand_in = _bigquery_source(monkeypatch, traffic.settle())
    assert len(read_all(source, begin, end)) == 2
    # a row whose partition lies outside the range is not scanned at all
    stand_in.db.execute(
        f'update "{PROJECT}"."{DATASET}".activity '  # noqa: S608
        "set _PARTITIONTIME = _PARTITIONTIME - interval 5 day"
    )
    assert len(read_all(source, begin, end)) == 0
    unpruned, _ = _bigquery_source(monkeypatch, traffic, prune_partitions=False)
    assert len(read_all(unpruned, begin, end)) == 2


def test_result_rows_that_are_not_rows_are_counted_and_times_bounded() -> None:
    rows: list[Any] = [
        {
            "first_usec": 1_790_000_000_000_000,
            "outcome": 1_790_000_000_000_000 * 8 + 2,
            "message_id": "<a@x.test>",
            "sender": "a@x.test",
            "recipient": "u1@corp.example",
            "size": 10,
        },
        {
            "first_usec": None,
            "outcome": None,
            "message_id": None,
            "sender": "b@x.test",
            "recipient": "u1@corp.example",
            "size": None,
        },
        {
            "first_usec": 9_999_999_999_999_999_999,
            "outcome": 3,
            "message_id": "",
            "sender": "c@x.test",
            "recipient": "u2@corp.example",
            "size": "n/a",
        },
        "not a row",
        None,
    ]
    chunk = result_chunk(rows)
    assert chunk.rejected == Counter({"malformed_row": 2})
    frame = chunk.frame
    assert list(frame.dtypes.astype(str)) == list(RAW.values())
    assert frame["timestamp"].iloc[0] == pd.Timestamp(1_790_000_000_000_000, unit="us", tz="UTC")
    assert frame["timestamp"].iloc[1:].isna().all()  # rejected downstream as bad_timestamp
    assert list(frame["status"]) == ["delivered", "unknown", "bounced"]
    assert frame["message_id"].iloc[1] == "gmail-trace:0"
    assert frame["size"].isna().iloc[1:].all()
    assert len(result_chunk([]).frame) == 0


def test_sources_check_reads_no_row_and_reports_the_dry_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traffic = gmail_traffic(40, NOW - dt.timedelta(minutes=50), 0.5, seed=2, escort=False)
    source, stand_in = _bigquery_source(monkeypatch, traffic)
    stand_in.scanned = 12_345_678
    steps = source.check()
    assert [ok for ok, _ in steps] == [True, True, True]
    assert steps[2][1] == "a 24 h window scans about 12.3 MB (dry run)"
    probe, params = stand_in.queries[0]
    assert probe.endswith("limit 1") and "message_id" not in probe
    assert {p.name for p in params} >= {"begin_usec", "end_usec", "partition_begin"}

    def refuse(*_args: Any) -> Iterator[list[dict[str, Any]]]:
        raise SourceError("source 'gmail': BigQuery refused the query (Forbidden).")
        yield []

    monkeypatch.setattr(stand_in, "pages", refuse)
    failed = source.check()
    assert failed[0][0] and not failed[1][0] and "Forbidden" in failed[1][1]

    def missing(*_args: Any) -> Any:
        raise ConfigError("source 'gmail': via bigquery needs google-cloud-bigquery: pip ...")

    monkeypatch.setattr(google, "BIGQUERY_CLIENT", missing)
    fresh = GoogleWorkspaceSource("gmail", bigquery_options(), Path("/"))
    assert fresh.check() == [
        (False, "source 'gmail': via bigquery needs google-cloud-bigquery: pip ...")
    ]


# --- planning, options -----------------------------------------------------------------------
def test_windows_bookmarks_and_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = _bigquery_source(monkeypatch, Traffic(), window_hours=6, overlap_minutes=90)
    started = dt.datetime(2026, 11, 10, 12, 0, 30, 500, tzinfo=dt.UTC)
    first = source.units(SourceState(None, started))
    assert len(first) == 7 * 4  # seven days (the default) to 12:00:30, six hours each
    assert first[0].key == "bigquery:2026-11-03T12:00:30Z/2026-11-03T18:00:30Z"
    assert [u.bookmark for u in first[-2:]] == ["2026-11-10T06:00:30Z", "2026-11-10T12:00:30Z"]
    assert all(not u.once and not u.distributable for u in first)
    assert all(u.format == "gmail-bigquery" for u in first)
    later = source.units(SourceState("2026-11-10T12:00:30Z", started + dt.timedelta(hours=3)))
    assert later[0].key.startswith("bigquery:2026-11-10T10:30:30Z/")  # the overlap re-read
    assert later[-1].bookmark == "2026-11-10T15:00:30Z"
    with pytest.raises(PeriodRequired):
        source.units_between(None, None, started)
    audit = source.units_between(started - dt.timedelta(hours=7), None, started)
    assert len(audit) == 2

    rsource = GoogleWorkspaceSource(
        "gmail",
        GoogleWorkspaceOptions.model_validate(
            {"via": "reports_api", "credentials": {"$env": "NONE"}, "admin": ADMIN}
        ),
        Path("/"),
    )
    units = rsource.units(SourceState(None, started))
    assert units[0].format == "gmail-reports-api" and len(units) == 7
    with pytest.raises(SourceError, match="180 days"):
        rsource.units(SourceState("2026-01-01T00:00:00Z", started))
    with pytest.raises(SourceError, match="180 days"):
        rsource.units_between(started - dt.timedelta(days=200), None, started)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"via": "bigquery", "dataset": DATASET}, "needs project"),
        ({"via": "bigquery", "project": PROJECT}, "needs dataset"),
        ({"via": "bigquery", "project": "p`; drop table x; --", "dataset": DATASET}, "project"),
        ({"via": "bigquery", "project": PROJECT, "dataset": "a.b`"}, "dataset"),
        ({"via": "bigquery", "project": PROJECT, "dataset": DATASET, "admin": ADMIN}, "admin"),
        ({"via": "reports_api", "admin": ADMIN}, "needs credentials"),
        ({"via": "reports_api", "credentials": {"$env": "K"}}, "and admin"),
        (
            {"via": "reports_api", "credentials": {"$env": "K"}, "admin": ADMIN, "page_size": 5000},
            "at most 1000",
        ),
        (
            {
                "via": "reports_api",
                "credentials": {"$env": "K"},
                "admin": ADMIN,
                "window_hours": 721,
            },
            "720",
        ),
        (
            {
                "via": "reports_api",
                "credentials": {"$env": "K"},
                "admin": ADMIN,
                "dataset": DATASET,
            },
            "for via bigquery only",
        ),
        (
            {"via": "reports_api", "credentials": "-----BEGIN PRIVATE KEY-----", "admin": ADMIN},
            "write a reference",
        ),
        (
            {
                "via": "reports_api",
                "credentials": {"$env": "K"},
                "admin": ADMIN,
                "endpoint": "http://admin.googleapis.com",
            },
            "https",
        ),
        ({"via": "imap"}, "via"),
        ({"via": "bigquery", "project": PROJECT, "dataset": DATASET, "password": "x"}, "password"),
    ],
)
def test_options_are_checked(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        create_source("google-workspace", "gmail", options, Path("/"))
    assert "source 'gmail'" in str(caught.value)
    assert "BEGIN PRIVATE KEY" not in str(caught.value)


def test_the_source_type_declares_its_options() -> None:
    declared = source_type("google-workspace")
    assert declared.reads == "window"
    assert declared.collects == tuple(RAW)
    assert declared.options["via"].startswith("(required)")
    assert all(text for text in declared.options.values())
    assert {"credentials", "admin", "project", "dataset", "table", "window_hours"} <= set(
        declared.options
    )


# --- the Reports API ------------------------------------------------------------------------
def test_event_parameters_are_read_in_every_shape_and_the_rest_dropped() -> None:
    traffic = gmail_traffic(80, NOW - dt.timedelta(hours=30), 24, seed=3, escort=False)
    activities = [reports_activity(e, i) for i, e in enumerate(traffic.events)]
    shapes = Counter(i % 5 == 1 or (i % 7 == 2) for i in range(len(activities)))
    assert shapes[True] and shapes[False]
    nested = flatten_parameters(activities[0]["events"][0]["parameters"])
    assert set(nested) <= google.WANTED
    assert "message_info.subject" not in nested
    assert nested["message_info.destination.address"]  # one per recipient

    activities.reverse()  # as the API answers: newest first
    chunk = activities_chunk(activities, NOW - dt.timedelta(days=3), NOW)
    got = engine_view(chunk.frame)
    pd.testing.assert_frame_equal(
        got, expected_frame(traffic, [(NOW - dt.timedelta(days=3), NOW)], "last")
    )
    text = chunk.frame.to_csv()
    for canary in (SUBJECT, DISPLAY_NAME, ATTACHMENT, CLIENT_IP, "C03az79cb"):
        assert canary not in text

    hostile: list[Any] = [
        None,
        {"events": "delivery"},
        {"events": [None, {"parameters": None}]},
        {
            "id": {"time": "yesterday"},
            "events": [
                {
                    "parameters": [
                        {
                            "name": "event_info",
                            "messageValue": {
                                "parameter": [{"name": "mail_event_type", "intValue": "1"}]
                            },
                        },
                        {
                            "name": "message_info",
                            "multiMessageValue": 7,
                            "messageValue": {
                                "parameter": [{"name": "action_type", "intValue": "ten"}]
                            },
                        },
                    ]
                }
            ],
        },
        {
            "id": {"time": "2026-11-02T10:00:00Z"},
            "events": [
                {
                    "parameters": [
                        {
                            "name": "event_info",
                            "messageValue": {
                                "parameter": [{"name": "mail_event_type", "intValue": "2"}]
                            },
                        },
                        {
                            "name": "message_info",
                            "messageValue": {
                                "parameter": [
                                    {
                                        "name": "flattened_destinations",
                                        "value": "catchall::u9@corp.example",
                                    },
                                    {
                                        "name": "source",
                                        "messageValue": {
                                            "parameter": [{"name": "address", "value": "x@y.test"}]
                                        },
                                    },
                                ]
                            },
                        },
                    ]
                }
            ],
        },
    ]
    bad = activities_chunk(hostile, dt.datetime(2026, 11, 1, tzinfo=dt.UTC), NOW)
    assert bad.rejected == Counter({"malformed_activity": 3, "no_recipient": 1})
    assert list(bad.frame["recipient"]) == ["u9@corp.example"]
    assert list(bad.frame["message_id"]) == [
        f"gmail-trace:{_usec(dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC))}"
    ]


def test_a_reports_window_pages_through_the_api(reports: Served) -> None:
    start = NOW - dt.timedelta(days=2)
    traffic = gmail_traffic(300, start, 40, seed=5)
    serve(reports, traffic)
    source = reports_source(reports, page_size=100, window_hours=24)
    got = read_all(source, start - dt.timedelta(hours=1), NOW)
    windows = spans(source, start - dt.timedelta(hours=1))
    pd.testing.assert_frame_equal(engine_view(got), expected_frame(traffic, windows, "last"))
    state = reports.state
    assert state.token_requests == 1  # one token, reused for every page
    windows = {(q["startTime"][0], q["endTime"][0]) for q in state.queries}
    assert len(windows) == 3
    in_window = Counter((q["startTime"][0], q["endTime"][0]) for q in state.queries)
    for (begin, end), requests_made in in_window.items():
        served = sum(
            1
            for a in state.activities
            if _moment(begin) <= _moment(a["id"]["time"]) <= _moment(end)
        )
        assert requests_made == max(1, -(-served // 100))
    assert all(q["maxResults"] == ["100"] for q in state.queries)
    assert sum("pageToken" in q for q in state.queries) == state.api_requests - 3


def test_429_and_503_are_retried_honouring_retry_after(reports: Served) -> None:
    traffic = gmail_traffic(30, NOW - dt.timedelta(hours=20), 12, seed=9, escort=False)
    serve(reports, traffic)
    reports.state.faults = {
        1: Fault(429, {"Retry-After": "7"}),
        2: Fault(503),
        3: Fault(500, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),  # in the past: 0
    }
    source = reports_source(reports)
    waited: list[float] = []
    source.reports.sleep = waited.append
    got = read_all(source, NOW - dt.timedelta(hours=24), NOW)
    assert len(engine_view(got)) == len(traffic.final)
    assert waited[0] == 7 and 0 < waited[1] <= 3 and waited[2] == 0
    assert reports.state.api_requests == 4

    reports.state.faults = {n: Fault(503) for n in range(5, 40)}
    source = reports_source(reports, max_retries=2)
    with pytest.raises(RetriableSourceError, match="after 3 attempts"):
        read_all(source, NOW - dt.timedelta(hours=24), NOW)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("delegated", ["unauthorized_client", "Domain-wide delegation", google.REPORTS_SCOPE]),
        ("reports_privilege", ["403", "Reports privilege", google.REPORTS_SCOPE]),
        ("api_enabled", ["accessNotConfigured", "Enable the Admin SDK API"]),
    ],
)
def test_refusals_say_what_to_fix_without_the_key(
    reports: Served, setting: str, says: list[str]
) -> None:
    setattr(reports.state, setting, False)
    source = reports_source(reports)
    with pytest.raises(SourceError) as caught:
        read_all(source, NOW - dt.timedelta(hours=2), NOW)
    message = str(caught.value)
    for text in says:
        assert text in message
    key = json.loads(reports.key_file.read_text())
    for secret in ("PRIVATE KEY", key["private_key"][40:80], reports.private_key_id, ADMIN):
        assert secret not in message
    assert not isinstance(caught.value, RetriableSourceError)
    steps = source.check()
    assert not steps[-1][0] and says[0] in steps[-1][1]


def test_an_admin_the_domain_does_not_know_and_an_untrusted_endpoint(
    reports: Served, tmp_path: Path
) -> None:
    source = reports_source(reports, admin="someone-else@corp.example")
    with pytest.raises(SourceError, match=r"invalid_grant.*existing administrator") as caught:
        source.reports.token()
    assert "someone-else" not in str(caught.value)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    untrusted = reports_source(reports, ca_bundle=str(other_ca))
    with pytest.raises(SourceError, match="not trusted"):
        untrusted.reports.token()
    reports.key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        reports_source(reports).reports.token()


# --- CloudBigQuery against the documented API shape -----------------------------------------------
def test_the_google_cloud_bigquery_client_is_called_as_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fake of the parts of google-cloud-bigquery this reader calls (Client, QueryJobConfig,
    ScalarQueryParameter, query(), result(page_size=).pages, Row.items(), dry runs'
    total_bytes_processed): catches misspelt calls, not the library's behaviour."""
    calls: dict[str, Any] = {}

    class Row:
        def __init__(self, values: dict[str, Any]) -> None:
            self._values = values

        def items(self) -> Any:
            return self._values.items()

    class Job:
        total_bytes_processed = 123_456_789

        def result(self, page_size: int) -> Any:
            calls["page_size"] = page_size
            return types.SimpleNamespace(pages=[[Row({"outcome": 2})], [Row({"outcome": 10})]])

    class Client:
        def __init__(self, project: str, credentials: Any, location: str | None) -> None:
            calls["client"] = (project, credentials, location)

        def query(self, sql: str, job_config: Any) -> Job:
            calls.setdefault("configs", []).append(job_config)
            return Job()

        def close(self) -> None:
            calls["closed"] = True

    fake = types.ModuleType("google.cloud.bigquery")
    fake.Client = Client  # type: ignore[attr-defined]
    fake.QueryJobConfig = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    fake.ScalarQueryParameter = lambda *a: a  # type: ignore[attr-defined]
    cloud = types.ModuleType("google.cloud")
    cloud.bigquery = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google.cloud", cloud)
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", fake)
    adc = object()
    monkeypatch.setattr(google.google.auth, "default", lambda scopes: (adc, PROJECT))

    options = bigquery_options(
        billing_project="corp-billing", location="EU", maximum_bytes_billed=1 << 30
    )
    client = google.CloudBigQuery("gmail", options, Path("/"))
    assert calls["client"] == ("corp-billing", adc, "EU")
    params = [QueryParam("begin_usec", "INT64", 5)]
    assert list(client.pages("select 1", params, 500)) == [[{"outcome": 2}], [{"outcome": 10}]]
    assert client.dry_run("select 1", params) == 123_456_789
    run, dry = calls["configs"]
    assert run.query_parameters == [("begin_usec", "INT64", 5)] and calls["page_size"] == 500
    assert run.maximum_bytes_billed == 1 << 30 and not run.use_legacy_sql and not run.dry_run
    assert dry.dry_run and not dry.use_query_cache
    client.close()
    assert calls["closed"]

    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)
    monkeypatch.setitem(sys.modules, "google.cloud", None)
    with pytest.raises(ConfigError, match=re.escape("compliance-monitor[google]")):
        google.CloudBigQuery("gmail", options, Path("/"))


@pytest.mark.parametrize(
    ("name", "code", "message", "kind", "says"),
    [
        (
            "Forbidden",
            403,
            "Access Denied: Table corp-logs-prod:workspace_logs.activity",
            SourceError,
            "roles/bigquery.dataViewer",
        ),
        (
            "NotFound",
            404,
            "Not found: Dataset corp-logs-prod:workspace_logs",
            SourceError,
            "Check project, dataset, table and location",
        ),
        ("BadRequest", 400, "Unrecognized name: gmail at [9:5]", SourceError, "activity or daily"),
        (
            "BadRequest",
            400,
            "Query exceeded limit for bytes billed: 10485760.",
            SourceError,
            "maximum_bytes_billed",
        ),
        ("ServiceUnavailable", 503, "backend error", RetriableSourceError, "next run retries"),
        ("Forbidden", 403, "User a.person@corp.example denied", SourceError, "jobUser"),
    ],
)
def test_bigquery_errors_say_what_to_fix(
    name: str, code: int, message: str, kind: type[SourceError], says: str
) -> None:
    exc = type(name, (Exception,), {"code": code, "message": message})(message)
    error = google.explain_bigquery_error("gmail", exc)
    assert type(error) is kind and says in str(error)
    assert "@" not in str(error)


# --- end to end: compliance run, sources check, audit ------------------------------------------
def _config(folder: Path, directory: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(exist_ok=True)
    feed = folder.parent / "escort-feed.txt"
    feed.write_text("# escort advertising\nescorts.test\nvelvet-club.test\n", encoding="utf-8")
    config = {
        "organisation": {"domains": ["corp.example"]},
        "directory": str(directory),
        "sources": [{"name": "gmail", "type": "google-workspace", **source}],
        "feeds": [{"path": str(feed), "category": "escort-ads"}],
        "policies": [str(ROOT / "policies")],
        "store": "var/store.db",
        "reports": {"dir": "reports", "formats": ["html", "json"]},
        "schedule": {"lock": "run.lock"},
        "privacy": {"key_rotation": "never"},  # the data is relative to today
    }
    path = folder / "compliance.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _stored(config: Path) -> dict[str, Any]:
    with store_db(config) as store:
        return {
            "messages": store.execute("SELECT sum(messages) FROM daily_totals").fetchone()[0],
            "events": store.execute(
                "SELECT domain, direction, status FROM events ORDER BY ts"
            ).fetchall(),
            "alerts": store.execute("SELECT policy, rule_id, org_unit FROM alerts").fetchall(),
            "bookmark": store.execute("SELECT watermark FROM bookmarks").fetchone()[0],
            "runs": [r[0] for r in store.execute("SELECT status FROM runs ORDER BY id")],
        }


def _with_recent_mail(traffic: Traffic) -> Traffic:
    """A message half an hour before now: the overlap a later run re-reads holds one."""
    at = _usec(NOW - dt.timedelta(minutes=30))
    for offset, act, met in ((0, 2, 0), (1_500_000, 10, 1)):
        traffic.emit(
            at + offset,
            met=met,
            act=act,
            mid="<CA+recent@mail.gmail.com>",
            sender="u6@corp.example",
            to=["orders@shop3.test", "team@partner9.example"],
            size=31_000,
            counts_as="delivered" if act == 10 else None,
        )
    return traffic.settle()


def _assert_private(folder: Path, traffic: Traffic) -> None:
    blob = read_all_bytes(folder)
    for address in traffic.addresses:
        assert address.encode() not in blob, address
    for canary in (SUBJECT, DISPLAY_NAME, ATTACHMENT, CLIENT_IP, RELAY_IP):
        assert canary.encode() not in blob, canary
    assert ESCORT_SITE.encode() in blob  # the external site is kept, as a domain


def _assert_escort_findings(state: dict[str, Any]) -> None:
    assert state["alerts"] == [("escort-ads", "repeated-contact", "Sales/EMEA")]
    assert sorted(state["events"], key=str) == sorted(
        [(ESCORT_SITE, "outbound", "delivered")] * 3
        + [(ESCORT_SITE, "outbound", "bounced"), (ESCORT_SITE, "inbound", "filtered_as_spam")],
        key=str,
    )


def test_run_from_bigquery_end_to_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, directory_csv: Path
) -> None:
    traffic = _with_recent_mail(gmail_traffic(400, NOW - dt.timedelta(hours=84), 82.4))
    stand_ins: list[DuckBigQuery] = []

    def connect(name: str, options: GoogleWorkspaceOptions, base: Path) -> DuckBigQuery:
        assert (options.project, options.dataset, options.table) == (PROJECT, DATASET, "activity")
        stand_ins.append(DuckBigQuery(traffic))
        return stand_ins[-1]

    monkeypatch.setattr(google, "BIGQUERY_CLIENT", connect)
    source = {
        "via": "bigquery",
        "project": PROJECT,
        "dataset": DATASET,
        "start_days": 4,
        "page_size": 250,
    }
    config = _config(tmp_path / "job", directory_csv, source)
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 new alert(s)" in result.output
    state = _stored(config)
    assert state["messages"] == len(traffic.outcomes)
    _assert_escort_findings(state)
    assert NOW.strftime("%Y-%m-%dT%H:%M:%SZ") <= state["bookmark"]
    assert len(stand_ins[0].queries) == 4  # four windows of 24 h
    assert stand_ins[0].closed
    _assert_private(tmp_path / "job", traffic)

    # the next run re-reads the overlap: nothing counted twice, no new alert
    again = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "0 new alert(s)" in again.output
    second = _stored(config)
    assert second["messages"] == state["messages"]
    assert second["runs"] == ["ok", "ok"]

    check = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert check.exit_code == 0, check.output
    assert "BigQuery client ready (Application Default Credentials)" in check.output
    assert f"{PROJECT}.{DATASET}.activity readable" in check.output
    assert "@" not in check.output


def test_run_from_the_reports_api_end_to_end(
    reports: Served, tmp_path: Path, directory_csv: Path
) -> None:
    traffic = _with_recent_mail(gmail_traffic(400, NOW - dt.timedelta(hours=84), 82.4, seed=23))
    serve(reports, traffic)
    config = _config(tmp_path / "job", directory_csv, reports.options(start_days=4, page_size=200))
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 new alert(s)" in result.output
    state = _stored(config)
    assert state["messages"] == len(traffic.outcomes)
    _assert_escort_findings(state)
    assert reports.state.token_requests == 1
    assert {q["maxResults"][0] for q in reports.state.queries} == {"200"}
    _assert_private(tmp_path / "job", traffic)

    again = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "0 new alert(s)" in again.output
    assert _stored(config)["messages"] == state["messages"]

    check = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert check.exit_code == 0, check.output
    assert "token acquired" in check.output
    assert "Gmail log events reachable (one request, no rows kept)" in check.output
    assert "all checks passed" in check.output
    assert "@" not in check.output and reports.private_key_id not in check.output
    assert reports.state.queries[-1]["maxResults"] == ["1"]

    since = (NOW - dt.timedelta(days=4)).date().isoformat()
    audit = CliRunner().invoke(
        cli,
        [
            "audit",
            "--config",
            str(config),
            "--source",
            "gmail",
            "--since",
            since,
            "--format",
            "json",
        ],
    )
    assert audit.exit_code == 0, audit.output
    report = json.loads(audit.output)
    assert [(a["rule_id"], a["org_unit"]) for a in report["alerts"]] == [
        ("repeated-contact", "Sales/EMEA")
    ]
    assert "@corp.example" not in audit.output
    open_ended = CliRunner().invoke(cli, ["audit", "--config", str(config), "--source", "gmail"])
    assert open_ended.exit_code == 2
    assert "Gmail logs are read by time window" in open_ended.output

    reports.state.delegated = False
    reports_denied = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert reports_denied.exit_code != 0
    assert "Domain-wide delegation" in reports_denied.output


# --- the conformance kit ------------------------------------------------------------------------
FORBIDDEN = (SUBJECT, DISPLAY_NAME, ATTACHMENT, CLIENT_IP, RELAY_IP)


class GmailHarness(Harness):
    """Gmail logs for the conformance kit: :func:`gmail_traffic` written at a fixed clock,
    read from BigQuery (DuckDB) or served by the Reports API server; appended traffic
    comes after the clock, which then moves on."""

    def __init__(self, via: str, served: Served | None = None) -> None:
        self.via = via
        self.served = served
        self.clock = NOW
        self.traffic = Traffic()
        self._tables: DuckBigQuery | None = None  # the export, rebuilt when traffic changes

    def now(self) -> dt.datetime:
        return self.clock

    def source(self, folder: Path) -> Source:
        if self.via == "bigquery":
            if self._tables is None:
                self._tables = DuckBigQuery(self.traffic)
            options = bigquery_options()
            return GoogleWorkspaceSource("gmail", options, folder, bigquery=self._tables)
        assert self.served is not None
        return reports_source(self.served)

    def _publish(self) -> None:
        self._tables = None
        if self.served is not None:
            serve(self.served, self.traffic)

    def _written(self, traffic: Traffic, begin: dt.datetime, end: dt.datetime) -> Written:
        windows = split_windows(begin, end, dt.timedelta(hours=24))
        rows = window_rows(traffic, windows, "first" if self.via == "bigquery" else "last")
        return Written.of(rows, forbidden=FORBIDDEN)

    def write(self, folder: Path, messages: int, seed: int) -> Written:
        # nothing in the last hours: a later run's overlap re-reads no earlier message
        self.traffic = gmail_traffic(messages, self.clock - dt.timedelta(days=3), 60, seed)
        self._publish()
        return self._written(self.traffic, self.clock - dt.timedelta(days=7), self.clock)

    def append(self, folder: Path, messages: int, seed: int) -> Written:
        start = self.clock + dt.timedelta(hours=1)
        more = gmail_traffic(messages, start, 10, seed, escort=False)
        self.traffic.events += more.events
        self.traffic.outcomes.update(more.outcomes)
        self.traffic.settle()
        before, self.clock = self.clock, self.clock + dt.timedelta(hours=14)
        self._publish()
        return self._written(more, before - dt.timedelta(hours=2), self.clock)


def test_bigquery_passes_the_conformance_kit(tmp_path: Path) -> None:
    report = check_source(GmailHarness("bigquery"), tmp_path, messages=120, max_kills=12)
    assert "resume" in report.ran and "append" in report.ran


@pytest.mark.slow
def test_the_reports_api_passes_the_conformance_kit(reports: Served, tmp_path: Path) -> None:
    report = check_source(
        GmailHarness("reports_api", reports), tmp_path, messages=120, max_kills=12
    )
    assert "resume" in report.ran and "append" in report.ran
