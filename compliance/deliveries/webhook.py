"""Delivery over HTTPS: a signed JSON POST to any endpoint (``type: webhook``), and an
Adaptive Card to a Microsoft Teams channel through a Workflows URL (``type: teams``).

**What a webhook carries.** The message's summary and events, never the report's files:
one JSON object (UTF-8, compact, the same bytes on every attempt)::

    {"id": "<message.digest()>", "subject": "...", "text": "...",
     "report": {"audience": "team", "first_day": "2026-10-01", "last_day": "2026-10-31",
                "files": ["report.html", "report.json"]},
     "events": [{...one pseudonymous event per new or updated alert...}]}

``report`` is null for a message without a written report. With ``attach: true`` the
object also has ``"attachments": [{"name", "content_type", "size", "data"}]``, ``data``
being the file's bytes in base64 (inline chart images excepted): off by default, since
the endpoint then holds the report itself.

**Signing.** Each attempt sends ``X-Compliance-Timestamp: T`` (Unix seconds, the time of
the attempt) and ``X-Compliance-Signature: sha256=H``, where ``H`` is the lower-case hex
HMAC-SHA256, keyed with the UTF-8 bytes of ``secret``, of ``T`` as ASCII digits, a ``.``,
and the exact body bytes. A receiver recomputes ``H`` over the raw body before parsing it,
compares in constant time, and refuses a ``T`` more than a few minutes from its clock (a
replayed request). ``X-Compliance-Delivery`` is the message's id (the body's ``id``, the
SHA-256 of its idempotency key): the same on every attempt, so that the receiver can drop
a copy sent again after a crash.

**Teams.** Teams' Office 365 connectors (incoming webhooks) are retired; a channel now
receives posts through a Workflows (Power Automate) flow whose trigger is "When a Teams
webhook request is received". That trigger takes a Bot Framework-style message whose
``attachments`` hold Adaptive Cards (``contentType: application/vnd.microsoft.card.adaptive``)
and answers 202 Accepted; Workflows accept Adaptive Cards, not the old MessageCard format,
and a Teams message is limited to about 28 KB. See Microsoft Learn, "Create and send
messages" (learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/
connectors-using: Workflows, "When a Teams webhook request is received", Adaptive Cards
only) and "Create an Incoming Webhook" (.../how-to/add-incoming-webhook: the
``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.
adaptive", "content": {AdaptiveCard}}]}`` payload, the 28 KB limit, throttling with 429).
The URL carries the flow's signature (``sig=``), so it is itself a secret: it is taken as
a reference and never logged. The card holds the subject and the text, never events or
files.

**Errors.** A connection refused or dropped, a timeout, HTTP 408, 425, 429 and 5xx are
:class:`~compliance.errors.RetriableDeliveryError`; any other status outside 2xx (a
redirect is not followed), an untrusted TLS certificate, and a TLS failure are
:class:`~compliance.errors.DeliveryError`. Errors and log lines name the channel, the
endpoint (its query string masked; only the host for a URL given as a reference), the
HTTP status, a short error code from the answer, never the message's content, the URL's
secret parts, or the signing secret. The receipt is ``HTTP 200`` (or 202, …) and the
answer's request id when it sends a short one.

Only TLS whose certificate and host name are verified (the system's CAs, or ``ca_bundle``)
is used, except ``http://`` to a loopback host (a local relay or test receiver). The
standard library speaks HTTP here (no HTTP library logs the URL at debug level).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from compliance.deliveries.net import connection_failure, tls_context
from compliance.deliveries.smtp import is_loopback
from compliance.delivery import Delivery, Message
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from compliance.secrets import SecretRef, no_inline_secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Compliance-Signature"
TIMESTAMP_HEADER = "X-Compliance-Timestamp"
DELIVERY_HEADER = "X-Compliance-Delivery"
USER_AGENT = "compliance-monitor"
#: Shortest signing secret accepted (characters).
MIN_SECRET = 16
#: Statuses worth retrying besides 5xx: request timeout, too early, too many requests.
RETRIABLE_STATUS = frozenset({408, 425, 429})
#: Answer headers whose (short) value goes into the receipt, first found.
REQUEST_ID_HEADERS = ("X-Request-Id", "Request-Id", "X-Ms-Request-Id", "X-Ms-Workflow-Run-Id")
#: Most of an answer's body read (for its error code only).
MAX_ANSWER = 64 * 1024
#: Budget for a Teams card's JSON (Teams limits a message to about 28 KB).
MAX_CARD = 24_000
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SAFE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
#: Header names that carry credentials (by a word of the name): the value must be a reference.
_CREDENTIAL = re.compile(
    r"(?i)(?:^|[-_])(?:\w*(?:key|token|secret)|authorization|auth|cookie|password|passwd|"
    r"signature|sig|credentials?)(?:$|[-_])"
)
#: Headers this delivery sets itself.
_RESERVED = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        SIGNATURE_HEADER.lower(),
        TIMESTAMP_HEADER.lower(),
        DELIVERY_HEADER.lower(),
    }
)
_HINTS: Mapping[int, str] = {
    400: "the endpoint refused the payload",
    401: "not authorised: check secret (or the URL's signature)",
    403: "forbidden: check secret (or the URL's signature)",
    404: "no such endpoint: check url (a deleted or disabled Teams workflow answers 404)",
    410: "the endpoint is gone: check url",
    413: "the payload is too large for the endpoint",
    415: "the endpoint does not take JSON",
}


# --- endpoints ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """A checked URL, split as http.client needs it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent in the request line
    path: str
    has_query: bool

    def shown(self, secret: bool) -> str:
        """The endpoint as messages name it: without its query string, or only its host
        when the whole URL is a secret."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if secret:
            return host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}{'?…' if self.has_query else ''}"


def parse_endpoint(url: str) -> Endpoint:
    """``url`` checked (ValueError whose text never quotes it): https, or http to a
    loopback host; a host; no credentials, no fragment; ASCII."""
    text = url.strip()
    if not text.isascii() or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(
            "must be ASCII without spaces (percent-encode other characters; an IDN host in "
            "its xn-- form)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("must be an https:// URL")
    host = parts.hostname
    if not host:
        raise ValueError("must name a host: https://HOST/PATH")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not carry a user name or password: give credentials in headers, as a reference"
        )
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if scheme == "http" and not is_loopback(host):
        raise ValueError(
            "http:// (no encryption) is allowed only to a loopback host (localhost, "
            "127.0.0.1, ::1), never over a network: use https://"
        )
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    default = 443 if scheme == "https" else 80
    return Endpoint(scheme, host, port or default, target, path, bool(parts.query))


def _url(value: object) -> object:
    if isinstance(value, str):
        try:
            parse_endpoint(value)
        except ValueError as exc:
            raise PydanticCustomError("url", str(exc)) from None
    return value


# --- options -----------------------------------------------------------------------------
class _HttpOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per network operation")
    ca_bundle: str | None = Field(
        None,
        description="a PEM file of CAs to trust instead of the system's (relative to the "
        "config file)",
    )
    proxy: str | None = Field(
        None,
        description="an http:// proxy for https:// endpoints (CONNECT), e.g. "
        "http://proxy.corp.example:3128; default: HTTPS_PROXY / https_proxy of the "
        "environment, bypassed for hosts in NO_PROXY; 'none' to connect directly",
    )


class WebhookOptions(_HttpOptions):
    """Options of a webhook delivery (``type: webhook``)."""

    url: str | SecretRef = Field(
        description="the endpoint: an https:// URL (http:// only to a loopback host), or "
        "{$env: NAME} / {$file: PATH} when the URL itself carries a secret"
    )
    secret: SecretRef = Field(
        description="the key that signs each request (HMAC-SHA256): {$env: NAME} or "
        "{$file: PATH}, at least 16 characters"
    )
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="extra static request headers; a credential (Authorization, a key, a "
        "token) as {$env: NAME} or {$file: PATH}, never inline",
    )
    attach: bool = Field(
        False,
        description="also send the report's files, base64 in the body (default: the "
        "summary and events only)",
    )

    _secret = field_validator("secret", mode="before")(no_inline_secret)
    _url = field_validator("url", mode="before")(_url)

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        seen: set[str] = set()
        for name, item in value.items():
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise PydanticCustomError("header", "a header name must be an HTTP token")
            lower = name.lower()
            if lower in _RESERVED:
                raise PydanticCustomError(
                    "header", f"{name} is set by the delivery itself and cannot be configured"
                )
            if lower in seen:
                raise PydanticCustomError("header", f"{name} is given twice")
            seen.add(lower)
            if isinstance(item, str):
                if _CREDENTIAL.search(name):
                    raise PydanticCustomError(
                        "inline_secret",
                        f"{name} carries a credential: write a reference, not the value: "
                        "{$env: VARIABLE} or {$file: PATH}",
                    )
                if any(c in item for c in "\r\n\0"):
                    raise PydanticCustomError("header", f"the value of {name} has a line break")
        return value


class TeamsOptions(_HttpOptions):
    """Options of a Microsoft Teams delivery (``type: teams``)."""

    url: SecretRef = Field(
        description="the Workflows trigger URL (When a Teams webhook request is received), "
        "a secret: {$env: NAME} or {$file: PATH}"
    )

    _url = field_validator("url", mode="before")(no_inline_secret)


# --- answers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What the endpoint answered: status, a few headers, the start of its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def request_id(self) -> str | None:
        """A short request id the answer carries, if any (fit for a receipt)."""
        for name in REQUEST_ID_HEADERS:
            value = (self.header(name) or "").strip()
            if value and _SAFE_ID.match(value):
                return value
        return None

    def error_code(self) -> str | None:
        """A short error code from a JSON answer (``{"error": {"code": ...}}``), if any:
        a token only, never the answer's free text."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        code: object = None
        if isinstance(data, dict):
            error = data.get("error")
            code = error.get("code") if isinstance(error, dict) else error
            if code is None:
                code = data.get("code")
        return code if isinstance(code, str) and _SAFE_CODE.match(code) else None

    def retry_after(self) -> str | None:
        value = (self.header("Retry-After") or "").strip()
        if value.isdigit() and len(value) <= 6:
            return f"{value} s"
        return "a date" if value else None


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Path):
        return value.name
    raise TypeError(type(value).__name__)


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body bytes: compact UTF-8 JSON, keys in the order given (deterministic)."""
    return json.dumps(
        payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Compliance-Signature`` value: ``sha256=`` and the hex HMAC-SHA256, keyed
    with ``secret``, of ``timestamp`` (ASCII digits), ``.`` and ``body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


# --- the shared HTTP client --------------------------------------------------------------
class _HttpDelivery(Delivery):
    """POSTs one JSON body per message to one endpoint over verified TLS."""

    name: ClassVar[str]
    options_model: ClassVar[type[BaseModel]]
    #: what messages call the endpoint
    endpoint_label: ClassVar[str] = "endpoint"

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        if not isinstance(options, self.options_model) or not isinstance(options, _HttpOptions):
            raise TypeError(f"{self.name} delivery {name!r} needs {self.options_model.__name__}")
        super().__init__(name, options, base_dir)
        self.http_options = options
        #: the clock of the signature's timestamp (tests set it)
        self.clock: Callable[[], float] = time.time
        self._endpoint: Endpoint | None = None

    # subclasses say where and what
    def _url_option(self) -> str | SecretRef:
        raise NotImplementedError

    def _body(self, message: Message) -> bytes:
        raise NotImplementedError

    def _headers(self, message: Message, body: bytes) -> dict[str, str]:
        return {}

    @property
    def where(self) -> str:
        """The channel and endpoint, as every message about it starts."""
        shown = ""
        option = self._url_option()
        if isinstance(option, str):
            shown = f" ({parse_endpoint(option).shown(secret=False)})"
        elif self._endpoint is not None:
            shown = f" ({self._endpoint.shown(secret=True)})"
        return f"{self.name} delivery {self.channel!r}{shown}"

    def endpoint(self) -> Endpoint:
        """The endpoint, its URL resolved from a reference if need be (DeliveryError if it
        is missing or invalid; the text never quotes the URL)."""
        option = self._url_option()
        if isinstance(option, str):
            return parse_endpoint(option)
        try:
            url = option.resolve(self.base_dir, f"{self.where}: url")
        except ConfigError as exc:
            raise DeliveryError(str(exc)) from None
        try:
            self._endpoint = parse_endpoint(url)
        except ValueError as exc:
            where = f"{self.name} delivery {self.channel!r}"
            raise DeliveryError(f"{where}: url (from its reference) {exc}") from None
        return self._endpoint

    def resolve(self, ref: SecretRef, what: str) -> str:
        try:
            return ref.resolve(self.base_dir, f"{self.where}: {what}")
        except ConfigError as exc:
            raise DeliveryError(str(exc)) from None

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.http_options.ca_bundle, self.base_dir, self.where)

    def _connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        timeout = self.http_options.timeout
        if endpoint.scheme == "http":  # loopback only: never through a proxy
            return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
        proxy = self._proxy(endpoint.host)
        if proxy is None:
            return http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=timeout, context=self._tls_context()
            )
        # a CONNECT tunnel through the proxy; TLS (and its host-name check) end to end
        connection = http.client.HTTPSConnection(
            proxy.hostname or "", proxy.port or 8080, timeout=timeout, context=self._tls_context()
        )
        headers = {}
        if proxy.username:
            login = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
        connection.set_tunnel(endpoint.host, endpoint.port, headers)
        return connection

    def _proxy(self, host: str) -> SplitResult | None:
        """The proxy to reach ``host`` through: the ``proxy`` option, else the environment's
        (``HTTPS_PROXY``, bypassed for ``NO_PROXY``); None to connect directly."""
        configured = self.http_options.proxy
        if configured is not None and configured.strip().lower() == "none":
            return None
        if configured is None:
            configured = urllib.request.getproxies().get("https")
            if not configured or urllib.request.proxy_bypass(host):
                return None
        found = urlsplit(configured if "://" in configured else f"http://{configured}")
        if found.scheme != "http" or not found.hostname:
            raise DeliveryError(
                f"{self.where}: proxy must be an http:// URL of a proxy that tunnels with "
                "CONNECT (e.g. http://proxy.corp.example:3128)"
            )
        return found

    def post(self, endpoint: Endpoint, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One POST; what the network raises mapped to a (retriable) DeliveryError."""
        connection = self._connection(endpoint)
        try:
            try:
                connection.request(
                    "POST",
                    endpoint.target,
                    body=body,
                    headers={
                        "Content-Type": "application/json; charset=utf-8",
                        "Accept": "application/json",
                        "User-Agent": USER_AGENT,
                        **headers,
                    },
                )
                response = connection.getresponse()
                data = response.read(MAX_ANSWER)
            except (OSError, http.client.HTTPException) as exc:
                self._raise(exc)
            return Answer(response.status, dict(response.getheaders()), data)
        finally:
            connection.close()

    def _raise(self, exc: BaseException) -> NoReturn:
        retriable, detail = classify(exc, self.http_options.timeout)
        error = RetriableDeliveryError if retriable else DeliveryError
        raise error(f"{self.where}: {detail}") from None

    def deliver(self, message: Message) -> str:
        endpoint = self.endpoint()
        body = self._body(message)
        answer = self.post(endpoint, body, self._headers(message, body))
        status = answer.status
        code = answer.error_code()
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        if status >= 500 or status in RETRIABLE_STATUS:
            wait = answer.retry_after()
            hint = f" (Retry-After: {wait})" if wait else ""
            raise RetriableDeliveryError(
                f"{self.where}: the {self.endpoint_label} is unavailable or busy: {detail}{hint}"
            )
        if 300 <= status < 400:
            raise DeliveryError(
                f"{self.where}: {detail}: a redirect (not followed, so that the message goes "
                "only where configured): configure the final URL"
            )
        if not 200 <= status < 300:
            hint = _HINTS.get(status, "refused")
            raise DeliveryError(f"{self.where}: {detail}: {hint}")
        request_id = answer.request_id()
        receipt = f"HTTP {status}" + (f" (request id {request_id})" if request_id else "")
        log.info(
            "%s: delivered message %s (%d event(s), %d bytes): %s",
            self.where,
            message.digest()[:16],
            len(message.events),
            len(body),
            receipt,
        )
        return receipt

    def check(self) -> list[tuple[bool, str]]:
        """Resolve the secrets, connect and verify TLS: nothing is sent."""
        results = [(True, "configuration valid")]
        try:
            self._check_secrets()
            endpoint = self.endpoint()
            connection = self._connection(endpoint)
            try:
                try:
                    connection.connect()
                except OSError as exc:
                    self._raise(exc)
            finally:
                connection.close()
            tls = "no TLS (loopback)" if endpoint.scheme == "http" else "TLS verified"
            host = endpoint.shown(secret=True)
            results.append((True, f"connected to {host}:{endpoint.port} ({tls}; nothing sent)"))
        except DeliveryError as exc:
            results.append((False, str(exc)))
        return results

    def _check_secrets(self) -> None:
        return None


def classify(exc: BaseException, timeout: float) -> tuple[bool, str]:
    """(worth retrying, what happened) for what a connection raised; never a URL."""
    found = connection_failure(
        exc,
        timeout,
        host_hint="check the URL's host (it must match the certificate) and ca_bundle",
        tls_hint="check that the URL's port speaks https",
    )
    if found is not None:
        return found
    if isinstance(exc, http.client.RemoteDisconnected):
        return True, "the server closed the connection without answering"
    if isinstance(exc, ConnectionError):
        return True, "the connection was reset"
    if isinstance(exc, http.client.HTTPException):
        return True, f"the answer was not valid HTTP ({exc.__class__.__name__})"
    if isinstance(exc, OSError):
        return True, f"network error: {exc.strerror or exc.__class__.__name__}"
    return False, exc.__class__.__name__


# --- the channels ------------------------------------------------------------------------
class Webhook(_HttpDelivery):
    """POSTs each message's summary and events as signed JSON to one endpoint."""

    name: ClassVar[str] = "webhook"
    options_model: ClassVar[type[BaseModel]] = WebhookOptions
    destination: ClassVar[tuple[str, ...]] = ("url",)

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        super().__init__(name, options, base_dir)
        assert isinstance(options, WebhookOptions)
        self.settings = options

    def _url_option(self) -> str | SecretRef:
        return self.settings.url

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON object sent for ``message`` (see the module's documentation)."""
        report = message.report
        payload: dict[str, Any] = {
            "id": message.digest(),
            "subject": message.subject,
            "text": message.text,
            "report": None
            if report is None
            else {
                "audience": report.audience,
                "first_day": report.first_day,
                "last_day": report.last_day,
                "files": [Path(f).name for f in report.files],
            },
            "events": [dict(e) for e in message.events],
        }
        if self.settings.attach:
            payload["attachments"] = [
                {
                    "name": a.name,
                    "content_type": a.content_type,
                    "size": len(a.data),
                    "data": base64.b64encode(a.data).decode("ascii"),
                }
                for a in message.attachments
                if a.inline_id is None
            ]
        return payload

    def _body(self, message: Message) -> bytes:
        try:
            return encode(self.payload(message))
        except (TypeError, ValueError):  # their text may quote a value: not kept
            raise DeliveryError(
                f"{self.where}: the message cannot be encoded as JSON (an event holds a value "
                "JSON has no form for)"
            ) from None

    def signing_secret(self) -> str:
        secret = self.resolve(self.settings.secret, "secret")
        if len(secret) < MIN_SECRET:
            raise DeliveryError(
                f"{self.where}: secret: shorter than {MIN_SECRET} characters; use a random "
                "one, e.g. openssl rand -hex 32"
            )
        return secret

    def _headers(self, message: Message, body: bytes) -> dict[str, str]:
        extra = {
            name: value if isinstance(value, str) else self.resolve(value, f"headers.{name}")
            for name, value in self.settings.headers.items()
        }
        for name, value in extra.items():
            if any(c in value for c in "\r\n\0"):
                raise DeliveryError(f"{self.where}: headers.{name}: the value has a line break")
        timestamp = int(self.clock())
        return {
            **extra,
            DELIVERY_HEADER: message.digest(),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.signing_secret(), timestamp, body),
        }

    def _check_secrets(self) -> None:
        self.signing_secret()
        for name, value in self.settings.headers.items():
            if isinstance(value, SecretRef):
                self.resolve(value, f"headers.{name}")


class Teams(_HttpDelivery):
    """Posts each message as an Adaptive Card to a Teams channel through a Workflows URL."""

    name: ClassVar[str] = "teams"
    options_model: ClassVar[type[BaseModel]] = TeamsOptions
    destination: ClassVar[tuple[str, ...]] = ("url",)
    endpoint_label: ClassVar[str] = "workflow"

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        super().__init__(name, options, base_dir)
        assert isinstance(options, TeamsOptions)
        self.settings = options

    def _url_option(self) -> str | SecretRef:
        return self.settings.url

    @staticmethod
    def card(message: Message, budget: int = MAX_CARD) -> dict[str, Any]:
        """The Workflows payload: one message holding one Adaptive Card (1.4) whose
        TextBlocks hold the subject and the text, line by line, shortened to fit Teams."""
        blocks: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": message.subject,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            }
        ]
        size = len(encode({"b": blocks}))
        paragraph_start = True
        lines = message.text.splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                paragraph_start = True
                continue
            block = {
                "type": "TextBlock",
                "text": line,
                "wrap": True,
                "spacing": "Medium" if paragraph_start else "None",
            }
            paragraph_start = False
            cost = len(encode(block)) + 1
            if size + cost > budget:
                left = sum(1 for rest in lines[i:] if rest.strip())
                blocks.append(
                    {
                        "type": "TextBlock",
                        "text": f"({left} more line(s) not shown: Teams limits a message's "
                        "size; see the report)",
                        "wrap": True,
                        "isSubtle": True,
                        "spacing": "Medium",
                    }
                )
                break
            blocks.append(block)
            size += cost
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": ADAPTIVE_CARD,
                    "contentUrl": None,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": blocks,
                    },
                }
            ],
        }

    def _body(self, message: Message) -> bytes:
        return encode(self.card(message))
