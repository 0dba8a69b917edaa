"""What a worker says when it starts: what it will do, for the operator reading its log."""

from __future__ import annotations

from django.db import connections

from ..db import describe_database
from ..services.scheduler import get_scheduler
from .config import WorkerConfig


def banner(config: WorkerConfig, processes: int) -> list[str]:
    """A few lines: queues, processes × threads, database, wake-ups, schedule, lease."""
    vendor = connections[config.database].vendor
    if vendor == "postgresql":
        # Each process checks that they arrive (not behind PgBouncer in transaction
        # mode) and says so in the log if not: see worker/notifier.py.
        wakeups = (f"on (LISTEN/NOTIFY, checked by each process), polling every "
                   f"{config.poll_interval:g}s should a notification be missed")
    elif vendor == "sqlite":
        wakeups = (f"on (a watch on the database file), polling every "
                   f"{config.poll_interval:g}s besides")
    else:
        wakeups = (f"off on {vendor}: looking again soon after taking jobs, at least "
                   f"every {config.poll_interval:g}s")
    lines = [
        f"taskmill worker: queues {', '.join(config.queues)}; {processes} process(es) x "
        f"{config.threads} thread(s){'; --burst' if config.burst else ''}",
        f"  database {describe_database(config.database)}; notifications {wakeups}",
        f"  lease {config.lease_seconds:g}s; results kept {config.result_ttl:g}s"
        + (f" ({len(config.retention)} RETENTION rule(s) first)" if config.retention else "")
        + (f"; recycled after {config.max_tasks_per_child} job(s)"
           if config.max_tasks_per_child else "")
        + (f"; health file {config.health_file}" if config.health_file else ""),
    ]
    scheduler = get_scheduler() if config.maintenance else None
    if scheduler is None:
        lines.append("  periodic tasks: none")
    else:
        entries = [f"{e.name} ({e.task_path}, "
                   + (f"every {e.every:g}s" if e.every is not None else f"cron {e.cron}") + ")"
                   for e in scheduler.entries]
        lines.append(f"  periodic tasks: {'; '.join(entries)}")
    return lines
