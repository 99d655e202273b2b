"""`case`, `log` and `privacy`: accountability commands (`alerts` is in :mod:`.alerts`)."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import TextIO

import click
from markdown_it import MarkdownIt

from compliance import cases
from compliance.cli import cli, config_option, output_options, write_output
from compliance.config import (
    Config,
    current_actor,
    load_config,
)
from compliance.directory import Directory
from compliance.errors import ExitCode
from compliance.inventory import inventory
from compliance.job import directory_for, open_store
from compliance.privacy import Pseudonymiser, load_key
from compliance.store.auditlog import Entry
from compliance.tables import Listing
from compliance.triage import PeopleNames
from connectors.directory import load_directory


@cli.group()
def case() -> None:
    """Cases on alerts, and dual-approved re-identification."""


@case.command("open")
@config_option
@click.argument("alert_id", type=int)
@click.option("--reason", required=True, help="Why this alert needs a case (no address, no name).")
@click.option(
    "--person",
    metavar="PSEUDONYM",
    help="On a ring alert: the one person of the ring the case is about (a pseudonym "
    "`alerts show` lists); each person of a ring needs a case of their own.",
)
def case_open(config_path: Path, alert_id: int, reason: str, person: str | None) -> None:
    """Open a case on one person alert (or one person of a ring) in_review or confirmed."""

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    with open_store(config) as store:
        opened = cases.open_case(
            store,
            alert_id,
            reason,
            actor,
            approvers=config.accountability.approvers,
            min_approvals=config.accountability.min_approvals,
            names=PeopleNames.of(directory_for(config)),
            person=person,
        )
    about = f" ({person})" if person else ""
    click.echo(
        f"case {opened.id} opened on alert {alert_id}{about} by {actor}; a reveal needs "
        f"{config.accountability.min_approvals} approvals from: "
        f"{', '.join(a for a in config.accountability.approvers if a != actor) or '(none listed)'}"
    )


@case.command("approve")
@config_option
@click.argument("case_id", type=int)
def case_approve(config_path: Path, case_id: int) -> None:
    """Approve a case's reveal (listed approvers only, not the requester)."""

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    with open_store(config) as store:
        approved = cases.approve(store, case_id, actor, config.accountability.approvers)
    click.echo(
        f"case {case_id} approved by {actor} ({len(approved.approvers)} of "
        f"{config.accountability.min_approvals} approvals)"
    )


@case.command("reveal")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--directory",
    "directory_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A directory CSV of the alert's time, instead of the configured directory.",
)
def case_reveal(config_path: Path, case_id: int, directory_csv: Path | None) -> None:
    """Show who is behind the case's alert (needs the approvals; logged)."""

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    key = load_key()
    with open_store(config) as store:
        store.keys.bind(Pseudonymiser(key).key_id)
        case_row = cases.get_case(store, case_id)  # refuse unknown cases before any fetch
        directory = load_directory(directory_csv) if directory_csv else _directory_or_empty(config)
        identity = cases.reveal(
            store,
            case_row.id,
            actor,
            config.accountability.approvers,
            config.accountability.min_approvals,
            Pseudonymiser(key, config.privacy.key_rotation),
            directory,
        )
    click.echo(f"case {case_id}: alert {case_row.alert_id}")
    click.echo(f"  person:    {identity.person_key}")
    click.echo(f"  addresses: {', '.join(identity.addresses)}")
    click.echo(f"  org unit:  {identity.org_unit}")
    click.echo("This reveal is in the audit log. Do not copy it into tickets or mail.")


def _directory_or_empty(config: Config) -> Directory:

    found = directory_for(config)
    return found if isinstance(found, Directory) else load_directory(found)


@case.command("close")
@config_option
@click.argument("case_id", type=int)
@click.option(
    "--outcome", required=True, help="no-action, advice, disciplinary, referred, unfounded"
)
def case_close(config_path: Path, case_id: int, outcome: str) -> None:
    """Close a case with its outcome."""

    config = load_config(config_path)
    actor = current_actor(config.accountability)
    with open_store(config) as store:
        cases.close(store, case_id, outcome, actor)
    click.echo(f"case {case_id} closed by {actor}: {outcome}")


#: The columns of `case list` (never an identity, nor the reason given at opening).
CASE_COLUMNS = ("id", "alert", "state", "outcome", "opened_at", "opened_by", "approvals")


@case.command("list")
@config_option
@output_options("table", "json", "csv")
def case_list(config_path: Path, fmt: str, out: Path | None) -> None:
    """List cases (alert, requester, approvals, state; never an identity)."""

    config = load_config(config_path)
    with open_store(config) as store:
        found = cases.list_cases(store)
    listing = Listing(
        CASE_COLUMNS,
        [
            {
                "id": c.id,
                "alert": c.alert_id,
                "state": c.state,
                "outcome": c.outcome,
                "opened_at": c.opened_at,
                "opened_by": c.opened_by,
                "approvals": list(c.approvers),
            }
            for c in found
        ],
        headings=("case", "alert", "state", "outcome", "opened", "by", "approvals"),
        empty="no cases",
    )
    write_output(out, listing.render(fmt))


@cli.group("log")
def log_group() -> None:
    """The hash-chained audit log."""


@log_group.command("verify")
@config_option
@click.option(
    "--head",
    "head_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A head exported earlier with `log head`: confirm nothing up to it was rewritten.",
)
def log_verify(config_path: Path, head_file: Path | None) -> None:
    """Check the whole chain; name the first entry edited, removed or reordered."""

    config = load_config(config_path)
    head = json.loads(head_file.read_text(encoding="utf-8")) if head_file else None
    with open_store(config) as store:
        result = store.audit.verify(head)
    if result.ok:
        click.echo(f"audit log intact: {result.entries} entries, head {result.head}")
        return
    click.echo(f"audit log BROKEN: {result.problem}", err=True)
    sys.exit(ExitCode.AUDIT_LOG_BROKEN)


@log_group.command("head")
@config_option
def log_head(config_path: Path) -> None:
    """Print the chain head as JSON, for an outside party to keep."""

    config = load_config(config_path)
    with open_store(config) as store:
        click.echo(json.dumps(store.audit.head()))


#: The columns of `log show --format csv` (``details`` as JSON text).
LOG_COLUMNS = ("seq", "at", "actor", "action", "details", "prev_hash", "hash")


@log_group.command("show")
@config_option
@click.option("--action", help="An action or its prefix: run, case, case.reveal, report, key…")
@click.option("--actor", help="Only this person's acts.")
@click.option("--since", help="From this time (ISO 8601, UTC).")
@click.option("--case", "case_id", type=int, help="Only this case's entries.")
@output_options("table", "json", "csv")
@click.option("--json", "as_json", is_flag=True, hidden=True, help="As --format json.")
def log_show(
    config_path: Path,
    action: str | None,
    actor: str | None,
    since: str | None,
    case_id: int | None,
    fmt: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """List audit-log entries, filtered. JSON is JSON Lines: one entry per line, with
    its hashes, as `jq` reads it."""

    config = load_config(config_path)
    with open_store(config) as store:
        found = store.audit.entries(action, actor, since, case_id)
    if as_json:
        fmt = "json"
    if fmt == "csv":
        listing = Listing(LOG_COLUMNS, [e.as_dict() for e in found])
        write_output(out, listing.csv())
    else:
        write_output(out, lambda stream: _write_entries(stream, found, fmt))


def _write_entries(stream: TextIO, found: list[Entry], fmt: str) -> None:
    """Entries one line each, as they come: JSON Lines, or the table's line."""
    for entry in found:
        if fmt == "json":
            line = json.dumps(entry.as_dict(), sort_keys=True)
        else:
            details = json.dumps(entry.details, sort_keys=True)
            line = f"{entry.seq:>5}  {entry.at}  {entry.actor}  {entry.action}  {details}"
        stream.write(line + "\n")


@cli.group("privacy")
def privacy_group() -> None:
    """What the deployment collects, keeps and shows."""


@privacy_group.command("inventory")
@config_option
@output_options("markdown", "html")
def privacy_inventory(config_path: Path, fmt: str, out: Path | None) -> None:
    """Print, from the live config and schema, what is collected, kept, and who sees what:
    Markdown for a DPIA or a wiki, HTML as a page of its own to print or attach."""

    text = inventory(load_config(config_path))
    write_output(out, markdown_page(text, "Privacy inventory") if fmt == "html" else text)


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1a1a1a}table{border-collapse:collapse;margin:1rem 0}"
    "th,td{border:1px solid #bbb;padding:.3rem .6rem;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}code{background:#f4f4f4;padding:0 .2rem}"
    "@media print{body{margin:0;max-width:none}}"
)


def markdown_page(markdown: str, title: str) -> str:
    """A Markdown document as a self-contained HTML page (no script, no outside file).

    HTML written in the Markdown is shown as text, never interpreted, and no link to a
    ``javascript:``, ``file:`` or ``data:`` address is made: the document quotes names
    from the configuration.
    """
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_PAGE_STYLE}</style>\n"
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )
