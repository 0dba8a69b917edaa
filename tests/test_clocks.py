"""One clock: the database's decides leases, due times and periodic ticks, however far
the hosts' own clocks are off (here: processes whose wall clock is shifted, see
tests/project/clock.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from taskmill.models import Job, JobError, JobStatus, ScheduleState, Worker
from taskmill.store import get_store
from taskmill.store.clock import DatabaseClock
from tests.conftest import ROOT, database_env, wait_until
from tests.project.models import Execution
from tests.project.tasks import slow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def ahead(seconds: float) -> dict[str, str]:
    return {"TASKMILL_TEST_CLOCK_SHIFT": str(seconds)}


def test_a_worker_whose_clock_runs_ahead_declares_no_live_worker_dead(start_worker, settings):
    lease = settings.TASKS["default"]["OPTIONS"]["LEASE_SECONDS"]
    result = slow.enqueue("long-and-alive", lease * 2.5)
    start_worker("--processes", "1")  # true clock: runs the job
    wait_until(lambda: Execution.objects.filter(label="long-and-alive").exists(),
               message="the job to start")
    # Recovers dead workers every half lease, by its clock 25 s ahead of everyone else's.
    hasty = start_worker("--processes", "1", "--queues", "other", env=ahead(25))
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=lease * 8, message="the long job to finish")
    job = Job.objects.get(id=result.id)
    assert job.attempts == 1, hasty.output
    assert not JobError.objects.filter(job_id=result.id).exists()
    assert "stopped heartbeating" not in hasty.output
    assert Worker.objects.count() == 2


ENQUEUE = """
import json, django
django.setup()
from tests.project.tasks import record
print(json.dumps([record.enqueue(f"from-the-future-{i}").id for i in range(3)]))
"""


def test_jobs_enqueued_on_a_host_whose_clock_runs_ahead_are_due_at_once(start_worker):
    start_worker("--processes", "1")
    enqueued = subprocess.run([sys.executable, "-c", ENQUEUE], cwd=ROOT, capture_output=True,
                              text=True, env={**database_env(), **ahead(60)}, timeout=60)
    assert enqueued.returncode == 0, enqueued.stderr
    started = time.monotonic()
    ids = json.loads(enqueued.stdout.strip().splitlines()[-1])
    wait_until(lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESSFUL).count() == 3,
               timeout=20, message="the jobs to run")
    assert time.monotonic() - started < 10  # not the minute the host's clock is ahead


def test_a_scheduler_whose_clock_runs_ahead_enqueues_no_tick_early(start_worker):
    env = {"DJANGO_SETTINGS_MODULE": "tests.project.settings_schedule",
           "TASKMILL_TEST_SCHEDULE": json.dumps({"tick": {
               "task": "tests.project.coordination_tasks.tick", "every": 2}}),
           **ahead(25)}
    start_worker("--processes", "1", "--queues", "other", env=env)
    wait_until(lambda: Job.objects.filter(task_path__endswith=".tick").count() >= 3,
               timeout=30, message="three ticks")
    state = ScheduleState.objects.get(name="tick")
    last = Job.objects.get(id=state.last_job_id)
    now = get_store("default").database_now()
    # No tick from the future (the host's clock is 25 s ahead of the database's)...
    assert state.last_tick <= now, (state.last_tick, now)
    # ...and each enqueued no earlier than the tick it stands for.
    assert last.enqueued_at >= state.last_tick, (last.enqueued_at, state.last_tick)


class _SlowRequest:
    """A store whose clock request takes a while to reach the database: the database
    reads its time at the end of the round trip, not in the middle the clock assumes."""

    def __init__(self, store, delay: float) -> None:
        self.store, self.delay = store, delay

    def database_now(self):
        time.sleep(self.delay)
        return self.store.database_now()


def test_the_scheduler_clock_never_says_a_time_the_database_has_not_reached():
    """The scheduler looks right at a tick; judged by ``now()``, an estimate up to half a
    round trip ahead, it enqueued a tick 3 ms early (a CI-like run). ``reached()`` is
    what it judges by."""
    store = get_store("default")
    clock = DatabaseClock(_SlowRequest(store, delay=0.6))
    estimate, reached = clock.now(), clock.reached()
    actual = store.database_now()
    assert estimate > actual, (estimate, actual)  # About 0.3 s ahead: the hazard is real.
    assert reached <= actual, (reached, actual)
