"""Secrets referenced from a configuration, never written into it: ``{$env: NAME}`` or
``{$file: PATH}`` (a file only its owner may read)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compliance.errors import ConfigError


class SecretRef(BaseModel):
    """A secret named by an environment variable or a file, never written in the config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    env: str | None = Field(
        None,
        alias="$env",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable that holds the secret",
    )
    file: str | None = Field(
        None,
        alias="$file",
        description="the file that holds the secret (relative to the config file; readable "
        "by its owner only)",
    )

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of $env or $file")
        return self

    def resolve(self, base_dir: Path, what: str) -> str:
        """The secret's value; a clear error if it is missing or the file is too open."""
        if self.env is not None:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise ConfigError(f"{what}: the environment variable {self.env} is not set")
            return value
        assert self.file is not None
        return read_secret_file(resolve_path(self.file, base_dir), what).decode().strip()


def resolve_path(value: str, base_dir: Path) -> Path:
    """A config path, relative to the config file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_secret_file(path: Path, what: str) -> bytes:
    """A secret file's bytes; refused when group or others may read it."""
    try:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{what}: {path} is readable by group or others; run: chmod 600 {path}"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def no_inline_secret(value: Any) -> Any:
    """A field validator: refuse a secret written inline in the config."""
    if isinstance(value, str):
        raise ValueError(
            "write a reference, not the secret itself: {$env: VARIABLE} or {$file: PATH}"
        )
    return value
