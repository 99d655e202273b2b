"""The TLS context every built-in channel connects with: the system's CAs or a configured
bundle, TLS 1.2 at least, the chain and the host name verified."""

from __future__ import annotations

import ssl
from pathlib import Path

from compliance.errors import DeliveryError
from compliance.secrets import resolve_path


def tls_context(bundle: str | None, base_dir: Path, where: str) -> ssl.SSLContext:
    """A verifying client context; ``bundle`` (a PEM file, relative to ``base_dir``)
    replaces the system's CAs. A bundle that cannot be read or holds no CA is a
    :class:`DeliveryError` naming ``where`` (the channel)."""
    path = None if bundle is None else resolve_path(bundle, base_dir)
    try:
        context = ssl.create_default_context(cafile=None if path is None else str(path))
    except ssl.SSLError as exc:
        raise DeliveryError(
            f"{where}: ca_bundle {path}: no CA certificate could be loaded "
            f"({exc.reason or 'not PEM'})"
        ) from None
    except OSError as exc:
        raise DeliveryError(
            f"{where}: ca_bundle {path}: {exc.strerror or 'cannot be read'}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context  # verifies the chain and the host name (CERT_REQUIRED)
