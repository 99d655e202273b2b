"""The scale benchmark: `compliance audit` against the same job in DuckDB, on mail of
several shapes and export formats.

    python -m tests.benchmark --rows 1M,5M --feed 1M --shape original,heavy-tail,all-distinct \\
        --format csv,eac,utf16 --repeat 3 [--run] [--profile]

For each shape, format and size it generates deterministic synthetic data once (cached in
``.benchmark/``, never committed), block by block so that memory does not grow with N:

* shapes (``--shape``): ``original`` is the data of earlier releases, byte for byte (one
  external address per site, ``contact@site`` under reserved names, one recipient per
  message, about 1% of rows to listed sites and their subdomains); ``heavy-tail`` draws
  external addresses from a heavy-tailed distribution over many local parts and domains,
  a share ``--distinct`` of them new (0.0: almost every one seen before; 1.0: every one
  new), with about 30% internal-to-internal mail, spam inbound (``FilteredAsSpam``),
  several recipients per message (one row each, same message id) and domains under public
  suffixes of one, two and three labels (``com``, ``co.uk``, ``act.edu.au``,
  ``nakahara.kawasaki.jp`` through the wildcard ``*.kawasaki.jp``); ``all-distinct`` is
  the same with every external address new;
* formats (``--format``): ``csv`` (``Get-MessageTrace | Export-Csv``: ``#TYPE`` line, every
  field quoted, CRLF, UTF-8), ``utf16`` (the same written with ``-Encoding Unicode``:
  UTF-16 LE with a BOM), ``eac`` (the Exchange admin center's extended report: one row per
  transport event, a ``RECEIVE`` row listing every recipient and one ``DELIVER`` or
  ``SEND`` row per recipient) and ``eac-utf16`` (that report in UTF-16 LE without a BOM);
* a feed of M domains (``--feed``; the realistic shapes' feed lists flagged sites under
  reserved names and under multi-label public suffixes, the rest random names under the
  same suffixes as the mail) and a directory of 20,000 people.

It then runs, alternating, `compliance audit` in its own process (wall time, rows/s, peak
resident memory from ``wait4``), one DuckDB query doing the same job (read the export,
take the external party's domain, split and match the suffixes of each distinct domain
against the feed, join back, count matched rows and senders) and a bare Arrow CSV parse
of the same columns (the floor any reader of the file sits on). It prints one table row
per (shape, format, N, M) with the medians, the ratios to DuckDB and to the parse, and
the matched counts of the project and of DuckDB, which must be equal (the benchmark
exits non-zero when they are not). ``--run`` also times `compliance run` (a scheduled
run into a fresh store) over the same file; ``--profile`` samples where each spends its
time, stage by stage. ``--history`` times scheduled runs over stores with days of history.

Rows are (message, recipient) pairs in every format; the extended report's file has one
more row (the ``RECEIVE`` event) per message.

DuckDB is a benchmark-only dependency: ``pip install duckdb``.
"""

from __future__ import annotations

import argparse
import codecs
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".benchmark"
PEOPLE = 20_000
UNITS = 50
FLAGGED_SITES = 1_000
BENIGN_SITES = 50_000
SEED = 20261123
HEADER = [
    "PSComputerName", "RunspaceId", "PSShowComputerName", "Organization", "MessageId",
    "Received", "SenderAddress", "RecipientAddress", "Subject", "Status", "ToIP", "FromIP",
    "Size", "MessageTraceId", "StartDate", "EndDate", "Index",
]  # fmt: skip


def parse_count(text: str) -> int:
    """``1M`` → 1_000_000, ``100k`` → 100_000."""
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * factor)


def _words(rng: np.random.Generator, n: int, length: int = 10) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    picks = rng.integers(0, 26, size=(n, length))
    return np.array(["".join(row) for row in letters[picks]])


def make_feed(path: Path, m: int) -> None:
    """M random registrable domains under reserved TLDs; the first ones are the flagged sites."""
    rng = np.random.default_rng(SEED + m)
    names = _words(rng, m, 12)
    tlds = np.array([".test", ".example"])[rng.integers(0, 2, size=m)]
    domains = np.char.add(names, tlds)
    domains[:FLAGGED_SITES] = [f"flagged{i:04d}.test" for i in range(FLAGGED_SITES)]
    path.write_text("# synthetic benchmark feed\n" + "\n".join(domains.tolist()) + "\n")


def make_directory(path: Path) -> None:
    lines = ["mail,id,department"]
    for i in range(PEOPLE):
        unit = f"Division{i % 5}/Team{i % UNITS}"
        lines.append(f"user{i:05d}@corp.example,{i:08d}-0000-4000-8000-000000000000,{unit}")
    path.write_text("\n".join(lines) + "\n")


def make_export(
    path: Path,
    n: int,
    block: int = 1_000_000,
    start_day: str = "2026-10-01",
    days: int = 30,
    encoding: str = "utf-8",
) -> None:
    """N rows of a Get-MessageTrace export over ``days`` days, written block by block (the
    ``original`` shape; ``encoding="utf-16"`` writes it as ``Export-Csv -Encoding Unicode``)."""
    rng = np.random.default_rng(SEED + n)
    benign = np.char.add(_words(rng, BENIGN_SITES, 8), ".example")
    flagged = np.array([f"flagged{i:04d}.test" for i in range(FLAGGED_SITES)])
    prefixes = np.array(["", "www.", "m.", "book.", "vip.city."])
    start = np.datetime64(f"{start_day}T00:00:00")
    with path.open("wb") as raw, encoded(raw, encoding) as out:
        out.write(b"#TYPE Deserialized.Microsoft.Exchange.Management.FfoReporting.MessageTrace\r\n")
        for offset in range(0, n, block):
            k = min(block, n - offset)
            people = np.char.add(
                np.char.add("user", np.char.zfill(rng.integers(0, PEOPLE, k).astype(str), 5)),
                "@corp.example",
            )
            is_flagged = rng.random(k) < 0.01
            site = np.where(
                is_flagged,
                np.char.add(
                    prefixes[rng.integers(0, len(prefixes), k)],
                    flagged[rng.integers(0, FLAGGED_SITES, k)],
                ),
                benign[rng.integers(0, BENIGN_SITES, k)],
            )
            external = np.char.add("contact@", site)
            outbound = rng.random(k) < 0.5
            seconds = rng.integers(0, days * 86400, k)
            moments = (start + seconds.astype("timedelta64[s]")).astype("datetime64[s]")
            stamp = pa.array(moments).cast(pa.timestamp("s"))
            received = pacsv_dates(stamp)
            index = np.arange(offset, offset + k)
            table = pa.table(
                {
                    "PSComputerName": np.full(k, "outlook.office365.com"),
                    "RunspaceId": np.full(k, "5c5b2f7e-0000-4000-8000-000000000001"),
                    "PSShowComputerName": np.full(k, "False"),
                    "Organization": np.full(k, "corp.example"),
                    "MessageId": np.char.add(np.char.add("<m", index.astype(str)), "@mail.test>"),
                    "Received": received,
                    "SenderAddress": np.where(outbound, people, external),
                    "RecipientAddress": np.where(outbound, external, people),
                    "Subject": np.full(k, "Quarterly figures"),
                    "Status": np.full(k, "Delivered"),
                    "ToIP": np.full(k, ""),
                    "FromIP": np.full(k, "192.0.2.10"),
                    "Size": rng.lognormal(10, 1.2, k).astype(np.int64),
                    "MessageTraceId": np.char.add(
                        "8f0c6f4e-0000-4000-8000-", np.char.zfill(index.astype(str), 12)
                    ),
                    "StartDate": np.full(k, "10/1/2026 12:00:00 AM"),
                    "EndDate": np.full(k, "10/31/2026 12:00:00 AM"),
                    "Index": index,
                }
            )
            options = pacsv.WriteOptions(
                include_header=offset == 0,
                quoting_style="all_valid",
                quoting_header="all_valid",
                eol="\r\n",  # Export-Csv writes CRLF
            )
            pacsv.write_csv(table, out, write_options=options)


def pacsv_dates(stamps: pa.Array) -> pa.Array:
    """en-US culture dates as Export-Csv writes them: ``11/5/2026 9:03:00 AM``."""
    import pyarrow.compute as pc

    hour = pc.hour(stamps)
    h12 = pc.if_else(pc.equal(pc.subtract(hour, pc.multiply(pc.divide(hour, 12), 12)), 0), 12,
                     pc.subtract(hour, pc.multiply(pc.divide(hour, 12), 12)))  # fmt: skip
    ampm = pc.if_else(pc.less(hour, 12), "AM", "PM")
    parts = [
        pc.cast(pc.month(stamps), pa.string()), "/", pc.cast(pc.day(stamps), pa.string()), "/",
        pc.cast(pc.year(stamps), pa.string()), " ", pc.cast(h12, pa.string()), ":",
        pc.utf8_lpad(pc.cast(pc.minute(stamps), pa.string()), 2, "0"), ":",
        pc.utf8_lpad(pc.cast(pc.second(stamps), pa.string()), 2, "0"), " ", ampm,
    ]  # fmt: skip
    return pc.binary_join_element_wise(*parts, "")


# --- Encodings ---------------------------------------------------------------------------


class Transcoder(io.RawIOBase):
    """A binary sink that takes UTF-8 and writes it to ``out`` in another encoding (the
    CSV writer writes UTF-8; a character cut between two writes is carried over)."""

    def __init__(self, out: BinaryIO, encoding: str, bom: bool) -> None:
        super().__init__()
        self._out = out
        self._encoding = encoding
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        if bom:
            out.write("\ufeff".encode(encoding))

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        self._out.write(self._decoder.decode(block).encode(self._encoding))
        return len(block)

    def close(self) -> None:
        if not self.closed:
            self._out.write(self._decoder.decode(b"", final=True).encode(self._encoding))
        super().close()


@contextmanager
def encoded(out: BinaryIO, encoding: str) -> Iterator[Any]:
    """``out`` itself for UTF-8, else a :class:`Transcoder` into ``encoding`` (``utf-16``:
    UTF-16 LE with a BOM, as ``Export-Csv -Encoding Unicode`` writes it; ``utf-16-le``:
    without one)."""
    if encoding == "utf-8":
        yield out
        return
    sink = Transcoder(out, "utf-16-le", bom=encoding == "utf-16")
    try:
        yield sink
    finally:
        sink.close()


# --- Mail that looks like mail -----------------------------------------------------------

#: Public suffixes of one, two and three labels, all in the Public Suffix List's ICANN
#: section (``nakahara.kawasaki.jp`` through its wildcard rule ``*.kawasaki.jp``), with
#: their weights among the external domains.
SUFFIXES: tuple[tuple[str, int], ...] = (
    ("com", 30), ("net", 5), ("org", 5), ("de", 6), ("fr", 4), ("nl", 3), ("it", 2), ("io", 2),
    ("co.uk", 8), ("com.au", 4), ("co.jp", 2), ("com.br", 2), ("org.uk", 1), ("co.nz", 1),
    ("co.za", 1), ("com.mx", 1), ("ne.jp", 1), ("gv.at", 1),
    ("act.edu.au", 1), ("nsw.edu.au", 1), ("k12.ca.us", 1), ("lib.ca.us", 1), ("ltd.co.im", 1),
    ("nakahara.kawasaki.jp", 1), ("chuo.osaka.jp", 1), ("chiyoda.tokyo.jp", 1),
    ("kita.kyoto.jp", 1),
)  # fmt: skip
#: Flagged sites of the realistic feed under those multi-label suffixes (as many again are
#: ``flaggedNNNN.test``, as in the original feed).
FLAGGED_PSL_SITES = 1_000
#: Registrable domains external mail comes from and goes to (their popularity is heavy-tailed).
EXTERNAL_DOMAINS = 200_000
#: External addresses known before the first message (the repeat draws' first targets).
KNOWN_ADDRESSES = 500
#: Shares of messages by kind (internal, outbound, inbound), about 30% of rows internal
#: with the internal copies of outbound mail.
KINDS = (0.27, 0.33, 0.40)
INTERNAL, OUTBOUND, INBOUND = 0, 1, 2
SPAM_SHARE = 0.25  # of inbound messages
FAILED_SHARE = 0.01  # of outbound messages
CC_SHARE = 0.25  # of an outbound message's further recipients: a colleague in copy
RECIPIENT_P = 0.6  # recipients per message: geometric, mean 1 / RECIPIENT_P
MAX_RECIPIENTS = 12
FLAGGED_SHARE = 0.01  # of external addresses drawn: a listed site
MAIL_BLOCK = 250_000  # rows of mail generated at a time (bounds the generator's memory)
DRAW_SLICE = 1 << 16  # external addresses drawn at a time (new ones join the repeat pool)
FLAG_PREFIXES = ("", "www.", "m.", "book.", "vip.city.")
FLAG_ROLES = ("info", "contact", "booking", "office", "hello")
HOST_PREFIXES = ("mail.", "eu.", "mx.", "notify.", "e.")
SUBJECTS: tuple[tuple[str, int], ...] = (
    ("Quarterly figures", 20), ("Re: invoice 2026-10", 15), ("Meeting notes, Tuesday", 10),
    ('FW: "Draft" proposal', 8), ("Your order has shipped", 12), ("Newsletter: October", 12),
    ("Réunion d'équipe", 3), ("Angebot für Q4", 2), ("Re: schedule\r\nsecond line", 1),
    ("", 2),
)  # fmt: skip
_CONSONANTS, _VOWELS = "bdfghklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]
#: Name-like first parts of local parts: every pair of syllables.
TOKENS = pa.array([a + b for a in _SYLLABLES for b in _SYLLABLES], pa.string())
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def mix64(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64, so distinct inputs stay distinct."""
    z = values.astype(np.uint64) ^ np.uint64(salt)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _unit(hashes: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from 64-bit hashes."""
    return (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _log_uniform(u: np.ndarray, size: int | np.ndarray) -> np.ndarray:
    """Ranks in [0, size) with P(rank) falling as 1 / rank (Zipf's law, exponent 1)."""
    rank = np.floor(np.exp(u * np.log(np.asarray(size, dtype=np.float64) + 1.0))) - 1
    top = np.asarray(size, dtype=np.int64) - 1
    return np.asarray(np.minimum(rank.astype(np.int64), top), dtype=np.int64)


def _strings(chars: np.ndarray, lengths: np.ndarray | None = None) -> pa.Array:
    """An Arrow string array from a (rows, width) matrix of ASCII codes, each row cut to
    its length (default: the whole width)."""
    rows, width = chars.shape
    if lengths is None:
        lengths = np.full(rows, width, dtype=np.int64)
    keep = np.arange(width) < lengths[:, None]
    data = np.ascontiguousarray(chars, dtype=np.uint8)[keep]
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeStringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())
    ).cast(pa.string())


def _letters(values: np.ndarray, width: int, lengths: np.ndarray | None = None) -> pa.Array:
    """Each value written in base 26 with the letters a-z, ``width`` letters."""
    powers = np.uint64(26) ** np.arange(width, dtype=np.uint64)
    digits = (values.astype(np.uint64)[:, None] // powers) % np.uint64(26)
    return _strings(digits.astype(np.uint8) + ord("a"), lengths)


def _hex(values: np.ndarray, width: int = 16) -> pa.Array:
    """Each value's last ``width`` hex digits."""
    shifts = np.uint64(4) * np.arange(width - 1, -1, -1, dtype=np.uint64)
    nibbles = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)
    return _strings(_HEX[nibbles.astype(np.intp)])


def _guid(a: np.ndarray, b: np.ndarray) -> pa.Array:
    """GUID-shaped text (version 4, variant 8) from two 64-bit hashes."""
    x, y = _hex(a), _hex(b)

    def cut(s: pa.Array, start: int, stop: int) -> pa.Array:
        return pc.utf8_slice_codeunits(s, start, stop)

    return pc.binary_join_element_wise(
        cut(x, 0, 8), "-", cut(x, 8, 12), "-4", cut(x, 12, 15), "-8", cut(y, 0, 3), "-",
        cut(y, 3, 15), "",
    )  # fmt: skip


def _weighted(u: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Index into ``weights`` chosen by uniform ``u`` in proportion to them."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.asarray(np.searchsorted(cumulative, u * cumulative[-1], side="right"))


def _coded(codes: np.ndarray, values: Sequence[str]) -> pa.Array:
    """``values[code]`` for each code, each value stored once (the CSV writer writes it out)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(values))


def _const(k: int, value: str) -> pa.Array:
    """``value`` on each of ``k`` rows."""
    return _coded(np.zeros(k, np.int8), [value])


def _either(mask: np.ndarray, yes: str, no: str) -> pa.Array:
    """``yes`` where ``mask`` holds, else ``no``."""
    return _coded(mask, [no, yes])


def suffix_names() -> pa.Array:
    """The suffixes of :data:`SUFFIXES`, in order."""
    return pa.array([s for s, _ in SUFFIXES], pa.string())


def external_hosts(count: int = EXTERNAL_DOMAINS, salt: int = SEED) -> pa.Array:
    """``count`` external mail hosts: a name of 5-10 letters under a weighted public
    suffix, one in seven behind a host label (``mail.``, ``eu.``...)."""
    h = mix64(np.arange(count, dtype=np.uint64), salt)
    h2 = mix64(h, 1)
    word = _letters(h >> np.uint64(8), 10, (5 + h % np.uint64(6)).astype(np.int64))
    suffix = suffix_names().take(pa.array(_weighted(_unit(h2), [w for _, w in SUFFIXES])))
    labels = np.where(h2 % np.uint64(7) == 0, 1 + (h2 >> np.uint64(3)) % np.uint64(5), 0)
    prefix = pa.array(["", *HOST_PREFIXES]).take(pa.array(labels.astype(np.int64)))
    return pc.binary_join_element_wise(prefix, word, ".", suffix, "")


def flagged_sites() -> pa.Array:
    """The realistic feed's listed sites: ``flaggedNNNN.test`` and ``flagNNNN.<suffix>``
    under the two- and three-label suffixes."""
    multi = [s for s, _ in SUFFIXES if "." in s]
    return pa.array(
        [f"flagged{i:04d}.test" for i in range(FLAGGED_SITES)]
        + [f"flag{i:04d}.{multi[i % len(multi)]}" for i in range(FLAGGED_PSL_SITES)],
        pa.string(),
    )


def make_psl_feed(path: Path, m: int) -> None:
    """M domains: the flagged sites first, then random 12-letter names under the weighted
    suffixes (never a benign external domain: those have at most 10 letters)."""
    rng = np.random.default_rng(SEED + m + 1)
    flagged = flagged_sites()
    rest = max(0, m - len(flagged))
    words = _letters(rng.integers(0, 2**62, rest, dtype=np.int64).astype(np.uint64), 12)
    suffix = suffix_names().take(pa.array(_weighted(rng.random(rest), [w for _, w in SUFFIXES])))
    domains = pa.concat_arrays([flagged, pc.binary_join_element_wise(words, suffix, ".")])[:m]
    with path.open("w") as out:
        out.write("# synthetic benchmark feed (public suffixes of one to three labels)\n")
        for start in range(0, len(domains), 1 << 20):
            part = domains[start : start + (1 << 20)].to_pylist()
            out.write("\n".join(str(d) for d in part) + "\n")


@dataclass
class Mail:
    """Mail of a realistic shape, generated block by block: no list grows with N.

    Each message has a kind (internal, outbound, inbound), a time within ``days`` days
    of ``start_day``, one internal or external sender and 1 to 12 recipients (one row
    each). External addresses are drawn as the mail goes: a share ``distinct`` of draws
    make a new address, the others repeat one already made, chosen with Zipf's law over
    the order they were made in (so the first are the most common). Each address has a
    name-like local part unique to it and a host whose popularity is heavy-tailed too;
    one draw in a hundred is a listed site instead (with a role name, or a new local
    part for a new draw).
    """

    n: int
    distinct: float
    seed: int
    start_day: str = "2026-10-01"
    days: int = 30
    block: int = MAIL_BLOCK
    rng: np.random.Generator = field(init=False)
    hosts: pa.Array = field(init=False)
    flagged: pa.Array = field(init=False)
    people: pa.Array = field(init=False)
    created: int = 0
    messages: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.hosts = external_hosts(EXTERNAL_DOMAINS, self.seed)
        self.flagged = flagged_sites()
        self.people = pa.array([f"user{i:05d}@corp.example" for i in range(PEOPLE)])

    def blocks(self) -> Iterator[pa.Table]:
        """The mail in blocks of at most ``block`` rows, whole messages in each."""
        for offset in range(0, self.n, self.block):
            yield self._block(min(self.block, self.n - offset))

    def _addresses(self, index: np.ndarray) -> pa.Array:
        """The external address numbered ``index`` (the same number, the same text)."""
        h = mix64(index.astype(np.uint64), self.seed)
        token = TOKENS.take(pa.array((h % np.uint64(len(TOKENS))).astype(np.int64)))
        code = _letters((index.astype(np.uint64) * np.uint64(1_000_003)) % np.uint64(26**6), 6)
        host = self.hosts.take(pa.array(_log_uniform(_unit(mix64(h, 2)), len(self.hosts))))
        address = pc.binary_join_element_wise(token, ".", code, "@", host, "")
        title = h % np.uint64(12) == 0  # Some.Name@Host.Co.Uk, as some systems write them
        return pc.if_else(pa.array(title), pc.utf8_title(address), address)

    def _flagged(self, index: np.ndarray, new: np.ndarray) -> pa.Array:
        """Addresses at listed sites: a role at a site for a repeat, a new local part for a
        new draw."""
        h = mix64(index.astype(np.uint64), self.seed + 7)
        roles = pa.array(FLAG_ROLES).take(pa.array((h % np.uint64(5)).astype(np.int64)))
        fresh = pc.binary_join_element_wise(
            TOKENS.take(pa.array((h % np.uint64(len(TOKENS))).astype(np.int64))),
            ".",
            _letters((index.astype(np.uint64) * np.uint64(1_000_003)) % np.uint64(26**6), 6),
            "",
        )
        local = pc.if_else(pa.array(new), fresh, roles)
        prefix = pa.array(FLAG_PREFIXES).take(
            pa.array(((h >> np.uint64(8)) % np.uint64(len(FLAG_PREFIXES))).astype(np.int64))
        )
        site = self.flagged.take(
            pa.array(((h >> np.uint64(16)) % np.uint64(len(self.flagged))).astype(np.int64))
        )
        return pc.binary_join_element_wise(local, "@", prefix, site, "")

    def _fresh(self, count: int) -> pa.Array:
        """``count`` external addresses never drawn before."""
        index = KNOWN_ADDRESSES + self.created + np.arange(count, dtype=np.int64)
        self.created += count
        return self._addresses(index)

    def external(self, count: int) -> pa.Array:
        """``count`` external addresses drawn as the shape says (see the class)."""
        parts = []
        for start in range(0, count, DRAW_SLICE):
            size = min(DRAW_SLICE, count - start)
            new = self.rng.random(size) < self.distinct
            flagged = self.rng.random(size) < FLAGGED_SHARE
            known = KNOWN_ADDRESSES + self.created
            index = _log_uniform(self.rng.random(size), known)
            fresh = int(new.sum())
            index[new] = known + np.arange(fresh)
            self.created += fresh
            parts.append(
                pc.if_else(pa.array(flagged), self._flagged(index, new), self._addresses(index))
            )
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    def _block(self, rows: int) -> pa.Table:
        rng = self.rng
        k = np.minimum(rng.geometric(RECIPIENT_P, rows), MAX_RECIPIENTS)
        ends = np.cumsum(k)
        m = int(np.searchsorted(ends, rows)) + 1  # whole messages, the last cut to fit
        k = k[:m].copy()
        k[-1] -= int(ends[m - 1]) - rows
        message = np.repeat(np.arange(m), k)  # of each row, in this block
        first = np.concatenate([[0], np.cumsum(k)[:-1]])
        position = np.arange(rows) - first[message]
        number = self.messages + np.arange(m, dtype=np.int64)
        self.messages += m

        kind = _weighted(rng.random(m), [round(s * 100) for s in KINDS])
        seconds = rng.integers(0, self.days * 86400, m)
        size = rng.lognormal(10, 1.2, m).astype(np.int64)
        spam = (kind == INBOUND) & (rng.random(m) < SPAM_SHARE)
        failed = (kind == OUTBOUND) & (rng.random(m) < FAILED_SHARE)
        sender_person = rng.integers(0, PEOPLE, m)
        first_recipient = rng.integers(0, PEOPLE, m)
        subject = pa.array([s for s, _ in SUBJECTS]).take(
            pa.array(_weighted(rng.random(m), [w for _, w in SUBJECTS]))
        )
        row_kind = kind[message]
        cc = (row_kind == OUTBOUND) & (position > 0) & (rng.random(rows) < CC_SHARE)
        external_recipient = (row_kind == OUTBOUND) & ~cc
        # distinct internal recipients per message: steps of a number prime to PEOPLE
        colleague = (sender_person[message] + position * 7919) % PEOPLE
        internal = (first_recipient[message] + position * 7919) % PEOPLE

        inbound = np.flatnonzero(kind == INBOUND)
        outside = np.flatnonzero(external_recipient)
        drawn = self.external(len(inbound) + len(outside))
        senders = pa.concat_arrays([self.people, drawn[: len(inbound)]])
        sender_code = sender_person.copy()
        sender_code[inbound] = PEOPLE + np.arange(len(inbound))
        recipients = self._distinct_recipients(drawn[len(inbound) :], message[outside])
        recipient_code = np.where(cc, colleague, internal)
        recipient_code[outside] = PEOPLE + np.arange(len(outside))
        everyone = pa.concat_arrays([self.people, recipients])

        h = mix64(number.astype(np.uint64), 0x6D657373)
        host = pa.array(["eurprd01.prod.outlook.com", "mail.gateway.example"]).take(
            pa.array((kind == INBOUND).astype(np.int64))
        )
        message_id = pc.binary_join_element_wise(
            "<", _hex(h), ".", _hex(mix64(h, 1), 8), "@", host, ">", ""
        )
        status = pa.array(["Delivered", "FilteredAsSpam", "Failed"]).take(
            pa.array(np.where(spam, 1, np.where(failed, 2, 0)))
        )
        start = np.datetime64(f"{self.start_day}T00:00:00")
        moments = pa.array((start + seconds.astype("timedelta64[s]")).astype("datetime64[s]"))
        at = pa.array(message)
        return pa.table(
            {
                "message": pa.array(number).take(at),
                "position": pa.array(position.astype(np.int32)),
                "recipients": pa.array(k.astype(np.int32)).take(at),
                "kind": pa.array(kind.astype(np.int8)).take(at),
                "time": moments.take(at),
                "sender": senders.take(pa.array(sender_code)).take(at),
                "recipient": everyone.take(pa.array(recipient_code)),
                "status": status.take(at),
                "size": pa.array(size).take(at),
                "subject": subject.take(at),
                "message_id": message_id.take(at),
                "trace_id": _guid(mix64(h, 2), mix64(h, 3)).take(at),
            }
        )

    def _distinct_recipients(self, drawn: pa.Array, message: np.ndarray) -> pa.Array:
        """``drawn`` with a new address where one repeats an earlier recipient of the same
        message (a message is never sent twice to one address)."""
        if not len(drawn):
            return drawn
        codes = pc.dictionary_encode(pc.utf8_lower(drawn)).indices.to_numpy()
        key = message.astype(np.int64) * np.int64(len(drawn) + 1) + codes
        seen = np.zeros(len(key), dtype=bool)
        order = np.argsort(key, kind="stable")
        seen[order[1:]] = key[order[1:]] == key[order[:-1]]
        again = np.flatnonzero(seen)
        if not again.size:
            return drawn
        index = np.arange(len(drawn))
        index[again] = len(drawn) + np.arange(len(again))
        return pa.concat_arrays([drawn, self._fresh(len(again))]).take(pa.array(index))


def powershell_table(block: pa.Table, first_index: int, start_day: str, days: int) -> pa.Table:
    """A block of :class:`Mail` as ``Get-MessageTrace | Export-Csv`` columns."""
    k = block.num_rows
    kind = block["kind"].to_numpy()
    first = np.datetime64(start_day, "D").astype(object)
    start, end = (f"{d.month}/{d.day}/{d.year}" for d in (first, first + dt.timedelta(days)))
    return pa.table(
        {
            "PSComputerName": _const(k, "outlook.office365.com"),
            "RunspaceId": _const(k, "5c5b2f7e-0000-4000-8000-000000000001"),
            "PSShowComputerName": _const(k, "False"),
            "Organization": _const(k, "corp.example"),
            "MessageId": block["message_id"],
            "Received": pacsv_dates(block["time"].combine_chunks()),
            "SenderAddress": block["sender"],
            "RecipientAddress": block["recipient"],
            "Subject": block["subject"],
            "Status": block["status"],
            "ToIP": _either(kind == OUTBOUND, "203.0.113.25", ""),
            "FromIP": _either(kind == INBOUND, "198.51.100.7", "192.0.2.10"),
            "Size": block["size"],
            "MessageTraceId": block["trace_id"],
            "StartDate": _const(k, f"{start} 12:00:00 AM"),
            "EndDate": _const(k, f"{end} 12:00:00 AM"),
            "Index": np.arange(first_index, first_index + k),
        }
    )


#: The Exchange admin center extended report's columns (docs: message trace, "extended
#: report"; the project's exchange connector reads it as ``eac-extended-report``).
EAC_HEADER = [
    "date_time_utc", "client_ip", "client_hostname", "server_ip", "server_hostname",
    "source_context", "connector_id", "source", "event_id", "internal_message_id",
    "message_id", "network_message_id", "recipient_address", "recipient_status",
    "total_bytes", "recipient_count", "related_recipient_address", "reference",
    "message_subject", "sender_address", "return_path", "message_info", "directionality",
    "tenant_id", "original_client_ip", "original_server_ip", "custom_data",
]  # fmt: skip
_CUSTOM_DATA = (
    "S:InboundConnectorData=Name=Default;S:IncludeInSla=True;S:E2ELatency=1.204;"
    "S:AMA=SUM|v=1|action=|error=|atch=0;S:DeliveryPriority=Normal;S:AccountForest=corp"
)


def eac_table(block: pa.Table) -> pa.Table:
    """A block of :class:`Mail` as the extended report's rows: per message, a ``RECEIVE``
    event listing every recipient (``;``-separated), then one ``DELIVER`` (to a mailbox
    here) or ``SEND`` (out to the Internet) event per recipient."""
    position = block["position"].to_numpy()
    heads = np.flatnonzero(position == 0)
    rows, m = block.num_rows, len(heads)
    offsets = np.append(heads, rows)
    message = np.repeat(np.arange(m), np.diff(offsets))  # of each mail row
    # each message's RECEIVE row, then its recipients' rows: from which mail row each comes
    receive = np.zeros(m + rows, dtype=bool)
    receive[heads + np.arange(m)] = True
    source = np.empty(m + rows, dtype=np.int64)
    source[receive] = heads
    source[~receive] = np.arange(rows)
    part = block.take(pa.array(source))
    k = part.num_rows
    recipient = block["recipient"].combine_chunks()
    listed = pc.binary_join(
        pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), recipient), ";"
    )
    recipients = pa.concat_arrays([listed, recipient]).take(
        pa.array(np.where(receive, message[source], m + source))
    )
    outside = ~np.asarray(
        pc.ends_with(pc.utf8_lower(recipient), "@corp.example").to_numpy(zero_copy_only=False),
        dtype=bool,
    )[source]
    event = np.where(receive, 0, np.where(outside, 2, 1))  # RECEIVE, DELIVER, SEND
    inbound = part["kind"].to_numpy() == INBOUND
    number = part["message"].to_numpy().astype(np.uint64)
    h = mix64(number, 0x6E6D6964)
    delay = np.where(receive, 0, 1 + position[source])  # seconds after the message came in
    millis = part["time"].combine_chunks().cast(pa.int64()).to_numpy() * 1000 + (
        delay * 1000 + (h % np.uint64(1000)).astype(np.int64)
    )
    stamp = pc.strftime(pa.array(millis).cast(pa.timestamp("ms")), format="%Y-%m-%dT%H:%M:%SZ")
    status = np.where(receive, 0, np.where(inbound, 1, 2))
    return pa.table(
        {
            "date_time_utc": stamp,
            "client_ip": _either(inbound, "198.51.100.7", "2001:db8::25"),
            "client_hostname": _either(inbound, "mail.gateway.example", "EX1P192MB0001"),
            "server_ip": _const(k, "2001:db8::1"),
            "server_hostname": _const(k, "EX1P192MB0002.eurprd01.prod.outlook.com"),
            "source_context": _const(k, "08DCE1A2B3C4D5E6;2026-10-01T00:00:00.000Z;0"),
            "connector_id": _either(inbound, "Default EX1P192MB0002", ""),
            "source": _either(event == 1, "STOREDRIVER", "SMTP"),
            "event_id": _coded(event, ("RECEIVE", "DELIVER", "SEND")),
            "internal_message_id": (h >> np.uint64(20)).astype(np.int64),
            "message_id": part["message_id"],
            "network_message_id": part["trace_id"],
            "recipient_address": recipients,
            "recipient_status": _coded(
                status, ("", "250 2.1.5 Recipient OK", "250 2.6.0 Queued mail for delivery")
            ),
            "total_bytes": part["size"],
            "recipient_count": np.where(receive, part["recipients"].to_numpy(), 1),
            "related_recipient_address": _const(k, ""),
            "reference": _const(k, ""),
            "message_subject": part["subject"],
            "sender_address": part["sender"],
            "return_path": part["sender"],
            "message_info": _const(k, ""),
            "directionality": _either(inbound, "Incoming", "Originating"),
            "tenant_id": _const(k, "0a1b2c3d-0000-4000-8000-00000000c0de"),
            "original_client_ip": _either(inbound, "198.51.100.7", "2001:db8::25"),
            "original_server_ip": _const(k, ""),
            "custom_data": _const(k, _CUSTOM_DATA),
        }
    )


def make_mail_export(
    path: Path, n: int, shape: Shape, fmt: Format, block: int = MAIL_BLOCK
) -> None:
    """N rows of ``shape`` mail written as ``fmt``, block by block."""
    mail = Mail(n, shape.distinct, SEED + n + zlib.crc32(shape.stem.encode()), block=block)
    options = pacsv.WriteOptions(quoting_style="all_valid", quoting_header="all_valid", eol="\r\n")
    with path.open("wb") as raw, encoded(raw, fmt.encoding) as out:
        if fmt.layout == "powershell":
            out.write(
                b"#TYPE Deserialized.Microsoft.Exchange.Management.FfoReporting.MessageTrace\r\n"
            )
        written = 0
        for part in mail.blocks():
            table = (
                powershell_table(part, written, mail.start_day, mail.days)
                if fmt.layout == "powershell"
                else eac_table(part)
            )
            options.include_header = written == 0
            pacsv.write_csv(table, out, write_options=options)
            written += part.num_rows


# --- Shapes, formats and the data of one benchmark row -----------------------------------


@dataclass(frozen=True)
class Shape:
    """What the mail looks like: ``original``, ``heavy-tail`` (with its share of new
    external addresses) or ``all-distinct``."""

    name: str
    distinct: float = 0.0

    @property
    def stem(self) -> str:
        """Its part of a file name."""
        return f"heavy-tail-{self.distinct:g}" if self.name == "heavy-tail" else self.name

    @property
    def label(self) -> str:
        """Its name in a table."""
        return f"heavy-tail {self.distinct:g}" if self.name == "heavy-tail" else self.name


ORIGINAL = Shape("original")
SHAPES = ("original", "heavy-tail", "all-distinct")


def parse_shapes(names: str, distinct: str = "0.25") -> list[Shape]:
    """``original,heavy-tail`` with ``--distinct 0.1,0.5`` → the shapes to run."""
    shares = [float(x) for x in distinct.split(",") if x.strip()]
    if any(not 0.0 <= s <= 1.0 for s in shares):
        raise SystemExit(f"--distinct takes shares from 0.0 to 1.0, not {distinct}")
    out: list[Shape] = []
    for name in (x.strip() for x in names.split(",") if x.strip()):
        if name == "original":
            out.append(ORIGINAL)
        elif name == "heavy-tail":
            out += [Shape(name, s) for s in shares]
        elif name == "all-distinct":
            out.append(Shape(name, 1.0))
        else:
            raise SystemExit(f"unknown shape {name!r}: choose from {', '.join(SHAPES)}")
    return out


@dataclass(frozen=True)
class Format:
    """An export format: its layout (``powershell`` or ``eac``) and its encoding."""

    name: str
    layout: str
    encoding: str  # utf-8; utf-16 (LE with a BOM); utf-16-le (without)


FORMATS = {
    f.name: f
    for f in (
        Format("csv", "powershell", "utf-8"),
        Format("utf16", "powershell", "utf-16"),
        Format("eac", "eac", "utf-8"),
        Format("eac-utf16", "eac", "utf-16-le"),
    )
}
CSV = FORMATS["csv"]


def parse_formats(names: str) -> list[Format]:
    """``csv,eac`` → the formats to run."""
    out = []
    for name in (x.strip() for x in names.split(",") if x.strip()):
        if name not in FORMATS:
            raise SystemExit(f"unknown format {name!r}: choose from {', '.join(FORMATS)}")
        out.append(FORMATS[name])
    return out


@dataclass
class Data:
    """The files of one benchmark row: the export, the feed and the directory."""

    export: Path
    feed: Path
    directory: Path
    shape: Shape = ORIGINAL
    format: Format = CSV
    rows: int = 0
    feed_domains: int = 0

    @property
    def original(self) -> bool:
        """Whether this is the original shape (the data of earlier releases)."""
        return self.shape == ORIGINAL


def prepare(
    n: int,
    m: int,
    cache: Path = CACHE,
    shape: Shape = ORIGINAL,
    fmt: Format = CSV,
    block: int = MAIL_BLOCK,
) -> Data:
    """The data for N rows of ``shape`` as ``fmt`` and M feed domains, generated once into
    ``cache`` (``block``: rows generated at a time, for the realistic shapes)."""
    if shape == ORIGINAL and fmt.layout != "powershell":
        raise ValueError("the original shape is a Get-MessageTrace export: csv or utf16")
    cache.mkdir(exist_ok=True)
    if shape == ORIGINAL:
        name = f"trace-{n}.csv" if fmt == CSV else f"trace-{n}.{fmt.name}.csv"
        feed = cache / f"feed-{m}.txt"
    else:
        name = f"{shape.stem}-{n}-{fmt.name}.csv"
        feed = cache / f"feed-psl-{m}.txt"
    data = Data(cache / name, feed, cache / "directory.csv", shape, fmt, n, m)

    def export(path: Path) -> None:
        if shape == ORIGINAL:
            make_export(path, n, encoding=fmt.encoding)
        else:
            make_mail_export(path, n, shape, fmt, block)

    def feed_file(path: Path) -> None:
        (make_feed if shape == ORIGINAL else make_psl_feed)(path, m)

    for path, make in (
        (data.export, export),
        (data.feed, feed_file),
        (data.directory, make_directory),
    ):
        if not path.exists():
            started = time.perf_counter()
            tmp = path.with_suffix(".tmp")
            make(tmp)
            tmp.replace(path)
            print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return data


# --- The engines -------------------------------------------------------------------------

BENCHMARK_KEY = "benchmark-key-" + "0" * 40


def _env() -> dict[str, str]:
    return {**os.environ, "COMPLIANCE_PSEUDONYM_KEY": BENCHMARK_KEY}


def audit_arguments(data: Data) -> list[str]:
    """`compliance` arguments of the audit the benchmark times."""
    return [
        "-v", "audit", "--logs", str(data.export), "--feed", f"{data.feed}:escort-ads",
        "--policies", str(ROOT / "policies"), "--directory", str(data.directory),
        "--org-domain", "corp.example", "--format", "json",
        "--feed-cache", str(data.export.parent / "feed-cache"),
    ]  # fmt: skip


def _launch(arguments: list[str], folder: Path, name: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, standard error) of `compliance ARGUMENTS` in its own
    process; standard output goes to ``folder/NAME.out``."""
    out_path, err_path = folder / f"{name}.out", folder / f"{name}.err"
    command = [sys.executable, "-m", "compliance", *arguments]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *command],
            env=_env(),
            stdout=out,
            stderr=err,
            check=False,
        )
        seconds = time.perf_counter() - started
    text = err_path.read_text()
    lines = text.splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"compliance {arguments[1]} failed: {text[-2000:]}")
    return seconds, int(lines[-1]) * 1024, text  # Linux reports kilobytes


def run_project(data: Data) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, matched rows) of `compliance audit` in its own process."""
    seconds, peak, log = _launch(audit_arguments(data), data.export.parent, "audit")
    json.loads((data.export.parent / "audit.out").read_text())  # a whole report was written
    # the report's `matched` is evidence (and withheld for small groups); the peer counts
    # every row to a listed site, which the audit logs
    found = re.search(r"(\d+) matched events", log)
    if found is None:
        raise SystemExit("compliance audit logged no matched count")
    return seconds, peak, int(found.group(1))


#: Fields an alert gained after issue 17 began (ring rules, the exchange mark): left out of
#: the digest, so that it compares with the code of that time.
LATER_FIELDS = ("ring", "exchange_confirmed")
#: The digest of the original shape's alerts by the code at the start of issue 17 (commit
#: 09c4664^), by (rows, feed domains): what this code's alerts must equal.
START_DIGESTS = {
    (1_000_000, 1_000_000): "52 2efca48b",
    (5_000_000, 1_000_000): "3398 9304a261",
}


def alerts_digest(data: Data) -> str:
    """The last audit's alerts: their number and a digest of them (to compare code versions
    on the same data), without :data:`LATER_FIELDS`. On the original shape, at sizes whose
    digest at the start of issue 17 is known, ``=`` marks the same alerts and ``≠`` others."""
    alerts = json.loads((data.export.parent / "audit.out").read_text()).get("alerts", [])
    kept = [{k: v for k, v in alert.items() if k not in LATER_FIELDS} for alert in alerts]
    blob = json.dumps(kept, sort_keys=True).encode()
    digest = f"{len(alerts)} {hashlib.sha256(blob).hexdigest()[:8]}"
    start = START_DIGESTS.get((data.rows, data.feed_domains)) if data.original else None
    return digest if start is None else f"{digest} {'=' if digest == start else '≠'}"


# The audit's peak memory is read by a small launcher: a child forked straight from this
# (large) process would count this process's pages in its peak before it execs.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
    "_, status, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss, file=sys.stderr); "
    "sys.exit(os.waitstatus_to_exitcode(status))"
)

#: The scheduled run's configuration: one exchange source reading the export.
RUN_CONFIG = """\
organisation: {{domains: [corp.example]}}
directory: {directory}
sources:
  - {{name: exports, type: exchange, path: {export}}}
feeds:
  - {{path: {feed}, category: escort-ads}}
policies: [{policies}]
store: store.db
feed_cache: {feed_cache}
reports: {{dir: reports, formats: [json]}}
"""
#: The day the scheduled run evaluates as of: the day after the mail's 30 days.
RUN_TODAY = "2026-10-31"


def run_arguments(data: Data) -> list[str]:
    """A fresh folder (config, empty store) for a scheduled run over the export, and the
    `compliance` arguments of that run."""
    folder = data.export.parent / f"run-{data.export.stem}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    config = folder / "compliance.yaml"
    config.write_text(
        RUN_CONFIG.format(
            directory=data.directory,
            export=data.export,
            feed=data.feed,
            policies=ROOT / "policies",
            feed_cache=data.export.parent / "feed-cache",
        )
    )
    return ["-v", "run", "--config", str(config), "--today", RUN_TODAY]


def run_scheduled(data: Data) -> tuple[float, int, int, int]:
    """(seconds, peak RSS in bytes, matched rows, rows read) of `compliance run` into a
    fresh store over the same export, in its own process."""
    arguments = run_arguments(data)
    seconds, peak, log = _launch(arguments, Path(arguments[3]).parent, "run")
    found = re.search(r"run \d+: (\d+) rows, \d+ rejected, (\d+) new matched events", log)
    if found is None:
        raise SystemExit("compliance run logged no matched count")
    return seconds, peak, int(found.group(2)), int(found.group(1))


FEED_SQL = """
SELECT DISTINCT lower(trim(column0)) AS domain
FROM read_csv(?, header = false, columns = {'column0': 'VARCHAR'}, comment = '#')
"""
#: Each format's (sender, recipient) rows: one per message and recipient. The extended
#: report lists a message's recipients in its RECEIVE event and again one per event:
#: distinct (network message id, recipient) pairs, as the project reads it.
ROWS_SQL = {
    "powershell": "SELECT SenderAddress AS s, RecipientAddress AS r "
    "FROM read_csv(?, skip = 1, header = true, all_varchar = true{encoding})",
    "eac": "SELECT DISTINCT m, s, r FROM (SELECT network_message_id AS m, "
    "sender_address AS s, unnest(string_split(recipient_address, ';')) AS r "
    "FROM read_csv(?, header = true, all_varchar = true{encoding}))",
}
#: The same job as an analyst would write it: the external party's domain of each row, the
#: suffixes of each distinct domain matched against the feed, joined back to the rows.
DUCKDB_SQL = """
WITH feed AS ({feed}),
ext AS MATERIALIZED (
  SELECT s, sd = 'corp.example' AS outbound,
         CASE WHEN sd = 'corp.example' THEN rd ELSE sd END AS domain
  FROM (SELECT s, lower(split_part(s, '@', 2)) AS sd, lower(split_part(r, '@', 2)) AS rd
        FROM ({rows}))
  WHERE (sd = 'corp.example') <> (rd = 'corp.example')
),
domains AS (SELECT DISTINCT domain FROM ext),
suffixes AS (
  SELECT domain, array_to_string(list_slice(p, i, len(p)), '.') AS suffix
  FROM (SELECT domain, string_split(domain, '.') AS p FROM domains), range(1, len(p)) AS t(i)
),
listed AS (SELECT DISTINCT suffixes.domain FROM suffixes JOIN feed ON suffix = feed.domain),
matched AS (SELECT s, outbound FROM ext JOIN listed USING (domain))
SELECT count(*) AS matched, count(DISTINCT s) FILTER (WHERE outbound) AS senders FROM matched
"""


def duckdb_sql(fmt: Format) -> str:
    """The peer's query for an export of ``fmt`` (parameters: feed, export)."""
    encoding = "" if fmt.encoding == "utf-8" else ", encoding = 'utf-16'"
    rows = ROWS_SQL[fmt.layout].format(encoding=encoding)
    return DUCKDB_SQL.format(feed=FEED_SQL.strip(), rows=rows)


def run_duckdb(data: Data) -> tuple[float, int]:
    """(seconds, matched rows) of the peer query, in this process."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    found = con.execute(duckdb_sql(data.format), [str(data.feed), str(data.export)]).fetchone()
    con.close()
    assert found is not None
    return time.perf_counter() - started, int(found[0])


#: The columns the exchange connector converts, by layout (the bare parse reads the same).
PARSED_COLUMNS = {
    "powershell": [
        "Received", "SenderAddress", "RecipientAddress", "Status", "Size", "MessageId",
        "MessageTraceId",
    ],
    "eac": [
        "date_time_utc", "sender_address", "recipient_address", "event_id", "total_bytes",
        "network_message_id", "message_id", "source", "return_path",
    ],
}  # fmt: skip


def run_arrow_parse(data: Data) -> tuple[float, int]:
    """(seconds, rows) of a bare ``pyarrow.csv.read_csv`` of the export's columns (all
    cores, quoted newlines allowed, as the connector's): the floor of any reader."""
    fmt = data.format
    columns = PARSED_COLUMNS[fmt.layout]
    started = time.perf_counter()
    table = pacsv.read_csv(
        data.export,
        read_options=pacsv.ReadOptions(
            skip_rows=1 if fmt.layout == "powershell" else 0,
            encoding="utf8" if fmt.encoding == "utf-8" else fmt.encoding,
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, column_types=dict.fromkeys(columns, pa.string())
        ),
    )
    rows = table.num_rows
    del table
    return time.perf_counter() - started, rows


# --- Where the time goes -----------------------------------------------------------------

#: The pipeline's stages (docs/ARCHITECTURE.md) by the functions that do them: (stage,
#: file, function's qualified name). A sample goes to the innermost frame on its thread's
#: stack that a named rule covers (``Class.`` covers every method); failing that, to the
#: innermost that a rule without a name covers (a file, or a folder ending in ``/``).
#: Anything under an import is ``import``; a thread waiting on a lock or a queue is idle
#: and counts nowhere.
STAGE_RULES: tuple[tuple[str, str, str], ...] = (
    ("prepare: policies", "compliance/policy/loader.py", "load_policies"),
    ("prepare: feeds", "compliance/feeds/load.py", "load_feeds"),
    ("prepare: directory", "connectors/directory.py", "load_directory"),
    ("prepare: formats", "connectors/exchange.py", "detect_file"),
    ("read: parse", "connectors/textfile.py", "iter_csv"),
    ("read: transcode", "connectors/textfile.py", "_Utf8Reader."),
    ("read: convert", "connectors/textfile.py", "build_raw"),
    ("read: convert", "connectors/exchange.py", "_split_recipient_status"),
    ("read: repeated events", "connectors/exchange.py", "_drop_seen"),
    ("normalise: addresses", "compliance/pipeline.py", "split_parties"),
    ("normalise: directory", "compliance/pipeline.py", "look_up_people"),
    ("normalise: times, totals", "compliance/pipeline.py", "rows_in_period"),
    ("normalise: times, totals", "compliance/pipeline.py", "day_range"),
    ("normalise: times, totals", "compliance/pipeline.py", "days_of"),
    ("normalise: times, totals", "compliance/pipeline.py", "grouped_totals"),
    ("normalise: message keys", "compliance/pipeline.py", "unkeyed_message_keys"),
    ("normalise: message keys", "compliance/pipeline.py", "keyed_messages"),
    ("match", "compliance/pipeline.py", "match_feeds"),
    ("pseudonymise: minimised rows", "compliance/pipeline.py", "matched_events"),
    ("pseudonymise: keyed hashes", "compliance/privacy.py", "Pseudonymiser."),
    ("store: spill", "compliance/tally.py", "Spill."),
    ("store: in-memory tally", "compliance/tally.py", ""),
    ("store: in-memory tally", "compliance/pipeline.py", "combine_results"),
    ("evaluate", "compliance/policy/evaluate.py", "evaluate"),
    ("report", "compliance/job.py", "produce_report"),
    ("report", "compliance/audit.py", "audit_report"),
    ("evaluate", "compliance/episodes.py", ""),
    ("evaluate", "compliance/policy/", ""),
    ("store: SQLite", "compliance/store/", ""),
    ("store: scheduled ingest", "compliance/scheduled.py", ""),
    ("report", "compliance/reports/", ""),
    ("prepare: feeds", "compliance/feeds/", ""),
    ("prepare: directory", "compliance/directory.py", ""),
    ("read: other", "connectors/", ""),
    ("normalise: other", "compliance/pipeline.py", ""),
    ("normalise: addresses", "compliance/addresses.py", ""),
    ("match", "compliance/domains.py", ""),
    ("pseudonymise: keyed hashes", "compliance/privacy.py", ""),
    ("engine", "compliance/engine.py", ""),
)
#: The stages as the issue names them, in the order of the pipeline.
STAGES = (
    "import", "prepare", "read", "normalise", "match", "pseudonymise", "store", "evaluate",
    "report", "engine", "other",
)  # fmt: skip

#: Run as ``python -c PROFILER RULES OUT compliance-arguments...``: samples every thread's
#: stack every 2 ms from before the first import (stdlib only until then) and writes
#: {"wall": s, "code": exit code, "stages": {stage: thread-seconds}} to OUT.
PROFILER = r"""
import json, sys, threading, time
started = time.perf_counter()
rules, out_path, arguments = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
named = {}
folders = []
for stage, path, name in rules:
    if name:
        named.setdefault(name, []).append(("/" + path, stage))
    else:
        folders.append(("/" + path, stage))
IDLE = {"wait", "_wait_for_tstate_lock", "get", "select", "acquire", "_worker"}

def classify(frame):
    codes = []
    while frame is not None:
        codes.append(frame.f_code)
        frame = frame.f_back
    inner = codes[0]
    if inner.co_name in IDLE and inner.co_filename.endswith(
        ("threading.py", "queue.py", "selectors.py", "thread.py")
    ):
        return None
    if any(c.co_filename.startswith("<frozen importlib") for c in codes):
        return "import"
    for c in codes:
        qualname = c.co_qualname
        for key in (qualname, qualname.split(".", 1)[0] + "."):
            for path, stage in named.get(key, ()):
                if c.co_filename.endswith(path):
                    return stage
    for c in codes:
        for path, stage in folders:
            if (path in c.co_filename) if path.endswith("/") else c.co_filename.endswith(path):
                return stage
    return "other"

totals = {}
stop = threading.Event()

def sample():
    me = threading.get_ident()
    last = time.perf_counter()
    while not stop.wait(0.002):
        now = time.perf_counter()
        step, last = now - last, now
        for ident, frame in sys._current_frames().items():
            if ident != me:
                stage = classify(frame)
                if stage is not None:
                    totals[stage] = totals.get(stage, 0.0) + step

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
code = 0
sys.argv = ["compliance", *arguments]
try:
    from compliance.cli import main
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    stop.set()
    sampler.join()
    with open(out_path, "w") as out:
        json.dump({"wall": time.perf_counter() - started, "code": code, "stages": totals}, out)
sys.exit(code)
"""


@dataclass
class Profile:
    """Where one command spent its time: thread-seconds per stage, and its wall time."""

    wall: float
    stages: dict[str, float]

    @property
    def busy(self) -> float:
        """Thread-seconds not waiting (more than the wall time when threads overlap)."""
        return sum(self.stages.values())

    def by_stage(self) -> dict[str, float]:
        """Seconds per stage as the issue names them (``read: parse`` is ``read``)."""
        out = dict.fromkeys(STAGES, 0.0)
        for stage, seconds in self.stages.items():
            out[stage.split(":")[0]] += seconds
        return out


def profile(data: Data, command: str = "audit") -> Profile:
    """Sample `compliance audit` (or ``command="run"``: `compliance run` into a fresh
    store) over ``data`` stage by stage, in its own process (see :data:`STAGE_RULES`).

    The sampler's overhead is small but not nothing: time the commands without it.
    """
    arguments = audit_arguments(data) if command == "audit" else run_arguments(data)
    out = data.export.parent / f"profile-{command}.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROFILER, json.dumps(STAGE_RULES), str(out), *arguments],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"profiled compliance {command} failed: {proc.stderr[-2000:]}")
    found = json.loads(out.read_text())
    return Profile(float(found["wall"]), {k: float(v) for k, v in found["stages"].items()})


def profile_table(profiles: dict[str, Profile]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """One row per stage (in pipeline order, with its parts), one column pair per command."""
    names = sorted(
        {s for p in profiles.values() for s in p.stages},
        key=lambda s: (STAGES.index(s.split(":")[0]) if s.split(":")[0] in STAGES else 99, s),
    )
    header = ("stage", *(f"{c} {u}" for c in profiles for u in ("s", "%")))
    rows = []
    for name in names:
        cells = []
        for p in profiles.values():
            seconds = p.stages.get(name, 0.0)
            cells += [f"{seconds:.2f}", f"{100 * seconds / p.busy:.0f}" if p.busy else "-"]
        rows.append((name, *cells))
    for label, value in (("busy thread-seconds", "busy"), ("wall seconds", "wall")):
        cells = []
        for p in profiles.values():
            cells += [f"{getattr(p, value):.2f}", ""]
        rows.append((label, *cells))
    return header, rows


# --- Feeds, history ----------------------------------------------------------------------


_FEED_LOAD = (
    "import sys, time; from pathlib import Path; t = time.perf_counter(); "
    "from compliance.feeds import FeedSpec, load_feeds; "
    "load_feeds([FeedSpec.parse(sys.argv[1])], Path(sys.argv[2])); "
    "print(time.perf_counter() - t)"
)


def timed_feed_load(data: Data, folder: Path) -> float:
    """Seconds to load the feed with the cache in ``folder``, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _FEED_LOAD, f"{data.feed}:escort-ads", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def feed_seconds(data: Data) -> tuple[float, float]:
    """(compile into an empty cache, load from that cache) seconds of the feed."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="feed-cache-", dir=data.feed.parent))
    try:
        return timed_feed_load(data, folder), timed_feed_load(data, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


INCREMENTAL_CONFIG = """
organisation: {{domains: [corp.example]}}
directory: {directory}
sources:
  - {{name: exports, type: exchange, path: inbox}}
feeds:
  - {{path: {feed}, category: escort-ads}}
policies: [{policies}]
store: store.db
feed_cache: {feed_cache}
reports: {{dir: reports, formats: [json]}}
"""


def run_incremental(
    history: int,
    per_day: int = 5_000,
    new_rows: int = 200_000,
    feed: int = 100_000,
    cache: Path = CACHE,
) -> tuple[int, int, int, float, float]:
    """A scheduled run over a store holding ``history`` days of matched events.

    Returns (history days, events in the store, events evaluated, evaluation seconds,
    whole run seconds). The run ingests one new day of ``new_rows`` messages; only
    the history differs between calls, so a flat evaluation time shows that it grows
    with the policy windows, not with the store.
    """
    import pandas as pd

    from compliance.config import load_config
    from compliance.events import MINIMISED
    from compliance.job import prepare_from_config, sources_for
    from compliance.scheduled import RunOptions, run_once
    from compliance.store import Store

    data = prepare(new_rows, feed, cache)
    folder = cache / f"incremental-{history}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "inbox").mkdir(parents=True)
    config_path = folder / "compliance.yaml"
    config_path.write_text(
        INCREMENTAL_CONFIG.format(
            directory=data.directory,
            feed=data.feed,
            policies=ROOT / "policies",
            feed_cache=cache / "feed-cache",
        )
    )
    config = load_config(config_path)
    key = b"benchmark-key-" + b"0" * 40
    today = dt.date(2026, 12, 31)
    prepared = prepare_from_config(config, key)
    rng = np.random.default_rng(SEED + history)
    with Store.open(folder / "store.db") as store:
        first = run_once(prepared, sources_for(config), store, RunOptions(today - dt.timedelta(1)))
        pseudo = prepared.context.pseudonymiser
        for back in range(history, 0, -1):  # the history, as ingestion would have stored it
            day = (today - dt.timedelta(back)).isoformat()
            person = rng.integers(0, PEOPLE, per_day)
            site = np.char.add(
                "flagged", np.char.zfill(rng.integers(0, 1000, per_day).astype(str), 4)
            )
            frame = pd.DataFrame(
                {
                    "event_key": rng.integers(-(2**62), 2**62, per_day),
                    "timestamp": pd.Timestamp(day, tz="UTC")
                    + pd.to_timedelta(rng.integers(0, 86400, per_day), unit="s"),
                    "day": day,
                    "source": "exports",
                    "person": [pseudo.pseudonym(f"id:{p:08d}", pseudo.epoch(day)) for p in person],
                    "org_unit": [f"Division{p % 5}/Team{p % UNITS}" for p in person],
                    "direction": "outbound",
                    "domain": np.char.add(site, ".test"),
                    "reg_domain": np.char.add(site, ".test"),
                    "categories": "escort-ads",
                    "feeds": data.feed.stem,
                    "status": "delivered",
                    "size": rng.integers(1_000, 100_000, per_day),
                    "epoch": pseudo.epoch(day),
                }
            ).astype(MINIMISED)
            with store.transaction():
                store.ingest.add_events(frame, first.run_id)
        stored = int(store.conn.execute("SELECT count(*) FROM events").fetchone()[0])
        make_export(folder / "inbox" / "today.csv", new_rows, start_day=today.isoformat(), days=1)
        started = time.perf_counter()
        summary = run_once(prepared, sources_for(config), store, RunOptions(today))
        seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return history, stored, summary.evaluated_events, summary.evaluation_seconds, seconds


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", default="1M", help="rows per export, a comma list: 1M,5M")
    parser.add_argument("--feed", default="100k", help="feed domains, a comma list: 100k,1M")
    parser.add_argument("--shape", default="original", help=f"a comma list of: {', '.join(SHAPES)}")
    parser.add_argument(
        "--distinct",
        default="0.25",
        help="heavy-tail: the share of external address draws that are new, 0.0..1.0 "
        "(a comma list runs each)",
    )
    parser.add_argument("--format", default="csv", help=f"a comma list of: {', '.join(FORMATS)}")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs (medians)")
    parser.add_argument(
        "--run", action="store_true", help="also time `compliance run` over each export"
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample where each command spends its time"
    )
    parser.add_argument(
        "--history", default="", help="days of stored events for the incremental runs: 30,90,180"
    )
    args = parser.parse_args()
    rows = [parse_count(x) for x in args.rows.split(",") if x.strip()]
    feeds = [parse_count(x) for x in args.feed.split(",") if x.strip()]
    shapes = parse_shapes(args.shape, args.distinct)
    formats = parse_formats(args.format)
    header = (
        "shape", "format", "rows", "feed", "file MiB", "project s", "rows/s", "peak MiB",
        "duckdb s", "× duckdb", "parse s", "× parse", "feed compile s", "feed load s",
        "matched project", "matched duckdb", "alerts",
    )  # fmt: skip
    run_header = (
        "shape", "format", "rows", "feed", "run s", "run rows/s", "run peak MiB",
        "audit rows/s", "run ÷ audit", "matched run",
    )  # fmt: skip
    table: list[tuple[str, ...]] = []
    run_table: list[tuple[str, ...]] = []
    profiles: list[tuple[str, dict[str, Profile]]] = []
    feed_times: dict[Path, tuple[float, float]] = {}
    mismatches: list[str] = []
    for n in rows:
        for m in feeds:
            for shape in shapes:
                for fmt in formats:
                    if shape == ORIGINAL and fmt.layout != "powershell":
                        print(f"skipped: the original shape has no {fmt.name} export", flush=True)
                        continue
                    what = f"{shape.label} {fmt.name} N={n:,} M={m:,}"
                    print(what, flush=True)
                    data = prepare(n, m, shape=shape, fmt=fmt)
                    if data.feed not in feed_times:
                        feed_times[data.feed] = feed_seconds(data)
                        # later runs find the feed compiled
                        timed_feed_load(data, data.export.parent / "feed-cache")
                    compile_s, load_s = feed_times[data.feed]
                    project, duck, parse, peaks, counts = [], [], [], [], set()
                    runs, run_peaks, run_counts = [], [], set()
                    for _ in range(args.repeat):
                        seconds, peak, matched_p = run_project(data)
                        project.append(seconds)
                        peaks.append(peak)
                        duck_seconds, matched_d = run_duckdb(data)
                        duck.append(duck_seconds)
                        parse.append(run_arrow_parse(data)[0])
                        counts.add((matched_p, matched_d))
                        if args.run:
                            run_s, run_peak, matched_r, _ = run_scheduled(data)
                            runs.append(run_s)
                            run_peaks.append(run_peak)
                            run_counts.add(matched_r)
                    ((matched_p, matched_d),) = counts
                    if matched_p != matched_d:
                        mismatches.append(f"{what}: project {matched_p:,}, duckdb {matched_d:,}")
                    p, d, a = _median(project), _median(duck), _median(parse)
                    table.append(
                        (
                            shape.label, fmt.name, f"{n:,}", f"{m:,}",
                            f"{data.export.stat().st_size / 2**20:,.0f}", f"{p:.1f}",
                            f"{n / p:,.0f}", f"{max(peaks) / 2**20:,.0f}", f"{d:.1f}",
                            f"{p / d:.2f}", f"{a:.1f}", f"{p / a:.2f}", f"{compile_s:.1f}",
                            f"{load_s:.2f}", f"{matched_p:,}", f"{matched_d:,}",
                            alerts_digest(data),
                        )
                    )  # fmt: skip
                    if args.run:
                        ((matched_r),) = run_counts
                        if matched_r != matched_p:
                            mismatches.append(f"{what}: run {matched_r:,}, audit {matched_p:,}")
                        r = _median(runs)
                        run_table.append(
                            (
                                shape.label, fmt.name, f"{n:,}", f"{m:,}", f"{r:.1f}",
                                f"{n / r:,.0f}", f"{max(run_peaks) / 2**20:,.0f}",
                                f"{n / p:,.0f}", f"{p / r:.2f}", f"{matched_r:,}",
                            )
                        )  # fmt: skip
                    if args.profile:
                        found = {"audit": profile(data, "audit")}
                        if args.run:
                            found["run"] = profile(data, "run")
                        profiles.append((what, found))
    if table:
        print_table(header, table)
    if run_table:
        print_table(run_header, run_table)
    for what, found in profiles:
        print(f"\nWhere the time goes: {what}")
        print_table(*profile_table(found))
    incremental = []
    for days in [int(x) for x in args.history.split(",") if x.strip()]:
        print(f"incremental run over {days} days of history", flush=True)
        history, stored, evaluated, evaluation, whole = run_incremental(days)
        incremental.append(
            (f"{history}", f"{stored:,}", f"{evaluated:,}", f"{evaluation:.2f}", f"{whole:.1f}")
        )
    if incremental:
        print_table(
            ("history days", "events stored", "events evaluated", "evaluation s", "run s"),
            incremental,
        )
    for line in mismatches:
        print(f"MISMATCH {line}", flush=True)
    if mismatches:
        sys.exit(1)


def print_table(header: tuple[str, ...], table: Sequence[tuple[str, ...]]) -> None:
    """A Markdown table, numbers right-aligned."""
    widths = [max(len(str(r[i])) for r in (header, *table)) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
