"""Field types shared by the policy model and the rule kinds."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

Severity = Literal["low", "medium", "high", "critical"]

#: The longest period a days field takes (a year, leap day included).
MAX_DAYS = 366
_DAYS = re.compile(r"[ \t]*0*([0-9]{1,9})[ \t]*([dw])[ \t]*")

#: What the JSON Schema accepts for a number of days: exactly what :func:`days` accepts
#: (a whole number 1..366, or ``Nd`` with N 1..366, or ``Nw`` with N 1..52), so that an
#: editor marks the same values a load refuses. Leading zeros are allowed, as by ``int``.
DAYS_PATTERN = (
    r"^[ \t]*0*([1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-6])[ \t]*d[ \t]*$"
    r"|^[ \t]*0*([1-9]|[1-4][0-9]|5[0-2])[ \t]*w[ \t]*$"
)


def days(value: object) -> int:
    """``30d``, ``4w`` or a whole number of days."""
    if isinstance(value, bool):
        raise ValueError("must be a number of days such as 30d or 4w")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and (found := _DAYS.fullmatch(value)):
        count = int(found.group(1)) * (7 if found.group(2) == "w" else 1)
    else:
        raise ValueError("must be a number of days such as 30d or 4w")
    if not 1 <= count <= MAX_DAYS:
        raise ValueError("must be between 1 day and 366 days")
    return count


#: The JSON Schema of a days field: a whole number of days or a text such as ``30d``.
DAYS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
        {"type": "string", "pattern": DAYS_PATTERN},
    ]
}

#: A number of days, written ``30d``, ``4w`` or ``30`` (1 to 366 days), held as an int.
Days = Annotated[int, BeforeValidator(days), WithJsonSchema(DAYS_SCHEMA)]


#: The largest count a policy takes: far above any real threshold or version (a date such
#: as 20261201 fits), and small enough for every integer the store and NumPy hold.
MAX_COUNT = 1_000_000_000


def whole_number(value: object) -> object:
    """A count as YAML gives it; ``yes``/``no`` (booleans, which Python takes for 1 and 0)
    is refused, so that ``min_days: yes`` is not read as one day, and so is a number in
    quotes (``"3"``), which the schema refuses too: a load and an editor agree."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, not {'yes' if value else 'no'}")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        raise ValueError(f"must be a whole number written without quotes, not {value!r}")
    return value


#: A count (messages, days, people, a version): a whole number up to :data:`MAX_COUNT`,
#: never yes or no, never in quotes.
Count = Annotated[int, Le(MAX_COUNT), BeforeValidator(whole_number)]
#: A count of at least one, for an optional field (whose bounds must sit in its type for
#: the schema to show them: ``Field(ge=1)`` beside ``| None`` would not).
PositiveCount = Annotated[int, Ge(1), Le(MAX_COUNT), BeforeValidator(whole_number)]


class Strict(BaseModel):
    """A part of a policy: unknown keys are refused, nothing changes after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)
