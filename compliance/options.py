"""Options of an extension (a source, a delivery) validated against its model, every problem
a line that names the extension and the option."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from compliance.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], name: str, options: Mapping[str, Any], what: str = "source") -> M:
    """Validate the options of the ``what`` (a source, a delivery) called ``name`` as
    ``model``; problems name it and the option.

    Every problem is one line, ``source 'x': option: problem`` (``unknown option`` for a
    misspelt one); a missing option also says what it is, from its field's description.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(options)"
            problem = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            field = model.model_fields.get(where)
            if err["type"] == "missing" and field is not None and field.description:
                problem = f"{problem} ({field.description})"
            lines.append(f"{what} {name!r}: {where}: {problem}")
        raise ConfigError("\n".join(lines)) from None
