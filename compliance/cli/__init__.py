"""The command line: the only place that configures logging and maps errors to exit codes.

Commands live in the modules of this package, one per area; the job they share (from
a configuration to a run and its reports) is :mod:`compliance.job`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import select
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from compliance import __version__
from compliance.cli.progress import progress_bar
from compliance.errors import ComplianceError, StorageError
from compliance.progress import Progress

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


class _Group(click.Group):
    """Maps the error tree to messages and exit codes, for every command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the program itself: its flags may come anywhere
            args = hoist_global_flags(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ComplianceError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            if not stdout_closed():
                raise
            quiet_stdout()  # `compliance alerts list | head -1`: the reader has had enough
            ctx.exit(EXIT_CLOSED_PIPE)
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
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
EXIT_CLOSED_PIPE = 141


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


# the commands register themselves on `cli` when their modules are imported
from compliance.cli import (  # noqa: E402, F401
    accountability,
    alerts,
    audit,
    feeds,
    feeds_impact,
    outbox,
    plugins,
    policy,
    policy_review,
    run,
    sources,
    status,
)
