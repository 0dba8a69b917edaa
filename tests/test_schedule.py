"""The periodic scheduler: each tick enqueued exactly once, however many workers run it."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from taskmill.checks import check_schedule
from taskmill.models import Job, ScheduleState
from taskmill.services.scheduler import Entry, Scheduler, parse_schedule
from taskmill.store import get_store
from tests.conftest import ROOT, database_env
from tests.project.coordination_tasks import tick

TICK_PATH = "tests.project.coordination_tasks.tick"
ENQUEUED = re.compile(r"Enqueued periodic task 'tick' \(\S+\) for (\S+): job ([0-9a-f-]+)\.")


def schedule_env(schedule: dict) -> dict:
    env = database_env()
    env["DJANGO_SETTINGS_MODULE"] = "tests.project.settings_schedule"
    env["TASKMILL_TEST_SCHEDULE"] = json.dumps(schedule)
    return env


def start_scheduling_worker(env: dict) -> subprocess.Popen:
    # --queues other: these workers only schedule; the ticks' jobs stay READY to count.
    return subprocess.Popen(
        [sys.executable, "-m", "django", "taskmill", "worker", "--processes", "1",
         "--queues", "other"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def stop(process: subprocess.Popen, kill: bool = False) -> str:
    if kill:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.terminate()
    out, _ = process.communicate(timeout=30)
    return out


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_three_workers_enqueue_each_tick_exactly_once_across_restarts():
    env = schedule_env({"tick": {"task": TICK_PATH, "every": 1}})
    workers = [start_scheduling_worker(env) for _ in range(3)]
    started = list(workers)
    outputs = []
    try:
        time.sleep(3.5)
        outputs.append(stop(workers.pop(0), kill=True))  # One dies without warning...
        workers.append(start_scheduling_worker(env))  # ...and a fresh one takes its place.
        started.append(workers[-1])
        time.sleep(3.5)
        for worker in workers:
            worker.terminate()
        outputs += [stop(w) for w in workers]
    finally:
        for worker in started:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)

    logged = {job_id: datetime.fromisoformat(t)
              for out in outputs for t, job_id in ENQUEUED.findall(out)}
    jobs = {str(job_id): at for job_id, at in
            Job.objects.filter(task_path=TICK_PATH).values_list("id", "enqueued_at")}
    assert set(logged) <= set(jobs) and len(logged) >= 4, outputs
    # The worker killed with SIGKILL may have committed its last tick and died before
    # logging it: that job's tick is the second it was enqueued in (just after the tick).
    unlogged = [at.replace(microsecond=0) for job_id, at in jobs.items() if job_id not in logged]
    assert len(unlogged) <= 1, (unlogged, outputs)
    ticks = [*logged.values(), *unlogged]
    assert len(set(ticks)) == len(ticks)  # No tick enqueued twice...
    ticks.sort()
    gaps = {(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)}
    assert gaps == {1.0}  # ...and none skipped while workers ran.
    assert ScheduleState.objects.get(name="tick").last_tick == ticks[-1]


def entry(**kwargs) -> Entry:
    return Entry(name="t", task_path=TICK_PATH, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_missed_ticks_collapse_into_the_latest_one():
    now = datetime(2030, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)
    every = entry(every=10)
    assert Scheduler([every]).run_due(get_store(connection), now) == 0  # New: starts next tick.
    assert ScheduleState.objects.get(name="t").last_tick == now.replace(microsecond=0)
    # An hour with no worker: 360 ticks missed; one job, for the latest.
    later = now + timedelta(hours=1, seconds=3)
    assert Scheduler([every]).run_due(get_store(connection), later) == 1
    assert Scheduler([every]).run_due(get_store(connection), later) == 0  # A restart: no repeat.
    assert ScheduleState.objects.get(name="t").last_tick == datetime(2030, 1, 1, 13, 0, 0,
                                                                     tzinfo=UTC)
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_looks_late_enqueues_each_tick_it_passed():
    """A look after the tick that follows a due one used to enqueue only the later: a
    running worker whose maintenance thread was a second late lost a tick."""
    start = datetime(2030, 1, 1, 12, 0, 0, 400000, tzinfo=UTC)
    every = entry(every=1)
    store = get_store(connection)
    scheduler = Scheduler([every])
    assert scheduler.run_due(store, start) == 0  # New: starts with the next tick.
    assert scheduler.run_due(store, start + timedelta(seconds=1)) == 1  # 12:00:01
    assert scheduler.run_due(store, start + timedelta(seconds=3.5)) == 2  # :02 and :03
    assert Scheduler([every]).run_due(store, start + timedelta(seconds=3.5)) == 0  # Done.
    # A look over a minute after its last counts as a worker that was not running.
    assert scheduler.run_due(store, start + timedelta(seconds=125)) == 1
    assert ScheduleState.objects.get(name="t").last_tick == datetime(2030, 1, 1, 12, 2, 5,
                                                                     tzinfo=UTC)
    assert Job.objects.filter(task_path=TICK_PATH).count() == 4


@pytest.mark.django_db(transaction=True)
def test_an_entry_with_a_fractional_every_catches_up_exact_ticks():
    start = datetime(2030, 1, 1, 12, 0, 0, 100000, tzinfo=UTC)
    scheduler = Scheduler([entry(every=1.5)])
    store = get_store(connection)
    scheduler.run_due(store, start)
    assert scheduler.run_due(store, start + timedelta(seconds=6)) == 4  # 01.5 03 04.5 06
    assert ScheduleState.objects.get(name="t").last_tick == datetime(
        2030, 1, 1, 12, 0, 6, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_cron_entries_fire_on_their_instants_only():
    nightly = entry(cron="0 3 * * *", kwargs={}, queue_name="other", priority=5)
    scheduler = Scheduler([nightly])
    store = get_store(connection)
    day = datetime(2030, 1, 1, 14, 0, tzinfo=UTC)
    assert scheduler.run_due(store, day) == 0  # First seen at 14:00: not run at once.
    assert scheduler.run_due(store, day + timedelta(hours=12)) == 0  # 02:00, before the tick.
    assert scheduler.run_due(store, day + timedelta(hours=13, minutes=1)) == 1  # 03:01.
    assert scheduler.run_due(store, day + timedelta(hours=14)) == 0
    job = Job.objects.get()
    assert (job.queue_name, job.priority) == ("other", 5)


@pytest.mark.django_db(transaction=True)
def test_racing_schedulers_in_threads_enqueue_a_tick_once():
    start = datetime(2030, 1, 1, tzinfo=UTC)
    Scheduler([entry(every=60)]).run_due(get_store(connection), start)
    barrier = threading.Barrier(8)
    counts = []

    def run():
        from django.db import connection as own

        try:
            barrier.wait()
            counts.append(Scheduler([entry(every=60)]).run_due(get_store(own),
                                                               start + timedelta(minutes=5)))
        finally:
            own.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == [0] * 7 + [1]
    assert Job.objects.count() == 1


def test_the_scheduler_computes_the_next_tick_locally():
    now = datetime(2030, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert entry(every=5).next_tick(now) == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    with override_settings(TIME_ZONE="Europe/Paris"):
        # 03:00 in Paris is 02:00 UTC in winter.
        assert entry(cron="0 3 * * *").next_tick(now) == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("schedule, message", [
    ({"x": {"every": 5}}, "needs 'task'"),
    ({"x": {"task": TICK_PATH}}, "exactly one of 'every'"),
    ({"x": {"task": TICK_PATH, "every": 5, "cron": "* * * * *"}}, "exactly one of 'every'"),
    ({"x": {"task": TICK_PATH, "cron": "61 * * * *"}}, "not a valid cron expression"),
    ({"x": {"task": TICK_PATH, "every": 0.1}}, "at least 1"),
    ({"x": {"task": TICK_PATH, "every": 5, "when": 1}}, "unknown keys"),
    ({"x": {"task": TICK_PATH, "every": 5, "args": "abc"}}, "must be a list"),
    ([1, 2], "must be a dict"),
])
def test_malformed_entries_are_clear_errors(schedule, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_schedule(schedule)
    with override_settings(TASKMILL_SCHEDULE=schedule):
        errors = check_schedule()
    assert [e.id for e in errors] == ["taskmill.E020"] and message in errors[0].msg


@pytest.mark.parametrize("spec, message", [
    ({"task": "tests.project.coordination_tasks.nope", "every": 5}, "cannot be imported"),
    ({"task": "tests.project.tasks.not_a_task", "every": 5}, "not a task"),
    ({"task": TICK_PATH, "every": 5, "queue_name": "nowhere"}, "nowhere"),
    ({"task": TICK_PATH, "every": 5, "args": [object]}, "not JSON"),
])
def test_entries_naming_bad_tasks_fail_the_system_check(spec, message):
    with override_settings(TASKMILL_SCHEDULE={"bad": spec}):
        errors = check_schedule()
    assert [e.id for e in errors] == ["taskmill.E021"] and message in errors[0].msg


@pytest.mark.django_db(transaction=True)
def test_a_worker_with_a_bad_schedule_refuses_to_start():
    env = schedule_env({"broken": {"task": TICK_PATH, "cron": "every night"}})
    run = subprocess.run([sys.executable, "-m", "django", "taskmill", "worker", "--burst"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "TASKMILL_SCHEDULE['broken']['cron'] is not a valid cron expression" in run.stderr
    assert tick  # The task module itself is fine.
