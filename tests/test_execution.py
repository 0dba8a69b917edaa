"""Running jobs: retries with backoff, timeouts, order, deferral, only real tasks, signals."""

import os  # noqa: F401  (used by skipif)
import time
from datetime import timedelta

import pytest
from django.utils import timezone

import taskmill
from taskmill.compat import TaskResultStatus
from taskmill.ids import new_job_id
from taskmill.jobs import new_job
from taskmill.models import Job, JobStatus
from taskmill.results import Progress
from tests.conftest import wait_until
from tests.project.models import Execution
from tests.project.tasks import (
    add,
    always_fails,
    async_add,
    flaky,
    record,
    stuck_in_c,
    too_slow,
    with_context,
)

pytestmark = pytest.mark.django_db(transaction=True)


def run_burst(start_worker, *args: str) -> None:
    worker = start_worker("--burst", "--processes", "1", *args)
    assert worker.wait(timeout=60) == 0, worker.output


def test_a_failing_job_is_retried_with_backoff_until_it_succeeds(start_worker):
    result = flaky.enqueue("flaky", 2)
    start_worker("--processes", "1")
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               message="the third attempt")
    done = flaky.get_result(result.id)
    assert done.attempts == 3 and done.return_value == "ok"
    assert [e.exception_class_path for e in done.errors] == ["builtins.RuntimeError"] * 2
    assert "attempt failed on purpose" in done.errors[0].traceback
    starts = list(Execution.objects.filter(label="flaky").order_by("id")
                  .values_list("started", flat=True))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # retry_backoff=0.1: the n-th retry waits 0.1 * 2**(n-1), at least half of it (jitter).
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, gaps


def test_a_job_fails_for_good_after_max_attempts(start_worker):
    result = always_fails.enqueue()
    run_burst(start_worker)
    failed = always_fails.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    assert "this task always fails" in failed.errors[0].traceback
    with pytest.raises(ValueError, match="failed"):
        failed.return_value  # noqa: B018


def test_timeout_stops_python_code_and_fails_the_attempt(start_worker):
    result = too_slow.enqueue("slow-python", 10.0)
    began = time.monotonic()
    run_burst(start_worker)
    assert time.monotonic() - began < 8
    failed = too_slow.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "taskmill.exceptions.JobTimeout"
    assert Execution.objects.get(label="slow-python").finished is None


def test_timeout_of_code_stuck_in_c_recycles_the_process(start_worker):
    result = stuck_in_c.enqueue("stuck", 30.0)
    after = record.enqueue("after-stuck")
    began = time.monotonic()
    run_burst(start_worker)
    assert time.monotonic() - began < 20  # 1 s timeout + 5 s grace, not 30 s
    failed = stuck_in_c.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "taskmill.exceptions.JobTimeout"
    # The job after it ran in a fresh process.
    assert record.get_result(after.id).status == TaskResultStatus.SUCCESSFUL
    stuck_pid = Execution.objects.get(label="stuck").pid
    assert Execution.objects.get(label="after-stuck").pid != stuck_pid


def test_jobs_run_by_priority_then_run_after_then_enqueue_order(start_worker):
    now = timezone.now()
    record.using(run_after=now - timedelta(seconds=5)).enqueue("deferred-earlier")
    record.enqueue("first-normal")
    record.using(priority=10).enqueue("urgent")
    record.enqueue("second-normal")
    record.using(priority=-5).enqueue("low")
    run_burst(start_worker)
    order = list(Execution.objects.order_by("id").values_list("label", flat=True))
    assert order == ["urgent", "deferred-earlier", "first-normal", "second-normal", "low"]


def test_a_deferred_job_waits_for_its_time(start_worker):
    result = record.using(run_after=timezone.now() + timedelta(seconds=1.5)).enqueue("later")
    start_worker("--processes", "1")
    time.sleep(0.8)
    assert not Execution.objects.filter(label="later").exists()
    wait_until(lambda: Execution.objects.filter(label="later").exists(), timeout=10)
    assert Execution.objects.get(label="later").started >= result.enqueued_at.timestamp() + 1.4


def test_only_tasks_are_run_and_the_worker_keeps_going(start_worker):
    gone = new_job(record, ["x"], {})
    plain = new_job(record, [], {})
    gone.task_path = "tests.project.tasks.renamed_long_ago"
    plain.task_path = "tests.project.tasks.not_a_task"  # a function, but not a task
    from taskmill.store import get_store

    get_store("default").insert([gone, plain])
    fine = record.enqueue("still-works")
    run_burst(start_worker)
    for job_id, message in ((gone.id, "cannot be imported"), (plain.id, "not a task")):
        job = Job.objects.get(id=job_id)
        assert job.status == JobStatus.FAILED and job.attempts == 1  # no pointless retries
        error = job.errors.get()
        assert error.exception_class_path == "taskmill.exceptions.TaskNotFound"
        assert message in error.traceback
    assert not Execution.objects.filter(label="not_a_task ran").exists()
    assert record.get_result(fine.id).status == TaskResultStatus.SUCCESSFUL


def test_async_tasks_run(start_worker):
    result = async_add.enqueue(20, 22)
    run_burst(start_worker)
    assert async_add.get_result(result.id).return_value == 42


def test_context_reports_attempt_and_progress(start_worker):
    result = with_context.enqueue("ctx")
    run_burst(start_worker)
    done = with_context.get_result(result.id)
    assert done.return_value == 1
    assert done.progress == Progress(current=1, total=2, message="half way")
    assert Execution.objects.get(label="ctx").value == {"attempt": 1}


def test_threads_run_jobs_concurrently(start_worker):
    from tests.project.tasks import slow

    taskmill.enqueue_many(slow, [(f"t-{i}", 1.0) for i in range(4)])
    run_burst(start_worker, "--threads", "4")
    runs = list(Execution.objects.values_list("started", "finished", "pid"))
    assert len(runs) == 4 and len({pid for _, _, pid in runs}) == 1
    # Side by side in one process: every job started before any of them finished.
    assert max(start for start, _, _ in runs) < min(end for _, end, _ in runs)


def test_results_and_ids_survive_the_round_trip(start_worker):
    ids = [add.enqueue(i, i).id for i in range(5)]
    run_burst(start_worker)
    assert [add.get_result(i).return_value for i in ids] == [0, 2, 4, 6, 8]
    assert all(len(add.get_result(i).worker_ids) == 1 for i in ids)
    assert str(new_job_id()) > max(ids)


@pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') != 'postgresql'")
def test_an_idle_postgresql_worker_is_woken_by_the_enqueue_not_the_poll(start_worker):
    from taskmill.models import Worker

    start_worker("--processes", "1", "--poll-interval", "60")
    wait_until(lambda: Worker.objects.exists(), message="the worker to register")
    time.sleep(1.0)  # now idle, in a 60 s wait
    result = record.enqueue("woken")
    enqueued = time.monotonic()
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, interval=0.01, message="the job")
    assert time.monotonic() - enqueued < 3  # the NOTIFY on commit, not the 60 s poll
