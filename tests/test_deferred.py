"""Jobs due later (taskmill/store/deferred.py): an idle worker parks them, so claims and
idle waits no longer step over them; claims put them back in line shortly before they
are due, and they run on time. Every database (migration 0016)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from django.utils import timezone

from taskmill.api import cancel
from taskmill.models import Job, JobStatus
from taskmill.store import get_store
from taskmill.store.deferred import AHEAD, UNPARK_EVERY
from tests.conftest import wait_until
from tests.jobrows import make_job, make_jobs
from tests.project.models import Execution
from tests.project.tasks import record
from tests.test_claim_plans import (
    FEW_PAGES,
    claim_sql,
    index_reads,
    pages_touched,
    plan_lines,
)

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "later:1:w"
#: Jobs due in an hour: enough that stepping over them shows in a claim's reads (on
#: PostgreSQL, the claim index's pages only: their due times are in it).
BACKLOG = 20_000


def parked_for_time() -> int:
    return Job.objects.filter(status=JobStatus.READY, parked=True, parked_for_time=True).count()


def in_an_hour(count: int, **fields) -> list[Job]:
    now = timezone.now()
    return make_jobs(count, enqueued_at=now, run_after=now + dt.timedelta(hours=1), **fields)


def test_an_idle_worker_parks_jobs_due_later_and_claims_stop_stepping_over_them():
    """Beside 100,000 jobs due in an hour, nothing due: a claim took 252 ms on MariaDB,
    22 ms on SQLite, 11 ms on PostgreSQL, 0.1 to 1 ms without them (bench/backlog.py)."""
    store = get_store("default")
    in_an_hour(BACKLOG)
    if connection.vendor == "mysql":  # The statistics a real table has: the plan with them.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE TABLE taskmill_job")
            cursor.fetchall()
    sql, params = claim_sql(("default",), WORKER)
    if connection.vendor == "postgresql":
        before = pages_touched(sql, params)
        assert before > 2 * FEW_PAGES, before  # Every one of them stepped over.
    elif connection.vendor == "mysql":
        assert index_reads(sql, params) > BACKLOG
    assert store.claim(["default"], 1, WORKER) == []  # Comes back short: the worker idles,
    parked = 0
    while found := store.park_blocked(["default"]):  # and parks what is due later, some
        parked += found  # thousands a look.
    assert parked == parked_for_time() == BACKLOG
    assert store.park_blocked(["default"]) == 0  # The next look reads nothing of them.
    if connection.vendor == "postgresql":  # The park's dead index entries, gone:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM taskmill_job")  # what autovacuum does soon after.
    assert store.claim(["default"], 1, WORKER) == []
    wake = store.next_wake(["default"])
    assert wake is not None and 3500 < wake <= 3600  # An idle wait still knows when.
    record.enqueue("due now")
    if connection.vendor == "postgresql":
        after = pages_touched(sql, params)
        assert after < FEW_PAGES and after * 3 < before, (before, after)
    elif connection.vendor == "mysql":
        assert index_reads(sql, params) < 20
        assert index_reads(*store.next_wake_query(["default"])) < 20
    else:
        assert "USING INDEX taskmill_job_ready (queue_name=? AND parked=?)" in plan_lines(
            sql, params)
    (job,) = store.claim(["default"], 5, WORKER)
    assert job.args == ["due now"]


def test_a_parked_job_is_back_in_line_before_it_is_due_and_claimed_when_due():
    """A busy worker's claims look for parked jobs come due every UNPARK_EVERY seconds,
    AHEAD seconds ahead of their time: the job is in line when it is due."""
    store = get_store("default")  # One connection's claims, as one worker thread's.
    now = timezone.now()
    due = now + dt.timedelta(seconds=AHEAD + 1.0)
    job = make_job(enqueued_at=now, run_after=due)
    assert store.park_blocked(["default"]) == 1
    claimed = []
    in_line_before_due = False
    deadline = time.monotonic() + 10
    while not claimed and time.monotonic() < deadline:
        claimed = store.claim(["default"], 1, WORKER)
        moment = store.database_now()
        if not claimed and not Job.objects.get(id=job.id).parked and moment < due:
            in_line_before_due = True
        time.sleep(0.02)
    assert in_line_before_due
    assert [c.id for c in claimed] == [job.id]
    row = Job.objects.get(id=job.id)
    assert not row.parked and not row.parked_for_time
    assert due <= row.last_attempted_at < due + dt.timedelta(seconds=UNPARK_EVERY)


def test_slots_resumes_and_the_recovery_look_leave_jobs_waiting_for_their_time_parked():
    """Only its due time puts a job parked for it back: a key's freed slot goes to a job
    that may start now, a resume puts back what may start now."""
    store = get_store("default")
    (later,) = in_an_hour(1, concurrency_key="k", concurrency_limit=1, priority=10)
    now_job = make_job(concurrency_key="k", concurrency_limit=1, ago=60)
    store.register_worker(WORKER, "host", 1, ["default"], 1)
    make_job(JobStatus.RUNNING, concurrency_key="k", concurrency_limit=1, lease_owner=WORKER)
    assert store.park_blocked(["default"]) == 2  # One for its time, one for its key.
    store.unpark_freed(["k"])
    assert not Job.objects.get(id=now_job.id).parked  # The slot went to the due job,
    assert Job.objects.get(id=later.id).parked_for_time  # not the better one due later.
    assert store.unpark_startable() == 0
    store.unpark_if_room()
    assert Job.objects.get(id=later.id).parked_for_time


def test_a_cancelled_job_is_no_longer_parked_for_its_time():
    """MySQL's index of jobs parked for their time holds every status (migration 0016):
    a cancelled job left flagged would stay in it for good."""
    (later,) = in_an_hour(1)
    assert get_store("default").park_blocked(["default"]) == 1
    cancel(str(later.id))
    row = Job.objects.get(id=later.id)
    assert (row.status, row.parked, row.parked_for_time) == (JobStatus.FAILED, False, False)


def test_a_worker_parks_a_job_due_later_and_runs_it_on_time(start_worker):
    start_worker("--processes", "1", "--threads", "2")
    record.enqueue("warm-up")
    wait_until(Execution.objects.exists, timeout=60, message="the worker to start")
    due = timezone.now() + dt.timedelta(seconds=AHEAD + 3.0)
    result = record.using(run_after=due).enqueue("on time")
    # The worker is idle: its next look parks the job, which waits out of line.
    wait_until(lambda: Job.objects.filter(id=result.id, parked_for_time=True).exists(),
               timeout=AHEAD + 2.0, message="the idle worker to park the job")
    wait_until(lambda: Execution.objects.filter(label="on time").exists(), timeout=30,
               message="the job to run")
    started = Execution.objects.get(label="on time").started
    assert due.timestamp() - 0.05 <= started < due.timestamp() + 1.0  # On time (its
    # clock and the database's agree on this host to within a few milliseconds).
    assert Job.objects.get(id=result.id).attempts == 1
