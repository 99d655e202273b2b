"""Deliveries: how a written report reaches its readers (mail, Microsoft Graph, a webhook,
a SIEM). This module holds the contract and the ``compliance.deliveries`` registry; a
delivery is a :class:`Delivery` subclass entered there by an entry point.

A delivery receives a :class:`Message`: a subject and bodies that hold only what the
report's audience may see (never an address or a name), its attachments, and, for
event channels, one pseudonymous event per new or updated alert. It returns a receipt
(a server's queue id, an HTTP status) for the audit log. It raises
:class:`~compliance.errors.RetriableDeliveryError` for a failure worth retrying on a
later run (a server down or busy, a dropped connection) and
:class:`~compliance.errors.DeliveryError` for one that is not (authentication refused,
a recipient refused). Every message carries an idempotency key; a delivery derives the
message's id from it (:meth:`Message.message_id`), so that a message sent again after a
crash can be recognised as the same one by mail clients and SIEMs.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from compliance.options import parse_options
from compliance.plugins import Registry, subclass_named


@dataclass(frozen=True)
class WrittenReport:
    """A report as written: its files, audience and period, and its headline figures."""

    files: list[Path]
    audience: str
    first_day: str
    last_day: str
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message; with ``inline_id`` it is an image the HTML shows
    (``cid:`` reference)."""

    name: str
    content_type: str
    data: bytes
    inline_id: str | None = None


@dataclass(frozen=True)
class Message:
    """One delivery of one report to one recipient list over one channel."""

    key: str  # idempotency key: report, period, audience, recipients, channel
    subject: str  # never a pseudonym, a unit name or a count of a small group
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    events: tuple[Mapping[str, Any], ...] = ()  # one per new or updated alert (SIEM)
    report: WrittenReport | None = None
    #: a deterrence notice's one recipient, instead of the channel's ``to`` (mail
    #: channels only); resolved inside the job, never stored, logged or shown
    recipient: str | None = field(default=None, repr=False)
    #: a Reply-To address instead of the channel's
    reply_to: str | None = None

    def message_id(self, domain: str) -> str:
        """An RFC 5322 Message-ID derived from the key: the same for every attempt."""
        return f"<{self.digest()[:32]}@{domain}>"

    def digest(self) -> str:
        """The key's SHA-256 (an event id, a webhook's delivery id)."""
        return hashlib.sha256(self.key.encode()).hexdigest()


class Delivery(ABC):
    """One configured way of sending reports."""

    #: the ``type`` a configured delivery names
    name: ClassVar[str]
    #: its options (a pydantic model, unknown options refused)
    options_model: ClassVar[type[BaseModel]]

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        self.channel = name  # the configured channel's name
        self.options = options
        self.base_dir = base_dir

    @classmethod
    def create(cls, name: str, options: Mapping[str, Any], base_dir: Path) -> Delivery:
        """The channel ``name`` from its configured options (validated: a misspelt option
        is refused, naming the delivery and the option)."""
        return cls(name, parse_options(cls.options_model, name, options, "delivery"), base_dir)

    #: the options that say where a message goes (recipients, endpoint): only they make
    #: the fingerprint, so that a new port, timeout or password sends nothing again
    destination: ClassVar[tuple[str, ...]] = ()

    def fingerprint(self) -> str:
        """Where this channel sends (its :attr:`destination` options), as a hash: part of
        each delivery's idempotency key, so that a message goes once to each recipient
        list or endpoint, and a changed list gets the report too."""
        values = self.options.model_dump(mode="json")
        picked = {k: values.get(k) for k in self.destination} if self.destination else values
        normal = {
            k: sorted(str(x).strip().lower() for x in v) if isinstance(v, list) else v
            for k, v in picked.items()
        }
        return hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()[:16]

    @abstractmethod
    def deliver(self, message: Message) -> str:
        """Send the message; return a receipt for the audit log (never its content)."""

    def check(self) -> list[tuple[bool, str]]:
        """Verify access without sending anything: (ok, what was checked) per step."""
        return [(True, "configuration valid")]


#: Every delivery, built-in or third-party: entry points naming a :class:`Delivery` class.
DELIVERIES: Registry[type[Delivery]] = Registry(
    "delivery",
    "compliance.deliveries",
    "a Delivery subclass",
    subclass_named(Delivery),
)
