"""`sources check|reset|types`."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, config_option, output_options, write_output
from compliance.config import (
    EntraDirectory,
    load_config,
)
from compliance.errors import ComplianceError, ConfigError, ExitCode
from compliance.job import directory_checks
from compliance.outbox import channel
from compliance.scheduler import run_lock
from compliance.store import Store
from compliance.tables import Listing, aligned, to_json
from connectors.base import SOURCES, create_source, source_type


@cli.group()
def sources() -> None:
    """Check and manage the configured log sources."""


#: The columns of `sources check` as JSON and CSV: one row per check.
CHECK_COLUMNS = ("part", "ok", "check")


@sources.command("check")
@config_option
@output_options("table", "json", "csv")
def sources_check(config_path: Path, fmt: str, out: Path | None) -> None:
    """Verify credentials, permissions and reachability of every source; print no data.
    Exits 5 when a check fails (after printing every check)."""

    config = load_config(config_path)
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
    rows = [
        {"part": title, "ok": ok, "check": text}
        for title, results in sections
        for ok, text in results
    ]
    failed = sum(not r["ok"] for r in rows)
    if fmt == "table":
        write_output(out, _check_table(sections, failed))
    elif fmt == "json":
        write_output(out, to_json({"checks": rows, "failed": failed}))
    else:
        write_output(out, Listing(CHECK_COLUMNS, rows).csv())
    if failed:
        sys.exit(ExitCode.SOURCE)


def _check_table(sections: list[tuple[str, list[tuple[bool, str]]]], failed: int) -> str:
    """The checks under their part's title, ``ok`` or ``FAIL`` each, and the count."""
    lines = []
    for title, results in sections:
        lines.append(title)
        lines += [f"  {'ok  ' if ok else 'FAIL'}  {text}" for ok, text in results]
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines) + "\n"


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


#: The columns of `sources types` as a table, JSON and CSV.
TYPE_COLUMNS = ("name", "origin", "reads", "collects", "options")


@sources.command("types")
@output_options("table", "json", "csv")
@click.option("--options", "show_options", is_flag=True, help="Also list each type's options.")
def sources_types(fmt: str, out: Path | None, show_options: bool) -> None:
    """List the source types installed (built-in or from packages): how each reads, what it
    collects, and with --options what it can be told."""
    found = [asdict(source_type(name)) for name in SOURCES.names()]
    if fmt == "json":  # every type with its options, --options or not
        write_output(out, to_json(found))
    elif fmt == "csv":  # the options' names; their meanings are in the JSON
        rows = [{**t, "options": list(t["options"])} for t in found]
        columns = TYPE_COLUMNS if show_options else TYPE_COLUMNS[:-1]
        write_output(out, Listing(columns, rows).csv())
    else:
        write_output(out, _types_table(found, show_options))


def _types_table(found: list[dict[str, Any]], show_options: bool) -> str:
    """The types as an aligned table, then each type's options with --options."""
    rows = [[t["name"], t["origin"], t["reads"], ", ".join(t["collects"]) or "?"] for t in found]
    lines = aligned(["type", "origin", "reads", "collects"], rows)
    if show_options:
        for t in found:
            lines += ["", f"{t['name']}:"]
            lines += [f"  {option}: {what}" for option, what in t["options"].items()]
    return "\n".join(lines) + "\n"
