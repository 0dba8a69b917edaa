"""Poison jobs: whatever raises outside the task body, every attempt ends in a recorded
outcome, a job out of attempts ends FAILED, and the worker goes on."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from django.db import connection

from taskmill.compat import TaskResultStatus
from taskmill.exceptions import JobTimeout
from taskmill.models import Job, JobError, JobStatus
from taskmill.store import get_store
from taskmill.testing import worker
from taskmill.worker.watchdog import Watchdog
from tests.conftest import wait_until
from tests.project import poison_tasks
from tests.project.models import Execution
from tests.project.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)


def errors_of(result_id: str) -> list[str]:
    return list(JobError.objects.filter(job_id=result_id).order_by("attempt")
                .values_list("exception_class_path", flat=True))


def test_a_task_started_receiver_that_raises_fails_the_attempt_not_the_worker(start_worker):
    poison = poison_tasks.refused_at_start.enqueue("never-runs")
    after = record.enqueue("after-the-poison")
    started = time.monotonic()
    burst = start_worker("--burst", "--processes", "1", "--shutdown-timeout", "30")
    assert burst.wait(timeout=60) == 0, burst.output
    assert time.monotonic() - started < 25  # no wait for the shutdown timeout
    job = Job.objects.get(id=poison.id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, job.max_attempts)
    assert errors_of(poison.id) == ["tests.project.apps.StartRefused"] * job.max_attempts
    assert not Execution.objects.filter(label="never-runs").exists()
    assert Job.objects.get(id=after.id).status == JobStatus.SUCCESSFUL


def test_a_transactional_task_that_broke_its_transaction_fails_with_nothing_kept(start_worker):
    poison = poison_tasks.breaks_its_transaction.enqueue("rolled-back")
    after = record.enqueue("after-the-poison")
    burst = start_worker("--burst", "--processes", "1", "--shutdown-timeout", "30")
    assert burst.wait(timeout=60) == 0, burst.output
    job = Job.objects.get(id=poison.id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert len(errors_of(poison.id)) == 2
    assert not Execution.objects.filter(label="rolled-back").exists()  # nothing of it kept
    assert Job.objects.get(id=after.id).status == JobStatus.SUCCESSFUL


def test_an_outcome_the_database_refuses_fails_its_attempt_and_spares_the_others(start_worker):
    if connection.vendor != "postgresql":
        pytest.skip("a NUL character is refused by PostgreSQL's jsonb only")
    poison = poison_tasks.unstorable_result.enqueue("refused")
    fine = [record.enqueue(f"fine-{i}") for i in range(5)]
    burst = start_worker("--burst", "--processes", "1", "--shutdown-timeout", "30")
    assert burst.wait(timeout=60) == 0, burst.output
    job = Job.objects.get(id=poison.id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert errors_of(poison.id) == ["taskmill.exceptions.ResultNotStored"] * 2
    assert all(Job.objects.get(id=r.id).status == JobStatus.SUCCESSFUL for r in fine)
    assert burst.output.count("started:") == 1  # one worker process throughout: no crash


def test_no_timeout_lands_in_a_thread_once_its_attempt_released_it():
    """The watchdog raises into a thread; a raise that comes as the body ends must land
    inside the attempt or not at all, never in the code after it."""
    watchdog = Watchdog(lambda token, exc: None, grace=60)
    watchdog.start()
    landed = {"in the attempt": 0, "after it": 0, "not at all": 0}

    def attempt(seconds: float, overrun: float) -> None:
        token = object()
        try:
            watchdog.watch(token, threading.get_ident(), seconds, JobTimeout)
            end = time.monotonic() + seconds + overrun  # The body ends about its deadline.
            while time.monotonic() < end:
                pass
            watchdog.release(token)
        except JobTimeout:
            landed["in the attempt"] += 1
            watchdog.release(token)
            watchdog.forget(token)
            return
        try:
            total = 0
            for i in range(20_000):  # What runs after an attempt: bookkeeping.
                total += i
            landed["not at all"] += 1
        except JobTimeout:
            landed["after it"] += 1
        finally:
            watchdog.forget(token)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # Threads take turns often: the race is run, not skipped.
    try:
        for round_ in range(1000):
            overrun = ((round_ % 9) - 4) * 0.0001  # from 0.4 ms early to 0.4 ms late
            thread = threading.Thread(target=attempt, args=(0.002, overrun))
            thread.start()
            thread.join(10)
            # A timeout landing inside a lock's acquisition would leave it held: the
            # next attempt would wait for it forever.
            assert not thread.is_alive(), f"attempt {round_} is stuck: {landed}"
    finally:
        sys.setswitchinterval(switch)
        watchdog.stop()
    assert landed["after it"] == 0, landed
    assert landed["in the attempt"] > 0, landed  # the race was really run


def test_jobs_ending_at_their_timeout_all_end_recorded_and_the_worker_goes_on():
    # Transactional: the completion after the body is a round trip for a timeout to hit.
    jobs = [poison_tasks.busy_until.using(timeout=0.05, transactional=True).enqueue(
        f"edge-{i}", 0.0495 + (i % 5) * 0.0003) for i in range(60)]
    with worker(threads=2, shutdown_timeout=5) as running:
        running.wait(*jobs, timeout=60)
    statuses = {Job.objects.get(id=r.id).status for r in jobs}
    assert statuses <= {JobStatus.SUCCESSFUL, JobStatus.FAILED}
    for result in jobs:
        job = Job.objects.get(id=result.id)
        if job.status == JobStatus.FAILED:
            assert errors_of(result.id) == ["taskmill.exceptions.JobTimeout"]


def test_a_started_job_handed_back_keeps_its_attempt_and_ends_failed_when_it_was_the_last():
    store = get_store("default")
    store.register_worker("host:1:stop", "host", 1, ["default"], 1)
    last = record.using(max_attempts=1).enqueue("last-attempt")
    more = record.using(max_attempts=2).enqueue("more-left")
    held = store.claim(["default"], 2, "host:1:stop")
    assert store.hand_back(held, "host:1:stop", started=True) == 1  # one is READY again
    ended = record.get_result(last.id)
    assert ended.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in ended.errors] == ["taskmill.exceptions.Interrupted"]
    again = record.get_result(more.id)
    assert (again.status, again.attempts) == (TaskResultStatus.READY, 1)
    assert [e.exception_class_path for e in again.errors] == ["taskmill.exceptions.Interrupted"]


def test_shutdown_hand_back_records_the_interrupted_attempt(start_worker):
    result = poison_tasks.started_then_busy.using(max_attempts=2).enqueue("interrupted", 30.0)
    running = start_worker("--processes", "1", "--shutdown-timeout", "0.5")
    # Started on a thread, not only claimed: a claimed job not yet started is handed
    # back unstarted, its attempt refunded.
    wait_until(lambda: Execution.objects.filter(label="interrupted-started").exists(),
               message="the job to start")
    running.signal(15)
    running.wait(timeout=30)
    job = Job.objects.get(id=result.id)
    assert (job.status, job.attempts) == (JobStatus.READY, 1)
    assert errors_of(result.id) == ["taskmill.exceptions.Interrupted"]
