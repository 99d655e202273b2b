"""Read-only folders, full disks, locks that cannot be created and outputs that cannot be
written: each exits 12 (StorageError) with a one-line message naming the path, never 70;
the checks run before the work; a full disk mid-run keeps the store consistent and the
next run on a healthy disk completes the work.

The tests run as root, which ignores permission bits, so the faults are real ones that
bind root too: a read-only bind mount (else ``chattr +i``) and a small tmpfs (else a file
size limit, RLIMIT_FSIZE, in a subprocess). A test skips, saying why, only when none works.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.errors import StorageError
from compliance.store import Store
from compliance.store.seen import unpack
from tests.conftest import cannot_stage, ps_row, shell, write_config, write_ps_export

ROOT = Path(__file__).resolve().parents[1]
TODAY = "2026-11-20"
CODE = StorageError.exit_code
PEOPLE = [f"u{n}@corp.example" for n in range(1, 18)]


class Faults:
    """Makes folders read-only (for root too) and disks full; undoes it all afterwards."""

    def __init__(self) -> None:
        self.mounts: list[Path] = []
        self.immutable: list[Path] = []
        self.fillers: list[Path] = []

    def read_only(self, folder: Path) -> str:
        """Make ``folder`` (and what it holds) read-only; return the mechanism used."""
        folder.mkdir(parents=True, exist_ok=True)
        if shell("mount", "--bind", str(folder), str(folder)):
            self.mounts.append(folder)
            if shell("mount", "-o", "remount,bind,ro", str(folder), str(folder)):
                return "read-only bind mount"
            self.unmount(folder)
        if shutil.which("chattr") and shell("chattr", "+i", str(folder)):
            self.immutable.append(folder)
            return "chattr +i"
        cannot_stage(
            "no way to make a folder read-only for root here: bind mounts and chattr +i "
            "both refused (not root, or no CAP_SYS_ADMIN / CAP_LINUX_IMMUTABLE)"
        )

    def writable(self, folder: Path) -> None:
        """Undo :meth:`read_only`."""
        if folder in self.immutable:
            shell("chattr", "-i", str(folder))
            self.immutable.remove(folder)
        elif folder in self.mounts:
            self.unmount(folder)

    def small_disk(self, folder: Path, size: str) -> bool:
        """Mount a tmpfs of ``size`` on ``folder``; False when mounting is not allowed."""
        folder.mkdir(parents=True, exist_ok=True)
        if not shell("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
            return False
        self.mounts.append(folder)
        return True

    def fill(self, folder: Path, leave: int) -> Path:
        """Fill the disk of ``folder`` until only about ``leave`` bytes are free."""
        stat = os.statvfs(folder)
        free = stat.f_bavail * stat.f_frsize
        filler = folder / "filler.bin"
        with filler.open("wb") as stream:
            stream.write(b"\0" * max(free - leave, 0))
        self.fillers.append(filler)
        return filler

    def unmount(self, folder: Path) -> None:
        for _ in range(20):  # a closing connection may hold it for a moment
            if shell("umount", str(folder)):
                break
            time.sleep(0.1)
        else:
            shell("umount", "-l", str(folder))
        self.mounts.remove(folder)

    def close(self) -> None:
        for folder in list(self.immutable):
            self.writable(folder)
        for folder in reversed(list(self.mounts)):
            self.unmount(folder)


@pytest.fixture
def faults() -> Iterator[Faults]:
    made = Faults()
    try:
        yield made
    finally:
        made.close()


# --- a deployment -----------------------------------------------------------------------


def _rows(start: int, days: tuple[int, ...], extra: int = 0) -> list[list[str]]:
    """u1 writes to an escort site on ``days``; everyone writes to partners; ``extra`` more
    ordinary messages (to make a unit big enough to fill a small disk)."""
    rows = [
        ps_row(f"11/{day}/2026 10:00:00 AM", "alias1@corp.example", "book@escort-ads.test",
               index=start + i)
        for i, day in enumerate(days)
    ]  # fmt: skip
    for i, person in enumerate(PEOPLE):
        rows.append(
            ps_row(f"11/{days[0]}/2026 11:{i:02d}:00 AM", person, "sales@partner.example",
                   index=start + 100 + i)
        )  # fmt: skip
    for n in range(extra):
        rows.append(
            ps_row(
                f"11/{days[0] + n % 3}/2026 {n % 12 + 1}:{n % 60:02d}:{n // 60 % 60:02d} PM",
                PEOPLE[n % len(PEOPLE)],
                f"team{n % 50}@partner.example",
                index=start + 1000 + n,
            )
        )
    return rows


def _deployment(base: Path, directory: Path, feed: Path, rest: str = "") -> Path:
    """A config in ``base`` reading ``base/inbox`` (week 1 delivered)."""
    (base / "inbox").mkdir(parents=True, exist_ok=True)
    write_ps_export(base / "inbox" / "week1.csv", _rows(0, (2, 4, 9)))
    return write_config(
        base / "compliance.yaml",
        directory,
        feed,
        rest
        or """
        store: var/store.db
        reports: {dir: reports, formats: [html, json, csv]}
        schedule: {lock: var/run.lock, every_minutes: 60}
        """,
    )


def _week2(config: Path) -> None:
    """Deliver a big second export (u1 writes again; thousands of ordinary messages)."""
    write_ps_export(config.parent / "inbox" / "week2.csv", _rows(10_000, (11, 12), extra=20_000))


def _cli(*args: str, fsize: int | None = None) -> tuple[int, str]:
    """Run the CLI in this process, or in a subprocess whose files may not grow beyond
    ``fsize`` bytes (writes past it fail with EFBIG: SIGXFSZ is ignored)."""
    if fsize is None:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    done = subprocess.run(
        [sys.executable, "-m", "compliance", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=limit,  # a resource limit; the child starts no thread before exec
        check=False,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def _run(config: Path, fsize: int | None = None) -> tuple[int, str]:
    return _cli("run", "--config", str(config), "--today", TODAY, fsize=fsize)


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def _assert_named(code: int, output: str, *paths: Path) -> str:
    """Exit 12 (never 70), one error line naming every one of ``paths``."""
    assert code == CODE, output
    assert "internal error" not in output, output
    line = _error_line(output)
    for path in paths:
        assert str(path) in line, line
    assert "@" not in line, line  # never a row's contents
    return line


def _seen(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """The message keys kept, per day: how many and a checksum (rows as stored)."""
    keys: dict[str, list[np.ndarray]] = {}
    for day, value in db.execute("SELECT day, keys FROM seen_keys"):
        keys.setdefault(day, []).append(unpack(value))
    return {
        day: (len(k := np.concatenate(parts)), int((k % 1000003).sum()))
        for day, parts in sorted(keys.items())
    }


def _state(store: Path) -> dict[str, Any]:
    """Everything a run adds, by value (run ids aside)."""
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        one = lambda sql: db.execute(sql).fetchall()  # noqa: E731
        state = {
            "events": one("SELECT event_key, day, person, org_unit, domain, status FROM events "
                          "ORDER BY event_key"),
            "totals": one("SELECT * FROM daily_totals ORDER BY 1, 2, 3"),
            "seen": _seen(db),
            "units": one("SELECT source, unit_key, format, rows, duplicates FROM ingested_units "
                         "ORDER BY 2"),
            "bookmarks": one("SELECT source, watermark FROM bookmarks ORDER BY 1"),
            "alerts": one("SELECT policy, rule_id, person, org_unit, messages, people, days, "
                          "first_day, last_day, trigger_day, ended FROM alerts ORDER BY 1, 2, 3"),
        }  # fmt: skip
    db.close()
    return state


# --- read-only folders ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "rest", "named"),
    [
        (
            "store",
            "store: ro/store.db\nreports: {dir: reports}\nschedule: {lock: var/run.lock}\n",
            "ro/store.db",
        ),
        (
            "lock",
            "store: var/store.db\nreports: {dir: reports}\nschedule: {lock: ro/run.lock}\n",
            "ro/run.lock",
        ),
        (
            "reports",
            "store: var/store.db\nreports: {dir: ro/reports}\nschedule: {lock: var/run.lock}\n",
            "ro/reports",
        ),
    ],
)
def test_run_into_a_read_only_folder_fails_before_reading(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    rest: str,
    named: str,
) -> None:
    config = _deployment(tmp_path / "site", directory_csv, escort_feed, rest)
    faults.read_only(config.parent / "ro")

    def no_reading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the run read its sources before checking where it writes")

    monkeypatch.setattr("compliance.job.sources_for", no_reading)
    code, output = _run(config)
    line = _assert_named(code, output, config.parent / named)
    assert "read-only" in line or "permission" in line, line
    assert "to a writable path" in line, line
    assert not (config.parent / "var" / "store.db").exists()  # nothing was started


REPORT_CASES = [
    pytest.param("feed_cache: cache\n", id="feed-cache-elsewhere"),
    pytest.param("", id="feed-cache-next-to-the-store"),
]


@pytest.mark.parametrize("cache", REPORT_CASES)
def test_report_and_run_on_a_read_only_store(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, faults: Faults, cache: str
) -> None:
    """An existing store in a folder that became read-only: `report` (which logs its delivery
    in the store) and `run` both say so, and the store is as it was."""
    config = _deployment(
        tmp_path / "site",
        directory_csv,
        escort_feed,
        "store: db/store.db\nreports: {dir: reports}\nschedule: {lock: var/run.lock}\n" + cache,
    )
    assert _run(config)[0] == 0
    store = config.parent / "db" / "store.db"
    before = _state(store)
    faults.read_only(store.parent)
    for args in (["report", "--config", str(config)], ["run", "--config", str(config)]):
        code, output = _cli(*args)
        _assert_named(code, output, store)
    faults.writable(store.parent)
    assert _state(store) == before
    assert _run(config)[0] == 4  # healthy again: nothing new to read, said as before


def test_schedule_with_a_lock_that_cannot_be_created(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, faults: Faults
) -> None:
    config = _deployment(
        tmp_path / "site",
        directory_csv,
        escort_feed,
        "store: var/store.db\nschedule: {lock: ro/locks/run.lock, every_minutes: 60}\n",
    )
    faults.read_only(config.parent / "ro")
    code, output = _cli("schedule", "--config", str(config))
    line = _assert_named(code, output, config.parent / "ro" / "locks" / "run.lock")
    assert "schedule.lock:" in line


@pytest.mark.parametrize("inside", [False, True], ids=["the-folder", "a-new-subfolder"])
def test_demo_into_a_read_only_place(
    tmp_path: Path, faults: Faults, no_key: None, inside: bool
) -> None:
    place = tmp_path / "ro"
    faults.read_only(place)
    folder = place / "demo" if inside else place
    code, output = _cli("demo", "--dir", str(folder))
    line = _assert_named(code, output, folder)
    assert "--dir" in line


# --- audit --out --------------------------------------------------------------------------


def _audit(tmp_path: Path, directory: Path, feed: Path, out: Path) -> tuple[int, str, float]:
    inbox = tmp_path / "logs"
    inbox.mkdir(exist_ok=True)
    write_ps_export(inbox / "week1.csv", _rows(0, (2, 4, 9)))
    clock = time.perf_counter()
    code, output = _cli(
        "audit", "--logs", str(inbox), "--feed", f"{feed}:escort-ads",
        "--policies", str(ROOT / "policies"), "--directory", str(directory),
        "--org-domain", "corp.example", "--format", "json", "--out", str(out),
    )  # fmt: skip
    return code, output, time.perf_counter() - clock


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the audit started its work before checking --out")

    for target in (
        "compliance.audit.prepare",
        "compliance.audit.audit",
        "compliance.cli.audit.load_key",
    ):
        monkeypatch.setattr(target, refuse)


@pytest.mark.parametrize(
    "where",
    [Path("/nonexistent") / uuid.uuid4().hex / "x.json", Path("missing/x.json")],
    ids=["absolute", "relative-to-tmp"],
)
def test_audit_out_into_a_missing_folder_fails_at_once(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: Path,
) -> None:
    out = where if where.is_absolute() else tmp_path / where
    _no_work(monkeypatch)
    code, output, seconds = _audit(tmp_path, directory_csv, escort_feed, out)
    line = _assert_named(code, output, out, out.parent)
    assert "does not exist" in line and "--out" in line
    assert seconds < 5
    assert not out.parent.exists()


def test_audit_out_into_a_read_only_folder(
    tmp_path: Path,
    directory_csv: Path,
    escort_feed: Path,
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = tmp_path / "ro"
    faults.read_only(place)
    _no_work(monkeypatch)
    code, output, _ = _audit(tmp_path, directory_csv, escort_feed, place / "audit.json")
    _assert_named(code, output, place / "audit.json")
    assert list(place.iterdir()) == []


def test_audit_out_still_works(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> None:
    out = tmp_path / "audit.json"
    code, output, _ = _audit(tmp_path, directory_csv, escort_feed, out)
    assert code == 0, output
    assert out.read_text().startswith("{")
    assert not list(tmp_path.glob(".compliance-probe-*"))


# --- a full disk ----------------------------------------------------------------------------


def test_full_disk_mid_run_rolls_back_the_unit_and_the_next_run_completes_it(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, faults: Faults
) -> None:
    """The store's disk fills while the big second export is being committed: the run exits
    12 naming the store, the store holds exactly what it held before (that unit rolled back,
    nothing half-written), and the next run on a healthy disk ends with every figure equal to
    a run that never failed."""
    reference = _deployment(tmp_path / "reference", directory_csv, escort_feed)
    assert _run(reference)[0] == 0
    _week2(reference)
    assert _run(reference)[0] == 0
    expected = _state(reference.parent / "var" / "store.db")

    config = _deployment(tmp_path / "site", directory_csv, escort_feed)
    disk = config.parent / "var"
    mechanism = "tmpfs" if faults.small_disk(disk, "64m") else "RLIMIT_FSIZE"
    store = disk / "store.db"
    assert _run(config)[0] == 0
    before = _state(store)
    _week2(config)
    fsize = None
    if mechanism == "tmpfs":
        faults.fill(disk, leave=96 * 1024)
    else:  # no mounting here: files of this process may not grow past their size + 64 KiB
        with sqlite3.connect(store) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        fsize = max(p.stat().st_size for p in disk.iterdir()) + 64 * 1024

    code, output = _run(config, fsize=fsize)
    line = _assert_named(code, output, store)
    expect = "the disk is full" if mechanism == "tmpfs" else "file size limit"
    assert expect in line, (mechanism, line)
    for filler in faults.fillers:
        filler.unlink()
    assert _state(store) == before, mechanism  # the unit being written was rolled back

    code, output = _run(config)
    assert code == 0, output
    assert _state(store) == expected, mechanism
    with sqlite3.connect(store) as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM runs ORDER BY id")]
    db.close()
    assert statuses[0] == statuses[-1] == "ok"
    assert statuses[1] in ("failed", "interrupted"), statuses


def test_full_disk_while_writing_the_report(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, faults: Faults
) -> None:
    config = _deployment(
        tmp_path / "site",
        directory_csv,
        escort_feed,
        "store: var/store.db\nreports: {dir: out, formats: [html, json, csv]}\n"
        "schedule: {lock: var/run.lock}\n",
    )
    if not faults.small_disk(config.parent / "out", "256k"):
        cannot_stage("mounting a tmpfs is not allowed here")
    faults.fill(config.parent / "out", leave=8 * 1024)
    code, output = _run(config)
    line = _assert_named(code, output, config.parent / "out")
    assert "the disk is full" in line, line
    assert not list((config.parent / "out").glob("*.tmp"))


# --- what is not the environment's passes unchanged ---------------------------------------


def test_other_sqlite_errors_are_not_storage_errors(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:

        def twice() -> None:
            with store.transaction() as conn:
                conn.execute("INSERT INTO meta VALUES ('k', 'v')")
                conn.execute("INSERT INTO meta VALUES ('k', 'v')")

        with pytest.raises(sqlite3.IntegrityError):
            twice()
        assert store.conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0


def test_store_open_in_a_read_only_folder(tmp_path: Path, faults: Faults) -> None:
    faults.read_only(tmp_path / "ro")
    with pytest.raises(StorageError) as caught:
        Store.open(tmp_path / "ro" / "s.db")
    assert str(tmp_path / "ro" / "s.db") in str(caught.value)
    assert caught.value.exit_code == CODE


# --- found by review ---------------------------------------------------------------------


def test_audit_out_to_dev_null_or_an_existing_file_is_fine(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    code, output, _ = _audit(tmp_path, directory_csv, escort_feed, Path("/dev/null"))
    assert code == 0, output


def test_audit_out_on_a_full_disk_names_the_path_and_leaves_no_half_file(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, faults: Faults
) -> None:
    place = tmp_path / "small"
    if not faults.small_disk(place, "64k"):
        cannot_stage("mounting a tmpfs is not allowed here")
    faults.fill(place, leave=2 * 1024)
    out = place / "audit.json"
    code, output, _ = _audit(tmp_path, directory_csv, escort_feed, out)
    _assert_named(code, output, out)
    assert not out.exists() and not list(place.glob(".*.tmp"))


def test_a_store_folder_that_links_nowhere_or_a_lock_that_is_a_folder(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    site = tmp_path / "site"
    config = _deployment(
        site, directory_csv, escort_feed, "store: var/store.db\nschedule: {lock: run.lock}\n"
    )
    (site / "var").symlink_to(tmp_path / "not-mounted-yet")
    code, output = _run(config)
    line = _assert_named(code, output, site / "var")
    assert "does not exist" in line
    (site / "var").unlink()
    (site / "run.lock").mkdir()
    code, output = _run(config)
    line = _assert_named(code, output, site / "run.lock")
    assert "is a folder" in line
