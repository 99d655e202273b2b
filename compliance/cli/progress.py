"""The progress bar of long reads (audits, runs): rows and rows per second, files done of
all, and bytes per second when every input is a file; on standard error, and only when it is
a terminal (never in a log, a pipe or a cron mail). ``-q`` turns it off; ``NO_COLOR`` or
``--no-color`` keeps it but without colour. Drawn by ``rich``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from compliance.progress import SILENT
from compliance.progress import Progress as ProgressSeam


def _human(n: float, unit: str) -> str:
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:,.0f} {prefix}{unit}" if not prefix else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return f"{n:.1f} {unit}"  # pragma: no cover (the loop returns)


class Bar:
    """A :class:`compliance.progress.Progress` drawn as a rich progress bar."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.what = "read"
        self.rows_read = 0
        self.bytes_done = 0
        self.total_bytes: int | None = None
        self.began = time.monotonic()

    def start(self, what: str, units: int, total_bytes: int | None) -> None:
        self.progress.start()
        # each read has its own bar and figures (feeds compiled, then the logs read)
        self.what, self.rows_read, self.bytes_done = what, 0, 0
        self.total_bytes, self.began = total_bytes, time.monotonic()
        self.task = self.progress.add_task(f"{what}: reading", total=units, rate="")

    def _rate(self) -> str:
        seconds = max(time.monotonic() - self.began, 1e-6)
        text = f"{self.rows_read:,} rows, {_human(self.rows_read / seconds, 'rows/s')}"
        if self.total_bytes is not None and self.bytes_done:
            text += f", {_human(self.bytes_done / seconds, 'B/s')}"
        return text

    def rows(self, count: int) -> None:
        self.rows_read += count
        if self.task is not None:
            self.progress.update(self.task, rate=self._rate())

    def unit_done(self, nbytes: int | None) -> None:
        self.bytes_done += nbytes or 0
        if self.task is not None:
            self.progress.update(self.task, advance=1, rate=self._rate())

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{self.what}: read", rate=self._rate())
        self.progress.stop()


@contextmanager
def progress_bar(quiet: bool, no_color: bool) -> Iterator[ProgressSeam]:
    """A bar on standard error when it is a terminal and not ``quiet``; else silence."""
    if quiet or not sys.stderr.isatty():
        yield SILENT
        return
    bar = Bar(Console(stderr=True, no_color=no_color))
    try:
        yield bar
    finally:
        bar.progress.stop()
