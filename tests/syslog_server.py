"""Real syslog collectors on loopback, for the syslog delivery's tests.

:func:`serve_stream` listens on a free port of 127.0.0.1 for TCP, with TLS when given a
certificate (from a throwaway CA, trustme); each connection is read to its end and its
bytes split into RFC 5425 / RFC 6587 octet-counted frames (``LEN SP MSG``), a frame that
does not parse being noted in ``errors``. It can also misbehave: ``reset`` accepts and
resets each connection at once, ``silent`` accepts and never answers (not even the TLS
handshake). :func:`serve_udp` keeps every datagram it receives (RFC 5426: one message
each).

:func:`parse_5424` splits a message into its RFC 5424 header fields, structured data and
MSG; :func:`parse_cef` undoes CEF's escaping, to compare what arrived with what was sent.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import trustme


@dataclass
class Collector:
    """What a collector received."""

    host: str
    port: int
    frames: list[bytes] = field(default_factory=list)  # messages, unframed
    raw: list[bytes] = field(default_factory=list)  # each connection's bytes (after TLS)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """The frames, once ``count`` of them arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.frames) >= count:
                    return list(self.frames)
            time.sleep(0.01)
        with self.lock:
            return list(self.frames)

    def settle(self, seconds: float = 0.3) -> None:
        """Give stragglers time to arrive (to assert that nothing did)."""
        time.sleep(seconds)


def split_frames(data: bytes) -> tuple[list[bytes], str | None]:
    """Octet-counted frames (``MSG-LEN SP SYSLOG-MSG``, MSG-LEN without leading zeros)
    and the first framing problem, if any."""
    frames: list[bytes] = []
    i = 0
    while i < len(data):
        match = re.match(rb"[1-9][0-9]{0,8} ", data[i:])
        if match is None:
            return frames, f"no octet count at offset {i}"
        length = int(match[0][:-1])
        start = i + len(match[0])
        if start + length > len(data):
            return frames, f"frame at offset {i} is cut short"
        frames.append(data[start : start + length])
        i = start + length
    return frames, None


Behaviour = Literal["record", "reset", "silent"]


@contextlib.contextmanager
def serve_stream(
    cert: trustme.LeafCert | None = None, behaviour: Behaviour = "record"
) -> Iterator[Collector]:
    """A TCP collector (TLS with ``cert``) on a free port of 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    collector = Collector("127.0.0.1", listener.getsockname()[1])
    context = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
    stop = threading.Event()
    held: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        stream: socket.socket = conn
        data = bytearray()
        try:
            stream.settimeout(5)
            if context is not None:
                stream = context.wrap_socket(conn, server_side=True)
            while chunk := stream.recv(65536):
                data.extend(chunk)
        except (OSError, ssl.SSLError) as exc:
            with collector.lock:
                collector.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if isinstance(stream, ssl.SSLSocket):
                with contextlib.suppress(OSError):
                    stream.unwrap()
            stream.close()
        frames, problem = split_frames(bytes(data))
        with collector.lock:
            collector.raw.append(bytes(data))
            collector.frames.extend(frames)
            if problem:
                collector.errors.append(problem)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with collector.lock:
                collector.connections += 1
            if behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # an RST, not a FIN
            elif behaviour == "silent":
                held.append(conn)
            else:
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in held:
            conn.close()


@contextlib.contextmanager
def serve_udp() -> Iterator[Collector]:
    """A UDP collector on a free port of 127.0.0.1: each datagram is one frame."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    collector = Collector("127.0.0.1", sock.getsockname()[1])
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                datagram, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with collector.lock:
                collector.raw.append(datagram)
                collector.frames.append(datagram)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- parsing what arrived ---------------------------------------------------------------
_5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) "
    r"(?P<app_name>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) (?P<msg>.*)$",
    re.DOTALL,
)
_SD_PARAM = re.compile(r'([^\s=\]"]+)="((?:[^"\\]|\\.)*)"')


def parse_5424(frame: bytes) -> dict[str, str]:
    """The header fields of an RFC 5424 message, ``sd_id`` and ``sd`` (its parameters,
    unescaped) and ``msg``; AssertionError when it is not one."""
    text = frame.decode("utf-8")
    match = _5424.match(text)
    assert match is not None, f"not an RFC 5424 message: {text[:80]!r}"
    fields = match.groupdict()
    sd = fields["sd"]
    if sd != "-":
        element = re.match(r"\[(\S+)", sd)
        assert element is not None
        fields["sd_id"] = element[1]
        for name, value in _SD_PARAM.findall(sd):
            fields[f"sd.{name}"] = re.sub(r"\\(.)", r"\1", value)
    return fields


def _unescape_extension(value: str) -> str:
    table = {"n": "\n", "r": "\r", "=": "=", "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: table.get(m[1], "\\" + m[1]), value)


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """A CEF message's seven header fields (``CEF:0`` first) and its extension's pairs,
    unescaped."""
    assert text.startswith("CEF:0|"), text[:20]
    assert "\n" not in text and "\r" not in text, "a raw line break in a CEF message"
    header: list[str] = []
    current: list[str] = []
    i = 0
    while len(header) < 7:
        c = text[i]
        if c == "\\":
            assert text[i + 1] in "\\|", f"a bad escape in the header: {text[i : i + 2]!r}"
            current.append(text[i + 1])
            i += 2
        elif c == "|":
            header.append("".join(current))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    extension = text[i:]
    equals = []
    j = 0
    while j < len(extension):
        if extension[j] == "\\":
            j += 2
            continue
        if extension[j] == "=":
            equals.append(j)
        j += 1
    keys = [(extension.rfind(" ", 0, e) + 1, e) for e in equals]
    pairs: dict[str, str] = {}
    for n, (start, eq) in enumerate(keys):
        end = keys[n + 1][0] - 1 if n + 1 < len(keys) else len(extension)
        key = extension[start:eq]
        assert re.fullmatch(r"[A-Za-z0-9]+", key), f"not a key: {key!r}"
        assert key not in pairs, f"key {key} twice"
        pairs[key] = _unescape_extension(extension[eq + 1 : end])
    return header, pairs
