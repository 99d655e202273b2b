"""The error tree, grouped by what the caller should do next.

Only the CLI turns these into exit codes and messages. No message built here may
contain a mail address, a local part or a name: errors name files, lines, fields
and reasons, never record contents.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path


class ComplianceError(Exception):
    """Base class: an error the user can act on; its message is safe to print."""

    exit_code = 1


class ConfigError(ComplianceError):
    """The configuration, a key or a command-line value is wrong: fix it and run again."""

    exit_code = 2


class KeyMissingError(ConfigError):
    """No pseudonymisation key was configured, or the key does not fit the store."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a file a person wrote (a policy, a config, a feed)."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyError(ComplianceError):
    """One or more policy files are invalid; each problem carries file, line and field."""

    exit_code = 3

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InputError(ComplianceError):
    """A whole input (log file, directory, feed) cannot be read: unreadable or unknown format."""

    exit_code = 4

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class SourceError(ComplianceError):
    """A remote source failed in a way that retrying will not fix."""

    exit_code = 5


class RetriableSourceError(SourceError):
    """A remote source failed in a way that a later attempt may fix."""


class CaseError(ComplianceError):
    """A case step that the re-identification rules do not allow; the message names the rule."""

    exit_code = 8


class PrivacyBudgetError(ComplianceError):
    """A release would spend more privacy budget than the configuration allows."""

    exit_code = 10


class StoreError(ComplianceError):
    """The store cannot be opened or is in a state this version cannot use."""

    exit_code = 6


class StorageError(ComplianceError):
    """A file or folder cannot be written: read-only, full, missing or no permission.

    The environment, not the data, is at fault: the message names what could not be
    written, where (a path of the operator's, never record contents), why, and what to do.
    Nothing of the unit being written was kept; the next run on a healthy disk completes it.
    """

    exit_code = 12

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

    exit_code = 13


class RetriableDeliveryError(DeliveryError):
    """A delivery failed in a way worth retrying later (the server is down, busy, or
    dropped the connection)."""
