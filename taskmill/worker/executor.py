"""Run one claimed job and say how it ended. No scheduling, no bookkeeping of its own.

Used by the worker's executor threads and by ``taskmill.testing.run_pending``.
"""

from __future__ import annotations

import json
import logging
import random
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import close_old_connections, transaction
from django.utils import timezone

from .. import compat
from ..backend import TaskmillBackend
from ..compat import TaskError, TaskResultStatus
from ..context import JobContext, JobRuntime
from ..exceptions import Cancelled, TaskNotFound
from ..jobs import resolve_task
from ..results import JobResult
from ..store import ClaimedJob, Outcome

logger = logging.getLogger("taskmill.worker")

#: Errors that another attempt cannot fix.
FINAL_ERRORS: tuple[type[BaseException], ...] = (TaskNotFound, Cancelled)
#: Longest pause between attempts, whatever the backoff says.
MAX_RETRY_DELAY = 3600.0


def retry_delay(base: float, attempt: int) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random."""
    delay = min(MAX_RETRY_DELAY, base * 2.0 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def execute(job: ClaimedJob, runtime: JobRuntime, *,
            record: Callable[[Outcome], None] | None = None,
            manage_connections: bool = True) -> tuple[Outcome, JobResult | None]:
    """Run ``job`` once. Returns the outcome and the result to announce once it is recorded.

    ``record`` is called inside the task's transaction for ``transactional`` jobs, so the
    task's writes and the job's completion commit together.
    ``manage_connections`` closes stale connections before and after, as Django does
    around a request (skipped by ``run_pending``, which runs inside the test's transaction).
    """
    now = timezone.now()
    try:
        task = resolve_task(job.task_path)
    except TaskNotFound as exc:
        logger.error("Job %s: %s", job.id, exc)
        return failure_outcome(job, exc, final=True), None

    result = JobResult(
        task=task, id=str(job.id), status=TaskResultStatus.RUNNING,
        enqueued_at=job.enqueued_at, started_at=job.started_at or now, finished_at=None,
        last_attempted_at=now, args=job.args, kwargs=job.kwargs, backend=job.backend,
        errors=[], worker_ids=job.worker_ids, progress=None,
    )
    compat.send_signal("started", TaskmillBackend, result)
    if manage_connections:
        close_old_connections()
    try:
        if job.transactional and record is not None:
            database = _job_database(job)
            with transaction.atomic(using=database):
                outcome = _call(task, job, result, runtime)
                if outcome.succeeded:
                    # Same connection, same transaction: effects and completion are one commit.
                    record(outcome)
                if not (outcome.succeeded and outcome.recorded):
                    # A failed attempt leaves no writes behind (the caller records the
                    # failure); a lost lease means another attempt owns the effects.
                    transaction.set_rollback(True, using=database)
            if outcome.succeeded:
                outcome.needs_recording = False
        else:
            outcome = _call(task, job, result, runtime)
    finally:
        if manage_connections:
            close_old_connections()
    return outcome, _finished_result(result, outcome)


def _call(task: Any, job: ClaimedJob, result: JobResult, runtime: JobRuntime) -> Outcome:
    try:
        if task.takes_context:
            value = task.call(JobContext(task_result=result, runtime=runtime), *job.args, **job.kwargs)
        else:
            value = task.call(*job.args, **job.kwargs)
        return_json = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except Exception as exc:
        return failure_outcome(job, exc, final=isinstance(exc, FINAL_ERRORS))
    except BaseException as exc:  # JobTimeout injected into the thread, SystemExit in a task...
        if isinstance(exc, KeyboardInterrupt):
            raise
        return failure_outcome(job, exc, final=isinstance(exc, FINAL_ERRORS))
    return Outcome(job=job, finished_at=timezone.now(), succeeded=True, return_json=return_json)


def failure_outcome(job: ClaimedJob, exc: BaseException, *, final: bool) -> Outcome:
    now = timezone.now()
    exc_type = type(exc)
    retry_at = None
    if not final and job.attempts < job.max_attempts:
        retry_at = now + timedelta(seconds=retry_delay(job.retry_backoff, job.attempts))
    return Outcome(
        job=job, finished_at=now, succeeded=False,
        exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
        retry_at=retry_at,
        exception=exc,
    )


def _finished_result(result: JobResult, outcome: Outcome) -> JobResult | None:
    """The result for ``task_finished``: only when the job reached a final state."""
    if not outcome.succeeded and outcome.retry_at is not None:
        return None
    status = TaskResultStatus.SUCCESSFUL if outcome.succeeded else TaskResultStatus.FAILED
    errors = [] if outcome.succeeded else [
        TaskError(exception_class_path=outcome.exception_class_path, traceback=outcome.traceback)
    ]
    finished = JobResult(
        task=result.task, id=result.id, status=status, enqueued_at=result.enqueued_at,
        started_at=result.started_at, finished_at=outcome.finished_at,
        last_attempted_at=result.last_attempted_at, args=result.args, kwargs=result.kwargs,
        backend=result.backend, errors=errors, worker_ids=result.worker_ids,
        progress=None,
    )
    if outcome.succeeded:
        object.__setattr__(finished, "_return_value", json.loads(outcome.return_json))
    return finished


def announce_finished(result: JobResult | None, outcome: Outcome) -> None:
    """Send ``task_finished`` once the outcome is committed (and was ours to record)."""
    if result is None or not outcome.recorded:
        return
    if outcome.exception is None:
        compat.send_signal("finished", TaskmillBackend, result)
        return
    try:
        raise outcome.exception
    except BaseException:  # noqa: B036 - only to give receivers the exception context
        compat.send_signal("finished", TaskmillBackend, result)
    finally:
        outcome.exception = None  # drop the traceback's frames


def _job_database(job: ClaimedJob) -> str:
    backend = compat.task_backends[job.backend]
    return getattr(backend, "database", "default")


__all__ = ["FINAL_ERRORS", "announce_finished", "execute", "failure_outcome", "retry_delay"]
