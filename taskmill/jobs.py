"""From a task and its arguments to a job row: validation, JSON, unique keys.

Also the way back, from a row's task path to the task: only objects defined as tasks
are ever run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from django.utils.module_loading import import_string

from .compat import Task
from .exceptions import InvalidTaskArguments, TaskNotFound


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
