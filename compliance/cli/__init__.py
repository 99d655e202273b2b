"""The command line: the only place that configures logging and maps errors to exit codes.

Commands live in the modules of this package, one per area; the job they share (from
a configuration to a run and its reports) is :mod:`compliance.job`. Every exit is a code of
:data:`compliance.errors.EXIT_CODES`. A command that lists or reports takes the option pair
of :func:`output_options` (``--format``, and ``--out`` checked before any work) and writes
with :func:`write_output`; its rows are a :class:`compliance.tables.Listing`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import importlib
import logging
import os
import select
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from compliance import __version__
from compliance.cli.progress import progress_bar
from compliance.errors import ComplianceError, ExitCode, StorageError
from compliance.progress import Progress
from compliance.store import check_file, check_folder

F = TypeVar("F", bound=Callable[..., Any])


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


#: errnos that only a write meets: a read-only file system, a full disk, a quota, a size limit
_WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _storage_error(exc: OSError) -> StorageError:
    """The named error for an untranslated write fault; the path is the operator's (a
    file name with an '@' is shown as its folder: a file name must never carry an address)."""
    if not exc.filename:  # the OS did not say where: say so, and how to find out
        return StorageError(
            "a file",
            "(the system did not say which)",
            os.strerror(exc.errno or 0).lower(),
            "run again with --debug to see where, then make that place writable or free space",
        )
    path = Path(os.fsdecode(exc.filename))
    shown = path.parent if "@" in path.name else path
    what = "a file in" if shown != path else "the file"
    error = StorageError.from_os(exc, what, shown, "choose a path on a writable disk with room")
    assert error is not None  # every errno of _WRITE_ERRNOS is one of StorageError.ERRNOS
    return error


#: Options of the whole program, accepted before or after the subcommand (`compliance
#: audit ... -v` as `compliance -v audit ...`).
GLOBAL_FLAGS = frozenset(
    {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--no-color", "--debug"}
)


def hoist_global_flags(args: list[str]) -> list[str]:
    """``args`` with the program's own flags moved before the subcommand (up to ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
    return flags + [a for a in args[:end] if a not in GLOBAL_FLAGS] + args[end:]


#: The modules that define each command (and its subcommands), imported when the command
#: is first looked up: a command loads what it needs, not every other command's
#: dependencies (``compliance audit`` starts without the scheduled job's).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "alerts": ("alerts",),
    "audit": ("audit",),
    "case": ("accountability",),
    "demo": ("run",),
    "feeds": ("feeds", "feeds_impact"),
    "log": ("accountability",),
    "outbox": ("outbox",),
    "plugins": ("plugins",),
    "policy": ("policy", "policy_review"),
    "privacy": ("accountability",),
    "report": ("run",),
    "run": ("run",),
    "schedule": ("run",),
    "sources": ("sources",),
    "status": ("status",),
}


def load_commands(*names: str) -> None:
    """Import the modules of the commands ``names`` (every command when none is named),
    which register themselves on :data:`cli`."""
    for name in names or tuple(COMMAND_MODULES):
        for module in COMMAND_MODULES.get(name, ()):
            importlib.import_module(f"compliance.cli.{module}")


class _Group(click.Group):
    """Maps the error tree to messages and exit codes, for every command; the program's
    own group loads each command's module when the command is looked up."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the program itself: its flags may come anywhere
            args = hoist_global_flags(args)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        if ctx.parent is None:
            load_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if ctx.parent is None:
            load_commands(cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ComplianceError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except (KeyboardInterrupt, click.exceptions.Abort):
            # Ctrl-C: what was being written was rolled back or left whole on the way out
            click.echo("interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except BrokenPipeError:
            if not stdout_closed():
                raise
            quiet_stdout()  # `compliance alerts list | head -1`: the reader has had enough
            ctx.exit(ExitCode.CLOSED_PIPE)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                # a write the environment refused where no boundary translated it (a disk
                # filling up while --out is written, say): the user's to fix, not a bug
                error = _storage_error(exc)
                click.echo(f"error: {error}", err=True)
                if (ctx.obj or {}).get("debug"):
                    traceback.print_exc()
                ctx.exit(error.exit_code)
            # Internal errors may quote input in their message: say where, not what.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" in {Path(frame.filename).name}:{frame.lineno}" if frame else ""
            click.echo(
                f"internal error: {type(exc).__name__}{where}; please report it "
                "(run again with --debug for the traceback)",
                err=True,
            )
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            ctx.exit(ExitCode.INTERNAL)


#: The last line of `compliance --help`: where the exit codes are explained.
EXIT_CODES_POINTER = "Exit codes: see 'Exit codes' in docs/commands.md or the CLI reference."


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_POINTER,
)
@click.version_option(__version__, prog_name="compliance")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only: no progress bar, no warnings.")
@click.option(
    "--no-color",
    is_flag=True,
    envvar="NO_COLOR",
    help="No colour in the terminal (also when NO_COLOR is set to anything).",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show tracebacks of internal errors (they may quote input: not for shared logs).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, no_color: bool, debug: bool) -> None:
    """Privacy-preserving acceptable-use monitor for corporate mail metadata.

    Options of the program (-v, -q, --no-color, --debug) may also follow the command."""
    level = logging.ERROR if quiet else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"debug": debug, "quiet": quiet, "no_color": no_color or "NO_COLOR" in os.environ}


#: A reader that closed the pipe early (``| head``) ends the command as SIGPIPE would.
EXIT_CLOSED_PIPE = ExitCode.CLOSED_PIPE


def stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (a write would fail)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _fd, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        return False


def quiet_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush of what is
    still buffered does not fail again on the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main() -> None:
    """Console entry point."""
    try:
        cli(prog_name="compliance")
    except BrokenPipeError:  # help or usage text written to a closed pipe
        quiet_stdout()
        sys.exit(EXIT_CLOSED_PIPE)


def format_option(*choices: str) -> Callable[[F], F]:
    """``--format`` with these choices, the first the default (every command alike)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


# --- output: --format and --out, alike for every command that lists or reports ----------


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written, before any work: a
    :class:`StorageError` naming the path, why, and what to do. Nothing is created."""
    if not out.exists():  # an existing file (or /dev/null) needs only to open for writing
        check_folder(out.parent, "--out", out, "choose another --out", create=False)
    check_file(out, "--out", "choose another --out")


def _checked_out(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        check_out(value)
    return value


#: ``--out FILE``: checked as the command line is read, before the command starts.
out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_checked_out,
    help="Write to FILE instead of the standard output (checked writable before any work).",
)


def output_options(*formats: str, optional: str | None = None) -> Callable[[F], F]:
    """``--format`` (these choices, the first the default) and ``--out FILE``: the option
    pair of every command that lists or reports; write with :func:`write_output`.
    ``optional``: no default format, and this help instead (what the format adds)."""
    fmt = click.option(
        "--format",
        "fmt",
        type=click.Choice(formats),
        default=None if optional else formats[0],
        show_default=not optional,
        help=optional or "Output format.",
    )

    def decorate(func: F) -> F:
        return fmt(out_option(func))

    return decorate


def write_output(out: Path | None, content: str | Callable[[TextIO], object]) -> None:
    """A command's output (text, or a function writing it to a stream) to ``--out`` or the
    standard output. A file is written through a temporary one renamed at the end, so a
    full disk leaves no half-written output, and ``written: FILE`` goes to the standard
    error; a write the system refuses is a :class:`StorageError` naming the path."""
    write: Callable[[TextIO], object]
    if isinstance(content, str):
        text = content if not content or content.endswith("\n") else content + "\n"
        write = lambda stream: stream.write(text)  # noqa: E731
    else:
        write = content
    if out is None:
        write(sys.stdout)
        sys.stdout.flush()  # before what follows on the standard error (an exit's message)
        return
    regular = not out.exists() or out.is_file()
    target = out.with_name(f".{out.name}.tmp") if regular else out
    try:
        with target.open("w", encoding="utf-8", newline="") as stream:
            write(stream)
        if regular:
            target.replace(out)
    except OSError as exc:
        if regular:
            target.unlink(missing_ok=True)
        error = StorageError.from_os(exc, "--out", out, "choose another --out")
        if error is None:
            raise
        raise error from None
    click.echo(f"written: {out}", err=True)


config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration file (compliance.yaml).",
)


def reading_progress() -> contextlib.AbstractContextManager[Progress]:
    """The progress bar of the running command (see :mod:`compliance.cli.progress`)."""
    obj = click.get_current_context().find_root().obj or {}
    return progress_bar(bool(obj.get("quiet")), bool(obj.get("no_color")))
