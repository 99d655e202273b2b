"""Key handling, pseudonyms, directory aliases and small-group roll-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compliance.errors import ConfigError, KeyMissingError
from compliance.privacy import DEMO_KEY, ROOT_UNIT, Pseudonymiser, load_key, rollup_map
from connectors.directory import load_directory

GOOD = "k" * 40


def test_key_from_environment() -> None:
    assert load_key({"COMPLIANCE_PSEUDONYM_KEY": GOOD}) == GOOD.encode()


def test_key_from_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(GOOD + "\n")
    os.chmod(path, 0o600)
    assert load_key({"COMPLIANCE_PSEUDONYM_KEY_FILE": str(path)}) == GOOD.encode()
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key({"COMPLIANCE_PSEUDONYM_KEY_FILE": str(path)})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "no pseudonymisation key"),
        ({"COMPLIANCE_PSEUDONYM_KEY": "short"}, "too short"),
        ({"COMPLIANCE_PSEUDONYM_KEY": DEMO_KEY.decode()}, "demo key"),
        ({"COMPLIANCE_PSEUDONYM_KEY": GOOD, "COMPLIANCE_PSEUDONYM_KEY_FILE": "/x"}, "both"),
        ({"COMPLIANCE_PSEUDONYM_KEY_FILE": "/nonexistent/key"}, "cannot read"),
    ],
)
def test_key_refusals(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_key(env)


def test_missing_key_is_a_key_error() -> None:
    with pytest.raises(KeyMissingError):
        load_key({})


def test_same_key_same_pseudonym_other_key_other() -> None:
    a, b = Pseudonymiser(b"a" * 32), Pseudonymiser(b"b" * 32)
    assert a.pseudonym("id:1") == Pseudonymiser(b"a" * 32).pseudonym("id:1")
    assert a.pseudonym("id:1") != b.pseudonym("id:1")
    assert a.pseudonym("id:1") != a.pseudonym("id:2")
    assert a.key_id != b.key_id


def test_aliases_map_to_one_person(directory_csv: Path) -> None:
    directory = load_directory(directory_csv)
    assert directory.lookup("u1@corp.example") == directory.lookup("alias1@corp.example")
    key, unit = directory.lookup("u14@corp.example")
    assert unit == "Sales/EMEA/North"
    assert key.startswith("id:")
    assert directory.lookup("stranger@corp.example") == ("stranger@corp.example", "unknown")
    assert directory.headcounts == {"Sales/EMEA": 12, "Sales/EMEA/North": 3, "Legal": 2}


def test_directory_never_loads_names(directory_csv: Path) -> None:
    directory = load_directory(directory_csv)
    assert "Test Person" not in repr(directory.people)


def test_rollup_merges_small_units_into_parents() -> None:
    counts = {"Sales/EMEA": 12, "Sales/EMEA/North": 3, "Sales/Americas/West": 2, "Legal": 2}
    mapping = rollup_map(counts, 10)
    assert mapping["Sales/EMEA"] == "Sales/EMEA"
    assert mapping["Sales/EMEA/North"] == "Sales/EMEA"
    # West (2) joins Americas (0), which joins Sales: 2 < 10, so the whole organisation
    assert mapping["Sales/Americas/West"] == ROOT_UNIT
    assert mapping["Legal"] == ROOT_UNIT


def test_rollup_accumulates_children_before_deciding() -> None:
    counts = {"Eng/A": 4, "Eng/B": 4, "Eng/C": 4}
    mapping = rollup_map(counts, 10)
    assert {mapping[u] for u in counts} == {"Eng"}  # 12 together: Eng is big enough
    assert rollup_map(counts, 3) == {
        "Eng/A": "Eng/A",
        "Eng/B": "Eng/B",
        "Eng/C": "Eng/C",
        "Eng": ROOT_UNIT,
    }
