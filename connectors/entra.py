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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compliance.addresses import normalise_address
from compliance.directory import Directory
from compliance.errors import ComplianceError
from compliance.privacy import normalise_unit
from connectors.base import parse_options
from connectors.graph import USERS_PERMISSION, GraphClient
from connectors.m365 import M365Options

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


def entra_client(source: str, options: Mapping[str, Any], base_dir: Path) -> GraphClient:
    """A Graph client for ``/users`` with the credentials of the ``m365`` source ``source``
    (its ``options`` as configured)."""
    settings = parse_options(M365Options, source, options)
    return GraphClient(source, settings, base_dir, USERS_PERMISSION)


def read_directory(client: GraphClient, attributes: Sequence[str]) -> Directory:
    """:func:`load_entra_directory`, closing the client afterwards."""
    try:
        return load_entra_directory(client, attributes)
    finally:
        client.close()


def directory_checks(client: GraphClient) -> list[tuple[bool, str]]:
    """Whether the app may read ``/users``, and can (one request, nothing kept)."""
    try:
        if USERS_PERMISSION not in client.roles():
            return [
                (
                    False,
                    f"the token carries no {USERS_PERMISSION} role: add that application "
                    "permission to the app registration and grant admin consent",
                )
            ]
        client.get(client.url(PATH), {"$select": "id", "$top": "1"})
    except ComplianceError as exc:
        return [(False, str(exc))]
    finally:
        client.close()
    return [
        (True, f"permission {USERS_PERMISSION} granted"),
        (True, "users reachable (one request, no rows kept)"),
    ]
