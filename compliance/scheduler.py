"""`compliance schedule`: the job on a timer, one run at a time, stopping cleanly on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import filelock
import schedule

from compliance.config import Schedule
from compliance.errors import ComplianceError, ExitCode, StorageError
from compliance.store import check_file, check_folder

log = logging.getLogger(__name__)


class RunInProgress(ComplianceError):
    """Another run holds the lock."""

    exit_code = ExitCode.LOCKED  # EX_TEMPFAIL: try again later


#: What to do instead, when the lock's folder cannot be written.
LOCK_SETTING = "set schedule.lock: to a writable path"


def check_lock_folder(path: Path) -> None:
    """Pre-flight: the lock file's folder (created if needed) must take new files."""

    check_folder(path.parent, "the run lock", path, LOCK_SETTING)
    check_file(path, "the run lock", LOCK_SETTING)


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold the run lock, or raise :class:`RunInProgress` at once if another run has it,
    or :class:`StorageError` if the lock file cannot be created (read-only, missing, full)."""
    check_lock_folder(path)
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RunInProgress(f"another run holds {path}; this one was skipped") from None
    except OSError as exc:
        error = StorageError.from_os(exc, "the run lock", path, LOCK_SETTING)
        if error is None:
            raise
        raise error from None
    try:
        yield
    finally:
        lock.release()


def serve(
    settings: Schedule,
    lock_path: Path,
    job: Callable[[], None],
    stop: threading.Event | None = None,
    install_signals: bool = True,
) -> None:
    """Run ``job`` now and then on the configured schedule until SIGTERM/SIGINT or ``stop``."""
    stop = stop or threading.Event()
    check_lock_folder(lock_path)  # a lock that can never be taken: say so now, not every tick

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d received: stopping after the current run", signum)
        stop.set()

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def guarded() -> None:
        if stop.is_set():
            return
        try:
            with run_lock(lock_path):
                job()
        except RunInProgress as exc:
            log.warning("%s", exc)
        except ComplianceError as exc:
            log.error("run failed: %s", exc)

    scheduler = schedule.Scheduler()
    if settings.daily_at:
        scheduler.every().day.at(settings.daily_at).do(guarded)
        log.info("scheduled daily at %s (local time)", settings.daily_at)
    else:
        minutes = settings.every_minutes or 60
        scheduler.every(minutes).minutes.do(guarded)
        log.info("scheduled every %d minutes", minutes)
    guarded()
    while not stop.is_set():
        scheduler.run_pending()
        idle = scheduler.idle_seconds
        stop.wait(timeout=max(1.0, min(idle if idle is not None else 30.0, 30.0)))
    log.info("scheduler stopped")
