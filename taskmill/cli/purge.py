"""``taskmill purge [--queue Q] [--task PATH]``: delete waiting jobs."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.db.models import Min

from ..api import purge
from ..backend import taskmill_backends
from ..models import Job, JobStatus
from ..store import get_store

HELP = "Delete waiting (READY) jobs, of a queue and/or a task; running jobs go on."

#: From this many waiting jobs on, the purge reports its progress (on stderr).
PROGRESS_MIN_ROWS = 10_000
#: A big purge runs in this many slices of enqueue time, oldest first.
SLICES = 10


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--queue", help="Only jobs of this queue.")
    parser.add_argument("--task", metavar="PATH", help="Only jobs of this task (dotted path).")


def handle(command: Any, options: dict[str, Any]) -> None:
    queue, task = options.get("queue"), options.get("task")
    waiting = _waiting(queue, task) if options.get("verbosity", 1) >= 1 else 0
    if waiting >= PROGRESS_MIN_ROWS:
        count = _purge_with_progress(command, queue, task, waiting)
    else:
        count = purge(queue=queue, task=task)
    scope = [f"queue {options['queue']!r}"] if options.get("queue") else []
    if options.get("task"):
        scope.append(f"task {options['task']}")
    where = f" ({', '.join(scope)})" if scope else ""
    command.stdout.write(f"Purged {count} waiting job(s){where}; running jobs go on.")


def _databases() -> list[str]:
    return sorted({backend.database for backend in taskmill_backends().values()})


def _matching(database: str, queue: str | None, task: str | None) -> Any:
    jobs = Job.objects.using(database).filter(status=JobStatus.READY)
    if queue is not None:
        jobs = jobs.filter(queue_name=queue)
    if task is not None:
        jobs = jobs.filter(task_path=task)
    return jobs


def _waiting(queue: str | None, task: str | None) -> int:
    """READY jobs the purge would remove (the claim index holds only READY rows)."""
    return sum(_matching(db, queue, task).count() for db in _databases())


def _purge_with_progress(command: Any, queue: str | None, task: str | None, total: int) -> int:
    """``taskmill.purge`` in slices of enqueue time, saying how far it is after each."""
    spans = []
    for database in _databases():
        store = get_store(database)
        now = store.database_now()  # Enqueue times are the database's.
        oldest = _matching(database, queue, task).aggregate(m=Min("enqueued_at"))["m"] or now
        spans.append((store, oldest, now))
    deleted = 0
    for i in range(1, SLICES + 1):
        for store, oldest, now in spans:
            deleted += store.purge(queue, task, oldest + (now - oldest) * i / SLICES
                                   if i < SLICES else now)
        command.stderr.write(f"Purging: {deleted:,} of {total:,} "
                             f"({min(100.0, 100 * deleted / total):.0f}%)")
    return deleted
