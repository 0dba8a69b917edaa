"""The example site (``example/``) running for real: its own database, a worker, a server.

Used by ``test_example.py`` and the ``test_example*_browser.py`` modules. The site gets a
database of its own on the server this test run uses (``TASKMILL_TEST_DB``): a temporary
SQLite file, or a PostgreSQL/MariaDB database named after this run's test database.

A job that stops moving fails its test within seconds, with the Python stack of every
``parallel_map`` child (:meth:`ExampleSite.wait_for_job`, :func:`run_to_the_end`): the
example's processes run with ``PYTHONFAULTHANDLER``, so ``SIGABRT`` prints the stacks of
a process's threads before it dies. :func:`diagnose` names the one known hang.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.processes import abort_for_stacks, descendants, in_group

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def example_database(suffix: str = "example") -> Iterator[dict[str, str]]:
    """Environment variables pointing the example at a fresh, empty database."""
    vendor = os.environ.get("TASKMILL_TEST_DB", "sqlite")
    if vendor == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield {"EXAMPLE_DB": "sqlite", "EXAMPLE_SQLITE": str(Path(tmp) / "example.sqlite3")}
        return
    base = os.environ.get("TASKMILL_PG_TEST_NAME" if vendor == "postgresql"
                          else "TASKMILL_MYSQL_TEST_NAME", "test_taskmill")
    name = f"{base}_{suffix}"
    _recreate(vendor, name, drop_only=False)
    try:
        yield {"EXAMPLE_DB": vendor, "EXAMPLE_DB_NAME": name}
    finally:
        _recreate(vendor, name, drop_only=True)


def _recreate(vendor: str, name: str, *, drop_only: bool) -> None:
    if vendor == "postgresql":
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop_only:
                conn.execute(f'CREATE DATABASE "{name}"')
    else:
        import MySQLdb

        # A minute, not MariaDB's default day, behind a connection that still holds the
        # database (an example process that did not stop): see tests/project/settings.py.
        conn = MySQLdb.connect(host="127.0.0.1", user="root",
                               init_command="SET SESSION lock_wait_timeout = 60")
        try:
            cursor = conn.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            if not drop_only:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()


def example_env(db_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("DJANGO_SETTINGS_MODULE", "EXAMPLE_", "CATALOG_")):
            del env[key]
    env.update(db_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see diagnose)
    env["CATALOG_REBUILD_PROCESSES"] = "3"
    env.update(extra)
    return env


# -- hangs: find the processes, print their stacks, say what it is ------------------------


#: A parallel_map child stuck in SQLite, in a faulthandler dump: its thread's innermost
#: frame is Django's SQLite backend (connecting, or a query), under _child_main.
_STUCK_IN_SQLITE = re.compile(
    r"(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):\n"
    r"  File \"[^\"]*django/db/backends/sqlite3/base\.py\".*\n"
    r"(?:  File .*\n)*?  File \"[^\"]*taskmill/parallel/map\.py\", line \d+ in _child_main")

SQLITE_FORK_HANG = (
    "HANG: a parallel_map child process is blocked inside SQLite. It was fork()ed while "
    "another thread of its parent (the worker's producer, heartbeat or maintenance "
    "thread, a task's, or taskmill.testing.worker()'s) was inside SQLite on the same "
    "database file, or held a lock on it, and inherited what SQLite keeps per process "
    "and per file: a mutex held (a hang at the first query), or the record of a write "
    "lock without the lock (the child's first write waits out its busy timeout, then "
    "'database is locked'). This is a taskmill issue (parallel_map forks a "
    "multi-threaded process that has SQLite connections open), not the example's or the "
    "test's; the stacks follow.")


def diagnose(output: str) -> str:
    """A headline for a hang, from the processes' output and their faulthandler stacks."""
    if _STUCK_IN_SQLITE.search(output):
        return SQLITE_FORK_HANG
    return "HANG: no known cause recognised; the output and stacks follow."


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=timeout)


class Browserless:
    """A tiny HTTP client with cookies, enough to post the example's form (CSRF included)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base_url + path, timeout=10) as response:
            return response.geturl(), response.read().decode()

    def json(self, path: str) -> dict[str, Any]:
        return json.loads(self.get(path)[1])

    def post_form(self, path: str, data: dict[str, str]) -> tuple[str, str]:
        """Load the form page, then post ``data`` with its CSRF token; follows the redirect."""
        _, page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(self.base_url + path, data=body,
                                         headers={"Referer": self.base_url + path})
        with self.opener.open(request, timeout=10) as response:
            return response.geturl(), response.read().decode()


class ExampleSite:
    """The example project migrated and seeded, with a worker and a web server running."""

    def __init__(self, env: dict[str, str], products: int, demo_user: bool = False) -> None:
        self.env = env
        self.products = products
        self.demo_user = demo_user
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = Path(tempfile.mkdtemp(prefix="taskmill-example-"))
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        commands = [("migrate", "--noinput"), ("seed_catalog", "--products", str(self.products))]
        if self.demo_user:
            commands.append(("demo_user",))
        for args in commands:
            done = manage(self.env, *args)
            assert done.returncode == 0, done.stdout + done.stderr
        self._spawn("worker", "taskmill", "worker", "--processes", "1", "--threads", "2")
        self._spawn("server", "runserver", "--noreload", f"127.0.0.1:{self.port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"example site did not start:\n{self.output()}") from None
                time.sleep(0.1)

    def _spawn(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "w") as log:  # The child keeps its own copy.
            self.processes.append(subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("*.log")))

    def client(self) -> Browserless:
        return Browserless(self.url)

    def wait_for_job(self, status_path: str, *, timeout: float = 60, stall: float = 20,
                     each: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
        """Poll a rebuild's ``status.json`` until it has finished; its last state.

        ``each`` sees every state polled. Fails at once, with the stacks of the worker's
        parallel_map children, when the job's state has not changed for ``stall`` seconds
        (a rebuild reports progress several times a second), rather than waiting out
        ``timeout``.
        """
        client = self.client()
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            state = client.json(status_path)
            if each is not None:
                each(state)
            if state["finished"]:
                return state
            seen = (state["status"], state["current"], state["message"])
            if seen != last:
                last, since = seen, time.monotonic()
            elif time.monotonic() - since > stall:
                raise AssertionError(self.hang_report(f"{status_path} stayed {seen} for "
                                                      f"{stall:.0f}s"))
            if time.monotonic() > deadline:
                raise AssertionError(self.hang_report(f"{status_path} did not finish in "
                                                      f"{timeout:.0f}s: {state}"))
            time.sleep(0.05)

    def hang_report(self, what: str) -> str:
        """Abort the worker's parallel_map children for their stacks; say what it looks like."""
        worker = self.processes[0]  # the supervisor; its children are the worker processes
        abort_for_stacks(descendants(worker.pid, below=2))
        output = self.output()
        return f"{what}\n{diagnose(output)}\n{output}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def running_example(products: int = 2000, *, demo_user: bool = False,
                    **env: str) -> Iterator[ExampleSite]:
    """The example site, running; ``demo_user`` creates demo/demo; ``env`` adds variables
    (``CATALOG_DIGEST_EVERY="2"``, ``EXAMPLE_DASHBOARD_POLL="0.5"``)."""
    with example_database() as db_env:
        site = ExampleSite(example_env(db_env, **env), products, demo_user)
        try:
            site.start()
            yield site
        finally:
            site.stop()


class Finished:
    """How a command run by :func:`run_to_the_end` ended."""

    def __init__(self, args: tuple[str, ...], returncode: int | None, output: str,
                 leftovers: list[int], timeout: float) -> None:
        self.args = args
        self.returncode = returncode  # None: it did not finish in time
        self.output = output
        self.leftovers = leftovers  # processes it left running when it ended
        self.timeout = timeout

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.leftovers

    def report(self) -> str:
        command = "manage.py " + " ".join(self.args)
        if self.returncode is None:
            what = f"{command} did not finish in {self.timeout:.0f}s"
        elif self.leftovers:
            what = (f"{command} exited ({self.returncode}) leaving {len(self.leftovers)} "
                    f"process(es) running: {self.leftovers}")
        else:
            return f"{command} exited {self.returncode}:\n{self.output}"
        return f"{what}\n{diagnose(self.output)}\n{self.output}"


def run_to_the_end(env: dict[str, str], *args: str, timeout: float) -> Finished:
    """``manage.py *args`` in a session of its own; never outlives ``timeout``, never leaks.

    Unlike ``subprocess.run(capture_output=True)``, a child it leaves behind (a stuck
    parallel_map child holds the output pipe open) cannot keep the test waiting: output
    goes to a file. Whatever is still running at the end, or after the timeout, is sent
    SIGABRT for its stacks, then the whole session is killed.
    """
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        leftovers = in_group(process.pid)
        abort_for_stacks(leftovers)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.seek(0)
        return Finished(args, returncode, log.read(), leftovers, timeout)
