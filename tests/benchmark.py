"""The scale benchmark: `compliance audit` against the same job in DuckDB.

    python -m tests.benchmark --rows 1M,5M,20M --feed 100k,1M,5M [--repeat 2]

For each size it generates deterministic synthetic data once (cached in
``.benchmark/``): a ``Get-MessageTrace | Export-Csv`` file of N rows (quoted fields,
culture dates, realistic sizes; about 1% of rows to listed sites and their
subdomains), a feed of M random domains, and a directory of 20,000 people. It then
runs, alternating, `compliance audit` in its own process (wall time, rows/s, peak
resident memory from ``wait4``) and one DuckDB SQL query doing the same job (read the
CSV, take the external party's domain, match it and every parent suffix against the
feed, count matched rows and per-sender outbound matches), and prints one table row
per (N, M) with both times, their ratio, peak memory, feed compilation time and the
matched counts of both, which must be equal.

DuckDB is a benchmark-only dependency: ``pip install duckdb``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
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
    path: Path, n: int, block: int = 1_000_000, start_day: str = "2026-10-01", days: int = 30
) -> None:
    """N rows of a Get-MessageTrace export over ``days`` days, written block by block."""
    rng = np.random.default_rng(SEED + n)
    benign = np.char.add(_words(rng, BENIGN_SITES, 8), ".example")
    flagged = np.array([f"flagged{i:04d}.test" for i in range(FLAGGED_SITES)])
    prefixes = np.array(["", "www.", "m.", "book.", "vip.city."])
    start = np.datetime64(f"{start_day}T00:00:00")
    with path.open("wb") as out:
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


@dataclass
class Data:
    export: Path
    feed: Path
    directory: Path


def prepare(n: int, m: int, cache: Path = CACHE) -> Data:
    """The data for N rows and M feed domains, generated once into ``cache``."""
    cache.mkdir(exist_ok=True)
    data = Data(cache / f"trace-{n}.csv", cache / f"feed-{m}.txt", cache / "directory.csv")
    for path, make in (
        (data.export, lambda p: make_export(p, n)),
        (data.feed, lambda p: make_feed(p, m)),
        (data.directory, make_directory),
    ):
        if not path.exists():
            started = time.perf_counter()
            tmp = path.with_suffix(".tmp")
            make(tmp)
            tmp.replace(path)
            print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return data


def run_project(data: Data) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, matched rows) of `compliance audit` in its own process."""
    env = {**os.environ, "COMPLIANCE_PSEUDONYM_KEY": "benchmark-key-" + "0" * 40}
    command = [
        sys.executable, "-m", "compliance", "-v", "audit", "--logs", str(data.export),
        "--feed", f"{data.feed}:escort-ads", "--policies", str(ROOT / "policies"),
        "--directory", str(data.directory), "--org-domain", "corp.example", "--format", "json",
        "--feed-cache", str(data.export.parent / "feed-cache"),
    ]  # fmt: skip
    out_path, err_path = data.export.parent / "audit.out", data.export.parent / "audit.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *command], env=env, stdout=out, stderr=err, check=False
        )
        seconds = time.perf_counter() - started
    lines = err_path.read_text().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"compliance audit failed: {err_path.read_text()[-2000:]}")
    json.loads(out_path.read_text())  # a whole report was written
    # the report's `matched` is evidence (and withheld for small groups); the peer counts
    # every row to a listed site, which the audit logs
    found = re.search(r"(\d+) matched events", err_path.read_text())
    if found is None:
        raise SystemExit("compliance audit logged no matched count")
    return seconds, int(lines[-1]) * 1024, int(found.group(1))  # Linux reports kilobytes


# The audit's peak memory is read by a small launcher: a child forked straight from this
# (large) process would count this process's pages in its peak before it execs.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
    "_, status, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss, file=sys.stderr); "
    "sys.exit(os.waitstatus_to_exitcode(status))"
)


DUCKDB_SQL = """
WITH feed AS (SELECT DISTINCT lower(trim(column0)) AS domain
              FROM read_csv(?, header = false, columns = {'column0': 'VARCHAR'}, comment = '#')),
rows AS (
  SELECT SenderAddress AS s, RecipientAddress AS r,
         lower(split_part(SenderAddress, '@', 2)) AS sd,
         lower(split_part(RecipientAddress, '@', 2)) AS rd
  FROM read_csv(?, skip = 1, header = true, all_varchar = true)
),
ext AS (
  SELECT row_number() OVER () AS id, s, (sd = 'corp.example') AS outbound,
         CASE WHEN sd = 'corp.example' THEN rd ELSE sd END AS domain
  FROM rows WHERE (sd = 'corp.example') <> (rd = 'corp.example')
),
parts AS (SELECT id, s, outbound, string_split(domain, '.') AS p FROM ext),
suffixes AS (
  SELECT id, s, outbound, array_to_string(list_slice(p, i, len(p)), '.') AS suffix
  FROM parts, range(1, len(p)) AS t(i)
),
matched AS (SELECT DISTINCT id, s, outbound FROM suffixes JOIN feed ON suffix = feed.domain)
SELECT (SELECT count(*) FROM matched) AS matched,
       (SELECT count(*) FROM (SELECT s, count(*) FROM matched WHERE outbound GROUP BY s)) AS senders
"""


def run_duckdb(data: Data) -> tuple[float, int]:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    matched, _senders = con.execute(DUCKDB_SQL, [str(data.feed), str(data.export)]).fetchone()  # type: ignore[misc]
    con.close()
    return time.perf_counter() - started, int(matched)


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
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="feed-cache-", dir=CACHE))
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
    import datetime as dt
    import shutil

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1M")
    parser.add_argument("--feed", default="100k")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--history", default="", help="days of stored events for the incremental runs: 30,90,180"
    )
    args = parser.parse_args()
    rows = [parse_count(x) for x in args.rows.split(",") if x.strip()]
    feeds = [parse_count(x) for x in args.feed.split(",") if x.strip()]
    header = (
        "rows", "feed", "project s", "rows/s", "peak MiB", "duckdb s", "ratio",
        "feed compile s", "feed load s", "matched project", "matched duckdb",
    )  # fmt: skip
    table = []
    for n in rows:
        for m in feeds:
            print(f"N={n:,} M={m:,}", flush=True)
            data = prepare(n, m)
            project, duck, peaks, counts = [], [], [], set()
            compile_s, load_s = feed_seconds(data)
            timed_feed_load(data, CACHE / "feed-cache")  # later runs find the feed compiled
            for _ in range(args.repeat):
                seconds, peak, matched_p = run_project(data)
                project.append(seconds)
                peaks.append(peak)
                duck_seconds, matched_d = run_duckdb(data)
                duck.append(duck_seconds)
                counts.add((matched_p, matched_d))
            ((matched_p, matched_d),) = counts
            best_p, best_d = min(project), min(duck)
            table.append(
                (
                    f"{n:,}", f"{m:,}", f"{best_p:.1f}", f"{n / best_p:,.0f}",
                    f"{max(peaks) / 2**20:,.0f}", f"{best_d:.1f}", f"{best_p / best_d:.2f}",
                    f"{compile_s:.1f}", f"{load_s:.2f}", f"{matched_p:,}", f"{matched_d:,}",
                )
            )  # fmt: skip
            if matched_p != matched_d:
                print(f"  MISMATCH: project {matched_p} vs duckdb {matched_d}", flush=True)
    if table:
        print_table(header, table)
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


def print_table(header: tuple[str, ...], table: list[tuple[str, ...]]) -> None:
    """A Markdown table, numbers right-aligned."""
    widths = [max(len(str(r[i])) for r in (header, *table)) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
