"""The canonical event schemas, in one place.

Two schemas exist, and nothing else crosses a stage boundary:

* ``RAW``: what every connector yields, one row per (message, recipient). It still
  holds addresses; it lives only in memory, one chunk at a time.
* ``MINIMISED``: what the engine keeps after ingest. The internal party is a keyed
  pseudonym plus an org unit; the external party is a domain. No address, local
  part, subject or IP exists in it.
"""

from __future__ import annotations

from typing import Final

import pandas as pd

#: Raw columns every connector yields, with their pandas dtypes.
RAW: Final[dict[str, str]] = {
    "timestamp": "datetime64[ns, UTC]",  # when the gateway received the message
    "sender": "string",  # envelope sender address, as the source spells it
    "recipient": "string",  # one recipient address per row
    "status": "string",  # delivery status, as the source spells it
    "size": "Int64",  # bytes, when known
    "message_id": "string",  # RFC 5322 Message-ID (or a source trace id)
}

#: Minimised columns the engine keeps and stores.
MINIMISED: Final[dict[str, str]] = {
    "event_key": "int64",  # keyed 64-bit hash of (message id, sender, recipient)
    "timestamp": "datetime64[ns, UTC]",
    "day": "string",  # ISO date (UTC) of the timestamp
    "source": "string",  # the configured source name
    "subject": "string",  # pseudonym of the internal party
    "org_unit": "string",  # the internal party's org-unit path, or "unknown"
    "direction": "string",  # outbound | inbound
    "domain": "string",  # external party's normalised host (IDNA, lower case)
    "reg_domain": "string",  # its registrable domain
    "categories": "string",  # ';'-joined feed categories the domain matched
    "feeds": "string",  # ';'-joined feed names the domain matched
    "status": "string",  # lower-cased delivery status
    "size": "Int64",
    "epoch": "string",  # key epoch of the pseudonym ("-" without key rotation)
}

DIRECTIONS: Final = ("outbound", "inbound", "internal")

#: Org unit of internal people that the directory does not list.
UNKNOWN_UNIT: Final = "unknown"


def empty_raw() -> pd.DataFrame:
    """An empty frame with the raw schema."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW.items()})


def empty_minimised() -> pd.DataFrame:
    """An empty frame with the minimised schema."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MINIMISED.items()})


def conform_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the raw columns, in order and dtype (missing ones empty)."""
    out = pd.DataFrame(index=frame.index)
    for col, dtype in RAW.items():
        if col in frame.columns:
            out[col] = frame[col].astype(dtype)  # type: ignore[call-overload]
        else:
            out[col] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    return out
