"""Evidence of contact: which matched messages show that a person took part.

A message a person *sent* to a listed site is their act. A message they *received*
is someone else's act, unless it belongs to a conversation the person started: it
comes from a registrable domain the same person wrote to within ``reply_window``
before. Everything else they received (a spam wave, a newsletter, a mistyped
address) is *received only* and never counts against anyone, whatever its volume;
inbound messages the gateway marked as spam, quarantined or filtered, or could not
deliver (bounced: the person never received them), never count at
all. Conversations are followed within one pseudonym, so within one key epoch.

Every figure that speaks of evidence (alerts, the org-unit table, the reports) takes
its classes from :func:`classify`, so they agree.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from compliance.events import status_of

#: Classes of a matched message, as small integers.
SENT: Final = 0  # sent by the internal person (counted per the policy's ``sent``)
UNDELIVERED: Final = 1  # sent, not delivered (counts only when ``sent: attempted``)
REPLY: Final = 2  # received from a site the person wrote to within the reply window
RECEIVED_ONLY: Final = 3  # received, outside any conversation of that person
BLOCKED: Final = 4  # inbound, held back by the gateway or never delivered

CLASS_NAMES: Final = ("sent", "undelivered", "reply", "received_only", "blocked")

#: Normalised statuses (:data:`compliance.events.STATUSES`) of inbound mail that never
#: reached the person: refused, quarantined, filtered as spam, malware or phishing, or
#: bounced (a reply that could not be delivered is no part of a conversation they had).
BLOCKED_STATUSES: Final = frozenset({"rejected", "quarantined", "filtered_as_spam", "bounced"})
#: The normalised status of mail that reached its recipient.
DELIVERED_STATUSES: Final = frozenset({"delivered"})


def _status_flags(statuses: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(blocked, delivered) per row, computed once per distinct status (any spelling is
    normalised first, so events built by hand in policy tests count as stored ones)."""
    codes, uniques = pd.factorize(statuses.astype("string"), use_na_sentinel=True)
    keys = [status_of(u) for u in uniques]
    blocked = np.array([k in BLOCKED_STATUSES for k in keys] + [False])
    delivered = np.array([k in DELIVERED_STATUSES for k in keys] + [False])
    return blocked[codes], delivered[codes]


def classify(events: pd.DataFrame, reply_window_days: int) -> np.ndarray:
    """The evidence class of every event (minimised schema), as an int8 array.

    A reply is an inbound message whose registrable domain the same pseudonym wrote to
    (any delivery status: the person started the exchange) at most ``reply_window_days``
    before it, or at the same moment. Vectorised: outbound (person, domain, time) keys
    are sorted once and every inbound message finds the latest one before it by binary
    search.
    """
    n = len(events)
    out = np.full(n, RECEIVED_ONLY, dtype=np.int8)
    if not n:
        return out
    outbound = (events["direction"] == "outbound").to_numpy(dtype=bool, na_value=False)
    blocked, delivered = _status_flags(events["status"])
    out[outbound] = np.where(delivered[outbound], SENT, UNDELIVERED)
    inbound = ~outbound
    out[inbound & blocked] = BLOCKED
    candidates = inbound & ~blocked
    if not outbound.any() or not candidates.any():
        return out
    pair = pd.MultiIndex.from_arrays(
        [events["person"].astype("string"), events["reg_domain"].astype("string")]
    )
    group = pd.factorize(pair)[0].astype(np.int64)
    seconds = (events["timestamp"].to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")).astype(
        np.int64
    )
    seconds = seconds - int(seconds.min())  # fits 32 bits for any real span
    key = (group << 32) | seconds
    sent_keys = np.sort(key[outbound])
    wanted = np.flatnonzero(candidates)
    at = np.searchsorted(sent_keys, key[wanted], side="right") - 1
    found = at >= 0
    previous = sent_keys[np.where(found, at, 0)]
    same = found & ((previous >> 32) == group[wanted])
    recent = (seconds[wanted] - (previous & 0xFFFFFFFF)) <= reply_window_days * 86_400
    out[wanted[same & recent]] = REPLY
    return out


def counts_as_evidence(classes: np.ndarray, evidence: str, sent: str) -> np.ndarray:
    """Which classes a policy counts: ``evidence`` outbound, conversation or any; ``sent``
    attempted (every sent message) or delivered (delivered ones only)."""
    wanted = {SENT}
    if sent == "attempted":
        wanted.add(UNDELIVERED)
    if evidence in ("conversation", "any"):
        wanted.add(REPLY)
    if evidence == "any":
        wanted.add(RECEIVED_ONLY)
    return np.isin(classes, list(wanted))


#: The verification pattern: a person's first message to a listed site answered from it
#: within this many hours, then followed by more messages from the person to it.
EXCHANGE_HOURS: Final = 24

#: What :func:`confirmed_exchanges` returns: one row per (pseudonym, registrable domain)
#: whose exchange is confirmed, with the day of the person's first message.
EXCHANGE_COLUMNS: Final = ("person", "reg_domain", "day")


def confirmed_exchanges(events: pd.DataFrame, hours: int = EXCHANGE_HOURS) -> pd.DataFrame:
    """The (person, registrable domain) pairs whose exchange is confirmed, with the day
    (UTC) of the person's first message: how a work address is used as proof of identity.

    Confirmed: the person's first outbound message to the domain (the earliest in
    ``events``, any delivery status) comes before anything received from it (a domain
    that wrote first is not a verification), the first message received from it that the
    gateway did not block arrives within ``hours`` after, and the person writes to the
    domain again after that reply. Computed per pair with grouped minima and maxima, no
    per-row loop. Pairs are followed within one pseudonym (one key epoch).
    """
    empty = pd.DataFrame({c: pd.Series(dtype="string") for c in EXCHANGE_COLUMNS})
    if events.empty:
        return empty
    outbound = (events["direction"] == "outbound").to_numpy(dtype=bool, na_value=False)
    blocked, _ = _status_flags(events["status"])
    pair = pd.MultiIndex.from_arrays(
        [events["person"].astype("string"), events["reg_domain"].astype("string")]
    )
    group, pairs = pd.factorize(pair)
    keep = group >= 0
    stamps = events["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    frame = pd.DataFrame(
        {
            "g": group[keep],
            "t": stamps[keep],
            "out": outbound[keep],
            "answer": (~outbound & ~blocked)[keep],
        }
    )
    if frame.empty:
        return empty
    never = np.iinfo(np.int64).max
    first_out = frame["t"].where(frame["out"], never).groupby(frame["g"]).min()
    last_out = frame["t"].where(frame["out"], -never).groupby(frame["g"]).max()
    first_in = frame["t"].where(~frame["out"], never).groupby(frame["g"]).min()
    first_answer = frame["t"].where(frame["answer"], never).groupby(frame["g"]).min()
    limit = hours * 3_600 * 1_000_000_000
    ok = (
        (first_out < never)
        & (first_in > first_out)  # nothing received before the first message
        & (first_answer < never)
        & (first_answer - first_out <= limit)
        & (last_out > first_answer)  # and more messages after the answer
    )
    codes = ok.index[ok.to_numpy()].to_numpy()
    if not len(codes):
        return empty
    first_days = np.datetime_as_string(
        first_out.loc[codes].to_numpy().astype("datetime64[ns]").astype("datetime64[D]")
    )
    chosen = pairs[codes]
    return pd.DataFrame(
        {
            "person": pd.Series(chosen.get_level_values(0), dtype="string"),
            "reg_domain": pd.Series(chosen.get_level_values(1), dtype="string"),
            "day": pd.Series(first_days, dtype="string"),
        }
    )
