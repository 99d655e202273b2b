"""The error tree, grouped by what the caller should do next.

Only the CLI turns these into exit codes and messages. No message built here may
contain a mail address, a local part or a name: errors name files, lines, fields
and reasons, never record contents.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import urlsplit


class ExitCode(IntEnum):
    """The program's exit codes, by name: every exit of the command line is one of these
    (the same for every command). :data:`EXIT_CODES` says what each one means."""

    OK = 0
    FAILED = 1
    USAGE = 2
    POLICY = 3
    INPUT = 4
    SOURCE = 5
    STORE = 6
    CASE = 8
    AUDIT_LOG_BROKEN = 9
    PRIVACY_BUDGET = 10
    TRIAGE = 11
    STORAGE = 12
    DELIVERY = 13
    UNHEALTHY = 14
    INTERNAL = 70  # EX_SOFTWARE of sysexits.h
    LOCKED = 75  # EX_TEMPFAIL: try again later
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
    CLOSED_PIPE = 141  # 128 + SIGPIPE, as a shell reports `| head`


class ExitMeaning(NamedTuple):
    """One row of the exit-code table: the code's name and what it tells the user."""

    name: str
    meaning: str


def _row(code: ExitCode, meaning: str) -> tuple[int, ExitMeaning]:
    return int(code), ExitMeaning(code.name.lower().replace("_", "-"), meaning)


#: The exit-code table: code -> name and meaning, in the words of the README and the
#: command-line reference (both render it from here).
EXIT_CODES: MappingProxyType[int, ExitMeaning] = MappingProxyType(
    dict(
        [
            _row(ExitCode.OK, "done"),
            _row(
                ExitCode.FAILED,
                "the policies' inline tests failed (`policy test`), or an error of no other "
                "kind (the message says what)",
            ),
            _row(
                ExitCode.USAGE,
                "the command line, the configuration or the key is wrong: an unknown, "
                "misspelt or missing option, command or key (named, with the closest valid "
                "one), a value out of range, options that do not go together, a plugin that "
                "cannot load (`plugins --check`)",
            ),
            _row(
                ExitCode.POLICY,
                "a policy is invalid or refused by the works-council lint; each problem with "
                "file and line (`policy lint`)",
            ),
            _row(
                ExitCode.INPUT,
                "an input cannot be read or has an unknown format; a run or audit that read "
                "nothing or rejected every row it read (it says which, after writing what it "
                "could); a feed update that was refused or failed",
            ),
            _row(
                ExitCode.SOURCE,
                "a source failed (Graph refused or kept failing: the message says what to "
                "fix), or `sources check` found a check that fails",
            ),
            _row(
                ExitCode.STORE,
                "the store cannot be used (written by a newer version, or not a store)",
            ),
            _row(ExitCode.CASE, "a case step the rules refuse (the message names the rule)"),
            _row(
                ExitCode.AUDIT_LOG_BROKEN,
                "`log verify` found the audit log broken (it names the first entry edited, "
                "removed or reordered)",
            ),
            _row(ExitCode.PRIVACY_BUDGET, "a broad report would exceed the privacy budget"),
            _row(
                ExitCode.TRIAGE,
                "a triage step the workflow does not allow (nothing was changed)",
            ),
            _row(
                ExitCode.STORAGE,
                "a file or folder cannot be written: read-only, full, missing or no "
                "permission (`--out`, `--dir`, the store, the reports folder, the lock); the "
                "message names the path, why, and what to do; `--out` and `--dir` are "
                "checked before any work, and a disk that fills up mid-run keeps nothing of "
                "the unit being written (the next run completes it)",
            ),
            _row(
                ExitCode.DELIVERY,
                "a report could not be delivered; it stays in the outbox (`outbox retry`)",
            ),
            _row(
                ExitCode.UNHEALTHY,
                "`status` found something overdue or failed (the message lists what)",
            ),
            _row(
                ExitCode.INTERNAL,
                "internal error, please report it: the message says where, never what; run "
                "again with `--debug` for a traceback (it may quote input)",
            ),
            _row(ExitCode.LOCKED, "another run holds the lock: try again later"),
            _row(ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
            _row(
                ExitCode.CLOSED_PIPE,
                "the reader of the output went away early (`| head -1`): not an error, "
                "nothing is printed",
            ),
        ]
    )
)


class ComplianceError(Exception):
    """Base class: an error the user can act on; its message is safe to print."""

    exit_code: int = ExitCode.FAILED


class ConfigError(ComplianceError):
    """The configuration, a key or a command-line value is wrong: fix it and run again."""

    exit_code = ExitCode.USAGE


class KeyMissingError(ConfigError):
    """No pseudonymisation key was configured, or the key does not fit the store."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a file a person wrote (a policy, a config, a feed)."""

    path: str
    line: int | None
    field: str | None
    message: str
    #: the column (1-based) where the parser stopped, for a YAML syntax error
    column: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyError(ComplianceError):
    """One or more policy files are invalid; each problem carries file, line and field."""

    exit_code = ExitCode.POLICY

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


#: An address in a file or folder name (a per-mailbox export): its local part.
_NAMED_MAILBOX = re.compile(r"[^\s/\\@<>%]+(?=(?:@|%40)[^\s/\\@<>]+\.[^\s/\\@<>]+)", re.IGNORECASE)


def shown_path(path: str | Path) -> str:
    """A path as a message may show it: an address in a file or folder name (a
    per-mailbox export, ``trace-alice@corp.example.csv``) with its local part replaced
    by ``…`` (``trace-…@corp.example.csv``; also where the ``@`` is written ``%40``), so
    that an error names the file without naming the person; anything else as it is."""
    return _NAMED_MAILBOX.sub("…", str(path))


def shown_url(url: str) -> str:
    """A URL as a message, a report or the audit log may show it: its scheme, host, port
    and path (an address in the path masked as by :func:`shown_path`), without a user
    name or password, and its query string and fragment as ``?…``: a feed's download
    token, or a subscriber's address, often rides there."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number: not a URL to take apart
        host = port = None
    if not parts.scheme or not host:
        return shown_path(url.split("?", 1)[0]) + ("?…" if "?" in url else "")
    host = f"[{host}]" if ":" in host else host
    where = f"{parts.scheme}://{host}{f':{port}' if port else ''}{shown_path(parts.path)}"
    return where + ("?…" if parts.query or parts.fragment else "")


class InputError(ComplianceError):
    """A whole input (log file, directory, feed) cannot be read: unreadable or unknown format."""

    exit_code = ExitCode.INPUT

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{shown_path(path)}: {message}")


class SourceError(ComplianceError):
    """A remote source failed in a way that retrying will not fix."""

    exit_code = ExitCode.SOURCE


class RetriableSourceError(SourceError):
    """A remote source failed in a way that a later attempt may fix."""


class CaseError(ComplianceError):
    """A case step that the re-identification rules do not allow; the message names the rule."""

    exit_code = ExitCode.CASE


class PrivacyBudgetError(ComplianceError):
    """A release would spend more privacy budget than the configuration allows."""

    exit_code = ExitCode.PRIVACY_BUDGET


class StoreError(ComplianceError):
    """The store cannot be opened or is in a state this version cannot use."""

    exit_code = ExitCode.STORE


class StorageError(ComplianceError):
    """A file or folder cannot be written: read-only, full, missing or no permission.

    The environment, not the data, is at fault: the message names what could not be
    written, where (a path of the operator's, never record contents), why, and what to do.
    Nothing of the unit being written was kept; the next run on a healthy disk completes it.
    """

    exit_code = ExitCode.STORAGE

    #: The errors of writing a file that the environment causes (and an operator can fix).
    ERRNOS: frozenset[int] = frozenset(
        {
            errno.EROFS,
            errno.ENOSPC,
            errno.EACCES,
            errno.EPERM,
            errno.ENOENT,
            errno.ENOTDIR,
            errno.EDQUOT,
            errno.EFBIG,
        }
    )

    def __init__(self, what: str, path: str | Path, reason: str, fix: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot write {what} {path}: {reason}: {fix}")

    @classmethod
    def from_os(
        cls, exc: OSError, what: str, path: str | Path, setting: str
    ) -> StorageError | None:
        """The error for a failed write to ``path`` (``setting`` names the other way out,
        e.g. "set store: to a writable path"), or None for an error not in :attr:`ERRNOS`."""
        if exc.errno not in cls.ERRNOS:
            return None
        failed = Path(os.fsdecode(exc.filename)) if exc.filename else Path(path)
        return cls(what, path, *cls.explain(exc.errno, failed.parent, setting))

    @staticmethod
    def explain(code: int | None, folder: Path, setting: str) -> tuple[str, str]:
        """(why, what to do) for a write in ``folder`` that failed with errno ``code``."""
        if code == errno.EROFS:
            return (f"{folder} is on a read-only file system", f"mount it read-write, or {setting}")
        if code in (errno.EACCES, errno.EPERM):
            return (
                f"no permission to write in {folder}",
                f"give the service user write access to {folder}, or {setting}",
            )
        if code in (errno.ENOSPC, errno.EDQUOT):
            full = "the disk is full" if code == errno.ENOSPC else "the disk quota is used up"
            return (
                f"{full} ({folder})",
                f"free space there, or {setting}; the next run completes the work",
            )
        if code == errno.EFBIG:
            return (
                f"the file size limit was reached ({folder})",
                f"raise the limit (ulimit -f), or {setting}; the next run completes the work",
            )
        if code in (errno.ENOENT, errno.ENOTDIR):
            return (f"the folder {folder} does not exist", f"create it, or {setting}")
        return ("the write failed", setting)


class DeliveryError(ComplianceError):
    """A report could not be delivered (the channel refused it or is misconfigured); the
    report stays in the outbox."""

    exit_code = ExitCode.DELIVERY


class RetriableDeliveryError(DeliveryError):
    """A delivery failed in a way worth retrying later (the server is down, busy, or
    dropped the connection)."""
