"""`policy lint|test|schema|new`: for policy authors; no key or data needed.

`policy lint --config FILE` reads the configuration for the checks that need it (the
organisation's domains, the feeds' categories, the directory's headcounts) and its
approved exceptions; without it those checks are reported as not run.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from compliance.cli import cli, format_option, out_option, write_output
from compliance.config import Config, load_config
from compliance.directory import Directory
from compliance.errors import ConfigError, ExitCode, PolicyError, Problem
from compliance.feeds import load_feeds
from compliance.job import directory_for
from compliance.policy.lint import (
    CHECKS,
    Approval,
    Finding,
    LintContext,
    LintResult,
    feed_categories,
    lint_policies,
)
from compliance.policy.loader import LoadedPolicy, load_policies
from compliance.policy.model import SCHEMA_FILE, schema_text
from compliance.policy.testing import run_tests
from compliance.yamlfile import locate, parse_yaml, read_yaml_text
from connectors.directory import load_directory


@cli.group()
def policy() -> None:
    """Check and test policy files (no key or data needed)."""


paths_argument = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)


def _load(paths: tuple[Path, ...]) -> list[LoadedPolicy]:
    """The policies, or every problem printed as ``file:line: field: message`` and exit 3."""
    try:
        return load_policies(list(paths))
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(f"{problem}", err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(exc.exit_code)


# --- lint -------------------------------------------------------------------------------


def _headcounts(config: Config) -> dict[str, int] | None:
    """People per org unit from the configured directory, or None without one."""
    found = directory_for(config)
    if found is None:
        return None
    directory = found if isinstance(found, Directory) else load_directory(found)
    return dict(directory.headcounts)


def _context(config: Config | None) -> LintContext:
    """What the config-dependent checks need: all unknown without a config."""
    if config is None:
        reason = "needs the configuration: run with --config"
        return LintContext(
            missing={n: reason for n in ("org_domains", "feed_categories", "headcounts")}
        )
    cache = config.feed_cache_folder()  # reused when there, never made by a lint
    _index, infos = load_feeds(config.feed_specs(), cache if cache and cache.is_dir() else None)
    headcounts = _headcounts(config)
    return LintContext(
        org_domains=list(config.organisation.domains),
        feed_categories=feed_categories(infos),
        headcounts=headcounts,
        missing={"headcounts": "the configuration has no directory: scope not checked"},
    )


def _approvals(config: Config | None) -> list[Approval]:
    """The config's approved exceptions, each with its file and line."""
    if config is None or not config.lint_exceptions or config.file is None:
        return []
    text, _ = read_yaml_text(config.file)
    _data, lines = parse_yaml(text, str(config.file))
    return [
        Approval.of(item, str(config.file), locate(lines, ("lint_exceptions", i)))
        for i, item in enumerate(config.lint_exceptions)
    ]


def _not_run_lines(findings: list[Finding]) -> list[str]:
    """One line per reason: the checks that did not run, and why."""
    by_reason: dict[str, list[str]] = {}
    for f in findings:
        if f.severity == "not-run" and f.check not in by_reason.setdefault(f.message, []):
            by_reason[f.message].append(f.check)
    return [f"not run: {', '.join(sorted(ids))} ({why})" for why, ids in by_reason.items()]


def _print_text(loaded: list[LoadedPolicy], result: LintResult) -> None:
    shown = [f for f in result.open if f.severity != "not-run"]
    for lp in loaded:
        path = str(lp.path)
        for finding in [f for f in shown if f.path == path] + [
            f for f in result.excepted if f.path == path
        ]:
            click.echo(str(finding))
    for finding in shown:  # stale approvals: in the config file
        if finding.path not in {str(lp.path) for lp in loaded}:
            click.echo(str(finding))
    for line in _not_run_lines(result.open):
        click.echo(line)
    for lp in loaded:
        errors = [f for f in result.errors if f.path == str(lp.path)]
        head = f"{lp.path} ({lp.policy.id} v{lp.policy.version})"
        click.echo(f"refused: {head}: {len(errors)} error(s)" if errors else f"ok: {head}")
    warnings = sum(f.severity == "warning" for f in result.open)
    click.echo(
        f"{len(result.errors)} error(s), {warnings} warning(s), {len(result.excepted)} excepted"
    )


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "path": problem.path,
        "line": problem.line,
        "severity": "error",
        "check": None,
        "title": "the policy is not valid",
        "policy": None,
        "rule": None,
        "subject": problem.field,
        "message": problem.message,
        "excepted": None,
        "column": problem.column,
    }


def _print_json(result: LintResult | None, problems: list[Problem]) -> None:
    findings = [_problem_dict(p) for p in problems]
    if result is not None:
        findings += [f.as_dict() for f in result.open if f.severity != "not-run"]
        findings += [f.as_dict() for f in result.excepted]
    not_run = sorted({f.check for f in result.open if f.severity == "not-run"}) if result else []
    errors = len(problems) + (len(result.errors) if result else 0)
    click.echo(
        json.dumps(
            {
                "findings": findings,
                "not_run": not_run,
                "errors": errors,
                "warnings": sum(f["severity"] == "warning" for f in findings),
                "excepted": len(result.excepted) if result else 0,
            },
            indent=2,
        )
    )


def _explain(check_id: str) -> None:
    found = CHECKS.get(check_id.strip().upper())
    if found is None:
        raise ConfigError(
            f"--explain {check_id}: no such check (known: {', '.join(CHECKS)}; "
            "list them with --checks)"
        )
    click.echo(f"{found.id} ({found.severity}): {found.title}")
    click.echo()
    click.echo(textwrap.fill(found.rationale, 88))
    click.echo()
    click.echo(textwrap.fill(f"When an exception may be approved: {found.exception_note}.", 88))
    if found.severity == "error":
        click.echo("Record one in the configuration (it is written to the audit log):")
        click.echo()
        click.echo("  lint_exceptions:")
        click.echo(f"    - {{policy: POLICY-ID, check: {found.id}, rule: RULE-ID,")
        click.echo("       approved_by: [works-council], approved_on: 2026-11-30,")
        click.echo('       reason: "why it is justified, in a sentence"}')


@policy.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration (compliance.yaml): runs the checks that need the organisation's "
    "domains, the feeds and the directory, and applies its approved exceptions.",
)
@format_option("text", "json")
@click.option("--checks", "list_checks", is_flag=True, help="List the checks and exit.")
@click.option("--explain", "explain", metavar="ID", help="Explain one check (WC003) and exit.")
def policy_lint(
    paths: tuple[Path, ...],
    config_path: Path | None,
    fmt: str,
    list_checks: bool,
    explain: str | None,
) -> None:
    """Validate policy files and run the works-council checks; exit 3 on any error no
    approved exception covers (warnings never fail)."""

    if list_checks:
        for c in CHECKS.values():
            needs = "  (needs --config)" if c.needs else ""
            click.echo(f"{c.id}  {c.severity:<7}  {c.title}{needs}")
        return
    if explain is not None:
        _explain(explain)
        return
    if not paths:
        raise click.UsageError("give at least one policy file or folder (or --checks)")
    if fmt == "json":
        try:
            loaded = load_policies(list(paths))
        except PolicyError as exc:
            _print_json(None, exc.problems)
            sys.exit(exc.exit_code)
    else:
        loaded = _load(paths)
    config = load_config(config_path) if config_path is not None else None
    result = lint_policies(loaded, _context(config), _approvals(config))
    if fmt == "json":
        _print_json(result, [])
    else:
        _print_text(loaded, result)
    if result.errors:
        sys.exit(PolicyError.exit_code)


# --- test -------------------------------------------------------------------------------


@policy.command("test")
@paths_argument
def policy_test(paths: tuple[Path, ...]) -> None:
    """Run the policies' inline tests."""

    loaded = _load(paths)
    failed = total = 0
    for lp in loaded:
        for outcome in run_tests(lp):
            total += 1
            where = f"{outcome.path}:{outcome.line}" if outcome.line else outcome.path
            if outcome.passed:
                click.echo(f"PASS {outcome.policy}: {outcome.name}")
            else:
                failed += 1
                click.echo(f"FAIL {outcome.policy}: {outcome.name} ({where})")
                for problem in outcome.problems:
                    click.echo(f"     {problem}")
    click.echo(f"{total - failed} passed, {failed} failed")
    if failed:
        sys.exit(ExitCode.FAILED)


# --- schema -----------------------------------------------------------------------------


@policy.command("schema")
@out_option
def policy_schema(out: Path | None) -> None:
    """Print the JSON Schema of policy files (for editors); compliance/policy/policy.schema.json
    is the published copy."""

    write_output(out, schema_text())


# --- new --------------------------------------------------------------------------------

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

SKELETON = """\
# yaml-language-server: $schema={schema}
# A new policy. Every field is explained on the line above it; the values below are
# safe starting points that pass works-council lint. Check the file with
#   compliance policy lint {path} --config compliance.yaml
# and run its tests with
#   compliance policy test {path}

# A stable identifier. Alerts and reports refer to the policy by it; never reuse it.
id: {id}
# A one-line title shown in reports.
title: Corporate mail exchanged with {category} sites
# What the policy is for, shown in reports and in the privacy inventory. Say what is
# looked at and why, as you would tell staff and the works council.
description: >
  Flags repeated use of a corporate mailbox with {category} sites, and clusters of
  such use within one team. A single message never raises an alert on a person.
# Raise this number on every change: each alert records the version that raised it.
version: 1
# draft: evaluated and reported, never alerted (start here). active: alerts are raised
# (once the works council has approved the policy). disabled: ignored.
status: draft
# Who answers for this policy.
owner: ethics-office

# Which messages count.
match:
  # What counts against a person. Only what they did is evidence:
  #   outbound     = messages they sent;
  #   conversation = those, and messages received from a site they wrote to within
  #                  reply_window before (a site's replies confirm an exchange);
  #   any          = also messages they only received: NOT recommended (lint warns).
  evidence: conversation
  # How long after a person wrote to a site its messages count as replies (7d, 2w).
  reply_window: 14d
  # attempted = every message they sent counts, even if not delivered; delivered = only
  # delivered ones.
  sent: attempted
  # Feed categories whose domains (and all their subdomains) count. A configured feed
  # must provide each one (lint checks it with --config).
  categories: [{category}]
  # Extra domains that count, besides the feeds. Never a large mail provider or a
  # domain of the organisation itself (lint refuses both).
  domains: []
  # Domains that never count, even when a feed lists them.
  exclude_domains: []

# Which people are covered. A unit covers everything below it ("Legal" covers
# "Legal/Investigations"). Each unit must hold at least min_group_size people.
scope:
  # Only these units; empty means the whole organisation.
  org_units: []
  # Never these units (for example a team that looks at such sites on purpose).
  exclude_org_units: []

# When an alert is raised. Each rule is checked over a sliding window of days (at least
# 7 days: lint refuses shorter ones).
rules:
  # One pseudonymous person in contact repeatedly, on different days.
  - id: repeated-contact
    kind: person
    # The number of days looked at together.
    window: 30d
    # At least this many matching messages in the window (never 1)...
    min_messages: 3
    # ...on at least this many different days (never 1: one burst is not a pattern).
    min_days: 2
    # low, medium, high or critical: decides the order in reports.
    severity: high
  # Several people of one org unit using the same site.
  - id: team-cluster
    kind: cluster
    window: 30d
    # At least this many different people in one unit (3 or more).
    min_people: 3
    # ...who used the same site (registrable domain).
    same_domain: true
    severity: medium

# Protection of small groups.
privacy:
  # Org units with fewer people than this are reported as their parent unit (5 or more).
  min_group_size: 10

# An alert covers an episode: it grows with every later message of the same person (or
# unit) until they have been quiet this long (at least the longest window).
suppress: 30d

# At most this many new alerts a day; the rest wait for the next day (never dropped).
max_alerts_per_day: 20

# Tests run by `compliance policy test`. Events are synthetic; people are labels.
tests:
  - name: repeated contact on two days raises a person alert
    feed: {{{category}: [{category}-site.test]}}
    events:
      - {{day: 2026-11-02, person: a, org_unit: Sales, domain: www.{category}-site.test, count: 2}}
      - {{day: 2026-11-05, person: a, org_unit: Sales, domain: {category}-site.test}}
    expect:
      - {{kind: person, person: a}}
  - name: a single message raises nothing
    feed: {{{category}: [{category}-site.test]}}
    events:
      - {{day: 2026-11-02, person: a, org_unit: Sales, domain: {category}-site.test}}
    expect: []
"""


def skeleton(policy_id: str, category: str, schema: str, path: str) -> str:
    """A documented policy file: every field commented, safe thresholds, inline tests."""
    return SKELETON.format(id=policy_id, category=category, schema=schema, path=path)


@policy.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "policy_id", help="The policy's id (default: the file name).")
@click.option("--category", help="The feed category it matches (default: the policy's id).")
def policy_new(path: Path, policy_id: str | None, category: str | None) -> None:
    """Write a documented policy skeleton that passes lint and its tests; never overwrites."""

    policy_id = policy_id if policy_id is not None else path.stem.lower().replace(" ", "-")
    if not _SLUG.match(policy_id):
        raise ConfigError(
            f"--id {policy_id}: use lower-case letters, digits, '-' and '_' (at most 64)"
        )
    category = category if category is not None else policy_id
    if not _CATEGORY.match(category):
        raise ConfigError(
            f"--category {category}: use lower-case letters, digits, '_', '.' and '-'"
        )
    text = skeleton(policy_id, category, SCHEMA_FILE.resolve().as_posix(), str(path))
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} exists: choose another name (it is never overwritten)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write it: {exc.strerror}") from None
    click.echo(f"wrote {path} ({policy_id}, category {category}, status draft)")
