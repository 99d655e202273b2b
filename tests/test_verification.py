"""The verification pattern: a person's first message to a listed site answered from it
within 24 hours and followed by more is marked ``exchange_confirmed`` on the alert; the
other figures are unchanged. Through the real CLI (audit and scheduled runs)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import audit_json, ps_row, run_cli, store_db, write_config, write_ps_export

SITE = "book@escort-ads.test"


def _exchange_rows() -> list[list[str]]:
    """Four people with a person alert each (at least 3 messages on 2 days); only u1's
    exchange is a verification: first message answered within hours, then more."""
    spec = [
        # u1: sent 10:00, answered 15:00 the same day, then writes on three more days
        ("u1", "11/2/2026 10:00:00 AM", "out"), ("u1", "11/2/2026 3:00:00 PM", "in"),
        ("u1", "11/3/2026 10:00:00 AM", "out"), ("u1", "11/5/2026 10:00:00 AM", "out"),
        ("u1", "11/6/2026 10:00:00 AM", "out"),
        # u2: answered within hours, but nothing written after the answer
        ("u2", "11/2/2026 10:00:00 AM", "out"), ("u2", "11/3/2026 8:00:00 AM", "out"),
        ("u2", "11/3/2026 9:00:00 AM", "out"), ("u2", "11/3/2026 9:30:00 AM", "in"),
        # u3: answered four days later, then one more message
        ("u3", "11/2/2026 10:00:00 AM", "out"), ("u3", "11/4/2026 10:00:00 AM", "out"),
        ("u3", "11/6/2026 10:00:00 AM", "in"), ("u3", "11/7/2026 10:00:00 AM", "out"),
        # u4: the site wrote first; u4 answered, got a reply, wrote more
        ("u4", "11/1/2026 10:00:00 AM", "in"), ("u4", "11/2/2026 10:00:00 AM", "out"),
        ("u4", "11/2/2026 12:00:00 PM", "in"), ("u4", "11/3/2026 10:00:00 AM", "out"),
        ("u4", "11/4/2026 10:00:00 AM", "out"),
    ]  # fmt: skip
    rows = []
    for i, (who, when, way) in enumerate(spec):
        me = f"{who}@corp.example"
        sender, recipient = (me, SITE) if way == "out" else (SITE, me)
        rows.append(ps_row(when, sender, recipient, index=i))
    return rows


def _marks(alerts: list[dict[str, object]]) -> dict[int, bool]:
    """Each person alert's messages -> its mark (u1 has 5 messages, the others 4)."""
    person = [a for a in alerts if a["rule"] == "person"]
    assert len(person) == 4
    return {
        int(str(a["messages"])): bool(a["exchange_confirmed"])
        for a in person
        if a["exchange_confirmed"]
    }


def test_audit_marks_only_the_confirmed_exchange(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    export = write_ps_export(tmp_path / "trace.csv", _exchange_rows())
    data = audit_json(export, directory_csv, escort_feed)
    alerts = [dict(a) for a in data["alerts"]]  # type: ignore[attr-defined]
    assert _marks(alerts) == {5: True}
    marked = next(a for a in alerts if a["exchange_confirmed"])
    # the figures are those of any episode: 4 sent + 1 reply on 4 days
    assert (marked["messages"], marked["days"]) == (5, 4)


def test_scheduled_run_stores_the_mark_and_reruns_change_nothing(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "trace.csv", _exchange_rows())
    config = write_config(
        tmp_path / "compliance.yaml", directory_csv, escort_feed, "store: var/store.db\n"
    )
    code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    code, output = run_cli(config, "2026-11-10")  # nothing new to read: exit 4, no change
    assert code == 4 and "0 new alert(s), 0 updated" in output, output
    with store_db(config) as db:
        rows = db.execute(
            "SELECT messages, exchange_confirmed FROM alerts WHERE rule = 'person'"
        ).fetchall()
    assert sorted(rows) == [(4, 0), (4, 0), (4, 0), (5, 1)]
