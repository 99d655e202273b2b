"""The bundled demo: reserved names only, files in sync with their generator, and it runs."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from compliance.cli import cli
from compliance.demo import FILES, bundled, generate

DOMAIN = re.compile(r"@([A-Za-z0-9.-]+)|\b((?:[a-z0-9-]+\.)+(?:example|test|com|net|org|io))\b")


def test_bundled_files_match_their_generator(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == bundled(name), (
            f"regenerate: python -m compliance.demo ({name})"
        )


def test_demo_uses_reserved_names_only() -> None:
    for name in FILES:
        text = bundled(name).decode("utf-8")
        for found in DOMAIN.finditer(text):
            domain = (found.group(1) or found.group(2)).lower().rstrip(".")
            assert domain.endswith((".example", ".test")), (name, domain)


def test_demo_runs_and_tells_its_story(tmp_path: Path, no_key: None) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "alerts 3 (1 new, 1 updated, 1 unchanged)" in result.output
    assert "received only 57" in result.output
    assert "Engineering/Platform" in result.output
    assert (tmp_path / "demo" / "reports" / "report-2026-10-30.html").exists()
    # a second demo starts from a fresh store and says the same
    again = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert again.output == result.output


def test_the_guide_shows_the_demo_as_it_prints(tmp_path: Path, no_key: None) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    printed = result.output.split("\n\ndemo folder")[0].rstrip()
    page = Path(__file__).resolve().parents[1] / "docs" / "alerts.md"
    readme = page.read_text(encoding="utf-8")
    start = readme.index("```\nrun of ") + 4
    shown = readme[start : readme.index("```", start)].rstrip()
    masked = re.sub(r"p-[0-9a-f]{20}", lambda m: "p-…".ljust(len(m.group(0))), printed)
    assert shown == masked
