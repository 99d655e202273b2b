"""Org units from Entra ID: ``GET /v1.0/users`` through Microsoft Graph.

Only the stable id, the addresses (``mail``, ``userPrincipalName``,
``proxyAddresses``), ``userType`` and the attributes named for the org-unit path are
selected; names are never requested. Pseudonyms come from the id, so every alias
and a renamed address map to one person. Guests are not members of any org unit and
are left out. The directory lives in memory for the run and is never written.
Permission: ``User.Read.All`` (application).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from compliance.addresses import normalise_address
from compliance.directory import Directory
from compliance.privacy import normalise_unit
from connectors.graph import GraphClient

log = logging.getLogger(__name__)

PATH = "/v1.0/users"
PAGE_SIZE = 999  # the largest page /users serves


def _unit(user: dict[str, Any], attributes: Sequence[str]) -> str | None:
    parts = [normalise_unit(user.get(a)) for a in attributes]
    return normalise_unit("/".join(p for p in parts if p)) if any(parts) else None


def load_entra_directory(client: GraphClient, attributes: Sequence[str]) -> Directory:
    """Every member of the tenant with their addresses and org unit."""
    select = dict.fromkeys(["id", "mail", "userPrincipalName", "proxyAddresses", "userType"])
    select.update(dict.fromkeys(attributes))
    params = {"$select": ",".join(select), "$top": str(PAGE_SIZE)}
    directory = Directory()
    guests = 0
    for page in client.pages(PATH, params):
        for item in page:
            user: Any = item
            if not isinstance(user, dict):
                directory.rejected["malformed_row"] += 1
                continue
            if str(user.get("userType") or "").lower() == "guest":
                guests += 1
                continue
            addresses = [
                normalise_address(user.get("mail")),
                normalise_address(user.get("userPrincipalName")),
            ]
            proxies = user.get("proxyAddresses")
            for proxy in proxies if isinstance(proxies, list) else []:
                if isinstance(proxy, str) and proxy.lower().startswith("smtp:"):
                    addresses.append(normalise_address(proxy[5:]))
            stable = user.get("id")
            directory.add(
                addresses, stable if isinstance(stable, str) else "", _unit(user, attributes)
            )
    log.info(
        "directory: %d people in %d org units from Entra ID (%d guests left out, %d requests)",
        directory.size,
        len(directory.headcounts),
        guests,
        client.requests,
    )
    return directory
