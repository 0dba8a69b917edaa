"""Leases: nothing delays a heartbeat, a worker that cannot renew its lease stops
claiming, and maintenance runs on one worker at a time, a time-boxed share at once."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.db import connection, connections

from taskmill.jobs import new_job
from taskmill.models import Job, JobError, JobStatus, Service
from taskmill.store import get_store, private_store
from taskmill.testing import worker
from tests.conftest import WorkerHandle, database_env, wait_until
from tests.jobrows import make_jobs
from tests.project.coordination_tasks import unique_job
from tests.project.models import Execution
from tests.project.tasks import add, slow

pytestmark = pytest.mark.django_db(transaction=True)


def test_maintenance_stuck_on_a_lock_does_not_delay_the_heartbeat(start_worker, settings):
    """A periodic enqueue that waits on a lock (here: another session holds the unique
    key it needs) holds up maintenance, never the lease: the long job of that worker is
    not recovered by the other worker, and runs once."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: a held write lock stops every heartbeat alike")
    lease = settings.TASKS["default"]["OPTIONS"]["LEASE_SECONDS"]
    blocker = private_store("default")
    try:
        with blocker.atomic():  # Holds the key the schedule's job needs, uncommitted.
            blocker.insert_unique(new_job(unique_job.using(unique_key="tick-key"), ["held"], {}))
            env = database_env()
            env["DJANGO_SETTINGS_MODULE"] = "tests.project.settings_schedule"
            env["TASKMILL_TEST_SCHEDULE"] = json.dumps({"blocked": {
                "task": "tests.project.coordination_tasks.unique_tick", "every": 1}})
            stuck = WorkerHandle(["--processes", "1"], env)
            try:
                result = slow.enqueue("kept-alive", lease * 2.5)
                start_worker("--processes", "1", "--queues", "other")  # recovers, claims none
                wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL)
                           .exists(), timeout=lease * 8, message="the long job to finish")
            finally:
                # The key let go first: the stuck worker's enqueue goes through, and it
                # stops at once instead of after its shutdown timeout.
                blocker.connection.rollback()
                stuck.signal(15)
                stuck.wait(timeout=30)
                stuck.kill()
    finally:
        blocker.connection.close()
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1, stuck.output
    assert not JobError.objects.filter(job_id=result.id).exists()
    assert Execution.objects.filter(label="kept-alive").count() == 1


def test_a_worker_that_cannot_renew_its_lease_stops_claiming_and_says_so(caplog, settings):
    caplog.set_level(logging.WARNING, logger="taskmill.worker")
    lease = settings.TASKS["default"]["OPTIONS"]["LEASE_SECONDS"]
    renamed = False
    try:
        with worker() as running:
            first = add.enqueue(1, 1)
            running.wait(first)
            with connection.cursor() as cursor:  # Renewals now fail, every one of them.
                cursor.execute("ALTER TABLE taskmill_worker RENAME TO taskmill_worker_away")
            renamed = True
            time.sleep(lease * 0.75)
            waiting = add.enqueue(2, 2)
            time.sleep(lease * 0.5)
            assert Job.objects.get(id=waiting.id).status == JobStatus.READY
            assert "claiming nothing until it is" in caplog.text
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE taskmill_worker_away RENAME TO taskmill_worker")
            renamed = False
            running.wait(waiting, timeout=lease * 3)
    finally:
        if renamed:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE taskmill_worker_away RENAME TO taskmill_worker")
    assert "lease renewed; claiming again" in caplog.text
    assert add.get_result(waiting.id).return_value == 4


def test_one_worker_at_a_time_runs_a_maintenance_service():
    stores = [get_store(connections["default"]), private_store("default")]
    try:
        assert stores[0].take_service("pruning", "w1", 30) is False  # first sight: registers it
        assert stores[0].take_service("pruning", "w1", 30) is True
        assert stores[1].take_service("pruning", "w2", 30) is False
        assert stores[0].take_service("pruning", "w1", 30) is True  # the holder keeps it
        assert stores[0].take_service("pruning", "w1", -1) is True  # ...until it lets it lapse
        assert stores[1].take_service("pruning", "w2", 30) is True
        assert Service.objects.get(name="pruning").holder == "w2"
    finally:
        stores[1].connection.close()


def test_a_prune_stops_at_its_deadline_and_the_next_goes_on():
    make_jobs(1200, JobStatus.SUCCESSFUL, ago=3600)
    store = get_store("default")
    cutoff = store.database_now()
    assert store.prune(cutoff, chunk=500, deadline=time.monotonic()) == 500
    assert Job.objects.count() == 700
    assert store.prune(cutoff, chunk=500) == 700
    assert Job.objects.count() == 0
