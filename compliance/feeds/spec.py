"""What a feed is (where, which category, which format, where it comes from) and what
loading it found."""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from compliance.errors import ConfigError

_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

#: ``list``: a feed's domains count for their categories; ``allow``: an allow-list, whose
#: domains (with their subdomains) are never matched, whatever another feed lists.
FEED_KINDS = ("list", "allow")


def previous_copy(path: Path) -> Path:
    """Where `compliance feeds update` keeps the copy it replaced (``<path>.previous``)."""
    return path.with_name(path.name + ".previous")


@dataclass(frozen=True)
class FeedSpec:
    """Where a feed lives, how to read it and where it comes from.

    ``categories`` maps the feed's own categories (UT1 folder names, a CSV's category
    column, ``category``) to policy categories; with a mapping, entries of an unmapped
    category are dropped (counted as ``unmapped_category``). ``url``, ``licence`` and
    ``attribution`` are provenance only: loading never fetches anything.
    """

    path: Path
    category: str | None = None
    name: str | None = None
    format: str | None = None
    kind: str = "list"
    url: str | None = None
    licence: str | None = None
    attribution: str | None = None
    categories: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in FEED_KINDS:
            raise ConfigError(f"feed {self.feed_name}: kind must be one of {', '.join(FEED_KINDS)}")

    @property
    def feed_name(self) -> str:
        """The name each entry keeps: ``name``, else the file or folder name without its
        extension."""
        return self.name or self.path.stem

    @classmethod
    def parse(cls, text: str) -> FeedSpec:
        """Parse ``FILE[:CATEGORY]`` as given on the command line."""
        path, sep, category = text.rpartition(":")
        if sep and path and _CATEGORY.match(category) and "/" not in category:
            return cls(Path(path), category=category)
        return cls(Path(text))

    @classmethod
    def parse_all(cls, text: str) -> list[FeedSpec]:
        """:meth:`parse`, a glob in ``FILE`` (``lists/*.txt:adult``) naming every file it
        matches (in name order, each with the category); a glob matching nothing is an
        error."""
        spec = cls.parse(text)
        pattern = str(spec.path)
        if not any(c in pattern for c in "*?["):
            return [spec]
        found = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
        if not found:
            raise ConfigError(f"--feed {text}: the pattern matches no file")
        return [cls(path, category=spec.category) for path in found]


@dataclass
class FeedInfo:
    """Provenance and counts of one loaded feed, for reports and the run record.

    ``sha256`` digests the content as loaded (every file of the feed): it names the
    version, in reports, the run record and `compliance feeds history` alike.
    ``fetched_at`` is set where the store knows the version (when `compliance feeds
    update` installed it)."""

    name: str
    format: str
    sha256: str
    entries: int = 0
    exceptions: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    kind: str = "list"
    url: str | None = None
    licence: str | None = None
    attribution: str | None = None
    fetched_at: str | None = None
