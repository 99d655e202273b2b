"""Property-based tests: any input gives valid output or a documented error, never an
internal error (exit 70) and never a traceback.

CI runs the ``ci`` profile: a fixed seed (derandomised) and a small number of examples
per test, within a minute. For a longer search, on demand:

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_fuzz.py

The README names this command. What a search finds becomes a regression test in
``tests/test_hostile_input.py`` or ``tests/test_yaml_limits.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compliance.cli import cli
from compliance.domains import normalise_domain, normalise_domains
from tests.conftest import SHIPPED_POLICIES, audit_args, ps_row, write_ps_export

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Exit codes a command may end with on bad input: each is documented in the README.
DOCUMENTED = {0, 1, 2, 3, 4}

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ÄäöüßxN", max_size=12)
domainish = st.one_of(
    st.text(max_size=40),
    st.lists(labels, min_size=1, max_size=6).map(".".join),
    st.lists(labels, min_size=1, max_size=4).map(lambda p: " <" + ".".join(p).upper() + ".> "),
)


@given(domainish)
@example("xn--")
@example("a..b")
@example("." * 300)
def test_domain_normalisation_never_fails_and_is_stable(value: str) -> None:
    found = normalise_domain(value)
    if found is not None:
        assert found == found.strip().lower()
        assert normalise_domain(found) == found  # idempotent


@given(st.lists(domainish, max_size=30))
def test_vectorised_normalisation_equals_the_scalar_one(values: list[str]) -> None:
    import pyarrow as pa

    assert normalise_domains(pa.array(values, type=pa.string())).to_pylist() == [
        normalise_domain(v) for v in values
    ]


POLICY_LINES = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8").splitlines()
yaml_noise = st.sampled_from(
    ["", "  ", ":", "- ", "[", "]", "{", "}", "&a x", "*a", "!!python/object:os.system", "\t",
     "'", '"', "#", "? ", "<<: *a", "day: 2026-02-30", "window: 0d", "min_days: -1", "é", "\x00"]
)  # fmt: skip


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    """The shipped policy with lines dropped, duplicated or spliced with YAML noise."""
    lines = list(POLICY_LINES)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "splice", "indent"]))
        if action == "drop":
            del lines[at]
        elif action == "dup":
            lines.insert(at, lines[at])
        elif action == "splice":
            cut = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + draw(yaml_noise) + lines[at][cut:]
        else:
            lines[at] = " " * draw(st.integers(1, 3)) + lines[at]
    return "\n".join(lines) + "\n"


@given(st.one_of(mutated_policy(), st.text(max_size=300)))
def test_policy_files_are_linted_or_refused_with_a_location(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for command in ("lint", "test"):
        result = CliRunner().invoke(cli, ["policy", command, str(path)])
        assert result.exit_code in DOCUMENTED, (command, result.output)
        assert "internal error" not in result.output
        if result.exit_code == 3:
            assert str(path) in result.output


CONFIG = """\
organisation: {domains: [corp.example]}
sources: [{name: exports, type: exchange, path: inbox}]
feeds: [{path: feed.txt, category: escort-ads}]
policies: [policies]
store: var/store.db
reports: {dir: reports, period: 30d, min_group_size: 5}
retention: {events_days: 180, alerts_days: 365}
privacy: {key_rotation: quarterly}
"""


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    lines = CONFIG.splitlines()
    at = draw(st.integers(0, len(lines) - 1))
    cut = draw(st.integers(0, len(lines[at])))
    lines[at] = lines[at][:cut] + draw(yaml_noise) + lines[at][cut:]
    if draw(st.booleans()):
        del lines[draw(st.integers(0, len(lines) - 1))]
    return "\n".join(lines) + "\n"


@given(st.one_of(mutated_config(), st.text(max_size=200)))
def test_config_files_load_or_are_refused_with_a_location(tmp_path: Path, text: str) -> None:
    path = tmp_path / "compliance.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(cli, ["privacy", "inventory", "--config", str(path)])
    assert result.exit_code in DOCUMENTED, result.output
    assert "internal error" not in result.output
    if result.exit_code == 2:
        assert str(path) in result.output


stamps = st.one_of(
    st.sampled_from(
        ["11/2/2026 10:00:00 AM", "1/1/1600 1:00:00 PM", "9/21/1677 1:00:00 PM",
         "12/31/9999 1:00:00 PM", "1/1/2263 1:00:00 AM", "0000-01-01T00:00:00Z",
         "10000-01-01T00:00:00Z", "2026-02-30T10:00:00Z", "2026-11-02T10:00:00+14:00",
         "31.12.2026 23:59:59", "", "yesterday", "20480", "-1"]
    ),
    st.datetimes().map(lambda d: f"{d.month}/{d.day}/{d.year} {d:%I:%M:%S %p}"),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
)  # fmt: skip
addresses = st.one_of(
    st.sampled_from(["u1@corp.example", "book@escort-ads.test", "Book@WWW.Escort-Ads.TEST.",
                     "x@partner.example", "", "@", "a@b@c", "<u2@corp.example>"]),
    st.text(max_size=40),
)  # fmt: skip


@settings(max_examples=max(10, settings().max_examples // 2))  # a whole audit per example
@given(
    rows=st.lists(st.tuples(stamps, addresses, addresses, st.text(max_size=12)), max_size=12),
    raw=st.binary(max_size=60),
)
def test_exports_are_read_or_refused_never_an_internal_error(
    tmp_path: Path, directory_csv: Path, escort_feed: Path, rows: list[tuple[str, ...]], raw: bytes
) -> None:
    assume(all("\x00" not in "".join(r) for r in rows))
    good = ps_row("11/3/2026 9:00:00 AM", "u1@corp.example", "x@partner.example", index=0)
    made = [ps_row(t, s, r, index=i + 1, status=code) for i, (t, s, r, code) in enumerate(rows)]
    export = write_ps_export(tmp_path / "trace.csv", [good, *made])
    with export.open("ab") as stream:  # and a line of arbitrary bytes at the end
        stream.write(raw + b"\r\n")
    result = CliRunner().invoke(cli, audit_args(export, directory_csv, escort_feed))
    assert result.exit_code in DOCUMENTED, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.exit_code == 0:
        report = json.loads(result.stdout)
        assert report["events"] >= 1
        for day in (report["first_day"], report["last_day"]):
            assert day is None or "1990" <= day[:4] <= "2100", day
    else:
        assert str(export) in result.stderr


@pytest.mark.parametrize("profile", ["ci"])
def test_the_ci_profile_is_fixed(profile: str) -> None:
    assert settings.get_profile(profile).derandomize
