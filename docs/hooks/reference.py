"""MkDocs hook: the configuration and command-line references, generated at build time.

``reference/config.md`` is built from the configuration's pydantic models
(:class:`compliance.config.Config` and every model nested in it), each built-in source
type's options model (``connectors.base.SOURCES``) and each built-in delivery's
(``compliance.delivery.DELIVERIES``). ``reference/cli.md`` is built from the
click commands (:data:`compliance.cli.cli`) and the exit-code table
(:data:`compliance.errors.EXIT_CODES`, each code anchored as ``exit-12``). Neither
exists in ``docs/``: both are added to the build's files here, so they can never be
edited by hand or go stale.

Every key and every option gets an anchor: a config key's is its dotted path
(``reports.schedules.period``, ``sources.m365.tenant_id``, ``deliveries.smtp.host``), a
command's its words joined by ``-`` (``compliance-alerts-list``) and an option's the
command's anchor, ``--`` and its long name (``compliance-alerts-list--state``).
``tests/test_docs_site.py`` checks that each one is in the built site.
"""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import click
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the two generated references to the build (before the nav is read)."""
    docs = Path(config["docs_dir"])
    for uri, content in ((CONFIG_PAGE, config_reference(docs)), (CLI_PAGE, cli_reference())):
        if files.get_file_from_path(uri) is not None:
            raise ValueError(f"docs/{uri} is generated: remove the file of that name")
        files.append(File.generated(config, uri, content=content))
    return files


# --- Markdown helpers ------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_MARKDOWN_SPECIAL = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "\\": "\\\\",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
        "{": "\\{",
        "}": "\\}",
        "|": "\\|",
        "#": "\\#",
    }
)


def text(value: str) -> str:
    """Prose for Markdown (a table cell too): code spans kept, everything else literal."""
    out: list[str] = []
    last = 0
    for found in _CODE_SPAN.finditer(value):
        out.append(value[last : found.start()].translate(_MARKDOWN_SPECIAL))
        out.append(found.group(0).replace("\n", " "))
        last = found.end()
    out.append(value[last:].translate(_MARKDOWN_SPECIAL))
    return "".join(out).replace("\n", " ")


def code(value: str) -> str:
    """A code span that holds ``value`` whatever backticks it contains."""
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def anchor(ident: str) -> str:
    """An empty element carrying an id (a row of a table is linked through it)."""
    return f'<a id="{ident}"></a>'


def sentence(value: str) -> str:
    """``value`` as a sentence: a capital first letter and a full stop."""
    value = value.strip()
    if not value:
        return ""
    value = value[0].upper() + value[1:]
    return value if value.endswith((".", "!", "?")) else value + "."


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


# --- the configuration reference -------------------------------------------------------


def _secret_ref() -> type[BaseModel]:
    from compliance.secrets import SecretRef

    return SecretRef


def _days_function() -> Any:
    from compliance.policy.fields import days

    return days


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            rebuilt = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return rebuilt, True
    return annotation, False


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's value may be (a secret reference is a value, not a section)."""
    if _is_model(annotation):
        return [] if annotation is _secret_ref() else [annotation]
    if get_origin(annotation) is Annotated:
        return nested_models(get_args(annotation)[0])
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in nested_models(arg) if m not in found]
    return found


def type_text(annotation: Any, plural: bool = False) -> str:
    """A field's type in words, for people who write YAML (``plural``: of a list's items)."""
    annotation, _ = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_text(get_args(annotation)[0], plural)
    if origin is Literal:
        values = [code(_yaml(v)) for v in get_args(annotation)]
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a, plural) for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return "list of " + (type_text(args[0], plural=True) if args else "values")
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {type_text(key)} to {type_text(value)}"
    if annotation is _secret_ref():
        return "[secret reference](#secret-references)" + ("s" if plural else "")
    if _is_model(annotation):
        return "mappings" if plural else "mapping"
    names = {
        str: ("string", "strings"),
        int: ("integer", "integers"),
        float: ("number", "numbers"),
        bool: ("boolean", "booleans"),
        dt.date: ("date (YYYY-MM-DD)", "dates (YYYY-MM-DD)"),
        dt.timedelta: ("duration (`12h`, `1d`, `2w`)", "durations (`12h`, `1d`, `2w`)"),
        Path: ("path", "paths"),
    }
    if annotation in names:
        return names[annotation][plural]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [code(str(m.value)) for m in annotation]
        return ", ".join(values[:-1]) + " or " + values[-1]
    return code(getattr(annotation, "__name__", str(annotation)))


def _yaml(value: Any) -> str:
    """A value as it is written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.timedelta):
        hours = int(value.total_seconds() // 3600)
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(field: FieldInfo) -> str:
    """A field's default, as written in YAML; ``required`` when it has none."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "each key's own"
    if value is None:
        return "none"
    return code(_yaml(value))


def _days_in(annotation: Any) -> bool:
    """Whether a type is ``compliance.policy.fields.Days`` (or holds it: ``Days | None``)."""
    if get_origin(annotation) is Annotated:
        days = _days_function()
        extra = get_args(annotation)[1:]
        return any(isinstance(m, BeforeValidator) and m.func is days for m in extra)
    return any(_days_in(arg) for arg in get_args(annotation))


def _is_days(model: type[BaseModel], name: str, field: FieldInfo) -> bool:
    """Whether the field takes a number of days written ``30d``, ``4w`` or ``30``."""
    days = _days_function()
    if any(isinstance(m, BeforeValidator) and m.func is days for m in field.metadata):
        return True
    if _days_in(field.annotation):
        return True
    validators = model.__pydantic_decorators__.field_validators.values()
    return any(
        v.info.mode == "before" and name in v.info.fields and v.func is days for v in validators
    )


def constraints(field: FieldInfo, annotation: Any) -> str:
    """The limits a field's value must keep, as a sentence (empty when it has none)."""
    base, _ = _strip_optional(annotation)
    counted = "item" if get_origin(base) in (list, tuple, dict, set) else "character"
    low: str | None = None
    high: str | None = None
    out: list[str] = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"more than {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"at most {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"less than {item.lt}"
        elif isinstance(item, annotated_types.MinLen):
            n = item.min_length
            out.append(f"at least {n} {counted}{'s' if n != 1 else ''}")
        elif isinstance(item, annotated_types.MaxLen):
            n = item.max_length
            out.append(f"at most {n} {counted}{'s' if n != 1 else ''}")
        elif getattr(item, "pattern", None):
            out.append(f"matches {code(str(item.pattern))}")
    if low and high and low.startswith("at least") and high.startswith("at most"):
        out.insert(0, f"from {low.removeprefix('at least ')} to {high.removeprefix('at most ')}")
    else:
        out[:0] = [x for x in (low, high) if x]
    return sentence("; ".join(out))


#: How a source reads (``connectors.base.ReadKind``), in words.
READS = {
    "files": "files it finds (exports, logs that grow and rotate)",
    "stream": "a stream it listens to for a while",
    "window": "windows of time from a service it queries",
}


class ConfigPage:
    """The configuration reference, written section by section."""

    def __init__(self, docs_dir: Path, registries: dict[str, tuple[Any, str]]) -> None:
        self.docs_dir = docs_dir
        #: keys whose items take the options of their ``type``: the registry of types
        self.registries = registries
        self.lines: list[str] = []
        self.ids: set[str] = set()

    def _id(self, path: str) -> str | None:
        """``path`` as an anchor, the first time it is used."""
        if path in self.ids:
            return None
        self.ids.add(path)
        return path

    def heading(self, level: int, title: str, path: str) -> None:
        """A heading whose anchor is ``path``."""
        ident = self._id(path)
        self.lines += ["", f"{'#' * level} {title}" + (f" {{ #{ident} }}" if ident else ""), ""]

    def describe(self, field: FieldInfo) -> str:
        """What a field means: its description, else what the model it holds says."""
        if field.description:
            return sentence(text(field.description))
        nested = nested_models(field.annotation)
        return sentence(text(first_paragraph(nested[0].__doc__))) if nested else ""

    def row(self, path: str, name: str, field: FieldInfo, model: type[BaseModel]) -> str:
        """One table row: key, type, default, description."""
        annotation = field.annotation
        nested = nested_models(annotation)
        if nested:  # the key's anchor is its section's heading
            key = f"[{code(name)}](#{path})"
        else:
            ident = self._id(path)
            key = (anchor(ident) if ident else "") + code(name)
        if _is_days(model, name, field):
            kind = "days (`30d`, `4w` or `30`)"
        else:
            kind = type_text(annotation)
        about = " ".join(x for x in (self.describe(field), constraints(field, annotation)) if x)
        return f"| {key} | {kind} | {default_text(field)} | {about} |"

    def table(self, model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> None:
        """The table of a model's keys, then a section per nested model."""
        fields = {
            (f.alias or n): f
            for n, f in model.model_fields.items()
            if not f.exclude and (f.alias or n) not in skip
        }
        if not fields:
            return
        self.lines += ["", "| key | type | default | meaning |", "|---|---|---|---|"]
        self.lines += [self.row(f"{prefix}{k}", k, f, model) for k, f in fields.items()]
        self.lines.append("")
        for key, field in fields.items():
            for nested in nested_models(field.annotation):
                self.section(f"{prefix}{key}", field, nested)

    def section(self, path: str, field: FieldInfo, nested: type[BaseModel]) -> None:
        """A heading for a key whose value is a mapping, what it is, and its keys."""
        self.heading(min(2 + path.count("."), 6), code(path), path)
        kind = type_text(field.annotation)
        about = [f"**Type:** {kind}.", f"**Default:** {default_text(field)}."]
        if field.description:
            about.append(sentence(text(field.description)))
        self.lines.append(" ".join(about))
        doc = first_paragraph(nested.__doc__)
        if doc:
            self.lines += ["", sentence(text(doc))]
        self.table(nested, f"{path}.")
        if path in self.registries:
            registry, what = self.registries[path]
            self.lines += [
                "",
                f"Each item takes the options of its `type` too. The built-in types follow; an "
                f"installed package can add a {what} (`compliance plugins` lists every one "
                "with its origin).",
            ]
            self.plugin_sections(path, registry)

    def plugin_sections(self, path: str, registry: Any) -> None:
        """A section per built-in entry of a registry (source types, deliveries)."""
        for entry in registry.entries():
            if not entry.builtin or entry.shadowed:
                continue
            found = registry.get(entry.name)
            model = getattr(found, "options_model", None)
            self.heading(3, code(f"type: {entry.name}"), f"{path}.{entry.name}")
            doc = first_paragraph(getattr(found, "__doc__", None))
            facts = [sentence(text(doc))] if doc else []
            reads = getattr(found, "reads", None)
            if reads:
                collects = ", ".join(code(c) for c in getattr(found, "collects", ()))
                facts.append(
                    f"It reads {READS.get(reads, text(str(reads)))}; it collects {collects}."
                )
            page = self.docs_dir / "sources" / f"{entry.name}.md"
            if page.is_file():
                facts.append(f"See [its page](../sources/{entry.name}.md).")
            self.lines.append(" ".join(facts))
            if model is None or not model.model_fields:
                self.lines += ["", "It takes no options."]
                continue
            self.table(model, f"{path}.{entry.name}.")


def config_reference(docs_dir: Path) -> str:
    """The configuration reference page, from the models."""
    from compliance.config import Config
    from compliance.delivery import DELIVERIES
    from connectors.base import SOURCES

    page = ConfigPage(
        docs_dir, {"sources": (SOURCES, "source type"), "deliveries": (DELIVERIES, "delivery")}
    )
    page.lines += [
        "# Configuration reference",
        "",
        "Generated from the configuration's models when this site is built: every key the "
        "configuration file (`compliance.yaml`) accepts, with its type, default and meaning. "
        "A key not listed here is refused, naming the file, the line and the closest valid "
        "key. Relative paths are relative to the configuration file. "
        "[`ops/compliance.example.yaml`](../deployment.md#the-configuration-file) is a "
        "complete example. `compliance sources types --options` lists the options of every "
        "installed source type, plugins included.",
        "",
        "Each key has an anchor named by its path, such as "
        "[`reports.schedules.period`](#reports.schedules.period) or "
        "[`sources.m365.tenant_id`](#sources.m365.tenant_id).",
        "",
        "## Top-level keys { #top-level-keys }",
    ]
    page.table(Config, "")
    secret = _secret_ref()
    page.heading(2, "Secret references", "secret-references")
    page.lines += [
        sentence(text(first_paragraph(secret.__doc__))),
        "",
        "Where a key takes a secret (a password, a client secret, a signing key, a URL that "
        "carries a token), it is written as `{$env: NAME}` (the value of the environment "
        "variable `NAME`) or `{$file: PATH}` (the content of the file `PATH`, relative to "
        "the configuration file, readable by its owner only). A secret written into the "
        "configuration itself is refused.",
    ]
    page.table(secret, "secret-references.")
    return "\n".join(page.lines) + "\n"


# --- the command-line reference --------------------------------------------------------


def command_id(path: list[str]) -> str:
    """A command's anchor: its words joined by ``-`` (``compliance-alerts-list``)."""
    return "-".join(path)


def param_id(path: list[str], param: click.Parameter) -> str:
    """An option's anchor (``compliance-alerts-list--state``), an argument's
    (``compliance-alerts-show-arg-alert_id``)."""
    if isinstance(param, click.Option):
        longest = max(param.opts, key=len).lstrip("-/")
        return f"{command_id(path)}--{longest}"
    return f"{command_id(path)}-arg-{param.name}"


def _help(command: click.Command) -> str:
    raw = (command.help or command.short_help or "").split("\f")[0]
    return "\n".join(line for line in inspect.cleandoc(raw).splitlines() if line.strip() != "\b")


def _commands(
    command: click.Command, path: list[str], parent: click.Context | None
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    """Every visible command under ``command``, itself first, depth first."""
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, [*path, name], ctx)


def _param_row(path: list[str], param: click.Parameter, ctx: click.Context) -> str | None:
    ident = param_id(path, param)
    if isinstance(param, click.Option):
        record = param.get_help_record(ctx)
        if record is None:  # hidden
            return None
        names, help_text = record
        notes = []
        if (param.multiple or param.count) and "repeatable" not in help_text.lower():
            notes.append("Repeatable.")
        about = " ".join(x for x in (text(help_text).strip(), *notes) if x)
        return f"| {anchor(ident)}{code(names)} | {about} |"
    metavar = param.make_metavar(ctx)
    notes = ["required" if param.required else "optional"]
    if param.nargs == -1:
        notes.append("any number")
    return f"| {anchor(ident)}{code(metavar)} | Argument ({', '.join(notes)}). |"


def exit_code_lines() -> list[str]:
    """The exit-code table (:data:`compliance.errors.EXIT_CODES`) as a Markdown section,
    each code with an anchor (``exit-12``)."""
    from compliance.errors import EXIT_CODES

    lines = [
        "## Exit codes { #exit-codes }",
        "",
        "Every command ends with one of these codes, whatever the command; a message on "
        "the standard error says what happened and, for a mistake, what to do.",
        "",
        "| code | name | meaning |",
        "|---|---|---|",
    ]
    lines += [
        f"| {anchor(f'exit-{number}')}{number} | {code(row.name)} | {sentence(text(row.meaning))} |"
        for number, row in EXIT_CODES.items()
    ]
    return [*lines, ""]


def cli_reference() -> str:
    """The command-line reference page, from the click commands."""
    from compliance.cli import cli

    lines = [
        "# Command line reference",
        "",
        "Generated from the commands themselves when this site is built: every command "
        "with its usage, its options and what they do, as `compliance COMMAND --help` "
        "prints them. Every command also takes `-h`/`--help`. The options of the program "
        "(`-v`, `-q`, `--no-color`, `--debug`) may come before or after the command.",
        "",
        "Each command has an anchor named by its words "
        "([`compliance-alerts-list`](#compliance-alerts-list)), and each option by its "
        "command's and its own long name "
        "([`compliance-alerts-list--state`](#compliance-alerts-list--state)).",
        "",
        "## Shell completion { #shell-completion }",
        "",
        "The completion of commands, options and choices comes with the program: add the "
        "line for your shell to its start-up file.",
        "",
        "| shell | start-up file | line |",
        "|---|---|---|",
        '| bash | `~/.bashrc` | `eval "$(_COMPLIANCE_COMPLETE=bash_source compliance)"` |',
        '| zsh | `~/.zshrc` | `eval "$(_COMPLIANCE_COMPLETE=zsh_source compliance)"` |',
        "| fish | `~/.config/fish/completions/compliance.fish` | "
        "`_COMPLIANCE_COMPLETE=fish_source compliance | source` |",
        "",
        *exit_code_lines(),
        "## Commands { #commands }",
        "",
    ]
    every = list(_commands(cli, ["compliance"], None))
    for path, command, _ctx in every[1:]:
        indent = "    " * (len(path) - 2)
        summary = text(command.get_short_help_str(limit=300))
        lines.append(f"{indent}- [{code(' '.join(path))}](#{command_id(path)}): {summary}")
    for path, command, ctx in every:
        level = max(2, len(path))  # the program and its commands 2, their subcommands 3
        lines += ["", f"{'#' * level} {code(' '.join(path))} {{ #{command_id(path)} }}", ""]
        about = _help(command)
        if about:
            lines += [text(p) + "\n" for p in about.split("\n\n")]
        usage = " ".join(command.collect_usage_pieces(ctx))
        lines += ["```text", f"{ctx.command_path} {usage}".rstrip(), "```", ""]
        rows = [r for p in command.params if (r := _param_row(path, p, ctx)) is not None]
        if rows:
            lines += ["| option | meaning |", "|---|---|", *rows, ""]
        if isinstance(command, click.Group) and len(path) > 1:  # the program's: above
            subs = [
                (name, sub)
                for name in command.list_commands(ctx)
                if (sub := command.get_command(ctx, name)) is not None and not sub.hidden
            ]
            if subs:
                lines += ["Commands:", ""]
                lines += [
                    f"- [{code(name)}](#{command_id([*path, name])}): "
                    f"{text(sub.get_short_help_str(limit=300))}"
                    for name, sub in subs
                ]
                lines.append("")
    return "\n".join(lines) + "\n"
