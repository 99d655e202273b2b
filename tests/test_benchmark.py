"""The benchmark's data has the shape it claims, and its engines do the same job: equal
matched counts on every shape and format."""

from __future__ import annotations

import codecs
import hashlib
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from publicsuffixlist import PublicSuffixList

from compliance.domains import registrable_domain
from connectors.exchange import detect_file
from tests.benchmark import (
    CSV,
    EAC_HEADER,
    FORMATS,
    ORIGINAL,
    PARSED_COLUMNS,
    ROOT,
    Data,
    Format,
    Mail,
    Shape,
    alerts_digest,
    parse_count,
    parse_shapes,
    prepare,
    profile,
    run_arrow_parse,
    run_duckdb,
    run_incremental,
    run_project,
    run_scheduled,
)

N, M = 20_000, 5_000
HEAVY, ALL = Shape("heavy-tail", 0.25), Shape("all-distinct", 1.0)
EAC = FORMATS["eac"]
#: The original shape's files as the benchmark of earlier releases wrote them (sha256).
ORIGINAL_EXPORT = "a6ab2fecfc45a1b1b2b27b88bc853e8a3d4ab13833cd2b149039bc72273c0520"
ORIGINAL_FEED = "0c1d829e3cfb388cebf158246aad07accc7cfe44719f9fd5dc5cc2dd8b4bf47b"
ICANN = PublicSuffixList(only_icann=True, accept_unknown=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of generated data for the module (each file is generated once)."""
    return tmp_path_factory.mktemp("benchmark")


def data_of(cache: Path, shape: Shape, fmt: Format = CSV) -> Data:
    # blocks of 7,000 rows: the tests see messages and new addresses across block bounds
    return prepare(N, M, cache, shape, fmt, block=7_000)


def export_frame(data: Data) -> pd.DataFrame:
    skip = 1 if data.format.layout == "powershell" else 0
    encoding = {"utf-8": "utf-8", "utf-16": "utf-16", "utf-16-le": "utf-16-le"}[
        data.format.encoding
    ]
    return pd.read_csv(
        data.export, skiprows=skip, dtype=str, keep_default_na=False, encoding=encoding
    )


def internal(addresses: pd.Series) -> pd.Series:
    return addresses.str.lower().str.endswith("@corp.example")


def external_draws(frame: pd.DataFrame) -> pd.DataFrame:
    """(message, external address) pairs: an inbound sender shows on every recipient's row
    but was drawn once."""
    sender_in, recipient_in = internal(frame["SenderAddress"]), internal(frame["RecipientAddress"])
    parts = [
        pd.DataFrame({"message": frame["MessageId"][~inside], "address": column[~inside]})
        for column, inside in (
            (frame["SenderAddress"], sender_in),
            (frame["RecipientAddress"], recipient_in),
        )
    ]
    pairs = pd.concat(parts, ignore_index=True)
    pairs["address"] = pairs["address"].str.lower()
    return pairs.drop_duplicates()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_original_shape_is_the_data_of_earlier_releases(cache: Path) -> None:
    data = prepare(N, M, cache)
    assert sha256(data.export) == ORIGINAL_EXPORT, "the original shape's export changed"
    assert sha256(data.feed) == ORIGINAL_FEED, "the original shape's feed changed"
    unicode = prepare(N, M, cache, ORIGINAL, FORMATS["utf16"])
    assert unicode.export.read_bytes().startswith(codecs.BOM_UTF16_LE)
    assert unicode.export.read_bytes().decode("utf-16") == data.export.read_bytes().decode()
    with pytest.raises(ValueError, match="csv or utf16"):
        prepare(N, M, cache, ORIGINAL, EAC)


@pytest.mark.parametrize(("shape", "low", "high"), [
    (Shape("heavy-tail", 0.0), 0.0, 0.08),  # only the addresses known from the start
    (HEAVY, 0.25, 0.33),
    (Shape("heavy-tail", 0.5), 0.5, 0.58),
    (ALL, 1.0, 1.0),
])  # fmt: skip
def test_the_share_of_distinct_external_addresses_is_the_one_asked_for(
    cache: Path, shape: Shape, low: float, high: float
) -> None:
    draws = external_draws(export_frame(data_of(cache, shape)))
    share = draws["address"].nunique() / len(draws)
    assert low <= share <= high
    # heavy-tailed: the most common address is far above the median one
    counts = draws["address"].value_counts()
    if shape.distinct < 1:
        assert counts.iloc[0] >= 20 * counts.median()


@pytest.mark.parametrize("shape", [HEAVY, ALL])
def test_realistic_mail_has_internal_mail_spam_and_several_recipients(
    cache: Path, shape: Shape
) -> None:
    frame = export_frame(data_of(cache, shape))
    assert len(frame) == N
    sender_in, recipient_in = internal(frame["SenderAddress"]), internal(frame["RecipientAddress"])
    assert 0.27 <= (sender_in & recipient_in).mean() <= 0.33  # internal-to-internal
    assert not (~sender_in & ~recipient_in).any()  # every row has an internal party
    spam = frame["Status"] == "FilteredAsSpam"
    assert 0.05 <= spam.mean() <= 0.15
    assert not (spam & sender_in).any()  # spam comes in
    per_message = frame.groupby("MessageId")
    recipients = per_message.size()
    assert (recipients > 1).mean() >= 0.3
    assert recipients.max() <= 12
    # one message: one sender, one time, one trace id; never the same recipient twice
    assert (per_message[["SenderAddress", "Received", "MessageTraceId"]].nunique() == 1).all().all()
    lower = frame.assign(r=frame["RecipientAddress"].str.lower())
    assert not lower.duplicated(["MessageId", "r"]).any()
    # the reader of the project takes every row
    assert sum(len(c.frame) for c in detect_file(data_of(cache, shape).export).chunks()) == N


def test_domains_sit_under_public_suffixes_of_one_two_and_three_labels(cache: Path) -> None:
    data = data_of(cache, HEAVY)
    draws = external_draws(export_frame(data))
    domains = draws["address"].str.split("@").str[1].drop_duplicates()
    reserved = domains.str.endswith(".test")
    assert domains[reserved].str.contains(r"(?:^|\.)flagged\d{4}\.test$").all()  # listed sites
    assert reserved.mean() < 0.1  # benign mail is under real public suffixes
    suffixes = domains[~reserved].map(ICANN.publicsuffix)
    assert suffixes.notna().all(), "every other domain is under a known public suffix"
    labels = suffixes.str.count(r"\.") + 1
    shares = labels.value_counts(normalize=True)
    assert set(shares.index) == {1, 2, 3}
    assert shares[2] >= 0.15 and shares[3] >= 0.05
    assert suffixes.str.endswith(".kawasaki.jp").any()  # through the wildcard *.kawasaki.jp
    # the project finds the same registrable domains as the Public Suffix List
    sample = domains[~reserved].sample(500, random_state=1)
    assert [registrable_domain(d) for d in sample] == [ICANN.privatesuffix(d) for d in sample]
    # the feed lists sites under multi-label suffixes, and mail goes to them
    feed = [x for x in data.feed.read_text().splitlines() if x and not x.startswith("#")]
    multi = {d for d in feed if d.startswith("flag") and (ICANN.publicsuffix(d) or "").count(".")}
    assert len(multi) >= 500
    assert any(ICANN.privatesuffix(d) in multi for d in domains)


def test_utf16_exports_are_the_same_text(cache: Path) -> None:
    plain, unicode = data_of(cache, HEAVY), data_of(cache, HEAVY, FORMATS["utf16"])
    blob = unicode.export.read_bytes()
    assert blob.startswith(codecs.BOM_UTF16_LE)  # Export-Csv -Encoding Unicode
    assert blob.decode("utf-16") == plain.export.read_bytes().decode()
    eac, eac16 = data_of(cache, HEAVY, EAC), data_of(cache, HEAVY, FORMATS["eac-utf16"])
    blob = eac16.export.read_bytes()
    assert not blob.startswith(codecs.BOM_UTF16_LE)  # as the admin center's files come
    assert blob.decode("utf-16-le") == eac.export.read_bytes().decode()
    assert detect_file(eac16.export).format == "eac-extended-report"


def test_the_extended_report_has_its_header_and_one_event_per_recipient(cache: Path) -> None:
    data = data_of(cache, HEAVY, EAC)
    frame = export_frame(data)
    assert list(frame.columns) == EAC_HEADER
    assert detect_file(data.export).format == "eac-extended-report"
    receive = frame[frame["event_id"] == "RECEIVE"]
    delivery = frame[frame["event_id"] != "RECEIVE"]
    assert set(delivery["event_id"]) == {"DELIVER", "SEND"}
    assert len(delivery) == N and len(receive) == frame["network_message_id"].nunique()
    listed = receive.set_index("network_message_id")["recipient_address"].str.split(";")
    per_message = delivery.groupby("network_message_id")["recipient_address"].agg(list)
    assert (listed.sort_index() == per_message.sort_index()).all()
    counts = receive.set_index("network_message_id")["recipient_count"].astype(int)
    assert (counts == listed.map(len)).all()
    assert (listed.map(len) > 1).mean() >= 0.3
    # the project reads one row per (message, recipient) and skips the repeated events
    skipped: Counter[str] = Counter()
    rows = 0
    for chunk in detect_file(data.export).chunks():
        rows += len(chunk.frame)
        skipped.update(chunk.skipped)
    assert rows == N
    assert skipped == {"repeated_transport_event": N}


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_the_bare_parse_reads_the_columns_the_connector_converts(cache: Path, fmt: Format) -> None:
    data = data_of(cache, HEAVY, fmt)
    assert set(detect_file(data.export).columns) == set(PARSED_COLUMNS[fmt.layout])
    seconds, rows = run_arrow_parse(data)
    messages = export_frame(data_of(cache, HEAVY))["MessageId"].nunique()
    assert rows == (N if fmt.layout == "powershell" else N + messages)
    assert seconds > 0


def test_mail_is_generated_in_bounded_blocks_of_whole_messages() -> None:
    mail = Mail(10_000, 0.25, seed=1, block=3_000)
    blocks = list(mail.blocks())
    assert [b.num_rows for b in blocks] == [3_000, 3_000, 3_000, 1_000]
    for block in blocks:
        assert block["position"][0].as_py() == 0  # a block starts with a whole message
    numbers = pd.concat([b.select(["message"]).to_pandas() for b in blocks])["message"]
    assert numbers.is_monotonic_increasing  # no message spans two blocks
    assert mail.created > 0  # new addresses were made as the mail went


def test_the_peer_query_counts_what_the_project_counts(cache: Path) -> None:
    data = prepare(N, M, cache)
    head = data.export.read_text().splitlines()[:3]
    assert head[0].startswith("#TYPE Deserialized.Microsoft.Exchange")
    assert head[1].startswith('"PSComputerName","RunspaceId"')
    seconds, peak, matched = run_project(data)
    duck_seconds, duck_matched = run_duckdb(data)
    assert matched == duck_matched
    assert 100 < matched < 400  # about 1% of 20,000 rows go to listed sites
    assert seconds > 0 and duck_seconds > 0 and peak > 50 * 2**20
    count, digest = alerts_digest(data).split()
    assert int(count) >= 0 and len(digest) == 8


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "fmt"),
    [
        (ORIGINAL, FORMATS["utf16"]),
        (HEAVY, CSV),
        (HEAVY, FORMATS["utf16"]),
        (HEAVY, EAC),
        (HEAVY, FORMATS["eac-utf16"]),
        (ALL, CSV),
        (ALL, EAC),
    ],
    ids=lambda x: x.stem if isinstance(x, Shape) else x.name,
)
def test_project_and_duckdb_match_the_same_rows_on_every_shape(
    cache: Path, shape: Shape, fmt: Format
) -> None:
    data = data_of(cache, shape, fmt)
    _, _, matched = run_project(data)
    _, duck_matched = run_duckdb(data)
    assert matched == duck_matched
    assert 50 < matched < 400  # about 1% of the external addresses are listed sites


@pytest.mark.slow
def test_a_scheduled_run_reads_and_matches_what_the_audit_does(cache: Path) -> None:
    data = data_of(cache, HEAVY)
    _, _, audited = run_project(data)
    seconds, peak, matched, rows = run_scheduled(data)
    assert (matched, rows) == (audited, N)
    assert seconds > 0 and peak > 50 * 2**20


@pytest.mark.slow
def test_the_profile_finds_the_time_in_the_pipeline_stages(cache: Path) -> None:
    found = profile(data_of(cache, HEAVY), "audit")
    stages = found.by_stage()
    for stage in ("import", "prepare", "read", "normalise", "match"):
        assert stages[stage] > 0, stage
    assert stages["other"] < 0.2 * found.busy  # the rules cover nearly all of it
    assert found.busy >= 0.5 * found.wall


def test_sizes_and_shapes_read_like_the_issue_writes_them() -> None:
    assert [parse_count(x) for x in ("1M", "100k", "20M", "5000")] == [
        1_000_000,
        100_000,
        20_000_000,
        5_000,
    ]
    assert [s.label for s in parse_shapes("original,heavy-tail,all-distinct", "0.1,0.5")] == [
        "original",
        "heavy-tail 0.1",
        "heavy-tail 0.5",
        "all-distinct",
    ]
    with pytest.raises(SystemExit, match=r"0\.0 to 1\.0"):
        parse_shapes("heavy-tail", "1.5")


def test_a_scheduled_run_evaluates_the_policy_windows_not_the_whole_history(
    tmp_path: Path,
) -> None:
    history, stored, evaluated, evaluation_s, run_s = run_incremental(
        120, per_day=20, new_rows=2_000, feed=2_000, cache=tmp_path
    )
    from compliance.policy.loader import load_policies

    lookback = max(lp.policy.lookback_days for lp in load_policies([ROOT / "policies"]))
    assert lookback < 120  # the store holds more history than the policies need
    assert (history, stored) == (120, 120 * 20)
    # the stored days inside the lookback, plus today's new matches (about 1% of 2,000)
    assert lookback * 20 <= evaluated <= lookback * 20 + 100
    assert 0 < evaluation_s < run_s
