"""A deployment for triage tests, shared by tests/test_triage.py and tests/test_alert_stats.py.

Its directory has Sales/EMEA, a unit with a hostile (formula) name and Legal; its week of
mail raises three person alerts (u1, u2, h1) and a cluster alert; helpers run it, list its
alerts and take triage steps as a named actor.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import Result

from tests.conftest import (
    APPROVERS,
    SHIPPED_POLICIES,
    as_actor,
    ps_row,
    write_config,
    write_ps_export,
)

EVIL = '=HYPERLINK("http://evil.example","x")'
# the directory splits units at "/": the hostile unit as stored and shown
EVIL_UNIT = '=HYPERLINK("http:/evil.example","x")'
GIVEN = ["Alice", "Bruno", "Chen", "Dora", "Emil", "Fatima", "Gregor", "Hana", "Ivo", "Jana"]
SURNAMES = ["Baker", "Long", "Young", "Miller", "Novak", "Okafor", "Peters", "Quinn"]


def write_directory(path: Path) -> Path:
    """Sales/EMEA (12: u1 is Alice Baker), the hostile unit (10, h1..h10), Legal (10; so
    that no unit is rolled up into the whole organisation)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            *("userPrincipalName", "displayName", "givenName", "surname", "mail", "id"),
            *("department", "proxyAddresses"),
        ]
    )
    n = 0
    for unit, size, prefix in (("Sales/EMEA", 12, "u"), (EVIL, 10, "h"), ("Legal", 10, "l")):
        for i in range(1, size + 1):
            n += 1
            given, surname = GIVEN[n % len(GIVEN)], SURNAMES[n % len(SURNAMES)]
            if (prefix, i) == ("u", 1):
                given, surname = "Alice", "Baker"
            address = f"{prefix}{i}@corp.example"
            writer.writerow(
                [
                    address, f"{given} {surname}", given, surname, address,
                    f"00000000-0000-4000-8000-{n:012d}", unit,
                    f"SMTP:{address};smtp:alias{prefix}{i}@corp.example",
                ]
            )  # fmt: skip
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def export_rows(start: int = 0) -> list[list[str]]:
    """u1 and u2 (Sales/EMEA) write to escort-ads.test on several days, u3 once: two
    person alerts and a cluster alert; h1 (the hostile unit) writes to velvet-club.test
    on two days: a third person alert."""
    plan = [
        ("u1", "escort-ads.test", (2, 4, 9)),
        ("u2", "escort-ads.test", (3, 5, 9)),
        ("u3", "escort-ads.test", (6,)),
        ("h1", "velvet-club.test", (3, 3, 10)),
    ]
    rows = []
    index = start
    for person, site, days in plan:
        for day in days:
            index += 1
            rows.append(
                ps_row(
                    f"11/{day}/2026 10:{index % 60:02d}:00 AM",
                    f"{person}@corp.example",
                    f"book@{site}",
                    index=index,
                )
            )
    for i in range(1, 6):  # ordinary traffic
        rows.append(
            ps_row(
                f"11/3/2026 11:0{i}:00 AM", f"u{i}@corp.example", "x@partner.example", index=900 + i
            )
        )
    return rows


def make_deployment(tmp_path: Path, feed: Path, rest: str = "", approvers: bool = True) -> Path:
    """A configured deployment (its own copy of the shipped policies) before any run."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    write_ps_export(inbox / "week1.csv", export_rows())
    shutil.copytree(SHIPPED_POLICIES, tmp_path / "policies")
    listed = f"approvers: [{', '.join(APPROVERS)}], " if approvers else ""
    return write_config(
        tmp_path / "compliance.yaml",
        write_directory(tmp_path / "directory.csv"),
        feed,
        f"""
        store: var/store.db
        reports: {{dir: reports, formats: [json]}}
        schedule: {{lock: var/run.lock}}
        accountability: {{{listed}identity: {{env: COMPLIANCE_ACTOR}}}}
        """
        + rest,
        policies="policies",
    )


def run_as_service(config: Path, today: str = "2026-11-20") -> None:
    """A scheduled `compliance run` as svc-compliance on ``today``; it must succeed."""
    result = as_actor("svc-compliance", config, "run", "--today", today)
    assert result.exit_code == 0, result.output


def listed_alerts(config: Path, *args: str) -> list[dict[str, Any]]:
    """`compliance alerts list` as lead, on 20 November 2026, as JSON rows (``args`` filter
    the list); it must succeed."""
    result = as_actor(
        "lead", config, "alerts", "list", "--format", "json", "--today", "2026-11-20", *args
    )
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)["alerts"]
    return rows


def alert_ids(config: Path) -> dict[str, int]:
    """Alert ids by a short name: u1, u2, h1 (person alerts by unit and order), cluster."""
    out: dict[str, int] = {}
    for row in listed_alerts(config):
        if row["rule_id"] == "team-cluster":
            out["cluster"] = row["id"]
        elif row["org_unit"] == EVIL_UNIT:
            out["h1"] = row["id"]
        else:  # u1 began on 2 November, u2 on the 3rd
            out["u1" if row["first_day"] == "2026-11-02" else "u2"] = row["id"]
    return out


def triage_step(config: Path, *args: str, actor: str = "lead") -> Result:
    """`compliance alerts triage` with ``args`` (ids, ``--to``, options), done by ``actor``."""
    return as_actor(actor, config, "alerts", "triage", *args)
