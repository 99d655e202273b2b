"""`alerts list|show|triage|stats`: the ethics team's queue of pseudonymous alerts.

Nothing here prints an address or a name: alerts hold pseudonyms, org units and site
domains only, and notes were refused at entry when they named someone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from compliance.alerts import STATES, Alert
from compliance.cli import _date, cli, config_option, format_option, output_options, write_output
from compliance.config import Config, current_actor, load_config
from compliance.csvsafe import write_csv
from compliance.episodes import change_since, describe_change, describe_delta
from compliance.job import directory_for, open_store
from compliance.policy.loader import load_policies
from compliance.policy.model import SEVERITY_ORDER
from compliance.store import AlertFilter
from compliance.tables import aligned
from compliance.triage import (
    DISMISS_REASONS,
    PeopleNames,
    StatsRow,
    Step,
    TriageError,
    assignee_of,
    check_domains,
    exclude_suggestions,
    is_waiting,
    queue_day,
    stats,
    triage,
)

F = TypeVar("F", bound=Callable[..., Any])

_FILTERS = ("policy", "rule", "state", "severity", "since", "assignee")


def _filter_options(func: Callable[..., None]) -> Callable[..., None]:
    """The selection options shared by `alerts list` and `alerts triage`, handed to the
    command as one :class:`~compliance.store.AlertFilter` (``selection``)."""

    @functools.wraps(func)
    def with_selection(*args: Any, **kwargs: Any) -> None:
        since = kwargs.pop("since")
        if since is not None:
            _date(since, "--since")
        kwargs["selection"] = AlertFilter(
            ids=tuple(kwargs.pop("alert_ids", ())) or None,
            policy=kwargs.pop("policy"),
            rule_id=kwargs.pop("rule"),
            states=tuple(kwargs.pop("states")),
            severity=kwargs.pop("severity"),
            since=since,
            assignee=kwargs.pop("assignee"),
        )
        func(*args, **kwargs)

    options = [
        click.option("--policy", help="Only alerts of this policy id."),
        click.option("--rule", help="Only alerts of this rule id."),
        click.option(
            "--state",
            "states",
            multiple=True,
            type=click.Choice(STATES),
            help="Only alerts in this triage state (repeatable).",
        ),
        click.option(
            "--severity", type=click.Choice(list(SEVERITY_ORDER)), help="Only this severity."
        ),
        click.option("--since", help="Only alerts raised on or after this day (YYYY-MM-DD)."),
        click.option("--assignee", help="Only alerts assigned to this reviewer."),
    ]
    wrapped: Callable[..., None] = with_selection
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@cli.group()
def alerts() -> None:
    """Stored alerts (pseudonymous): list, show, triage, effectiveness."""


# --- list ----------------------------------------------------------------------------

LIST_FIELDS = (
    "id", "raised_day", "trigger_day", "severity", "policy", "rule_id", "subject",
    "org_unit", "messages", "people", "days", "first_day", "last_day", "episode", "state",
    "assignee", "change", "delta",
)  # fmt: skip


def listing(alert: Alert, assignee: str | None, today: str) -> dict[str, Any]:
    """One alert as the list shows it (state ``waiting`` before its raised day)."""
    return {
        "id": alert.id,
        "raised_day": alert.raised_day,
        "trigger_day": alert.trigger_day,
        "severity": alert.severity,
        "policy": alert.policy,
        "rule_id": alert.rule_id,
        "subject": alert.person,
        "org_unit": alert.org_unit,
        "messages": alert.messages,
        "people": alert.people,
        "days": alert.days,
        "first_day": alert.first_day,
        "last_day": alert.last_day,
        "episode": "ended" if alert.ended else "open",
        "state": "waiting" if is_waiting(alert, today) else alert.state,
        "assignee": assignee,
        "change": alert.change,
        "delta": dict(alert.delta),
    }


def _list_table(rows: list[dict[str, Any]], today: str) -> str:
    if not rows:
        return "no alerts\n"
    header = (
        "id", "raised", "trigger", "severity", "policy/rule", "subject", "org unit", "msgs",
        "people", "days", "first..last", "episode", "state", "assignee", "since last report",
    )  # fmt: skip
    body = [
        (
            str(r["id"]),
            r["raised_day"],
            r["trigger_day"],
            r["severity"],
            f"{r['policy']}/{r['rule_id']}",
            r["subject"] or "-",
            r["org_unit"],
            str(r["messages"]),
            str(r["people"]),
            str(r["days"]),
            f"{r['first_day']}..{r['last_day']}",
            r["episode"],
            r["state"],
            r["assignee"] or "-",
            describe_change(r["change"], r["delta"]),
        )
        for r in rows
    ]
    lines = aligned(header, body)
    waiting = sum(1 for r in rows if r["state"] == "waiting")
    if waiting:
        lines.append("")
        lines.append(
            f"{waiting} alert(s) waiting: raised after {today}, held back by their policy's "
            "daily limit (max_alerts_per_day)"
        )
    return "\n".join(lines) + "\n"


@alerts.command("list")
@config_option
@_filter_options
@click.option(
    "--today",
    help="List as of this day (YYYY-MM-DD); default: the day of the latest run, else today.",
)
@output_options("table", "json", "csv")
def alerts_list(
    config_path: Path, selection: AlertFilter, today: str | None, fmt: str, out: Path | None
) -> None:
    """List stored alerts with their ids, triage state and change since the last report."""
    config = load_config(config_path)
    with open_store(config) as store:
        given = _date(today, "--today")
        day = given.isoformat() if given else queue_day(store)
        found = store.alerts.find(selection)
        baseline = store.reports.baseline("team")
        before = store.alerts.figures_at(baseline)
        rows = []
        for alert in found:
            change_since(alert, before.get(int(alert.id or 0)))
            rows.append(listing(alert, assignee_of(store, alert), day))
    if fmt == "json":
        waiting = sum(1 for r in rows if r["state"] == "waiting")
        text = json.dumps({"as_of": day, "alerts": rows, "waiting": waiting}, indent=2) + "\n"
    elif fmt == "csv":
        text = write_csv(
            LIST_FIELDS,
            ([describe_delta(r[f]) if f == "delta" else r[f] for f in LIST_FIELDS] for r in rows),
        )
    else:
        text = _list_table(rows, day)
    write_output(out, text)


# --- show ----------------------------------------------------------------------------


@alerts.command("show")
@config_option
@click.argument("alert_id", type=int)
@format_option("table", "json")
def alerts_show(config_path: Path, alert_id: int, fmt: str) -> None:
    """One alert, what each run saw of its episode, and its triage steps."""
    config = load_config(config_path)
    with open_store(config) as store:
        alert = store.alerts.get(alert_id)
        if alert is None:
            raise TriageError(f"there is no alert {alert_id}")
        change_since(alert, store.alerts.figures_at(store.reports.baseline("team")).get(alert_id))
        assignee = assignee_of(store, alert)
        history = store.alerts.history(alert_id)
        steps = store.triage.history(alert_id)
    # a ring's people by role (pseudonyms, as a person alert shows its own): for cases
    ring_people = {k: list(v) for k, v in (alert.extra.get("ring_people") or {}).items()}
    if fmt == "json":
        data: dict[str, Any] = {"alert": {**alert.as_dict(), "assignee": assignee}}
        if ring_people:
            data["alert"]["ring_people"] = ring_people
        data["history"] = history
        click.echo(json.dumps({**data, "triage": steps}, indent=2))
        return
    lines = [
        f"alert {alert.id}: {alert.policy}/{alert.rule_id} ({alert.rule}), {alert.severity}"
        + (" (draft)" if alert.draft else ""),
        f"  subject:   {alert.person or '-'}",
        f"  org unit:  {alert.org_unit}",
        f"  raised:    {alert.raised_day} (triggered {alert.trigger_day})",
        f"  episode:   {alert.first_day}..{alert.last_day}, {alert.days} day(s), "
        f"{'ended' if alert.ended else 'open'}",
        f"  figures:   {alert.messages} message(s), {alert.people} person(s)",
        f"  domains:   {', '.join(alert.domains) or '-'}",
        f"  state:     {alert.state}" + (f", assigned to {assignee}" if assignee else ""),
        f"  since the last report: {describe_change(alert.change, alert.delta)}",
    ]
    if alert.exchange_confirmed:
        lines.append("  marks:     exchange confirmed (a first message answered within hours)")
    for role, people in ring_people.items():
        lines.append(f"  {role + ':':<10} {', '.join(people)}")
    lines += ["", "episode history (what each run saw):"]
    lines += [
        "  " + line
        for line in aligned(
            ("update", "run", "at", "msgs", "people", "days", "domains", "first..last", "episode"),
            [
                (
                    str(h["seq"]),
                    str(h["run"] or "-"),
                    str(h["at"]),
                    str(h["messages"]),
                    str(h["people"]),
                    str(h["days"]),
                    str(len(h["domains"])),
                    f"{h['first_day']}..{h['last_day']}",
                    "ended" if h["ended"] else "open",
                )
                for h in history
            ],
        )
    ]
    lines += ["", "triage:"]
    if not steps:
        lines.append("  no step yet")
    lines += [
        f"  {s['at']}  {s['actor']}  {s['from_state']} -> {s['to_state']}"
        + (f" ({s['reason']})" if s["reason"] else "")
        + (f", assigned to {s['assignee']}" if s["assignee"] else "")
        + (f"\n      note: {s['note']}" if s["note"] else "")
        for s in steps
    ]
    click.echo("\n".join(lines))


# --- triage --------------------------------------------------------------------------

_REASON_HELP = "Why a dismissal: " + "; ".join(f"{k}: {v}" for k, v in DISMISS_REASONS.items())


@alerts.command("triage")
@config_option
@click.argument("alert_ids", nargs=-1, type=int)
@_filter_options
@click.option(
    "--to",
    "to_state",
    required=True,
    type=click.Choice([s for s in STATES if s != "new"]),
    help="The state to move to: new -> in_review -> confirmed | dismissed -> resolved.",
)
@click.option("--reason", type=click.Choice(list(DISMISS_REASONS)), help=_REASON_HELP)
@click.option("--note", help="A note kept with the step (no address, no name of a person).")
@click.option("--assign", "assign", help="Assign the alerts to this reviewer.")
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="With --reason wrong-listing: the domain(s) to exclude (default: the alerts').",
)
def alerts_triage(
    config_path: Path,
    selection: AlertFilter,
    to_state: str,
    reason: str | None,
    note: str | None,
    assign: str | None,
    domains: tuple[str, ...],
) -> None:
    """Move alerts to the next triage state, by id or every alert matching the filters
    (all or nothing); logged."""
    if not selection.ids and not selection.any_given():
        raise click.UsageError(
            "name the alerts: give their ids, or at least one filter "
            "(--policy, --rule, --state, --severity, --since, --assignee)"
        )
    if domains and reason != "wrong-listing":
        raise click.UsageError("--domain goes with --to dismissed --reason wrong-listing")
    config = load_config(config_path)
    actor = current_actor(config.accountability)
    extra = check_domains(domains)
    # a note is checked for names; an assignee only when it is written like one (a space)
    spelled_out = assign is not None and any(c.isspace() for c in assign.strip())
    names = PeopleNames.of(directory_for(config)) if note is not None or spelled_out else None
    with open_store(config) as store:
        if selection.ids:
            known = {a.id for a in store.alerts.find(AlertFilter(ids=selection.ids))}
            missing = sorted(set(selection.ids) - known)
            if missing:
                raise TriageError(
                    f"there is no alert {', '.join(map(str, missing))}; nothing was changed"
                )
        found = store.alerts.find(selection)
        changes = triage(store, found, Step(to_state, reason, note, assign), actor, names)
    for change in changes:
        click.echo(change.describe())
    if to_state == "dismissed" and reason == "wrong-listing":
        _print_exclusions(config, found, extra)


def _print_exclusions(config: Config, dismissed: list[Alert], domains: list[str]) -> None:

    loaded = load_policies([config.path(p) for p in config.policies])
    click.echo("")
    click.echo(
        "To stop the policy matching these domains, change its exclude_domains "
        "(nothing was edited; raise the policy's version, then lint and test it):"
    )
    for suggestion in exclude_suggestions(dismissed, loaded, domains or None):
        click.echo("  " + suggestion.describe())


# --- stats ---------------------------------------------------------------------------

STATS_FIELDS = (
    "policy", "rule", "week", "raised", "confirmed", "dismissed", "undecided", "precision",
    "top_dismissal_reasons", "median_hours_to_triage",
)  # fmt: skip


def _reasons(row: StatsRow) -> str:
    return ", ".join(f"{r} {n}" for r, n in row.top_reasons)


def stats_table(rows: list[StatsRow]) -> str:
    """The effectiveness figures as plain aligned text."""
    if not rows:
        return "no alerts\n"
    header = (
        "policy", "rule", "week", "raised", "confirmed", "dismissed", "undecided",
        "precision", "top dismissal reasons", "median h to triage",
    )  # fmt: skip
    body = [
        (
            r.policy,
            r.rule_id,
            r.period,
            str(r.raised),
            str(r.confirmed),
            str(r.dismissed),
            str(r.undecided),
            "-" if r.precision is None else f"{r.precision:.2f}",
            _reasons(r) or "-",
            "-" if r.median_hours is None else f"{r.median_hours:.1f}",
        )
        for r in rows
    ]
    note = "precision = confirmed / (confirmed + dismissed); week = ISO week the alert was raised"
    return "\n".join([*aligned(header, body), "", note]) + "\n"


@alerts.command("stats")
@config_option
@output_options("table", "json", "csv")
def alerts_stats(config_path: Path, fmt: str, out: Path | None) -> None:
    """How effective each policy's rules are: precision, dismissal reasons, time to triage."""
    config = load_config(config_path)
    with open_store(config) as store:
        rows = stats(store.triage.facts())
    if fmt == "json":
        text = json.dumps([r.as_dict() for r in rows], indent=2) + "\n"
    elif fmt == "csv":
        text = write_csv(
            STATS_FIELDS,
            (
                [
                    r.policy,
                    r.rule_id,
                    r.period,
                    r.raised,
                    r.confirmed,
                    r.dismissed,
                    r.undecided,
                    None if r.precision is None else round(r.precision, 4),
                    [f"{reason}:{n}" for reason, n in r.top_reasons],
                    r.median_hours,
                ]
                for r in rows
            ),
        )
    else:
        text = stats_table(rows)
    write_output(out, text)
