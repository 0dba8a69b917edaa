"""Operations on jobs from Python: enqueue many at once, cancel, retry, purge."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .backend import JobResult, TaskmillBackend
from .compat import InvalidTask, Task


def enqueue_many(task: Task, items: Iterable[Any]) -> list[JobResult]:
    """Enqueue one job per item in one round trip; results come back in item order.

    Each item is a tuple or list of positional arguments, or a dict of keyword arguments.
    Inside ``transaction.atomic()`` on the job database, the jobs commit with it.
    """
    backend = task.get_backend()
    if not isinstance(backend, TaskmillBackend):
        raise InvalidTask(f"enqueue_many needs a taskmill backend; {task.module_path} uses "
                          f"{type(backend).__name__}.")
    return backend.enqueue_many(task, items)
