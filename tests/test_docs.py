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


def _options() -> list[str]:
    from compliance.config import Accountability, Privacy, Reports, Retention, Schedule

    names = {*M365Options.model_fields, *EntraDirectory.model_fields} - {"type"}
    names |= {f for f in Config.model_fields if f not in ("base_dir", "file")}
    for section in (Accountability, Privacy, Reports, Retention, Schedule):
        names |= set(section.model_fields)
    return sorted(names)


@pytest.mark.parametrize("option", _options())
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


def test_the_privacy_inventory_describes_every_table_and_the_live_settings(
    tmp_path: Path,
) -> None:
    from compliance.config import load_config
    from compliance.inventory import TABLES, inventory, schema

    assert set(schema()) == set(TABLES)
    example = Path(__file__).resolve().parents[1] / "ops" / "compliance.example.yaml"
    config = tmp_path / "compliance.yaml"
    config.write_text(
        example.read_text()
        + "accountability: {approvers: [dpo, works-council], min_approvals: 2}\n"
        + "privacy: {key_rotation: monthly}\n"
    )
    text = inventory(load_config(config))
    for table in TABLES:
        assert f"`{table}`" in text
    assert "dpo, works-council" in text
    assert "**monthly**" in text
    assert "| `events` | pseudonymous |" in text
    assert "180 days" in text


def test_privacy_doc_names_every_setting_it_relies_on() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "PRIVACY.md").read_text()
    for setting in (
        "privacy.key_rotation",
        "accountability.min_approvals",
        "accountability.approvers",
        "accountability.identity",
        "reports.min_group_size",
        "reports.epsilon",
        "reports.message_cap",
        "reports.dp_budget",
        "retention.events_days",
        "retention.alerts_days",
        "retention.cases_days",
        "retention.dedup_days",
    ):
        assert setting in doc, setting
