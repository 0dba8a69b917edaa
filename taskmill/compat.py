"""One place that knows which Tasks framework is in use.

Django 6.x ships ``django.tasks``; on Django 5.2 the ``django-tasks`` backport provides
the same API under ``django_tasks``. Everything else in taskmill imports the framework
from here. When both are installed (Django 6 with an app that still imports the
backport), Django's own framework is the one taskmill builds on, and the backport's
signals are sent as well so its listeners keep working.
"""

from __future__ import annotations

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

    _backport_signals: ModuleType | None
    try:  # The backport, when an installed app still uses it.
        from django_tasks import signals as _backport_signals
    except ImportError:  # pragma: no cover - depends on the environment
        _backport_signals = None
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

    _backport_signals = None


#: What counts as a task: Django's, and the backport's when it is installed alongside.
TASK_CLASSES: tuple[type, ...] = (Task,)
try:  # A task defined with the backport's decorator, on either Django line.
    from django_tasks.base import Task as _BackportTask

    TASK_CLASSES = (Task, _BackportTask)
except ImportError:  # pragma: no cover - django-tasks is a dependency
    pass

if TYPE_CHECKING:
    # Generic in the type stubs only (Django's classes are not subscriptable at run time).
    AnyTask = Task[..., Any]
    AnyTaskResult = TaskResult[..., Any]
    AnyTaskContext = TaskContext[..., Any]
else:
    AnyTask, AnyTaskResult, AnyTaskContext = Task, TaskResult, TaskContext


def is_task(obj: object) -> bool:
    """Whether ``obj`` was defined as a task (only tasks are ever run)."""
    return isinstance(obj, TASK_CLASSES)


def send_signal(name: str, sender: type, task_result: AnyTaskResult) -> None:
    """Send ``task_enqueued``/``task_started``/``task_finished`` on every installed framework."""
    signal = {"enqueued": task_enqueued, "started": task_started, "finished": task_finished}[name]
    signal.send(sender=sender, task_result=task_result)
    if _backport_signals is not None:
        getattr(_backport_signals, f"task_{name}").send(sender=sender, task_result=task_result)


__all__ = [
    "AnyTask",
    "AnyTaskContext",
    "AnyTaskResult",
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_QUEUE_NAME",
    "NATIVE",
    "TASK_CLASSES",
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
