"""Postfix mail logs (type ``postfix``): syslog files that grow and rotate, joined by queue id.

Read by :mod:`connectors.logfiles` (series of rotated files, gzip, identity and offsets,
bookmarks, syslog times). Lines of one message share a queue id (keyed by host, Postfix
instance and queue id, so a central log of several servers is read correctly):

* ``smtpd``/``qmqpd`` ``QUEUEID: client=…`` or ``pickup`` ``QUEUEID: uid=… from=<…>``
  starts a message (its time is the row's time; the client name and IP are dropped);
* ``cleanup`` ``QUEUEID: message-id=<…>`` gives the RFC 5322 Message-ID (it also starts a
  message whose first line was not read, when the id is not empty);
* ``qmgr`` ``QUEUEID: from=<…>, size=N, nrcpt=N`` gives the envelope sender and the size;
* a delivery agent (``smtp``, ``lmtp``, ``local``, ``virtual``, ``pipe``, ``error``,
  ``discard``…) ``QUEUEID: to=<…>[, orig_to=<…>], relay=…, dsn=…, status=…`` gives one
  recipient's outcome (the last one counts: ``deferred`` then ``sent``);
* ``qmgr`` ``QUEUEID: removed`` ends the message: one row per recipient is emitted.

Recipients: a row names the address the sender wrote to, ``orig_to`` when Postfix logs one
(an alias, a virtual or canonical mapping expanded it), else ``to``; several deliveries of
one written address count as one row (delivered if any was). Option ``recipient: final``
names the delivered addresses instead.

Statuses: ``sent`` is ``delivered`` (by the ``discard`` agent: ``filtered_as_spam``);
``deferred`` (and ``SOFTBOUNCE``) is ``deferred``; ``bounced`` and ``expired`` (also qmgr's
``status=expired, returned to sender`` for the recipients still deferred) are ``bounced``.
Rejections are rows of their own: ``NOQUEUE: reject: RCPT from …; from=<…> to=<…>`` is
``rejected`` (a message id is derived from the line's time and position: the digest of its
file's first line and its byte offset, which rotation and compression keep); a ``reject``
of a later recipient of a queued message is a ``rejected`` row of that message; a
``reject`` by ``header_checks``/``body_checks`` rejects the message. ``milter-reject`` and
``proxy-reject`` (a content filter's verdict) and ``discard`` are ``filtered_as_spam``;
``hold`` and ``milter-hold`` are ``quarantined``. A rejection with a 4xx code is a
temporary refusal that the client retries: skipped (``temporary_reject``), the retry
counts. A refusal that says the client was none of the organisation's (``Relay access
denied``; ``Sender address rejected: not logged in`` or ``not owned by user``) is skipped
(``unauthorised_client``): its sender is whatever an outside client claimed, as a scanner
forging a staff address does, and no one's act.
``reject_warning``, ``warn``, ``filter`` and ``redirect`` change nothing.
Address-verification probes (``status=deliverable``/``undeliverable``) are not mail.

Messages from the null sender (``from=<>``: the bounces Postfix's ``bounce`` daemon writes,
delivery and read notifications) are nobody's act and are skipped
(``bounce_notification``). ``postscreen``, ``anvil``, ``smtpd`` connects and disconnects,
TLS, warnings and every other line are ignored. Subjects (in ``header_checks`` lines),
client names and IPs are never taken out of the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, cast

from connectors.logfiles import (
    SECOND,
    Joiner,
    LogOptions,
    LogSource,
    MailLogOptions,
    MailMessage,
    Mark,
    RowSink,
    SyslogClock,
    message_id_of,
    parse_syslog,
)

FORMAT = "postfix"
_QUEUED = re.compile(r"([0-9A-Za-z]{5,30}): (.*)", re.DOTALL)
#: A BSD syslog line of a Postfix daemon about a queue id (most lines of a mail log).
_BSD_QUEUED = re.compile(
    r"([A-Z][a-z]{2} [ 0-3]\d [0-2]\d:[0-5]\d:[0-6]\d)(?:\.(\d{1,6}))? (\S+) "
    r"([^\s\[\]:/]+/[^\s\[\]:]+)"
    r"(?:\[\d*\])?: ([0-9A-Za-z]{5,30}): (.*)",
    re.DOTALL,
)
#: Any other BSD syslog line of a Postfix daemon: its text.
_BSD_DAEMON = re.compile(
    r"[A-Z][a-z]{2} [ 0-3]\d [0-2]\d:[0-5]\d:[0-6]\d(?:\.\d{1,6})? \S+ "
    r"[^\s\[\]:/]+/[^\s\[\]:]+(?:\[\d*\])?: (.*)",
    re.DOTALL,
)
_DELIVERY = re.compile(
    r"to=(?:<(.*?)>|([^\s,<>]*)), (?:orig_to=(?:<(.*?)>|([^\s,<>]*)), )?"
    r"(?:[a-z_]+=[^\s,]*, )*status=([A-Za-z][\w-]*)"
)
_QMGR = re.compile(r"from=<(.*?)>, (?:size=(\d+)|status=(expired))")
_PICKUP = re.compile(r"uid=\d+ from=<(.*?)>")
_ENVELOPE = re.compile(r"; from=<(.*?)>(?: to=<(.*?)>)? proto=")
#: A reply code right after the client (``host[ip]: 554 5.7.1``) or the stage.
_CODE = re.compile(r"(?:\]|END-OF-MESSAGE|DATA|BDAT|RCPT)(?::\d+)?: ([245])(?:\d\d\b|\.\d)")

#: Delivery statuses (lower case); None: an address-verification probe, not mail.
_STATUS: dict[str, str | None] = {
    "sent": "delivered",
    "deferred": "deferred",
    "softbounce": "deferred",
    "bounced": "bounced",
    "expired": "bounced",
    "deliverable": None,
    "undeliverable": None,
    "undeliverable-but-not-cached": None,
    "deliverable-but-not-cached": None,
}
#: Actions of smtpd access rules, milters and header/body checks that decide a message.
_ACTIONS = {
    "reject": "rejected",
    "milter-reject": "filtered_as_spam",
    "proxy-reject": "filtered_as_spam",
    "discard": "filtered_as_spam",
    "milter-discard": "filtered_as_spam",
    "hold": "quarantined",
    "milter-hold": "quarantined",
}
#: Stages at which a verdict concerns one recipient (later ones concern the message).
_RECIPIENT_STAGES = {"RCPT"}
#: Stages of the SMTP dialogue, whose verdicts carry a reply code.
_SMTP_STAGES = {"RCPT", "DATA", "BDAT", "END-OF-MESSAGE", "MAIL"}


@dataclass(eq=False)
class PostfixMessage(MailMessage):
    """A queued message; ``verdict``: a ``hold`` or ``discard`` at RCPT, which decides the
    whole message once it is received."""

    verdict: str | None = None
    probe: bool = False

    def emit(self, sink: RowSink, complete: bool) -> None:
        if self.probe and not self.recipients:
            sink.skipped["address_probe"] += 1
            return
        super().emit(sink, complete)


class PostfixJoiner(Joiner):
    """Joins Postfix lines by (host, instance, queue id)."""

    def __init__(
        self, sink: RowSink, clock: SyslogClock, max_open_us: int, original: bool = True
    ) -> None:
        super().__init__(sink, clock, max_open_us)
        self.original = original

    def line(self, text: str, mark: Mark) -> None:
        fast = _BSD_QUEUED.match(text)  # the usual line, in one step
        if fast is not None:
            stamp, fraction, host, program, qid, rest = fast.groups()
            time_us = self.clock.bsd(stamp)
            if time_us is None:
                self.sink.rejected["bad_timestamp"] += 1
                return
            if fraction:  # Postfix's own maillog_file writes microseconds
                time_us += int(fraction.ljust(6, "0"))
        elif (other := _BSD_DAEMON.match(text)) is not None:  # connects, TLS, warnings...
            if other.group(1).startswith("proxy-reject: "):  # a before-queue filter's verdict
                parsed = parse_syslog(text, self.clock)
                if not isinstance(parsed, str):
                    self._noqueue(parsed.message, parsed.time_us, parsed.host, mark)
            return
        else:
            parsed = parse_syslog(text, self.clock)
            if isinstance(parsed, str):
                self.sink.rejected[parsed] += 1
                return
            time_us, host, program, message = parsed
            if "/" not in program:
                return  # not Postfix (syslog_name/daemon): dovecot, amavis, opendkim...
            queued = _QUEUED.match(message)
            if queued is None:
                if message.startswith("proxy-reject: "):  # a before-queue filter's verdict
                    self._noqueue(message, time_us, host, mark)
                return
            qid, rest = queued.groups()
        if qid == "NOQUEUE":
            self._noqueue(rest, time_us, host, mark)
            return
        if qid.islower():
            return  # warning:, fatal:, statistics:
        slash = program.find("/")
        key = (host, program[:slash], qid)
        head = rest[:4]
        if head == "to=<" or rest.startswith("to="):
            if not self._delivery(key, rest, program[program.rfind("/") + 1 :]):
                return
        elif head == "from":
            self._qmgr(key, rest)
        elif head == "clie" and rest.startswith("client="):
            self._start(key, mark, time_us, qid, host)
        elif head == "mess" and rest.startswith("message-id="):
            self._message_id(key, rest[11:], mark, time_us, qid, host)
        elif head == "remo" and (rest == "removed" or rest.startswith("removed ")):
            self.open.close(key, self.sink)
        elif head == "uid=" and (picked := _PICKUP.match(rest)) is not None:
            self._start(key, mark, time_us, qid, host).sender = picked.group(1)
        else:
            action, sep, detail = rest.partition(": ")
            if not sep or action not in _ACTIONS:
                return  # TLS, "host said", "lost connection"...: a time that decides nothing
            self._verdict(key, action, detail)
        if time_us > self.latest_us:  # only a line understood moves the log's time on
            self.saw_time(time_us)

    def _start(self, key: object, mark: Mark, time_us: int, qid: str, host: str) -> MailMessage:
        fallback = f"<{qid}.{time_us // SECOND}@{host or 'postfix'}>"
        return self.open.start(key, PostfixMessage(mark, time_us, fallback), self.sink)

    def _message_id(
        self, key: object, value: str, mark: Mark, time_us: int, qid: str, host: str
    ) -> None:
        message_id = message_id_of(value)
        found = self.open.get(key)
        if found is None:
            if message_id is None:
                return  # no start, no id: nothing that could tie it to what was emitted
            found = self._start(key, mark, time_us, qid, host)
        found.message_id = message_id or found.message_id
        verdict = found.verdict if isinstance(found, PostfixMessage) else None
        if verdict is not None:  # held or discarded at RCPT: the message is now decided
            for outcomes in found.recipients.values():
                for address in outcomes:
                    outcomes[address] = verdict
            self.open.close(key, self.sink)

    def _qmgr(self, key: object, rest: str) -> None:
        found = self.open.get(key)
        matched = _QMGR.match(rest)
        if found is None or matched is None:
            return
        sender, size, expired = matched.groups()
        found.sender = sender
        if size is not None:
            found.size = int(size)
        if expired:  # returned to sender: what was still being tried has failed
            for outcomes in found.recipients.values():
                for address, status in outcomes.items():
                    if status == "deferred":
                        outcomes[address] = "bounced"

    def _delivery(self, key: object, rest: str, agent: str) -> bool:
        """One recipient's outcome; False when the line is malformed."""
        matched = _DELIVERY.match(rest)
        if matched is None:
            self.sink.rejected["malformed_line"] += 1
            return False
        to_quoted, to_plain, orig_quoted, orig_plain, word = matched.groups()
        status = _STATUS.get(word.lower(), "unknown")
        found = self.open.get(key)
        if found is None:
            if status is not None and not self.resumed:
                self.sink.skipped["message_start_not_read"] += 1
            return True
        if status is None:
            if isinstance(found, PostfixMessage):
                found.probe = True
            return True
        if agent == "discard" and status == "delivered":
            status = "filtered_as_spam"
        address = to_quoted if to_quoted is not None else to_plain
        original = orig_quoted if orig_quoted is not None else orig_plain
        reported = original if self.original and original else address
        found.outcome(reported, address, status)
        return True

    def _verdict(self, key: object, action: str, detail: str) -> None:
        """A reject, hold or discard of a queued message (or of one of its recipients)."""
        found = self.open.get(key)
        envelope = _envelope(detail)
        if found is None or envelope is None:
            return
        sender, recipient, stage, temporary = envelope
        if temporary:
            self.sink.skipped["temporary_reject"] += 1
            return
        status = _ACTIONS[action]
        if found.sender is None:
            found.sender = sender
        if recipient:
            found.outcome(recipient, recipient, status)
        if stage in _RECIPIENT_STAGES:
            if action in ("hold", "discard") and isinstance(found, PostfixMessage):
                found.verdict = status  # decides the message once its data is received
            return
        for outcomes in found.recipients.values():  # the message is refused, held or dropped
            for address, was in outcomes.items():
                if was not in ("rejected",):
                    outcomes[address] = status
        self.open.close(key, self.sink)

    def _noqueue(self, rest: str, time_us: int, host: str, mark: Mark) -> None:
        """``NOQUEUE: reject: RCPT from …; from=<…> to=<…>``: a rejection, a row of its own."""
        action, sep, detail = rest.partition(": ")
        if not sep or action not in _ACTIONS:
            return
        envelope = _envelope(detail)
        if envelope is None:
            return
        sender, recipient, stage, temporary = envelope
        if not recipient or stage not in _SMTP_STAGES:
            return  # VRFY, CONNECT, HELO, or a sender refused before any recipient
        if temporary:
            self.sink.skipped["temporary_reject"] += 1
            return
        if sender == "":
            self.sink.skipped["bounce_notification"] += 1
            return
        if _UNAUTHORISED.search(detail):  # a client not ours claimed the sender: no one's act
            self.sink.skipped["unauthorised_client"] += 1
            return
        message_id = f"<NOQUEUE.{time_us // SECOND}.{self.position_id(mark)}@{host or 'postfix'}>"
        self.sink.add(time_us, sender, recipient, _ACTIONS[action], None, message_id)


#: Refusals that say the client was not one of the organisation's: relaying denied
#: (``reject_unauth_destination``: neither authenticated nor in ``mynetworks``) or a
#: sender address the client may not use (``reject_sender_login_mismatch`` and kin).
#: The sender is then only what an outside client claimed, as a scanner or a spammer
#: forging a staff address does.
_UNAUTHORISED = re.compile(
    r"Relay access denied|Sender address rejected: not (?:logged in|owned by user)",
    re.IGNORECASE,
)


def _envelope(detail: str) -> tuple[str, str | None, str, bool] | None:
    """(sender, recipient, stage, temporary) of a verdict's text: the last
    ``; from=<…> to=<…> proto=`` (the text before it may quote a header: never taken)."""
    at = detail.rfind("; from=<")
    if at < 0:
        return None
    matched = _ENVELOPE.match(detail, at)
    if matched is None:
        return None
    stage = detail.split(" ", 1)[0].rstrip(":")
    code = _CODE.search(detail, 0, at) if stage in _SMTP_STAGES else None
    temporary = code is not None and code.group(1) == "4"
    return matched.group(1), matched.group(2), stage, temporary


class PostfixSource(LogSource):
    """Postfix's mail log (``/var/log/mail.log*``, ``/var/log/maillog*``, or a journald
    JSON export), with its rotations."""

    options_model: ClassVar[type[LogOptions]] = MailLogOptions
    format_name: ClassVar[str] = FORMAT

    def joiner(self, sink: RowSink, clock: SyslogClock, max_open_us: int) -> Joiner:
        original = cast(MailLogOptions, self.options).recipient == "original"
        return PostfixJoiner(sink, clock, max_open_us, original)
