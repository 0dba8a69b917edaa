"""Pause and resume from Python: queues, tasks or everything, on every worker and host.

A pause is a row in the job database that every claim reads, so it takes effect on the
next claim of every worker, survives restarts, and leaves enqueues alone (the jobs wait).
Running jobs finish. Jobs a worker had already claimed when the pause was written (at
most one claim's batch, about 50 ms of short jobs) still start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connections

from .backend import TaskmillBackend, taskmill_backends
from .compat import AnyTask
from .jobs import resolve_task
from .models import Job, JobStatus, Pause, RateKey, describe_pause
from .store import get_store

__all__ = ["PauseInForce", "check_scope", "pause", "paused", "resume", "waiting_reason"]


@dataclass(frozen=True, slots=True)
class PauseInForce:
    """One pause: of a queue, of a task, of a task on one queue, or ("" and "") everything."""

    queue_name: str
    task_path: str
    since: datetime | None
    database: str

    def __str__(self) -> str:
        return describe_pause(self.queue_name, self.task_path)


def pause(queue: str | None = None, task: AnyTask | str | None = None) -> bool:
    """Stop new jobs of ``queue`` and/or ``task`` (neither: of everything) from starting,
    on every worker; returns False if that pause was already in force.

    ``task`` is a task or its dotted path. A queue no taskmill backend serves, or a path
    that is not a task, is a ``ValueError`` and nothing is stored.
    """
    task_path = _task_path(task)
    changed = False
    for database in _databases(queue):
        changed |= get_store(connections[database]).pause(queue, task_path)
    return changed


def resume(queue: str | None = None, task: AnyTask | str | None = None) -> int:
    """Lift the pauses of ``queue`` and/or ``task`` (neither: every pause); returns how
    many were lifted. Lifting a queue's pause does not lift a pause of everything."""
    task_path = _task_path(task)
    return sum(get_store(connections[database]).resume(queue, task_path)
               for database in _databases(queue))


def paused() -> list[PauseInForce]:
    """Every pause in force, in every taskmill backend's database."""
    found = []
    for database in _databases(None):
        for queue_name, task_path, since in get_store(connections[database]).pauses():
            found.append(PauseInForce(queue_name, task_path, since, database))
    return found


def _databases(queue: str | None) -> list[str]:
    """The job databases of the backends serving ``queue`` (None: of all backends)."""
    if queue is not None and not isinstance(queue, str):
        raise TypeError(f"queue must be a queue name (str), not {queue!r}.")
    backends = list(taskmill_backends().values())
    if queue is not None:
        backends = [b for b in backends if _serves(b, queue)]
        if not backends:
            known = sorted({q for b in taskmill_backends().values() for q in b.queues})
            raise ValueError(f"No taskmill backend serves queue {queue!r} (TASKS QUEUES: "
                             f"{', '.join(known) or 'none'}); nothing was paused or resumed.")
    return sorted({b.database for b in backends})


def _serves(backend: TaskmillBackend, queue: str) -> bool:
    return not backend.queues or queue in backend.queues


def _task_path(task: AnyTask | str | None) -> str | None:
    if task is None:
        return None
    if not isinstance(task, str):
        return str(task.module_path)
    try:
        resolve_task(task)
    except Exception as exc:
        raise ValueError(f"Cannot pause or resume {task!r}: {exc}") from None
    return task


def check_scope(queue: str | None, task: AnyTask | str | None) -> None:
    """Raise ``ValueError`` (or ``TypeError``) as :func:`pause` would, storing nothing:
    for forms that ask first (the admin's)."""
    _task_path(task)
    _databases(queue)


def waiting_reason(job: Job) -> str | None:
    """Why a READY job has not started, in words for the admin and the dashboard: a
    pause, its rate limit ("rate limited until ..."), its due time, its concurrency key;
    None when nothing holds it (it waits for a free worker)."""
    database = job._state.db or "default"
    for held in Pause.objects.using(database).filter(
            queue_name__in=["", job.queue_name], task_path__in=["", job.task_path]):
        return f"paused ({held})"
    now = get_store(connections[database]).database_now()
    if job.rate_key is not None:
        full_until = (RateKey.objects.using(database).filter(rate_key=job.rate_key)
                      .values_list("full_until", flat=True).first())
        if full_until is not None and full_until > now:
            return f"rate limited until {full_until.isoformat(timespec='seconds')}"
    if job.run_after > now:
        return f"due at {job.run_after.isoformat(timespec='seconds')}"
    if job.concurrency_key is not None:
        running = Job.objects.using(database).filter(
            status=JobStatus.RUNNING, concurrency_key=job.concurrency_key).count()
        if running >= (job.concurrency_limit or 1):
            return f"a slot of concurrency key {job.concurrency_key} ({running} running)"
    return None
