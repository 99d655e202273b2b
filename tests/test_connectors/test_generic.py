"""The generic CSV / JSON Lines source with a column mapping."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from compliance.errors import ConfigError, InputError
from connectors.base import create_source

MAPPING = {"timestamp": "time", "sender": "from", "recipient": "to", "size": "bytes"}


def _frame(source_options: dict[str, object], tmp_path: Path) -> pd.DataFrame:
    source = create_source("generic", "gw", source_options, tmp_path)
    frames = [chunk.frame for unit in source.units() for chunk in unit.chunks()]
    return pd.concat(frames, ignore_index=True)


def test_csv_with_mapping_and_several_recipients(tmp_path: Path) -> None:
    (tmp_path / "gw.csv").write_text(
        "time;from;to;bytes;subject\n"
        "2026-11-05 09:03:00;alice@corp.example;a@escort-ads.test, b@partner.example;100;x\n"
    )
    frame = _frame({"path": "gw.csv", "columns": MAPPING, "recipient_separator": ","}, tmp_path)
    assert frame["recipient"].tolist() == ["a@escort-ads.test", "b@partner.example"]
    assert frame["size"].tolist() == [100, 100]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-11-05 09:03", tz="UTC")


def test_jsonl_with_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "gw.jsonl").write_text(
        '{"time": "2026-11-05T09:03:00+01:00", "from": "alice@corp.example", "to": "a@x.test"}\n'
        "{not json\n"
        '{"time": "2026-11-05T10:00:00Z", "from": "b@corp.example", "to": "c@x.test"}\n'
    )
    source = create_source("generic", "gw", {"path": "gw.jsonl", "columns": MAPPING}, tmp_path)
    chunks = [c for u in source.units() for c in u.chunks()]
    assert sum(c.rejected["malformed_row"] for c in chunks) == 1
    frame = pd.concat([c.frame for c in chunks])
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2026-11-05 08:03", tz="UTC"),
        pd.Timestamp("2026-11-05 10:00", tz="UTC"),
    ]


def test_mapping_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "gw.csv").write_text("time,from\n")
    with pytest.raises(ConfigError, match="recipient"):
        create_source(
            "generic", "gw", {"path": "gw.csv", "columns": {"timestamp": "time"}}, tmp_path
        )
    with pytest.raises(ConfigError, match="unknown column"):
        create_source(
            "generic", "gw", {"path": "gw.csv", "columns": {**MAPPING, "subject": "s"}}, tmp_path
        )
    source = create_source("generic", "gw", {"path": "gw.csv", "columns": MAPPING}, tmp_path)
    with pytest.raises(InputError, match="not in the header"):
        source.units()


def test_unknown_source_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown type 'postfx'"):
        create_source("postfx", "x", {}, tmp_path)


def _write_parquet(path: Path, naive: bool, rows: int = 10) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    times = pd.date_range("2026-11-05 09:00", periods=rows, freq="h", tz=None if naive else "UTC")
    table = pa.table(
        {
            "time": times,
            "from": [f"u{i}@corp.example" for i in range(rows)],
            "to": [f"x{i}@escort-ads.test" for i in range(rows)],
            "bytes": pa.array(range(100, 100 + rows), pa.int64()),
            "subject": [f"private subject {i}" for i in range(rows)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=3)  # several row groups


def test_parquet_archive_by_column_and_row_group(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "archive" / "month=10" / "part-0.parquet", naive=False)
    _write_parquet(tmp_path / "archive" / "month=11" / "part-0.parquet", naive=True, rows=4)
    frame = _frame({"path": "archive/**/*.parquet", "columns": MAPPING}, tmp_path)
    assert len(frame) == 14
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-11-05 09:00", tz="UTC")
    assert frame["timestamp"].iloc[10] == pd.Timestamp("2026-11-05 09:00", tz="UTC")  # naive: UTC
    assert frame["size"].tolist()[:3] == [100, 101, 102]
    assert "private subject" not in frame.astype(str).to_csv()


def test_parquet_without_a_mapped_column_is_refused(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "logs.parquet", naive=False)
    mapping = {**MAPPING, "message_id": "msgid"}
    with pytest.raises(InputError, match="msgid"):
        create_source(
            "generic", "gw", {"path": "logs.parquet", "columns": mapping}, tmp_path
        ).units()


def test_a_broken_parquet_file_is_a_clear_input_error(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        create_source(
            "generic", "gw", {"path": "broken.parquet", "columns": MAPPING}, tmp_path
        ).units()


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("timestamp_fromat", "timestamp_format"),
        ("delimter", "delimiter"),
        ("recipients_separator", "recipient_separator"),
        ("fromat", "format"),
        ("paths", "path"),
        ("name", None),  # the source's own key, not an option: nothing is close
    ],
)
def test_a_misspelt_option_is_refused_naming_the_source_and_the_option(
    tmp_path: Path, typo: str, meant: str | None
) -> None:
    options = {"path": "gw.csv", "columns": MAPPING, typo: ";"}
    with pytest.raises(ConfigError) as caught:
        create_source("generic", "gw", options, tmp_path)
    hint = f" (did you mean `{meant}`?)" if meant else ""
    assert str(caught.value) == f"source 'gw': {typo}: unknown option{hint}"


def test_a_misspelt_option_from_the_config_file_is_refused(tmp_path: Path) -> None:
    from compliance.config import SourceConfig

    item = SourceConfig.model_validate(
        {"name": "gw", "type": "generic", "path": "gw.csv", "columns": MAPPING, "colums": {}}
    )
    with pytest.raises(
        ConfigError, match=r"^source 'gw': colums: unknown option \(did you mean `columns`\?\)$"
    ):
        create_source(item.type, item.name, item.options(), tmp_path)


def test_a_missing_path_or_mapping_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        create_source("generic", "gw", {"columns": MAPPING}, tmp_path)
    assert str(caught.value) == (
        "source 'gw': path: Field required "
        "(a file, folder or glob, or a list of them; relative to the config file)"
    )
    with pytest.raises(ConfigError, match=r"^source 'gw': columns: Field required \(maps "):
        create_source("generic", "gw", {"path": "gw.csv"}, tmp_path)
    with pytest.raises(ConfigError, match="columns: must map raw columns to source columns"):
        create_source("generic", "gw", {"path": "gw.csv", "columns": ["time"]}, tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("path", 7, "path: must be a file, folder or glob, or a list of them"),
        ("path", ["gw.csv", None], "path: must be a file, folder or glob, or a list of them"),
        ("format", "xlsx", "format: Input should be 'csv', 'jsonl' or 'parquet'"),
        ("delimiter", 9, "delimiter: Input should be a valid string"),
        ("columns", {**MAPPING, "size": 3}, "columns: size: must be a source column or a list"),
    ],
)
def test_a_bad_value_is_refused_naming_the_option(
    tmp_path: Path, option: str, value: object, problem: str
) -> None:
    options = {"path": "gw.csv", "columns": MAPPING, option: value}
    with pytest.raises(ConfigError, match=f"^source 'gw': {problem}"):
        create_source("generic", "gw", options, tmp_path)


def test_every_option_is_accepted_and_used(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text(
        "time|from|to|bytes|id\n05/11/2026 09:03:00|alice@corp.example|a@x.test;b@y.test|100|\n"
    )
    (tmp_path / "b.log").write_text("time|from|to|bytes|id\n06/11/2026 10:00:00|b@corp|c@z|7|m\n")
    options: dict[str, object] = {
        "path": ["a.log", "b.log"],
        "format": "csv",
        "columns": {**MAPPING, "message_id": ["id", "time"], "status": "to"},
        "recipient_separator": ";",
        "timestamp_format": "%d/%m/%Y %H:%M:%S",
        "delimiter": "|",
    }
    frame = _frame(options, tmp_path)
    assert frame["recipient"].tolist() == ["a@x.test", "b@y.test", "c@z"]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2026-11-05 09:03", tz="UTC"),
        pd.Timestamp("2026-11-05 09:03", tz="UTC"),
        pd.Timestamp("2026-11-06 10:00", tz="UTC"),
    ]
    assert frame["message_id"].tolist()[-1] == "m"
    assert frame["size"].tolist() == [100, 100, 7]
    # null is the same as leaving an option out
    nulls = {"format": None, "recipient_separator": None, "timestamp_format": None}
    frame = _frame({"path": "a.log", "columns": MAPPING, "delimiter": None, **nulls}, tmp_path)
    assert frame["recipient"].tolist() == ["a@x.test;b@y.test"]
