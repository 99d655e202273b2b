"""Loading policies from YAML with every problem located at file, line and field.

YAML is read with the safe loader only; nothing is expanded or evaluated, and the limits of
:mod:`compliance.yamlfile` (size, line length, nesting, no aliases) hold. Every
problem in every file is collected before anything is reported, so an author sees
them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compliance.errors import PolicyError, Problem
from compliance.options import did_you_mean, fields_at
from compliance.policy.model import Policy
from compliance.policy.rules import kinds
from compliance.yamlfile import Lines, locate, parse_yaml, read_yaml_text


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy with where it came from and its line map (for test failures)."""

    policy: Policy
    path: Path
    sha256: str
    lines: Lines

    def line_of(self, *loc: Any) -> int | None:
        """Line of the deepest part of ``loc`` present in the file."""
        return locate(self.lines, loc)


def _message(error: Any) -> str:
    """A validation error in plain words for a policy author, quoting the value given
    (a policy holds no personal data: its values are the author's own)."""
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        hint = did_you_mean(error["loc"][-1], fields_at(Policy, error["loc"][:-1]))
        return f"unknown field{hint or ' (check its spelling and indentation)'}"
    if kind == "missing":
        return "is required"
    if kind == "union_tag_invalid":
        names = " or ".join(repr(k.name) for k in kinds())
        return f"kind {error['ctx']['tag']!r} is not a rule kind: {names}"
    if kind == "union_tag_not_found":
        return f"each rule needs a 'kind': {' or '.join(k.name for k in kinds())}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be fields written `name: value` one a line, not {_shape(given)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"must be a list (`[a, b]`, or `- a` one a line), not {_shape(given)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number, not {given!r}"
    if kind == "too_short" and isinstance(given, list) and not given:
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}, not {given!r}"
    for bound, words in (
        ("ge", "at least"),
        ("gt", "more than"),
        ("le", "at most"),
        ("lt", "less than"),
    ):
        if kind.startswith(("greater_than", "less_than")) and bound in (error.get("ctx") or {}):
            return f"must be {words} {error['ctx'][bound]}, not {given!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be", "must be", 1)


def _shape(value: Any) -> str:
    """What kind of YAML value ``value`` is, in words."""
    if isinstance(value, list):
        return "a list (lines starting with `- `)"
    if isinstance(value, dict):
        return "fields"
    if value is None:
        return "nothing"
    return f"the value {value!r}"


def _where(error: Any, data: Any) -> tuple[Any, ...]:
    """Where in the file an error is: a rule's ``kind`` for an unknown kind, the second
    rule of a repeated id, else the error's own place."""
    loc = tuple(error["loc"])
    if error["type"] == "union_tag_invalid":
        return (*loc, "kind")
    if not loc and str(error["msg"]).startswith("Value error, two rules are named"):
        seen: set[object] = set()
        for i, rule in enumerate(data.get("rules") or []):
            rid = rule.get("id") if isinstance(rule, dict) else None
            if rid in seen:
                return ("rules", i, "id")
            seen.add(rid)
    return loc


def _field(loc: tuple[Any, ...]) -> str:
    """``('rules', 0, 'person', 'min_days')`` reads ``rules[0].min_days`` (union tag dropped)."""
    text = ""
    tags = {k.name for k in kinds()}
    for i, part in enumerate(loc):
        if part in tags and i and isinstance(loc[i - 1], int):
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_policy_file(path: Path) -> LoadedPolicy:
    """Load and validate one policy file, or raise a :class:`PolicyError` with every problem."""
    name = str(path)
    text, sha256 = read_yaml_text(path)
    data, lines = parse_yaml(text, name)
    if data is None:
        raise PolicyError([Problem(name, 1, None, "the file is empty: it holds no policy")])
    if not isinstance(data, dict):
        raise PolicyError(
            [Problem(name, 1, None, f"a policy file must be fields, not {_shape(data)}")]
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                name, locate(lines, _where(err, data)), _field(err["loc"]) or None, _message(err)
            )
            for err in exc.errors()
        ]
        raise PolicyError(problems) from None
    return LoadedPolicy(policy, path, sha256, lines)


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """Policy files named directly, or every ``*.yaml``/``*.yml`` in named folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
            except OSError as exc:
                raise PolicyError(
                    [Problem(str(path), None, None, f"cannot read the folder: {exc.strerror}")]
                ) from None
        else:
            files.append(path)
    return files


def load_policies(paths: Iterable[Path]) -> list[LoadedPolicy]:
    """Load every policy, collecting the problems of all files before raising."""
    loaded: list[LoadedPolicy] = []
    problems: list[Problem] = []
    files = policy_files(paths)
    if not files:
        raise PolicyError([Problem(", ".join(str(p) for p in paths), None, None, "no policy")])
    for file in files:
        try:
            loaded.append(load_policy_file(file))
        except PolicyError as exc:
            problems.extend(exc.problems)
    seen: dict[str, Path] = {}
    for item in loaded:
        first = seen.setdefault(item.policy.id, item.path)
        if first != item.path:
            problems.append(
                Problem(
                    str(item.path),
                    item.line_of("id"),
                    "id",
                    f"policy id {item.policy.id!r} is already used by {first}",
                )
            )
    if problems:
        raise PolicyError(problems)
    return loaded
