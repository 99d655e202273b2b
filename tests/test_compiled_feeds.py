"""Compiled feeds: the Arrow index and its cache give exactly the entry-by-entry answers."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from compliance.domains import (
    NO_LABELS,
    CompiledIndex,
    DomainIndex,
    Label,
    is_public_suffix,
    normalise_domain,
    normalise_domains,
    parent_suffixes,
    public_suffix_mask,
)
from compliance.feeds import FeedSpec, load_feed, load_feeds
from compliance.feeds.cache import FeedCache
from tests.conftest import FIXTURES

FEEDS = FIXTURES / "feeds"
SPECS = [
    FeedSpec(FEEDS / "aegis-adult-services.txt", "escort-ads"),
    FeedSpec(FEEDS / "aegis-hosts.txt", "adult"),
    FeedSpec(FEEDS / "aegis-adblock.txt", "adult"),
    FeedSpec(FEEDS / "blocklistproject-scam-dnsmasq.txt", "scam"),
]


def _probes(index: DomainIndex, listed: list[str]) -> list[str]:
    """Listed names, their subdomains and parents, look-alikes and unrelated names."""
    probes = ["", "com", "com.au", "unrelated.example", "a.b.c.d.e.f.test"]
    for domain in listed:
        probes += [domain, f"www.{domain}", f"a.b.{domain}", f"not{domain}", f"{domain}.evil.test"]
        probes += list(parent_suffixes(domain))[1:]
    return probes


def _names(spec: FeedSpec) -> list[str]:
    index = DomainIndex()
    load_feed(spec, index)
    return list(index._ids)


def test_the_compiled_index_answers_like_the_entry_by_entry_one(tmp_path: Path) -> None:
    reference = DomainIndex()
    for spec in SPECS:
        load_feed(spec, reference)
    compiled, infos = load_feeds(SPECS)
    assert [i.entries for i in infos] == [
        load_feed(s, DomainIndex()).entries for s in SPECS
    ]  # the same rows accepted
    listed = [name for spec in SPECS for name in _names(spec)]
    probes = _probes(reference, listed)
    ids = compiled.lookup_ids(pa.array(probes, pa.string()))
    got = [compiled.sets[i] if i != NO_LABELS else frozenset() for i in ids]
    expected = [reference.lookup(p) if p else frozenset() for p in probes]
    assert got == expected
    assert [compiled.lookup(p) for p in probes if p] == [
        e for p, e in zip(probes, expected, strict=True) if p
    ]
    assert sum(bool(e) for e in expected) > 300  # many probes are listed


def test_the_hash_table_finds_what_the_sorted_domains_find(tmp_path: Path) -> None:
    """Exact names are looked up by hash; every answer is the binary search's over the
    sorted domains, for listed names, near misses and nulls, from a compiled index, one
    read back from the cache, and one whose hashes collide (which compares names)."""
    compiled, _ = load_feeds(SPECS, tmp_path / "cache")
    cached, _ = load_feeds(SPECS, tmp_path / "cache")
    base, read_back = compiled.compiled, cached.compiled
    assert base is not None and read_back is not None
    assert read_back.hashes is not None  # stored with the index, not computed again
    listed = base.domains.to_pylist()
    rng = random.Random(5)
    names = [*rng.sample(listed, len(listed)), None, "", "com"]
    names += [n[1:] for n in names[:200] if n] + [f"x{n}" for n in names[:200] if n]
    names += [n.upper() for n in names[:50] if n]
    probe = pa.array(names, pa.string())
    expected = base._find_sorted(probe)
    assert (base.find(probe) == expected).all()
    assert (read_back.find(probe) == expected).all()
    assert (expected >= -1).sum() >= len(listed)  # the listed ones are found
    colliding = CompiledIndex(
        base.domains,
        base.set_ids,
        base.sets,
        np.zeros(len(base.domains), np.uint64),  # every domain one hash
        np.arange(len(base.domains), dtype=np.int32),
    )
    assert colliding.hash_table() is None
    assert (colliding.find(probe) == expected).all()


def test_labels_join_and_exceptions_win_across_feeds(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("shared.test\nonly-a.test\nclassifieds.test\n")
    (tmp_path / "b.csv").write_text("domain,category\nshared.test,adult\nSHARED.test.,adult\n")
    (tmp_path / "c.txt").write_text("||classifieds.test^\n@@||jobs.classifieds.test^\n")
    specs = [
        FeedSpec(tmp_path / "a.txt", "escort-ads"),
        FeedSpec(tmp_path / "b.csv"),
        FeedSpec(tmp_path / "c.txt", "adult"),
    ]
    index, _ = load_feeds(specs)
    assert index.lookup("www.shared.test") == {Label("escort-ads", "a"), Label("adult", "b")}
    assert index.lookup("x.classifieds.test") == {Label("escort-ads", "a"), Label("adult", "c")}
    assert index.lookup("jobs.classifieds.test") == frozenset()
    assert index.lookup("a.jobs.classifieds.test") == frozenset()
    assert index.lookup("notshared.test") == frozenset()


def test_entries_added_later_join_or_override_the_compiled_ones(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("listed.test\nalso.test\n")
    index, _ = load_feeds([FeedSpec(tmp_path / "feed.txt", "escort-ads")])
    index.add("listed.test", Label("policy", "p1"))  # a policy's own domain
    index.add("extra.test", Label("policy", "p1"))
    index.add_exception("sub.also.test")
    names = ["a.listed.test", "extra.test", "sub.also.test", "x.sub.also.test", "also.test"]
    ids = index.lookup_ids(pa.array(names))
    assert [index.sets[i] if i >= 0 else frozenset() for i in ids] == [
        {Label("escort-ads", "feed"), Label("policy", "p1")},
        {Label("policy", "p1")},
        frozenset(),
        frozenset(),
        {Label("escort-ads", "feed")},
    ]
    assert [index.lookup(n) for n in names] == [
        index.sets[i] if i >= 0 else frozenset() for i in ids
    ]


def test_the_cache_is_used_while_feeds_are_unchanged(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("one.test\ntwo.test\n")
    cache = tmp_path / "cache"
    spec = FeedSpec(feed, "escort-ads")
    first, infos = load_feeds([spec], cache)
    assert first.contains("www.two.test")
    (stored,) = cache.glob("*.feeds.arrow")
    again, infos_again = load_feeds([spec], cache)
    assert infos_again == infos
    assert again.contains("www.two.test")
    assert list(cache.glob("*.feeds.arrow")) == [stored]

    feed.write_text("one.test\nthree.test\n")  # new content: a new key, never the stale index
    changed, infos_changed = load_feeds([spec], cache)
    assert changed.contains("three.test") and not changed.contains("two.test")
    assert infos_changed[0].sha256 != infos[0].sha256
    other, _ = load_feeds([FeedSpec(feed, "adult")], cache)  # a setting is part of the key
    assert other.lookup("three.test") == {Label("adult", "feed")}


def test_a_damaged_cache_costs_time_not_correctness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("one.test\n")
    cache = tmp_path / "cache"
    load_feeds([FeedSpec(feed, "escort-ads")], cache)
    (stored,) = cache.glob("*.feeds.arrow")
    stored.write_bytes(b"not an arrow file")
    with caplog.at_level(logging.WARNING):
        index, _ = load_feeds([FeedSpec(feed, "escort-ads")], cache)
    assert index.contains("one.test")
    assert "unreadable" in caplog.text


def test_an_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("one.test\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        index, _ = load_feeds([FeedSpec(feed, "escort-ads")], blocker / "cache")
    assert index.contains("one.test")
    assert "cannot write the feed cache" in caplog.text


def test_old_cache_entries_are_pruned(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    cache = FeedCache(tmp_path / "cache")
    for i in range(7):
        feed.write_text(f"site{i}.test\n")
        load_feeds([FeedSpec(feed, "escort-ads")], cache.folder)
    assert len(list(cache.folder.glob("*.feeds.arrow"))) == 4


def test_vectorised_domain_normalisation_equals_the_scalar_one() -> None:
    rng = random.Random(11)
    alphabet = "abcXYZ019._- <>ü\t。*#xn--"
    values: list[str | None] = [
        "", ".", "a.test.", "A.TEST..", "xn--bcher-kva.example", "XN--BCHER-KVA.example",
        "bücher.example", "-a.test", "a-.test", "a_b.test", "a" * 63 + ".test",
        "a" * 64 + ".test", ".".join(["abcdefgh"] * 32), None,
    ]  # fmt: skip
    for _ in range(20_000):
        values.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))))
    got = normalise_domains(pa.array(values, pa.string())).to_pylist()
    expected = [normalise_domain(v) for v in values]
    mismatches = [(v, g, e) for v, g, e in zip(values, got, expected, strict=True) if g != e]
    assert not mismatches, mismatches[:10]
    assert sum(e is not None for e in expected) > 2_000


def test_vectorised_public_suffix_check_equals_the_scalar_one() -> None:
    names = [
        "com", "com.au", "escortify.com.au", "kobe.jp", "city.kobe.jp", "x.kobe.jp",
        "ck", "www.ck", "foo.ck", "a.foo.ck", "test", "a.test", "co.uk", "bbc.co.uk",
        "blogspot.com", "s3.amazonaws.com", "xn--p1ai", "xn--80ak6aa92e.xn--p1ai",
    ]  # fmt: skip
    assert public_suffix_mask(pa.array(names)).tolist() == [is_public_suffix(n) for n in names]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("", "var/feed-cache"),
        ("feed_cache: cache/feeds\n", "cache/feeds"),
        ("feed_cache: false\n", None),
    ],
)
def test_the_configured_feed_cache_folder(
    tmp_path: Path, setting: str, expected: str | None
) -> None:
    from compliance.config import load_config

    (tmp_path / "feed.txt").write_text("one.test\n")
    config = tmp_path / "compliance.yaml"
    config.write_text(
        "organisation: {domains: [corp.example]}\n"
        "sources: [{name: x, type: exchange, path: inbox}]\n"
        "feeds: [{path: feed.txt, category: escort-ads}]\n"
        "policies: [policies]\n"
        "store: var/store.db\n" + setting
    )
    folder = load_config(config).feed_cache_folder()
    assert folder == (tmp_path / expected if expected else None)
