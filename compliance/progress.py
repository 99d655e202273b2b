"""How long reads report their progress: a small seam between the engine, which knows what
it has read, and the command line, which decides whether and how to show it.

The engine calls a :class:`Progress` as it goes (units to read, rows of each chunk, a unit
done with its size); the default, :data:`SILENT`, does nothing. The command line passes a
terminal progress bar only when standard error is a terminal (``compliance.cli.progress``).
What is reported is counts and sizes only: never a file's name when it could carry an
address, never a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Progress(Protocol):
    """What a long read reports as it goes."""

    def start(self, what: str, units: int, total_bytes: int | None) -> None:
        """A read of ``units`` units (``total_bytes`` when every unit is a file) begins."""

    def rows(self, count: int) -> None:
        """``count`` more rows were read (one chunk)."""

    def unit_done(self, nbytes: int | None) -> None:
        """A unit was read whole (its size in bytes when it is a file)."""

    def finish(self) -> None:
        """The read is over (whether it succeeded or not)."""


class Silent:
    """Reports nowhere."""

    def start(self, what: str, units: int, total_bytes: int | None) -> None:
        """Nothing."""

    def rows(self, count: int) -> None:
        """Nothing."""

    def unit_done(self, nbytes: int | None) -> None:
        """Nothing."""

    def finish(self) -> None:
        """Nothing."""


SILENT: Progress = Silent()


def unit_size(unit: object) -> int | None:
    """The size in bytes of a unit that is a file (it has a ``path``), else None."""
    path = getattr(unit, "path", None)
    if not isinstance(path, Path):
        return None
    try:
        return path.stat().st_size
    except OSError:
        return None


def total_size(units: list[object]) -> int | None:
    """The units' total size in bytes when every one is a file, else None."""
    sizes = [unit_size(u) for u in units]
    return None if not sizes or any(s is None for s in sizes) else sum(s or 0 for s in sizes)
