"""YAML read safely, with the line of every key and item, for located error messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from compliance.errors import PolicyError, Problem

Lines = dict[tuple[Any, ...], int]


def parse_yaml(text: str, path: str) -> tuple[Any, Lines]:
    """Parse YAML safely, returning the data and the line (1-based) of every key and item."""
    loader = yaml.SafeLoader(text)
    lines: Lines = {}
    problems: list[Problem] = []

    def build(node: yaml.Node, loc: tuple[Any, ...]) -> Any:
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            data: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    problems.append(
                        Problem(path, key_node.start_mark.line + 1, None, "keys must be plain")
                    )
                    continue
                if key in data:
                    problems.append(
                        Problem(path, key_node.start_mark.line + 1, str(key), "duplicate key")
                    )
                    continue
                data[key] = build(value_node, (*loc, key))
                lines[(*loc, key)] = key_node.start_mark.line + 1
            return data
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    try:
        root = loader.get_single_node()
        data = None if root is None else build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise PolicyError(
            [Problem(path, line, None, f"YAML syntax: {exc.problem or exc.context}")]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(path, None, None, f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if problems:
        raise PolicyError(problems)
    return data, lines


def locate(lines: Lines, loc: Iterable[Any]) -> int | None:
    """The line of the deepest known prefix of ``loc``; unknown parts (union tags) are skipped."""
    current: tuple[Any, ...] = ()
    best = lines.get(())
    for part in loc:
        candidate = (*current, part)
        if candidate in lines:
            current = candidate
            best = lines[candidate]
    return best
