"""Batches: one job per item on every worker of every host, then one follow-up job.

``enqueue_batch`` writes the :class:`~taskmill.models.Batch` row and all its children in
one transaction (one round trip for the children). Children are ordinary jobs with
``batch_id`` set; they are claimed, retried and recovered like any other.

The ``then`` job is enqueued exactly once: see :mod:`taskmill.store.batches`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import Count
from django.utils import timezone

from .. import compat
from ..backend import TaskmillBackend, taskmill_backends
from ..compat import AnyTask, InvalidTask, is_task
from ..ids import new_job_id
from ..jobs import is_unique, job_factory
from ..models import Batch, Job
from ..results import result_for_new_job
from ..store import get_store

__all__ = ["BatchStatus", "enqueue_batch", "get_batch"]


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A batch and how far it is. ``get_batch(id)`` returns a fresh one."""

    id: str
    task_path: str
    total: int
    succeeded: int
    failed: int
    running: int
    waiting: int
    #: The children's result ids, in item order.
    result_ids: list[str]
    then_task_path: str | None
    #: The ``then`` job's result id, once every child has finished.
    then_result_id: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """Every child has finished (successful or failed)."""
        return self.finished_at is not None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def fraction(self) -> float:
        """0..1, for progress bars."""
        return 1.0 if not self.total else self.done / self.total

    def refresh(self) -> BatchStatus:
        return get_batch(self.id)


def _taskmill_backend(task: AnyTask, role: str) -> TaskmillBackend:
    if not is_task(task):
        raise InvalidTask(f"enqueue_batch needs a task for {role}, not {type(task).__name__}; "
                          "decorate the function with @task.")
    backend = task.get_backend()
    if not isinstance(backend, TaskmillBackend):
        raise InvalidTask(f"enqueue_batch needs a taskmill backend; {task.module_path} uses "
                          f"{type(backend).__name__}.")
    backend.validate_task(task)
    if is_unique(task):
        raise InvalidTask(f"{task.module_path} is unique; a batch's {role} cannot be.")
    return backend


def enqueue_batch(task: AnyTask, items: Iterable[Any], *, then: AnyTask | None = None) -> BatchStatus:
    """Enqueue ``task(item)`` for each item as one batch; ``then(batch_id)`` runs once after.

    All children are stored in one transaction: they all exist, or none do. Inside
    ``transaction.atomic()`` on the job database they commit with the caller's work.
    ``then`` keeps every option it was given (``then=report.using(queue_name=...)``).
    """
    backend = _taskmill_backend(task, "task")
    then_job = None
    batch_id = new_job_id()
    if then is not None:
        then_backend = _taskmill_backend(then, "then")
        if then_backend.database != backend.database:
            raise InvalidTask(
                f"then={then.module_path} keeps its jobs in database {then_backend.database!r} "
                f"but {task.module_path} in {backend.database!r}; a batch and its follow-up "
                "must share the job database."
            )
        then_job = job_factory(then, then_backend)([str(batch_id)], {})
    items = list(items)
    make_child = job_factory(task, backend, batch_id)
    jobs = [make_child([item], {}) for item in items]
    get_store(connections[backend.database]).create_batch(
        batch_id, task.module_path, jobs, then_job)
    if compat.task_enqueued.has_listeners():
        for job, item in zip(jobs, items, strict=True):
            compat.send_signal("enqueued", type(backend),
                               result_for_new_job(task, job, [item], {}))
    return get_batch(str(batch_id)) if not jobs else BatchStatus(
        id=str(batch_id), task_path=task.module_path, total=len(jobs), succeeded=0, failed=0,
        running=0, waiting=len(jobs), result_ids=[str(job.id) for job in jobs],
        then_task_path=then.module_path if then is not None else None, then_result_id=None,
        created_at=timezone.now(), finished_at=None,
    )


def get_batch(batch_id: str | uuid.UUID) -> BatchStatus:
    """The batch's counts by state, its children's result ids and its ``then`` job."""
    try:
        key = uuid.UUID(str(batch_id))
    except ValueError:
        raise Batch.DoesNotExist(f"No batch {batch_id!r}.") from None
    for database in _job_databases():
        batch = Batch.objects.using(database).filter(id=key).first()
        if batch is not None:
            break
    else:
        raise Batch.DoesNotExist(f"No batch {batch_id!r}.")
    children = Job.objects.using(database).filter(batch_id=key)
    counts = {row["status"]: row["n"] for row in
              children.order_by().values("status").annotate(n=Count("id"))}
    # Children's ids are time-ordered and made in item order by one process.
    result_ids = [str(i) for i in children.order_by("id").values_list("id", flat=True)]
    return BatchStatus(
        id=str(batch.id), task_path=batch.task_path, total=batch.total,
        succeeded=counts.get("SUCCESSFUL", 0), failed=counts.get("FAILED", 0),
        running=counts.get("RUNNING", 0), waiting=counts.get("READY", 0),
        result_ids=result_ids, then_task_path=batch.then_task_path,
        then_result_id=str(batch.then_job_id) if batch.then_job_id else None,
        created_at=batch.created_at, finished_at=batch.finished_at,
    )


def _job_databases() -> list[str]:
    databases: list[str] = []
    for backend in taskmill_backends().values():
        if backend.database not in databases:
            databases.append(backend.database)
    return databases or ["default"]
