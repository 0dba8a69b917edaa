"""transactional=True: the task's writes and the job's completion commit together."""

import os
import signal

import pytest

from taskmill.models import Job, JobStatus
from taskmill.testing import run_pending
from tests.conftest import wait_until
from tests.project.coordination_tasks import (
    plain_write,
    transactional_fails_once,
    transactional_write,
)
from tests.project.models import Execution


def kill_first_attempt(task, tmp_path, start_worker) -> Job:
    """Run ``task``; SIGKILL its process after its write, before it returns; wait for the end."""
    marker = tmp_path / "attempt-1.pid"
    result = task.enqueue("effect", str(marker))
    start_worker("--processes", "1")
    pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=30,
                         message="first attempt wrote"))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: Job.objects.get(id=result.id).status == JobStatus.SUCCESSFUL, timeout=30,
               message="the job succeeded on a second attempt")
    return Job.objects.get(id=result.id)


@pytest.mark.django_db(transaction=True)
def test_transactional_task_killed_after_its_write_has_its_effect_once(tmp_path, start_worker):
    job = kill_first_attempt(transactional_write, tmp_path, start_worker)
    assert job.attempts == 2
    assert job.errors.get().exception_class_path == "taskmill.exceptions.WorkerLost"
    rows = list(Execution.objects.filter(label="effect"))
    assert [r.value["attempt"] for r in rows] == [2]  # The killed attempt's write is gone.


@pytest.mark.django_db(transaction=True)
def test_the_same_kill_without_transactional_repeats_the_effect(tmp_path, start_worker):
    """The control: shows the test above would catch a lost guarantee."""
    job = kill_first_attempt(plain_write, tmp_path, start_worker)
    assert job.attempts == 2
    assert sorted(r.value["attempt"] for r in Execution.objects.filter(label="effect")) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_a_failed_transactional_attempt_leaves_no_writes(start_worker):
    result = transactional_fails_once.enqueue("once")
    worker = start_worker("--burst", "--processes", "1")
    assert worker.wait(timeout=60) == 0, worker.output
    job = Job.objects.get(id=result.id)
    assert (job.status, job.attempts) == (JobStatus.SUCCESSFUL, 2)
    assert [r.value["attempt"] for r in Execution.objects.filter(label="once")] == [2]


@pytest.mark.django_db(transaction=True)
def test_run_pending_runs_transactional_tasks_too():
    result = transactional_fails_once.enqueue("pending")
    run_pending()
    assert transactional_fails_once.get_result(result.id).status == "SUCCESSFUL"
    assert Execution.objects.filter(label="pending").count() == 1
