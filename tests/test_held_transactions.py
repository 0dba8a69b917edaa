"""A transaction left open on the job database is named: by the worker's log, by
``taskmill status`` and by the metrics. Until it ends, vacuum cannot clean up after the
jobs, and reads from the front of a queue step over what it left (``bench/pinned.py``;
claims start past it meanwhile: ``test_claim_starts.py``)."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from taskmill.cli import status
from taskmill.models import Worker
from taskmill.services.snapshots import SnapshotWatch
from taskmill.store import close_store, private_store
from tests.conftest import wait_until
from tests.test_metrics import scrape  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def open_transaction(database: str, application: str) -> psycopg.Connection:
    """Another session, in ``database``, holding a snapshot as an analytics query does."""
    settings = connection.settings_dict
    held = psycopg.connect(host=settings["HOST"], port=settings["PORT"] or 5432,
                           user=settings["USER"], dbname=database,
                           application_name=application)
    held.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    held.execute("SELECT 1")
    return held


def open_read_view(isolation: str = "REPEATABLE READ") -> Any:
    """Another MySQL session holding a read view, as an analytics query does: InnoDB
    purges nothing newer while it is open, whatever database it reads. (Under READ
    COMMITTED, a transaction that read and went idle: it holds none.)"""
    import MySQLdb

    settings = connection.settings_dict
    held = MySQLdb.connect(host=settings["HOST"], port=int(settings["PORT"] or 3306),
                           user=settings["USER"], password=settings["PASSWORD"],
                           database=settings["NAME"])
    cursor = held.cursor()
    cursor.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    cursor.execute("SELECT COUNT(*) FROM taskmill_job")
    cursor.fetchall()
    return held


@pytest.fixture
def held_snapshot() -> Iterator[Any]:
    """A transaction held open beside the job database's (``rollback()`` ends it): a
    snapshot of the job database on PostgreSQL, a read view on MySQL's server."""
    if connection.vendor == "postgresql":
        held = open_transaction(connection.settings_dict["NAME"], "analytics")
    elif connection.vendor == "mysql":
        held = open_read_view()
    else:
        pytest.skip("SQLite has one writer and no snapshot that holds back its cleanup")
    time.sleep(0.3)
    yield held
    held.close()


@pytest.fixture
def analytics() -> Iterator[psycopg.Connection]:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL tells which transaction holds back vacuum")
    held = open_transaction(connection.settings_dict["NAME"], "analytics")
    time.sleep(0.3)
    yield held
    held.close()


@pytest.fixture
def store():
    store = private_store("default")
    yield store
    close_store(store)


def test_the_store_names_the_oldest_open_transaction_of_its_database(analytics, store):
    held = store.oldest_snapshot()
    assert held is not None
    assert held.pid == analytics.info.backend_pid
    assert held.application == "analytics"
    assert held.state == "idle in transaction"
    assert 0.3 <= held.age < 60
    analytics.rollback()
    after = store.oldest_snapshot()
    assert after is None or after.pid != analytics.info.backend_pid


def test_a_transaction_in_another_database_is_not_the_job_databases_concern(store):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL tells which transaction holds back vacuum")
    elsewhere = open_transaction("postgres", "elsewhere")
    try:
        held = store.oldest_snapshot()
        assert held is None or held.pid != elsewhere.info.backend_pid
    finally:
        elsewhere.close()


def test_the_worker_warns_once_per_transaction_and_again_while_it_stays_open(
        analytics, store, caplog):
    watch = SnapshotWatch(warn_after=0.1, repeat_every=0.5)
    with caplog.at_level(logging.WARNING, logger="taskmill.worker"):
        assert watch.check(store).pid == analytics.info.backend_pid
        assert watch.check(store) is None  # Said already.
        time.sleep(0.6)
        assert watch.check(store).pid == analytics.info.backend_pid
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert f"pid {analytics.info.backend_pid}, 'analytics', idle in transaction" in warnings[0]
    assert "docs/scaling.md" in warnings[0]
    assert SnapshotWatch(warn_after=3600).check(store) is None  # Not old enough to say.


def test_status_names_the_transaction_and_json_gives_its_age(analytics, monkeypatch):
    monkeypatch.setattr(status, "WARN_AFTER", 0.1)
    out = io.StringIO()
    call_command("taskmill", "status", stdout=out)
    assert (f"(pid {analytics.info.backend_pid}, 'analytics', idle in transaction): until it "
            "ends, vacuum cannot remove") in out.getvalue()
    out = io.StringIO()
    call_command("taskmill", "status", "--json", stdout=out)
    held = json.loads(out.getvalue())["oldest_transaction"]
    assert held["pid"] == analytics.info.backend_pid and held["age"] >= 0.3


def test_status_says_nothing_of_a_short_transaction(analytics):
    out = io.StringIO()
    call_command("taskmill", "status", stdout=out)
    assert "A transaction has been open" not in out.getvalue()


def test_metrics_give_the_oldest_transactions_age(analytics, scrape):  # noqa: F811
    assert scrape()[("taskmill_oldest_transaction_seconds", ())] >= 0.3


def test_a_workers_own_sessions_say_which_worker_they_are(start_worker):
    """What pg_stat_activity shows of a worker's connections (and so a lock wait or a held
    transaction seen there): ``taskmill worker <host>:<pid>``."""
    if connection.vendor != "postgresql":
        pytest.skip("application_name is PostgreSQL's")
    start_worker("--processes", "1")
    pid = wait_until(lambda: Worker.objects.values_list("pid", flat=True).first(), timeout=30,
                     message="the worker to register")

    def named() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT application_name FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return [name for (name,) in cursor.fetchall()]

    expected = f"taskmill worker {socket.gethostname()}:{pid}"
    wait_until(lambda: expected in named(), timeout=10, message=f"a session named {expected!r}")


def test_mysql_names_the_transaction_whose_read_view_holds_back_purge(store):
    """InnoDB's purge waits for the oldest read view of the whole server: at 500 jobs/s,
    one held ten minutes took a worker from 499 to 209 jobs done a second (bench/RESULTS.md).
    """
    if connection.vendor != "mysql":
        pytest.skip("MySQL's read views")
    settings = connection.settings_dict
    held = open_read_view()
    try:
        time.sleep(0.3)
        found = store.oldest_snapshot()
        assert found is not None and found.pid == held.thread_id()
        assert found.state == "idle in transaction" and 0.3 <= found.age < 60
        assert found.application.startswith(f"{settings['USER']}@")
        out = io.StringIO()
        call_command("taskmill", "status", "--json", stdout=out)
        assert json.loads(out.getvalue())["oldest_transaction"]["pid"] == held.thread_id()
        held.rollback()
        time.sleep(0.2)  # innodb_trx is refreshed at most every 0.1 s.
        after = store.oldest_snapshot()
        assert after is None or after.pid != held.thread_id()
    finally:
        held.close()


def test_mysql_passes_over_an_idle_read_committed_transaction(store):
    """A READ COMMITTED transaction reads each statement from a read view of its own,
    closed when the statement ends: idle, it holds back no purge, and opening a window of
    claims from the starts for it (test_claim_starts.py) would buy nothing."""
    if connection.vendor != "mysql":
        pytest.skip("MySQL's read views")
    held = open_read_view(isolation="READ COMMITTED")
    try:
        time.sleep(0.3)
        found = store.oldest_snapshot()
        assert found is None or found.pid != held.thread_id(), found
    finally:
        held.close()


@pytest.fixture
def mysql_user_without_process() -> Iterator[dict[str, str]]:
    """A MySQL user with every privilege on the job database but PROCESS, as a
    project's application user usually is: ``information_schema.innodb_trx`` refuses it."""
    if connection.vendor != "mysql":
        pytest.skip("MySQL's PROCESS privilege")
    user, password = "taskmill_no_process", "no-process"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT ALL ON `{connection.settings_dict['NAME']}`.* TO '{user}'@'%'")
    yield {"USER": user, "PASSWORD": password}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_mysql_without_the_process_privilege_says_so_once_and_reads_from_the_front(
        mysql_user_without_process, caplog):
    """Without PROCESS nothing can tell which transaction holds back the purge: the
    store says why once, and reports none (claims then always read from the front)."""
    from django.db.backends.mysql.base import DatabaseWrapper

    from taskmill.store.mysql import MySQLJobStore

    caplog.set_level(logging.INFO, logger="taskmill.store")
    wrapper = DatabaseWrapper({**connection.settings_dict, **mysql_user_without_process},
                              alias="no_process")
    try:
        with wrapper.cursor() as cursor:  # The user reaches the job tables...
            cursor.execute("SELECT COUNT(*) FROM taskmill_job")
        store = MySQLJobStore(wrapper)
        assert store.oldest_snapshot() is None  # ...but not InnoDB's transactions.
        assert store.oldest_snapshot() is None
        said = [r.getMessage() for r in caplog.records if "PROCESS privilege" in r.getMessage()]
        assert len(said) == 1, said
    finally:
        wrapper.close()
