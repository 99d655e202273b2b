"""The same per-chunk stages on an existing Dask cluster.

Each read unit (a file; a run of row groups of a Parquet file, so that a single large
archive still spreads over every worker) is one partition: a worker reads it and runs
:func:`compliance.engine.read_unit` over its chunks, returning a bounded partial tally
(per-day totals by org unit and direction, matched minimised events, counts, and the
unkeyed keys of the messages it counted). The driver merges the partials in the units'
order, taking off the totals the messages an earlier partial counted already (the same
file twice, overlapping exports), and evaluates the policies, exactly as in-process;
the alerts and counts are the same.

What crosses the network: the prepared context goes to every worker once (feeds,
the directory's addresses and the pseudonymisation key), and workers read the raw
logs themselves, so they need the files (a shared file system or object store) and
must be as trusted as the machine that runs the job. Use a cluster of your own with
TLS (``tls://`` addresses and Dask's security settings), never a shared one.

Units that hold a live connection (Microsoft Graph windows) are read on the driver.

A scheduled run (``compliance run`` with ``engine: {type: dask}``) uses the same
cluster differently: each file is processed on a worker into its minimised matches
and per-message keys, and the driver commits the files one by one, in order, each
with its bookmark, exactly as in-process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from compliance.errors import ConfigError

if TYPE_CHECKING:
    from compliance.engine import UnitPart
    from compliance.pipeline import Context, Tally
    from connectors.base import ReadUnit

log = logging.getLogger(__name__)


@contextmanager
def dask_client(scheduler: str | None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a local two-worker cluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "the dask engine needs Dask: pip install 'compliance-monitor[dask]'"
        ) from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def read_units_on_dask(
    units: list[ReadUnit], context: Context, source_name: str, scheduler: str | None
) -> Iterator[tuple[int, Tally]]:
    """Partial tallies of ``units``, read on the cluster at ``scheduler`` (or a local one).

    Each comes with the index of its unit, in the units' order (the parts of a split
    file one after another), so that the driver merges them as they come: a message
    read twice counts where it first occurs, as in-process, and the driver holds one
    partial at a time. Units holding a live connection are read here, in their turn.
    """
    from compliance.engine import read_unit

    remote = [i for i, unit in enumerate(units) if unit.distributable]
    with dask_client(scheduler) as client:
        workers = max(1, len(client.nthreads()))
        # enough partitions for every worker: Parquet files split by row group
        per_unit = -(-2 * workers // len(remote)) if remote else 1
        parts = [(i, part) for i in remote for part in units[i].split(per_unit)]
        log.info("dask: %d unit(s) on %d worker(s)", len(parts), workers)
        futures: dict[int, list[Any]] = {}
        if parts:
            shared = client.scatter(context, broadcast=True)
            for i, part in parts:
                future = client.submit(read_unit, part, shared, source_name, pure=False)
                futures.setdefault(i, []).append(future)
        for i, unit in enumerate(units):
            if i not in futures:
                yield i, read_unit(unit, context, source_name)
                continue
            for future in futures.pop(i):
                yield i, future.result()


def unit_parts_on_dask(
    client: Any, units: list[ReadUnit], context: Context, source_name: str
) -> Iterator[tuple[ReadUnit, list[UnitPart]]]:
    """Each unit processed on the cluster for a store, yielded in the units' order.

    At most two units per worker are in flight, so the driver holds a bounded number of
    finished units while it commits them one by one.
    """
    from compliance.engine import unit_part

    if not units:
        return
    workers = max(1, len(client.nthreads()))
    log.info("dask: %d unit(s) on %d worker(s)", len(units), workers)
    shared = client.scatter(context, broadcast=True)
    pending: deque[tuple[ReadUnit, Any]] = deque()
    queue = iter(units)
    try:
        for unit in queue:
            pending.append((unit, client.submit(unit_part, unit, shared, source_name, pure=False)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, [future.result()]
        while pending:
            done, future = pending.popleft()
            yield done, [future.result()]
    finally:
        for _, future in pending:
            future.cancel()
