"""Read-only views of the job tables for status, admin, dashboard and metrics.

Counts are grouped queries over indexed columns; nothing here walks job rows one by one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from .models import Job, JobStatus, Worker


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


def queue_stats(database: str, now: dt.datetime | None = None) -> list[QueueStats]:
    now = now or timezone.now()
    stats: dict[str, QueueStats] = {}
    rows = (Job.objects.using(database).order_by().values("queue_name", "status")
            .annotate(n=Count("id")))
    for row in rows:
        entry = stats.setdefault(row["queue_name"], QueueStats(row["queue_name"]))
        entry.counts[row["status"]] = row["n"]
    oldest = (Job.objects.using(database).order_by()
              .filter(status=JobStatus.READY, run_after__lte=now)
              .values("queue_name").annotate(oldest=Min("run_after")))
    for row in oldest:
        entry = stats.setdefault(row["queue_name"], QueueStats(row["queue_name"]))
        entry.oldest_waiting_age = max(0.0, (now - row["oldest"]).total_seconds())
    return [stats[name] for name in sorted(stats)]


def live_workers(database: str, now: dt.datetime | None = None) -> list[WorkerInfo]:
    now = now or timezone.now()
    return [
        WorkerInfo(id=w.id, hostname=w.hostname, pid=w.pid, queues=w.queues, threads=w.threads,
                   started_at=w.started_at, last_heartbeat=w.last_heartbeat,
                   heartbeat_age=max(0.0, (now - w.last_heartbeat).total_seconds()))
        for w in Worker.objects.using(database).order_by("hostname", "started_at")
    ]


def status_report(database: str) -> dict[str, Any]:
    """Everything ``taskmill status --json`` prints, as plain data."""
    now = timezone.now()
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
