"""Registries: the one way in for each kind of extension.

Sources, feed formats, rule kinds and deliveries are each found in one registry, by the
name a configuration or a policy uses (``type: exchange``, ``kind: person``). Built-ins
and third-party packages enter it the same way, as entry points of the registry's group
in their package metadata; this project declares its own in ``pyproject.toml``::

    [project.entry-points."compliance.sources"]
    exchange = "connectors.exchange:ExchangeExportSource"

A third-party package does the same in its own metadata, and is found once installed.
An entry is imported only when it is first used, so a broken plugin fails the run that
uses it, with its package named, and nothing else. Where a plugin takes a name a
built-in has, the built-in wins and the plugin is reported as shadowed; where two
plugins claim one name, that name is refused (and listed as a conflict) until one is
uninstalled, while every other name works. Setting ``COMPLIANCE_NO_PLUGINS`` to a
non-empty value ignores every package but this one (tests set it).

``compliance plugins`` lists every entry of every registry with its origin.
"""

from __future__ import annotations

import importlib.metadata
import inspect
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
    conflict: str | None = None  # another plugin claims the name too (neither is used)
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
            "conflict": self.conflict,
        }


class Registry(Generic[T]):
    """The extensions of one kind, by name.

    ``check`` validates what an entry point loads (e.g. that it is a rule-kind class
    named as its entry), returning what is wrong or None, so that a wrong plugin fails
    with its package and name rather than deep in a run. ``legacy`` names entry-point
    groups read too, with a warning (a group renamed since a release). ``builtins``
    says whether this project ships entries of its own (if not, an empty registry is
    normal).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        what: str,
        check: Callable[[Any, str], str | None] | None = None,
        *,
        legacy: tuple[str, ...] = (),
        builtins: bool = True,
    ) -> None:
        self.kind = kind  # e.g. "source type", as messages say it
        self.group = group
        self.what = what  # what an entry is, for `compliance plugins`
        self._check = check
        self.legacy = legacy
        self.builtins = builtins
        self._entries: dict[str, Entry[T]] | None = None
        self._shadowed: list[Entry[T]] = []

    # --- discovery -------------------------------------------------------------------
    def _discover(self) -> dict[str, Entry[T]]:
        if self._entries is not None:
            return self._entries
        found: dict[str, Entry[T]] = {}
        plugins = not os.environ.get(NO_PLUGINS)
        points = [(self.group, p) for p in importlib.metadata.entry_points(group=self.group)]
        points += [(g, p) for g in self.legacy for p in importlib.metadata.entry_points(group=g)]
        for group, point in sorted(points, key=lambda gp: gp[1].name):
            dist = point.dist
            name = dist.metadata["Name"] if dist is not None else "(unknown)"
            builtin = (name or "").lower().replace("_", "-") == DISTRIBUTION
            if not builtin and not plugins:
                continue
            if group != self.group:
                log.warning(
                    "%s %r of %s is declared in the old entry-point group %s: declare it in %s",
                    self.kind,
                    point.name,
                    name,
                    group,
                    self.group,
                )
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
            if held.target == entry.target and held.distribution == entry.distribution:
                return
            why = (
                f"{self.kind} {entry.name!r} is declared by both {held.origin} "
                f"({held.target}) and {entry.origin} ({entry.target}): uninstall one"
            )
            held.conflict = entry.conflict = why
            self._shadowed.append(entry)  # listed, never used
            log.warning("%s", why)
            return
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
        """The names a configuration or policy may use, sorted (not those in conflict)."""
        return sorted(n for n, e in self._discover().items() if e.conflict is None)

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name, then the shadowed and conflicting plugins (nothing
        is imported)."""
        found = self._discover()
        return [found[n] for n in sorted(found)] + self._shadowed

    def get(self, name: str, where: str = "") -> T:
        """The extension named ``name``, loaded on first use; a :class:`ConfigError` naming
        the known names when there is none (``where`` says which setting asked)."""
        found = self._discover()
        entry = found.get(name)
        prefix = f"{where}: " if where else ""
        if entry is None:
            if not found and self.builtins:
                raise PluginError(
                    f"{prefix}no {self.kind} is registered: is compliance-monitor installed "
                    f"(pip install .)? Its entry points ({self.group}) are missing"
                )
            if not found:
                raise ConfigError(
                    f"{prefix}unknown {self.kind} {name!r}: none is installed (a package "
                    f"that provides one declares it in the entry points {self.group})"
                )
            raise ConfigError(
                f"{prefix}unknown {self.kind} {name!r}; known {self.kind}s: "
                + ", ".join(sorted(found))
            )
        if entry.conflict is not None:
            raise PluginError(f"{prefix}{entry.conflict}")
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
            problem = self._check(value, entry.name) if self._check is not None else None
            if problem is not None:
                raise PluginError(
                    f"{self.kind} {entry.name!r} of {entry.origin} ({entry.target}) is not "
                    f"{self.what}: {problem}"
                )
            entry._value = value
        return entry._value

    def load_all(self) -> list[tuple[Entry[T], PluginError | None]]:
        """Load every entry (``compliance plugins --check``): each with its error, if any."""
        out: list[tuple[Entry[T], PluginError | None]] = []
        for entry in self.entries():
            if entry.conflict is not None:
                out.append((entry, PluginError(entry.conflict)))
                continue
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


def subclass_named(base: type) -> Callable[[Any, str], str | None]:
    """A registry check: the entry is a concrete subclass of ``base`` whose ``name`` is the
    entry's name (so that what a configuration names and what is loaded agree)."""

    def check(value: Any, name: str) -> str | None:
        if not isinstance(value, type) or not issubclass(value, base):
            return f"not a {base.__name__} subclass"
        if inspect.isabstract(value):
            missing = ", ".join(sorted(getattr(value, "__abstractmethods__", ())))
            return f"it leaves {missing} unimplemented"
        if getattr(value, "name", None) != name:
            return f"its name is {getattr(value, 'name', None)!r}, its entry point's {name!r}"
        return None

    return check
