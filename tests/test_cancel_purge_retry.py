"""taskmill.cancel / retry / purge and their ``manage.py taskmill`` subcommands."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

import taskmill
from taskmill.api import InvalidJobState
from taskmill.models import Job, JobStatus
from taskmill.testing import run_pending
from tests.conftest import wait_until
from tests.project.coordination_tasks import cooperative, stubborn, unique_job
from tests.project.models import Execution
from tests.project.tasks import add, always_fails, record


def status(result) -> str:
    return Job.objects.get(id=result.id).status


def command(*args: str) -> str:
    out = StringIO()
    call_command("taskmill", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_waiting_job_never_runs(start_worker):
    waiting = record.enqueue("cancelled")
    other = record.enqueue("kept")
    assert "will not run" in command("cancel", waiting.id)
    worker = start_worker("--burst", "--processes", "1")
    assert worker.wait(timeout=60) == 0, worker.output
    assert list(Execution.objects.values_list("label", flat=True)) == ["kept"]
    result = record.get_result(waiting.id)
    assert result.status == "FAILED" and result.cancel_requested
    assert [e.exception_class_path for e in result.errors] == ["taskmill.exceptions.Cancelled"]
    assert status(other) == JobStatus.SUCCESSFUL


@pytest.mark.django_db(transaction=True)
def test_a_running_job_sees_the_cancel_and_stops_without_retry(start_worker):
    result = cooperative.enqueue("coop")
    start_worker("--processes", "1")
    wait_until(lambda: Execution.objects.filter(label="coop").exists(), message="job started")
    taskmill.cancel(result.id)
    wait_until(lambda: status(result) == JobStatus.FAILED, timeout=10, message="job stopped")
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1  # max_attempts=3, but a cancelled job is not retried.
    assert job.errors.get().exception_class_path == "taskmill.exceptions.Cancelled"
    assert not Execution.objects.filter(label="coop-finished").exists()


@pytest.mark.slow  # The 5 s grace period.
@pytest.mark.django_db(transaction=True)
def test_force_cancel_stops_a_job_that_ignores_the_request(start_worker):
    result = stubborn.enqueue("stubborn")
    start_worker("--processes", "1")
    wait_until(lambda: Execution.objects.filter(label="stubborn").exists(), message="started")
    taskmill.cancel(result.id)  # Ignored by the task...
    out = command("cancel", result.id, "--force")  # ...so force it (after a 5 s grace).
    assert "Asked running job" in out
    wait_until(lambda: status(result) == JobStatus.FAILED, timeout=15, message="job stopped")
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1 and job.cancel_force
    assert job.errors.get().exception_class_path == "taskmill.exceptions.Cancelled"
    assert not Execution.objects.filter(label="stubborn-finished").exists()


@pytest.mark.django_db(transaction=True)
def test_purge_removes_waiting_jobs_while_a_running_one_goes_on(start_worker):
    running = cooperative.enqueue("runs-on")
    start_worker("--processes", "1")
    wait_until(lambda: status(running) == JobStatus.RUNNING, message="job running")
    later = timezone.now() + timedelta(hours=1)
    waiting = [record.using(run_after=later).enqueue(f"w{i}") for i in range(5)]
    assert "Purged 5 waiting job(s)" in command("purge")
    assert not Job.objects.filter(id__in=[w.id for w in waiting]).exists()
    assert status(running) == JobStatus.RUNNING
    taskmill.cancel(running.id)
    wait_until(lambda: status(running) == JobStatus.FAILED, timeout=10, message="job stopped")


@pytest.mark.django_db(transaction=True)
def test_purge_filters_by_queue_and_task_and_keeps_finished_jobs():
    done = add.enqueue(1, 2)
    run_pending()
    add.enqueue(1, 1)
    add.using(queue_name="other").enqueue(2, 2)
    record.using(queue_name="other").enqueue("x")
    record.enqueue("y")
    assert taskmill.purge(queue="other", task=add) == 1
    assert taskmill.purge(task="tests.project.tasks.record") == 2
    assert "Purged 1 waiting job(s) (queue 'default')" in command("purge", "--queue", "default")
    assert list(Job.objects.values_list("id", flat=True)) == [Job.objects.get(id=done.id).id]


@pytest.mark.django_db(transaction=True)
def test_retry_runs_a_failed_job_again_and_refuses_the_others():
    failed = always_fails.enqueue()
    run_pending()
    assert status(failed) == JobStatus.FAILED
    assert "waiting to run again" in command("retry", failed.id)
    job = Job.objects.get(id=failed.id)
    assert (job.status, job.attempts, job.max_attempts) == (JobStatus.READY, 1, 2)
    run_pending()
    again = always_fails.get_result(failed.id)
    assert again.status == "FAILED" and len(again.errors) == 2

    ok = add.enqueue(1, 2)
    with pytest.raises(InvalidJobState, match="READY"):
        taskmill.retry(ok.id)
    run_pending()
    with pytest.raises(CommandError, match="succeeded; only FAILED"):
        command("retry", ok.id)
    with pytest.raises(CommandError, match="No job"):
        command("retry", "00000000-0000-0000-0000-000000000000")


@pytest.mark.django_db(transaction=True)
def test_retry_of_a_cancelled_unique_job_respects_its_key():
    first = unique_job.enqueue("k")
    taskmill.cancel(first.id)
    second = unique_job.enqueue("k")  # The cancelled job freed the key.
    assert second.id != first.id
    with pytest.raises(InvalidJobState, match=str(second.id)):
        taskmill.retry(first.id)
    run_pending()
    assert taskmill.retry(first.id).status == "READY"  # Key free again: retried, runs.
    run_pending()
    assert unique_job.get_result(first.id).status == "SUCCESSFUL"


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_running_job_is_never_run_again_whatever_happens_next():
    """Shutdown hand-back, a failed attempt's retry and recovery all end it FAILED."""
    from taskmill.store import get_store
    from taskmill.worker.executor import failure_outcome

    store = get_store("default")
    timezone.now()
    store.register_worker("w", "host", 1, ["default"], 1)
    jobs = [cooperative.enqueue(f"c{i}") for i in range(3)]
    claimed = {str(j.id): j for j in store.claim(["default"], 3, "w")}
    for job in jobs:
        taskmill.cancel(job.id)
    store.hand_back([claimed[jobs[0].id]], "w", started=True)  # A worker shutting down.
    failed = failure_outcome(claimed[jobs[1].id], RuntimeError("task ignored the cancel"), final=False)
    assert failed.retry_delay is not None
    store.complete([failed], "w")  # A failure that would normally be retried.
    store.unregister_worker("w")
    assert store.recover_orphans() == 1  # Its worker died.
    for job in jobs:
        result = cooperative.get_result(job.id)
        assert result.status == "FAILED", job
        assert result.errors[-1].exception_class_path in (
            "taskmill.exceptions.Cancelled", "builtins.RuntimeError")
    assert cooperative.get_result(jobs[0].id).errors[-1].exception_class_path == \
        "taskmill.exceptions.Cancelled"
    assert cooperative.get_result(jobs[2].id).errors[-1].exception_class_path == \
        "taskmill.exceptions.Cancelled"
    assert not Job.objects.filter(status=JobStatus.READY).exists()
