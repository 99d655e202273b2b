"""Categorised domain feeds: formats, loading and compilation into a :class:`DomainIndex`.

Built-in formats (detected from the content; ``format:`` in the config forces one;
more can be registered, see :mod:`compliance.feeds.formats`):

* ``plain``: one domain a line, ``#`` comments, optional ``*.`` prefix;
* ``hosts``: ``0.0.0.0 domain [domain...]``, loopback names skipped;
* ``adblock``: ``||domain^`` rules (``$options`` ignored, ``@@`` exceptions honoured,
  rules with a path or wildcard skipped: they do not name a whole domain);
* ``dnsmasq``: ``server=/domain/``, ``address=/domain/ip``, ``local=/domain/``;
* ``csv``: a header with a ``domain`` column and optionally a ``category`` column;
* a UT1/squidGuard folder: ``<category>/domains`` (several ``domains*`` files allowed).

Entries that are not valid domains, or that are a public suffix or a bare TLD
(``com.au`` would flag a whole country), are counted as skipped, never matched.

A feed is a ``list`` (its domains count for their categories) or an ``allow``-list (its
domains, with their subdomains, are never matched whatever another feed lists). A
category mapping turns a feed's own categories into policy categories. Loading never
fetches: :mod:`compliance.feedkeeper` does, and installs at the feed's path.
"""

from compliance.feeds.formats import FEED_FORMATS, FeedFormat
from compliance.feeds.load import (
    compile_index,
    content_digest,
    load_feed,
    load_feeds,
    parse_text_feed,
)
from compliance.feeds.spec import FEED_KINDS, FeedInfo, FeedSpec, previous_copy

__all__ = [
    "FEED_FORMATS",
    "FEED_KINDS",
    "FeedFormat",
    "FeedInfo",
    "FeedSpec",
    "compile_index",
    "content_digest",
    "load_feed",
    "load_feeds",
    "parse_text_feed",
    "previous_copy",
]
