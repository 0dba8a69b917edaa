"""Every state change names the state and lease it expects (the store, on a real database)."""

import pytest
from django.utils import timezone

from taskmill.models import Job, JobError, JobStatus
from taskmill.store import Outcome, get_store
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_job():
    store = get_store("default")
    timezone.now()
    result = add.enqueue(1, 2)
    store.register_worker("host:1:old", "host", 1, ["default"], 1)
    (claimed,) = store.claim(["default"], 10, "host:1:old")
    # The old worker goes silent; it is declared dead and its job recovered...
    assert store.expire_workers(lease_seconds=-1) == ["host:1:old"]
    assert store.recover_orphans() == 1
    # ...and claimed again by a new worker.
    store.register_worker("host:2:new", "host", 2, ["default"], 1)
    (reclaimed,) = store.claim(["default"], 10, "host:2:new")
    assert reclaimed.id == claimed.id and reclaimed.attempts == 2
    late = Outcome(job=claimed, finished_at=timezone.now(), succeeded=True, return_json="999")
    store.complete([late], "host:1:old")
    assert late.recorded is False
    job = Job.objects.get(id=result.id)
    assert (job.status, job.lease_owner, job.return_value) == (JobStatus.RUNNING, "host:2:new", None)
    current = Outcome(job=reclaimed, finished_at=timezone.now(), succeeded=True, return_json="3")
    store.complete([current], "host:2:new")
    assert current.recorded is True
    assert add.get_result(result.id).return_value == 3
    assert list(JobError.objects.values_list("exception_class_path", flat=True)) == [
        "taskmill.exceptions.WorkerLost"]


def test_a_late_heartbeat_cannot_resurrect_recovered_jobs():
    store = get_store("default")
    timezone.now()
    add.enqueue(1, 1)
    store.register_worker("host:3:w", "host", 3, ["default"], 1)
    store.claim(["default"], 10, "host:3:w")
    store.expire_workers(lease_seconds=-1)
    assert store.heartbeat("host:3:w") is False  # told it was declared dead
    store.recover_orphans()
    assert Job.objects.get().status == JobStatus.READY


def test_unstarted_jobs_handed_back_get_their_attempt_refunded():
    store = get_store("default")
    timezone.now()
    add.enqueue(1, 1)
    store.register_worker("host:4:w", "host", 4, ["default"], 1)
    (job,) = store.claim(["default"], 10, "host:4:w")
    assert store.hand_back([job], "host:4:w", started=False) == 1
    row = Job.objects.get()
    assert (row.status, row.attempts, row.worker_ids, row.started_at) == (
        JobStatus.READY, 0, "", None)


def test_recovery_fails_a_job_that_used_its_last_attempt():
    store = get_store("default")
    timezone.now()
    add.using(max_attempts=1).enqueue(1, 1)
    store.register_worker("host:5:w", "host", 5, ["default"], 1)
    store.claim(["default"], 10, "host:5:w")
    store.unregister_worker("host:5:w")
    assert store.recover_orphans(worker_id="host:5:w") == 1
    job = Job.objects.get()
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert job.errors.get().exception_class_path == "taskmill.exceptions.WorkerLost"


def test_claims_never_overlap_between_workers():
    store = get_store("default")
    from taskmill import enqueue_many

    enqueue_many(add, [(i, i) for i in range(30)])
    timezone.now()  # after the enqueue: every job is due
    first = store.claim(["default"], 20, "host:a:1")
    second = store.claim(["default"], 20, "host:b:2")
    assert len(first) == 20 and len(second) == 10
    assert not {j.id for j in first} & {j.id for j in second}


def test_a_round_records_what_it_holds_and_claims_the_next_in_one_go():
    store = get_store("default")
    first, second, third = add.enqueue(1, 1), add.enqueue(2, 2), add.enqueue(3, 3)
    store.register_worker("host:5:w", "host", 5, ["default"], 1)
    mine, lost = store.claim(["default"], 2, "host:5:w")
    Job.objects.filter(id=lost.id).update(lease_owner="host:6:other")  # recovered elsewhere
    done = [Outcome(job=job, finished_at=timezone.now(), succeeded=True, return_json="7")
            for job in (mine, lost)]
    (claimed,) = store.complete_and_claim(done, ["default"], 5, "host:5:w")
    assert [o.recorded for o in done] == [True, False]
    rows = {row.id: (row.status, row.lease_owner) for row in Job.objects.all()}
    assert rows == {
        mine.id: (JobStatus.SUCCESSFUL, None),
        lost.id: (JobStatus.RUNNING, "host:6:other"),
        claimed.id: (JobStatus.RUNNING, "host:5:w"),
    }
    assert {str(j.id) for j in (mine, lost, claimed)} == {str(r.id) for r in (first, second, third)}
