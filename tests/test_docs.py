"""The README documents every command and every source and config option.

The rules are strict, so that a name mentioned in passing does not count:

- a config option is documented by a row of a Markdown table, under the heading of its
  section, whose first cell holds the option as a code span (`` | `dir` | ``);
- a command is documented by a row of the table under "Commands" whose first cell is its
  synopsis (`` | `compliance alerts list --config FILE [--state S]...` | ``); the rows of one
  command together name each of its options, and name no option it does not have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import click
import pytest

from compliance.cli import cli, load_commands
from compliance.config import (
    Accountability,
    Config,
    Engine,
    EntraDirectory,
    FeedConfig,
    Ingest,
    Privacy,
    Reports,
    ReportSchedule,
    Retention,
    Schedule,
)
from compliance.deliveries.graph_mail import GraphMailOptions
from compliance.deliveries.smtp import SmtpOptions
from compliance.deliveries.syslog import SyslogOptions
from compliance.deliveries.webhook import TeamsOptions, WebhookOptions
from connectors.base import SOURCES, source_type
from connectors.exchange import ExchangeOptions
from connectors.generic import GenericOptions
from connectors.m365 import M365Options
from tests.markdown import (
    documented_command,
    first_cell_names,
    guide,
    option_names,
    section,
)

load_commands()  # the command line loads a command's module when it is used: all, here

#: the README and the guide pages its sections moved to (tests/markdown.py GUIDE_PAGES)
README = guide()


def _commands(group: click.Group, prefix: str = "compliance") -> dict[str, click.Command]:
    """Every command and group by its full name, the root (``compliance``) included."""
    out: dict[str, click.Command] = {prefix: group}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out.update(_commands(command, f"{prefix} {name}"))
        else:
            out[f"{prefix} {name}"] = command
    return out


COMMANDS = _commands(cli)
#: commands that run: every one that is not a group, and a group that runs without a
#: subcommand too (`compliance report`)
LEAVES = [
    name
    for name, c in COMMANDS.items()
    if not isinstance(c, click.Group) or c.invoke_without_command
]


def _options_of(command: click.Command) -> set[str]:
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
    }


def _command_rows(markdown: str) -> dict[str, list[str]]:
    """The synopses of the Commands table, by the command each one documents."""
    out: dict[str, list[str]] = {}
    for synopsis in first_cell_names(section(markdown, "Commands")):
        command = documented_command(synopsis, COMMANDS)
        out.setdefault(command or "", []).append(synopsis)
    return out


@pytest.mark.parametrize("command", ["compliance", *LEAVES])
def test_every_command_and_its_options_are_in_the_readme(command: str) -> None:
    synopses = _command_rows(README).get(command)
    assert synopses, f"no row of the Commands table starts with `{command}"
    named = set().union(*map(option_names, synopses))
    missing = _options_of(COMMANDS[command]) - named
    assert not missing, f"`{command}`: options missing from its rows: {sorted(missing)}"


def test_the_commands_table_names_only_commands_and_options_that_exist() -> None:
    help_names = {"-h", "--help"}
    for command, synopses in _command_rows(README).items():
        for synopsis in synopses:
            assert command in ("compliance", *LEAVES), f"`{synopsis}` names no command"
            rest = synopsis.split()[len(command.split()) :]
            assert not (rest and re.fullmatch(r"[a-z][a-z0-9-]*", rest[0])), (
                f"`{synopsis}`: no command `{command} {rest[0]}`"
            )
            unknown = option_names(synopsis) - _options_of(COMMANDS[command]) - help_names
            assert not unknown, f"`{synopsis}`: `{command}` has no {sorted(unknown)}"


# ---------------------------------------------------------------------------------------
# Config and source options, by the heading whose table documents them

_SECTIONS: dict[str, Iterable[str]] = {
    "Configuration and deployment": [
        f for f in Config.model_fields if f not in ("base_dir", "file")
    ],
    "Exchange Online exports": ExchangeOptions.model_fields,  # `path` included
    "Any other mail log": GenericOptions.model_fields,  # `path` included
    "Feeds": FeedConfig.model_fields,
    "`engine`": Engine.model_fields,
    "`reports`": Reports.model_fields,
    "`schedule`": Schedule.model_fields,
    "`retention`": Retention.model_fields,
    "`privacy`": Privacy.model_fields,
    "`accountability`": Accountability.model_fields,
    "`ingest`": Ingest.model_fields,
    "SMTP": SmtpOptions.model_fields,
    "Webhook": WebhookOptions.model_fields,
    "Microsoft Teams": TeamsOptions.model_fields,
    "Syslog (SIEM)": SyslogOptions.model_fields,
    "Microsoft Graph sendMail": GraphMailOptions.model_fields,
    "Report schedules": ReportSchedule.model_fields,
    "Microsoft 365": M365Options.model_fields,
    "Directory from Entra ID": EntraDirectory.model_fields,
}


def _options() -> list[tuple[str, str]]:
    return [(heading, name) for heading, names in _SECTIONS.items() for name in sorted(names)]


@pytest.mark.parametrize(
    ("heading", "option"), _options(), ids=[f"{h.strip('`')}:{o}" for h, o in _options()]
)
def test_every_option_is_in_the_readme(heading: str, option: str) -> None:
    assert option in first_cell_names(section(README, heading)), (
        f"no table row under the heading {heading!r} starts with `{option}`"
    )


# ---------------------------------------------------------------------------------------
# The rules reject what the old substring checks let through

_SAMPLE = """\
# Tool

Run `compliance alerts list --config FILE` to see alerts; `dir` is where reports go.

## Commands

| command | what it does |
|---|---|
| `compliance audit --logs FILE [--feed-cache DIR] [--format table\\|json]` | an audit |
| `compliance alerts listing --config FILE` | not a command of ours |

```
| `compliance alerts list --config FILE` | in a code block |
```

## Configuration

| section | keys |
|---|---|
| `reports` | `dir`, `period`: where reports go |
| `directory` | a CSV path |

### `reports`

| key | meaning |
|---|---|
| `period` | days per report |

| `formats` | a row without a table |

### `schedule`

| key | meaning |
|---|---|
| `dir` | under the wrong heading |
"""


def test_an_option_inside_a_longer_word_is_not_documented() -> None:
    assert "dir" in _SAMPLE  # the old substring check passed: "directory"
    assert "dir" not in first_cell_names(section(_SAMPLE, "Configuration"))
    assert "directory" in first_cell_names(section(_SAMPLE, "Configuration"))


def test_an_option_in_prose_a_later_cell_or_another_section_is_not_documented() -> None:
    reports = first_cell_names(section(_SAMPLE, "`reports`"))
    assert reports == ["period"]  # `dir` is only in prose, a second cell and `schedule`
    assert "formats" not in reports  # a lone row is no table
    assert "dir" in first_cell_names(section(_SAMPLE, "`schedule`"))
    with pytest.raises(AssertionError, match="0 headings"):
        section(_SAMPLE, "`retention`")


def test_a_command_in_prose_or_a_code_block_is_not_documented() -> None:
    commands = ["compliance", "compliance alerts list", "compliance audit"]
    synopses = first_cell_names(section(_SAMPLE, "Commands"))
    assert [documented_command(s, commands) for s in synopses] == ["compliance audit", "compliance"]
    assert synopses[0] == "compliance audit --logs FILE [--feed-cache DIR] [--format table|json]"


def test_an_option_is_not_documented_by_a_longer_one() -> None:
    named = option_names("compliance audit --logs FILE [--feed-cache DIR] [-v|--verbose]")
    assert named == {"--logs", "--feed-cache", "-v", "--verbose"}
    assert "--feed" not in named
    assert option_names("compliance run --today 2026-10-30") == {"--today"}


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


# ---------------------------------------------------------------------------------------
# Every source type has a page of its own (or a README section) naming every option

SOURCE_PAGES = Path(__file__).resolve().parents[1] / "docs" / "sources"
#: source types documented in the README itself (their options are checked above)
README_SOURCES = {"exchange", "generic", "m365"}


def _builtin_source_types() -> list[str]:
    return [e.name for e in SOURCES.entries() if e.origin == "built-in" and not e.shadowed]


@pytest.mark.parametrize("kind", _builtin_source_types())
def test_every_source_type_is_documented_with_every_option(kind: str) -> None:
    if kind in README_SOURCES:
        return
    page = SOURCE_PAGES / f"{kind}.md"
    assert page.is_file(), f"source type {kind!r} has no page docs/sources/{kind}.md"
    documented = set(first_cell_names(page.read_text(encoding="utf-8").splitlines()))
    missing = set(source_type(kind).options) - documented
    assert not missing, f"docs/sources/{kind}.md: no table row for {sorted(missing)}"
    assert f"(sources/{kind}.md)" in README, f"the guide does not link {kind}'s page"
