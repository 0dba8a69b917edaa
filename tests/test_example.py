"""The example site, run for real: its own tests, the flow over HTTP, and the demo script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import wait_until
from tests.example_site import (
    ROOT,
    example_database,
    example_env,
    free_port,
    run_to_the_end,
    running_example,
)
from tests.processes import alive, descendants

ON_SQLITE = os.environ.get("TASKMILL_TEST_DB", "sqlite") == "sqlite"


def test_the_examples_own_tests_pass():
    """example/catalog/tests.py: taskmill.testing used as a project would use it.

    They take seconds. The timeout stays well under pytest's (120 s), so that a hang is
    reported with the stacks of the example's processes, not of this one.
    """
    with example_database("example_tests") as db_env:
        done = run_to_the_end(example_env(db_env), "test", "catalog", "--noinput", timeout=90)
    assert done.ok, done.report()
    assert "\nOK" in done.output


@pytest.fixture(scope="module")
def site():
    """One running example site for this module's tests (each starts its own rebuild)."""
    with running_example(products=1200) as running:
        yield running


def test_a_rebuild_from_the_form_shows_progress_then_its_result(site):
    client = site.client()
    status_url, page = client.post_form("/", {"slowdown_ms": "150"})
    assert "/rebuilds/" in status_url and 'role="progressbar"' in page

    # A second submit while it runs joins the running rebuild instead of starting one.
    again_url, again = client.post_form("/", {"slowdown_ms": "150"})
    assert again_url == status_url
    assert "already under way" in again

    seen: list[int] = []
    state = site.wait_for_job(status_url.removeprefix(site.url) + "status.json",
                              each=lambda state: seen.append(state["percent"]))
    assert state["status"] == "SUCCESSFUL", (state, site.output())
    assert state["result"]["entries"] == 1200
    assert state["result"]["processes"] > 1
    assert any(0 < percent < 100 for percent in seen), seen
    assert seen == sorted(seen)  # The bar only moves forward.
    _, front = client.get("/")
    assert 'id="entries">1200<' in front


def test_a_failed_rebuild_shows_the_error(site):
    client = site.client()
    status_url, _ = client.post_form("/", {"slowdown_ms": "0", "fail": "on"})
    state = site.wait_for_job(status_url.removeprefix(site.url) + "status.json")
    assert state["status"] == "FAILED", site.output()
    assert "BadProduct: Product #" in state["error"]


# -- scripts/demo (always SQLite, whatever database this run tests) ----------------------


def _demo(*args: str, port: int, tmp_path) -> subprocess.Popen:
    env = dict(os.environ, PORT=str(port), EXAMPLE_SQLITE=str(tmp_path / "demo.sqlite3"))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.Popen(["bash", "scripts/demo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_as_in_a_terminal)


def _as_in_a_terminal() -> None:
    """Ctrl-C reaches a shell with SIGINT at its default (a test runner may ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.skipif(not ON_SQLITE, reason="the demo runs on SQLite; tested once per matrix row")
def test_demo_check_runs_the_flow_end_to_end(tmp_path):
    demo = _demo("--check", port=free_port(), tmp_path=tmp_path)
    out, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, out
    assert "Demo OK: 3000 products indexed in" in out


@pytest.mark.slow
@pytest.mark.skipif(not ON_SQLITE, reason="the demo runs on SQLite; tested once per matrix row")
def test_demo_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    demo = _demo(port=port, tmp_path=tmp_path)
    lines = []
    deadline = time.monotonic() + 300
    ready = False
    for line in demo.stdout:  # Wait for the address it tells people to open.
        lines.append(line)
        ready = ready or "taskmill demo is running" in line
        if (ready and f"http://127.0.0.1:{port}/" in line) or time.monotonic() > deadline:
            break
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert "Rebuild the search index" in response.read().decode()
    # Server, worker supervisor, child (the worker forks its child once it has started).
    def all_started() -> list[int] | None:
        found = descendants(demo.pid)
        return found if len(found) >= 3 else None

    started = wait_until(all_started, timeout=60, message="the worker's child to start")

    os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group.
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + out
    still_alive = [pid for pid in started if alive(pid)]
    assert still_alive == [], "".join(lines) + out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
