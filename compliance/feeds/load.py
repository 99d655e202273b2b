"""Loading feeds: reading their files in any registered format, keeping the entries that
are whole registrable domains (counting the rest), and compiling them into one index,
cached by content (:mod:`compliance.feeds.cache`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compliance.domains import (
    CompiledIndex,
    DomainIndex,
    Label,
    normalise_domains,
    public_suffix_mask,
)
from compliance.errors import ConfigError, InputError
from compliance.feeds.cache import FeedCache
from compliance.feeds.formats import FeedFormat, Plain, detect, feed_format
from compliance.feeds.spec import FeedInfo, FeedSpec
from compliance.progress import SILENT, Progress


def _read_lines(path: Path) -> tuple[list[str], str, bool]:
    """The lines of a feed file, its SHA-256 and whether it is plain ASCII."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read feed: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    for encoding in ("utf-8-sig", "utf-16") if not data.startswith(b"\xff\xfe") else ("utf-16",):
        try:
            return data.decode(encoding).splitlines(), digest, data.isascii()
        except UnicodeDecodeError:
            continue
    raise InputError(path, "feed is neither UTF-8 nor UTF-16 text")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise InputError(path, f"cannot read feed: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _feed_files(spec: FeedSpec) -> list[tuple[Path, str | None]]:
    """Files of a feed with the category their folder implies (UT1 layout)."""
    path = spec.path
    if path.is_file():
        return [(path, spec.category)]
    if not path.is_dir():
        raise InputError(path, "feed file or folder not found")
    own = sorted(p for p in path.glob("domains*") if p.is_file())
    if own:
        return [(p, spec.category or path.name.lower()) for p in own]
    found: list[tuple[Path, str | None]] = [
        (p, spec.category or p.parent.name.lower())
        for p in sorted(path.glob("*/domains*"))
        if p.is_file()
    ]
    if not found:
        raise InputError(path, "folder holds no 'domains' files (UT1 layout expected)")
    return found


def _rows_of(
    lines: list[str], fmt: FeedFormat, file: Path, ascii_text: bool
) -> tuple[pa.Array, pa.Array | None, np.ndarray]:
    """(raw tokens, per-row categories or None, exception flags) of one feed file.

    A null token is a line that names no whole domain (counted, never matched).
    """
    tokens = fmt.tokens(lines) if ascii_text else None
    if tokens is not None:
        return tokens, None, np.zeros(len(tokens), dtype=bool)
    raw, categories, exceptions = [], [], []
    for token, category, exception in fmt.rows(lines, file):
        raw.append(token)
        categories.append(category)
        exceptions.append(exception)
    category_array = pa.array(categories, pa.string()) if fmt.categorised else None
    return pa.array(raw, pa.string()), category_array, np.array(exceptions, dtype=bool)


def _accept(
    tokens: pa.Array,
    categories: pa.Array | None,
    exceptions: np.ndarray,
    default_category: str | None,
    name: str,
    file: Path,
    info: FeedInfo,
    mapping: Mapping[str, str] | None = None,
    allow: bool = False,
) -> pa.Table:
    """Normalise one file's rows and keep the valid ones, counting what is skipped.

    With ``mapping``, each entry's category (its row's, its folder's or the feed's) is
    mapped to a policy category and an entry of an unmapped one is dropped (counted as
    ``unmapped_category``). With ``allow``, every entry is an allow-list entry: an
    exception that also un-lists what other feeds list below it (see
    :func:`compile_index`); it needs no category.

    Returns a table of (domain, category, feed, exception, allow), one row per accepted
    entry.
    """
    not_rule = np.asarray(pc.is_null(tokens).to_numpy(zero_copy_only=False), dtype=bool)
    info.skipped["not_a_domain_rule"] += int(not_rule.sum())
    domains = normalise_domains(tokens)
    invalid = np.asarray(pc.is_null(domains).to_numpy(zero_copy_only=False), dtype=bool)
    invalid &= ~not_rule
    # a URL (a path after the host) is no domain: counted apart, as it tells of a wrong file
    url = invalid & np.asarray(
        pc.fill_null(pc.match_substring(tokens, "/"), False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    info.skipped["url"] += int(url.sum())
    info.skipped["invalid_domain"] += int((invalid & ~url).sum())
    keep = ~(not_rule | invalid)
    public = np.zeros(len(domains), dtype=bool)
    # an allow-list only narrows: a hosting platform's zone is a fair entry there
    public[keep] = public_suffix_mask(domains.filter(pa.array(keep)), private=not allow)
    info.skipped["public_suffix"] += int(public.sum())
    keep &= ~public

    if allow:
        exceptions = np.ones(len(domains), dtype=bool)
        category = pa.nulls(len(domains), pa.string())
        info.entries += int(keep.sum())
    else:
        category = _categories_of(categories, default_category, len(domains))
        listed = keep & ~exceptions
        missing = listed & _is_null(category)
        if missing.any():
            raise ConfigError(
                f"{file}: feed entries have no category; give one as {file}:CATEGORY "
                "or add a 'category' column"
            )
        if mapping:
            category = _mapped(category, mapping)
            unmapped = listed & _is_null(category)
            info.skipped["unmapped_category"] += int(unmapped.sum())
            keep &= ~unmapped
            listed &= ~unmapped
        info.exceptions += int((keep & exceptions).sum())
        info.entries += int(listed.sum())
        for item in pc.value_counts(category.filter(pa.array(listed))).to_pylist():
            info.categories[item["values"]] += item["counts"]
    for reason in [r for r, n in info.skipped.items() if n == 0]:
        del info.skipped[reason]
    mask = pa.array(keep)
    kept = int(keep.sum())
    return pa.table(
        {
            "domain": domains.filter(mask),
            "category": category.filter(mask),
            "feed": pa.repeat(pa.scalar(name, pa.string()), kept),
            "exception": pa.array(exceptions[keep]),
            "allow": pa.array(np.full(kept, allow, dtype=bool)),
        }
    )


def _is_null(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)


def _categories_of(
    categories: pa.Array | None, default_category: str | None, rows: int
) -> pa.Array:
    """Each row's own category, else the default (its folder's or the feed's)."""
    default = pa.scalar(default_category, pa.string())
    if categories is None:
        return pa.repeat(default, rows)
    return pc.coalesce(categories, default)


def _mapped(category: pa.Array, mapping: Mapping[str, str]) -> pa.Array:
    """The policy category of each feed category (compared in lower case); null where
    the mapping has none. Works per distinct category, never per row."""
    keys = pa.array([k.lower() for k in mapping], pa.string())
    values = pa.array(list(mapping.values()), pa.string())
    position = pc.index_in(pc.utf8_lower(category), value_set=keys)
    return values.take(position)


def _read_feed(spec: FeedSpec) -> tuple[pa.Table, FeedInfo]:
    """Every accepted entry of one feed (all its files) and its provenance."""
    name = spec.feed_name
    digest = hashlib.sha256()
    info = _with_provenance(FeedInfo(name=name, format=spec.format or "", sha256=""), spec)
    parts = []
    for file, category in _feed_files(spec):
        lines, file_digest, ascii_text = _read_lines(file)
        digest.update(file_digest.encode())
        fmt = feed_format(spec.format, str(file)) if spec.format else detect(lines, file)
        info.format = fmt.name if info.format in ("", fmt.name) else "mixed"
        tokens, categories, exceptions = _rows_of(lines, fmt, file, ascii_text)
        del lines
        mapping, allow = spec.categories, spec.kind == "allow"
        parts.append(
            _accept(tokens, categories, exceptions, category, name, file, info, mapping, allow)
        )
    info.sha256 = digest.hexdigest()
    return pa.concat_tables(parts), info


def _with_provenance(info: FeedInfo, spec: FeedSpec) -> FeedInfo:
    """``info`` with the kind and provenance its spec gives."""
    info.kind, info.url = spec.kind, spec.url
    info.licence, info.attribution = spec.licence, spec.attribution
    return info


def content_digest(spec: FeedSpec) -> str:
    """The digest a load of ``spec`` would give (:attr:`FeedInfo.sha256`), from the files'
    bytes alone: the version of the copy at ``spec.path``, without parsing it."""
    digest = hashlib.sha256()
    for file, _category in _feed_files(spec):
        digest.update(_file_digest(file).encode())
    return digest.hexdigest()


def _add_table(index: DomainIndex, table: pa.Table) -> None:
    for domain, category, feed, exception in zip(
        *(table[c].to_pylist() for c in ("domain", "category", "feed", "exception")), strict=True
    ):
        if exception:
            index.add_exception(domain)
        else:
            index.add(domain, Label(category, feed))


def load_feed(spec: FeedSpec, index: DomainIndex) -> FeedInfo:
    """Parse one feed into ``index`` entry by entry; return its provenance and counts.

    For large feeds use :func:`load_feeds`, which compiles (and caches) them.
    """
    table, info = _read_feed(spec)
    _add_table(index, table)
    return info


def compile_index(table: pa.Table) -> CompiledIndex:
    """Compile accepted feed entries into an Arrow suffix index (see :class:`CompiledIndex`).

    Entries for the same domain join their labels; an exception un-lists the domain
    whatever else lists it. An allow-list entry (a row whose optional ``allow`` column is
    true) is an exception that also un-lists every domain listed below it: an allowed
    ``classifieds.test`` keeps ``adult.classifieds.test`` unmatched too, whichever feed
    lists it. Everything runs on sorted arrays; Python only touches domains that several
    feeds or categories list.
    """
    exceptions = pc.unique(table.filter(table["exception"])["domain"]).cast(pa.string())
    listed = table.filter(pc.invert(table["exception"]))
    if "allow" in table.column_names:
        allowed = pc.unique(table.filter(table["allow"])["domain"]).cast(pa.string())
        if len(allowed) and listed.num_rows:
            listed = listed.filter(pa.array(~_below(listed["domain"], allowed)))
    label_text = pc.binary_join_element_wise(listed["category"], listed["feed"], "\x00")
    codes = pc.dictionary_encode(label_text).combine_chunks()
    sets: list[frozenset[Label]] = [
        frozenset({Label(*text.split("\x00"))}) for text in codes.dictionary.to_pylist()
    ]
    names = listed["domain"].combine_chunks().cast(pa.string())
    order = pc.sort_indices(names)
    names = names.take(order)
    code = np.asarray(codes.indices.to_numpy(), dtype=np.int32)[order.to_numpy()]
    if len(names) > 1:
        same = pc.equal(names.slice(1), names.slice(0, len(names) - 1))
        repeat = np.concatenate([[False], same.to_numpy(zero_copy_only=False)])
    else:
        repeat = np.zeros(len(names), dtype=bool)
    first = np.flatnonzero(~repeat)  # each domain's first row
    set_ids = code[first].copy()
    run = np.cumsum(~repeat) - 1  # which domain each row belongs to
    several = np.unique(run[repeat])
    if several.size:  # domains listed more than once: join their labels
        interned = {labels: i for i, labels in enumerate(sets)}
        bounds = np.append(first, len(names))
        for r in several:
            found = frozenset(
                label for c in np.unique(code[bounds[r] : bounds[r + 1]]) for label in sets[c]
            )
            if found not in interned:
                interned[found] = len(sets)
                sets.append(found)
            set_ids[r] = interned[found]
    domains = names.take(pa.array(first))
    if len(exceptions):
        keep = pc.invert(pc.is_in(domains, value_set=exceptions))
        domains = pa.concat_arrays([domains.filter(keep), exceptions])
        ids = np.concatenate(
            [set_ids[keep.to_numpy(zero_copy_only=False)], np.full(len(exceptions), -1, np.int32)]
        )
        order = pc.sort_indices(domains)
        domains, set_ids = domains.take(order), ids[order.to_numpy()]
    return CompiledIndex(domains, np.asarray(set_ids, dtype=np.int32), sets)


def _below(domains: pa.ChunkedArray | pa.Array, allowed: pa.Array) -> np.ndarray:
    """Whether each domain is one of ``allowed`` or below one: label by label, per suffix
    level, on Arrow arrays."""
    current = domains.combine_chunks() if isinstance(domains, pa.ChunkedArray) else domains
    current = current.cast(pa.string())
    hit = np.zeros(len(current), dtype=bool)
    pending = np.arange(len(current))
    while pending.size:
        found = np.asarray(
            pc.is_in(current, value_set=allowed).to_numpy(zero_copy_only=False), dtype=bool
        )
        hit[pending[found]] = True
        more = ~found & np.asarray(
            pc.match_substring(current, ".").to_numpy(zero_copy_only=False), dtype=bool
        )
        pending = pending[more]
        current = pc.replace_substring_regex(
            current.filter(pa.array(more)), r"^[^.]*\.", "", max_replacements=1
        )
    return hit


def _check_entries(spec: FeedSpec, info: FeedInfo) -> None:
    """Refuse a feed that yielded no entry at all: a wrong file, not an empty category."""
    if info.entries == 0 and info.exceptions == 0:
        raise InputError(spec.path, _no_entry(info))


def _no_entry(info: FeedInfo) -> str:
    """Why a feed yielded no domain at all, in words a feed keeper understands."""
    if not info.skipped:
        return f"holds no domain ({info.format} list): is it the right file, or empty?"
    reasons = ", ".join(f"{n} {why}" for why, n in info.skipped.most_common(3))
    hint = (
        " (a list of URLs, such as UT1's `urls` file, is no domain list: give its `domains`)"
        if info.skipped["url"]
        else ""
    )
    return f"holds no domain as a {info.format} list: every line was skipped ({reasons}){hint}"


def load_feeds(
    specs: Iterable[FeedSpec], cache_dir: Path | None = None, progress: Progress = SILENT
) -> tuple[DomainIndex, list[FeedInfo]]:
    """Load several feeds into one index, compiled once and cached by content.

    With ``cache_dir``, the compiled index is kept there under a key made of the
    feeds' content hashes, their settings and the versions of everything that decides
    how a domain is read; the next run with the same feeds memory-maps it instead of
    parsing the files again.
    """
    specs = list(specs)
    cache = FeedCache(cache_dir) if cache_dir is not None else None
    key = (
        cache.key(specs, [[_file_digest(f) for f, _ in _feed_files(s)] for s in specs])
        if cache
        else ""
    )
    if cache is not None:
        found = cache.load(key)
        if found is not None:
            compiled, infos = found
            for spec, info in zip(specs, infos, strict=False):
                _with_provenance(info, spec)
                _check_entries(spec, info)  # an empty feed is refused every time
            return DomainIndex(compiled), infos
    tables, infos = [], []
    files = [[f for f, _ in _feed_files(s)] for s in specs]
    sizes = [sum(_size(f) for f in group) for group in files]
    progress.start("feeds", len(specs), sum(sizes))  # compiling: shown on long reads
    try:
        for spec, size in zip(specs, sizes, strict=True):
            table, info = _read_feed(spec)
            _check_entries(spec, info)
            tables.append(table)
            infos.append(info)
            progress.rows(info.entries + info.exceptions + sum(info.skipped.values()))
            progress.unit_done(size)
    finally:
        progress.finish()
    empty = pa.table(
        {
            n: pa.array([], t)
            for n, t in (
                ("domain", pa.string()),
                ("category", pa.string()),
                ("feed", pa.string()),
                ("exception", pa.bool_()),
                ("allow", pa.bool_()),
            )
        }
    )
    compiled = compile_index(pa.concat_tables([empty, *tables]))
    if cache is not None:
        cache.save(key, compiled, infos)
    return DomainIndex(compiled), infos


def parse_text_feed(text: str, category: str, name: str = "inline") -> DomainIndex:
    """A small index from plain-list text (used by inline policy tests)."""
    index = DomainIndex()
    info = FeedInfo(name=name, format="plain", sha256="")
    lines = text.splitlines()
    tokens, categories, exceptions = _rows_of(lines, Plain(), Path(name), text.isascii())
    _add_table(index, _accept(tokens, categories, exceptions, category, name, Path(name), info))
    return index
