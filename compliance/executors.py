"""Where per-unit work runs: in this process, or on an existing Dask cluster.

The engine hands an executor a module-level function and the read units; the executor
returns each unit's result in the units' order, whatever order they finish in, with a
bounded number in flight. It knows nothing of what the function does, so the engine
depends on it and never the other way round.

On Dask, each read unit (a file; a run of row groups of a Parquet file, so that a
single large archive still spreads over every worker) is one task. The prepared
context goes to every worker once (feeds, the directory's addresses and the
pseudonymisation key), and workers read the raw logs themselves, so they need the files
(a shared file system or object store) and must be as trusted as the machine that runs
the job. Use a cluster of your own with TLS (``tls://`` addresses and Dask's security
settings), never a shared one. Units that hold a live connection (Microsoft Graph
windows) are read on the driver, in their turn.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from compliance.errors import ConfigError
from compliance.pipeline import Context
from connectors.base import ReadUnit

log = logging.getLogger(__name__)

R = TypeVar("R")
#: What an executor runs per unit: (unit, context, source name) -> result.
UnitTask = Callable[[ReadUnit, Context, str], R]


class Executor(ABC):
    """Runs a task over read units, yielding (unit, result) in the units' order."""

    #: how many units can run at once
    workers: int = 1
    #: whether tasks run in other processes (results are then whole, not streamed)
    remote: bool = False

    @abstractmethod
    def map(
        self, task: UnitTask[R], units: list[ReadUnit], context: Context, source: str
    ) -> Iterator[tuple[ReadUnit, R]]:
        """``task`` over every unit, in order; a unit that cannot leave this process
        (:attr:`ReadUnit.distributable` false) runs here, in its turn."""


class InProcess(Executor):
    """Each unit in turn, here (the chunks of a unit still overlap on a small pool)."""

    def map(
        self, task: UnitTask[R], units: list[ReadUnit], context: Context, source: str
    ) -> Iterator[tuple[ReadUnit, R]]:
        for unit in units:
            yield unit, task(unit, context, source)


class OnDask(Executor):
    """Units as tasks of a Dask cluster, at most two per worker in flight."""

    remote = True

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, len(client.nthreads()))

    def map(
        self, task: UnitTask[R], units: list[ReadUnit], context: Context, source: str
    ) -> Iterator[tuple[ReadUnit, R]]:
        remote = sum(1 for unit in units if unit.distributable)
        if remote:
            log.info("dask: %d unit(s) on %d worker(s)", remote, self.workers)
        shared = None  # the context (key, directory) leaves this machine only if work does
        pending: deque[tuple[ReadUnit, Any]] = deque()
        try:
            for unit in units:
                if unit.distributable:
                    if shared is None:
                        shared = self.client.scatter(context, broadcast=True)
                    future = self.client.submit(task, unit, shared, source, pure=False)
                else:
                    future = None  # read here when its turn comes
                pending.append((unit, future))
                while len(pending) >= 2 * self.workers:
                    yield self._next(pending, task, context, source)
            while pending:
                yield self._next(pending, task, context, source)
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()

    @staticmethod
    def _next(
        pending: deque[tuple[ReadUnit, Any]], task: UnitTask[R], context: Context, source: str
    ) -> tuple[ReadUnit, R]:
        unit, future = pending.popleft()
        return unit, (task(unit, context, source) if future is None else future.result())


@contextmanager
def executor(engine: str = "local", scheduler: str | None = None) -> Iterator[Executor]:
    """The executor of ``engine`` (``local`` or ``dask``); for Dask, a client of the
    cluster at ``scheduler``, or of a local two-worker cluster, closed afterwards."""
    if engine != "dask":
        yield InProcess()
        return
    try:  # an optional dependency: imported only when asked for
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
        yield OnDask(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
