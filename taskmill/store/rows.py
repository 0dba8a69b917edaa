"""The rows the store takes and gives: a job to insert, a claimed job, an attempt's outcome."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

#: Columns a worker needs to run a claimed job, in this order (``${claim_columns}``).
CLAIM_COLUMNS = (
    "id", "backend", "task_path", "queue_name", "priority", "args", "kwargs",
    "enqueued_at", "run_after", "started_at", "attempts", "max_attempts",
    "retry_backoff", "timeout", "transactional", "worker_ids", "checkpoint",
    "batch_id", "concurrency_key",
)

#: Columns written by an insert, in this order (the COPY of a bulk enqueue uses it).
INSERT_COLUMNS = (
    "id", "backend", "task_path", "queue_name", "priority", "status", "args", "kwargs",
    "enqueued_at", "run_after", "attempts", "max_attempts", "retry_backoff", "timeout",
    "transactional", "worker_ids", "cancel_force", "unique_key", "concurrency_key",
    "concurrency_limit", "batch_id",
)


@dataclass(slots=True)
class NewJob:
    """A job about to be inserted. Arguments are already JSON text."""

    id: uuid.UUID
    backend: str
    task_path: str
    queue_name: str
    priority: int
    args_json: str
    kwargs_json: str
    enqueued_at: dt.datetime
    run_after: dt.datetime
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    transactional: bool = False
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    batch_id: uuid.UUID | None = None

    def as_template(self) -> dict[str, Any]:
        """Everything but the id and the times, as JSON: a job to insert later, as it is
        (a batch's ``then`` job, with every option it was given)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _NOT_IN_TEMPLATE}

    @classmethod
    def from_template(cls, template: dict[str, Any], *, id: uuid.UUID,
                      now: dt.datetime) -> NewJob:
        values = {key: template[key] for key in _TEMPLATE_KEYS if key in template}
        return cls(id=id, enqueued_at=now, run_after=now, **values)


_NOT_IN_TEMPLATE = {"id", "enqueued_at", "run_after", "batch_id"}
_TEMPLATE_KEYS = [f.name for f in fields(NewJob) if f.name not in _NOT_IN_TEMPLATE]


@dataclass(slots=True)
class ClaimedJob:
    """A job this worker holds the lease on, for the attempt ``attempts``."""

    id: uuid.UUID
    backend: str
    task_path: str
    queue_name: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: dt.datetime
    run_after: dt.datetime
    started_at: dt.datetime | None
    attempts: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    transactional: bool
    worker_ids: list[str]
    checkpoint: Any
    batch_id: uuid.UUID | None
    concurrency_key: str | None


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, to be recorded by :meth:`JobStore.complete`."""

    job: ClaimedJob
    finished_at: dt.datetime
    succeeded: bool
    return_json: str = "null"
    #: For failures: the exception and, when the job will be retried, when.
    exception_class_path: str = ""
    traceback: str = ""
    retry_at: dt.datetime | None = None
    #: Filled in by the store: False when the guard rejected the write (lease lost).
    recorded: bool = field(default=True)
    #: False once written (a ``transactional`` job records itself inside its transaction).
    needs_recording: bool = field(default=True)
    #: The exception itself (not stored), so ``task_finished`` can be sent while it is
    #: being handled: error trackers hooked to logging see the real traceback.
    exception: BaseException | None = field(default=None, repr=False)


__all__ = ["CLAIM_COLUMNS", "INSERT_COLUMNS", "ClaimedJob", "NewJob", "Outcome"]
