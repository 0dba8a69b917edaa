"""SQLite, the embedded default: one writer at a time, and workers that live with it."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, connections, transaction

from taskmill import forkgate
from taskmill.models import Job, JobStatus
from taskmill.testing import worker
from tests.conftest import ROOT, wait_until
from tests.project.models import Execution
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's single writer")


def test_a_locked_database_is_waited_out_not_taken_for_an_outage(sqlite_only, caplog):
    caplog.set_level(logging.INFO, logger="taskmill.worker")
    options = connections.settings["default"].setdefault("OPTIONS", {})
    timeout = options.get("timeout")
    options["timeout"] = 0.05  # the worker's connections give up waiting at once
    released = threading.Event()
    try:
        with worker() as running:
            with transaction.atomic():  # This test holds the write lock for a while.
                Execution.objects.create(label="holding the lock", pid=0)
                result = add.enqueue(2, 3)
                time.sleep(1.0)
            released.set()
            running.wait(result, timeout=20)
    finally:
        options["timeout"] = timeout
    assert Job.objects.get(id=result.id).status == JobStatus.SUCCESSFUL
    assert "unavailable" not in caplog.text


def test_tasks_that_read_then_write_in_a_transaction_all_succeed(sqlite_only, start_worker):
    """Several processes and threads, each job reading then writing in one transaction:
    SQLite refuses to turn a reader into a writer while another wrote ("database is
    locked", at once: waiting cannot help a stale snapshot). None may fail for it."""
    from taskmill import enqueue_many
    from tests.project.tasks import read_then_write

    results = enqueue_many(read_then_write, [(f"rw-{i}",) for i in range(60)])
    burst = start_worker("--burst", "--processes", "2", "--threads", "3")
    assert burst.wait(timeout=120) == 0, burst.output
    failed = Job.objects.filter(id__in=[r.id for r in results]).exclude(
        status=JobStatus.SUCCESSFUL)
    assert not failed.exists(), burst.output[-3000:]
    assert Execution.objects.filter(label__startswith="rw-").count() == 60


def test_parallel_map_children_of_a_task_read_then_write_without_being_locked_out(
        sqlite_only, start_worker):
    """A task's parallel_map children run in transactions begun as the task's are
    (IMMEDIATE): a child whose snapshot another child made stale would be refused."""
    from taskmill import enqueue_many
    from tests.project.tasks import read_then_write_in_children

    results = enqueue_many(read_then_write_in_children, [(f"rw-{i}", 4) for i in range(6)])
    burst = start_worker("--burst", "--processes", "1", "--threads", "2")
    assert burst.wait(timeout=120) == 0, burst.output
    jobs = Job.objects.filter(id__in=[r.id for r in results])
    assert {(job.status, job.attempts) for job in jobs} == {(JobStatus.SUCCESSFUL, 1)}, \
        burst.output[-3000:]
    # Every child's write is there. (A child SQLite still refuses, rarely and only under
    # load, has the attempt run again within itself, and its siblings' writes repeat.)
    labels = set(Execution.objects.filter(label__startswith="rw-").values_list("label", flat=True))
    assert len(labels) == 24


def test_parallel_map_never_forks_while_another_thread_of_the_worker_is_inside_sqlite(
        sqlite_only, start_worker):
    """A child forked while another thread held one of SQLite's mutexes waits for ever
    on its first query (the mutex's owner is not in the child). Here the producer, the
    heartbeat and a second task query the same file while a task forks round after round."""
    from tests.project.tasks import fork_rounds, query_for

    busy = [query_for.enqueue(15.0) for _ in range(2)]
    forks = fork_rounds.enqueue(250)
    burst = start_worker("--burst", "--processes", "1", "--threads", "3")
    assert burst.wait(timeout=100) == 0, burst.output[-3000:]
    ids = [forks.id, *(result.id for result in busy)]
    assert {job.status for job in Job.objects.filter(id__in=ids)} == {
        JobStatus.SUCCESSFUL}, burst.output[-3000:]
    assert Execution.objects.filter(label="fork-round").count() == 250


def _sqlite_file(tmp_path) -> str:
    path = str(tmp_path / "gate.sqlite3")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    return path


def _write_in_a_child(path: str, timeout: float) -> tuple[int, float]:
    """Fork; the child writes the file on a connection of its own. (Exit status, seconds.)"""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=timeout,
                                                    isolation_level=None)) as own:
                own.execute("BEGIN IMMEDIATE")
                own.execute("INSERT INTO t (v) VALUES ('child')")
                own.execute("COMMIT")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - started


def _fork_while(target: Callable[[], None], path: str, *, ready: threading.Event,
                then: threading.Event) -> tuple[int, float]:
    """Run ``target`` on a thread named after it; once it set ``ready``, fork a child that
    writes ``path`` (see :func:`_write_in_a_child`); then set ``then`` and join it."""
    thread = threading.Thread(target=target, name=target.__name__)
    thread.start()
    try:
        assert ready.wait(10)
        return _write_in_a_child(path, timeout=2.0)
    finally:
        then.set()
        thread.join()


def test_a_child_forked_mid_returning_write_of_another_thread_can_write(sqlite_only, tmp_path):
    """Outside a transaction, ``INSERT ... RETURNING`` holds the write lock from its first
    step to its last while the connection says it is in no transaction. A child forked in
    between inherited the lock's in-process record without the lock, and every write of
    its own waited out its timeout ("database is locked"). The gated cursor reads such a
    statement to its end inside its execute."""
    path = _sqlite_file(tmp_path)
    inserted, fork_done = threading.Event(), threading.Event()
    returned: list[object] = []

    def insert_and_wait() -> None:
        with contextlib.closing(sqlite3.connect(path, factory=forkgate.GatedConnection,
                                                isolation_level=None)) as gated:
            cursor = gated.cursor()
            cursor.execute("INSERT INTO t (v) VALUES ('a'), ('b'), ('c') RETURNING v")
            inserted.set()
            fork_done.wait(30)  # The rows are read only after the fork.
            returned.extend([cursor.fetchone(), *cursor.fetchmany(1), *cursor])

    code, seconds = _fork_while(insert_and_wait, path, ready=inserted, then=fork_done)
    assert (code, seconds < 1.5) == (0, True), f"the child's write: exit {code} after {seconds:.1f}s"
    assert returned == [("a",), ("b",), ("c",)]
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT v FROM t ORDER BY id").fetchall() == [
            ("a",), ("b",), ("c",), ("child",)]


def test_a_transaction_dropped_unclosed_does_not_keep_forks_waiting(sqlite_only, tmp_path):
    """A connection that a thread drops inside a transaction is rolled back by SQLite when
    it is collected, without passing through the gate: the gate let go of it only at a
    COMMIT that never came, and every later fork in the process waited for ever. (In a
    process of its own, so that a fork that hangs fails this test, not the run.)"""
    path = _sqlite_file(tmp_path)
    script = textwrap.dedent(f"""
        import os, sqlite3, threading
        from taskmill import forkgate

        def begin_and_forget():
            gated = sqlite3.connect({path!r}, factory=forkgate.GatedConnection,
                                    isolation_level=None)
            gated.execute("BEGIN IMMEDIATE")
            gated.execute("INSERT INTO t (v) VALUES ('forgotten')")

        thread = threading.Thread(target=begin_and_forget, name="forgetful")
        thread.start()
        thread.join()
        pid = os.fork()
        if pid == 0:
            with sqlite3.connect({path!r}, timeout=2.0, isolation_level=None) as own:
                own.execute("INSERT INTO t (v) VALUES ('child')")
            os._exit(0)
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=20,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        raise AssertionError("the fork waited for the dropped transaction") from None
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT v FROM t").fetchall() == [("child",)]


def test_a_fork_does_not_hold_the_gate_while_the_later_fork_hooks_wait(sqlite_only, tmp_path):
    """The hooks that run after the gate's at a fork take locks of their own (logging's
    here). A thread holding one of those may need the gate meanwhile: the garbage
    collector let go of a dropped connection's transaction, through the gate, in
    whichever thread it interrupted. With the gate's lock held across those hooks, that
    thread and the forking one waited for each other for ever, and so did every thread's
    next call into SQLite (CI's hung run). (In a process of its own, so that a deadlock
    fails this test, not the run.)"""
    path = _sqlite_file(tmp_path)
    script = textwrap.dedent(f"""
        import gc, logging, os, sqlite3, threading, time
        from taskmill import forkgate

        gc.disable()  # Collect where the deadlock needs it, not at random.
        holding_logging, collect = threading.Event(), threading.Event()

        def collect_holding_logging():
            with logging._lock:  # As while a handler is made or a level is looked up.
                holding_logging.set()
                collect.wait()
                gc.collect()  # Frees the forker's dropped connection: the gate lets go.

        def drop_a_transaction_then_fork():
            gated = sqlite3.connect({path!r}, factory=forkgate.GatedConnection,
                                    isolation_level=None)
            gated.execute("BEGIN IMMEDIATE")
            gated.execute("INSERT INTO t (v) VALUES ('dropped')")
            gated.cycle = gated  # Only the collector frees it, in whichever thread.
            del gated
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

        collector = threading.Thread(target=collect_holding_logging, daemon=True)
        collector.start()
        holding_logging.wait()
        forker = threading.Thread(target=drop_a_transaction_then_fork, daemon=True)
        forker.start()
        while not forkgate._gate.forking:
            time.sleep(0.01)
        time.sleep(0.2)  # The forker is past the gate, waiting for logging's lock.
        collect.set()
        forker.join(10)
        collector.join(1)
        os._exit(1 if forker.is_alive() or collector.is_alive() else 0)
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=30,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:  # pragma: no cover - the script exits on its own
        raise AssertionError("the script hung") from None
    assert done.returncode == 0, f"the fork and the collector deadlocked\n{done.stderr}"
    with contextlib.closing(sqlite3.connect(path)) as check:  # Rolled back when freed.
        assert check.execute("SELECT v FROM t").fetchall() == []


def test_two_forks_at_once_keep_calls_out_until_both_are_done(sqlite_only):
    """Two task threads may fork at once (each its own parallel_map). The first fork's
    end let every thread back into SQLite while the second was still forking."""
    gate = forkgate._ForkGate()  # The gate's hooks, called as two forking threads would.
    forks = [threading.Thread(target=gate.before_fork) for _ in range(2)]
    for fork in forks:
        fork.start()
        fork.join(5)
    gate.after_fork_in_parent()  # The first fork is done; the second is under way.
    entered = threading.Event()

    def call_into_sqlite() -> None:
        with gate.enter():
            entered.set()

    caller = threading.Thread(target=call_into_sqlite, daemon=True)
    caller.start()
    assert not entered.wait(0.3), "a call went in while a fork was under way"
    gate.after_fork_in_parent()
    assert entered.wait(5)
    caller.join(5)


def test_a_fork_whose_before_hook_was_interrupted_leaves_the_gate_open(sqlite_only):
    """A signal can interrupt the before-fork hook before it counted the fork (the main
    thread's lock waits are interruptible); the after-hook still runs. Counted below
    zero, the gate held every later call out for ever."""
    gate = forkgate._ForkGate()
    gate.after_fork_in_parent()  # No before_fork: it was interrupted.
    entered = threading.Event()

    def call_into_sqlite() -> None:
        with gate.enter():
            entered.set()

    threading.Thread(target=call_into_sqlite, daemon=True).start()
    assert entered.wait(5), "the gate stayed shut after an interrupted fork"


def test_a_fork_from_inside_a_transaction_goes_as_soon_as_the_calls_it_waits_for_end(
        sqlite_only):
    """A fork from inside its own transaction waits for the count of calls inside to come
    down to its own turn, not to zero: it was woken only at zero, so it waited out the
    warning's tick (FORK_WAIT_WARN, 10 s) after the last call had ended."""
    gate = forkgate._ForkGate()
    in_flight, release, forked = threading.Event(), threading.Event(), threading.Event()

    def call_in_flight() -> None:
        with gate.enter():
            in_flight.set()
            release.wait(10)

    def fork_from_a_transaction() -> None:
        own = sqlite3.connect(":memory:", factory=forkgate.GatedConnection)
        gate.hold(own)  # This thread's transaction: its turn stays counted inside.
        gate.before_fork()
        forked.set()
        gate.after_fork_in_parent()
        gate.drop(id(own))

    threading.Thread(target=call_in_flight, daemon=True).start()
    assert in_flight.wait(5)
    forker = threading.Thread(target=fork_from_a_transaction, daemon=True)
    forker.start()
    assert not forked.wait(0.3)  # It waits for the call in flight...
    started = time.monotonic()
    release.set()
    assert forked.wait(forkgate.FORK_WAIT_WARN)
    assert time.monotonic() - started < 2.0  # ...and goes when it ends.
    forker.join(5)


def test_a_fork_kept_waiting_says_which_transaction_it_waits_for(
        sqlite_only, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(forkgate, "FORK_WAIT_WARN", 0.2)
    caplog.set_level(logging.WARNING, logger="taskmill.worker")
    path = _sqlite_file(tmp_path)
    begun, forked = threading.Event(), threading.Event()

    def hold_a_transaction() -> None:
        with contextlib.closing(sqlite3.connect(path, factory=forkgate.GatedConnection,
                                                isolation_level=None)) as gated:
            gated.execute("BEGIN IMMEDIATE")
            gated.execute("INSERT INTO t (v) VALUES ('held')")
            begun.set()
            time.sleep(0.7)
            gated.execute("COMMIT")
            forked.wait(30)

    code, seconds = _fork_while(hold_a_transaction, path, ready=begun, then=forked)
    assert code == 0 and seconds >= 0.4, (code, seconds)  # It waited for the COMMIT.
    assert "A fork has waited" in caplog.text
    assert "a transaction of thread 'hold_a_transaction'" in caplog.text
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT v FROM t ORDER BY id").fetchall() == [("held",), ("child",)]


def test_an_idle_worker_is_woken_by_the_enqueue_not_its_poll(sqlite_only, start_worker):
    """SQLite has no NOTIFY: the worker watches the database file instead."""
    from tests.project.tasks import record

    worker = start_worker("--processes", "1", "--poll-interval", "60")
    warm = record.enqueue("warm-up")  # Picked up by the worker's first look.
    wait_until(lambda: Job.objects.filter(id=warm.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="the worker to start")
    time.sleep(1.0)  # Idle now, waiting up to a minute for its next look.
    enqueued = time.monotonic()
    result = record.enqueue("woken")
    wait_until(lambda: Job.objects.filter(id=result.id, status=JobStatus.SUCCESSFUL).exists(),
               timeout=30, message="the job to run")
    assert time.monotonic() - enqueued < 3, worker
