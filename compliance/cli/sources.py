"""`sources check|reset`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from compliance.cli import cli, config_option
from compliance.config import (
    EntraDirectory,
    load_config,
)
from compliance.errors import ComplianceError, ConfigError
from compliance.job import directory_checks
from compliance.outbox import channel
from compliance.scheduler import run_lock
from compliance.store import Store
from connectors.base import create_source


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
