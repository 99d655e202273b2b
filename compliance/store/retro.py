"""Retro-hunt (opt-in, ``retro_hunt_days``): external messages not matched when read, kept
for N days with the registrable domain only as a keyed digest, so that a domain a feed
lists later is found in that earlier traffic."""

from __future__ import annotations

from compliance.store.database import Repository


class Retro(Repository):
    """The ``retro_contacts`` table."""
