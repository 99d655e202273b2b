"""A Graph-compatible HTTPS server on loopback, for msal and the Microsoft 365 connectors.

It serves what Entra ID and Microsoft Graph serve to a client-credentials app:
OpenID discovery, the v2.0 token endpoint (client secret, or a client assertion JWT
verified against the registered certificate), message trace and users, with the
API's documented rules (both filter bounds, ≤ 10 days, ≤ 90 days back, ``$top`` ≤
5000, ``@odata.nextLink`` paging) and Graph's error bodies. Its TLS certificate comes
from a throwaway CA (trustme). Faults can be scheduled per message-trace request.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

TENANT = "72f988bf-0000-4000-8000-000000000001"
CLIENT_ID = "2a4c1f3e-0000-4000-8000-0000000000aa"
SECRET = "s3cr3t-value-from-the-app-registration"
TRACE_PATH = "/v1.0/admin/exchange/tracing/messageTraces"
TRACE_ROLE = "ExchangeMessageTrace.Read.All"
USERS_ROLE = "User.Read.All"
MAIL_SEND_ROLE = "Mail.Send"
_SEND_MAIL = re.compile(r"^/v1\.0/users/([^/]+)/sendMail$")
_FILTER = re.compile(
    r"^receivedDateTime ge (\S+) and receivedDateTime le (\S+)$",
)


@dataclass
class Fault:
    """An answer to give instead of the real one, to the n-th message-trace request."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class SentMail:
    """A message Graph accepted: the mailbox it is sent as, the JSON body, the headers."""

    sender: str
    body: dict[str, Any]
    headers: dict[str, str]  # the request's, without Authorization


@dataclass
class Request:
    """What the server saw (no token values)."""

    method: str
    path: str
    query: dict[str, list[str]]
    at: float


class GraphServer:
    """State and behaviour; the HTTP layer is :class:`_Handler`."""

    def __init__(self, ca: trustme.CA, clock: Callable[[], float] = time.monotonic) -> None:
        self.ca = ca
        self.clock = clock
        self.traces: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.roles = [TRACE_ROLE, USERS_ROLE]
        self.secret = SECRET
        self.certificate: x509.Certificate | None = None
        self.service_principal = True
        self.faults: dict[int, Fault] = {}
        self.hang_on: int | None = None  # the n-th trace request never answers
        self.hung = threading.Event()
        self.release = threading.Event()
        self.now: dt.datetime | None = None  # the API's idea of now (default: real time)
        self.requests: list[Request] = []
        self.token_requests = 0
        self.trace_requests = 0
        # sendMail
        self.sent: list[SentMail] = []
        self.send_requests = 0
        self.send_faults: dict[int, Fault] = {}  # status 0: close without an answer
        self.send_fault_always: Fault | None = None
        self.mailboxes: set[str] | None = None  # the tenant's mailboxes (None: any)
        self.rbac_send_as: set[str] = set()  # sendable without the role (RBAC for Apps)
        self._tokens: dict[str, bool] = {}  # token -> still valid
        self._signing = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._index: tuple[list[Any], list[str], list[dict[str, Any]]] | None = None
        self.base = ""

    # --- helpers for tests ----------------------------------------------------
    def revoke_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = False

    def trace_requests_at(self) -> list[float]:
        """Clock readings of the message-trace requests, in order."""
        return [r.at for r in self.requests if r.path == TRACE_PATH]

    # --- endpoints --------------------------------------------------------------
    def discovery(self, tenant: str) -> tuple[int, dict[str, Any]]:
        if tenant != TENANT:
            return 400, {
                "error": "invalid_tenant",
                "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
            }
        root = f"{self.base}/{tenant}"
        return 200, {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        endpoint = f"{self.base}/{tenant}/oauth2/v2.0/token"
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003"}
        if form.get("client_id") != CLIENT_ID:
            return 400, {
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: Application not found in the directory.",
            }
        if not self._client_authenticated(form, endpoint):
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            }
        scope = form.get("scope", "")
        if scope.split() != [f"{self.base}/.default"]:
            return 400, {"error": "invalid_scope", "error_description": f"AADSTS1002012 {scope}"}
        claims = {
            "aud": self.base,
            "iss": f"{self.base}/{tenant}/",
            "tid": tenant,
            "appid": CLIENT_ID,
            "roles": list(self.roles),
            "exp": int(time.time()) + 3600,
            "jti": uuid.uuid4().hex,
        }
        access = jwt.encode(claims, self._signing, algorithm="HS256")
        with self._lock:
            self._tokens[access] = True
        return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": access}

    def _client_authenticated(self, form: dict[str, str], endpoint: str) -> bool:
        if "client_secret" in form:
            return secrets.compare_digest(form["client_secret"], self.secret)
        assertion = form.get("client_assertion")
        if (
            assertion is None
            or self.certificate is None
            or form.get("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return False
        header = jwt.get_unverified_header(assertion)
        der_sha1 = self.certificate.fingerprint(hashes.SHA1())  # noqa: S303 (x5t is SHA-1)
        der_sha256 = self.certificate.fingerprint(hashes.SHA256())
        thumbprints = {
            jwt.utils.base64url_encode(der_sha1).decode(),
            jwt.utils.base64url_encode(der_sha256).decode(),
        }
        sent = {str(header.get(k, "")).rstrip("=") for k in ("x5t", "x5t#S256")}
        if not sent & thumbprints:
            return False
        try:
            claims = jwt.decode(
                assertion,
                self.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=endpoint,
            )
        except jwt.InvalidTokenError:
            return False
        return bool(claims.get("iss") == CLIENT_ID and claims.get("sub") == CLIENT_ID)

    def _claims(self, auth: str) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]]]:
        """(the token's claims, None) or (None, the 401 answer)."""
        token = auth.removeprefix("Bearer ").strip()
        with self._lock:
            valid = self._tokens.get(token)
        if not valid:
            message = (
                "Lifetime validation failed, the token is expired."
                if valid is False
                else "Access token validation failure."
            )
            return None, (
                401,
                {"error": {"code": "InvalidAuthenticationToken", "message": message}},
            )
        claims = jwt.decode(token, self._signing, algorithms=["HS256"], audience=self.base)
        return claims, (200, {})

    def _authorise(self, auth: str, role: str) -> tuple[int, dict[str, Any]] | None:
        claims, denied = self._claims(auth)
        if claims is None:
            return denied
        if role not in claims.get("roles", []):
            return 403, {
                "error": {
                    "code": "Authorization_RequestDenied",
                    "message": "Insufficient privileges to complete the operation.",
                }
            }
        return None

    def message_traces(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if not self.service_principal:
            return 401, {
                "error": {
                    "code": "Unauthorized",
                    "message": "The service principal for app 8bd644d1-64a1-4d4b-ae52-"
                    "2e0cbf64e373 is missing in the tenant.",
                }
            }
        filters = query.get("$filter", [""])
        match = _FILTER.match(filters[0])
        if match is None:
            return 400, _bad("The filter must bound receivedDateTime with ge and le.")
        begin, end = (dt.datetime.fromisoformat(v.replace("Z", "+00:00")) for v in match.groups())
        now = self.now or dt.datetime.now(dt.UTC)
        if end - begin > dt.timedelta(days=10):
            return 400, _bad("The date range cannot exceed 10 days.")
        if begin < now - dt.timedelta(days=90):
            return 400, _bad("The start date cannot be older than 90 days.")
        top = int(query.get("$top", ["1000"])[0])
        if not 1 <= top <= 5000:
            return 400, _bad("$top must be between 1 and 5000.")
        skip = int(query.get("$skiptoken", ["0"])[0])
        rows = [
            r
            for r in self.traces
            if begin
            <= dt.datetime.fromisoformat(r["receivedDateTime"].replace("Z", "+00:00"))
            <= end
        ]
        page = rows[skip : skip + top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.base}/v1.0/$metadata#admin/exchange/tracing/messageTraces",
            "value": page,
        }
        if skip + top < len(rows):
            next_query = {"$filter": filters[0], "$top": str(top), "$skiptoken": str(skip + top)}
            body["@odata.nextLink"] = f"{self.base}{TRACE_PATH}?{urlencode(next_query)}"
        return 200, body

    def _between(self, begin: str, end: str) -> list[dict[str, Any]]:
        """Rows with ``begin <= receivedDateTime <= end`` (ISO strings in one format sort)."""
        stale = self._index is None or self._index[0] is not self.traces
        if stale or len(self._index[1]) != len(self.traces):  # type: ignore[index]
            ordered = sorted(self.traces, key=lambda r: str(r["receivedDateTime"]))
            self._index = (self.traces, [str(r["receivedDateTime"]) for r in ordered], ordered)
        _, keys, ordered = self._index
        return ordered[bisect.bisect_left(keys, begin) : bisect.bisect_right(keys, end)]

    def list_users(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        select = query.get("$select", ["id,displayName,mail,userPrincipalName"])[0].split(",")
        top = min(int(query.get("$top", ["100"])[0]), 999)
        skip = int(query.get("$skiptoken", ["0"])[0])
        page = [{k: u.get(k) for k in select} for u in self.users[skip : skip + top]]
        body: dict[str, Any] = {
            "@odata.context": f"{self.base}/v1.0/$metadata#users",
            "value": page,
        }
        if skip + top < len(self.users):
            next_query = {"$select": ",".join(select), "$top": str(top), "$skiptoken": skip + top}
            body["@odata.nextLink"] = f"{self.base}/v1.0/users?{urlencode(next_query)}"
        return 200, body

    def send_mail(
        self, sender: str, auth: str, raw: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | Fault:
        """``POST /v1.0/users/{sender}/sendMail``: (status, body), or a scheduled fault."""
        claims, denied = self._claims(auth)
        if claims is None:
            return denied
        mailbox = sender.lower()
        if self.mailboxes is not None and mailbox not in {m.lower() for m in self.mailboxes}:
            return 404, {
                "error": {
                    "code": "ErrorInvalidUser",
                    "message": f"The requested user '{sender}' is invalid.",
                }
            }
        tenant_wide = MAIL_SEND_ROLE in claims.get("roles", [])
        if not tenant_wide and mailbox not in {m.lower() for m in self.rbac_send_as}:
            return 403, {
                "error": {
                    "code": "ErrorAccessDenied",
                    "message": "Access is denied. Check credentials and try again.",
                }
            }
        with self._lock:
            self.send_requests += 1
            n = self.send_requests
        fault = self.send_faults.get(n) or self.send_fault_always
        if fault is not None:
            return fault
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, _bad("Unable to read JSON request payload.", "RequestBodyRead")
        problem = _send_mail_problem(body)
        if problem is not None:
            return 400, problem
        with self._lock:
            self.sent.append(SentMail(sender, body, headers))
        return 202, {}


def _send_mail_problem(body: Any) -> dict[str, Any] | None:
    """Graph's 400 answer to a sendMail body it would refuse, or None."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return _bad("Empty Payload. JSON content expected.", "ErrorInvalidRequest")
    if "saveToSentItems" in body and not isinstance(body["saveToSentItems"], bool):
        return _bad("Cannot convert saveToSentItems to Edm.Boolean.", "RequestBodyRead")
    content = message.get("body", {})
    if not isinstance(content, dict) or str(content.get("contentType", "")).lower() not in (
        "text",
        "html",
    ):
        return _bad("The body contentType must be Text or HTML.", "RequestBodyRead")
    if not isinstance(message.get("subject", ""), str):
        return _bad("The subject must be a string.", "RequestBodyRead")
    for key in ("toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
        for r in message.get(key, []):
            address = r.get("emailAddress", {}).get("address") if isinstance(r, dict) else None
            if not isinstance(address, str) or "@" not in address:
                return _bad("At least one recipient is not valid.", "ErrorInvalidRecipients")
    if not message.get("toRecipients"):
        return _bad("At least one recipient is required.", "ErrorInvalidRecipients")
    for a in message.get("attachments", []):
        if a.get("@odata.type") != "#microsoft.graph.fileAttachment" or not a.get("name"):
            return _bad("The attachment is not valid.", "ErrorInvalidAttachment")
        try:
            base64.b64decode(a.get("contentBytes", ""), validate=True)
        except (ValueError, TypeError):
            return _bad("Invalid base64 string for contentBytes.", "RequestBodyRead")
    for h in message.get("internetMessageHeaders", []):
        name = str(h.get("name", ""))
        if not name.lower().startswith("x-"):
            return _bad(
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
                "InvalidInternetMessageHeader",
            )
    return None


def _bad(message: str, code: str = "BadRequest") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    server_version = "graph-test"
    state: GraphServer

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        state = self.state
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        state.requests.append(Request("GET", url.path, query, state.clock()))
        parts = url.path.strip("/").split("/")
        if url.path.endswith("/v2.0/.well-known/openid-configuration"):
            self._send(*state.discovery(parts[0]))
            return
        if url.path == TRACE_PATH:
            state.trace_requests += 1
            n = state.trace_requests
            denied = state._authorise(self.headers.get("Authorization", ""), TRACE_ROLE)
            if denied:
                self._send(*denied)
                return
            if state.hang_on == n:
                state.hung.set()
                state.release.wait(60)
                return
            fault = state.faults.get(n)
            if fault is not None:
                self._send(fault.status, fault.body or _bad("fault"), fault.headers)
                return
            self._send(*state.message_traces(query))
            return
        if url.path == "/v1.0/users":
            denied = state._authorise(self.headers.get("Authorization", ""), USERS_ROLE)
            self._send(*(denied or state.list_users(query)))
            return
        self._send(404, {"error": {"code": "ResourceNotFound", "message": "no such path"}})

    def do_POST(self) -> None:
        state = self.state
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        state.requests.append(Request("POST", url.path, {}, state.clock()))
        send_mail = _SEND_MAIL.match(url.path)
        if send_mail:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            answer = state.send_mail(
                unquote(send_mail.group(1)),
                self.headers.get("Authorization", ""),
                raw,
                headers,
            )
            if isinstance(answer, Fault):
                if answer.status == 0:  # drop the connection without an answer
                    self.close_connection = True
                    return
                self._send(answer.status, answer.body or _bad("fault"), answer.headers)
            elif answer[0] == 202:
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.send_header("request-id", str(uuid.uuid4()))
                self.end_headers()
            else:
                self._send(*answer)
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        parts = url.path.strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            self._send(*state.token(parts[0], form))
            return
        self._send(404, {"error": "not_found"})


@dataclass
class Running:
    """A started server: its state, base URL and the CA bundle that trusts it."""

    state: GraphServer
    base: str
    ca_bundle: Path

    def options(self, **extra: Any) -> dict[str, Any]:
        """An m365 source's options for this server (secret from $M365_TEST_SECRET)."""
        return {
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": {"$env": "M365_TEST_SECRET"},
            "authority_host": self.base,
            "graph_endpoint": self.base,
            "ca_bundle": str(self.ca_bundle),
            **extra,
        }


def start(
    tmp: Path, clock: Callable[[], float] = time.monotonic, *, mail_send: bool = False
) -> Iterator[Running]:
    """Start a server on a free loopback port; stop it when the generator is closed.
    ``mail_send``: tokens carry the ``Mail.Send`` role (the app may send as any mailbox)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    state = GraphServer(ca, clock)
    if mail_send:
        state.roles.append(MAIL_SEND_ROLE)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    bundle = tmp / "graph-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(state, state.base, bundle)
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()


# --- fixture data ---------------------------------------------------------------------
def trace_row(
    at: dt.datetime,
    sender: str,
    recipient: str,
    *,
    status: str = "delivered",
    size: int = 18_432,
    subject: str = "Re: plans",
) -> dict[str, Any]:
    """One exchangeMessageTrace as Graph v1.0 serialises it."""
    seed = f"{at.isoformat()}|{sender}|{recipient}"
    return {
        "id": str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest())),  # noqa: S324 (ids)
        "receivedDateTime": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "senderAddress": sender,
        "recipientAddress": recipient,
        "messageId": f"<{hashlib.sha1(seed.encode()).hexdigest()[:16]}@mail.corp.example>",  # noqa: S324
        "subject": subject,
        "size": size,
        "status": status,
        "fromIP": "192.0.2.44",
        "toIP": "" if recipient.endswith("corp.example") else "198.51.100.7",
    }
