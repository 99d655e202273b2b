"""`outbox list|retry|drop`: the deliveries of reports, and what to do with those that failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, config_option, format_option
from compliance.config import current_actor, load_config
from compliance.errors import ConfigError
from compliance.job import open_store
from compliance.outbox import deliver_due
from compliance.scheduler import run_lock
from compliance.store import OUTBOX_STATES, Store
from compliance.tables import aligned


@cli.group()
def outbox() -> None:
    """Deliveries of reports: waiting, sent, failed."""


@outbox.command("list")
@config_option
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(OUTBOX_STATES),
    help="Only deliveries in this state (repeatable).",
)
@format_option("table", "json")
def outbox_list(config_path: Path, states: tuple[str, ...], fmt: str) -> None:
    """List deliveries, newest first: report, period, channel, state, attempts, last error."""
    config = load_config(config_path)
    with open_store(config, read_only=True) as store:
        items = store.outbox.all(states)
    rows: list[dict[str, Any]] = [
        {
            "id": i.id,
            "report": i.report,
            "audience": i.audience,
            "period": [i.first_day, i.last_day],
            "channel": i.channel,
            "state": i.state,
            "attempts": i.attempts,
            "next_attempt": i.next_attempt if i.state == "pending" else None,
            "last_error": i.last_error,
            "receipt": i.receipt,
        }
        for i in items
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no deliveries")
        return
    header = ["id", "report", "period", "channel", "state", "attempts", "next / last error"]
    body = [
        [
            str(r["id"]),
            f"{r['report']} ({r['audience']})",
            f"{r['period'][0]}..{r['period'][1]}",
            str(r["channel"]),
            str(r["state"]),
            str(r["attempts"]),
            str(r["last_error"] or r["next_attempt"] or ""),
        ]
        for r in rows
    ]
    click.echo("\n".join(aligned(header, body)))


def _item_or_refuse(store: Store, item_id: int, allowed: tuple[str, ...], verb: str) -> None:
    item = store.outbox.get(item_id)
    if item is None:
        raise ConfigError(f"there is no delivery {item_id}")
    if item.state not in allowed:
        raise ConfigError(
            f"delivery {item_id} is {item.state}: only a delivery {' or '.join(allowed)} "
            f"can be {verb}"
        )


@outbox.command("retry")
@click.argument("item_id", type=int)
@config_option
def outbox_retry(item_id: int, config_path: Path) -> None:
    """Try a failed or waiting delivery again now (logged)."""
    config = load_config(config_path)
    actor = current_actor(config.accountability)
    # the run lock: never while a run sends (a row it is sending would go twice)
    with run_lock(config.path(config.schedule.lock)), open_store(config) as store:
        _item_or_refuse(store, item_id, ("failed", "pending"), "retried")
        with store.transaction():
            store.outbox.retry(item_id)
            store.audit.append(actor, "delivery.retry.asked", {"outbox": item_id})
        outcome = deliver_due(store, config, actor)
    click.echo(f"sent {outcome.sent}, to retry {outcome.retrying}, failed {outcome.failed}")


@outbox.command("drop")
@click.argument("item_id", type=int)
@config_option
def outbox_drop(item_id: int, config_path: Path) -> None:
    """Give a failed or waiting delivery up (logged; the report's files stay)."""
    config = load_config(config_path)
    actor = current_actor(config.accountability)
    with run_lock(config.path(config.schedule.lock)), open_store(config) as store:
        _item_or_refuse(store, item_id, ("failed", "pending"), "dropped")
        with store.transaction():
            store.outbox.drop(item_id)
            store.audit.append(actor, "delivery.dropped", {"outbox": item_id})
    click.echo(f"delivery {item_id} dropped")
