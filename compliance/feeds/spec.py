"""What a feed is (where, which category, which format) and what loading it found."""

from __future__ import annotations

import glob
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from compliance.errors import ConfigError

_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


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
    """Provenance and counts of one loaded feed, for reports and the run record."""

    name: str
    format: str
    sha256: str
    entries: int = 0
    exceptions: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
