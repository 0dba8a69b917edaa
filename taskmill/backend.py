"""The ``django.tasks`` face of taskmill: the backend and its Task."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from . import compat
from .compat import AnyTask, BaseTaskBackend, InvalidTask, Task
from .conf import BackendOptions
from .jobs import is_unique, job_factory, split_item
from .models import Job
from .rates import parse_rate
from .results import JobResult, Progress, result_for_new_job, result_from_job, results_for_new_jobs
from .store import NewJob, get_store

__all__ = ["JobResult", "Progress", "TaskmillBackend", "TaskmillTask", "taskmill_backend",
           "taskmill_backends"]

#: Options taskmill adds to Django's Task; ``None`` means "the backend's default".
EXTRA_TASK_OPTIONS = (
    "max_attempts", "retry_backoff", "timeout", "unique", "unique_key", "unique_while",
    "unique_period",
    "concurrency_limit", "concurrency_key", "transactional", "rate_limit", "rate_key",
    "fairness_key",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskmillTask(AnyTask):
    """Django's Task with taskmill's options. ``using()`` accepts them too."""

    max_attempts: int | None = None
    retry_backoff: float | None = None
    timeout: float | None = None
    unique: bool = False
    unique_key: str | None = None
    #: "active" (READY or RUNNING, the default) or "waiting" (READY only: a debounce).
    unique_while: str | None = None
    #: Seconds: at most one job per key enqueued in any such period, finished ones included.
    unique_period: float | None = None
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    transactional: bool = False
    rate_limit: str | None = None
    rate_key: str | None = None
    fairness_key: str | None = None

    def using(self, **changes: Any) -> TaskmillTask:
        """Create a new Task with modified defaults (Django's and taskmill's options)."""
        ours = {k: changes.pop(k) for k in EXTRA_TASK_OPTIONS if k in changes}
        task = cast(TaskmillTask, Task.using(self, **changes)) if changes else self
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
        self.config = BackendOptions.from_params(alias, self.options, self.queues)

    @property
    def database(self) -> str:
        """The alias of the database that holds the job tables."""
        return self.config.database

    # -- definition-time checks -----------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        super().validate_task(task)
        if not isinstance(task, TaskmillTask):
            return
        _check_number(task.max_attempts, "max_attempts", whole=True, minimum=1)
        _check_number(task.retry_backoff, "retry_backoff", minimum=0)
        _check_number(task.timeout, "timeout", minimum=0, strict=True)
        _check_number(task.concurrency_limit, "concurrency_limit", whole=True, minimum=1)
        if task.unique_key is not None and not isinstance(task.unique_key, str):
            raise InvalidTask("unique_key must be a string.")
        if task.unique_while not in (None, "active", "waiting"):
            raise InvalidTask(f"unique_while must be 'active' or 'waiting', not "
                              f"{task.unique_while!r}.")
        _check_number(task.unique_period, "unique_period", minimum=0, strict=True)
        if task.unique_period is not None and task.unique_while == "waiting":
            raise InvalidTask("unique_period counts every job of the period, running and "
                              "finished ones included; it cannot be combined with "
                              "unique_while='waiting'.")
        if task.concurrency_key is not None and not isinstance(task.concurrency_key, str):
            raise InvalidTask("concurrency_key must be a string.")
        if task.concurrency_key is not None and task.concurrency_limit is None:
            raise InvalidTask("concurrency_key needs a concurrency_limit.")
        if task.rate_limit is not None:
            try:
                parse_rate(task.rate_limit)
            except ValueError as exc:
                raise InvalidTask(str(exc)) from None
        for name in ("rate_key", "fairness_key"):
            value = getattr(task, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidTask(f"{name} must be a non-empty string, not {value!r}.")
        if task.rate_key is not None and task.rate_limit is None:
            raise InvalidTask("rate_key needs a rate_limit.")

    # -- enqueue -------------------------------------------------------------------

    def enqueue(  # type: ignore[override]  # the stubs make the result generic in the task
            self, task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any]) -> JobResult:
        self.validate_task(task)
        job = job_factory(task, self)(args, kwargs)
        store = get_store(connections[self.database])
        if job.unique_key is not None:
            holder = store.insert_unique(job)
            if holder is not None:
                return self.get_result(str(holder))
        else:
            store.insert([job])
        result = result_for_new_job(task, job, args, kwargs)
        compat.send_signal("enqueued", type(self), result)
        return result

    def enqueue_many(self, task: AnyTask, items: Iterable[Any]) -> list[JobResult]:
        """Enqueue one job per item in one round trip; see :func:`taskmill.enqueue_many`."""
        self.validate_task(task)
        if is_unique(task):
            return [self.enqueue(task, *split_item(item)) for item in items]
        make_job = job_factory(task, self)
        jobs: list[NewJob] = []
        calls: list[tuple[Sequence[Any], dict[str, Any]]] = []
        for index, item in enumerate(items):
            args, kwargs = split_item(item, index)
            jobs.append(make_job(args, kwargs))
            calls.append((args, kwargs))
        results: list[JobResult] = []
        get_store(connections[self.database]).insert(
            jobs, while_sending=lambda: results.extend(results_for_new_jobs(task, jobs, calls)))
        for result in results:
            compat.send_signal("enqueued", type(self), result)
        return results

    # -- results -------------------------------------------------------------------

    def get_result(self, result_id: str) -> JobResult:
        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise compat.TaskResultDoesNotExist(result_id) from None
        try:
            job = Job.objects.using(self.database).get(id=job_id)
        except Job.DoesNotExist:
            raise compat.TaskResultDoesNotExist(result_id) from None
        return result_from_job(job)


def taskmill_backends() -> dict[str, TaskmillBackend]:
    """Every configured backend that is a taskmill backend, by alias."""
    backends = {alias: compat.task_backends[alias] for alias in getattr(settings, "TASKS", {})}
    return {alias: b for alias, b in backends.items() if isinstance(b, TaskmillBackend)}


def taskmill_backend(alias: str | None = None) -> TaskmillBackend:
    """The taskmill backend named ``alias``, or the default (or only) one."""
    backends = taskmill_backends()
    if not backends:
        raise ImproperlyConfigured(
            "No taskmill backend is configured. Add to settings.py:\n"
            '  TASKS = {"default": {"BACKEND": "taskmill.backend.TaskmillBackend"}}'
        )
    if alias is None:
        alias = "default" if "default" in backends else next(iter(backends))
    if alias not in backends:
        raise ImproperlyConfigured(
            f"{alias!r} is not a taskmill backend; choose from {sorted(backends)}.")
    return backends[alias]


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
