"""From a task and its arguments to a job row, and from a row's path back to the task.

The one place a job row is built: the backend's enqueues, batches (children and their
``then`` job) and the periodic scheduler all go through :func:`job_factory`. Arguments
are checked here, before anything is stored: JSON only, never pickle, and an error that
names the culprit (SPEC, Promises).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from django.utils.module_loading import import_string

from .compat import AnyTask, InvalidTask, is_task
from .conf import BackendOptions
from .exceptions import InvalidTaskArguments, TaskNotFound
from .ids import new_job_id
from .rates import parse_rate
from .store import NewJob

#: Builds one job row from positional and keyword arguments.
JobFactory = Callable[[Sequence[Any], dict[str, Any]], NewJob]

#: Longest unique key the column holds; longer default keys are hashed.
UNIQUE_KEY_MAX = 255


class JobBackend(Protocol):
    """What a backend gives the rows of its jobs: its alias and its defaults."""

    alias: str
    config: BackendOptions


def job_factory(task: AnyTask, backend: JobBackend,
                batch_id: uuid.UUID | None = None) -> JobFactory:
    """A function building rows for ``task``; what does not depend on the arguments is
    worked out once (``enqueue_many`` builds tens of thousands of rows).

    A job not deferred (``run_after``) is due when the database's clock says it was
    enqueued: a host whose clock runs ahead does not make its jobs wait.
    """
    config = backend.config
    unique = is_unique(task)
    concurrency_limit = getattr(task, "concurrency_limit", None)
    rate_limit = getattr(task, "rate_limit", None)
    rate = parse_rate(rate_limit) if rate_limit is not None else None
    constants: dict[str, Any] = {
        "backend": backend.alias,
        "task_path": task.module_path,
        "queue_name": task.queue_name,
        "priority": task.priority,
        "run_after": task.run_after,
        "max_attempts": _option(task, "max_attempts", config.max_attempts),
        "retry_backoff": float(_option(task, "retry_backoff", config.retry_backoff)),
        "timeout": getattr(task, "timeout", None),
        "transactional": bool(getattr(task, "transactional", False)),
        "concurrency_limit": concurrency_limit,
        "concurrency_key": (getattr(task, "concurrency_key", None) or task.module_path)
        if concurrency_limit is not None else None,
        "batch_id": batch_id,
        "rate_limit": rate.limit if rate else None,
        "rate_period": rate.period if rate else None,
        "rate_key": (getattr(task, "rate_key", None) or task.module_path) if rate else None,
        "fairness_key": getattr(task, "fairness_key", None),
        "unique_until_start": getattr(task, "unique_while", None) == "waiting",
        "unique_period": getattr(task, "unique_period", None),
    }

    def make(args: Sequence[Any], kwargs: dict[str, Any]) -> NewJob:
        unique_key = None
        if unique:
            unique_key = getattr(task, "unique_key", None) or default_unique_key(task, args, kwargs)
        return NewJob(
            id=new_job_id(),
            args_json=encode_arguments(task, args, "args"),
            kwargs_json=encode_arguments(task, kwargs, "kwargs"),
            unique_key=unique_key,
            **constants,
        )

    return make


def new_job(task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any], *,
            batch_id: uuid.UUID | None = None) -> NewJob:
    """The row of one job of ``task``, built with its backend's defaults."""
    backend = task.get_backend()
    if not isinstance(getattr(backend, "config", None), BackendOptions):
        raise InvalidTask(f"{task.module_path} uses {type(backend).__name__}, not a taskmill "
                          "backend.")
    return job_factory(task, backend, batch_id=batch_id)(args, kwargs)  # type: ignore[arg-type]


def is_unique(task: AnyTask) -> bool:
    return bool(getattr(task, "unique", False) or getattr(task, "unique_key", None)
                or getattr(task, "unique_while", None) or getattr(task, "unique_period", None))


def resolve_task(task_path: str) -> AnyTask:
    """The Task a job names. Only objects defined as tasks are ever run."""
    try:
        obj = import_string(task_path)
    except ImportError as exc:
        raise TaskNotFound(
            f"{task_path!r} cannot be imported ({exc}); was the task renamed or removed?"
        ) from exc
    if not is_task(obj):
        raise TaskNotFound(
            f"{task_path!r} is a {type(obj).__name__}, not a task; only functions "
            "decorated with @task are run."
        )
    return obj  # type: ignore[no-any-return]


_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def encode_arguments(task: AnyTask, value: Sequence[Any] | dict[str, Any], what: str) -> str:
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


def split_item(item: Any, index: int = 0) -> tuple[Sequence[Any], dict[str, Any]]:
    """An ``enqueue_many`` item as (args, kwargs)."""
    if isinstance(item, dict):
        return (), item
    if isinstance(item, (list, tuple)):
        return item, {}
    raise InvalidTaskArguments(
        f"enqueue_many item {index} is a {type(item).__name__}; each item must be a tuple "
        "or list of positional arguments, or a dict of keyword arguments."
    )


def _option(task: AnyTask, name: str, default: Any) -> Any:
    value = getattr(task, name, None)
    return default if value is None else value


def default_unique_key(task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """``path:arguments`` while it fits the column, else ``path:sha256:<digest>``.

    Never truncated: two calls whose arguments differ only past the cut would share a key.
    """
    payload = json.dumps([list(args), kwargs], sort_keys=True, separators=(",", ":"))
    key = f"{task.module_path}:{payload}"
    if len(key) <= UNIQUE_KEY_MAX:
        return key
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return f"{task.module_path[:180]}:sha256:{digest}"
