"""Where nothing wakes an idle worker when a job is enqueued (MySQL has no LISTEN), it
looks again soon after taking jobs, then less and less often, up to its poll interval:
jobs that keep coming are not each left waiting for the next poll."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from taskmill.models import Job, JobStatus
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_that_just_took_jobs_looks_again_long_before_its_poll(start_worker):
    if connection.vendor != "mysql":
        pytest.skip("PostgreSQL's workers are woken by NOTIFY, SQLite's by a file watch")
    from tests.project.tasks import record

    worker = start_worker("--processes", "1", "--poll-interval", "5")
    warm = record.enqueue("warm-up")  # Taken at the worker's first look.
    wait_until(lambda: Job.objects.filter(id=warm.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="the worker to start")
    time.sleep(0.2)  # Idle now; before, its next look came a poll (5 s) after the last.
    enqueued = time.monotonic()
    result = record.enqueue("next")
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="the job to run")
    assert time.monotonic() - enqueued < 1.5, worker


def test_an_unwoken_workers_looks_double_up_to_its_poll_and_start_over_after_taking_jobs():
    from taskmill.worker.looks import QUICK_LOOK, IdleLooks

    looks = IdleLooks(poll_interval=1.0)
    waits = [looks.wait(None) for _ in range(9)]
    assert waits[:3] == [QUICK_LOOK, 2 * QUICK_LOOK, 4 * QUICK_LOOK]
    assert waits[-1] == 1.0 and waits == sorted(waits)
    assert looks.wait(0.003) == 0.003  # A job due sooner than the look: its time.
    looks.took_jobs()
    assert looks.wait(None) == QUICK_LOOK
    looks.woken_by_enqueues.set()  # Enqueues wake it: it waits out its poll.
    assert looks.wait(None) == 1.0 and looks.wait(0.5) == 0.5
