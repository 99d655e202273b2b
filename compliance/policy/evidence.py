"""Evidence of contact: which matched messages show that a person took part.

A message a person *sent* to a listed site is their act. A message they *received*
is someone else's act, unless it belongs to a conversation the person started: it
comes from a registrable domain the same person wrote to within ``reply_window``
before. Everything else they received (a spam wave, a newsletter, a mistyped
address) is *received only* and never counts against anyone, whatever its volume;
inbound messages the gateway marked as spam, quarantined or filtered, or could not
deliver (bounced: the person never received them), never count at all. A message sent
to a site moments after the site's mail reached the person (:data:`AUTOMATIC_SECONDS`)
is an automatic reply, no one's act: it counts for nothing and starts no conversation.
Conversations are followed within one pseudonym, so within one key epoch.

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
AUTOMATIC: Final = 5  # sent moments after mail from the site arrived: an automatic reply
COPY: Final = 6  # the same message again, to or from another address of the same site

CLASS_NAMES: Final = (
    "sent", "undelivered", "reply", "received_only", "blocked", "automatic", "copy"
)  # fmt: skip

#: An outbound message to a site that leaves at most this many seconds after a message
#: from that site reached the same person answers it automatically: an out-of-office
#: reply, an inbox rule's reply, a delivery or read receipt sent by the client. Message
#: traces (Get-MessageTrace, Microsoft Graph) carry no field that tells them apart, and
#: they carry the person's address; nobody reads and answers mail this fast, so such a
#: message is no act of theirs, and it opens no conversation.
AUTOMATIC_SECONDS: Final = 120

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

    One message is one piece of evidence, however many addresses of one site it went to
    (``girls@site`` and ``bookings@site`` in one message): of the events of one person,
    direction and registrable domain at the same instant, one keeps its class (the most
    telling: delivered before undelivered) and the others are :data:`COPY`, which no
    figure counts. Otherwise, see :func:`_classes`.
    """
    out = _classes(events, reply_window_days)
    if len(out) < 2:
        return out
    same = pd.MultiIndex.from_arrays(
        [
            events["person"].astype("string"),
            events["direction"].astype("string"),
            events["reg_domain"].astype("string"),
            events["timestamp"],
        ]
    )
    message = pd.factorize(same)[0]
    order = np.lexsort((out, message))  # within a message, the most telling class first
    ordered = message[order]
    repeated = np.append(False, ordered[1:] == ordered[:-1])
    out[order[repeated]] = COPY
    return out


def _classes(events: pd.DataFrame, reply_window_days: int) -> np.ndarray:
    """The class of each event before copies are told apart.

    An outbound message that leaves between 1 and :data:`AUTOMATIC_SECONDS` seconds after
    a message from the same registrable domain reached the same pseudonym (any delivery
    status) is automatic: no evidence, and no start of a conversation. A reply is an
    inbound message whose registrable domain the same pseudonym wrote to (any delivery
    status: the person started the exchange; an automatic message starts nothing) at
    most ``reply_window_days`` before it, or at the same moment. Vectorised: (person,
    domain, time) keys are sorted once per direction and every message finds the latest
    one of the other direction before it by binary search.
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
    if not outbound.any() or not inbound.any():
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
    sent_rows = np.flatnonzero(outbound)
    answered = _since_latest(np.sort(key[inbound]), key[sent_rows])
    automatic = sent_rows[(answered >= 1) & (answered <= AUTOMATIC_SECONDS)]
    out[automatic] = AUTOMATIC
    own = outbound.copy()
    own[automatic] = False
    wanted = np.flatnonzero(inbound & ~blocked)
    if not own.any() or not len(wanted):
        return out
    since = _since_latest(np.sort(key[own]), key[wanted])
    out[wanted[(since >= 0) & (since <= reply_window_days * 86_400)]] = REPLY
    return out


def _since_latest(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each of ``keys`` (``(group << 32) | seconds``), the seconds since the latest of
    ``sorted_keys`` of the same group at or before it, or -1 where there is none."""
    at = np.searchsorted(sorted_keys, keys, side="right") - 1
    found = at >= 0
    previous = sorted_keys[np.where(found, at, 0)]
    same = found & ((previous >> 32) == (keys >> 32))
    return np.where(same, (keys & 0xFFFFFFFF) - (previous & 0xFFFFFFFF), -1)


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
