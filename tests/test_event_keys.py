"""Event keys: the vectorised SipHash-2-4 checked against a reference written from the
specification and its published vectors, the keys of scheme 2 (one keyed SipHash per
distinct string, combined by one more), and the cutover that lets a store written with
scheme-1 keys (keyed BLAKE2b) upgrade without ever counting a message twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compliance.directory import Directory
from compliance.domains import DomainIndex, Label
from compliance.events import empty_raw
from compliance.pipeline import Context, org_index, process_chunk
from compliance.privacy import Pseudonymiser, siphash24, siphash24_words
from compliance.store import Store
from compliance.store.meta import EVENT_KEYS
from tests.conftest import (
    TEST_KEY,
    ps_row,
    run_cli,
    store_db,
    week_of_mail_rows,
    write_config,
    write_ps_export,
)

TODAY = "2026-11-20"
MASK = (1 << 64) - 1

# --- SipHash-2-4 as the paper (Aumasson, Bernstein: "SipHash: a fast short-input PRF",
# 2012) specifies it, one message at a time, to check the project's vectorised one ----


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & MASK


def _sip_round(v: list[int]) -> None:
    v[0] = (v[0] + v[1]) & MASK
    v[1] = _rotl(v[1], 13) ^ v[0]
    v[0] = _rotl(v[0], 32)
    v[2] = (v[2] + v[3]) & MASK
    v[3] = _rotl(v[3], 16) ^ v[2]
    v[0] = (v[0] + v[3]) & MASK
    v[3] = _rotl(v[3], 21) ^ v[0]
    v[2] = (v[2] + v[1]) & MASK
    v[1] = _rotl(v[1], 17) ^ v[2]
    v[2] = _rotl(v[2], 32)


def reference_siphash(key: bytes, message: bytes) -> int:
    """SipHash-2-4 of ``message`` under a 16-byte ``key``: 2 compression rounds per
    8-byte little-endian word, the last word padded with zeros and the length mod 256 in
    its top byte, then 4 finalisation rounds after ``v2 ^= 0xff``."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [
        k0 ^ 0x736F6D6570736575,
        k1 ^ 0x646F72616E646F6D,
        k0 ^ 0x6C7967656E657261,
        k1 ^ 0x7465646279746573,
    ]
    padded = message + b"\x00" * (7 - len(message) % 8) + bytes([len(message) % 256])
    for i in range(0, len(padded), 8):
        m = int.from_bytes(padded[i : i + 8], "little")
        v[3] ^= m
        _sip_round(v)
        _sip_round(v)
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(4):
        _sip_round(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


#: The reference implementation's vectors (vectors.h, ``vectors_sip64``): key 00 01 .. 0f,
#: message ``i`` the bytes 00 01 .. (i - 1).
VECTOR_KEY = bytes(range(16))
VECTORS = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB, 0x699AE9F52CBE4794, 0x4BC1B3F0968DD39C, 0xBB6DC91DA77961BD,
    0xBED65CF21AA2EE98, 0xD0F2CBB02E3B67C7, 0x93536795E3A33E88, 0xA80C038CCD5CCEC8,
    0xB8AD50C6F649AF94, 0xBCE192DE8A85B8EA, 0x17D835B85BBB15F3, 0x2F2E6163076BCFAD,
    0xDE4DAAACA71DC9A5, 0xA6A2506687956571, 0xAD87A3535C49EF28, 0x32D892FAD841C342,
    0x7127512F72F27CCE, 0xA7F32346F95978E3, 0x12E0B01ABB051238, 0x15E034D40FA197AE,
    0x314DFFBE0815A3B4, 0x027990F029623981, 0xCADCD4E59EF40C4D, 0x9ABFD8766A33735C,
    0x0E3EA96B5304A7D0, 0xAD0C42D6FC585992, 0x187306C89BC215A9, 0xD4A60ABCF3792B95,
    0xF935451DE4F21DF2, 0xA9538F0419755787, 0xDB9ACDDFF56CA510, 0xD06C98CD5C0975EB,
    0xE612A3CB9ECBA951, 0xC766E62CFCADAF96, 0xEE64435A9752FE72, 0xA192D576B245165A,
    0x0A8787BF8ECB74B2, 0x81B3E73D20B49B6F, 0x7FA8220BA3B2ECEA, 0x245731C13CA42499,
    0xB78DBFAF3A8D83BD, 0xEA1AD565322A1A0B, 0x60E61C23A3795013, 0x6606D7E446282B93,
    0x6CA4ECB15C5F91E1, 0x9F626DA15C9625F3, 0xE51B38608EF25F57, 0x958A324CEB064572,
]  # fmt: skip


def test_the_reference_gives_the_published_vectors() -> None:
    assert reference_siphash(VECTOR_KEY, b"") == 0x726FDB47DD0E0E31
    assert reference_siphash(VECTOR_KEY, bytes(range(15))) == 0xA129CA6149BE45E5
    assert [reference_siphash(VECTOR_KEY, bytes(range(i))) for i in range(64)] == VECTORS


def test_vectorised_siphash_gives_the_published_vectors() -> None:
    # bytes 00..3f are ASCII, so each message is also a UTF-8 string
    messages = pa.array([bytes(range(i)).decode() for i in range(64)])
    assert siphash24(VECTOR_KEY, messages).tolist() == VECTORS
    # a slice (an array with an offset into its buffers) and large strings
    assert siphash24(VECTOR_KEY, messages[9:]).tolist() == VECTORS[9:]
    assert siphash24(VECTOR_KEY, messages.cast(pa.large_string())).tolist() == VECTORS


TEXT = st.characters(blacklist_categories=("Cs",))  # any character UTF-8 can encode
VALUES = st.one_of(
    st.none(),
    st.text(TEXT, max_size=7),  # empty, 1..7 bytes (and more: non-ASCII is wider)
    st.integers(1, 8).map(lambda n: "x" * (8 * n)),  # whole words only
    st.text(TEXT, min_size=8, max_size=90),  # message ids and addresses, or longer
    st.text(TEXT, min_size=300, max_size=700),  # beyond what is hashed word by word
)


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUES, max_size=60), st.binary(min_size=16, max_size=16))
def test_vectorised_siphash_matches_the_reference(values: list[str | None], key: bytes) -> None:
    got = siphash24(key, pa.array(values, pa.string()))
    want = [reference_siphash(key, (v or "").encode()) for v in values]
    assert got.tolist() == want


def test_values_of_every_length_hash_as_the_reference() -> None:
    # every tail length, and around the length from which values are hashed one by one
    lengths = [*range(41), 1016, 1023, 1024, 1025, 1032, 5000]
    values = [("ab\u00e9" * 3000).encode()[:n].decode(errors="ignore") for n in lengths]
    got = siphash24(VECTOR_KEY, pa.array(values))
    assert got.tolist() == [reference_siphash(VECTOR_KEY, v.encode()) for v in values]


WORD = st.integers(0, MASK)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(WORD, WORD, WORD), max_size=40), st.binary(min_size=16, max_size=16))
def test_word_siphash_is_siphash_of_the_words_bytes(
    rows: list[tuple[int, int, int]], key: bytes
) -> None:
    columns = [np.array([r[i] for r in rows], dtype=np.uint64) for i in range(3)]
    got = siphash24_words(key, columns)
    want = [reference_siphash(key, b"".join(w.to_bytes(8, "little") for w in r)) for r in rows]
    assert got.tolist() == want


# --- the event keys of both schemes, as a user of the store would recompute them -----


def scheme1_key(key: bytes, message_id: str, sender: str, recipient: str) -> int:
    """The event key stores held before scheme 2: keyed BLAKE2b of the joined parts."""
    event_key = hmac.new(key, b"event-key", hashlib.sha256).digest()
    joined = f"{message_id}\x00{sender}\x00{recipient}".encode()
    digest = hashlib.blake2b(joined, key=event_key, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def scheme2_key(key: bytes, message_id: str, sender: str, recipient: str) -> int:
    """Scheme 2: each part's SipHash under the first half of a key derived for this use,
    the three results combined by SipHash under the second half."""
    derived = hmac.new(key, b"event-key-siphash", hashlib.sha256).digest()
    words = [reference_siphash(derived[:16], p.encode()) for p in (message_id, sender, recipient)]
    combined = reference_siphash(derived[16:], b"".join(w.to_bytes(8, "little") for w in words))
    return int.from_bytes(combined.to_bytes(8, "little"), "little", signed=True)


def _keys(
    pseudo: Pseudonymiser, rows: list[tuple[str, str, str]], day: str = "2026-11-03"
) -> list[int]:
    ids, senders, recipients = (pa.array([r[i] for r in rows]) for i in range(3))
    days = pa.array([day] * len(rows))
    keys: list[int] = pseudo.event_keys(ids, senders, recipients, days).tolist()
    return keys


MESSAGE = ("<m1@mail.corp.example>", "u1@corp.example", "book@escort-ads.test")


def test_scheme2_keys_are_the_specified_ones_and_differ_under_another_key() -> None:
    key = TEST_KEY.encode()
    assert _keys(Pseudonymiser(key), [MESSAGE]) == [scheme2_key(key, *MESSAGE)]
    other = Pseudonymiser(b"another-key-0123456789abcdef0123456789")
    assert _keys(other, [MESSAGE]) != _keys(Pseudonymiser(key), [MESSAGE])


def test_a_few_rows_of_a_large_dictionary_get_the_keys_of_plain_strings() -> None:
    """The matched rows of a chunk index its whole address dictionary: hashing only the
    values they use gives the specified keys, a null row and a null entry as ``""``."""
    key = TEST_KEY.encode()
    addresses = pa.array([f"u{i}@corp.example" for i in range(100)] + [None])
    at = [7, 99, 7, 100, None]  # a repeat, a null entry of the dictionary, a null row
    encoded = pa.DictionaryArray.from_arrays(pa.array(at, pa.int32()), addresses)
    ids = pa.array([f"<m{i}@mail.corp.example>" for i in range(len(at))])
    recipient = "book@escort-ads.test"
    keys = Pseudonymiser(key).event_keys(
        ids, encoded, pa.array([recipient] * len(at)), pa.array(["2026-11-03"] * len(at))
    )
    senders = ["u7@corp.example", "u99@corp.example", "u7@corp.example", "", ""]
    assert keys.tolist() == [
        scheme2_key(key, i.as_py(), s, recipient) for i, s in zip(ids, senders, strict=True)
    ]


def test_messages_differing_in_one_part_get_different_keys() -> None:
    mid, sender, recipient = MESSAGE
    variants = [
        MESSAGE,
        ("<m2@mail.corp.example>", sender, recipient),
        (mid, "u2@corp.example", recipient),
        (mid, sender, "info@escort-ads.test"),
        (mid, recipient, sender),  # the same two parties the other way round
        ("", sender, recipient),  # no message id
    ]
    keys = _keys(Pseudonymiser(TEST_KEY.encode()), variants)
    assert len(set(keys)) == len(variants)


def _context(scheme1_through: str | None) -> Context:
    index = DomainIndex()
    index.add("escort-ads.test", Label("escort-ads", "feed"))
    return Context(
        org_index(["corp.example"]),
        Directory(),
        Pseudonymiser(TEST_KEY.encode()),
        index,
        scheme1_through=scheme1_through,
    )


def _raw(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """A raw chunk of (time, message id, sender, recipient) rows."""
    raw = empty_raw().reindex(range(len(rows)))
    raw["timestamp"] = pd.to_datetime([r[0] for r in rows], utc=True).astype("datetime64[ns, UTC]")
    raw["message_id"] = pd.Series([r[1] for r in rows], dtype="string")
    raw["sender"] = pd.Series([r[2] for r in rows], dtype="string")
    raw["recipient"] = pd.Series([r[3] for r in rows], dtype="string")
    raw["status"] = pd.Series(["Delivered"] * len(rows), dtype="string")
    raw["size"] = pd.Series([1000] * len(rows), dtype="Int64")
    return raw


def _keyed(raw: pd.DataFrame, ctx: Context) -> dict[tuple[str, str, str], int]:
    """The event key of each (message id, sender, recipient) of a processed chunk, from
    its keyed messages, checked against its matched events."""
    result = process_chunk(raw, "test", ctx, with_keyed_messages=True)
    assert result.keyed_messages is not None
    keys = result.keyed_messages["event_key"].tolist()
    assert set(result.matched["event_key"]) <= set(keys)
    return {
        (str(m), str(s).lower(), str(r).lower()): k
        for m, s, r, k in zip(raw["message_id"], raw["sender"], raw["recipient"], keys, strict=True)
    }


@pytest.mark.parametrize("cutover", [None, "2026-11-03"])
def test_a_message_gets_the_same_key_in_any_chunk(cutover: str | None) -> None:
    ctx = _context(cutover)
    old = ("2026-11-03T10:00:00Z", "<m1@mail.corp.example>", "u1@corp.example")
    new = ("2026-11-04T10:00:00Z", "<m2@mail.corp.example>", "U2@corp.example")
    first = _raw(
        [
            (*old, "book@escort-ads.test"),
            (*old, "sales@partner.example"),  # the same message to a second recipient
            (
                "2026-11-04T09:00:00Z",
                "<m3@mail.corp.example>",
                "u3@corp.example",
                "u4@corp.example",
            ),
            (*new, "book@escort-ads.test"),
        ]
    )
    second = _raw(
        [
            (
                "2026-11-05T09:00:00Z",
                "<m4@mail.corp.example>",
                "u5@corp.example",
                "x@partner.example",
            ),
            (*new, "book@escort-ads.test"),
            (
                "2026-11-03T09:00:00Z",
                "<m5@mail.corp.example>",
                "u6@corp.example",
                "y@partner.example",
            ),
            (*old, "sales@partner.example"),
            (*old, "book@escort-ads.test"),
        ]
    )
    a, b = _keyed(first, ctx), _keyed(second, ctx)
    shared = set(a) & set(b)
    assert len(shared) == 3
    assert all(a[k] == b[k] for k in shared)
    # the scheme follows the message's day and the cutover, never the chunk
    key = TEST_KEY.encode()
    for parts, value in {**a, **b}.items():
        on_old_day = parts[0] in ("<m1@mail.corp.example>", "<m5@mail.corp.example>")
        scheme = scheme1_key if cutover is not None and on_old_day else scheme2_key
        assert value == scheme(key, *parts), parts


# --- the cutover of a store, run after run ----------------------------------------


@pytest.fixture
def deployment(tmp_path: Path, directory_csv: Path, escort_feed: Path) -> Path:
    """A deployment with a store, the week of :func:`week_of_mail_rows` in its inbox."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_ps_export(inbox / "week1.csv", week_of_mail_rows())
    return write_config(
        tmp_path / "compliance.yaml", directory_csv, escort_feed, "store: var/store.db\n"
    )


def _counts(config: Path) -> tuple[int, int, int]:
    """(matched events, messages counted, repeats the latest run saw)."""
    with store_db(config) as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        totals = db.execute("SELECT coalesce(sum(messages), 0) FROM daily_totals").fetchone()[0]
        repeats = db.execute("SELECT rows_duplicate FROM runs ORDER BY id DESC").fetchone()[0]
    return int(events), int(totals), int(repeats)


def _scheme(config: Path) -> dict[str, object] | None:
    with Store.open(config.parent / "var" / "store.db") as store:
        return store.meta.event_key_scheme()


def _event_keys(config: Path) -> dict[str, int]:
    """The stored event key of each matched event, by its day."""
    with store_db(config) as db:
        return {str(d): int(k) for d, k in db.execute("SELECT day, event_key FROM events")}


def _escort_key(scheme: object, index: int) -> int:
    """The key of the week's message number ``index`` to escort-ads.test (from alias1)."""
    mid = f"<m{index:06d}@mail.corp.example>"
    assert callable(scheme)
    return int(scheme(TEST_KEY.encode(), mid, "alias1@corp.example", "book@escort-ads.test"))


def _pre_upgrade_store(config: Path) -> None:
    """A store as the code before scheme 2 left it: every key scheme 1, and no record of
    a scheme (the run is made to key every day with scheme 1, then the record removed)."""
    with Store.open(config.parent / "var" / "store.db") as store:
        store.meta.remember(EVENT_KEYS, json.dumps({"scheme": 2, "scheme1_through": "9999-12-31"}))
    assert run_cli(config, TODAY)[0] == 0
    with sqlite3.connect(config.parent / "var" / "store.db") as db:
        db.execute("DELETE FROM meta WHERE key = ?", (EVENT_KEYS,))


LATER = [  # a new message on the store's last day, then mail of later days
    ps_row("11/9/2026 3:00:00 PM", "u3@corp.example", "sales@partner.example", index=200),
    ps_row("11/10/2026 10:00:00 AM", "alias1@corp.example", "book@escort-ads.test", index=201),
    ps_row("11/11/2026 10:00:00 AM", "u5@corp.example", "x@partner.example", index=202),
]


def test_an_upgraded_store_counts_nothing_twice(deployment: Path) -> None:
    _pre_upgrade_store(deployment)
    assert _counts(deployment) == (3, 21, 0)
    before = _event_keys(deployment)
    assert before == {
        "2026-11-02": _escort_key(scheme1_key, 0),
        "2026-11-04": _escort_key(scheme1_key, 1),
        "2026-11-09": _escort_key(scheme1_key, 2),
    }
    # the upgrade: an export that repeats the whole week and goes on after it
    inbox = deployment.parent / "inbox"
    write_ps_export(inbox / "week1-again.csv", [*week_of_mail_rows(), *LATER], encoding="utf-16")
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    assert _scheme(deployment) == {"scheme": 2, "scheme1_through": "2026-11-09"}
    assert _counts(deployment) == (4, 24, 21)  # the three new messages only
    after = _event_keys(deployment)
    assert {d: after[d] for d in before} == before
    assert after["2026-11-10"] == _escort_key(scheme2_key, 201)
    # read once more (another file, the same mail): still nothing twice, on either side
    write_ps_export(inbox / "all-again.csv", [*LATER, *week_of_mail_rows()], newline="\n")
    assert run_cli(deployment, TODAY)[0] == 0
    assert _counts(deployment) == (4, 24, 24)
    assert _scheme(deployment) == {"scheme": 2, "scheme1_through": "2026-11-09"}
    with store_db(deployment) as db:
        logged = db.execute(
            "SELECT details FROM audit_log WHERE action = 'event_keys.scheme'"
        ).fetchall()
    assert [json.loads(d) for (d,) in logged] == [{"scheme": 2, "scheme1_through": "2026-11-09"}]


def test_a_fresh_store_keys_every_day_with_scheme2(deployment: Path) -> None:
    assert run_cli(deployment, TODAY)[0] == 0
    assert _scheme(deployment) == {"scheme": 2, "scheme1_through": None}
    assert _event_keys(deployment) == {
        "2026-11-02": _escort_key(scheme2_key, 0),
        "2026-11-04": _escort_key(scheme2_key, 1),
        "2026-11-09": _escort_key(scheme2_key, 2),
    }
    inbox = deployment.parent / "inbox"
    write_ps_export(inbox / "overlap.csv", [*week_of_mail_rows(), *LATER], encoding="utf-16")
    assert run_cli(deployment, TODAY)[0] == 0
    assert _counts(deployment) == (4, 24, 21)
    assert _scheme(deployment) == {"scheme": 2, "scheme1_through": None}


def _escort_row(received: str, index: int) -> list[str]:
    return ps_row(received, "alias1@corp.example", "book@escort-ads.test", index=index)


def test_a_message_dated_either_side_of_the_cutover_counts_once(deployment: Path) -> None:
    """Two exports may date one message a day apart (a delivery just past midnight), and
    the cutover gives the two days keys of different schemes: still counted once, however
    the copies come (the old one again after it, a new one again before it, both in one
    file)."""
    _pre_upgrade_store(deployment)  # the store's last day: 2026-11-09 (message 2)
    assert _counts(deployment) == (3, 21, 0)
    inbox = deployment.parent / "inbox"
    write_ps_export(
        inbox / "late.csv",
        [_escort_row("11/10/2026 12:30:00 AM", 2), _escort_row("11/10/2026 12:05:00 AM", 300)],
    )
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    assert _scheme(deployment) == {"scheme": 2, "scheme1_through": "2026-11-09"}
    assert _counts(deployment) == (4, 22, 1)  # message 2 a repeat, 300 new
    write_ps_export(
        inbox / "early.csv",
        [
            _escort_row("11/9/2026 11:55:00 PM", 300),  # counted after the cutover
            _escort_row("11/9/2026 11:50:00 PM", 301),  # new, and its copy a day later
            _escort_row("11/10/2026 12:10:00 AM", 301),
        ],
    )
    code, output = run_cli(deployment, TODAY)
    assert code == 0, output
    assert _counts(deployment) == (5, 23, 2)
    with store_db(deployment) as db:
        stored = db.execute("SELECT day, count(*) FROM events GROUP BY day ORDER BY day")
        assert stored.fetchall() == [
            ("2026-11-02", 1), ("2026-11-04", 1), ("2026-11-09", 2), ("2026-11-10", 1),
        ]  # fmt: skip
