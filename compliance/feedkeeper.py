"""Feed keeping: fetching feeds safely, recording their versions, updating on schedule.

A feed with a ``url`` is updated by `compliance feeds update` (and by the job, for feeds
with ``update_every``), one feed at a time:

1. **Fetch** over HTTPS with ``requests`` (the CA bundle from ``REQUESTS_CA_BUNDLE`` or
   ``SSL_CERT_FILE``, a proxy from ``HTTPS_PROXY``), conditionally: the stored ETag and
   Last-Modified of the installed version are sent, and 304 changes nothing. 429, 5xx and
   broken connections are retried (tenacity, honouring ``Retry-After``); every request has
   a timeout; the body is streamed to a file and refused beyond ``bounds.max_bytes``.
2. **Verify**: a pinned ``sha256`` of the download, or a minisign signature (legacy
   ``Ed`` over the file or prehashed ``ED`` over its BLAKE2b-512, the key id and the
   trusted comment's global signature checked), with the key of the config.
3. **Unpack** a ``.tar.gz`` (UT1's ``blacklists.tar.gz``): regular files and folders
   only, none outside the folder, the unpacked size within ``bounds.max_bytes``; links and
   devices are left out. Any other download is one file.
4. **Check** the new copy with the feed loader: it must parse, hold at least
   ``bounds.min_entries`` entries and not shrink by more than ``max_shrink`` nor grow by
   more than ``max_growth`` against the last good version.
5. **Install** at the feed's ``path`` atomically (a file by ``os.replace``; a folder by
   renaming), keeping the copy it replaces as ``<path>.previous`` (for `feeds diff` and a
   roll-back). A refused or failed update leaves ``path`` as it was.

Every attempt is recorded in the store (``feed_updates``: installed, not modified,
refused or failed, and why), every installed version too (``feed_versions``: source,
time, size, digests, entries per category, ETag, Last-Modified, licence, attribution);
each installed version and each refusal is written to the audit log. Feeds are public
data: nothing here touches a log or a person.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from compliance import __version__
from compliance.config import Config, FeedBounds, FeedConfig
from compliance.errors import ComplianceError, ConfigError, InputError, shown_url
from compliance.feeds import FeedInfo, FeedSpec, content_digest, load_feeds, previous_copy
from compliance.store import Store, utcnow
from compliance.store.feeds import FeedUpdate, FeedVersion
from connectors.common import retry_after

log = logging.getLogger(__name__)

#: Requests per download before giving up (the first and three retries).
ATTEMPTS = 4
#: Seconds to connect, and to wait for each part of the answer.
TIMEOUT = (10.0, 60.0)
#: A ``Retry-After`` longer than this is cut to it.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: A minisign signature file is a few hundred bytes.
SIGNATURE_MAX_BYTES = 64 * 1024
#: Files and folders an archive may hold.
MAX_MEMBERS = 200_000
_CHUNK = 1 << 16
_TRUSTED = "trusted comment: "


class _Transient(Exception):
    """Worth another try: a 429 or 5xx answer, a connection that failed or broke off."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class _Failed(Exception):
    """The feed could not be fetched (or installed): nothing to judge."""


class _Refused(Exception):
    """The download was fetched and judged unfit: it is not installed."""


@dataclass(frozen=True)
class UpdateResult:
    """How one feed's update ended: ``installed`` (with the version), ``not_modified``,
    ``refused`` or ``failed`` (with the reason)."""

    feed: str
    outcome: str
    reason: str | None = None
    version: FeedVersion | None = None
    kept: bool = True  # a copy is in place (after a refusal: the last good one)

    @property
    def ok(self) -> bool:
        """Whether the feed is current: installed or not modified."""
        return self.outcome in ("installed", "not_modified")

    def line(self) -> str:
        """The result in one line, for a terminal or a log."""
        if self.version is not None:
            v = self.version
            return (
                f"{self.feed}: installed version {v.content_sha256[:12]} ({v.entries:,} "
                f"entries, {v.size:,} bytes{', ' + v.verified if v.verified else ''})"
            )
        if self.outcome == "not_modified":
            return f"{self.feed}: not modified"
        return f"{self.feed}: {self.outcome}: {self.reason}; {self.left}"

    @property
    def left(self) -> str:
        """What the job reads after a refused or failed update."""
        return "the last good copy is kept" if self.kept else "there is no copy yet"

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        return {
            "feed": self.feed,
            "outcome": self.outcome,
            "reason": self.reason,
            "version": None if self.version is None else self.version.as_dict(),
            "copy_in_place": self.kept,
        }


@dataclass(frozen=True)
class _Download:
    """What a GET brought: a body in ``path`` (None after 304) and its digests."""

    status: int
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    blake2b: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


# --- selecting feeds ------------------------------------------------------------------
def _named(config: Config) -> dict[str, FeedConfig]:
    """The configured feeds by name; two feeds with one name are refused."""
    out: dict[str, FeedConfig] = {}
    for feed in config.feeds:
        if feed.feed_name in out:
            raise ConfigError(
                f"two feeds are named {feed.feed_name!r}: give each its own 'name' "
                "(versions are recorded by name)"
            )
        out[feed.feed_name] = feed
    return out


def select_feeds(config: Config, names: Sequence[str] = ()) -> list[FeedConfig]:
    """The feeds ``names`` name (every feed with a ``url`` when none is named); an unknown
    name, or a named feed without a ``url``, is a :class:`ConfigError`."""
    feeds = _named(config)
    if not names:
        return [f for f in feeds.values() if f.url is not None]
    chosen = []
    for name in names:
        feed = feeds.get(name)
        if feed is None:
            raise ConfigError(
                f"no feed is named {name!r}; configured: {', '.join(feeds) or 'none'}"
            )
        if feed.url is None:
            raise ConfigError(f"feed {name!r} has no url: there is nothing to fetch")
        chosen.append(feed)
    return chosen


def due_feeds(config: Config, store: Store, now: dt.datetime | None = None) -> list[FeedConfig]:
    """The feeds the job updates now: those with ``update_every`` whose copy is missing,
    or which were last found current (installed, or not modified since) that many days
    ago or more, or never."""
    now = now or dt.datetime.now(dt.UTC)
    due = []
    for feed in _named(config).values():
        if feed.url is None or feed.update_every is None:
            continue
        last = store.feeds.last_checked(feed.feed_name)
        stale = last is None or now - dt.datetime.fromisoformat(last) >= dt.timedelta(
            days=feed.update_every
        )
        if stale or not config.path(feed.path).exists():
            due.append(feed)
    return due


# --- updating -------------------------------------------------------------------------
def update_feeds(
    config: Config,
    store: Store,
    actor: str,
    feeds: Iterable[FeedConfig],
    session: requests.Session | None = None,
) -> list[UpdateResult]:
    """Update each feed (see the module docstring); never raises for one feed's failure:
    each result says how it ended, and the store records it."""
    own = session is None
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = f"compliance-monitor/{__version__} (feed update)"
    try:
        return [update_feed(config, feed, store, actor, session) for feed in feeds]
    finally:
        if own:
            session.close()


def update_due(config: Config, actor: str) -> list[UpdateResult]:
    """The job's feed updates: every due feed (:func:`due_feeds`), updated before the
    run loads its feeds. A refused or failed update is logged as a warning and recorded;
    the run goes on with the last good copy."""
    if not any(f.url is not None and f.update_every is not None for f in config.feeds):
        return []
    with Store.open(config.path(config.store)) as store:
        due = due_feeds(config, store)
        results = update_feeds(config, store, actor, due) if due else []
    for result in results:
        if result.ok:
            log.info("feed update: %s", result.line())
        else:
            log.warning("feed update: %s", result.line())
    return results


def refusal(results: Sequence[UpdateResult], where: str) -> InputError | None:
    """The error to end `feeds update` with when an update was refused or failed (each
    named with its reason), or None."""
    bad = [r for r in results if not r.ok]
    if not bad:
        return None
    said = "; ".join(f"feed {r.feed} {r.outcome}: {r.reason} ({r.left})" for r in bad)
    return InputError(where, said)


def update_feed(
    config: Config, feed: FeedConfig, store: Store, actor: str, session: requests.Session
) -> UpdateResult:
    """Fetch, verify, check and install one feed; record the attempt (and the version),
    and write an installed version or a refusal to the audit log."""
    spec = config.feed_spec(feed)
    name = spec.feed_name
    previous = store.feeds.current(name)
    try:
        version = _update(spec, feed, store, session)
    except _Refused as exc:
        result = UpdateResult(name, "refused", str(exc))
    except _Failed as exc:
        result = UpdateResult(name, "failed", str(exc))
    except (ComplianceError, OSError) as exc:  # a store or disk fault while checking
        result = UpdateResult(name, "failed", str(exc) or type(exc).__name__)
    else:
        result = UpdateResult(name, "not_modified" if version is None else "installed", None)
        if version is not None:
            result = dataclasses.replace(result, version=version)
    if not result.ok:
        result = dataclasses.replace(result, kept=spec.path.exists())
    with store.transaction():
        version_id = None
        if result.version is not None:
            version_id = store.feeds.add_version(result.version)
            result = dataclasses.replace(
                result, version=dataclasses.replace(result.version, id=version_id)
            )
        store.feeds.add_attempt(
            name, utcnow(), actor, _shown(spec.url), result.outcome, result.reason, version_id
        )
        if result.version is not None:
            v = result.version
            store.audit.append(
                actor,
                "feed.updated",
                {
                    "feed": name,
                    "kind": v.kind,
                    "version": v.content_sha256,
                    "sha256": v.sha256,
                    "url": _shown(v.url),
                    "size": v.size,
                    "entries": v.entries,
                    "categories": v.categories,
                    "verified": v.verified,
                    "replaced": previous.content_sha256 if previous else None,
                },
            )
        elif result.outcome == "refused":
            store.audit.append(
                actor,
                "feed.refused",
                {"feed": name, "url": _shown(spec.url), "reason": result.reason},
            )
    return result


def _update(
    spec: FeedSpec, feed: FeedConfig, store: Store, session: requests.Session
) -> FeedVersion | None:
    """The new version installed at ``spec.path``, or None when the server says the
    installed one is current; raises :class:`_Refused` or :class:`_Failed`."""
    assert spec.url is not None
    path = spec.path
    current = store.feeds.current(spec.feed_name)
    headers = {}
    if current is not None and _digest_or_none(spec) == current.content_sha256:
        # conditions only for the very copy they describe (not one put in place by hand)
        if current.etag:
            headers["If-None-Match"] = current.etag
        if current.last_modified:
            headers["If-Modified-Since"] = current.last_modified
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_staging(path)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".update", dir=path.parent))
    except OSError as exc:
        raise _Failed(f"cannot write next to {path}: {exc.strerror or exc}") from None
    try:
        download = _fetch(session, spec.url, staging / "download", feed.bounds.max_bytes, headers)
        if download.status == 304:
            if not headers:
                raise _Failed("the server answered 304 Not Modified to a plain request")
            return None
        assert download.path is not None
        fetched_at = utcnow()
        verified = _verify(feed, spec.url, download, session, staging)
        staged = _stage(download.path, staging, path.name, feed.bounds.max_bytes)
        info = _parse(spec, staged)
        _check_bounds(info, feed.bounds, _baseline(store, spec))
        version = FeedVersion(
            feed=spec.feed_name,
            kind=spec.kind,
            url=_shown(spec.url),
            fetched_at=fetched_at,
            size=download.size,
            sha256=download.sha256,
            content_sha256=info.sha256,
            entries=info.entries,
            categories=dict(sorted(info.categories.items())),
            etag=download.etag,
            last_modified=download.last_modified,
            licence=spec.licence,
            attribution=spec.attribution,
            verified=verified,
        )
        try:
            _install(staged, path)
        except OSError as exc:
            raise _Failed(f"cannot install at {path}: {exc.strerror or exc}") from None
        return version
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _digest_or_none(spec: FeedSpec) -> str | None:
    """The content digest of the copy at ``spec.path``, or None (missing, unreadable)."""
    if not spec.path.exists():
        return None
    try:
        return content_digest(spec)
    except ComplianceError:
        return None


def _clean_staging(path: Path) -> None:
    """Remove what an interrupted update left next to ``path``."""
    for left in path.parent.glob(f".{path.name}.*.update"):
        shutil.rmtree(left, ignore_errors=True)


# --- fetching -------------------------------------------------------------------------
def ca_bundle() -> str | bool:
    """The CA bundle downloads are verified with: ``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE`` when set, else the system's (certifi's)."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value:
            return value
    return True


def _fetch(
    session: requests.Session, url: str, dest: Path, max_bytes: int, headers: dict[str, str]
) -> _Download:
    """GET ``url`` into ``dest`` with retries; raises :class:`_Failed` or :class:`_Refused`."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(wait_exponential_jitter(initial=1, max=30, jitter=1)(state))

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait,
        retry=retry_if_exception_type(_Transient),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return _get(session, url, dest, max_bytes, headers)
    except _Transient as exc:
        raise _Failed(f"{exc}, still after {ATTEMPTS} attempts") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _get(
    session: requests.Session, url: str, dest: Path, max_bytes: int, headers: dict[str, str]
) -> _Download:
    """One GET of ``url``, its body streamed into ``dest``."""
    try:
        response = session.get(
            url, headers=headers, stream=True, timeout=TIMEOUT, verify=ca_bundle()
        )
    except requests.exceptions.SSLError:
        raise _Failed(
            "the server's TLS certificate is not trusted (set REQUESTS_CA_BUNDLE if a proxy "
            "or a private CA is in the way)"
        ) from None
    except requests.Timeout:
        raise _Transient(f"no answer within {TIMEOUT[1]:g} s") from None
    except requests.ConnectionError:
        raise _Transient("the connection failed") from None
    except requests.RequestException as exc:
        raise _Failed(f"the request failed ({type(exc).__name__})") from None
    with response:
        if not response.url.lower().startswith("https://"):
            raise _Failed("the server redirected to a URL that is not https")
        status = response.status_code
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        if status == 304:
            return _Download(304, etag=etag, last_modified=modified)
        if status in RETRY_STATUSES:
            raise _Transient(f"the server answered HTTP {status}", retry_after(response))
        if status != 200:
            raise _Failed(f"the server answered HTTP {status}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _Refused(
                f"too large: {int(length):,} bytes, more than bounds.max_bytes ({max_bytes:,})"
            )
        sha256, blake2b, size = hashlib.sha256(), hashlib.blake2b(), 0
        try:
            with dest.open("wb") as out:
                for block in response.iter_content(_CHUNK):
                    size += len(block)
                    if size > max_bytes:
                        raise _Refused(
                            f"too large: more than bounds.max_bytes ({max_bytes:,} bytes)"
                        )
                    sha256.update(block)
                    blake2b.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except requests.RequestException:
            raise _Transient("the download broke off") from None
        except OSError as exc:
            raise _Failed(f"cannot write the download: {exc.strerror or exc}") from None
        encoded = response.headers.get("Content-Encoding", "identity") != "identity"
        if length.isdigit() and not encoded and size != int(length):
            raise _Transient(f"the download broke off ({size:,} of {int(length):,} bytes)")
        return _Download(200, dest, size, sha256.hexdigest(), blake2b.digest(), etag, modified)


# --- verifying ------------------------------------------------------------------------
def _verify(
    feed: FeedConfig, url: str, download: _Download, session: requests.Session, staging: Path
) -> str | None:
    """Check the pin and the signature the config asks for; what was verified."""
    assert download.path is not None
    done = []
    if feed.sha256 is not None:
        if download.sha256 != feed.sha256:
            raise _Refused(
                f"the download's SHA-256 is {download.sha256}, not the pinned {feed.sha256}"
            )
        done.append("sha256 pinned")
    if feed.signature is not None:
        where = feed.signature.url or url + ".minisig"
        try:
            signed = _fetch(session, where, staging / "signature", SIGNATURE_MAX_BYTES, {})
        except (_Failed, _Refused) as exc:
            raise _Refused(f"its signature could not be fetched from {where}: {exc}") from None
        assert signed.path is not None
        try:
            text = signed.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise _Refused("its signature file is not a minisign signature") from None
        key_id = verify_minisign(
            feed.signature.public_key, text, download.blake2b, download.path.read_bytes
        )
        done.append(f"minisign key {key_id}")
    return ", ".join(done) or None


def minisign_key_id(public_key: str) -> str:
    """The key id of a minisign public key (the base64 line of its .pub file), as
    minisign prints it."""
    raw = _b64(public_key.strip(), 42, "the public key")
    return raw[2:10][::-1].hex().upper()


def verify_minisign(
    public_key: str, signature: str, blake2b_digest: bytes, content: Callable[[], bytes]
) -> str:
    """Verify a minisign signature file against a download; return the key id.

    ``blake2b_digest`` is the BLAKE2b-512 of the download (for the prehashed ``ED``
    algorithm); ``content`` a callable returning its bytes (read only for the legacy
    ``Ed`` algorithm). The key id must be the configured key's, and the global signature
    must cover the signature and its trusted comment. Raises :class:`_Refused`."""
    key = _b64(public_key.strip(), 42, "the public key")
    lines = [ln.rstrip("\r") for ln in signature.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if (
        len(lines) < 4
        or not lines[0].startswith("untrusted comment:")
        or not lines[2].startswith(_TRUSTED)
    ):
        raise _Refused("its signature file is not a minisign signature")
    sig = _b64(lines[1], 74, "the signature")
    algorithm, key_id, value = sig[:2], sig[2:10], sig[10:]
    if key_id != key[2:10]:
        raise _Refused(
            f"it is signed with minisign key {key_id[::-1].hex().upper()}, not the "
            f"configured key {key[2:10][::-1].hex().upper()}"
        )
    verifier = Ed25519PublicKey.from_public_bytes(key[10:])
    if algorithm == b"ED":
        message = blake2b_digest
    elif algorithm == b"Ed":
        message = content()
    else:
        raise _Refused(f"its signature uses an unknown algorithm {algorithm!r}")
    try:
        verifier.verify(value, message)
    except InvalidSignature:
        raise _Refused("its minisign signature does not match the download") from None
    trusted = lines[2][len(_TRUSTED) :].encode("utf-8")
    try:
        verifier.verify(_b64(lines[3], 64, "the global signature"), value + trusted)
    except InvalidSignature:
        raise _Refused("its signature's trusted comment does not match (altered)") from None
    return key_id[::-1].hex().upper()


def _b64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise _Refused(f"{what} is not minisign's ({size} bytes in base64)")
    return raw


# --- unpacking and checking -------------------------------------------------------------
def _is_archive(path: Path) -> bool:
    """Whether a download is a tar archive, gzipped or not (from its first bytes)."""
    with path.open("rb") as handle:
        head = handle.read(512)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def _stage(download: Path, staging: Path, name: str, max_bytes: int) -> Path:
    """The download as the feed's new copy, named ``name`` in ``staging``: the file
    itself, or the folder an archive unpacks to."""
    staged = staging / name
    if not _is_archive(download):
        download.rename(staged)
        return staged
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    root = _unpack(download, unpacked, max_bytes)
    root.rename(staged)
    return staged


def _unpack(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack a tar archive into ``dest`` safely; the folder the feed is in (the single
    folder the archive holds, as UT1's ``blacklists/``, else ``dest``)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, total, left_out = [], 0, 0
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    shown = member.name[:100]
                    raise _Refused(f"the archive has a path outside its folder: {shown!r}")
                if member.isdir():
                    members.append(member)
                elif member.isfile():
                    total += member.size
                    if total > max_bytes:
                        raise _Refused(
                            f"too large unpacked: more than bounds.max_bytes ({max_bytes:,} bytes)"
                        )
                    members.append(member)
                else:
                    left_out += 1  # links, devices, pipes: never unpacked
                if len(members) + left_out > MAX_MEMBERS:  # every header read costs memory
                    raise _Refused(f"the archive holds more than {MAX_MEMBERS:,} entries")
            if left_out:
                log.info("feed archive: %d links or special files left out", left_out)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.ReadError:
        raise _Refused(
            "it is no readable tar archive (a .tar.gz or .tar is unpacked; a damaged one, "
            "or a single compressed file, is not)"
        ) from None
    except tarfile.TarError as exc:  # FilterError too: a path the data filter refuses
        raise _Refused(f"the archive cannot be unpacked safely ({exc})") from None
    except (OSError, EOFError) as exc:
        raise _Refused(f"the archive cannot be read ({exc})") from None
    root = dest
    while True:
        inside = list(root.iterdir())
        if len(inside) != 1 or not inside[0].is_dir():
            return root
        root = inside[0]


def _parse(spec: FeedSpec, staged: Path) -> FeedInfo:
    """The new copy read by the feed loader (never cached); :class:`_Refused` when it
    does not parse."""
    try:
        _index, (info,) = load_feeds([dataclasses.replace(spec, path=staged)], None)
    except (ComplianceError, ValueError) as exc:
        said = str(exc).replace(str(staged), "the download")
        raise _Refused(f"it does not parse as a feed: {said}") from None
    return info


def _baseline(store: Store, spec: FeedSpec) -> int | None:
    """Entries of the last good version: the recorded version of the copy at
    ``spec.path``, else that copy parsed (one put in place by hand), else None."""
    digest = _digest_or_none(spec)
    if digest is None:
        return None
    recorded = store.feeds.with_content(spec.feed_name, digest)
    if recorded is not None:
        return recorded.entries
    try:
        _index, (info,) = load_feeds([spec], None)
    except (ComplianceError, ValueError):
        return None
    return info.entries


def _check_bounds(info: FeedInfo, bounds: FeedBounds, baseline: int | None) -> None:
    """Refuse a version with too few entries, or one that shrank or grew beyond the
    bounds against the last good version's ``baseline`` entries."""
    n = info.entries
    if n < bounds.min_entries:
        raise _Refused(
            f"too few entries: {n:,}, fewer than bounds.min_entries ({bounds.min_entries:,})"
        )
    if not baseline:
        return
    if n < baseline * (1 - bounds.max_shrink):
        raise _Refused(
            f"truncated: {n:,} entries, the last good version had {baseline:,} "
            f"(max_shrink {bounds.max_shrink:g})"
        )
    if n > baseline * (1 + bounds.max_growth):
        raise _Refused(
            f"grown too much: {n:,} entries, the last good version had {baseline:,} "
            f"(max_growth {bounds.max_growth:g})"
        )


# --- installing -------------------------------------------------------------------------
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _install(staged: Path, path: Path) -> None:
    """Put ``staged`` at ``path``, keeping what was there as ``<path>.previous``.

    A file replaces a file atomically (``os.replace``; the previous copy is a hard link
    made first). A folder is swapped in by two renames; if the second fails the first is
    undone, and the previous copy is removed only once the new one is in place."""
    previous = previous_copy(path)
    if staged.is_file() and path.is_file() and not path.is_symlink():
        keep = path.with_name(f".{path.name}.previous.tmp")
        _remove(keep)
        try:
            os.link(path, keep)
        except OSError:
            shutil.copy2(path, keep)
        if previous.is_dir() and not previous.is_symlink():
            shutil.rmtree(previous)
        os.replace(keep, previous)
        os.replace(staged, path)
        _sync_folder(path.parent)
        return
    aside = None
    if path.exists() or path.is_symlink():
        aside = path.with_name(f".{path.name}.{os.getpid()}.old")
        _remove(aside)
        os.rename(path, aside)
    try:
        os.rename(staged, path)
    except OSError:
        if aside is not None:
            os.rename(aside, path)
        raise
    if aside is not None:
        _remove(previous)
        os.rename(aside, previous)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform allows)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


# --- versions in reports, listings -----------------------------------------------------
def with_fetch_times(store: Store, feeds: Sequence[FeedInfo]) -> list[FeedInfo]:
    """``feeds`` with the time each version was fetched, where the store knows it."""
    out = []
    for info in feeds:
        version = store.feeds.with_content(info.name, info.sha256)
        out.append(dataclasses.replace(info, fetched_at=version.fetched_at) if version else info)
    return out


def _existing_store(config: Config) -> Store | None:
    """The configured store when it exists (brought to the current schema), else None."""
    path = config.path(config.store)
    return Store.open(path) if path.exists() else None


def _loaded(config: Config, specs: list[FeedSpec]) -> list[FeedInfo | str]:
    """Each feed's loaded record, or why it cannot be loaded. All at once through the
    feed cache (the run's compiled index, reused); one by one only when one fails."""
    try:
        _index, infos = load_feeds(specs, config.feed_cache_folder())
        return list(infos)
    except ComplianceError:
        pass
    out: list[FeedInfo | str] = []
    for spec in specs:
        try:
            out.append(load_feeds([spec], None)[1][0])
        except ComplianceError as exc:
            out.append(str(exc))
    return out


def _row(
    feed: FeedConfig, spec: FeedSpec, loaded: FeedInfo | str, store: Store | None
) -> dict[str, Any]:
    info = loaded if isinstance(loaded, FeedInfo) else None
    version = store.feeds.with_content(spec.feed_name, info.sha256) if store and info else None
    attempts = store.feeds.attempts(spec.feed_name) if store else []
    last: FeedUpdate | None = attempts[0] if attempts else None
    return {
        "name": spec.feed_name,
        "kind": spec.kind,
        "path": str(spec.path),
        "format": info.format if info else None,
        "categories": dict(sorted(info.categories.items())) if info else {},
        "entries": info.entries if info else None,
        "version": info.sha256 if info else None,
        "recorded": version is not None,
        "fetched_at": version.fetched_at if version else None,
        "url": _shown(spec.url),
        "licence": spec.licence,
        "attribution": spec.attribution,
        "update_every": feed.update_every,
        "last_update": None
        if last is None
        else {"at": last.at, "outcome": last.outcome, "reason": last.reason},
        "error": None if info else str(loaded),
    }


def feed_listing(config: Config) -> list[dict[str, Any]]:
    """`feeds list`: every configured feed with its kind, categories, entries, the
    version at its path (content digest) and, when the store knows that version, when it
    was fetched; its url and licence."""
    named = _named(config)
    specs = [config.feed_spec(f) for f in named.values()]
    loaded = _loaded(config, specs)
    store = _existing_store(config)
    try:
        return [_row(f, s, i, store) for f, s, i in zip(named.values(), specs, loaded, strict=True)]
    finally:
        if store is not None:
            store.close()


def feed_details(config: Config, name: str) -> dict[str, Any]:
    """`feeds show NAME`: the listing's row, counts per category and of skipped entries,
    the recorded version (download digest, size, ETag, Last-Modified, what was verified)
    and the update settings."""
    feed = _named(config).get(name)
    if feed is None:
        raise ConfigError(f"no feed is named {name!r}; configured: {', '.join(_named(config))}")
    spec = config.feed_spec(feed)
    (loaded,) = _loaded(config, [spec])
    store = _existing_store(config)
    try:
        row = _row(feed, spec, loaded, store)
        version = (
            store.feeds.with_content(name, loaded.sha256)
            if store and isinstance(loaded, FeedInfo)
            else None
        )
        current = store.feeds.current(name) if store else None
    finally:
        if store is not None:
            store.close()
    info = loaded if isinstance(loaded, FeedInfo) else None
    row.update(
        {
            "exceptions": info.exceptions if info else None,
            "skipped": dict(sorted(info.skipped.items())) if info else {},
            "previous_copy": previous_copy(spec.path).exists(),
            "installed": _shown_version(version.as_dict()) if version else None,
            "latest_installed": None
            if current is None or (version and current.id == version.id)
            else _shown_version(current.as_dict()),
            "settings": {
                "url": _shown(feed.url),
                "format": feed.format,
                "category": feed.category,
                "mapping": feed.categories,
                "sha256": feed.sha256,
                "signature": None
                if feed.signature is None
                else {
                    "key_id": minisign_key_id(feed.signature.public_key),
                    "url": _shown(feed.signature.url or (feed.url or "") + ".minisig"),
                },
                "bounds": feed.bounds.model_dump(),
                "update_every": feed.update_every,
            },
        }
    )
    return row


def feed_history(config: Config, name: str | None = None) -> dict[str, Any]:
    """`feeds history [NAME]`: installed versions and update attempts, newest first."""
    if name is not None and name not in _named(config):
        raise ConfigError(f"no feed is named {name!r}; configured: {', '.join(_named(config))}")
    store = _existing_store(config)
    if store is None:
        return {"versions": [], "updates": []}
    with store:
        return {
            "versions": [v.as_dict() for v in store.feeds.versions(name)],
            "updates": [u.as_dict() for u in store.feeds.attempts(name)],
        }


def _shown(url: str | None) -> str | None:
    """A feed's URL as the store, the audit log and every listing keep it: without its
    query string or credentials (:func:`compliance.errors.shown_url`)."""
    return shown_url(url) if url else url


def _shown_version(version: dict[str, Any]) -> dict[str, Any]:
    """A recorded version as listings show it (one recorded before URLs were kept
    without their query string shows it masked too)."""
    return {**version, "url": _shown(version.get("url"))}
