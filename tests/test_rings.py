"""Ring rules: people linked by internal mail who contact the same listed site, found in
scheduled runs through the real CLI and store; internal mail kept only as keyed pair
digests of people with evidence, and purged after the rings' window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from compliance.cases import approve, open_case, reveal
from compliance.errors import CaseError
from compliance.policy.rules.ring import RingRule
from compliance.privacy import Pseudonymiser
from compliance.store import Store
from connectors.directory import load_directory
from tests.conftest import (
    SHIPPED_POLICIES,
    TEST_KEY,
    as_actor,
    ps_row,
    run_cli,
    store_db,
    write_config,
    write_ps_export,
)

RING_POLICY = """\
id: rings
title: Rings around escort-advertising sites
description: People linked by internal mail who contact the same listed site.
version: 1
status: active
owner: ethics-office
match: {evidence: outbound, sent: attempted, categories: [escort-ads]}
rules:
  - {id: ring, kind: ring, window: 30d, min_size: 3, min_introduced: 1, severity: high}
privacy: {min_group_size: 10}
"""

ESCORT = "book@escort-ads.test"
VELVET = "hello@velvet-club.test"


def _mail() -> list[list[str]]:
    """A ring of five on escort-ads.test: u1 first (2nd), u2 (3rd 10:00), u5 (3rd 16:00);
    u2 mails u1 (who knew the site) and u3, u4 on the 4th, who start on the 5th and 6th;
    u3 mails u5 (who knew it) on the 7th. A pair on velvet-club.test: u9 writes on the
    2nd and mails u10, who starts on the 4th. u1 mails u8 (never contacts a site); u6 mails
    u7 (neither has evidence: never kept)."""
    spec = [
        ("11/2/2026 10:00:00 AM", "u1", ESCORT), ("11/3/2026 10:00:00 AM", "u2", ESCORT),
        ("11/3/2026 4:00:00 PM", "u5", ESCORT), ("11/4/2026 9:00:00 AM", "u2", "u1"),
        ("11/4/2026 9:05:00 AM", "u2", "u3"), ("11/4/2026 9:10:00 AM", "u2", "u4"),
        ("11/5/2026 10:00:00 AM", "u3", ESCORT), ("11/6/2026 10:00:00 AM", "u4", ESCORT),
        ("11/7/2026 9:00:00 AM", "u3", "u5"), ("11/7/2026 11:00:00 AM", "u1", ESCORT),
        ("11/2/2026 11:00:00 AM", "u9", VELVET), ("11/3/2026 9:00:00 AM", "u9", "u10"),
        ("11/4/2026 11:00:00 AM", "u10", VELVET), ("11/5/2026 9:00:00 AM", "u1", "u8"),
        ("11/5/2026 9:30:00 AM", "u6", "u7"), ("11/6/2026 9:30:00 AM", "u6", "u7"),
    ]  # fmt: skip
    rows = []
    for i, (when, who, to) in enumerate(spec):
        recipient = to if "@" in to else f"{to}@corp.example"
        rows.append(ps_row(when, f"{who}@corp.example", recipient, index=i))
    return rows


@pytest.fixture
def deployment(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "trace.csv", _mail())
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rings.yaml").write_text(RING_POLICY, encoding="utf-8")
    assert SHIPPED_POLICIES.exists()
    config = write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\n",
        policies="policies",
    )
    code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    return config


def _pseudonym_at(config: Path, ts: str) -> str:
    with store_db(config) as db:
        (person,) = db.execute("SELECT person FROM events WHERE ts = ?", (ts,)).fetchone()
    return str(person)


def test_ring_of_five_with_one_introducer(deployment: Path) -> None:
    with store_db(deployment) as db:
        rows = db.execute(
            "SELECT domains, people, ring, person, episode_key FROM alerts WHERE rule = 'ring'"
        ).fetchall()
    assert len(rows) == 1  # the pair on velvet-club.test is never a ring
    domains, people, ring_text, person, key = rows[0]
    assert json.loads(domains) == ["escort-ads.test"]
    assert person is None and key == "ring|escort-ads.test"
    ring = json.loads(ring_text)
    assert people == ring["size"] == 5
    assert ring["roles"] == {"first": 1, "introducer": 1, "member": 3}
    u1 = _pseudonym_at(deployment, "2026-11-02T10:00:00Z")
    u2 = _pseudonym_at(deployment, "2026-11-03T10:00:00Z")
    u5 = _pseudonym_at(deployment, "2026-11-03T16:00:00Z")
    u3 = _pseudonym_at(deployment, "2026-11-05T10:00:00Z")
    u4 = _pseudonym_at(deployment, "2026-11-06T10:00:00Z")
    assert ring["people"] == {
        "first": [u1],
        "introducer": [u2],
        "member": sorted([u3, u4, u5]),
    }


def test_a_ring_of_two_is_refused_and_never_found() -> None:
    with pytest.raises(ValidationError, match="min_size"):
        RingRule.model_validate({"kind": "ring", "window": 30, "severity": "high", "min_size": 2})
    with pytest.raises(ValidationError, match="min_introduced"):
        RingRule.model_validate(
            {"kind": "ring", "window": 30, "severity": "high", "min_introduced": 0}
        )


def test_internal_mail_kept_only_as_digests_of_people_with_evidence(deployment: Path) -> None:
    with store_db(deployment) as db:
        edges = db.execute("SELECT day, pair_digest, messages FROM internal_edges").fetchall()
        pseudonyms = {str(p) for (p,) in db.execute("SELECT DISTINCT person FROM events")}
    # u2->u1, u2->u3, u2->u4, u3->u5, u9->u10, u1->u8; never u6->u7 (no evidence)
    assert len(edges) == 6
    assert sorted(d for d, _, _ in edges) == [
        "2026-11-03", "2026-11-04", "2026-11-04", "2026-11-04", "2026-11-05", "2026-11-07",
    ]  # fmt: skip
    assert all(isinstance(digest, int) and n == 1 for _, digest, n in edges)
    raw = (deployment.parent / "var" / "store.db").read_bytes()
    assert b"u6@corp.example" not in raw and b"u7@corp.example" not in raw
    assert pseudonyms  # and no row of edges names one
    assert not any(str(digest) in pseudonyms for _, digest, _ in edges)


def test_reruns_change_nothing_and_old_edges_are_purged(deployment: Path) -> None:
    with store_db(deployment) as db:
        before = db.execute("SELECT * FROM alerts").fetchall()
        edges_before = db.execute("SELECT * FROM internal_edges ORDER BY 1, 2").fetchall()
    code, output = run_cli(deployment, "2026-11-10")  # nothing new to read: exit 4
    assert code == 4 and "0 new alert(s), 0 updated" in output, output
    with store_db(deployment) as db:
        assert db.execute("SELECT * FROM alerts").fetchall() == before
        assert db.execute("SELECT * FROM internal_edges ORDER BY 1, 2").fetchall() == edges_before
    # a day past the window: every edge is older than 30 days
    code, output = run_cli(deployment, "2026-12-08")
    assert code == 4, output
    with store_db(deployment) as db:
        assert db.execute("SELECT count(*) FROM internal_edges").fetchone()[0] == 0


def test_a_case_on_a_ring_reveals_one_person_with_approvals_of_its_own(
    deployment: Path, directory_csv: Path
) -> None:
    with deployment.open("a") as config:
        config.write(
            "accountability: {approvers: [lead, dpo, works-council], "
            "identity: {env: COMPLIANCE_ACTOR}}\n"
        )
    with store_db(deployment) as db:
        (alert_id,) = db.execute("SELECT id FROM alerts WHERE rule = 'ring'").fetchone()
    taken = as_actor("lead", deployment, "alerts", "triage", str(alert_id), "--to", "in_review")
    assert taken.exit_code == 0, taken.output
    u3 = _pseudonym_at(deployment, "2026-11-05T10:00:00Z")
    approvers = ["lead", "dpo", "works-council"]
    with Store.open(deployment.parent / "var" / "store.db") as store:
        with pytest.raises(CaseError, match="--person"):
            open_case(store, alert_id, "the ring's introducer pattern", "lead",
                      approvers=approvers, min_approvals=2)  # fmt: skip
        with pytest.raises(CaseError, match="not one of the people"):
            open_case(store, alert_id, "the ring's introducer pattern", "lead",
                      approvers=approvers, min_approvals=2, person="p-0000")  # fmt: skip
        case = open_case(store, alert_id, "the ring's introducer pattern", "lead",
                         approvers=approvers, min_approvals=2, person=u3)  # fmt: skip
        assert case.person == u3
        approve(store, case.id, "dpo", approvers)
        approve(store, case.id, "works-council", approvers)
        identity = reveal(
            store, case.id, "lead", approvers, 2, Pseudonymiser(TEST_KEY.encode()),
            load_directory(directory_csv),
        )  # fmt: skip
        entries = [e.as_dict() for e in store.audit.entries()]
    # only u3 is revealed: the other four of the ring need cases of their own
    assert identity.addresses == ["alias3@corp.example", "u3@corp.example"]
    opened = [e for e in entries if e["action"] == "case.open"]
    assert [e["details"]["person"] for e in opened] == [u3]


def test_the_ring_cli_lists_the_people_by_role_and_opens_a_case_on_one(
    deployment: Path,
) -> None:
    with deployment.open("a") as config:
        config.write(
            "accountability: {approvers: [lead, dpo, works-council], "
            "identity: {env: COMPLIANCE_ACTOR}}\n"
        )
    with store_db(deployment) as db:
        (alert_id,) = db.execute("SELECT id FROM alerts WHERE rule = 'ring'").fetchone()
    u2 = _pseudonym_at(deployment, "2026-11-03T10:00:00Z")
    shown = as_actor("lead", deployment, "alerts", "show", str(alert_id))
    assert shown.exit_code == 0, shown.output
    assert f"introducer: {u2}" in shown.output
    as_actor("lead", deployment, "alerts", "triage", str(alert_id), "--to", "in_review")
    refused = as_actor("lead", deployment, "case", "open", str(alert_id), "--reason",
                       "the introducer of a ring")  # fmt: skip
    assert refused.exit_code == 8 and "--person" in refused.output
    opened = as_actor("lead", deployment, "case", "open", str(alert_id), "--person", u2,
                      "--reason", "the introducer of a ring")  # fmt: skip
    assert opened.exit_code == 0, opened.output
    assert f"on alert {alert_id} ({u2})" in opened.output
