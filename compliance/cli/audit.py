"""`audit`: the engine over exports or a configured source, without a store."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import click

from compliance.audit import AuditOutcome, AuditRequest, AuditUsageError, run_audit
from compliance.cli import _date, cli, output_options, reading_progress, write_output
from compliance.config import load_config
from compliance.errors import ConfigError
from compliance.privacy import load_key
from compliance.reports import ReportData, render_csv, render_html, render_table
from compliance.store import check_folder
from compliance.tally import SPILL_ABOVE


class ByteSize(click.ParamType[int]):
    """A size in bytes: a whole number, optionally with K, M or G (powers of 1024; ``KiB``,
    ``MB`` and the like are read the same)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        found = re.fullmatch(r"\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*", str(value), re.IGNORECASE)
        if found is None:
            self.fail(f"{value!r} is no size: give bytes, or e.g. 512K, 256M, 2G", param, ctx)
        return int(found.group(1)) * _SIZE_UNITS[(found.group(2) or "").lower()]


#: What the letters of a size multiply by.
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _checked_spill_dir(
    _ctx: click.Context, _param: click.Parameter, value: Path | None
) -> Path | None:
    """Refuse a ``--spill-dir`` that is missing or cannot be written, before any work."""
    if value is not None:
        check_folder(
            value, "the audit's spill files in", value, "choose another --spill-dir", create=False
        )
    return value


@cli.command("audit")
@click.option(
    "--logs",
    "logs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Export file(s) or folder(s) to read; format detected from the header.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take organisation domains, feeds, policies and directory from this config.",
)
@click.option(
    "--source",
    "source_names",
    multiple=True,
    help="A source of --config to read over --since..--until (e.g. m365); repeatable.",
)
@click.option("--feed", "feeds", multiple=True, help="FILE[:CATEGORY]; repeatable.")
@click.option(
    "--policies",
    "policies",
    multiple=True,
    type=click.Path(exists=False, path_type=Path),
    help="Policy file or folder; repeatable.",
)
@click.option(
    "--directory",
    "directory",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Directory CSV (mail, department); without it everyone is in 'unknown'.",
)
@click.option("--org-domain", "org_domains", multiple=True, help="Repeatable.")
@click.option("--since", help="First day to include (YYYY-MM-DD, UTC).")
@click.option("--until", help="Last day to include (YYYY-MM-DD, UTC).")
@output_options("table", "json", "csv", "html")
@click.option("--timestamp-format", help="strftime format of the logs' times, if not detected.")
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    help="dask: read the files on a Dask cluster (each file one partition) "
    "[default: the config's engine, else local].",
)
@click.option(
    "--scheduler",
    help="Address of an existing Dask scheduler (tcp:// or tls://); default: a local cluster.",
)
@click.option(
    "--feed-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of compiled feeds, reused while the feed files are unchanged "
    "[default: the config's feed_cache, else ~/.cache/compliance-monitor/feeds].",
)
@click.option("--no-feed-cache", is_flag=True, help="Compile the feeds, keep nothing.")
@click.option(
    "--spill-dir",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_checked_spill_dir,
    help="Folder for matched events too many for memory (a private folder in it, removed "
    "at the end) [default: the system's temporary folder].",
)
@click.option(
    "--spill-above",
    type=ByteSize(),
    default=SPILL_ABOVE,
    help="Matched events held in memory before they spill to disk (e.g. 64M, 1G) [default: 256M].",
)
@click.option(
    "--min-group-size",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Org-unit roll-up and small-cell suppression of the report's unit table.",
)
def audit_cmd(
    logs: tuple[Path, ...],
    config_path: Path | None,
    source_names: tuple[str, ...],
    feeds: tuple[str, ...],
    policies: tuple[Path, ...],
    directory: Path | None,
    org_domains: tuple[str, ...],
    since: str | None,
    until: str | None,
    fmt: str,
    out: Path | None,
    timestamp_format: str | None,
    min_group_size: int,
    engine: str | None,
    scheduler: str | None,
    feed_cache: Path | None,
    no_feed_cache: bool,
    spill_dir: Path | None,
    spill_above: int,
) -> None:
    """Run the engine over exported logs or a configured source's window; no store is written.

    Without --config, give --logs, --feed, --policies and --org-domain. With --config,
    those come from the config, and --source reads a configured source (for m365, the
    Graph window --since..--until, within the last 90 days).
    """
    # --out was checked writable as the command line was read, before any work
    _check_period(since, until)
    request = AuditRequest(
        logs=logs,
        config=load_config(config_path) if config_path else None,
        sources=source_names,
        feeds=feeds,
        policies=policies,
        directory=directory,
        org_domains=org_domains,
        since=since,
        until=until,
        fmt=fmt,
        out=out,
        timestamp_format=timestamp_format,
        min_group_size=min_group_size,
        engine=engine,
        scheduler=scheduler,
        feed_cache=feed_cache,
        no_feed_cache=no_feed_cache,
        spill_dir=spill_dir,
        spill_above=spill_above,
    )
    _check_combinations(request)
    _emit(request, _run(request).report)


def _check_period(since: str | None, until: str | None) -> None:
    """Refuse a ``--since`` or ``--until`` that is no date, or a period that ends first."""
    since_d, until_d = _date(since, "--since"), _date(until, "--until")
    if since_d and until_d and since_d > until_d:
        raise ConfigError("--since is after --until")


def _check_combinations(request: AuditRequest) -> None:
    """Refuse options that do not go together, before any work."""
    if request.config is None:
        _check_without_config(request)
    elif request.feeds or request.policies or request.org_domains or request.directory:
        raise click.UsageError(
            "--feed, --policies, --org-domain and --directory come from --config"
        )
    elif not request.logs and not request.sources:
        raise click.UsageError("give --logs or --source")


def _check_without_config(request: AuditRequest) -> None:
    """Without --config: --logs, --feed, --policies and --org-domain, and no --source."""
    given = (
        ("--logs", request.logs),
        ("--feed", request.feeds),
        ("--policies", request.policies),
        ("--org-domain", request.org_domains),
    )
    missing = [name for name, value in given if not value]
    if missing or request.sources:
        raise click.UsageError(
            "without --config, give --logs, --feed, --policies and --org-domain"
            + ("; --source needs --config" if request.sources else "")
        )


def _run(request: AuditRequest) -> AuditOutcome:
    """Run the audit with the configured key; options found not to go together on the
    way (with the config's sources and engine) are a usage error."""
    key = load_key()
    try:
        with _sigterm_interrupts(), reading_progress() as progress:
            return run_audit(request, key, progress)
    except AuditUsageError as exc:
        raise click.UsageError(str(exc)) from None


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, a service or container stopping) interrupts the audit as Ctrl-C
    does, so that its spill folder of matched events is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: The text formats, each rendered whole from the report's data.
_TEXT_RENDERERS: dict[str, Callable[[ReportData], str]] = {
    "csv": lambda data: render_csv(data.sorted_alerts()),
    "html": render_html,
    "table": render_table,
}


def _emit(request: AuditRequest, data: ReportData) -> None:
    """Write the report in the format asked for, to ``--out`` or the standard output."""
    if request.fmt == "json":
        _emit_json(request.out, data)
    else:
        write_output(request.out, _TEXT_RENDERERS[request.fmt](data))


def _emit_json(out: Path | None, data: ReportData) -> None:
    """The JSON report: the figures the table and HTML show, from the same data
    (withheld: null), then the alerts, written one at a time."""
    head = _json_head(data)
    alerts = (
        {k: v for k, v in a.as_dict().items() if k != "window_days"} for a in data.sorted_alerts()
    )
    write_output(out, lambda stream: _write_json(stream, head, alerts))


def _json_head(data: ReportData) -> dict[str, Any]:
    """The JSON report's figures, before its alerts."""
    return {
        "events": data.rows_read,
        "rejected": sum(data.rejected.values()),
        "rejected_by_reason": dict(sorted(data.rejected.items())),
        "skipped_by_reason": dict(sorted(data.skipped.items())),
        "matched": data.matched,
        "first_day": data.first_day,
        "last_day": data.last_day,
        "policies": data.policies,
    }


def _write_json(stream: TextIO, head: dict[str, Any], alerts: Iterable[dict[str, Any]]) -> None:
    """``head`` plus an ``alerts`` list, as indented JSON, one alert at a time (bounded memory)."""
    text = json.dumps(head, indent=2)
    stream.write(text[: text.rfind("}")].rstrip() + ',\n  "alerts": [')
    for number, alert in enumerate(alerts):
        body = json.dumps(alert, indent=2).replace("\n", "\n    ")
        stream.write(("," if number else "") + "\n    " + body)
    stream.write("\n  ]\n}\n")
