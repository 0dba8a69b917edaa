"""concurrency_limit / concurrency_key: never more than N running at once, anywhere."""

import pytest

from taskmill.models import Job, JobStatus
from tests.conftest import wait_until
from tests.project.coordination_tasks import limited, paired
from tests.project.models import Execution
from tests.project.tasks import record


def max_overlap(rows) -> int:
    """The most executions running at the same instant."""
    events = sorted([(r.started, 1) for r in rows] + [(r.finished, -1) for r in rows],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def all_finished() -> bool:
    return not Job.objects.filter(status__in=[JobStatus.READY, JobStatus.RUNNING]).exists()


@pytest.mark.django_db(transaction=True)
def test_limit_one_never_overlaps_across_workers_and_waiting_burns_no_attempt(start_worker):
    for i in range(8):
        limited.enqueue(f"limited-{i}", 0.15)
    for i in range(10):
        record.enqueue(f"free-{i}")
    # Two supervisors (two "hosts") with two processes of two threads each.
    start_worker("--processes", "2", "--threads", "2")
    start_worker("--processes", "2", "--threads", "2")
    wait_until(all_finished, timeout=60, message="every job finished")

    rows = list(Execution.objects.filter(label__startswith="limited-"))
    assert sorted(r.label for r in rows) == [f"limited-{i}" for i in range(8)]
    assert max_overlap(rows) == 1
    limited_jobs = Job.objects.filter(task_path=limited.module_path)
    assert set(limited_jobs.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    assert set(limited_jobs.values_list("attempts", flat=True)) == {1}  # Waiting is free.
    # Jobs without a limit were not stuck behind the waiting ones.
    last_limited_start = max(r.started for r in rows)
    free = Execution.objects.filter(label__startswith="free-")
    assert free.count() == 10
    assert max(r.finished for r in free) < last_limited_start


@pytest.mark.django_db(transaction=True)
def test_shared_key_with_limit_two_runs_at_most_two(start_worker):
    for i in range(8):
        paired.enqueue(f"paired-{i}", 0.2)
    start_worker("--processes", "2", "--threads", "2")
    start_worker("--processes", "1", "--threads", "3")
    wait_until(all_finished, timeout=60, message="every job finished")
    rows = list(Execution.objects.filter(label__startswith="paired-"))
    assert len(rows) == 8
    assert max_overlap(rows) == 2  # Two at a time: the limit is used, never exceeded.
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_racing_claims_keep_the_limit_and_give_the_rest_back_unburned():
    import threading

    from django.db import connection

    from taskmill.store import get_store

    ids = [paired.enqueue(f"race-{i}", 0).id for i in range(20)]
    barrier = threading.Barrier(8)
    kept: list[str] = []

    def claim(n: int) -> None:
        try:
            store = get_store(connection)
            barrier.wait()
            for _ in range(3):
                kept.extend(str(j.id) for j in store.claim(["default"], 5, f"w{n}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running = Job.objects.filter(status=JobStatus.RUNNING)
    assert len(kept) == running.count() == 2  # concurrency_limit=2 for key "pair".
    assert set(kept) == {str(i) for i in running.values_list("id", flat=True)}
    waiting = Job.objects.filter(status=JobStatus.READY)
    assert waiting.count() == 18 and set(waiting.values_list("attempts", flat=True)) == {0}
    assert set(waiting.values_list("worker_ids", flat=True)) == {""}
    assert not waiting.exclude(started_at=None).exists()
    assert len(ids) == 20
