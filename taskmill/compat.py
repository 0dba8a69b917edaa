"""One place that knows which Tasks framework is in use.

Django 6.x ships ``django.tasks``; on Django 5.2 the ``django-tasks`` backport provides
the same API under ``django_tasks``. Everything else in taskmill imports the framework
from here. When both are installed (Django 6 with an app that still imports the
backport), Django's own framework is the one taskmill builds on, and the backport's
signals are sent as well so its listeners keep working.
"""

from __future__ import annotations

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


def send_signal(name: str, sender: type, task_result: TaskResult) -> None:
    """Send ``task_enqueued``/``task_started``/``task_finished`` on every installed framework."""
    signal = {"enqueued": task_enqueued, "started": task_started, "finished": task_finished}[name]
    signal.send(sender=sender, task_result=task_result)
    if _backport_signals is not None:
        getattr(_backport_signals, f"task_{name}").send(sender=sender, task_result=task_result)


__all__ = [
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
    "normalize_json",
    "send_signal",
    "task",
    "task_backends",
]
