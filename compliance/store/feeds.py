"""Feed versions: every version of every feed the job installed, and every update tried.

Feeds are public data; these tables hold where a version came from, when, its digests
and its counts per category, never a domain of anybody's traffic."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from compliance.store.database import Repository

#: What an update attempt can end in.
OUTCOMES = ("installed", "not_modified", "refused", "failed")

_VERSION_COLUMNS = (
    "id", "feed", "kind", "url", "fetched_at", "size", "sha256", "content_sha256", "entries",
    "categories", "etag", "last_modified", "licence", "attribution", "verified",
)  # fmt: skip
_UPDATE_COLUMNS = ("id", "feed", "at", "actor", "url", "outcome", "reason", "version_id")


@dataclass(frozen=True)
class FeedVersion:
    """One installed version of a feed.

    ``sha256`` digests the download as fetched; ``content_sha256`` digests the copy as
    the loader reads it (the version named in reports and run records)."""

    feed: str
    kind: str
    url: str | None
    fetched_at: str
    size: int
    sha256: str
    content_sha256: str
    entries: int
    categories: dict[str, int] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    licence: str | None = None
    attribution: str | None = None
    verified: str | None = None
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The version as plain data."""
        return asdict(self)


@dataclass(frozen=True)
class FeedUpdate:
    """One update attempt: when, by whom, and how it ended."""

    id: int
    feed: str
    at: str
    actor: str
    url: str | None
    outcome: str
    reason: str | None
    version_id: int | None

    def as_dict(self) -> dict[str, Any]:
        """The attempt as plain data."""
        return asdict(self)


def _version(row: tuple[Any, ...]) -> FeedVersion:
    values = dict(zip(_VERSION_COLUMNS, row, strict=True))
    values["categories"] = json.loads(values["categories"])
    return FeedVersion(**values)


class FeedVersions(Repository):
    """The feed version and update tables."""

    def add_version(self, version: FeedVersion) -> int:
        """Record an installed version (its ``id`` is ignored); return its id."""
        columns = _VERSION_COLUMNS[1:]
        values = {**version.as_dict(), "categories": json.dumps(version.categories, sort_keys=True)}
        with self.db.writing() as conn:
            cur = conn.execute(
                f"INSERT INTO feed_versions ({', '.join(columns)}) "  # noqa: S608 (fixed names)
                f"VALUES ({', '.join('?' for _ in columns)})",
                [values[c] for c in columns],
            )
            return int(cur.lastrowid or 0)

    def add_attempt(
        self,
        feed: str,
        at: str,
        actor: str,
        url: str | None,
        outcome: str,
        reason: str | None = None,
        version_id: int | None = None,
    ) -> int:
        """Record an update attempt and how it ended (one of :data:`OUTCOMES`)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self.db.writing() as conn:
            cur = conn.execute(
                "INSERT INTO feed_updates (feed, at, actor, url, outcome, reason, version_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (feed, at, actor, url, outcome, reason, version_id),
            )
            return int(cur.lastrowid or 0)

    def current(self, feed: str) -> FeedVersion | None:
        """The version of ``feed`` installed last, or None."""
        row = self.conn.execute(
            f"SELECT {', '.join(_VERSION_COLUMNS)} FROM feed_versions "  # noqa: S608 (fixed names)
            "WHERE feed = ? ORDER BY id DESC LIMIT 1",
            (feed,),
        ).fetchone()
        return None if row is None else _version(row)

    def with_content(self, feed: str, content_sha256: str) -> FeedVersion | None:
        """The latest recorded version of ``feed`` with this content digest, or None (a
        copy put in place by hand)."""
        row = self.conn.execute(
            f"SELECT {', '.join(_VERSION_COLUMNS)} FROM feed_versions "  # noqa: S608 (fixed names)
            "WHERE feed = ? AND content_sha256 = ? ORDER BY id DESC LIMIT 1",
            (feed, content_sha256),
        ).fetchone()
        return None if row is None else _version(row)

    def versions(self, feed: str | None = None) -> list[FeedVersion]:
        """Installed versions, newest first (of one feed, or of all)."""
        where, args = ("WHERE feed = ?", (feed,)) if feed is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {', '.join(_VERSION_COLUMNS)} FROM feed_versions {where} "  # noqa: S608 (fixed names)
            "ORDER BY id DESC",
            args,
        ).fetchall()
        return [_version(r) for r in rows]

    def attempts(self, feed: str | None = None) -> list[FeedUpdate]:
        """Update attempts, newest first (of one feed, or of all)."""
        where, args = ("WHERE feed = ?", (feed,)) if feed is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {', '.join(_UPDATE_COLUMNS)} FROM feed_updates {where} "  # noqa: S608 (fixed names)
            "ORDER BY id DESC",
            args,
        ).fetchall()
        return [FeedUpdate(*r) for r in rows]

    def last_checked(self, feed: str) -> str | None:
        """When ``feed`` was last found current: installed, or not modified since (UTC)."""
        row = self.conn.execute(
            "SELECT max(at) FROM feed_updates "
            "WHERE feed = ? AND outcome IN ('installed', 'not_modified')",
            (feed,),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])
