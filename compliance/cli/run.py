"""`run`, `report`, `schedule` and `demo`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import click

from compliance.cli import (
    _date,
    cli,
    config_option,
    output_options,
    reading_progress,
    write_output,
)
from compliance.config import (
    Config,
    current_actor,
    load_config,
)
from compliance.demo import RUNS, deliver, install_demo
from compliance.errors import StorageError
from compliance.job import (
    ReportSpec,
    check_input,
    check_writable,
    do_run,
    open_store,
    prepare_from_config,
    produce_report,
)
from compliance.outbox import deliver_due
from compliance.privacy import DEMO_KEY, load_key
from compliance.reports import (
    ReportData,
    render_csv,
    render_html,
    render_json,
    render_table,
)
from compliance.scheduled import RunSummary
from compliance.scheduler import run_lock, serve
from compliance.store import check_folder

log = logging.getLogger(__name__)


@cli.command()
@config_option
@click.option("--today", help="Evaluate as of this day (YYYY-MM-DD); default: today, UTC.")
def run(config_path: Path, today: str | None) -> None:
    """Run the job once (for cron, a systemd timer or a Kubernetes CronJob)."""

    config = load_config(config_path)
    key = load_key()
    check_writable(config)  # a read-only or missing folder fails now, before any reading
    with run_lock(config.path(config.schedule.lock)), reading_progress() as progress:
        summary, files, _ = do_run(config, key, _date(today, "--today"), progress)
    click.echo(f"{run_line(summary)}; report: {', '.join(str(f) for f in files)}")
    check_input(summary, str(config_path), config.schedule.fail_when_idle)


def run_line(summary: RunSummary) -> str:
    """What a run did, in one line."""
    return (
        f"{summary.rows} rows read, {sum(summary.rejected.values())} rejected; "
        f"{len(summary.alerts_new)} new alert(s), {len(summary.alerts_updated)} updated, "
        f"{len(summary.alerts_ended)} ended"
    )


_FORMAT_HELP = (
    "Also print the report in this format (table: the summary and the alerts; json and "
    "html: as the files; csv: the alerts), or write it to --out."
)


@cli.group("report", invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration file (compliance.yaml).  [required]",
)
@click.option(
    "--audience",
    type=click.Choice(["team", "broad"]),
    help="team: pseudonymous alerts; broad: noisy counts only. Default: the config's.",
)
@click.option("--last", "last_day", help="Last day of the period (YYYY-MM-DD); default today.")
@click.option("--period", type=click.IntRange(min=1), help="Days covered; default the config's.")
@click.option(
    "--schedule",
    "schedule_name",
    hidden=True,  # the earlier spelling of `report send NAME`
    help="Write (and send) this named report of reports.schedules now (as `report send NAME`).",
)
@output_options("table", "json", "csv", "html", optional=_FORMAT_HELP)
@click.pass_context
def report_cmd(
    ctx: click.Context,
    config_path: Path | None,
    audience: str | None,
    last_day: str | None,
    period: int | None,
    schedule_name: str | None,
    fmt: str | None,
    out: Path | None,
) -> None:
    """Write a report from the store without reading any source, and send it over its
    deliveries (logged). `report send NAME` writes and sends a named report now.

    The files go to the reports folder in the configured formats, and their paths are
    printed; with --format (or --out) the report is printed too (or written to --out)."""
    if ctx.invoked_subcommand is not None:
        if fmt is not None or out is not None:
            raise click.UsageError("give --format and --out after `send NAME`")
        return
    if config_path is None:
        raise click.UsageError("Missing option '--config'.")
    spec = _spec_of(config_path, schedule_name, audience, period)
    _report(config_path, spec, last_day, fmt, out)


@report_cmd.command("send")
@config_option
@click.argument("name")
@click.option("--last", "last_day", help="Last day of the period (YYYY-MM-DD); default today.")
@click.option("--period", type=click.IntRange(min=1), help="Days covered; default the schedule's.")
@output_options("table", "json", "csv", "html", optional=_FORMAT_HELP)
def report_send(
    config_path: Path,
    name: str,
    last_day: str | None,
    period: int | None,
    fmt: str | None,
    out: Path | None,
) -> None:
    """Write the named report NAME of reports.schedules now, due or not, and send it over
    its deliveries (exactly once: a period already sent is not sent again)."""
    _report(config_path, _spec_of(config_path, name, None, period), last_day, fmt, out)


def _spec_of(
    config_path: Path, name: str | None, audience: str | None, period: int | None
) -> ReportSpec:
    return _spec(load_config(config_path), name, audience, period)


#: How a team report is printed in each format (the broad one: its file of that format).
_RENDERERS: dict[str, Callable[[ReportData], str]] = {
    "table": render_table,
    "json": render_json,
    "csv": lambda data: render_csv(data.sorted_alerts()),
    "html": render_html,
}


def _check_format(spec: ReportSpec, fmt: str | None) -> None:
    """Refuse, before any work (a broad report spends privacy budget), a format the report
    cannot be printed in: a broad report holds noisy counts only, printed as the file of
    that format it writes."""
    if fmt is None or spec.audience != "broad":
        return
    written = [f for f in spec.formats if f in ("json", "html")]
    if fmt not in written:
        raise click.UsageError(
            f"a broad report is printed as one of its files ({', '.join(written) or 'none'}, "
            f"from reports.formats): --format {fmt} is not one of them"
        )


def _report(
    config_path: Path, spec: ReportSpec, last_day: str | None, fmt: str | None, out: Path | None
) -> None:
    fmt = fmt or ("table" if out is not None else None)
    _check_format(spec, fmt)
    config = load_config(config_path)
    key = load_key()
    actor = current_actor(config.accountability)
    prepared = prepare_from_config(config, key)
    # the run lock: a run's reports and deliveries and this one never overlap
    with run_lock(config.path(config.schedule.lock)), open_store(config) as store:
        store.keys.bind(prepared.context.pseudonymiser.key_id)
        last = _date(last_day, "--last") or dt.datetime.now(dt.UTC).date()
        files, data = produce_report(store, prepared, config, actor, last, spec)
        deliver_due(store, config, actor)
    line = f"report: {', '.join(str(f) for f in files)}"
    if fmt is None:
        click.echo(line)
        return
    if data is not None:
        write_output(out, _RENDERERS[fmt](data))
    else:  # broad: the file of that format, as written (and logged with its digest)
        written = next(f for f in files if f.name.endswith(f".broad.{fmt}"))
        write_output(out, written.read_text(encoding="utf-8"))
    click.echo(line, err=True)


def _spec(config: Config, name: str | None, audience: str | None, period: int | None) -> ReportSpec:
    if name is None:
        return ReportSpec.of_run(config, audience, period)
    schedule = next((s for s in config.reports.schedules if s.name == name), None)
    if schedule is None:
        known = ", ".join(s.name for s in config.reports.schedules) or "none"
        raise click.BadParameter(f"no report schedule is named {name!r} (known: {known})")
    if audience is not None:
        raise click.UsageError("--audience goes with the run's report; a schedule has its own")
    return ReportSpec.of_schedule(schedule, period)


@cli.command("schedule")
@config_option
def schedule_cmd(config_path: Path) -> None:
    """Run the job on the configured schedule until stopped (SIGTERM finishes the current run)."""

    config = load_config(config_path)
    key = load_key()
    prepare_from_config(config, key)  # fail now, not at the first tick

    def job() -> None:
        fresh = load_config(config_path)
        summary, files, _ = do_run(fresh, key)
        log.warning("run finished: %s; report %s", run_line(summary), files[0] if files else "-")
        check_input(summary, str(config_path), fresh.schedule.fail_when_idle)

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
    """Run the whole job on bundled synthetic data with a demo key: two scheduled runs, on
    15 and 30 October, each over the export of its half of the month."""

    check_folder(folder, "the demo folder", folder, "choose another --dir")
    try:
        config_path = install_demo(folder)
    except OSError as exc:  # e.g. the disk filled up while the demo's files were copied
        error = StorageError.from_os(exc, "the demo folder", folder, "choose another --dir")
        if error is None:
            raise
        raise error from None
    config = load_config(config_path)
    check_writable(config)
    files: list[Path] = []
    data = None
    for name, day in RUNS:
        deliver(folder, name)
        summary, files, data = do_run(config, DEMO_KEY, day)
        click.echo(f"run of {day}: {run_line(summary)}")
    assert data is not None  # the demo's report is for the ethics team
    click.echo("")
    click.echo(render_table(data))
    click.echo(f"demo folder: {folder.resolve()}")
    click.echo(f"store:       {config.path(config.store)}")
    for path in files:
        click.echo(f"report:      {path}")
    click.echo("The demo uses a fixed, public key: never use it on real data.")
