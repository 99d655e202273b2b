"""A real SMTP server on loopback (aiosmtpd), for the SMTP delivery's tests.

:func:`serve` starts one on a free port of 127.0.0.1: plain, with STARTTLS (its
certificate from a throwaway CA, trustme), or with implicit TLS, with or without AUTH. The
handler (:class:`Recorder`) keeps every message it accepted (envelope and raw bytes) and
every byte each connection sent (``transcripts``, after TLS is taken off), and can be told
to refuse recipients, answer the data with a code, or drop the connection once the data is
in. :func:`hang_up_mid_message` resets the connection while the message is still coming.

:func:`identities_in` is the byte scan: which of a list of strings (addresses, names,
pseudonyms) appear anywhere in what a server received, raw or decoded (base64,
quoted-printable and RFC 2047 words are decoded before the search, so that an encoding
cannot hide one).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "reports-sender"
PASSWORD = "pw-7c1d0f0e9b2a-not-in-any-log"
QUEUE_REPLY = "250 2.0.0 Ok: queued as 4F1A2B3C"


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # the DATA bytes as received (dot-unstuffed), CRLF line ends
    authenticated: bool

    def message(self) -> EmailMessage:
        """The data parsed as a mail, with the local line ends a mailbox would store."""
        parsed = message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps what it receives; faults on request."""

    received: list[Received] = field(default_factory=list)
    transcripts: list[bytearray] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    data_reply: str = QUEUE_REPLY  # e.g. "421 4.3.2 shutting down"
    drop_in_data: bool = False  # close the connection instead of answering the data
    dropped: int = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop_in_data:
            self.dropped += 1
            assert isinstance(server.transport, asyncio.WriteTransport)
            server.transport.abort()  # nothing more is written: the reply never leaves
            return "250 never sent"
        if self.data_reply.startswith("2"):
            assert envelope.mail_from is not None
            assert isinstance(envelope.original_content, bytes)
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    bool(session.authenticated),
                )
            )
        return self.data_reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd's ``authenticator``: accepts :data:`USERNAME` / :data:`PASSWORD`."""
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        ok = data.login == USERNAME.encode() and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535


class _RecordingSMTP(SMTP):
    """aiosmtpd's protocol, noting every byte the client sends (plain text, after TLS)."""

    def __init__(self, *args: Any, transcript: bytearray, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transcript = transcript

    def data_received(self, data: bytes) -> None:
        self._transcript.extend(data)
        super().data_received(data)


class _LoopbackController(Controller):
    """aiosmtpd's threaded controller on a port the OS chooses (port 0)."""

    def factory(self) -> SMTP:
        transcript = bytearray()
        self.handler.transcripts.append(transcript)
        return _RecordingSMTP(self.handler, transcript=transcript, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        if self.port == 0:
            assert isinstance(self.server, asyncio.Server)
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class Running:
    """A started server: where it listens and its handler."""

    host: str
    port: int
    recorder: Recorder


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server-side TLS context presenting ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@contextlib.contextmanager
def serve(
    *,
    cert: trustme.LeafCert | None = None,
    implicit_tls: bool = False,
    auth: bool = False,
    recorder: Recorder | None = None,
) -> Iterator[Running]:
    """An SMTP server on 127.0.0.1: with ``cert``, STARTTLS (required before anything
    else) or, with ``implicit_tls``, TLS from the first byte; with ``auth``, AUTH required
    (offered only over TLS)."""
    handler = recorder or Recorder()
    kwargs: dict[str, Any] = {"server_hostname": "mail.test", "ready_timeout": 5.0}
    if cert is not None and implicit_tls:
        kwargs["ssl_context"] = server_context(cert)
    elif cert is not None:
        kwargs["tls_context"] = server_context(cert)
        kwargs["require_starttls"] = True
    if auth:
        kwargs["authenticator"] = handler.authenticate
        kwargs["auth_required"] = True
        # aiosmtpd counts only STARTTLS as TLS: with implicit TLS the whole session is
        # encrypted already, so it must not wait for a STARTTLS that never comes
        kwargs["auth_require_tls"] = not implicit_tls
    controller = _LoopbackController(handler, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    try:
        yield Running("127.0.0.1", controller.port, handler)
    finally:
        controller.stop()


# --- the byte scan ----------------------------------------------------------------------
def _texts(raw: bytes) -> Iterator[str]:
    """``raw`` itself, then every header and every part's payload, decoded."""
    yield raw.decode("utf-8", "replace")
    try:
        parsed = message_from_bytes(raw, policy=default_policy)
    except Exception:  # not a mail (a transcript's commands): the raw text is all there is
        return
    for part in parsed.walk():
        for name, value in part.items():
            yield f"{name}: {value}"
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            yield payload.decode("utf-8", "replace")


def identities_in(received: Iterable[bytes], identities: Iterable[str]) -> set[str]:
    """The ``identities`` found (case-insensitively) in any of the ``received`` byte
    strings, raw or decoded. Empty means none leaked."""
    wanted = [i for i in identities if i]
    found: set[str] = set()
    for raw in received:
        for text in _texts(raw):
            folded = text.casefold()
            found.update(i for i in wanted if i.casefold() in folded)
    return found


# --- a server that hangs up in the middle of a message ----------------------------------
@contextlib.contextmanager
def hang_up_mid_message(after: int = 4096) -> Iterator[tuple[str, int]]:
    """A plain SMTP server on 127.0.0.1 (for ``security: none``) that answers one
    connection up to DATA, reads ``after`` bytes of the message, then resets the
    connection (RST) while the client is still sending. Yields (host, port)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5.0)

    def dialogue() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5.0)
                conn.sendall(b"220 mail.test ESMTP\r\n")
                reader = conn.makefile("rb")
                while line := reader.readline():
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 mail.test\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        reader.read(after)
                        # SO_LINGER 0: close() sends RST, dropping what is still in flight
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    else:
                        conn.sendall(b"250 OK\r\n")

    thread = threading.Thread(target=dialogue, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        thread.join(10)
        listener.close()
