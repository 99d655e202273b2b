"""Works-council lint, approved exceptions, the published policy schema and `policy new`.

Every check is run through the real command line on a policy written here, once where it
must fire and once where it must stay silent; the checks that need the configuration run
against a deployment made by :func:`tests.conftest.write_config` (its directory holds
Sales/EMEA 12, Sales/EMEA/North 3 and Legal 2 people; its feed provides escort-ads).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

from compliance.cli import cli
from compliance.errors import PolicyError
from compliance.policy.fields import DAYS_PATTERN, days
from compliance.policy.lint import CHECKS, Approval, LintContext, enforce
from compliance.policy.loader import load_policy_file
from compliance.policy.model import SCHEMA_FILE, schema_text
from compliance.yamlfile import parse_yaml
from tests.conftest import (
    SHIPPED_POLICIES,
    as_actor,
    ps_row,
    store_db,
    write_config,
    write_ps_export,
)
from tests.markdown import sections
from tests.test_policy import VALID

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = SHIPPED_POLICIES / "escort-ads.yaml"

#: A policy every check passes (no error, no warning).
SAFE = """\
id: p1
title: Test
version: 1
match:
  categories: [escort-ads]
  domains: [partner-site.example]
scope:
  org_units: []
  exclude_org_units: []
rules:
  - id: person-rule
    kind: person
    window: 30d
    min_messages: 3
    min_days: 2
    severity: high
  - id: cluster-rule
    kind: cluster
    window: 30d
    min_people: 3
    severity: medium
privacy:
  min_group_size: 5
suppress: 30d
tests:
  - name: two days raise an alert
    feed: {escort-ads: [escort-ads.test]}
    events:
      - {day: 2026-11-02, person: a, domain: escort-ads.test, count: 2}
      - {day: 2026-11-05, person: a, domain: escort-ads.test}
    expect:
      - {kind: person, person: a}
"""


def _policy(tmp_path: Path, text: str = SAFE, name: str = "p.yaml") -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _variant(*changes: tuple[str, str]) -> str:
    text = SAFE
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _lines(text: str, needle: str) -> list[int]:
    """The lines (1-based) of ``text`` holding ``needle``."""
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line]


def _line(text: str, needle: str) -> int:
    """The first line (1-based) of ``text`` holding ``needle``."""
    return _lines(text, needle)[0]


def _lint(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["policy", "lint", *map(str, args)])
    return result.exit_code, result.output


def _found(output: str, severity: str = "error") -> set[str]:
    """The check ids of the open findings of a severity printed by `policy lint`."""
    return {
        m.group(1)
        for line in output.splitlines()
        if not line.startswith("excepted:")
        and (m := re.search(rf": {severity} (WC\d{{3}}) ", line))
    }


@pytest.fixture
def config(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    """A deployment (corp.example; a directory; an escort-ads feed; the policies folder)."""
    return write_config(
        tmp_path / "compliance.yaml",
        directory_csv,
        escort_feed,
        "store: var/store.db\n",
        policies=tmp_path / "policies",
    )


# --- the safe policy and the shipped one ------------------------------------------------


def test_the_safe_policy_passes_every_check(tmp_path: Path, config: Path) -> None:
    path = _policy(tmp_path)
    code, output = _lint(path, "--config", config)
    assert code == 0, output
    assert "0 error(s), 0 warning(s), 0 excepted" in output
    assert f"ok: {path} (p1 v1)" in output
    assert "not run" not in output  # with a config and a directory every check ran


def test_the_shipped_policy_passes_with_no_error(tmp_path: Path, config: Path) -> None:
    for args in ((SHIPPED,), (SHIPPED, "--config", config)):
        code, output = _lint(*args)
        assert code == 0, output
        assert not _found(output, "error") and not _found(output, "warning"), output
        assert "0 error(s)" in output


def test_without_a_config_the_config_checks_are_reported_as_not_run(tmp_path: Path) -> None:
    code, output = _lint(_policy(tmp_path))
    assert code == 0, output
    not_run = [line for line in output.splitlines() if line.startswith("not run")]
    assert not_run == ["not run: WC005, WC007, WC008 (needs the configuration: run with --config)"]


# --- one test per check: it fires when it should, and only then --------------------------


@pytest.mark.parametrize(
    ("changes", "needle", "message"),
    [
        ((("min_messages: 3\n    min_days: 2", "min_messages: 1\n    min_days: 1"),),
         "min_messages: 1", "min_messages is 1"),
        ((("    min_days: 2\n", "    min_days: 1\n"), ("min_messages: 3", "min_messages: 2")),
         "min_days: 1", "min_days is 1"),
        ((("    min_messages: 3\n    min_days: 2\n", ""),), "- id: person-rule",
         "min_messages is 1 (not set: that is the default)"),
        ((("    min_days: 2\n", "    min_days: 2\n    min_sent: 1\n"),), "min_sent: 1",
         "min_sent is 1: one message of the person's own, with a site's replies or "
         "newsletters after it, would single them out; ask for at least 2"),
    ],
)  # fmt: skip
def test_wc001_a_person_rule_on_one_message_or_one_day(
    tmp_path: Path, changes: tuple[tuple[str, str], ...], needle: str, message: str
) -> None:
    text = _variant(*changes)
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    assert code == 3, output
    assert f"{path}:{_line(text, needle)}: error WC001 rule 'person-rule': {message}" in output
    assert _found(output) == {"WC001"}


def test_wc001_is_silent_at_two_messages_on_two_days(tmp_path: Path) -> None:
    text = _variant(("min_messages: 3", "min_messages: 2"))
    code, output = _lint(_policy(tmp_path, text))
    assert code == 0 and "WC001" not in output, output


@pytest.mark.parametrize(
    ("window", "fires"), [("6d", True), ("3", True), ("7d", False), ("1w", False)]
)
def test_wc002_a_window_shorter_than_a_week(tmp_path: Path, window: str, fires: bool) -> None:
    text = _variant(("window: 30d", f"window: {window}"))
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    if fires:
        assert code == 3, output
        line = _line(text, f"window: {window}")
        assert f"{path}:{line}: error WC002 rule 'person-rule': window is" in output
        assert _found(output) == {"WC002"}
    else:
        assert code == 0 and "WC002" not in output, output


@pytest.mark.parametrize(("suppress", "fires"), [("14d", True), ("30d", False), (None, False)])
def test_wc003_a_suppression_shorter_than_a_window(
    tmp_path: Path, suppress: str | None, fires: bool
) -> None:
    text = _variant(("suppress: 30d\n", f"suppress: {suppress}\n" if suppress else ""))
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    if fires:
        assert code == 3, output
        line = _line(text, "suppress:")
        assert f"{path}:{line}: error WC003 rule 'person-rule': suppress (14 days)" in output
        assert f"{path}:{line}: error WC003 rule 'cluster-rule'" in output
        assert _found(output) == {"WC003"}
    else:
        assert code == 0 and "WC003" not in output, output


@pytest.mark.parametrize(("size", "fires"), [(4, True), (1, True), (5, False)])
def test_wc004_a_min_group_size_below_five(tmp_path: Path, size: int, fires: bool) -> None:
    text = _variant(("min_group_size: 5", f"min_group_size: {size}"))
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    assert (code == 3) is fires, output
    if fires:
        line = _line(text, "min_group_size")
        assert f"{path}:{line}: error WC004 privacy.min_group_size: {size} is below 5" in output
        assert _found(output) == {"WC004"}


@pytest.mark.parametrize(
    ("units", "excluded", "message"),
    [
        ("[Legal]", "[]", "org_units[0]: 'Legal' holds 2 people"),
        ("[Sales/EMEA, Sales/EMEA/North]", "[]", "org_units[1]: 'Sales/EMEA/North' holds 3 people"),
        ("[Sales/EMAE]", "[]", "org_units[0]: 'Sales/EMAE' holds no one in the directory"),
        # Sales/EMEA with North below it holds 15; without North, 12
        ("[Sales/EMEA]", "[Sales/EMEA/North]", None),
        ("[Sales, Legal]", "[Legal]", None),
        # the whole organisation less Sales and Ops leaves Legal's 2
        ("[]", "[Sales, Ops]", "exclude_org_units: the exclusions leave 2 people in scope"),
        ("[]", "[Legal]", None),
    ],
)  # fmt: skip
def test_wc005_a_scope_narrower_than_min_group_size(
    tmp_path: Path, config: Path, units: str, excluded: str, message: str | None
) -> None:
    text = _variant(
        ("  org_units: []\n  exclude_org_units: []\n",
         f"  org_units: {units}\n  exclude_org_units: {excluded}\n"),
    )  # fmt: skip
    path = _policy(tmp_path, text)
    code, output = _lint(path, "--config", config)
    if message is None:
        assert code == 0 and "WC005" not in output, output
        return
    assert code == 3, output
    assert _found(output) == {"WC005"}
    field = message.split(":")[0].split("[")[0]
    assert f"{path}:{_line(text, field + ':')}: error WC005 scope.{message}" in output


def test_wc005_is_not_run_without_a_directory(tmp_path: Path, escort_feed: Path) -> None:
    config = tmp_path / "compliance.yaml"
    config.write_text(
        "organisation: {domains: [corp.example]}\n"
        "sources: [{name: exports, type: exchange, path: inbox}]\n"
        f"feeds: [{{path: {escort_feed}, category: escort-ads}}]\n"
        "policies: [policies]\n"
    )
    text = _variant(("  org_units: []\n", "  org_units: [Legal]\n"))
    code, output = _lint(_policy(tmp_path, text), "--config", config)
    assert code == 0, output
    assert "not run: WC005 (the configuration has no directory: scope not checked)" in output


@pytest.mark.parametrize(
    ("domain", "provider"),
    [("gmail.com", "gmail.com"), ("mx1.gmail.com", "gmail.com"), ("hotmail.co.uk", "hotmail.*"),
     ("mail.yahoo.co.jp", "yahoo.*"), ("web.de", "web.de"), ("qq.com", "qq.com")],
)  # fmt: skip
def test_wc006_a_large_mail_provider_as_extra_domain(
    tmp_path: Path, domain: str, provider: str
) -> None:
    text = _variant(
        ("domains: [partner-site.example]", f"domains: [partner-site.example, {domain}]")
    )
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    assert code == 3, output
    assert (
        f"{path}:{_line(text, 'domains:')}: error WC006 match.domains[1]: {domain} is a large "
        f"mail provider ({provider})"
    ) in output
    assert _found(output) == {"WC006"}


@pytest.mark.parametrize("domain", ["notgmail.example", "gmail.com.example", "hotmail-fans.test"])
def test_wc006_compares_registrable_domains_not_strings(tmp_path: Path, domain: str) -> None:
    text = _variant(("domains: [partner-site.example]", f"domains: [{domain}]"))
    code, output = _lint(_policy(tmp_path, text))
    assert code == 0 and "WC006" not in output, output


@pytest.mark.parametrize(
    ("domain", "fires"),
    [("corp.example", True), ("shop.corp.example", True), ("corp-shop.example", False)],
)
def test_wc007_a_domain_the_organisation_owns(
    tmp_path: Path, config: Path, domain: str, fires: bool
) -> None:
    text = _variant(("domains: [partner-site.example]", f"domains: [{domain}]"))
    path = _policy(tmp_path, text)
    code, output = _lint(path, "--config", config)
    if fires:
        assert code == 3, output
        assert (
            f"{path}:{_line(text, 'domains:')}: error WC007 match.domains[0]: {domain} is the "
            "organisation's own domain (corp.example)"
        ) in output
        assert _found(output) == {"WC007"}
    else:
        assert code == 0 and "WC007" not in output, output


def test_wc007_an_extra_domain_that_contains_an_internal_one(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", directory_csv, escort_feed)
    config.write_text(config.read_text().replace("[corp.example]", "[mail.corp.example]"))
    text = _variant(("domains: [partner-site.example]", "domains: [corp.example]"))
    code, output = _lint(_policy(tmp_path, text), "--config", config)
    assert code == 3 and _found(output) == {"WC007"}, output


def test_wc008_a_category_no_configured_feed_provides(tmp_path: Path, config: Path) -> None:
    text = _variant(("categories: [escort-ads]", "categories: [escort-ads, datng]"))
    path = _policy(tmp_path, text)
    code, output = _lint(path, "--config", config)
    assert code == 3, output
    assert (
        f"{path}:{_line(text, 'categories:')}: error WC008 match.categories[1]: no configured "
        "feed provides 'datng' (feeds provide: escort-ads)"
    ) in output
    assert _found(output) == {"WC008"}


def test_wc008_uses_the_categories_a_feed_maps_to(tmp_path: Path, directory_csv: Path) -> None:
    """A UT1-style folder feed: its folder names are its categories."""
    feed = tmp_path / "ut1"
    for category in ("adult", "dating"):
        (feed / category).mkdir(parents=True)
        (feed / category / "domains").write_text(f"{category}-site.test\n")
    config = write_config(tmp_path / "compliance.yaml", directory_csv, feed)
    config.write_text(
        config.read_text().replace(f"{{path: {feed}, category: escort-ads}}", f"{{path: {feed}}}")
    )
    ok = _variant(("categories: [escort-ads]", "categories: [adult, dating]"))
    code, output = _lint(_policy(tmp_path, ok), "--config", config)
    assert code == 0 and "WC008" not in output, output
    code, output = _lint(_policy(tmp_path, SAFE, "q.yaml"), "--config", config)
    assert code == 3 and "no configured feed provides 'escort-ads'" in output, output


@pytest.mark.parametrize(("people", "fires"), [(2, True), (3, False)])
def test_wc009_a_cluster_of_two(tmp_path: Path, people: int, fires: bool) -> None:
    text = _variant(("min_people: 3", f"min_people: {people}"))
    path = _policy(tmp_path, text)
    code, output = _lint(path)
    if fires:
        assert code == 3, output
        line = _line(text, "min_people")
        assert f"{path}:{line}: error WC009 rule 'cluster-rule': min_people is 2" in output
        assert _found(output) == {"WC009"}
    else:
        assert code == 0 and "WC009" not in output, output


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (_variant(("  categories: [escort-ads]\n",
                   "  categories: [escort-ads]\n  evidence: any\n")), "WC010"),
        (_variant(("  categories: [escort-ads]\n",
                   "  categories: [escort-ads]\n  direction: inbound\n")), "WC011"),
        (SAFE.split("tests:\n")[0], "WC012"),
    ],
)  # fmt: skip
def test_warnings_never_fail_a_policy(tmp_path: Path, text: str, check: str) -> None:
    code, output = _lint(_policy(tmp_path, text))
    assert code == 0, output
    assert _found(output, "warning") == {check}
    assert not _found(output, "error")
    code, output = _lint(_policy(tmp_path, SAFE))
    assert check not in output


# --- approved exceptions ---------------------------------------------------------------

EXCEPTION = (
    "lint_exceptions:\n"
    "  - policy: p1\n"
    "    check: {check}\n"
    "    {rule}approved_by: [works-council, dpo]\n"
    "    approved_on: 2026-11-20\n"
    "    reason: a one-week trade fair, approved for that week only\n"
)


def _with_exception(config: Path, check: str, rule: str | None = None) -> int:
    """Append one approved exception to the config; the line it starts on."""
    text = config.read_text()
    config.write_text(
        text + EXCEPTION.format(check=check, rule=f"rule: {rule}\n    " if rule else "")
    )
    return len(text.splitlines()) + 2


def test_an_approved_exception_turns_an_error_into_an_excepted_line(
    tmp_path: Path, config: Path
) -> None:
    text = _variant(("window: 30d", "window: 5d"), ("suppress: 30d", "suppress: 30d"))
    path = _policy(tmp_path, text)
    _with_exception(config, "WC002", "person-rule")
    code, output = _lint(path, "--config", config)
    assert code == 0, output
    assert (
        f"excepted: {path}:{_line(text, 'window: 5d')}: error WC002 rule 'person-rule': window "
        "is 5 day(s)"
    ) in output
    assert (
        "(approved by works-council, dpo on 2026-11-20: a one-week trade fair, approved for "
        "that week only)"
    ) in output
    assert "0 error(s), 0 warning(s), 1 excepted" in output
    # without the configuration there is no exception: the error stands
    code, output = _lint(path)
    assert code == 3 and "excepted" not in output.split("\n")[0]


def test_an_exception_covers_only_its_rule_and_check(tmp_path: Path, config: Path) -> None:
    text = _variant(("window: 30d", "window: 5d"), ("window: 30d", "window: 5d"))
    path = _policy(tmp_path, text)
    _with_exception(config, "WC002", "person-rule")
    code, output = _lint(path, "--config", config)
    assert code == 3, output
    cluster_window = _lines(text, "window: 5d")[1]
    assert f"{path}:{cluster_window}: error WC002 rule 'cluster-rule'" in output
    assert "1 error(s), 0 warning(s), 1 excepted" in output
    # without a rule it covers every rule of the policy for that check
    config.write_text(config.read_text().replace("    rule: person-rule\n", ""))
    code, output = _lint(path, "--config", config)
    assert code == 0 and "0 error(s), 0 warning(s), 2 excepted" in output, output


def test_an_exception_that_matches_nothing_is_a_stale_warning(tmp_path: Path, config: Path) -> None:
    line = _with_exception(config, "WC002", "person-rule")
    code, output = _lint(_policy(tmp_path), "--config", config)
    assert code == 0, output
    assert (
        f"{config}:{line}: warning WC014 lint_exceptions WC002: matches nothing: policy 'p1' "
        "rule 'person-rule' has no WC002 finding"
    ) in output
    config.write_text(config.read_text().replace("check: WC002", "check: WC999"))
    code, output = _lint(_policy(tmp_path), "--config", config)
    assert "names no lint check (WC999" in output


def test_an_exception_for_a_check_that_did_not_run_is_not_stale(
    tmp_path: Path, escort_feed: Path
) -> None:
    config = tmp_path / "compliance.yaml"
    config.write_text(
        "organisation: {domains: [corp.example]}\n"
        "sources: [{name: exports, type: exchange, path: inbox}]\n"
        f"feeds: [{{path: {escort_feed}, category: escort-ads}}]\n"
        "policies: [policies]\n"
    )
    _with_exception(config, "WC005")
    code, output = _lint(_policy(tmp_path), "--config", config)
    assert code == 0 and "WC014" not in output, output


def test_the_job_refuses_an_open_error_and_returns_the_exceptions_in_effect(
    tmp_path: Path,
) -> None:
    bad = load_policy_file(_policy(tmp_path, _variant(("min_people: 3", "min_people: 2"))))
    context = LintContext(org_domains=["corp.example"], feed_categories={"escort-ads"})
    with pytest.raises(PolicyError) as refused:
        enforce([bad], context, [])
    [problem] = refused.value.problems
    assert problem.line == _line(_variant(("min_people: 3", "min_people: 2")), "min_people")
    assert "error WC009 rule 'cluster-rule': min_people is 2" in problem.message
    approval = Approval(
        "p1", "WC009", None, ("works-council",), dt.date(2026, 11, 20), "a test of the path"
    )
    result = enforce([bad], context, [approval])
    [excepted] = result.excepted
    assert excepted.check == "WC009" and excepted.approval == approval
    assert excepted.as_dict()["excepted"]["approved_by"] == ["works-council"]
    # an approval naming a policy that is not configured is reported, never silent
    other = Approval("gone", "WC009", None, ("x",), approval.approved_on, "policy removed")
    result = enforce([bad], context, [approval, other])
    assert [f.check for f in result.open if f.policy == "gone"] == ["WC014"]


# --- output formats and the catalogue ------------------------------------------------------


def test_json_output_for_ci_and_editors(tmp_path: Path, config: Path) -> None:
    text = _variant(("min_people: 3", "min_people: 2")).split("tests:\n")[0]
    path = _policy(tmp_path, text)
    code, output = _lint(path, "--format", "json")
    assert code == 3
    report = json.loads(output)
    assert report["errors"] == 1 and report["warnings"] == 1 and report["excepted"] == 0
    assert report["not_run"] == ["WC005", "WC007", "WC008"]
    by_check = {f["check"]: f for f in report["findings"]}
    assert by_check["WC009"] == {
        "path": str(path),
        "line": _line(text, "min_people"),
        "severity": "error",
        "check": "WC009",
        "title": CHECKS["WC009"].title,
        "policy": "p1",
        "rule": "cluster-rule",
        "subject": "rule 'cluster-rule'",
        "message": by_check["WC009"]["message"],
        "excepted": None,
    }
    assert by_check["WC012"]["severity"] == "warning"
    code, output = _lint(path, "--format", "json", "--config", config)
    assert json.loads(output)["not_run"] == []


def test_json_output_of_an_invalid_policy(tmp_path: Path) -> None:
    path = _policy(tmp_path, SAFE.replace("window: 30d", "window: 30x", 1))
    code, output = _lint(path, "--format", "json")
    assert code == 3
    [finding] = json.loads(output)["findings"]
    assert (finding["line"], finding["subject"], finding["check"]) == (
        _line(SAFE, "window: 30d"),
        "rules[0].window",
        None,
    )


def test_checks_and_explain(tmp_path: Path) -> None:
    code, output = _lint("--checks")
    assert code == 0
    assert [line.split()[0] for line in output.splitlines()] == list(CHECKS)
    assert "WC005  error    a scoped org unit has fewer people than min_group_size" in output
    code, output = _lint("--explain", "wc003")
    assert code == 0
    assert output.startswith("WC003 (error): suppress is shorter than a rule's window")
    assert "check: WC003" in output  # how to record an exception
    code, output = _lint("--explain", "WC999")
    assert code == 2 and "no such check" in output
    code, output = _lint()
    assert code == 2 and "give at least one policy" in output


def test_every_check_is_documented() -> None:
    """docs/POLICY_LINT.md has a section per check: its id, title and severity, what it
    refuses, why, and how an exception is recorded."""
    doc = (ROOT / "docs" / "POLICY_LINT.md").read_text(encoding="utf-8")
    found = {title.split()[0]: (title, "\n".join(lines)) for title, lines in sections(doc) if title}
    for check in CHECKS.values():
        assert check.id in found, f"docs/POLICY_LINT.md has no section {check.id}"
        title, body = found[check.id]
        assert check.title in title, (check.id, title)
        assert f"Severity: {check.severity}" in body, check.id
        assert "Exception:" in body, check.id
    assert set(found) >= set(CHECKS)
    documented = {t for t in found if re.fullmatch(r"WC\d{3}", t)}
    assert documented == set(CHECKS), "a section documents a check that does not exist"


# --- the published JSON Schema ----------------------------------------------------------


def _as_json(path_or_text: Path | str) -> Any:
    """A policy as an editor sees it: YAML read into JSON values (dates as text)."""
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    data, _ = parse_yaml(text, "p.yaml")
    return json.loads(json.dumps(data, default=str))


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)  # what yaml-language-server reads
    return jsonschema.Draft7Validator(schema)


def test_the_published_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "regenerate it: compliance policy schema --out compliance/policy/policy.schema.json"
    )
    result = CliRunner().invoke(cli, ["policy", "schema"])
    assert result.output == schema_text()


def test_the_schema_accepts_every_valid_policy(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    assert CliRunner().invoke(cli, ["policy", "new", str(new)]).exit_code == 0
    texts = [SHIPPED.read_text(), VALID, SAFE, new.read_text()]
    texts += [_variant(("window: 30d", "window: 4w"), ("suppress: 30d", "suppress: 30"))]
    texts += [_variant(("  categories: [escort-ads]\n", "  reply_window: 2w\n"))]
    validator = _validator()
    for text in texts:
        load_policy_file(_policy(tmp_path, text))  # valid for the loader...
        errors = [e.message for e in validator.iter_errors(_as_json(text))]
        assert not errors, (text[:40], errors)  # ...and for the schema


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("window: 30d", "window: 30x", "window: 30x"),
        ("title: Test", "titel: Test", "'titel' was unexpected"),
        ("    min_days: 2", "    min_dayz: 2", "typo in a rule"),
        ("suppress: 30d", "suppress: 400d", "more than a year"),
        ("suppress: 30d", "suppress: 53w", "more than a year in weeks"),
        ("min_people: 3", "min_people: three", "not a number"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(
    tmp_path: Path, old: str, new: str, why: str
) -> None:
    text = _variant((old, new))
    with pytest.raises(PolicyError):
        load_policy_file(_policy(tmp_path, text))
    assert list(_validator().iter_errors(_as_json(text))), why


@example("366d")
@example("367d")
@example("52w")
@example("53w")
@example("0d")
@example(" 0030 d ")
@example(366)
@example(367)
@example(0)
@example("1w")
@example("\t7\td\t")
@given(
    st.one_of(
        st.integers(-5, 400),
        st.text(alphabet=" \t0123456789dwx", max_size=7),
        st.from_regex(r"\A[0-9]{1,4}[dw]\Z"),
    )
)
def test_the_days_pattern_accepts_exactly_what_the_loader_accepts(value: int | str) -> None:
    try:
        days(value)
        loads = True
    except ValueError:
        loads = False
    schema = {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 366},
            {"type": "string", "pattern": DAYS_PATTERN},
        ]
    }
    assert jsonschema.Draft7Validator(schema).is_valid(value) is loads, value


def test_the_shipped_policy_names_the_schema_for_editors() -> None:
    first = SHIPPED.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (SHIPPED.parent / first.split("$schema=", 1)[1]).resolve()
    assert target == SCHEMA_FILE.resolve()  # relative to the policy file, as editors resolve it


# --- policy new -------------------------------------------------------------------------


def test_policy_new_writes_a_skeleton_that_passes_lint_and_its_tests(
    tmp_path: Path, config: Path
) -> None:
    path = tmp_path / "policies" / "escort-watch.yaml"
    path.parent.mkdir()
    result = CliRunner().invoke(cli, ["policy", "new", str(path), "--category", "escort-ads"])
    assert result.exit_code == 0, result.output
    text = path.read_text()
    schema = text.splitlines()[0].split("$schema=", 1)[1]
    assert Path(schema).is_absolute() and Path(schema).resolve() == SCHEMA_FILE.resolve()
    data = yaml.safe_load(text)
    assert (data["id"], data["match"]["categories"], data["status"]) == (
        "escort-watch",
        ["escort-ads"],
        "draft",
    )
    assert {r["kind"] for r in data["rules"]} == {"person", "cluster"}
    # every field of the policy and of its sections has a comment above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^(  )?[a-z_]+:", line):
            assert lines[i - 1].lstrip().startswith("#"), line
    code, output = _lint(path, "--config", config)
    assert code == 0 and "0 error(s), 0 warning(s)" in output, output
    tested = CliRunner().invoke(cli, ["policy", "test", str(path)])
    assert tested.exit_code == 0 and "0 failed" in tested.output, tested.output


def test_policy_new_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("id: mine\n")
    result = CliRunner().invoke(cli, ["policy", "new", str(path)])
    assert result.exit_code == 2
    assert "exists" in result.output
    assert path.read_text() == "id: mine\n"
    result = CliRunner().invoke(cli, ["policy", "new", str(tmp_path / "x.yaml"), "--id", "Bad Id"])
    assert result.exit_code == 2 and "--id" in result.output
    assert not (tmp_path / "x.yaml").exists()


# ---------------------------------------------------------------------------------------
# The job holds the configured policies to the same checks


def test_the_job_refuses_a_policy_with_an_open_error_and_logs_an_approved_exception_once(
    job: Path,
) -> None:
    shipped = job.parent / "policies" / "escort-ads.yaml"
    shipped.write_text(shipped.read_text().replace("min_days: 2", "min_days: 1"))
    result = as_actor("operator", job, "run", "--today", "2026-11-20")
    assert result.exit_code == 3, result.output
    assert "WC001" in result.output and "escort-ads.yaml:" in result.output
    assert not (job.parent / "var" / "store.db").exists()  # refused before anything was read

    with job.open("a") as config:
        config.write(
            "lint_exceptions:\n"
            "  - {policy: escort-ads, check: WC001, rule: repeated-contact,\n"
            "     approved_by: [works-council], approved_on: 2026-11-18,\n"
            "     reason: a single day of repeated contact is enough for this pilot}\n"
        )
    for day in ("2026-11-20", "2026-11-21"):
        result = as_actor("operator", job, "run", "--today", day)
        assert result.exit_code in (0, 4), result.output  # 4: the second run reads nothing
    with store_db(job) as db:
        logged = [
            json.loads(row[0])
            for row in db.execute(
                "SELECT details FROM audit_log WHERE action = 'policy.lint_exception'"
            )
        ]
    assert len(logged) == 1  # logged when it took effect, not again while unchanged
    (entry,) = logged
    assert entry["check"] == "WC001" and entry["policy"] == "escort-ads"
    assert "works-council" in json.dumps(entry) and "pilot" in json.dumps(entry)


def test_an_audit_refuses_a_policy_with_an_open_error_before_reading(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    """An ad-hoc audit holds its policies to the same checks as the job: an export cannot
    be audited with a rule that singles a person out (one message on one day), nor with
    a category no feed given provides."""
    export = write_ps_export(
        tmp_path / "trace.csv",
        [ps_row("11/2/2026 10:00:00 AM", "u1@corp.example", "book@escort-ads.test")],
    )
    policy = _policy(tmp_path, _variant(("min_messages: 3\n    min_days: 2", "min_messages: 1")))

    def audit() -> Any:
        return CliRunner().invoke(
            cli,
            [
                "audit", "--logs", str(export), "--feed", f"{escort_feed}:escort-ads",
                "--policies", str(policy), "--directory", str(directory_csv),
                "--org-domain", "corp.example", "--format", "json",
            ],
        )  # fmt: skip

    result = audit()
    assert result.exit_code == 3, result.output
    assert f"{policy}:" in result.output and "WC001" in result.output
    assert "internal error" not in result.output and "alerts" not in result.output
    policy.write_text(SAFE.replace("categories: [escort-ads]", "categories: [escort-adds]"))
    result = audit()
    assert result.exit_code == 3 and "WC008" in result.output, result.output
    policy.write_text(SAFE)  # the same audit with the safe policy runs
    result = audit()
    assert result.exit_code == 0, result.output
