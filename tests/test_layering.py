"""The layering contract covers every module, and no import hides inside a function.

`lint-imports` (in .ci/run) checks the contract itself; these tests keep it honest:
a module left out of every layer would be free to import anything.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from tests.contract import LAZY

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _layers() -> list[list[str]]:
    contract = next(c for c in CONTRACTS["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in re.split(r"[|:]", layer)] for layer in contract["layers"]]


def _modules() -> list[str]:
    found = []
    for package in ("compliance", "connectors"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def _layer_of(module: str) -> list[int]:
    return [
        i
        for i, layer in enumerate(_layers())
        if any(module == m or module.startswith(m + ".") for m in layer)
    ]


@pytest.mark.parametrize("module", [m for m in _modules() if m not in ("compliance",)])
def test_every_module_is_in_one_layer(module: str) -> None:
    if module in ("compliance.__main__", "connectors"):
        return  # the entry point (above everything) and the namespace package itself
    assert len(_layer_of(module)) == 1, f"{module} must be in exactly one layer of the contract"


def test_the_command_line_is_on_top_and_the_vocabulary_at_the_bottom() -> None:
    layers = _layers()
    assert layers[0] == ["compliance.cli"]
    assert set(layers[-1]) == {"compliance.errors", "compliance.events"}
    assert _layer_of("compliance.store")[0] > _layer_of("compliance.reports")[0]
    assert _layer_of("connectors.m365")[0] > _layer_of("compliance.engine")[0]


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, inner.module or "."))
    return found


def test_no_import_hides_inside_a_function() -> None:
    hidden = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for package in ("compliance", "connectors")
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in _function_imports(path)
        if (str(path.relative_to(ROOT)), module) not in LAZY
    ]
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)


def test_no_sql_outside_the_store() -> None:
    """The contract forbids importing sqlite3; this also catches a connection borrowed
    from the store (``store.conn.execute``)."""
    borrowed = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("compliance", "connectors")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "store" not in path.relative_to(ROOT).parts
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\.conn\b|\.execute\(|\bSELECT\b|\bINSERT INTO\b", line)
    ]
    assert not borrowed, borrowed
