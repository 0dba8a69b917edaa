"""Read-only views of the job tables for status, admin, dashboard and metrics.

The job table is also the history (millions of finished rows), so every query here reads
through an index that holds only what it counts: READY jobs (the partial claim index),
RUNNING ones (the partial lease or concurrency index), jobs finished inside a window
(the ``finished_at`` index). Nothing counts the whole history; its size is the planner's
estimate. Each query's plan is in ``docs/scaling.md``, and ``tests/test_reporting_plans.py``
checks them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connections
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
)
from django.db.models.expressions import RawSQL

from . import backlogs
from .minutes import finished_per_minute, finished_since, outcome_counts, throughput
from .models import Job, JobStatus, Worker
from .results import Progress
from .store import get_store
from .store.rows import HeldSnapshot

#: Minutes of history the finished-job counts of ``taskmill status`` cover.
STATUS_WINDOW_MINUTES = 60


@dataclass
class QueueStats:
    queue: str
    #: READY and RUNNING: every such job. SUCCESSFUL and FAILED: jobs finished inside the
    #: report's window only (counting the whole history would read all of it).
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in JobStatus})
    #: Seconds the oldest due READY job has waited (None: nothing waits).
    oldest_waiting_age: float | None = None
    #: More READY jobs wait than ``counts`` says (see QueueDepth).
    capped: bool = False


@dataclass
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: list[str]
    threads: int
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    heartbeat_age: float


def database_now(database: str) -> dt.datetime:
    """The job database's clock: ages are measured on the clock their times were written
    with (a host's clock may be off)."""
    return get_store(database).database_now()


def queue_stats(database: str, now: dt.datetime | None = None,
                window_minutes: int = STATUS_WINDOW_MINUTES) -> list[QueueStats]:
    """Jobs per queue and state; finished ones only if they finished in the window (whole
    minutes, the current one last; minutes a worker counted are read as counted)."""
    now = now or database_now(database)
    since = window_start(now, window_minutes)
    finished = outcome_counts(finished_per_minute(database, since, now))
    depths = queue_depths(database, now, since, finished)
    return [QueueStats(d.queue, counts={
        JobStatus.READY.value: d.waiting + d.scheduled, JobStatus.RUNNING.value: d.running,
        JobStatus.SUCCESSFUL.value: d.succeeded, JobStatus.FAILED.value: d.failed,
    }, oldest_waiting_age=d.oldest_waiting_age, capped=d.capped) for d in depths]


def window_start(now: dt.datetime, minutes: int) -> dt.datetime:
    """The start of a window of whole ``minutes`` whose last is the one of ``now``."""
    return (now.astimezone(dt.UTC).replace(second=0, microsecond=0)
            - dt.timedelta(minutes=minutes - 1))


def estimated_rows(database: str, table: str) -> int | None:
    """The planner's idea of a table's size (PostgreSQL, MySQL; None on SQLite or before
    the table was first analyzed): instant, where ``COUNT(*)`` reads the whole history."""
    connection = connections[database]
    if connection.vendor == "postgresql":
        sql = "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass"
        params = [connection.ops.quote_name(table)]
    elif connection.vendor == "mysql":
        sql = ("SELECT table_rows FROM information_schema.tables "
               "WHERE table_schema = DATABASE() AND table_name = %s")
        params = [table]
    else:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] and row[0] > 0 else None


def live_workers(database: str, now: dt.datetime | None = None) -> list[WorkerInfo]:
    now = now or database_now(database)
    return [
        WorkerInfo(id=w.id, hostname=w.hostname, pid=w.pid, queues=w.queues, threads=w.threads,
                   started_at=w.started_at, last_heartbeat=w.last_heartbeat,
                   heartbeat_age=max(0.0, (now - w.last_heartbeat).total_seconds()))
        for w in Worker.objects.using(database).order_by("hostname", "started_at")
    ]


def status_report(database: str) -> dict[str, Any]:
    """Everything ``taskmill status --json`` prints, as plain data."""
    now = database_now(database)
    return {
        "database": database,
        "time": now.isoformat(),
        "queues": [asdict(q) for q in queue_stats(database, now)],
        # SUCCESSFUL and FAILED counts cover this many minutes, not the whole history.
        "finished_window_minutes": STATUS_WINDOW_MINUTES,
        # READY is counted up to this many a queue ("capped": more wait), and past that
        # as far as the second, as a worker counted it in the last minute.
        "ready_counted_up_to": backlogs.REPORT_COUNT_CAP + 1,
        "ready_counted_by_a_worker_up_to": backlogs.BACKLOG_COUNT_CAP + 1,
        # Every job row, finished ones included: the planner's estimate, or None.
        "estimated_job_rows": estimated_rows(database, Job._meta.db_table),
        # Until it ends, vacuum cannot clean up after the jobs (None: none, or not told).
        "oldest_transaction": _as_dict(get_store(database).oldest_snapshot()),
        "workers": [
            {**asdict(w), "started_at": w.started_at.isoformat(),
             "last_heartbeat": w.last_heartbeat.isoformat()}
            for w in live_workers(database, now)
        ],
    }


def _as_dict(held: HeldSnapshot | None) -> dict[str, Any] | None:
    return None if held is None else asdict(held)


# -- the dashboard and metrics ------------------------------------------------------------
#
# Everything below is polled every few seconds, so each query is bounded by an index:
# READY/RUNNING rows (the partial claim index and a RUNNING-only one, few however long
# the history grows) or jobs finished inside the window (the (finished_at, status)
# index). Nothing counts the whole history.

#: How many of the window's most recent successful jobs the duration figures look at.
DURATION_SAMPLE = 5000


@dataclass
class QueueDepth:
    queue: str
    #: READY and due now.
    waiting: int = 0
    #: READY, deferred to later (``run_after`` in the future, retries included).
    scheduled: int = 0
    running: int = 0
    #: Finished inside the window.
    succeeded: int = 0
    failed: int = 0
    oldest_waiting_age: float | None = None
    #: More wait than ``waiting`` and ``scheduled`` say (they add up to a cap and one:
    #: see :mod:`taskmill.backlogs`). The oldest age is of the first of them in claim
    #: order only.
    capped: bool = False


def queue_depths(database: str, now: dt.datetime, since: dt.datetime,
                 finished: Sequence[Mapping[str, Any]] | None = None) -> list[QueueDepth]:
    """Active jobs per queue, plus the outcomes of jobs finished since ``since``
    (``finished``: :func:`finished_counts` already read). READY jobs are counted up to
    ``REPORT_COUNT_CAP``; past it, a worker's recent count (:mod:`taskmill.backlogs`)."""
    jobs = Job.objects.using(database).order_by()
    depths: dict[str, QueueDepth] = {}
    counted_by_workers: dict[str, backlogs.ReadyCount] | None = None

    def entry(queue: str) -> QueueDepth:
        return depths.setdefault(queue, QueueDepth(queue))

    for name in get_store(database).ready_queues():
        counted = backlogs.count_ready(database, name, now, backlogs.REPORT_COUNT_CAP)
        depth = entry(name)
        if counted.oldest_due is not None:
            depth.oldest_waiting_age = max(0.0, (now - counted.oldest_due).total_seconds())
        depth.capped = counted.ready > backlogs.REPORT_COUNT_CAP
        if depth.capped:
            if counted_by_workers is None:
                counted_by_workers = backlogs.counted_backlogs(database, now)
            deeper = counted_by_workers.get(name)
            if deeper is not None and deeper.ready > counted.ready:
                counted = deeper
                depth.capped = deeper.ready > backlogs.BACKLOG_COUNT_CAP
        depth.waiting, depth.scheduled = counted.due, counted.ready - counted.due
    # RUNNING: a RUNNING-only index (the state a literal, as the partial index's).
    running = (jobs.filter(status=JobStatus.RUNNING).values("queue_name")
               .annotate(n=Count("id")))
    for queue in running:
        entry(queue["queue_name"]).running = queue["n"]
    for done in finished_counts(database, since) if finished is None else finished:
        depth = entry(done["queue_name"])
        if done["status"] == JobStatus.SUCCESSFUL:
            depth.succeeded += done["n"]
        else:
            depth.failed += done["n"]
    return [depths[name] for name in sorted(depths)]


def finished_counts(database: str, since: dt.datetime) -> list[Mapping[str, Any]]:
    """Jobs finished since ``since`` per queue, task and outcome: one pass over the
    window (the ``finished_at`` index) that the per-queue and per-task figures share.

    Its cost is the window's jobs, not the history's: a window in which a million jobs
    finished reads a million index entries.
    """
    return list(finished_since(database, since)
                .values("queue_name", "task_path", "status").annotate(n=Count("id")))


@dataclass
class TaskTiming:
    task: str
    count: int
    avg_seconds: float
    p95_seconds: float
    max_seconds: float


def recent_durations(database: str, since: dt.datetime,
                     sample: int = DURATION_SAMPLE) -> dict[str, list[float]]:
    """Seconds the last attempt of each successful job finished since ``since`` ran, per
    task, sorted; the ``sample`` most recent jobs only, so a busy window costs the same as
    a quiet one (the ``finished_at`` index read backwards, ``sample`` rows).

    The database subtracts the two times: Django reads each ``timestamptz`` in Python on
    PostgreSQL (its time-zone loader), which made 5,000 rows cost 85 ms instead of 8. On
    SQLite Django's subtraction is a Python function too (26 ms): julianday() is not.
    """
    ran: Any = ExpressionWrapper(F("finished_at") - F("last_attempted_at"),
                                 output_field=DurationField())
    if connections[database].vendor == "sqlite":
        ran = RawSQL("(julianday(finished_at) - julianday(last_attempted_at)) * 86400.0", (),
                     output_field=FloatField())
    rows = (Job.objects.using(database)
            .filter(status=JobStatus.SUCCESSFUL, finished_at__gte=since,
                    last_attempted_at__isnull=False)
            .order_by("-finished_at").annotate(ran=ran)
            .values_list("task_path", "ran")[:sample])
    durations: dict[str, list[float]] = {}
    for task_path, took in rows:
        seconds = took if isinstance(took, float) else took.total_seconds()
        durations.setdefault(task_path, []).append(max(0.0, seconds))
    for values in durations.values():
        values.sort()
    return durations


def task_durations(database: str, since: dt.datetime,
                   sample: int = DURATION_SAMPLE) -> list[TaskTiming]:
    """Run time of the last attempt of successful jobs finished since ``since``, per task
    (the ``sample`` most recent: see :func:`recent_durations`); slowest first."""
    timings = [
        TaskTiming(task=task_path, count=len(values), avg_seconds=sum(values) / len(values),
                   p95_seconds=values[min(len(values) - 1, int(0.95 * len(values)))],
                   max_seconds=values[-1])
        for task_path, values in recent_durations(database, since, sample).items()
    ]
    return sorted(timings, key=lambda t: (-t.avg_seconds, t.task))


@dataclass
class TaskOutcomes:
    task: str
    succeeded: int
    failed: int

    @property
    def failure_rate(self) -> float:
        total = self.succeeded + self.failed
        return self.failed / total if total else 0.0


def task_outcomes(database: str, since: dt.datetime,
                  finished: Sequence[Mapping[str, Any]] | None = None) -> list[TaskOutcomes]:
    """Successful and failed jobs per task finished since ``since`` (``finished``:
    :func:`finished_counts` already read); most failures first."""
    outcomes: dict[str, TaskOutcomes] = {}
    for row in finished_counts(database, since) if finished is None else finished:
        entry = outcomes.setdefault(row["task_path"], TaskOutcomes(row["task_path"], 0, 0))
        if row["status"] == JobStatus.SUCCESSFUL:
            entry.succeeded += row["n"]
        else:
            entry.failed += row["n"]
    return sorted(outcomes.values(), key=lambda o: (-o.failed, -o.failure_rate, o.task))


def running_jobs(database: str, now: dt.datetime, limit: int = 50) -> list[dict[str, Any]]:
    """The RUNNING jobs that started first (the ones to look at), with their progress."""
    jobs = (Job.objects.using(database).filter(status=JobStatus.RUNNING)
            .order_by("last_attempted_at")
            .only("id", "task_path", "queue_name", "progress", "last_attempted_at", "attempts",
                  "max_attempts", "lease_owner", "cancel_requested_at")[:limit])
    found = []
    for job in jobs:
        progress = Progress.from_json(job.progress) if isinstance(job.progress, dict) else None
        started = job.last_attempted_at
        found.append({
            "id": str(job.id),
            "task": job.task_path,
            "queue": job.queue_name,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            "worker": job.lease_owner or "",
            "started_at": started.isoformat() if started else None,
            "running_for": max(0.0, (now - started).total_seconds()) if started else None,
            "cancel_requested": job.cancel_requested_at is not None,
            "progress": None if progress is None else {
                **progress.as_json(), "fraction": progress.fraction},
        })
    return found


def dashboard_snapshot(database: str, lease_seconds: float, now: dt.datetime | None = None,
                       window_minutes: int = 60) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data (its first paint and each poll)."""
    now = now or database_now(database)
    # The window is whole minutes: the chart's, and the outcomes'.
    since = window_start(now, window_minutes)
    per_minute = finished_per_minute(database, since, now)
    finished = outcome_counts(per_minute)
    depths = queue_depths(database, now, since, finished)
    succeeded = sum(d.succeeded for d in depths)
    failed = sum(d.failed for d in depths)
    hosts: dict[str, list[dict[str, Any]]] = {}
    for w in live_workers(database, now):
        hosts.setdefault(w.hostname, []).append({
            "id": w.id, "pid": w.pid, "threads": w.threads, "queues": w.queues,
            "last_heartbeat": w.last_heartbeat.isoformat(), "heartbeat_age": w.heartbeat_age,
            "alive": w.heartbeat_age <= lease_seconds,
        })
    outcomes = task_outcomes(database, since, finished)
    return {
        "time": now.isoformat(),
        "database": database,
        "window_minutes": window_minutes,
        "queues": [asdict(d) for d in depths],
        "totals": {
            # More wait in some queue than its figures say: "at least".
            "capped": any(d.capped for d in depths),
            "waiting": sum(d.waiting for d in depths),
            "scheduled": sum(d.scheduled for d in depths),
            "running": sum(d.running for d in depths),
            "succeeded": succeeded,
            "failed": failed,
            "failure_rate": failed / (succeeded + failed) if succeeded + failed else 0.0,
        },
        "throughput": throughput(per_minute, since, window_minutes),
        "running": running_jobs(database, now),
        "hosts": [{"hostname": name, "workers": workers} for name, workers in sorted(hosts.items())],
        "slowest": [asdict(t) for t in task_durations(database, since)[:10]],
        "failing": [{**asdict(o), "failure_rate": o.failure_rate}
                    for o in outcomes if o.failed][:10],
    }
