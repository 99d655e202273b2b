"""The error tree, grouped by what the caller should do next.

Only the CLI turns these into exit codes and messages. No message built here may
contain a mail address, a local part or a name: errors name files, lines, fields
and reasons, never record contents.
"""

from __future__ import annotations

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
