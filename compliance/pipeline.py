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
import pyarrow.compute as pc

from compliance.domains import DomainIndex, Label, registrable_domain, unique_map
from compliance.events import MINIMISED, empty_minimised
from compliance.privacy import Pseudonymiser
from connectors.directory import Directory, normalise_address_array

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


def _arrow(column: pd.Series) -> pa.Array:
    """A string column as one Arrow array (zero-copy for Arrow-backed columns)."""
    array = pa.array(column, type=pa.string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _domain_of(addresses: pa.Array) -> pa.Array:
    """The domain of normalised addresses: everything after the last ``@``."""
    return pc.struct_field(pc.extract_regex(addresses, r"@(?P<d>[^@]*)$"), [0])


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


def process_chunk(
    raw: pd.DataFrame, source: str, ctx: Context, keys_for_all: bool = False
) -> ChunkResult:
    """Run one raw chunk through every stage up to matching.

    Rows are only ever handled as Arrow or NumPy columns: addresses are dictionary-
    encoded, every per-value step (normalisation, domains, organisation membership,
    the directory, the feed index) runs once per distinct value, and rows get their
    results back by index. Python objects are built only for matched rows.

    Without ``keys_for_all`` the totals come grouped, with a ``messages`` column; with
    it, one row per message with its event key, so a store can count a message only the
    first time it sees it.
    """
    result = ChunkResult(rows=len(raw))
    stamps = raw["timestamp"]
    keep = stamps.notna().to_numpy().copy()
    if not keep.all():
        result.rejected["bad_timestamp"] += int((~keep).sum())
    if ctx.since is not None or ctx.until is not None:
        outside = np.zeros(len(raw), dtype=bool)
        if ctx.since is not None:
            outside |= (stamps < ctx.since).to_numpy()
        if ctx.until is not None:
            outside |= (stamps >= ctx.until).to_numpy()
        outside &= keep
        if outside.any():
            result.skipped["outside_period"] += int(outside.sum())
            keep &= ~outside
    rows = np.flatnonzero(keep)
    if not rows.size:
        return result
    take = pa.array(rows)
    sender_raw = _arrow(raw["sender"]).take(take)
    recipient_raw = _arrow(raw["recipient"]).take(take)

    # one dictionary of distinct addresses for both columns
    encoded = pc.dictionary_encode(pa.concat_arrays([sender_raw, recipient_raw]))
    codes = _codes(encoded.indices)
    s_code, r_code = codes[: len(rows)], codes[len(rows) :]
    address = normalise_address_array(encoded.dictionary)
    valid = np.asarray(pc.is_valid(address).to_numpy(zero_copy_only=False), dtype=bool)
    domain = _domain_of(address)
    internal_u = ctx.organisation.contains_all(domain)

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
            result.rejected[reason] += int(mask.sum())
        bad |= mask
    s_int = _take(internal_u, s_code, False)
    r_int = _take(internal_u, r_code, False)
    direction = np.select(
        [s_int & ~r_int, ~s_int & r_int, s_int & r_int],
        ["outbound", "inbound", "internal"],
        default="",
    )
    external_only = (direction == "") & ~bad
    if external_only.any():
        result.rejected["no_internal_party"] += int(external_only.sum())
    good = np.flatnonzero(~bad & ~external_only)
    if not good.size:
        return result
    rows, direction = rows[good], direction[good]
    s_code, r_code = s_code[good], r_code[good]
    inbound = direction == "inbound"
    person_code = np.where(inbound, r_code, s_code)  # the internal party
    external_code = np.where(direction == "outbound", r_code, np.where(inbound, s_code, -1))

    # the directory, once per distinct internal address
    used, person_at = np.unique(person_code, return_inverse=True)
    entry_of, unit_code_of = ctx.directory.lookup_all(address.take(pa.array(used)))
    unit_at = unit_code_of[person_at]

    # days and key epochs, once per distinct day
    day_number = (
        stamps.to_numpy(dtype="datetime64[ns]")[rows].astype("datetime64[D]").astype(np.int64)
    )
    days, day_at = np.unique(day_number, return_inverse=True)
    day_text = np.array([str(np.datetime64(int(d), "D")) for d in days], dtype=object)
    unit_names = ctx.directory.units

    if keys_for_all:
        message_ids = raw["message_id"].iloc[rows].reset_index(drop=True)
        result.totals = pd.DataFrame(
            {
                "day": pd.Series(day_text[day_at], dtype="string"),
                "org_unit": pd.Series(unit_names[unit_at], dtype="string"),
                "direction": pd.Series(direction, dtype="string"),
                "event_key": ctx.pseudonymiser.event_keys(
                    message_ids,
                    pd.Series(_take(address.to_numpy(zero_copy_only=False), s_code)),
                    pd.Series(_take(address.to_numpy(zero_copy_only=False), r_code)),
                ),
            }
        )
    else:
        result.totals = _grouped_totals(day_at, day_text, unit_at, unit_names, direction)

    # the feeds, once per distinct external domain
    ext_used, ext_at = np.unique(external_code, return_inverse=True)
    has_ext = ext_used >= 0
    set_ids = np.full(len(ext_used), -1, dtype=np.int32)
    if has_ext.any():
        ext_domains = domain.take(pa.array(ext_used[has_ext]))
        set_ids[has_ext] = ctx.index.lookup_ids(ext_domains)
    row_sets = set_ids[ext_at]
    matched = np.flatnonzero(row_sets >= 0)
    if not matched.size:
        return result

    pseudo = ctx.pseudonymiser
    m_rows = rows[matched]
    m_day = day_text[day_at[matched]]
    epochs = {d: pseudo.epoch(d) for d in set(m_day)}
    m_epoch = np.array([epochs[d] for d in m_day], dtype=object)
    keys = ctx.directory.keys
    m_entry = entry_of[person_at[matched]]
    m_address = address.take(pa.array(used[person_at[matched]])).to_pylist()
    m_person = [keys[e] if e >= 0 else a for e, a in zip(m_entry, m_address, strict=True)]
    m_domain = np.array(domain.take(pa.array(external_code[matched])).to_pylist(), dtype=object)
    sets = ctx.index.sets
    m_ids = row_sets[matched]
    categories = np.array([";".join(sorted({lb.category for lb in s})) for s in sets], object)
    feeds = np.array([";".join(sorted({lb.feed for lb in s})) for s in sets], object)
    address_values = address.take(
        pa.array(np.concatenate([s_code[matched], r_code[matched]]))
    ).to_pylist()
    m = raw.iloc[m_rows]
    frame = pd.DataFrame(
        {
            "event_key": pseudo.event_keys(
                m["message_id"].reset_index(drop=True),
                pd.Series(address_values[: len(matched)], dtype="string"),
                pd.Series(address_values[len(matched) :], dtype="string"),
            ),
            "timestamp": m["timestamp"].reset_index(drop=True),
            "day": m_day,
            "source": source,
            "subject": [pseudo.pseudonym(p, e) for p, e in zip(m_person, m_epoch, strict=True)],
            "org_unit": unit_names[unit_at[matched]],
            "direction": direction[matched],
            "domain": m_domain,
            "reg_domain": unique_map(pd.Series(m_domain), registrable_domain).to_numpy(),
            "categories": categories[m_ids],
            "feeds": feeds[m_ids],
            "status": m["status"].str.lower().reset_index(drop=True),
            "size": m["size"].reset_index(drop=True),
            "epoch": m_epoch,
        }
    )
    result.matched = frame.astype(MINIMISED).reset_index(drop=True)
    return result


def _grouped_totals(
    day_at: np.ndarray,
    day_text: np.ndarray,
    unit_at: np.ndarray,
    unit_names: np.ndarray,
    direction: np.ndarray,
) -> pd.DataFrame:
    """Messages per (day, org unit, direction), counted on integer codes."""
    directions, direction_at = np.unique(direction.astype(str), return_inverse=True)
    units = len(unit_names)
    combined = (day_at * units + unit_at) * len(directions) + direction_at
    keys, counts = np.unique(combined, return_counts=True)
    rest, d = np.divmod(keys, len(directions))
    dd, u = np.divmod(rest, units)
    return pd.DataFrame(
        {
            "day": pd.Series(day_text[dd], dtype="string"),
            "org_unit": pd.Series(unit_names[u], dtype="string"),
            "direction": pd.Series(directions[d], dtype="string"),
            "messages": counts.astype(np.int64),
        }
    )


@dataclass
class Tally:
    """Running sums over many chunks (bounded: grouped totals, matched events only)."""

    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    totals: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=[*TOTAL_COLUMNS, "messages"])
    )
    matched_parts: list[pd.DataFrame | pa.Table] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        """Fold one chunk's result in."""
        self.rows += result.rows
        self.rejected.update(result.rejected)
        self.skipped.update(result.skipped)
        if len(result.totals):
            grouped = (
                result.totals
                if "messages" in result.totals.columns
                else result.totals.groupby(list(TOTAL_COLUMNS), observed=True)
                .size()
                .rename("messages")
                .reset_index()
            )
            both = pd.concat([self.totals, grouped], ignore_index=True)
            self.totals = (
                both.groupby(list(TOTAL_COLUMNS), observed=True)["messages"].sum().reset_index()
            )
        if len(result.matched):
            self._keep(result.matched)

    def _keep(self, matched: pd.DataFrame) -> None:
        """Hold matched events compactly: every few chunks, the held ones become one Arrow
        table with repetitive columns dictionary-encoded (a fraction of the memory of many
        small frames, and no fragments left behind)."""
        self.matched_parts.append(matched)
        if len(self.matched_parts) >= _COMPACT_EVERY:
            tables = [
                p if isinstance(p, pa.Table) else pa.Table.from_pandas(p, preserve_index=False)
                for p in self.matched_parts
            ]
            table = pa.concat_tables(
                [t.cast(tables[0].schema) for t in tables], promote_options="none"
            ).combine_chunks()
            for name in _DICTIONARY_COLUMNS:
                column = table[name]
                if not pa.types.is_dictionary(column.type):
                    column = pc.dictionary_encode(column)
                table = table.set_column(table.schema.get_field_index(name), name, column)
            self.matched_parts = [table.unify_dictionaries().combine_chunks()]

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
        for part in other.matched_parts:
            self._keep(part if isinstance(part, pd.DataFrame) else _frame(part))

    def matched(self) -> pd.DataFrame:
        """Every matched event, each message-recipient once."""
        if not self.matched_parts:
            return empty_minimised()
        frames = [p if isinstance(p, pd.DataFrame) else _frame(p) for p in self.matched_parts]
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates("event_key", ignore_index=True)


_COMPACT_EVERY = 16
#: Minimised columns with few distinct values (days, units, categories...).
_DICTIONARY_COLUMNS = (
    "day",
    "source",
    "org_unit",
    "direction",
    "categories",
    "feeds",
    "status",
    "epoch",
)


def _frame(table: pa.Table) -> pd.DataFrame:
    """A compacted table of matched events back as a minimised frame."""
    columns = {}
    for name in table.column_names:
        column = table[name]
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column
    frame: pd.DataFrame = pa.table(columns).to_pandas().astype(MINIMISED)
    return frame
