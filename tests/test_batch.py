"""Batches: children in item order, progress visible, ``then`` exactly once."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from taskmill import enqueue_batch, get_batch
from taskmill.compat import InvalidTask
from taskmill.exceptions import InvalidTaskArguments
from taskmill.models import Batch, Job, JobError, JobStatus
from taskmill.store import Outcome, get_store
from tests import parallel_helpers as helpers
from tests.project.models import Execution

THEN_PATH = helpers.batch_done.module_path


def then_jobs(batch_id: str) -> list[Job]:
    return list(Job.objects.filter(task_path=THEN_PATH, args=[batch_id]))


@pytest.mark.django_db
def test_children_are_stored_in_item_order_with_progress_counts():
    batch = enqueue_batch(helpers.batch_child, [10, 11, 12, 13], then=helpers.batch_done)
    assert isinstance(batch.id, str)
    status = get_batch(batch.id)
    assert (status.total, status.waiting, status.running, status.succeeded, status.failed) == \
        (4, 4, 0, 0, 0)
    assert status.result_ids == batch.result_ids
    assert [Job.objects.get(id=rid).args for rid in status.result_ids] == [[10], [11], [12], [13]]
    assert helpers.batch_child.get_result(status.result_ids[2]).args == [12]
    store = get_store("default")
    store.claim(["default"], 1, "host:1:progress")
    status = get_batch(batch.id)
    assert (status.running, status.waiting, status.finished) == (1, 3, False)


@pytest.mark.django_db
def test_a_rolled_back_transaction_leaves_no_batch_behind():
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_batch(helpers.batch_child, range(5), then=helpers.batch_done)
        raise RuntimeError("roll back")
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


@pytest.mark.django_db
def test_bad_input_is_refused_before_anything_is_stored():
    with pytest.raises(InvalidTaskArguments, match=r"args\[0\]"):
        enqueue_batch(helpers.batch_child, [1, object()])
    with pytest.raises(InvalidTask, match="task for then"):
        enqueue_batch(helpers.batch_child, [1], then=helpers.square)
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


@pytest.mark.django_db
def test_an_empty_batch_runs_then_at_once():
    batch = enqueue_batch(helpers.batch_child, [], then=helpers.batch_done)
    assert batch.finished and batch.total == 0
    assert [job.id for job in then_jobs(batch.id)] == [Job.objects.get(
        id=batch.then_result_id).id]


@pytest.mark.django_db(transaction=True)
def test_then_runs_once_after_every_child_failed_ones_included(start_worker):
    batch = enqueue_batch(helpers.batch_child_fails_on_odd, range(10), then=helpers.batch_done)
    worker = start_worker("--burst", "--processes", "2", "--threads", "2")
    assert worker.wait(timeout=60) == 0, worker.output
    status = get_batch(batch.id)
    assert (status.succeeded, status.failed, status.running, status.waiting) == (5, 5, 0, 0)
    assert status.finished and status.fraction == 1.0
    assert len(then_jobs(batch.id)) == 1
    assert str(then_jobs(batch.id)[0].id) == status.then_result_id
    assert Execution.objects.filter(label=f"then-{batch.id}").count() == 1
    then = helpers.batch_done.get_result(status.then_result_id)
    assert then.status == JobStatus.SUCCESSFUL and then.return_value == batch.id


@pytest.mark.django_db(transaction=True)
def test_then_is_enqueued_exactly_once_when_the_last_two_children_finish_at_once():
    """Two hosts record the last two children in the same instant, 15 times over."""
    rounds = 15
    batches = [enqueue_batch(helpers.batch_child, [1, 2], then=helpers.batch_done)
               for _ in range(rounds)]
    store = get_store("default")
    claimed = {}
    for batch in batches:
        for host in ("host-a:1:x", "host-b:2:y"):
            (job,) = store.claim(["default"], 1, host)
            assert str(job.batch_id) == batch.id
            claimed.setdefault(batch.id, []).append((host, job))
    errors: list[BaseException] = []

    def finish(host: str, job, barrier: threading.Barrier) -> None:
        try:
            own = get_store(connections["default"])  # This thread's own connection.
            barrier.wait(timeout=10)
            own.complete([Outcome(job=job, finished_at=timezone.now(), succeeded=True)], host)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    for batch in batches:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=finish, args=(host, job, barrier))
                   for host, job in claimed[batch.id]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    for batch in batches:
        status = get_batch(batch.id)
        assert status.succeeded == 2 and status.finished
        assert len(then_jobs(batch.id)) == 1, f"batch {batch.id}: then enqueued " \
            f"{len(then_jobs(batch.id))} times"


@pytest.mark.django_db
def test_a_lost_child_that_ends_failed_still_completes_the_batch():
    batch = enqueue_batch(helpers.batch_child_slow, [5.0], then=helpers.batch_done)
    store = get_store("default")
    (job,) = store.claim(["default"], 1, "gone-host:99:dead")
    # That worker never registered a heartbeat: recovery treats it as dead.
    assert store.recover_orphans() == 1
    status = get_batch(batch.id)
    assert (status.failed, status.finished) == (1, True)
    assert JobError.objects.get(job_id=job.id).exception_class_path.endswith("WorkerLost")
    assert len(then_jobs(batch.id)) == 1


@pytest.mark.django_db(transaction=True)
def test_purging_the_waiting_children_still_runs_then_once():
    import taskmill

    batch = enqueue_batch(helpers.batch_child, [1, 2, 3], then=helpers.batch_done)
    store = get_store("default")
    (running,) = store.claim(["default"], 1, "host:1:purge")
    assert taskmill.purge(task=helpers.batch_child) == 2  # the running child goes on
    assert then_jobs(batch.id) == []
    done = Outcome(job=running, finished_at=timezone.now(), succeeded=True, return_json="null")
    store.complete([done], "host:1:purge")
    assert len(then_jobs(batch.id)) == 1
    assert get_batch(batch.id).finished


@pytest.mark.django_db(transaction=True)
def test_purging_every_child_of_a_batch_runs_then_once():
    import taskmill

    batch = enqueue_batch(helpers.batch_child, [1, 2], then=helpers.batch_done)
    assert taskmill.purge(task=helpers.batch_child) == 2
    assert len(then_jobs(batch.id)) == 1
    assert taskmill.purge(task=helpers.batch_child) == 0
    assert len(then_jobs(batch.id)) == 1


@pytest.mark.django_db
def test_then_keeps_the_options_it_was_given_with_using():
    then = helpers.batch_done.using(queue_name="other", priority=7, max_attempts=5, timeout=9.5)
    batch = enqueue_batch(helpers.batch_child, [1], then=then)
    store = get_store("default")
    (child,) = store.claim(["default"], 1, "host:1:then")
    store.complete([Outcome(job=child, finished_at=timezone.now(), succeeded=True)],
                   "host:1:then")
    (job,) = then_jobs(batch.id)
    assert (job.queue_name, job.priority, job.max_attempts, job.timeout) == ("other", 7, 5, 9.5)
    assert str(job.id) == get_batch(batch.id).then_result_id


@pytest.mark.django_db(transaction=True)
def test_a_last_child_cancelled_while_its_worker_held_it_still_finishes_the_batch():
    import taskmill

    batch = enqueue_batch(helpers.batch_child, [1], then=helpers.batch_done)
    store = get_store("default")
    store.register_worker("host:1:held", "host", 1, ["default"], 1)
    held = store.claim(["default"], 1, "host:1:held")
    taskmill.cancel(batch.result_ids[0])  # RUNNING: the cancel is only requested...
    store.hand_back(held, "host:1:held", started=False)  # ...and ends it when handed back.
    assert Job.objects.get(id=batch.result_ids[0]).status == JobStatus.FAILED
    assert get_batch(batch.id).finished
    assert len(then_jobs(batch.id)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_child_of_a_finished_batch_is_not_retried():
    import taskmill
    from taskmill.api import InvalidJobState

    batch = enqueue_batch(helpers.batch_child, [1], then=helpers.batch_done)
    taskmill.cancel(batch.result_ids[0])  # FAILED, and the batch finished: then is queued
    with pytest.raises(InvalidJobState, match="which has finished"):
        taskmill.retry(batch.result_ids[0])
    assert Job.objects.get(id=batch.result_ids[0]).status == JobStatus.FAILED
    assert len(then_jobs(batch.id)) == 1
