"""The README documents every command and every source and config option."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from compliance.cli import cli
from compliance.config import Config, EntraDirectory
from connectors.m365 import M365Options

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "compliance") -> list[str]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out.extend(_commands(command, f"{prefix} {name}"))
        else:
            out.append(f"{prefix} {name}")
    return out


@pytest.mark.parametrize("command", _commands(cli))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"`{command}" in README


@pytest.mark.parametrize(
    "option",
    sorted(
        {*M365Options.model_fields, *EntraDirectory.model_fields} - {"type"}
        | {f for f in Config.model_fields if f != "base_dir"}
    ),
)
def test_every_option_is_in_the_readme(option: str) -> None:
    assert f"{option}" in README, option


def test_the_example_config_is_valid() -> None:
    from compliance.config import load_config
    from connectors.base import create_source

    config = load_config(Path(__file__).resolve().parents[1] / "ops" / "compliance.example.yaml")
    assert isinstance(config.directory, EntraDirectory)
    kinds = [
        type(create_source(s.type, s.name, s.options(), config.base_dir)).__name__
        for s in config.sources
    ]
    assert kinds == ["M365Source", "ExchangeExportSource"]
