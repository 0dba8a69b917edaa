"""The ``django.tasks`` face of taskmill: the backend, its Task and its TaskResult."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
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


#: Every attribute a JobResult holds (its slots across the class hierarchy), with the
#: slot's setter: bulk enqueues fill results without running a dataclass __init__ each.
_SLOT_SETTERS = {
    name: klass.__dict__[name].__set__
    for klass in JobResult.__mro__ for name in getattr(klass, "__slots__", ())
    if name != "__weakref__"
}


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


_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def encode_arguments(task: Task, value: Sequence[Any] | dict[str, Any], what: str) -> str:
    """JSON text of a job's args or kwargs, or a clear error naming the culprit."""
    if not value:
        return "{}" if what == "kwargs" else "[]"
    try:
        text = _encode(value if isinstance(value, (list, dict)) else list(value))
        # JSON would quietly turn {1: "a"} into {"1": "a"}: refuse rather than change data.
        if _has_nested_dict(value) and _find_unserializable(value):
            raise TypeError("keys must be strings")
        return text
    except (TypeError, ValueError) as exc:
        culprit = _find_unserializable(value)
        raise InvalidTaskArguments(
            f"Cannot enqueue {task.module_path}: {what}{culprit} is not JSON "
            f"({exc}). Pass plain data (str, int, float, bool, None, lists, dicts with "
            "string keys), e.g. a model's primary key instead of the instance."
        ) from None


def _has_nested_dict(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, tuple)) and any(
        isinstance(item, (dict, list, tuple)) and _has_nested_dict(item) for item in value
    )


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
    """``path:arguments`` while it fits the column, else ``path:sha256:<digest>``.

    Never truncated: two calls whose arguments differ only past the cut would share a key.
    """
    payload = json.dumps([list(args), kwargs], sort_keys=True, separators=(",", ":"))
    key = f"{task.module_path}:{payload}"
    if len(key) <= 255:
        return key
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return f"{task.module_path[:180]}:sha256:{digest}"


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
