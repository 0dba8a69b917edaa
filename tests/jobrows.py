"""Job, error and worker rows written straight to the tables, for admin/dashboard tests.

Rows are inserted as the store would leave them, so tests can set up any state (a
million-row history in miniature, a running job with progress) without running workers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from taskmill.ids import new_job_id
from taskmill.models import Job, JobError, JobStatus, Worker

TASK = "tests.project.tasks.record"


def job_row(status: str = JobStatus.READY, *, ago: float = 0.0, ran: float = 1.0,
            **fields: Any) -> Job:
    """An unsaved Job: enqueued ``ago`` seconds back; finished ones ran ``ran`` seconds."""
    now = timezone.now()
    enqueued = now - dt.timedelta(seconds=ago)
    values: dict[str, Any] = {
        "id": new_job_id(), "task_path": TASK, "queue_name": "default", "status": status,
        "args": ["x"], "kwargs": {}, "enqueued_at": enqueued, "run_after": enqueued,
    }
    if status != JobStatus.READY:
        values.update(attempts=1, started_at=enqueued, last_attempted_at=enqueued)
    if status in (JobStatus.SUCCESSFUL, JobStatus.FAILED):
        values["finished_at"] = enqueued + dt.timedelta(seconds=ran)
    values.update(fields)
    return Job(**values)


def make_jobs(count: int, status: str = JobStatus.READY, **fields: Any) -> list[Job]:
    jobs = [job_row(status, **fields) for _ in range(count)]
    Job.objects.bulk_create(jobs, batch_size=500)
    return jobs


def make_job(status: str = JobStatus.READY, **fields: Any) -> Job:
    return make_jobs(1, status, **fields)[0]


def make_error(job: Job, attempt: int = 1, traceback: str = "Traceback ...\nValueError: boom\n",
               exception: str = "builtins.ValueError") -> JobError:
    return JobError.objects.create(job=job, attempt=attempt, worker_id="host:1:abc",
                                   exception_class_path=exception, traceback=traceback,
                                   created_at=timezone.now())


def make_worker(worker_id: str, hostname: str = "web-1", age: float = 0.5) -> Worker:
    now = timezone.now()
    return Worker.objects.create(id=worker_id, hostname=hostname, pid=4242, queues=["default"],
                                 threads=4, started_at=now - dt.timedelta(minutes=5),
                                 last_heartbeat=now - dt.timedelta(seconds=age))
