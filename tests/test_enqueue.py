"""Enqueueing: validation at the point of the mistake, transactions, bulk, results."""

import pytest
from django.db import connection, transaction

import taskmill
from taskmill.compat import InvalidTask, TaskResultDoesNotExist, TaskResultStatus
from taskmill.exceptions import InvalidTaskArguments
from taskmill.models import Job, JobStatus
from tests.project.tasks import add, noop, record

pytestmark = pytest.mark.django_db(transaction=True)


def test_non_json_arguments_are_refused_and_nothing_is_stored():
    import datetime

    with pytest.raises(InvalidTaskArguments, match=r"args\[0\] \(datetime\) is not JSON"):
        add.enqueue(datetime.datetime.now(), 1)
    with pytest.raises(InvalidTaskArguments, match=r"kwargs\['b'\]\['x'\] \(set\)"):
        add.enqueue(a=1, b={"x": {1, 2}})
    with pytest.raises(InvalidTaskArguments, match="nan"):
        add.enqueue(float("nan"), 1)
    with pytest.raises(InvalidTaskArguments, match="non-string key"):
        add.enqueue({1: "a"}, 2)
    assert Job.objects.count() == 0


def test_a_bad_item_in_enqueue_many_stores_none_of_the_batch():
    with pytest.raises(InvalidTaskArguments):
        taskmill.enqueue_many(add, [(1, 2), (object(), 3)])
    with pytest.raises(InvalidTaskArguments, match="each item must be a tuple"):
        taskmill.enqueue_many(add, [(1, 2), 5])
    assert Job.objects.count() == 0


def test_rolled_back_transaction_leaves_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 2)
        taskmill.enqueue_many(add, [(1, 1), (2, 2)])
        assert Job.objects.count() == 3  # visible inside the transaction...
        raise RuntimeError("roll back")
    assert Job.objects.count() == 0  # ...and gone with it


def test_enqueue_many_returns_results_in_order_in_one_round_trip():
    statements = []

    def count(execute, sql, params, many, context):
        if "taskmill_job" in sql:  # not the session set-up of a fresh connection
            statements.append(sql)
        return execute(sql, params, many, context)

    items = [(i, i) for i in range(500)] + [{"a": 1, "b": 2}]
    with connection.execute_wrapper(count):
        results = taskmill.enqueue_many(add, items)
    # One executemany (SQLite, MySQL); PostgreSQL's COPY bypasses execute wrappers.
    assert len(statements) == (0 if connection.vendor == "postgresql" else 1), statements
    assert [r.args for r in results[:3]] == [[0, 0], [1, 1], [2, 2]]
    assert results[-1].kwargs == {"a": 1, "b": 2}
    stored = {str(j.id): (j.args, j.kwargs) for j in Job.objects.all()}
    assert [stored[r.id] for r in results] == [(r.args, r.kwargs) for r in results]
    assert all(r.status == TaskResultStatus.READY for r in results)
    # Results after the first are filled slot by slot: each is a complete, separate result.
    last = results[-1]
    assert (last.task, last.backend, last.enqueued_at) == (add, "default", results[0].enqueued_at)
    assert last.errors == [] and last.errors is not results[0].errors
    assert last.progress is None and last.attempts == 0
    last.refresh()
    assert last.status == TaskResultStatus.READY and last.kwargs == {"a": 1, "b": 2}


def test_get_result_from_the_job_table():
    result = record.using(priority=7, queue_name="other").enqueue("x")
    fetched = record.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert fetched.args == ["x"]
    assert fetched.task.priority == 7 and fetched.task.queue_name == "other"
    assert fetched.attempts == 0 and fetched.progress is None
    with pytest.raises(TaskResultDoesNotExist):
        record.get_result("not-a-uuid")
    with pytest.raises(TaskResultDoesNotExist):
        record.get_result("01a21041-2afb-7124-8f76-34dc75c9d701")


def test_extra_options_are_validated_when_the_task_is_defined():
    with pytest.raises(InvalidTask, match="max_attempts must be at least 1"):
        noop.using(max_attempts=0)
    with pytest.raises(InvalidTask, match="timeout must be greater than 0"):
        noop.using(timeout=0)
    with pytest.raises(InvalidTask, match="retry_backoff must be a number"):
        noop.using(retry_backoff="fast")
    with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid"):
        noop.using(queue_name="nowhere")
    task = noop.using(max_attempts=5, timeout=2.5, priority=3)
    assert (task.max_attempts, task.timeout, task.priority) == (5, 2.5, 3)
    job = Job.objects.get(id=task.enqueue().id)
    assert (job.max_attempts, job.timeout, job.priority) == (5, 2.5, 3)


def test_backend_options_fill_in_what_the_task_leaves_unset():
    job = Job.objects.get(id=noop.enqueue().id)
    assert job.max_attempts == 3  # TASKS OPTIONS MAX_ATTEMPTS in the test settings
    assert job.retry_backoff == pytest.approx(0.05)
    assert job.run_after == job.enqueued_at


def test_job_ids_sort_in_enqueue_order():
    results = [noop.enqueue() for _ in range(50)]
    ids = [r.id for r in results]
    assert ids == sorted(ids)


def test_aenqueue_and_aget_result_from_async_code():
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    async def enqueue_then_read():
        result = await add.aenqueue(3, 4)
        fetched = await add.aget_result(result.id)
        # What Django does when an async request finishes: close that thread's connections.
        await sync_to_async(connections.close_all)()
        return result, fetched

    # In a thread of its own: a session fixture (the browser) may run a loop in this one.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        result, fetched = pool.submit(asyncio.run, enqueue_then_read()).result()
    assert fetched.id == result.id and fetched.args == [3, 4]
    assert Job.objects.filter(id=result.id, status=JobStatus.READY).exists()
