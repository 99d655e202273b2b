"""Temporary: the cache moved to compliance.feeds.cache."""

from compliance.feeds.cache import FeedCache, default_folder

__all__ = ["FeedCache", "default_folder"]
