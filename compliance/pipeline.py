"""The per-chunk stages: normalise, minimise and pseudonymise, match.

:func:`process_chunk` runs a chunk through them in order: :func:`rows_in_period`
(timestamps), :func:`split_parties` (addresses, internal and external parties),
:func:`look_up_people` (the directory), :func:`grouped_totals` with
:func:`unkeyed_message_keys` or :func:`keyed_messages` (counting each message once),
:func:`match_feeds` (the feed index) and :func:`matched_events` (minimised events);
with retro-hunt on, :func:`retro_contacts` keeps the unmatched external contacts for
later (:func:`retro_listings` and :func:`retro_events` find them when a feed lists their
domain).

Every stage works on columns and on distinct values: addresses, domains and people
are resolved once per distinct value in a chunk, then mapped back to rows. The same
function serves the scheduled run, the audit command and their Dask workers (see
:mod:`compliance.executors`).

After :func:`process_chunk` returns, no address exists in anything it produced.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from compliance.addresses import normalise_address_array
from compliance.directory import Directory
from compliance.domains import (
    NO_LABELS,
    DomainIndex,
    Label,
    normalise_domain,
    registrable_domain,
    unique_map,
)
from compliance.errors import ConfigError
from compliance.events import MINIMISED, TimestampRange, empty_minimised, normalise_statuses
from compliance.hashing import distinct_codes, mix64, string_hashes
from compliance.privacy import Pseudonymiser

TOTAL_COLUMNS = ("day", "org_unit", "direction")


def org_index(domains: Iterable[str]) -> DomainIndex:
    """The organisation's accepted domains (subdomains included) as an index."""

    index = DomainIndex()
    for raw in domains:
        domain = normalise_domain(raw)
        if domain is None:
            raise ConfigError(f"organisation domain {raw!r} is not a valid domain")
        index.add(domain, Label("internal", "organisation"))
    if not len(index):
        raise ConfigError("at least one organisation domain is needed to tell in from out")
    return index


@dataclass
class Context:
    """What the stages need, built once per run."""

    organisation: DomainIndex
    directory: Directory
    pseudonymiser: Pseudonymiser
    index: DomainIndex  # feeds plus the policies' own extra domains
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None  # exclusive
    #: times a row may have (config ``ingest``); rows outside are ``bad_timestamp``
    timestamps: TimestampRange = field(default_factory=TimestampRange)
    #: retro-hunt (scheduled runs with ``retro_hunt_days``): the first day whose unmatched
    #: external contacts are kept (:func:`retro_contacts`); None: none are (audits, or off)
    retro_from: str | None = None
    #: ring rules (scheduled runs whose policies have one): pseudonyms of the people with
    #: evidence in the rings' longest window, whose internal mail to colleagues is kept as
    #: keyed pair digests (:func:`internal_edges`); None: no internal mail is kept
    ring_people: frozenset[str] | None = None
    #: event keys (scheduled runs, from the store's meta): the last UTC day whose messages
    #: get scheme-1 keys, as a store written before scheme 2 holds them; None: every day
    #: gets scheme 2 (audits, and stores begun with scheme 2). See :func:`event_keys`.
    scheme1_through: str | None = None


def empty_totals() -> pd.DataFrame:
    """Grouped totals of no message."""
    frame = pd.DataFrame({c: pd.Series(dtype="string") for c in TOTAL_COLUMNS})
    frame["messages"] = pd.Series(dtype=np.int64)
    return frame


#: Unmatched external contacts kept for retro-hunt (see :func:`retro_contacts`): one row
#: per (message, internal person); the external party only as a keyed digest of its
#: registrable domain.
RETRO: dict[str, str] = {
    "event_key": "int64",  # the event key the message's event would have
    "hour": "string",  # the timestamp truncated to the hour, ``YYYY-MM-DDTHH:00:00Z``
    "day": "string",
    "source": "string",
    "person": "string",  # pseudonym in the day's key epoch
    "org_unit": "string",
    "direction": "string",  # outbound or inbound (internal mail is never kept)
    "status": "string",  # normalised
    "epoch": "string",
    "domain_digest": "int64",  # Pseudonymiser.domain_digests of the registrable domain
}


def empty_retro() -> pd.DataFrame:
    """Kept contacts of no message."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RETRO.items()})


def empty_keyed_messages() -> pd.DataFrame:
    """Keyed per-message rows of no message."""
    frame = pd.DataFrame({c: pd.Series(dtype="string") for c in TOTAL_COLUMNS})
    frame["event_key"] = pd.Series(dtype=np.int64)
    return frame


@dataclass
class ChunkResult:
    """What one chunk contributes: counts, grouped totals, how to count each message once,
    and the matched minimised events.

    :func:`process_chunk` identifies the messages it counted in one of two ways, each in
    fields of its own (the other left ``None``): the unkeyed keys an in-memory
    :class:`Tally` needs (``message_keys`` with ``message_groups``, the default), or one
    row per message with its keyed event key for a store (``keyed_messages``, with
    ``with_keyed_messages``). No field changes shape with the choice.
    """

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    #: messages per (day, org_unit, direction): those columns and ``messages``
    totals: pd.DataFrame = field(default_factory=empty_totals)
    matched: pd.DataFrame = field(default_factory=empty_minimised)
    #: the unkeyed key of each message counted (see :func:`message_keys`) and the row of
    #: ``totals`` it was counted in, so that a tally can count it once
    message_keys: np.ndarray | None = None
    message_groups: np.ndarray | None = None
    #: one row per message counted (day, org_unit, direction, event_key: its keyed event
    #: key), so that a store can count a message the first time it sees it
    keyed_messages: pd.DataFrame | None = None
    #: first and last UTC day of the rows with a valid timestamp inside the period
    first_day: str | None = None
    last_day: str | None = None
    #: with retro-hunt on (``Context.retro_from``) and keyed messages: the unmatched
    #: external contacts to keep (:data:`RETRO`); None otherwise
    retro: pd.DataFrame | None = None
    #: with ring rules (``Context.ring_people``) and keyed messages: internal mail from
    #: people with evidence, one row per (message, recipient): ``day``, ``pair_digest``,
    #: ``event_key`` (:func:`internal_edges`); None otherwise
    edges: pd.DataFrame | None = None


def _arrow(column: pd.Series) -> pa.Array:
    """A string column as one Arrow array (zero-copy for Arrow-backed columns)."""
    array = pa.array(column, type=pa.string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _domain_of(addresses: pa.Array) -> pa.Array:
    """The domain of normalised addresses: everything after the last ``@``."""
    parts = pc.split_pattern(addresses, "@", max_splits=1, reverse=True)
    return pc.list_element(parts, 1)


def _codes(indices: pa.Array) -> np.ndarray:
    """Dictionary indices as int64 numbers, -1 for nulls."""
    return np.asarray(indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _take(values: np.ndarray, codes: np.ndarray, missing: object = None) -> np.ndarray:
    """``values[codes]`` with ``missing`` where a code is -1."""
    padded = np.empty(len(values) + 1, dtype=values.dtype)
    padded[:-1] = values
    padded[-1] = missing
    taken: np.ndarray = padded[codes]
    return taken


def message_keys(
    message_ids: np.ndarray, senders: np.ndarray, recipients: np.ndarray
) -> np.ndarray:
    """One unkeyed 64-bit key per message from the hashes of its parts (see
    :func:`string_hashes`): (message id, normalised sender, normalised recipient), as the
    keyed event key identifies a message. Messages differing in one part never share a
    key (each step is a bijection); others do with probability 2**-64 per pair."""
    key = mix64(message_ids ^ np.uint64(0x243F6A8885A308D3))
    key = mix64(key ^ senders)
    key = mix64(key ^ recipients)
    return key.view(np.int64)


def process_chunk(
    raw: pd.DataFrame,
    source: str,
    ctx: Context,
    *,
    with_keyed_messages: bool = False,
) -> ChunkResult:
    """Run one raw chunk through every stage up to matching.

    Rows are only ever handled as Arrow or NumPy columns: addresses are dictionary-
    encoded, every per-value step (normalisation, domains, organisation membership,
    the directory, the feed index) runs once per distinct value, and rows get their
    results back by index. Python objects are built only for matched rows.

    The totals always come grouped. The messages counted are identified, so that each
    is counted once, by the unkeyed keys an in-memory :class:`Tally` needs (the
    default), or with ``with_keyed_messages`` by one row per message with its keyed
    event key instead, which a store keeps from run to run (see :class:`ChunkResult`).
    """
    result = ChunkResult(rows=len(raw))
    if with_keyed_messages:  # each output keeps its shape when nothing is kept
        result.keyed_messages = empty_keyed_messages()
    else:
        result.message_keys = np.empty(0, np.int64)
        result.message_groups = np.empty(0, np.int32)
    rows, rejected, skipped = rows_in_period(raw["timestamp"], ctx)
    result.rejected.update(rejected)
    result.skipped.update(skipped)
    if not rows.size:
        return result
    instants = raw["timestamp"].to_numpy(dtype="datetime64[ns]")
    result.first_day, result.last_day = day_range(instants[rows])
    parties, rejected, skipped = split_parties(raw, rows, ctx.organisation, ctx.directory)
    result.rejected.update(rejected)
    result.skipped.update(skipped)
    if not parties.rows.size:
        return result
    people = look_up_people(parties, ctx.directory)
    days = days_of(instants[parties.rows])
    result.totals, groups = grouped_totals(days, people, ctx.directory, parties.direction_code)
    if with_keyed_messages:
        result.keyed_messages = keyed_messages(raw, parties, people, days, ctx)
    else:
        result.message_keys = unkeyed_message_keys(raw, parties)
        result.message_groups = groups
    matched, label_sets = match_feeds(parties, ctx.index)
    if matched.size:
        keyed = result.keyed_messages  # the keys of every row, when a store asked for them
        result.matched = matched_events(
            raw, source, ctx, parties, people, days, matched, label_sets,
            None if keyed is None else keyed["event_key"].to_numpy(dtype=np.int64)[matched],
        )  # fmt: skip
    if with_keyed_messages and ctx.retro_from is not None:
        assert result.keyed_messages is not None
        result.retro = retro_contacts(
            raw, source, ctx, parties, people, days, instants, matched, result.keyed_messages
        )
    if with_keyed_messages and ctx.ring_people is not None:
        assert result.keyed_messages is not None
        result.edges = internal_edges(ctx, parties, people, days, result)
    return result


#: The columns of :attr:`ChunkResult.edges`.
EDGES: dict[str, str] = {"day": "string", "pair_digest": "int64", "event_key": "int64"}


def pair_digests(
    pseudonymiser: Pseudonymiser, senders: pd.Series, recipients: pd.Series
) -> np.ndarray:
    """A keyed signed 64-bit digest of each (sender pseudonym, recipient pseudonym) pair,
    in that order: what ring rules know of internal mail. Keyed with the secret key (no one
    without it can tell which pair a digest is, or test a guess); one hash per value, so
    give distinct pairs."""
    return pseudonymiser.pair_digests(senders.astype(str).tolist(), recipients.astype(str).tolist())


def internal_edges(
    ctx: Context, parties: Parties, people: People, days: Days, result: ChunkResult
) -> pd.DataFrame:
    """The internal mail ring rules keep (:data:`EDGES`): rows between two internal
    parties whose sender is one of ``ctx.ring_people`` or wrote to a listed site in this
    chunk, the pair reduced to :func:`pair_digests`. Pseudonyms are computed once per
    distinct (address, key epoch), digests once per distinct pair; nothing else of the
    message is kept."""
    assert ctx.ring_people is not None
    assert result.keyed_messages is not None
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in EDGES.items()})
    at = np.flatnonzero(parties.direction_code == _INTERNAL)
    if not at.size:
        return empty
    pseudo = ctx.pseudonymiser
    epoch_names = np.array([pseudo.epoch(str(d)) for d in days.text], dtype=object)
    epochs, epoch_of_day = np.unique(epoch_names, return_inverse=True)
    row_epoch = epoch_of_day[days.at[at]]
    # the directory key of each distinct party (a person it does not list: the address)
    codes, code_at = np.unique(
        np.concatenate([parties.sender[at], parties.recipient[at]]), return_inverse=True
    )
    addresses = parties.address.take(pa.array(codes))
    entry, _ = ctx.directory.lookup_all(addresses)
    stable = ctx.directory.person_keys(entry, addresses.to_pylist())
    # the pseudonym of each distinct (party, epoch)
    both_epoch = np.concatenate([row_epoch, row_epoch])
    pairs, pair_at = np.unique(
        code_at.astype(np.int64) * len(epochs) + both_epoch, return_inverse=True
    )
    party_of, epoch_of = np.divmod(pairs, len(epochs))
    names = np.array(
        [
            pseudo.pseudonym(stable[p], str(epochs[k]))
            for p, k in zip(party_of.tolist(), epoch_of.tolist(), strict=True)
        ],
        dtype=object,
    )
    sender, recipient = names[pair_at[: at.size]], names[pair_at[at.size :]]
    wanted = set(ctx.ring_people)
    matched = result.matched
    if len(matched):
        wanted |= set(matched.loc[matched["direction"] == "outbound", "person"].astype(str))
    keep = pd.Series(sender).isin(wanted).to_numpy() & (sender != recipient)
    if not keep.any():
        return empty
    distinct = pd.DataFrame({"s": sender[keep], "r": recipient[keep]})
    unique = distinct.drop_duplicates().reset_index(drop=True)
    unique["digest"] = pair_digests(pseudo, unique["s"], unique["r"])
    digest = distinct.merge(unique, on=["s", "r"], how="left")["digest"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(
        {
            "day": days.text[days.at[at[keep]]],
            "pair_digest": digest,
            "event_key": result.keyed_messages["event_key"].to_numpy(dtype=np.int64)[at[keep]],
        }
    )
    return frame.astype(EDGES)


def rows_in_period(
    stamps: pd.Series, ctx: Context
) -> tuple[np.ndarray, Counter[str], Counter[str]]:
    """Range-check the timestamps and drop the rows outside the run's period.

    Returns the numbers of the rows kept; the rows rejected (``bad_timestamp``: no time,
    or one outside the times a row may have, ``ctx.timestamps``); and the rows skipped,
    which is no error (``outside_period``: a valid time before ``ctx.since`` or from
    ``ctx.until`` on).
    """
    rejected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    earliest, latest = ctx.timestamps.bounds()
    inside = stamps.notna() & (stamps >= earliest) & (stamps <= latest)
    keep = np.array(inside.to_numpy(dtype=bool, na_value=False), dtype=bool)  # writable
    if not keep.all():
        rejected["bad_timestamp"] += int((~keep).sum())
    if ctx.since is not None or ctx.until is not None:
        outside = np.zeros(len(stamps), dtype=bool)
        if ctx.since is not None:
            outside |= (stamps < ctx.since).to_numpy()
        if ctx.until is not None:
            outside |= (stamps >= ctx.until).to_numpy()
        outside &= keep
        if outside.any():
            skipped["outside_period"] += int(outside.sum())
            keep &= ~outside
    return np.flatnonzero(keep), rejected, skipped


def day_range(instants: np.ndarray) -> tuple[str, str]:
    """The first and last UTC day of some (naive UTC ``datetime64``) instants."""
    first, last = instants.min(), instants.max()
    return str(first.astype("datetime64[D]")), str(last.astype("datetime64[D]"))


@dataclass
class Parties:
    """Rows with their two parties, resolved once per distinct address.

    ``address`` holds each distinct address once, normalised (null: not a valid address),
    and ``domain`` the domain of each; ``domains`` holds each distinct domain once, and
    ``domain_code`` the code of each address's domain in it (-1: none), so that work per
    domain is done once per domain, however many addresses share it. Every other array
    has one value per row: its
    number in the chunk, the code (index into ``address``) of its sender, recipient,
    internal party and external party (-1: none, for internal mail), and its direction
    (``outbound``, ``inbound`` or ``internal``) with its code (an index into
    ``_DIRECTIONS``). It holds addresses: it is never part of a result.
    """

    rows: np.ndarray
    address: pa.Array
    domain: pa.Array
    domains: pa.Array
    domain_code: np.ndarray
    sender: np.ndarray
    recipient: np.ndarray
    person: np.ndarray
    external: np.ndarray
    direction_code: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        """Each row's direction by name (``outbound``, ``inbound`` or ``internal``)."""
        names: np.ndarray = _DIRECTIONS[self.direction_code]
        return names


#: The directions of a message, in the order ``np.unique`` sorts their names.
_DIRECTION_NAMES = ("inbound", "internal", "outbound")
_DIRECTIONS = np.array(_DIRECTION_NAMES)
_INBOUND, _INTERNAL, _OUTBOUND = range(3)
#: The direction's code by (sender internal) * 2 + (recipient internal); -1: neither is.
_DIRECTION_OF = np.array([-1, _INBOUND, _OUTBOUND, _INTERNAL], dtype=np.int64)


def distinct_addresses(raw: pd.DataFrame, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Normalise the senders and recipients of ``rows``, once per distinct value.

    Returns the distinct addresses normalised (null where a value is not a valid
    address), and the code of each row's sender then of each row's recipient in them
    (-1: no value), in one array of twice the rows.
    """
    take = pa.array(rows)
    senders = _arrow(raw["sender"]).take(take)
    recipients = _arrow(raw["recipient"]).take(take)
    # one dictionary of distinct addresses for both columns
    encoded = pc.dictionary_encode(pa.concat_arrays([senders, recipients]))
    return normalise_address_array(encoded.dictionary), _codes(encoded.indices)


def split_parties(
    raw: pd.DataFrame,
    rows: np.ndarray,
    organisation: DomainIndex,
    directory: Directory | None = None,
) -> tuple[Parties, Counter[str], Counter[str]]:
    """Normalise the addresses of ``rows`` and split them into internal and external parties.

    Rejects the rows without a sender or a recipient (``no_sender``, ``no_recipient``),
    with one that is not a valid address (``invalid_sender``, ``invalid_recipient``), or
    between two external parties (``no_internal_party``), each row for the first of
    these reasons. Skips the rows whose internal party is a system mailbox
    (:func:`system_mailboxes`: bounces and notices, nobody's mail) that the ``directory``
    does not give to a person (an address someone may send as is theirs). Returns the
    other rows, with the rejected and the skipped ones counted by reason.
    """
    address, codes = distinct_addresses(raw, rows)
    s_code, r_code = codes[: len(rows)], codes[len(rows) :]
    valid = np.asarray(pc.is_valid(address).to_numpy(zero_copy_only=False), dtype=bool)
    domain = _domain_of(address)
    by_domain = pc.dictionary_encode(domain)
    domains, domain_code = by_domain.dictionary, _codes(by_domain.indices)
    internal = _take(organisation.contains_all(domains), domain_code, False)

    rejected: Counter[str] = Counter()
    no_sender, no_recipient = s_code < 0, r_code < 0
    checks = (
        ("no_sender", no_sender),
        ("no_recipient", no_recipient),
        ("invalid_sender", ~_take(valid, s_code, True) & ~no_sender),
        ("invalid_recipient", ~_take(valid, r_code, True) & ~no_recipient),
    )
    bad = np.zeros(len(rows), dtype=bool)
    for reason, mask in checks:
        mask = mask & ~bad
        if mask.any():
            rejected[reason] += int(mask.sum())
        bad |= mask
    # the direction's code by whether the sender and the recipient are internal
    code = _DIRECTION_OF[_take(internal, s_code, False) * 2 + _take(internal, r_code, False)]
    external_only = (code < 0) & ~bad
    if external_only.any():
        rejected["no_internal_party"] += int(external_only.sum())

    kept = ~bad & ~external_only
    person = np.where(code == _INBOUND, r_code, s_code)
    system_address = system_mailboxes(address)
    candidates = np.flatnonzero(system_address)
    if len(candidates) and directory is not None:
        entry, _ = directory.lookup_all(address.take(pa.array(candidates)))
        system_address[candidates[entry >= 0]] = False
    system = _take(system_address, person, False) & kept
    skipped: Counter[str] = Counter()
    if system.any():
        skipped["system_mailbox"] += int(system.sum())
    good = np.flatnonzero(kept & ~system)
    code, s_code, r_code = code[good], s_code[good], r_code[good]
    inbound = code == _INBOUND
    parties = Parties(
        rows=rows[good],
        address=address,
        domain=domain,
        domains=domains,
        domain_code=domain_code,
        sender=s_code,
        recipient=r_code,
        person=person[good],
        external=np.where(code == _OUTBOUND, r_code, np.where(inbound, s_code, -1)),
        direction_code=code,
    )
    return parties, rejected, skipped


#: The local parts of mailboxes that send and receive for the mail system, never for a
#: person: RFC 5321's postmaster, the MTAs' mailer-daemon, and Exchange's system mailbox
#: that sends bounces and notices (``MicrosoftExchange`` and 32 hex digits).
_SYSTEM_LOCAL = r"^(?:postmaster|mailer-daemon|microsoftexchange[0-9a-f]{32})@"


def system_mailboxes(addresses: pa.Array) -> np.ndarray:
    """Whether each normalised address (local parts lower-cased) is a system mailbox."""
    found = pc.match_substring_regex(addresses, _SYSTEM_LOCAL).fill_null(False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class People:
    """The internal party of each row, looked up in the directory once per person.

    ``used``: the distinct internal parties (codes into :attr:`Parties.address`);
    ``entry``: the directory entry of each (an index into :attr:`Directory.keys`, -1 when
    the directory does not list them). Per row: ``at``, its internal party (an index into
    ``used``), and ``unit``, the code of their org unit (into :attr:`Directory.units`).
    """

    used: np.ndarray
    entry: np.ndarray
    at: np.ndarray
    unit: np.ndarray


def look_up_people(parties: Parties, directory: Directory) -> People:
    """Look the internal parties up in the directory, once per distinct address."""
    used, at = np.unique(parties.person, return_inverse=True)
    entry, unit = directory.lookup_all(parties.address.take(pa.array(used)))
    return People(used=used, entry=entry, at=at, unit=unit[at])


@dataclass
class Days:
    """The UTC day of each row: ``text``, each distinct day (``YYYY-MM-DD``); ``at``, per
    row, the index of its day in ``text``."""

    text: np.ndarray
    at: np.ndarray


def days_of(instants: np.ndarray) -> Days:
    """The UTC day of each instant, written once per distinct day."""
    number = instants.astype("datetime64[D]").astype(np.int64)
    days, at = np.unique(number, return_inverse=True)
    text = np.array([str(np.datetime64(int(d), "D")) for d in days], dtype=object)
    return Days(text=text, at=at)


def grouped_totals(
    days: Days, people: People, directory: Directory, direction_code: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Count the messages per (day, org unit, direction), on integer codes.

    Returns the totals (those columns and ``messages``, sorted) and the row of the totals
    each message was counted in.
    """
    unit_names = directory.units
    present, direction_at, _ = distinct_codes(direction_code, len(_DIRECTIONS))
    directions = _DIRECTIONS[present]
    units = len(unit_names)
    combined = (days.at * units + people.unit) * len(directions) + direction_at
    keys, group_at, counts = distinct_codes(combined, len(days.text) * units * len(directions))
    rest, d = np.divmod(keys, len(directions))
    dd, u = np.divmod(rest, units)
    frame = pd.DataFrame(
        {
            "day": pd.Series(days.text[dd], dtype="string"),
            "org_unit": pd.Series(unit_names[u], dtype="string"),
            "direction": pd.Series(directions[d], dtype="string"),
            "messages": counts.astype(np.int64),
        }
    )
    return frame, group_at.astype(np.int32)


def message_ids(raw: pd.DataFrame, rows: np.ndarray | None = None) -> pa.Array:
    """The message id of each row (of ``rows``), which with its normalised sender and
    recipient identifies its message. A row without one (a log or export that has none)
    is identified by its time instead, to the nanosecond, behind a byte no message id
    holds: two messages between the same two people are then two, and one message in two
    overlapping exports still one."""
    ids = _arrow(raw["message_id"])
    if rows is not None:
        ids = ids.take(pa.array(rows))
    if not ids.null_count:
        return ids
    instants = raw["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    if rows is not None:
        instants = instants[rows]
    timed = pc.binary_join_element_wise("\x00time:", pa.array(instants).cast(pa.string()), "")
    return pc.coalesce(ids, timed)


def unkeyed_message_keys(raw: pd.DataFrame, parties: Parties) -> np.ndarray:
    """The unkeyed in-memory key of each row's message (see :func:`message_keys`), each
    distinct address hashed once."""
    address_hash = string_hashes(parties.address)
    return message_keys(
        string_hashes(message_ids(raw))[parties.rows],
        address_hash[parties.sender],
        address_hash[parties.recipient],
    )


def keyed_messages(
    raw: pd.DataFrame, parties: Parties, people: People, days: Days, ctx: Context
) -> pd.DataFrame:
    """One row per message: its day, org unit, direction (categorical) and keyed event
    key (what a store counts each message once by, as it keys a matched event).

    With ``ctx.scheme1_through`` (a store keyed with scheme 1 before), also
    ``other_key``: for a row dated on either side of the cutover (that day or the next),
    its key under the other scheme, else its own key again. One message may be dated a
    day apart by two exports (a delivery past midnight) and so get one key of each scheme;
    the store takes whichever it knows (:func:`cutover_keys`)."""
    keys = event_keys(raw, parties, days, ctx)
    frame = pd.DataFrame(
        {
            "day": _categorical(days.text, days.at),
            "org_unit": _categorical(ctx.directory.units, people.unit),
            "direction": _categorical(_DIRECTIONS, parties.direction_code),
            "event_key": keys,
        }
    )
    if ctx.scheme1_through is not None:
        frame["other_key"] = _other_keys(raw, parties, days, ctx, keys)
    return frame


def _categorical(names: np.ndarray, codes: np.ndarray) -> pd.Series:
    """``names[codes]`` as a categorical column: the codes the pipeline has, which the
    store groups and counts by without coding the strings again."""
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object)))


def cutover_days(scheme1_through: str) -> tuple[str, str]:
    """The two days either side of the event-key cutover: the last keyed with scheme 1,
    and the first keyed with scheme 2 (``""`` when there is none)."""
    last = dt.date.fromisoformat(scheme1_through)
    after = "" if last == dt.date.max else (last + dt.timedelta(days=1)).isoformat()
    return last.isoformat(), after


def _other_keys(
    raw: pd.DataFrame, parties: Parties, days: Days, ctx: Context, keys: np.ndarray
) -> np.ndarray:
    """Each row's key under the other scheme where it is dated on either side of the
    cutover; its own key elsewhere."""
    assert ctx.scheme1_through is not None
    other = keys.copy()
    day_text = days.text.astype(str)
    for day, through in zip(cutover_days(ctx.scheme1_through), (None, "9999-12-31"), strict=True):
        # the last scheme-1 day's rows keyed with scheme 2, the next day's with scheme 1
        found = np.flatnonzero(day_text == day)
        if not len(found):
            continue
        at = np.flatnonzero(np.isin(days.at, found))
        if len(at):
            flipped = replace(ctx, scheme1_through=through)
            other[at] = event_keys(raw, parties, days, flipped, at)
    return other


def event_keys(
    raw: pd.DataFrame, parties: Parties, days: Days, ctx: Context, at: np.ndarray | None = None
) -> np.ndarray:
    """The keyed event key of each row of ``parties`` (or of its rows ``at``): what every
    stage that keys a message calls. The message id, the normalised sender and recipient
    (each distinct address hashed once) and the row's UTC day go to
    :meth:`Pseudonymiser.event_keys`, with ``ctx.scheme1_through``: a message's key
    depends on the message and its day only, never on the chunk it is in."""
    rows, sender, recipient, day = parties.rows, parties.sender, parties.recipient, days.at
    if at is not None:
        rows, sender, recipient, day = rows[at], sender[at], recipient[at], day[at]

    def encoded(codes: np.ndarray, values: pa.Array) -> pa.Array:
        indices = pa.array(codes.astype(np.int32), mask=codes < 0)
        return pa.DictionaryArray.from_arrays(indices, values)

    return ctx.pseudonymiser.event_keys(
        message_ids(raw, rows),
        encoded(sender, parties.address),
        encoded(recipient, parties.address),
        encoded(day, pa.array(days.text.tolist(), pa.string())),
        ctx.scheme1_through,
    )


def match_feeds(parties: Parties, index: DomainIndex) -> tuple[np.ndarray, np.ndarray]:
    """Match the external domains against the feed index, once per distinct domain.

    Returns the positions of the rows whose external party's domain is listed, and for
    each the index of its labels in :attr:`DomainIndex.sets`. Internal mail never matches.
    """
    external = parties.external >= 0
    domain_at = np.full(len(external), -1, dtype=np.int64)
    domain_at[external] = parties.domain_code[parties.external[external]]
    used, at, _ = distinct_codes(domain_at + 1, len(parties.domains) + 1)  # 0: no external party
    used -= 1
    listed = used >= 0
    set_ids = np.full(len(used), -1, dtype=np.int32)
    if listed.any():
        set_ids[listed] = index.lookup_ids(parties.domains.take(pa.array(used[listed])))
    row_sets = set_ids[at]
    matched = np.flatnonzero(row_sets >= 0)
    return matched, row_sets[matched]


def matched_events(
    raw: pd.DataFrame,
    source: str,
    ctx: Context,
    parties: Parties,
    people: People,
    days: Days,
    matched: np.ndarray,
    label_sets: np.ndarray,
    event_key: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build the minimised events of the ``matched`` rows (positions in ``parties``, with
    the indexes of their labels): the internal party pseudonymised in the key epoch of
    the day, the external party reduced to its domain; no address survives. ``event_key``:
    their keys, when :func:`keyed_messages` has already computed them (else computed)."""
    pseudo = ctx.pseudonymiser
    m_rows = parties.rows[matched]
    m_day = days.text[days.at[matched]]
    epochs = {d: pseudo.epoch(d) for d in set(m_day)}
    m_epoch = np.array([epochs[d] for d in m_day], dtype=object)
    m_entry = people.entry[people.at[matched]]
    m_address = parties.address.take(pa.array(people.used[people.at[matched]])).to_pylist()
    # a person the directory does not list is keyed by their address
    m_person = ctx.directory.person_keys(m_entry, m_address)
    m_domain = np.array(
        parties.domain.take(pa.array(parties.external[matched])).to_pylist(), dtype=object
    )
    sets = ctx.index.sets
    categories = np.array([";".join(sorted({lb.category for lb in s})) for s in sets], object)
    feeds = np.array([";".join(sorted({lb.feed for lb in s})) for s in sets], object)
    m = raw.iloc[m_rows]
    frame = pd.DataFrame(
        {
            "event_key": (
                event_keys(raw, parties, days, ctx, matched) if event_key is None else event_key
            ),
            "timestamp": m["timestamp"].reset_index(drop=True),
            "day": m_day,
            "source": source,
            "person": [pseudo.pseudonym(p, e) for p, e in zip(m_person, m_epoch, strict=True)],
            "org_unit": ctx.directory.units[people.unit[matched]],
            "direction": parties.direction[matched],
            "domain": m_domain,
            "reg_domain": unique_map(pd.Series(m_domain), registrable_domain).to_numpy(),
            "categories": categories[label_sets],
            "feeds": feeds[label_sets],
            "status": normalise_statuses(m["status"]).reset_index(drop=True),
            "size": m["size"].reset_index(drop=True),
            "epoch": m_epoch,
        }
    )
    return frame.astype(MINIMISED).reset_index(drop=True)


def retro_contacts(
    raw: pd.DataFrame,
    source: str,
    ctx: Context,
    parties: Parties,
    people: People,
    days: Days,
    instants: np.ndarray,
    matched: np.ndarray,
    keyed: pd.DataFrame,
) -> pd.DataFrame:
    """The contacts retro-hunt keeps (:data:`RETRO`): every row of ``parties`` with an
    external party (never internal mail) that no feed matched (not in ``matched``), from
    ``ctx.retro_from`` on.

    The external party is reduced to a keyed digest of its registrable domain: each
    distinct domain is reduced to its registrable domain once, and each distinct
    registrable domain digested once (:meth:`Pseudonymiser.domain_digests`). The internal
    party is pseudonymised once per (person, key epoch); the time is cut to the hour; the
    event key is the one ``keyed`` (:func:`keyed_messages`) gives the row, which is the
    one its event would have.
    """
    assert ctx.retro_from is not None
    keep = parties.external >= 0
    keep[matched] = False
    day_kept = np.array([str(d) >= ctx.retro_from for d in days.text], dtype=bool)
    keep &= day_kept[days.at]
    at = np.flatnonzero(keep)
    if not at.size:
        return empty_retro()
    pseudo = ctx.pseudonymiser
    # the registrable domain of each distinct external domain, digested once each
    addresses, address_at = np.unique(parties.external[at], return_inverse=True)
    encoded = pc.dictionary_encode(parties.domain.take(pa.array(addresses)))
    registrable = np.array(
        [registrable_domain(d) for d in encoded.dictionary.to_pylist()], dtype=object
    )
    distinct, registrable_at = np.unique(registrable, return_inverse=True)
    digests = pseudo.domain_digests(distinct.tolist())[registrable_at]
    digest = digests[_codes(encoded.indices)][address_at]
    # the pseudonym of each distinct (person, key epoch)
    epoch_names = np.array([pseudo.epoch(str(d)) for d in days.text], dtype=object)
    epochs, epoch_of_day = np.unique(epoch_names, return_inverse=True)
    row_epoch = epoch_of_day[days.at[at]]
    pairs, pair_at = np.unique(
        people.at[at].astype(np.int64) * len(epochs) + row_epoch, return_inverse=True
    )
    person_of, epoch_of = np.divmod(pairs, len(epochs))
    entries = people.entry[person_of]
    own = parties.address.take(pa.array(people.used[person_of])).to_pylist()
    person_keys = ctx.directory.person_keys(entries, own)
    pseudonyms = np.array(
        [
            pseudo.pseudonym(key, str(epochs[k]))
            for key, k in zip(person_keys, epoch_of.tolist(), strict=True)
        ],
        dtype=object,
    )
    # the hour, written once per distinct hour
    hours, hour_at = np.unique(
        instants[parties.rows[at]].astype("datetime64[h]"), return_inverse=True
    )
    hour_text = np.array(
        [f"{h}:00:00Z" for h in np.datetime_as_string(hours, unit="h")], dtype=object
    )
    statuses = normalise_statuses(raw["status"].iloc[parties.rows[at]]).reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "event_key": keyed["event_key"].to_numpy(dtype=np.int64)[at],
            "hour": hour_text[hour_at],
            "day": days.text[days.at[at]],
            "source": source,
            "person": pseudonyms[pair_at],
            "org_unit": ctx.directory.units[people.unit[at]],
            "direction": parties.direction[at],
            "status": statuses,
            "epoch": epochs[row_epoch],
            "domain_digest": digest,
        }
    )
    return frame.astype(RETRO)


def index_names(index: DomainIndex) -> pa.Array:
    """Every name with an entry of its own in ``index``, each once: the compiled feeds'
    and those added one by one (policies' own domains, small feeds), listed or excepted."""
    return index.names()


def _parent(names: pa.Array) -> pa.Array:
    """Each name without its first label (``a.b.c`` gives ``b.c``)."""
    return pc.replace_substring_regex(names, r"^[^.]*\.", "", max_replacements=1)


def _below(names: pa.Array, listings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (name, listing) of ``names`` strictly below one of ``listings``, as positions
    in each; one vectorised pass per label level."""
    found_names, found_listings = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    rows = np.arange(len(names))
    current = names
    while len(current):
        deeper = np.asarray(pc.match_substring(current, ".").to_numpy(zero_copy_only=False))
        rows = rows[deeper]
        current = _parent(current.filter(pa.array(deeper)))
        position = pc.index_in(current, value_set=listings)
        hit = np.asarray(pc.is_valid(position).to_numpy(zero_copy_only=False), dtype=bool)
        found_names.append(rows[hit])
        found_listings.append(np.asarray(position.filter(pa.array(hit)).to_numpy(), np.int64))
    return np.concatenate(found_names), np.concatenate(found_listings)


def _not_registrable(names: pa.Array) -> int:
    """How many of ``names`` are not registrable domains themselves (a subdomain of one),
    decided once per distinct parent."""
    if not len(names):
        return 0
    encoded = pc.dictionary_encode(_parent(names))
    parents = encoded.dictionary.to_pylist()
    own = np.array(
        [registrable_domain(f"x.{p}") == f"x.{p}" for p in parents] + [False], dtype=bool
    )
    single = ~np.asarray(pc.match_substring(names, ".").to_numpy(zero_copy_only=False))
    registrable = own[_codes(encoded.indices)] & ~single
    return int((~registrable).sum())


@dataclass
class RetroListings:
    """The registrable domains the match index lists among those of kept contacts, as
    :func:`retro_listings` found them, with what their events say (sorted by digest)."""

    digests: np.ndarray  # int64, sorted: one per listing whose contacts become events
    domains: np.ndarray  # the listed registrable domain of each
    categories: np.ndarray  # ';'-joined categories every host under it would get
    feeds: np.ndarray  # ';'-joined feeds that give them
    listed: int = 0  # registrable domains listed with contacts kept
    ambiguous: int = 0  # of those, skipped: something below them decides otherwise
    not_registrable: int = 0  # listings of subdomains (never found: see retro_listings)


def retro_listings(
    index: DomainIndex,
    pseudonymiser: Pseudonymiser,
    wanted: np.ndarray,
    excluded: Iterable[str] = (),
) -> RetroListings:
    """Which registrable domains with kept contacts (their digests: ``wanted``) the
    index lists now, and with which categories.

    Every name the index lists is digested (:meth:`Pseudonymiser.domain_digests`: about a
    second per million); a listing whose digest is wanted, and that is a registrable
    domain, has earlier traffic under it. Every host under it would be matched with its
    labels, unless something more specific below it decides otherwise: a listed
    subdomain with other categories, an exception (an allow-list, ``@@`` rules), or one of
    ``excluded`` (the policies' ``exclude_domains``). Kept contacts name no host, so such
    a listing keeps only the categories every possibility gives; none left, it is skipped
    and counted (``ambiguous``): never more than a listing says.

    A listing of a subdomain (``shop.site.test``) cannot be found among digests of
    registrable domains; such listings are counted (``not_registrable``), never assumed
    to cover their registrable domain.
    """
    names = index_names(index)
    ids = index.lookup_ids(names)
    listed = ids >= 0
    listed_names = names.filter(pa.array(listed))
    digests = pseudonymiser.domain_digests(listed_names.to_pylist())
    hit = np.isin(digests, wanted)
    out = RetroListings(
        np.empty(0, np.int64),
        np.empty(0, object),
        np.empty(0, object),
        np.empty(0, object),
        not_registrable=_not_registrable(listed_names),
    )
    candidates = [str(n) for n in listed_names.filter(pa.array(hit)).to_pylist()]
    exact = np.array([registrable_domain(n) == n for n in candidates], dtype=bool)
    candidate_ids = ids[listed][hit][exact]
    candidate_digests = digests[hit][exact]
    candidates = [n for n, ok in zip(candidates, exact.tolist(), strict=True) if ok]
    out.listed = len(candidates)
    if not candidates:
        return out
    # everything below a candidate that could decide for a host under it
    exclusions = sorted(set(excluded))
    below_names = pa.concat_arrays([names, pa.array(exclusions, pa.string())])
    below_ids = np.concatenate([ids, np.full(len(exclusions), NO_LABELS, np.int32)])
    name_at, candidate_at = _below(below_names, pa.array(candidates, pa.string()))
    sets = index.sets
    below: dict[int, set[int]] = {}
    for c, set_id in zip(candidate_at.tolist(), below_ids[name_at].tolist(), strict=True):
        below.setdefault(c, set()).add(set_id)
    kept: list[tuple[int, str, str, str]] = []
    for c, (name, set_id, digest) in enumerate(
        zip(candidates, candidate_ids.tolist(), candidate_digests.tolist(), strict=True)
    ):
        own = sets[set_id]
        categories = {label.category for label in own}
        for other in below.get(c, ()):
            categories &= {lb.category for lb in sets[other]} if other >= 0 else set()
        if not categories:
            out.ambiguous += 1
            continue
        feeds = sorted({label.feed for label in own if label.category in categories})
        kept.append((digest, name, ";".join(sorted(categories)), ";".join(feeds)))
    kept.sort()
    out.digests = np.array([k[0] for k in kept], dtype=np.int64)
    out.domains = np.array([k[1] for k in kept], dtype=object)
    out.categories = np.array([k[2] for k in kept], dtype=object)
    out.feeds = np.array([k[3] for k in kept], dtype=object)
    return out


#: Kept contacts carry their hour only. Materialised, received messages are put at its
#: start and sent ones at its end, so that a message received in the hour a person wrote
#: is never taken for a reply to it (the cost: the reply window may reach up to two hours
#: further than for exact times).
_END_OF_HOUR = pd.Timedelta(seconds=3599)


def retro_events(contacts: pd.DataFrame, listings: RetroListings) -> pd.DataFrame:
    """Kept contacts (:data:`RETRO`, every digest one of ``listings``) as the minimised
    events they would have been had the listing been there: domain and registrable
    domain the listed one, its categories and feeds, the same event key; no size."""
    if contacts.empty:
        return empty_minimised()
    digest = contacts["domain_digest"].to_numpy(dtype=np.int64)
    at = np.searchsorted(listings.digests, digest)
    if (at >= len(listings.digests)).any() or (listings.digests[at] != digest).any():
        raise ValueError("a contact's domain digest is none of the listings'")
    hour = pd.DatetimeIndex(pd.to_datetime(contacts["hour"], format="%Y-%m-%dT%H:%M:%SZ", utc=True))
    outbound = (contacts["direction"] == "outbound").to_numpy(dtype=bool, na_value=False)
    timestamp = hour + pd.TimedeltaIndex(np.where(outbound, _END_OF_HOUR.value, 0))
    domain = listings.domains[at]
    frame = pd.DataFrame(
        {
            "event_key": contacts["event_key"].to_numpy(dtype=np.int64),
            "timestamp": timestamp,
            "day": contacts["day"].to_numpy(dtype=object),
            "source": contacts["source"].to_numpy(dtype=object),
            "person": contacts["person"].to_numpy(dtype=object),
            "org_unit": contacts["org_unit"].to_numpy(dtype=object),
            "direction": contacts["direction"].to_numpy(dtype=object),
            "domain": domain,
            "reg_domain": domain,
            "categories": listings.categories[at],
            "feeds": listings.feeds[at],
            "status": contacts["status"].to_numpy(dtype=object),
            "size": pd.Series(pd.NA, index=range(len(contacts)), dtype="Int64"),
            "epoch": contacts["epoch"].to_numpy(dtype=object),
        }
    )
    return frame.astype(MINIMISED).reset_index(drop=True)


def combine_results(results: Sequence[ChunkResult]) -> ChunkResult:
    """Several chunks' results (a whole read unit's) as one, in their order.

    Counts are summed, the totals regrouped and the days widened; the matched events
    follow one another, and so do the messages' keys of either kind when every result
    has that kind (the unkeyed ones with the row of the regrouped totals each message was
    counted in).
    """
    out = ChunkResult(rows=sum(r.rows for r in results))
    for r in results:
        out.rejected.update(r.rejected)
        out.skipped.update(r.skipped)
        if r.first_day is not None and (out.first_day is None or r.first_day < out.first_day):
            out.first_day = r.first_day
        if r.last_day is not None and (out.last_day is None or r.last_day > out.last_day):
            out.last_day = r.last_day
    counted = [r.totals for r in results if len(r.totals)]
    totals = pd.concat(counted, ignore_index=True) if counted else empty_totals()
    groups = totals.groupby(list(TOTAL_COLUMNS), sort=True)
    out.totals = groups["messages"].sum().reset_index()
    if results:
        out.matched = pd.concat([r.matched for r in results], ignore_index=True)
    kept = [r.retro for r in results if r.retro is not None]
    if kept:
        out.retro = pd.concat(kept, ignore_index=True)
    edges = [r.edges for r in results if r.edges is not None]
    if edges:
        out.edges = pd.concat(edges, ignore_index=True)
    keyed = [r.keyed_messages for r in results if r.keyed_messages is not None]
    if len(keyed) == len(results):
        out.keyed_messages = (
            pd.concat(keyed, ignore_index=True) if keyed else empty_keyed_messages()
        )
    unkeyed = [
        (r.message_keys, r.message_groups, len(r.totals))
        for r in results
        if r.message_keys is not None and r.message_groups is not None
    ]
    if len(unkeyed) == len(results):
        group_of = groups.ngroup().to_numpy(dtype=np.int32)  # per row of ``totals``
        starts = np.cumsum([0, *(rows for _, _, rows in unkeyed)])[:-1]
        out.message_keys = np.concatenate([np.empty(0, np.int64), *(k for k, _, _ in unkeyed)])
        out.message_groups = np.concatenate(
            [np.empty(0, np.int32)]
            + [group_of[start + g] for (_, g, _), start in zip(unkeyed, starts, strict=True)]
        )
    return out
