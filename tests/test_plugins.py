"""Registries: a third-party package installed with pip enters them as the built-ins do.

The package below is a real distribution (pyproject, entry points), installed by pip
into a folder of its own; `compliance` runs in its own process with that folder on
its path, so discovery goes through the installed metadata, as in a deployment.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from compliance.errors import ConfigError
from compliance.feeds.formats import FeedFormat
from compliance.plugins import Registry
from compliance.policy.rules import RuleKind
from tests.conftest import TEST_KEY, ps_row, write_ps_export

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "compliance-pipe-log"
version = "1.2.0"

[project.entry-points."compliance.sources"]
pipe-log = "compliance_pipe_log:from_config"

[project.entry-points."compliance.feed_formats"]
tsv = "compliance_pipe_log:Tsv"

[project.entry-points."compliance.rule_kinds"]
volume = "compliance_pipe_log:Volume"

[project.entry-points."compliance.deliveries"]
broken = "compliance_pipe_log_missing:Nothing"
"""

MODULE = '''
"""A gateway that logs `time|sender|recipient|status|size|id`, a feed format of
`domain<TAB>category` lines, and a rule kind on message volume alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from compliance.events import conform_raw
from compliance.feeds import FeedFormat
from compliance.policy.rules import RuleKind, RuleModel
from connectors.base import Chunk, FileOptions, FileUnit, Source, expand_paths, parse_options


class PipeUnit(FileUnit):
    format = "pipe-log"

    def __init__(self, path):
        self.path = path

    def chunks(self) -> Iterator[Chunk]:
        names = ["timestamp", "sender", "recipient", "status", "size", "message_id"]
        frame = pd.read_csv(self.path, sep="|", names=names, dtype=str)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["size"] = pd.to_numeric(frame["size"])
        yield Chunk(conform_raw(frame))


class PipeSource(Source):
    def __init__(self, name, paths):
        super().__init__(name)
        self.paths = paths

    def units(self, state=None):
        return [PipeUnit(p) for p in self.paths]


def from_config(name, options, base_dir):
    settings = parse_options(FileOptions, name, options)
    return PipeSource(name, expand_paths(settings.path, base_dir))


class Tsv(FeedFormat):
    name = "tsv"
    categorised = True

    def rows(self, lines, path):
        for line in lines:
            if line.strip() and not line.startswith("#"):
                domain, _, category = line.partition("\\t")
                yield domain.strip(), category.strip() or None, False


class VolumeRule(RuleModel):
    kind: Literal["volume"]
    min_messages: int = Field(ge=1)


class Volume(RuleKind):
    name = "volume"
    model = VolumeRule
    on_person = True

    def keys(self, rule: Any) -> list[str]:
        return ["person"]

    def ok(self, figures: Any, rule: Any) -> Any:
        return figures.messages >= rule.min_messages
'''

POLICY = """
id: volume
title: Volume of outbound mail to escort sites
version: 1
match: {categories: [escort-ads], evidence: outbound}
rules:
  - {kind: volume, window: 30d, min_messages: 3, severity: high}
privacy: {min_group_size: 1}
"""

CONFIG = """
organisation: {domains: [corp.example]}
sources:
  - {name: gateway, type: pipe-log, path: gateway.log}
feeds:
  - {path: feed.tsv, format: tsv}
policies: [policies]
store: store.db
lint_exceptions:
  - {policy: volume, check: WC004, approved_by: [works-council], approved_on: 2026-11-01,
     reason: a one-team pilot whose report must show the single unit}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin package, installed by pip into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    project = root / "project"
    (project / "compliance_pipe_log").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "compliance_pipe_log" / "__init__.py").write_text(MODULE)
    target = root / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--no-deps",
            "--target", str(target), str(project),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


def _compliance(
    site: Path, *args: str, cwd: Path, plugins: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPLIANCE_NO_PLUGINS"}
    if not plugins:
        env["COMPLIANCE_NO_PLUGINS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(Path(__file__).resolve().parents[1])])
    env["COMPLIANCE_PSEUDONYM_KEY"] = TEST_KEY
    return subprocess.run(
        [sys.executable, "-m", "compliance", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_an_installed_package_is_listed_with_its_origin(installed: Path, tmp_path: Path) -> None:
    done = _compliance(installed, "plugins", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {(r["registry"], r["name"]): r for r in json.loads(done.stdout)}
    assert rows["source", "pipe-log"]["origin"] == "compliance-pipe-log 1.2.0"
    assert rows["feed format", "tsv"]["target"] == "compliance_pipe_log:Tsv"
    assert rows["rule kind", "volume"]["builtin"] is False
    assert rows["source", "m365"]["origin"] == "built-in"
    # nothing is imported to list it: the broken delivery is listed, not loaded
    assert ("delivery", "broken") in rows


def test_check_names_the_entry_that_cannot_load(installed: Path, tmp_path: Path) -> None:
    done = _compliance(installed, "plugins", "--check", cwd=tmp_path)
    assert done.returncode == 2
    assert "delivery 'broken' of compliance-pipe-log 1.2.0 cannot be loaded" in done.stderr
    assert "ModuleNotFoundError" in done.stderr


def _deployment(folder: Path) -> Path:
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "volume.yaml").write_text(POLICY)
    (folder / "feed.tsv").write_text("# domain\tcategory\nescort-ads.test\tescort-ads\n")
    lines = [
        f"2026-10-0{day}T10:00:00Z|user{n:03d}@corp.example|booking{n}@escort-ads.test|"
        f"Delivered|2000|<m{day}-{n}@corp.example>"
        for day in (1, 2, 3)
        for n in (1, 2)
    ]
    # one person writes three times, another twice; a third only receives
    lines[4:] = [lines[4].replace("user002", "user001")]
    lines.append("2026-10-04T10:00:00Z|ads@escort-ads.test|user003@corp.example|Delivered|900|<x>")
    (folder / "gateway.log").write_text("\n".join(lines) + "\n")
    config = folder / "compliance.yaml"
    config.write_text(CONFIG)
    return config


def test_a_plugin_source_feed_format_and_rule_kind_run_an_audit(
    installed: Path, tmp_path: Path
) -> None:
    config = _deployment(tmp_path)
    done = _compliance(
        installed, "audit", "--config", str(config), "--source", "gateway",
        "--since", "2026-10-01", "--until", "2026-10-04", "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    alerts = report["alerts"]
    assert [(a["rule"], a["messages"]) for a in alerts] == [("volume", 3)]
    assert report["events"] == 6


def test_without_plugins_the_same_config_names_what_is_missing(
    installed: Path, tmp_path: Path
) -> None:
    config = _deployment(tmp_path)
    done = _compliance(
        installed, "audit", "--config", str(config), "--source", "gateway", cwd=tmp_path,
        plugins=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "unknown feed format" in done.stderr or "unknown type 'pipe-log'" in done.stderr


def test_two_packages_claiming_one_name_are_refused() -> None:
    registry: Registry[object] = Registry("type", "compliance.none", "a thing")
    registry.register("x", object())
    assert registry.names() == ["x"]
    with pytest.raises(ConfigError, match="unknown type 'y'; known types: x"):
        registry.get("y")


def test_every_builtin_is_declared_as_an_entry_point() -> None:
    """Built-ins register only through pyproject's entry points: one left out there would
    simply not exist once installed. Every source module, every concrete feed format and
    every rule kind of the code must be declared, and nothing else."""
    root = Path(__file__).resolve().parents[1]
    points = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    sources = {p.stem for p in (root / "connectors").glob("*.py")} - {
        "__init__", "base", "textfile", "graph", "directory", "entra", "logfiles", "testing",
        "common", "csvsplit",
    }  # fmt: skip
    assert {v.split(":")[0] for v in points["compliance.sources"].values()} == {
        f"connectors.{s}" for s in sources
    }
    rule_modules = [
        f"compliance.policy.rules.{p.stem}"
        for p in (root / "compliance" / "policy" / "rules").glob("*.py")
        if p.stem not in ("__init__", "base")
    ]
    for group, base, modules in (
        ("compliance.feed_formats", FeedFormat, ["compliance.feeds.formats"]),
        ("compliance.rule_kinds", RuleKind, rule_modules),
    ):
        found = {
            f"{module}:{name}"
            for module in modules
            for name, value in vars(importlib.import_module(module)).items()
            if isinstance(value, type)
            and issubclass(value, base)
            and value is not base
            and not inspect.isabstract(value)
            and value.__module__ == module
        }
        assert set(points[group].values()) == found, group
        assert all(
            target.endswith(f":{name.title()}") or name for name, target in points[group].items()
        )


def _distribution(site: Path, name: str, points: dict[str, dict[str, str]], code: str) -> None:
    """An installed distribution as pip leaves it: a module and its dist-info metadata."""
    module = name.replace("-", "_")
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {module}:{v}\n" for k, v in entries.items())
            for group, entries in points.items()
        )
    )


TSV = """
from compliance.feeds import FeedFormat

class Tsv(FeedFormat):
    name = "tsv"

    def rows(self, lines, path):
        return []

class Plain(Tsv):
    name = "plain"
"""


def test_two_plugins_claiming_one_name_are_refused_and_the_rest_works(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for name in ("tsv-one", "tsv-two"):
        _distribution(site, name, {"compliance.feed_formats": {"tsv": "Tsv"}}, TSV)
    listed = _compliance(site, "plugins", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["registry"] == "feed format"]
    conflicts = [r for r in rows if r["name"] == "tsv"]
    assert len(conflicts) == 2
    assert all("declared by both tsv-one 0.1" in r["conflict"] for r in conflicts)
    assert {"plain", "csv", "hosts"} <= {r["name"] for r in rows if r["conflict"] is None}
    checked = _compliance(site, "plugins", "--check", cwd=tmp_path)
    assert checked.returncode == 2
    assert "feed format 'tsv' is declared by both" in checked.stderr
    # a feed of another format, detected, still loads
    job = tmp_path / "job"
    job.mkdir()
    (job / "feed.txt").write_text("escort-ads.test\n")
    write_ps_export(
        job / "trace.csv",
        [ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "a@escort-ads.test", index=1)],
    )
    audited = _compliance(
        site, "audit", "--logs", str(job / "trace.csv"), "--feed", f"{job / 'feed.txt'}:escort-ads",
        "--policies", str(Path(__file__).resolve().parents[1] / "policies"),
        "--org-domain", "corp.example", cwd=tmp_path,
    )  # fmt: skip
    assert audited.returncode == 0, audited.stderr


def test_a_plugin_cannot_replace_a_builtin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _distribution(site, "plain-again", {"compliance.feed_formats": {"plain": "Plain"}}, TSV)
    done = _compliance(site, "plugins", "--format", "json", cwd=tmp_path)
    rows = {
        (r["name"], r["origin"]): r
        for r in json.loads(done.stdout)
        if r["registry"] == "feed format"
    }
    assert rows["plain", "built-in"]["shadowed"] is False
    assert rows["plain", "plain-again 0.1"]["shadowed"] is True


def test_a_broken_rule_kind_fails_only_what_uses_it(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _distribution(
        site,
        "broken-kind",
        {"compliance.rule_kinds": {"burst": "Burst"}},
        "raise RuntimeError('this plugin cannot be imported')\n",
    )
    assert _compliance(site, "--help", cwd=tmp_path).returncode == 0
    root = Path(__file__).resolve().parents[1]
    linted = _compliance(site, "policy", "lint", str(root / "policies"), cwd=tmp_path)
    assert linted.returncode == 0, linted.stderr
    checked = _compliance(site, "plugins", "--check", cwd=tmp_path)
    assert checked.returncode == 2
    assert "rule kind 'burst' of broken-kind 0.1 cannot be loaded" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_a_rule_kind_must_be_named_as_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    code = MODULE.replace('name = "volume"', 'name = "volume2"')
    _distribution(site, "misnamed", {"compliance.rule_kinds": {"volume": "Volume"}}, code)
    checked = _compliance(site, "plugins", "--check", cwd=tmp_path)
    assert checked.returncode == 2
    assert "its name is 'volume2', its entry point's 'volume'" in checked.stderr


def test_connectors_of_the_old_entry_point_group_still_load(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _distribution(site, "old-style", {"compliance.connectors": {"pipe-log": "from_config"}}, MODULE)
    done = _compliance(site, "-v", "plugins", "--format", "json", cwd=tmp_path)
    assert any(
        r["registry"] == "source" and r["name"] == "pipe-log" for r in json.loads(done.stdout)
    )
    assert "old entry-point group compliance.connectors" in done.stderr
