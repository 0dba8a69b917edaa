"""Three hosts, one PostgreSQL: worker supervisors in network namespaces (tests/hosts.py).

What docs/deployment.md promises of "several hosts on one PostgreSQL", with real
hosts: each its own address and host name (worker ids say which host ran a job),
reaching a private PostgreSQL (never the shared one) over a bridge.

One scenario, on the same three hosts, in order, run twice: (d) straight to PostgreSQL,
and through PgBouncer in transaction mode (no notification passes it: the workers find
their LISTEN deaf and look on their own):

(a) jobs enqueued from the root namespace run exactly once, and every host runs some;
(b) a host cut off while it runs a long job: the job is recovered by another host once
    the lease runs out and finished there; when the link comes back, the cut host's
    late outcome changes nothing (the row is the other host's), and it rejoins;
(c) a periodic task that every host schedules is enqueued exactly once per tick,
    through all of the above (the cut included).

And a host cut *inside* a transaction does not stall the others: its session, left
idle in transaction on the server with the schedule's row locked, is ended within about
a lease (the server's keepalive probes and ``tcp_user_timeout`` on every worker
connection, see ``taskmill.db.private_connection``). Without them the other hosts'
ticks and recovery stopped until the operating system's keepalive gave up (about
2 h 11 min).

Runs only as root with ``ip`` available and ``TASKMILL_TEST_DB=postgresql``; about 15 s
a path and 18 s for the cut inside a transaction, 55 s in all with the server's start.
``TASKMILL_MATRIX="5.2:postgresql" bash scripts/test tests/test_hosts.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import hosts
from tests.conftest import wait_until
from tests.hosts import HostNetwork, HostWorker
from tests.servers import PrivatePostgres

pytestmark = pytest.mark.slow

DB = "taskmill_hosts"
#: Small, so a cut host is declared dead quickly; the heartbeat beats every LEASE / 4.
LEASE = 2.0
RECORD = "tests.project.tasks.record"
SLOW = "tests.project.tasks.slow"  # max_attempts=2
TICK = "tests.project.coordination_tasks.tick"
#: Ticks go to a queue no worker here serves: their jobs stay, one row per tick, to count.
SCHEDULE = {"tick": {"task": TICK, "every": 1, "queue_name": "other"}}
ENQUEUED = re.compile(r"Enqueued periodic task 'tick' \(\S+\) for (\S+): job")
WORKER_LOST = "taskmill.exceptions.WorkerLost"
TABLES = ("taskmill_job, taskmill_joberror, taskmill_worker, taskmill_schedulestate, "
          "taskmill_service, project_execution")


@pytest.fixture(scope="module")
def network() -> Iterator[tuple[HostNetwork, PrivatePostgres]]:
    reason = hosts.can_run()
    if reason:
        pytest.skip(reason)
    if os.environ.get("TASKMILL_TEST_DB") != "postgresql":
        pytest.skip("hosts share a PostgreSQL: run once, in the PostgreSQL run")
    with HostNetwork(3) as net:
        server = net.start_postgres(DB)
        hosts.manage(hosts.worker_env("127.0.0.1", server.port, DB), "migrate", "-v", "0")
        yield net, server


class Cluster:
    """The scenario's view of the hosts: its database path, workers and queries."""

    def __init__(self, net: HostNetwork, server: PrivatePostgres,
                 workers: dict[str, HostWorker], app: hosts.DjangoShell) -> None:
        self.net, self.server, self.workers = net, server, workers
        #: (when, what) of the scenario's steps, for failure messages.
        self.events: list[tuple[float, str]] = []
        #: When the rejoined host was left to schedule alone.
        self.alone_since: datetime | None = None
        #: The root namespace's application: enqueues on 127.0.0.1, the same way in
        #: (PostgreSQL or PgBouncer) as the hosts.
        self.enqueue = app

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return hosts.query(self.server.port, DB, sql, params)

    def job(self, job_id: str) -> tuple[Any, ...]:
        (row,) = self.rows("SELECT status, attempts, lease_owner, worker_ids, return_value "
                           "FROM taskmill_job WHERE id = %s", job_id)
        return row

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))

    def logs(self) -> str:
        steps = "\n".join(f"{datetime.fromtimestamp(t, UTC).isoformat()} {what}"
                          for t, what in self.events)
        return f"--- steps\n{steps}\n" + "\n".join(
            f"--- {name}\n{worker.output()[-6000:]}" for name, worker in self.workers.items())

    def close(self) -> None:
        """Kill the workers (SIGKILL to each group) and the application; idempotent."""
        self.enqueue.close()
        for worker in self.workers.values():
            worker.kill()

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> Any:
        """``wait_until``, failing with the hosts' logs."""
        try:
            return wait_until(predicate, timeout=timeout, interval=0.1, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


def reset(server: PrivatePostgres) -> None:
    """Empty the tables, first ending every other session on the database: a scenario
    that cut a host inside a transaction leaves it holding locks TRUNCATE would wait for."""
    hosts.query(server.port, DB, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", [DB])
    hosts.query(server.port, DB, f"TRUNCATE {TABLES}")


def start(net: HostNetwork, server: PrivatePostgres, port: int, extra: list[str],
          log_dir: Path) -> Cluster:
    """A worker supervisor on every host (one process, one thread, queue "default", the
    tick schedule), and the root namespace's application; returns once all registered."""
    env = hosts.worker_env(net.gateway, port, DB, settings="tests.project.settings_schedule",
                           lease=LEASE, extra={"TASKMILL_TEST_SCHEDULE": json.dumps(SCHEDULE)})
    args = ["--processes", "1", "--threads", "1", "--queues", "default",
            "--shutdown-timeout", "5", *extra]
    workers = {h.hostname: HostWorker(net, h, args, env, log_dir) for h in net.hosts}
    app = hosts.DjangoShell(hosts.worker_env("127.0.0.1", port, DB))
    cluster = Cluster(net, server, workers, app)
    try:
        cluster.wait(lambda: {r[0] for r in cluster.rows("SELECT hostname FROM taskmill_worker")}
                     == set(workers), 60, "a worker on every host")
    except BaseException:
        cluster.close()
        raise
    return cluster


def hostname_of(worker_id: str) -> str:
    return worker_id.split(":", 1)[0]  # taskmill/ids.py: host:pid:random


@pytest.mark.parametrize("via", ["postgresql", "pgbouncer"])
def test_hosts_share_jobs_recover_a_cut_host_and_tick_once(
        network: tuple[HostNetwork, PrivatePostgres], via: str, tmp_path: Path) -> None:
    net, server = network
    reset(server)
    port, extra = server.port, []
    if via == "pgbouncer":
        port = net.start_pgbouncer(server).port
        extra = ["--poll-interval", "0.2"]  # No NOTIFY passes it: idle looks, often.
    cluster = start(net, server, port, extra, tmp_path)
    try:
        started = time.time()
        each_job_once_and_every_host_runs_some(cluster)
        cut_host_is_recovered_changes_nothing_and_rejoins(cluster)
        cluster.event("stopping every host")
        hosts.stop_all(list(cluster.workers.values()))
        each_tick_once(cluster, time.time() - started)
    finally:
        cluster.close()


def each_job_once_and_every_host_runs_some(cluster: Cluster) -> None:
    """(a) Each job once, on one host; every host ran some; the pid that ran it (from
    the task's own row) is a process of the host its worker id names."""
    labels = [f"share-{i}" for i in range(24)]
    pids = {name: set(cluster.net.pids(cluster.net.host_named(name))) for name in cluster.workers}
    cluster.enqueue("from taskmill import enqueue_many\nfrom tests.project.tasks import record\n"
                    f"enqueue_many(record, [(label, 0.15) for label in {labels!r}])")
    cluster.wait(lambda: cluster.rows(
        "SELECT count(*) FROM taskmill_job WHERE task_path = %s AND status = 'SUCCESSFUL'",
        RECORD)[0][0] == len(labels), 60, "the 24 jobs")
    jobs = cluster.rows("SELECT args->>0, attempts, worker_ids FROM taskmill_job "
                        "WHERE task_path = %s", RECORD)
    ran = dict(cluster.rows("SELECT label, pid FROM project_execution "
                            "WHERE label LIKE 'share-%%'"))
    runs = Counter(label for (label,) in cluster.rows(
        "SELECT label FROM project_execution WHERE label LIKE 'share-%%'"))
    assert runs == Counter(labels), runs  # Each ran once: one row per label.
    assert {attempts for _, attempts, _ in jobs} == {1}
    assert all("," not in worker_ids for _, _, worker_ids in jobs)
    per_host = Counter(hostname_of(worker_ids) for _, _, worker_ids in jobs)
    assert set(per_host) == set(cluster.workers), per_host
    for label, _, worker_ids in jobs:
        assert ran[label] in pids[hostname_of(worker_ids)], (label, worker_ids)


def cut_host_is_recovered_changes_nothing_and_rejoins(cluster: Cluster) -> None:
    """(b) Cut the host running a long job; another host recovers and finishes it; the
    cut host's late outcome is refused when its link comes back; it works again."""
    net = cluster.net
    job_id = cluster.enqueue("from tests.project.tasks import slow\n"
                             "print(slow.enqueue('long', 2.0).id)").strip()
    owner = cluster.wait(lambda: cluster.job(job_id)[2], 30, "the long job to start")
    assert isinstance(owner, str)
    cut = net.host_named(hostname_of(owner))
    # Cut between two ticks of the schedule (ticks fall on whole seconds), not while a
    # scheduler may be inside its tick's transaction (the test below is about that); this
    # one is about the lease.
    while not 0.3 < time.time() % 1 < 0.6:
        time.sleep(0.02)
    net.cut(cut)
    cluster.event(f"cut {cut.hostname}")
    try:
        cluster.wait(lambda: cluster.job(job_id)[1] == 2, LEASE + 20,
                     f"another host to recover the job of the cut {cut.hostname}")
        cluster.wait(lambda: cluster.job(job_id)[0] == "SUCCESSFUL", 20,
                     "the second attempt to finish")
        finished = cluster.job(job_id)
        other = finished[3].split(",")[-1]
        other_pids = set(net.pids(net.host_named(hostname_of(other))))
    finally:
        net.restore(cut)
        cluster.event(f"restored {cut.hostname}")
    # Back on the link, the cut host's first attempt reports its outcome: refused.
    cut_worker = cluster.workers[cut.hostname]
    cluster.wait(lambda: "lease lost before its outcome was recorded" in cut_worker.output(),
                 30, f"{cut.hostname} to try to record its outcome")
    status, attempts, lease_owner, worker_ids, return_value = cluster.job(job_id)
    assert (status, attempts, lease_owner) == ("SUCCESSFUL", 2, None), cluster.logs()
    assert finished[:3] == (status, attempts, lease_owner) and finished[4] == return_value
    assert hostname_of(other) != cut.hostname
    assert worker_ids == f"{owner},{other}"
    assert return_value in other_pids  # slow() returns the pid that ran it.
    errors = cluster.rows("SELECT attempt, worker_id, exception_class_path FROM "
                          "taskmill_joberror WHERE job_id = %s", job_id)
    assert errors == [(1, owner, WORKER_LOST)], errors
    # It rejoins: registered again, and the only host left to run a job runs it.
    cluster.wait(lambda: cluster.rows("SELECT count(*) FROM taskmill_worker WHERE hostname = %s "
                                      "AND last_heartbeat > now() - %s * interval '1 second'",
                                      cut.hostname, LEASE)[0][0],
                 30, f"{cut.hostname} to heartbeat again")
    others = [w for name, w in cluster.workers.items() if name != cut.hostname]
    cluster.event("stopping the other hosts")
    cluster.alone_since = datetime.now(UTC)
    assert hosts.stop_all(others) == [0] * len(others), cluster.logs()
    # Its scheduler works again once the maintenance thread's connection does: at that
    # connection's next TCP retransmission, which backs off during a silent cut. Until
    # then no host enqueues ticks. What it enqueues then depends on how its looks were
    # held: a look that failed on the database collapses the missed ticks into the latest;
    # one whose statement hung through the cut catches up each tick since its last look
    # (up to a minute back). each_tick_once counts either way (once per tick).
    since = cluster.alone_since
    cluster.wait(lambda: any(t > since for t in ticks_in(cut_worker.output())), 30,
                 f"{cut.hostname} to schedule alone")
    rejoin = cluster.enqueue("from tests.project.tasks import record\n"
                             "print(record.enqueue('rejoin').id)").strip()
    cluster.wait(lambda: cluster.job(rejoin)[0] == "SUCCESSFUL", 30,
                 f"{cut.hostname} to run a job after rejoining")
    assert hostname_of(cluster.job(rejoin)[3]) == cut.hostname


def ticks_in(output: str) -> list[datetime]:
    return [datetime.fromisoformat(t) for t in ENQUEUED.findall(output)]


def each_tick_once(cluster: Cluster, seconds: float) -> None:
    """(c) Every host ran the scheduler the whole time; each tick was enqueued once, and
    none was skipped while a host could reach the database: not while one was cut off
    (two were left), nor once the rejoined host was left alone and its scheduler back.
    Between those two, the ticks no host could enqueue collapse into the next one."""
    fired = sorted((t, name) for name, worker in cluster.workers.items()
                   for t in ticks_in(worker.output()))
    ticks = [t for t, _ in fired]
    told = "\n".join(f"{t.time()} by {name}" for t, name in fired) + "\n" + cluster.logs()
    jobs = cluster.rows("SELECT count(*) FROM taskmill_job WHERE task_path = %s", TICK)[0][0]
    assert jobs == len(ticks) >= seconds - 6, told
    assert len(set(ticks)) == len(ticks), told  # No tick enqueued twice...
    assert cluster.alone_since is not None
    together = [t for t in ticks if t <= cluster.alone_since]
    alone = [t for t in ticks if t > cluster.alone_since]
    for phase in (together, alone):  # ...and none skipped while a host could.
        gaps = {(b - a).total_seconds() for a, b in zip(phase, phase[1:], strict=False)}
        assert gaps <= {1.0}, told
    assert len(together) >= 5 and alone, told
    ((last,),) = cluster.rows("SELECT last_tick FROM taskmill_schedulestate WHERE name = 'tick'")
    assert last == ticks[-1]


class Stalled(AssertionError):
    """The other hosts stopped scheduling and recovering."""


@pytest.mark.parametrize("via", ["postgresql", "pgbouncer"])
def test_a_host_lost_inside_a_transaction_does_not_stall_the_others(
        network: tuple[HostNetwork, PrivatePostgres], via: str, tmp_path: Path) -> None:
    """A host is cut at the worst moment: inside its tick transaction, after the UPDATE
    of the schedule's row and before its COMMIT. The window is made certain, not hoped
    for: a ``LOCK TABLE taskmill_job IN SHARE MODE`` held from the root namespace stops
    the tick's INSERT on the server; the host is cut while it waits, and the lock let go.
    The other two hosts must go on ticking, and recover the cut host's running job once
    its lease is out, as they do when a host is cut anywhere else (the test above).
    Directly, the bounds the worker sets on its sessions end the lost one; through
    PgBouncer, its ``idle_transaction_timeout`` does (docs/multiprocessing.md)."""
    import psycopg

    net, server = network
    reset(server)
    port, extra = server.port, []
    if via == "pgbouncer":
        port = net.start_pgbouncer(server).port
        extra = ["--poll-interval", "0.2"]
    cluster = start(net, server, port, extra, tmp_path)
    try:
        cluster.enqueue("from taskmill import enqueue_many\nfrom tests.project.tasks import slow\n"
                        "enqueue_many(slow, [('held-%d' % i, 60.0) for i in range(3)])")
        cluster.wait(lambda: cluster.rows("SELECT count(*) FROM taskmill_job WHERE task_path "
                                          "= %s AND status = 'RUNNING'", SLOW)[0][0] == 3,
                     30, "a long job on every host")
        with psycopg.connect(host="127.0.0.1", port=server.port, dbname=DB,
                             user="postgres") as locker:
            locker.execute("LOCK TABLE taskmill_job IN SHARE MODE")
            # Named by its application_name ("taskmill worker <host>:<pid>"): through
            # PgBouncer the client address is PgBouncer's.
            waiting = cluster.wait(lambda: cluster.rows(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s AND "
                "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO taskmill_job%%'", DB),
                10, "a host's tick INSERT to wait for the table lock")
            cut = net.host_named(waiting[0][0].split()[-1].split(":")[0])
            net.cut(cut)
            cluster.event(f"cut {cut.hostname} inside its tick transaction")
            locker.rollback()
        try:
            (last_before,) = cluster.rows("SELECT last_tick FROM taskmill_schedulestate")[0]
            (held,) = cluster.rows("SELECT id FROM taskmill_job WHERE task_path = %s AND "
                                   "lease_owner LIKE %s", SLOW, f"{cut.hostname}:%")[0]
            # A fix has to free the lock within about two leases to pass.
            deadline = time.monotonic() + LEASE * 3 + 6
            ticked = recovered = False
            while time.monotonic() < deadline and not (ticked and recovered):
                ticked = cluster.rows("SELECT last_tick FROM taskmill_schedulestate"
                                      )[0][0] > last_before
                # Recovered: its lost attempt recorded (the other hosts' threads are busy
                # with their own long jobs, so it waits READY).
                recovered = cluster.rows("SELECT count(*) FROM taskmill_joberror WHERE job_id = "
                                         "%s AND exception_class_path = %s", held,
                                         WORKER_LOST)[0][0] > 0
                time.sleep(0.2)
            if not (ticked and recovered):
                sessions = cluster.rows(
                    "SELECT host(client_addr), state, wait_event_type, left(query, 50) FROM "
                    "pg_stat_activity WHERE datname = %s AND (state = 'idle in transaction' "
                    "OR wait_event_type = 'Lock')", DB)
                raise Stalled(f"{LEASE * 3 + 6:.0f}s after cutting {cut.hostname}: ticks "
                              f"{'went on' if ticked else 'stopped'}, its job "
                              f"{'was' if recovered else 'was not'} recovered; sessions: "
                              f"{sessions}")
        finally:
            net.restore(cut)
    finally:
        cluster.close()
