"""`compliance status`: the operator's view and health check. Healthy (exit 0) after a
run; exit 14 when runs are overdue, the last run failed, a delivery failed or waits too
long, or an API source lags; it reads the store, never creates one, and prints counts,
ids and times only."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import compliance.cli.status  # noqa: F401  (registers the command until cli/__init__ does)
from compliance.config import load_config
from compliance.errors import ConfigError, StoreError
from compliance.job import due_schedules
from compliance.status import OUTBOX_LIMIT, Unhealthy, check, due_day, overdue_after
from compliance.store import MIGRATIONS, Store
from tests.conftest import as_actor, cannot_stage, run_cli, shell, write_config

CODE = Unhealthy.exit_code
TODAY = "2026-11-10"


@pytest.fixture
def ran(job: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ``job`` deployment after one successful run (as ``lead``)."""
    monkeypatch.setenv("COMPLIANCE_ACTOR", "lead")
    code, output = run_cli(job, TODAY)
    assert code == 0, output
    return job


def status(config: Path, *args: str) -> tuple[int, str]:
    result = as_actor("lead", config, "status", *args)
    assert "@" not in result.output, result.output  # never an address
    return result.exit_code, result.output


def status_json(config: Path) -> tuple[int, dict[str, object]]:
    code, output = status(config, "--format", "json")
    text = output.split("\nerror: ", 1)[0]  # the unhealthy message follows the JSON
    return code, json.loads(text)


def later(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    """Move `status`'s clock forward."""
    moment = dt.datetime.now(dt.UTC) + delta
    monkeypatch.setattr("compliance.status.clock", lambda: moment)


def store_of(config: Path) -> Store:
    return Store.open(config.parent / "var" / "store.db")


def test_healthy_after_a_run(ran: Path) -> None:
    code, output = status(ran)
    assert code == 0, output
    assert "status:       healthy" in output
    assert "last run:     1 ok" in output
    assert "21 rows read, 0 rejected, 1 new alert(s)" in output
    assert "every 60 min; overdue after 130 min" in output
    assert "report  run    team      30    " in output
    assert "2026-10-12..2026-11-10" in output  # the report the run wrote
    assert "exports  exchange  2026-11-09  -" in output  # a file source: no lag
    assert "OVERDUE" not in output and "problem:" not in output


def test_json_shape(ran: Path) -> None:
    code, data = status_json(ran)
    assert code == 0
    assert set(data) == {"healthy", "problems", "now", "runs", "reports", "outbox", "sources"}
    assert data["healthy"] is True and data["problems"] == []
    runs = data["runs"]
    assert isinstance(runs, dict)
    assert runs["last"] == runs["last_ok"]
    assert set(runs["last"]) == {
        "id", "started_at", "finished_at", "status", "rows_read", "rows_rejected", "alerts_new",
    }  # fmt: skip
    assert runs["last"]["id"] == 1 and runs["last"]["status"] == "ok"
    assert (runs["last"]["rows_read"], runs["last"]["alerts_new"]) == (21, 1)
    assert runs["interval_minutes"] == 60 and runs["overdue_after_minutes"] == 130
    started = dt.datetime.fromisoformat(runs["last"]["started_at"])
    assert runs["next_due"] == (started + dt.timedelta(hours=1)).isoformat()
    assert runs["overdue"] is False
    assert data["reports"] == [
        {
            "name": "report",
            "every": "run",
            "audience": "team",
            "period_days": 30,
            "next_due": runs["next_due"],
            "last": {
                "first_day": "2026-10-12",
                "last_day": "2026-11-10",
                "at": data["reports"][0]["last"]["at"],  # type: ignore[index]
                "run_id": 1,
            },
        }
    ]
    assert data["outbox"] == {
        "counts": {"pending": 0, "sending": 0, "sent": 0, "failed": 0, "dropped": 0},
        "oldest_waiting": None,
        "oldest_waiting_age_seconds": None,
        "failed": [],
        "overdue": False,
    }
    assert data["sources"] == [
        {
            "name": "exports",
            "type": "exchange",
            "kind": "files",
            "bookmark": "2026-11-09",
            "lag_seconds": None,
            "units": 1,
            "last_unit_at": data["sources"][0]["last_unit_at"],  # type: ignore[index]
            "overdue": False,
        }
    ]
    assert data["sources"][0]["last_unit_at"] >= runs["last"]["started_at"]  # type: ignore[index]


def test_overdue_without_a_successful_run_within_the_threshold(
    ran: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(ran)
    assert overdue_after(config) == dt.timedelta(minutes=130)
    later(monkeypatch, dt.timedelta(minutes=125))
    assert status(ran)[0] == 0  # one run missed: tolerated
    later(monkeypatch, dt.timedelta(minutes=135))
    code, output = status(ran)
    assert code == CODE, output
    assert "UNHEALTHY" in output and "OVERDUE" in output
    assert "error: unhealthy: runs overdue: no successful run since" in output


def test_the_schedule_sets_the_interval(ran: Path) -> None:
    text = ran.read_text().replace(
        "schedule: {lock: var/run.lock}", "schedule: {lock: var/run.lock, every_minutes: 15}"
    )
    ran.write_text(text)
    config = load_config(ran)
    assert overdue_after(config) == dt.timedelta(minutes=40)
    now = dt.datetime.now(dt.UTC)
    assert check(config, now + dt.timedelta(minutes=35)).healthy
    assert not check(config, now + dt.timedelta(minutes=45)).healthy


@pytest.mark.parametrize(
    ("every", "due"), [("day", "2026-11-11"), ("week", "2026-11-17"), ("month", "2026-12-01")]
)
def test_named_report_schedules(ran: Path, every: str, due: str) -> None:
    text = ran.read_text().replace(
        "reports: {dir: reports, formats: [html, json]}",
        "reports: {dir: reports, formats: [html, json], "
        f"schedules: [{{name: digest, every: {every}}}]}}",
    )
    ran.write_text(text)
    code, output = run_cli(ran, TODAY)  # nothing new to read (exit 4); the digest is written
    assert code == 4, output
    config = load_config(ran)
    status_now = check(config)
    assert status_now.healthy, status_now.problems
    digest = status_now.reports[1]
    assert (digest["name"], digest["every"], digest["audience"]) == ("digest", every, "team")
    assert digest["last"]["last_day"] == TODAY and digest["last"]["run_id"] == 2
    # written again by the first run on or after the due day (the clock is past it here)
    assert due_day(every, TODAY) == dt.date.fromisoformat(due)
    assert digest["next_due"] == max(status_now.runs["next_due"], f"{due}T00:00:00+00:00")
    # the job agrees: not due on the day before, due on that day
    day = dt.date.fromisoformat(due)
    with store_of(ran) as store:
        assert due_schedules(store, config, day - dt.timedelta(days=1)) == []
        assert [s.name for s in due_schedules(store, config, day)] == ["digest"]


def test_a_failed_last_run_is_unhealthy(ran: Path) -> None:
    with store_of(ran) as store:
        run_id = store.runs.begin("run", {}, {})
        store.runs.finish(run_id, "failed", error="the source failed", stats={"rows_read": 3})
    code, output = status(ran)
    assert code == CODE, output
    assert f"last run:     {run_id} failed" in output
    assert "last ok run:  1 ok" in output
    assert f"error: unhealthy: the last run ({run_id}) failed" in output
    assert "the source failed" not in output  # error texts are not shown


def test_no_run_yet_and_no_store(job: Path) -> None:
    store = job.parent / "var" / "store.db"
    code, output = status(job)
    assert code == ConfigError.exit_code and "there is no store" in output
    assert not store.exists()  # status never creates one
    Store.open(store).close()
    code, data = status_json(job)
    assert code == CODE
    assert data["problems"] == ["no run yet"]
    assert data["runs"]["overdue"] is True  # type: ignore[index]


def test_outbox_failures_and_old_waiting_deliveries(ran: Path) -> None:
    with store_of(ran) as store:
        for n in (1, 2, 3):
            store.outbox.enqueue(
                f"k{n}", "report", "team", ("2026-10-12", "2026-11-10"), f"mail{n}", ["r.html"], 1
            )
        store.outbox.failed(2, "550 recipient dpo@corp.example refused")
        store.outbox.sent(3, "<receipt@mail.corp.example>", "0" * 64)
    code, data = status_json(ran)
    assert code == CODE
    outbox = data["outbox"]
    assert isinstance(outbox, dict)
    assert outbox["counts"] == {"pending": 1, "sending": 0, "sent": 1, "failed": 1, "dropped": 0}
    assert outbox["failed"] == [2] and outbox["overdue"] is True
    assert data["problems"] == ["deliveries failed: 2"]
    code, output = status(ran)  # the error (it names a recipient) is never printed
    assert code == CODE and "failed: 2  OVERDUE" in output

    with store_of(ran) as store:
        store.outbox.drop(2)
    now = dt.datetime.now(dt.UTC)
    assert check(load_config(ran), now).healthy  # one waiting delivery, recorded just now
    late = check(load_config(ran), now + OUTBOX_LIMIT + dt.timedelta(minutes=1))
    assert late.outbox["overdue"] is True
    assert any(p.startswith("a delivery has been waiting since") for p in late.problems)


def test_api_source_lag(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> None:
    config_path = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\n",
        sources="[{name: graph, type: m365, tenant_id: t, client_id: c}, "
        "{name: exports, type: exchange, path: inbox}]",
    )
    config = load_config(config_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with Store.open(tmp_path / "var" / "store.db") as store:
        run_id = store.runs.begin("run", {}, {})
        with store.transaction():
            mark = (now - dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            store.ingest.record_unit("graph", "w1", "m365", 10, run_id)
            store.ingest.set_bookmark("graph", mark, run_id)
        store.runs.finish(run_id, "ok")
    status_now = check(config, now)
    graph, exports = status_now.sources
    assert (graph["kind"], graph["bookmark"], graph["lag_seconds"]) == ("api", mark, 1800)
    assert graph["overdue"] is False and graph["units"] == 1 and graph["last_unit_at"]
    assert (exports["kind"], exports["bookmark"], exports["lag_seconds"]) == ("files", None, None)
    assert status_now.healthy
    # 2 x 60 + 10 minutes after the bookmark (the run started later, so is not overdue yet)
    late = check(config, now + dt.timedelta(minutes=101))
    assert late.sources[0]["overdue"] is True and late.runs["overdue"] is False
    assert late.problems == [f"source graph lags: bookmark {mark}"]


# --- a read-only store ----------------------------------------------------------------


@pytest.fixture
def read_only_var(ran: Path) -> Iterator[Path]:
    """The store's folder, mounted read-only (for root too)."""
    var = ran.parent / "var"
    if not shell("mount", "--bind", str(var), str(var)):
        cannot_stage("bind mounts are not allowed here")
    try:
        if not shell("mount", "-o", "remount,bind,ro", str(var), str(var)):
            cannot_stage("read-only remounts are not allowed here")
        yield var
    finally:
        for _ in range(20):  # a closing connection may hold it for a moment
            if shell("umount", str(var)):
                break
            time.sleep(0.1)
        else:
            shell("umount", "-l", str(var))


def test_status_of_a_read_only_store(ran: Path, read_only_var: Path) -> None:
    before = sorted(p.name for p in read_only_var.iterdir())
    code, output = status(ran)
    assert code == 0, output
    assert "last run:     1 ok" in output
    assert sorted(p.name for p in read_only_var.iterdir()) == before


def test_a_store_read_only_is_never_written_and_must_be_current(ran: Path) -> None:
    """Read-only opening changes nothing in the store (no migration, no write; SQLite may
    add its empty shared-memory files beside it where the folder allows) and refuses a
    store of another schema, wherever it lies (no mount needed)."""
    store_file = ran.parent / "var" / "store.db"
    before = (store_file.stat().st_mtime_ns, store_file.read_bytes())
    with Store.open_read_only(store_file) as store:
        assert store.runs.last() is not None
    assert (store_file.stat().st_mtime_ns, store_file.read_bytes()) == before
    wal = store_file.with_name("store.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    old = sqlite3.connect(store_file)
    old.execute("DELETE FROM schema_migrations WHERE version = ?", (len(MIGRATIONS),))
    old.commit()
    old.close()
    with pytest.raises(StoreError, match="run the job once"):
        Store.open_read_only(store_file)
