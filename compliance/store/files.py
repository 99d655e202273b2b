"""Pre-flight checks of the folders and files the job writes, and SQLite's write faults told
apart (a full disk, a read-only folder, a missing permission) for a clear error."""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import NoReturn

from compliance.errors import StorageError

#: What to do instead, when the store's folder cannot be written.
STORE_SETTING = "set store: to a writable path"

#: SQLite result codes (extended names start so) of a write the environment refused.
_WRITE_FAULTS = (
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR_WRITE",
    "SQLITE_IOERR_FSYNC",
    "SQLITE_IOERR_TRUNCATE",
    "SQLITE_IOERR_SHMOPEN",
    "SQLITE_IOERR_SHMSIZE",
)
_WRITE_FAULT_TEXT = ("disk is full", "readonly", "unable to open")


def is_write_fault(exc: sqlite3.Error) -> bool:
    """True for SQLite's errors of a full disk, a read-only file or folder, a file it cannot
    open or a write the operating system refused; false for everything else (a bug, a
    corrupt file, a constraint): those are not the environment's."""
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name.startswith(_WRITE_FAULTS)
    return any(text in str(exc) for text in _WRITE_FAULT_TEXT)


def probe_folder(folder: Path) -> OSError | None:
    """Create, write one byte to and remove a file in ``folder``: the error, or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".compliance-probe-", dir=folder)
    except OSError as exc:
        return exc
    try:
        os.write(fd, b"\0")
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        os.unlink(probe)
    return None


def check_folder(folder: Path, what: str, shown: Path, setting: str, create: bool = True) -> None:
    """Pre-flight: raise :class:`StorageError` at once when files cannot be written in
    ``folder`` (created first when ``create``; else it must exist). ``what`` and ``shown``
    name the output for the message, ``setting`` the other way out."""
    if folder.is_symlink() and not folder.exists():  # a volume not mounted yet, say
        raise StorageError(
            what, shown, f"{folder} is a link to a place that does not exist", setting
        )
    if folder.exists() and not folder.is_dir():
        raise StorageError(what, shown, f"{folder} is not a folder", f"remove it, or {setting}")
    if not create and not folder.exists():
        raise StorageError(what, shown, *StorageError.explain(errno.ENOENT, folder, setting))
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_storage(exc, what, shown, setting)
    fault = probe_folder(folder)
    if fault is not None:
        _raise_storage(fault, what, shown, setting)


def check_file(path: Path, what: str, setting: str) -> None:
    """Pre-flight: raise :class:`StorageError` when an existing ``path`` cannot be opened
    for writing (it is not changed); a folder or a dangling link in its place is refused."""
    if path.is_dir():
        raise StorageError(
            what, path, f"{path} is a folder, not a file", f"remove it, or {setting}"
        )
    if path.is_symlink() and not path.exists():
        raise StorageError(what, path, f"{path} is a link to a place that does not exist", setting)
    if not path.is_file():
        return
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError as exc:
        _raise_storage(exc, what, path, setting)


def check_store_path(path: Path) -> None:
    """Pre-flight for the store: its folder (created if needed) and, when they exist, the
    database and its WAL files must be writable."""
    check_folder(path.parent, "the store", path, STORE_SETTING)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        check_file(file, "the store", STORE_SETTING)


def storage_reason(path: Path, exc: sqlite3.Error) -> tuple[str, Path, str, str]:
    """The :class:`StorageError` arguments for SQLite's write fault ``exc`` on the store at
    ``path``: the folder is probed to tell a read-only disk, a missing permission and a
    missing folder apart (SQLite does not say)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    folder = path.parent
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        return ("the store", path, *StorageError.explain(errno.ENOSPC, folder, STORE_SETTING))
    if not folder.is_dir():
        return ("the store", path, *StorageError.explain(errno.ENOENT, folder, STORE_SETTING))
    fault = probe_folder(folder)
    if fault is None:
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                if file.exists():
                    os.close(os.open(file, os.O_WRONLY))
            except OSError as exc_file:
                fault = exc_file
                break
    if fault is not None and fault.errno in StorageError.ERRNOS:
        return ("the store", path, *StorageError.explain(fault.errno, folder, STORE_SETTING))
    if name.startswith("SQLITE_IOERR") and _file_size_limited():
        return ("the store", path, *StorageError.explain(errno.EFBIG, folder, STORE_SETTING))
    if name.startswith("SQLITE_IOERR"):
        return (
            "the store",
            path,
            f"the operating system refused a write in {folder} ({name})",
            f"check that the disk has space and that large files are allowed, or {STORE_SETTING}",
        )
    return ("the store", path, *StorageError.explain(errno.EACCES, folder, STORE_SETTING))


def _file_size_limited() -> bool:
    """True when this process may not write files of any size (``ulimit -f``)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return False
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


def _raise_storage(exc: OSError, what: str, shown: Path, setting: str) -> NoReturn:
    error = StorageError.from_os(exc, what, shown, setting)
    if error is None:
        raise exc
    raise error from None
