"""Hostile and broken YAML in policies and configs: refused fast, with file and line, never
exit 70; a syntax error explained in a policy author's words, with its line and column, and
the parser's own text kept at the end.

Each input is built here. Policies are refused with exit 3 (``policy lint`` and
``policy test``), config files with exit 2 (the config is loaded before anything else).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from compliance.cli import cli
from compliance.errors import PolicyError
from compliance.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_LINE_CHARS, parse_yaml
from tests.conftest import SHIPPED_POLICIES

ROOT = Path(__file__).resolve().parents[1]
FAST = 5.0  # seconds; the refusals take milliseconds, the bound only keeps CI from flaking

HEAD = "id: p1\ntitle: Test\nversion: 1\n"


def _billion_laughs() -> str:
    """Seven levels of ten aliases: 10**7 leaves from a few hundred bytes."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    lines.append("h: [" + ", ".join(["*g"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _flow_sequence_one_line(depth: int = 20_000) -> str:
    return HEAD + "rules: " + "[" * depth + "]" * depth + "\n"


def _flow_sequence_lines(depth: int = 20_000) -> str:
    """The same nesting spread over short lines, so that the depth limit is what refuses it."""
    opening = ("[" * 100 + "\n") * (depth // 100)
    closing = ("]" * 100 + "\n") * (depth // 100)
    return HEAD + "rules: " + opening + closing


def _flow_mapping(depth: int = 5_000) -> str:
    return HEAD + "rules: " + "{a:\n" * depth + "x" + "}" * depth + "\n"


def _block_mapping(depth: int = 5_000) -> str:
    return HEAD + "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "x\n"


def _line_past_the_size_limit(text: str) -> int:
    return text.encode()[:MAX_FILE_BYTES].count(b"\n") + 1


BLOCK_MAPPING = _block_mapping()
BIG = HEAD + "description: >\n" + ("  " + "x" * 98 + "\n") * (MAX_FILE_BYTES // 100)

# name: (file text, expected line, a part of the expected message)
HOSTILE: dict[str, tuple[str | bytes, int, str]] = {
    "flow sequence 20,000 deep on one line": (_flow_sequence_one_line(), 4, "longer than"),
    "flow sequence 20,000 deep": (_flow_sequence_lines(), 4, f"more than {MAX_DEPTH} levels"),
    "flow mapping 5,000 deep": (_flow_mapping(), 3 + MAX_DEPTH, f"more than {MAX_DEPTH} levels"),
    # 25 MB of indentation: refused for its size before it is parsed.
    "block mapping 5,000 deep": (
        BLOCK_MAPPING,
        _line_past_the_size_limit(BLOCK_MAPPING),
        "larger than 1 MiB",
    ),
    "billion laughs": (_billion_laughs(), 2, "YAML aliases (*a) are not allowed"),
    "merge key with an alias": (
        HEAD + "base: &b {x: 1}\nmatch:\n  <<: *b\n",
        6,
        "YAML aliases (*b) are not allowed",
    ),
    "file over the size limit": (BIG, _line_past_the_size_limit(BIG), "larger than 1 MiB"),
    "line over the length limit": (
        HEAD + "description: " + "x" * MAX_LINE_CHARS + "\n",
        4,
        f"longer than {MAX_LINE_CHARS:,} characters",
    ),
    "not UTF-8": (HEAD.encode() + b"description: caf\xe9\n", 4, "is not UTF-8 text"),
    "a NUL character": (HEAD + "description: a\x00b\n", 4, "#x0000 is not allowed"),
    "an integer of 5,000 digits": (HEAD + "max_alerts_per_day: " + "9" * 5_000 + "\n", 4, "long"),
}


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _invoke(*args: str) -> tuple[Result, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, list(args))
    return result, time.perf_counter() - start


def _assert_refused(
    result: Result, seconds: float, code: int, path: Path, line: int, text: str
) -> None:
    assert result.exit_code == code, result.output
    assert "internal error" not in result.output
    assert f"{path}:{line}:" in result.output, result.output
    assert text in result.output, result.output
    assert seconds < FAST, seconds


@pytest.mark.parametrize("command", ["lint", "test"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_policy_is_refused_fast_with_file_and_line(
    tmp_path: Path, case: str, command: str
) -> None:
    content, line, text = HOSTILE[case]
    path = _write(tmp_path, "policy.yaml", content)
    result, seconds = _invoke("policy", command, str(path))
    _assert_refused(result, seconds, 3, path, line, text)


@pytest.mark.parametrize("case", [c for c in HOSTILE if c != "not UTF-8"])
def test_hostile_config_is_refused_fast_with_file_and_line(tmp_path: Path, case: str) -> None:
    content, line, text = HOSTILE[case]
    path = _write(tmp_path, "compliance.yaml", content)
    result, seconds = _invoke("privacy", "inventory", "--config", str(path))
    _assert_refused(result, seconds, 2, path, line, text)


def test_hostile_config_is_refused_by_run_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "compliance.yaml", _billion_laughs())
    result, seconds = _invoke("run", "--config", str(path))
    _assert_refused(result, seconds, 2, path, 2, "YAML aliases (*a) are not allowed")


def test_config_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    content, line, text = HOSTILE["not UTF-8"]
    path = _write(tmp_path, "compliance.yaml", content)
    result, seconds = _invoke("privacy", "inventory", "--config", str(path))
    _assert_refused(result, seconds, 2, path, line, text)


def _policy_with_test_day(day: str) -> str:
    return (
        "id: p1\n"
        "title: Test\n"
        "version: 1\n"
        "match: {categories: [escort-ads]}\n"
        "rules:\n"
        "  - {kind: person, window: 30d, min_messages: 2, min_days: 2, severity: high}\n"
        "tests:\n"
        "  - name: one\n"
        "    feed: {escort-ads: [escort-ads.test]}\n"
        "    events:\n"
        "      - {day: 2026-11-02, person: a, domain: escort-ads.test}\n"
        f"      - {{day: {day}, person: a, domain: escort-ads.test}}\n"
        "    expect: []\n"
    )


@pytest.mark.parametrize("command", ["lint", "test"])
@pytest.mark.parametrize(
    ("day", "text"),
    [
        ("2026-02-30", "tests[0].events[1].day: 2026-02-30 is not a real date"),
        ("2026-13-01", "tests[0].events[1].day: 2026-13-01 is not a real date"),
        ("2026-02-03T25:00:00", "is not a real date or time"),
        ("0000-01-01", "is not a real date"),
        # Real dates, but past what a test event's timestamp can hold.
        ("2300-01-01", "tests[0].events[1].day: must be a day from 1900-01-01 to 2199-12-31"),
        ("0001-01-01", "tests[0].events[1].day: must be a day from"),
    ],
)
def test_impossible_test_event_day_is_an_invalid_policy(
    tmp_path: Path, command: str, day: str, text: str
) -> None:
    path = _write(tmp_path, "policy.yaml", _policy_with_test_day(day))
    result, seconds = _invoke("policy", command, str(path))
    _assert_refused(result, seconds, 3, path, 12, text)


def test_impossible_date_in_a_config_is_a_config_error(tmp_path: Path) -> None:
    text = "organisation: {domains: [corp.example]}\nstore: s.db\nsince: 2026-02-30\n"
    path = _write(tmp_path, "compliance.yaml", text)
    result, seconds = _invoke("privacy", "inventory", "--config", str(path))
    _assert_refused(result, seconds, 2, path, 3, "2026-02-30 is not a real date")


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    text = _policy_with_test_day("2026-02-30").replace("2026-11-02", "2026-11-31")
    path = _write(tmp_path, "policy.yaml", text)
    result, _ = _invoke("policy", "lint", str(path))
    assert result.exit_code == 3
    assert f"{path}:11: tests[0].events[0].day: 2026-11-31 is not a real date" in result.output
    assert f"{path}:12: tests[0].events[1].day: 2026-02-30 is not a real date" in result.output


def test_the_limits_themselves_are_allowed() -> None:
    deepest = parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "p.yaml")[0]
    for _ in range(MAX_DEPTH - 1):
        deepest = deepest[0]
    assert deepest == []
    with pytest.raises(PolicyError, match=f"more than {MAX_DEPTH} levels"):
        parse_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "p.yaml")
    line = "a: " + "x" * (MAX_LINE_CHARS - 3)
    assert parse_yaml(line, "p.yaml")[0] == {"a": "x" * (MAX_LINE_CHARS - 3)}
    with pytest.raises(PolicyError, match=r"p\.yaml:2: the line is longer"):
        parse_yaml("a: 1\n" + line + "x\n", "p.yaml")
    full = "a: |\n" + ("  " + "x" * 97 + "\n") * ((MAX_FILE_BYTES - 5) // 100)
    assert len(full.encode()) <= MAX_FILE_BYTES
    assert parse_yaml(full, "p.yaml")[0]["a"].startswith("x")
    with pytest.raises(PolicyError, match="larger than 1 MiB"):
        parse_yaml("é" * (MAX_FILE_BYTES // 2 + 1), "p.yaml")


def test_anchors_and_inline_merge_keys_still_work() -> None:
    data, lines = parse_yaml("a: &x 1\nb:\n  <<: {c: 2}\n  d: 3\n", "p.yaml")
    assert data == {"a": 1, "b": {"c": 2, "d": 3}}
    assert lines[("b", "d")] == 4


def test_shipped_policy_and_example_config_still_load() -> None:
    from compliance.config import load_config
    from compliance.policy.loader import load_policy_file

    loaded = load_policy_file(SHIPPED_POLICIES / "escort-ads.yaml")
    assert loaded.policy.id == "escort-ads"
    assert loaded.line_of("tests", 0) is not None
    assert load_config(ROOT / "ops" / "compliance.example.yaml").sources
    result, _ = _invoke("policy", "test", str(SHIPPED_POLICIES / "escort-ads.yaml"))
    assert result.exit_code == 0, result.output


def test_an_inline_test_cannot_ask_for_unbounded_messages(tmp_path: Path) -> None:
    events = "".join(
        f"      - {{day: 2026-11-0{1 + i % 9}, person: a, domain: x.test, count: 10000}}\n"
        for i in range(11)
    )
    shipped = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8")
    text = shipped.split("\ntests:")[0] + (
        "\ntests:\n  - name: too many\n    events:\n" + events + "    expect: []\n"
    )
    path = _write(tmp_path, "policy.yaml", text)
    result, seconds = _invoke("policy", "lint", str(path))
    assert result.exit_code == 3, result.output
    assert "110,000 messages; at most 100,000" in result.output
    assert str(path) in result.output and seconds < 5


def test_a_lone_surrogate_escape_is_a_located_problem(tmp_path: Path) -> None:
    shipped = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8")
    text = shipped.replace(
        "title: Corporate mail exchanged with escort-advertising sites",
        'title: "Corporate mail \\uD800 sites"',
    )
    path = _write(tmp_path, "policy.yaml", text)
    result, _ = _invoke("policy", "lint", str(path))
    assert result.exit_code == 3, result.output
    assert f"{path}:" in result.output and "lone surrogate" in result.output


# --- syntax errors in plain words ------------------------------------------------------------

SHIPPED_TEXT = (SHIPPED_POLICIES / "escort-ads.yaml").read_text(encoding="utf-8")

# name: (file text, line, column, the plain words, what the parser said)
BROKEN: dict[str, tuple[str, int, int, str, str]] = {
    "a key indented less than its neighbours": (
        HEAD + "rules:\n  - id: r\n    kind: person\n   window: 30d\n",
        7, 4,
        "the line is indented differently from the lines above it (check its spaces)",
        "expected <block end>, but found '<block mapping start>'",
    ),
    "a key lined up with the list's dash": (
        HEAD + "rules:\n  - id: r\n  kind: person\n",
        6, 3,
        "the line is indented differently from the lines above it (check its spaces)",
        "expected <block end>, but found '?'",
    ),
    "a list item under a mapping": (
        HEAD + "- escort-ads\n",
        4, 1,
        "a list item (- ) is not lined up with the lines above it",
        "expected <block end>, but found '-'",
    ),
    "a value with a colon and a space": (
        "id: p1\ntitle: Escort ads: outbound\nversion: 1\n",
        2, 18,
        'a value holds a colon followed by a space, which YAML reads as another key: put the '
        'whole value in quotes ("...")',
        "mapping values are not allowed here",
    ),
    "a key indented more than the line above": (
        "id: p1\ntitle: Test\n  version: 1\n",
        3, 10,
        "the line is indented more than the line above it, or the line above lacks its colon",
        "mapping values are not allowed here",
    ),
    "a tab for indentation": (
        HEAD + "rules:\n\t- id: r\n",
        5, 1,
        "a tab is used here, where YAML allows only spaces: use spaces",
        "found character '\\t' that cannot start any token",
    ),
    "a key without its colon": (
        "id: p1\ntitle Test\nversion: 1\n",
        2, 1,
        "this line has no colon after its key, or it continues the line above",
        "could not find expected ':'",
    ),
    "an unclosed double quote": (
        'id: p1\ntitle: "Escort ads\nversion: 1\n',
        2, 8,
        "the quote that opens here is never closed",
        "while scanning a quoted scalar, found unexpected end of stream",
    ),
    "an unclosed single quote": (
        "id: p1\ntitle: 'Escort ads\nversion: 1\n",
        2, 8,
        "the quote that opens here is never closed",
        "found unexpected end of stream",
    ),
    "a quote closed lines later": (
        'id: p1\ntitle: "Escort ads\nversion: 1\nmatch: "x"\n',
        4, 9,
        "a quote on a line above is probably not closed",
        "expected <block end>, but found '<scalar>'",
    ),
    "an unclosed bracket": (
        HEAD + "match:\n  categories: [escort-ads, adult\n  evidence: outbound\n",
        5, 15,
        "the list that opens here with [ is not closed, or two of its items lack a comma "
        "between them: add the ] or the comma (YAML noticed at line 6, column 11)",
        "expected ',' or ']', but got ':'",
    ),
    "an unclosed brace": (
        HEAD + "match: {categories: [escort-ads]\nrules: []\n",
        4, 8,
        "the mapping that opens here with { is not closed",
        "expected ',' or '}', but got '<scalar>'",
    ),
    "two commas in a row": (
        HEAD + "match: {categories: [escort-ads,, adult]}\n",
        4, 33,
        "an empty item between brackets (two commas in a row, or a comma first)",
        "expected the node content, but found ','",
    ),
    "a value beginning with @": (
        HEAD + "owner: @ethics\n",
        4, 8,
        'a value cannot begin with @ in YAML: put the value in quotes ("@...")',
        "found character '@' that cannot start any token",
    ),
    "a value beginning with *": (
        HEAD + "description: * important\n",
        4, 14,
        "& and * start YAML anchors and aliases: put the value in quotes",
        "while scanning an alias",
    ),
    "a backslash in double quotes": (
        HEAD + 'description: "C:\\policies"\n',
        4, 18,
        "a backslash in double quotes starts an escape",
        "found unknown escape character 'p'",
    ),
    "a second document": (
        HEAD + "---\nid: p2\n",
        4, 1,
        "a second YAML document starts here (---)",
        "but found another document",
    ),
    "a tag": (
        HEAD + "description: !secret x\n",
        4, 14,
        "a tag (!...) is not read in policy and config files: remove it",
        "could not determine a constructor for the tag '!secret'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_yaml_syntax_error_is_explained_in_plain_words(tmp_path: Path, case: str) -> None:
    text, line, column, plain, said = BROKEN[case]
    for name, args, code in (
        ("policy.yaml", ("policy", "lint"), 3),
        ("compliance.yaml", ("sources", "check", "--config"), 2),
    ):
        path = _write(tmp_path, name, text)
        result, seconds = _invoke(*args, str(path))
        _assert_refused(result, seconds, code, path, line, plain)
        first = next(x for x in result.output.splitlines() if str(path) in x)
        first = first.removeprefix("error: ")  # a config's problem is the command's error
        # where (line and column), the plain words, then the parser's own text at the end
        assert first.startswith(f"{path}:{line}:{column}: YAML syntax: "), first
        assert " — YAML said: " in first and said in first.split(" — YAML said: ", 1)[1], first


def test_a_mistake_in_the_shipped_policy_is_located_in_it(tmp_path: Path) -> None:
    """The indentation slip a policy author makes most: one rule key a space short."""
    lines = SHIPPED_TEXT.splitlines(keepends=True)
    number = next(i for i, x in enumerate(lines) if x.strip().startswith("window:"))
    lines[number] = lines[number][1:]
    path = _write(tmp_path, "escort-ads.yaml", "".join(lines))
    result, seconds = _invoke("policy", "lint", str(path))
    _assert_refused(result, seconds, 3, path, number + 1, "indented differently")


def test_a_duplicate_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "policy.yaml", HEAD + "title: Again\n")
    result, seconds = _invoke("policy", "lint", str(path))
    _assert_refused(result, seconds, 3, path, 4, "title: duplicate key")
