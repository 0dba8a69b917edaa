"""What a worker process reports about itself: finished attempts, memory."""

from __future__ import annotations

import logging
import os

from ..store import Outcome

logger = logging.getLogger("taskmill.worker")


def log_outcome(outcome: Outcome, worker_id: str) -> None:
    """One line per finished attempt: debug for a success, a warning for a retry, an
    error for a job that failed for good; with structured fields for log systems."""
    job = outcome.job
    # Structured fields for log systems (taskmill.logging.JSONFormatter shows them).
    fields = {"job_id": str(job.id), "task": job.task_path, "queue": job.queue_name,
              "attempt": job.attempts, "worker_id": worker_id}
    if outcome.succeeded:
        logger.debug("Job %s %s succeeded (attempt %d).", job.id, job.task_path, job.attempts,
                     extra={**fields, "event": "job_succeeded"})
    elif outcome.snooze is not None and not outcome.ended:
        logger.info("Job %s %s snoozed for %.1fs (attempt %d not counted).", job.id,
                    job.task_path, outcome.snooze, job.attempts,
                    extra={**fields, "event": "job_snoozed"})
    elif not outcome.ended:
        logger.warning("Job %s %s failed (attempt %d of %d, %s); retrying in %.1fs.",
                       job.id, job.task_path, job.attempts, job.max_attempts,
                       outcome.exception_class_path, outcome.retry_delay or 0.0,
                       extra={**fields, "event": "job_retrying",
                              "exception": outcome.exception_class_path})
    else:
        logger.error("Job %s %s failed for good (attempt %d of %d): %s", job.id,
                     job.task_path, job.attempts, job.max_attempts,
                     outcome.traceback.strip().splitlines()[-1] if outcome.traceback else
                     outcome.exception_class_path,
                     extra={**fields, "event": "job_failed",
                            "exception": outcome.exception_class_path})


def resident_memory_mb() -> float:
    """This process's resident set size, in MB (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError):
        return 0.0


__all__ = ["log_outcome", "resident_memory_mb"]
