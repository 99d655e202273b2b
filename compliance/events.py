"""The canonical event schemas, in one place.

Two schemas exist, and nothing else crosses a stage boundary:

* ``RAW``: what every connector yields, one row per (message, recipient). It still
  holds addresses; it lives only in memory, one chunk at a time.
* ``MINIMISED``: what the engine keeps after ingest. The internal party is a keyed
  pseudonym plus an org unit; the external party is a domain. No address, local
  part, subject or IP exists in it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

import numpy as np
import pandas as pd

#: Raw columns every connector yields, with their pandas dtypes.
RAW: Final[dict[str, str]] = {
    "timestamp": "datetime64[ns, UTC]",  # when the gateway received the message
    "sender": "string",  # envelope sender address, as the source spells it
    "recipient": "string",  # one recipient address per row
    "status": "string",  # delivery status: one of STATUSES, or as the source spells it
    "size": "Int64",  # bytes, when known
    "message_id": "string",  # RFC 5322 Message-ID (or a source trace id)
}

#: Minimised columns the engine keeps and stores.
MINIMISED: Final[dict[str, str]] = {
    "event_key": "int64",  # keyed 64-bit hash of (message id, sender, recipient)
    "timestamp": "datetime64[ns, UTC]",
    "day": "string",  # ISO date (UTC) of the timestamp
    "source": "string",  # the configured source name
    "person": "string",  # pseudonym of the internal party
    "org_unit": "string",  # the internal party's org-unit path, or "unknown"
    "direction": "string",  # outbound | inbound
    "domain": "string",  # external party's normalised host (IDNA, lower case)
    "reg_domain": "string",  # its registrable domain
    "categories": "string",  # ';'-joined feed categories the domain matched
    "feeds": "string",  # ';'-joined feed names the domain matched
    "status": "string",  # normalised delivery status, one of STATUSES
    "size": "Int64",
    "epoch": "string",  # key epoch of the pseudonym ("-" without key rotation)
}

DIRECTIONS: Final = ("outbound", "inbound", "internal")

#: Org unit of internal people that the directory does not list.
UNKNOWN_UNIT: Final = "unknown"


#: The delivery statuses every source maps to, and the only ones the engine keeps.
#: ``filtered_as_spam`` is any content filter's verdict (spam, bulk, malware, phishing);
#: ``quarantined`` is held back for review; ``rejected`` is refused during the SMTP
#: dialogue (nothing was accepted); ``bounced`` is accepted, then failed for good.
Status = Literal[
    "delivered", "deferred", "bounced", "rejected", "quarantined", "filtered_as_spam", "unknown"
]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

#: How gateways spell each status, compared by letters only (``Filtered As Spam`` is
#: ``filteredasspam``): Graph and Exchange Online message trace, Exchange Server tracking
#: events, Postfix, Exim, Cisco, Proofpoint, Mimecast and Google Workspace spellings.
_STATUS_SPELLINGS: Final[dict[str, tuple[str, ...]]] = {
    "delivered": (
        "delivered", "deliver", "delivery", "sent", "send", "relayed", "relay", "ok",
        "accepted", "accept", "expanded", "expand", "resolved", "resolve", "success",
        "successful", "continue", "transferred", "submitted",
    ),
    "deferred": (
        "deferred", "defer", "deferral", "pending", "delayed", "delay", "queued", "retry",
        "tempfail", "temporaryfailure", "softbounce",
    ),
    "bounced": (
        "bounced", "bounce", "failed", "fail", "failure", "permfail", "permanentfailure",
        "expired", "undeliverable", "hardbounce", "dsn", "ndr",
    ),
    "rejected": ("rejected", "reject", "refused", "denied", "deny", "blocked", "block"),
    "quarantined": ("quarantined", "quarantine", "held", "hold", "quarantinedmessage"),
    "filtered_as_spam": (
        "filteredasspam", "spam", "junk", "junked", "bulk", "filteredasmalware", "malware",
        "virus", "filteredasphish", "phish", "phishing", "filtered", "discarded", "discard",
        "dropped", "drop",
    ),
}  # fmt: skip
_STATUS_OF: Final[dict[str, str]] = {
    spelling: status for status, spellings in _STATUS_SPELLINGS.items() for spelling in spellings
} | {s.replace("_", ""): s for s in STATUSES}
_NOT_LETTERS = re.compile(r"[^a-z]")


def status_of(spelling: object) -> str:
    """The normalised status (one of :data:`STATUSES`) of one spelling; ``unknown`` for
    anything not known (``GettingStatus``, ``None``, empty)."""
    if not isinstance(spelling, str):
        return "unknown"
    return _STATUS_OF.get(_NOT_LETTERS.sub("", spelling.lower()), "unknown")


def normalise_statuses(values: pd.Series) -> pd.Series:
    """:func:`status_of` for a column, computed once per distinct spelling."""
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    mapped = np.array([status_of(u) for u in uniques] + ["unknown"], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype="string")


def empty_raw() -> pd.DataFrame:
    """An empty frame with the raw schema."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW.items()})


def empty_minimised() -> pd.DataFrame:
    """An empty frame with the minimised schema (a copy of one built once: every chunk
    without a match asks for one)."""
    return _EMPTY_MINIMISED.copy()


_EMPTY_MINIMISED: Final = pd.DataFrame({c: pd.Series(dtype=t) for c, t in MINIMISED.items()})


def conform_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the raw columns, in order and dtype (missing ones empty)."""
    out = pd.DataFrame(index=frame.index)
    for col, dtype in RAW.items():
        if col in frame.columns:
            out[col] = frame[col].astype(dtype)  # type: ignore[call-overload]
        else:
            out[col] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    return out


#: Times a reader accepts at all; the configured range (:class:`TimestampRange`) lies
#: inside. Anything outside is no mail time, and is rejected before it is converted to
#: nanoseconds (where years before 1677 or after 2262 would wrap round).
TIMESTAMP_FLOOR: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TIMESTAMP_CEILING: Final = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def bounded_utc(stamps: pd.Series) -> pd.Series:
    """Datetime values of any resolution (naive ones taken as UTC) as ``datetime64[ns, UTC]``;
    values outside ``TIMESTAMP_FLOOR`` .. ``TIMESTAMP_CEILING`` become NaT, checked in the
    values' own resolution *before* the conversion to nanoseconds (which would wrap)."""
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise TypeError("bounded_utc needs a datetime column")
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None) if stamps.dt.tz else stamps
    values = np.asarray(naive.to_numpy())
    # the bounds in the values' own unit (comparing across units could overflow)
    floor = np.datetime64(TIMESTAMP_FLOOR.date()).astype(values.dtype)
    ceiling = np.datetime64(TIMESTAMP_CEILING.date()).astype(values.dtype)
    inside = ~np.isnat(values) & (values >= floor) & (values < ceiling)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[inside] = values[inside].astype("datetime64[ns]")
    return pd.Series(out, index=stamps.index).dt.tz_localize("UTC")


@dataclass(frozen=True)
class TimestampRange:
    """The times a row may have (config ``ingest``): from ``earliest`` to now plus
    ``latest_ahead`` (a gateway clock a little ahead is normal). Rows outside are
    rejected as ``bad_timestamp``.

    ``now`` is the wall clock when None (read at each check), or a run's own day.
    """

    earliest: dt.datetime = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
    latest_ahead: dt.timedelta = dt.timedelta(days=1)
    now: dt.datetime | None = None

    def bounds(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(earliest, latest) allowed, both inclusive, always inside the floor and ceiling."""
        wall = dt.datetime.now(dt.UTC)
        now = wall if self.now is None else max(wall, self.now)
        latest = min(now + self.latest_ahead, TIMESTAMP_CEILING - dt.timedelta(microseconds=1))
        return pd.Timestamp(max(self.earliest, TIMESTAMP_FLOOR)), pd.Timestamp(latest)
