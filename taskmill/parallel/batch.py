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

from django.db import connections, transaction
from django.db.models import Count
from django.utils import timezone

from .. import compat
from ..compat import InvalidTask, Task
from ..ids import new_job_id
from ..store.batches import on_children_finished

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


def _taskmill_backend(task: Task, role: str) -> Any:
    from ..backend import TaskmillBackend

    if not isinstance(task, Task) and not _is_backport_task(task):
        raise InvalidTask(f"enqueue_batch needs a task for {role}, not {type(task).__name__}; "
                          "decorate the function with @task.")
    backend = task.get_backend()
    if not isinstance(backend, TaskmillBackend):
        raise InvalidTask(f"enqueue_batch needs a taskmill backend; {task.module_path} uses "
                          f"{type(backend).__name__}.")
    backend.validate_task(task)
    if getattr(task, "unique", False) or getattr(task, "unique_key", None):
        raise InvalidTask(f"{task.module_path} is unique; a batch's {role} cannot be.")
    return backend


def _is_backport_task(obj: Any) -> bool:
    from ..jobs import _is_backport_task as check

    return check(obj)


def enqueue_batch(task: Task, items: Iterable[Any], *, then: Task | None = None) -> BatchStatus:
    """Enqueue ``task(item)`` for each item as one batch; ``then(batch_id)`` runs once after.

    All children are stored in one transaction: they all exist, or none do. Inside
    ``transaction.atomic()`` on the job database they commit with the caller's work.
    """
    from ..models import Batch
    from ..store import get_store

    backend = _taskmill_backend(task, "task")
    if then is not None:
        then_backend = _taskmill_backend(then, "then")
        if then_backend.database != backend.database:
            raise InvalidTask(
                f"then={then.module_path} keeps its jobs in database {then_backend.database!r} "
                f"but {task.module_path} in {backend.database!r}; a batch and its follow-up "
                "must share the job database."
            )
    items = list(items)
    now = timezone.now()
    batch_id = new_job_id()
    jobs = [backend.new_job(task, [item], {}, now=now, batch_id=batch_id) for item in items]
    store = get_store(connections[backend.database])
    with transaction.atomic(using=backend.database):
        Batch.objects.using(backend.database).create(
            id=batch_id, task_path=task.module_path, total=len(items),
            then_task_path=then.module_path if then is not None else None, created_at=now,
        )
        store.insert(jobs)
        if not jobs:
            on_children_finished(store, {batch_id})
    if compat.task_enqueued.has_listeners():
        for job, item in zip(jobs, items, strict=True):
            result = backend.result_for_new_job(task, job, [item], {})
            compat.send_signal("enqueued", type(backend), result)
    return get_batch(str(batch_id)) if not jobs else BatchStatus(
        id=str(batch_id), task_path=task.module_path, total=len(jobs), succeeded=0, failed=0,
        running=0, waiting=len(jobs), result_ids=[str(job.id) for job in jobs],
        then_task_path=then.module_path if then is not None else None, then_result_id=None,
        created_at=now, finished_at=None,
    )


def get_batch(batch_id: str | uuid.UUID) -> BatchStatus:
    """The batch's counts by state, its children's result ids and its ``then`` job."""
    from ..models import Batch, Job

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
    from ..backend import TaskmillBackend

    databases: list[str] = []
    for alias in compat.task_backends:
        backend = compat.task_backends[alias]
        if isinstance(backend, TaskmillBackend) and backend.database not in databases:
            databases.append(backend.database)
    return databases or ["default"]
