"""Microsoft Graph access for the Microsoft 365 connectors: msal, request budget, retries.

* Authentication is msal's client-credentials flow with a client secret or a
  certificate (PEM or PFX). One ``ConfidentialClientApplication`` exists per app and
  credential in the process, so msal's token cache serves every run of a scheduler.
* Secrets are referenced from the config as ``{"$env": NAME}`` or ``{"$file": PATH}``;
  a secret written into the config is refused. Secrets never appear in messages.
* Every Graph request goes through one :class:`RequestBudget` per tenant and API (the
  message-trace API accepts 100 requests in any 5 minutes, tenant-wide), is retried
  on 429 and 5xx honouring ``Retry-After`` with capped exponential back-off and
  jitter, and has a timeout. 401 and 403 are fatal and say what to fix.
* The CA bundle, when configured, is passed with every request: ``requests`` would
  otherwise let ``REQUESTS_CA_BUNDLE`` override a session-wide setting.

Nothing here logs or raises with response bodies other than Graph's own error code
and message, which describe the request, never a mailbox.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msal
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from compliance.errors import ConfigError, RetriableSourceError, SourceError
from compliance.secrets import SecretRef, no_inline_secret, read_secret_file, resolve_path
from connectors.common import retry_after

log = logging.getLogger(__name__)

#: The app id of Microsoft's message-trace service; its service principal must exist.
MESSAGE_TRACE_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
MESSAGE_TRACE_PERMISSION = "ExchangeMessageTrace.Read.All"
USERS_PERMISSION = "User.Read.All"
#: Requests the message-trace API accepts per tenant in any window of this many seconds.
MESSAGE_TRACE_LIMIT = 100
MESSAGE_TRACE_PERIOD = 300.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --- configuration ---------------------------------------------------------------
class Certificate(BaseModel):
    """A certificate credential: a PEM file (private key, and the certificate or a
    SHA-1 thumbprint), or a PFX/PKCS#12 file with its password."""

    model_config = ConfigDict(extra="forbid")
    pem: str | SecretRef | None = Field(
        None,
        description="PEM with the private key (and certificate): a file path, "
        "{$file: PATH} or {$env: NAME} holding the PEM text (for containers)",
    )
    thumbprint: str | None = Field(
        None,
        pattern=r"^[0-9A-Fa-f:]{40,59}$",
        description="with a PEM that holds the key only: the certificate's SHA-1 thumbprint "
        "(as the portal shows it)",
    )
    pfx: str | None = Field(None, description="PKCS#12 file")
    password: SecretRef | None = Field(
        None, description="the PFX file's password, as {$env: NAME} or {$file: PATH}"
    )

    _password = field_validator("password", mode="before")(no_inline_secret)

    @model_validator(mode="after")
    def _one(self) -> Certificate:
        if (self.pem is None) == (self.pfx is None):
            raise ValueError("give exactly one of pem or pfx")
        if self.pfx is None and self.password is not None:
            raise ValueError("password is for a pfx file")
        return self


class GraphSettings(BaseModel):
    """How to reach Microsoft Graph as an app of one tenant."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tenant_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{1,254}$",
        description="the tenant: its id (a GUID) or a verified domain",
    )
    client_id: str = Field(
        pattern=r"^[0-9A-Fa-f-]{36}$", description="the app registration's application id"
    )
    client_secret: SecretRef | None = Field(
        None, description="the app's client secret, as {$env: NAME} or {$file: PATH}"
    )
    certificate: Certificate | None = Field(
        None, description="the app's certificate (instead of a secret): PEM or PFX"
    )
    authority_host: str = Field(
        "https://login.microsoftonline.com",
        description="the Entra ID sign-in host (national clouds have their own)",
    )
    graph_endpoint: str = Field(
        "https://graph.microsoft.com",
        description="the Microsoft Graph host (national clouds have their own)",
    )
    ca_bundle: str | None = Field(None, description="PEM bundle of CAs to trust instead")
    timeout: float = Field(60.0, ge=1, le=600, description="seconds per request")
    max_retries: int = Field(6, ge=0, le=20, description="retries of 429 and 5xx answers")

    _secret = field_validator("client_secret", mode="before")(no_inline_secret)

    @field_validator("authority_host", "graph_endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("must be an https:// origin without a path")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credential(self) -> GraphSettings:
        if (self.client_secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of client_secret or certificate")
        return self


# --- the request budget -------------------------------------------------------------
class RequestBudget:
    """At most ``limit`` requests in any ``period`` seconds; ``acquire`` waits for a slot."""

    def __init__(
        self,
        limit: int,
        period: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.sleep = sleep
        self.used = 0
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one request from the budget, waiting as long as the window is full."""
        with self._lock:
            while True:
                now = self.clock()
                while self._times and self._times[0] <= now - self.period:
                    self._times.popleft()
                if len(self._times) < self.limit:
                    self._times.append(now)
                    self.used += 1
                    return
                wait = self._times[0] + self.period - now
                log.info("request budget: %d used in the window; waiting %.0f s", self.limit, wait)
                self.sleep(max(wait, 0.001))


_BUDGETS: dict[tuple[str, str, str], RequestBudget] = {}
_APPS: dict[tuple[str, ...], msal.ConfidentialClientApplication] = {}
_SHARED = threading.Lock()


def shared_budget(
    settings: GraphSettings, api: str, limit: int, period: float = MESSAGE_TRACE_PERIOD
) -> RequestBudget:
    """The process-wide budget of one tenant's API (every source of that tenant shares it)."""
    key = (settings.graph_endpoint, settings.tenant_id.lower(), api)
    with _SHARED:
        budget = _BUDGETS.get(key)
        if budget is None or budget.limit != limit or budget.period != period:
            budget = _BUDGETS[key] = RequestBudget(limit, period)
        return budget


def reset_shared_state() -> None:
    """Forget every msal app and budget (tests; a new process starts empty anyway)."""
    with _SHARED:
        _BUDGETS.clear()
        _APPS.clear()


# --- HTTP ---------------------------------------------------------------------------
class _Transient(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class _Http:
    """The ``http_client`` msal uses: requests with our CA bundle and timeout per call."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        self.session = requests.Session()
        self.verify = verify
        self.timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.session.get(url, verify=self.verify, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.session.post(url, verify=self.verify, **kwargs)

    def close(self) -> None:
        self.session.close()


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "", ""
    return code or f"HTTP {response.status_code}", message[:300]


def _token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT access token (read for its roles; msal and Graph verify it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


class GraphClient:
    """Authenticated, budgeted, retrying GET access to one tenant's Graph API."""

    SCOPE_SUFFIX: ClassVar[str] = "/.default"

    def __init__(
        self,
        name: str,
        settings: GraphSettings,
        base_dir: Path,
        permission: str,
        budget: RequestBudget | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.name = name
        self.settings = settings
        self.base_dir = base_dir
        self.permission = permission
        self.budget = budget
        self.sleep = sleep
        self.requests = 0
        self._verify: str | bool = True
        if settings.ca_bundle:
            bundle = resolve_path(settings.ca_bundle, base_dir)
            if not bundle.is_file():
                raise ConfigError(f"source {name!r}: ca_bundle {bundle} does not exist")
            self._verify = str(bundle)
        self.http = _Http(self._verify, settings.timeout)
        self._app: msal.ConfidentialClientApplication | None = None

    # --- authentication -----------------------------------------------------
    @property
    def authority(self) -> str:
        """The tenant's authority URL."""
        return f"{self.settings.authority_host}/{self.settings.tenant_id}"

    def _credential(self) -> tuple[str | dict[str, Any], str]:
        """msal's client_credential, and a fingerprint of it for the app cache."""
        what = f"source {self.name!r}"
        s = self.settings
        if s.client_secret is not None:
            secret = s.client_secret.resolve(self.base_dir, f"{what}: client_secret")
            return secret, hashlib.sha256(secret.encode()).hexdigest()
        cert = s.certificate
        assert cert is not None
        if cert.pfx is not None:
            path = resolve_path(cert.pfx, self.base_dir)
            content = read_secret_file(path, f"{what}: certificate.pfx")
            credential: dict[str, Any] = {"private_key_pfx_path": str(path)}
            if cert.password is not None:
                credential["passphrase"] = cert.password.resolve(
                    self.base_dir, f"{what}: certificate.password"
                )
            return credential, hashlib.sha256(content).hexdigest()
        assert cert.pem is not None
        if isinstance(cert.pem, SecretRef):
            text = cert.pem.resolve(self.base_dir, f"{what}: certificate.pem")
            content = text.encode()
        else:
            path = resolve_path(cert.pem, self.base_dir)
            content = read_secret_file(path, f"{what}: certificate.pem")
            text = content.decode("ascii", errors="replace")
        if "PRIVATE KEY-----" not in text:
            raise ConfigError(f"{what}: certificate.pem holds no private key")
        credential = {"private_key": text}
        if cert.thumbprint:
            credential["thumbprint"] = cert.thumbprint.replace(":", "").upper()
        else:
            match = re.search(
                r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S
            )
            if match is None:
                raise ConfigError(
                    f"{what}: certificate.pem holds no certificate; add it to the file "
                    "or give certificate.thumbprint"
                )
            credential["public_certificate"] = match.group(0)
        return credential, hashlib.sha256(content).hexdigest()

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is not None:
            return self._app
        credential, fingerprint = self._credential()
        key = (self.authority, self.settings.client_id, fingerprint, str(self._verify))
        with _SHARED:
            app = _APPS.get(key)
            if app is None:
                try:
                    app = msal.ConfidentialClientApplication(
                        self.settings.client_id,
                        client_credential=credential,
                        authority=self.authority,
                        # its own session: it lives as long as the app, for the process
                        http_client=_Http(self._verify, self.settings.timeout),
                        instance_discovery=urlsplit(self.settings.authority_host).hostname
                        == "login.microsoftonline.com",
                    )
                except (ValueError, requests.RequestException) as exc:
                    raise SourceError(
                        f"source {self.name!r}: cannot use the authority {self.authority}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} "
                        "(check tenant_id, authority_host and the network path)"
                    ) from None
                _APPS[key] = app
        self._app = app
        return app

    @property
    def scope(self) -> str:
        """The client-credentials scope of the Graph endpoint."""
        return self.settings.graph_endpoint + self.SCOPE_SUFFIX

    def token(self) -> str:
        """A valid access token (from msal's cache while it lasts)."""
        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=[self.scope])
        except requests.RequestException as exc:
            raise RetriableSourceError(
                f"source {self.name!r}: cannot reach the token endpoint: {type(exc).__name__}"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = str(result.get("error", "unknown")) if isinstance(result, dict) else "unknown"
            detail = str(result.get("error_description", "")) if isinstance(result, dict) else ""
            detail = detail.splitlines()[0][:300] if detail else ""
            raise SourceError(
                f"source {self.name!r}: the authority refused a token ({error}: {detail}). "
                "Check tenant_id (the tenant that holds the mailboxes), client_id, and that "
                "the client secret or certificate is the one registered for the app and "
                "has not expired."
            )
        return str(token)

    def roles(self) -> list[str]:
        """The application permissions granted to the app, read from its token."""
        roles = _token_claims(self.token()).get("roles", [])
        return [str(r) for r in roles] if isinstance(roles, list) else []

    def forget_token(self) -> None:
        """Drop cached tokens so that the next request fetches a new one."""
        self._application().remove_tokens_for_client()

    # --- requests -----------------------------------------------------------
    def url(self, path: str) -> str:
        """An absolute Graph URL for ``/v1.0/...``."""
        return self.settings.graph_endpoint + path

    def _check_origin(self, url: str) -> None:
        base, other = urlsplit(self.settings.graph_endpoint), urlsplit(url)
        if (other.scheme, other.netloc) != (base.scheme, base.netloc):
            raise SourceError(
                f"source {self.name!r}: Graph returned a link to another host "
                f"({other.netloc}); refusing to send the token there"
            )

    def get(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a Graph URL, with budget, retries and token renewal; the JSON body."""
        self._check_origin(url)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return exc.retry_after
            return float(wait_exponential_jitter(initial=1, max=60, jitter=1)(state))

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(url, params)
        except _Transient as exc:
            raise RetriableSourceError(
                f"source {self.name!r}: Microsoft Graph still failing after "
                f"{self.settings.max_retries + 1} attempts ({exc}); the next run retries"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, url: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        renewed = False
        while True:
            token = self.token()
            if self.budget is not None:
                self.budget.acquire()
            self.requests += 1
            try:
                response = self.http.get(
                    url,
                    params=params,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            except requests.Timeout:
                raise _Transient(f"no answer within {self.settings.timeout:g} s") from None
            except requests.ConnectionError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise SourceError(
                        f"source {self.name!r}: the Graph endpoint's TLS certificate is not "
                        "trusted (set ca_bundle if a proxy or private CA is in the way)"
                    ) from None
                raise _Transient("connection failed") from None
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError:
                    raise _Transient("the answer was not JSON") from None
                if not isinstance(body, dict):
                    raise _Transient("the answer was not a JSON object")
                return body
            if status in RETRY_STATUSES:
                log.info("source %s: Graph answered %d; will retry", self.name, status)
                raise _Transient(f"HTTP {status}", retry_after(response))
            code, message = _graph_error(response)
            if status == 401 and not renewed:
                # An expired or revoked token: fetch a new one once.
                log.info("source %s: Graph refused the token (%s); renewing it", self.name, code)
                self.forget_token()
                renewed = True
                continue
            raise SourceError(self.explain(status, code, message))

    def explain(self, status: int, code: str, message: str) -> str:
        """What a refused request means and what to fix."""
        head = f"source {self.name!r}: Microsoft Graph answered {status} ({code}: {message})."
        if status == 401:
            hint = (
                " The token was refused. Check that tenant_id is the tenant that holds the "
                "mailboxes."
            )
            if self.permission == MESSAGE_TRACE_PERMISSION:
                hint += (
                    " Message trace also needs the service principal of Microsoft's "
                    f"message-trace app {MESSAGE_TRACE_APP_ID} in the tenant: an administrator "
                    "creates it once (Graph: POST /v1.0/servicePrincipals "
                    f'{{"appId": "{MESSAGE_TRACE_APP_ID}"}}; PowerShell: New-MgServicePrincipal '
                    f"-AppId {MESSAGE_TRACE_APP_ID}); provisioning can take some hours."
                )
            return head + hint
        if status == 403:
            return head + (
                f" The app lacks the application permission {self.permission}, or an "
                "administrator has not granted admin consent for it: Entra admin center > "
                "App registrations > (the app) > API permissions > Add a permission > "
                f"Microsoft Graph > Application permissions > {self.permission}, then "
                "'Grant admin consent'."
            )
        if status == 404:
            return head + (
                " The API was not found: check graph_endpoint (message trace exists in the "
                "global cloud only)."
            )
        return head

    def pages(self, path: str, params: Mapping[str, str]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a collection, following ``@odata.nextLink`` to the end."""
        url: str | None = self.url(path)
        query: Mapping[str, str] | None = params
        while url is not None:
            body = self.get(url, query)
            value = body.get("value", [])
            if not isinstance(value, list):
                raise SourceError(f"source {self.name!r}: Graph answered without a value list")
            yield value
            link = body.get("@odata.nextLink")
            url, query = (str(link), None) if link else (None, None)

    def close(self) -> None:
        """Close this client's HTTP session (the msal app and its own stay for the process)."""
        self.http.close()
