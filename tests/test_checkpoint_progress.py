"""Progress and checkpoints: stored on the job, visible elsewhere at once, kept across attempts."""

import time

import pytest
from django.db import connection

from taskmill import task
from taskmill.models import Job, JobStatus
from tests.conftest import wait_until
from tests.project.coordination_tasks import progress_then_wait, resumable
from tests.project.models import Execution


@pytest.mark.django_db(transaction=True)
def test_a_crashed_job_resumes_from_its_checkpoint_without_repeating(start_worker):
    result = resumable.enqueue("item", 10, 4)  # The first attempt SIGKILLs itself after item 4.
    start_worker("--processes", "1")
    wait_until(lambda: Job.objects.get(id=result.id).status == JobStatus.SUCCESSFUL, timeout=30,
               message="the job finished on its second attempt")
    rows = list(Execution.objects.filter(label__startswith="item-"))
    assert sorted(int(r.label.split("-")[1]) for r in rows) == list(range(10))  # Each once.
    assert {r.label: r.value["attempt"] for r in rows} == {
        f"item-{i}": 1 if i <= 4 else 2 for i in range(10)}
    job = Job.objects.get(id=result.id)
    assert (job.attempts, job.checkpoint) == (2, 9)
    final = resumable.get_result(result.id)
    assert (final.progress.current, final.progress.total) == (10, 10)


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_from_another_process_while_the_task_runs(tmp_path, start_worker):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: the transactional task holds it (next test)")
    release = tmp_path / "release"
    # transactional: the task holds a transaction open, and its progress is still seen.
    result = progress_then_wait.enqueue("progress", str(release))
    start_worker("--processes", "1")

    def seen():
        result.refresh()
        return result.progress is not None and result

    seen_result = wait_until(seen, timeout=30, message="progress visible")
    assert seen_result.status == "RUNNING"
    assert (result.progress.current, result.progress.total) == (3, 10)
    assert result.progress.message == "three of ten" and result.progress.fraction == 0.3
    assert not Execution.objects.filter(label="progress").exists()  # Still running.
    release.write_text("go")
    wait_until(lambda: Job.objects.get(id=result.id).status == JobStatus.SUCCESSFUL, timeout=30,
               message="the job finished")


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_a_transactional_task_reports_progress_in_its_own_transaction(
        tmp_path, start_worker):
    """Its transaction holds SQLite's one write lock: progress written from another
    connection would wait on it until 'database is locked'. It joins the task's instead."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    release = tmp_path / "release"
    result = progress_then_wait.enqueue("progress", str(release))
    start_worker("--processes", "1")
    wait_until(lambda: Job.objects.get(id=result.id).status == JobStatus.RUNNING, timeout=30,
               message="the job running")
    time.sleep(1)  # It has reported progress by now, uncommitted.
    result.refresh()
    assert result.progress is None
    release.write_text("go")
    wait_until(lambda: Job.objects.get(id=result.id).status == JobStatus.SUCCESSFUL, timeout=30,
               message="the job finished")
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1  # Not a locked-out attempt run again.
    final = progress_then_wait.get_result(result.id)
    assert (final.progress.current, final.progress.total) == (3, 10)
    assert Execution.objects.filter(label="progress").count() == 1


BAD_PROGRESS = [("3/10", 10, ""), (3, "10", ""), (True, 10, ""), (float("nan"), 10, ""),
                (-1, 10, ""), (3, 0, ""), (3, -5, ""), (3, 10, 123)]


@task(takes_context=True)
def reports_badly(context) -> list:
    context.set_progress(1, 10, "fine")
    refused = []
    for current, total, message in BAD_PROGRESS:
        try:
            context.set_progress(current, total, message)
        except (TypeError, ValueError) as exc:
            refused.append(type(exc).__name__)
    return refused


@pytest.mark.django_db
def test_bad_progress_is_an_error_at_the_call_and_changes_nothing():
    from taskmill.testing import run_pending

    result = reports_badly.enqueue()
    run_pending()
    done = reports_badly.get_result(result.id)
    assert done.return_value == ["TypeError", "TypeError", "TypeError", "ValueError",
                                 "ValueError", "ValueError", "ValueError", "TypeError"]
    assert (done.progress.current, done.progress.total, done.progress.message) == (1, 10, "fine")
