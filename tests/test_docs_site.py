"""The documentation site builds without a warning, and its references are complete.

The site is built as a user or CI builds it: the real ``mkdocs build --strict`` of the
environment, in a subprocess, with the project's ``mkdocs.yml``. Its configuration and
command-line references are generated from the code at build time
(``docs/hooks/reference.py``); these tests walk the click commands and the pydantic models
on their own and look for each command, option and key in the built HTML, by its anchor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import click
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from compliance.cli import cli, load_commands
from compliance.config import Config
from compliance.delivery import DELIVERIES
from compliance.secrets import SecretRef
from connectors.base import SOURCES

load_commands()  # the command line loads a command's module when it is used: all, here

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).parent / "mkdocs"


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``."""
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as the project's mkdocs.yml builds it."""
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    return out


class _Entries(HTMLParser):
    """Every id of a page, with the text of the table row or heading that holds it."""

    BLOCKS = frozenset({"tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self._block: tuple[str, list[str], list[str]] | None = None  # tag, ids, text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag in ("td", "th") and self._block is not None:
            self._block[2].append(" ")  # cells apart
        if tag in self.BLOCKS:
            self._block = (tag, [ident] if ident else [], [])
        elif ident:
            if self._block is not None:
                self._block[1].append(ident)
            else:
                self.text[ident] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._block is not None and tag == self._block[0]:
            words = " ".join("".join(self._block[2]).split())
            for ident in self._block[1]:
                assert ident not in self.text, f"the id {ident!r} is used twice"
                self.text[ident] = words
            self._block = None

    def handle_data(self, data: str) -> None:
        if self._block is not None:
            self._block[2].append(data)


def entries(page: Path) -> dict[str, str]:
    """Each id of a built page, with the text of its row or heading."""
    parser = _Entries()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.text


def plain(value: str) -> str:
    """Text as the HTML shows it: no Markdown code marks, one space between words."""
    return " ".join(value.replace("`", "").split())


# --- the command line -------------------------------------------------------------------


def commands(
    command: click.Command, path: tuple[str, ...] = ("compliance",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every visible command, the program first, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from commands(sub, (*path, name))


def test_the_site_builds_without_a_warning(site: Path) -> None:
    for page in ("index", "getting-started", "concepts", "deployment"):
        assert (site / ("" if page == "index" else page) / "index.html").is_file(), page
    assert (site / "reference" / "config" / "index.html").is_file()
    assert (site / "reference" / "cli" / "index.html").is_file()
    assert not (site / "hooks").exists(), "the hook module is published with the site"


def test_every_command_and_option_has_an_entry_in_the_cli_reference(site: Path) -> None:
    found = entries(site / "reference" / "cli" / "index.html")
    missing: list[str] = []
    checked = 0
    for path, command in commands(cli):
        ident = "-".join(path)
        if " ".join(path) not in found.get(ident, ""):
            missing.append(f"command {' '.join(path)} (#{ident})")
        for param in command.params:
            if isinstance(param, click.Option):
                if param.hidden:
                    continue
                option = f"{ident}--{max(param.opts, key=len).lstrip('-/')}"
                row = found.get(option)
                names = [*param.opts, *param.secondary_opts]
                if row is None or not all(n in row for n in names):
                    missing.append(f"option {' '.join(path)} {'/'.join(names)} (#{option})")
                elif param.help and plain(param.help) not in row:
                    missing.append(f"help of {' '.join(path)} {names[-1]}: {row!r}")
            elif f"{ident}-arg-{param.name}" not in found:
                missing.append(f"argument {' '.join(path)} {param.name}")
            checked += 1
    assert checked > 50, "the command tree was not walked"
    assert not missing, "not in the built CLI reference:\n" + "\n".join(missing)


def test_a_hidden_option_is_left_out_of_the_cli_reference(site: Path) -> None:
    hidden = [
        ("-".join(path), p)
        for path, c in commands(cli)
        for p in c.params
        if isinstance(p, click.Option) and p.hidden
    ]
    found = entries(site / "reference" / "cli" / "index.html")
    for ident, param in hidden:
        assert f"{ident}--{max(param.opts, key=len).lstrip('-/')}" not in found


# --- the configuration --------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's value may be (a secret reference is documented once)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [] if annotation is SecretRef else [annotation]
    if get_origin(annotation) is Annotated:
        return _models(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType, list, tuple, dict, set):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key of ``model`` by its dotted path, nested models' keys included."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{field.alias or name}"
        yield path, field
        for nested in _models(field.annotation):
            yield from keys(nested, f"{path}.")


def every_config_key() -> Iterator[tuple[str, FieldInfo]]:
    """The configuration's keys, each built-in source type's and delivery's options, and
    the keys of a secret reference."""
    yield from keys(Config)
    for path, registry in (("sources", SOURCES), ("deliveries", DELIVERIES)):
        for entry in registry.entries():
            if not entry.builtin or entry.shadowed:
                continue
            model = getattr(registry.get(entry.name), "options_model", None)
            assert model is not None, f"{path} type {entry.name} declares no options model"
            yield from keys(model, f"{path}.{entry.name}.")
    yield from keys(SecretRef, "secret-references.")


def test_every_config_key_has_an_entry_in_the_config_reference(site: Path) -> None:
    found = entries(site / "reference" / "config" / "index.html")
    missing: list[str] = []
    every = list(every_config_key())
    for path, field in every:
        entry = found.get(path)
        name = path.rsplit(".", 1)[-1]
        if entry is None or name not in entry:
            missing.append(f"{path}: no entry")
        elif _models(field.annotation):
            continue  # a mapping: its entry is the heading of its section
        elif field.is_required() and "required" not in entry:
            missing.append(f"{path}: not marked required: {entry!r}")
        elif field.description and plain(field.description)[1:] not in entry:
            missing.append(f"{path}: description missing: {entry!r}")
    assert len(every) > 150, "the models were not walked"
    assert {"sources.m365.tenant_id", "deliveries.smtp.host", "reports.schedules.period"} <= {
        path for path, _ in every
    }
    assert not missing, "not in the built configuration reference:\n" + "\n".join(missing)


def test_every_config_key_says_what_it_means() -> None:
    """The reference takes each key's meaning from its model: a key whose field has no
    description (and is not a mapping described by its own model) is listed bare."""
    bare = [
        path
        for path, field in every_config_key()
        if not (field.description or "").strip() and not _models(field.annotation)
    ]
    assert not bare, "config keys without a Field(description=...):\n" + "\n".join(bare)


# --- the pages ------------------------------------------------------------------------------

_EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```\w*\n(.*?)\n```", re.DOTALL)


def test_the_deployment_page_quotes_the_ops_files_as_they_are() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    excerpts = _EXCERPT.findall(page)
    assert len(excerpts) >= 7, "an excerpt lost its marker"
    wrong = [
        f"{name}: {line!r}"
        for name, block in excerpts
        for line in block.splitlines()
        if line.strip()
        and line.rstrip() not in (ROOT / name).read_text(encoding="utf-8").splitlines()
    ]
    assert not wrong, "lines of docs/deployment.md not in the file they quote:\n" + "\n".join(wrong)


def test_a_broken_link_or_a_page_left_out_of_the_nav_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    for watched in ("compliance", "connectors", "ops"):  # mkdocs.yml's `watch`
        (tmp_path / watched).symlink_to(ROOT / watched)
    (tmp_path / "docs" / "orphan.md").write_text("# Not in the nav\n", encoding="utf-8")
    concepts = tmp_path / "docs" / "concepts.md"
    concepts.write_text(
        concepts.read_text(encoding="utf-8")
        + "\nSee [the period](reference/config.md#reports.no_such_key).\n",
        encoding="utf-8",
    )
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "orphan.md" in log
    assert "reports.no_such_key" in log
