"""`policy lint|test|schema`: for policy authors; no key or data needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from compliance.cli import cli
from compliance.errors import PolicyError
from compliance.policy.lint import warnings_for
from compliance.policy.loader import LoadedPolicy, load_policies
from compliance.policy.model import Policy
from compliance.policy.testing import run_tests


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


@policy.command("lint")
@paths_argument
def policy_lint(paths: tuple[Path, ...]) -> None:
    """Validate policy files; every problem is printed with file, line and field."""

    loaded = _load(paths)
    for lp in loaded:
        for warning in warnings_for(lp):
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"ok: {lp.path} ({lp.policy.id} v{lp.policy.version})")


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
        sys.exit(1)


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of policy files (for editors)."""

    click.echo(json.dumps(Policy.model_json_schema(), indent=2))
