"""YAML read safely, with the line of every key and item, for located error messages.

Policy and config files are written by people and may be hostile, so every file is held to
limits that are checked before the expensive work, and every way reading can fail ends in a
:class:`PolicyError` naming the file and line (config loading turns it into a config error):

* :data:`MAX_FILE_BYTES`: the file's size, checked before it is parsed (and, by
  :func:`read_yaml_text`, before more than that is read);
* :data:`MAX_LINE_CHARS`: the longest line, checked before it is parsed;
* :data:`MAX_DEPTH`: nesting of mappings and lists, checked on the parser's event stream as
  each collection opens, before PyYAML's recursive composer descends into it (a deeply
  nested file would otherwise exhaust the stack);
* aliases (``*name``, also in merge keys ``<<: *name``) are refused when the parser meets
  them, before anything is expanded: they are what makes a few hundred bytes expand into
  gigabytes ("billion laughs"), and a policy or config never needs them. Anchors
  (``&name``) alone are harmless and ignored; inline merge keys (``<<: {...}``) still work.

Values the safe loader cannot build (an impossible date such as ``2026-02-30``, an integer
of thousands of digits) are located problems too, never internal errors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import ReaderError

from compliance.errors import PolicyError, Problem

Lines = dict[tuple[Any, ...], int]

#: Largest policy or config file read, in bytes (1 MiB; the shipped policy is 7 KB).
MAX_FILE_BYTES = 1024 * 1024
#: Longest line, in characters.
MAX_LINE_CHARS = 10_000
#: Deepest nesting of mappings and lists (the shipped policy needs 5).
MAX_DEPTH = 64

# Line breaks as PyYAML counts them, so that our line numbers agree with its marks.
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _LimitError(Exception):
    """A limit was exceeded at ``line`` while parsing (turned into a :class:`Problem`)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases and nesting deeper than :data:`MAX_DEPTH`.

    The composer takes every event through :meth:`get_event`, so the check runs on the event
    stream before the (recursive) composer goes one level deeper and before any alias is
    looked up.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def get_event(self) -> Any:
        event = super().get_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, _OPEN):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _LimitError(
                    line,
                    f"nested more than {MAX_DEPTH} levels deep (lists and mappings inside "
                    "each other); a policy or config needs only a few",
                )
        elif isinstance(event, _CLOSE):
            self.depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            raise _LimitError(
                line,
                f"YAML aliases (*{event.anchor}) are not allowed in policy and config files, "
                "nor in merge keys (<<: *name): write the values out in full",
            )
        return event


def _line_at(text: str, position: int) -> int:
    """The line (1-based, counted as PyYAML does) of character ``position``."""
    return sum(1 for _ in _BREAKS.finditer(text, 0, position)) + 1


def _megabytes(size: int) -> str:
    mib = size / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{size:,} bytes"


def _too_big(path: str, line: int) -> PolicyError:
    return PolicyError(
        [
            Problem(
                path,
                line,
                None,
                f"the file is larger than {_megabytes(MAX_FILE_BYTES)} from this line on",
            )
        ]
    )


def check_limits(text: str, path: str) -> None:
    """Refuse text over :data:`MAX_FILE_BYTES` or with a line over :data:`MAX_LINE_CHARS`.

    Cheap (linear, no parsing); :func:`parse_yaml` calls it first.
    """
    # A character takes 1 to 4 bytes in UTF-8: encode only when the length leaves it open.
    if len(text) > MAX_FILE_BYTES or (
        len(text) * 4 > MAX_FILE_BYTES
        and len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES
    ):
        head = text.encode("utf-8", "surrogatepass")[:MAX_FILE_BYTES].decode("utf-8", "ignore")
        raise _too_big(path, _line_at(head, len(head)))
    parts = _BREAKS.split(text)
    if max(map(len, parts)) <= MAX_LINE_CHARS:
        return
    line = next(i for i, part in enumerate(parts, 1) if len(part) > MAX_LINE_CHARS)
    raise PolicyError(
        [Problem(path, line, None, f"the line is longer than {MAX_LINE_CHARS:,} characters")]
    )


def read_yaml_text(path: Path) -> tuple[str, str]:
    """Read a policy or config file as text: ``(text, sha256 hex of its bytes)``.

    Reads at most :data:`MAX_FILE_BYTES` + 1 bytes; an unreadable file, a file too large or
    one that is not UTF-8 is a :class:`PolicyError` naming the file (and line).
    """
    name = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError([Problem(name, None, None, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise _too_big(name, raw[:MAX_FILE_BYTES].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        raise PolicyError(
            [
                Problem(
                    name,
                    raw[:offset].count(b"\n") + 1,
                    None,
                    f"is not UTF-8 text (byte 0x{raw[offset]:02x} cannot be read): "
                    "save it as UTF-8",
                )
            ]
        ) from None
    return text, hashlib.sha256(raw).hexdigest()


def _field(loc: tuple[Any, ...]) -> str | None:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _unbuildable(node: yaml.Node) -> str:
    """Why the safe loader could not build a scalar (it raised ValueError or the like)."""
    if node.tag == "tag:yaml.org,2002:timestamp":
        # The resolver only gives this tag to digits, '-', ':', 'T', '.', '+' and spaces.
        return f"{str(node.value)[:40]} is not a real date or time"
    if node.tag == "tag:yaml.org,2002:int":
        return "the number is too long"
    if isinstance(node.value, str) and _SURROGATE.search(node.value):
        return "the text holds a lone surrogate escape (\\uD800-\\uDFFF), which is not text"
    return f"cannot read this value as {str(node.tag).rsplit(':', 1)[-1]}"


#: Escaped lone surrogates (``"\\uD800"``) make strings no file or terminal can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_yaml(text: str, path: str) -> tuple[Any, Lines]:
    """Parse YAML safely, returning the data and the line (1-based) of every key and item.

    Every failure is a :class:`PolicyError` with the file and, where known, the line; the
    limits of this module are checked before parsing or while the parser reads.
    """
    check_limits(text, path)
    lines: Lines = {}
    problems: list[Problem] = []
    loader: _LimitedLoader | None = None

    def construct(node: yaml.Node, loc: tuple[Any, ...]) -> Any:
        assert loader is not None
        try:
            value = loader.construct_object(node, deep=True)
            if isinstance(value, str) and _SURROGATE.search(value):
                raise ValueError("a lone surrogate (\\uD800-\\uDFFF) is not text")
            return value
        except (ValueError, OverflowError, TypeError):
            problems.append(
                Problem(path, node.start_mark.line + 1, _field(loc), _unbuildable(node))
            )
            return None

    def build(node: yaml.Node, loc: tuple[Any, ...]) -> Any:
        assert loader is not None
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            data: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = construct(key_node, loc)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    problems.append(
                        Problem(path, key_node.start_mark.line + 1, None, "keys must be plain")
                    )
                    continue
                if key in data:
                    problems.append(
                        Problem(path, key_node.start_mark.line + 1, str(key), "duplicate key")
                    )
                    continue
                data[key] = build(value_node, (*loc, key))
                lines[(*loc, key)] = key_node.start_mark.line + 1
            return data
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return construct(node, loc)

    try:
        loader = _LimitedLoader(text)
        root = loader.get_single_node()
        data = None if root is None else build(root, ())
    except _LimitError as exc:
        raise PolicyError([Problem(path, exc.line, None, exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        raise PolicyError([syntax_problem(exc, text, path)]) from None
    except ReaderError as exc:
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise PolicyError(
            [
                Problem(
                    path,
                    _line_at(text, exc.position),
                    None,
                    f"the character #x{character:04x} is not allowed in YAML ({exc.reason})",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(path, None, None, f"YAML: {exc}")]) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps far below the stack's limit
        raise PolicyError([Problem(path, None, None, "nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise PolicyError(problems)
    return data, lines


# --- syntax errors in plain words ----------------------------------------------------------


def _source_lines(text: str, upto: int) -> list[str]:
    """The first ``upto`` + 1 lines of ``text`` (0-based, as PyYAML counts them)."""
    return _BREAKS.split(text, maxsplit=upto + 1)[: upto + 1]


#: A position in the text: (line, column), both 0-based as in PyYAML's marks.
_At = tuple[int, int] | None


def _at(mark: yaml.Mark | None) -> _At:
    return (mark.line, mark.column) if mark else None


def _where(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the end of the file"


def _plain(exc: yaml.MarkedYAMLError, text: str) -> tuple[_At, str]:
    """Where the author should look, and what is wrong there in a policy author's words
    (empty when the parser's own words are the best there is)."""
    problem, context = exc.problem or "", exc.context or ""
    at, opened = exc.problem_mark, exc.context_mark
    if "found character '\\t'" in problem:
        return _at(at), "a tab is used here, where YAML allows only spaces: use spaces"
    if "that cannot start any token" in problem:
        char = problem.split("'")[1] if problem.count("'") >= 2 else "this character"
        return _at(at), (
            f'a value cannot begin with {char} in YAML: put the value in quotes ("{char}...")'
        )
    if "quoted scalar" in context and "end of stream" in problem:
        return _at(opened), (
            "the quote that opens here is never closed: add the closing quote (the same "
            "kind, \" or ') at the end of the value"
        )
    if "unknown escape character" in problem:
        return _at(at), (
            "a backslash in double quotes starts an escape such as \\n: write \\\\ for a "
            "backslash, or use single quotes"
        )
    if context.startswith("while parsing a flow sequence") and "expected ','" in problem:
        return _at(opened), (
            "the list that opens here with [ is not closed, or two of its items lack a comma "
            f"between them: add the ] or the comma (YAML noticed at {_where(at)})"
        )
    if context.startswith("while parsing a flow mapping") and "expected ','" in problem:
        return _at(opened), (
            "the mapping that opens here with { is not closed, or two of its entries lack a "
            f"comma between them: add the }} or the comma (YAML noticed at {_where(at)})"
        )
    if context.startswith("while parsing a flow node") and "found ','" in problem:
        return _at(at), "an empty item between brackets (two commas in a row, or a comma first)"
    if "could not find expected ':'" in problem:
        return _at(opened), (
            "this line has no colon after its key, or it continues the line above: write "
            "`key: value` (a colon and a space after the key)"
        )
    if "mapping values are not allowed here" in problem and at is not None:
        before = _source_lines(text, at.line)[-1][: at.column]
        if ": " in before or before.rstrip().endswith(":"):
            return _at(at), (
                "a value holds a colon followed by a space, which YAML reads as another "
                'key: put the whole value in quotes ("...")'
            )
        return _at(at), (
            "the line is indented more than the line above it, or the line above lacks "
            "its colon (check the spaces in front of the key)"
        )
    if problem.startswith("expected <block end>"):
        before = _source_lines(text, at.line)[-1][: at.column] if at else ""
        if "found '<scalar>'" in problem and before.endswith(('"', "'")):
            return _at(at), (
                "a quoted value ends just before here, but its quote opened earlier than "
                "meant: a quote on a line above is probably not closed (check the quotes above)"
            )
        if "found '-'" in problem:
            return _at(at), (
                "a list item (- ) is not lined up with the lines above it: indent it under "
                "its key, as far as the other items (check its spaces)"
            )
        return _at(at), (
            "the line is indented differently from the lines above it (check its spaces)"
        )
    if "while scanning an anchor" in context or "while scanning an alias" in context:
        return _at(opened), "& and * start YAML anchors and aliases: put the value in quotes"
    if "but found another document" in problem:
        return _at(at), (
            "a second YAML document starts here (---), and a policy or config file holds "
            "one: remove the line, or split the file"
        )
    if "expected '<document start>'" in problem and at is not None:
        lines = _source_lines(text, at.line)
        directive = next((n for n, line in enumerate(lines) if line.startswith("%")), None)
        if directive is not None:
            return (directive, 0), (
                "a line that begins with % is read as a YAML directive: put the value in "
                'quotes ("%..."), or indent the line as its neighbours'
            )
    if "could not determine a constructor for the tag" in problem:
        return _at(at), "a tag (!...) is not read in policy and config files: remove it"
    return _at(at or opened), ""


def syntax_problem(exc: yaml.MarkedYAMLError, text: str, path: str) -> Problem:
    """The located problem of a YAML syntax error: where to look (line and column), what is
    wrong there in plain words, then the parser's own text after "YAML said"."""
    at, plain = _plain(exc, text)
    said = ", ".join(x for x in (exc.context, exc.problem) if x)
    if exc.context and _at(exc.context_mark) not in (None, at):
        said = said.replace(exc.context, f"{exc.context} (at {_where(exc.context_mark)})", 1)
    message = f"YAML syntax: {plain} — YAML said: {said}" if plain else f"YAML syntax: {said}"
    line, column = (at[0] + 1, at[1] + 1) if at else (None, None)
    return Problem(path, line, None, message, column)


def locate(lines: Lines, loc: Iterable[Any]) -> int | None:
    """The line of the deepest known prefix of ``loc``; unknown parts (union tags) are skipped."""
    current: tuple[Any, ...] = ()
    best = lines.get(())
    for part in loc:
        candidate = (*current, part)
        if candidate in lines:
            current = candidate
            best = lines[candidate]
    return best
