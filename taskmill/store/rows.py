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
    "batch_id", "concurrency_key", "rate_key", "rate_limit", "rate_period", "fairness_key",
    "fair_rank",
)

#: Columns written by an insert, in this order (the COPY of a bulk enqueue uses it).
INSERT_COLUMNS = (
    "id", "backend", "task_path", "queue_name", "priority", "status", "args", "kwargs",
    "enqueued_at", "run_after", "attempts", "max_attempts", "retry_backoff", "timeout",
    "transactional", "worker_ids", "cancel_force", "unique_key", "concurrency_key",
    "concurrency_limit", "batch_id", "rate_key", "rate_limit", "rate_period", "fairness_key",
    "fair_rank", "unique_until_start",
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
    #: When the job is due: None for at once, by the database's clock (a host's clock
    #: may be off; a deferred job's time is the caller's to choose).
    run_after: dt.datetime | None
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    transactional: bool = False
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    batch_id: uuid.UUID | None = None
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    fairness_key: str | None = None
    #: ``unique_while="waiting"``: the unique key is dropped when the job starts.
    unique_until_start: bool = False
    #: ``unique_period``: not stored; an enqueue within this many seconds of another job
    #: with the key (finished ones included) returns that job instead.
    unique_period: float | None = None
    #: The job's turn among its queue's fairness keys; given by the store at insert.
    fair_rank: int = 0

    def as_template(self) -> dict[str, Any]:
        """Everything but the id and the times, as JSON: a job to insert later, as it is
        (a batch's ``then`` job, with every option it was given)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _NOT_IN_TEMPLATE}

    @classmethod
    def from_template(cls, template: dict[str, Any], *, id: uuid.UUID) -> NewJob:
        """The job of a template, due at once."""
        values = {key: template[key] for key in _TEMPLATE_KEYS if key in template}
        return cls(id=id, run_after=None, **values)


_NOT_IN_TEMPLATE = {"id", "run_after", "batch_id", "fair_rank"}
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
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    fairness_key: str | None = None
    fair_rank: int = 0


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, to be recorded by :meth:`JobStore.complete`."""

    job: ClaimedJob
    #: By this host's clock: for the result ``task_finished`` carries, never stored.
    finished_at: dt.datetime
    succeeded: bool
    return_json: str = "null"
    #: For failures: the exception and, when the job is to be retried, in how many
    #: seconds (the store retries it only if it has attempts left).
    exception_class_path: str = ""
    traceback: str = ""
    retry_delay: float | None = None
    #: For a snoozed attempt (``taskmill.Snooze``): back in line in this many seconds, its
    #: attempt refunded, unless the job has snoozed ``max_snoozes`` times already.
    snooze: float | None = None
    max_snoozes: int = 0
    #: Filled in by the store: True once written; False while not yet, or when the guard
    #: rejected the write (the lease was lost and the job recovered).
    recorded: bool = field(default=False)
    #: Filled in by the store: whether the job ended (SUCCESSFUL, or FAILED for good)
    #: rather than going back in line for another attempt.
    ended: bool = field(default=False)
    #: False once written (a ``transactional`` job records itself inside its transaction).
    needs_recording: bool = field(default=True)
    #: The exception itself (not stored), so ``task_finished`` can be sent while it is
    #: being handled: error trackers hooked to logging see the real traceback.
    exception: BaseException | None = field(default=None, repr=False)


__all__ = ["CLAIM_COLUMNS", "INSERT_COLUMNS", "ClaimedJob", "NewJob", "Outcome"]


@dataclass(slots=True)
class HeldSnapshot:
    """The oldest open transaction of the job database: until it ends, no row version
    deleted or replaced after it began can be vacuumed away (docs/scaling.md)."""

    pid: int
    #: Seconds since its transaction began, by the database's clock.
    age: float
    application: str
    #: ``active``, ``idle in transaction``, ...
    state: str

    def describe(self) -> str:
        application = f" {self.application!r}," if self.application else ""
        return f"pid {self.pid},{application} {self.state or 'state unknown'}"
