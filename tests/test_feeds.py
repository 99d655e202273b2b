"""Feed formats, on real published lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.domains import DomainIndex
from compliance.errors import ConfigError, InputError
from compliance.feeds import FeedInfo, FeedSpec, load_feed, load_feeds
from tests.conftest import FIXTURES, sample

FEEDS = FIXTURES / "feeds"


def _load(path: Path, category: str | None = "escort-ads", fmt: str | None = None):
    index = DomainIndex()
    info = load_feed(FeedSpec(path, category=category, format=fmt), index)
    return index, info


def test_plain_list_with_box_comments() -> None:
    index, info = _load(FEEDS / "aegis-adult-services.txt")
    assert info.format == "plain"
    assert info.entries == 13
    assert index.contains("escortify.com.au")
    assert index.contains("www.skokka.com.au")
    assert not index.contains("com.au")
    assert not index.contains("notescortify.com.au")
    assert {lb.category for lb in index.lookup("erosguide.com")} == {"escort-ads"}
    assert {lb.feed for lb in index.lookup("erosguide.com")} == {"aegis-adult-services"}


def test_hosts_file() -> None:
    index, info = _load(FEEDS / "aegis-hosts.txt", "adult")
    assert info.format == "hosts"
    assert index.contains("123moviesgo.tv")
    assert index.contains("www.123moviesgo.tv")
    assert info.skipped["invalid_domain"] == 0


def test_hosts_file_skips_loopback_names(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 a.test b.test # two\n"
    )
    index, info = _load(path)
    assert info.entries == 2
    assert not index.contains("localhost")


def test_adblock_rules_and_exceptions(tmp_path: Path) -> None:
    index, info = _load(FEEDS / "aegis-adblock.txt", "adult")
    assert info.format == "adblock"
    assert index.contains("1337x.to")
    path = tmp_path / "rules.txt"
    path.write_text(
        "[Adblock Plus 2.0]\n! comment\n||classifieds.test^\n||tracker.test^$third-party\n"
        "@@||jobs.classifieds.test^\n||cdn.test/path^\nexample.test##.banner\n"
        "||bad.test^$badfilter\n"
    )
    index, info = _load(path)
    assert index.contains("adult.classifieds.test")
    assert index.contains("tracker.test")
    assert not index.contains("jobs.classifieds.test")
    assert not index.contains("cdn.test")
    assert not index.contains("bad.test")
    assert info.exceptions == 1
    assert info.skipped["not_a_domain_rule"] == 1


def test_dnsmasq_list() -> None:
    index, info = _load(FEEDS / "blocklistproject-scam-dnsmasq.txt", "scam")
    assert info.format == "dnsmasq"
    assert index.contains("0xf.org")
    assert index.contains("www.1001tafelkleden.com")


def test_csv_feed_with_categories(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text("domain,category,note\nescort-ads.test,escort-ads,x\nadult.test,adult,y\n")
    index, info = _load(path, category=None)
    assert info.format == "csv"
    assert {lb.category for lb in index.lookup("www.adult.test")} == {"adult"}
    assert info.categories == {"escort-ads": 1, "adult": 1}


def test_public_suffix_and_invalid_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "feed.txt"
    path.write_text(
        "com.au\ncom\nbad!domain.test\n*.wild.test\n.dot.test\nok.test\n"
        "github.io\nBlogspot.com.\nescorts.github.io\n"
    )
    index, info = _load(path)
    # a hosting platform's zone (the list's private section) holds everyone's sites
    assert info.skipped["public_suffix"] == 4
    assert info.skipped["invalid_domain"] == 1
    assert not index.contains("anything.com.au")
    assert not index.contains("someone.github.io") and not index.contains("a.blogspot.com")
    assert index.contains("escorts.github.io") and index.contains("www.escorts.github.io")
    assert index.contains("a.wild.test")
    assert index.contains("dot.test")
    assert index.contains("ok.test")


def test_utf16_feed_with_unicode_domains(tmp_path: Path) -> None:
    path = tmp_path / "feed.txt"
    path.write_bytes("bücher.example\n".encode("utf-16"))
    index, _ = _load(path)
    assert index.contains("xn--bcher-kva.example")


def test_ut1_category_folder() -> None:
    folder = sample("olbat__ut1-blacklists", "blacklists", "dating")
    _index, info = _load(folder, category=None)
    assert info.entries > 1000
    assert set(info.categories) == {"dating"}


def test_uncategorised_plain_feed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.txt"
    path.write_text("x.test\n")
    with pytest.raises(ConfigError, match="CATEGORY"):
        _load(path, category=None)


def test_missing_feed_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.txt"):
        load_feeds([FeedSpec(tmp_path / "missing.txt", "escort-ads")])


@pytest.mark.parametrize(
    ("text", "path", "category"),
    [
        ("feeds/escort.txt:escort-ads", "feeds/escort.txt", "escort-ads"),
        ("feeds/escort.txt", "feeds/escort.txt", None),
        ("C:/feeds/escort.txt", "C:/feeds/escort.txt", None),
    ],
)
def test_feed_spec_parsing(text: str, path: str, category: str | None) -> None:
    spec = FeedSpec.parse(text)
    assert (str(spec.path), spec.category) == (str(Path(path)), category)


def test_a_category_mapping_renames_categories_and_drops_unmapped_ones(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text(
        "domain,category\nescort-ads.test,Escort\nlounge.test,escort\nbet.test,gambling\n"
    )
    index, info = _load_spec(FeedSpec(path, categories={"escort": "escort-ads"}))
    assert {lb.category for lb in index.lookup("www.lounge.test")} == {"escort-ads"}
    assert {lb.category for lb in index.lookup("escort-ads.test")} == {"escort-ads"}
    assert not index.contains("bet.test")
    assert info.categories == {"escort-ads": 2}
    assert info.skipped == {"unmapped_category": 1}


def test_an_allow_list_is_an_exception_with_its_own_provenance(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text("classifieds.test\nadult.classifieds.test\nmail.test\nother.test\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("# reviewed\nclassifieds.test\nmail.test\n")
    index, infos = load_feeds(
        [
            FeedSpec(listed, "adult"),
            FeedSpec(allow, kind="allow", url="https://lists.example/allow.txt", licence="CC0"),
        ]
    )
    for name in ("classifieds.test", "adult.classifieds.test", "x.mail.test"):
        assert not index.contains(name)
    assert index.contains("other.test")
    assert [(i.kind, i.entries, dict(i.categories)) for i in infos] == [
        ("list", 4, {"adult": 4}),
        ("allow", 2, {}),
    ]
    assert (infos[1].url, infos[1].licence) == ("https://lists.example/allow.txt", "CC0")


def test_kind_and_mapping_are_part_of_the_cache_key(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("domain,category\none.test,a\ntwo.test,b\n")
    cache = tmp_path / "cache"
    plain, _ = load_feeds([FeedSpec(feed)], cache)
    assert plain.contains("two.test")
    mapped, infos = load_feeds([FeedSpec(feed, categories={"a": "adult"})], cache)
    assert not mapped.contains("two.test") and infos[0].categories == {"adult": 1}
    other = tmp_path / "other.txt"
    other.write_text("one.test\n")
    mapping = {"a": "adult"}
    allowed, _ = load_feeds(
        [FeedSpec(feed, categories=mapping), FeedSpec(other, "adult", kind="allow")], cache
    )
    assert not allowed.contains("one.test")
    listed, _ = load_feeds(
        [FeedSpec(feed, categories=mapping), FeedSpec(other, "adult", kind="list")], cache
    )
    assert listed.contains("one.test")  # the same files, another kind: never the stale index


def _load_spec(spec: FeedSpec) -> tuple[DomainIndex, FeedInfo]:
    index, (info,) = load_feeds([spec])
    return index, info


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0 first.example\nbackpage.example\n",  # read as a hosts file
        "first.example\n0.0.0.0 backpage.example\n",  # read as a hosts file
        "first.example\nsecond.example\n0.0.0.0 backpage.example\nthird.example\n",  # plain
        "first.example\nsecond.example\n127.0.0.1\tbackpage.example # ad\nthird.example\n",
    ],
)
def test_a_list_mixing_plain_and_hosts_lines_loses_no_domain(tmp_path: Path, text: str) -> None:
    path = tmp_path / "feed.txt"
    path.write_text(text)
    index, info = _load(path)
    assert index.contains("www.backpage.example") and index.contains("first.example")
    assert not index.contains("0.0.0.0")  # noqa: S104 (an address read as a domain)
    assert sum(info.skipped.values()) == 0


def test_a_hosts_line_in_a_plain_list_gives_every_name(tmp_path: Path) -> None:
    """``0.0.0.0 a b`` names two sites in a plain list as in a hosts file; loopback
    names are no entries."""
    path = tmp_path / "feed.txt"
    lines = ["first.example", "second.example", "third.example", "fourth.example"]
    path.write_text(
        "\n".join(lines) + "\n0.0.0.0 backpage.example escorts.example\n127.0.0.1 localhost\n"
    )
    index, info = _load(path)
    assert info.format == "plain"
    assert index.contains("backpage.example") and index.contains("www.escorts.example")
    assert not index.contains("localhost") and not index.contains("0.0.0.0")  # noqa: S104
    assert sum(info.skipped.values()) == 0 and info.entries == 6


def test_an_allow_list_may_name_a_hosting_platform_s_zone(tmp_path: Path) -> None:
    """An allow-list only narrows: ``cloudfront.net`` there allows every site under it
    (an ICANN suffix such as ``com`` is still refused: it would allow everything)."""
    path = tmp_path / "allow.txt"
    path.write_text("cloudfront.net\ngithub.io\ncom\n")
    index = DomainIndex()
    info = load_feed(FeedSpec(path, category=None, kind="allow"), index)
    assert info.entries == 2 and info.skipped["public_suffix"] == 1


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_a_csv_feed_saved_with_semicolons_or_tabs_is_read(tmp_path: Path, separator: str) -> None:
    """A spreadsheet saved as CSV where the decimal mark is a comma separates by ``;``."""
    path = tmp_path / "feed.csv"
    rows = [["domain", "category"], ["backpage.example", "escort-ads"], ["adult.example", "adult"]]
    path.write_text("\n".join(separator.join(r) for r in rows) + "\n")
    index, info = _load(path, category=None)
    assert info.format == "csv" and info.categories == {"escort-ads": 1, "adult": 1}
    assert {lb.category for lb in index.lookup("www.backpage.example")} == {"escort-ads"}
