"""Worker processes: exactly-once under concurrency, crashes, signals, recycling, leases."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

import taskmill
from taskmill.compat import TaskResultStatus
from taskmill.models import Job, JobStatus, Worker
from tests.conftest import ROOT, database_env, wait_until
from tests.project.models import Execution
from tests.project.tasks import record, slow

pytestmark = pytest.mark.django_db(transaction=True)


def started(label: str) -> Execution:
    return wait_until(lambda: Execution.objects.filter(label=label).first(),
                      message=f"{label} to start")


def test_every_job_runs_exactly_once_with_two_workers_of_two_processes(start_worker):
    taskmill.enqueue_many(record, [(f"job-{i}",) for i in range(400)])
    # Two supervisors stand for two hosts sharing one database.
    workers = [start_worker("--burst", "--processes", "2") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=90) == 0, worker.output
    assert Execution.objects.count() == 400
    assert Execution.objects.values("label").distinct().count() == 400
    assert Job.objects.filter(status=JobStatus.SUCCESSFUL, attempts=1).count() == 400
    assert Execution.objects.values("pid").distinct().count() >= 2


def test_sigkill_of_a_child_mid_job_is_recovered_and_finished(start_worker):
    result = slow.enqueue("victim", 1.0)
    worker = start_worker("--processes", "1")
    victim = started("victim")
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               message="the job to be re-run")
    # The supervisor saw its child die and recovered the job at once, not after the lease.
    assert time.monotonic() - killed_at < 10
    job = slow.get_result(result.id)
    assert job.attempts == 2
    assert [e.exception_class_path for e in job.errors] == ["taskmill.exceptions.WorkerLost"]
    runs = list(Execution.objects.filter(label="victim").order_by("id"))
    assert len(runs) == 2 and runs[0].finished is None and runs[1].finished is not None
    assert runs[1].pid != victim.pid
    assert worker.process.poll() is None  # the supervisor itself carries on


def test_a_dead_host_jobs_are_recovered_by_another_worker_after_the_lease(start_worker):
    result = slow.enqueue("orphan", 0.5)
    first = start_worker("--processes", "1")
    started("orphan")
    first.kill()  # kill -9 of the whole worker: supervisor and child, like a lost container
    first.wait()
    second = start_worker("--processes", "1")
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="recovery after the lease")
    assert slow.get_result(result.id).attempts == 2
    assert Execution.objects.filter(label="orphan").count() == 2
    assert second.process.poll() is None


def test_a_long_job_of_a_live_worker_is_never_rescued(start_worker, settings):
    lease = settings.TASKS["default"]["OPTIONS"]["LEASE_SECONDS"]
    result = slow.enqueue("long", lease * 1.5)
    others = [start_worker("--processes", "1") for _ in range(2)]
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=lease * 6, message="the long job to finish")
    assert slow.get_result(result.id).attempts == 1
    assert Execution.objects.filter(label="long").count() == 1
    assert all(w.process.poll() is None for w in others)


@pytest.mark.parametrize("how", ["SIGTERM to the supervisor", "Ctrl-C to the process group"])
def test_a_stop_signal_lets_the_running_job_finish_and_claims_nothing_more(start_worker, how):
    running = slow.enqueue("graceful", 1.0)
    worker = start_worker("--processes", "1")
    started("graceful")
    waiting = [record.enqueue(f"later-{i}") for i in range(3)]
    if how.startswith("SIGTERM"):
        worker.signal(signal.SIGTERM)
    else:  # A terminal sends SIGINT to the supervisor and its children at once.
        os.killpg(worker.process.pid, signal.SIGINT)
    assert worker.wait(timeout=30) == 0, worker.output
    assert slow.get_result(running.id).status == TaskResultStatus.SUCCESSFUL
    for result in waiting:
        job = Job.objects.get(id=result.id)
        assert (job.status, job.attempts, job.lease_owner) == (JobStatus.READY, 0, None)
    assert Worker.objects.count() == 0


#: A worker process whose main thread is inside ``wake``'s lock, as it is for a moment
#: each time its idle wait ends, when SIGTERM is handled: Python runs the handler right
#: there, on that thread, between two bytecodes.
SIGNAL_UNDER_THE_WAKE_LOCK = """
import os, signal, django
django.setup()
from taskmill.worker.config import WorkerConfig
from taskmill.worker.process import WorkerProcess

worker = WorkerProcess(WorkerConfig(database="default", queues=["default"]), "signals:1:w")
worker.install_signal_handlers()
with worker.wake._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100_000):
        pass
print("stopping" if worker.stopping.wait(10) else "not stopping", flush=True)
"""


def test_a_stop_signal_handled_while_the_worker_holds_its_wake_lock_still_stops_it():
    """The handler used to set the worker's events itself, and so waited forever for the
    lock its own thread held: the worker never stopped (a CI run caught one, after Ctrl-C
    to its process group). Now a thread of the worker's acts on the signal."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_UNDER_THE_WAKE_LOCK],
                          env=database_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "stopping"), done.stderr
    assert "SIGTERM received, finishing running jobs" in done.stderr


def test_sigterm_hands_back_a_job_that_outlives_the_shutdown_timeout(start_worker):
    result = slow.enqueue("handed-back", 1.5)
    worker = start_worker("--processes", "1", "--shutdown-timeout", "0.3")
    started("handed-back")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    job = Job.objects.get(id=result.id)
    assert (job.status, job.lease_owner, job.attempts) == (JobStatus.READY, None, 1)
    start_worker("--burst", "--processes", "1").wait(timeout=30)
    assert slow.get_result(result.id).status == TaskResultStatus.SUCCESSFUL
    assert slow.get_result(result.id).attempts == 2


def test_max_tasks_per_child_recycles_processes(start_worker):
    taskmill.enqueue_many(record, [(f"r-{i}",) for i in range(12)])
    worker = start_worker("--burst", "--processes", "1", "--max-tasks-per-child", "4")
    assert worker.wait(timeout=60) == 0, worker.output
    assert Execution.objects.count() == 12
    assert Execution.objects.values("pid").distinct().count() >= 3


def test_max_memory_per_child_recycles_processes(start_worker):
    taskmill.enqueue_many(record, [(f"m-{i}",) for i in range(3)])
    worker = start_worker("--burst", "--processes", "1", "--max-memory-per-child", "1")
    assert worker.wait(timeout=60) == 0, worker.output
    assert Execution.objects.count() == 3
    assert Execution.objects.values("pid").distinct().count() >= 2


def test_worker_ids_are_unique_per_process_start(start_worker):
    worker = start_worker("--processes", "2")
    ids = wait_until(lambda: list(Worker.objects.values_list("id", flat=True))
                     if Worker.objects.count() == 2 else None, message="two workers")
    assert len(set(ids)) == 2
    children = worker.children()
    os.kill(children[0], signal.SIGKILL)

    def replaced() -> set[str] | None:
        # One read: a count then a read of the ids could see the dead worker's row, then
        # not (the survivor's recovery look removed it before its replacement wrote its own).
        now = set(Worker.objects.values_list("id", flat=True))
        return now if len(now) == 2 and now != set(ids) else None

    now = wait_until(replaced, message="a replacement worker")
    assert len(now | set(ids)) == 3


@pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') != 'postgresql'")
def test_a_dropped_idle_connection_is_replaced(start_worker):
    start_worker("--processes", "1")
    first = record.enqueue("before")
    wait_until(lambda: Job.objects.filter(id=first.id, status=JobStatus.SUCCESSFUL).exists())
    with connection.cursor() as cursor:  # what a proxy or firewall does to idle connections
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    second = record.enqueue("after")
    wait_until(lambda: Job.objects.filter(id=second.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="the job after the connections were cut")


STOP_DURING_FORK = """
import os, signal, sys, time, django
django.setup()
from taskmill.worker.config import WorkerConfig
from taskmill.worker.supervisor import Supervisor

class StoppedDuringFork(Supervisor):
    def _spawn(self, worker_id, alive_at):
        process = super()._spawn(worker_id, alive_at)
        if len(self.children) == 1:  # the second child: SIGTERM lands as it is forked
            os.kill(os.getpid(), signal.SIGTERM)
        return process

exits = []
class Recording(StoppedDuringFork):
    def _on_child_exit(self, child):
        super()._on_child_exit(child)
        exits.append(child.process.exitcode)

started = time.monotonic()
Recording(WorkerConfig(database="default", queues=["default"], shutdown_timeout=10,
                       lease_seconds=3), processes=2).run()
print("EXITS", sorted(exits), round(time.monotonic() - started, 1))
"""


def test_a_child_forked_as_sigterm_arrives_is_stopped_too():
    done = subprocess.run([sys.executable, "-c", STOP_DURING_FORK], cwd=ROOT,
                          env=database_env(), capture_output=True, text=True, timeout=60)
    line = [x for x in done.stdout.splitlines() if x.startswith("EXITS")][-1]
    codes, seconds = line.removeprefix("EXITS ").rsplit(" ", 1)
    # Both children stopped when told, none was left to be killed at the deadline.
    assert codes == "[0, 0]", done.stdout + done.stderr
    assert float(seconds) < 8, done.stdout + done.stderr


def test_burst_runs_the_retries_due_shortly_and_says_what_it_left(start_worker):
    from datetime import timedelta

    from django.utils import timezone

    from tests.project.tasks import flaky

    retried = flaky.using(retry_backoff=0.5).enqueue("burst-retry", 1)  # fails once
    later = record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("tomorrow")
    burst = start_worker("--burst", "--processes", "1")
    assert burst.wait(timeout=60) == 0, burst.output
    job = Job.objects.get(id=retried.id)
    assert (job.status, job.attempts) == (JobStatus.SUCCESSFUL, 2), burst.output
    assert Job.objects.get(id=later.id).status == JobStatus.READY
    assert re.search(r"burst done; 1 job\(s\) left waiting, the next due in 3[56]\d\ds",
                     burst.output), burst.output
