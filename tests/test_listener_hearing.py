"""Behind PgBouncer in transaction mode LISTEN is accepted, yet no notification ever
arrives: a worker that trusted it waited out its whole poll interval for each job that
came after a short pause. Its listener now sends itself a notification after each LISTEN;
unheard, it says so once, and the worker looks for jobs as an unwoken one does
(taskmill/worker/looks.py). On a direct connection it hears, and says nothing."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest
from django.db import connection

from taskmill.models import Job, JobStatus
from taskmill.worker.notifier import HEARING_PROBE_WAIT
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

#: The start of the listener's warning when its own notification does not come back.
DEAF = "Job notifications do not reach this worker"


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY and PgBouncer are PostgreSQL's")


def seconds_to_pick_up(record, label: str) -> float:
    """Enqueue ``record(label)`` and wait for it to succeed: seconds from its enqueue."""
    enqueued = time.monotonic()
    result = record.enqueue(label)
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, interval=0.02, message=f"job {label} to run")
    return time.monotonic() - enqueued


def test_a_worker_behind_pgbouncer_in_transaction_mode_says_it_is_deaf_and_looks_soon(
        start_worker, pgbouncer):
    from tests.project.tasks import record

    worker = start_worker("--processes", "1", "--poll-interval", "5", env={
        "DJANGO_SETTINGS_MODULE": "tests.project.settings_pg_variants",
        "TASKMILL_PG_BOUNCER": "1", "TASKMILL_PG_PORT": str(pgbouncer.port)})
    seconds_to_pick_up(record, "warm-up")  # Taken at the worker's first look.
    # Its listener has listened (it starts before the first look) and judged by now.
    time.sleep(HEARING_PROBE_WAIT + 1)
    seconds_to_pick_up(record, "after the verdict")
    time.sleep(0.2)  # Idle now; trusting LISTEN, it looked again a poll (5 s) later.
    pickup = seconds_to_pick_up(record, "next")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    assert pickup < 1.5, f"picked up after {pickup:.2f}s\n{worker.output}"
    assert worker.output.count(DEAF) == 1, worker.output
    assert "PgBouncer's pool_mode = transaction" in worker.output


def test_a_worker_with_a_direct_connection_hears_and_is_woken_after_a_quiet_spell(
        start_worker):
    """It hears its own notification (the in-process test below shows ``hears`` set),
    says nothing, and NOTIFY still wakes it when looks of its own would come late."""
    from tests.project.tasks import record

    worker = start_worker("--processes", "1", "--poll-interval", "5")
    seconds_to_pick_up(record, "warm-up")
    # Looking on its own, it would look next about 5.1 s after taking the warm-up (its
    # looks double from 10 ms): a job enqueued now would wait about two seconds.
    time.sleep(HEARING_PROBE_WAIT + 1)
    pickup = seconds_to_pick_up(record, "woken")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    assert pickup < 1.0, f"picked up after {pickup:.2f}s\n{worker.output}"
    assert DEAF not in worker.output, worker.output


def test_a_listener_hears_directly_and_judges_again_when_it_reconnects_through_pgbouncer(
        pgbouncer, caplog, monkeypatch):
    """Its connections reach the server directly, then, once its session is cut, through
    PgBouncer: the path that changes under a running worker when a pooler is put in front."""
    from taskmill.worker import notifier

    port = {"now": connection.settings_dict["PORT"]}

    def private_connection(alias: str):
        wrapper = connect_privately(alias)
        wrapper.settings_dict["PORT"] = port["now"]  # A copy of the alias's settings.
        return wrapper

    connect_privately = notifier.private_connection
    monkeypatch.setattr(notifier, "private_connection", private_connection)
    caplog.set_level(logging.INFO, logger="taskmill.worker")
    wake = threading.Event()
    listener = notifier.Listener("default", ["default"], wake)
    listener.start()
    try:
        assert listener.hears.wait(HEARING_PROBE_WAIT), "a direct connection did not hear"
        time.sleep(0.3)
        assert not wake.is_set()  # Its own notification names no queue: nothing to claim.

        port["now"] = str(pgbouncer.port)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND query = 'LISTEN taskmill'")
            assert cursor.fetchone() is not None
        wait_until(lambda: DEAF in caplog.text, timeout=HEARING_PROBE_WAIT + 10,
                   message="the deaf verdict after reconnecting through PgBouncer")
        assert listener.listening.is_set()  # LISTEN was accepted there...
        assert not listener.hears.is_set()  # ...but nothing comes of it.
        assert caplog.text.count(DEAF) == 1
    finally:
        listener.stop()
        listener.join(timeout=5)
    assert not listener.is_alive()
