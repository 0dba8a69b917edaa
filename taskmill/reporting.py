"""Read-only views of the job tables for status, admin, dashboard and metrics.

Counts are grouped queries over indexed columns; nothing here walks job rows one by one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Count, Min, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone

from .models import Job, JobStatus, Worker
from .results import Progress
from .store import get_store


@dataclass
class QueueStats:
    queue: str
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in JobStatus})
    #: Seconds the oldest due READY job has waited (None: nothing waits).
    oldest_waiting_age: float | None = None


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


def queue_stats(database: str, now: dt.datetime | None = None) -> list[QueueStats]:
    now = now or database_now(database)
    stats: dict[str, QueueStats] = {}
    rows = (Job.objects.using(database).order_by().values("queue_name", "status")
            .annotate(n=Count("id")))
    for row in rows:
        entry = stats.setdefault(row["queue_name"], QueueStats(row["queue_name"]))
        entry.counts[row["status"]] = row["n"]
    oldest = (Job.objects.using(database).order_by()
              .filter(status=JobStatus.READY, run_after__lte=now)
              .values("queue_name").annotate(oldest=Min("run_after")))
    for waiting in oldest:
        entry = stats.setdefault(waiting["queue_name"], QueueStats(waiting["queue_name"]))
        entry.oldest_waiting_age = max(0.0, (now - waiting["oldest"]).total_seconds())
    return [stats[name] for name in sorted(stats)]


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
        "workers": [
            {**asdict(w), "started_at": w.started_at.isoformat(),
             "last_heartbeat": w.last_heartbeat.isoformat()}
            for w in live_workers(database, now)
        ],
    }


# -- the dashboard and metrics ------------------------------------------------------------
#
# Everything below is polled every few seconds, so each query is bounded by an index:
# READY/RUNNING rows (the partial claim and lease indexes, few however long the history
# grows) or jobs finished inside the window (the (status, finished_at) index). Nothing
# counts the whole history.

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


def queue_depths(database: str, now: dt.datetime, since: dt.datetime) -> list[QueueDepth]:
    """Active jobs per queue, plus the outcomes of jobs finished since ``since``."""
    jobs = Job.objects.using(database).order_by()
    depths: dict[str, QueueDepth] = {}

    def entry(queue: str) -> QueueDepth:
        return depths.setdefault(queue, QueueDepth(queue))

    active = (jobs.filter(status__in=[JobStatus.READY, JobStatus.RUNNING])
              .values("queue_name", "status")
              .annotate(n=Count("id"), due=Count("id", filter=Q(run_after__lte=now)),
                        oldest=Min("run_after", filter=Q(run_after__lte=now))))
    for row in active:
        depth = entry(row["queue_name"])
        if row["status"] == JobStatus.RUNNING:
            depth.running = row["n"]
        else:
            depth.waiting, depth.scheduled = row["due"], row["n"] - row["due"]
            if row["oldest"] is not None:
                depth.oldest_waiting_age = max(0.0, (now - row["oldest"]).total_seconds())
    finished = (jobs.filter(status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED],
                            finished_at__gte=since)
                .values("queue_name", "status").annotate(n=Count("id")))
    for done in finished:
        depth = entry(done["queue_name"])
        if done["status"] == JobStatus.SUCCESSFUL:
            depth.succeeded = done["n"]
        else:
            depth.failed = done["n"]
    return [depths[name] for name in sorted(depths)]


def throughput(database: str, now: dt.datetime, minutes: int = 60) -> list[dict[str, Any]]:
    """Jobs finished per minute over the last ``minutes``, oldest first, empty minutes included."""
    end = now.replace(second=0, microsecond=0)
    start = end - dt.timedelta(minutes=minutes - 1)
    rows = (Job.objects.using(database).order_by()
            .filter(status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED], finished_at__gte=start)
            .annotate(minute=TruncMinute("finished_at", tzinfo=dt.UTC))
            .values("minute", "status").annotate(n=Count("id")))
    buckets = {start + dt.timedelta(minutes=i): {"succeeded": 0, "failed": 0}
               for i in range(minutes)}
    for row in rows:
        minute = row["minute"]
        if minute is None:
            continue
        if timezone.is_naive(minute):
            minute = minute.replace(tzinfo=dt.UTC)
        bucket = buckets.get(minute.astimezone(dt.UTC))
        if bucket is not None:
            bucket["succeeded" if row["status"] == JobStatus.SUCCESSFUL else "failed"] += row["n"]
    return [{"minute": minute.isoformat(), **counts} for minute, counts in buckets.items()]


@dataclass
class TaskTiming:
    task: str
    count: int
    avg_seconds: float
    p95_seconds: float
    max_seconds: float


def task_durations(database: str, since: dt.datetime,
                   sample: int = DURATION_SAMPLE) -> list[TaskTiming]:
    """Run time of the last attempt of successful jobs finished since ``since``, per task.

    Reads at most ``sample`` rows (the most recent), so a busy hour costs the same as a
    quiet one; slowest first.
    """
    rows = (Job.objects.using(database)
            .filter(status=JobStatus.SUCCESSFUL, finished_at__gte=since,
                    last_attempted_at__isnull=False)
            .order_by("-finished_at")
            .values_list("task_path", "last_attempted_at", "finished_at")[:sample])
    durations: dict[str, list[float]] = {}
    for task_path, started, finished in rows:
        if started is not None and finished is not None:  # both set by the filter
            durations.setdefault(task_path, []).append(
                max(0.0, (finished - started).total_seconds()))
    timings = []
    for task_path, values in durations.items():
        values.sort()
        timings.append(TaskTiming(
            task=task_path, count=len(values), avg_seconds=sum(values) / len(values),
            p95_seconds=values[min(len(values) - 1, int(0.95 * len(values)))],
            max_seconds=values[-1]))
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


def task_outcomes(database: str, since: dt.datetime) -> list[TaskOutcomes]:
    """Successful and failed jobs per task finished since ``since``; most failures first."""
    rows = (Job.objects.using(database).order_by()
            .filter(status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED], finished_at__gte=since)
            .values("task_path", "status").annotate(n=Count("id")))
    outcomes: dict[str, TaskOutcomes] = {}
    for row in rows:
        entry = outcomes.setdefault(row["task_path"], TaskOutcomes(row["task_path"], 0, 0))
        if row["status"] == JobStatus.SUCCESSFUL:
            entry.succeeded = row["n"]
        else:
            entry.failed = row["n"]
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
    since = now - dt.timedelta(minutes=window_minutes)
    depths = queue_depths(database, now, since)
    succeeded = sum(d.succeeded for d in depths)
    failed = sum(d.failed for d in depths)
    hosts: dict[str, list[dict[str, Any]]] = {}
    for w in live_workers(database, now):
        hosts.setdefault(w.hostname, []).append({
            "id": w.id, "pid": w.pid, "threads": w.threads, "queues": w.queues,
            "last_heartbeat": w.last_heartbeat.isoformat(), "heartbeat_age": w.heartbeat_age,
            "alive": w.heartbeat_age <= lease_seconds,
        })
    outcomes = task_outcomes(database, since)
    return {
        "time": now.isoformat(),
        "database": database,
        "window_minutes": window_minutes,
        "queues": [asdict(d) for d in depths],
        "totals": {
            "waiting": sum(d.waiting for d in depths),
            "scheduled": sum(d.scheduled for d in depths),
            "running": sum(d.running for d in depths),
            "succeeded": succeeded,
            "failed": failed,
            "failure_rate": failed / (succeeded + failed) if succeeded + failed else 0.0,
        },
        "throughput": throughput(database, now, window_minutes),
        "running": running_jobs(database, now),
        "hosts": [{"hostname": name, "workers": workers} for name, workers in sorted(hosts.items())],
        "slowest": [asdict(t) for t in task_durations(database, since)[:10]],
        "failing": [{**asdict(o), "failure_rate": o.failure_rate}
                    for o in outcomes if o.failed][:10],
    }
