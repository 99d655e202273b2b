"""`audit`: the engine over exports or a configured source, without a store."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
import pandas as pd

from compliance.cli import _date, cli
from compliance.config import (
    Config,
    current_actor,
    load_config,
)
from compliance.engine import audit, prepare
from compliance.errors import ConfigError, StorageError
from compliance.feedcache import default_folder
from compliance.feeds import FeedSpec
from compliance.job import prepare_from_config
from compliance.privacy import load_key
from compliance.reports import build_report, render_csv, render_html, render_table
from compliance.store import Store, check_file, check_folder

if TYPE_CHECKING:
    from connectors.base import ReadUnit


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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html"]),
    default="table",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
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
) -> None:
    """Run the engine over exported logs or a configured source's window; no store is written.

    Without --config, give --logs, --feed, --policies and --org-domain. With --config,
    those come from the config, and --source reads a configured source (for m365, the
    Graph window --since..--until, within the last 90 days).
    """
    from connectors.base import expand_paths
    from connectors.exchange import detect_file

    if out is not None:  # a path that cannot be written fails now, not after the work
        if not out.exists():  # an existing file (or /dev/null) needs only to open for writing
            check_folder(out.parent, "--out", out, "choose another --out", create=False)
        check_file(out, "--out", "choose another --out")
    since_d, until_d = _date(since, "--since"), _date(until, "--until")
    if since_d and until_d and since_d > until_d:
        raise ConfigError("--since is after --until")
    start = pd.Timestamp(since_d, tz="UTC") if since_d else None
    stop = pd.Timestamp(until_d + dt.timedelta(days=1), tz="UTC") if until_d else None
    config = load_config(config_path) if config_path else None
    if config is None:
        missing = [
            name
            for name, value in (
                ("--logs", logs),
                ("--feed", feeds),
                ("--policies", policies),
                ("--org-domain", org_domains),
            )
            if not value
        ]
        if missing or source_names:
            raise click.UsageError(
                "without --config, give --logs, --feed, --policies and --org-domain"
                + ("; --source needs --config" if source_names else "")
            )
    elif feeds or policies or org_domains or directory:
        raise click.UsageError(
            "--feed, --policies, --org-domain and --directory come from --config"
        )
    elif not logs and not source_names:
        raise click.UsageError("give --logs or --source")
    key = load_key()
    if config is None:
        prepared = prepare(
            list(policies),
            [FeedSpec.parse(f) for f in feeds],
            directory,
            org_domains,
            key,
            start,
            stop,
            feed_cache=None if no_feed_cache else feed_cache or default_folder(),
        )
    else:
        if no_feed_cache:
            config.feed_cache = False
        elif feed_cache:
            config.feed_cache = str(feed_cache.resolve())
        prepared = prepare_from_config(config, key)
        prepared.context.since, prepared.context.until = start, stop
        prepared.context.timestamps = config.ingest.timestamp_range()
        if engine is None:
            engine, scheduler = config.engine.type, scheduler or config.engine.scheduler
    engine = engine or "local"
    named: list[tuple[str | None, ReadUnit]] = []  # (configured source, unit)
    if logs:
        paths = expand_paths([str(p) for p in logs], Path.cwd())
        if not paths:
            raise ConfigError("--logs names no file")
        named.extend((None, detect_file(p, timestamp_format)) for p in paths)
    if config is not None and source_names:
        named.extend(_audit_units(config, source_names, start, stop))
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler goes with --engine dask")
    units = [unit for _, unit in named]
    as_of = until_d.isoformat() if until_d else None  # else the last day read
    result = audit(prepared, units, engine=engine, scheduler=scheduler, as_of=as_of)
    if config is not None and config.path(config.store).exists():
        # an audit of personal data is an act worth a trace
        with Store.open(config.path(config.store)) as store:
            store.log(
                current_actor(config.accountability),
                "audit",
                {
                    "sources": list(source_names),
                    "files": len(logs),
                    "since": since,
                    "until": until,
                    "rows": result.tally.rows,
                    "alerts": len(result.alerts),
                    "policies": prepared.policy_versions(),
                },
            )
    # the period read: the days of the rows read, or the days asked for
    first = since_d.isoformat() if since_d else result.tally.first_day
    last = until_d.isoformat() if until_d else result.tally.last_day
    # every figure of every format from this one ReportData, built as a scheduled report's
    data = build_report(
        title="Acceptable-use audit",
        first_day=first,
        last_day=last,
        as_of=last,
        alerts=result.alerts,
        policies=prepared.policies,
        totals=result.tally.totals,
        matched=result.matched,
        headcounts=prepared.directory.headcounts or None,
        min_group_size=min_group_size,
        rows_read=result.tally.rows,
        rejected=result.tally.rejected,
        skipped=result.tally.skipped,
        sources=_source_rows(named, result.unit_rows),
        feeds=prepared.feeds,
        people_ids=prepared.people(),
    )
    if fmt == "json":
        # the figures the table and HTML show, from the same ReportData (withheld: null)
        head = {
            "events": data.rows_read,
            "rejected": sum(data.rejected.values()),
            "rejected_by_reason": dict(sorted(data.rejected.items())),
            "skipped_by_reason": dict(sorted(data.skipped.items())),
            "matched": data.matched,
            "first_day": data.first_day,
            "last_day": data.last_day,
            "policies": data.policies,
        }
        alerts = (
            {k: v for k, v in a.as_dict().items() if k != "window_days"}
            for a in data.sorted_alerts()
        )
        if out:
            _write_out(out, lambda stream: _write_json(stream, head, alerts))
            click.echo(f"written: {out}", err=True)
        else:
            _write_json(sys.stdout, head, alerts)
        return
    if fmt == "csv":
        text = render_csv(data.sorted_alerts())
    elif fmt == "html":
        text = render_html(data)
    else:
        text = render_table(data)
    if out:
        _write_out(out, lambda stream: stream.write(text))
        click.echo(f"written: {out}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _write_out(out: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``--out``: a file through a temporary one renamed at the end (a full disk
    leaves no half-written output); anything else (``/dev/null``, a pipe) directly. A
    write the system refuses is a :class:`StorageError` naming the path."""
    regular = not out.exists() or out.is_file()
    target = out.with_name(f".{out.name}.tmp") if regular else out
    try:
        with target.open("w", encoding="utf-8") as stream:
            write(stream)
        if regular:
            target.replace(out)
    except OSError as exc:
        if regular:
            target.unlink(missing_ok=True)
        error = StorageError.from_os(exc, "--out", out, "choose another --out")
        if error is None:
            raise
        raise error from None


def _write_json(stream: TextIO, head: dict[str, Any], alerts: Iterable[dict[str, Any]]) -> None:
    """``head`` plus an ``alerts`` list, as indented JSON, one alert at a time (bounded memory)."""
    text = json.dumps(head, indent=2)
    stream.write(text[: text.rfind("}")].rstrip() + ',\n  "alerts": [')
    for number, alert in enumerate(alerts):
        body = json.dumps(alert, indent=2).replace("\n", "\n    ")
        stream.write(("," if number else "") + "\n    " + body)
    stream.write("\n  ]\n}\n")


def _source_rows(named: list[tuple[str | None, ReadUnit]], rows: list[int]) -> list[dict[str, Any]]:
    """The report's sources table: one entry per file, by its base name ("file N", its
    place among the files, when the name holds an '@': a name must never carry an
    address), and one per configured source of other units (API windows); each with its
    format, units and the rows read from it (summing to the report's rows read)."""
    from connectors.base import FileUnit

    entries: dict[tuple[str, object], dict[str, Any]] = {}
    files = 0
    for (source, unit), count in zip(named, rows, strict=True):
        if isinstance(unit, FileUnit):
            files += 1
            key: tuple[str, object] = ("file", files)
            label = f"file {files}" if "@" in unit.path.name else unit.path.name
        else:
            label = source if source and "@" not in source else "source"
            key = (label, unit.format)
        entry = entries.setdefault(
            key, {"source": label, "format": unit.format, "units": 0, "rows": 0}
        )
        entry["units"] += 1
        entry["rows"] += count
    return list(entries.values())


def _audit_units(
    config: Config,
    names: tuple[str, ...],
    start: pd.Timestamp | None,
    stop: pd.Timestamp | None,
) -> list[tuple[str | None, ReadUnit]]:
    """Read units of configured sources, with the source's name: an API source's window,
    a file source's files."""
    from connectors.base import create_source
    from connectors.m365 import M365Source

    known = {s.name: s for s in config.sources}
    units: list[tuple[str | None, ReadUnit]] = []
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for name in names:
        item = known.get(name)
        if item is None:
            raise ConfigError(f"no source named {name!r} in the config")
        source = create_source(item.type, item.name, item.options(), config.base_dir)
        if isinstance(source, M365Source):
            if start is None:
                raise click.UsageError(f"--source {name} needs --since (Graph keeps 90 days)")
            end = min(stop.to_pydatetime(), now) if stop is not None else now
            units.extend((name, w) for w in source.windows(start.to_pydatetime(), end, now))
        else:
            units.extend((name, u) for u in source.units())
    return units
