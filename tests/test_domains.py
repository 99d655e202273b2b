"""Domain semantics: the rules that decide whether somebody is accused."""

from __future__ import annotations

import re

import pytest

from compliance.domains import (
    DomainIndex,
    Label,
    is_public_suffix,
    normalise_domain,
    registrable_domain,
    split_address,
)
from tests.conftest import sample

ESCORT = Label("escort-ads", "feed")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Escort-Ads.TEST", "escort-ads.test"),
        ("  escort-ads.test.  ", "escort-ads.test"),
        ("<escort-ads.test>", "escort-ads.test"),
        ("escort-ads.test..", "escort-ads.test"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.EXAMPLE.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("faß.example", "xn--fa-hia.example"),  # IDNA 2008, not 2003's "fass"
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("ｅｓｃｏｒｔ.test", "escort.test"),  # full-width letters mapped by UTS #46
    ],
)
def test_normalise_domain(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "   ", "a..b.test", "-bad.test", "bad-.test", "[192.0.2.1]", "a b.test", None, 3]
)
def test_invalid_domains_are_rejected(raw: object) -> None:
    assert normalise_domain(raw) is None


def test_split_address() -> None:
    assert split_address(" <Alice@Corp.Example> ") == ("Alice", "Corp.Example")
    assert split_address('"odd@local"@corp.example') == ('"odd@local"', "corp.example")
    assert split_address("no-at-sign") is None
    assert split_address("@corp.example") is None
    # a display name is dropped: every spelling of a mailbox is one address
    assert split_address("Alice Example <alice@corp.example>") == ("alice", "corp.example")
    assert split_address('"Example, Alice" <alice@corp.example> ') == ("alice", "corp.example")
    assert split_address("book@site.test <alice@corp.example>") == ("alice", "corp.example")
    assert split_address('"john doe"@corp.example') == ('"john doe"', "corp.example")
    # white space or a bracket in an unquoted local part: no address
    for broken in ("john doe@corp.example", "a<b@corp.example", "x <>", "bad>", "<a@b> tail"):
        assert split_address(broken) is None, broken


def test_entry_matches_itself_and_subdomains_only() -> None:
    index = DomainIndex.from_domains(["backpage.test"], ESCORT)
    assert index.contains("backpage.test")
    assert index.contains("www.backpage.test")
    assert index.contains("a.b.backpage.test")
    assert not index.contains("notbackpage.test")
    assert not index.contains("backpage.test.other.test")
    assert not index.contains("backpage.testing")
    assert not index.contains("test")


def test_idn_entry_matches_unicode_and_punycode_input() -> None:
    entry = normalise_domain("bücher.example")
    assert entry is not None
    index = DomainIndex.from_domains([entry], ESCORT)
    for spelling in ("www.bücher.example", "WWW.XN--BCHER-KVA.EXAMPLE.", "bücher.example"):
        domain = normalise_domain(spelling)
        assert domain is not None
        assert index.contains(domain), spelling
    assert not index.contains(normalise_domain("bucher.example") or "")


def test_most_specific_entry_wins_exceptions() -> None:
    index = DomainIndex.from_domains(["classifieds.test"], ESCORT)
    index.add_exception("jobs.classifieds.test")
    assert index.contains("adult.classifieds.test")
    assert not index.contains("jobs.classifieds.test")
    assert not index.contains("www.jobs.classifieds.test")


def test_labels_accumulate_per_domain() -> None:
    index = DomainIndex()
    index.add("x.test", Label("escort-ads", "a"))
    index.add("x.test", Label("adult", "b"))
    index.add("sub.x.test", Label("dating", "c"))
    assert {lb.category for lb in index.lookup("www.x.test")} == {"escort-ads", "adult"}
    assert {lb.category for lb in index.lookup("sub.x.test")} == {"dating"}


@pytest.mark.parametrize(
    ("domain", "registrable"),
    [
        ("www.escort-ads.test", "escort-ads.test"),
        ("a.b.shop.co.uk", "shop.co.uk"),
        ("x.y.example.com.au", "example.com.au"),
        ("someone.blogspot.com", "someone.blogspot.com"),  # private section counts
        ("co.uk", "co.uk"),
    ],
)
def test_registrable_domain(domain: str, registrable: str) -> None:
    assert registrable_domain(domain) == registrable


def test_public_suffixes() -> None:
    assert is_public_suffix("com")
    assert is_public_suffix("com.au")
    assert not is_public_suffix("escort-ads.test")
    assert not is_public_suffix("example.com.au")
    # the private section: a hosting platform's zone holds everyone's sites
    for platform in ("github.io", "blogspot.com", "s3.amazonaws.com", "herokuapp.com"):
        assert is_public_suffix(platform), platform
    assert not is_public_suffix("someone.github.io")


def test_registrable_domain_against_the_psl_test_file() -> None:
    """The Public Suffix List's own test vectors (CC0), for listed, valid domains."""
    text = sample("publicsuffix__list", "tests", "test_psl.txt").read_text(encoding="utf-8")
    checks = re.findall(r"checkPublicSuffix\('([^']+)', '([^']+)'\);", text)
    assert len(checks) > 40
    for domain, expected in checks:
        normalised = normalise_domain(domain)
        if normalised is None or domain.startswith("."):
            continue
        want = normalise_domain(expected)
        assert registrable_domain(normalised) == want, domain


EDGE_ADDRESSES = [
    "Alice@Corp.EXAMPLE", " <Alice@Corp.EXAMPLE.> ", "alice@corp.example.", "a@b",
    "a@@corp.example", "@corp.example", "alice@", "", " ", "a b@corp.example",
    "alice@bücher.example", "alice@xn--bcher-kva.example", "ALICE@XN--BCHER-KVA.EXAMPLE",
    "alice@-bad.example", "alice@bad-.example", "alice@a..example", "alice@_dmarc.example",
    "o'brien+tag@corp.example", "ünïcode@corp.example", "alice@corp.example\u200b",
    "alice@" + "a" * 63 + ".example", "alice@" + "a" * 64 + ".example",
    "alice@" + ".".join(["abcdefghi"] * 25) + ".example", "<alice@corp.example",
    "alice@corp.example>", "a\tb@corp.example", "alice@CORP.example。", "x@1.2.3.4",
]  # fmt: skip


@pytest.mark.parametrize(
    ("alphabet", "edges"),
    [
        ("abcXYZ019._-+@ <>ü\t。'xn--", EDGE_ADDRESSES),  # anything: value by value
        # plain ASCII, no IDNA label: the chunk-wide fast path, long addresses included
        ("abcXYZ019._-+@ <>\t'", [a for a in EDGE_ADDRESSES if a.isascii() and "n--" not in a]),
        ("abcXYZ019._-+@'", ["x@" + ".".join(["a" * 60] * 5), "y@" + "b" * 300]),
        ("abcXYZ019._-+@ ", ["alice@XN--bcher-kva.example", "bob@Xn--x.example"]),
    ],
)
def test_vectorised_address_normalisation_equals_the_scalar_one(
    alphabet: str, edges: list[str]
) -> None:
    import random

    import pandas as pd

    from compliance.addresses import normalise_address, normalise_addresses

    rng = random.Random(7)
    values: list[object] = list(edges)
    for _ in range(20_000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        domain = ".".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
            for _ in range(rng.randint(1, 4))
        )
        values.append(f"{local}@{domain}" if rng.random() < 0.9 else local + domain)
    values += [None, pd.NA]
    series = pd.Series(values, dtype="string")
    got = normalise_addresses(series).tolist()
    expected = [normalise_address(v) if isinstance(v, str) else None for v in values]
    mismatches = [(v, g, e) for v, g, e in zip(values, got, expected, strict=True) if g != e]
    assert not mismatches, mismatches[:10]
    assert sum(e is not None for e in expected) > 500  # the sample has many valid addresses


def test_contains_all_equals_contains_for_small_and_large_indexes() -> None:
    import pandas as pd

    from compliance.domains import DomainIndex, Label

    small = DomainIndex.from_domains(["corp.example", "sub.other.test"], Label("i", "org"))
    large = DomainIndex.from_domains([f"d{i}.test" for i in range(100)], Label("c", "f"))
    large.add_exception("x.d5.test")
    nested = DomainIndex.from_domains(["d5.test", "other.test"], Label("i", "org"))
    nested.add_exception("x.d5.test")
    nested.add("y.x.d5.test", Label("i", "org"))  # listed again under the exception
    values = pd.Series(
        [
            "corp.example", "mail.corp.example", "notcorp.example", "corp.example.evil.test",
            "other.test", "a.sub.other.test", "d5.test", "x.d5.test", "y.x.d5.test",
            "z.y.x.d5.test", "w.x.d5.test", "ad5.test", "test", "", None,
        ],
        dtype="string",
    )  # fmt: skip
    for index in (small, large, nested):
        expected = [bool(v) and index.contains(v) for v in values.fillna("")]
        assert index.contains_all(values).tolist() == expected
    assert sum(nested.contains_all(values)) == 5  # d5, other, a.sub.other, y.x.d5, z.y.x.d5
