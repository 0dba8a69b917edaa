"""scripts/test itself: a run that hangs is stopped at TASKMILL_RUN_LIMIT, with the
stacks that say where, and the processes it started go with it.

Without the limit, one hang that the per-test timeout cannot reach (a signal ignored,
a wait in C code that retries after it) held the whole matrix until CI's own deadline,
and CI printed nothing of the runs, whose output comes at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import django
import pytest

from tests.conftest import ROOT
from tests.processes import alive

pytestmark = [
    pytest.mark.slow,
    # One lane is enough: the script is the same for every database.
    pytest.mark.skipif(os.environ.get("TASKMILL_TEST_DB", "sqlite") != "sqlite"
                       or django.VERSION >= (6, 0), reason="runs in the 5.2/SQLite lane"),
]

HANGING_SAMPLE = """
import signal
import subprocess
import sys
import threading


def test_hangs_where_no_timeout_reaches():
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # the per-test timeout's signal
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open({pid_file!r}, "w") as f:
        f.write(str(child.pid))
    threading.Event().wait(600)
"""


def test_a_hanging_run_is_stopped_at_the_limit_with_its_stacks(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    sample = tmp_path / "test_hanging_sample.py"
    sample.write_text(HANGING_SAMPLE.format(pid_file=str(pid_file)))
    env = {**os.environ, "TASKMILL_MATRIX": "5.2:sqlite", "TASKMILL_RUN_LIMIT": "10",
           "TASKMILL_LINT": "0"}
    started = time.monotonic()
    done = subprocess.run(["bash", "scripts/test", str(sample)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=100)
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "did not finish within TASKMILL_RUN_LIMIT=10s" in output, output
    # pytest's faulthandler printed the stack of the hanging test before it stopped.
    assert "in test_hangs_where_no_timeout_reaches" in output, output
    assert "Django 5.2 on sqlite: started" in output, output
    assert took < 10 + 60, took  # The limit, plus setup's checks: not pytest's 120 s.
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), f"the run's child process {child} outlived the run"


BROWSER_SAMPLE = """
import pytest


@pytest.mark.browser
def test_drives_a_browser():
    pass


@pytest.mark.slow
def test_takes_long():
    pass


def test_needs_no_browser():
    pass
"""


def test_a_run_outside_the_browser_or_slow_runs_leaves_those_tests_out(tmp_path: Path):
    """Only the runs TASKMILL_BROWSER names run the Chromium tests, and only those
    TASKMILL_SLOW names the slow ones; a run left with nothing to run once they are out
    passes (pytest's "nothing collected" is no failure of its)."""
    sample = tmp_path / "test_browser_sample.py"
    sample.write_text(BROWSER_SAMPLE)

    def run(*args: str, browser: str, slow: str = "5.2:sqlite") -> str:
        env = {**os.environ, "TASKMILL_MATRIX": "5.2:sqlite", "TASKMILL_BROWSER": browser,
               "TASKMILL_SLOW": slow, "TASKMILL_LINT": "0"}
        done = subprocess.run(["bash", "scripts/test", str(sample), *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=100)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    assert "3 passed" in run(browser="5.2:sqlite")
    assert "2 passed, 1 deselected" in run(browser="6.1:sqlite")
    assert "2 passed, 1 deselected" in run(browser="5.2:sqlite", slow="6.1:sqlite")
    assert "1 passed, 2 deselected" in run(browser="6.1:sqlite", slow="6.1:postgresql")
    assert "3 passed" in run(browser="all", slow="all")
    only_browser = run("-k", "drives_a_browser", browser="6.1:sqlite")
    assert "Only tests this run leaves out (not browser) were selected." in only_browser
