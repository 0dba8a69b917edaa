"""parallel_map: results in order, own connections per child, caller left intact."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from django.db import connection, transaction
from django.http import JsonResponse
from django.urls import path

from taskmill import parallel_map
from taskmill.models import JobStatus
from taskmill.parallel import ChildDied, RemoteTraceback
from tests import parallel_helpers as helpers
from tests.conftest import ROOT, database_env
from tests.project.models import Execution


def test_results_come_back_in_item_order():
    items = list(range(37))
    assert parallel_map(helpers.square, items, processes=2) == [x * x for x in items]
    assert parallel_map(helpers.square, items, processes=3, chunksize=5) == [x * x for x in items]
    assert parallel_map(helpers.square, [], processes=2) == []


@pytest.mark.django_db(transaction=True)
def test_children_writes_survive_the_parent_closing_its_last_sqlite_connection():
    """A child inherits its parent's in-process record of an SQLite file's locks; its own
    connections then take none of them for real. If the parent closed its last connection
    to the file while children wrote, SQLite saw no other process on it, folded the WAL
    into the file and deleted it, with the children's commits still to come in it: they
    were lost without an error. The parent keeps a connection open until its children end."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locks")
    connection.close()  # This thread's: the parent's last connection is the one below.
    parent = sqlite3.connect(connection.settings_dict["NAME"], check_same_thread=False)
    parent.execute("PRAGMA journal_mode=WAL")  # As every worker sets it.
    parent.execute(f"INSERT INTO {Execution._meta.db_table} (label, pid) VALUES ('parent-row', 0)")
    parent.commit()
    closer = threading.Timer(0.3, parent.close)  # While the children wait to write.
    closer.start()
    try:
        pids = parallel_map(helpers.read_then_record_later, ["late-row"] * 4, processes=2)
    finally:
        closer.join()
    assert len(set(pids)) == 2
    assert Execution.objects.filter(label="late-row").count() == 4  # 0 before the fix.
    assert Execution.objects.filter(label="parent-row").count() == 1


def test_bad_arguments_are_refused_before_any_child_starts():
    with pytest.raises(ValueError, match="chunksize"):
        parallel_map(helpers.square, [1], chunksize=0)
    with pytest.raises(ValueError, match="processes"):
        parallel_map(helpers.square, [1], processes=0)


@pytest.mark.django_db(transaction=True)
def test_each_child_has_its_own_connection_and_writes_its_own_rows():
    parent_session = helpers.session_id()
    pids = parallel_map(helpers.record_row, ["child-row"] * 12, processes=2)
    rows = Execution.objects.filter(label="child-row")
    assert rows.count() == 12
    assert len(set(rows.values_list("pid", flat=True))) == 2
    assert os.getpid() not in pids
    if connection.vendor != "sqlite":
        sessions = {session for _, session in parallel_map(helpers.backend_pid, range(6),
                                                            processes=2)}
        assert len(sessions) == 2 and parent_session not in sessions
    assert helpers.session_id() == parent_session  # The caller's connection was not touched.


@pytest.mark.django_db(transaction=True)
def test_callers_open_transaction_with_uncommitted_rows_survives_and_commits():
    with transaction.atomic():
        Execution.objects.create(label="parent-before", pid=os.getpid())
        session = helpers.session_id()
        # Children see only committed data: the caller's row is invisible to them.
        assert parallel_map(helpers.count_rows, ["parent-before"] * 2, processes=2) == [0, 0]
        if connection.vendor != "sqlite":  # SQLite has one writer: the caller holds it.
            parallel_map(helpers.close_then_record, ["child-in-txn"] * 4, processes=2)
        Execution.objects.create(label="parent-after", pid=os.getpid())
        assert helpers.session_id() == session
        assert connection.in_atomic_block
    assert Execution.objects.filter(label="parent-before").count() == 1
    assert Execution.objects.filter(label="parent-after").count() == 1
    if connection.vendor != "sqlite":
        assert Execution.objects.filter(label="child-in-txn").count() == 4


def test_child_exception_is_raised_in_caller_with_child_traceback():
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        parallel_map(helpers.fail_on, range(8), processes=2)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail_on" in cause.text and 'raise ValueError(f"item {x} is bad")' in cause.text
    assert any("parallel_map child process" in note for note in info.value.__notes__)


def test_a_child_stuck_before_it_is_ready_is_replaced_not_waited_for(
        monkeypatch, tmp_path, caplog):
    """A child that inherited a held SQLite lock hangs in its start-up read. Simulated here:
    the first child's read never returns; parallel_map replaces that child and finishes."""
    from taskmill.parallel import map as parallel_module

    flag = tmp_path / "first-child"
    real_probe = parallel_module._probe_sqlite

    def first_child_hangs() -> None:
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return real_probe()
        time.sleep(3600)

    monkeypatch.setattr(parallel_module, "_probe_sqlite", first_child_hangs)
    monkeypatch.setattr(parallel_module, "START_TIMEOUT", 1.0)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="taskmill.parallel"):
        assert parallel_map(helpers.square, range(6), processes=2) == [x * x for x in range(6)]
    assert time.monotonic() - started < 30
    assert len([r for r in caplog.records if "replacing it" in r.getMessage()]) == 1


def test_a_child_that_is_never_ready_is_an_error_not_a_hang(monkeypatch):
    from taskmill.parallel import map as parallel_module

    monkeypatch.setattr(parallel_module, "_probe_sqlite", lambda: time.sleep(3600))
    monkeypatch.setattr(parallel_module, "START_TIMEOUT", 0.3)
    with pytest.raises(ChildDied, match="could not start a child process"):
        parallel_map(helpers.square, range(4), processes=2)


def test_child_that_dies_is_an_error_not_a_hang():
    started = time.monotonic()
    with pytest.raises(ChildDied, match="exited with status 7"):
        parallel_map(helpers.die_on, range(6), processes=2)
    assert time.monotonic() - started < 10


def test_child_killed_by_a_signal_is_reported_and_no_child_is_left_behind():
    before = _children_of_this_process()
    with pytest.raises(ChildDied, match="SIGKILL"):
        parallel_map(_kill_self, range(4), processes=2)
    assert _children_of_this_process() == before


def _kill_self(item: int) -> int:
    if item == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def _children_of_this_process() -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}


# -- from a view, a script and a running task -------------------------------------------


def parallel_view(request):
    """A view that splits work over processes (served by a threaded live server)."""
    with transaction.atomic():
        Execution.objects.create(label="view-parent", pid=os.getpid())
        pids = parallel_map(helpers.record_row, ["view-child"] * 4, processes=2)
    return JsonResponse({"pids": pids, "session": helpers.session_id()})


urlpatterns = [path("parallel/", parallel_view)]


@pytest.mark.django_db(transaction=True)
def test_works_from_a_view_in_a_threaded_server(live_server, settings):
    if connection.vendor == "sqlite":
        pytest.skip("the view writes inside a transaction while children write: one writer")
    settings.ROOT_URLCONF = __name__
    with urllib.request.urlopen(f"{live_server.url}/parallel/", timeout=30) as response:
        body = json.loads(response.read())
    assert len(set(body["pids"])) == 2 and os.getpid() not in body["pids"]
    assert Execution.objects.filter(label="view-child").count() == 4
    assert Execution.objects.filter(label="view-parent").count() == 1


SCRIPT = """
import json, os, django
django.setup()
from django.db import transaction
from taskmill import parallel_map
from tests import parallel_helpers as helpers
from tests.project.models import Execution
with transaction.atomic():
    Execution.objects.create(label="script-parent", pid=os.getpid())
    session = helpers.session_id()
    pids = parallel_map(helpers.record_row, ["script-child"] * 6, processes=2)
    same = helpers.session_id() == session
print(json.dumps({"pids": pids, "same_session": same, "me": os.getpid()}))
"""


@pytest.mark.django_db(transaction=True)
def test_works_from_a_plain_script():
    if connection.vendor == "sqlite":
        pytest.skip("the script writes inside a transaction while children write: one writer")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=database_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout.strip().splitlines()[-1])
    assert body["same_session"] is True
    assert len(set(body["pids"])) == 2 and body["me"] not in body["pids"]
    assert Execution.objects.filter(label="script-child").count() == 6
    assert Execution.objects.filter(label="script-parent").count() == 1


@pytest.mark.django_db(transaction=True)
def test_works_inside_a_task_running_on_a_worker_thread(start_worker):
    result = helpers.fan_out_in_task.enqueue("in-task", 6)
    worker = start_worker("--burst", "--processes", "1", "--threads", "2")
    assert worker.wait(timeout=60) == 0, worker.output
    result.refresh()
    assert result.status == JobStatus.SUCCESSFUL, result.errors
    rows = Execution.objects.filter(label="in-task")
    assert rows.count() == 6
    parent = Execution.objects.get(label="in-task-parent")
    assert parent.pid not in set(rows.values_list("pid", flat=True))
    assert len(set(rows.values_list("pid", flat=True))) == 2
