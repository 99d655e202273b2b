"""`feeds impact`: what a feed change would have done to stored matches and alerts."""

from __future__ import annotations

from compliance.cli.feeds import feeds  # noqa: F401 (the group this command joins)
