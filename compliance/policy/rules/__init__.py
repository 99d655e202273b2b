"""Rule kinds: the ``compliance.rule_kinds`` registry and the contract its entries meet."""

from __future__ import annotations

import logging
import typing
from typing import Any

from compliance.plugins import PluginError, Registry, subclass_named
from compliance.policy.rules.base import Figures, RuleKind, RuleModel

log = logging.getLogger(__name__)

_named_subclass = subclass_named(RuleKind)


def _check(value: Any, name: str) -> str | None:
    """A rule kind's class, named as its entry, whose model's ``kind`` is that name."""
    problem = _named_subclass(value, name)
    if problem is None:
        field = value.model.model_fields.get("kind")
        allowed = typing.get_args(field.annotation) if field is not None else ()
        if allowed != (name,):
            problem = f"its model's kind must be Literal[{name!r}]"
    return problem


#: Every rule kind, built-in or third-party: entry points naming a :class:`RuleKind` class.
RULE_KINDS: Registry[type[RuleKind]] = Registry(
    "rule kind", "compliance.rule_kinds", "a RuleKind subclass", _check
)


def kinds() -> list[RuleKind]:
    """Every registered kind that loads, in :attr:`RuleKind.order`. One that does not is
    left out with a warning (``compliance plugins --check`` says why), so that a broken
    plugin fails only the policies that use its kind, as an unknown kind."""
    found = []
    for name in RULE_KINDS.names():
        try:
            found.append(RULE_KINDS.get(name)())
        except PluginError as exc:
            log.warning("rule kind left out: %s", exc)
    return sorted(found, key=lambda k: k.order)


def kind_of(rule: Any) -> RuleKind:
    """The kind of a loaded rule."""
    return RULE_KINDS.get(rule.kind)()


__all__ = ["RULE_KINDS", "Figures", "RuleKind", "RuleModel", "kind_of", "kinds"]
