"""Feeds that update themselves safely: `compliance feeds update|list|show|history`, the
job's scheduled updates and the versions reports name.

Against a real HTTPS server on loopback (a throwaway trustme CA, trusted through
REQUESTS_CA_BUNDLE as an operator would set it) that serves feed files with ETag and
Last-Modified and answers conditional requests; real stores made by the command and the
job; minisign signatures made with cryptography in minisign's own format.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import shutil
import ssl
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.cli import cli
from compliance.config import load_config
from compliance.errors import shown_path, shown_url
from compliance.feeds import load_feeds
from tests.conftest import (
    SHIPPED_POLICIES,
    as_actor,
    run_cli,
    store_db,
    week_of_mail_rows,
    write_ps_export,
)

# --- an HTTPS server of feed files ----------------------------------------------------------


@dataclass
class Served:
    """A file the server serves, with its validators."""

    body: bytes
    etag: str
    last_modified: str


@dataclass
class Feeds:
    """What the server serves and what it was asked."""

    files: dict[str, Served] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)  # statuses for the next requests
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""
    version: int = 0

    def put(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path`` (a new version: new ETag and Last-Modified); its URL."""
        self.version += 1
        self.files[path] = Served(
            body,
            f'"v{self.version}-{hashlib.sha256(body).hexdigest()[:8]}"',
            formatdate(1_790_000_000 + self.version * 86_400, usegmt=True),
        )
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def asked(self, path: str) -> list[dict[str, str]]:
        """The headers of every request for ``path``."""
        return [h for p, h in self.requests if p == path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    feeds: Feeds

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        feeds = self.feeds
        with feeds.lock:
            feeds.requests.append((self.path, dict(self.headers.items())))
            failure = feeds.failures.pop(0) if feeds.failures else None
            served = feeds.files.get(self.path)
        if failure is not None:
            self._answer(failure, b"busy", {"Retry-After": "0"})
            return
        if served is None:
            self._answer(404, b"not found")
            return
        validators = {"ETag": served.etag, "Last-Modified": served.last_modified}
        if self.headers.get("If-None-Match") == served.etag or (
            self.headers.get("If-None-Match") is None
            and self.headers.get("If-Modified-Since") == served.last_modified
        ):
            self.send_response(304)
            for name, value in validators.items():
                self.send_header(name, value)
            self.end_headers()
            return
        self._answer(200, served.body, validators)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Feeds]:
    """The feed server; its CA trusted through REQUESTS_CA_BUNDLE."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    feeds = Feeds()
    httpd = _Server(("127.0.0.1", 0), type("H", (_Handler,), {"feeds": feeds}))
    httpd.context = context
    bundle = tmp_path / "feed-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    feeds.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield feeds
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- a deployment --------------------------------------------------------------------------


def _deployment(tmp_path: Path, directory: Path, feeds: str, rest: str = "") -> Path:
    """A config over the week of mail of tests.conftest (u1 writes to escort-ads.test
    three times), the shipped policy, a store and JSON reports, with these feeds."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    write_ps_export(inbox / "week1.csv", week_of_mail_rows())
    if not (tmp_path / "policies").exists():
        shutil.copytree(SHIPPED_POLICIES, tmp_path / "policies")
    config = tmp_path / "compliance.yaml"
    config.write_text(
        "organisation: {domains: [corp.example]}\n"
        f"directory: {directory}\n"
        "sources: [{name: exports, type: exchange, path: inbox}]\n"
        f"feeds:\n{feeds}"
        "policies: [policies]\n"
        "store: var/store.db\n"
        "reports: {dir: reports, formats: [json, html]}\n"
        "schedule: {lock: var/run.lock, fail_when_idle: false}\n" + rest
    )
    return config


def _feed(path: str, url: str, *extra: str) -> str:
    lines = [f"  - path: {path}", f"    url: {url}", *(f"    {e}" for e in extra)]
    return "\n".join(lines) + "\n"


ESCORT = "\n".join(["# escort sites", "escort-ads.test", "velvet-club.test"]) + "\n"
LICENCE = ("licence: CC-BY-SA-4.0", "attribution: Reserved Lists Project")


def _escort(server: Feeds, *extra: str, body: str = ESCORT) -> str:
    url = server.put("/lists/escort.txt", body.encode())
    return _feed("feeds/escort.txt", url, "category: escort-ads", "name: escort", *extra)


def _cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--config", str(config)])


def _json(config: Path, *args: str) -> Any:
    result = _cli(config, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _audit(config: Path, action: str) -> list[dict[str, Any]]:
    result = _cli(config, "log", "show", "--action", action, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def _domains(n: int, prefix: str = "site") -> str:
    return "".join(f"{prefix}{i}.test\n" for i in range(n))


# --- updates --------------------------------------------------------------------------------


def test_a_good_update_is_installed_recorded_logged_and_used_by_the_next_run(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    config = _deployment(tmp_path, directory_csv, _escort(server, *LICENCE))
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 0, result.output
    installed = tmp_path / "feeds" / "escort.txt"
    assert installed.read_text() == ESCORT
    assert "escort: installed version" in result.output and "2 entries" in result.output

    (version,) = _json(config, "feeds", "history", "escort")["versions"]
    assert version["sha256"] == hashlib.sha256(ESCORT.encode()).hexdigest()
    assert version["size"] == len(ESCORT)
    assert version["categories"] == {"escort-ads": 2}
    assert version["etag"] == server.files["/lists/escort.txt"].etag
    assert (version["licence"], version["attribution"]) == (
        "CC-BY-SA-4.0",
        "Reserved Lists Project",
    )
    (logged,) = _audit(config, "feed.updated")
    assert logged["details"]["version"] == version["content_sha256"]
    assert logged["details"]["entries"] == 2

    code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    report = json.loads(next((tmp_path / "reports").glob("report-*.json")).read_text())
    (row,) = report["data_quality"]["feeds"]
    assert row["sha256"] == version["content_sha256"][:12]
    assert row["fetched_at"] == version["fetched_at"]
    assert row["url"] == server.url("/lists/escort.txt")
    assert (row["licence"], row["attribution"]) == ("CC-BY-SA-4.0", "Reserved Lists Project")
    assert len(report["alerts"]) == 1  # the installed feed matched u1's mail
    html = next((tmp_path / "reports").glob("report-*.html")).read_text()
    assert version["fetched_at"] in html and "Reserved Lists Project" in html

    # a new version: installed, the one it replaced kept as <path>.previous
    server.put("/lists/escort.txt", (ESCORT + "lace-lounge.test\n").encode())
    result = _cli(config, "feeds", "update", "escort")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "feeds" / "escort.txt.previous").read_text() == ESCORT
    assert installed.read_text().endswith("lace-lounge.test\n")
    assert len(_json(config, "feeds", "history")["versions"]) == 2


def test_a_truncated_download_is_refused_and_the_last_good_copy_kept(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    config = _deployment(tmp_path, directory_csv, _escort(server, body=ESCORT + _domains(18)))
    assert _cli(config, "feeds", "update").exit_code == 0
    installed = tmp_path / "feeds" / "escort.txt"
    good = installed.read_bytes()

    server.put("/lists/escort.txt", _domains(5).encode())  # cut off: 5 of 20
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4, result.output
    assert (
        "feed escort refused: truncated: 5 entries, the last good version had 20 "
        "(max_shrink 0.5)" in result.output
    )
    assert installed.read_bytes() == good
    assert not (tmp_path / "feeds" / "escort.txt.previous").exists()
    attempts = _json(config, "feeds", "history")["updates"]
    assert [a["outcome"] for a in attempts] == ["refused", "installed"]
    (refused,) = _audit(config, "feed.refused")
    assert refused["details"]["reason"].startswith("truncated: 5 entries")

    # growth beyond the bound is refused too; within it, the update goes through
    server.put("/lists/escort.txt", _domains(81).encode())
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4
    assert "grown too much: 81 entries, the last good version had 20 (max_growth 3)" in (
        result.output
    )
    server.put("/lists/escort.txt", _domains(30).encode())
    assert _cli(config, "feeds", "update").exit_code == 0
    assert installed.read_text() == _domains(30)


def test_an_unchanged_feed_is_not_fetched_again(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    config = _deployment(tmp_path, directory_csv, _escort(server))
    assert _cli(config, "feeds", "update").exit_code == 0
    served = server.files["/lists/escort.txt"]
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "escort: not modified"
    first, second = server.asked("/lists/escort.txt")
    assert "If-None-Match" not in first and "If-Modified-Since" not in first
    assert second["If-None-Match"] == served.etag
    assert second["If-Modified-Since"] == served.last_modified
    history = _json(config, "feeds", "history")
    assert [a["outcome"] for a in history["updates"]] == ["not_modified", "installed"]
    assert len(history["versions"]) == 1

    # a copy put in place by hand is not the version the validators describe: fetched whole
    (tmp_path / "feeds" / "escort.txt").write_text("escort-ads.test\n")
    assert _cli(config, "feeds", "update").exit_code == 0
    assert "If-None-Match" not in server.asked("/lists/escort.txt")[-1]
    assert (tmp_path / "feeds" / "escort.txt").read_text() == ESCORT


def test_a_download_that_does_not_match_its_pin_is_refused(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    wrong = hashlib.sha256(b"another list").hexdigest()
    config = _deployment(tmp_path, directory_csv, _escort(server, f"sha256: {wrong}"))
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4
    assert f"not the pinned {wrong}" in result.output
    assert not (tmp_path / "feeds" / "escort.txt").exists()
    assert _json(config, "feeds", "history")["versions"] == []

    right = hashlib.sha256(ESCORT.encode()).hexdigest()
    config = _deployment(tmp_path, directory_csv, _escort(server, f"sha256: {right.upper()}"))
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 0, result.output
    assert "sha256 pinned" in result.output


# --- minisign ---------------------------------------------------------------------------


class Minisign:
    """A minisign key pair, and signatures in minisign's file format."""

    def __init__(self, key_id: bytes = bytes(range(1, 9))) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.key_id = key_id
        public = self.key.public_key().public_bytes_raw()
        self.public = base64.b64encode(b"Ed" + self.key_id + public).decode()

    def sign(self, data: bytes, *, prehashed: bool = True, trusted: str = "file:x") -> str:
        algorithm = b"ED" if prehashed else b"Ed"
        message = hashlib.blake2b(data).digest() if prehashed else data
        signature = self.key.sign(message)
        global_signature = self.key.sign(signature + trusted.encode())
        return (
            "untrusted comment: signature from minisign secret key\n"
            f"{base64.b64encode(algorithm + self.key_id + signature).decode()}\n"
            f"trusted comment: {trusted}\n"
            f"{base64.b64encode(global_signature).decode()}\n"
        )


def _tamper_comment(text: str) -> str:
    return text.replace("trusted comment: file:x", "trusted comment: file:y")


@pytest.mark.parametrize(
    ("signature", "accepted", "said"),
    [
        (lambda k, data: k.sign(data), True, "minisign key 0807060504030201"),
        (lambda k, data: k.sign(data, prehashed=False), True, "minisign key"),
        (lambda k, data: k.sign(b"another list\n"), False, "does not match the download"),
        (lambda k, data: _tamper_comment(k.sign(data)), False, "trusted comment"),
        (lambda k, data: Minisign(bytes(8)).sign(data), False,
         "signed with minisign key 0000000000000000, not the configured key 0807060504030201"),
        (lambda k, data: Minisign().sign(data), False, "does not match the download"),
        (lambda k, data: "not a signature\n", False, "not a minisign signature"),
    ],
    ids=[
        "prehashed", "legacy", "other-content", "altered-comment", "other-key-id",
        "other-key-same-id", "garbage",
    ],
)  # fmt: skip
def test_a_minisign_signature_is_checked(
    tmp_path: Path,
    directory_csv: Path,
    server: Feeds,
    signature: Any,
    accepted: bool,
    said: str,
) -> None:
    key = Minisign()
    feed = _escort(server, f"signature: {{public_key: {key.public}}}")
    server.put("/lists/escort.txt.minisig", signature(key, ESCORT.encode()).encode())
    config = _deployment(tmp_path, directory_csv, feed)
    result = _cli(config, "feeds", "update")
    assert said in result.output
    assert result.exit_code == (0 if accepted else 4), result.output
    assert (tmp_path / "feeds" / "escort.txt").exists() is accepted


def test_a_signature_is_fetched_from_its_configured_url(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    key = Minisign()
    where = server.put("/signatures/escort.sig", key.sign(ESCORT.encode()).encode())
    feed = _escort(server, f"signature: {{public_key: {key.public}, url: '{where}'}}")
    config = _deployment(tmp_path, directory_csv, feed)
    assert _cli(config, "feeds", "update").exit_code == 0
    server.files.pop("/signatures/escort.sig")
    server.put("/lists/escort.txt", (ESCORT + "lace-lounge.test\n").encode())
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4
    assert "its signature could not be fetched" in result.output
    assert (tmp_path / "feeds" / "escort.txt").read_text() == ESCORT


# --- archives ---------------------------------------------------------------------------


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


UT1 = {
    "blacklists/README": b"UT1 blacklists\n",
    "blacklists/adult/domains": _domains(6, "adult").encode(),
    "blacklists/adult/urls": b"adult0.test/path\n",
    "blacklists/dating/domains": _domains(3, "date").encode(),
    "blacklists/mixed_adult/domains": _domains(2, "mixed").encode(),
    "blacklists/gambling/domains": _domains(4, "bet").encode(),
}


def test_a_ut1_archive_is_unpacked_and_its_categories_mapped(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    url = server.put("/ut1/blacklists.tar.gz", _tar(UT1, {"blacklists/porn": "adult"}))
    feed = _feed(
        "feeds/ut1",
        url,
        "name: ut1",
        "categories: {adult: adult, mixed_adult: adult, dating: dating}",
        "licence: CC-BY-SA-4.0",
    )
    config = _deployment(tmp_path, directory_csv, _escort(server) + feed)
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "feeds" / "ut1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README", "adult", "dating", "gambling", "mixed_adult",
    ]  # fmt: skip
    assert not any(p.is_symlink() for p in folder.rglob("*"))

    shown = _json(config, "feeds", "show", "ut1")
    assert shown["categories"] == {"adult": 8, "dating": 3}
    assert shown["skipped"] == {"unmapped_category": 4}
    assert shown["installed"]["categories"] == {"adult": 8, "dating": 3}
    index, _ = load_feeds(load_config(config).feed_specs())
    assert {lb.category for lb in index.lookup("www.mixed1.test")} == {"adult"}
    assert not index.contains("bet0.test")


@pytest.mark.parametrize(
    ("members", "said"),
    [
        ({"../escaped/domains": b"x.test\n"}, "a path outside its folder: '../escaped/domains'"),
        ({"/abs/domains": b"x.test\n"}, "a path outside its folder"),
        ({"a/" + "b/" * 3 + "../../../../../escaped": b"x.test\n"}, "a path outside"),
    ],
    ids=["dot-dot", "absolute", "deep-dot-dot"],
)
def test_an_archive_reaching_outside_its_folder_is_refused(
    tmp_path: Path, directory_csv: Path, server: Feeds, members: dict[str, bytes], said: str
) -> None:
    url = server.put("/ut1/blacklists.tar.gz", _tar(UT1))
    feed = _feed("feeds/ut1", url, "name: ut1", "categories: {adult: adult}")
    config = _deployment(tmp_path, directory_csv, _escort(server) + feed)
    assert _cli(config, "feeds", "update", "ut1").exit_code == 0
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())

    server.put("/ut1/blacklists.tar.gz", _tar({**UT1, **members}))
    result = _cli(config, "feeds", "update", "ut1")
    assert result.exit_code == 4
    assert said in result.output
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in after if p not in before and not p.startswith("var/")] == []
    assert not (tmp_path / "escaped").exists()
    assert (tmp_path / "feeds" / "ut1" / "adult" / "domains").read_bytes() == UT1[
        "blacklists/adult/domains"
    ]


def test_a_download_larger_than_its_bound_is_refused(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    config = _deployment(tmp_path, directory_csv, _escort(server, "bounds: {max_bytes: 40}"))
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4
    assert f"too large: {len(ESCORT)} bytes, more than bounds.max_bytes (40)" in result.output
    assert not (tmp_path / "feeds").exists() or not any((tmp_path / "feeds").iterdir())


# --- allow-lists ------------------------------------------------------------------------


def test_an_allow_list_unlists_a_domain_another_feed_lists(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    allow_url = server.put("/allow.txt", b"escort-ads.test\n")
    allow = _feed(
        "feeds/allow.txt",
        allow_url,
        "kind: allow",
        "name: reviewed-sites",
        "licence: internal",
        "attribution: Ethics team",
    )
    config = _deployment(tmp_path, directory_csv, _escort(server) + allow)
    assert _cli(config, "feeds", "update").exit_code == 0
    index, infos = load_feeds(load_config(config).feed_specs())
    assert not index.contains("escort-ads.test")
    assert not index.contains("booking.escort-ads.test")
    assert index.contains("velvet-club.test")
    assert [(i.name, i.kind, i.entries) for i in infos] == [
        ("escort", "list", 2),
        ("reviewed-sites", "allow", 1),
    ]

    code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    report = json.loads(next((tmp_path / "reports").glob("report-*.json")).read_text())
    assert report["alerts"] == []  # u1's three messages to escort-ads.test match nothing
    allow_row = report["data_quality"]["feeds"][1]
    assert (allow_row["kind"], allow_row["attribution"]) == ("allow", "Ethics team")
    assert allow_row["fetched_at"] is not None


def test_an_allow_list_also_unlists_names_other_feeds_list_below_it(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("classifieds.test\nadult.classifieds.test\nother.test\n")
    (tmp_path / "allow.txt").write_text("classifieds.test\n")
    (tmp_path / "c.yaml").write_text(
        "organisation: {domains: [corp.example]}\n"
        "sources: [{name: exports, type: exchange, path: inbox}]\n"
        "feeds:\n"
        "  - {path: list.txt, category: adult}\n"
        "  - {path: allow.txt, kind: allow}\n"
        f"policies: [{SHIPPED_POLICIES}]\n"
    )
    index, _ = load_feeds(load_config(tmp_path / "c.yaml").feed_specs())
    assert not index.contains("adult.classifieds.test")
    assert not index.contains("x.adult.classifieds.test")
    assert index.contains("other.test")


# --- listing ----------------------------------------------------------------------------


def test_feeds_list_show_and_history(tmp_path: Path, directory_csv: Path, server: Feeds) -> None:
    hand = tmp_path / "feeds" / "local.txt"
    hand.parent.mkdir()
    hand.write_text("lace-lounge.test\n")
    local = "  - {path: feeds/local.txt, category: escort-ads, name: local}\n"
    body = ESCORT + _domains(2)
    config = _deployment(tmp_path, directory_csv, _escort(server, *LICENCE, body=body) + local)
    assert _cli(config, "feeds", "update").exit_code == 0
    server.put("/lists/escort.txt", b"escort-ads.test\n")
    assert _cli(config, "feeds", "update").exit_code == 4

    listed = _cli(config, "feeds", "list")
    assert listed.exit_code == 0, listed.output
    header, escort, hand_row = listed.output.splitlines()
    assert header.split()[:5] == ["feed", "kind", "categories", "entries", "version"]
    version = _json(config, "feeds", "history", "escort")["versions"][0]
    assert escort.split()[:5] == [
        "escort",
        "list",
        "escort-ads",
        "4",
        version["content_sha256"][:12],
    ]
    assert version["fetched_at"] in escort and "CC-BY-SA-4.0" in escort
    assert server.url("/lists/escort.txt") in escort
    assert "not fetched by feeds update" in hand_row

    shown = _cli(config, "feeds", "show", "escort")
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "escort-ads: 4" in text
    assert f"SHA-256 {version['sha256']}" in text
    assert "max_shrink 0.5" in text
    assert "last update:" in text and "refused: truncated: 1 entries" in text

    history = _cli(config, "feeds", "history")
    assert history.exit_code == 0, history.output
    updates = history.output.split("updates:")[1].splitlines()[1:]
    assert updates[1].split()[1:3] == ["escort", "refused"]
    assert updates[2].split()[1:4] == ["escort", "installed", version["content_sha256"][:12]]
    assert _cli(config, "feeds", "show", "nope").exit_code == 2
    result = _cli(config, "feeds", "update", "local")
    assert result.exit_code == 2 and "has no url" in result.output


def test_a_feed_url_s_query_string_is_shown_nowhere(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    """A stranger's check: a commercial feed's URL carrying a download token and the
    subscriber's address was printed whole in reports, `policy explain`, `feeds list` and
    `feeds show`, and kept in the store and the audit log."""
    query = "?token=S3CRET-TOKEN&subscriber=zanzibar.quixote%40corp.example"
    url = server.put("/lists/escort.txt" + query, ESCORT.encode())
    feed = _feed("feeds/escort.txt", url, "category: escort-ads", "name: escort", *LICENCE)
    config = _deployment(tmp_path, directory_csv, feed)
    assert _cli(config, "feeds", "update").exit_code == 0  # fetched with its query
    assert server.asked("/lists/escort.txt" + query)
    seen = [
        _cli(config, *args).output
        for args in (("feeds", "list"), ("feeds", "show", "escort"), ("feeds", "history"))
    ]
    seen.append(json.dumps(_json(config, "feeds", "show", "escort")))
    seen.append(as_actor("auditor", config, "log", "show", "--json").output)
    store = tmp_path / "var" / "store.db"
    seen.append(store.read_bytes().decode("latin-1"))
    for text in seen:
        assert "S3CRET" not in text and "quixote" not in text
    assert server.url("/lists/escort.txt") + "?…" in seen[0]


def test_shown_url_keeps_where_and_drops_what_rides_along() -> None:
    assert shown_url("https://feeds.example/l/escort.txt?key=abc#x") == (
        "https://feeds.example/l/escort.txt?…"
    )
    assert shown_url("https://user:pw@feeds.example:8443/escort.txt") == (
        "https://feeds.example:8443/escort.txt"
    )
    assert shown_url("https://feeds.example/u/alice%40corp.example/list") == (
        "https://feeds.example/u/…%40corp.example/list"
    )
    assert shown_url("https://[2001:db8::1]/x?y") == "https://[2001:db8::1]/x?…"
    assert shown_url("not a url?token=1") == "not a url?…"
    # a file named after a mailbox, its @ written %40, is masked as one with an @ is
    assert shown_path("exports/trace-alice%40corp.example.csv") == "exports/…%40corp.example.csv"


# --- on the job's schedule ------------------------------------------------------------------


def test_a_scheduled_run_updates_a_due_feed_and_goes_on_when_the_server_fails(
    tmp_path: Path, directory_csv: Path, server: Feeds, caplog: pytest.LogCaptureFixture
) -> None:
    config = _deployment(tmp_path, directory_csv, _escort(server, "update_every: 1d"))
    code, output = run_cli(config, "2026-11-10")  # never fetched: due
    assert code == 0, output
    assert len(server.asked("/lists/escort.txt")) == 1
    installed = tmp_path / "feeds" / "escort.txt"
    good = installed.read_bytes()
    report = json.loads(next((tmp_path / "reports").glob("report-*.json")).read_text())
    assert report["data_quality"]["feeds"][0]["fetched_at"] is not None
    assert len(report["alerts"]) == 1

    code, output = run_cli(config, "2026-11-10")  # fetched less than a day ago: not due
    assert code == 0, output
    assert len(server.asked("/lists/escort.txt")) == 1

    with store_db(config) as conn:  # a day later
        conn.execute("UPDATE feed_updates SET at = '2026-01-01T00:00:00+00:00'")
    server.failures = [503] * 4
    with caplog.at_level(logging.WARNING, logger="compliance.feedkeeper"):
        code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    assert len(server.asked("/lists/escort.txt")) == 1 + 4  # retried, honouring Retry-After: 0
    assert installed.read_bytes() == good
    assert any(
        "escort: failed: the server answered HTTP 503, still after 4 attempts" in r.getMessage()
        for r in caplog.records
    )
    updates = _json(config, "feeds", "history")["updates"]
    assert [u["outcome"] for u in updates] == ["failed", "installed"]


def test_a_run_whose_feed_cannot_be_fetched_at_all_keeps_the_copy_in_place(
    tmp_path: Path, directory_csv: Path, server: Feeds
) -> None:
    copy = tmp_path / "feeds" / "escort.txt"
    copy.parent.mkdir()
    copy.write_text(ESCORT)
    feed = _feed(
        "feeds/escort.txt",
        server.url("/gone.txt"),
        "category: escort-ads",
        "name: escort",
        "update_every: 7d",
    )
    config = _deployment(tmp_path, directory_csv, feed)
    code, output = run_cli(config, "2026-11-10")
    assert code == 0, output
    assert copy.read_text() == ESCORT
    (update,) = _json(config, "feeds", "history")["updates"]
    assert (update["outcome"], update["reason"]) == ("failed", "the server answered HTTP 404")


def test_the_server_certificate_must_be_trusted(
    tmp_path: Path, directory_csv: Path, server: Feeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    config = _deployment(tmp_path, directory_csv, _escort(server))
    result = _cli(config, "feeds", "update")
    assert result.exit_code == 4
    assert "TLS certificate is not trusted" in result.output
    assert not (tmp_path / "feeds" / "escort.txt").exists()


def test_an_archive_of_many_links_is_refused_before_it_exhausts_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import tarfile

    import compliance.feedkeeper as feedkeeper

    monkeypatch.setattr(feedkeeper, "MAX_MEMBERS", 10)
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"escort-ads.test\n"
        member = tarfile.TarInfo("blacklists/adult/domains")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
        for i in range(11):  # links are never unpacked, but each header still costs memory
            link = tarfile.TarInfo(f"blacklists/link{i}")
            link.type, link.linkname = tarfile.SYMTYPE, "adult"
            tar.addfile(link)
    with pytest.raises(feedkeeper._Refused, match="more than 10 entries"):
        feedkeeper._unpack(archive, tmp_path / "out", 1 << 20)
