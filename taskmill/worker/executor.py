"""Run one claimed job and say how it ended. No scheduling, no bookkeeping of its own.

Used by the worker's executor threads and by ``taskmill.testing.run_pending``.

Every attempt ends in an outcome, whatever raised and wherever: the task body, a
``task_started`` receiver, the task's own transaction (a ``transactional`` task that
broke it and returned), its completion inside that transaction, or a timeout that lands
as the body returns. An attempt that failed outside the task body counts like any
other: retried while attempts are left, then FAILED with its error. A poison job cannot
take a worker down with it, nor loop forever.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, close_old_connections, transaction
from django.utils import timezone

from .. import compat
from ..backend import TaskmillBackend
from ..compat import TaskError, TaskResultStatus
from ..context import JobContext, JobRuntime
from ..exceptions import Cancelled, Snooze, TaskNotFound
from ..jobs import resolve_task
from ..results import JobResult
from ..store import ClaimedJob, Outcome

logger = logging.getLogger("taskmill.worker")

#: Errors that another attempt cannot fix.
FINAL_ERRORS: tuple[type[BaseException], ...] = (TaskNotFound, Cancelled)
#: Longest pause between attempts, whatever the backoff says.
MAX_RETRY_DELAY = 3600.0
#: How often an attempt that SQLite refused a write is run again at once (see _locked_out).
LOCKED_RETRIES = 8


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
    try:
        task = resolve_task(job.task_path)
    except TaskNotFound as exc:
        logger.error("Job %s: %s", job.id, exc)
        return failure_outcome(job, exc, final=True), None

    now = timezone.now()
    result = JobResult(
        task=task, id=str(job.id), status=TaskResultStatus.RUNNING,
        enqueued_at=job.enqueued_at, started_at=job.started_at or now, finished_at=None,
        last_attempted_at=now, args=job.args, kwargs=job.kwargs, backend=job.backend,
        errors=[], worker_ids=job.worker_ids, progress=None,
    )
    try:
        compat.send_signal("started", TaskmillBackend, result)
    except Exception as exc:  # A receiver's failure fails the attempt it was told of.
        outcome = failure_outcome(job, exc, final=False)
        return outcome, _finished_result(result, outcome)
    if manage_connections:
        close_old_connections()
    try:
        try:
            outcome = _run(task, job, result, runtime, record)
        finally:
            # From here on no timeout or forced cancel is raised in this thread.
            runtime.body_done()
    finally:
        if manage_connections:
            try:
                close_old_connections()
            except Exception:  # A connection that cannot even be closed is gone anyway.
                logger.exception("Job %s: closing the task's connections failed.", job.id)
    return outcome, _finished_result(result, outcome)


def _run(task: Any, job: ClaimedJob, result: JobResult, runtime: JobRuntime,
         record: Callable[[Outcome], None] | None) -> Outcome:
    """The attempt, run again at once (a few times) if SQLite refused it a write."""
    for again in range(LOCKED_RETRIES + 1):
        if job.transactional and record is not None:
            outcome = _call_in_transaction(task, job, result, runtime, record)
        else:
            outcome = _call(task, job, result, runtime)
        if again == LOCKED_RETRIES or not _locked_out(outcome):
            return outcome
        logger.info("Job %s: SQLite refused it a write (database is locked); running it "
                    "again at once (%d of %d).", job.id, again + 1, LOCKED_RETRIES)
        close_old_connections()
        time.sleep(random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2 ** again))
    return outcome


def _locked_out(outcome: Outcome) -> bool:
    """Whether the attempt failed because SQLite would not let its transaction write: a
    reader's snapshot that another writer made stale cannot be waited out (SQLite says
    "database is locked" at once, whatever the timeout), only run again."""
    exc = outcome.exception
    return (not outcome.succeeded and isinstance(exc, OperationalError)
            and "database is locked" in str(exc))


def _call_in_transaction(task: Any, job: ClaimedJob, result: JobResult, runtime: JobRuntime,
                         record: Callable[[Outcome], None]) -> Outcome:
    """The task body and its completion in one transaction on the job database."""
    database = _job_database(job)
    try:
        with transaction.atomic(using=database):
            outcome = _call(task, job, result, runtime)
            if outcome.succeeded:
                # Same connection, same transaction: effects and completion are one commit.
                record(outcome)
            if not (outcome.succeeded and outcome.recorded):
                # A failed attempt leaves no writes behind (the caller records the
                # failure); a lost lease means another attempt owns the effects.
                transaction.set_rollback(True, using=database)
    except Exception as exc:
        # The task broke its transaction (caught a database error and returned), or the
        # completion or the commit failed: nothing of the attempt was kept.
        return failure_outcome(job, exc, final=False)
    if outcome.succeeded:
        outcome.needs_recording = False
    return outcome


def _call(task: Any, job: ClaimedJob, result: JobResult, runtime: JobRuntime) -> Outcome:
    try:
        if task.takes_context:
            value = task.call(JobContext(task_result=result, runtime=runtime), *job.args,
                              **job.kwargs)
        else:
            value = task.call(*job.args, **job.kwargs)
        return_json = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except Snooze as exc:
        return snooze_outcome(job, exc)
    except Exception as exc:
        return failure_outcome(job, exc, final=isinstance(exc, FINAL_ERRORS))
    except BaseException as exc:  # JobTimeout injected into the thread, SystemExit in a task...
        if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is \
                threading.main_thread():
            raise  # Ctrl-C during run_pending(); in a worker's thread only a task raises it.
        return failure_outcome(job, exc, final=isinstance(exc, FINAL_ERRORS))
    return Outcome(job=job, finished_at=timezone.now(), succeeded=True, return_json=return_json)


def snooze_outcome(job: ClaimedJob, snooze: Snooze) -> Outcome:
    """Not a failure: the job waits ``snooze.seconds`` and keeps its attempt (the store
    fails it if it is over its backend's ``MAX_SNOOZES``)."""
    backend = compat.task_backends[job.backend]
    config = getattr(backend, "config", None)
    return Outcome(job=job, finished_at=timezone.now(), succeeded=False,
                   exception_class_path="taskmill.exceptions.Snooze",
                   snooze=snooze.seconds, max_snoozes=getattr(config, "max_snoozes", 100))


def failure_outcome(job: ClaimedJob, exc: BaseException, *, final: bool) -> Outcome:
    """The outcome of an attempt that raised ``exc``: retried (if attempts are left, which
    the store decides) unless ``final``."""
    exc_type = type(exc)
    return Outcome(
        job=job, finished_at=timezone.now(), succeeded=False,
        exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
        retry_delay=None if final else retry_delay(job.retry_backoff, job.attempts),
        exception=exc,
    )


def _finished_result(result: JobResult, outcome: Outcome) -> JobResult:
    """The result ``task_finished`` carries if the outcome ends the job."""
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
    """Send ``task_finished`` once the outcome is committed, if it ended the job (and was
    ours to record).

    The job's state is settled by then: a receiver that raises is logged, not propagated.
    """
    if result is None or not (outcome.recorded and outcome.ended):
        outcome.exception = None
        return
    try:
        if outcome.exception is None:
            compat.send_signal("finished", TaskmillBackend, result)
            return
        try:
            raise outcome.exception
        except BaseException:  # noqa: B036 - only to give receivers the exception context
            compat.send_signal("finished", TaskmillBackend, result)
    except Exception:
        logger.exception("Job %s: a task_finished receiver raised.", result.id)
    finally:
        outcome.exception = None  # drop the traceback's frames


def _job_database(job: ClaimedJob) -> str:
    backend = compat.task_backends[job.backend]
    return getattr(backend, "database", "default")


__all__ = ["FINAL_ERRORS", "announce_finished", "execute", "failure_outcome", "retry_delay"]
