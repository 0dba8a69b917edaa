"""unique / unique_key: at most one READY or RUNNING job per key, enforced by the database."""

import threading

import pytest
from django.db import connection, transaction

from taskmill.jobs import default_unique_key
from taskmill.models import Job, JobStatus
from taskmill.testing import run_pending
from tests.project.coordination_tasks import unique_job
from tests.project.models import Execution

RACERS = 24


@pytest.mark.django_db(transaction=True)
def test_racing_enqueues_of_one_unique_job_make_one_job():
    barrier = threading.Barrier(RACERS)
    ids: list[str] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            barrier.wait()
            ids.append(unique_job.enqueue("race").id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(ids) == RACERS
    assert Job.objects.count() == 1
    assert set(ids) == {str(Job.objects.get().id)}  # Every caller got the one job's result.


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_returns_the_existing_job_and_a_finished_one_frees_the_key():
    first = unique_job.enqueue("a")
    again = unique_job.enqueue("a")
    other = unique_job.enqueue("b")
    assert again.id == first.id and other.id != first.id
    assert run_pending() == 2
    assert unique_job.get_result(first.id).status == "SUCCESSFUL"
    later = unique_job.enqueue("a")  # The first finished: the key is free again.
    assert later.id != first.id
    assert Job.objects.filter(status=JobStatus.READY).count() == 1


@pytest.mark.django_db(transaction=True)
def test_unique_enqueue_inside_atomic_commits_or_rolls_back_with_it():
    existing = unique_job.enqueue("tx")
    with transaction.atomic():
        duplicate = unique_job.enqueue("tx")
        fresh = unique_job.enqueue("tx-new")
        Execution.objects.create(label="same transaction", pid=0)  # Still usable.
    assert duplicate.id == existing.id
    assert Job.objects.filter(id=fresh.id).exists()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = unique_job.enqueue("rolled-back")
        raise RuntimeError("roll back")
    assert not Job.objects.filter(id=rolled_back.id).exists()
    assert unique_job.enqueue("rolled-back").id != rolled_back.id


@pytest.mark.django_db(transaction=True)
def test_explicit_unique_key_is_shared_across_arguments():
    keyed = unique_job.using(unique_key="nightly-sync")
    first = keyed.enqueue("x")
    assert keyed.enqueue("y").id == first.id
    assert Job.objects.count() == 1


def test_default_key_of_long_arguments_is_a_hash_that_tells_them_apart():
    long_a = ["x" * 300 + "a"]
    long_b = ["x" * 300 + "b"]
    key_a = default_unique_key(unique_job, long_a, {})
    key_b = default_unique_key(unique_job, long_b, {})
    assert key_a != key_b
    assert len(key_a) <= 255 and "sha256" in key_a
    assert default_unique_key(unique_job, ["short"], {}).endswith(':[["short"],{}]')
