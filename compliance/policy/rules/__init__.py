"""Rule kinds: the ``compliance.rule_kinds`` registry and the contract its entries meet."""

from __future__ import annotations

from typing import Any

from compliance.plugins import Registry
from compliance.policy.rules.base import Figures, RuleKind, RuleModel

#: Every rule kind, built-in or third-party: entry points naming a :class:`RuleKind` class.
RULE_KINDS: Registry[type[RuleKind]] = Registry(
    "rule kind",
    "compliance.rule_kinds",
    "a RuleKind subclass",
    lambda value: isinstance(value, type) and issubclass(value, RuleKind),
)


def kinds() -> list[RuleKind]:
    """Every registered kind, in :attr:`RuleKind.order`."""
    return sorted((RULE_KINDS.get(n)() for n in RULE_KINDS.names()), key=lambda k: k.order)


def kind_of(rule: Any) -> RuleKind:
    """The kind of a loaded rule."""
    return RULE_KINDS.get(rule.kind)()


__all__ = ["RULE_KINDS", "Figures", "RuleKind", "RuleModel", "kind_of", "kinds"]
