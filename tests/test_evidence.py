"""Evidence of contact: only what a person did counts, never what was sent to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.cli import cli
from compliance.events import MINIMISED, normalise_statuses, status_of
from compliance.policy.evaluate import evaluate_policy, schedule_raises
from compliance.policy.evidence import (
    AUTOMATIC,
    BLOCKED,
    COPY,
    RECEIVED_ONLY,
    REPLY,
    SENT,
    UNDELIVERED,
    classify,
)
from compliance.policy.model import Policy
from compliance.privacy import PersonLinker, Pseudonymiser
from tests.conftest import audit_args, ps_row, write_ps_export

POLICY: dict[str, Any] = {
    "id": "p",
    "title": "Test",
    "version": 1,
    "match": {"categories": ["escort-ads"]},
    "rules": [
        {"id": "person", "kind": "person", "window": "30d", "min_messages": 3, "min_days": 2,
         "severity": "high"},
        {"id": "cluster", "kind": "cluster", "window": "30d", "min_people": 3,
         "severity": "critical"},
    ],
}  # fmt: skip


def _policy(**match: Any) -> Policy:
    return Policy.model_validate({**POLICY, "match": {**POLICY["match"], **match}})


def _events(*rows: tuple[str, str, str, str, str, str]) -> pd.DataFrame:
    """(time, person, unit, direction, domain, status) rows matched as escort-ads."""
    frame = pd.DataFrame(
        [
            {
                "event_key": i,
                "timestamp": pd.Timestamp(ts, tz="UTC"),
                "day": ts[:10],
                "source": "t",
                "person": person,
                "org_unit": unit,
                "direction": direction,
                "domain": domain,
                "reg_domain": domain,
                "categories": "escort-ads",
                "feeds": "f",
                "status": status,
                "size": 1,
                "epoch": "-",
            }
            for i, (ts, person, unit, direction, domain, status) in enumerate(rows)
        ],
        columns=list(MINIMISED),
    )
    return frame.astype(MINIMISED)


SPAM_DAYS = ["2026-11-02", "2026-11-03", "2026-11-05", "2026-11-09", "2026-11-10", "2026-11-12"]


def _received_only(person: str = "victim", unit: str = "Sales") -> list[tuple[str, ...]]:
    """Ten inbound messages on six days from a listed site the person never wrote to."""
    times = [f"{d}T09:00:00" for d in SPAM_DAYS] + [f"{d}T15:00:00" for d in SPAM_DAYS[:4]]
    return [(t, person, unit, "inbound", "escort-ads.test", "delivered") for t in times]


@pytest.mark.parametrize("evidence", ["outbound", "conversation"])
def test_ten_received_messages_on_six_days_raise_no_person_alert(evidence: str) -> None:
    events = _events(*_received_only())
    assert evaluate_policy(_policy(evidence=evidence), events, None) == []


def test_received_only_never_contributes_to_a_cluster() -> None:
    # two people of Sales wrote to the site; a third only received from it
    sent = [
        ("2026-11-02T10:00:00", "a", "Sales", "outbound", "escort-ads.test", "delivered"),
        ("2026-11-04T10:00:00", "b", "Sales", "outbound", "escort-ads.test", "delivered"),
    ]
    events = _events(*sent, *_received_only("c", "Sales"))
    assert evaluate_policy(_policy(), events, None) == []
    # with a third sender the cluster counts three people, not four
    third = ("2026-11-06T10:00:00", "d", "Sales", "outbound", "escort-ads.test", "failed")
    [alert] = evaluate_policy(_policy(), _events(*sent, third, *_received_only("c")), None)
    assert (alert.rule, alert.people, alert.messages) == ("cluster", 3, 3)


def test_spam_never_counts_even_with_evidence_any() -> None:
    spam = [
        (f"{d}T09:00:00", "v", "Sales", "inbound", "escort-ads.test", "FilteredAsSpam")
        for d in SPAM_DAYS
    ]
    assert evaluate_policy(_policy(evidence="any"), _events(*spam), None) == []
    # evidence: any does count plain received mail (that is why lint warns about it)
    [alert] = evaluate_policy(_policy(evidence="any"), _events(*_received_only()), None)
    assert alert.messages == 10


def test_replies_within_the_window_are_part_of_a_conversation() -> None:
    rows = [
        ("2026-11-02T10:00:00", "a", "S", "outbound", "escort-ads.test", "delivered"),
        ("2026-11-02T11:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # reply
        ("2026-11-10T11:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # reply
        ("2026-11-20T11:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # too late
        ("2026-11-03T11:00:00", "a", "S", "inbound", "other-site.test", "delivered"),  # other site
        ("2026-11-01T11:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # before
        ("2026-11-03T11:00:00", "b", "S", "inbound", "escort-ads.test", "delivered"),  # not b's
        ("2026-11-04T11:00:00", "a", "S", "inbound", "escort-ads.test", "Quarantined"),
        ("2026-11-05T11:00:00", "a", "S", "outbound", "escort-ads.test", "Failed"),
        # a reply that could not be delivered never reached a: no part of the conversation
        ("2026-11-06T11:00:00", "a", "S", "inbound", "escort-ads.test", "Failed"),
    ]
    classes = classify(_events(*rows), 14).tolist()
    assert classes == [
        SENT, REPLY, REPLY, RECEIVED_ONLY, RECEIVED_ONLY, RECEIVED_ONLY, RECEIVED_ONLY,
        BLOCKED, UNDELIVERED, BLOCKED,
    ]  # fmt: skip
    events = _events(*rows)
    [conversation] = evaluate_policy(_policy(), events, None)
    assert (conversation.messages, conversation.days) == (4, 3)  # sent, 2 replies, failed
    # without the replies, two sent messages are below the rule's three
    assert evaluate_policy(_policy(evidence="outbound"), events, None) == []
    # with only delivered sent mail counted, the failed attempt drops out too: one
    # message of a's own and two replies are no repeated contact (min_sent 2 by default)
    assert evaluate_policy(_policy(sent="delivered"), events, None) == []
    # a rule may ask for one message of the person's own (policy lint refuses it)
    one = {**POLICY["rules"][0], "min_sent": 1}
    lenient = Policy.model_validate(
        {**POLICY, "match": {**POLICY["match"], "sent": "delivered"}, "rules": [one]}
    )
    [delivered] = evaluate_policy(lenient, events, None)
    assert (delivered.messages, delivered.days) == (3, 2)


def _unsubscribe(person: str = "p") -> list[tuple[str, ...]]:
    """One message to a site (an unsubscribe), then its newsletters on ten days."""
    rows = [("2026-11-01T09:00:00", person, "Sales", "outbound", "escort-ads.test", "delivered")]
    rows += [
        (f"2026-11-{d:02d}T07:00:00", person, "Sales", "inbound", "escort-ads.test", "delivered")
        for d in range(2, 12)
    ]
    return rows


def test_one_message_and_the_newsletters_after_it_raise_no_person_alert() -> None:
    """A stranger's check: one "stop mailing me" and the site's newsletters made ten
    messages on ten days, an alert; the site's mail confirms an exchange, it is not the
    person's repeated act."""
    events = _events(*_unsubscribe())
    assert evaluate_policy(_policy(), events, None) == []
    # a second message of their own, on another day, is repeated contact
    second = ("2026-11-08T12:00:00", "p", "Sales", "outbound", "escort-ads.test", "delivered")
    [alert] = evaluate_policy(_policy(), _events(*_unsubscribe(), second), None)
    assert (alert.person, alert.messages) == ("p", 12)
    # the window counts the person's own messages within it: two sent 40 days apart,
    # each followed by replies, are not two in one 30-day window
    late = [
        (f"2026-12-{d:02d}T07:00:00", "p", "Sales", direction, "escort-ads.test", "delivered")
        for d, direction in [(11, "outbound"), (12, "inbound"), (13, "inbound"), (14, "inbound")]
    ]
    assert evaluate_policy(_policy(), _events(*_unsubscribe(), *late), None) == []


def test_evidence_any_counts_received_mail_without_messages_of_the_person_s_own() -> None:
    """``evidence: any`` is the author's choice to count received mail (lint warns): the
    default number of one's own messages does not silently undo it."""
    [alert] = evaluate_policy(_policy(evidence="any"), _events(*_received_only()), None)
    assert alert.messages == 10


def _across_rotation(pseudo: Pseudonymiser, sides: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Each person's messages on the given sides of the 1 October quarterly rotation."""
    when = {"2026-Q3": "2026-09-28T10:00:00", "2026-Q4": "2026-10-02T10:00:00"}
    rows = [
        (when[epoch], pseudo.pseudonym(f"id-{name}", epoch), epoch)
        for name, epochs in sides.items()
        for epoch in epochs
    ]
    frame = _events(
        *[(t, p, "Sales", "outbound", "escort-ads.test", "delivered") for t, p, _ in rows]
    )
    return frame.assign(epoch=pd.Series([e for *_, e in rows], dtype="string"))


def test_a_person_is_one_person_across_key_epochs_in_cluster_counts() -> None:
    pseudo = Pseudonymiser(b"k" * 40, "quarterly")
    cluster_only = Policy.model_validate({**POLICY, "rules": [POLICY["rules"][1]]})
    linker = PersonLinker(pseudo, ["id-a", "id-b", "id-c"])
    # two people on both sides: four pseudonyms, never three people
    both = _across_rotation(pseudo, {"a": ("2026-Q3", "2026-Q4"), "b": ("2026-Q3", "2026-Q4")})
    assert evaluate_policy(cluster_only, both, None) == []
    assert evaluate_policy(cluster_only, both, None, people=linker.ids) == []
    # three people, one on each side and one on both: the linker counts them exactly;
    # without it, unlinkable pseudonyms count as the most seen in one epoch (two)
    three = _across_rotation(
        pseudo, {"a": ("2026-Q3",), "b": ("2026-Q4",), "c": ("2026-Q3", "2026-Q4")}
    )
    assert evaluate_policy(cluster_only, three, None) == []
    [alert] = evaluate_policy(cluster_only, three, None, people=linker.ids)
    assert (alert.people, alert.messages) == (3, 4)


def test_max_alerts_per_day_delays_and_never_drops() -> None:
    policy = Policy.model_validate({**POLICY, "max_alerts_per_day": 2})
    rows = []
    for n in range(5):
        for at in ("2026-11-02T10:00:00", "2026-11-03T10:00:00", "2026-11-03T11:00:00"):
            rows.append((at, f"p{n}", "S", "outbound", "escort-ads.test", "sent"))
    alerts = [a for a in evaluate_policy(policy, _events(*rows), None) if a.rule == "person"]
    assert len(alerts) == 5
    schedule_raises(alerts, policy.max_alerts_per_day, {"2026-11-03": 1})
    raised = sorted(a.raised_day for a in alerts)
    assert raised == ["2026-11-03", "2026-11-04", "2026-11-04", "2026-11-05", "2026-11-05"]
    assert all(a.trigger_day == "2026-11-03" for a in alerts)


def test_an_export_with_inbound_spam_raises_no_alert_end_to_end(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    # a real Get-MessageTrace export: u1 is sent ten messages from a listed site on six
    # days (some filtered as spam), and three colleagues receive the same campaign
    rows = []
    for n, (day, hour) in enumerate(
        [(d, 9) for d in (2, 3, 5, 9, 10, 12)] + [(d, 15) for d in (2, 3, 5, 9)]
    ):
        status = "FilteredAsSpam" if n % 3 == 0 else "Delivered"
        stamp = f"11/{day}/2026 {hour % 12 or 12}:00:00 {'AM' if hour < 12 else 'PM'}"
        rows.append(ps_row(stamp, f"deals{n}@escort-ads.test", "u1@corp.example", index=n,
                           status=status))  # fmt: skip
        rows.append(ps_row(stamp, "promo@escort-ads.test", f"u{2 + n % 3}@corp.example",
                           index=100 + n))  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    result = CliRunner().invoke(cli, audit_args(export, directory_csv, escort_feed))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["alerts"] == []


def _stamp(day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    """A Get-MessageTrace time (en-US culture) on a November 2026 day."""
    half = "AM" if hour < 12 else "PM"
    return f"11/{day}/2026 {hour % 12 or 12}:{minute:02d}:{second:02d} {half}"


def test_out_of_office_replies_to_a_spam_wave_raise_no_alert_end_to_end(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """A stranger's check: three colleagues away on leave answer a site's mailing from
    new addresses every day with their out-of-office reply, seconds later, in their own
    names; the trace has no field that marks it automatic. Before, each had up to ten
    "sent" messages and the site's mailing became "replies": person alerts and a critical
    team cluster on their unit."""
    rows, n = [], 0
    for day in range(2, 12):
        for person in (1, 2, 3):
            n += 1
            rows.append(ps_row(_stamp(day, 9, person), f"offer{n}@escort-ads.test",
                               f"u{person}@corp.example", index=n))  # fmt: skip
            rows.append(ps_row(_stamp(day, 9, person, 20), f"u{person}@corp.example",
                               f"offer{n}@escort-ads.test", index=1000 + n))  # fmt: skip
    export = write_ps_export(tmp_path / "trace.csv", rows)
    result = CliRunner().invoke(cli, audit_args(export, directory_csv, escort_feed))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["alerts"] == []
    # a person who writes to the site and answers its replies hours later is found
    rows += [
        ps_row(_stamp(d, 14), "u4@corp.example", "book@escort-ads.test", index=2000 + d)
        for d in (3, 6)
    ] + [
        ps_row(_stamp(d, 16), "book@escort-ads.test", "u4@corp.example", index=3000 + d)
        for d in (3, 6)
    ]
    export = write_ps_export(tmp_path / "trace.csv", rows)
    result = CliRunner().invoke(cli, audit_args(export, directory_csv, escort_feed))
    [alert] = json.loads(result.output)["alerts"]
    assert (alert["rule_id"], alert["messages"], alert["days"]) == ("repeated-contact", 4, 2)


def test_an_automatic_reply_is_no_evidence_and_opens_no_conversation() -> None:
    rows = [
        ("2026-11-02T09:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),
        ("2026-11-02T09:00:40", "a", "S", "outbound", "escort-ads.test", "delivered"),  # auto
        ("2026-11-03T09:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # no reply
        ("2026-11-03T09:02:00", "a", "S", "outbound", "escort-ads.test", "Failed"),  # auto
        ("2026-11-04T09:00:00", "a", "S", "inbound", "escort-ads.test", "FilteredAsSpam"),
        ("2026-11-04T09:00:30", "a", "S", "outbound", "escort-ads.test", "delivered"),  # auto
        ("2026-11-05T09:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),
        ("2026-11-05T09:02:01", "a", "S", "outbound", "escort-ads.test", "delivered"),  # typed
        ("2026-11-06T09:00:00", "a", "S", "inbound", "escort-ads.test", "delivered"),  # reply
        ("2026-11-06T09:00:10", "a", "S", "outbound", "other-site.test", "delivered"),  # other
    ]
    assert classify(_events(*rows), 14).tolist() == [
        RECEIVED_ONLY, AUTOMATIC, RECEIVED_ONLY, AUTOMATIC, BLOCKED, AUTOMATIC,
        RECEIVED_ONLY, SENT, REPLY, SENT,
    ]  # fmt: skip


def test_people_the_directory_does_not_list_are_no_team() -> None:
    """A stranger's check: forged or oddly spelt staff senders that the directory does not
    list (``unknown``) raised a critical team cluster, as if they were one team."""
    rows = [
        (f"2026-11-0{d}T10:00:00", person, "unknown", "outbound", "escort-ads.test", "delivered")
        for person in ("x1", "x2", "x3")
        for d in (2, 4, 6)
    ]
    alerts = evaluate_policy(_policy(), _events(*rows), None)
    assert sorted(a.rule_id for a in alerts) == ["person"] * 3  # each their own acts
    listed = [(t, p, "Sales", d, s, st) for t, p, _, d, s, st in rows]
    assert [a.org_unit for a in evaluate_policy(_policy(), _events(*listed), None)
            if a.rule_id == "cluster"] == ["Sales"]  # fmt: skip


def test_one_message_to_several_addresses_of_a_site_is_one_message() -> None:
    """A stranger's check: two messages on two days, one of them to three addresses of
    the site, made "four messages" and an alert under a rule asking for three."""
    at = "2026-11-02T10:00:00"
    rows = [
        (at, "a", "S", "outbound", "escort-ads.test", "Failed"),  # one recipient bounced
        (at, "a", "S", "outbound", "escort-ads.test", "delivered"),
        (at, "a", "S", "outbound", "escort-ads.test", "delivered"),
        ("2026-11-03T10:00:00", "a", "S", "outbound", "escort-ads.test", "delivered"),
        (at, "b", "S", "outbound", "escort-ads.test", "delivered"),  # another person's
        (at, "a", "S", "outbound", "other-site.test", "delivered"),  # another site
    ]
    assert classify(_events(*rows), 14).tolist() == [COPY, SENT, COPY, SENT, SENT, SENT]
    one_site = rows[:5]  # (every row of these events is matched as escort-ads)
    assert evaluate_policy(_policy(), _events(*one_site), None) == []
    third = ("2026-11-04T10:00:00", "a", "S", "outbound", "escort-ads.test", "Failed")
    [alert] = evaluate_policy(_policy(), _events(*one_site, third), None)
    assert (alert.person, alert.messages, alert.days) == ("a", 3, 3)


@pytest.mark.parametrize("seed", range(20))
def test_daily_limits_equal_the_plain_day_by_day_rule(seed: int) -> None:
    import datetime as dt
    import random

    rng = random.Random(seed)
    limit = rng.randint(1, 4)
    start = dt.date(2026, 11, 1)
    taken = {
        (start + dt.timedelta(rng.randint(0, 20))).isoformat(): rng.randint(0, limit)
        for _ in range(rng.randint(0, 8))
    }
    rows = []
    for n in range(rng.randint(1, 40)):
        day = (start + dt.timedelta(rng.randint(0, 15))).isoformat()
        rows += [(f"{day}T10:00:00", f"p{n}", "S", "outbound", "escort-ads.test", "sent")] * 3
    alerts = [a for a in evaluate_policy(_policy(), _events(*rows), None) if a.rule == "person"]
    schedule_raises(alerts, limit, taken)
    used = dict(taken)  # the rule as stated: each in turn takes the first day with room
    for alert in sorted(alerts, key=lambda a: (a.trigger_day, a.episode_key)):
        day = dt.date.fromisoformat(alert.trigger_day)
        while used.get(day.isoformat(), 0) >= limit:
            day += dt.timedelta(1)
        used[day.isoformat()] = used.get(day.isoformat(), 0) + 1
        assert alert.raised_day == day.isoformat()


def _sent(status: str, person: str = "a") -> list[tuple[str, str, str, str, str, str]]:
    return [
        (f"{d}T09:00:00", person, "Sales", "outbound", "escort-ads.test", status)
        for d in SPAM_DAYS[:3]
    ]


def test_a_policy_may_count_only_some_delivery_statuses() -> None:
    """`match.status` keeps the messages of the named normalised statuses: a policy that
    counts only delivered mail ignores attempts the gateway bounced or refused."""
    bounced, delivered = _sent("bounced", "a"), _sent("delivered", "b")
    events = _events(*bounced, *delivered)
    every = {a.person for a in evaluate_policy(_policy(), events, None) if a.person}
    assert every == {"a", "b"}  # sent: attempted (the default) counts an attempt
    only = evaluate_policy(_policy(status=["delivered"]), events, None)
    assert {a.person for a in only if a.person} == {"b"}
    with pytest.raises(ValueError, match="filtered_as_spam"):
        _policy(status=["spam"])  # a status is one of the seven names


@pytest.mark.parametrize(
    ("spelling", "status"),
    [
        ("Delivered", "delivered"), ("FilteredAsSpam", "filtered_as_spam"),
        ("Filtered As Spam", "filtered_as_spam"), ("Quarantined", "quarantined"),
        ("Failed", "bounced"), ("Pending", "deferred"), ("GettingStatus", "unknown"),
        ("Expanded", "delivered"), ("sent", "delivered"), ("deferred", "deferred"),
        ("bounced", "bounced"), ("expired", "bounced"), ("reject", "rejected"),
        ("DELIVER", "delivered"), ("FAIL", "bounced"), ("filtered_as_spam", "filtered_as_spam"),
        (None, "unknown"), ("", "unknown"), ("something else", "unknown"),
    ],
)  # fmt: skip
def test_every_source_spelling_maps_to_one_status(spelling: str | None, status: str) -> None:
    assert status_of(spelling) == status
    assert list(normalise_statuses(pd.Series([spelling, spelling], dtype="string"))) == [
        status,
        status,
    ]


# --- whose mail it is ---------------------------------------------------------------------


def _audit(tmp_path: Path, rows: list[list[str]], directory: Path, feed: Path) -> dict[str, Any]:
    export = write_ps_export(tmp_path / "trace.csv", rows)
    result = CliRunner().invoke(cli, audit_args(export, directory, feed))
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_bounces_from_system_mailboxes_are_nobodys_evidence(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """Bounces and notices to listed sites come from the mail system's mailboxes
    (postmaster, mailer-daemon, Exchange's MicrosoftExchange<32 hex>): four of them, each
    writing on five days, are no person alert and no team cluster; they are skipped and
    counted, and a person's own mail on the same days still counts."""
    system = [
        "postmaster@corp.example", "Mailer-Daemon@corp.example",
        "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@corp.example",
        "microsoftexchange0123456789abcdef0123456789abcdef@corp.example",
    ]  # fmt: skip
    rows = [
        ps_row(f"11/{day}/2026 10:00:00 AM", sender, f"x{day}@escort-ads.test", index=10 * day + n)
        for day in (2, 3, 4, 5, 6)
        for n, sender in enumerate(system)
    ]
    report = _audit(tmp_path, rows, directory_csv, escort_feed)
    assert report["alerts"] == [] and report["matched"] in (0, None)
    assert report["skipped_by_reason"] == {"system_mailbox": 20}
    own = [
        ps_row(f"11/{day}/2026 11:00:00 AM", "u1@corp.example", "book@escort-ads.test",
               index=900 + day)
        for day in (2, 3, 4)
    ]  # fmt: skip
    report = _audit(tmp_path, rows + own, directory_csv, escort_feed)
    assert [(a["rule_id"], a["messages"]) for a in report["alerts"]] == [("repeated-contact", 3)]
    # a system mailbox the directory gives to a person (send-as) is that person's: what
    # is sent as it counts, so that nobody can hide behind it
    listed = tmp_path / "listed.csv"
    listed.write_text(
        directory_csv.read_text().replace(
            'smtp:alias1@corp.example"', 'smtp:alias1@corp.example;smtp:postmaster@corp.example"'
        )
    )
    report = _audit(tmp_path, rows, listed, escort_feed)
    assert [(a["rule_id"], a["org_unit"], a["messages"]) for a in report["alerts"]] == [
        ("repeated-contact", "Sales/EMEA", 5)
    ]
    assert report["skipped_by_reason"] == {"system_mailbox": 15}


def test_every_spelling_of_one_mailbox_is_one_person(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """A gateway that logs display names, brackets or a sub-address (``u1+tag@``) names
    one mailbox several ways: one person, in their unit, never several "people" of an
    unknown unit that make a team cluster of one person's mail."""
    spellings = [
        "Test Person 1 <u1@corp.example>", '"Person, Test" <U1@corp.example>',
        "<u1@corp.example>", "u1+bookings@corp.example", " u1@CORP.example. ",
    ]  # fmt: skip
    rows = [
        ps_row(f"11/{2 + n}/2026 10:00:00 AM", sender, "book@escort-ads.test", index=n)
        for n, sender in enumerate(spellings)
    ]
    report = _audit(tmp_path, rows, directory_csv, escort_feed)
    alerts = [(a["rule_id"], a["org_unit"], a["messages"], a["people"]) for a in report["alerts"]]
    assert alerts == [("repeated-contact", "Sales/EMEA", 5, 1)]
    assert report["rejected_by_reason"] == {}
