"""The compiled-feed cache: compiled indexes in Arrow IPC files, memory-mapped on load.

A feed of millions of domains takes seconds to parse and normalise; its compiled form
(:class:`~compliance.domains.CompiledIndex`) is stored once under a key made of

* the content hash of every feed file and each feed's settings (path, category,
  name, format, kind, category mapping), and
* the versions of what decides how a domain is read: this compiler, the Public
  Suffix List snapshot and the IDNA library,

so a changed feed, setting or library never reuses a stale index. Loading
memory-maps the file: no Python object is built per domain. The cache holds public
feed data only (no log content), is written atomically and keeps the few most
recently used entries. A cache that cannot be read or written costs time, never
correctness: the feeds are compiled from their files and a warning is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from compliance.domains import CompiledIndex, Label
from compliance.feeds.formats import FEED_FORMATS
from compliance.feeds.spec import FeedInfo, FeedSpec

log = logging.getLogger(__name__)

#: Bumped whenever compilation or the file layout changes meaning.
#: 2: URLs counted apart from invalid domains; 3: allow-lists, mappings; 4: a hash table;
#: 5: hosting-platform zones refused; 6: every name of a hosts line in a plain list
COMPILER_VERSION = "6"
KEEP = 4  # compiled indexes kept (most recently used first)
_SUFFIX = ".feeds.arrow"


class FeedCache:
    """A folder of compiled feed indexes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def key(self, specs: list[FeedSpec], digests: list[list[str]]) -> str:
        """The cache key of these feeds with these file contents."""
        described = {
            "compiler": COMPILER_VERSION,
            "publicsuffixlist": version("publicsuffixlist"),
            "idna": version("idna"),
            # a plugin's format (and its version) decides how its files are read
            "formats": [[e.name, e.target, e.origin] for e in FEED_FORMATS.entries()],
            "feeds": [
                {
                    "path": str(spec.path),
                    "category": spec.category,
                    "name": spec.name,
                    "format": spec.format,
                    "kind": spec.kind,
                    "categories": sorted(spec.categories.items()),
                    "files": files,
                }
                for spec, files in zip(specs, digests, strict=True)
            ],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key[:32]}{_SUFFIX}"

    def load(self, key: str) -> tuple[CompiledIndex, list[FeedInfo]] | None:
        """The compiled index and feed records stored under ``key``, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            meta = json.loads(table.schema.metadata[b"compliance"])
            if meta.get("key") != key:
                return None
            sets = [frozenset(Label(c, f) for c, f in labels) for labels in meta["sets"]]
            infos = [
                FeedInfo(
                    name=i["name"],
                    format=i["format"],
                    sha256=i["sha256"],
                    entries=i["entries"],
                    exceptions=i["exceptions"],
                    categories=Counter(i["categories"]),
                    skipped=Counter(i["skipped"]),
                )
                for i in meta["feeds"]
            ]
            domains = table["domain"].combine_chunks()
            set_ids = table["set_id"].combine_chunks().to_numpy()
            hashes = table["hash"].combine_chunks().to_numpy()
            by_hash = table["by_hash"].combine_chunks().to_numpy()
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log.warning("feed cache %s is unreadable (%s); compiling the feeds again", path, exc)
            return None
        with contextlib.suppress(OSError):  # most recently used; a read-only cache is fine
            os.utime(path)
        compiled = CompiledIndex(
            domains,
            np.asarray(set_ids, dtype=np.int32),
            sets,
            np.asarray(hashes, dtype=np.uint64),
            np.asarray(by_hash, dtype=np.int32),
        )
        return compiled, infos

    @staticmethod
    def _table(compiled: CompiledIndex) -> pa.Table:
        """The columns stored: each domain with its label-set id, and the lookup table
        (the domains' hashes, sorted, each with its domain's position), so that a load
        computes nothing per domain."""
        compiled.hash_table()
        assert compiled.hashes is not None
        assert compiled.by_hash is not None
        return pa.table(
            {
                "domain": compiled.domains,
                "set_id": pa.array(compiled.set_ids),
                "hash": pa.array(compiled.hashes, pa.uint64()),
                "by_hash": pa.array(compiled.by_hash, pa.int32()),
            }
        )

    def save(self, key: str, compiled: CompiledIndex, infos: list[FeedInfo]) -> None:
        """Store a compiled index under ``key`` (atomically); failures only warn."""
        meta = {
            "key": key,
            "sets": [sorted([lb.category, lb.feed] for lb in labels) for labels in compiled.sets],
            "feeds": [
                {
                    "name": i.name,
                    "format": i.format,
                    "sha256": i.sha256,
                    "entries": i.entries,
                    "exceptions": i.exceptions,
                    "categories": dict(i.categories),
                    "skipped": dict(i.skipped),
                }
                for i in infos
            ],
        }
        table = self._table(compiled)
        table = table.replace_schema_metadata({"compliance": json.dumps(meta)})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(handle)
            try:
                with pa.OSFile(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
                os.replace(tmp, self._path(key))
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot write the feed cache in %s (%s); continuing", self.folder, exc)
            return
        self._prune()

    def _prune(self) -> None:
        entries = sorted(
            self.folder.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)


def default_folder() -> Path:
    """Where commands without a configured cache keep compiled feeds."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compliance-monitor" / "feeds"
