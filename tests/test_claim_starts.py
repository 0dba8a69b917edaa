"""While a transaction holds back vacuum, claims start past the jobs claimed last.

Each claimed job's entry stays in the claim index while an open snapshot may still see
the job READY, and a claim from the front of its queue steps over all of them (pickup
1.2 → 16 ms in three minutes at 1,000 jobs/s, ``bench/pinned.py``). In such a window a
worker's claims start where its last claim from the queue ended, and read from the
front only every second or so (taskmill/store/starts.py). The thresholds are shortened
here; the snapshot, the dead entries and the pages read are the database's own:
PostgreSQL's snapshot and buffers, MariaDB's read view (InnoDB keeps the delete-marked
entries of the claimed jobs while it is open) and its count of pages accessed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from taskmill.models import Job, JobStatus
from taskmill.store import Outcome, close_store, private_store, starts
from tests.conftest import wait_until
from tests.jobrows import job_row, make_job, make_jobs
from tests.test_claim_plans import FEW_PAGES, pages_accessed, pages_touched
from tests.test_held_transactions import held_snapshot  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') == 'sqlite'",
                       reason="PostgreSQL and MySQL say when a transaction holds back "
                              "the cleanup; SQLite's claims always read from the front"),
]
mysql_only = pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') != 'mysql'",
                                reason="MariaDB's choice of plan")
postgresql_only = pytest.mark.skipif("os.environ.get('TASKMILL_TEST_DB') != 'postgresql'",
                                     reason="PostgreSQL's partial indexes of RUNNING jobs")

WORKER = "starts:1:w"
#: Jobs claimed under the held snapshot: the dead entries a claim from the front walks.
CLAIMED = 3000


@pytest.fixture
def window(held_snapshot: Any, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """A snapshot held beside the job database, seen as held long enough at once."""
    monkeypatch.setattr(starts, "HELD_FOR", 0.2)
    monkeypatch.setattr(starts, "LOOK_EVERY", 0.0)
    return held_snapshot


@pytest.fixture
def store():
    store = private_store("default")
    yield store
    close_store(store)


def success(job) -> Outcome:
    return Outcome(job=job, finished_at=timezone.now(), succeeded=True)


def make_spread_jobs(count: int, over: float = 600) -> None:
    """Jobs due over the last ``over`` seconds, as a steady load leaves them."""
    now = timezone.now()
    Job.objects.bulk_create([job_row(run_after=now - dt.timedelta(seconds=over * (1 - n / count)))
                             for n in range(count)], batch_size=1000)


def call(store, *, from_front: bool) -> tuple[str, dict]:
    """A claim of one job of the default queue: its SQL and parameters (on MySQL, the
    SELECT that locks the jobs)."""
    if connection.vendor == "mysql":
        return store.claimable(["default"], 1, from_front=from_front)
    name, params = store.claim_call(["default"], 1, WORKER, from_front=from_front)
    return store.sql[name], params


def idle_look(store) -> tuple[str, dict]:
    """An idle worker's look at the default queue, as the store reads it now."""
    if connection.vendor == "mysql":
        return store.next_wake_query(["default"])
    name, params = store.next_wake_call(["default"])
    return store.sql[name], params


def pages_read(sql: str, params: dict) -> int:
    """The pages the statement read, by the database's own count."""
    if connection.vendor == "mysql":
        return pages_accessed(sql, params)
    return pages_touched(sql, params)


def wait_for_no_other_held(store) -> None:
    """Another session of the server (a test run beside this one) may hold back the
    cleanup for as long as the window's threshold: MySQL's read views are the whole
    server's, and so are PostgreSQL's transaction ids. Wait for it to end, or skip
    (innodb_trx is refreshed at most every 0.1 s: read it slower)."""
    deadline = time.monotonic() + 30
    time.sleep(0.2)
    while (held := store.horizon_held_for()) is not None and held >= starts.HELD_FOR:
        if time.monotonic() > deadline:
            pytest.skip(f"another transaction has held back the cleanup for {held:.0f} s")
        time.sleep(0.2)


def claim_all(store, queue: str = "default") -> list[Job]:
    claimed = []
    while batch := store.claim([queue], 100, WORKER):
        claimed += batch
    return claimed


def test_under_a_held_snapshot_claims_and_idle_looks_step_over_none_of_the_claimed(
        window, store, monkeypatch):
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)  # No read from the front but the first.
    make_spread_jobs(CLAIMED)
    claimed = claim_all(store)
    assert len({job.id for job in claimed}) == CLAIMED
    fresh = {job.id for job in make_jobs(10)}

    front_pages = pages_read(*call(store, from_front=True))
    start_pages = pages_read(*call(store, from_front=False))
    # From the front, the claim visits every claimed job's row (the snapshot keeps them).
    assert front_pages > 100 > FEW_PAGES > start_pages, (front_pages, start_pages)
    assert pages_read(*idle_look(store)) < FEW_PAGES
    assert store.next_wake(["default"]) <= 0  # The fresh jobs are due.
    assert {job.id for job in claim_all(store)} == fresh


@mysql_only
def test_at_500_jobs_a_second_a_claim_from_the_start_enters_the_index_there(
        window, store, monkeypatch):
    """The LAG second before the start holds the entries of 500 claimed jobs, and the
    database counts them into the range's estimate: MariaDB then read the queue's whole
    part of the claim index from the front (6,022 pages, as from the front: 6,020)
    instead of the range from the start (1,015)."""
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)
    make_spread_jobs(CLAIMED, over=CLAIMED / 500)
    assert len(claim_all(store)) == CLAIMED
    make_jobs(10)
    front_pages = pages_read(*call(store, from_front=True))
    start_pages = pages_read(*call(store, from_front=False))
    assert 3 * start_pages < front_pages, (front_pages, start_pages)


@mysql_only
def test_a_claim_that_finds_fewer_jobs_than_its_limit_stops_at_the_last(
        window, store, monkeypatch):
    """InnoDB passes over delete-marked entries before it checks a range's end, so a
    locking read that ran out of jobs went on over the RUNNING entry of every job run
    since the read view began (delete-marked once the job ended): 180,000 pages a claim
    under bench/pinned.py. The claim locks only as many as a consistent read counted."""
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)
    make_spread_jobs(CLAIMED)
    while jobs := store.claim(["default"], 100, WORKER):
        store.complete([success(job) for job in jobs], WORKER)
    fresh = {job.id for job in make_jobs(10)}
    assert pages_read(*store.claimable(["default"], 100, from_front=False)) < FEW_PAGES
    assert {job.id for job in store.claim(["default"], 100, WORKER)} == fresh


def test_a_job_that_sorts_before_the_start_is_claimed_at_the_next_read_from_the_front(
        window, store, monkeypatch):
    monkeypatch.setattr(starts, "FRONT_EVERY", 0.5)
    monkeypatch.setattr(starts, "FRONT_SHARE", 1.0)
    make_jobs(30, ago=5)
    assert len(store.claim(["default"], 10, WORKER)) == 10  # From the front: sets the start.
    urgent = make_job(priority=10)
    (next_one,) = store.claim(["default"], 1, WORKER)  # From the start: past the urgent one.
    assert next_one.priority == 0
    time.sleep(0.5)
    (then,) = store.claim(["default"], 1, WORKER)
    assert then.id == urgent.id


def test_once_the_snapshot_is_released_claims_read_from_the_front_at_once(
        window, store, monkeypatch):
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)
    make_jobs(30, ago=5)
    assert len(store.claim(["default"], 10, WORKER)) == 10
    window.rollback()
    wait_for_no_other_held(store)
    urgent = make_job(priority=10)
    (first,) = store.claim(["default"], 1, WORKER)
    assert first.id == urgent.id


@mysql_only
def test_innodb_says_how_much_purge_a_read_view_holds_back(window, store):
    """The history list length: every claim (a transaction that updated jobs) committed
    after the read view began stays in it until the read view ends, and purge takes it
    away after. (What was committed before may be purged meanwhile: only the claims are
    counted on.)"""
    make_jobs(40, ago=5)
    for _ in range(40):
        assert len(store.claim(["default"], 1, WORKER)) == 1
    held_back = store.cleanup_backlog()
    assert held_back is not None and held_back >= 40
    window.rollback()
    wait_for_no_other_held(store)
    wait_until(lambda: store.cleanup_backlog() < held_back, timeout=30,
               message="purge to catch up after the read view")


@mysql_only
def test_after_the_read_view_ends_claims_start_past_the_claimed_until_purge_catches_up(
        window, store, monkeypatch):
    """InnoDB purges ten minutes of jobs' entries over a minute or more after the read
    view ends, and each read from the front walks what is left. The claims keep
    starting past the claimed until the history list is back to what it was when the
    window opened. (How far behind purge is, is made up here: with a few jobs it catches
    up in milliseconds.)"""
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)  # No read from the front but the first.
    make_jobs(30, ago=5)
    assert len(store.claim(["default"], 10, WORKER)) == 10
    at_open = store._backlog_at_open
    assert at_open is not None  # Read from the server when the window opened.
    window.rollback()
    wait_for_no_other_held(store)
    behind = at_open + starts.CAUGHT_UP_WITHIN + 5000
    monkeypatch.setattr(store, "cleanup_backlog", lambda: behind)
    urgent = make_job(priority=10)
    (first,) = store.claim(["default"], 1, WORKER)
    assert first.id != urgent.id  # Still from the start: the urgent job sorts before it.
    monkeypatch.setattr(store, "cleanup_backlog", lambda: at_open + starts.CAUGHT_UP_WITHIN)
    (first,) = store.claim(["default"], 1, WORKER)
    assert first.id == urgent.id  # Caught up: from the front again, in exact order.


def test_claims_outside_a_window_keep_the_exact_order(store):
    wait_for_no_other_held(store)
    make_jobs(30, ago=5)
    assert len(store.claim(["default"], 10, WORKER)) == 10
    urgent = make_job(priority=10)
    (first,) = store.claim(["default"], 1, WORKER)
    assert first.id == urgent.id


def test_in_a_window_the_jobs_its_claims_step_over_are_read_after_a_read_from_the_front(
        window, store, monkeypatch):
    """Reading them starts at the front too: once per read from the front, not on every
    idle look (each would step over every claimed job again)."""
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)
    make_jobs(5, ago=5)
    claim_all(store)  # The first claim read from the front; the rest from the start.
    make_job(JobStatus.RUNNING, concurrency_key="k", concurrency_limit=1)  # The key is full.
    blocked = make_jobs(3, ago=5, concurrency_key="k", concurrency_limit=1)
    assert store.park_blocked(["default"]) == 3  # Read once, after that front read...
    make_jobs(3, ago=5, concurrency_key="k", concurrency_limit=1)
    assert store.park_blocked(["default"]) == 0  # ...and not again until the next one.
    parked = Job.objects.filter(parked=True, status=JobStatus.READY)
    assert {job.id for job in parked} == {job.id for job in blocked}


@postgresql_only
def test_under_a_held_snapshot_a_rounds_completions_find_each_job_by_its_id(window, store):
    """The RUNNING-only indexes keep an entry for every job run since the snapshot, and
    the planner, counting live rows only, took a scan of one as free: 3.6 ms a round
    after 30,000 jobs, growing for as long as the snapshot was held."""
    make_jobs(CLAIMED, ago=5)
    while jobs := store.claim(["default"], 100, WORKER):
        store.complete([success(job) for job in jobs], WORKER)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE taskmill_job")  # As autovacuum's analyze does, pin or not.
    make_jobs(2)
    jobs = store.claim(["default"], 2, WORKER)
    pages = pages_touched(store.sql["complete_jobs"],
                          store._successes([success(job) for job in jobs], WORKER))
    assert pages < FEW_PAGES
    store.complete([success(job) for job in jobs], WORKER)
    assert Job.objects.filter(status=JobStatus.SUCCESSFUL).count() == CLAIMED + 2


def test_a_queue_a_read_from_the_front_finds_empty_keeps_its_start(window, store, monkeypatch):
    """Another worker took what came in: the front read finds nothing, and the claims
    after it must not go back to stepping over every job claimed since the snapshot."""
    monkeypatch.setattr(starts, "FRONT_EVERY", 0.0)  # Every claim reads from the front,
    monkeypatch.setattr(starts, "FRONT_SHARE", math.inf)  # however long the last one took.
    make_spread_jobs(CLAIMED)
    assert len(claim_all(store)) == CLAIMED
    make_jobs(10)
    other = private_store("default")
    try:
        assert len(other.claim(["default"], 100, "starts:2:w")) == 10
    finally:
        close_store(other)
    assert store.claim(["default"], 1, WORKER) == []  # From the front: nothing left.
    assert pages_read(*call(store, from_front=False)) < FEW_PAGES


@postgresql_only
def test_under_a_held_snapshot_the_heartbeats_cancel_look_finds_each_job_by_its_id(
        window, store):
    """Each heartbeat asks which of its jobs someone asked to cancel. Asked by lease
    owner, it walked the RUNNING-only index's entry of every job the worker ran since
    the snapshot; it asks by the ids the worker holds."""
    make_jobs(CLAIMED, ago=5)
    while jobs := store.claim(["default"], 100, WORKER):
        store.complete([success(job) for job in jobs], WORKER)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE taskmill_job")
    by_owner = ("SELECT id, cancel_force FROM taskmill_job WHERE status = 'RUNNING' "
                "AND lease_owner = %(worker)s AND cancel_requested_at IS NOT NULL")
    assert pages_touched(by_owner, {"worker": WORKER}) > 2 * FEW_PAGES
    make_jobs(2)
    held = store.claim(["default"], 2, WORKER)
    Job.objects.filter(id=held[0].id).update(cancel_requested_at=timezone.now(),
                                             cancel_force=True)
    ids = [job.id for job in held]
    params = {"worker": WORKER, "ids": store.ids_param(ids)}
    assert pages_touched(store.sql["cancel_requests"], params) < FEW_PAGES
    assert store.cancel_requests(WORKER, ids) == {held[0].id: True}
    assert store.cancel_requests(WORKER, []) == {}


def test_in_a_window_a_job_due_just_before_the_last_claimed_is_claimed_from_the_start(
        window, store, monkeypatch):
    """Enqueues commit out of order: a job due a moment before the last one claimed may
    become visible only after that claim. The start is kept ``LAG`` before the last
    claimed job's due time, so such a job is claimed from the start at once; one due
    further back waits for the next read from the front. (Without the lag, the claim
    from the start finds nothing and reads from the front: both at once.)"""
    monkeypatch.setattr(starts, "FRONT_EVERY", 3600.0)
    monkeypatch.setattr(starts, "FRONT_SHARE", 1.0)
    make_jobs(10, ago=5)
    time.sleep(starts.HELD_FOR)  # The snapshot is held long enough before the first claim.
    assert len(store.claim(["default"], 10, WORKER)) == 10  # From the front: sets the start.
    just_before = make_job(ago=5 + starts.LAG / 2)
    further_back = make_job(ago=5 + starts.LAG * 3)
    assert [job.id for job in store.claim(["default"], 10, WORKER)] == [just_before.id]
    # The next read from the front is due at once, however long the last one took.
    monkeypatch.setattr(starts, "FRONT_EVERY", 0.0)
    monkeypatch.setattr(starts, "FRONT_SHARE", math.inf)
    assert [job.id for job in store.claim(["default"], 10, WORKER)] == [further_back.id]


def test_whether_a_window_is_open_is_asked_outside_the_claims_transaction(
        window, store, monkeypatch):
    """On MySQL the claim's transaction holds its jobs' row locks until it commits: the
    look at the server's transactions (every LOOK_EVERY seconds) comes before it."""
    monkeypatch.setattr(starts, "LOOK_EVERY", 5.0)
    asked_in_a_transaction: list[bool] = []
    ask = store.horizon_held_for

    def horizon_held_for() -> float | None:
        connection = store.connection
        asked_in_a_transaction.append(connection.in_atomic_block
                                      or not connection.get_autocommit())
        return ask()

    monkeypatch.setattr(store, "horizon_held_for", horizon_held_for)
    make_jobs(10, ago=5)
    assert len(store.claim(["default"], 5, WORKER)) == 5
    assert len(store.claim(["default"], 5, WORKER)) == 5
    assert asked_in_a_transaction == [False]
