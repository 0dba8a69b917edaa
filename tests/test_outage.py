"""Database outages: wait_for_db, a worker started while the database is down, and one
whose database restarts mid-run. Everything runs against a private PostgreSQL cluster
(initdb in a temporary directory, a free port) that the tests stop and start; the
shared server is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests import servers
from tests.conftest import ROOT, wait_until

DBNAME = "taskmill_outage"


def base_env(port: int, vendor: str = "postgresql") -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="tests.project.settings",
               TASKMILL_TEST_DB=vendor, TASKMILL_PG_NAME=DBNAME, TASKMILL_PG_PORT=str(port),
               TASKMILL_PG_HOST="127.0.0.1", TASKMILL_MYSQL_PORT=str(port),
               TASKMILL_MYSQL_HOST="127.0.0.1")
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[servers.PrivatePostgres]:
    reason = servers.can_run()
    if reason:
        pytest.skip(reason)
    if os.environ.get("TASKMILL_TEST_DB") != "postgresql":
        pytest.skip("outages are exercised once, in the PostgreSQL run (a private server)")
    server = servers.PrivatePostgres()
    try:
        server.start()
        server.createdb(DBNAME)
        migrated = manage(base_env(server.port), "migrate", "-v", "0")
        assert migrated.returncode == 0, migrated.stderr
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg(private_pg: servers.PrivatePostgres) -> Iterator[servers.PrivatePostgres]:
    """The private server, up and with empty job tables; left up after the test."""
    if not servers.port_open(private_pg.port):
        private_pg.start()
    query(private_pg, "TRUNCATE taskmill_job, taskmill_joberror, taskmill_worker, "
                      "project_execution")
    yield private_pg
    if not servers.port_open(private_pg.port):
        private_pg.start()


def query(server: servers.PrivatePostgres, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server.port, dbname=DBNAME, user="postgres",
                         autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def try_query(server: servers.PrivatePostgres, sql: str) -> list[tuple] | None:
    try:
        return query(server, sql)
    except Exception:
        return None


def enqueue(server: servers.PrivatePostgres, labels: list[str], sleep: float = 0.0,
            task: str = "record") -> None:
    args = "(label,)" if task == "with_context" else f"(label, {sleep})"
    code = ("import django; django.setup()\n"
            f"from taskmill import enqueue_many\nfrom tests.project.tasks import {task}\n"
            f"enqueue_many({task}, [{args} for label in {labels!r}])\n")
    out = subprocess.run([sys.executable, "-c", code], env=base_env(server.port), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


class Worker:
    """``manage.py taskmill worker`` on the private server, its output in a file."""

    def __init__(self, server: servers.PrivatePostgres, *args: str) -> None:
        fd, self.path = tempfile.mkstemp(suffix=".log")
        self.log = os.fdopen(fd, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "taskmill", "worker", *args],
            env=base_env(server.port), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)

    def output(self) -> str:
        with open(self.path) as f:
            return f.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.log.close()
            os.unlink(self.path)


# -- wait_for_db ----------------------------------------------------------------------


@pytest.mark.parametrize("vendor, failure", [("postgresql", "connection refused"),
                                             ("mysql", "connection refused")])
def test_wait_for_db_gives_up_with_one_line_naming_host_port_and_failure(vendor, failure):
    port = servers.free_port()  # Nothing listens there.
    started = time.monotonic()
    out = manage(base_env(port, vendor), "wait_for_db", "--timeout", "1")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"127.0.0.1:{port}" in lines[0] and failure in lines[0], lines[0]
    assert "not available after 1s" in lines[0]
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("vendor, failure", [("postgresql", "no answer before the timeout"),
                                             ("mysql", "did not answer the handshake")])
def test_wait_for_db_names_a_server_that_accepts_but_never_answers(vendor, failure):
    with socket.socket() as silent:  # Accepts connections (the kernel does), says nothing.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        out = manage(base_env(port, vendor), "wait_for_db", "--timeout", "2")
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and failure in line, line


def test_wait_for_db_returns_0_once_a_stopped_server_is_back(pg):
    pg.stop()
    waiting = subprocess.Popen([sys.executable, "-m", "django", "wait_for_db", "--timeout", "40"],
                               env=base_env(pg.port), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiting.poll() is None  # Still waiting while the server is down.
    pg.start()
    stdout, stderr = waiting.communicate(timeout=40)
    assert waiting.returncode == 0, stderr
    assert f"127.0.0.1:{pg.port}" in stdout and "is available" in stdout


CHECK = """
import django
django.setup()
from taskmill.checks import check_job_database_reachable
for error in check_job_database_reachable(databases=["default"]):
    print(error.id, error.msg)
"""


def test_system_check_explains_an_unreachable_database_in_plain_words():
    port = servers.free_port()
    out = subprocess.run([sys.executable, "-c", CHECK], env=base_env(port), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    assert line.startswith("taskmill.E010 Cannot reach database 'default'")
    assert f"127.0.0.1:{port}" in line and "nothing listens there" in line


# -- workers --------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_started_while_the_database_is_down_waits_then_runs_every_job(pg):
    pg.stop()
    worker = Worker(pg, "--processes", "1", "--threads", "2")
    try:
        time.sleep(2.5)
        assert worker.process.poll() is None, worker.output()
        pg.start()
        enqueue(pg, [f"late-{i}" for i in range(10)])
        wait_until(lambda: try_query(pg, "SELECT count(*) FROM taskmill_job WHERE status = "
                                         "'SUCCESSFUL'") == [(10,)], timeout=30,
                   message="the jobs enqueued after the database came back")
        output = worker.output()
    finally:
        assert worker.stop() == 0
    waiting = [line for line in output.splitlines() if "unavailable" in line]
    assert len(waiting) == 1, output  # One line, not one per retry.
    assert f"127.0.0.1:{pg.port}" in waiting[0] and "nothing listens there" in waiting[0]
    assert "is back" in output
    rows = query(pg, "SELECT label, count(*) FROM project_execution GROUP BY label")
    assert sorted(rows) == sorted((f"late-{i}", 1) for i in range(10))


@pytest.mark.slow
def test_worker_rides_out_a_database_restart_without_losing_or_repeating_a_job(pg):
    labels = [f"job-{i}" for i in range(60)]
    # Progress writes go through each executor thread's private connection: open them.
    enqueue(pg, ["progress-before-0", "progress-before-1"], task="with_context")
    enqueue(pg, labels, sleep=0.05)
    worker = Worker(pg, "--processes", "1", "--threads", "2")
    try:
        wait_until(lambda: (try_query(pg, "SELECT count(*) FROM project_execution")
                            or [(0,)])[0][0] >= 5, timeout=30, message="the first jobs")
        pg.stop()
        time.sleep(1.5)
        assert worker.process.poll() is None, worker.output()
        pg.start()
        wait_until(lambda: try_query(pg, "SELECT count(*) FROM taskmill_job WHERE status = "
                                         "'SUCCESSFUL'") == [(62,)], timeout=60,
                   message="every job to succeed after the restart")
        # Their private connections died with the server; jobs after it still report.
        after = [f"progress-after-{i}" for i in range(4)]
        enqueue(pg, after, task="with_context")
        wait_until(lambda: try_query(pg, "SELECT count(*) FROM taskmill_job WHERE status = "
                                         "'SUCCESSFUL'") == [(66,)], timeout=30,
                   message="jobs reporting progress after the restart")
        assert worker.process.poll() is None  # It kept running throughout.
        output = worker.output()
    finally:
        assert worker.stop() == 0
    rows = dict(query(pg, "SELECT label, count(*) FROM project_execution GROUP BY label"))
    for label in ["progress-before-0", "progress-before-1", *after]:
        assert rows.pop(label) == 1
    assert rows == {label: 1 for label in labels}, output  # None lost, none run twice.
    assert query(pg, "SELECT count(*) FROM taskmill_job WHERE progress IS NOT NULL "
                     "AND attempts = 1 AND args::text LIKE '%progress-after%'") == [(4,)]
    assert "unavailable" in output and "is back" in output
    assert output.count("unavailable") <= 6, output  # One line per outage and thread.


@pytest.mark.slow
def test_a_restart_is_said_once_back_only_when_it_is_and_work_resumes_at_once(pg):
    worker = Worker(pg, "--processes", "1", "--threads", "1")
    try:
        enqueue(pg, ["before"])
        wait_until(lambda: try_query(pg, "SELECT count(*) FROM taskmill_job WHERE status = "
                                         "'SUCCESSFUL'") == [(1,)], timeout=30,
                   message="the first job")
        pg.stop()
        time.sleep(4.0)  # Long enough for every thread of the worker to notice.
        down = worker.output()
        pg.start()
        back_at = time.monotonic()
        # The worker may claim before anything else: a job enqueued now starts at once.
        enqueue(pg, ["after"])
        wait_until(lambda: try_query(pg, "SELECT count(*) FROM taskmill_job WHERE status = "
                                         "'SUCCESSFUL'") == [(2,)], timeout=30,
                   message="the job enqueued after the restart")
        resumed_in = time.monotonic() - back_at
        output = worker.output()
    finally:
        assert worker.stop() == 0
    assert "is back after" not in down, down  # Never said while the server was down.
    said = [line for line in down.splitlines() if "unavailable" in line]
    assert len(said) == 2, down  # Once for the process, once for its notifications.
    assert output.count("is back after") == 1, output
    assert resumed_in < 3.0, (resumed_in, output)  # starting a process for enqueue() included
