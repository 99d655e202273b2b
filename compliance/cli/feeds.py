"""`feeds ...`: for feed keepers: where each feed comes from, its versions and updates."""

from __future__ import annotations

from compliance.cli import cli


@cli.group()
def feeds() -> None:
    """Feeds and allow-lists: update, versions, differences and their impact."""
