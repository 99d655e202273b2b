"""The connector contract: sources, read units and chunks; the registry of source types.

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
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast, get_args

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from compliance.errors import ConfigError, InputError
from compliance.events import RAW
from compliance.options import parse_options as parse_options
from compliance.plugins import Registry


class PeriodRequired(ConfigError):
    """A source that reads a service by time was asked for a period without a start."""


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


class NoOptions(BaseModel):
    """Options of a source that takes none."""

    model_config = ConfigDict(frozen=True, extra="forbid")


#: How a source reads: ``files`` it finds (exports, logs that grow and rotate), a
#: ``stream`` it listens to for a while (a websocket), or a ``window`` of a service it
#: queries by time (an API).
ReadKind = Literal["files", "stream", "window"]
READ_KINDS: tuple[ReadKind, ...] = get_args(ReadKind)


class Source(ABC):
    """A configured log source.

    A source type declares, on its class, what a user and ``compliance sources types`` need
    to know before configuring it: its ``options_model`` (a pydantic model that forbids
    unknown options), how it ``reads``, and which raw fields it ``collects`` (never more
    than :data:`compliance.events.RAW`: no subject, no body, no IP). It is built from its
    config by :meth:`create`, which validates the options; a subclass implements
    :meth:`from_options`.
    """

    #: the model of the source's options (refuses unknown ones)
    options_model: ClassVar[type[BaseModel]] = NoOptions
    #: how the source reads (see :data:`ReadKind`)
    reads: ClassVar[ReadKind] = "files"
    #: the raw fields the source fills (the others stay empty)
    collects: ClassVar[tuple[str, ...]] = tuple(RAW)

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, name: str, options: Mapping[str, Any], base_dir: Path) -> Source:
        """The source ``name`` from its config ``options`` (paths relative to ``base_dir``);
        a problem with an option raises :class:`~compliance.errors.ConfigError` naming it."""
        return cls.from_options(name, parse_options(cls.options_model, name, options), base_dir)

    @classmethod
    def from_options(cls, name: str, options: Any, base_dir: Path) -> Source:
        """The source from its validated options (an instance of :attr:`options_model`)."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_options")

    @abstractmethod
    def units(self, state: SourceState | None = None) -> list[ReadUnit]:
        """Every unit to read, validated (readable, known format) before any is read.

        ``state`` is None for an audit, which reads everything the source names.
        """

    def units_between(
        self, begin: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
    ) -> list[ReadUnit]:
        """The units an audit of ``[begin, end)`` reads (either end may be open). A source
        of files names them all (the period is applied to their rows); a source that
        reads a service by time asks for just that window, and raises
        :class:`PeriodRequired` without ``begin``."""
        return self.units()

    def check(self) -> list[tuple[bool, str]]:
        """Verify access without reading data: (ok, what was checked) per step."""
        units = self.units()
        return [(True, f"{len(units)} input(s) readable, formats recognised")]

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections at the end of a run."""


SourceFactory = Callable[[str, Mapping[str, Any], Path], Source]


def _source_type(value: object, _name: str) -> str | None:
    if isinstance(value, type):
        return None if issubclass(value, Source) else "a class that is not a Source"
    return None if callable(value) else "not a Source class or a factory"


#: Every source type, built-in or third-party: entry points of ``compliance.sources``, each
#: naming a :class:`Source` subclass (or, as before, a factory ``(name, options, config
#: folder) -> Source``, which cannot declare its options).
SOURCES: Registry[type[Source] | SourceFactory] = Registry(
    "type",
    "compliance.sources",
    "a Source subclass (or a factory (name, options, base_dir) -> Source)",
    _source_type,
    legacy=("compliance.connectors",),  # the group's earlier name
)


def create_source(kind: str, name: str, options: Mapping[str, Any], base_dir: Path) -> Source:
    """Build the source ``kind`` named ``name`` from its config ``options``."""
    found = SOURCES.get(kind, f"source {name!r}")
    if isinstance(found, type) and issubclass(found, Source):
        return found.create(name, options, base_dir)
    factory = cast(SourceFactory, found)
    return factory(name, options, base_dir)


@dataclass(frozen=True)
class SourceType:
    """What ``compliance sources types`` says of a source type."""

    name: str
    origin: str
    reads: str  # a ReadKind, or "?" for a factory that does not say
    collects: tuple[str, ...]
    options: dict[str, str]  # option name: its description ("(required)" marked)


def source_type(kind: str) -> SourceType:
    """The declarations of source type ``kind`` (loads its module)."""
    found = SOURCES.get(kind, "source type")
    entry = next(e for e in SOURCES.entries() if e.name == kind and not e.shadowed)
    if not (isinstance(found, type) and issubclass(found, Source)):
        return SourceType(kind, entry.origin, "?", (), {})
    options = {
        name: ("(required) " if field.is_required() else "") + (field.description or "")
        for name, field in found.options_model.model_fields.items()
    }
    return SourceType(kind, entry.origin, found.reads, found.collects, options)


class FileOptions(BaseModel):
    """Options of a source that reads files: where they are."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str | list[str] = Field(
        description="a file, folder or glob, or a list of them; relative to the config file"
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return value
        raise PydanticCustomError("path_type", "must be a file, folder or glob, or a list of them")


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
    return [path for path, _ in searched_paths(patterns, base_dir)]


def searched_paths(patterns: list[str] | str, base_dir: Path) -> list[tuple[Path, bool]]:
    """:func:`expand_paths`, each file with whether it was found by searching (in a folder
    or by a glob), not named on its own: a folder may hold files that are no logs."""
    items = [patterns] if isinstance(patterns, str) else patterns
    found: list[tuple[Path, bool]] = []
    for item in items:
        path = Path(item).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if any(c in item for c in "*?["):
            matches = glob.glob(str(path), recursive=True)  # `**` reaches into subfolders
            found.extend((Path(m), True) for m in sorted(matches) if Path(m).is_file())
        elif path.is_dir():
            found.extend((p, True) for p in sorted(path.iterdir()) if p.is_file())
        else:
            found.append((path, False))
    return found
