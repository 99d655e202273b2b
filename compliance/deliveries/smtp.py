"""Delivery by mail over SMTP: STARTTLS or implicit TLS, optional authentication.

A :class:`~compliance.delivery.Message` becomes one RFC 5322 mail (stdlib ``email``): the
subject, a plain-text part and, when the message has HTML, an HTML alternative whose
inline images are related parts (``Content-ID: <inline_id>``); other attachments are
attached. Its ``Message-ID`` is derived from the message's idempotency key, so that a
message sent again after a crash is the same message to mail clients.

The mail is sent only over TLS whose certificate and host name are verified (against the
system's CAs, or ``ca_bundle``), except to a loopback host with ``security: none`` (a
local relay). All recipients are accepted or none is sent to: a refused recipient resets
the transaction before any data is sent, so that a retry never sends twice to the others.

Errors and log lines name the channel, host, port, counts, the SMTP code and the server's
short text (addresses in it masked), never the message's content, an address or the
password. The receipt is the server's reply to the data (``250 2.0.0 Ok: queued as …``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from compliance.deliveries.net import connection_failure, tls_context
from compliance.delivery import Attachment, Delivery, Message
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from compliance.options import parse_options
from compliance.secrets import SecretRef, no_inline_secret

log = logging.getLogger(__name__)

#: The port each security mode uses when none is configured.
DEFAULT_PORTS: Mapping[str, int] = {"starttls": 587, "tls": 465, "none": 25}
#: Longest server text kept in an error or a receipt.
MAX_REPLY = 160

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_ADDR_SPEC = re.compile(rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})*$")
_NAMED = re.compile(r"^(?P<name>[^<>\r\n]*)<(?P<addr>[^<>\s]+)>$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
_CONTENT_ID = re.compile(r"^[\x21-\x7e]+$")
_ANY_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback IP literal."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(value: str) -> Address:
    """``reports@corp.example`` or ``Ethics office <reports@corp.example>`` as an
    :class:`~email.headerregistry.Address`; ValueError if it is neither."""
    text = value.strip()
    name = ""
    named = _NAMED.match(text)
    if named:
        name, text = named["name"].strip().strip('"').strip(), named["addr"]
    if not _ADDR_SPEC.match(text) or len(text) > 254:
        raise ValueError(
            "must be a plain ASCII address, e.g. reports@corp.example or "
            "'Ethics office <reports@corp.example>' (an IDN domain in its xn-- form)"
        )
    local, domain = text.rsplit("@", 1)
    return Address(display_name=name, username=local, domain=domain)


def _address(value: object) -> object:
    if isinstance(value, str):
        try:
            parse_address(value)
        except ValueError as exc:
            raise PydanticCustomError("address", str(exc)) from None
    return value


class SmtpOptions(BaseModel):
    """Options of an SMTP delivery (``type: smtp``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str = Field(description="the SMTP server: a host name or an IP address")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="its TCP port; default 587 with starttls, 465 with tls, 25 with none",
    )
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls (upgrade a plain connection, usually port 587), tls (implicit "
        "TLS, usually port 465), or none (no encryption: a loopback host only)",
    )
    username: str | None = Field(
        None, min_length=1, description="the account to log in as (AUTH); none: no login"
    )
    password: SecretRef | None = Field(
        None, description="the account's password: {$env: NAME} or {$file: PATH}"
    )
    from_address: str = Field(
        description="the From address (and envelope sender): reports@corp.example or "
        "'Ethics office <reports@corp.example>'"
    )
    reply_to: str | None = Field(None, description="a Reply-To address, if replies go elsewhere")
    to: tuple[str, ...] = Field(
        min_length=1, description="the recipients' addresses (at least one), all in To"
    )
    ca_bundle: str | None = Field(
        None,
        description="a PEM file of CAs to trust instead of the system's (relative to the "
        "config file)",
    )
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per network operation")
    domain: str | None = Field(
        None, description="the domain of the Message-ID; default: the From address's domain"
    )

    _password = field_validator("password", mode="before")(no_inline_secret)
    _addresses = field_validator("from_address", "reply_to", mode="before")(_address)

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: object) -> object:
        if isinstance(value, str) and not is_loopback(value) and not _HOST.match(value):
            try:
                ipaddress.ip_address(value.strip("[]"))
            except ValueError:
                raise PydanticCustomError(
                    "host", "must be a host name or an IP address (no scheme, no port)"
                ) from None
        return value

    @field_validator("security")
    @classmethod
    def _clear_only_on_loopback(cls, value: str, info: ValidationInfo) -> str:
        host = info.data.get("host")
        if value == "none" and isinstance(host, str) and not is_loopback(host):
            raise PydanticCustomError(
                "clear_text",
                "none (no encryption) is allowed only to a loopback host (localhost, "
                "127.0.0.1, ::1), never over a network: use starttls or tls",
            )
        return value

    @field_validator("to", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            seen: set[str] = set()
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    continue
                try:
                    bare = parse_address(item).addr_spec.lower()
                except ValueError as exc:
                    raise PydanticCustomError("address", f"entry {i + 1}: {exc}") from None
                if bare in seen:
                    raise PydanticCustomError("address", f"entry {i + 1} repeats an earlier one")
                seen.add(bare)
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.match(value):
            raise PydanticCustomError("domain", "must be a domain name, e.g. corp.example")
        return value

    @model_validator(mode="after")
    def _login(self) -> SmtpOptions:
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError(
                "login", "username and password go together: give both, or neither"
            )
        return self

    @property
    def resolved_port(self) -> int:
        """The configured port, or the security mode's usual one."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]

    @property
    def sender(self) -> Address:
        """The From address."""
        return parse_address(self.from_address)

    @property
    def recipients(self) -> tuple[Address, ...]:
        """The To addresses."""
        return tuple(parse_address(a) for a in self.to)

    @property
    def message_domain(self) -> str:
        """The domain of the Message-ID."""
        return (self.domain or self.sender.domain).rstrip(".")


def _short(text: bytes | str, secret: str | None = None, message_id: str | None = None) -> str:
    """A server's reply text, fit for an error or a receipt: its first line, printable,
    any address in it masked (a server may echo one) except the message's own
    ``message_id`` (Exchange quotes it), at most :data:`MAX_REPLY` long."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if secret:
        line = line.replace(secret, "***")
    line = _ANY_ADDRESS.sub(lambda m: m[0] if m[0] == message_id else "<address>", line)
    line = "".join(c if c.isprintable() else " " for c in line).strip()
    return line if len(line) <= MAX_REPLY else line[: MAX_REPLY - 1] + "…"


def _split_type(content_type: str) -> tuple[str, str]:
    if not _CONTENT_TYPE.match(content_type):
        return "application", "octet-stream"
    maintype, subtype = content_type.lower().split("/", 1)
    return maintype, subtype


class Smtp(Delivery):
    """Sends each message as one mail to the configured recipients."""

    name: ClassVar[str] = "smtp"
    options_model: ClassVar[type[BaseModel]] = SmtpOptions
    destination: ClassVar[tuple[str, ...]] = ("to",)

    def __init__(self, name: str, options: BaseModel, base_dir: Path) -> None:
        if not isinstance(options, SmtpOptions):
            raise TypeError(f"smtp delivery {name!r} needs SmtpOptions")
        super().__init__(name, options, base_dir)
        self.settings = options
        self._secret: str | None = None  # the resolved password, to mask it in replies

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], base_dir: Path) -> Smtp:
        """The delivery ``name`` from its config options (ConfigError naming a bad one)."""
        return cls(name, parse_options(SmtpOptions, name, options, "delivery"), base_dir)

    @property
    def where(self) -> str:
        """The channel and server, as every message about it starts."""
        s = self.settings
        return f"smtp delivery {self.channel!r} ({s.host}:{s.resolved_port})"

    # --- the mail ----------------------------------------------------------------------
    def build(self, message: Message, now: dt.datetime | None = None) -> EmailMessage:
        """The mail for ``message`` (DeliveryError if it cannot be one; the reason never
        quotes its content)."""
        s = self.settings
        if any(c in message.subject for c in "\r\n\0"):
            raise DeliveryError(f"{self.where}: the subject contains a line break")
        for i, attachment in enumerate(message.attachments):
            self._check_attachment(i, attachment)
        recipients = self._recipients(message)
        mail = EmailMessage(policy=SMTP_POLICY)
        try:
            mail["Subject"] = message.subject
            mail["From"] = s.sender
            mail["To"] = recipients
            reply_to = message.reply_to or s.reply_to
            if reply_to is not None:
                mail["Reply-To"] = parse_address(reply_to)
            mail["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
            mail["Message-ID"] = message.message_id(s.message_domain)
            mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
            mail.set_content(message.text, cte="quoted-printable")
            related = message.html is not None
            inline = [a for a in message.attachments if related and a.inline_id]
            files = [a for a in message.attachments if not (related and a.inline_id)]
            if message.html is not None:
                mail.add_alternative(message.html, subtype="html", cte="quoted-printable")
                html = mail.get_body(("html",))
                assert isinstance(html, EmailMessage)
                for a in inline:
                    assert a.inline_id is not None
                    html.add_related(
                        a.data,
                        *_split_type(a.content_type),
                        cid=f"<{a.inline_id.strip('<>')}>",
                        filename=a.name,
                        disposition="inline",
                    )
            for a in files:
                mail.add_attachment(a.data, *_split_type(a.content_type), filename=a.name)
        except (ValueError, TypeError, LookupError) as exc:
            raise DeliveryError(
                f"{self.where}: the message cannot be encoded as mail ({type(exc).__name__})"
            ) from None
        return mail

    def _recipients(self, message: Message) -> tuple[Address, ...]:
        """The message's own recipient (a notice's), else the configured ``to``; an
        unusable address is refused without quoting it."""
        if message.recipient is None:
            return self.settings.recipients
        try:
            return (parse_address(message.recipient),)
        except ValueError:
            raise DeliveryError(
                f"{self.where}: the recipient's address is not a plain ASCII address"
            ) from None

    def _check_attachment(self, i: int, attachment: Attachment) -> None:
        problem = None
        if any(c in attachment.name for c in "\r\n\0"):
            problem = "its name contains a line break"
        elif attachment.inline_id is not None and not _CONTENT_ID.match(attachment.inline_id):
            problem = "its inline_id is not printable ASCII without spaces"
        if problem:
            raise DeliveryError(f"{self.where}: attachment {i + 1}: {problem}")

    # --- sending -----------------------------------------------------------------------
    def deliver(self, message: Message) -> str:
        mail = self.build(message)
        data = mail.as_bytes()
        recipients = self._recipients(message)
        with self._session() as smtp:
            self._envelope(smtp, len(data), recipients)
            with self._mapped("DATA"):
                code, reply = smtp.data(data)  # raises only if DATA itself is refused
            if code != 250:
                self._refused("DATA: the message was not accepted", code, reply)
        receipt = f"{code} {_short(reply, self._secret, mail['Message-ID'])}".strip()
        log.info(
            "%s: delivered to %d recipient(s), %d attachment(s), %d bytes: %s",
            self.where,
            len(recipients),
            len(message.attachments),
            len(data),
            # a message to one person (a notice): the code alone, since the server's
            # queue id is in its own log beside the person's address
            receipt if message.recipient is None else code,
        )
        return receipt

    def check(self) -> list[tuple[bool, str]]:
        """Connect, verify TLS, log in, and have the sender and recipients accepted, then
        reset: nothing is sent."""
        results = [(True, "configuration valid")]
        s = self.settings
        try:
            with self._session() as smtp:
                tls = "no TLS (loopback)" if s.security == "none" else f"{s.security}, verified"
                results.append((True, f"connected to {s.host}:{s.resolved_port} ({tls})"))
                if s.username is not None:
                    results.append((True, "logged in"))
                self._envelope(smtp, 0)
                with self._mapped("RSET"):
                    smtp.rset()
                results.append(
                    (True, f"sender and {len(s.to)} recipient(s) accepted (nothing sent)")
                )
        except DeliveryError as exc:
            results.append((False, str(exc)))
        return results

    def _password(self) -> str | None:
        s = self.settings
        if s.password is None:
            return None
        try:
            return s.password.resolve(self.base_dir, f"{self.where}: password")
        except ConfigError as exc:
            raise DeliveryError(str(exc)) from None

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.settings.ca_bundle, self.base_dir, self.where)

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """A connection, secured and logged in as configured; closed afterwards."""
        s = self.settings
        password = self._password()
        self._secret = password
        context = None if s.security == "none" else self._tls_context()
        port = s.resolved_port
        with self._mapped("connect"):
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, port, timeout=s.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(s.host, port, timeout=s.timeout)
        try:
            with self._mapped("EHLO"):
                smtp.ehlo_or_helo_if_needed()
            if s.security == "starttls":
                with self._mapped("STARTTLS"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
            if s.username is not None:
                assert password is not None
                with self._mapped("AUTH"):
                    smtp.login(s.username, password)
            yield smtp
        except BaseException:
            smtp.close()
            raise
        with suppress(smtplib.SMTPException, OSError):
            smtp.quit()  # the message was accepted: a failed goodbye changes nothing
        smtp.close()

    def _envelope(
        self, smtp: smtplib.SMTP, size: int, recipients: tuple[Address, ...] | None = None
    ) -> None:
        """MAIL FROM and every RCPT TO (the configured ``to``, or ``recipients``); if any
        is refused, RSET and raise (nothing sent)."""
        s = self.settings
        recipients = s.recipients if recipients is None else recipients
        options = [f"SIZE={size}"] if size and smtp.has_extn("size") else []
        with self._mapped("MAIL FROM"):
            code, reply = smtp.mail(s.sender.addr_spec, options)
        if code != 250:
            self._reset(smtp)
            self._refused("MAIL FROM: the sender was not accepted", code, reply)
        refused: list[tuple[int, int, bytes]] = []
        for i, recipient in enumerate(recipients):
            with self._mapped("RCPT TO"):
                code, reply = smtp.rcpt(recipient.addr_spec)
            if code not in (250, 251):
                refused.append((i, code, reply))
        if refused:
            self._reset(smtp)
            permanent = [r for r in refused if r[1] >= 500]
            i, code, reply = (permanent or refused)[0]
            self._refused(
                f"RCPT TO: {len(refused)} of {len(recipients)} recipient(s) refused (first: to "
                f"entry {i + 1}); nothing was sent",
                code,
                reply,
            )

    @staticmethod
    def _reset(smtp: smtplib.SMTP) -> None:
        with suppress(smtplib.SMTPException, OSError):
            smtp.rset()

    def _refused(self, what: str, code: int, reply: bytes) -> NoReturn:
        """Raise for a refusal: permanent for a 5xx reply, retriable otherwise."""
        text = f"{code} {_short(reply, self._secret)}".rstrip()
        if code >= 500:
            raise DeliveryError(f"{self.where}: {what}: {text}")
        raise RetriableDeliveryError(f"{self.where}: {what} for now: {text}")

    @contextmanager
    def _mapped(self, stage: str) -> Iterator[None]:
        """Turn what ``smtplib``, ``ssl`` and ``socket`` raise during ``stage`` into a
        :class:`DeliveryError` (permanent) or :class:`RetriableDeliveryError`."""
        try:
            yield
        except (smtplib.SMTPException, OSError) as exc:
            retriable, detail = self._classify(stage, exc)
            error = RetriableDeliveryError if retriable else DeliveryError
            raise error(f"{self.where}: {stage}: {detail}") from None

    def _classify(self, stage: str, exc: BaseException) -> tuple[bool, str]:
        """(worth retrying, what happened) for an exception; never the message's content."""
        s = self.settings
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            if isinstance(exc.__context__, TimeoutError):  # smtplib wraps a read timeout
                return True, f"no answer within {s.timeout:g} s"
            return True, "the server closed the connection"
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"{exc.smtp_code} {_short(exc.smtp_error, self._secret)}".rstrip()
            if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code >= 500:
                return False, f"authentication refused: {text}"
            if exc.smtp_code >= 500:
                return False, f"refused: {text}"
            return True, f"the server is unavailable or busy: {text}"
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            if stage == "STARTTLS":
                return False, (
                    "the server does not offer STARTTLS (nothing was sent in clear): check "
                    "port and security (tls for an implicit-TLS port such as 465)"
                )
            return False, f"the server does not support it: {_short(str(exc))}"
        if isinstance(exc, smtplib.SMTPException):
            return False, _short(str(exc))  # smtplib's own text, e.g. no common AUTH method
        found = connection_failure(
            exc,
            s.timeout,
            host_hint="check host (it must match the certificate) and ca_bundle",
            tls_hint="check port and security (tls for an implicit-TLS port, starttls for 587)",
        )
        if found is not None:
            return found
        if isinstance(exc, OSError):
            return True, f"network error: {exc.strerror or exc.__class__.__name__}"
        return False, exc.__class__.__name__
