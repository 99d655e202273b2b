"""Cases and dual-approved re-identification.

A case is opened on one alert by one person (the requester) with a reason. A reveal
shows the identity behind that alert's pseudonym, and only that one, when at least
``min_approvals`` distinct approvers from the configured list, none of them the
requester, have approved the case; only the requester can perform it. Identities are
never stored: a reveal recomputes the pseudonyms of the directory's people with the
key of the alert's epoch and prints the one that matches. Every step, including
every refused reveal, is written to the audit log with the acting person and time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compliance.errors import CaseError
from compliance.privacy import Pseudonymiser
from compliance.store import Store, utcnow
from connectors.directory import Directory

_ADDRESS = re.compile(r"[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+")
OUTCOMES = ("no-action", "advice", "disciplinary", "referred", "unfounded")


@dataclass(frozen=True)
class Case:
    """A case as stored (no identity in it)."""

    id: int
    alert_id: int
    opened_by: str
    opened_at: str
    reason: str
    state: str
    approvers: list[str]
    outcome: str | None = None


@dataclass(frozen=True)
class Identity:
    """Who is behind a pseudonym: printed once, never stored."""

    person_key: str
    addresses: list[str]
    org_unit: str


def _check_reason(text: str, what: str) -> str:
    text = text.strip()
    if len(text) < 10:
        raise CaseError(f"the {what} must say why, in at least 10 characters")
    if _ADDRESS.search(text):
        raise CaseError(
            f"the {what} must not contain a mail address: refer to the alert, not to a person"
        )
    return text


def open_case(store: Store, alert_id: int, reason: str, actor: str) -> Case:
    """Open a case on one person alert."""
    reason = _check_reason(reason, "reason")
    row = store.conn.execute("SELECT subject FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise CaseError(f"there is no alert {alert_id}")
    if row[0] is None:
        raise CaseError(
            f"alert {alert_id} is a cluster alert on an org unit: it names no person to reveal"
        )
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO cases (alert_id, opened_by, opened_at, reason) VALUES (?, ?, ?, ?)",
            (alert_id, actor, utcnow(), reason),
        )
        case_id = int(cur.lastrowid or 0)
        store.log(actor, "case.open", {"case": case_id, "alert": alert_id, "reason": reason})
    return get_case(store, case_id)


def get_case(store: Store, case_id: int) -> Case:
    """A case and its approvals."""
    row = store.conn.execute(
        "SELECT id, alert_id, opened_by, opened_at, reason, state, outcome FROM cases WHERE id = ?",
        (case_id,),
    ).fetchone()
    if row is None:
        raise CaseError(f"there is no case {case_id}")
    approvers = [
        str(r[0])
        for r in store.conn.execute(
            "SELECT approver FROM case_approvals WHERE case_id = ? ORDER BY at", (case_id,)
        )
    ]
    return Case(row[0], row[1], row[2], row[3], row[4], row[5], approvers, row[6])


def list_cases(store: Store) -> list[Case]:
    """Every case kept."""
    ids = [int(r[0]) for r in store.conn.execute("SELECT id FROM cases ORDER BY id")]
    return [get_case(store, i) for i in ids]


def approve(store: Store, case_id: int, actor: str, approvers: list[str]) -> Case:
    """Record one approval; only listed approvers, never the requester, once each."""
    case = get_case(store, case_id)
    refusal = None
    if case.state != "open":
        refusal = f"case {case_id} is {case.state}"
    elif actor not in approvers:
        refusal = f"{actor} is not on the approvers list of the configuration"
    elif actor == case.opened_by:
        refusal = "the requester cannot approve their own case"
    elif actor in case.approvers:
        refusal = f"{actor} has already approved case {case_id}"
    if refusal:
        store.log(actor, "case.approve.refused", {"case": case_id, "why": refusal})
        raise CaseError(refusal)
    with store.transaction() as conn:
        conn.execute("INSERT INTO case_approvals VALUES (?, ?, ?)", (case_id, actor, utcnow()))
        store.log(actor, "case.approve", {"case": case_id})
    return get_case(store, case_id)


def reveal(
    store: Store,
    case_id: int,
    actor: str,
    approvers: list[str],
    min_approvals: int,
    pseudonymiser: Pseudonymiser,
    directory: Directory,
) -> Identity:
    """The identity behind the case's alert, if the case allows it (every try is logged)."""
    case = get_case(store, case_id)
    valid = sorted({a for a in case.approvers if a in approvers and a != case.opened_by})
    refusal = None
    if case.state != "open":
        refusal = f"case {case_id} is {case.state}"
    elif actor != case.opened_by:
        refusal = f"only the requester ({case.opened_by}) can reveal on case {case_id}"
    elif len(valid) < min_approvals:
        refusal = (
            f"case {case_id} has {len(valid)} valid approval(s) of the {min_approvals} needed "
            "(distinct listed approvers, not the requester)"
        )
    if refusal:
        store.log(actor, "case.reveal.refused", {"case": case_id, "why": refusal})
        raise CaseError(refusal)
    subject, epoch = store.conn.execute(
        "SELECT subject, epoch FROM alerts WHERE id = ?", (case.alert_id,)
    ).fetchone()
    people: dict[str, tuple[list[str], str]] = {}
    for address, (person_key, unit) in directory.people.items():
        people.setdefault(person_key, ([], unit))[0].append(address)
    match = next(
        (key for key in people if pseudonymiser.pseudonym(key, epoch) == subject),
        None,
    )
    details: dict[str, Any] = {
        "case": case_id,
        "alert": case.alert_id,
        "approvals": valid,
        "found": match is not None,
    }
    store.log(actor, "case.reveal", details)
    if match is None:
        raise CaseError(
            f"the pseudonym of alert {case.alert_id} matches nobody in the directory given "
            f"({directory.size} people): the person may have left or been renamed without a "
            "stable id; give the directory of that time with --directory"
        )
    addresses, unit = people[match]
    return Identity(match, sorted(addresses), unit)


def close(store: Store, case_id: int, outcome: str, actor: str) -> Case:
    """Close a case with its outcome."""
    case = get_case(store, case_id)
    if case.state != "open":
        raise CaseError(f"case {case_id} is already {case.state}")
    if outcome not in OUTCOMES:
        raise CaseError(f"the outcome must be one of {', '.join(OUTCOMES)}")
    with store.transaction() as conn:
        conn.execute(
            "UPDATE cases SET state = 'closed', closed_by = ?, closed_at = ?, outcome = ? "
            "WHERE id = ?",
            (actor, utcnow(), outcome, case_id),
        )
        conn.execute("UPDATE alerts SET state = 'closed' WHERE id = ?", (case.alert_id,))
        store.log(actor, "case.close", {"case": case_id, "outcome": outcome})
    return get_case(store, case_id)
