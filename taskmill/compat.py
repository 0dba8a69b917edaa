"""One place that knows which Tasks framework is in use.

Django 6.x ships ``django.tasks``; on Django 5.2 the ``django-tasks`` backport provides
the same API under ``django_tasks``. Everything else in taskmill imports the framework
from here. On Django 6, Django's own framework is the one taskmill builds on; when an
app still imports the backport (its task decorator, its signals), the backport's
signals are sent as well so its listeners keep working, and its tasks run too.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import django

NATIVE = django.VERSION >= (6, 0)

if NATIVE:
    from django.tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:
    from django_tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json


def _backport(module: str) -> ModuleType | None:
    """The backport's ``module`` on Django 6, if something imported it.

    Never imported here: on Django 6 nothing needs it unless an app uses it, and its
    package monkeypatches Django's generic classes on import, which loads the admin,
    the sitemaps and the feeds into every worker process. An app that defines a task
    with the backport's decorator, or listens to its signals, has imported it.
    """
    return sys.modules.get(f"django_tasks.{module}") if NATIVE else None

if TYPE_CHECKING:
    # Generic in the type stubs only (Django's classes are not subscriptable at run time).
    AnyTask = Task[..., Any]
    AnyTaskResult = TaskResult[..., Any]
    AnyTaskContext = TaskContext[..., Any]
else:
    AnyTask, AnyTaskResult, AnyTaskContext = Task, TaskResult, TaskContext


def is_task(obj: object) -> bool:
    """Whether ``obj`` was defined as a task (only tasks are ever run): with Django's
    decorator, or with the backport's (on Django 6 too, when an app still uses it)."""
    if isinstance(obj, Task):
        return True
    backport = _backport("base")
    return backport is not None and isinstance(obj, backport.Task)


def send_signal(name: str, sender: type, task_result: AnyTaskResult) -> None:
    """Send ``task_enqueued``/``task_started``/``task_finished`` on every framework in use
    (on Django 6, the backport's too when an app imported its signals)."""
    signal = {"enqueued": task_enqueued, "started": task_started, "finished": task_finished}[name]
    signal.send(sender=sender, task_result=task_result)
    backport = _backport("signals")
    if backport is not None:
        getattr(backport, f"task_{name}").send(sender=sender, task_result=task_result)


__all__ = [
    "AnyTask",
    "AnyTaskContext",
    "AnyTaskResult",
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_QUEUE_NAME",
    "NATIVE",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "default_task_backend",
    "is_task",
    "normalize_json",
    "send_signal",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
