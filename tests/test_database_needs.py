"""What each database must offer, and the MySQL/MariaDB specifics: isolation levels,
unique inserts that lock nothing, and concurrency lock rows that do not pile up."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, connections
from django.test import override_settings

from taskmill.capabilities import mysql_problems, sqlite_problems
from taskmill.checks import check_job_database_capabilities, check_time_zone_support
from taskmill.jobs import new_job
from taskmill.models import Job, JobStatus
from taskmill.store import Outcome, get_store, private_store
from tests.project.coordination_tasks import limited, paired, unique_job

pytestmark = pytest.mark.django_db(transaction=True)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_the_job_database_passes_its_own_checks():
    assert [m for m in check_job_database_capabilities(databases=["default"])
            if m.is_serious()] == []
    assert check_time_zone_support() == []


@override_settings(USE_TZ=False)
def test_times_stored_without_a_time_zone_are_refused():
    assert ids(check_time_zone_support()) == ["taskmill.E003"]


def test_versions_without_what_the_claim_needs_are_errors():
    # Such servers cannot run here: the rules are checked on the versions they report.
    assert ids(sqlite_problems("default", (3, 31, 1))) == ["taskmill.E011"]
    assert ids(sqlite_problems("default", (3, 45, 1))) == []
    assert ids(sqlite_problems("default", (3, 45, 1), None)) == ["taskmill.W016"]
    assert ids(mysql_problems("default", (10, 5, 9), True, "read committed", None)) == [
        "taskmill.E012"]
    assert ids(mysql_problems("default", (10, 6, 18), True, "read committed", None)) == [
        "taskmill.E013"]
    assert ids(mysql_problems("default", (10, 11, 9), True, "read committed", None)) == []
    assert ids(mysql_problems("default", (8, 0, 0), False, "read committed", None)) == [
        "taskmill.E012"]
    assert ids(mysql_problems("default", (8, 4, 2), False, "REPEATABLE READ", "Europe/Paris")) \
        == ["taskmill.W014", "taskmill.W015"]


def test_concurrency_limits_hold_when_the_project_reads_repeatably():
    """Two workers claim a limit-1 key at once; the second counts its key's running jobs
    once the first committed, whatever isolation level the project set. (At REPEATABLE
    READ the count would come from a snapshot older than the first's claim.)"""
    if connection.vendor != "mysql":
        pytest.skip("REPEATABLE READ snapshots are MySQL's default")
    options = connections.settings["default"].setdefault("OPTIONS", {})
    chosen = options.get("isolation_level")
    options["isolation_level"] = "repeatable read"
    for label in ("a", "b"):
        limited.enqueue(label, 0.0)
    taken: list = []

    def second_worker() -> None:  # Read earlier in its transaction, then claims.
        store = private_store("default")
        try:
            with store.atomic():
                store.fetchone("job_state", {"id": store.id_param(Job.objects.first().id)})
                first_in.wait(10)
                taken.extend(store.claim(["default"], 5, "host:2:second"))
        finally:
            store.connection.close()

    first = private_store("default")
    first_in = threading.Event()
    try:
        with first.atomic():
            assert len(first.claim(["default"], 5, "host:1:first")) == 1
            second = threading.Thread(target=second_worker)
            second.start()
            first_in.set()
            time.sleep(0.5)  # The second waits for the key's lock...
        second.join(10)  # ...until the first commits.
    finally:
        first.connection.close()
        options["isolation_level"] = chosen
    assert taken == []
    assert Job.objects.filter(status=JobStatus.RUNNING).count() == 1


def test_enqueueing_a_duplicate_in_an_open_transaction_does_not_hold_up_the_holder():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: any open write transaction holds up the others")
    holder = unique_job.enqueue("shared")
    worker_store, enqueuer = private_store("default"), private_store("default")
    done = threading.Event()
    try:
        (job,) = worker_store.claim(["default"], 1, "host:1:holder")
        with enqueuer.atomic():  # A request that enqueues the duplicate, then goes on.
            assert enqueuer.insert_unique(new_job(unique_job, ["shared"], {})) == job.id

            def complete() -> None:  # The worker, on a connection of its thread's own.
                own = private_store("default")
                try:
                    own.complete([Outcome(job=job, finished_at=job.enqueued_at,
                                          succeeded=True)], "host:1:holder")
                    done.set()
                finally:
                    own.connection.close()

            finisher = threading.Thread(target=complete)
            finisher.start()
            finisher.join(timeout=5)
            assert done.is_set(), "the holder's completion waited on the enqueuer's transaction"
    finally:
        worker_store.connection.close()
        enqueuer.connection.close()
    assert Job.objects.get(id=holder.id).status == JobStatus.SUCCESSFUL


def test_lock_rows_of_keys_no_job_uses_any_more_are_pruned():
    if connection.vendor != "mysql":
        pytest.skip("only MySQL keeps a lock row per concurrency key")
    store = get_store("default")
    limited.enqueue("one", 0.0)
    paired.enqueue("two", 0.0)
    claimed = store.claim(["default"], 5, "host:1:keys")
    waiting = limited.enqueue("three", 0.0)  # its key stays in use
    store.complete([Outcome(job=job, finished_at=job.enqueued_at, succeeded=True)
                    for job in claimed], "host:1:keys")

    def lock_keys() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT lock_key FROM taskmill_concurrency_lock")
            return {row[0] for row in cursor.fetchall()}

    assert lock_keys() == {limited.module_path, "pair"}
    assert store.prune_concurrency_locks() == 1
    assert lock_keys() == {limited.module_path}
    assert Job.objects.get(id=waiting.id).status == JobStatus.READY


def test_pruning_lock_rows_does_not_deadlock_a_claim_of_the_key():
    """The prune locked a key's row, then waited for the job a claim was leasing; the
    claim then asked for the key's row: InnoDB rolled one of them back (seen 0-3 times
    in a 20 s drain of a limit-1 key by 8 threads)."""
    if connection.vendor != "mysql":
        pytest.skip("only MySQL keeps a lock row per concurrency key")
    from taskmill.store import close_store

    job = limited.enqueue("held", 0.0)
    claim = private_store("default")
    errors: list[BaseException] = []
    try:
        with claim.atomic(), claim.connection.cursor() as cursor:
            claim.execute(cursor, "lock_concurrency_key", {"key": limited.module_path})
        with claim.atomic(), claim.connection.cursor() as cursor:
            # A claim's lease of the key's job: its index entries locked till the commit.
            cursor.execute("UPDATE taskmill_job SET status = 'RUNNING' WHERE id = %s",
                           [claim.id_param(uuid.UUID(job.id))])

            def prune() -> None:
                pruner = private_store("default")  # A connection serves one thread.
                try:
                    pruner.prune_concurrency_locks()
                except BaseException as error:  # noqa: BLE001 (reported below)
                    errors.append(error)
                finally:
                    close_store(pruner)

            pruning = threading.Thread(target=prune)
            pruning.start()
            pruning.join(timeout=1)  # It finishes, or waits on the leased job's entry.
            claim.execute(cursor, "lock_concurrency_key", {"key": limited.module_path})
        pruning.join(timeout=10)
    except BaseException as error:  # noqa: BLE001
        errors.append(error)
    finally:
        close_store(claim)
    assert not errors
    assert Job.objects.get(id=job.id).status == JobStatus.RUNNING
