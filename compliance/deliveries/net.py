"""Connections of the built-in channels: the TLS context they connect with (the system's
CAs or a configured bundle, TLS 1.2 at least, chain and host name verified), and what a
failed connection means (worth retrying, or not), in one wording for every channel."""

from __future__ import annotations

import socket
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


def connection_failure(
    exc: BaseException, timeout: float, *, host_hint: str, tls_hint: str, peer: str = "server"
) -> tuple[bool, str] | None:
    """(worth retrying, what happened) for what TLS, DNS or a socket raised; None for
    anything else (the channel's own protocol errors). ``host_hint`` and ``tls_hint`` say
    what to check for a certificate of another host and for a failed handshake; ``peer``
    names the other end. Never a URL, never content."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = (exc.verify_message or exc.reason or "verification failed").rstrip(".")
        hint = (
            "set ca_bundle to the PEM of the CA that issued it"
            if exc.verify_code in (18, 19, 20, 21)  # self-signed, unknown issuer
            else host_hint
        )
        return False, f"TLS certificate not trusted: {reason}; {hint}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return True, "the connection closed during TLS"
    if isinstance(exc, ssl.SSLError):
        return False, f"TLS failed: {exc.reason or exc.__class__.__name__}; {tls_hint}"
    if isinstance(exc, TimeoutError):
        return True, f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return True, f"connection refused (is the {peer} running?)"
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
            return False, "host name not found"
        return True, "the host name could not be resolved (temporary)"
    return None
