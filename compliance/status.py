"""`compliance status`: the operator's view of a deployment, and its health check.

It reads the store and never writes it (nor creates one): the last run and the last
successful one, when the next run and report are due, the outbox, and each source's
bookmark. It prints counts, ids, times and configured names only, never data about people
(no pseudonym, no address, no error text: a delivery's last error may name a recipient).

Health rules (each one a documented threshold):

* **runs**: the interval is ``schedule.every_minutes``, 1440 with ``schedule.daily_at``,
  else 60 (the shipped cron, systemd and Kubernetes examples run hourly). The next run is
  due one interval after the last run's start. Runs are *overdue* when no successful run
  started within ``2 × interval + 10 minutes`` (one missed or failed run is tolerated, two
  are not), and when there is no successful run at all. A last run that *failed* (or was
  *interrupted*) is unhealthy at once.
* **reports**: every run writes the configured report (``report``), so the next one is due
  with the next run; it is overdue exactly when runs are. A named schedule
  (``reports.schedules``) is written by the first run on or after its due day (the day
  after its last report for ``day``, 7 days after for ``week``, the first of the next
  month for ``month``; at once when it was never written): it is due at the later of that
  day's start and the next run, and is late only because runs are.
* **outbox**: overdue when a delivery is ``failed``, or one has been waiting (``pending``,
  or ``sending`` after an interrupted send) for more than one day since it was recorded.
* **sources**: a source read through an API (its options have no ``path``) keeps a time as
  its bookmark: the end of the last window read completely. Its *lag* is now minus that
  bookmark; it is overdue beyond the same ``2 × interval + 10 minutes``, or when it has no
  bookmark yet. A file source's bookmark is the latest day its files held: it says nothing
  about lateness (files arrive when they are exported), so its lag is ``-`` and never
  overdue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from compliance.config import Config
from compliance.errors import ComplianceError, ExitCode
from compliance.job import open_store
from compliance.store import OUTBOX_STATES

#: The interval assumed when the config sets no schedule (the shipped examples run hourly).
DEFAULT_INTERVAL = dt.timedelta(minutes=60)
#: Runs (and API sources) are overdue when nothing succeeded within this many intervals ...
OVERDUE_INTERVALS = 2
#: ... plus this grace (a timer's randomised delay, a slow start).
OVERDUE_GRACE = dt.timedelta(minutes=10)
#: A delivery waiting longer than this is overdue.
OUTBOX_LIMIT = dt.timedelta(days=1)


class Unhealthy(ComplianceError):
    """`compliance status` found something overdue or failed (the message says what)."""

    exit_code = ExitCode.UNHEALTHY


@dataclass
class Status:
    """What `compliance status` shows; :meth:`as_dict` is its JSON."""

    now: str
    runs: dict[str, Any]
    reports: list[dict[str, Any]]
    outbox: dict[str, Any]
    sources: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "now": self.now,
            "runs": self.runs,
            "reports": self.reports,
            "outbox": self.outbox,
            "sources": self.sources,
        }

    def raise_if_unhealthy(self) -> None:
        """Raise :class:`Unhealthy` naming every problem."""
        if self.problems:
            raise Unhealthy("unhealthy: " + "; ".join(self.problems))


def interval(config: Config) -> dt.timedelta:
    """How often the job is meant to run."""
    if config.schedule.every_minutes:
        return dt.timedelta(minutes=config.schedule.every_minutes)
    if config.schedule.daily_at:
        return dt.timedelta(days=1)
    return DEFAULT_INTERVAL


def overdue_after(config: Config) -> dt.timedelta:
    """How long without a successful run (or an API source's progress) is overdue."""
    return OVERDUE_INTERVALS * interval(config) + OVERDUE_GRACE


def due_day(every: str, last_day: str | None) -> dt.date | None:
    """The first day a run writes a named report again (as
    :func:`compliance.job.due_schedules` decides), or None when it was never written (due
    with the next run)."""
    if last_day is None:
        return None
    last = dt.date.fromisoformat(last_day)
    if every == "day":
        return last + dt.timedelta(days=1)
    if every == "week":
        return last + dt.timedelta(days=7)
    return (last.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def _time(value: object) -> dt.datetime | None:
    """An ISO time of the store (or a bookmark) as an aware UTC datetime; None when absent,
    or when the value is a day rather than a time."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _seconds(delta: dt.timedelta) -> int:
    return int(delta.total_seconds())


def clock() -> dt.datetime:
    """Now, UTC (tests replace it)."""
    return dt.datetime.now(dt.UTC)


def check(config: Config, now: dt.datetime | None = None) -> Status:
    """The status of the configured deployment as of ``now`` (default: :func:`clock`), read
    from its store, which must exist (:class:`~compliance.errors.ConfigError` otherwise)."""
    now = (now or clock()).astimezone(dt.UTC).replace(microsecond=0)
    every, limit = interval(config), overdue_after(config)
    audience = config.reports.audience
    with open_store(config, read_only=True) as store:
        last = store.runs.last()
        last_ok = store.runs.last("ok")
        last_report = store.reports.last("report", audience)
        scheduled = [
            (s, store.reports.last_day(s.name), store.reports.last(s.name, s.audience))
            for s in config.reports.schedules
        ]
        items = store.outbox.all()
        oldest_waiting = store.outbox.oldest_waiting()
        positions = store.ingest.positions()
    problems: list[str] = []

    # runs
    last_start = _time(last["started_at"]) if last else None
    next_due = _iso(last_start + every) if last_start else None
    ok_start = _time(last_ok["started_at"]) if last_ok else None
    runs_overdue = ok_start is None or now - ok_start > limit
    if last is None:
        problems.append("no run yet")
    elif last["status"] in ("failed", "interrupted"):
        problems.append(f"the last run ({last['id']}) {last['status']}")
    if runs_overdue and last is not None:
        since = "ever" if ok_start is None else f"since {_iso(ok_start)}"
        problems.append(f"runs overdue: no successful run {since}")
    runs = {
        "interval_minutes": _seconds(every) // 60,
        "overdue_after_minutes": _seconds(limit) // 60,
        "last": last,
        "last_ok": last_ok,
        "next_due": next_due,
        "overdue": runs_overdue,
    }

    # reports: the run's own, written by every run; named ones when due
    reports = [
        {
            "name": "report",
            "every": "run",
            "audience": audience,
            "period_days": config.reports.period,
            "next_due": next_due,
            "last": last_report,
        }
    ]
    for schedule, recorded_day, last_written in scheduled:
        day = due_day(schedule.every, recorded_day)  # the day the job goes by
        due = next_due
        if day is not None and next_due is not None:
            due = max(next_due, _iso(dt.datetime.combine(day, dt.time(), dt.UTC)))
        reports.append(
            {
                "name": schedule.name,
                "every": schedule.every,
                "audience": schedule.audience,
                "period_days": schedule.days,
                "next_due": due,
                "last": last_written,
            }
        )

    # outbox
    counts = dict.fromkeys(OUTBOX_STATES, 0)
    for item in items:
        counts[item.state] = counts.get(item.state, 0) + 1
    failed = sorted(i.id for i in items if i.state == "failed")
    waiting_since = _time(oldest_waiting)
    waiting_age = now - waiting_since if waiting_since else None
    stale = waiting_age is not None and waiting_age > OUTBOX_LIMIT
    if failed:
        problems.append(f"deliveries failed: {', '.join(map(str, failed))}")
    if stale:
        problems.append(f"a delivery has been waiting since {oldest_waiting}")
    outbox = {
        "counts": counts,
        "oldest_waiting": oldest_waiting,
        "oldest_waiting_age_seconds": _seconds(waiting_age) if waiting_age else None,
        "failed": failed,
        "overdue": bool(failed) or stale,
    }

    # sources
    sources = []
    for source in config.sources:
        position = positions.get(source.name, {})
        api = "path" not in source.options()
        bookmark = position.get("bookmark")
        mark = _time(bookmark) if api else None
        lag = now - mark if mark else None
        overdue = api and (lag is None or lag > limit)
        if overdue:
            why = "no bookmark yet" if lag is None else f"bookmark {bookmark}"
            problems.append(f"source {source.name} lags: {why}")
        if position.get("unit_run") is None:
            last_unit = None
        elif position.get("bookmark_run") == position["unit_run"]:
            last_unit = position.get("bookmark_set_at")
        else:
            last_unit = position.get("unit_run_finished") or position.get("unit_run_started")
        sources.append(
            {
                "name": source.name,
                "type": source.type,
                "kind": "api" if api else "files",
                "bookmark": bookmark,
                "lag_seconds": _seconds(lag) if lag is not None else None,
                "units": position.get("units", 0),
                "last_unit_at": last_unit,
                "overdue": overdue,
            }
        )
    return Status(_iso(now), runs, reports, outbox, sources, problems)
