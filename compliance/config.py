"""The configuration file (``compliance.yaml``): model, loading and path resolution.

Relative paths are resolved against the folder of the config file. Secrets are never
written in it: the pseudonymisation key comes from the environment (see
:mod:`compliance.privacy`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compliance.errors import ConfigError, PolicyError, Problem
from compliance.feeds import FeedSpec
from compliance.policy.model import _days
from compliance.yamlfile import locate, parse_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Organisation(_Strict):
    """Who is internal."""

    domains: list[str] = Field(min_length=1, description="accepted domains; subdomains included")


class EntraDirectory(_Strict):
    """Org units read from Entra ID with the credentials of an ``m365`` source."""

    type: Literal["entra"]
    source: str = Field(description="the m365 source whose app registration reads /users")
    org_unit: list[str] = Field(
        ["department"],
        min_length=1,
        description="user attributes joined, outermost first, into the org-unit path",
    )

    @field_validator("org_unit")
    @classmethod
    def _attributes(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
                raise ValueError(f"{name!r} is not a user attribute name")
        return value


class SourceConfig(BaseModel):
    """A log source; options beyond name and type belong to its connector."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: str

    def options(self) -> dict[str, Any]:
        """The connector's own options."""
        return dict(self.model_extra or {})


class FeedConfig(_Strict):
    """A categorised domain feed."""

    path: str
    category: str | None = None
    name: str | None = None
    format: Literal["plain", "hosts", "adblock", "dnsmasq", "csv"] | None = None


class Reports(_Strict):
    """Where reports go and what they cover."""

    dir: str = "reports"
    period: int = Field(30, description="days covered by each report")
    min_group_size: int = Field(5, ge=1, description="org units smaller than this roll up")
    formats: list[Literal["html", "json", "csv"]] = ["html"]

    _period = field_validator("period", mode="before")(_days)


class Schedule(_Strict):
    """When `compliance schedule` runs the job."""

    every_minutes: int | None = Field(None, ge=5, le=1440)
    daily_at: str | None = Field(None, pattern=r"^\d{2}:\d{2}$")
    lock: str = "compliance.lock"


class Retention(_Strict):
    """How long things are kept."""

    dedup_days: int = Field(100, ge=7, description="keep message keys this long (> source reach)")


class Config(_Strict):
    """The whole configuration."""

    organisation: Organisation
    directory: str | EntraDirectory | None = Field(
        None, description="a directory CSV path, or {type: entra, source: NAME, org_unit: [...]}"
    )
    sources: list[SourceConfig] = Field(min_length=1)
    feeds: list[FeedConfig] = Field(min_length=1)
    policies: list[str] = Field(min_length=1)
    store: str = "compliance.db"
    reports: Reports = Reports()
    schedule: Schedule = Schedule()
    retention: Retention = Retention()

    base_dir: Path = Field(Path("."), exclude=True)

    def path(self, value: str) -> Path:
        """A config path resolved against the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def feed_specs(self) -> list[FeedSpec]:
        """The configured feeds as specs."""
        return [FeedSpec(self.path(f.path), f.category, f.name, f.format) for f in self.feeds]


def load_config(path: Path) -> Config:
    """Load and validate a config file; problems name file, line and field."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    try:
        data, lines = parse_yaml(text, str(path))
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections")
    try:
        config = Config.model_validate({**data, "base_dir": path.parent.resolve()})
    except ValidationError as exc:
        problems = [
            Problem(
                str(path),
                locate(lines, err["loc"]),
                ".".join(str(p) for p in err["loc"]),
                "unknown field" if err["type"] == "extra_forbidden" else err["msg"],
            )
            for err in exc.errors()
        ]
        raise ConfigError("\n".join(str(p) for p in problems)) from None
    names = [s.name for s in config.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: every source needs its own name")
    if isinstance(config.directory, EntraDirectory):
        named = {s.name: s.type for s in config.sources}
        if named.get(config.directory.source) != "m365":
            raise ConfigError(
                f"{path}:{locate(lines, ('directory', 'source'))}: directory.source: "
                f"{config.directory.source!r} is not the name of an m365 source"
            )
    return config
