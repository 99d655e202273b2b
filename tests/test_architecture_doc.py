"""docs/ARCHITECTURE.md stays true: what it names exists, and it names what the code holds.

- every code span that is a path (`compliance/store/alerts.py`, `tests/test_plugins.py`) exists;
- every code span that is a dotted name (`compliance.policy.rules`,
  `connectors.base.SOURCES`) is a module, or a module and attributes of it; registry
  entry-point groups (`compliance.sources`) are names, not modules, and are left out;
- every `store.NAME` is a repository of the Store;
- every layer of the import-linter contract, every contract, every registry's entry-point
  group and every import the layering test lets hide in a function is named;
- the layer table lists the contract's layers in order, with the same `:` and `|`;
- the schema tables are the code's: RAW and MINIMISED (compliance.events), and the store's
  tables and columns (compliance.store.schema).

Fenced code blocks are examples (a plugin's own package) and are not checked. The README's
"How it is built" section is held to the same rules, and must link to the document.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

import compliance.store
from compliance.cli.plugins import REGISTRIES
from compliance.events import MINIMISED, RAW
from compliance.plugins import Registry
from compliance.store.schema import describe
from tests.contract import LAZY
from tests.markdown import section, table_rows

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
README = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONTRACTS = PYPROJECT["tool"]["importlinter"]["contracts"]
LAYERS: list[str] = next(c for c in CONTRACTS if c["type"] == "layers")["layers"]
#: Entry-point groups of the registries: those pyproject declares, and each registry's own
#: (a registry without a built-in, such as deliveries, has no table in pyproject).
GROUPS = sorted(
    {group for group in PYPROJECT["project"]["entry-points"] if group.startswith("compliance.")}
    | {registry.group for registry in REGISTRIES.values()}
)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
#: A path of the repository: under one of its folders, or a top-level file.
_PATH = re.compile(
    r"^(?:(?:compliance|connectors|tests|docs|ops|policies|\.ci)(?:/[\w.-]*)+|[\w-]+\.(?:toml|md))$"
)
_DOTTED = re.compile(r"^(?:compliance|connectors)(?:\.[A-Za-z_]\w*)*$")
_STORE = re.compile(r"^store\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def spans(markdown: str) -> list[str]:
    """The code spans of ``markdown`` outside fenced code blocks."""
    return _CODE.findall(_FENCE.sub("", markdown))


def _repositories() -> dict[str, type]:
    """``store.NAME`` -> its repository class, from the assignments of Store.__init__."""
    tree = ast.parse(Path(compliance.store.__file__).read_text(encoding="utf-8"))
    store = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Store")
    init = next(n for n in store.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    found = {}
    for node in ast.walk(init):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
        ):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    found[target.attr] = getattr(compliance.store, node.value.func.id)
    return found


def _attributes(obj: object, name: str, attributes: list[str]) -> str | None:
    for attribute in attributes:
        if not hasattr(obj, attribute):
            return f"{name} has no attribute {attribute!r}"
        obj = getattr(obj, attribute)
        name = f"{name}.{attribute}"
    return None


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent is a module, not a package
        return False


def problem(span: str) -> str | None:
    """What is wrong with a name the document uses, or None when it exists."""
    if _PATH.match(span):
        return None if (ROOT / span).exists() else f"no file or folder {span}"
    if _STORE.match(span):
        name, *rest = span.split(".")[1:]
        repository = _repositories().get(name)
        if repository is None:
            return f"the Store has no repository {name!r}"
        return _attributes(repository, f"store.{name}", rest)
    if _DOTTED.match(span):
        parts = span.split(".")
        for end in range(len(parts), 0, -1):
            module = ".".join(parts[:end])
            if _is_module(module):
                return _attributes(importlib.import_module(module), module, parts[end:])
        return f"no module {span}"
    return None  # not a name of the code


def checked(markdown: str) -> list[str]:
    """The spans :func:`problem` checks (registry groups are names, not modules)."""
    return sorted(
        {
            s
            for s in spans(markdown)
            if s not in GROUPS and (_PATH.match(s) or _DOTTED.match(s) or _STORE.match(s))
        }
    )


HOW_IT_IS_BUILT = "\n".join(section(README, "How it is built"))
NAMES = checked(DOC)


def test_the_document_names_enough_to_check() -> None:
    """A broken pattern would check nothing and pass."""
    assert len(NAMES) > 80
    expected = {"compliance/store/schema.py", "compliance.policy.rules.RULE_KINDS", "store.alerts"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_name_in_the_document_exists(name: str) -> None:
    assert problem(name) is None, f"docs/ARCHITECTURE.md: `{name}`: {problem(name)}"


@pytest.mark.parametrize("name", checked(HOW_IT_IS_BUILT))
def test_every_name_in_how_it_is_built_exists(name: str) -> None:
    assert problem(name) is None, f"docs/performance.md, How it is built: `{name}`: {problem(name)}"


def test_how_it_is_built_links_the_document() -> None:
    assert "(ARCHITECTURE.md)" in HOW_IT_IS_BUILT


def test_a_wrong_name_is_found() -> None:
    assert problem("compliance/store/alert.py") == "no file or folder compliance/store/alert.py"
    assert problem("compliance.policy.rule") == "compliance.policy has no attribute 'rule'"
    assert problem("connectors.base.SOURCE") == "connectors.base has no attribute 'SOURCE'"
    assert problem("compliance.alerts.Alert.nothing") is not None
    assert problem("store.alert") == "the Store has no repository 'alert'"
    assert problem("store.ingest.add_total") is not None
    assert problem("compliance.store.ingest.Ingest.add_totals") is None
    assert problem("a phrase, not a name") is None


# ---------------------------------------------------------------------------------------
# What the contracts and registries hold is named


def test_every_module_of_every_layer_is_named() -> None:
    named = set(spans(DOC))
    modules = [m.strip() for layer in LAYERS for m in re.split(r"[|:]", layer)]
    missing = [m for m in modules if m not in named]
    assert not missing, f"layers of the contract not named in docs/ARCHITECTURE.md: {missing}"


def test_the_layer_table_is_the_contract_in_order() -> None:
    rows = table_rows(section(DOC, "One direction of dependency"))
    documented = [" ".join(row[0].replace("`", "").split()) for row in rows[1:]]
    assert documented == [" ".join(layer.split()) for layer in LAYERS]


def test_every_contract_is_named() -> None:
    for contract in CONTRACTS:
        assert contract["name"] in DOC, contract["name"]


def test_every_registry_group_is_named_with_its_registry() -> None:
    named = set(spans(DOC))
    assert GROUPS and not [g for g in GROUPS if g not in named]
    rows = table_rows(section(DOC, "Registries"))
    header = rows[0]
    variable, group = header.index("variable"), header.index("entry-point group")
    documented = {}
    for row in rows[1:]:
        module, _, attribute = row[variable].strip("`").rpartition(".")
        registry = getattr(importlib.import_module(module), attribute)
        assert isinstance(registry, Registry), row[variable]
        documented[row[group].strip("`")] = registry.group
    assert documented == {r.group: r.group for r in REGISTRIES.values()}


def test_every_import_allowed_inside_a_function_is_named() -> None:
    named = set(spans(DOC))
    for path, module in LAZY:
        assert path in named and module in named, (path, module)


# ---------------------------------------------------------------------------------------
# The schema tables are the code's


def _schema_table(title: str) -> list[tuple[str, str]]:
    rows = table_rows(section(DOC, title))
    return [(row[0].strip("`"), row[1].strip("`")) for row in rows[1:]]


def test_the_raw_table_is_the_raw_schema() -> None:
    assert _schema_table("Read units and chunks: the RAW schema") == list(RAW.items())


def test_the_minimised_table_is_the_minimised_schema() -> None:
    assert _schema_table("The MINIMISED schema") == list(MINIMISED.items())


def test_the_store_table_is_the_schema() -> None:
    rows = table_rows(section(DOC, "The store"))
    documented = {row[0].strip("`"): _CODE.findall(row[1]) for row in rows[1:]}
    assert documented == describe()
