"""`policy explain|backtest`: a policy in plain words, and what it would have raised."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compliance.backtest import backtest, backtest_json, backtest_table
from compliance.cli import _date, config_option, format_option, output_options, write_output
from compliance.cli.policy import _load, policy
from compliance.config import Accountability, Config, Privacy, Retention, load_config
from compliance.policy.explain import (
    Deployment,
    FeedFacts,
    ReportFacts,
    RetentionFacts,
    SourceFacts,
    explain,
    render_html,
    render_markdown,
)
from compliance.privacy import load_key
from connectors.base import source_type

policy_file = click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _retention(r: Retention) -> RetentionFacts:
    return RetentionFacts(r.events_days, r.alerts_days, r.cases_days, r.dedup_days)


def deployment_of(config: Config | None) -> Deployment:
    """The facts of a deployment a notice states, from its config; without one, the
    defaults of the config's models (the notice then says that a deployment sets them)."""
    if config is None:
        return Deployment(
            retention=_retention(Retention()),
            min_approvals=Accountability().min_approvals,
            key_rotation=Privacy().key_rotation,
        )
    rc = config.reports
    reports = [
        ReportFacts("each run's report", rc.audience, rc.period, rc.min_group_size, rc.epsilon)
    ]
    reports += [
        ReportFacts(f"the {s.name} report", s.audience, s.days, rc.min_group_size, rc.epsilon)
        for s in rc.schedules
    ]
    return Deployment(
        retention=_retention(config.retention),
        min_approvals=config.accountability.min_approvals,
        key_rotation=config.privacy.key_rotation,
        configured=True,
        sources=tuple(
            SourceFacts(s.name, s.type, source_type(s.type).collects) for s in config.sources
        ),
        feeds=tuple(
            FeedFacts(
                name=f.name or Path(f.path).stem,
                kind=f.kind,
                category=f.category,
                categories=tuple(sorted(set(f.categories.values()))),
                url=f.url,
                licence=f.licence,
                attribution=f.attribution,
            )
            for f in config.feeds
        ),
        reports=tuple(reports),
        approvers=tuple(config.accountability.approvers),
        retro_hunt_days=config.retro_hunt_days,
    )


@policy.command("explain")
@policy_file
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration file: adds the sources and the fields they read, the feeds, "
    "retention, reports and approvers.",
)
@output_options("markdown", "html")
def policy_explain(path: Path, config_path: Path | None, fmt: str, out: Path | None) -> None:
    """The policy in plain words, as a notice to staff or a works-council annex states it:
    what is looked at, what never, when an alert is raised, who sees what, how long data is
    kept. Generated from the policy (and the config), never written by hand."""
    loaded = _load((path,))
    config = load_config(config_path) if config_path is not None else None
    notice = explain(loaded[0].policy, deployment_of(config))
    write_output(out, render_markdown(notice) if fmt == "markdown" else render_html(notice))


@policy.command("backtest")
@policy_file
@config_option
@click.option(
    "--since",
    help="Show the episodes that reach this day (YYYY-MM-DD) or later; default: all the "
    "stored history.",
)
@click.option(
    "--today",
    help="Evaluate as of this day (YYYY-MM-DD); default: the day of the last run's evaluation.",
)
@format_option("table", "json")
def policy_backtest(
    path: Path, config_path: Path, since: str | None, today: str | None, fmt: str
) -> None:
    """What the policy at PATH (new, or a changed copy of a configured one) would have
    raised over the stored history, against what the configured version raises over the
    same events: alerts added, removed and changed, as pseudonymous aggregates. Nothing is
    written."""
    _load((path,))  # every problem of the file, located, before anything else
    config = load_config(config_path)
    result = backtest(config, load_key(), path, _date(since, "--since"), _date(today, "--today"))
    if fmt == "json":
        click.echo(json.dumps(backtest_json(result), indent=2))
    else:
        click.echo(backtest_table(result), nl=False)
