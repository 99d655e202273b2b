"""Feed formats, each a class entered in the ``compliance.feed_formats`` registry.

A format turns a feed file's lines into rows ``(token, category, exception)``: a token
that is not a whole-domain rule is None (counted as skipped, never matched); the
category is None unless the file names one per row. Normalising and validating the
domains is the loader's job, the same for every format. When a feed does not say
``format:``, the formats are asked in order of ``priority`` whether a file looks like
theirs; ``plain`` takes whatever no other claims.
"""

from __future__ import annotations

import csv
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from compliance.errors import InputError
from compliance.plugins import PluginError, Registry, subclass_named

log = logging.getLogger(__name__)

Row = tuple[str | None, str | None, bool]

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
#: An IPv4 or IPv6 address, as a hosts file writes one (no groups: Arrow's RE2 reuses it).
_IP_TEXT = r"\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*"
_IP = re.compile(rf"^(?:{_IP_TEXT})$")
# ASCII white space as Python's str.split() and str.strip() see it.
_WS = r"\t\n\x0b\x0c\r \x1c-\x1f"
_DNSMASQ = re.compile(r"^(server|address|local)=/([^#]*?)/")


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _hosts(parts: list[str]) -> Iterator[Row]:
    """The rows of a hosts-file line split in ``parts`` (an address, then names): every
    name but the loopback and local ones."""
    for host in parts[1:]:
        if host.lower() not in _HOSTS_SKIP:
            yield host, None, False


class FeedFormat(ABC):
    """One way of writing a domain list."""

    #: the name a feed's ``format:`` uses (and its registry entry's)
    name: ClassVar[str]
    #: detection order: lower asks first; a third party's format comes after the built-ins
    priority: ClassVar[int] = 100
    #: whether rows may carry their own category
    categorised: ClassVar[bool] = False

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        """Whether a file looks like this format: ``sample`` holds its first non-empty lines
        (stripped), ``body`` those that are not comments."""
        return False

    @abstractmethod
    def rows(self, lines: list[str], path: Path) -> Iterable[Row]:
        """The file's rows (see the module docstring)."""

    def tokens(self, lines: list[str]) -> pa.Array | None:
        """The tokens of plain-ASCII ``lines`` at once, when the format can do it without
        Python per line (None: use :meth:`rows`)."""
        return None


def _mostly(body: list[str], test: Iterable[bool]) -> bool:
    return bool(body) and sum(test) * 2 >= len(body)


class Plain(FeedFormat):
    """One domain a line, ``#`` comments, an optional ``*.`` prefix. A hosts-file line
    among them (``0.0.0.0 domain``) gives its domain, not its address."""

    name = "plain"
    priority = 1000  # whatever no other format claims

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        return True

    def rows(self, lines: list[str], path: Path) -> Iterator[Row]:
        for raw in lines:
            parts = _strip_comment(raw).split()
            if len(parts) > 1 and _IP.match(parts[0]):  # a hosts-file line: every name
                yield from _hosts(parts)
            elif parts:
                yield parts[0].removeprefix("*.").lstrip("."), None, False

    def tokens(self, lines: list[str]) -> pa.Array | None:
        """The first token of each entry line, by Arrow (comment and empty lines give
        none); None when a line is a hosts file's (an address, then names), which
        :meth:`rows` reads name by name."""
        array = pa.array(lines, pa.string())
        if pc.any(
            pc.match_substring_regex(array, rf"^[{_WS}]*(?:{_IP_TEXT})[{_WS}]+[^{_WS}#]")
        ).as_py():
            return None
        token = pc.struct_field(pc.extract_regex(array, rf"^[{_WS}]*(?P<t>[^{_WS}#]+)"), [0])
        token = token.drop_null()
        token = pc.replace_substring_regex(token, r"^\*\.", "", max_replacements=1)
        return pc.utf8_ltrim(token, ".")


class Hosts(FeedFormat):
    """``0.0.0.0 domain [domain...]``; loopback and local names are skipped. A line of a
    domain alone among them (a plain list's) gives that domain."""

    name = "hosts"
    priority = 30

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        return _mostly(body, (bool(_IP.match(ln.split()[0])) for ln in body))

    def rows(self, lines: list[str], path: Path) -> Iterator[Row]:
        for raw in lines:
            parts = _strip_comment(raw).split()
            if not parts:
                continue
            if not _IP.match(parts[0]):
                if len(parts) == 1:
                    yield parts[0].removeprefix("*.").lstrip("."), None, False
                else:
                    yield None, None, False
                continue
            if len(parts) == 1:
                yield None, None, False
                continue
            yield from _hosts(parts)


class Adblock(FeedFormat):
    """``||domain^`` rules: ``$options`` ignored, ``@@`` exceptions honoured, rules with a
    path or a wildcard skipped (they do not name a whole domain)."""

    name = "adblock"
    priority = 10

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        header = any(ln.startswith("[adblock") for ln in (s.lower() for s in sample[:3]))
        return header or _mostly(body, (ln.startswith(("||", "@@||")) for ln in body))

    def rows(self, lines: list[str], path: Path) -> Iterator[Row]:
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


class Dnsmasq(FeedFormat):
    """``server=/domain/``, ``address=/domain/ip``, ``local=/domain/``."""

    name = "dnsmasq"
    priority = 20

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        return _mostly(body, (bool(_DNSMASQ.match(ln)) for ln in body))

    def rows(self, lines: list[str], path: Path) -> Iterator[Row]:
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


class Csv(FeedFormat):
    """A header with a ``domain`` (or ``host``) column and optionally ``category``,
    separated by commas, or by semicolons or tabs (a spreadsheet saved as CSV where the
    decimal mark is a comma)."""

    name = "csv"
    priority = 40
    categorised = True

    def detects(self, sample: list[str], body: list[str], path: Path) -> bool:
        header = bool(body) and _delimiter(body[0]) is not None and "domain" in body[0].lower()
        return header or path.suffix.lower() == ".csv"

    def rows(self, lines: list[str], path: Path) -> Iterator[Row]:
        entries = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        delimiter = _delimiter(entries[0]) if entries else None
        reader = csv.reader(entries, delimiter=delimiter or ",")
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


def _delimiter(header: str) -> str | None:
    """The separator of a CSV header line: the first of comma, semicolon or tab in it."""
    found = [(header.index(d), d) for d in (",", ";", "\t") if d in header]
    return min(found)[1] if found else None


#: Every feed format, built-in or third-party: entry points of ``compliance.feed_formats``,
#: each naming a :class:`FeedFormat` subclass.
FEED_FORMATS: Registry[type[FeedFormat]] = Registry(
    "feed format",
    "compliance.feed_formats",
    "a FeedFormat subclass",
    subclass_named(FeedFormat),
)


def feed_format(name: str, where: str = "") -> FeedFormat:
    """The format called ``name``."""
    return FEED_FORMATS.get(name, where)()


def detect(lines: list[str], path: Path) -> FeedFormat:
    """The format a file is written in, judged from its first 200 lines."""
    sample = [ln.strip() for ln in lines[:200] if ln.strip()]
    body = [ln for ln in sample if not ln.startswith(("#", "!", "["))]
    formats = sorted(_loadable_formats(), key=lambda f: f.priority)
    return next(f for f in formats if f.detects(sample, body, path))


def _loadable_formats() -> list[FeedFormat]:
    """Every format that loads; one that does not is skipped with a warning, so that a
    broken plugin cannot stop feeds written in other formats."""
    found = []
    for name in FEED_FORMATS.names():
        try:
            found.append(feed_format(name))
        except PluginError as exc:
            log.warning("feed format skipped in detection: %s", exc)
    return found
