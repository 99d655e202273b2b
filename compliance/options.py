"""Options of an extension (a source, a delivery) validated against its model, every problem
a line that names the extension and the option."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, get_args

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
            problem = (
                unknown_key(model, err["loc"], "option")
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            field = model.model_fields.get(where)
            if err["type"] == "missing" and field is not None and field.description:
                problem = f"{problem} ({field.description})"
            lines.append(f"{what} {name!r}: {where}: {problem}")
        raise ConfigError("\n".join(lines)) from None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through lists, dicts, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def fields_at(model: type[BaseModel], loc: Sequence[Any]) -> set[str]:
    """The field names of the part of ``model`` that ``loc`` (a pydantic error location,
    without its last item) points into: the keys a misspelt one should have been."""
    current = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nested = [
            m
            for c in current
            if part in c.model_fields
            for m in _models_in(c.model_fields[part].annotation)
        ]
        if nested:
            current = nested
        # else: a union's tag (a rule's kind) or a dict key: stay at the models found
    return {name for c in current for name in c.model_fields}


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the closest of ``choices``, or "" when none is close."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def unknown_key(model: type[BaseModel], loc: Sequence[Any], what: str = "field") -> str:
    """The message for an unknown key at ``loc``: its kind and the closest known key."""
    return f"unknown {what}" + did_you_mean(loc[-1] if loc else None, fields_at(model, loc[:-1]))
