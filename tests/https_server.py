"""An HTTPS server on loopback that records every request it receives, for the webhook and
Teams deliveries (tests/test_delivery_webhook.py).

Its certificate comes from a throwaway CA (trustme); the TLS handshake runs in each
connection's own thread, so a client that refuses the certificate never blocks the
server. Each POST is answered by the next scripted :class:`Reply` (default: 200 with a
request id), which can also drop the connection or hang until the test ends.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

REQUEST_ID = "req-0001"


@dataclass
class Reply:
    """How to answer one request: a status with headers and a JSON body, or ``drop``
    (close the connection without an answer), or ``hang`` (answer nothing until the
    server stops)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"X-Request-Id": REQUEST_ID})
    body: dict[str, Any] = field(default_factory=dict)
    drop: bool = False
    hang: bool = False


@dataclass(frozen=True)
class Received:
    """One request as the server saw it: every header and the exact body bytes."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError too: the client refused the certificate, or hung up
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "webhook-test"
    protocol_version = "HTTP/1.1"
    state: Recorder

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        state = self.state
        with state.lock:
            state.received.append(
                Received("POST", self.path, {k: v for k, v in self.headers.items()}, body)
            )
            reply = state.replies.pop(0) if state.replies else Reply(status=state.default)
        if reply.hang:
            state.stop.wait(10)
            reply.drop = True
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class Recorder:
    """What the server received, and the replies scripted for the next requests."""

    def __init__(self, default: int = 200) -> None:
        self.default = default
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()


@dataclass
class Running:
    """A started server: what it recorded, its base URL, and the CA bundle trusting it."""

    recorder: Recorder
    base: str
    ca_bundle: Path

    def url(self, path: str = "/hooks/compliance") -> str:
        return f"{self.base}{path}"


@contextmanager
def serve(
    ca: trustme.CA, tmp: Path, *, default: int = 200, host: str = "127.0.0.1"
) -> Iterator[Running]:
    """An HTTPS server on a free loopback port with a certificate for ``localhost`` and
    ``127.0.0.1`` from ``ca``; stopped on exit."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    recorder = Recorder(default)
    handler = type("Handler", (_Handler,), {"state": recorder})
    httpd = _Server((host, 0), handler)
    httpd.context = context
    bundle = tmp / "webhook-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Running(recorder, f"https://{host}:{httpd.server_address[1]}", bundle)
    finally:
        recorder.stop.set()
        httpd.shutdown()
        httpd.server_close()
