"""taskmill.testing: run_pending in TestCase, worker() in TransactionTestCase, the plugin."""

from __future__ import annotations

import os
import sys
import textwrap
import threading

import pytest
from django.db import IntegrityError, connection
from django.test import TestCase, TransactionTestCase

from taskmill import task
from taskmill.compat import TaskResultStatus
from taskmill.models import Job, JobError, JobStatus
from taskmill.testing import TooManyJobs, WorkerCrashed, run_pending, worker
from tests.conftest import ROOT
from tests.project.models import Execution
from tests.project.tasks import add, record, with_context

pytest_plugins = ["pytester"]


@task()
def count_rows(label: str) -> int:
    """Reads rows the test created: only visible when run inside the test's transaction."""
    return Execution.objects.filter(label=label).count()


@task()
def countdown(n: int) -> int:
    Execution.objects.create(label=f"countdown-{n}", pid=os.getpid())
    if n > 0:
        countdown.enqueue(n - 1)
    return n


@task()
def forever() -> None:
    forever.enqueue()


@task(max_attempts=1)
def duplicate_row(pk: int) -> None:
    """Writes a row, then fails with a database error (a duplicate primary key)."""
    Execution.objects.create(label="written before the error", pid=os.getpid())
    Execution.objects.create(pk=pk, label="duplicate", pid=os.getpid())


@task()
def interrupts() -> None:
    """Escapes the task's error handling the way a bug in the worker would."""
    raise KeyboardInterrupt


def database_connections() -> int | None:
    """Sessions open on this test database (None where the server cannot tell)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()")
        else:
            return None
        return cursor.fetchone()[0]


def taskmill_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("taskmill")]


class RunPendingInsideTestCase(TestCase):
    def test_jobs_see_and_leave_uncommitted_rows(self):
        Execution.objects.create(label="made by the test", pid=0)
        counted = count_rows.enqueue("made by the test")
        recorded = record.enqueue("made by the job")

        assert run_pending() == 2

        assert count_rows.get_result(counted.id).return_value == 1
        assert record.get_result(recorded.id).status == TaskResultStatus.SUCCESSFUL
        assert Execution.objects.filter(label="made by the job").count() == 1
        assert Job.objects.filter(status=JobStatus.SUCCESSFUL).count() == 2

    def test_jobs_enqueued_by_jobs_run_too(self):
        countdown.enqueue(3)
        assert run_pending() == 4
        assert sorted(Execution.objects.values_list("label", flat=True)) == [
            "countdown-0", "countdown-1", "countdown-2", "countdown-3"]
        assert run_pending() == 0

    def test_a_job_that_keeps_enqueueing_itself_is_stopped(self):
        forever.enqueue()
        with pytest.raises(TooManyJobs, match="forever"):
            run_pending(limit=25)
        assert Job.objects.filter(status=JobStatus.SUCCESSFUL).count() == 25
        # The job it refused to run is left READY, not stuck RUNNING.
        assert list(Job.objects.exclude(status=JobStatus.SUCCESSFUL)
                    .values_list("status", flat=True)) == [JobStatus.READY]

    def test_queues_narrow_what_runs(self):
        in_default = add.enqueue(1, 2)
        in_other = add.using(queue_name="other").enqueue(3, 4)
        assert run_pending(queues=["other"]) == 1
        assert add.get_result(in_other.id).return_value == 7
        assert add.get_result(in_default.id).status == TaskResultStatus.READY
        with pytest.raises(ValueError, match="nope"):
            run_pending(queues=["nope"])

    def test_progress_and_context_work(self):
        result = with_context.enqueue("ctx")
        run_pending()
        result.refresh()
        assert result.return_value == 1
        assert (result.progress.current, result.progress.total) == (1, 2)

    def test_a_database_error_in_a_job_fails_it_and_the_test_goes_on(self):
        taken = Execution.objects.create(label="taken", pid=0)
        result = duplicate_row.enqueue(taken.pk)

        assert run_pending() == 1

        result.refresh()
        assert result.status == TaskResultStatus.FAILED
        assert IntegrityError.__name__ in result.errors[0].traceback
        assert JobError.objects.filter(job_id=result.id).count() == 1
        # The test's own transaction is still usable, and its data intact.
        assert Execution.objects.filter(label="taken").count() == 1


class WorkerInsideTransactionTestCase(TransactionTestCase):
    def test_worker_runs_committed_jobs_and_closes_its_connections(self):
        before = database_connections()
        Execution.objects.create(label="committed by the test", pid=0)
        with worker() as running:
            counted = count_rows.enqueue("committed by the test")
            other = add.using(queue_name="other").enqueue(20, 22)
            running.wait(counted, other)
            assert taskmill_threads()
        assert count_rows.get_result(counted.id).return_value == 1
        assert add.get_result(other.id).return_value == 42
        # Ran in this process, on threads of its own, all stopped and disconnected.
        assert Job.objects.get(id=counted.id).worker_id_list[0].split(":")[1] == str(os.getpid())
        assert taskmill_threads() == []
        assert database_connections() == before

    def test_worker_serves_only_the_queues_asked_for(self):
        with worker(queues=["other"]) as running:
            skipped = add.enqueue(1, 1)
            served = add.using(queue_name="other").enqueue(2, 2)
            running.wait(served)
            running.drain()
        assert add.get_result(skipped.id).status == TaskResultStatus.READY

    def test_a_job_that_raises_what_tasks_should_not_leaves_the_worker_running(self):
        with worker(shutdown_timeout=0.5) as running:
            poison = interrupts.using(max_attempts=1).enqueue()
            ok = add.enqueue(1, 2)
            running.wait(poison, ok, timeout=5)
        assert add.get_result(ok.id).return_value == 3
        failed = interrupts.get_result(poison.id)
        assert failed.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in failed.errors] == ["builtins.KeyboardInterrupt"]
        assert taskmill_threads() == []

    def test_a_worker_that_crashes_fails_the_test(self):
        """No job can crash a worker; a database it cannot work with does (no table)."""
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE taskmill_worker RENAME TO taskmill_worker_gone")
        try:
            with pytest.raises(WorkerCrashed, match="crashed"):  # noqa: SIM117
                with worker(shutdown_timeout=0.5) as running:
                    ok = add.enqueue(1, 2)
                    running.wait(ok, timeout=5)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE taskmill_worker_gone RENAME TO taskmill_worker")
        assert taskmill_threads() == []


# -- the pytest plugin, from a sample project's test module ---------------------------

SAMPLE = '''
import pytest

from tests.project.models import Execution
from tests.project.tasks import add, record


@pytest.mark.django_db
def test_run_pending_fixture(taskmill_run_pending):
    Execution.objects.create(label="uncommitted", pid=0)
    result = add.enqueue(2, 3)
    assert taskmill_run_pending() == 1
    result.refresh()
    assert result.return_value == 5


def test_run_pending_fixture_enables_the_database(taskmill_run_pending):
    record.enqueue("no marker needed")
    assert taskmill_run_pending() == 1
    assert Execution.objects.get().label == "no marker needed"


def test_worker_fixture(taskmill_worker):
    result = add.enqueue(40, 2)
    taskmill_worker.wait(result)
    assert result.return_value == 42


@pytest.mark.django_db(transaction=True)
def test_worker_fixture_with_marker(taskmill_worker):
    results = [record.enqueue(f"row-{i}") for i in range(5)]
    taskmill_worker.wait(*results)
    assert Execution.objects.count() == 5
'''


#: A test thread that reads and enqueues all the while the worker's threads write, on
#: Django's in-memory test database (a shared cache, whose table locks fail at once).
BUSY_SAMPLE = '''
from taskmill.models import Job
from tests.project.models import Execution
from tests.project.tasks import record


def test_the_test_thread_queries_while_the_worker_writes(taskmill_worker):
    results = []
    for i in range(150):
        results.append(record.enqueue(f"row-{i}"))
        Job.objects.filter(status="SUCCESSFUL").count()
        Execution.objects.count()
    taskmill_worker.wait(*results, timeout=60)
    assert Execution.objects.count() == 150
'''


def run_sample(pytester, tmp_path, monkeypatch, source: str):
    """``source`` as a test module of a sample project, run by pytest in a process of its
    own on an in-memory SQLite test database (other vendors: a database of its own)."""
    pytester.makepyfile(test_sample=source)
    pytester.makeini(textwrap.dedent("""
        [pytest]
        DJANGO_SETTINGS_MODULE = tests.project.settings
    """))
    suffix = "_plugin"
    env = {
        "PYTHONPATH": str(ROOT),
        # A test database of its own, so this run never touches the outer run's.
        "TASKMILL_PG_TEST_NAME": os.environ.get("TASKMILL_PG_TEST_NAME", "test_taskmill") + suffix,
        "TASKMILL_MYSQL_TEST_NAME": os.environ.get("TASKMILL_MYSQL_TEST_NAME",
                                                   "test_taskmill") + suffix,
        "TASKMILL_SQLITE_DIR": str(tmp_path),
        "TASKMILL_SQLITE_NAME": str(tmp_path / "plugin.sqlite3"),
        # In memory: both fixtures work in-process, where such a database is visible.
        "TASKMILL_SQLITE_TEST_NAME": ":memory:",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "--create-db", "-q", str(pytester.path / "test_sample.py"),
                        timeout=120)


def test_plugin_fixtures_work_in_a_sample_test_module(pytester, tmp_path, monkeypatch):
    """The entry-point plugin's fixtures, used by a project's tests under pytest-django."""
    run_sample(pytester, tmp_path, monkeypatch, SAMPLE).assert_outcomes(passed=4)


def test_a_test_thread_never_meets_a_table_lock_of_the_worker(pytester, tmp_path, monkeypatch):
    """On the in-memory test database, the test thread's queries wait for a worker thread's
    write as they would on a file, instead of failing with "database table is locked"."""
    run_sample(pytester, tmp_path, monkeypatch, BUSY_SAMPLE).assert_outcomes(passed=1)
