"""`audit`: the engine over exports or a configured source, without a store."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import click
import pandas as pd

from compliance.cli import _date, cli
from compliance.config import (
    Config,
    current_actor,
    load_config,
)
from compliance.engine import audit, prepare
from compliance.errors import ConfigError
from compliance.feedcache import default_folder
from compliance.feeds import FeedSpec
from compliance.job import prepare_from_config
from compliance.privacy import load_key
from compliance.reports import (
    ReportData,
    feed_rows,
    policy_rows,
    render_csv,
    render_html,
    render_table,
    unit_table,
)
from compliance.store import Store


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
    from connectors.base import ReadUnit, expand_paths
    from connectors.exchange import detect_file

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
        if engine is None:
            engine, scheduler = config.engine.type, scheduler or config.engine.scheduler
    engine = engine or "local"
    units: list[ReadUnit] = []
    if logs:
        paths = expand_paths([str(p) for p in logs], Path.cwd())
        if not paths:
            raise ConfigError("--logs names no file")
        units.extend(detect_file(p, timestamp_format) for p in paths)
    if config is not None and source_names:
        units.extend(_audit_units(config, source_names, start, stop))
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler goes with --engine dask")
    result = audit(prepared, units, engine=engine, scheduler=scheduler)
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
    matched = result.matched
    first = (
        since_d.isoformat() if since_d else (str(matched["day"].min()) if len(matched) else None)
    )
    last = until_d.isoformat() if until_d else (str(matched["day"].max()) if len(matched) else None)
    unit_rows, unit_totals = unit_table(
        result.tally.totals,
        matched,
        result.alerts,
        prepared.directory.headcounts or None,
        min_group_size,
    )
    data = ReportData(
        title="Acceptable-use audit",
        first_day=first,
        last_day=last,
        alerts=result.alerts,
        policies=policy_rows(prepared.policies),
        units=unit_rows,
        rows_read=result.tally.rows,
        rejected=dict(result.tally.rejected),
        skipped=dict(result.tally.skipped),
        matched=unit_totals["matched"],
        people=unit_totals["people"],
        sources=[
            {"source": "audit", "format": f, "units": n, "rows": None}
            for f, n in sorted(result.formats.items())
        ],
        feeds=feed_rows(prepared.feeds),
        min_group_size=min_group_size,
    )
    if fmt == "json":
        head = {
            "events": result.tally.rows,
            "rejected": sum(result.tally.rejected.values()),
            "rejected_by_reason": dict(sorted(result.tally.rejected.items())),
            "skipped_by_reason": dict(sorted(result.tally.skipped.items())),
            "matched": len(matched),
            "first_day": first,
            "last_day": last,
            "policies": policy_rows(prepared.policies),
        }
        alerts = (
            {k: v for k, v in a.as_dict().items() if k != "window_days"}
            for a in data.sorted_alerts()
        )
        if out:
            with out.open("w", encoding="utf-8") as stream:
                _write_json(stream, head, alerts)
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
        out.write_text(text, encoding="utf-8")
        click.echo(f"written: {out}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _write_json(stream: TextIO, head: dict[str, Any], alerts: Iterable[dict[str, Any]]) -> None:
    """``head`` plus an ``alerts`` list, as indented JSON, one alert at a time (bounded memory)."""
    text = json.dumps(head, indent=2)
    stream.write(text[: text.rfind("}")].rstrip() + ',\n  "alerts": [')
    for number, alert in enumerate(alerts):
        body = json.dumps(alert, indent=2).replace("\n", "\n    ")
        stream.write(("," if number else "") + "\n    " + body)
    stream.write("\n  ]\n}\n")


def _audit_units(
    config: Config,
    names: tuple[str, ...],
    start: pd.Timestamp | None,
    stop: pd.Timestamp | None,
) -> list[Any]:
    """Read units of configured sources: an API source's window, a file source's files."""
    from connectors.base import create_source
    from connectors.m365 import M365Source

    known = {s.name: s for s in config.sources}
    units: list[Any] = []
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
            units.extend(source.windows(start.to_pydatetime(), end, now))
        else:
            units.extend(source.units())
    return units
