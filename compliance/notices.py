"""Deterrence notices: a reminder of the acceptable-use policy to the person behind a
pseudonym, sent once and never twice, seen by no human.

A policy opts in with ``notice:``; the configuration's ``notices:`` names the mail
channel, the organisation, help contacts, the daily limit and the works council's
approval, without which nothing is decided or sent. When a scheduled run raises a NEW
alert of a person rule the notice covers (never a draft, a cluster or an audit), at most
once per ``every`` days per person and policy:

1. :func:`decide`: the arm (``notice``, or ``holdout`` for the configured share of people,
   by a keyed hash of the pseudonym: stable across runs, picked by nobody) is recorded in
   the store under an idempotency key (policy, alert) with an audit entry, before anything
   is sent. A rerun finds the key and decides nothing again.
2. :func:`send_due`: each ``pending`` notice is rendered from its template, which
   receives only the policy's title and description, the organisation's name and the
   help contacts; the recipient is found from the pseudonym through the directory and
   the key, here, used for this one message and forgotten. The row is marked ``sending``
   (committed), the channel called, then the row is marked ``sent`` with the receipt's
   status code (never its queue id or message id: :func:`unlinkable`) and
   the message's hash, and ``notice.sent`` is audit-logged: the notice, alert, policy,
   template and hashes, never the recipient. A failure worth retrying waits (5 minutes,
   doubling, at most a day); a failure keeps only the error's kind and status code,
   never the server's words. A notice a stopped run left ``sending`` may have reached
   the person (no mail server drops a second copy): it is given up, logged, and never
   sent again.

An alert held back by ``max_alerts_per_day`` brings its notice once it is raised (the job
decides on every alert stored since its last decision, up to the first still waiting).

:func:`effect` is the "did it work" figure: the share of people with further evidence
within 7, 30 and 90 days after the decision, per arm.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from compliance.alerts import Alert
from compliance.config import Config, NoticeSettings
from compliance.delivery import Message
from compliance.directory import Directory
from compliance.errors import ComplianceError, RetriableDeliveryError
from compliance.outbox import FIRST_RETRY, LONGEST_RETRY, channel
from compliance.policy.evaluate import evidence_of
from compliance.policy.lint import NOTICE_ENV, NOTICE_HTML_ENV, NoticeTemplate, notice_template
from compliance.policy.loader import LoadedPolicy
from compliance.privacy import Pseudonymiser
from compliance.store import Store
from compliance.store.notices import NoticeRow

log = logging.getLogger(__name__)

#: The follow-up windows of the effect figure, in days after the notice was decided.
EFFECT_WINDOWS = (7, 30, 90)
#: Attempts after which a notice that keeps failing is given up (``failed``).
MAX_ATTEMPTS = 8


# --- the holdout -------------------------------------------------------------------------


def holdout_draws(key: bytes, policy: str, pseudonyms: Sequence[str]) -> np.ndarray:
    """A number in [0, 1) per pseudonym, from a keyed hash of the policy and the
    pseudonym: the same in every run, unknowable without the key (so nobody can choose
    who is held out), and different under another key."""
    secret = hmac.new(key, b"notice-holdout\x00" + policy.encode(), hashlib.sha256).digest()
    distinct = {
        p: int.from_bytes(hashlib.blake2b(p.encode(), key=secret, digest_size=8).digest(), "big")
        / 2.0**64
        for p in dict.fromkeys(pseudonyms)
    }
    return np.array([distinct[p] for p in pseudonyms], dtype=np.float64)


def arms(key: bytes, policy: str, pseudonyms: Sequence[str], holdout: float) -> list[str]:
    """``holdout`` or ``notice`` per pseudonym: about ``holdout`` of people are held out."""
    draws = holdout_draws(key, policy, pseudonyms)
    return ["holdout" if d < holdout else "notice" for d in draws.tolist()]


# --- deciding ----------------------------------------------------------------------------


def notice_policies(policies: Iterable[LoadedPolicy]) -> list[LoadedPolicy]:
    """The active policies whose notice is enabled for at least one person rule."""
    return [lp for lp in policies if lp.policy.status == "active" and lp.policy.notice_rules()]


def blocked_why(settings: NoticeSettings | None) -> str | None:
    """Why notices may not be sent under this configuration, or None."""
    if settings is None:
        return "the configuration has no notices: section (channel, works-council approval)"
    if settings.works_council_approval is None:
        return "notices.works_council_approval is not recorded in the configuration"
    return None


def notice_key(policy: str, alert_id: int) -> str:
    """The idempotency key of the notice of one episode (an alert) under one policy."""
    return f"notice|{policy}|alert:{alert_id}"


@dataclass
class Decided:
    """What :func:`decide` recorded."""

    notice: int = 0
    holdout: int = 0
    skipped_recent: int = 0


def decide(
    store: Store,
    config: Config,
    policies: Sequence[LoadedPolicy],
    key: bytes,
    alerts: Sequence[Alert],
    today: dt.date,
    actor: str,
    run_id: int | None,
) -> Decided:
    """Record the arm of every new person alert a notice covers (see the module doc)."""
    out = Decided()
    chosen = {lp.policy.id: lp for lp in notice_policies(policies)}
    if not chosen:
        return out
    why = blocked_why(config.notices)
    if why is not None:
        log.warning("deterrence notices are off: %s (policies: %s)", why, ", ".join(chosen))
        return out
    settings = config.notices
    assert settings is not None
    wanted = [
        a
        for a in alerts
        if a.policy in chosen
        and not a.draft
        and a.person is not None
        and a.id is not None
        and a.rule_id in chosen[a.policy].policy.notice_rules()
    ]
    by_policy: dict[str, list[Alert]] = {}
    for alert in wanted:
        by_policy.setdefault(alert.policy, []).append(alert)
    for policy_id, found in by_policy.items():
        loaded = chosen[policy_id]
        notice = loaded.policy.notice
        assert notice is not None
        template = notice_template(loaded)
        people = [str(a.person) for a in found]
        arm_of = dict(zip(people, arms(key, policy_id, people, notice.holdout), strict=True))
        for alert in sorted(found, key=lambda a: int(a.id or 0)):
            person = str(alert.person)
            last = store.notices.last_day(policy_id, person)
            if last is not None and (today - dt.date.fromisoformat(last)).days < notice.every:
                out.skipped_recent += 1
                continue
            _record(store, settings, loaded, template, alert, arm_of[person], today, actor, run_id)
            if arm_of[person] == "notice":
                out.notice += 1
            else:
                out.holdout += 1
    if out.notice or out.holdout or out.skipped_recent:
        log.info(
            "notices decided: %d to send, %d held out, %d skipped (one sent recently)",
            out.notice,
            out.holdout,
            out.skipped_recent,
        )
    return out


def _record(
    store: Store,
    settings: NoticeSettings,
    loaded: LoadedPolicy,
    template: NoticeTemplate,
    alert: Alert,
    arm: str,
    today: dt.date,
    actor: str,
    run_id: int | None,
) -> None:
    assert alert.id is not None
    pseudonym, epoch = store.alerts.pseudonym(alert.id)
    if pseudonym is None:
        return  # not a person's alert
    policy_id = loaded.policy.id
    with store.transaction():
        notice_id = store.notices.record(
            notice_key(policy_id, alert.id),
            policy_id,
            alert.id,
            pseudonym,
            epoch,
            today.isoformat(),
            arm,
            (template.name, template.sha256),
            settings.channel if arm == "notice" else None,
            run_id,
        )
        if notice_id is None:
            return  # decided before (a rerun)
        store.audit.append(
            actor,
            "notice.decided",
            {
                "notice": notice_id,
                "alert": alert.id,
                "policy": policy_id,
                "arm": arm,
                "template": template.name,
                "template_sha256": template.sha256,
            },
        )


# --- sending -----------------------------------------------------------------------------


def render(template: NoticeTemplate, loaded: LoadedPolicy, settings: NoticeSettings) -> Message:
    """The notice's subject and parts (without a recipient or key): only the policy's
    title and description, the organisation's name and the help contacts go in."""
    values: dict[str, Any] = {
        "policy_title": loaded.policy.title,
        "policy_description": " ".join(loaded.policy.description.split()),
        "organisation": settings.organisation_name,
        "help_contacts": list(settings.help_contacts),
    }
    text = NOTICE_ENV.from_string(template.text).render(values).strip() + "\n"
    html = None
    if template.html is not None:
        html = NOTICE_HTML_ENV.from_string(template.html).render(values)
    return Message("", settings.subject, text, html, reply_to=settings.reply_to)


_STATUS = re.compile(r"(?:HTTP )?[1-5][0-9]{2}")


def unlinkable(receipt: str) -> str:
    """What a notice keeps of a channel's receipt: its status code alone (``250``,
    ``HTTP 202``), or ``accepted``. The rest (``queued as 4Z9…``, a Message-ID, a
    request id) is found again in the mail server's or the service's own logs beside the
    recipient's address: kept beside an alert's id, it would name the person behind the
    alert to anyone who reads those logs, with no case and no approvals."""
    found = _STATUS.match(receipt.strip())
    return found.group(0) if found else "accepted"


def message_sha256(message: Message) -> str:
    """A hash of what a notice said (subject and parts; never the recipient)."""
    digest = hashlib.sha256()
    for part in (message.subject, message.text, message.html or ""):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def addresses_of(
    directory: Directory, pseudonymiser: Pseudonymiser, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The mail address of each wanted (pseudonym, epoch): each directory person's pseudonym
    in those epochs is computed once and compared, as a reveal does; a person's address is
    the first the directory lists for them (its ``mail``). Held in memory, by the caller,
    only while it sends."""
    wanted = set(wanted)
    if not wanted:
        return {}
    first: dict[str, str] = {}
    for address, (person_key, _unit) in directory.people.items():
        first.setdefault(person_key, address)
    epochs = {epoch for _p, epoch in wanted}
    found: dict[tuple[str, str], str] = {}
    for person_key, address in first.items():
        for epoch in epochs:
            pair = (pseudonymiser.pseudonym(person_key, epoch), epoch)
            if pair in wanted:
                found[pair] = address
    return found


_STATUS = re.compile(r"\b((?:HTTP )?[2-5]\d\d)\b")


def sanitised(exc: BaseException) -> str:
    """What is kept of a failed send: its kind and a status code, never its words (a
    server may quote the recipient)."""
    code = _STATUS.search(str(exc)) if isinstance(exc, ComplianceError) else None
    return type(exc).__name__ + (f" {code.group(1)}" if code else "")


@dataclass
class Sent:
    """What one pass of :func:`send_due` did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0  # over the daily limit


def send_due(
    store: Store,
    config: Config,
    policies: Sequence[LoadedPolicy],
    directory: Directory,
    pseudonymiser: Pseudonymiser,
    actor: str,
    today: dt.date,
    now: dt.datetime | None = None,
) -> Sent:
    """Send every notice that is due, up to the daily limit (see the module doc)."""
    out = Sent()
    settings = config.notices
    if settings is None or blocked_why(settings) is not None:
        return out
    now = now or dt.datetime.now(dt.UTC)
    due = store.notices.due(now.isoformat(timespec="seconds"))
    for row in [r for r in due if r.state == "sending"]:
        # a run stopped while handing it to the server: it may have reached the person, and
        # no mail server drops a second copy; a reminder is never sent twice, so it is
        # given up (and counted) rather than sent again
        details = {"notice": row.id, "alert": row.alert_id, "policy": row.policy}
        _give_up(store, actor, row, details, INTERRUPTED, out)
    due = [r for r in due if r.state != "sending"]
    if not due:
        return out
    room = max(settings.max_per_day - store.notices.sent_on(today.isoformat()), 0)
    out.waiting = max(len(due) - room, 0)
    due = due[:room]
    by_id = {lp.policy.id: lp for lp in policies}
    addresses = addresses_of(directory, pseudonymiser, ((n.person, n.epoch) for n in due))
    try:
        delivery = channel(config, settings.channel)
        for row in due:
            _send_one(store, settings, by_id, delivery, addresses, row, actor, today, now, out)
    finally:
        addresses.clear()
    if out.waiting:
        log.info("%d notice(s) wait for the daily limit (notices.max_per_day)", out.waiting)
    return out


def _send_one(
    store: Store,
    settings: NoticeSettings,
    policies: Mapping[str, LoadedPolicy],
    delivery: Any,
    addresses: Mapping[tuple[str, str], str],
    row: NoticeRow,
    actor: str,
    today: dt.date,
    now: dt.datetime,
    out: Sent,
) -> None:
    details: dict[str, Any] = {"notice": row.id, "alert": row.alert_id, "policy": row.policy}
    loaded = policies.get(row.policy)
    address = addresses.get((row.person, row.epoch))
    why = None
    if loaded is None or loaded.policy.notice is None:
        why = "its policy is no longer configured with a notice"
    elif address is None:
        why = "nobody in the directory has this pseudonym (the person may have left)"
    if why is not None or loaded is None:
        _give_up(store, actor, row, details, why or "", out)
        return
    try:
        template = notice_template(loaded)
        rendered = render(template, loaded, settings)
    except Exception as exc:  # a template changed since, and broken
        why = f"the template cannot be rendered ({sanitised(exc)})"
        _give_up(store, actor, row, details, why, out)
        return
    message = Message(
        row.key,
        rendered.subject,
        rendered.text,
        rendered.html,
        recipient=address,
        reply_to=rendered.reply_to,
    )
    digest = message_sha256(message)
    store.notices.sending(row.id)
    try:
        receipt = delivery.deliver(message)
    except Exception as exc:
        error = sanitised(exc)
        retriable = not isinstance(exc, ComplianceError) or isinstance(exc, RetriableDeliveryError)
        if not retriable or row.attempts + 1 >= MAX_ATTEMPTS:
            _give_up(store, actor, row, details, error, out)
            return
        wait = min(FIRST_RETRY * 2 ** min(row.attempts, 16), LONGEST_RETRY)
        when = (now + wait).isoformat(timespec="seconds")
        with store.transaction():
            store.notices.retry_at(row.id, when, error)
            store.audit.append(actor, "notice.retry", {**details, "why": error, "at": when})
        log.warning("notice %d will be retried at %s (%s)", row.id, when, error)
        out.retrying += 1
        return
    with store.transaction():
        store.notices.sent(row.id, today.isoformat(), unlinkable(receipt), digest)
        store.audit.append(
            actor,
            "notice.sent",
            {
                **details,
                "template": template.name,
                "template_sha256": template.sha256,
                "message_sha256": digest,
            },
        )
    log.info("notice %d sent (policy %s, alert %d)", row.id, row.policy, row.alert_id)
    out.sent += 1


#: Why a notice left ``sending`` by a stopped run is not sent again.
INTERRUPTED = "interrupted while being sent: it may have reached the person; never sent twice"


def _give_up(
    store: Store, actor: str, row: NoticeRow, details: dict[str, Any], why: str, out: Sent
) -> None:
    with store.transaction():
        store.notices.failed(row.id, why)
        store.audit.append(actor, "notice.failed", {**details, "why": why})
    log.warning("notice %d failed: %s", row.id, why)
    out.failed += 1


def process(
    store: Store,
    config: Config,
    policies: Sequence[LoadedPolicy],
    directory: Directory,
    pseudonymiser: Pseudonymiser,
    key: bytes,
    alerts: Sequence[Alert],
    today: dt.date,
    actor: str,
    run_id: int | None,
) -> tuple[Decided, Sent]:
    """One run's notices: decide on the new alerts, then send what is due."""
    decided = decide(store, config, policies, key, alerts, today, actor, run_id)
    sent = send_due(store, config, policies, directory, pseudonymiser, actor, today)
    return decided, sent


# --- did it work -------------------------------------------------------------------------


def effect(
    rows: Sequence[NoticeRow],
    events: pd.DataFrame,
    policies: Sequence[LoadedPolicy],
    last_day: str,
    windows: Sequence[int] = EFFECT_WINDOWS,
) -> list[dict[str, Any]]:
    """Per policy with notices, window and arm: the people whose follow-up window had
    passed by ``last_day`` (``people``: each person's first decision only), and how many of
    them had further evidence under the policy within that many days after the decision
    (``continued``). Unsuppressed counts: the reports suppress and add noise."""
    out: list[dict[str, Any]] = []
    if not rows:
        return out
    decided = pd.DataFrame(
        {
            "policy": [r.policy for r in rows],
            "person": [r.person for r in rows],
            "day": [r.day for r in rows],
            "arm": [r.arm for r in rows],
        }
    )
    decided = decided.sort_values("day", kind="stable").drop_duplicates(["policy", "person"])
    decided["n"] = _day_numbers(decided["day"])
    last = _day_numbers(pd.Series([last_day]))[0]
    by_id = {lp.policy.id: lp.policy for lp in policies}
    for policy_id, mine in decided.groupby("policy", sort=True):
        policy = by_id.get(str(policy_id))
        if policy is None:
            continue
        people = set(mine["person"])
        subset = events.loc[events["person"].isin(people)] if not events.empty else events
        evidence = evidence_of(policy, subset) if not subset.empty else subset
        later = pd.DataFrame({"person": evidence.get("person", pd.Series(dtype=str))})
        later["e"] = _day_numbers(evidence["day"]) if not evidence.empty else []
        joined = mine.merge(later.drop_duplicates(), on="person", how="left")
        gap = joined["e"] - joined["n"]
        for window in windows:
            complete = mine.loc[mine["n"] + window <= last]
            hits = joined.loc[(gap >= 1) & (gap <= window), "person"].unique()
            for arm in ("notice", "holdout"):
                group = complete.loc[complete["arm"] == arm, "person"]
                out.append(
                    {
                        "policy": str(policy_id),
                        "window": window,
                        "arm": arm,
                        "people": len(group),
                        "continued": int(group.isin(hits).sum()),
                    }
                )
    return out


def _day_numbers(days: pd.Series) -> np.ndarray:
    """ISO days as day numbers (vectorised)."""
    if days.empty:
        return np.array([], dtype=np.int64)
    stamps = pd.to_datetime(days.astype(str), format="%Y-%m-%d")
    return np.asarray(stamps.to_numpy().astype("datetime64[D]").astype(np.int64))
