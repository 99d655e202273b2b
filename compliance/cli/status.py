"""`status`: the operator's view of a deployment, and its health check (exit 14 when
something is overdue or failed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compliance.cli import cli, config_option, output_options, write_output
from compliance.config import load_config
from compliance.status import Status, check
from compliance.tables import Listing, aligned, to_json


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


#: The columns of `status --format csv`: one row per part (the runs, the outbox, each
#: report, each source).
STATUS_COLUMNS = ("part", "name", "state", "last", "next_due", "lag_seconds", "detail")


def status_rows(status: Status) -> list[dict[str, Any]]:
    """The status as rows of :data:`STATUS_COLUMNS`, for a spreadsheet or a monitor."""
    runs, outbox = status.runs, status.outbox
    last = runs["last"]
    rows: list[dict[str, Any]] = [
        {
            "part": "run",
            "name": "job",
            "state": "overdue" if runs["overdue"] else "ok",
            "last": last and last["started_at"],
            "next_due": runs["next_due"],
            "lag_seconds": None,
            "detail": (
                f"last run {last['id']} {last['status']}, {last['rows_read']} rows read"
                if last
                else "no run yet"
            ),
        },
        {
            "part": "outbox",
            "name": "outbox",
            "state": "overdue" if outbox["overdue"] else "ok",
            "last": None,
            "next_due": None,
            "lag_seconds": outbox["oldest_waiting_age_seconds"],
            "detail": ", ".join(f"{state} {n}" for state, n in outbox["counts"].items()),
        },
    ]
    rows += [
        {
            "part": "report",
            "name": r["name"],
            "state": "ok",
            "last": r["last"]["at"] if r["last"] else None,
            "next_due": r["next_due"],
            "lag_seconds": None,
            "detail": f"every {r['every']}, {r['audience']}, {r['period_days']} days",
        }
        for r in status.reports
    ]
    rows += [
        {
            "part": "source",
            "name": s["name"],
            "state": "overdue" if s["overdue"] else "ok",
            "last": s["last_unit_at"],
            "next_due": None,
            "lag_seconds": s["lag_seconds"],
            "detail": f"{s['type']}, bookmark {s['bookmark'] or '-'}, {s['units']} units",
        }
        for s in status.sources
    ]
    rows += [
        {"part": "problem", "name": None, "state": "failed", "last": None, "next_due": None,
         "lag_seconds": None, "detail": problem}
        for problem in status.problems
    ]  # fmt: skip
    return rows


@cli.command("status")
@config_option
@output_options("table", "json", "csv")
def status_cmd(config_path: Path, fmt: str, out: Path | None) -> None:
    """Last run, next run and report due, outbox and source lag; exits 14 when something is
    overdue or failed (a health check; reads the store, never writes it)."""
    config = load_config(config_path)
    status = check(config)
    if fmt == "json":
        write_output(out, to_json(status.as_dict()))
    elif fmt == "csv":
        write_output(out, Listing(STATUS_COLUMNS, status_rows(status)).csv())
    else:
        write_output(out, render(status))
    status.raise_if_unhealthy()
