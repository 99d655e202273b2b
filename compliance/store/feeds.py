"""Feed versions: every version of every feed the job installed, and every update tried."""

from __future__ import annotations

from compliance.store.database import Repository


class FeedVersions(Repository):
    """The feed version and update tables."""
