"""Google Workspace Gmail logs (type ``google-workspace``): BigQuery or the Reports API.

Gmail logs one row per *stage* of a message (received by the inbound SMTP server, accepted,
delivered to a mailbox or sent on, deferred, bounced, quarantined...), each with the
envelope sender (``message_info.source.address``), the recipients
(``message_info.destination[].address``, repeated), the RFC 5322 Message-ID
(``message_info.rfc2822_message_id``), the size (``message_info.payload_size``), the time
in microseconds (``event_info.timestamp_usec``), the stage (``message_info.action_type``),
the event as the Security Investigation Tool names it (``event_info.mail_event_type``),
whether it succeeded (``event_info.success``: false when a policy rejected the message)
and the spam verdict (``message_info.is_spam``). This reader turns them into one row per
(message, recipient) whose status is the *last delivery outcome* logged for that pair.

Two ways in, chosen by the option ``via``:

* ``bigquery``: Gmail logs exported to BigQuery. The Workspace export writes the table
  ``activity`` (``record_type = 'gmail'``, the Gmail fields under ``gmail.``, time in
  ``time_usec``, daily partitions ``_PARTITIONTIME`` cut at Pacific midnight); the legacy
  Gmail export writes ``daily_YYYYMMDD`` tables with the fields at the top level. One
  parameterised query per window selects only the eleven columns above (never the subject,
  attachment names or any IP address), unnests the recipients and collapses each
  (message, sender, recipient) to one row *in BigQuery*; the result is read page by page.
  ``google-cloud-bigquery`` (the ``google`` extra) is imported only when a BigQuery source
  is read; anything with :class:`QueryClient`'s methods can stand in for it
  (:data:`BIGQUERY_CLIENT` builds the client; tests replace it with DuckDB).
* ``reports_api``: the Admin SDK Reports API,
  ``GET /admin/reports/v1/activity/users/all/applications/gmail``, for tenants without the
  export: ``startTime`` and ``endTime`` are required and at most 30 days apart, pages of at
  most 1000 activities linked by ``nextPageToken``, newest first. A service account with
  domain-wide delegation impersonates an administrator (``google-auth``) with the scope
  ``admin.reports.audit.readonly``. Requests are retried on 429 and 5xx (tenacity,
  honouring ``Retry-After``); 401 and 403 say what to fix. Only the parameters needed are
  taken from each event as the page is parsed; the actor, IP and subject are dropped there.
  Each (message, sender, recipient) is yielded once per window, at its newest outcome
  (:func:`first_outcomes`, 8 bytes remembered per key).

Both read windows of ``window_hours`` from the bookmark minus ``overlap_minutes`` up to the
run's start; each window is a read unit (``once = False``) committed with its end as the
new bookmark. A message read twice (the overlap, or stages on both sides of a window edge)
has the same (Message-ID, sender, recipient), which the store keys on.

How a log row maps to a status (:func:`outcome`; the SQL of :func:`gmail_query` is the
same rule, and a test checks that they agree):

====================================================  ==================
``mail_event_type`` 5 (quarantined)                    ``quarantined``
``mail_event_type`` 4 or ``action_type`` 70 (spam
after delivery), ``action_type`` 19 (dropped),
delivered with ``is_spam``                             ``filtered_as_spam``
``mail_event_type`` 30 or ``action_type`` 18           ``bounced``
``mail_event_type`` 34 or ``action_type`` 14           ``deferred``
``success`` false at ``action_type`` 1 or 2 (or
``mail_event_type`` 1 or 2 without a stage)            ``rejected``
``action_type`` 3 or 10, ``mail_event_type`` 1 or 2    ``delivered``
anything else (user actions, Groups, relay stages)    no row
====================================================  ==================

Sources relied on: Google, "Schema for Gmail logs in BigQuery" (support.google.com/a/answer/
7230050 and 12384955: the fields, ``mail_event_type`` values, ``success`` false on a
policy rejection); its ``action_type`` stages (1 received by inbound SMTP, 2 accepted,
rejection policies evaluated, 3 delivered or sent on, 10 sent by outbound SMTP, 14
temporary failure to retry, 18 bounced, 19 dropped, 70 spam after delivery, 71 user
actions; 45/46/51/54 Groups, 48/49 SMTP relay) as summarised with that citation in a
public forensics guide, as are the Pacific-time partitions of ``activity``; Google,
"Gmail Activity Events" (developers.google.com/workspace/admin/reports/v1/appendix/
activity/gmail: event ``delivery``, parameter ``event_info``, the 30-day limit) and the
Reports API ``Activity`` resource (``messageValue``/``multiMessageValue``/
``NestedParameter``). Google documents only ``event_info`` for the Reports API, so the
``message_info`` names are the BigQuery schema's, read nested at any depth, as dotted
names, or from ``flattened_destinations`` (``service:selector:address``, comma-separated).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from compliance.errors import ComplianceError, ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW, TIMESTAMP_CEILING, TIMESTAMP_FLOOR, conform_raw
from compliance.secrets import SecretRef, no_inline_secret, resolve_path
from connectors.base import (
    Chunk,
    PeriodRequired,
    ReadUnit,
    Source,
    SourceState,
)
from connectors.common import KeySet, retry_after

try:  # google-auth: the ``google`` extra (and the test extra)
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests
    from google.oauth2 import service_account

    _NO_GOOGLE_AUTH: str | None = None
except ImportError as _missing:  # pragma: no cover (the test environment has it)
    _NO_GOOGLE_AUTH = str(_missing)

log = logging.getLogger(__name__)

REPORTS_SCOPE: Final = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
BIGQUERY_SCOPE: Final = "https://www.googleapis.com/auth/bigquery"
REPORTS_PATH: Final = "/admin/reports/v1/activity/users/all/applications/gmail"
#: The Reports API refuses a Gmail request whose bounds are further apart.
REPORTS_MAX_WINDOW: Final = dt.timedelta(days=30)
#: Gmail log events are kept six months; a window planned now must still be inside.
REPORTS_REACH: Final = dt.timedelta(days=180)
REACH_MARGIN: Final = dt.timedelta(hours=1)
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_NESTING: Final = 8
FORMATS: Final = {"bigquery": "gmail-bigquery", "reports_api": "gmail-reports-api"}
INSTALL_HINT: Final = "pip install 'compliance-monitor[google]'"

# --- statuses ---------------------------------------------------------------------------
#: Delivery outcomes by code. Of two outcomes of one (message, recipient) the later wins;
#: of two in the same microsecond the higher code (the SQL keeps ``max(usec * 8 + code)``).
OUTCOMES: Final = (
    "unknown", "deferred", "delivered", "bounced", "rejected", "filtered_as_spam", "quarantined",
)  # fmt: skip
DEFERRED, DELIVERED, BOUNCED, REJECTED, SPAM, QUARANTINED = range(1, 7)
_OUTCOME_NAMES = np.array((*OUTCOMES, "unknown"), dtype=object)


def outcome(
    mail_event_type: int | None,
    action_type: int | None,
    success: bool | None,
    is_spam: bool | None,
) -> int:
    """The delivery outcome of one Gmail log row (an index into :data:`OUTCOMES`), or 0
    when the row is no delivery outcome (a stage before one, or what a user did later)."""
    if mail_event_type == 5:
        return QUARANTINED
    if mail_event_type == 4 or action_type == 70:
        return SPAM
    if mail_event_type == 30 or action_type == 18:
        return BOUNCED
    if mail_event_type == 34 or action_type == 14:
        return DEFERRED
    if action_type == 19:
        return SPAM
    if success is False:
        stage = action_type in (1, 2) or (action_type is None and mail_event_type in (1, 2))
        return REJECTED if stage else 0
    if action_type in (3, 10) or mail_event_type in (1, 2):
        return SPAM if is_spam else DELIVERED
    return 0


def _outcome_sql(e: str, m: str) -> str:
    """:func:`outcome` in SQL, over ``event_info`` ``e`` and ``message_info`` ``m``."""
    return f"""case
      when {e}.mail_event_type = 5 then {QUARANTINED}
      when {e}.mail_event_type = 4 or {m}.action_type = 70 then {SPAM}
      when {e}.mail_event_type = 30 or {m}.action_type = 18 then {BOUNCED}
      when {e}.mail_event_type = 34 or {m}.action_type = 14 then {DEFERRED}
      when {m}.action_type = 19 then {SPAM}
      when {e}.success = false then
        case when {m}.action_type in (1, 2)
          or ({m}.action_type is null and {e}.mail_event_type in (1, 2)) then {REJECTED} end
      when {m}.action_type in (3, 10) or {e}.mail_event_type in (1, 2) then
        case when {m}.is_spam then {SPAM} else {DELIVERED} end
    end"""


# --- options ----------------------------------------------------------------------------
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_LOCATION = re.compile(r"^[A-Za-z0-9-]{2,40}$")


class GoogleWorkspaceOptions(BaseModel):
    """Options of a ``google-workspace`` source."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    via: Literal["bigquery", "reports_api"] = Field(
        description="bigquery: Gmail logs exported to BigQuery (best); reports_api: the "
        "Admin SDK Reports API (tenants without the export)"
    )
    credentials: SecretRef | None = Field(
        None,
        description="a service-account key (JSON) as {$file: PATH} or {$env: NAME}; "
        "bigquery without it uses Application Default Credentials",
    )
    admin: str | None = Field(
        None,
        description="reports_api: the administrator the service account impersonates "
        "(domain-wide delegation)",
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    )
    project: str | None = Field(
        None, description="bigquery: the Google Cloud project that holds the dataset"
    )
    dataset: str | None = Field(
        None, description="bigquery: the dataset the Gmail logs are exported to"
    )
    table: Literal["activity", "daily"] = Field(
        "activity",
        description="bigquery: activity (Workspace logs export, record_type = 'gmail') or "
        "daily (legacy Gmail export, daily_YYYYMMDD tables)",
    )
    billing_project: str | None = Field(
        None, description="bigquery: the project that runs (and pays for) the queries"
    )
    location: str | None = Field(None, description="bigquery: the dataset's location (EU, US...)")
    maximum_bytes_billed: int | None = Field(
        None, ge=10 << 20, description="bigquery: refuse a query that would bill more bytes"
    )
    prune_partitions: bool = Field(
        True,
        description="bigquery activity: filter _PARTITIONTIME too, so that a window scans "
        "about two daily partitions (turn off if the table is not partitioned so)",
    )
    start_days: int = Field(7, ge=1, le=3650, description="how far back the first run reads")
    window_hours: int = Field(24, ge=1, le=720, description="hours per query and per commit")
    overlap_minutes: int = Field(
        120, ge=0, le=4320, description="re-read this much before the bookmark each run"
    )
    page_size: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="rows per page: bigquery up to 65536 (default 50000), reports_api up to "
        "1000 (its default)",
    )
    endpoint: str = Field(
        "https://admin.googleapis.com", description="reports_api: the Admin SDK origin"
    )
    ca_bundle: str | None = Field(None, description="PEM bundle of CAs to trust instead")
    timeout: float = Field(60.0, ge=1, le=600, description="seconds per request")
    max_retries: int = Field(6, ge=0, le=20, description="retries of 429 and 5xx answers")

    _secret = field_validator("credentials", mode="before")(no_inline_secret)

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("must be an https:// origin without a path")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _per_way(self) -> GoogleWorkspaceOptions:
        if self.via == "bigquery":
            if not (self.project and _PROJECT.match(self.project)):
                raise ValueError("via bigquery needs project: a Google Cloud project id")
            if not (self.dataset and _DATASET.match(self.dataset)):
                raise ValueError("via bigquery needs dataset: letters, digits and underscores")
            if self.billing_project is not None and not _PROJECT.match(self.billing_project):
                raise ValueError("billing_project must be a Google Cloud project id")
            if self.location is not None and not _LOCATION.match(self.location):
                raise ValueError("location must be a BigQuery location such as EU or US")
            if self.admin is not None:
                raise ValueError("admin is for reports_api (BigQuery needs no impersonation)")
        else:
            if self.credentials is None or self.admin is None:
                raise ValueError(
                    "via reports_api needs credentials (a service-account key with "
                    "domain-wide delegation) and admin (the administrator it impersonates)"
                )
            if self.page_size is not None and self.page_size > 1000:
                raise ValueError("page_size: the Reports API returns at most 1000 per page")
            if self.window_hours > REPORTS_MAX_WINDOW.total_seconds() // 3600:
                raise ValueError("window_hours: the Reports API accepts at most 30 days (720)")
            if self.start_days > REPORTS_REACH.days:
                raise ValueError("start_days: Gmail log events are kept 180 days")
            given = self.model_fields_set & {"project", "dataset", "billing_project", "location"}
            if given:
                raise ValueError(f"{', '.join(sorted(given))}: for via bigquery only")
        return self

    @property
    def rows_per_page(self) -> int:
        """The page size, with each way's default."""
        if self.page_size is not None:
            return self.page_size
        return 50_000 if self.via == "bigquery" else 1000


# --- windows and frames -----------------------------------------------------------------
def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usec(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _parse_bookmark(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def split_windows(
    begin: dt.datetime, end: dt.datetime, size: dt.timedelta
) -> list[tuple[dt.datetime, dt.datetime]]:
    """``[begin, end)`` cut into consecutive windows of at most ``size``."""
    out = []
    while begin < end:
        stop = min(begin + size, end)
        out.append((begin, stop))
        begin = stop
    return out


_FLOOR_USEC: Final = _usec(TIMESTAMP_FLOOR)
_CEILING_USEC: Final = _usec(TIMESTAMP_CEILING)


def raw_frame(
    usec: Sequence[Any],
    codes: Sequence[Any],
    message_ids: Sequence[Any],
    senders: Sequence[Any],
    recipients: Sequence[Any],
    sizes: Sequence[Any],
) -> pd.DataFrame:
    """Columns of outcome rows as a RAW frame: microseconds to UTC times (out of range or
    missing: NaT, rejected downstream), codes to statuses, a trace id where Gmail logged no
    Message-ID (``gmail-trace:<usec>``, stable across re-reads)."""
    stamps = pd.to_numeric(pd.Series(usec, dtype=object), errors="coerce")
    values = stamps.to_numpy(dtype="float64", na_value=np.nan)
    inside = ~np.isnan(values) & (values >= _FLOOR_USEC) & (values < _CEILING_USEC)
    whole = np.where(inside, values, 0).astype(np.int64)
    times = pd.Series(whole.astype("datetime64[us]").astype("datetime64[ns]"))
    times = times.where(inside).dt.tz_localize("UTC")
    code = pd.to_numeric(pd.Series(codes, dtype=object), errors="coerce")
    at = code.fillna(len(OUTCOMES)).astype(np.int64).to_numpy()
    at = np.where((at >= 0) & (at < len(OUTCOMES)), at, len(OUTCOMES))
    mid = pd.Series(message_ids, dtype=object).astype("string").str.strip()
    missing = mid.isna() | (mid == "")
    if missing.any():
        trace = "gmail-trace:" + pd.Series(whole, dtype="string")
        mid = mid.mask(missing, trace)
    return pd.DataFrame(
        {
            "timestamp": times,
            "sender": pd.Series(senders, dtype=object).astype("string"),
            "recipient": pd.Series(recipients, dtype=object).astype("string"),
            "status": pd.Series(_OUTCOME_NAMES[at], dtype="string"),
            "size": pd.to_numeric(pd.Series(sizes, dtype=object), errors="coerce").astype("Int64"),
            "message_id": mid,
        }
    )


# --- BigQuery ---------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryParam:
    """A named query parameter (BigQuery type names: INT64, TIMESTAMP, STRING)."""

    name: str
    type: str
    value: Any


class QueryClient(Protocol):
    """What this reader needs of BigQuery. Implementations raise
    :class:`~compliance.errors.SourceError` (or its retriable kind) that say what to fix,
    never row contents."""

    def pages(
        self, sql: str, params: Sequence[QueryParam], page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Run a parameterised standard-SQL query; its result rows, a page at a time."""
        ...  # pragma: no cover

    def dry_run(self, sql: str, params: Sequence[QueryParam]) -> int | None:
        """Bytes the query would scan (None: not known), without running it."""
        ...  # pragma: no cover

    def close(self) -> None:
        """Release connections."""
        ...  # pragma: no cover


#: The columns each window's query returns.
RESULT_COLUMNS: Final = ("first_usec", "outcome", "message_id", "sender", "recipient", "size")


def table_ref(options: GoogleWorkspaceOptions) -> str:
    """The quoted table the query reads: ``project.dataset.activity`` or ``...daily_*``.
    (Identifiers cannot be query parameters; the options allow letters, digits, ``-``,
    ``_``, ``.`` and ``:`` only.)"""
    table = "activity" if options.table == "activity" else "daily_*"
    return f"`{options.project}.{options.dataset}.{table}`"


def gmail_query(table: Literal["activity", "daily"], ref: str, prune: bool = True) -> str:
    """The query of one window: the needed columns only, one row per outcome-bearing
    (message, sender, recipient), with the first outcome's time and the last outcome.

    Parameters: ``begin_usec``, ``end_usec`` (INT64, the window), and either
    ``partition_begin``/``partition_end`` (TIMESTAMP, daily partitions of ``activity``) or
    ``suffix_begin``/``suffix_end`` (STRING, ``YYYYMMDD`` of the daily tables). Keywords
    are lower case: this is BigQuery SQL, run by BigQuery, not the store's.
    """
    if table == "activity":
        e, m = "gmail.event_info", "gmail.message_info"
        ts = f"coalesce({e}.timestamp_usec, time_usec)"
        where = "record_type = 'gmail' and time_usec >= @begin_usec and time_usec < @end_usec"
        if prune:
            where += " and _PARTITIONTIME >= @partition_begin and _PARTITIONTIME <= @partition_end"
    else:
        e, m = "event_info", "message_info"
        ts = f"{e}.timestamp_usec"
        where = (
            "_TABLE_SUFFIX between @suffix_begin and @suffix_end"
            f" and {ts} >= @begin_usec and {ts} < @end_usec"
        )
    return f"""select
  min(t.ts) as first_usec,
  max(t.ts * 8 + t.code) as outcome,
  t.message_id, t.sender, d.address as recipient,
  max(t.size) as size
from (
  select
    {ts} as ts,
    {m}.rfc2822_message_id as message_id,
    {m}.source.address as sender,
    {m}.payload_size as size,
    {m}.destination as destination,
    {_outcome_sql(e, m)} as code
  from {ref}
  where {where}
) as t
cross join unnest(t.destination) as d
where t.code is not null
group by t.message_id, t.sender, d.address"""  # noqa: S608 (identifiers validated)


def check_query(table: Literal["activity", "daily"], ref: str, prune: bool = True) -> str:
    """A query that reads one time value of the window (``check``: access, no rows kept)."""
    if table == "activity":
        where = "record_type = 'gmail' and time_usec >= @begin_usec and time_usec < @end_usec"
        if prune:
            where += " and _PARTITIONTIME >= @partition_begin and _PARTITIONTIME <= @partition_end"
        return f"select time_usec as t from {ref} where {where} limit 1"  # noqa: S608
    ts = "event_info.timestamp_usec"
    return (
        f"select {ts} as t from {ref} where _TABLE_SUFFIX between @suffix_begin and "  # noqa: S608
        f"@suffix_end and {ts} >= @begin_usec and {ts} < @end_usec limit 1"
    )


def window_params(
    table: Literal["activity", "daily"], begin: dt.datetime, end: dt.datetime, prune: bool = True
) -> list[QueryParam]:
    """The parameters of :func:`gmail_query` for ``[begin, end)``. Partitions and daily
    tables are cut at Pacific midnight (UTC-7 or -8): the day before ``begin``'s to
    ``end``'s hold every row of the window, whichever way the tables are cut."""
    first = (begin.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
    last = (end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
    params = [
        QueryParam("begin_usec", "INT64", _usec(begin)),
        QueryParam("end_usec", "INT64", _usec(end)),
    ]
    if table == "daily":
        params += [
            QueryParam("suffix_begin", "STRING", first.strftime("%Y%m%d")),
            QueryParam("suffix_end", "STRING", last.strftime("%Y%m%d")),
        ]
    elif prune:
        midnight = dt.time(tzinfo=dt.UTC)
        params += [
            QueryParam("partition_begin", "TIMESTAMP", dt.datetime.combine(first, midnight)),
            QueryParam("partition_end", "TIMESTAMP", dt.datetime.combine(last, midnight)),
        ]
    return params


def result_chunk(rows: Sequence[Any]) -> Chunk:
    """One page of :func:`gmail_query` rows as a RAW chunk."""
    good = [r for r in rows if isinstance(r, Mapping)]
    rejected: Counter[str] = Counter()
    if len(good) != len(rows):
        rejected["malformed_row"] += len(rows) - len(good)
    frame = pd.DataFrame.from_records(good, columns=list(RESULT_COLUMNS))
    packed = pd.to_numeric(frame["outcome"], errors="coerce")
    codes = packed.mod(8).to_numpy(dtype="float64", na_value=np.nan)
    raw = raw_frame(
        frame["first_usec"].tolist(),
        codes.tolist(),
        frame["message_id"].tolist(),
        frame["sender"].tolist(),
        frame["recipient"].tolist(),
        frame["size"].tolist(),
    )
    return Chunk(conform_raw(raw), rejected)


def explain_bigquery_error(name: str, exc: BaseException) -> SourceError:
    """What a failed BigQuery call means and what to fix (the exception's HTTP status,
    class and a short message that names no address)."""
    status = getattr(exc, "code", None)
    message = str(getattr(exc, "message", "") or exc).splitlines()[0][:300] if str(exc) else ""
    if "@" in message:
        message = ""
    kind = type(exc).__name__
    said = f"{kind}: {message}" if message else kind
    head = f"source {name!r}: BigQuery refused the query ({said})."
    if status in RETRY_STATUSES:
        return RetriableSourceError(f"{head} The next run retries.")
    if status == 403 or kind == "Forbidden":
        return SourceError(
            head + " The account needs BigQuery Data Viewer (roles/bigquery.dataViewer) on "
            "the dataset and BigQuery Job User (roles/bigquery.jobUser) on the billing "
            "project; or maximum_bytes_billed is too low for the window."
        )
    if status == 404 or kind == "NotFound":
        return SourceError(head + " Check project, dataset, table and location.")
    if status == 401 or kind in ("Unauthorized", "RefreshError"):
        return SourceError(head + " The credentials were refused: check the key.")
    if "bytes billed" in message.lower():
        return SourceError(head + " Raise maximum_bytes_billed or shorten window_hours.")
    if status == 400 or kind == "BadRequest":
        return SourceError(
            head + " Check table (activity or daily): its columns must be those of the "
            "Gmail logs export."
        )
    return SourceError(head)


class CloudBigQuery:
    """:class:`QueryClient` on google-cloud-bigquery (the ``google`` extra)."""

    def __init__(self, name: str, options: GoogleWorkspaceOptions, base_dir: Path) -> None:
        try:
            from google.cloud import bigquery  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise ConfigError(
                f"source {name!r}: via bigquery needs google-cloud-bigquery: {INSTALL_HINT}"
            ) from None
        self.name = name
        self.options = options
        self._bigquery: Any = bigquery
        credentials = google_credentials(name, options, base_dir, BIGQUERY_SCOPE)
        try:
            self.client: Any = bigquery.Client(
                project=options.billing_project or options.project,
                credentials=credentials,
                location=options.location,
            )
        except Exception as exc:
            raise explain_bigquery_error(name, exc) from None

    def _config(self, params: Sequence[QueryParam], dry_run: bool = False) -> Any:
        bq = self._bigquery
        return bq.QueryJobConfig(
            query_parameters=[bq.ScalarQueryParameter(p.name, p.type, p.value) for p in params],
            maximum_bytes_billed=self.options.maximum_bytes_billed,
            use_legacy_sql=False,
            dry_run=dry_run,
            use_query_cache=not dry_run,
            labels={"application": "compliance-monitor"},
        )

    def pages(
        self, sql: str, params: Sequence[QueryParam], page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        try:
            job = self.client.query(sql, job_config=self._config(params))
            result = job.result(page_size=page_size)
            for page in result.pages:
                yield [dict(row.items()) for row in page]
        except ComplianceError:
            raise
        except Exception as exc:
            raise explain_bigquery_error(self.name, exc) from None

    def dry_run(self, sql: str, params: Sequence[QueryParam]) -> int | None:
        try:
            job = self.client.query(sql, job_config=self._config(params, dry_run=True))
        except Exception as exc:
            raise explain_bigquery_error(self.name, exc) from None
        found = getattr(job, "total_bytes_processed", None)
        return int(found) if isinstance(found, int) else None

    def close(self) -> None:
        self.client.close()


#: Builds the BigQuery client of a source: ``(name, options, config folder) -> QueryClient``.
#: The one test seam: tests replace it with a stand-in (DuckDB) that runs the same SQL.
BIGQUERY_CLIENT: Callable[[str, GoogleWorkspaceOptions, Path], QueryClient] = CloudBigQuery


class BigQueryWindow(ReadUnit):
    """One window of the Gmail logs in BigQuery: one query, read page by page."""

    format = FORMATS["bigquery"]
    once = False
    distributable = False

    def __init__(self, source: GoogleWorkspaceSource, begin: dt.datetime, end: dt.datetime):
        self.source = source
        self.begin = begin
        self.end = end
        self.key = f"bigquery:{_iso(begin)}/{_iso(end)}"
        self.bookmark = _iso(end)

    def chunks(self) -> Iterator[Chunk]:
        options = self.source.options
        sql = gmail_query(options.table, table_ref(options), options.prune_partitions)
        params = window_params(options.table, self.begin, self.end, options.prune_partitions)
        pages = rows = 0
        for page in self.source.bigquery.pages(sql, params, options.rows_per_page):
            pages += 1
            rows += len(page)
            yield result_chunk(page)
        log.info(
            "source %s: window %s: %d row(s) in %d page(s)", self.source.name, self.key, rows, pages
        )


# --- the Reports API --------------------------------------------------------------------
#: Parameters taken from each event (dotted); everything else is dropped while parsing.
WANTED: Final = frozenset(
    {
        "event_info.mail_event_type",
        "event_info.success",
        "event_info.timestamp_usec",
        "message_info.action_type",
        "message_info.rfc2822_message_id",
        "message_info.payload_size",
        "message_info.source.address",
        "message_info.destination.address",
        "message_info.flattened_destinations",
        "message_info.is_spam",
    }
)


def _tree(names: frozenset[str]) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    """For each dotted prefix, the child names to look at: (full name, wanted itself,
    a prefix of a wanted name). A child may itself be dotted (``source.address``)."""
    tree: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(len(parts)):
            for j in range(i + 1, len(parts) + 1):
                full = ".".join(parts[:j])
                old = tree.setdefault(".".join(parts[:i]), {}).get(".".join(parts[i:j]))
                wanted, prefix = j == len(parts), j < len(parts)
                if old is not None:
                    wanted, prefix = wanted or old[1], prefix or old[2]
                tree[".".join(parts[:i])][".".join(parts[i:j])] = (full, wanted, prefix)
    return tree


_TREE: Final = _tree(WANTED)


def flatten_parameters(parameters: Any) -> dict[str, list[Any]]:
    """The wanted values of a Reports API event's parameters, by dotted name: nested
    ``messageValue``/``multiMessageValue`` at any depth (to :data:`MAX_NESTING`), or names
    already dotted; each a list (a repeated record gives one value per item). Parameters
    not wanted are passed over unread."""
    out: dict[str, list[Any]] = {}

    def walk(items: Any, prefix: str, depth: int) -> None:
        children = _TREE.get(prefix)
        if children is None or not isinstance(items, list) or depth > MAX_NESTING:
            return
        for p in items:
            name = p.get("name") if isinstance(p, dict) else None
            found = children.get(name) if isinstance(name, str) else None
            if found is None:
                continue
            key, wanted, nests = found
            if nests:
                nested = p.get("messageValue")
                if isinstance(nested, dict):
                    walk(nested.get("parameter"), key, depth + 1)
                repeated = p.get("multiMessageValue")
                for item in repeated if isinstance(repeated, list) else ():
                    if isinstance(item, dict):
                        walk(item.get("parameter"), key, depth + 1)
            if not wanted:
                continue
            for single in ("value", "intValue", "boolValue"):
                if single in p:
                    out.setdefault(key, []).append(p[single])
                    break
            for multi in ("multiValue", "multiIntValue", "multiBoolValue"):
                values = p.get(multi)
                if isinstance(values, list):
                    out.setdefault(key, []).extend(values)

    walk(parameters, "", 0)
    return out


def _int(values: list[Any] | None) -> int | None:
    if not values:
        return None
    value = values[0]
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(values: list[Any] | None) -> bool | None:
    if not values:
        return None
    value = values[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _text(values: list[Any] | None) -> str | None:
    return values[0] if values and isinstance(values[0], str) else None


def _recipients(params: dict[str, list[Any]]) -> list[str]:
    found = [a for a in params.get("message_info.destination.address", ()) if isinstance(a, str)]
    if found:
        return found
    for flat in params.get("message_info.flattened_destinations", ()):
        if isinstance(flat, str):
            found += [part.rsplit(":", 1)[-1].strip() for part in flat.split(",") if part]
    return [a for a in found if a]


def _activity_usec(item: dict[str, Any], params: dict[str, list[Any]]) -> int | None:
    usec = _int(params.get("event_info.timestamp_usec"))
    if usec is not None:
        return usec
    ident = item.get("id")
    stamp = ident.get("time") if isinstance(ident, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return _usec(moment)


def activities_chunk(items: Sequence[Any], begin: dt.datetime, end: dt.datetime) -> Chunk:
    """One page of Reports API activities as a RAW chunk: one row per recipient of each
    event that is a delivery outcome, in the page's order (newest first: the last outcome
    of a message comes first, and is the one kept); events outside the window dropped."""
    rejected: Counter[str] = Counter()
    low, high = _usec(begin), _usec(end)
    usec: list[int | None] = []
    codes: list[int] = []
    mids: list[str | None] = []
    senders: list[str | None] = []
    recipients: list[str] = []
    sizes: list[int | None] = []
    for item in items:
        events = item.get("events") if isinstance(item, dict) else None
        if not isinstance(events, list):
            rejected["malformed_activity"] += 1
            continue
        for event in events:
            if not isinstance(event, dict):
                rejected["malformed_activity"] += 1
                continue
            params = flatten_parameters(event.get("parameters"))
            code = outcome(
                _int(params.get("event_info.mail_event_type")),
                _int(params.get("message_info.action_type")),
                _bool(params.get("event_info.success")),
                _bool(params.get("message_info.is_spam")),
            )
            if not code:
                continue
            at = _activity_usec(item, params)
            if at is not None and not low <= at < high:
                continue
            to = _recipients(params)
            if not to:
                rejected["no_recipient"] += 1
                continue
            mid = _text(params.get("message_info.rfc2822_message_id"))
            sender = _text(params.get("message_info.source.address"))
            size = _int(params.get("message_info.payload_size"))
            for recipient in to:
                usec.append(at)
                codes.append(code)
                mids.append(mid)
                senders.append(sender)
                recipients.append(recipient)
                sizes.append(size)
    frame = raw_frame(usec, codes, mids, senders, recipients, sizes)
    return Chunk(conform_raw(frame), rejected)


class _Transient(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def _api_error(response: requests.Response) -> tuple[str, str]:
    """(reason, message) of a Google API error body; no address kept."""
    try:
        error = response.json().get("error", {})
        message = str(error.get("message", ""))
        errors = error.get("errors") or [{}]
        reason = str(errors[0].get("reason", "") or error.get("status", ""))
    except (ValueError, AttributeError, IndexError, TypeError):
        reason, message = "", ""
    message = "" if "@" in message else message.splitlines()[0][:300] if message else ""
    return reason or f"HTTP {response.status_code}", message


def _verify(options: GoogleWorkspaceOptions, base_dir: Path, name: str) -> str | bool:
    if not options.ca_bundle:
        return True
    bundle = resolve_path(options.ca_bundle, base_dir)
    if not bundle.is_file():
        raise ConfigError(f"source {name!r}: ca_bundle {bundle} does not exist")
    return str(bundle)


def service_account_info(
    name: str, options: GoogleWorkspaceOptions, base_dir: Path
) -> dict[str, Any]:
    """The service-account key the credentials option names (content never in errors)."""
    assert options.credentials is not None
    what = f"source {name!r}: credentials"
    text = options.credentials.resolve(base_dir, what)
    try:
        info = json.loads(text)
    except ValueError:
        raise ConfigError(f"{what}: not JSON (expected a service-account key file)") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(f"{what}: not a service-account key (its type must be service_account)")
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise ConfigError(f"{what}: the key lacks {', '.join(missing)}")
    token_uri = urlsplit(str(info["token_uri"]))
    if token_uri.scheme != "https" or not token_uri.netloc:
        raise ConfigError(f"{what}: the key's token_uri must be an https:// URL")
    return info


def google_credentials(
    name: str, options: GoogleWorkspaceOptions, base_dir: Path, scope: str
) -> Any:
    """Credentials for ``scope``: the configured key (impersonating ``admin`` when set), or
    Application Default Credentials."""
    if _NO_GOOGLE_AUTH is not None:  # pragma: no cover
        raise ConfigError(f"source {name!r}: needs google-auth: {INSTALL_HINT}")
    if options.credentials is None:
        try:
            credentials, _project = google.auth.default(scopes=[scope])
        except google.auth.exceptions.DefaultCredentialsError:
            raise ConfigError(
                f"source {name!r}: no credentials configured and no Application Default "
                "Credentials found: set credentials: {$file: key.json}, or run where "
                "GOOGLE_APPLICATION_CREDENTIALS or an attached service account provides them"
            ) from None
        return credentials
    info = service_account_info(name, options, base_dir)
    try:
        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[scope], subject=options.admin
        )
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"source {name!r}: credentials: the service-account key cannot be used "
            "(its private_key is not a PEM private key)"
        ) from None


if _NO_GOOGLE_AUTH is None:

    class _TokenRequest(google.auth.transport.requests.Request):
        """google-auth's transport with our CA bundle and timeout on every call (a
        session-wide ``verify`` would yield to ``REQUESTS_CA_BUNDLE``)."""

        def __init__(self, session: requests.Session, verify: str | bool, timeout: float):
            super().__init__(session)
            self._verify = verify
            self._timeout = timeout

        def __call__(
            self,
            url: str,
            method: str = "GET",
            body: Any = None,
            headers: Any = None,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            kwargs["verify"] = self._verify
            return super().__call__(  # type: ignore[no-untyped-call]
                url,
                method=method,
                body=body,
                headers=headers,
                timeout=timeout or self._timeout,
                **kwargs,
            )


_TOKEN_HINTS: Final = {
    "unauthorized_client": (
        "the service account is not allowed to impersonate users with this scope: in the "
        "Admin console > Security > Access and data control > API controls > Domain-wide "
        "delegation, add the service account's client ID with the scope " + REPORTS_SCOPE
    ),
    "invalid_grant": (
        "the token was refused for the impersonated user: check that admin is an existing "
        "administrator of the domain, that the key is still active, and the machine's clock"
    ),
    "invalid_scope": "the scope was refused: " + REPORTS_SCOPE,
    "invalid_client": "the key was refused: it may have been deleted or disabled",
}


class ReportsClient:
    """Authenticated, retrying GET access to the Gmail activities of the Reports API."""

    def __init__(
        self,
        name: str,
        options: GoogleWorkspaceOptions,
        base_dir: Path,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.options = options
        self.base_dir = base_dir
        self.sleep = sleep
        self.requests = 0
        self._verify = _verify(options, base_dir, name)
        self.session = requests.Session()
        self._credentials: Any = None

    # --- authentication ---------------------------------------------------------------
    def token(self) -> str:
        """A valid access token (refreshed when expired)."""
        if self._credentials is None:
            self._credentials = google_credentials(
                self.name, self.options, self.base_dir, REPORTS_SCOPE
            )
        credentials = self._credentials
        if not credentials.valid:
            request = _TokenRequest(self.session, self._verify, self.options.timeout)
            try:
                credentials.refresh(request)
            except google.auth.exceptions.RefreshError as exc:
                raise self._refused(exc) from None
            except google.auth.exceptions.TransportError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise SourceError(
                        f"source {self.name!r}: the token endpoint's TLS certificate is not "
                        "trusted (set ca_bundle if a proxy or private CA is in the way)"
                    ) from None
                raise RetriableSourceError(
                    f"source {self.name!r}: cannot reach the token endpoint "
                    f"({type(exc).__name__}); the next run retries"
                ) from None
        return str(credentials.token)

    def _refused(self, exc: BaseException) -> SourceError:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        code = str(data.get("error", "")) or str(exc.args[0] if exc.args else "").split(":")[0]
        code = code if re.fullmatch(r"[a-z_]{1,64}", code) else "refused"
        hint = _TOKEN_HINTS.get(code, "check the key and the domain-wide delegation")
        text = f"source {self.name!r}: Google refused a token ({code}): {hint}."
        if getattr(exc, "retryable", False):
            return RetriableSourceError(text + " The next run retries.")
        return SourceError(text)

    # --- requests ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The Gmail activities URL."""
        return self.options.endpoint + REPORTS_PATH

    def get(self, params: Mapping[str, str]) -> dict[str, Any]:
        """One page, with retries of 429 and 5xx and one token renewal on 401."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return exc.retry_after
            return float(wait_exponential_jitter(initial=1, max=60, jitter=1)(state))

        retrying = Retrying(
            stop=stop_after_attempt(self.options.max_retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(params)
        except _Transient as exc:
            raise RetriableSourceError(
                f"source {self.name!r}: the Reports API still failing after "
                f"{self.options.max_retries + 1} attempts ({exc}); the next run retries"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, params: Mapping[str, str]) -> dict[str, Any]:
        renewed = False
        while True:
            token = self.token()
            self.requests += 1
            try:
                response = self.session.get(
                    self.url,
                    params=dict(params),
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=self.options.timeout,
                    verify=self._verify,
                )
            except requests.Timeout:
                raise _Transient(f"no answer within {self.options.timeout:g} s") from None
            except requests.ConnectionError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise SourceError(
                        f"source {self.name!r}: the Reports API's TLS certificate is not "
                        "trusted (set ca_bundle if a proxy or private CA is in the way)"
                    ) from None
                raise _Transient("connection failed") from None
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError:
                    raise _Transient("the answer was not JSON") from None
                if not isinstance(body, dict):
                    raise _Transient("the answer was not a JSON object")
                return body
            if status in RETRY_STATUSES:
                log.info("source %s: the Reports API answered %d; will retry", self.name, status)
                raise _Transient(f"HTTP {status}", retry_after(response))
            if status == 401 and not renewed:
                log.info("source %s: the Reports API refused the token; renewing it", self.name)
                self._credentials = None
                renewed = True
                continue
            raise SourceError(self.explain(status, *_api_error(response)))

    def explain(self, status: int, reason: str, message: str) -> str:
        """What a refused request means and what to fix."""
        said = f"{reason}: {message}" if message else reason
        head = f"source {self.name!r}: the Reports API answered {status} ({said})."
        if status == 401:
            return head + (
                " The token was refused: check the domain-wide delegation of the service "
                f"account (scope {REPORTS_SCOPE})."
            )
        if status == 403:
            if reason in ("accessNotConfigured", "SERVICE_DISABLED"):
                return head + (
                    " Enable the Admin SDK API in the Google Cloud project of the service account."
                )
            return head + (
                " The impersonated admin may not read audit reports (give them the Reports "
                "privilege, or use a super administrator), or the domain-wide delegation "
                f"lacks the scope {REPORTS_SCOPE}."
            )
        if status == 400:
            return head + " startTime and endTime must be at most 30 days apart."
        return head

    def pages(self, begin: dt.datetime, end: dt.datetime, page_size: int) -> Iterator[list[Any]]:
        """Every page of Gmail activities in ``[begin, end]``, following ``nextPageToken``."""
        params = {
            "startTime": _iso(begin),
            "endTime": _iso(end),
            "maxResults": str(page_size),
        }
        while True:
            body = self.get(params)
            items = body.get("items", [])
            if not isinstance(items, list):
                raise SourceError(f"source {self.name!r}: the Reports API answered without items")
            yield items
            token = body.get("nextPageToken")
            if not token or not isinstance(token, str):
                return
            params = {**params, "pageToken": token}

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


_NON_FINAL: Final = ("deferred", "unknown")


class ReportsWindow(ReadUnit):
    """One window of Gmail activities from the Reports API, read page by page.

    A message logs several outcomes (deferred, then delivered); the API lists them newest
    first. Each (message, sender, recipient) is yielded once per window, at its newest
    outcome, plus once more should that one not be final (deferred) and a final one
    follow, which the store then takes. What is remembered meanwhile is 8 bytes per key.
    """

    format = FORMATS["reports_api"]
    once = False
    distributable = False

    def __init__(self, source: GoogleWorkspaceSource, begin: dt.datetime, end: dt.datetime):
        self.source = source
        self.begin = begin
        self.end = end
        self.key = f"reports_api:{_iso(begin)}/{_iso(end)}"
        self.bookmark = _iso(end)

    def chunks(self) -> Iterator[Chunk]:
        pages = 0
        client = self.source.reports
        seen, final = KeySet(), KeySet()
        for items in client.pages(self.begin, self.end, self.source.options.rows_per_page):
            pages += 1
            chunk = activities_chunk(items, self.begin, self.end)
            yield Chunk(first_outcomes(chunk.frame, seen, final), chunk.rejected)
        log.info("source %s: window %s read in %d page(s)", self.source.name, self.key, pages)


def first_outcomes(frame: pd.DataFrame, seen: KeySet, final: KeySet) -> pd.DataFrame:
    """The rows of ``frame`` (newest first) not yielded before for their (message,
    sender, recipient), except a final status after a non-final one; ``seen`` and
    ``final`` remember the keys yielded."""
    frame = frame.sort_values("timestamp", ascending=False, kind="stable", na_position="last")
    keys = pd.util.hash_pandas_object(
        frame[["message_id", "sender", "recipient"]], index=False
    ).to_numpy(dtype=np.uint64)
    is_final = ~frame["status"].isin(_NON_FINAL).to_numpy(dtype=bool, na_value=False)
    known = seen.contains(keys)
    candidate = ~final.contains(keys) & (~known | is_final)
    at = np.flatnonzero(candidate)
    first = pd.Series(keys[at]).duplicated().to_numpy()
    keep = np.zeros(len(keys), dtype=bool)
    keep[at[~first]] = True
    # a key whose first candidate here is not final: its first final candidate too
    pending = pd.Series(~is_final[at[~first]], index=keys[at[~first]])
    finals = at[is_final[at]]
    later = finals[~pd.Series(keys[finals]).duplicated().to_numpy()]
    keep[later[pending.reindex(keys[later], fill_value=False).to_numpy(dtype=bool)]] = True
    seen.add(keys[keep])
    final.add(keys[keep & is_final])
    return frame.loc[keep].reset_index(drop=True)


# --- the source -------------------------------------------------------------------------
class GoogleWorkspaceSource(Source):
    """Gmail logs of one Google Workspace customer, from BigQuery or the Reports API."""

    options_model = GoogleWorkspaceOptions
    reads = "window"
    collects = tuple(RAW)

    @classmethod
    def from_options(
        cls, name: str, options: GoogleWorkspaceOptions, base_dir: Path
    ) -> GoogleWorkspaceSource:
        return cls(name, options, base_dir)

    def __init__(
        self,
        name: str,
        options: GoogleWorkspaceOptions,
        base_dir: Path,
        *,
        bigquery: QueryClient | None = None,
        reports: ReportsClient | None = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self.base_dir = base_dir
        self._bigquery = bigquery
        self._reports = reports
        if options.via == "reports_api" and reports is None:
            self._reports = ReportsClient(name, options, base_dir)

    @property
    def bigquery(self) -> QueryClient:
        """The BigQuery client, made when first needed."""
        if self._bigquery is None:
            self._bigquery = BIGQUERY_CLIENT(self.name, self.options, self.base_dir)
        return self._bigquery

    @property
    def reports(self) -> ReportsClient:
        """The Reports API client."""
        assert self._reports is not None, "via reports_api only"
        return self._reports

    def plan(self, state: SourceState) -> tuple[dt.datetime, dt.datetime]:
        """The range a run reads: bookmark minus overlap (or the first backfill) to the start."""
        now = state.started.astimezone(dt.UTC).replace(microsecond=0)
        if state.bookmark is None:
            return now - dt.timedelta(days=self.options.start_days), now
        mark = _parse_bookmark(state.bookmark)
        begin = mark - dt.timedelta(minutes=self.options.overlap_minutes)
        if self.options.via == "reports_api":
            oldest = now - REPORTS_REACH + REACH_MARGIN
            if mark < oldest:
                raise SourceError(
                    f"source {self.name!r}: the last complete read ended {_iso(mark)}, longer "
                    f"ago than the 180 days Google keeps Gmail log events: messages from "
                    f"{_iso(mark)} to {_iso(oldest)} can no longer be fetched. Run "
                    f"`compliance sources reset {self.name}` to continue with what is kept."
                )
            begin = max(begin, oldest)
        return begin, now

    def windows(self, begin: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[ReadUnit]:
        """Read units for ``[begin, end)``."""
        if self.options.via == "reports_api" and begin < now - REPORTS_REACH:
            raise SourceError(
                f"source {self.name!r}: {_iso(begin)} is more than 180 days before "
                f"{_iso(now)}; Google keeps Gmail log events for 180 days"
            )
        size = dt.timedelta(hours=self.options.window_hours)
        unit = BigQueryWindow if self.options.via == "bigquery" else ReportsWindow
        return [unit(self, b, e) for b, e in split_windows(begin, end, size)]

    def units_between(
        self, begin: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
    ) -> list[ReadUnit]:
        if begin is None:
            raise PeriodRequired("Gmail logs are read by time window")
        now = now.astimezone(dt.UTC)
        return self.windows(begin, min(end, now) if end is not None else now, now)

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        state = state or SourceState(None, dt.datetime.now(dt.UTC))
        begin, end = self.plan(state)
        return self.windows(begin, end, state.started)

    def check(self) -> list[tuple[bool, str]]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if self.options.via == "bigquery":
            return self._check_bigquery(now)
        return self._check_reports(now)

    def _check_bigquery(self, now: dt.datetime) -> list[tuple[bool, str]]:
        options = self.options
        kind = "a service-account key" if options.credentials else "Application Default Credentials"
        try:
            client = self.bigquery
        except ComplianceError as exc:
            return [(False, str(exc))]
        results = [(True, f"BigQuery client ready ({kind})")]
        ref = table_ref(options)
        hour = window_params(
            options.table, now - dt.timedelta(hours=1), now, options.prune_partitions
        )
        try:
            for _page in client.pages(
                check_query(options.table, ref, options.prune_partitions), hour, 1
            ):
                break
        except ComplianceError as exc:
            return [*results, (False, str(exc))]
        readable = f"{ref.strip('`')} readable (one query of the last hour, no rows kept)"
        results.append((True, readable))
        day = window_params(
            options.table,
            now - dt.timedelta(hours=options.window_hours),
            now,
            options.prune_partitions,
        )
        try:
            scanned = client.dry_run(gmail_query(options.table, ref, options.prune_partitions), day)
        except ComplianceError as exc:
            return [*results, (False, str(exc))]
        if scanned is not None:
            estimate = f"a {options.window_hours} h window scans about {scanned / 1e6:,.1f} MB"
            results.append((True, estimate + " (dry run)"))
        return results

    def _check_reports(self, now: dt.datetime) -> list[tuple[bool, str]]:
        client = self.reports
        try:
            client.token()
        except ComplianceError as exc:
            return [(False, str(exc))]
        results = [(True, "token acquired (service account, domain-wide delegation)")]
        params = {
            "startTime": _iso(now - dt.timedelta(hours=1)),
            "endTime": _iso(now),
            "maxResults": "1",
        }
        try:
            client.get(params)
        except ComplianceError as exc:
            return [*results, (False, str(exc))]
        results.append((True, "Gmail log events reachable (one request, no rows kept)"))
        return results

    def close(self) -> None:
        if self._bigquery is not None:
            self._bigquery.close()
        if self._reports is not None:
            self._reports.close()
