"""Shared fixtures: real worker processes against the test database.

Tests that start workers in other processes need committed data, so they use
``@pytest.mark.django_db(transaction=True)``. ``TASKMILL_TEST_DB`` picks the database
(sqlite, postgresql, mysql); see ``scripts/test``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.processes import abort_for_stacks, in_group

ROOT = Path(__file__).resolve().parent.parent


def database_env() -> dict[str, str]:
    """Environment that points a child process at the test database of this run."""
    from django.db import connection

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
    name = connection.settings_dict["NAME"]
    vendor = connection.vendor
    if vendor == "postgresql":
        env["TASKMILL_PG_NAME"] = name
    elif vendor == "mysql":
        env["TASKMILL_MYSQL_NAME"] = name
    else:
        env["TASKMILL_SQLITE_NAME"] = name
    return env


class WorkerHandle:
    """A ``manage.py taskmill worker`` started by a test; stopped at the end of it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "taskmill", "worker", *args],
            env={**env, "PYTHONFAULTHANDLER": "1"}, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.output = ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Each of its processes prints its threads' stacks (PYTHONFAULTHANDLER) as it
            # dies: a worker that does not stop says where it is.
            abort_for_stacks(in_group(self.process.pid))
            self.kill()
            out, _ = self.process.communicate()
            self.output += out or ""
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.output}") from None
        self.output += out or ""
        return self.process.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def children(self) -> list[int]:
        """Pids of the supervisor's worker processes."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [int(pid) for pid in out.split()]


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerHandle]]:
    """``start_worker("--processes", "2")`` → a running worker, killed after the test.
    ``env={...}`` adds to its environment."""
    handles: list[WorkerHandle] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerHandle:
        handle = WorkerHandle(list(args), {**database_env(), **(env or {})})
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if handle.process.poll() is None:
            handle.signal(signal.SIGTERM)
            try:
                handle.wait(timeout=15)
            except AssertionError:
                pass
        handle.kill()


def wait_until(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.05,
               message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def pgbouncer() -> Iterator[servers.PgBouncer]:
    """PgBouncer in transaction mode in front of the test database's server."""
    from django.db import connection

    reason = servers.can_run()
    if reason or not servers.PGBOUNCER.exists():
        pytest.skip(reason or "pgbouncer is not installed")
    bouncer = servers.PgBouncer(int(connection.settings_dict["PORT"] or 5432))
    yield bouncer
    bouncer.stop()


@pytest.fixture
def vendor() -> str:
    from django.db import connection

    return connection.vendor


CHROMIUM = "/usr/bin/chromium"
#: Flags for a closed network: no background traffic, no sandbox (we run as root).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download needed)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (bash scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the
    # test itself are still plain synchronous code.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
