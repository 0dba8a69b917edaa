"""Operations on jobs from Python: enqueue many at once, cancel, retry, purge."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, connections, transaction

from .backend import TaskmillBackend, taskmill_backends
from .compat import AnyTask, InvalidTask, TaskResultDoesNotExist, task_backends
from .exceptions import TaskmillError
from .models import Job, JobStatus
from .results import JobResult, loaded_task
from .store import JobStore, get_store


def enqueue_many(task: AnyTask, items: Iterable[Any]) -> list[JobResult]:
    """Enqueue one job per item in one round trip; results come back in item order.

    Each item is a tuple or list of positional arguments, or a dict of keyword arguments.
    Inside ``transaction.atomic()`` on the job database, the jobs commit with it.
    """
    backend = task.get_backend()
    if not isinstance(backend, TaskmillBackend):
        raise InvalidTask(f"enqueue_many needs a taskmill backend; {task.module_path} uses "
                          f"{type(backend).__name__}.")
    return backend.enqueue_many(task, items)


class InvalidJobState(TaskmillError, ValueError):
    """The operation does not apply to the job in its current state (nothing changed)."""


def cancel(result_id: str, force: bool = False) -> JobResult:
    """Cancel a job; returns its result as it stands afterwards.

    A READY job ends FAILED with ``taskmill.exceptions.Cancelled`` at once and never runs.
    A RUNNING job sees ``context.cancel_requested`` within a heartbeat tick (half a
    second); if it stops (``context.raise_if_cancelled()``) or fails, it ends FAILED and
    is not retried. With ``force=True``, a job still running after a grace period of
    5 seconds has ``Cancelled`` raised inside it, and if even that does not stop it, its
    worker process is replaced. A job that finishes successfully before it notices the
    cancel stays SUCCESSFUL: its work was done. Finished jobs are left as they are.
    """
    backend, store, job_id = locate(result_id)
    store.cancel(job_id, bool(force))
    return backend.get_result(str(job_id))


def retry(result_id: str) -> JobResult:
    """Run a FAILED job again, now; returns its result (READY).

    The job keeps its id, its errors and its checkpoint (so it resumes where it
    stopped), and gets the task's ``max_attempts`` afresh; ``attempts`` goes on
    counting. Only FAILED jobs can be retried: a SUCCESSFUL job did its work (enqueue
    the task again to run it once more), and READY or RUNNING ones are still going.
    Raises :class:`InvalidJobState` otherwise, when the job is ``unique`` and another
    job with its key is already waiting or running, or when it is a child of a batch
    that has finished (its ``then`` job ran once, and will not again).
    """
    backend, store, job_id = locate(result_id)
    job = (Job.objects.using(store.alias).select_related("batch")
           .only("status", "attempts", "task_path", "batch__finished_at").get(id=job_id))
    if job.status != JobStatus.FAILED:
        raise InvalidJobState(_not_failed(job_id, job.status))
    if job.batch is not None and job.batch.finished_at is not None:
        raise InvalidJobState(
            f"Job {job_id} is a child of batch {job.batch_id}, which has finished (its then "
            "job ran); it was not retried. Enqueue the task again to run it once more.")
    # The task's own budget if it is loaded here; its path is never imported to find out.
    task = loaded_task(job.task_path)
    budget = getattr(task, "max_attempts", None) or backend.config.max_attempts
    try:
        # A savepoint: a unique-key clash must not break the caller's transaction.
        with transaction.atomic(using=store.alias):
            retried = store.retry(job_id, job.attempts + budget)
    except IntegrityError:
        jobs = Job.objects.using(store.alias)
        key = jobs.values_list("unique_key", flat=True).get(id=job_id)
        holder = jobs.filter(active_unique_key=key).values_list("id", flat=True).first()
        raise InvalidJobState(
            f"Job {job_id} is unique and job {holder} with the same key is already waiting "
            "or running; it was not retried."
        ) from None
    if not retried:  # It changed state since we looked.
        status = Job.objects.using(store.alias).values_list("status", flat=True).get(id=job_id)
        raise InvalidJobState(_not_failed(job_id, status))
    return backend.get_result(str(job_id))


def purge(queue: str | None = None, task: AnyTask | str | None = None) -> int:
    """Delete waiting (READY) jobs, of one queue and/or one task; returns how many.

    Running jobs go on and finished ones are kept (see ``taskmill prune``). ``task``
    is a task or its dotted path. Applies to every taskmill backend's database.
    """
    task_path = task if isinstance(task, str) or task is None else task.module_path
    deleted = 0
    for database in sorted({b.database for b in taskmill_backends().values()}):
        deleted += get_store(connections[database]).purge(queue, task_path)
    return deleted


def locate(result_id: str) -> tuple[TaskmillBackend, JobStore, uuid.UUID]:
    """The backend and store holding the job ``result_id``, or ``TaskResultDoesNotExist``."""
    try:
        job_id = uuid.UUID(str(result_id))
    except ValueError:
        raise TaskResultDoesNotExist(result_id) from None
    seen: set[str] = set()
    for backend in taskmill_backends().values():
        if backend.database in seen:
            continue
        seen.add(backend.database)
        alias = (Job.objects.using(backend.database).filter(id=job_id)
                 .values_list("backend", flat=True).first())
        if alias is not None:
            owner = task_backends[alias] if alias in task_backends.settings else backend
            if not isinstance(owner, TaskmillBackend):
                owner = backend
            return owner, get_store(connections[backend.database]), job_id
    raise TaskResultDoesNotExist(result_id)


def _not_failed(job_id: uuid.UUID, status: str) -> str:
    if status == JobStatus.SUCCESSFUL:
        return (f"Job {job_id} succeeded; only FAILED jobs can be retried. Enqueue the task "
                "again to run it once more.")
    return f"Job {job_id} is {status}; only FAILED jobs can be retried."
