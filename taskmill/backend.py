"""The ``django.tasks`` face of taskmill: the backend, its Task and its TaskResult."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import connections
from django.utils import timezone
from django.utils.module_loading import import_string

from . import compat
from .compat import BaseTaskBackend, InvalidTask, Task, TaskError, TaskResult, TaskResultStatus
from .conf import BackendOptions
from .exceptions import InvalidTaskArguments, TaskNotFound
from .ids import new_job_id
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
class JobResult(TaskResult):
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
        from asgiref.sync import sync_to_async

        await sync_to_async(self.refresh)()


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
            from .coordination.unique import insert_unique

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
        jobs: list[NewJob] = []
        calls: list[tuple[Sequence[Any], dict[str, Any]]] = []
        now = timezone.now()
        for index, item in enumerate(items):
            args, kwargs = _split_item(item, index)
            jobs.append(self.new_job(task, args, kwargs, now=now))
            calls.append((args, kwargs))
        get_store(connections[self.database]).insert(jobs)
        results = [self.result_for_new_job(task, job, a, k) for job, (a, k) in zip(jobs, calls)]
        for result in results:
            compat.send_signal("enqueued", type(self), result)
        return results

    def new_job(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any], *,
                now: dt.datetime | None = None, batch_id: uuid.UUID | None = None) -> NewJob:
        """Validate arguments and build the row; raises before anything is stored."""
        now = now or timezone.now()
        config = self.config
        unique_key = None
        if getattr(task, "unique", False) or getattr(task, "unique_key", None):
            unique_key = task.unique_key or _default_unique_key(task, args, kwargs)
        concurrency_limit = getattr(task, "concurrency_limit", None)
        concurrency_key = None
        if concurrency_limit is not None:
            concurrency_key = getattr(task, "concurrency_key", None) or task.module_path
        return NewJob(
            id=new_job_id(),
            backend=self.alias,
            task_path=task.module_path,
            queue_name=task.queue_name,
            priority=task.priority,
            args_json=dump_arguments(task, list(args), "args"),
            kwargs_json=dump_arguments(task, dict(kwargs), "kwargs"),
            enqueued_at=now,
            run_after=task.run_after or now,
            max_attempts=_option(task, "max_attempts", config.max_attempts),
            retry_backoff=float(_option(task, "retry_backoff", config.retry_backoff)),
            timeout=getattr(task, "timeout", None),
            transactional=bool(getattr(task, "transactional", False)),
            unique_key=unique_key,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            batch_id=batch_id,
        )

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


def resolve_task(task_path: str) -> Task:
    """The Task a job names. Only objects defined as tasks are ever run."""
    try:
        obj = import_string(task_path)
    except ImportError as exc:
        raise TaskNotFound(
            f"{task_path!r} cannot be imported ({exc}); was the task renamed or removed?"
        ) from exc
    if not isinstance(obj, Task) and not _is_backport_task(obj):
        raise TaskNotFound(
            f"{task_path!r} is a {type(obj).__name__}, not a task; only functions "
            "decorated with @task are run."
        )
    return obj


def _is_backport_task(obj: Any) -> bool:
    try:
        from django_tasks.base import Task as BackportTask
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, BackportTask)


def dump_arguments(task: Task, value: Any, what: str) -> str:
    """JSON text of a job's args or kwargs, or a clear error naming the culprit."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        culprit = _find_unserializable(value)
        raise InvalidTaskArguments(
            f"Cannot enqueue {task.module_path}: {what}{culprit} is not JSON "
            f"({exc}). Pass plain data (str, int, float, bool, None, lists, dicts with "
            "string keys), e.g. a model's primary key instead of the instance."
        ) from None


def _find_unserializable(value: Any, path: str = "") -> str:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}] (a non-string key)"
            found = _find_unserializable(item, f"{path}[{key!r}]")
            if found:
                return found
        return ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unserializable(item, f"{path}[{index}]")
            if found:
                return found
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} ({value!r})"
    if value is None or isinstance(value, (str, int, float, bool)):
        return ""
    return f"{path} ({type(value).__name__})"


def _split_item(item: Any, index: int = 0) -> tuple[Sequence[Any], dict[str, Any]]:
    if isinstance(item, dict):
        return (), item
    if isinstance(item, (list, tuple)):
        return item, {}
    raise InvalidTaskArguments(
        f"enqueue_many item {index} is a {type(item).__name__}; each item must be a tuple "
        "or list of positional arguments, or a dict of keyword arguments."
    )


def _option(task: Task, name: str, default: Any) -> Any:
    value = getattr(task, name, None)
    return default if value is None else value


def _default_unique_key(task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    payload = json.dumps([list(args), kwargs], sort_keys=True, separators=(",", ":"))
    return f"{task.module_path}:{payload}"[:255]


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
