"""The command line: the only place that configures logging and maps errors to exit codes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import pandas as pd

from compliance import __version__
from compliance.config import (
    Config,
    EntraDirectory,
    config_digest,
    current_actor,
    load_config,
)
from compliance.engine import Prepared, Retention, audit, prepare, run_once
from compliance.errors import ComplianceError, ConfigError, PolicyError
from compliance.feeds import FeedSpec
from compliance.policy.loader import load_policies
from compliance.privacy import load_key
from compliance.reports import (
    ReportData,
    feed_rows,
    policy_rows,
    render_csv,
    render_html,
    render_json,
    render_table,
    unit_table,
)
from compliance.store import Store
from connectors.directory import Directory

log = logging.getLogger("compliance")
F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from connectors.graph import GraphClient


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


class _Group(click.Group):
    """Maps the error tree to messages and exit codes, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ComplianceError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            # Internal errors may quote input in their message: say where, not what.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" in {Path(frame.filename).name}:{frame.lineno}" if frame else ""
            click.echo(
                f"internal error: {type(exc).__name__}{where}; please report it "
                "(run again with --debug for the traceback)",
                err=True,
            )
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compliance")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--debug",
    is_flag=True,
    help="Show tracebacks of internal errors (they may quote input: not for shared logs).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Privacy-preserving acceptable-use monitor for corporate mail metadata."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"debug": debug}


def main() -> None:
    """Console entry point."""
    cli(prog_name="compliance")


# --- run, schedule ----------------------------------------------------------------


def _entra_client(config: Config, entra: EntraDirectory) -> GraphClient:
    from connectors.graph import USERS_PERMISSION, GraphClient, parse_settings
    from connectors.m365 import M365Options

    source = next(s for s in config.sources if s.name == entra.source)
    settings = parse_settings(M365Options, source.name, source.options())
    return GraphClient(source.name, settings, config.base_dir, USERS_PERMISSION)


def _directory(config: Config) -> Directory | Path | None:
    if config.directory is None:
        return None
    if isinstance(config.directory, str):
        return config.path(config.directory)
    from connectors.entra import load_entra_directory

    client = _entra_client(config, config.directory)
    try:
        return load_entra_directory(client, config.directory.org_unit)
    finally:
        client.close()


def _prepare_from_config(config: Config, key: bytes) -> Prepared:
    policies = [config.path(p) for p in config.policies]
    load_policies(policies)  # policy mistakes are reported before anything is fetched
    return prepare(
        policies,
        config.feed_specs(),
        _directory(config),
        config.organisation.domains,
        key,
        key_rotation=config.privacy.key_rotation,
    )


def _sources(config: Config) -> list[Any]:
    from connectors.base import create_source

    return [create_source(s.type, s.name, s.options(), config.base_dir) for s in config.sources]


def report_from_store(
    store: Store, prepared: Prepared, period_days: int, min_group_size: int, last: dt.date
) -> ReportData:
    """Build the periodic report from the store."""
    first = last - dt.timedelta(days=period_days - 1)
    first_s, last_s = first.isoformat(), last.isoformat()
    alerts = store.alerts_between(first_s, last_s)
    events = store.events_since(first_s)
    events = events[events["day"] <= last_s]
    quality = store.quality_since(first_s)
    headcounts = prepared.directory.headcounts or None
    units, unit_totals = unit_table(
        store.totals_between(first_s, last_s), events, alerts, headcounts, min_group_size
    )
    return ReportData(
        title="Acceptable-use report",
        first_day=first_s,
        last_day=last_s,
        alerts=alerts,
        policies=policy_rows(prepared.policies),
        units=units,
        rows_read=quality["rows_read"],
        rejected=quality["rejected"],
        skipped={"duplicate_message": quality["duplicates"]} if quality["duplicates"] else {},
        matched=unit_totals["matched"],
        people=unit_totals["people"],
        sources=quality["sources"],
        feeds=feed_rows(prepared.feeds),
        min_group_size=min_group_size,
    )


def write_reports(data: ReportData, folder: Path, formats: list[str]) -> list[Path]:
    """Write the report in each format; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    renderers: dict[str, Callable[[], str]] = {
        "html": lambda: render_html(data),
        "json": lambda: render_json(data),
        "csv": lambda: render_csv(data.sorted_alerts()),
    }
    return _write_files(folder, f"report-{data.last_day}", {f: renderers[f] for f in formats})


def produce_report(
    store: Store,
    prepared: Prepared,
    config: Config,
    actor: str,
    last: dt.date,
    audience: str,
    run_id: int | None = None,
    period: int | None = None,
) -> tuple[list[Path], ReportData | None]:
    """Write the report for the period ending ``last`` for ``audience``; log its delivery."""
    from compliance.reports.broad import (
        BroadSettings,
        release,
        render_broad_html,
        render_broad_json,
    )

    rc = config.reports
    period = period or rc.period
    folder = config.path(rc.dir)
    folder.mkdir(parents=True, exist_ok=True)
    data: ReportData | None = None
    if audience == "broad":
        first = (last - dt.timedelta(days=period - 1)).isoformat()
        broad = release(
            store,
            "broad",
            store.events_since(first),
            prepared.directory.headcounts,
            rc.min_group_size,
            first,
            last.isoformat(),
            BroadSettings(
                rc.epsilon,
                rc.dp_budget,
                rc.dp_budget_days,
                rc.message_cap,
                config.privacy.key_rotation,
            ),
            actor,
        )
        renderers: dict[str, Callable[[], str]] = {
            "html": lambda: render_broad_html(broad),
            "json": lambda: render_broad_json(broad),
        }
        chosen = {str(f): renderers[f] for f in rc.formats if f in renderers}  # no alert CSV
        files = _write_files(folder, f"report-{last.isoformat()}.broad", chosen)
        span: list[str | None] = [broad.first_day, broad.last_day]
    else:
        data = report_from_store(store, prepared, period, rc.min_group_size, last)
        files = write_reports(data, folder, list(rc.formats))
        span = [data.first_day, data.last_day]
    store.log(
        actor,
        "report.written",
        {
            "run": run_id,
            "audience": audience,
            "period": span,
            "files": [f.name for f in files],
            "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
            "to": str(folder),
        },
    )
    return files, data


def _write_files(folder: Path, stem: str, renderers: dict[str, Callable[[], str]]) -> list[Path]:
    written = []
    for fmt, render in renderers.items():
        path = folder / f"{stem}.{fmt}"
        tmp = path.with_suffix(f".{fmt}.tmp")
        tmp.write_text(render(), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def do_run(
    config: Config, key: bytes, today: dt.date | None = None
) -> tuple[int, list[Path], ReportData | None]:
    """One run from a config: ingest, evaluate, write reports. Returns (new alerts, files)."""
    prepared = _prepare_from_config(config, key)
    sources = _sources(config)
    store = Store.open(config.path(config.store))
    try:
        r = config.retention
        actor = current_actor(config.accountability)
        summary = run_once(
            prepared,
            sources,
            store,
            Retention(r.dedup_days, r.events_days, r.alerts_days, r.cases_days),
            today,
            actor=actor,
            config_sha256=config_digest(config.file) if config.file else None,
        )
        last = today or dt.datetime.now(dt.UTC).date()
        files, data = produce_report(
            store, prepared, config, actor, last, config.reports.audience, summary.run_id
        )
    finally:
        store.close()
    log.info(
        "run %d: %d rows, %d rejected, %d new matched events, %d new alerts",
        summary.run_id,
        summary.rows,
        sum(summary.rejected.values()),
        summary.matched_new,
        len(summary.alerts_new),
    )
    return len(summary.alerts_new), files, data


config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration file (compliance.yaml).",
)


@cli.command()
@config_option
@click.option("--today", help="Evaluate as of this day (YYYY-MM-DD); default: today, UTC.")
def run(config_path: Path, today: str | None) -> None:
    """Run the job once (for cron, a systemd timer or a Kubernetes CronJob)."""
    from compliance.scheduler import run_lock

    config = load_config(config_path)
    key = load_key()
    with run_lock(config.path(config.schedule.lock)):
        new, files, _ = do_run(config, key, _date(today, "--today"))
    click.echo(f"{new} new alert(s); report: {', '.join(str(f) for f in files)}")


@cli.command("report")
@config_option
@click.option(
    "--audience",
    type=click.Choice(["team", "broad"]),
    help="team: pseudonymous alerts; broad: noisy counts only. Default: the config's.",
)
@click.option("--last", "last_day", help="Last day of the period (YYYY-MM-DD); default today.")
@click.option("--period", type=click.IntRange(min=1), help="Days covered; default the config's.")
def report_cmd(
    config_path: Path, audience: str | None, last_day: str | None, period: int | None
) -> None:
    """Write a report from the store without reading any source (logged)."""
    config = load_config(config_path)
    key = load_key()
    actor = current_actor(config.accountability)
    prepared = _prepare_from_config(config, key)
    store = _open_store(config)
    try:
        store.check_key(prepared.context.pseudonymiser.key_id)
        last = _date(last_day, "--last") or dt.datetime.now(dt.UTC).date()
        files, _ = produce_report(
            store, prepared, config, actor, last, audience or config.reports.audience, None, period
        )
    finally:
        store.close()
    click.echo(f"report: {', '.join(str(f) for f in files)}")


@cli.command("schedule")
@config_option
def schedule_cmd(config_path: Path) -> None:
    """Run the job on the configured schedule until stopped (SIGTERM finishes the current run)."""
    from compliance.scheduler import serve

    config = load_config(config_path)
    key = load_key()
    _prepare_from_config(config, key)  # fail now, not at the first tick

    def job() -> None:
        fresh = load_config(config_path)
        new, files, _ = do_run(fresh, key)
        log.warning("run finished: %d new alert(s); report %s", new, files[0] if files else "-")

    serve(config.schedule, config.path(config.schedule.lock), job)


# --- demo ---------------------------------------------------------------------------


@cli.command()
@click.option(
    "--dir",
    "folder",
    default="compliance-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo's data, store and report go.",
)
def demo(folder: Path) -> None:
    """Run the whole job on bundled synthetic data with a demo key."""
    from compliance.demo import DEMO_LAST_DAY, install_demo
    from compliance.privacy import DEMO_KEY

    config_path = install_demo(folder)
    config = load_config(config_path)
    _new, files, data = do_run(config, DEMO_KEY, DEMO_LAST_DAY)
    assert data is not None  # the demo's report is for the ethics team
    click.echo(render_table(data))
    click.echo(f"demo folder: {folder.resolve()}")
    click.echo(f"store:       {config.path(config.store)}")
    for path in files:
        click.echo(f"report:      {path}")
    click.echo("The demo uses a fixed, public key: never use it on real data.")


# --- audit --------------------------------------------------------------------------


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
        )
    else:
        prepared = _prepare_from_config(config, key)
        prepared.context.since, prepared.context.until = start, stop
    units: list[ReadUnit] = []
    if logs:
        paths = expand_paths([str(p) for p in logs], Path.cwd())
        if not paths:
            raise ConfigError("--logs names no file")
        units.extend(detect_file(p, timestamp_format) for p in paths)
    if config is not None and source_names:
        units.extend(_audit_units(config, source_names, start, stop))
    result = audit(prepared, units)
    if config is not None and config.path(config.store).exists():
        store = Store.open(config.path(config.store))
        try:  # an audit of personal data is an act worth a trace
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
        finally:
            store.close()
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
        text = json.dumps(
            {
                "events": result.tally.rows,
                "rejected": sum(result.tally.rejected.values()),
                "rejected_by_reason": dict(sorted(result.tally.rejected.items())),
                "skipped_by_reason": dict(sorted(result.tally.skipped.items())),
                "matched": len(matched),
                "first_day": first,
                "last_day": last,
                "policies": policy_rows(prepared.policies),
                "alerts": [
                    {k: v for k, v in a.as_dict().items() if k != "window_days"}
                    for a in data.sorted_alerts()
                ],
            },
            indent=2,
        )
    elif fmt == "csv":
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


# --- policy -------------------------------------------------------------------------


@cli.group()
def policy() -> None:
    """Check and test policy files (no key or data needed)."""


paths_argument = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)


@policy.command("lint")
@paths_argument
def policy_lint(paths: tuple[Path, ...]) -> None:
    """Validate policy files; every problem is printed with file, line and field."""
    from compliance.policy.lint import warnings_for
    from compliance.policy.loader import load_policies

    try:
        loaded = load_policies(list(paths))
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(f"{problem}", err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(exc.exit_code)
    for lp in loaded:
        for warning in warnings_for(lp):
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"ok: {lp.path} ({lp.policy.id} v{lp.policy.version})")


@policy.command("test")
@paths_argument
def policy_test(paths: tuple[Path, ...]) -> None:
    """Run the policies' inline tests."""
    from compliance.policy.loader import load_policies
    from compliance.policy.testing import run_tests

    loaded = load_policies(list(paths))
    failed = total = 0
    for lp in loaded:
        for outcome in run_tests(lp):
            total += 1
            where = f"{outcome.path}:{outcome.line}" if outcome.line else outcome.path
            if outcome.passed:
                click.echo(f"PASS {outcome.policy}: {outcome.name}")
            else:
                failed += 1
                click.echo(f"FAIL {outcome.policy}: {outcome.name} ({where})")
                for problem in outcome.problems:
                    click.echo(f"     {problem}")
    click.echo(f"{total - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of policy files (for editors)."""
    from compliance.policy.model import Policy

    click.echo(json.dumps(Policy.model_json_schema(), indent=2))


# --- alerts, cases and the audit log ---------------------------------------------------


def _open_store(config: Config) -> Store:
    path = config.path(config.store)
    if not path.exists():
        raise ConfigError(f"there is no store at {path} yet: run the job first")
    return Store.open(path)


@cli.group()
def alerts() -> None:
    """Stored alerts (pseudonymous)."""


@alerts.command("list")
@config_option
@click.option("--since", help="First trigger day (YYYY-MM-DD).")
def alerts_list(config_path: Path, since: str | None) -> None:
    """List stored alerts with the ids that cases refer to."""
    config = load_config(config_path)
    store = _open_store(config)
    try:
        rows = store.conn.execute(
            "SELECT id, trigger_day, severity, policy, rule_id, coalesce(subject, '-'), "
            "org_unit, messages, people, state FROM alerts WHERE trigger_day >= ? "
            "ORDER BY trigger_day, id",
            (since or "",),
        ).fetchall()
    finally:
        store.close()
    click.echo("id\ttrigger\tseverity\tpolicy/rule\tsubject\torg unit\tmsgs\tpeople\tstate")
    for r in rows:
        click.echo("\t".join(str(v) for v in (*r[:3], f"{r[3]}/{r[4]}", *r[5:])))


@cli.group()
def case() -> None:
    """Cases on alerts, and dual-approved re-identification."""


@case.command("open")
@config_option
@click.argument("alert_id", type=int)
@click.option("--reason", required=True, help="Why this alert needs a case (no names).")
def case_open(config_path: Path, alert_id: int, reason: str) -> None:
    """Open a case on one person alert."""
    from compliance import cases

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    store = _open_store(config)
    try:
        opened = cases.open_case(store, alert_id, reason, actor)
    finally:
        store.close()
    click.echo(
        f"case {opened.id} opened on alert {alert_id} by {actor}; a reveal needs "
        f"{config.accountability.min_approvals} approvals from: "
        f"{', '.join(a for a in config.accountability.approvers if a != actor) or '(none listed)'}"
    )


@case.command("approve")
@config_option
@click.argument("case_id", type=int)
def case_approve(config_path: Path, case_id: int) -> None:
    """Approve a case's reveal (listed approvers only, not the requester)."""
    from compliance import cases

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    store = _open_store(config)
    try:
        approved = cases.approve(store, case_id, actor, config.accountability.approvers)
    finally:
        store.close()
    click.echo(
        f"case {case_id} approved by {actor} ({len(approved.approvers)} of "
        f"{config.accountability.min_approvals} approvals)"
    )


@case.command("reveal")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--directory",
    "directory_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A directory CSV of the alert's time, instead of the configured directory.",
)
def case_reveal(config_path: Path, case_id: int, directory_csv: Path | None) -> None:
    """Show who is behind the case's alert (needs the approvals; logged)."""
    from compliance import cases
    from compliance.privacy import Pseudonymiser
    from connectors.directory import load_directory

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    key = load_key()
    store = _open_store(config)
    try:
        store.check_key(Pseudonymiser(key).key_id)
        case_row = cases.get_case(store, case_id)  # refuse unknown cases before any fetch
        directory = load_directory(directory_csv) if directory_csv else _directory_or_empty(config)
        identity = cases.reveal(
            store,
            case_row.id,
            actor,
            config.accountability.approvers,
            config.accountability.min_approvals,
            Pseudonymiser(key, config.privacy.key_rotation),
            directory,
        )
    finally:
        store.close()
    click.echo(f"case {case_id}: alert {case_row.alert_id}")
    click.echo(f"  person:    {identity.person_key}")
    click.echo(f"  addresses: {', '.join(identity.addresses)}")
    click.echo(f"  org unit:  {identity.org_unit}")
    click.echo("This reveal is in the audit log. Do not copy it into tickets or mail.")


def _directory_or_empty(config: Config) -> Directory:
    from connectors.directory import load_directory

    found = _directory(config)
    return found if isinstance(found, Directory) else load_directory(found)


@case.command("close")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--outcome", required=True, help="no-action, advice, disciplinary, referred, unfounded"
)
def case_close(config_path: Path, case_id: int, outcome: str) -> None:
    """Close a case with its outcome."""
    from compliance import cases

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    store = _open_store(config)
    try:
        cases.close(store, case_id, outcome, actor)
    finally:
        store.close()
    click.echo(f"case {case_id} closed by {actor}: {outcome}")


@case.command("list")
@config_option
def case_list(config_path: Path) -> None:
    """List cases (alert, requester, approvals, state; never an identity)."""
    from compliance import cases

    config = load_config(config_path)
    store = _open_store(config)
    try:
        found = cases.list_cases(store)
    finally:
        store.close()
    for c in found:
        click.echo(
            f"case {c.id}  alert {c.alert_id}  opened {c.opened_at} by {c.opened_by}  "
            f"approvals: {', '.join(c.approvers) or '-'}  {c.state}"
            + (f" ({c.outcome})" if c.outcome else "")
        )


@cli.group("log")
def log_group() -> None:
    """The hash-chained audit log."""


@log_group.command("verify")
@config_option
@click.option(
    "--head",
    "head_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A head exported earlier with `log head`: confirm nothing up to it was rewritten.",
)
def log_verify(config_path: Path, head_file: Path | None) -> None:
    """Check the whole chain; name the first entry edited, removed or reordered."""
    from compliance import auditlog

    config = load_config(config_path)
    head = json.loads(head_file.read_text(encoding="utf-8")) if head_file else None
    store = _open_store(config)
    try:
        result = auditlog.verify(store.conn, head)
    finally:
        store.close()
    if result.ok:
        click.echo(f"audit log intact: {result.entries} entries, head {result.head}")
        return
    click.echo(f"audit log BROKEN: {result.problem}", err=True)
    sys.exit(9)


@log_group.command("head")
@config_option
def log_head(config_path: Path) -> None:
    """Print the chain head as JSON, for an outside party to keep."""
    from compliance import auditlog

    config = load_config(config_path)
    store = _open_store(config)
    try:
        click.echo(json.dumps(auditlog.head(store.conn)))
    finally:
        store.close()


@log_group.command("show")
@config_option
@click.option("--action", help="An action or its prefix: run, case, case.reveal, report, key…")
@click.option("--actor", help="Only this person's acts.")
@click.option("--since", help="From this time (ISO 8601, UTC).")
@click.option("--case", "case_id", type=int, help="Only this case's entries.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines output.")
def log_show(
    config_path: Path,
    action: str | None,
    actor: str | None,
    since: str | None,
    case_id: int | None,
    as_json: bool,
) -> None:
    """List audit-log entries, filtered."""
    from compliance import auditlog

    config = load_config(config_path)
    store = _open_store(config)
    try:
        found = auditlog.entries(store.conn, action, actor, since, case_id)
    finally:
        store.close()
    for entry in found:
        if as_json:
            click.echo(json.dumps(entry.as_dict(), sort_keys=True))
        else:
            details = json.dumps(entry.details, sort_keys=True)
            click.echo(f"{entry.seq:>5}  {entry.at}  {entry.actor}  {entry.action}  {details}")


@cli.group("privacy")
def privacy_group() -> None:
    """What the deployment collects, keeps and shows."""


@privacy_group.command("inventory")
@config_option
def privacy_inventory(config_path: Path) -> None:
    """Print, from the live config and schema, what is collected, kept, and who sees what."""
    from compliance.inventory import inventory

    click.echo(inventory(load_config(config_path)))


# --- sources ------------------------------------------------------------------------


@cli.group()
def sources() -> None:
    """Check and manage the configured log sources."""


def _directory_checks(config: Config, entra: EntraDirectory) -> list[tuple[bool, str]]:
    from connectors.graph import USERS_PERMISSION

    client = _entra_client(config, entra)
    try:
        if USERS_PERMISSION not in client.roles():
            return [
                (
                    False,
                    f"the token carries no {USERS_PERMISSION} role: add that application "
                    "permission to the app registration and grant admin consent",
                )
            ]
        client.get(client.url("/v1.0/users"), {"$select": "id", "$top": "1"})
    except ComplianceError as exc:
        return [(False, str(exc))]
    finally:
        client.close()
    return [
        (True, f"permission {USERS_PERMISSION} granted"),
        (True, "users reachable (one request, no rows kept)"),
    ]


@sources.command("check")
@config_option
def sources_check(config_path: Path) -> None:
    """Verify credentials, permissions and reachability of every source; print no data."""
    from connectors.base import create_source

    config = load_config(config_path)
    failed = 0
    sections: list[tuple[str, list[tuple[bool, str]]]] = []
    for item in config.sources:
        try:
            source = create_source(item.type, item.name, item.options(), config.base_dir)
            try:
                results = source.check()
            finally:
                source.close()
        except ComplianceError as exc:
            results = [(False, str(exc))]
        sections.append((f"source {item.name} ({item.type})", results))
    if isinstance(config.directory, EntraDirectory):
        sections.append(
            (
                f"directory (Entra ID via {config.directory.source})",
                _directory_checks(config, config.directory),
            )
        )
    elif config.directory is not None:
        path = config.path(config.directory)
        readable = path.is_file() and os.access(path, os.R_OK)
        sections.append(("directory (CSV)", [(readable, f"{path} readable")]))
    for title, results in sections:
        click.echo(title)
        for ok, text in results:
            failed += not ok
            click.echo(f"  {'ok  ' if ok else 'FAIL'}  {text}")
    click.echo(f"{failed} check(s) failed" if failed else "all checks passed")
    if failed:
        sys.exit(5)


@sources.command("reset")
@config_option
@click.argument("name")
def sources_reset(config_path: Path, name: str) -> None:
    """Forget a source's bookmark: its next run starts over (counted messages stay counted)."""
    from compliance.scheduler import run_lock

    config = load_config(config_path)
    if name not in {s.name for s in config.sources}:
        raise ConfigError(f"no source named {name!r} in {config_path}")
    with run_lock(config.path(config.schedule.lock)):
        store = Store.open(config.path(config.store))
        try:
            removed = store.reset_bookmark(name)
        finally:
            store.close()
    click.echo(f"bookmark of {name} {'removed' if removed else 'was not set'}")


if __name__ == "__main__":  # pragma: no cover
    main()
