"""`outbox list|retry|drop`: the deliveries of reports, and what to do with those that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, config_option, output_options, write_output
from compliance.config import current_actor, load_config
from compliance.errors import ConfigError
from compliance.job import open_store
from compliance.outbox import deliver_due
from compliance.scheduler import run_lock
from compliance.store import OUTBOX_STATES, Store
from compliance.tables import Listing


@cli.group()
def outbox() -> None:
    """Deliveries of reports: waiting, sent, failed."""


#: The columns of `outbox list` as JSON and CSV (the period: [first day, last day]).
OUTBOX_COLUMNS = (
    "id", "report", "audience", "period", "channel", "state", "attempts", "next_attempt",
    "last_error", "receipt",
)  # fmt: skip


@outbox.command("list")
@config_option
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(OUTBOX_STATES),
    help="Only deliveries in this state (repeatable).",
)
@output_options("table", "json", "csv")
def outbox_list(config_path: Path, states: tuple[str, ...], fmt: str, out: Path | None) -> None:
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
    if fmt != "table":
        write_output(out, Listing(OUTBOX_COLUMNS, rows).render(fmt))
        return
    shown = [
        {
            "id": r["id"],
            "report": f"{r['report']} ({r['audience']})",
            "period": f"{r['period'][0]}..{r['period'][1]}",
            "channel": r["channel"],
            "state": r["state"],
            "attempts": r["attempts"],
            "next": str(r["last_error"] or r["next_attempt"] or ""),
        }
        for r in rows
    ]
    table = Listing(
        ("id", "report", "period", "channel", "state", "attempts", "next"),
        shown,
        headings=("id", "report", "period", "channel", "state", "attempts", "next / last error"),
        empty="no deliveries",
        shown={"next": str},
    )
    write_output(out, table.table())


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
