"""`feeds diff|impact`: what a feed change adds and removes, and what it would have done
to stored matches and alerts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compliance.backtest import feed_impact, impact_json, impact_table
from compliance.cli import _date, config_option, format_option
from compliance.cli.feeds import feeds
from compliance.config import load_config
from compliance.feeds import FeedSpec
from compliance.feeds.diff import diff_feeds, diff_json, diff_lines
from compliance.privacy import load_key


@feeds.command("diff")
@click.argument("old", metavar="OLD[:CATEGORY]")
@click.argument("new", metavar="NEW[:CATEGORY]")
@format_option("table", "json")
@click.option("--category", help="Only this category (and domains that left or joined it).")
def feeds_diff(old: str, new: str, fmt: str, category: str | None) -> None:
    """What changed from feed OLD to feed NEW (files or UT1 folders, any feed format):
    domains added and removed per category, and domains whose categories changed; counts
    first, then the domains. A plain file's entries need no category to be compared."""
    diff = diff_feeds(FeedSpec.parse(old), FeedSpec.parse(new))
    if fmt == "json":
        click.echo(json.dumps(diff_json(diff, category), indent=2))
        return
    for line in diff_lines(diff, category):
        click.echo(line)


@feeds.command("impact")
@config_option
@click.option(
    "--old",
    type=click.Path(exists=True, path_type=Path),
    help="The feed version in use (a file or folder); default: the installed copy of --feed.",
)
@click.option(
    "--new",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The version that would replace it.",
)
@click.option(
    "--feed",
    "feed_name",
    help="The configured feed they are versions of; default: the one installed at OLD or NEW.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1, max=366),
    default=30,
    show_default=True,
    help="The days before --today looked at.",
)
@click.option(
    "--today",
    help="Evaluate as of this day (YYYY-MM-DD); default: the day of the last run's evaluation.",
)
@format_option("table", "json")
def feeds_impact(
    config_path: Path,
    old: Path | None,
    new: Path,
    feed_name: str | None,
    days: int,
    today: str | None,
    fmt: str,
) -> None:
    """What replacing feed version OLD by NEW would have done to the stored matches and
    alerts of the last DAYS days: events that would no longer match, categories changed,
    and the configured policies re-evaluated over the changed events (alerts added,
    removed, changed). Additions cannot be assessed: the store keeps only messages that
    matched when read. Nothing is written."""
    config = load_config(config_path)
    if old is None:
        if feed_name is None:
            raise click.UsageError("give --old, or --feed NAME to compare its installed copy")
        spec = next(
            (
                s
                for s, f in zip(config.feed_specs(), config.feeds, strict=True)
                if (f.name or Path(f.path).stem) == feed_name
            ),
            None,
        )
        if spec is None:
            raise click.BadParameter(
                f"no configured feed is named {feed_name!r}", param_hint="--feed"
            )
        old = spec.path
    result = feed_impact(config, load_key(), old, new, days, feed_name, _date(today, "--today"))
    if fmt == "json":
        click.echo(json.dumps(impact_json(result), indent=2))
    else:
        click.echo(impact_table(result), nl=False)
