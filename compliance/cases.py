"""Cases and dual-approved re-identification.

A case is opened on one alert by one person (the requester) with a reason. A reveal
shows the identity behind that alert's pseudonym, and only that one, when at least
``min_approvals`` distinct approvers from the configured list, none of them the
requester, have approved the case; only the requester can perform it. Identities are
never stored: a reveal recomputes the pseudonyms of the directory's people with the
key of the alert's epoch and prints the one that matches. Every step, including
every refused reveal, is written to the audit log with the acting person and time.

A case can be opened only on a person alert that triage has taken up (``in_review`` or
``confirmed``), and only where ``accountability.approvers`` lists enough people other than
the requester for a reveal ever to be approved. Its reason may name no person: no mail
address, no full name or mailbox of the directory (:func:`compliance.triage.text_problem`).
Closing a case resolves its alert through a recorded, logged triage step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compliance.alerts import Alert
from compliance.directory import Directory
from compliance.errors import CaseError
from compliance.privacy import Pseudonymiser
from compliance.store import Case, Store
from compliance.triage import (
    PeopleNames,
    not_actionable,
    queue_day,
    resolve_for_case,
    text_problem,
)

#: Triage states in which a case may be opened on an alert.
CASE_STATES = ("in_review", "confirmed")
OUTCOMES = ("no-action", "advice", "disciplinary", "referred", "unfounded")


@dataclass(frozen=True)
class Identity:
    """Who is behind a pseudonym: printed once, never stored."""

    person_key: str
    addresses: list[str]
    org_unit: str


def _check_reason(text: str, what: str, names: PeopleNames | None = None) -> str:
    text = text.strip()
    if len(text) < 10:
        raise CaseError(f"the {what} must say why, in at least 10 characters")
    problem = text_problem(text, names, what)
    if problem:
        raise CaseError(problem)
    return text


def open_case(
    store: Store,
    alert_id: int,
    reason: str,
    actor: str,
    *,
    approvers: Sequence[str],
    min_approvals: int,
    names: PeopleNames | None = None,
    person: str | None = None,
) -> Case:
    """Open a case on one person alert that is ``in_review`` or ``confirmed``, where the
    configured ``approvers`` hold at least ``min_approvals`` people other than ``actor``;
    on a ring alert, a case is about one of its people (``person``, a pseudonym the ring
    alert lists), and each person of a ring needs a case and approvals of their own.

    The reason is checked against ``names`` (a person of the directory) and for mail
    addresses. Every refusal is logged as ``case.open.refused`` with why (never the reason's
    text).
    """
    try:
        reason = _check_reason(reason, "reason", names)
        with store.transaction():  # checked where nobody can move the alert meanwhile
            refusal = _open_refusal(store, alert_id, actor, approvers, min_approvals, person)
            if refusal:
                raise CaseError(refusal)
            case_id = store.cases.open(alert_id, actor, reason, person)
            details: dict[str, Any] = {"case": case_id, "alert": alert_id, "reason": reason}
            if person is not None:
                details["person"] = person
            store.audit.append(actor, "case.open", details)
    except CaseError as exc:
        store.audit.append(actor, "case.open.refused", {"alert": alert_id, "why": str(exc)})
        raise
    return get_case(store, case_id)


def ring_members(alert: Alert) -> list[str]:
    """The pseudonyms of a ring alert's people (every role), as stored for cases."""
    roles = alert.extra.get("ring_people") or {}
    return sorted({str(p) for people in roles.values() for p in people})


def _open_refusal(
    store: Store,
    alert_id: int,
    actor: str,
    approvers: Sequence[str],
    min_approvals: int,
    person: str | None = None,
) -> str | None:
    """Why a case may not be opened on the alert by ``actor``, or None."""
    alert = store.alerts.get(alert_id)
    others = sorted({a for a in approvers if a != actor})
    if alert is None:
        return f"there is no alert {alert_id}"
    if alert.rule == "ring":
        if person is None:
            return (
                f"alert {alert_id} is a ring: a case is about one of its people; name the "
                "pseudonym with --person (compliance alerts show lists them by role)"
            )
        if person not in ring_members(alert):
            return f"{person} is not one of the people of ring alert {alert_id}"
    elif person is not None and person != alert.person:
        return f"--person is for ring alerts; alert {alert_id} names its person already"
    elif alert.person is None:
        return f"alert {alert_id} is a cluster alert on an org unit: it names no person to reveal"
    if (why := not_actionable(alert, queue_day(store))) is not None:
        return why
    if not others:
        return (
            "a case cannot be opened where no approver is configured: "
            "accountability.approvers lists nobody other than the requester"
        )
    if len(others) < min_approvals:
        return (
            f"a case cannot be opened where fewer approvers are configured than a reveal "
            f"needs: accountability.approvers lists {len(others)} people other than the "
            f"requester, a reveal needs {min_approvals}"
        )
    if alert.state not in CASE_STATES:
        refusal = (
            f"alert {alert_id} is {alert.state}: a case can be opened only on an alert "
            f"{' or '.join(CASE_STATES)}"
        )
        if alert.state == "new":
            refusal += f" (take it up first: compliance alerts triage {alert_id} --to in_review)"
        return refusal
    return None


def get_case(store: Store, case_id: int) -> Case:
    """A case and its approvals."""
    case = store.cases.get(case_id)
    if case is None:
        raise CaseError(f"there is no case {case_id}")
    return case


def list_cases(store: Store) -> list[Case]:
    """Every case kept."""
    return [get_case(store, i) for i in store.cases.ids()]


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
        store.audit.append(actor, "case.approve.refused", {"case": case_id, "why": refusal})
        raise CaseError(refusal)
    with store.transaction():
        store.cases.approve(case_id, actor)
        store.audit.append(actor, "case.approve", {"case": case_id})
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
        store.audit.append(actor, "case.reveal.refused", {"case": case_id, "why": refusal})
        raise CaseError(refusal)
    pseudonym, epoch = store.alerts.pseudonym(case.alert_id)
    epochs = [epoch]
    if case.person is not None:  # one person of a ring: of whichever epoch they were seen in
        pseudonym, epochs = case.person, [epoch, *store.cases.epochs()]
    people: dict[str, tuple[list[str], str]] = {}
    for address, (person_key, unit) in directory.people.items():
        people.setdefault(person_key, ([], unit))[0].append(address)
    match = next(
        (
            key
            for key in people
            for e in dict.fromkeys(epochs)
            if pseudonymiser.pseudonym(key, e) == pseudonym
        ),
        None,
    )
    details: dict[str, Any] = {
        "case": case_id,
        "alert": case.alert_id,
        "approvals": valid,
        "found": match is not None,
    }
    store.audit.append(actor, "case.reveal", details)
    if match is None:
        raise CaseError(
            f"the pseudonym of alert {case.alert_id} matches nobody in the directory given "
            f"({directory.size} people): the person may have left or been renamed without a "
            "stable id; give the directory of that time with --directory"
        )
    addresses, unit = people[match]
    return Identity(match, sorted(addresses), unit)


def close(store: Store, case_id: int, outcome: str, actor: str) -> Case:
    """Close a case with its outcome, and resolve its alert through a triage step (from
    whatever state it has; recorded and logged with the reason ``case N closed: OUTCOME``)."""
    case = get_case(store, case_id)
    if case.state != "open":
        raise CaseError(f"case {case_id} is already {case.state}")
    if outcome not in OUTCOMES:
        raise CaseError(f"the outcome must be one of {', '.join(OUTCOMES)}")
    with store.transaction():
        store.cases.close(case_id, actor, outcome)
        store.audit.append(actor, "case.close", {"case": case_id, "outcome": outcome})
        resolve_for_case(store, case.alert_id, case_id, outcome, actor)
    return get_case(store, case_id)
