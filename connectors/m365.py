"""Microsoft 365 message trace read from Microsoft Graph (type ``m365``).

``GET /v1.0/admin/exchange/tracing/messageTraces`` lists one row per message and
recipient. The API answers a ``receivedDateTime ge … and receivedDateTime le …``
filter of at most 10 days, nothing older than 90 days, pages of up to 5000 rows
linked by ``@odata.nextLink``, and 100 requests per 5 minutes per tenant.

A run reads from its bookmark minus an overlap (late rows, and statuses such as
``pending`` that become final later) up to the run's start, in windows of at most
``window_hours``; each window is one read unit, committed with its end as the new
bookmark. Rows are keyed by trace id and recipient, so the overlap is counted once.

Only time, sender, recipient, status, size and trace id are taken from each row;
the subject and IP addresses are dropped as the page is parsed (the API has no
``$select``), and nothing is written anywhere before the engine pseudonymises it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from compliance.errors import ComplianceError, SourceError
from compliance.events import conform_raw
from connectors.base import (
    Chunk,
    PeriodRequired,
    ReadUnit,
    Source,
    SourceState,
)
from connectors.graph import (
    MESSAGE_TRACE_LIMIT,
    MESSAGE_TRACE_PERIOD,
    MESSAGE_TRACE_PERMISSION,
    GraphClient,
    GraphSettings,
    RequestBudget,
    shared_budget,
)
from connectors.textfile import iso_timestamps

log = logging.getLogger(__name__)

PATH = "/v1.0/admin/exchange/tracing/messageTraces"
#: Graph refuses windows longer than this and rows older than ``REACH``.
MAX_WINDOW = dt.timedelta(days=10)
REACH = dt.timedelta(days=90)
#: Margin kept from the 90-day edge, so a window planned now is still valid when sent.
REACH_MARGIN = dt.timedelta(minutes=30)
FIELDS = {
    "receivedDateTime": "timestamp",
    "senderAddress": "sender",
    "recipientAddress": "recipient",
    "status": "status",
    "size": "size",
    "id": "message_id",
}
FORMAT = "graph-message-trace"


class M365Options(GraphSettings):
    """Options of an ``m365`` source (the Graph settings plus how to read)."""

    start_days: int = Field(7, ge=1, le=89, description="how far back the first run reads")
    window_hours: int = Field(24, ge=1, le=240, description="hours per query and per commit")
    overlap_minutes: int = Field(
        120, ge=0, le=4320, description="re-read this much before the bookmark each run"
    )
    page_size: int = Field(5000, ge=1, le=5000, description="rows per page ($top)")
    request_budget: int = Field(
        90,
        ge=1,
        le=MESSAGE_TRACE_LIMIT,
        description="message-trace requests per 5 minutes this process may use (tenant: 100)",
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_bookmark(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def split_windows(
    begin: dt.datetime, end: dt.datetime, size: dt.timedelta
) -> list[tuple[dt.datetime, dt.datetime]]:
    """``[begin, end)`` cut into consecutive windows of at most ``size`` (≤ 10 days)."""
    size = min(size, MAX_WINDOW)
    out = []
    while begin < end:
        stop = min(begin + size, end)
        out.append((begin, stop))
        begin = stop
    return out


def page_to_chunk(page: list[Any], begin: dt.datetime, end: dt.datetime) -> Chunk:
    """One page of trace rows as a raw chunk: only the needed fields, rows in the window."""
    rows = [r for r in page if isinstance(r, dict)]
    rejected: Counter[str] = Counter()
    if len(rows) != len(page):
        rejected["malformed_row"] += len(page) - len(rows)
    # only the needed keys are taken; the subject and IPs are dropped here
    frame = pd.DataFrame.from_records(rows, columns=list(FIELDS)).rename(columns=FIELDS)
    # only strings are times; out of range (year 1600, 9999): NaT, rejected downstream
    frame["timestamp"] = iso_timestamps(
        frame["timestamp"].map(lambda v: v if isinstance(v, str) else None)
    )
    frame["size"] = pd.to_numeric(frame["size"], errors="coerce").astype("Int64")
    # ge/le bounds overlap by one instant: a row on a boundary belongs to the later window
    inside = frame["timestamp"].isna() | (
        (frame["timestamp"] >= begin) & (frame["timestamp"] < end)
    )
    return Chunk(conform_raw(frame.loc[inside]), rejected)


class TraceWindow(ReadUnit):
    """One query window, read page by page."""

    format = FORMAT
    once = False
    distributable = False

    def __init__(
        self, client: GraphClient, begin: dt.datetime, end: dt.datetime, page_size: int
    ) -> None:
        self.client = client
        self.begin = begin
        self.end = end
        self.page_size = page_size
        self.key = f"{_iso(begin)}/{_iso(end)}"
        self.bookmark = _iso(end)

    def params(self) -> dict[str, str]:
        """The query of this window (both bounds, as the API requires)."""
        return {
            "$filter": (
                f"receivedDateTime ge {_iso(self.begin)} and receivedDateTime le {_iso(self.end)}"
            ),
            "$top": str(self.page_size),
        }

    def chunks(self) -> Iterator[Chunk]:
        pages = 0
        for page in self.client.pages(PATH, self.params()):
            pages += 1
            yield page_to_chunk(page, self.begin, self.end)
        log.info("source %s: window %s read in %d page(s)", self.client.name, self.key, pages)


class M365Source(Source):
    """Message trace of one Microsoft 365 tenant."""

    options_model = M365Options
    reads = "window"

    @classmethod
    def from_options(cls, name: str, options: M365Options, base_dir: Path) -> Source:
        return cls(name, options, base_dir)

    def __init__(
        self,
        name: str,
        options: M365Options,
        base_dir: Path,
        budget: RequestBudget | None = None,
        client: GraphClient | None = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self.budget = budget or shared_budget(
            options, "messageTraces", options.request_budget, MESSAGE_TRACE_PERIOD
        )
        self.client = client or GraphClient(
            name, options, base_dir, MESSAGE_TRACE_PERMISSION, self.budget
        )

    def plan(self, state: SourceState) -> tuple[dt.datetime, dt.datetime]:
        """The range a run reads: bookmark minus overlap (or the first backfill) to the start."""
        now = state.started.astimezone(dt.UTC).replace(microsecond=0)
        oldest = now - REACH + REACH_MARGIN
        if state.bookmark is None:
            return now - dt.timedelta(days=self.options.start_days), now
        mark = _parse_bookmark(state.bookmark)
        if mark < oldest:
            raise SourceError(
                f"source {self.name!r}: the last complete read ended {_iso(mark)}, longer ago "
                f"than the 90 days Microsoft Graph keeps: messages from {_iso(mark)} to "
                f"{_iso(oldest)} can no longer be fetched. Load them from an export if one "
                f"exists, then run `compliance sources reset {self.name}` to continue with "
                "what Graph still keeps."
            )
        return max(mark - dt.timedelta(minutes=self.options.overlap_minutes), oldest), now

    def windows(self, begin: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[TraceWindow]:
        """Read units for ``[begin, end)``; refused when it reaches past Graph's 90 days."""
        if begin < now - REACH:
            raise SourceError(
                f"source {self.name!r}: {_iso(begin)} is more than 90 days before {_iso(now)}; "
                "Microsoft Graph keeps message trace for 90 days (use an export for older mail)"
            )
        size = dt.timedelta(hours=self.options.window_hours)
        return [
            TraceWindow(self.client, b, e, self.options.page_size)
            for b, e in split_windows(begin, end, size)
        ]

    def units_between(
        self, begin: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
    ) -> list[ReadUnit]:
        if begin is None:
            raise PeriodRequired("Graph keeps 90 days")
        return list(self.windows(begin, min(end, now) if end is not None else now, now))

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        state = state or SourceState(None, dt.datetime.now(dt.UTC))
        begin, end = self.plan(state)
        return list(self.windows(begin, end, state.started))

    def check(self) -> list[tuple[bool, str]]:
        results: list[tuple[bool, str]] = []
        try:
            roles = self.client.roles()
        except ComplianceError as exc:
            return [(False, str(exc))]
        results.append((True, f"token acquired from {self.client.authority}"))
        if MESSAGE_TRACE_PERMISSION in roles:
            results.append((True, f"permission {MESSAGE_TRACE_PERMISSION} granted"))
        else:
            results.append(
                (
                    False,
                    f"the token carries no {MESSAGE_TRACE_PERMISSION} role: add that application "
                    "permission to the app registration and grant admin consent",
                )
            )
            return results
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        probe = TraceWindow(self.client, now - dt.timedelta(hours=1), now, 1)
        try:
            self.client.get(self.client.url(PATH), probe.params())
        except ComplianceError as exc:
            results.append((False, str(exc)))
        else:
            results.append((True, "message trace reachable (one request, no rows kept)"))
        return results

    def close(self) -> None:
        self.client.close()
