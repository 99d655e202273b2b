"""The example deployments of examples/ stay true: every config loads, every policy passes
lint and its tests, and the exports-folder example runs end to end as its README says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/compliance.yaml"))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_there_are_the_three_examples() -> None:
    assert {c.parent.name for c in CONFIGS} == {"m365-only", "exports-folder", "dask"}
    for config in CONFIGS:
        assert (config.parent / "README.md").is_file()
        assert f"({config.parent.name}/README.md)" in (EXAMPLES / "README.md").read_text()


@pytest.mark.parametrize("config", CONFIGS, ids=[c.parent.name for c in CONFIGS])
def test_every_example_config_loads_and_its_policies_pass_lint_and_their_tests(
    config: Path,
) -> None:
    loaded = load_config(config)
    policies = [loaded.path(p) for p in loaded.policies]
    # the config-dependent checks read the directory: an Entra one from Graph, a file on
    # the deployment's server (the dask example's): those run where they are deployed
    here = isinstance(loaded.directory, str) and loaded.path(loaded.directory).exists()
    with_config = ["--config", str(config)] if here else []
    code, output = invoke("policy", "lint", *map(str, policies), *with_config)
    assert code == 0, output
    assert "0 error(s), 0 warning(s)" in output
    code, output = invoke("policy", "test", *map(str, policies))
    assert code == 0, output
    for spec in loaded.feed_specs():  # every feed it names is there
        assert spec.path.exists(), spec.path


def test_the_exports_folder_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    folder = tmp_path / "exports-folder"
    shutil.copytree(EXAMPLES / "exports-folder", folder)
    config = str(folder / "compliance.yaml")
    code, output = invoke("run", "--config", config, "--today", "2026-11-20")
    assert code == 0, output
    code, output = invoke("alerts", "list", "--config", config, "--format", "json")
    assert code == 0, output
    alerts = json.loads(output)["alerts"]
    # the person who wrote to the dating site on three days, with its replies
    assert [(a["rule_id"], a["messages"], a["days"]) for a in alerts] == [
        ("repeated-contact", 6, 3)
    ]
    assert "one person alert" in (EXAMPLES / "exports-folder" / "README.md").read_text()
