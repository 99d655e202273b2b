"""The per-chunk stages: normalise, minimise and pseudonymise, match.

Every stage works on columns and on distinct values: addresses, domains and people
are resolved once per distinct value in a chunk, then mapped back to rows. The same
function serves the scheduled run, the audit command and (later) a Dask partition.

After :func:`process_chunk` returns, no address exists in anything it produced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from compliance.domains import DomainIndex, Label, registrable_domain, unique_map
from compliance.events import MINIMISED, empty_minimised
from compliance.privacy import Pseudonymiser
from connectors.directory import Directory, normalise_addresses

TOTAL_COLUMNS = ("day", "org_unit", "direction")


def org_index(domains: Iterable[str]) -> DomainIndex:
    """The organisation's accepted domains (subdomains included) as an index."""
    from compliance.domains import normalise_domain
    from compliance.errors import ConfigError

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


@dataclass
class ChunkResult:
    """What one chunk contributes: counts, per-row totals keys, matched minimised events."""

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    totals: pd.DataFrame = field(default_factory=pd.DataFrame)  # day, org_unit, direction[, key]
    matched: pd.DataFrame = field(default_factory=empty_minimised)


def _domain_of(addresses: pd.Series) -> pd.Series:
    """The domain of normalised addresses: everything after the last ``@`` (by Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(addresses.astype(object), type=pa.string(), from_pandas=True)
    domain = pc.struct_field(pc.extract_regex(array, r"@(?P<d>[^@]*)$"), [0])
    return pd.Series(domain.to_numpy(zero_copy_only=False), index=addresses.index, dtype="string")


def process_chunk(
    raw: pd.DataFrame, source: str, ctx: Context, keys_for_all: bool = False
) -> ChunkResult:
    """Run one raw chunk through every stage up to matching.

    With ``keys_for_all`` the totals frame carries each row's event key, so a store can
    count a message only the first time it sees it.
    """
    result = ChunkResult(rows=len(raw))
    frame = raw

    bad_time = frame["timestamp"].isna()
    if bad_time.any():
        result.rejected["bad_timestamp"] += int(bad_time.sum())
        frame = frame.loc[~bad_time]
    if ctx.since is not None or ctx.until is not None:
        outside = pd.Series(False, index=frame.index)
        if ctx.since is not None:
            outside |= frame["timestamp"] < ctx.since
        if ctx.until is not None:
            outside |= frame["timestamp"] >= ctx.until
        if outside.any():
            result.skipped["outside_period"] += int(outside.sum())
            frame = frame.loc[~outside]

    sender = normalise_addresses(frame["sender"])
    recipient = normalise_addresses(frame["recipient"])
    no_sender = frame["sender"].isna().to_numpy()
    no_recipient = frame["recipient"].isna().to_numpy()
    checks = (
        ("no_sender", no_sender),
        ("no_recipient", no_recipient),
        ("invalid_sender", sender.isna().to_numpy() & ~no_sender),
        ("invalid_recipient", recipient.isna().to_numpy() & ~no_recipient),
    )
    bad = np.zeros(len(frame), dtype=bool)
    for reason, mask in checks:
        mask = mask & ~bad
        if mask.any():
            result.rejected[reason] += int(mask.sum())
        bad |= mask
    keep = ~bad
    frame, sender, recipient = frame.loc[keep], sender.loc[keep], recipient.loc[keep]
    if frame.empty:
        return result

    sender_domain = _domain_of(sender)
    recipient_domain = _domain_of(recipient)
    s_int = ctx.organisation.contains_all(sender_domain)
    r_int = ctx.organisation.contains_all(recipient_domain)
    direction = np.select(
        [s_int & ~r_int, ~s_int & r_int, s_int & r_int],
        ["outbound", "inbound", "internal"],
        default="",
    )
    external_only = direction == ""
    if external_only.any():
        result.rejected["no_internal_party"] += int(external_only.sum())
    keep = ~external_only
    frame, sender, recipient = frame.loc[keep], sender.loc[keep], recipient.loc[keep]
    direction = direction[keep]
    sender_domain, recipient_domain = sender_domain.loc[keep], recipient_domain.loc[keep]
    outbound_or_internal = direction != "inbound"

    internal = pd.Series(
        np.where(outbound_or_internal, sender.to_numpy(), recipient.to_numpy()),
        index=frame.index,
        dtype="string",
    )
    external_domain = pd.Series(
        np.where(direction == "outbound", recipient_domain.to_numpy(), sender_domain.to_numpy()),
        index=frame.index,
        dtype="string",
    )
    external_domain[direction == "internal"] = pd.NA

    people = unique_map(internal, ctx.directory.lookup)
    org_unit = people.map(lambda p: p[1]).astype("string")
    day = frame["timestamp"].dt.strftime("%Y-%m-%d").astype("string")
    pseudo = ctx.pseudonymiser
    epoch = unique_map(day, pseudo.epoch).astype("string")
    person_epoch = people.map(lambda p: p[0]) + "\x00" + epoch
    subject = unique_map(person_epoch, lambda k: pseudo.pseudonym(*k.split("\x00"))).astype(
        "string"
    )

    totals = pd.DataFrame(
        {"day": day, "org_unit": org_unit, "direction": pd.Series(direction, index=frame.index)}
    )
    if keys_for_all:
        totals["event_key"] = ctx.pseudonymiser.event_keys(frame["message_id"], sender, recipient)
    result.totals = totals.reset_index(drop=True)

    set_ids = ctx.index.lookup_ids(pa.array(external_domain, type=pa.string(), from_pandas=True))
    matched_mask = set_ids >= 0
    if not matched_mask.any():
        return result

    m = frame.loc[matched_mask]
    sets = ctx.index.sets
    m_ids = set_ids[matched_mask]
    categories = np.array([";".join(sorted({lb.category for lb in s})) for s in sets], object)
    feeds = np.array([";".join(sorted({lb.feed for lb in s})) for s in sets], object)
    matched = pd.DataFrame(
        {
            "event_key": ctx.pseudonymiser.event_keys(
                m["message_id"], sender.loc[matched_mask], recipient.loc[matched_mask]
            ),
            "timestamp": m["timestamp"],
            "day": day.loc[matched_mask],
            "source": source,
            "subject": subject.loc[matched_mask],
            "org_unit": org_unit.loc[matched_mask],
            "direction": direction[matched_mask],
            "domain": external_domain.loc[matched_mask],
            "reg_domain": unique_map(external_domain.loc[matched_mask], registrable_domain),
            "categories": categories[m_ids],
            "feeds": feeds[m_ids],
            "status": m["status"].str.lower(),
            "size": m["size"],
            "epoch": epoch.loc[matched_mask],
        }
    )
    result.matched = matched.astype(MINIMISED).reset_index(drop=True)
    return result


@dataclass
class Tally:
    """Running sums over many chunks (bounded: grouped totals, matched events only)."""

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    totals: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=[*TOTAL_COLUMNS, "messages"])
    )
    matched_parts: list[pd.DataFrame] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        """Fold one chunk's result in."""
        self.rows += result.rows
        self.rejected.update(result.rejected)
        self.skipped.update(result.skipped)
        if len(result.totals):
            grouped = (
                result.totals.groupby(list(TOTAL_COLUMNS), observed=True)
                .size()
                .rename("messages")
                .reset_index()
            )
            both = pd.concat([self.totals, grouped], ignore_index=True)
            self.totals = (
                both.groupby(list(TOTAL_COLUMNS), observed=True)["messages"].sum().reset_index()
            )
        if len(result.matched):
            self.matched_parts.append(result.matched)

    def merge(self, other: Tally) -> None:
        """Fold in another partial tally (from another unit, or another worker)."""
        self.rows += other.rows
        self.rejected.update(other.rejected)
        self.skipped.update(other.skipped)
        if len(other.totals):
            both = pd.concat([self.totals, other.totals], ignore_index=True)
            self.totals = (
                both.groupby(list(TOTAL_COLUMNS), observed=True)["messages"].sum().reset_index()
            )
        self.matched_parts.extend(other.matched_parts)

    def matched(self) -> pd.DataFrame:
        """Every matched event, each message-recipient once."""
        if not self.matched_parts:
            return empty_minimised()
        frame = pd.concat(self.matched_parts, ignore_index=True)
        return frame.drop_duplicates("event_key", ignore_index=True)
