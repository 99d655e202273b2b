"""Mimecast API 2.0 SIEM batches of the Cloud Gateway (type ``mimecast``).

How the API works (sources below):

* OAuth 2.0 client credentials: ``POST {base_url}/oauth/token`` with the form fields
  ``client_id``, ``client_secret`` and ``grant_type=client_credentials`` answers a bearer
  ``access_token`` and its lifetime ``expires_in`` (seconds). The token is renewed a
  minute before it expires, and once more when the API answers 401.
* ``GET {base_url}/siem/v1/batch/events/cg?type=T&dateRangeStartsAt=YYYY-MM-DD
  [&dateRangeEndsAt=YYYY-MM-DD]&pageSize=N[&nextPage=TOKEN]`` lists batch files of one
  event type: ``{"value": [{"url", "expiry", "size"}], "@nextPage": TOKEN, "isCaughtUp":
  bool}``. Each ``url`` is a pre-signed link (no token is sent with it) to a
  gzip-compressed NDJSON file of events. Pages are followed until ``isCaughtUp``.
  Mimecast keeps the batches for 7 days.
* A 429 answer says in ``X-RateLimit-Reset`` how many *milliseconds* to wait (some
  proxies send ``Retry-After`` in seconds instead); both are honoured, 5xx answers are
  retried with capped exponential back-off and jitter (tenacity), and every API request
  takes a slot of a per-app :class:`~connectors.graph.RequestBudget`.

What is read, and why (least data): three event types of the mail transfer agent.

* ``process``: one event per message, without recipients. Only its ``action`` and
  ``aggregateId`` are looked at, and only the ids of messages it decided on are kept,
  in memory, for the run: ``Hld`` (held for review) makes the message's receipts
  ``quarantined``, ``Rej`` (refused by a content policy) ``filtered_as_spam``, ``Bnc``
  ``bounced``. It yields no rows.
* ``delivery``: one event per recipient and delivery attempt, with ``delivered``,
  ``rejectionCode`` and ``rejectionType``: ``delivered``, ``deferred`` (4xx, or a failed
  attempt without a permanent code) or ``bounced`` (5xx, or a rejection type).
* ``receipt``: one event per message (or recipient) accepted or refused at the gateway:
  ``Rej`` is ``rejected``; ``Acc`` takes the status its process event gave, else
  ``unknown`` (the delivery event, read before it or in a later run, is final).

Units are read in that order: the process events a receipt needs are known before it,
and a message's final delivery status comes before the receipt's ``unknown`` (a store
keeps a final status over ``unknown``; an audit keeps the first). Journal, spam,
URL/attachment/impersonation protect and antivirus events are not requested. Of each
event only the time (``timestamp``, milliseconds; a delivery's time less its
``deliveryTime``, so that every row of a message has its receipt time),
``senderEnvelope``, ``recipients`` (a string of one or more addresses, or a list),
``messageId`` (else ``aggregateId``), ``emailSize``, the status fields and
``aggregateId`` are taken as the line is parsed: subjects, IPs, file names, hashes and
everything else are dropped there and never leave the parser. Blocks of lines are read
by Arrow's JSON reader with an explicit schema of those fields (the others are skipped
in C++, never converted), and lines of another shape one by one with :mod:`json`, with
the same result. Lines in the legacy API 1.0 spelling (``Rcpt``, ``Sender``, ``MsgId``,
``Delivered``, ``Act``, ``aCode``, ``datetime``...) are read too.

Bad input: a line that is not a JSON object is counted (``malformed_line``...) and
reading goes on. A download cut short is fetched again, skipping the lines already
read; a file that stays corrupt after ``max_retries`` more downloads keeps the lines
read before the damage and is counted once as ``bad_gzip``, and the run goes on: a
damaged file on Mimecast's side would otherwise stop the source until its data is gone.
Refused links and API errors fail the run (retried by the next one).

Read units and bookmarks: a run lists the batch files of each type from the day of its
bookmark less ``overlap_days`` (the first run: ``start_days`` back). Each delivery or
receipt file is a read unit keyed by a hash of its type, its link's host and path
(without the signature) and its size, read once: the files a killed run committed are
skipped by the next run, which reads the rest. Process files are read again by every
run that lists them (they are small, one event per message), so that a resumed run
knows every hold of the listed days. A last unit without rows moves the bookmark to the
run's start once every listing caught up (``compliance status`` reads the bookmark as a
time). Links that expired are fetched again by listing their page again.

Sources relied on:

* Mimecast API rate limiting (``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` in
  milliseconds; 429): https://www.mimecast.com/developer/documentation/rate-limiting/
* Mimecast "Understanding SIEM logs" (receipt, process and delivery stages; one delivery
  line per attempt): https://integrations.mimecast.com/documentation/tutorials/understanding-siem-logs
* Elastic's Mimecast integration (``siem_logs`` CEL program: token, batch listing,
  ``@nextPage``, gzip NDJSON; its v2 pipeline test file for the field names of delivery,
  receipt and process events) and the Mimecast connectors of Sekoia.io (``isCaughtUp``,
  7 days kept), Gravwell and Microsoft Sentinel (``/siem/v1/batch/events/cg``).
* /work/shared/FORMATS.md (Mimecast section).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from compliance.errors import ComplianceError, ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW, TIMESTAMP_CEILING, TIMESTAMP_FLOOR, conform_raw
from compliance.secrets import SecretRef, no_inline_secret, resolve_path
from connectors.base import Chunk, PeriodRequired, ReadUnit, Source, SourceState
from connectors.common import MAX_RETRY_AFTER, retry_after
from connectors.graph import RequestBudget
from connectors.textfile import iso_timestamps

log = logging.getLogger(__name__)

OAUTH_PATH: Final = "/oauth/token"
BATCH_PATH: Final = "/siem/v1/batch/events/cg"
#: The event types read, in the order their units are read (see the module's docstring).
TYPES: Final = ("process", "delivery", "receipt")
#: How long Mimecast keeps SIEM batches.
REACH: Final = dt.timedelta(days=7)
FORMAT: Final = "mimecast-siem-batch"
LISTING_FORMAT: Final = "mimecast-siem-listing"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
#: Rows per chunk (as the line-log readers'; the export readers' are 128k).
CHUNK_ROWS: Final = 1 << 16
#: Lines parsed together (by Arrow when they allow it).
BLOCK_LINES: Final = 1 << 13
#: An event line longer than this is no mail event (dropped as ``line_too_long``).
MAX_EVENT_LINE: Final = 1 << 20
#: Bytes decompressed at a time (a small gzip block may hold much more).
INFLATE_STEP: Final = 4 << 20
#: Listing pages followed per type and run at most (a safeguard against a cursor loop).
MAX_PAGES: Final = 100_000
#: Held or refused messages remembered per run at most (about 100 bytes each).
MAX_HELD: Final = 500_000
#: A delivery's ``deliveryTime`` beyond this is no delay (its time is then kept as is).
MAX_DELIVERY_DELAY_MS: Final = 30 * 86_400_000
#: A token is renewed this long before it expires (or at half its life, when shorter).
TOKEN_MARGIN: Final = 60.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]
T = TypeVar("T")


# --- options ------------------------------------------------------------------------
class MimecastOptions(BaseModel):
    """Options of a ``mimecast`` source: the API 2.0 application and how to read."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    client_id: str = Field(
        pattern=r"^[A-Za-z0-9._~+/=-]{1,256}$",
        description="client ID of the Mimecast API 2.0 application",
    )
    client_secret: SecretRef = Field(
        description="its client secret, as {$env: NAME} or {$file: PATH}"
    )
    base_url: str = Field(
        "https://api.services.mimecast.com",
        description="API gateway: https://api.services.mimecast.com (global), "
        "https://uk-api.services.mimecast.com, https://us-api.services.mimecast.com ...",
    )
    ca_bundle: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's (a proxy's)"
    )
    start_days: int = Field(7, ge=1, le=7, description="days the first run reads back (≤ 7)")
    overlap_days: int = Field(
        1, ge=0, le=6, description="days before the bookmark's day each run lists again"
    )
    page_size: int = Field(100, ge=1, le=1000, description="batch files per listing page")
    requests_per_minute: int = Field(
        60, ge=1, le=6000, description="API requests per minute this process may send"
    )
    timeout: float = Field(60.0, ge=1, le=600, description="seconds per request")
    max_retries: int = Field(6, ge=0, le=20, description="retries of 429, 5xx and lost links")

    _secret = field_validator("client_secret", mode="before")(no_inline_secret)

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("must be an https:// origin without a path")
        return value.rstrip("/")


# --- the request budget, per application ------------------------------------------------
_BUDGETS: dict[tuple[str, str], RequestBudget] = {}
_SHARED = threading.Lock()


def shared_budget(options: MimecastOptions) -> RequestBudget:
    """The process-wide budget of one API application (every source using it shares it)."""
    key = (options.base_url, options.client_id)
    with _SHARED:
        budget = _BUDGETS.get(key)
        if budget is None or budget.limit != options.requests_per_minute:
            budget = _BUDGETS[key] = RequestBudget(options.requests_per_minute, 60.0)
        return budget


def reset_shared_state() -> None:
    """Forget every budget (tests; a new process starts empty anyway)."""
    with _SHARED:
        _BUDGETS.clear()


# --- HTTP ---------------------------------------------------------------------------
class _Transient(Exception):
    """A failure worth retrying, with the wait the server asked for."""

    def __init__(self, what: str, wait: float | None = None) -> None:
        super().__init__(what)
        self.wait = wait


class LinkGone(Exception):
    """A batch link answered 403 or 404: expired, or the file is gone."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds to wait after a 429: ``X-RateLimit-Reset`` (milliseconds, Mimecast's header),
    else ``Retry-After`` (seconds or an HTTP date); capped."""
    value = response.headers.get("X-RateLimit-Reset")
    if value:
        try:
            return min(max(float(value) / 1000.0, 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    return retry_after(response)


def _api_error(response: requests.Response) -> str:
    """The API's own error code and message (they describe the request, never a mailbox)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    parts: list[str] = []
    if isinstance(body, dict):
        fail = body.get("fail")
        if isinstance(fail, list) and fail and isinstance(fail[0], dict):
            parts = [str(fail[0].get("code", "")), str(fail[0].get("message", ""))]
        elif isinstance(body.get("error"), dict):
            parts = [str(body["error"].get("code", "")), str(body["error"].get("message", ""))]
        elif isinstance(body.get("error"), str):
            parts = [body["error"], str(body.get("error_description", ""))]
    text = ": ".join(p for p in parts if p)
    return text.splitlines()[0][:300] if text else f"HTTP {response.status_code}"


class MimecastClient:
    """Token, budgeted and retrying API requests, and batch downloads, of one application."""

    def __init__(
        self,
        name: str,
        options: MimecastOptions,
        base_dir: Path,
        budget: RequestBudget | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.options = options
        self.base_dir = base_dir
        self.budget = budget
        self.sleep = sleep
        self.clock = clock
        self.requests = 0
        self.verify: str | bool = True
        if options.ca_bundle:
            bundle = resolve_path(options.ca_bundle, base_dir)
            if not bundle.is_file():
                raise ConfigError(f"source {name!r}: ca_bundle {bundle} does not exist")
            self.verify = str(bundle)
        self.session = requests.Session()
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    # --- retries ------------------------------------------------------------------
    def _retrying(self) -> Retrying:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.wait is not None:
                return exc.wait
            return float(wait_exponential_jitter(initial=1, max=60, jitter=1)(state))

        return Retrying(
            stop=stop_after_attempt(self.options.max_retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )

    def _send(
        self, method: str, url: str, *, api: bool, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        """One request (the CA bundle and timeout passed each time); transport failures as
        :class:`_Transient`, an untrusted certificate as a :class:`SourceError`."""
        if api and self.budget is not None:
            self.budget.acquire()
        self.requests += api
        try:
            return self.session.request(
                method,
                url,
                verify=self.verify,
                timeout=self.options.timeout,
                stream=stream,
                **kwargs,
            )
        except requests.Timeout:
            raise _Transient(f"no answer within {self.options.timeout:g} s") from None
        except requests.ConnectionError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise SourceError(
                    f"source {self.name!r}: the TLS certificate of "
                    f"{urlsplit(url).netloc} is not trusted (set ca_bundle "
                    "if a proxy or private CA is in the way)"
                ) from None
            raise _Transient("connection failed") from None

    def _retried(self, what: str, attempt: Callable[[], T]) -> T:
        try:
            for step in self._retrying():
                with step:
                    return attempt()
        except _Transient as exc:
            raise RetriableSourceError(
                f"source {self.name!r}: {what} still failing after "
                f"{self.options.max_retries + 1} attempts ({exc}); the next run retries"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the token --------------------------------------------------------------
    def token(self) -> str:
        """A valid access token, fetched again shortly before it expires."""
        with self._lock:
            if self._token is not None and self.clock() < self._expires:
                return self._token
        fetched, lifetime = self._retried("the token endpoint", self._fetch_token)
        with self._lock:
            self._token = fetched
            self._expires = self.clock() + max(lifetime - TOKEN_MARGIN, lifetime / 2)
            return fetched

    def forget_token(self) -> None:
        """Drop the token, so that the next request fetches a new one."""
        with self._lock:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        secret = self.options.client_secret.resolve(
            self.base_dir, f"source {self.name!r}: client_secret"
        )
        response = self._send(
            "POST",
            self.options.base_url + OAUTH_PATH,
            api=True,
            data={
                "client_id": self.options.client_id,
                "client_secret": secret,
                "grant_type": "client_credentials",
            },
            headers={"Accept": "application/json"},
        )
        status = response.status_code
        if status in RETRY_STATUSES:
            raise _Transient(f"token endpoint HTTP {status}", rate_limit_wait(response))
        if status != 200:
            raise SourceError(
                f"source {self.name!r}: Mimecast refused a token ({_api_error(response)}). "
                "Check client_id and client_secret: the API 2.0 application's keys "
                "(Administration Console > Integrations > API and Platform Integrations), "
                "and that base_url is the gateway of your account's region."
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 1800)
        except (ValueError, KeyError, TypeError):
            raise _Transient("the token answer was not understood") from None
        return token, max(lifetime, 1.0)

    # --- the batch listing ---------------------------------------------------------
    def list_page(self, params: Mapping[str, str]) -> dict[str, Any]:
        """One page of the batch listing, as JSON."""
        return dict(self._retried("the SIEM batch listing", lambda: self._list(params)))

    def _list(self, params: Mapping[str, str]) -> dict[str, Any]:
        renewed = False
        while True:
            token = self.token()
            response = self._send(
                "GET",
                self.options.base_url + BATCH_PATH,
                api=True,
                params=dict(params),
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError:
                    raise _Transient("the listing was not JSON") from None
                if not isinstance(body, dict):
                    raise _Transient("the listing was not a JSON object")
                return body
            if status in RETRY_STATUSES:
                log.info("source %s: the batch listing answered %d; will retry", self.name, status)
                raise _Transient(f"HTTP {status}", rate_limit_wait(response))
            if status == 401 and not renewed:
                log.info("source %s: the token was refused; renewing it", self.name)
                self.forget_token()
                renewed = True
                continue
            raise SourceError(self.explain(status, _api_error(response)))

    def explain(self, status: int, error: str) -> str:
        """What a refused listing means and what to fix."""
        head = f"source {self.name!r}: the SIEM batch listing answered {status} ({error})."
        if status == 401:
            return head + " The token was refused even when renewed: check the application."
        if status == 403:
            return head + (
                " The API application's role lacks 'Security Events and Data Retrieval > "
                "Threat and Security Events (SIEM) > Read' (Administration Console > Account "
                "> Roles), or the account has no Cloud Gateway SIEM logs."
            )
        if status == 404:
            return head + " Check base_url (an API 2.0 gateway, without a path)."
        return head

    # --- batch files ---------------------------------------------------------------
    def open_batch(self, url: str) -> requests.Response:
        """A batch file's answer, streaming (no token: the link is pre-signed); 429 and 5xx
        retried, 403 and 404 raised as :class:`LinkGone`."""

        def attempt() -> requests.Response:
            response = self._send("GET", url, api=False, stream=True)
            status = response.status_code
            if status == 200:
                return response
            response.close()
            if status in RETRY_STATUSES:
                raise _Transient(f"HTTP {status}", rate_limit_wait(response))
            if status in (403, 404):
                raise LinkGone(status)
            raise SourceError(f"source {self.name!r}: a batch file answered HTTP {status}")

        return self._retried("a batch download", attempt)

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


# --- gzip NDJSON ----------------------------------------------------------------------
class BadGzip(Exception):
    """A batch file that is not gzip, or is cut short."""


class _Inflater:
    """gzip members (one or several) decompressed block by block; plain bytes when the
    content does not start as gzip (a proxy or the HTTP layer may have inflated it)."""

    def __init__(self) -> None:
        self.plain: bool | None = None
        self.head = b""
        self.member: Any = None  # zlib decompress object of the current member
        self.ended = False  # the last member ended (nothing after it but padding)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.plain is None:
            self.head += data
            if len(self.head) < 2:
                return
            data, self.head = self.head, b""
            self.plain = not data.startswith(b"\x1f\x8b")
        if self.plain:
            yield data
            return
        try:
            while data:
                if self.member is None:
                    if self.ended and not data.strip(b"\0"):
                        return  # zero padding after the last member
                    self.member = zlib.decompressobj(wbits=31)
                    self.ended = False
                out = self.member.decompress(data, INFLATE_STEP)
                yield out
                while self.member.unconsumed_tail:
                    yield self.member.decompress(self.member.unconsumed_tail, INFLATE_STEP)
                if self.member.eof:
                    data, self.member, self.ended = self.member.unused_data, None, True
                else:
                    data = b""
        except zlib.error:
            raise BadGzip("not gzip") from None

    def close(self) -> Iterator[bytes]:
        if self.plain is None and self.head:
            yield self.head
        elif self.plain is False and self.member is not None:
            raise BadGzip("cut short")


def event_lines(blocks: Iterable[bytes]) -> Iterator[bytes | None]:
    """The lines of gzip-compressed (or plain) NDJSON ``blocks``, in order; a line longer
    than :data:`MAX_EVENT_LINE` is never held whole and comes as None (so that lines keep
    their numbers). Raises :class:`BadGzip` for content that is not gzip or is cut short."""
    inflater = _Inflater()
    pending = b""
    skipping = False  # inside a line too long, already reported

    def split(data: bytes) -> Iterator[bytes | None]:
        nonlocal pending, skipping
        if not data:
            return
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if skipping:  # the end of the line too long
                skipping = False
            else:
                yield line if len(line) <= MAX_EVENT_LINE else None
        if len(pending) > MAX_EVENT_LINE:
            if not skipping:
                yield None
            pending, skipping = b"", True

    for block in blocks:
        for data in inflater.feed(block):
            yield from split(data)
    for data in inflater.close():
        yield from split(data)
    if pending and not skipping:
        yield pending


# --- events to rows -------------------------------------------------------------------
_SEPARATORS = re.compile(r"[,;\s]+")
_FILE_KIND = re.compile(r'filename="?([a-z]+)_', re.IGNORECASE)
#: Process actions that decide a message's fate (others, Acc, Sdbx, Cnt, are steps).
PROCESS_STATUS: Final = {"hld": "quarantined", "rej": "filtered_as_spam", "bnc": "bounced"}
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
#: Which row of a message and recipient a chunk keeps: delivered over any other final
#: status, final over deferred, deferred over unknown.
_RANK = {"unknown": 0, "deferred": 1, "delivered": 3}  # any other status: 2
_KIND_OF_FILE = {"jrnl": "journal"}


class HeldMessages:
    """Messages the process stage held or refused, by ``aggregateId`` (its in-process
    hash: the ids never leave memory), with the status their receipts take; for one run,
    bounded (:data:`MAX_HELD`; beyond it, receipts of further held messages stay
    ``unknown``, and a warning says so once)."""

    def __init__(self, limit: int = MAX_HELD) -> None:
        self.limit = limit
        self._status: dict[int, str] = {}
        self.forgotten = 0

    def add(self, key: str, status: str) -> None:
        slot = hash(key)
        if len(self._status) < self.limit or slot in self._status:
            self._status[slot] = status
            return
        if not self.forgotten:
            log.warning(
                "more than %d held or refused messages in one run: receipts of further "
                "ones stay unknown (run more often)",
                self.limit,
            )
        self.forgotten += 1

    def get(self, key: str | None) -> str | None:
        return None if key is None else self._status.get(hash(key))

    def __len__(self) -> int:
        return len(self._status)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _address(value: object) -> str | None:
    """An address as the source spells it, without angle brackets; None when empty."""
    if not isinstance(value, str):
        return None
    value = value.strip().strip("<>").strip()
    return value or None


def _recipients(value: object) -> list[str]:
    """Recipient addresses of ``recipients``: a string of one or more addresses (separated
    by commas, semicolons or spaces), or a list of strings or of objects with an address."""
    if isinstance(value, str):
        return [a for a in (_address(p) for p in _SEPARATORS.split(value)) if a]
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                item = item.get("value", item.get("address", item.get("emailAddress")))
            out.extend(_recipients(item) if isinstance(item, str) else [])
        return out
    return []


def _truth(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def _millis(value: object) -> int | None:
    """A whole number (milliseconds since the epoch, a delay, a size), from a number or a
    string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e17:
        return int(value)
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 17 else None
    return None


def delivery_status(delivered: object, code: object, kind: object) -> str:
    """A delivery attempt's status: ``delivered``; ``deferred`` for a 4xx or a failure
    without a permanent code; ``bounced`` for a 5xx or a rejection type; ``unknown``."""
    flag = _truth(delivered)
    if flag is True:
        return "delivered"
    if flag is None:
        return "unknown"
    digits = (_text(code) or "").lstrip()
    if digits.startswith("4"):
        return "deferred"
    if digits.startswith("5") or _text(kind):
        return "bounced"
    return "deferred"


def _event_kind(event: dict[str, Any], default: str | None) -> str | None:
    """The event's type: its ``type`` (API 2.0), the file name in its
    ``Content-Disposition`` (API 1.0 lines), else the listing's."""
    kind = event.get("type")
    if isinstance(kind, str) and kind:
        return kind.strip().lower()
    disposition = event.get("Content-Disposition")
    if isinstance(disposition, str) and (found := _FILE_KIND.search(disposition)):
        name = found.group(1).lower()
        return _KIND_OF_FILE.get(name, name)
    return default


def _get(event: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = event.get(name)
        if value is not None:
            return value
    return None


class EventReader:
    """NDJSON event lines (API 2.0, or 1.0 spelling) to raw rows, one per recipient.

    ``kind`` is the listing's event type (``None``: each event's own). Process events
    feed ``held`` (they hold no recipient: no row, no count); receipts read it. Lines
    that are not JSON objects are counted in ``rejected`` (``malformed_line``,
    ``nested_too_deep``, ``bad_encoding``), events without a recipient too
    (``no_recipient``); events of other types in ``skipped`` (``other_event_type``).
    """

    def __init__(self, kind: str | None, held: HeldMessages) -> None:
        self.kind = kind
        self.held = held
        self.rejected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._clear()

    def _clear(self) -> None:
        self.frames: list[pd.DataFrame] = []  # rows of blocks Arrow parsed
        self.framed = 0
        self.millis: list[int | None] = []
        self.texts: list[str | None] = []  # ISO times of API 1.0 lines
        self.senders: list[str | None] = []
        self.recipients: list[str] = []
        self.statuses: list[str] = []
        self.sizes: list[object] = []
        self.ids: list[str | None] = []

    def __len__(self) -> int:
        return self.framed + len(self.recipients)

    def add_lines(self, lines: list[bytes | None]) -> None:
        """A block of lines (None: a line too long, dropped): parsed by Arrow, in C++ and
        by column, when they are all API 2.0 events with the usual JSON types; else line by
        line. Both give the same rows."""
        good = [line for line in lines if line is not None]
        if len(good) != len(lines):
            self.rejected["line_too_long"] += len(lines) - len(good)
        if good and self._arrow(good):
            return
        for line in good:
            self.add(line)

    def _arrow(self, lines: list[bytes]) -> bool:
        try:
            table = pa_json.read_json(pa.BufferReader(b"\n".join(lines)), parse_options=_ARROW)
        except pa.ArrowException:  # a line of another shape: line by line
            return False
        if table.num_rows == 0 or table["type"].null_count:
            return False
        rows = self._rows(table)
        if len(rows):
            self.frames.append(rows)
            self.framed += len(rows)
        return True

    def _rows(self, table: Any) -> pd.DataFrame:
        """:meth:`_event` for an Arrow table of events, by column (Arrow compute)."""
        kind = _lower_arrow(table["type"])
        process = pc.equal(kind, "process")
        if pc.any(process).as_py():
            part = table.filter(process)
            decision = pc.fill_null(_lower_arrow(part["action"]), "").to_pylist()
            traces = _trim_arrow(part["aggregateId"]).to_pylist()
            for key, action in zip(traces, decision, strict=True):
                if key is not None and action in PROCESS_STATUS:
                    self.held.add(key, PROCESS_STATUS[action])
        wanted = pc.is_in(kind, value_set=pa.array(["delivery", "receipt"]))
        others = table.num_rows - pc.sum(wanted).as_py() - pc.sum(process).as_py()
        if others:
            self.skipped["other_event_type"] += others
        events = table.filter(wanted)
        if events.num_rows == 0:
            return pd.DataFrame()
        delivery = _flags(pc.equal(pc.filter(kind, wanted), "delivery"))
        flag = _lower_arrow(events["delivered"])
        yes = _flags(pc.is_in(flag, value_set=pa.array(sorted(_TRUE))))
        failed = delivery & _flags(pc.is_in(flag, value_set=pa.array(sorted(_FALSE))))
        first = pc.utf8_slice_codeunits(_trim_arrow(events["rejectionCode"]), 0, 1)
        temporary = _flags(pc.equal(first, "4"))
        permanent = _flags(pc.equal(first, "5")) | _flags(
            pc.is_valid(_trim_arrow(events["rejectionType"]))
        )
        action = _lower_arrow(events["action"])
        trace = _trim_arrow(events["aggregateId"])
        status = np.full(events.num_rows, "unknown", dtype=object)
        status[delivery & yes] = "delivered"
        status[failed] = "deferred"
        status[failed & ~temporary & permanent] = "bounced"
        status[~delivery & _flags(pc.equal(action, "rej"))] = "rejected"
        accepted = np.flatnonzero(~delivery & _flags(pc.equal(action, "acc")))
        if len(accepted) and len(self.held):
            keys = trace.to_pylist()
            for i in accepted:
                status[i] = self.held.get(keys[i]) or "unknown"
        millis = pc.fill_null(events["timestamp"], -1).to_numpy()
        delay = pc.fill_null(_digits(events["deliveryTime"]), -1).to_numpy()
        late = delivery & (millis >= 0) & (delay >= 0) & (delay <= MAX_DELIVERY_DELAY_MS)
        millis = np.where(late, millis - delay, millis)
        ident = pc.coalesce(
            _trim_arrow(events["messageId"]), trace, _trim_arrow(events["processingId"])
        )
        recipients = events["recipients"]
        if pc.any(pc.match_substring_regex(recipients, _SEPARATORS.pattern)).as_py():
            lists = pc.split_pattern_regex(recipients, _SEPARATORS.pattern)
            parents = pc.list_parent_indices(lists)
            recipients = pc.list_flatten(lists)
        else:
            parents = pa.array(np.arange(events.num_rows))
        addresses = _address_arrow(recipients)
        kept = pc.is_valid(addresses)
        parents = pc.filter(parents, kept).to_numpy()
        missing = events.num_rows - len(np.unique(parents))
        if missing:
            self.rejected["no_recipient"] += missing
        return pd.DataFrame(
            {
                "timestamp": _ms_times(millis[parents]),
                "sender": _strings(_address_arrow(events["senderEnvelope"]).take(parents)),
                "recipient": _strings(pc.filter(addresses, kept)),
                "status": pd.array(status[parents], dtype="string"),
                "size": pd.array(
                    pc.take(_digits(events["emailSize"]), parents).to_pandas(
                        types_mapper=_INT64.get
                    ),
                    dtype="Int64",
                ),
                "message_id": _strings(ident.take(parents)),
            }
        )

    def add(self, line: bytes) -> None:
        """Parse one line; only the needed fields of its event(s) are kept."""
        if not line.strip():
            return
        try:
            value = json.loads(line)
        except RecursionError:
            self.rejected["nested_too_deep"] += 1
            return
        except UnicodeDecodeError:
            self.rejected["bad_encoding"] += 1
            return
        except json.JSONDecodeError:
            value = self._joined(line)
            if value is None:
                return
        for event in value if isinstance(value, list) else [value]:
            if isinstance(event, dict):
                self._event(event)
            else:
                self.rejected["malformed_line"] += 1

    def _joined(self, line: bytes) -> list[Any] | None:
        """Objects joined by commas on one line (seen in API 1.0 files), or None."""
        try:
            value = json.loads(b"[" + line + b"]")
        except (RecursionError, ValueError):
            value = None
        if isinstance(value, list) and len(value) > 1:
            return value
        self.rejected["malformed_line"] += 1
        return None

    def _event(self, event: dict[str, Any]) -> None:
        kind = _event_kind(event, self.kind)
        trace = _text(_get(event, "aggregateId", "aCode"))
        if kind == "process":
            action = (_text(_get(event, "action", "Act")) or "").lower()
            status = PROCESS_STATUS.get(action)
            if status is not None and trace is not None:
                self.held.add(trace, status)
            return
        if kind not in ("delivery", "receipt"):
            self.skipped["other_event_type"] += 1
            return
        recipients = _recipients(_get(event, "recipients", "Rcpt"))
        if not recipients:
            self.rejected["no_recipient"] += 1
            return
        millis = _millis(event.get("timestamp"))
        text = None if millis is not None else _text(event.get("datetime"))
        if kind == "delivery":
            status = delivery_status(
                _get(event, "delivered", "Delivered"),
                _get(event, "rejectionCode", "RejCode"),
                _get(event, "rejectionType", "RejType"),
            )
            delay = _millis(event.get("deliveryTime"))
            if millis is not None and delay is not None and 0 <= delay <= MAX_DELIVERY_DELAY_MS:
                millis -= delay  # the receipt's time: every row of a message has one day
        else:
            action = (_text(_get(event, "action", "Act")) or "").lower()
            if action == "rej":
                status = "rejected"
            elif action == "acc":
                status = self.held.get(trace) or "unknown"
            else:
                status = "unknown"
        sender = _address(_get(event, "senderEnvelope", "Sender"))
        ident = (
            _text(_get(event, "messageId", "MsgId")) or trace or _text(event.get("processingId"))
        )
        size = _get(event, "emailSize", "MsgSize")
        for recipient in recipients:
            self.millis.append(millis)
            self.texts.append(text)
            self.senders.append(sender)
            self.recipients.append(recipient)
            self.statuses.append(status)
            self.sizes.append(size)
            self.ids.append(ident)

    def take(self) -> Chunk:
        """The rows so far as a raw chunk, with the counts since the last one; repeats of
        a message and recipient within it are collapsed (see :func:`_collapse`)."""
        frame = pd.DataFrame(
            {
                "timestamp": _times(self.millis, self.texts),
                "sender": pd.array(self.senders, dtype="string"),
                "recipient": pd.array(self.recipients, dtype="string"),
                "status": pd.array(self.statuses, dtype="string"),
                "size": pd.array([_size(v) for v in self.sizes], dtype="Int64"),
                "message_id": pd.array(self.ids, dtype="string"),
            },
            index=pd.RangeIndex(len(self.recipients)),
        )
        if self.frames:
            parts = [conform_raw(f) for f in [*self.frames, frame] if len(f)]
            frame = pd.concat(parts, ignore_index=True) if parts else conform_raw(frame)
        n = len(frame)
        skipped = self.skipped
        if n > 1:
            frame, repeats = _collapse(frame)
            if repeats:
                skipped["repeated_event"] += repeats
        chunk = Chunk(conform_raw(frame), self.rejected, skipped)
        self.rejected, self.skipped = Counter(), Counter()
        self._clear()
        return chunk


_FLOOR_MS = int(TIMESTAMP_FLOOR.timestamp() * 1000)
_CEILING_MS = int(TIMESTAMP_CEILING.timestamp() * 1000)


def _ms_times(values: np.ndarray) -> pd.Series:
    """Milliseconds since the epoch (-1: none) as UTC; out of range: NaT."""
    inside = (values >= _FLOOR_MS) & (values < _CEILING_MS)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[inside] = (values[inside] * 1_000_000).astype("datetime64[ns]")
    return pd.Series(out).dt.tz_localize("UTC")


def _times(millis: list[int | None], texts: list[str | None]) -> pd.Series:
    """Milliseconds since the epoch (or ISO times) as UTC; out of range or missing: NaT."""
    stamps = _ms_times(np.array([-1 if m is None else m for m in millis], dtype=np.int64))
    if any(t is not None for t in texts):
        iso = iso_timestamps(pd.Series(texts, dtype="string"))
        stamps = stamps.where(stamps.notna(), iso)
    return stamps


def _size(value: object) -> int | None:
    """A byte count: a whole number, or a string of digits (as :func:`_digits`)."""
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 17 else None
    number = _millis(value)
    return number if number is not None and 0 <= number < 2**62 else None


def _trim_arrow(values: Any) -> Any:
    """Strings without surrounding whitespace; empty ones null (Arrow)."""
    out = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


def _lower_arrow(values: Any) -> Any:
    return pc.utf8_lower(_trim_arrow(values))


def _address_arrow(values: Any) -> Any:
    """:func:`_address` for an Arrow array."""
    return _trim_arrow(pc.utf8_trim(pc.utf8_trim_whitespace(values), characters="<>"))


def _digits(values: Any) -> Any:
    """Whole numbers written as strings of at most 17 digits, as int64; others null."""
    text = pc.utf8_trim_whitespace(values)
    whole = pc.match_substring_regex(text, r"^[0-9]{1,17}$")
    return pc.cast(pc.if_else(whole, text, pa.scalar(None, pa.string())), pa.int64())


def _flags(values: Any) -> np.ndarray:
    """A boolean Arrow array as a NumPy one (null: False)."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _strings(values: Any) -> pd.Series:
    return pd.Series(values.to_pandas(types_mapper=_STRING.get), dtype="string")


#: What Arrow reads of a line: the fields rows need, with the JSON types of API 2.0
#: (any other field is skipped by the parser, never converted: subjects, IPs...).
_ARROW_FIELDS = (
    "type", "timestamp", "senderEnvelope", "recipients", "messageId", "aggregateId",
    "processingId", "emailSize", "delivered", "deliveryTime", "rejectionCode",
    "rejectionType", "action",
)  # fmt: skip
_ARROW = pa_json.ParseOptions(
    explicit_schema=pa.schema(
        [(f, pa.int64() if f == "timestamp" else pa.string()) for f in _ARROW_FIELDS]
    ),
    unexpected_field_behavior="ignore",
)
_STRING = {pa.string(): pd.StringDtype()}
_INT64 = {pa.int64(): pd.Int64Dtype()}


def _collapse(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (message, sender, recipient): the highest ranked status (see
    :data:`_RANK`), the latest row of that rank."""
    keys = ["message_id", "sender", "recipient"]
    repeated = frame.duplicated(keys, keep=False)
    if not repeated.any():
        return frame, 0
    rank = frame["status"].map(_RANK).fillna(2).to_numpy(dtype=np.int8)
    order = np.lexsort((np.arange(len(frame)), rank))
    ranked = frame.iloc[order]
    kept = ranked.loc[~ranked.duplicated(keys, keep="last")].sort_index()
    return kept.reset_index(drop=True), len(frame) - len(kept)


# --- the listing and its units ----------------------------------------------------------
@dataclass(frozen=True)
class Listed:
    """One batch file as a listing page named it."""

    kind: str
    params: tuple[tuple[str, str], ...]  # the query of its page
    page: int
    position: int
    url: str
    size: int | None
    expiry: float | None  # POSIX seconds, when the listing said

    @property
    def where(self) -> str:
        """The file's place, for messages (never its link: the link is a credential)."""
        return f"{self.kind} batch {self.position + 1} of listing page {self.page + 1}"


def _link_id(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _expiry(value: object) -> float | None:
    """A link's expiry as POSIX seconds: an ISO time, or seconds or milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / (1000 if value > 1e11 else 1)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return _expiry(int(text))
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
    return None


class BatchFile(ReadUnit):
    """One batch file of events (its key: its type, link without signature and size,
    hashed); read once, except process files (see the module's docstring)."""

    format = FORMAT
    distributable = False  # its reader shares the run's held messages

    def __init__(self, source: MimecastSource, listed: Listed, bookmark: str | None = None) -> None:
        self.source = source
        self.listed = listed
        self.url = listed.url
        self.expiry = listed.expiry
        self.bookmark = bookmark
        self.once = listed.kind != "process"
        identity = f"mimecast\n{listed.kind}\n{_link_id(listed.url)}\n{listed.size}"
        self.key = hashlib.sha256(identity.encode()).hexdigest()

    def _refresh(self) -> bool:
        """List the file's page again for a fresh link; False when it is no longer listed."""
        body = self.source.client.list_page(dict(self.listed.params))
        wanted = _link_id(self.listed.url)
        for item in body.get("value") or []:
            if isinstance(item, dict) and _link_id(str(item.get("url", ""))) == wanted:
                self.url = str(item["url"])
                self.expiry = _expiry(item.get("expiry"))
                return True
        return False

    def _response(self, skipped: Counter[str]) -> requests.Response | None:
        client = self.source.client
        if self.expiry is not None and self.expiry < time.time() + 30 and not self._refresh():
            skipped["batch_gone"] += 1
            return None
        for fresh in (False, True):
            try:
                return client.open_batch(self.url)
            except LinkGone as exc:
                if fresh:
                    raise RetriableSourceError(
                        f"source {self.source.name!r}: the {self.listed.where} cannot be "
                        f"downloaded ({exc}, with a fresh link too); the next run retries"
                    ) from None
                log.info(
                    "source %s: the %s link answered %s", self.source.name, self.listed.where, exc
                )
                if not self._refresh():
                    log.warning(
                        "source %s: the %s is no longer listed; skipped",
                        self.source.name,
                        self.listed.where,
                    )
                    skipped["batch_gone"] += 1
                    return None
        raise AssertionError("unreachable")  # pragma: no cover

    def chunks(self) -> Iterator[Chunk]:
        reader = EventReader(self.listed.kind, self.source.held)
        client = self.source.client
        done = 0  # lines read; a download started again skips them
        failures = 0
        while True:
            response = self._response(reader.skipped)
            if response is None:
                break
            line_no = 0
            block: list[bytes | None] = []
            try:
                with response:
                    blocks = response.iter_content(chunk_size=1 << 16)
                    for line in event_lines(blocks):
                        line_no += 1
                        if line_no > done:
                            block.append(line)
                        if len(block) >= BLOCK_LINES:
                            reader.add_lines(block)
                            block, done = [], line_no
                            if len(reader) >= CHUNK_ROWS:
                                yield from _bounded(reader.take())
                reader.add_lines(block)
                break
            except (requests.RequestException, BadGzip) as exc:
                reader.add_lines(block)  # the lines before the failure are whole
                done = line_no
                failures += 1
                what = "cut short" if isinstance(exc, requests.RequestException) else str(exc)
                if failures > client.options.max_retries:
                    if isinstance(exc, BadGzip):
                        log.warning(
                            "source %s: the %s is %s after %d downloads; %d line(s) read, "
                            "the rest counted as bad_gzip",
                            self.source.name, self.listed.where, what, failures, done,
                        )  # fmt: skip
                        reader.rejected["bad_gzip"] += 1
                        break
                    raise RetriableSourceError(
                        f"source {self.source.name!r}: the {self.listed.where} was {what} "
                        f"{failures} times; the next run retries"
                    ) from None
                log.info(
                    "source %s: the %s was %s; downloading it again",
                    self.source.name, self.listed.where, what,
                )  # fmt: skip
                client.sleep(min(2.0**failures, 60.0))
        yield from _bounded(reader.take())


def _bounded(chunk: Chunk) -> Iterator[Chunk]:
    """``chunk`` in parts of at most :data:`CHUNK_ROWS` rows (the first with its counts)."""
    frame = chunk.frame
    if len(frame) <= CHUNK_ROWS:
        yield chunk
        return
    for start in range(0, len(frame), CHUNK_ROWS):
        part = frame.iloc[start : start + CHUNK_ROWS]
        yield Chunk(part, chunk.rejected, chunk.skipped) if start == 0 else Chunk(part)


class Caught(ReadUnit):
    """No rows: moves the bookmark to the run's start once every listing caught up."""

    format = LISTING_FORMAT
    once = False
    distributable = False

    def __init__(self, started: str) -> None:
        self.key = f"caught-up {started}"
        self.bookmark = started

    def chunks(self) -> Iterator[Chunk]:
        return iter(())


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_bookmark(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class MimecastSource(Source):
    """SIEM batches (delivery, process, receipt) of one Mimecast account."""

    options_model: ClassVar[type[BaseModel]] = MimecastOptions
    reads = "window"
    collects = tuple(RAW)

    @classmethod
    def from_options(cls, name: str, options: MimecastOptions, base_dir: Path) -> Source:
        return cls(name, options, base_dir)

    def __init__(
        self,
        name: str,
        options: MimecastOptions,
        base_dir: Path,
        client: MimecastClient | None = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self.client = client or MimecastClient(name, options, base_dir, shared_budget(options))
        self.held = HeldMessages()

    # --- planning -------------------------------------------------------------------
    def plan(self, state: SourceState) -> dt.date:
        """The first day a run lists: the bookmark's day less the overlap (the first
        run: ``start_days`` back); refused when the bookmark's day is past Mimecast's 7
        days (the listing is by day: a bookmark of the oldest day listed still resumes)."""
        now = state.started.astimezone(dt.UTC)
        oldest = (now - REACH).date()
        if state.bookmark is None:
            return max((now - dt.timedelta(days=self.options.start_days)).date(), oldest)
        mark = _parse_bookmark(state.bookmark)
        if mark.date() < oldest:
            raise SourceError(
                f"source {self.name!r}: the last complete read ended {_iso(mark)}, longer ago "
                f"than the 7 days Mimecast keeps SIEM batches: events from {_iso(mark)} to "
                f"{oldest} can no longer be fetched. Load them from another export if one "
                f"exists, then run `compliance sources reset {self.name}` to continue with "
                "what Mimecast still keeps."
            )
        return max((mark - dt.timedelta(days=self.options.overlap_days)).date(), oldest)

    def listing(
        self, kind: str, begin: dt.date, end: dt.date | None, bookmark: str | None
    ) -> tuple[list[BatchFile], bool]:
        """Every batch file of ``kind`` listed from ``begin`` (to ``end``), and whether the
        listing caught up."""
        query = {
            "type": kind,
            "pageSize": str(self.options.page_size),
            "dateRangeStartsAt": begin.isoformat(),
        }
        if end is not None:
            query["dateRangeEndsAt"] = end.isoformat()
        files: list[BatchFile] = []
        seen: set[str] = set()
        for page in range(MAX_PAGES):
            params = tuple(query.items())
            body = self.client.list_page(query)
            value = body.get("value")
            if not isinstance(value, list):
                raise SourceError(
                    f"source {self.name!r}: the {kind} batch listing answered without a value list"
                )
            for position, item in enumerate(value):
                url = item.get("url") if isinstance(item, dict) else None
                if not isinstance(url, str) or not url.startswith("https://"):
                    raise SourceError(
                        f"source {self.name!r}: the {kind} listing page {page + 1} names a "
                        f"batch {position + 1} without an https link"
                    )
                size = item.get("size")
                listed = Listed(
                    kind,
                    params,
                    page,
                    position,
                    url,
                    size if isinstance(size, int) and not isinstance(size, bool) else None,
                    _expiry(item.get("expiry")),
                )
                files.append(BatchFile(self, listed, bookmark))
            token = body.get("@nextPage")
            if body.get("isCaughtUp") is True or not value or not isinstance(token, str):
                return files, True  # nothing more to page through (yet)
            if token in seen:
                log.warning("source %s: the %s listing repeats a page", self.name, kind)
                return files, False
            seen.add(token)
            query = {**query, "nextPage": token}
        log.warning("source %s: the %s listing did not end in %d pages", self.name, kind, MAX_PAGES)
        return files, False

    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        state = state or SourceState(None, dt.datetime.now(dt.UTC))
        begin = self.plan(state)
        started = _iso(state.started.replace(microsecond=0))
        previous = state.bookmark or _iso(dt.datetime.combine(begin, dt.time(), tzinfo=dt.UTC))
        units: list[ReadUnit] = []
        caught_up = True
        for kind in TYPES:
            files, done = self.listing(kind, begin, None, previous)
            units.extend(files)
            caught_up &= done
        log.info("source %s: %d batch file(s) listed from %s", self.name, len(units), begin)
        if caught_up:
            units.append(Caught(started))
        return units

    def units_between(
        self, begin: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
    ) -> list[ReadUnit]:
        if begin is None:
            raise PeriodRequired("Mimecast keeps SIEM batches for 7 days")
        if begin.astimezone(dt.UTC).date() < (now.astimezone(dt.UTC) - REACH).date():
            raise SourceError(
                f"source {self.name!r}: {begin.date()} is more than 7 days before "
                f"{now.date()}; Mimecast keeps SIEM batches for 7 days"
            )
        stop = min(end, now) if end is not None else now
        last = (stop.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
        units: list[ReadUnit] = []
        for kind in TYPES:
            files, _ = self.listing(kind, begin.astimezone(dt.UTC).date(), last, None)
            units.extend(files)
        return units

    def check(self) -> list[tuple[bool, str]]:
        try:
            self.client.token()
        except ComplianceError as exc:
            return [(False, str(exc))]
        results = [(True, f"token acquired from {self.options.base_url}")]
        today = dt.datetime.now(dt.UTC).date().isoformat()
        try:
            self.client.list_page({"type": TYPES[0], "pageSize": "1", "dateRangeStartsAt": today})
        except ComplianceError as exc:
            results.append((False, str(exc)))
        else:
            results.append((True, "SIEM batch listing reachable (one request, nothing downloaded)"))
        return results

    def close(self) -> None:
        self.client.close()
