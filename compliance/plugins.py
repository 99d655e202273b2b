"""Registries: the one way in for each kind of extension.

Sources, feed formats, rule kinds and deliveries are each found in one registry, by the
name a configuration or a policy uses (``type: exchange``, ``kind: person``). Built-ins
and third-party packages enter it the same way, as entry points of the registry's group
in their package metadata; this project declares its own in ``pyproject.toml``::

    [project.entry-points."compliance.sources"]
    exchange = "connectors.exchange:from_config"

A third-party package does the same in its own metadata, and is found once installed.
An entry is imported only when it is first used, so a broken plugin fails the run that
uses it, with its package named, and nothing else. Where a plugin takes a name a
built-in has, the built-in wins and the plugin is reported as shadowed. Setting
``COMPLIANCE_NO_PLUGINS`` ignores every package but this one (tests set it).

``compliance plugins`` lists every entry of every registry with its origin.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from compliance.errors import ConfigError

log = logging.getLogger(__name__)

#: This project's distribution: its entry points are the built-ins.
DISTRIBUTION = "compliance-monitor"
#: Ignore every distribution but this one (tests; a locked-down deployment).
NO_PLUGINS = "COMPLIANCE_NO_PLUGINS"

T = TypeVar("T")


class PluginError(ConfigError):
    """An entry of a registry could not be loaded, or is not what its registry holds."""


@dataclass
class Entry(Generic[T]):
    """One named extension of a registry."""

    name: str
    target: str  # "module:attribute"
    distribution: str  # the package that declares it
    version: str
    builtin: bool
    shadowed: bool = False  # a plugin that took a built-in's name (never used)
    _loader: Callable[[], Any] | None = field(default=None, repr=False)
    _value: T | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        """Where the entry comes from, for people: ``built-in`` or ``package version``."""
        if self.builtin:
            return "built-in"
        return f"{self.distribution} {self.version}".strip()

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain data (``compliance plugins --format json``)."""
        return {
            "name": self.name,
            "target": self.target,
            "origin": self.origin,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "shadowed": self.shadowed,
        }


class Registry(Generic[T]):
    """The extensions of one kind, by name.

    ``check`` validates what an entry point loads (e.g. that it is a rule-kind class), so
    that a wrong plugin fails with its package and name rather than deep in a run.
    """

    def __init__(
        self, kind: str, group: str, what: str, check: Callable[[Any], bool] | None = None
    ) -> None:
        self.kind = kind  # e.g. "source type", as messages say it
        self.group = group
        self.what = what  # what an entry is, for `compliance plugins`
        self._check = check
        self._entries: dict[str, Entry[T]] | None = None
        self._shadowed: list[Entry[T]] = []

    # --- discovery -------------------------------------------------------------------
    def _discover(self) -> dict[str, Entry[T]]:
        if self._entries is not None:
            return self._entries
        found: dict[str, Entry[T]] = {}
        plugins = not os.environ.get(NO_PLUGINS)
        for point in sorted(
            importlib.metadata.entry_points(group=self.group), key=lambda p: p.name
        ):
            dist = point.dist
            name = dist.metadata["Name"] if dist is not None else "(unknown)"
            builtin = (name or "").lower().replace("_", "-") == DISTRIBUTION
            if not builtin and not plugins:
                continue
            entry: Entry[T] = Entry(
                point.name,
                point.value,
                name or "(unknown)",
                dist.version if dist is not None else "",
                builtin,
                _loader=point.load,
            )
            self._add(found, entry)
        self._entries = found
        return found

    def _add(self, found: dict[str, Entry[T]], entry: Entry[T]) -> None:
        held = found.get(entry.name)
        if held is None:
            found[entry.name] = entry
            return
        if held.builtin == entry.builtin:  # two plugins, or a package installed twice
            if held.target == entry.target:
                return
            raise PluginError(
                f"{self.kind} {entry.name!r} is declared by both {held.origin} "
                f"({held.target}) and {entry.origin} ({entry.target}): uninstall one"
            )
        keep, lose = (held, entry) if held.builtin else (entry, held)
        lose.shadowed = True
        self._shadowed.append(lose)
        found[entry.name] = keep
        log.warning(
            "%s %r of %s is shadowed by the built-in of that name",
            self.kind,
            lose.name,
            lose.origin,
        )

    def register(self, name: str, value: T, origin: str = "(registered in code)") -> None:
        """Add an entry from code (tests, or an embedding application)."""
        found = self._discover()
        found[name] = Entry(name, f"{origin}", origin, "", False, _value=value)

    # --- lookup ----------------------------------------------------------------------
    def names(self) -> list[str]:
        """The names a configuration or policy may use, sorted."""
        return sorted(self._discover())

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name, then the shadowed ones (nothing is imported)."""
        found = self._discover()
        return [found[n] for n in sorted(found)] + self._shadowed

    def get(self, name: str, where: str = "") -> T:
        """The extension named ``name``, loaded on first use; a :class:`ConfigError` naming
        the known names when there is none (``where`` says which setting asked)."""
        found = self._discover()
        entry = found.get(name)
        if entry is None:
            prefix = f"{where}: " if where else ""
            if not found:
                raise PluginError(
                    f"{prefix}no {self.kind} is registered: is compliance-monitor installed "
                    f"(pip install .)? Its entry points ({self.group}) are missing"
                )
            raise ConfigError(
                f"{prefix}unknown {self.kind} {name!r}; known {self.kind}s: "
                + ", ".join(sorted(found))
            )
        return self._load(entry)

    def _load(self, entry: Entry[T]) -> T:
        if entry._value is None:
            assert entry._loader is not None
            try:
                value = entry._loader()
            except Exception as exc:  # a plugin's import failing is its package's fault
                raise PluginError(
                    f"{self.kind} {entry.name!r} of {entry.origin} cannot be loaded "
                    f"({entry.target}): {type(exc).__name__}: {exc}"
                ) from exc
            if self._check is not None and not self._check(value):
                raise PluginError(
                    f"{self.kind} {entry.name!r} of {entry.origin} ({entry.target}) is not "
                    f"{self.what}"
                )
            entry._value = value
        return entry._value

    def load_all(self) -> list[tuple[Entry[T], PluginError | None]]:
        """Load every entry (``compliance plugins --check``): each with its error, if any."""
        out: list[tuple[Entry[T], PluginError | None]] = []
        for entry in self.entries():
            if entry.shadowed:
                out.append((entry, None))
                continue
            try:
                self._load(entry)
                out.append((entry, None))
            except PluginError as exc:
                out.append((entry, exc))
        return out

    def reset(self) -> None:
        """Forget what was discovered (tests that install a plugin package)."""
        self._entries = None
        self._shadowed = []
