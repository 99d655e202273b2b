"""`sources check|reset|types`."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from compliance.cli import cli, config_option, format_option
from compliance.config import (
    EntraDirectory,
    load_config,
)
from compliance.errors import ComplianceError, ConfigError
from compliance.job import directory_checks
from compliance.outbox import channel
from compliance.scheduler import run_lock
from compliance.store import Store
from compliance.tables import aligned
from connectors.base import SOURCES, create_source, source_type


@cli.group()
def sources() -> None:
    """Check and manage the configured log sources."""


@sources.command("check")
@config_option
def sources_check(config_path: Path) -> None:
    """Verify credentials, permissions and reachability of every source; print no data."""

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
                directory_checks(config, config.directory),
            )
        )
    elif config.directory is not None:
        path = config.path(config.directory)
        readable = path.is_file() and os.access(path, os.R_OK)
        sections.append(("directory (CSV)", [(readable, f"{path} readable")]))
    for delivery in config.deliveries:
        try:
            checks = channel(config, delivery.name).check()
        except ComplianceError as exc:
            checks = [(False, str(exc))]
        sections.append((f"delivery {delivery.name} ({delivery.type})", checks))
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

    config = load_config(config_path)
    if name not in {s.name for s in config.sources}:
        raise ConfigError(f"no source named {name!r} in {config_path}")
    with (
        run_lock(config.path(config.schedule.lock)),
        Store.open(config.path(config.store)) as store,
    ):
        removed = store.ingest.reset_bookmark(name)
    click.echo(f"bookmark of {name} {'removed' if removed else 'was not set'}")


@sources.command("types")
@format_option("table", "json")
@click.option("--options", "show_options", is_flag=True, help="Also list each type's options.")
def sources_types(fmt: str, show_options: bool) -> None:
    """List the source types installed (built-in or from packages): how each reads, what it
    collects, and with --options what it can be told."""
    found = [source_type(name) for name in SOURCES.names()]
    if fmt == "json":
        click.echo(json.dumps([asdict(t) for t in found], indent=2))
        return
    rows = [[t.name, t.origin, t.reads, ", ".join(t.collects) or "?"] for t in found]
    click.echo("\n".join(aligned(["type", "origin", "reads", "collects"], rows)))
    if show_options:
        for t in found:
            click.echo(f"\n{t.name}:")
            for option, what in t.options.items():
                click.echo(f"  {option}: {what}")
