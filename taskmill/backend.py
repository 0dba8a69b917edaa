"""The ``django.tasks`` face of taskmill: the backend, its Task and its TaskResult."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import connections
from django.utils import timezone

from . import compat
from .compat import BaseTaskBackend, InvalidTask, Task, TaskError, TaskResultStatus
from .conf import BackendOptions
from .ids import new_job_id
from .jobs import _default_unique_key, _option, _split_item, encode_arguments, resolve_task
from .results import _SLOT_SETTERS, JobResult, Progress
from .store import NewJob, get_store

#: Options taskmill adds to Django's Task; ``None`` means "the backend's default".
EXTRA_TASK_OPTIONS = (
    "max_attempts", "retry_backoff", "timeout", "unique", "unique_key",
    "concurrency_limit", "concurrency_key", "transactional",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskmillTask(Task):
    """Django's Task with taskmill's options. ``using()`` accepts them too."""

    max_attempts: int | None = None
    retry_backoff: float | None = None
    timeout: float | None = None
    unique: bool = False
    unique_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    transactional: bool = False

    def using(self, **changes: Any) -> TaskmillTask:  # type: ignore[override]
        """Create a new Task with modified defaults (Django's and taskmill's options)."""
        ours = {k: changes.pop(k) for k in EXTRA_TASK_OPTIONS if k in changes}
        task = Task.using(self, **changes) if changes else self
        return replace(task, **ours) if ours else task


class TaskmillBackend(BaseTaskBackend):
    """Jobs in the project's own database, run by ``manage.py taskmill worker``."""

    task_class = TaskmillTask

    # Tasks may be deferred with ``.using(run_after=...)``.
    supports_defer = True
    # Coroutine functions are run in the worker's event loop.
    supports_async_task = True
    # Results are read back from the job table, from any process.
    supports_get_result = True
    # Higher priority jobs are claimed first.
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.config = BackendOptions.from_params(alias, self.options)

    @property
    def database(self) -> str:
        """The alias of the database that holds the job tables."""
        return self.config.database

    # -- definition-time checks -----------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if not isinstance(task, TaskmillTask):
            return
        _check_number(task.max_attempts, "max_attempts", whole=True, minimum=1)
        _check_number(task.retry_backoff, "retry_backoff", minimum=0)
        _check_number(task.timeout, "timeout", minimum=0, strict=True)
        _check_number(task.concurrency_limit, "concurrency_limit", whole=True, minimum=1)
        if task.unique_key is not None and not isinstance(task.unique_key, str):
            raise InvalidTask("unique_key must be a string.")
        if task.concurrency_key is not None and not isinstance(task.concurrency_key, str):
            raise InvalidTask("concurrency_key must be a string.")
        if task.concurrency_key is not None and task.concurrency_limit is None:
            raise InvalidTask("concurrency_key needs a concurrency_limit.")

    # -- enqueue -------------------------------------------------------------------

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> JobResult:
        self.validate_task(task)
        job = self.new_job(task, args, kwargs)
        store = get_store(connections[self.database])
        if getattr(task, "unique", False) or getattr(task, "unique_key", None):
            from .store.unique import insert_unique

            existing = insert_unique(store, job)
            if existing is not None:
                return self.get_result(existing)
        else:
            store.insert([job])
        result = self.result_for_new_job(task, job, args, kwargs)
        compat.send_signal("enqueued", type(self), result)
        return result

    def enqueue_many(self, task: Task, items: Iterable[Any]) -> list[JobResult]:
        """Enqueue one job per item in one round trip; see :func:`taskmill.enqueue_many`."""
        self.validate_task(task)
        if getattr(task, "unique", False) or getattr(task, "unique_key", None):
            return [self.enqueue(task, *_split_item(item)) for item in items]
        make_job = self.job_factory(task, timezone.now())
        jobs: list[NewJob] = []
        calls: list[tuple[Sequence[Any], dict[str, Any]]] = []
        for index, item in enumerate(items):
            args, kwargs = _split_item(item, index)
            jobs.append(make_job(args, kwargs))
            calls.append((args, kwargs))
        results: list[JobResult] = []
        get_store(connections[self.database]).insert(
            jobs, while_sending=lambda: results.extend(self._results_for_new_jobs(task, jobs, calls)))
        for result in results:
            compat.send_signal("enqueued", type(self), result)
        return results

    def new_job(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any], *,
                now: dt.datetime | None = None, batch_id: uuid.UUID | None = None) -> NewJob:
        """Validate arguments and build the row; raises before anything is stored."""
        return self.job_factory(task, now or timezone.now(), batch_id)(args, kwargs)

    def job_factory(self, task: Task, now: dt.datetime, batch_id: uuid.UUID | None = None
                    ) -> Callable[[Sequence[Any], dict[str, Any]], NewJob]:
        """A function building rows for ``task``; what does not depend on the arguments
        is worked out once (``enqueue_many`` builds tens of thousands of rows)."""
        config = self.config
        unique = bool(getattr(task, "unique", False) or getattr(task, "unique_key", None))
        concurrency_limit = getattr(task, "concurrency_limit", None)
        constants = {
            "backend": self.alias,
            "task_path": task.module_path,
            "queue_name": task.queue_name,
            "priority": task.priority,
            "enqueued_at": now,
            "run_after": task.run_after or now,
            "max_attempts": _option(task, "max_attempts", config.max_attempts),
            "retry_backoff": float(_option(task, "retry_backoff", config.retry_backoff)),
            "timeout": getattr(task, "timeout", None),
            "transactional": bool(getattr(task, "transactional", False)),
            "concurrency_limit": concurrency_limit,
            "concurrency_key": (getattr(task, "concurrency_key", None) or task.module_path)
            if concurrency_limit is not None else None,
            "batch_id": batch_id,
        }

        def make(args: Sequence[Any], kwargs: dict[str, Any]) -> NewJob:
            unique_key = None
            if unique:
                unique_key = task.unique_key or _default_unique_key(task, args, kwargs)
            return NewJob(
                id=new_job_id(),
                args_json=encode_arguments(task, args, "args"),
                kwargs_json=encode_arguments(task, kwargs, "kwargs"),
                unique_key=unique_key,
                **constants,
            )

        return make

    def result_for_new_job(self, task: Task, job: NewJob, args: Sequence[Any],
                           kwargs: dict[str, Any]) -> JobResult:
        return JobResult(
            task=task,
            id=str(job.id),
            status=TaskResultStatus.READY,
            enqueued_at=job.enqueued_at,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def _results_for_new_jobs(self, task: Task, jobs: Sequence[NewJob],
                              calls: Sequence[tuple[Sequence[Any], dict[str, Any]]]
                              ) -> list[JobResult]:
        """Results for a bulk enqueue. The first is built normally; the rest copy its
        fields (a dataclass ``__init__`` per job was a third of enqueue_many's time)."""
        if not jobs:
            return []
        first = self.result_for_new_job(task, jobs[0], *calls[0])
        # Slot setters, found once: setting 15 slots is most of the cost of a result.
        shared = [(_SLOT_SETTERS[name], getattr(first, name)) for name in _SLOT_SETTERS
                  if name not in ("id", "args", "kwargs", "errors", "worker_ids")]
        set_id, set_args, set_kwargs, set_errors, set_worker_ids = (
            _SLOT_SETTERS[name] for name in ("id", "args", "kwargs", "errors", "worker_ids"))
        normalize, new = compat.normalize_json, object.__new__
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

    # -- results -------------------------------------------------------------------

    def get_result(self, result_id: str) -> JobResult:
        from .models import Job

        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise compat.TaskResultDoesNotExist(result_id) from None
        try:
            job = Job.objects.using(self.database).get(id=job_id)
        except Job.DoesNotExist:
            raise compat.TaskResultDoesNotExist(result_id) from None
        return self.result_from_job(job)

    def result_from_job(self, job: Any, errors: list[Any] | None = None) -> JobResult:
        """Build the result of a ``Job`` row (``errors``: its JobError rows, if prefetched)."""
        task = resolve_task(job.task_path)
        if task.queue_name != job.queue_name or task.priority != job.priority:
            task = replace(task, queue_name=job.queue_name, priority=job.priority)
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


# -- helpers ------------------------------------------------------------------------


def taskmill_backends() -> dict[str, TaskmillBackend]:
    """Every configured backend that is a taskmill backend, by alias."""
    from django.conf import settings

    backends = {alias: compat.task_backends[alias] for alias in getattr(settings, "TASKS", {})}
    return {alias: b for alias, b in backends.items() if isinstance(b, TaskmillBackend)}


def _check_number(value: Any, name: str, *, whole: bool = False, minimum: float = 0,
                  strict: bool = False) -> None:
    if value is None:
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidTask(f"{name} must be a {'whole ' if whole else ''}number, not {value!r}.")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise InvalidTask(f"{name} must be {relation} {minimum}, not {value!r}.")
