"""`compliance run` and `compliance sources check` with an m365 source and the Entra
directory, against the Graph-compatible HTTPS server: end to end, crash and resume."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from compliance.cli import cli
from connectors.graph import reset_shared_state
from tests.conftest import read_all_bytes
from tests.graph_server import SECRET, Running, start, trace_row

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
GUID = "0b5c3a10-0000-4000-8000-{:012d}"


def _users() -> list[dict[str, Any]]:
    users = []  # Sales/EMEA 12, Legal 3, Ops 10 (Legal alone would be a small roll-up)
    for n in range(1, 26):
        users.append(
            {
                "id": GUID.format(n),
                "displayName": f"Distinctive Name {n}",
                "mail": f"u{n}@corp.example",
                "userPrincipalName": f"u{n}@corp.example",
                "proxyAddresses": [f"SMTP:u{n}@corp.example", f"smtp:alias{n}@corp.example"],
                "department": "Sales/EMEA" if n <= 12 else "Legal" if n <= 15 else "Ops",
                "userType": "Member",
            }
        )
    return users


def _traces() -> list[dict[str, Any]]:
    """u1 writes to an escort site on three days (once as an alias); 96 other rows."""
    rows = [
        trace_row(NOW - dt.timedelta(days=d, hours=1), sender, "book@www.escort-ads.test")
        for d, sender in (
            (2, "u1@corp.example"),
            (1, "alias1@corp.example"),
            (0, "u1@corp.example"),
        )
    ]
    rows.append(trace_row(NOW - dt.timedelta(hours=30), "u2@corp.example", "x@notescort-ads.test"))
    for i in range(96):
        at = NOW - dt.timedelta(hours=71) + dt.timedelta(minutes=44 * i)
        rows.append(
            trace_row(
                at, f"u{i % 15 + 1}@corp.example", f"team{i}@partner.example", status="pending"
            )
        )
    return sorted(rows, key=lambda r: str(r["receivedDateTime"]))


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("M365_TEST_SECRET", SECRET)
    reset_shared_state()
    for running in start(tmp_path):
        running.state.users = _users()
        running.state.traces = _traces()
        yield running
    reset_shared_state()


def _config(folder: Path, graph: Running, feed: Path, **source: Any) -> Path:
    folder.mkdir(exist_ok=True)
    config = {
        "organisation": {"domains": ["corp.example"]},
        "directory": {"type": "entra", "source": "m365", "org_unit": ["department"]},
        "sources": [
            {
                "name": "m365",
                "type": "m365",
                **graph.options(**{"start_days": 3, "page_size": 10, **source}),
            }
        ],
        "feeds": [{"path": str(feed), "category": "escort-ads"}],
        "policies": [str(ROOT / "policies")],
        "store": "store.db",
        "reports": {"dir": "reports", "formats": ["html", "json"]},
        "schedule": {"lock": "run.lock"},
        # the data is relative to today: one key epoch, whatever the date
        "privacy": {"key_rotation": "never"},
    }
    path = folder / "compliance.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _rows_in(graph: Running, query: str) -> int:
    words = query.split()
    return sum(1 for r in graph.state.traces if words[2] <= r["receivedDateTime"] <= words[6])


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(config: Path) -> dict[str, Any]:
    with sqlite3.connect(config.parent / "store.db") as db:
        return {
            "totals": db.execute(
                "SELECT day, org_unit, direction, messages FROM daily_totals ORDER BY 1, 2, 3"
            ).fetchall(),
            "events": db.execute(
                "SELECT event_key, person, org_unit, domain, status FROM events ORDER BY 1"
            ).fetchall(),
            "alerts": db.execute("SELECT policy, rule_id, person, org_unit FROM alerts").fetchall(),
            "runs": db.execute("SELECT status FROM runs ORDER BY id").fetchall(),
            "bookmark": db.execute("SELECT watermark FROM bookmarks").fetchall(),
        }


def test_run_pulls_matches_and_alerts_end_to_end(
    graph: Running, tmp_path: Path, escort_feed: Path
) -> None:
    config = _config(tmp_path / "job", graph, escort_feed)
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 new alert(s)" in result.output
    state = _state(config)
    assert sum(row[3] for row in state["totals"]) == 100
    assert [(e[2], e[3]) for e in state["events"]] == [("Sales/EMEA", "www.escort-ads.test")] * 3
    assert len({e[1] for e in state["events"]}) == 1  # the alias is the same person
    assert [(a[0], a[1], a[3]) for a in state["alerts"]] == [
        ("escort-ads", "repeated-contact", "Sales/EMEA")
    ]
    (bookmark,) = state["bookmark"][0]  # the run's start: never later
    assert NOW.strftime("%Y-%m-%dT%H:%M:%SZ") <= bookmark <= _now()
    # three windows of 24 h, each read to its last page of at most 10 rows, nothing more
    windows = [
        q["$filter"][0]
        for q in (r.query for r in graph.state.requests if r.path.endswith("messageTraces"))
        if "$skiptoken" not in q
    ]
    assert len(windows) == 3
    expected = sum(max(1, -(-_rows_in(graph, w) // 10)) for w in windows)
    assert graph.state.trace_requests == expected
    blob = read_all_bytes(tmp_path / "job")
    for n in range(1, 16):
        for value in (f"u{n}@corp.example", f"alias{n}@", f"Distinctive Name {n}", GUID.format(n)):
            assert value.encode() not in blob, value
    assert b"Re: plans" not in blob
    assert b"escort-ads.test" in blob  # the external site is kept, as a domain

    # the next run re-reads the overlap: nothing is counted twice, statuses become final
    for row in graph.state.traces:
        row["status"] = "delivered"
    again = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "0 new alert(s)" in again.output
    second = _state(config)
    assert second["totals"] == state["totals"]
    assert [e[4] for e in second["events"]] == ["delivered"] * 3


def test_a_run_killed_mid_window_resumes_without_loss_or_double_count(
    graph: Running, tmp_path: Path, escort_feed: Path
) -> None:
    config = _config(tmp_path / "job", graph, escort_feed)
    graph.state.hang_on = 7  # the second window's third page never answers
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance", "run", "--config", str(config)],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert graph.state.hung.wait(60), "the run never reached page 7"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    graph.state.release.set()
    crashed = _state(config)
    assert crashed["runs"] == [("running",)]
    first_window_end = (NOW - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H")
    assert crashed["bookmark"][0][0][:13] >= first_window_end  # window 1 was committed
    assert 0 < sum(row[3] for row in crashed["totals"]) < 100

    graph.state.hang_on = None
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    resumed = _state(config)
    assert resumed["runs"] == [("interrupted",), ("ok",)]

    # the same data read by one uninterrupted run into a fresh store
    reference = _config(tmp_path / "reference", graph, escort_feed)
    assert CliRunner().invoke(cli, ["run", "--config", str(reference)]).exit_code == 0
    clean = _state(reference)
    assert sum(row[3] for row in resumed["totals"]) == 100
    assert resumed["totals"] == clean["totals"]
    assert resumed["events"] == clean["events"]
    assert resumed["alerts"] == clean["alerts"]


def test_sources_check_reports_each_step_without_data(
    graph: Running, tmp_path: Path, escort_feed: Path
) -> None:
    config = _config(tmp_path / "job", graph, escort_feed)
    result = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "source m365 (m365)" in result.output
    assert "permission ExchangeMessageTrace.Read.All granted" in result.output
    assert "message trace reachable" in result.output
    assert "permission User.Read.All granted" in result.output
    assert "all checks passed" in result.output
    assert "@" not in result.output
    assert SECRET not in result.output

    graph.state.roles = ["User.Read.All"]
    reset_shared_state()
    failed = CliRunner().invoke(cli, ["sources", "check", "--config", str(config)])
    assert failed.exit_code == 5
    assert "FAIL" in failed.output
    assert "ExchangeMessageTrace.Read.All" in failed.output
    assert "admin consent" in failed.output


def test_sources_reset_forgets_the_bookmark(
    graph: Running, tmp_path: Path, escort_feed: Path
) -> None:
    config = _config(tmp_path / "job", graph, escort_feed)
    assert CliRunner().invoke(cli, ["run", "--config", str(config)]).exit_code == 0
    result = CliRunner().invoke(cli, ["sources", "reset", "--config", str(config), "m365"])
    assert result.exit_code == 0
    assert "bookmark of m365 removed" in result.output
    assert _state(config)["bookmark"] == []
    unknown = CliRunner().invoke(cli, ["sources", "reset", "--config", str(config), "other"])
    assert unknown.exit_code == 2


@pytest.mark.slow
def test_thirty_day_backfill_request_count(
    graph: Running, tmp_path: Path, escort_feed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first run over 30 days of a tenant with 9,600 trace rows (message × recipient) a day."""
    per_day, days = 9_600, 30
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = now - dt.timedelta(days=days) + dt.timedelta(seconds=60)  # inside the first window
    step = (dt.timedelta(days=days) - dt.timedelta(seconds=120)) / (per_day * days)
    graph.state.traces = [
        trace_row(first + step * i, f"u{i % 15 + 1}@corp.example", f"c{i % 997}@partner.example")
        for i in range(per_day * days)
    ]
    config = _config(tmp_path / "job", graph, escort_feed, start_days=days, page_size=5000)
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert sum(row[3] for row in _state(config)["totals"]) == per_day * days
    windows = [
        r.query["$filter"][0]
        for r in graph.state.requests
        if r.path.endswith("messageTraces") and "$skiptoken" not in r.query
    ]
    assert len(windows) == days
    expected = sum(max(1, -(-_rows_in(graph, w) // 5000)) for w in windows)
    assert graph.state.trace_requests == expected
    users = sum(1 for r in graph.state.requests if r.path == "/v1.0/users")
    with capsys.disabled():
        print(
            f"\n30-day backfill of {per_day * days} rows: {graph.state.trace_requests} "
            f"message-trace requests, {users} users request(s), "
            f"{graph.state.token_requests} token request(s)"
        )


def test_audit_reads_a_graph_window_without_a_store(
    graph: Running, tmp_path: Path, escort_feed: Path
) -> None:
    import json

    config = _config(tmp_path / "job", graph, escort_feed)
    since = (NOW - dt.timedelta(days=3)).date().isoformat()
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "--config",
            str(config),
            "--source",
            "m365",
            "--since",
            since,
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["matched"] is None  # one person's evidence: withheld, as the table says
    assert [(a["rule_id"], a["org_unit"]) for a in report["alerts"]] == [
        ("repeated-contact", "Sales/EMEA")
    ]
    assert not (tmp_path / "job" / "store.db").exists()
    assert "@corp.example" not in result.output

    too_old = (NOW - dt.timedelta(days=120)).date().isoformat()
    refused = CliRunner().invoke(
        cli, ["audit", "--config", str(config), "--source", "m365", "--since", too_old]
    )
    assert refused.exit_code == 5
    assert "90 days" in refused.output
    usage = CliRunner().invoke(cli, ["audit", "--source", "m365", "--since", since])
    assert usage.exit_code == 2
    open_ended = CliRunner().invoke(cli, ["audit", "--config", str(config), "--source", "m365"])
    assert open_ended.exit_code == 2
    assert "--source m365 needs --since (Graph keeps 90 days)" in open_ended.output
