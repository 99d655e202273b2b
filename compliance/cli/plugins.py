"""`plugins`: every registry's entries and where each comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, output_options, write_output
from compliance.delivery import DELIVERIES
from compliance.errors import ConfigError
from compliance.feeds import FEED_FORMATS
from compliance.plugins import Registry
from compliance.policy.rules import RULE_KINDS
from compliance.tables import Listing, aligned, to_json
from connectors.base import SOURCES

#: The registries, as `compliance plugins` names them.
REGISTRIES: dict[str, Registry[Any]] = {
    "source": SOURCES,
    "feed format": FEED_FORMATS,
    "rule kind": RULE_KINDS,
    "delivery": DELIVERIES,
}


#: The columns of `plugins --format csv` (and the keys of its JSON), `loads` with --check.
PLUGIN_COLUMNS = (
    "registry", "name", "target", "origin", "distribution", "version", "builtin", "shadowed",
    "conflict",
)  # fmt: skip


@cli.command("plugins")
@output_options("table", "json", "csv")
@click.option("--check", is_flag=True, help="Load every entry; exit 2 if one cannot be loaded.")
def plugins_cmd(fmt: str, out: Path | None, check: bool) -> None:
    """List sources, feed formats, rule kinds and deliveries, built-in or from packages."""
    rows: list[dict[str, Any]] = []
    failed = 0
    for registry_name, registry in REGISTRIES.items():
        loaded = registry.load_all() if check else [(e, None) for e in registry.entries()]
        for entry, error in loaded:
            row = {"registry": registry_name, **entry.as_dict()}
            if check:
                row["loads"] = error is None
                if error is not None:
                    failed += 1
                    click.echo(f"error: {error}", err=True)
            rows.append(row)
    if fmt == "json":
        write_output(out, to_json(rows))
    elif fmt == "csv":
        columns = PLUGIN_COLUMNS + (("loads",) if check else ())
        write_output(out, Listing(columns, rows).csv())
    else:
        write_output(out, "\n".join(aligned(*_table(rows, check))))
    if failed:
        raise ConfigError(f"{failed} plugin entr{'y' if failed == 1 else 'ies'} cannot be loaded")


def _table(rows: list[dict[str, Any]], check: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table; a registry without entries says so."""
    header = ["registry", "name", "origin", "target"] + (["loads"] if check else [])
    table = []
    for registry_name in REGISTRIES:
        own = [r for r in rows if r["registry"] == registry_name]
        if not own:
            table.append([registry_name, "-", "(none installed)", "", *([""] if check else [])])
        for r in own:
            name = r["name"] + (" (shadowed)" if r["shadowed"] else "")
            loads = ["yes" if r["loads"] else "NO"] if check else []
            table.append([registry_name, name, r["origin"], r["target"], *loads])
    return header, table
