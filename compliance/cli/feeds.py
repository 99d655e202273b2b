"""`feeds ...`: for feed keepers: where each feed comes from, its versions and updates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, config_option, format_option
from compliance.config import current_actor, load_config
from compliance.feedkeeper import (
    feed_details,
    feed_history,
    feed_listing,
    refusal,
    select_feeds,
    update_feeds,
)
from compliance.scheduler import run_lock
from compliance.store import Store
from compliance.tables import aligned


@cli.group()
def feeds() -> None:
    """Feeds and allow-lists: update, versions, differences and their impact."""


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@feeds.command("update")
@config_option
@click.argument("names", nargs=-1)
@format_option("table", "json")
def update_cmd(config_path: Path, names: tuple[str, ...], fmt: str) -> None:
    """Fetch the feeds NAMES (default: every feed with a url), verify, check and install
    each one, keeping the last good copy; exits 4 when an update was refused or failed."""
    config = load_config(config_path)
    chosen = select_feeds(config, names)
    if not chosen:
        click.echo("no feed has a url: nothing to update")
        return
    actor = current_actor(config.accountability)
    # the run lock: a run never loads a feed while it is being swapped
    with (
        run_lock(config.path(config.schedule.lock)),
        Store.open(config.path(config.store)) as store,
    ):
        results = update_feeds(config, store, actor, chosen)
    if fmt == "json":
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            click.echo(result.line())
    error = refusal(results, str(config_path))
    if error is not None:
        raise error


@feeds.command("list")
@config_option
@format_option("table", "json")
def list_cmd(config_path: Path, fmt: str) -> None:
    """Every configured feed: kind, categories, entries, the version at its path, when it
    was fetched, where from and under which licence."""
    rows = feed_listing(load_config(config_path))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    header = ["feed", "kind", "categories", "entries", "version", "fetched at", "url", "licence"]
    body = [
        [
            r["name"],
            r["kind"],
            ", ".join(r["categories"]) or "-",
            _count(r["entries"]),
            (r["version"] or "")[:12] or "missing",
            r["fetched_at"] or ("not fetched by feeds update" if r["version"] else "-"),
            _dash(r["url"]),
            _dash(r["licence"]),
        ]
        for r in rows
    ]
    lines = aligned(header, body)
    lines += [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
    click.echo("\n".join(lines))


@feeds.command("show")
@click.argument("name")
@config_option
@format_option("table", "json")
def show_cmd(name: str, config_path: Path, fmt: str) -> None:
    """One feed: its version, entries per category, skipped entries, the recorded version
    and the update settings."""
    row = feed_details(load_config(config_path), name)
    if fmt == "json":
        click.echo(json.dumps(row, indent=2))
        return
    settings = row["settings"]
    bounds = settings["bounds"]
    installed = row["installed"]
    lines = [
        f"feed:          {row['name']} ({row['kind']})",
        f"path:          {row['path']}"
        + ("  (previous copy kept)" if row["previous_copy"] else ""),
        f"format:        {_dash(row['format'])}",
        f"version:       {row['version'] or 'missing'}",
        f"entries:       {_count(row['entries'])}"
        + (f" ({row['exceptions']:,} exceptions)" if row["exceptions"] else ""),
    ]
    for category, n in row["categories"].items():
        lines.append(f"  {category}: {n:,}")
    if row["skipped"]:
        lines.append(
            "skipped:       " + ", ".join(f"{why} {n:,}" for why, n in row["skipped"].items())
        )
    if installed:
        lines += [
            f"fetched at:    {installed['fetched_at']} from {_dash(installed['url'])}",
            f"download:      {installed['size']:,} bytes, SHA-256 {installed['sha256']}",
            f"verified:      {installed['verified'] or 'not verified (no pin, no signature)'}",
            f"etag:          {_dash(installed['etag'])}; last-modified: "
            f"{_dash(installed['last_modified'])}",
        ]
    elif row["version"]:
        lines.append("fetched at:    not fetched by `compliance feeds update` (put in place)")
    if row["latest_installed"]:
        later = row["latest_installed"]
        lines.append(
            f"note:          the store's latest version ({later['content_sha256'][:12]}, "
            f"{later['fetched_at']}) is not the copy at the path"
        )
    if row["error"]:
        lines.append(f"error:         {row['error']}")
    signature = settings["signature"]
    lines += [
        f"licence:       {_dash(row['licence'])}",
        f"attribution:   {_dash(row['attribution'])}",
        f"url:           {_dash(settings['url'])}",
        "mapping:       "
        + (", ".join(f"{k} -> {v}" for k, v in settings["mapping"].items()) or "-"),
        f"pinned sha256: {_dash(settings['sha256'])}",
        "signature:     "
        + (f"minisign key {signature['key_id']} at {signature['url']}" if signature else "-"),
        f"bounds:        max_bytes {bounds['max_bytes']:,}, min_entries "
        f"{bounds['min_entries']:,}, max_shrink {bounds['max_shrink']:g}, max_growth "
        f"{bounds['max_growth']:g}",
        "update_every:  "
        + (f"{settings['update_every']} days" if settings["update_every"] else "-"),
    ]
    last = row["last_update"]
    if last:
        lines.append(
            f"last update:   {last['at']} {last['outcome']}"
            + (f": {last['reason']}" if last["reason"] else "")
        )
    click.echo("\n".join(lines))


@feeds.command("history")
@click.argument("name", required=False)
@config_option
@format_option("table", "json")
def history_cmd(name: str | None, config_path: Path, fmt: str) -> None:
    """Installed versions and update attempts, newest first (of feed NAME, or of all)."""
    history = feed_history(load_config(config_path), name)
    if fmt == "json":
        click.echo(json.dumps(history, indent=2))
        return
    header = ["id", "feed", "fetched at", "version", "entries", "bytes", "verified", "url"]
    body = [
        [
            str(v["id"]),
            v["feed"],
            v["fetched_at"],
            v["content_sha256"][:12],
            f"{v['entries']:,}",
            f"{v['size']:,}",
            _dash(v["verified"]),
            _dash(v["url"]),
        ]
        for v in history["versions"]
    ]
    lines = ["versions:", *aligned(header, body)] if body else ["versions: none recorded"]
    header = ["at", "feed", "outcome", "version", "by", "reason"]
    by_id = {v["id"]: v["content_sha256"][:12] for v in history["versions"]}
    body = [
        [
            u["at"],
            u["feed"],
            u["outcome"],
            by_id.get(u["version_id"], "-"),
            u["actor"],
            _dash(u["reason"]),
        ]
        for u in history["updates"]
    ]
    lines += ["", "updates:", *aligned(header, body)] if body else ["", "updates: none"]
    click.echo("\n".join(lines))
