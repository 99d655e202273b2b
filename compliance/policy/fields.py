"""Field types shared by the policy model and the rule kinds."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["low", "medium", "high", "critical"]

_DAYS = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


def days(value: object) -> int:
    """``30d``, ``4w`` or a whole number of days."""
    if isinstance(value, bool):
        raise ValueError("must be a number of days such as 30d or 4w")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and (found := _DAYS.match(value)):
        count = int(found.group(1)) * (7 if found.group(2) == "w" else 1)
    else:
        raise ValueError("must be a number of days such as 30d or 4w")
    if not 1 <= count <= 366:
        raise ValueError("must be between 1 day and 366 days")
    return count


class Strict(BaseModel):
    """A part of a policy: unknown keys are refused, nothing changes after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)
