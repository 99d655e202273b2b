"""`status`: the operator's view of a deployment, and its health check (exit 14 when
something is overdue or failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, config_option, format_option
from compliance.config import load_config
from compliance.status import Status, check
from compliance.tables import aligned


def _age(seconds: int | None) -> str:
    """A duration as ``2d 3h``, ``3h 5m`` or ``5m`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    return f"{sign}{minutes}m"


def _run(run: dict[str, Any] | None) -> str:
    if run is None:
        return "none"
    return (
        f"{run['id']} {run['status']}, started {run['started_at']}, "
        f"finished {run['finished_at'] or '-'}; {run['rows_read']} rows read, "
        f"{run['rows_rejected']} rejected, {run['alerts_new']} new alert(s)"
    )


def render(status: Status) -> str:
    """The status as text for a terminal or a log."""
    runs, outbox = status.runs, status.outbox
    lines = [
        f"status:       {'healthy' if status.healthy else 'UNHEALTHY'} (as of {status.now})",
        f"last run:     {_run(runs['last'])}",
        f"last ok run:  {_run(runs['last_ok'])}",
        f"next run:     {runs['next_due'] or 'now'} (every {runs['interval_minutes']} min; "
        f"overdue after {runs['overdue_after_minutes']} min without a successful run)"
        + ("  OVERDUE" if runs["overdue"] else ""),
        "outbox:       "
        + ", ".join(f"{state} {n}" for state, n in outbox["counts"].items())
        + f"; oldest waiting {_age(outbox['oldest_waiting_age_seconds'])}"
        + (f"; failed: {', '.join(map(str, outbox['failed']))}" if outbox["failed"] else "")
        + ("  OVERDUE" if outbox["overdue"] else ""),
        "",
    ]
    header = ["report", "every", "audience", "days", "next due", "last period", "last written"]
    body = [
        [
            r["name"],
            r["every"],
            r["audience"],
            str(r["period_days"]),
            r["next_due"] or "next run",
            f"{r['last']['first_day']}..{r['last']['last_day']}" if r["last"] else "-",
            str(r["last"]["at"]) if r["last"] else "-",
        ]
        for r in status.reports
    ]
    lines.extend([*aligned(header, body), ""])
    header = ["source", "type", "bookmark", "lag", "units", "last unit at", ""]
    body = [
        [
            s["name"],
            s["type"],
            str(s["bookmark"] or "-"),
            _age(s["lag_seconds"]),
            str(s["units"]),
            str(s["last_unit_at"] or "-"),
            "OVERDUE" if s["overdue"] else "",
        ]
        for s in status.sources
    ]
    lines.extend(aligned(header, body))
    for problem in status.problems:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


@cli.command("status")
@config_option
@format_option("table", "json")
def status_cmd(config_path: Path, fmt: str) -> None:
    """Last run, next run and report due, outbox and source lag; exits 14 when something is
    overdue or failed (a health check; reads the store, never writes it)."""
    config = load_config(config_path)
    status = check(config)
    if fmt == "json":
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        click.echo(render(status))
    status.raise_if_unhealthy()
