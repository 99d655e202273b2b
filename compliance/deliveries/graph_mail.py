"""Delivery by Microsoft Graph ``sendMail``, as the app of an ``m365`` source (type ``graph-mail``).

A :class:`~compliance.delivery.Message` becomes one ``POST /v1.0/users/{sender}/sendMail``
with a JSON body, sent with the client-credentials token of the same app registration the
Microsoft 365 connectors use (msal, :class:`connectors.graph.GraphClient`). The app needs the
application permission ``Mail.Send``: granted tenant-wide by admin consent, or (recommended)
by an Exchange Online *RBAC for Applications* assignment whose scope is the one sending
mailbox; then the tenant-wide consent must be removed, as the two are additive.

The request's shape (Microsoft Graph v1.0, ``user: sendMail``, Example 2 custom Internet
message headers and Example 3 file attachment:
https://learn.microsoft.com/en-us/graph/api/user-sendmail; ``fileAttachment``:
https://learn.microsoft.com/en-us/graph/api/resources/fileattachment)::

    {"message": {"subject": …, "body": {"contentType": "HTML" | "Text", "content": …},
                 "toRecipients": [{"emailAddress": {"address": …, "name"?: …}}],
                 "replyTo"?: [...],
                 "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment",
                                  "name", "contentType", "contentBytes": base64,
                                  "isInline", "contentId"?}],
                 "internetMessageHeaders": [{"name": "X-Compliance-Delivery",
                                             "value": message.digest()}]},
     "saveToSentItems": false}

Graph takes only custom headers named ``x-…``/``X-…`` in ``internetMessageHeaders`` (it
answers 400 "The internet message header name '…' should start with 'x-' or 'X-'"), so the
message cannot carry a ``Message-ID`` of ours: the key's SHA-256 travels in
``X-Compliance-Delivery`` instead, the same on every attempt of one key.

``202 Accepted`` is success, but not a delivery: Graph has queued the message, and Exchange
Online delivers it later, subject to its limits ("A 202 Accepted response code indicates that
the request has been accepted; however, it does not indicate that the request processing has
completed"). The receipt says so.

429 and 5xx answers and dropped connections are retried within the call (``Retry-After``
honoured, else capped exponential back-off with jitter), then raise
:class:`~compliance.errors.RetriableDeliveryError`; 400, 401 (after one token renewal), 403
and 404 raise :class:`~compliance.errors.DeliveryError` saying what to fix. Errors and log
lines name the channel, the Graph host, counts, the HTTP status and Graph's error code and
message (any address in it masked), never the message's content or an address.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from compliance.deliveries.smtp import parse_address
from compliance.delivery import Attachment, Delivery, Message
from compliance.errors import (
    ComplianceError,
    ConfigError,
    DeliveryError,
    RetriableDeliveryError,
    RetriableSourceError,
)
from connectors.common import retry_after
from connectors.graph import RETRY_STATUSES, GraphClient, GraphSettings

log = logging.getLogger(__name__)

#: The application permission (and Exchange application role, prefixed "Application ").
MAIL_SEND_PERMISSION = "Mail.Send"
#: The custom header carrying the idempotency key's SHA-256 (Graph: must start with X-).
DELIVERY_HEADER = "X-Compliance-Delivery"
#: What the receipt of an accepted message says: Graph queued it, nothing was delivered yet.
ACCEPTED = "accepted by Graph (queued for delivery, not yet delivered)"
#: The largest request body sent: Graph answers 413 to a sendMail request over about 4 MB
#: (https://learn.microsoft.com/en-us/answers/questions/1824204; files of 3 MB and more
#: need an upload session on a draft, which this channel does not do).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Longest Graph error message kept in an error.
MAX_REPLY = 160

_ANY_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")
_CONTENT_ID = re.compile(r"^[\x21-\x7e]+$")
_USER_ID = re.compile(r"^[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$")


def _address(value: object) -> object:
    if isinstance(value, str):
        try:
            parse_address(value)
        except ValueError as exc:
            raise PydanticCustomError("address", str(exc)) from None
    return value


def _mailbox(value: object) -> object:
    if isinstance(value, str) and not _USER_ID.match(value.strip()):
        try:
            address = parse_address(value)
        except ValueError:
            raise PydanticCustomError(
                "mailbox",
                "must be the sending mailbox's address (e.g. compliance@corp.example) or its "
                "Entra user id (a GUID)",
            ) from None
        if address.display_name:
            raise PydanticCustomError(
                "mailbox", "the plain address only (no display name: the mailbox has its own)"
            )
    return value


class GraphMailOptions(GraphSettings):
    """Options of a ``graph-mail`` delivery: the app's Graph settings (as an ``m365``
    source's) plus the sending mailbox and the recipients."""

    sender: str = Field(
        description="the mailbox the app sends as: its address or its Entra user id (GUID)"
    )
    to: list[str] = Field(
        min_length=1,
        max_length=500,
        description="the recipients: a delivery goes to all of them or to none",
    )
    reply_to: str | None = Field(None, description="a Reply-To address")
    rbac_for_applications: bool = Field(
        False,
        description="true when Mail.Send comes from an Exchange RBAC for Applications "
        "assignment scoped to the sender, not from tenant-wide admin consent",
    )

    _sender = field_validator("sender", mode="before")(_mailbox)
    _reply_to = field_validator("reply_to", mode="before")(_address)

    @field_validator("to", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            for item in value:
                _address(item)
        return value


def _recipient(value: str) -> dict[str, Any]:
    address = parse_address(value)
    email: dict[str, str] = {"address": address.addr_spec}
    if address.display_name:
        email["name"] = address.display_name
    return {"emailAddress": email}


def _short(text: str) -> str:
    """Graph's error message, fit for an error: one printable line, addresses masked (Graph
    quotes the mailbox in some, e.g. ErrorInvalidUser), at most :data:`MAX_REPLY` long."""
    lines = text.strip().splitlines()
    line = _ANY_ADDRESS.sub("<address>", lines[0] if lines else "")
    line = "".join(c if c.isprintable() else " " for c in line).strip()
    return line if len(line) <= MAX_REPLY else line[: MAX_REPLY - 1] + "…"


def _graph_error(response: requests.Response) -> str:
    """``code: message`` from Graph's error body, or ``HTTP status``."""
    try:
        error = response.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "", ""
    text = code or f"HTTP {response.status_code}"
    message = _short(message)
    return f"{text}: {message}" if message else text


class _Transient(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class GraphMail(Delivery):
    """Sends each message as the configured mailbox through Microsoft Graph ``sendMail``."""

    name: ClassVar[str] = "graph-mail"
    options_model: ClassVar[type[BaseModel]] = GraphMailOptions
    destination: ClassVar[tuple[str, ...]] = ("to",)

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        if not isinstance(options, GraphMailOptions):
            raise TypeError(f"graph-mail delivery {name!r} needs GraphMailOptions")
        super().__init__(name, options, base_dir)
        self.settings = options
        #: how retries wait (tests replace it)
        self.sleep = time.sleep

    @property
    def where(self) -> str:
        """The channel and Graph host, as every message about it starts (no address)."""
        host = urlsplit(self.settings.graph_endpoint).netloc
        return f"graph-mail delivery {self.channel!r} ({host})"

    # --- the request -------------------------------------------------------------------
    def payload(self, message: Message) -> dict[str, Any]:
        """The ``sendMail`` body for ``message`` (DeliveryError if it cannot be one; the
        reason never quotes its content)."""
        s = self.settings
        if any(c in message.subject for c in "\r\n\0"):
            raise DeliveryError(f"{self.where}: the subject contains a line break")
        html = message.html is not None
        mail: dict[str, Any] = {
            "subject": message.subject,
            "body": {
                "contentType": "HTML" if html else "Text",
                "content": message.html if message.html is not None else message.text,
            },
            "toRecipients": self._recipients(message),
        }
        reply_to = message.reply_to or s.reply_to
        if reply_to is not None:
            mail["replyTo"] = [_recipient(reply_to)]
        if message.attachments:
            mail["attachments"] = [
                self._attachment(i, a, inline=html) for i, a in enumerate(message.attachments)
            ]
        # Custom headers must be named x-… or X-… (user: sendMail, Example 2; Graph answers
        # 400 "…should start with 'x-' or 'X-'" otherwise).
        mail["internetMessageHeaders"] = [{"name": DELIVERY_HEADER, "value": message.digest()}]
        return {"message": mail, "saveToSentItems": False}

    def _recipients(self, message: Message) -> list[dict[str, Any]]:
        """The message's own recipient (a notice's), else the configured ``to``; an
        unusable address is refused without quoting it."""
        if message.recipient is None:
            return [_recipient(a) for a in self.settings.to]
        try:
            return [_recipient(message.recipient)]
        except ValueError:
            raise DeliveryError(
                f"{self.where}: the recipient's address is not a plain ASCII address"
            ) from None

    def _attachment(self, i: int, attachment: Attachment, *, inline: bool) -> dict[str, Any]:
        if any(c in attachment.name for c in "\r\n\0"):
            raise DeliveryError(f"{self.where}: attachment {i + 1}: its name contains a line break")
        out: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": attachment.name,
            "contentType": attachment.content_type,
            "contentBytes": base64.b64encode(attachment.data).decode("ascii"),
            "isInline": False,
        }
        if inline and attachment.inline_id is not None:
            content_id = attachment.inline_id.strip("<>")
            if not _CONTENT_ID.match(content_id):
                raise DeliveryError(
                    f"{self.where}: attachment {i + 1}: its inline_id is not printable ASCII "
                    "without spaces"
                )
            out["isInline"] = True
            out["contentId"] = content_id  # the HTML refers to it as cid:content_id
        return out

    def url(self) -> str:
        """The ``sendMail`` URL of the sending mailbox."""
        sender = quote(self.settings.sender.strip(), safe="@")
        return f"{self.settings.graph_endpoint}/v1.0/users/{sender}/sendMail"

    # --- sending -----------------------------------------------------------------------
    def deliver(self, message: Message) -> str:
        body = json.dumps(self.payload(message), ensure_ascii=False).encode("utf-8")
        if len(body) > MAX_REQUEST_BYTES:
            raise DeliveryError(
                f"{self.where}: the message is {len(body)} bytes as a sendMail request; Graph "
                f"accepts at most {MAX_REQUEST_BYTES} (send fewer or smaller attachments, or "
                "use the smtp delivery)"
            )
        # the same id on every attempt of one key: Graph echoes it in its logs
        request_id = str(uuid.UUID(message.digest()[:32]))
        client = self._client()
        try:
            status, graph_request = self._post(client, body, request_id)
        finally:
            client.close()
        receipt = f"{status} {ACCEPTED}"
        log.info(
            "%s: %s for %d recipient(s), %d attachment(s), %d bytes (request-id %s)",
            self.where,
            receipt,
            1 if message.recipient is not None else len(self.settings.to),
            len(message.attachments),
            len(body),
            # a message to one person (a notice): no id that the service's own logs hold
            # beside the person's address
            (graph_request or "none") if message.recipient is None else "not logged",
        )
        return receipt

    def check(self) -> list[tuple[bool, str]]:
        """Acquire a token and read the app's roles from it: nothing is sent."""
        results = [(True, "configuration valid")]
        try:
            client = self._client()
            try:
                roles = self._mapped(client.roles)
            finally:
                client.close()
        except DeliveryError as exc:
            return [*results, (False, str(exc))]
        results.append((True, f"token acquired from {client.authority}"))
        granted = MAIL_SEND_PERMISSION in roles
        if self.settings.rbac_for_applications:
            if granted:
                results.append(
                    (
                        False,
                        f"the token carries a tenant-wide {MAIL_SEND_PERMISSION} role: it lets "
                        "the app send as any mailbox, whatever the RBAC for Applications scope; "
                        "remove that application permission (and its admin consent) from the "
                        "app registration",
                    )
                )
            else:
                results.append(
                    (
                        True,
                        f"no tenant-wide {MAIL_SEND_PERMISSION} in the token (Exchange checks "
                        "the RBAC for Applications scope at send time; "
                        "Test-ServicePrincipalAuthorization shows it)",
                    )
                )
        elif granted:
            results.append((True, f"permission {MAIL_SEND_PERMISSION} granted (nothing sent)"))
        else:
            results.append(
                (
                    False,
                    f"the token carries no {MAIL_SEND_PERMISSION} role: add that application "
                    "permission to the app registration and grant admin consent, or assign "
                    f'the Exchange role "Application {MAIL_SEND_PERMISSION}" scoped to the '
                    "sender (RBAC for Applications) and set rbac_for_applications: true",
                )
            )
        return results

    def _client(self) -> GraphClient:
        try:
            return GraphClient(self.channel, self.settings, self.base_dir, MAIL_SEND_PERMISSION)
        except ConfigError as exc:
            raise DeliveryError(self._reword(str(exc))) from None

    def _reword(self, text: str) -> str:
        """A GraphClient message (``source 'x': …``) as this delivery's."""
        return f"{self.where}: {text.removeprefix(f'source {self.channel!r}: ')}"

    def _mapped(self, call: Any) -> Any:
        """``call()``, with the connectors' errors as delivery errors."""
        try:
            return call()
        except RetriableSourceError as exc:
            raise RetriableDeliveryError(self._reword(str(exc))) from None
        except ComplianceError as exc:  # SourceError, ConfigError (a secret missing)
            if isinstance(exc, DeliveryError):
                raise
            raise DeliveryError(self._reword(str(exc))) from None

    def _post(self, client: GraphClient, body: bytes, request_id: str) -> tuple[int, str]:
        """POST the body, with retries of 429, 5xx and dropped connections and one token
        renewal; (status, Graph's request-id) once accepted."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return exc.retry_after
            return float(wait_exponential_jitter(initial=1, max=60, jitter=1)(state))

        attempts = self.settings.max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    result: tuple[int, str] = self._mapped(
                        lambda: self._attempt(client, body, request_id)
                    )
                    return result
        except _Transient as exc:
            raise RetriableDeliveryError(
                f"{self.where}: Microsoft Graph still failing after {attempts} attempt(s) "
                f"({exc}); a later run retries"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, client: GraphClient, body: bytes, request_id: str) -> tuple[int, str]:
        renewed = False
        while True:
            token = client.token()
            client.requests += 1
            try:
                # GraphClient's own session: its CA bundle and timeout on every request
                response = client.http.post(
                    self.url(),
                    data=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        "client-request-id": request_id,
                    },
                )
            except requests.Timeout:
                raise _Transient(f"no answer within {self.settings.timeout:g} s") from None
            except requests.ConnectionError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise DeliveryError(
                        f"{self.where}: the Graph endpoint's TLS certificate is not trusted "
                        "(set ca_bundle if a proxy or private CA is in the way)"
                    ) from None
                raise _Transient("connection failed") from None
            status = response.status_code
            if 200 <= status < 300:
                return status, response.headers.get("request-id", "")
            if status in RETRY_STATUSES:
                log.info("%s: Graph answered %d; will retry", self.where, status)
                raise _Transient(f"HTTP {status}", retry_after(response))
            if status == 401 and not renewed:
                log.info("%s: Graph refused the token; renewing it", self.where)
                client.forget_token()
                renewed = True
                continue
            self._refused(status, _graph_error(response))

    def _refused(self, status: int, error: str) -> NoReturn:
        head = f"{self.where}: Microsoft Graph answered {status} ({error})."
        if status == 401:
            hint = (
                " The token was refused: check tenant_id (the tenant that holds the sending "
                "mailbox) and the app's credential."
            )
        elif status == 403:
            hint = (
                f" The app may not send as this mailbox. Either grant the application permission "
                f"{MAIL_SEND_PERMISSION} with admin consent (any mailbox of the tenant), or, "
                "recommended, assign it in Exchange Online with RBAC for Applications: "
                f'New-ManagementRoleAssignment -App … -Role "Application {MAIL_SEND_PERMISSION}" '
                "-CustomResourceScope (a management scope holding only the sender); an "
                "assignment can take up to two hours to apply; then `compliance outbox retry ID`."
            )
        elif status == 404:
            hint = (
                " The sending mailbox was not found: sender must be a mailbox of this tenant "
                "(its address or Entra user id) with an Exchange Online license."
            )
        elif status == 400:
            hint = " Graph refused the request as malformed; it is not retried."
        else:
            hint = ""
        raise DeliveryError(head + hint)
