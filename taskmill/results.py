"""What ``get_result`` returns: Django's TaskResult with taskmill's progress.

Results are built here from a job row (``get_result``, the API) or from a job just
built for an enqueue (the result an enqueue returns).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from .compat import (
    DEFAULT_TASK_QUEUE_NAME,
    AnyTask,
    AnyTaskResult,
    Task,
    TaskError,
    TaskResultStatus,
    is_task,
    normalize_json,
)
from .exceptions import TaskNotFound
from .models import Job, JobError
from .store import NewJob


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running job says it is (``context.set_progress``)."""

    current: float
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """0..1 when a total is known."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.current / self.total))

    def as_json(self) -> dict[str, Any]:
        return {"current": self.current, "total": self.total, "message": self.message}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Progress | None:
        if not value:
            return None
        return cls(current=value.get("current", 0), total=value.get("total"),
                   message=value.get("message", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult(AnyTaskResult):  # type: ignore[misc]  # frozen in Django, not in its stubs
    """Django's TaskResult plus what taskmill knows of the job."""

    progress: Progress | None = None
    cancel_requested: bool = False

    def refresh(self) -> None:
        """Reload the result from the job table (progress included)."""
        fresh = self.task.get_backend().get_result(self.id)
        for name in ("status", "enqueued_at", "started_at", "finished_at", "last_attempted_at",
                     "errors", "worker_ids", "_return_value", "progress", "cancel_requested"):
            object.__setattr__(self, name, getattr(fresh, name))

    async def arefresh(self) -> None:
        await sync_to_async(self.refresh)()


#: Every attribute a JobResult holds (its slots across the class hierarchy), with the
#: slot's setter: bulk enqueues fill results without running a dataclass __init__ each.
_SLOT_SETTERS = {
    name: klass.__dict__[name].__set__
    for klass in JobResult.__mro__ for name in getattr(klass, "__slots__", ())
    if name != "__weakref__"
}


def result_from_job(job: Job, errors: Sequence[JobError] | None = None) -> JobResult:
    """The result of a ``Job`` row (``errors``: its JobError rows, if prefetched).

    Readable whatever became of the task, and without importing anything: its ``task``
    is the task itself when its module is loaded in this process (``task.get_result()``
    always is), else a stand-in that names it (renamed, removed, or simply not imported
    by a web process: a row's path is never imported here).
    """
    task = loaded_task(job.task_path) or _stand_in(job.task_path, job.backend)
    if task.queue_name != job.queue_name or task.priority != job.priority:
        task = _with(task, queue_name=job.queue_name, priority=job.priority)
    if errors is None:
        errors = list(job.errors.all())
    result = JobResult(
        task=task,
        id=str(job.id),
        status=TaskResultStatus(job.status),
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=job.last_attempted_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=job.backend,
        errors=[TaskError(exception_class_path=e.exception_class_path, traceback=e.traceback)
                for e in errors],
        worker_ids=job.worker_id_list,
        progress=Progress.from_json(job.progress),
        cancel_requested=job.cancel_requested_at is not None,
    )
    object.__setattr__(result, "_return_value", job.return_value)
    return result


def loaded_task(task_path: str) -> AnyTask | None:
    """The task at ``task_path`` if its module is already imported here, else None."""
    module_name, _, name = task_path.rpartition(".")
    module = sys.modules.get(module_name)
    task = getattr(module, name, None) if module is not None else None
    return task if is_task(task) else None


def _stand_in(task_path: str, backend: str) -> AnyTask:
    """A Task that names ``task_path`` and cannot run (built without Django's checks,
    which would ask for a queue the task may no longer have)."""
    module_name, _, name = task_path.rpartition(".")

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise TaskNotFound(f"{task_path!r} is not loaded in this process; the job's result "
                           "can be read, not run.")

    unavailable.__module__, unavailable.__name__, unavailable.__qualname__ = (
        module_name, name, name)
    values: dict[str, Any] = {}
    for field in fields(Task):
        if field.default is not MISSING:
            values[field.name] = field.default
        elif field.default_factory is not MISSING:
            values[field.name] = field.default_factory()
    values.update(func=unavailable, backend=backend, priority=0,
                  queue_name=DEFAULT_TASK_QUEUE_NAME, run_after=None, takes_context=False)
    task = object.__new__(Task)
    for key, value in values.items():
        object.__setattr__(task, key, value)
    return task


def _with(task: AnyTask, **changes: Any) -> AnyTask:
    """A copy of ``task`` with these fields changed, without Django's checks (the row's
    queue may no longer be configured: it must still be readable)."""
    clone = copy.copy(task)
    for key, value in changes.items():
        object.__setattr__(clone, key, value)
    return clone


def result_for_new_job(task: AnyTask, job: NewJob, args: Sequence[Any],
                       kwargs: dict[str, Any]) -> JobResult:
    """The READY result an enqueue returns. Its ``enqueued_at`` is this host's clock; the
    row keeps the database's (``get_result`` returns that one)."""
    return JobResult(
        task=task,
        id=str(job.id),
        status=TaskResultStatus.READY,
        enqueued_at=timezone.now(),
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=job.backend,
        errors=[],
        worker_ids=[],
    )


def results_for_new_jobs(task: AnyTask, jobs: Sequence[NewJob],
                         calls: Sequence[tuple[Sequence[Any], dict[str, Any]]]
                         ) -> list[JobResult]:
    """Results for a bulk enqueue. The first is built normally; the rest copy its
    fields (a dataclass ``__init__`` per job was a third of enqueue_many's time)."""
    if not jobs:
        return []
    first = result_for_new_job(task, jobs[0], *calls[0])
    # Slot setters, found once: setting 15 slots is most of the cost of a result.
    shared = [(_SLOT_SETTERS[name], getattr(first, name)) for name in _SLOT_SETTERS
              if name not in ("id", "args", "kwargs", "errors", "worker_ids")]
    set_id, set_args, set_kwargs, set_errors, set_worker_ids = (
        _SLOT_SETTERS[name] for name in ("id", "args", "kwargs", "errors", "worker_ids"))
    normalize, new = normalize_json, object.__new__
    results = [first]
    append = results.append
    for job, (args, kwargs) in zip(jobs[1:], calls[1:], strict=True):
        result = new(JobResult)
        for setter, value in shared:
            setter(result, value)
        set_id(result, str(job.id))
        set_args(result, normalize(args) if args else [])
        set_kwargs(result, normalize(kwargs) if kwargs else {})
        set_errors(result, [])
        set_worker_ids(result, [])
        append(result)
    return results
