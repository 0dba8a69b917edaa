"""What people expect of `taskmill worker` beyond running jobs: a banner saying what it
will do, a health signal for probes, and --reload for development."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection

from taskmill.models import Job, JobStatus
from tests.conftest import ROOT, database_env, wait_until
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


class Logged:
    """A `manage.py taskmill ...` whose output goes to a file the test can read as it runs."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        fd, self.path = tempfile.mkstemp(suffix=".log")
        self.log = os.fdopen(fd, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "taskmill", *args], cwd=ROOT,
            env={**database_env(), **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self) -> str:
        return Path(self.path).read_text()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        wait_until(lambda: self.output().count(text) >= count, timeout=timeout,
                   message=f"{text!r} in the output:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.log.close()
            os.unlink(self.path)


def health(path: str, max_age: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", "taskmill", "health", "--file", path,
                           "--max-age", str(max_age)], cwd=ROOT, env=database_env(),
                          capture_output=True, text=True, timeout=60)


def test_the_worker_says_what_it_will_do_when_it_starts():
    worker = Logged("worker", "--threads", "2", "--burst")
    try:
        worker.wait_for("periodic tasks:")
        output = worker.output()
    finally:
        worker.stop()
    processes = "1 process(es)" if connection.vendor == "sqlite" else f"{os.cpu_count()} process(es)"
    assert f"taskmill worker: queues default, other; {processes} x 2 thread(s); --burst" in output
    assert "database 'default' (" in output and "notifications " in output
    assert "periodic tasks: none" in output


def test_the_health_file_is_fresh_while_the_worker_works_and_goes_stale_when_it_hangs(
        settings):
    lease = settings.TASKS["default"]["OPTIONS"]["LEASE_SECONDS"]
    path = tempfile.mktemp(prefix="taskmill-health-")
    worker = Logged("worker", "--processes", "1", "--health-file", path)
    try:
        assert health(path, 5).returncode == 1  # not yet: no process has reported
        wait_until(lambda: health(path, lease).returncode == 0, timeout=30,
                   message="the health file to be fresh")
        child = int(subprocess.run(["pgrep", "-P", str(worker.process.pid)],
                                   capture_output=True, text=True).stdout.split()[0])
        os.kill(child, signal.SIGSTOP)  # The worker hangs.
        try:
            stale = wait_until(lambda: (r := health(path, lease)).returncode == 1 and r,
                               timeout=lease * 4, message="the health file to go stale")
            assert "was last touched" in stale.stderr
        finally:
            os.kill(child, signal.SIGCONT)
        wait_until(lambda: health(path, lease).returncode == 0, timeout=lease * 4,
                   message="the health file to be fresh again")
    finally:
        worker.stop()
        Path(path).unlink(missing_ok=True)


def test_reload_restarts_the_worker_when_code_changes():
    tasks_module = ROOT / "tests" / "project" / "tasks.py"
    worker = Logged("worker", "--reload", "--processes", "1", env={"TASKMILL_TEST_DEBUG": "1"})
    try:
        worker.wait_for("started: queues")
        time.sleep(1.5)  # The watcher's first snapshot is taken.
        os.utime(tasks_module)  # Saved in an editor: same code, a new mtime.
        worker.wait_for("changed; restarting the worker")
        worker.wait_for("started: queues", count=2)
        result = add.enqueue(20, 22)
        wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
                   timeout=30, message="a job run by the restarted worker")
        assert worker.output().count("taskmill worker: queues") >= 2  # the banner, twice
    finally:
        assert worker.stop() == 0


def test_reload_is_refused_outside_development():
    refused = subprocess.run([sys.executable, "-m", "django", "taskmill", "worker", "--reload"],
                             cwd=ROOT, env=database_env(), capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0
    assert "--reload is for development" in refused.stderr and "DEBUG = True" in refused.stderr


def test_a_worker_runs_the_checks_its_jobs_need_not_the_web_servers(monkeypatch):
    """The URL, template and admin checks load the project's URLconf and views, which a
    worker would keep in every process; taskmill's own settings checks still stop it."""
    from django.core import checks
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test.utils import override_settings

    from taskmill.management.commands.taskmill import Command

    ran: list[str] = []
    monkeypatch.setattr(Command, "handle", lambda self, *args, **options: ran.append("worker"))

    def urls_check(app_configs, **kwargs):
        ran.append("urls check")
        return []

    checks.register(urls_check, checks.Tags.urls)
    try:
        # (call_command skips the checks unless told not to; manage.py runs them.)
        call_command("taskmill", "worker", "--burst", skip_checks=False)
        assert ran == ["worker"]  # The URL check was not run; the worker was.
        call_command("taskmill", "status", skip_checks=False)  # Others run every check.
        assert ran == ["worker", "urls check", "worker"]
    finally:
        checks.registry.registry.registered_checks.discard(urls_check)
    ran.clear()
    with override_settings(USE_TZ=False), pytest.raises(SystemCheckError, match="taskmill.E003"):
        call_command("taskmill", "worker", "--burst", skip_checks=False)
    assert ran == []
