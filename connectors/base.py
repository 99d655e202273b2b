"""The connector protocol and the registry of built-in and third-party connectors.

A connector only reads. It splits its input into *read units* (a file, or a time
window of an API) that are ingested whole or not at all, and yields chunks of rows in
the raw schema of :mod:`compliance.events`. It knows nothing of policies, feeds or
privacy; the engine pseudonymises what it yields before anything is kept.

The engine commits each unit in one transaction with the unit's bookmark, so that a
run that fails loses at most the unit it was reading, and the next run resumes from
the last bookmark (the Singer rules: a bookmark is never past the run's start, and is
promoted only after a complete read of its unit).
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import importlib.metadata
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from compliance.errors import ConfigError, InputError

ENTRY_POINT_GROUP = "compliance.connectors"


@dataclass
class Chunk:
    """Rows in the raw schema; rows dropped as malformed, and rows skipped as repeats, by reason."""

    frame: pd.DataFrame
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class SourceState:
    """What a source may know when it plans a run: its bookmark and the run's start."""

    bookmark: str | None
    started: dt.datetime  # UTC


class ReadUnit(ABC):
    """A piece of a source that is read and committed as a whole."""

    #: stable identity of the unit's content (a file's SHA-256, a window's bounds)
    key: str
    #: what kind of input this is, for the data-quality section (no names, no paths)
    format: str
    #: the source's bookmark once this unit is read completely (None: the latest day read)
    bookmark: str | None = None
    #: content read once is never read again (files); False for re-read windows of an API
    once: bool = True
    #: can be read on another machine (files); False when it holds a live connection
    distributable: bool = True

    @abstractmethod
    def chunks(self) -> Iterator[Chunk]:
        """The unit's rows, one bounded chunk at a time."""

    def split(self, parts: int) -> list[ReadUnit]:
        """Up to ``parts`` units that together read exactly this one (for a cluster).

        Most units are read whole; formats with independent pieces (Parquet row
        groups) can do better.
        """
        return [self]


class FileUnit(ReadUnit):
    """A unit that is one file: its key is the content's SHA-256, computed when first asked.

    Only a scheduled run needs the key (to skip files read before); an audit never
    pays for hashing a large file.
    """

    path: Path

    @property
    def key(self) -> str:  # type: ignore[override]
        found: str | None = self.__dict__.get("_key")
        if found is None:
            found = self.__dict__["_key"] = file_digest(self.path)
        return found


class Source(ABC):
    """A configured log source."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        """Every unit to read, validated (readable, known format) before any is read.

        ``state`` is None for an audit, which reads everything the source names.
        """

    def check(self) -> list[tuple[bool, str]]:
        """Verify access without reading data: (ok, what was checked) per step."""
        units = self.units()
        return [(True, f"{len(units)} input(s) readable, formats recognised")]

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections at the end of a run."""


SourceFactory = Callable[[str, Mapping[str, Any], Path], Source]
_REGISTRY: dict[str, SourceFactory] = {}


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    """Register a source factory under ``kind`` (the ``type`` of a configured source)."""

    def wrap(factory: SourceFactory) -> SourceFactory:
        _REGISTRY[kind] = factory
        return factory

    return wrap


def _load_builtins() -> None:
    from connectors import exchange, generic, m365  # noqa: F401  (register on import)


def _load_plugins() -> None:
    if os.environ.get("COMPLIANCE_NO_PLUGINS"):
        return
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            _REGISTRY[entry.name] = entry.load()


def create_source(kind: str, name: str, options: Mapping[str, Any], base_dir: Path) -> Source:
    """Build the source ``kind`` named ``name`` from its config ``options``."""
    _load_builtins()
    if kind not in _REGISTRY:
        _load_plugins()
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise ConfigError(
            f"source {name!r}: unknown type {kind!r}; known types: {', '.join(sorted(_REGISTRY))}"
        )
    return factory(name, options, base_dir)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def expand_paths(patterns: list[str] | str, base_dir: Path) -> list[Path]:
    """Files named by paths or glob patterns (relative to ``base_dir``); folders expand to files."""
    items = [patterns] if isinstance(patterns, str) else patterns
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if any(c in item for c in "*?["):
            matches = glob.glob(str(path), recursive=True)  # `**` reaches into subfolders
            found.extend(sorted(Path(m) for m in matches if Path(m).is_file()))
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file()))
        else:
            found.append(path)
    return found
