"""Deliveries: how a written report reaches its readers (mail, Microsoft Graph, a webhook,
a SIEM). This module holds the contract and the ``compliance.deliveries`` registry;
a delivery is a :class:`Delivery` subclass entered there by an entry point.

A delivery receives the report's files and a summary that holds only what the report
itself shows (never an address or a name), and returns a receipt (a message id, an
HTTP status) for the audit log. It raises :class:`~compliance.errors.SourceError`'s
retriable kind for a failure worth retrying, any other :class:`ComplianceError` for one
that is not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compliance.plugins import Registry, subclass_named


@dataclass(frozen=True)
class WrittenReport:
    """A report as written: its files, audience and period, and its headline figures."""

    files: list[Path]
    audience: str
    first_day: str
    last_day: str
    summary: Mapping[str, Any] = field(default_factory=dict)


class Delivery(ABC):
    """One configured way of sending reports."""

    #: the ``type`` a configured delivery names
    name: ClassVar[str]

    def __init__(self, options: Mapping[str, Any], base_dir: Path) -> None:
        self.options = options
        self.base_dir = base_dir

    @abstractmethod
    def deliver(self, report: WrittenReport) -> str:
        """Send the report; return a receipt for the audit log."""


#: Every delivery, built-in or third-party: entry points naming a :class:`Delivery` class.
DELIVERIES: Registry[type[Delivery]] = Registry(
    "delivery",
    "compliance.deliveries",
    "a Delivery subclass",
    subclass_named(Delivery),
    builtins=False,  # the built-in deliveries come with the report schedules
)
