"""Connections across fork and threads: the naive way fails (the real error), taskmill's works.

Each naive test reproduces what people hit with raw ``multiprocessing`` or shared
connections; the test after it does the same work through taskmill and checks the
outcome: rows written by several child pids, the parent's session and transaction intact.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import DatabaseError, connection, connections, transaction

from taskmill import parallel_map
from taskmill.models import Job, JobStatus
from tests import parallel_helpers as helpers
from tests.conftest import ROOT, database_env
from tests.project.models import Execution

#: What drivers say when the server ended a session under them.
SESSION_KILLED = re.compile(
    r"server closed the connection|connection is lost|consuming input failed|"
    r"Lost connection|gone away|EOF|terminat", re.IGNORECASE)

fork = multiprocessing.get_context("fork")
needs_server = pytest.mark.skipif(
    os.environ.get("TASKMILL_TEST_DB", "sqlite") == "sqlite",
    reason="SQLite has no server session to share across fork")


def run_forked(target, *args) -> int:
    process = fork.Process(target=target, args=args)
    process.start()
    process.join(timeout=30)
    return process.exitcode


# -- fork ---------------------------------------------------------------------------


@needs_server
@pytest.mark.django_db(transaction=True)
def test_naive_child_that_closes_its_inherited_connection_kills_the_parents_session():
    helpers.session_id()  # The parent has a connection open, as after any query.
    assert run_forked(helpers.naive_close_inherited) == 0
    with pytest.raises(DatabaseError) as info:
        helpers.session_id()
    assert SESSION_KILLED.search(str(info.value)), str(info.value)
    connection.close()


@needs_server
@pytest.mark.django_db(transaction=True)
def test_close_inherited_connections_leaves_the_parents_session_alone():
    session = helpers.session_id()
    assert run_forked(helpers.taskmill_child_then_close, "own-child") == 0
    assert helpers.session_id() == session
    assert Execution.objects.get(label="own-child").pid != os.getpid()


@needs_server
@pytest.mark.django_db(transaction=True)
def test_own_multiprocessing_pool_with_close_inherited_connections_keeps_parent_intact():
    with transaction.atomic():
        Execution.objects.create(label="pool-parent", pid=os.getpid())
        session = helpers.session_id()
        with fork.Pool(2, initializer=helpers.pool_initializer) as pool:
            pids = pool.map(helpers.close_then_record, ["pool-child"] * 6)
        assert helpers.session_id() == session
    assert Execution.objects.filter(label="pool-parent").count() == 1
    assert Execution.objects.filter(label="pool-child").count() == 6
    assert os.getpid() not in pids


@needs_server
@pytest.mark.django_db(transaction=True)
def test_naive_child_using_its_inherited_connection_undoes_the_parents_transaction():
    with transaction.atomic():
        Execution.objects.create(label="parent-uncommitted", pid=os.getpid())
        assert run_forked(helpers.naive_rollback_inherited) == 0
        Execution.objects.create(label="parent-later", pid=os.getpid())
    # The parent committed both rows, as far as it knows. The child's ROLLBACK ran in
    # the parent's session and silently threw the first one away.
    assert Execution.objects.filter(label="parent-uncommitted").count() == 0
    assert Execution.objects.filter(label="parent-later").count() == 1


@needs_server
@pytest.mark.django_db(transaction=True)
def test_parallel_map_children_cannot_touch_the_parents_transaction():
    with transaction.atomic():
        Execution.objects.create(label="parent-uncommitted", pid=os.getpid())
        session = helpers.session_id()
        pids = parallel_map(helpers.rollback_own, ["child"] * 6, processes=2)
        parallel_map(helpers.close_then_record, ["child-closed"] * 2, processes=2)
        Execution.objects.create(label="parent-later", pid=os.getpid())
        assert helpers.session_id() == session
    assert Execution.objects.filter(label="parent-uncommitted").count() == 1
    assert Execution.objects.filter(label="parent-later").count() == 1
    assert Execution.objects.filter(label="child").count() == 6
    assert Execution.objects.filter(label="child-closed").count() == 2
    assert len(set(pids)) == 2 and os.getpid() not in pids


@needs_server
@pytest.mark.django_db(transaction=True)
def test_other_threads_connections_survive_a_fork_from_this_thread():
    """Forking frees the other threads' state in the child; their connections must not
    be closed with it (mysqlclient closes on free, on the parent's socket)."""
    ready, done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def other_thread() -> None:
        try:
            seen["before"] = helpers.session_id()
            ready.set()
            done.wait(30)
            seen["after"] = helpers.session_id()
        except Exception as exc:  # pragma: no cover - reported by the assertion
            seen["after"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_thread)
    thread.start()
    ready.wait(10)
    parallel_map(helpers.record_row, ["fork-from-main"] * 4, processes=2)
    done.set()
    thread.join(30)
    assert seen["after"] == seen["before"]


# -- threads ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_naive_sharing_of_a_django_connection_between_threads_is_refused():
    helpers.session_id()
    shared = connections["default"]
    errors: list[Exception] = []

    def use_shared() -> None:
        try:
            with shared.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=use_shared)
    thread.start()
    thread.join()
    assert errors and "can only be used in that same thread" in str(errors[0])


@pytest.mark.django_db(transaction=True)
def test_naive_sharing_of_one_pymysql_connection_between_threads_corrupts_the_protocol():
    if connection.vendor != "mysql":
        pytest.skip("PyMySQL talks to MariaDB/MySQL")
    import pymysql

    settings = connection.settings_dict
    shared = pymysql.connect(host=settings["HOST"], port=int(settings["PORT"]),
                             user=settings["USER"], database=settings["NAME"])
    errors: list[BaseException] = []
    stop = time.monotonic() + 10

    def hammer() -> None:
        while not errors and time.monotonic() < stop:
            try:
                with shared.cursor() as cursor:
                    cursor.execute("SELECT REPEAT('x', 20000), %s", [threading.get_ident()])
                    cursor.fetchall()
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with contextlib.suppress(Exception):
        shared.close()
    assert errors, "four threads shared one connection for 10s without a protocol error"
    print("PyMySQL shared across threads:", repr(errors[0]))


@needs_server
@pytest.mark.django_db(transaction=True)
def test_jobs_running_at_once_on_executor_threads_never_share_a_connection(start_worker):
    helpers.db_label_slow.module_path  # noqa: B018 - importable by the worker
    from taskmill import enqueue_many

    enqueue_many(helpers.db_label_slow, [("threaded",)] * 24)
    worker = start_worker("--burst", "--processes", "1", "--threads", "4")
    assert worker.wait(timeout=60) == 0, worker.output
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    rows = Execution.objects.filter(label="threaded")
    assert rows.count() == 24
    overlapping = 0
    for a in rows:
        for b in rows:
            if a.pk < b.pk and a.started < b.finished and b.started < a.finished:
                overlapping += 1
                # Jobs running at the same time never share a session.
                assert a.value["session"] != b.value["session"]
    assert overlapping, "the four threads never ran two jobs at once"


# -- psycopg pool and PgBouncer ------------------------------------------------------

POOL_SCRIPT = """
import json, os, django
django.setup()
from django.db import connection, transaction
from taskmill import enqueue_many, parallel_map
from tests import parallel_helpers as helpers
from tests.project.models import Execution
from tests.project.tasks import record
assert connection.settings_dict["OPTIONS"].get("pool") or os.environ.get("TASKMILL_PG_BOUNCER")
with transaction.atomic():
    Execution.objects.create(label="script-parent", pid=os.getpid())
    pids = parallel_map(helpers.record_row, ["script-child"] * 6, processes=2)
    nested = parallel_map(helpers.count_rows, ["script-parent"], processes=1)
enqueue_many(record, [(f"job-{i}",) for i in range(20)])
print(json.dumps({"pids": pids, "nested": nested, "me": os.getpid()}))
"""


def run_variant(env: dict[str, str], *args: str, script: str | None = None) -> str:
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.project.settings_pg_variants"}
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "django",
                                                            *args]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None or args:  # Never leave a worker's children behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stdout + stderr
    return stdout


def check_variant_outcome(stdout: str) -> None:
    body = json.loads(stdout.strip().splitlines()[-1])
    assert body["nested"] == [0]  # The children did not see the parent's uncommitted row.
    assert len(set(body["pids"])) == 2 and body["me"] not in body["pids"]
    assert Execution.objects.filter(label="script-parent").count() == 1
    assert Execution.objects.filter(label="script-child").count() == 6
    assert Job.objects.count() == 20
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    for i in range(20):  # Each job ran exactly once.
        assert Execution.objects.filter(label=f"job-{i}").count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_parallel_map_and_workers_with_djangos_psycopg_pool():
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    env = {**database_env(), "TASKMILL_PG_POOL": "1"}
    stdout = run_variant(env, script=POOL_SCRIPT)
    run_variant(env, "taskmill", "worker", "--burst", "--processes", "2", "--threads", "2")
    check_variant_outcome(stdout)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_workers_with_djangos_pool_at_its_defaults_and_as_many_threads():
    """The pool holds four connections by default: four threads' tasks have one each,
    and the worker's own connections (producer, heartbeat, maintenance, listener,
    progress writes) never come from it."""
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    from taskmill import enqueue_many

    env = {**database_env(), "TASKMILL_PG_POOL": "defaults"}
    # Four jobs at once, each holding its thread's pooled connection for three seconds.
    enqueue_many(helpers.holds_a_connection.using(max_attempts=1), [("pooled", 3.0)] * 4)
    run_variant(env, "taskmill", "worker", "--burst", "--processes", "1", "--threads", "4")
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    assert Execution.objects.filter(label="pooled").count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_pool_smaller_than_the_threads_is_refused_at_start_with_the_fix():
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    env = {**database_env(), "TASKMILL_PG_POOL": "defaults",
           "DJANGO_SETTINGS_MODULE": "tests.project.settings_pg_variants"}
    refused = subprocess.run([sys.executable, "-m", "django", "taskmill", "worker",
                              "--processes", "1", "--threads", "6"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "--threads 6 needs up to 6 connections from the pool of DATABASES['default']" \
        in refused.stderr
    assert '"pool": {"max_size": 6}' in refused.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_parallel_map_and_workers_behind_pgbouncer_in_transaction_mode(pgbouncer):
    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer fronts PostgreSQL")
    env = {**database_env(), "TASKMILL_PG_BOUNCER": "1", "TASKMILL_PG_PORT": str(pgbouncer.port)}
    stdout = run_variant(env, script=POOL_SCRIPT)
    # LISTEN does not survive transaction pooling: the worker falls back to polling.
    run_variant(env, "taskmill", "worker", "--burst", "--processes", "2", "--threads", "2")
    check_variant_outcome(stdout)


# -- the job database apart from the data ---------------------------------------------

JOBS_DB_SCRIPT = """
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", database="jobs", verbosity=0)
from taskmill import enqueue_batch, parallel_map
from tests import parallel_helpers as helpers
batch = enqueue_batch(helpers.batch_child, range(6), then=helpers.batch_done)
pids = parallel_map(helpers.record_row, ["jobs-db-child"] * 4, processes=2)
print(json.dumps({"batch": batch.id, "pids": pids}))
"""

JOBS_DB_REPORT = """
import json, sys, django
django.setup()
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
from taskmill import get_batch
setup_test_environment()  # the test client's host is allowed
status = get_batch(sys.argv[1])
# The admin reads the job tables where they are (alias "jobs"), not from "default".
admin = User.objects.create_superuser("jobs-admin", "", "x")
client = Client()
client.force_login(admin)
page = client.get("/admin/taskmill/job/?status__exact=SUCCESSFUL").content.decode()
shown = sum(rid.replace("-", "")[-12:] in page for rid in status.result_ids)
User.objects.filter(username="jobs-admin").delete()
print(json.dumps({"succeeded": status.succeeded, "then": status.then_result_id,
                  "in_admin": shown}))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_jobs_in_another_database_than_the_data_tasks_touch():
    if connection.vendor != "postgresql":
        pytest.skip("one vendor is enough for the routing of aliases")
    import psycopg

    name = f"{connection.settings_dict['NAME']}_jobs"
    dsn = dict(host=connection.settings_dict["HOST"], port=connection.settings_dict["PORT"],
               user=connection.settings_dict["USER"], dbname="postgres", autocommit=True)
    with psycopg.connect(**dsn) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**database_env(), "TASKMILL_JOBS_DB": name}
        started = json.loads(run_variant(env, script=JOBS_DB_SCRIPT).strip().splitlines()[-1])
        run_variant(env, "taskmill", "worker", "--burst", "--processes", "2")
        report = run_variant(env, script=JOBS_DB_REPORT.replace("sys.argv[1]",
                                                                 repr(started["batch"])))
        status = json.loads(report.strip().splitlines()[-1])
    finally:
        with psycopg.connect(**dsn) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert status["succeeded"] == 6 and status["then"]
    assert status["in_admin"] == 6
    # The tasks wrote their rows to "default"; no job row ever landed there.
    assert Execution.objects.filter(label__startswith="batch-child-").count() == 6
    assert Execution.objects.filter(label=f"then-{started['batch']}").count() == 1
    assert Execution.objects.filter(label="jobs-db-child").count() == 4
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_workers_asynchronous_commit_never_outlives_its_transaction():
    """Behind PgBouncer in transaction mode the next client gets the same server session:
    a session-level setting would make its commits asynchronous too (enqueues included)."""
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    from taskmill.store import private_store
    from tests.project.tasks import add

    add.enqueue(1, 1)
    add.enqueue(2, 2)
    store = private_store("default")

    def setting() -> str:
        with store.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    try:
        with store.atomic():  # A worker's round: outcomes and the next claim, one commit.
            assert len(store.claim(["default"], 1, "host:1:commit")) == 1
            assert setting() == "off"
        assert setting() == "on"
        assert len(store.claim(["default"], 1, "host:1:commit")) == 1  # A claim alone.
        assert setting() == "on"
    finally:
        store.connection.close()


@pytest.mark.django_db(transaction=True)
def test_check_deploy_names_a_transaction_mode_pooler(pgbouncer):
    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer fronts PostgreSQL")
    direct = subprocess.run([sys.executable, "-m", "django", "check", "--deploy", "--database",
                             "default"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**database_env(),
                                 "DJANGO_SETTINGS_MODULE": "tests.project.settings_pg_variants"})
    assert "taskmill.W103" not in direct.stdout + direct.stderr
    env = {**database_env(), "TASKMILL_PG_BOUNCER": "1", "TASKMILL_PG_PORT": str(pgbouncer.port),
           "DJANGO_SETTINGS_MODULE": "tests.project.settings_pg_variants"}
    pooled = subprocess.run([sys.executable, "-m", "django", "check", "--deploy", "--database",
                             "default"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert "taskmill.W103" in pooled.stdout + pooled.stderr, pooled.stdout + pooled.stderr


# -- sessions of vanished workers ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_connection_is_dropped_by_the_server_soon_after_its_host_vanishes():
    """The bounds a worker's own connections carry (the lease: 30 s here); the multi-host
    test (tests/test_hosts.py) cuts a host inside a transaction to show their effect."""
    from taskmill.db import private_connection

    wrapper = private_connection("default", vanish_after=30)
    try:
        with wrapper.cursor() as cursor:
            if wrapper.vendor == "postgresql":
                cursor.execute("SELECT current_setting('tcp_keepalives_idle'), "
                               "current_setting('tcp_keepalives_interval'), "
                               "current_setting('tcp_keepalives_count'), "
                               "current_setting('tcp_user_timeout')")
                assert cursor.fetchone() == ("10", "5", "3", "30000")
            elif wrapper.vendor == "mysql" and wrapper.mysql_is_mariadb:
                cursor.execute("SELECT @@session.idle_transaction_timeout")
                assert cursor.fetchone() == (30,)
            else:
                pytest.skip(f"{wrapper.vendor} has no per-session bound")
        wrapper.close()  # A reconnection carries them too.
        with wrapper.cursor() as cursor:
            if wrapper.vendor == "postgresql":
                cursor.execute("SHOW tcp_user_timeout")
                assert cursor.fetchone() == ("30000",)
        plain = private_connection("default")
        with plain.cursor() as cursor:
            if plain.vendor == "postgresql":
                cursor.execute("SHOW tcp_user_timeout")
                assert cursor.fetchone() == ("0",)
        plain.close()
    finally:
        wrapper.close()
