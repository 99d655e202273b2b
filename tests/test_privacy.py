"""Key handling, pseudonyms, directory aliases and small-group roll-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compliance.directory import Directory
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
    assert directory.headcounts == {"Sales/EMEA": 12, "Sales/EMEA/North": 3, "Legal": 2, "Ops": 10}


def test_directory_never_loads_names(directory_csv: Path) -> None:
    directory = load_directory(directory_csv)
    assert "Test Person" not in repr(directory.people)


def test_rollup_merges_small_units_into_parents() -> None:
    counts = {"Sales/EMEA": 12, "Sales/EMEA/North": 3, "Sales/Americas/West": 2, "Legal": 2}
    mapping = rollup_map({**counts, "Legal": 9}, 10)
    assert mapping["Sales/EMEA"] == "Sales/EMEA"
    assert mapping["Sales/EMEA/North"] == "Sales/EMEA"
    # West (2) joins Americas (0), which joins Sales: 2 < 10, so the whole organisation
    assert mapping["Sales/Americas/West"] == ROOT_UNIT
    assert mapping["Legal"] == ROOT_UNIT  # with West, 11 people: enough
    # with Legal at 2, those four people alone would make the whole organisation a small
    # group: the smallest unit beside it (Sales/EMEA, 15 with North) joins; Ops stands
    mapping = rollup_map({**counts, "Ops": 20}, 10)
    assert mapping["Sales/Americas/West"] == mapping["Legal"] == ROOT_UNIT
    assert mapping["Sales/EMEA"] == mapping["Sales/EMEA/North"] == ROOT_UNIT
    assert mapping["Ops"] == "Ops"


def test_the_whole_organisation_is_never_a_small_group() -> None:
    """A stranger's check: a board of one merged into ``(organisation)`` beside two large
    divisions made the ``(organisation)`` row that one person (their alert's unit, their
    mail volume). The smallest other top-level unit now joins it."""
    counts = {"Board/Chair": 1, "Ops/Floor": 14, "Ops": 2, "Sales/Desk": 25}
    mapping = rollup_map(counts, 5)
    assert mapping["Board/Chair"] == mapping["Board"] == ROOT_UNIT
    # Ops' own two people and the chair are three: the smallest unit beside them, Ops/Floor
    # (whose parent merged), joins them; Sales/Desk stands as it is
    assert mapping["Ops"] == mapping["Ops/Floor"] == ROOT_UNIT
    assert mapping["Sales/Desk"] == "Sales/Desk"
    assert mapping["Sales"] == ROOT_UNIT  # empty, as before
    # whatever is reported as the whole organisation holds at least five people
    held = sum(n for unit, n in counts.items() if mapping[unit] == ROOT_UNIT)
    assert held >= 5
    # nothing merged into the whole organisation: nothing joins it
    assert rollup_map({"Ops": 14, "Sales": 25}, 5) == {"Ops": "Ops", "Sales": "Sales"}


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


def _directory(tmp_path: Path, *rows: str) -> Directory:
    """A directory CSV of ``rows`` under the header mail, id, department, proxyAddresses."""
    path = tmp_path / "directory.csv"
    path.write_text("\n".join(["mail,id,department,proxyAddresses", *rows]) + "\n")
    return load_directory(path)


def test_a_directory_row_with_a_field_lost_is_nobody_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger's check: a row that lost a field (its unit missing, so its alias slid
    into the unit's place and the rest shifted) was read as it came, silently. It is
    left out, counted, and its line named (never its content)."""
    directory = _directory(
        tmp_path,
        "u1@corp.example,id-1,Sales,smtp:a1@corp.example",
        "u2@corp.example,id-2,smtp:a2@corp.example",
        "",
        'u3@corp.example,id-3,"Legal",""',
    )
    assert directory.lookup("u1@corp.example") == ("id:id-1", "Sales")
    assert directory.lookup("u3@corp.example") == ("id:id-3", "Legal")
    assert directory.lookup("u2@corp.example")[1] == "unknown"
    assert directory.headcounts == {"Sales": 1, "Legal": 1}
    assert directory.rejected == {"fewer_fields_than_the_header": 1}
    assert "line(s) 3" in caplog.text and "u2" not in caplog.text and "a2" not in caplog.text


def test_an_address_two_people_claim_is_neither_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that lists one address for two people (a reused alias, a copy-paste
    error) must not give that mail to one of them: the address is listed for neither (its
    own pseudonym, unit unknown), and the file's lines are named, never the address."""
    directory = _directory(
        tmp_path,
        "u1@corp.example,id-1,Sales,smtp:shared@corp.example",
        "u2@corp.example,id-2,Legal,smtp:shared@corp.example",
        "u3@corp.example,id-3,Legal,",
    )
    assert directory.lookup("shared@corp.example") == ("ambiguous:shared@corp.example", "unknown")
    assert directory.lookup("u1@corp.example") == ("id:id-1", "Sales")
    assert directory.lookup("u2@corp.example") == ("id:id-2", "Legal")
    assert directory.headcounts == {"Sales": 1, "Legal": 2}
    assert directory.rejected == {"address_of_two_people": 1}
    assert "line(s) 2, 3" in caplog.text and "shared" not in caplog.text
    # a person without an id is keyed by their first address: the shared one here; its
    # mail must not become theirs
    path = tmp_path / "directory.csv"
    path.write_text(
        "mail,department,proxyAddresses\n"
        "shared@corp.example,Sales,smtp:alice@corp.example\n"
        "bob@corp.example,Legal,smtp:shared@corp.example\n",
        encoding="utf-8",
    )
    directory = load_directory(path)
    alice, _ = directory.lookup("alice@corp.example")
    shared, unit = directory.lookup("shared@corp.example")
    assert alice == "shared@corp.example" and shared != alice and unit == "unknown"


def test_a_sub_address_is_its_mailbox_s(directory_csv: Path) -> None:
    """``u1+bookings@`` (plus addressing) is delivered to u1: the same person and unit,
    in the scalar and the vectorised lookup, unless the directory lists it itself."""
    import pyarrow as pa

    directory = load_directory(directory_csv)
    assert directory.lookup("u1+bookings@corp.example") == directory.lookup("u1@corp.example")
    assert directory.lookup("u1+x@other.example")[1] == "unknown"
    entry, _ = directory.lookup_all(
        pa.array(
            ["u1+a@corp.example", "alias1+b@corp.example", "u1@corp.example", "+x@corp.example"]
        )
    )
    assert min(entry[:3]) >= 0 and entry[3] == -1
    assert len({directory.keys[e] for e in entry[:3]}) == 1


def test_a_directory_with_an_unclosed_quote_is_refused_by_name(tmp_path: Path) -> None:
    from compliance.errors import InputError

    path = tmp_path / "directory.csv"
    path.write_text(
        'mail,displayName,department\nu1@corp.example,X,Legal\nu2@corp.example,"Unclosed,Sales,\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="not a readable CSV directory") as raised:
        load_directory(path)
    assert str(path) in str(raised.value) and "u2@" not in str(raised.value)
