"""Categorised domain feeds: formats, loading and compilation into a :class:`DomainIndex`.

Formats (detected from the content; ``format:`` in the config forces one):

* ``plain``: one domain a line, ``#`` comments, optional ``*.`` prefix;
* ``hosts``: ``0.0.0.0 domain [domain...]``, loopback names skipped;
* ``adblock``: ``||domain^`` rules (``$options`` ignored, ``@@`` exceptions honoured,
  rules with a path or wildcard skipped: they do not name a whole domain);
* ``dnsmasq``: ``server=/domain/``, ``address=/domain/ip``, ``local=/domain/``;
* ``csv``: a header with a ``domain`` column and optionally a ``category`` column;
* a UT1/squidGuard folder: ``<category>/domains`` (several ``domains*`` files allowed).

Entries that are not valid domains, or that are a public suffix or a bare TLD
(``com.au`` would flag a whole country), are counted as skipped, never matched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from compliance.domains import DomainIndex, Label, is_public_suffix, normalise_domain
from compliance.errors import ConfigError, InputError

FORMATS = ("plain", "hosts", "adblock", "dnsmasq", "csv")
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_HOSTS_SKIP = {
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "0.0.0.0",  # noqa: S104 (a hosts-file name to skip, not a bind address)
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
}
_IP = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$")
_DNSMASQ = re.compile(r"^(server|address|local)=/([^#]*?)/")


@dataclass(frozen=True)
class FeedSpec:
    """Where a feed lives and how to read it."""

    path: Path
    category: str | None = None
    name: str | None = None
    format: str | None = None

    @classmethod
    def parse(cls, text: str) -> FeedSpec:
        """Parse ``FILE[:CATEGORY]`` as given on the command line."""
        path, sep, category = text.rpartition(":")
        if sep and path and _CATEGORY.match(category) and "/" not in category:
            return cls(Path(path), category=category)
        return cls(Path(text))


@dataclass
class FeedInfo:
    """Provenance and counts of one loaded feed, for reports and the run record."""

    name: str
    format: str
    sha256: str
    entries: int = 0
    exceptions: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def _detect(lines: list[str], path: Path) -> str:
    sample = [ln.strip() for ln in lines[:200] if ln.strip()]
    body = [ln for ln in sample if not ln.startswith(("#", "!", "["))]
    if any(ln.startswith("[adblock") for ln in (s.lower() for s in sample[:3])) or (
        body and sum(ln.startswith(("||", "@@||")) for ln in body) * 2 >= len(body)
    ):
        return "adblock"
    if body and sum(bool(_DNSMASQ.match(ln)) for ln in body) * 2 >= len(body):
        return "dnsmasq"
    if body and sum(bool(_IP.match(ln.split()[0])) for ln in body) * 2 >= len(body):
        return "hosts"
    if body and "," in body[0] and "domain" in body[0].lower():
        return "csv"
    if path.suffix.lower() == ".csv":
        return "csv"
    return "plain"


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _plain(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, bool]]:
    for raw in lines:
        line = _strip_comment(raw)
        if not line:
            continue
        token = line.split()[0]
        if token.startswith("*."):
            token = token[2:]
        yield token.lstrip("."), None, False


def _hosts(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, bool]]:
    for raw in lines:
        parts = _strip_comment(raw).split()
        if not parts:
            continue
        if not _IP.match(parts[0]) or len(parts) == 1:
            yield None, None, False
            continue
        for host in parts[1:]:
            if host.lower() in _HOSTS_SKIP:
                continue
            yield host, None, False


def _adblock(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, bool]]:
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("!", "[", "#")) or "##" in line or "#@#" in line:
            continue
        exception = line.startswith("@@")
        if exception:
            line = line[2:]
        rule, _, options = line.partition("$")
        if "badfilter" in options:
            continue
        if rule.startswith("||"):
            rule = rule[2:]
        elif rule.startswith("|") or "/" in rule:
            yield None, None, False
            continue
        rule = rule.rstrip("^|")
        if not rule or any(c in rule for c in "/*^|?="):
            yield None, None, False
            continue
        yield rule, None, exception


def _dnsmasq(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, bool]]:
    for raw in lines:
        line = _strip_comment(raw)
        if not line:
            continue
        found = _DNSMASQ.match(line)
        if not found:
            yield None, None, False
            continue
        for domain in found.group(2).split("/"):
            if domain:
                yield domain, None, False


def _csv(lines: list[str], path: Path) -> Iterator[tuple[str | None, str | None, bool]]:
    reader = csv.reader(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    header = [h.strip().lower() for h in next(reader, [])]
    names = ("domain", "host", "hostname")
    dcol = next((header.index(n) for n in names if n in header), None)
    if dcol is None:
        raise InputError(path, "CSV feed has no 'domain' column in its header")
    ccol = header.index("category") if "category" in header else None
    for row in reader:
        if len(row) <= dcol:
            yield None, None, False
            continue
        category = row[ccol].strip().lower() if ccol is not None and len(row) > ccol else None
        yield row[dcol], category or None, False


def _read_lines(path: Path) -> tuple[list[str], str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read feed: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    for encoding in ("utf-8-sig", "utf-16") if not data.startswith(b"\xff\xfe") else ("utf-16",):
        try:
            return data.decode(encoding).splitlines(), digest
        except UnicodeDecodeError:
            continue
    raise InputError(path, "feed is neither UTF-8 nor UTF-16 text")


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


def load_feed(spec: FeedSpec, index: DomainIndex) -> FeedInfo:
    """Parse one feed into ``index``; return its provenance and counts."""
    name = spec.name or spec.path.stem
    digest = hashlib.sha256()
    info = FeedInfo(name=name, format=spec.format or "", sha256="")
    for file, category in _feed_files(spec):
        lines, file_digest = _read_lines(file)
        digest.update(file_digest.encode())
        fmt = spec.format or _detect(lines, file)
        if fmt not in FORMATS:
            raise ConfigError(f"{file}: unknown feed format {fmt!r}; use one of {FORMATS}")
        info.format = fmt if info.format in ("", fmt) else "mixed"
        if fmt == "csv":
            rows = _csv(lines, file)
        else:
            rows = {"plain": _plain, "hosts": _hosts, "adblock": _adblock, "dnsmasq": _dnsmasq}[
                fmt
            ](lines)
        _add_rows(rows, category, name, file, index, info)
    info.sha256 = digest.hexdigest()
    return info


def _add_rows(
    rows: Iterable[tuple[str | None, str | None, bool]],
    default_category: str | None,
    name: str,
    file: Path,
    index: DomainIndex,
    info: FeedInfo,
) -> None:
    for raw, row_category, exception in rows:
        if raw is None:
            info.skipped["not_a_domain_rule"] += 1
            continue
        domain = normalise_domain(raw)
        if domain is None:
            info.skipped["invalid_domain"] += 1
            continue
        if is_public_suffix(domain):
            info.skipped["public_suffix"] += 1
            continue
        if exception:
            index.add_exception(domain)
            info.exceptions += 1
            continue
        category = row_category or default_category
        if category is None:
            raise ConfigError(
                f"{file}: feed entries have no category; give one as {file}:CATEGORY "
                "or add a 'category' column"
            )
        index.add(domain, Label(category, name))
        info.entries += 1
        info.categories[category] += 1


def load_feeds(specs: Iterable[FeedSpec]) -> tuple[DomainIndex, list[FeedInfo]]:
    """Load several feeds into one index."""
    index = DomainIndex()
    infos = [load_feed(spec, index) for spec in specs]
    return index, infos


def parse_text_feed(text: str, category: str, name: str = "inline") -> DomainIndex:
    """A small index from plain-list text (used by inline policy tests)."""
    index = DomainIndex()
    info = FeedInfo(name=name, format="plain", sha256="")
    _add_rows(_plain(io.StringIO(text)), category, name, Path(name), index, info)
    return index
