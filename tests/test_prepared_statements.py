"""A worker's claims and completions are prepared statements on its own PostgreSQL
connection, and fall back to plain ones where prepared statements do not survive."""

from __future__ import annotations

import logging

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill.db import private_connection
from taskmill.models import Job, JobStatus
from taskmill.store import Outcome, close_store, get_store, private_store
from taskmill.store.postgresql import PostgreSQLJobStore
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "host:1:prepared"


@pytest.fixture
def store():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are the PostgreSQL store's")
    store = private_store("default")
    store.register_worker(WORKER, "host", 1, ["default"], 1)
    yield store
    close_store(store)


def prepared_statements(store) -> list[str]:
    with store.connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
        return [row[0] for row in cursor.fetchall()]


def test_claims_are_planned_once_per_connection(store):
    for number in range(3):
        add.enqueue(number, 1)
    first, second = store.claim(["default"], 1, WORKER), store.claim(["default"], 1, WORKER)
    done = Outcome(job=first[0], finished_at=timezone.now(), succeeded=True, return_json="1")
    store.record_outcomes([done], WORKER)
    store.next_wake(["default"])
    assert {name.rsplit("_", 1)[0] for name in prepared_statements(store)} == {
        "taskmill_claim", "taskmill_next_wake", "taskmill_claim_past_starts",
        "taskmill_next_wake_past_starts"}
    assert second[0].id != first[0].id
    assert Job.objects.get(id=first[0].id).status == JobStatus.SUCCESSFUL
    # The project's own connections prepare nothing: they may be shared through a pooler.
    assert get_store("default").prepare is False


def test_a_claim_whose_prepared_statement_vanished_goes_on_unprepared(store, caplog):
    add.enqueue(1, 1)
    add.enqueue(2, 2)
    store.claim(["default"], 1, WORKER)
    # What a pooler in transaction mode does: the next statement meets another session.
    with store.connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    with caplog.at_level(logging.WARNING, "taskmill.store"):
        (job,) = store.claim(["default"], 1, WORKER)
    assert Job.objects.get(id=job.id).status == JobStatus.RUNNING
    assert store.prepare is False
    assert "Prepared statements do not stay in one session" in caplog.text
    assert prepared_statements(store) == []


def test_inside_a_round_the_transaction_fails_and_the_next_round_succeeds(store):
    add.enqueue(1, 1)
    add.enqueue(2, 2)
    (first,) = store.claim(["default"], 1, WORKER)
    with store.connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    done = Outcome(job=first, finished_at=timezone.now(), succeeded=True, return_json="2")
    with pytest.raises(DatabaseError), store.atomic():
        store.record_outcomes([done], WORKER)
        store.claim(["default"], 1, WORKER)
    assert Job.objects.get(id=first.id).status == JobStatus.RUNNING  # rolled back
    done = Outcome(job=first, finished_at=timezone.now(), succeeded=True, return_json="2")
    with store.atomic():
        store.record_outcomes([done], WORKER)
        (second,) = store.claim(["default"], 1, WORKER)
    assert Job.objects.get(id=first.id).status == JobStatus.SUCCESSFUL
    assert Job.objects.get(id=second.id).status == JobStatus.RUNNING


def test_a_project_that_turned_prepared_statements_off_gets_none(store):
    off = private_connection("default")
    off.settings_dict["OPTIONS"]["prepare_threshold"] = None  # PgBouncer's advice
    assert PostgreSQLJobStore(off, prepare=True).prepare is False


def test_a_round_claims_prepared_and_completes_freshly_planned(store):
    for number in range(3):
        add.enqueue(number, 1)
    held = store.claim(["default"], 2, WORKER)
    done = [Outcome(job=job, finished_at=timezone.now(), succeeded=True, return_json="1")
            for job in held]
    with CaptureQueriesContext(store.connection) as round_trips:
        (claimed,) = store.complete_and_claim(done, ["default"], 5, WORKER)
    statements = [query["sql"] for query in round_trips.captured_queries]
    assert len(statements) == 4, statements  # One transaction: BEGIN ... COMMIT.
    assert statements[1].startswith("UPDATE taskmill_job AS j SET status = 'SUCCESSFUL'")
    assert statements[2].startswith("EXECUTE taskmill_claim_")
    assert all(o.recorded for o in done)
    assert Job.objects.filter(status=JobStatus.SUCCESSFUL).count() == 2
    assert Job.objects.get(id=claimed.id).lease_owner == WORKER
