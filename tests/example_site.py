"""The example site (``example/``) running for real: its own database, a worker, a server.

Used by ``test_example.py`` and ``test_example_browser.py``. The site gets a database of
its own on the server this test run uses (``TASKMILL_TEST_DB``): a temporary SQLite file,
or a PostgreSQL/MariaDB database named after this run's test database.
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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

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

        conn = MySQLdb.connect(host="127.0.0.1", user="root")
        try:
            cursor = conn.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            if not drop_only:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()


def example_env(db_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("DJANGO_SETTINGS_MODULE", "EXAMPLE_")):
            del env[key]
    env.update(db_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["CATALOG_REBUILD_PROCESSES"] = "3"
    return env


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

    def __init__(self, env: dict[str, str], products: int) -> None:
        self.env = env
        self.products = products
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = Path(tempfile.mkdtemp(prefix="taskmill-example-"))
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        for args in (("migrate", "--noinput"), ("seed_catalog", "--products", str(self.products))):
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
def running_example(products: int = 2000) -> Iterator[ExampleSite]:
    with example_database() as db_env:
        site = ExampleSite(example_env(db_env), products)
        try:
            site.start()
            yield site
        finally:
            site.stop()
