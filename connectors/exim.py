"""Exim main logs (type ``exim``): ``mainlog`` (or ``main.log``) with its rotations, joined by
Exim's message id.

Read by :mod:`connectors.logfiles` (``mainlog``, ``mainlog.1``, ``mainlog.2.gz`` as
exicyclog or logrotate leave them; identity and offsets; bookmarks). A line is
``2026-11-30 06:25:01[.123][ +0100][ [pid]] <text>``: the time with milliseconds
(``log_selector = +millisec``), a zone (``log_timezone = true``; without one, the
``timezone`` option) and a process id (``+pid``) when configured. Exim writing to syslog
(``log_file_path = syslog``) is read too, its lines after the syslog prefix.

Lines of one message share its id (``1RwtJa-0009RI-2d``, or ``1smkL5-00000000e65-24eQ``
from Exim 4.97):

* ``<=`` arrival: the envelope sender (``<>`` for a bounce or another notification), ``S=``
  the size, ``id=`` the Message-ID, and with ``+received_recipients`` ``for`` the
  recipients; the row's time is this line's;
* ``=>`` a delivery, ``->`` a further address of the same delivery: ``delivered``
  (``:blackhole:``, an address that discards: ``filtered_as_spam``);
* ``==`` a deferral: ``deferred``; ``**`` a failure: ``bounced``; ``*>`` a delivery
  suppressed by ``-N`` (nothing was delivered): ``unknown``;
* ``Completed`` ends the message: one row per recipient is emitted.

A delivery line names the delivered address and, in angle brackets, the address written
to when a router (an alias, a redirect) changed it (``=> jdoe <sales@corp.example>``): a
row names the address written to (option ``recipient: final``: the delivered one); several
deliveries of one address written to count as one row (delivered if any was).

A rejected recipient (``H=… F=<sender> rejected RCPT <recipient>: …``) is a ``rejected``
row of its own; its message id is derived from the line's time and position (the digest
of its file's first line, and its offset). ``temporarily rejected RCPT`` (greylisting)
is skipped as ``temporary_reject``: the client retries. ``relay not permitted`` refuses
a client that is none of the organisation's: its sender is whatever it claimed (a
scanner forging a staff address), no one's act, and the row is skipped
(``unauthorised_client``). Rejections after DATA name no recipient and are not rows.
Messages from the null sender (bounces, delivery notifications) are nobody's act and are
skipped (``bounce_notification``). Subjects (``T=``), hosts and IPs (``H=``, ``I=``),
TLS details and every other field are never taken out of the line.
"""

from __future__ import annotations

import re
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
    utc_us,
)

FORMAT = "exim"
_STAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?: ([+-])(\d\d)(\d\d))?"
    r"(?: \[\d+\])? "
)
_MESSAGE = re.compile(r"([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) (.*)", re.DOTALL)
_ADDRESSES = re.compile(r"(\S+)(?: \([^)]*\))*(?: <([^>]*)>)?")
_SIZE = re.compile(r" S=(\d+)")
_ID = re.compile(r" id=(\S+)")
#: The default configuration's refusal of a client that may not relay (neither
#: authenticated nor a host of the organisation's): its sender is only what it claimed.
_UNAUTHORISED = ": relay not permitted"
_REJECTED = re.compile(r"F=<([^>]*)> (temporarily )?rejected RCPT <([^>]*)>")
_FLAGS = {"=>": "delivered", "->": "delivered", "==": "deferred", "**": "bounced", "*>": "unknown"}
_PROGRAMS = {"exim", "exim4"}


class EximJoiner(Joiner):
    """Joins Exim main-log lines by (host, message id)."""

    def __init__(
        self, sink: RowSink, clock: SyslogClock, max_open_us: int, original: bool = True
    ) -> None:
        super().__init__(sink, clock, max_open_us)
        self.original = original
        self._stamps: dict[str, int | None] = {}

    def line(self, text: str, mark: Mark) -> None:
        host = ""
        if text[:1].isdigit() and text[4:5] == "-" and text[10:11] == " ":
            time_us, body = self._exim_time(text)
        else:  # through syslog
            parsed = parse_syslog(text, self.clock)
            if isinstance(parsed, str):
                self.sink.rejected[parsed] += 1
                return
            if parsed.program.rsplit("/", 1)[-1] not in _PROGRAMS:
                return
            host, body = parsed.host, parsed.message
            time_us = parsed.time_us
            if body[:1].isdigit():
                inner, rest = self._exim_time(body)
                if inner is not None:
                    time_us, body = inner, rest
        if time_us is None:
            self.sink.rejected["bad_timestamp" if body else "malformed_line"] += 1
            return
        message = _MESSAGE.match(body)
        if message is None:
            if "rejected RCPT" in body:
                self._rejected(body, time_us, host, mark)
            return
        exim_id, rest = message.groups()
        key = (host, exim_id)
        flag = rest[:2]
        if flag == "<=":
            self._arrival(key, rest[3:], mark, time_us, exim_id, host)
        elif flag in _FLAGS:
            if not self._delivery(key, flag, rest[3:]):
                return
        elif rest == "Completed" or rest.startswith("Completed "):
            self.open.close(key, self.sink)
        else:
            return  # "H=…: SMTP error", "Frozen", "removed by": a time that decides nothing
        if time_us > self.latest_us:  # only a line understood moves the log's time on
            self.saw_time(time_us)

    def _exim_time(self, text: str) -> tuple[int | None, str]:
        """The time of an Exim stamp at the start of ``text`` (UTC µs) and the text after."""
        stamp = _STAMP.match(text)
        if stamp is None:
            return None, ""
        key = stamp.group(0)
        if key in self._stamps:
            return self._stamps[key], text[stamp.end() :]
        year, month, day, hour, minute, second = (int(g) for g in stamp.groups()[:6])
        fraction, sign, zone_h, zone_m = stamp.groups()[6:]
        micro = int((fraction or "0").ljust(6, "0"))
        value = self.clock.local(year, month, day, hour, minute, second, micro)
        if sign is not None:  # log_timezone: the offset is written, the zone option unused
            value = utc_us(year, month, day, hour, minute, second, micro)
            offset = (int(zone_h) * 60 + int(zone_m)) * 60 * SECOND
            if value is not None:
                value -= offset if sign == "+" else -offset
        if len(self._stamps) > 50_000:
            self._stamps.clear()
        self._stamps[key] = value
        return value, text[stamp.end() :]

    def _arrival(
        self, key: tuple[str, str], rest: str, mark: Mark, time_us: int, exim_id: str, host: str
    ) -> None:
        sender, _, fields = rest.partition(" ")
        fallback = f"<{exim_id}@{host or 'exim'}>"
        found = self.open.start(key, MailMessage(mark, time_us, fallback), self.sink)
        found.sender = "" if sender == "<>" else sender
        subject = fields.find(' T="')
        before = fields if subject < 0 else fields[:subject]  # the subject is never read
        size = _SIZE.search(" " + before)
        if size is not None:
            found.size = int(size.group(1))
        message_id = _ID.search(" " + before)
        if message_id is not None:
            found.message_id = message_id_of(message_id.group(1))
        tail = fields if subject < 0 else fields[fields.rfind('"') + 1 :]
        listed = tail.rfind(" for ")
        if listed >= 0 or tail.startswith("for "):
            names = tail[listed + 5 :] if listed >= 0 else tail[4:]
            for recipient in names.split():
                found.listed(recipient)

    def _delivery(self, key: tuple[str, str], flag: str, rest: str) -> bool:
        """One address's outcome; False when the line is malformed."""
        matched = _ADDRESSES.match(rest)
        if matched is None:
            self.sink.rejected["malformed_line"] += 1
            return False
        found = self.open.get(key)
        if found is None:
            if not self.resumed:
                self.sink.skipped["message_start_not_read"] += 1
            return True
        address, original = matched.group(1), matched.group(2)
        status = _FLAGS[flag]
        if address == ":blackhole:":  # an address that discards
            if not original:
                return True
            status = "filtered_as_spam"
        else:
            address = address.rstrip(":")  # "** x@y.test: retry timeout exceeded"
        reported = original if original and (self.original or "@" not in address) else address
        found.outcome(reported, address, status)
        return True

    def _rejected(self, body: str, time_us: int, host: str, mark: Mark) -> None:
        """``H=… F=<sender> rejected RCPT <recipient>: …``: a row of its own."""
        matched = _REJECTED.search(body)
        if matched is None:
            return
        sender, temporary, recipient = matched.groups()
        if temporary:
            self.sink.skipped["temporary_reject"] += 1
        elif sender == "":
            self.sink.skipped["bounce_notification"] += 1
        elif _UNAUTHORISED in body[matched.end() :]:  # an outside client's claim: no one's act
            self.sink.skipped["unauthorised_client"] += 1
        else:
            message_id = f"<rejected.{time_us // SECOND}.{self.position_id(mark)}@{host or 'exim'}>"
            self.sink.add(time_us, sender, recipient, "rejected", None, message_id)


class EximSource(LogSource):
    """Exim's main log (``/var/log/exim4/mainlog*``, ``/var/log/exim/main.log*``), with its
    rotations."""

    options_model: ClassVar[type[LogOptions]] = MailLogOptions
    format_name: ClassVar[str] = FORMAT

    def joiner(self, sink: RowSink, clock: SyslogClock, max_open_us: int) -> Joiner:
        original = cast(MailLogOptions, self.options).recipient == "original"
        return EximJoiner(sink, clock, max_open_us, original)
