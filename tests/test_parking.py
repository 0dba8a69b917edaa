"""Parked jobs (taskmill/store/parking.py): the due jobs of a full concurrency key, a
paused task or a full rate key are set aside, so a claim no longer steps over them;
whatever frees a slot, lifts the pause or brings the rate key's room back puts the
best ones back in line. MySQL too (migrations 0013, 0015)."""

from __future__ import annotations

import datetime as dt
import json
import os  # noqa: F401  (the skipif conditions read it)
import time

import pytest
from django.db import connection
from django.utils import timezone

from taskmill.models import Job, JobStatus, RateKey, RateSlice
from taskmill.services.recovery import recover_dead_workers
from taskmill.store import Outcome, get_store
from taskmill.store.rates import SLICES
from tests.jobrows import make_jobs
from tests.project.coordination_tasks import limited
from tests.project.flow_tasks import rated
from tests.project.tasks import record
from tests.test_claim_plans import (
    FEW_PAGES,
    claim_sql,
    index_reads,
    pages_touched,
    plan_lines,
    wait_out_transactions_older_than_now,
)

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "park:1:w"
#: Jobs of the full key: enough that stepping over them shows in a claim's pages.
BACKLOG = 3000
# Jobs made here are enqueued a minute back (``ago=60``): due by the database's clock too.
# One made "now" by Python's clock was not due yet on SQLite, whose clock has milliseconds,
# to a park in the same millisecond (a CI-like run: parked 5 of 6).


def parked() -> int:
    return Job.objects.filter(status=JobStatus.READY, parked=True).count()


def full_key_with_backlog(store, backlog: int = BACKLOG):
    """One ``limited`` job running (its key's one slot taken) and ``backlog`` waiting."""
    store.register_worker(WORKER, "host", 1, ["default"], 1)
    limited.enqueue("running", 0)
    (running,) = store.claim(["default"], 1, WORKER)
    key = running.concurrency_key
    make_jobs(backlog, task_path=limited.module_path, args=["waiting", 0], ago=60,
              concurrency_key=key, concurrency_limit=1)
    return running


def done(job) -> Outcome:
    return Outcome(job=job, finished_at=timezone.now(), succeeded=True)


def test_an_idle_worker_parks_a_full_keys_jobs_and_claims_stop_stepping_over_them():
    store = get_store("default")
    full_key_with_backlog(store)
    sql, params = claim_sql(("default",), WORKER)
    if connection.vendor == "postgresql":
        before = pages_touched(sql, params)
        assert before > 2 * FEW_PAGES  # Every one of them stepped over.
    elif connection.vendor == "mysql":
        assert index_reads(sql, params) > BACKLOG  # Each read, its key probed.
    assert store.claim(["default"], 1, WORKER) == []  # Comes back short: the worker idles,
    assert store.park_blocked(["default"]) == BACKLOG  # and parks what it stepped over.
    assert parked() == BACKLOG
    # On PostgreSQL the park left the jobs' old index entries behind, dead: the next
    # claim steps over them once and marks them so (as after a drain, until vacuum).
    if connection.vendor == "postgresql":
        wait_out_transactions_older_than_now()
    assert store.claim(["default"], 1, WORKER) == []
    record.enqueue("free")
    if connection.vendor == "postgresql":
        after = pages_touched(sql, params)
        # The dead entries still fill index pages until vacuum: a few dozen, not thousands.
        assert after < 2 * FEW_PAGES and after * 50 < before
    elif connection.vendor == "mysql":
        assert index_reads(sql, params) < 20
    else:
        assert "USING INDEX taskmill_job_ready (queue_name=? AND parked=?)" in plan_lines(
            sql, params)
    (job,) = store.claim(["default"], 5, WORKER)
    assert job.task_path == record.module_path
    assert store.park_blocked(["default"]) == 0  # Nothing left to park: a short read.


@pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') == 'postgresql'",
                    reason="its claim reads each queue on its own (a LATERAL join)")
def test_statistics_taken_before_a_park_do_not_turn_the_claims_into_scans():
    """Statistics taken while one queue held every job (an ANALYZE, SQLite's PRAGMA
    optimize) said the claim index could not narrow anything down; SQLite then scanned
    the whole table on every claim and idle wait, parked jobs and all."""
    store = get_store("default")
    full_key_with_backlog(store)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE" if connection.vendor == "sqlite" else "ANALYZE TABLE taskmill_job")
        cursor.fetchall()
    while store.park_blocked(["default"]):
        pass
    for name, (sql, params) in {"claim": claim_sql(("default",), WORKER),
                                "next_wake": store.next_wake_query(["default"])}.items():
        if connection.vendor == "mysql":
            assert index_reads(sql, params) < 20, name
        else:
            plan = plan_lines(sql, params)
            assert "USING INDEX taskmill_job_ready (queue_name=? AND parked=?)" in plan, name
            assert "SCAN j\n" not in plan + "\n", name  # The whole table.


def test_a_completion_unparks_its_keys_best_job_for_the_slot_it_freed():
    store = get_store("default")
    running = full_key_with_backlog(store, backlog=5)
    best = make_jobs(1, task_path=limited.module_path, args=["urgent", 0], priority=10, ago=60,
                     concurrency_key=running.concurrency_key, concurrency_limit=1)[0]
    assert store.park_blocked(["default"]) == 6
    store.complete([done(running)], WORKER)
    unparked = Job.objects.filter(status=JobStatus.READY, parked=False)
    assert list(unparked.values_list("id", flat=True)) == [best.id]  # One slot: one job,
    assert parked() == 5  # the others stay aside.
    (claimed,) = store.claim(["default"], 5, WORKER)
    assert claimed.id == best.id
    store.complete([done(claimed)], WORKER)
    assert parked() == 4  # And so on, one slot at a time.


def test_a_park_that_crosses_a_completion_puts_back_what_the_freed_slot_needs(monkeypatch):
    """The park read the key full; the running job finished before the park landed (so
    its completion found nothing parked). The park looks again: nothing may stay parked
    behind a key with room, or it would wait for the recovery service."""
    store = get_store("default")
    running = full_key_with_backlog(store, backlog=3)
    read = store.fetchall("blocked_jobs", {"queues": store.list_param(["default"]),
                                           "limit": 100})
    assert len(read) == 3
    store.complete([done(running)], WORKER)  # Finds nothing parked: unparks nothing.
    real_fetchall = store.fetchall
    monkeypatch.setattr(store, "fetchall", lambda name, params=None: read
                        if name == "blocked_jobs" else real_fetchall(name, params))
    assert store.park_blocked(["default"]) == 3
    assert parked() == 2  # The slot's one job is back in line.
    assert len(store.claim(["default"], 5, WORKER)) == 1


def test_the_recovery_service_unparks_a_key_whose_slot_opened_another_way():
    store = get_store("default")
    running = full_key_with_backlog(store, backlog=3)
    store.park_blocked(["default"])
    Job.objects.filter(id=running.id).delete()  # Deleted by hand: no completion ran.
    recover_dead_workers(store, lease_seconds=30)
    assert parked() == 2
    assert len(store.claim(["default"], 5, WORKER)) == 1


def test_a_job_handed_back_at_shutdown_unparks_one_for_its_slot():
    store = get_store("default")
    running = full_key_with_backlog(store, backlog=3)
    store.park_blocked(["default"])
    assert store.hand_back([running], WORKER, started=False) == 1
    # The handed-back job is READY and unparked, and so is the best parked one: the
    # claim takes one of them, the limit holds the other back.
    assert parked() == 2
    assert len(store.claim(["default"], 5, WORKER)) == 1


def test_a_paused_tasks_backlog_is_parked_and_a_resume_puts_it_all_back():
    import taskmill

    store = get_store("default")
    taskmill.pause(task=record.module_path)
    make_jobs(BACKLOG, ago=60)  # record jobs, due
    limited.enqueue("free", 0)
    sql = store.sql["claim"]
    params = {"worker": WORKER, "limit": 1, "queues": store.list_param(["default"])}
    (job,) = store.claim(["default"], 1, WORKER)  # Steps over the paused ones to get it.
    assert job.task_path == limited.module_path
    assert store.park_blocked(["default"]) == BACKLOG
    if connection.vendor == "postgresql":
        wait_out_transactions_older_than_now()
    assert store.claim(["default"], 1, WORKER) == []  # (Marks the dead entries.)
    if connection.vendor == "postgresql":
        assert pages_touched(sql, params) < 2 * FEW_PAGES
    assert taskmill.resume(task=record.module_path) == 1
    assert parked() == 0
    assert len(store.claim(["default"], BACKLOG, WORKER)) == BACKLOG


def test_a_park_that_crosses_a_resume_puts_the_jobs_back(monkeypatch):
    import taskmill

    store = get_store("default")
    taskmill.pause(task=record.module_path)
    make_jobs(3, ago=60)
    read = store.fetchall("blocked_jobs", {"queues": store.list_param(["default"]),
                                           "limit": 100})
    assert len(read) == 3
    taskmill.resume(task=record.module_path)  # Finds nothing parked yet.
    real_fetchall = store.fetchall
    monkeypatch.setattr(store, "fetchall", lambda name, params=None: read
                        if name == "blocked_jobs" else real_fetchall(name, params))
    assert store.park_blocked(["default"]) == 3
    assert parked() == 0
    assert len(store.claim(["default"], 5, WORKER)) == 3


def test_a_freed_slot_goes_to_a_job_that_may_start_not_to_a_paused_tasks():
    import taskmill

    store = get_store("default")
    running = full_key_with_backlog(store, backlog=1)  # A limited job, may start later.
    paused_one = make_jobs(1, priority=10, ago=60, concurrency_key=running.concurrency_key,
                           concurrency_limit=1)[0]  # Better placed, but its task is paused.
    taskmill.pause(task=paused_one.task_path)
    assert store.park_blocked(["default"]) == 2
    store.complete([done(running)], WORKER)
    still = set(Job.objects.filter(status=JobStatus.READY, parked=True)
                .values_list("id", flat=True))
    assert still == {paused_one.id}
    (claimed,) = store.claim(["default"], 5, WORKER)
    assert claimed.task_path == limited.module_path


def test_parked_jobs_are_still_waiting_jobs_to_purge_and_cancel():
    """SPEC: purge removes waiting jobs and running ones finish; a parked job is waiting."""
    import taskmill

    store = get_store("default")
    running = full_key_with_backlog(store, backlog=3)
    assert store.park_blocked(["default"]) == 3
    parked_ids = list(Job.objects.filter(parked=True).values_list("id", flat=True))
    cancelled = taskmill.cancel(str(parked_ids[0]))
    assert cancelled.status == "FAILED"
    assert not Job.objects.get(id=parked_ids[0]).parked  # Out of MySQL's parked index.
    assert taskmill.purge(queue="default") == 2
    assert not Job.objects.filter(status=JobStatus.READY).exists()
    assert Job.objects.get(id=running.id).status == JobStatus.RUNNING


# -- rate keys --------------------------------------------------------------------------

def full_rate_key_with_backlog(store, backlog: int = BACKLOG, *, full_for: float = 3600):
    """``backlog`` due jobs of ``rated`` (10/s, its own key) behind a window that is full
    for ``full_for`` more seconds (as the claims that filled it leave it)."""
    store.register_worker(WORKER, "host", 1, ["default"], 1)
    make_jobs(backlog, task_path=rated.module_path, args=["waiting"], ago=60,
              rate_key=rated.module_path, rate_limit=10, rate_period=1.0)
    RateKey.objects.update_or_create(rate_key=rated.module_path, defaults={
        "full_until": timezone.now() + dt.timedelta(seconds=full_for)})


def rows_read_by_claim(store) -> int:
    """Rows of the claim index a claim read (returned or filtered out), by PostgreSQL's
    count; nothing is kept."""
    params = {"worker": WORKER, "limit": 1, "queues": store.list_param(["default"])}
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + store.sql["claim"], params)
        (plan,) = cursor.fetchone()
        cursor.execute("ROLLBACK")

    def read(node: dict) -> int:
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
               if node.get("Index Name") == "taskmill_job_ready" else 0)
        return own + sum(read(child) for child in node.get("Plans", []))

    return read((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def reopen(key: str) -> None:
    """The window's starts have left it: room again, its whole limit."""
    RateKey.objects.filter(rate_key=key).update(
        full_until=timezone.now() - dt.timedelta(seconds=1))
    RateSlice.objects.filter(rate_key=key).delete()


def test_an_idle_worker_parks_a_full_rate_keys_jobs_and_claims_stop_stepping_over_them():
    """Each of them cost the claim a probe of the key: 52 ms a claim (and as much each
    idle wait) beside 100,000 of them before they were parked."""
    store = get_store("default")
    full_rate_key_with_backlog(store)
    if connection.vendor == "postgresql":
        assert rows_read_by_claim(store) == BACKLOG  # Every one of them stepped over.
    elif connection.vendor == "mysql":
        assert index_reads(*claim_sql(("default",), WORKER)) > BACKLOG
    assert store.claim(["default"], 1, WORKER) == []
    assert store.park_blocked(["default"]) == BACKLOG
    assert RateKey.objects.get(rate_key=rated.module_path).parked
    assert store.unpark_reopened_rates() == 0  # Still full: nothing comes back.
    record.enqueue("free")
    if connection.vendor == "postgresql":
        assert rows_read_by_claim(store) == 1  # The free job alone.
    elif connection.vendor == "mysql":
        assert index_reads(*claim_sql(("default",), WORKER)) < 20
    else:
        assert "USING INDEX taskmill_job_ready (queue_name=? AND parked=?)" in plan_lines(
            store.sql["claim"], {"worker": WORKER, "limit": 1,
                                 "queues": store.list_param(["default"])})
    (job,) = store.claim(["default"], 5, WORKER)
    assert job.task_path == record.module_path
    assert store.next_wake(["default"]) > 3000  # Woken when the key's room comes back.


def test_when_a_rate_keys_room_comes_back_its_best_parked_jobs_come_back_as_many_as_its_limit():
    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=25)
    best = make_jobs(3, task_path=rated.module_path, args=["urgent"], priority=10, ago=60,
                     rate_key=rated.module_path, rate_limit=10, rate_period=1.0)
    assert store.park_blocked(["default"]) == 28
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 10  # The limit's worth, best first,
    back = set(Job.objects.filter(status=JobStatus.READY, parked=False)
               .values_list("id", flat=True))
    assert {job.id for job in best} <= back and len(back) == 10
    assert parked() == 18
    # The flag waits for the key to fill again: more unparked now would only be in the way.
    assert not RateKey.objects.get(rate_key=rated.module_path).parked
    assert store.unpark_reopened_rates() == 0
    claimed = store.claim(["default"], 20, WORKER)
    assert len(claimed) == 10  # The window takes them all (limit 10) and is full again;
    assert RateKey.objects.get(rate_key=rated.module_path).parked  # the claim flagged it,
    assert store.unpark_reopened_rates() == 0
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 10  # and its next reopening brings ten more.
    assert parked() == 8


def test_a_rate_keys_reopening_puts_back_as_many_jobs_as_its_window_has_room_for():
    """Room comes back a slice at a time, as the window's oldest starts leave it: the
    whole limit put back at each reopening was stepped over by the claims and parked
    again by the next idle look (7.0 row updates a job instead of 4.7, at 300/s)."""
    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=25)
    assert store.park_blocked(["default"]) == 25
    reopen(rated.module_path)
    width = 1.0 / SLICES  # rated: 10 a second.
    current = int(store.database_now().timestamp() // width)
    RateSlice.objects.create(rate_key=rated.module_path, slice=current - 3, starts=8)
    assert store.unpark_reopened_rates() == 2  # 8 of its 10 still in the window.
    assert len(store.claim(["default"], 20, WORKER)) == 2  # Both fit; none stepped over.
    assert parked() == 23


def test_the_recovery_service_flags_a_rate_key_left_with_room_and_parked_jobs():
    """The jobs unparked at its reopening were cancelled before they ran: the key never
    filled again to flag itself."""
    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=12)
    assert store.park_blocked(["default"]) == 12
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 10
    Job.objects.filter(status=JobStatus.READY, parked=False).delete()
    assert store.unpark_reopened_rates() == 0  # Not flagged: nothing fills it.
    recover_dead_workers(store, lease_seconds=30)
    assert store.unpark_reopened_rates() == 2
    assert len(store.claim(["default"], 5, WORKER)) == 2


def test_a_rate_keys_flag_goes_once_nothing_of_it_is_parked():
    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=4)
    assert store.park_blocked(["default"]) == 4
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 4  # Fewer than the limit: all of them,
    assert not RateKey.objects.get(rate_key=rated.module_path).parked  # and the flag goes.
    assert store.unpark_reopened_rates() == 0


def test_a_park_that_crosses_a_rate_keys_reopening_puts_the_jobs_back(monkeypatch):
    """The park read the key full; its room came back (and the look for reopened keys
    found nothing flagged) before the park landed. The park looks again at what it
    parked, the rate key's room included, and puts them back; the flag it left goes at
    the next look."""
    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=3)
    read = store.fetchall("blocked_jobs", {"queues": store.list_param(["default"]),
                                           "limit": 100})
    assert len(read) == 3
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 0  # Nothing flagged yet.
    real_fetchall = store.fetchall
    monkeypatch.setattr(store, "fetchall", lambda name, params=None: read
                        if name == "blocked_jobs" else real_fetchall(name, params))
    assert store.park_blocked(["default"]) == 3
    monkeypatch.undo()
    assert parked() == 0
    assert store.unpark_reopened_rates() == 0
    assert not RateKey.objects.get(rate_key=rated.module_path).parked
    assert len(store.claim(["default"], 5, WORKER)) == 3


def test_a_worker_whose_maintenance_puts_a_rate_keys_jobs_back_claims_them_at_once():
    """Without NOTIFY (MySQL, SQLite) nothing else wakes a worker waiting idle: the jobs
    sat out its poll interval, a second with none of the key's starts (seen in CI on
    MySQL: 10, 0, 10, 10 starts a second)."""
    from taskmill.store import close_store
    from taskmill.worker.config import WorkerConfig
    from taskmill.worker.process import WorkerProcess

    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=5)
    assert store.park_blocked(["default"]) == 5
    reopen(rated.module_path)
    worker = WorkerProcess(WorkerConfig(database="default", queues=["default"]), WORKER)
    maintenance = worker.maintenance
    assert maintenance is not None and not worker.wake.is_set()
    try:
        maintenance._unpark_rates()  # Its "rates" service, as its thread runs it.
    finally:
        close_store(maintenance.store)
    assert parked() == 0
    assert worker.wake.is_set()


def test_a_job_with_a_concurrency_key_is_parked_for_that_key_only():
    """Its rate key's unpark leaves it: the slot its concurrency key frees does."""
    store = get_store("default")
    running = full_key_with_backlog(store, backlog=2)
    RateKey.objects.create(rate_key="shared", full_until=timezone.now()
                           + dt.timedelta(seconds=3600))
    Job.objects.filter(status=JobStatus.READY).update(rate_key="shared", rate_limit=10,
                                                      rate_period=1.0)
    assert store.park_blocked(["default"]) == 2
    assert not RateKey.objects.get(rate_key="shared").parked
    reopen("shared")
    assert store.unpark_reopened_rates() == 0
    store.complete([done(running)], WORKER)
    assert parked() == 1


def test_a_job_that_its_rate_key_alone_holds_back_is_parked_for_it_concurrency_key_or_not():
    """Its concurrency key has room: it was never parked, and every claim stepped over
    it (a probe of the rate key each)."""
    store = get_store("default")
    full_rate_key_with_backlog(store)
    Job.objects.filter(status=JobStatus.READY).update(concurrency_key="roomy",
                                                      concurrency_limit=5)
    if connection.vendor == "postgresql":
        assert rows_read_by_claim(store) == BACKLOG
    assert store.park_blocked(["default"]) == BACKLOG
    assert Job.objects.filter(parked=True, parked_for_rate=True).count() == BACKLOG
    assert RateKey.objects.get(rate_key=rated.module_path).parked
    record.enqueue("free")
    if connection.vendor == "postgresql":
        assert rows_read_by_claim(store) == 1  # The free job alone.
    reopen(rated.module_path)
    assert store.unpark_reopened_rates() == 10  # The rate limit's worth, as without a key.
    assert parked() == BACKLOG - 10


def test_a_concurrency_keys_slot_goes_to_a_job_parked_for_it_not_one_its_rate_key_holds():
    """The job its rate key holds back is better placed, but the slot would go unused."""
    store = get_store("default")
    store.register_worker(WORKER, "host", 1, ["default"], 1)
    pair = {"concurrency_key": "pair", "concurrency_limit": 2, "ago": 60}
    make_jobs(1, **pair)
    (first,) = store.claim(["default"], 1, WORKER)  # One of the key's two slots.
    RateKey.objects.create(rate_key="shared", full_until=timezone.now()
                           + dt.timedelta(seconds=3600))
    (held,) = make_jobs(1, priority=10, rate_key="shared", rate_limit=10, rate_period=1.0,
                        **pair)
    assert store.park_blocked(["default"]) == 1  # For its rate key: the pair has room.
    make_jobs(1, **pair)
    assert len(store.claim(["default"], 5, WORKER)) == 1  # The pair is full now,
    (waiting,) = make_jobs(1, **pair)
    assert store.park_blocked(["default"]) == 1  # so this one is parked for it.
    store.complete([done(first)], WORKER)
    unparked = Job.objects.filter(status=JobStatus.READY, parked=False)
    assert list(unparked.values_list("id", flat=True)) == [waiting.id]
    assert Job.objects.get(id=held.id).parked


def test_a_worker_drains_a_parked_rate_limited_backlog_at_its_rate():
    """End to end, with a threaded worker: the idle worker parks the key's jobs, sleeps
    until its room comes back, puts the next ten back in line and runs them."""
    from taskmill.testing import worker

    jobs = [rated.enqueue(f"drain-{i}") for i in range(35)]
    started = time.monotonic()
    with worker() as running:
        running.wait(*jobs, timeout=30)
    took = time.monotonic() - started
    assert Job.objects.filter(task_path=rated.module_path,
                              status=JobStatus.SUCCESSFUL).count() == 35
    assert 2.5 < took < 12  # 10 a second: at least three windows after the first ten.


@pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') == 'sqlite'",
                    reason="one writer at a time: nothing to pass over")
def test_a_rate_unpark_passes_over_jobs_another_statement_holds():
    """Waiting for them, in claim order, deadlocked with unparks and parks that lock in id
    order (idle workers of one queue all look at the same moment)."""
    from taskmill.store import close_store, private_store

    store = get_store("default")
    full_rate_key_with_backlog(store, backlog=5)
    assert store.park_blocked(["default"]) == 5
    reopen(rated.module_path)
    best = Job.objects.filter(parked=True).order_by("run_after", "id").first()
    other = private_store("default")
    try:
        with other.atomic(), other.connection.cursor() as cursor:
            cursor.execute("SELECT id FROM taskmill_job WHERE id = %s FOR UPDATE",
                           [other.id_param(best.id)])
            with connection.cursor() as mine:
                mine.execute("SET lock_timeout = '2s'" if connection.vendor == "postgresql"
                             else "SET SESSION innodb_lock_wait_timeout = 2")
            started = time.monotonic()
            assert store.unpark_reopened_rates() == 4  # All but the one held, at once.
            assert time.monotonic() - started < 1
    finally:
        close_store(other)
        with connection.cursor() as mine:
            mine.execute("RESET lock_timeout" if connection.vendor == "postgresql"
                         else "SET SESSION innodb_lock_wait_timeout = DEFAULT")
    assert list(Job.objects.filter(parked=True).values_list("id", flat=True)) == [best.id]
