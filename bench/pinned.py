"""A steady load while another session pins the oldest snapshot: what dead rows cost.

    .venv/bin/python bench/pinned.py                       # 1,000 jobs/s; 120 s before, 600 s pinned, 120 s after
    .venv/bin/python bench/pinned.py --rate 500 --phase 30 --pinned 60   # a quick look
    .venv/bin/python bench/pinned.py --pin-in other       # the snapshot held in another database
    .venv/bin/python bench/pinned.py --pin-in other --hold write   # there, a transaction that wrote
    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/pinned.py --against /tmp/before --rounds 2   # side by side

PostgreSQL (database ``taskmill_pinned``, made afresh), or MySQL/MariaDB with
``BENCH_DB=mysql`` (there the held transaction is ``START TRANSACTION WITH CONSISTENT
SNAPSHOT``, which keeps InnoDB's purge from removing the rows and index entries jobs
left behind; sizes are InnoDB's, the dead count its history list length, and ``--pin-in``
and ``--hold`` are PostgreSQL's only). A producer process enqueues
``--rate`` no-op jobs a second (a batch every 0.1 s) into an idle ``taskmill worker
--processes 2 --threads 1``; a stamp job every 0.25 s measures pickup (enqueue commit to
task start). Midway a third session opens a transaction, takes a snapshot and holds it
(``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1``) for ``--pinned`` seconds, as an
analytics query or a web request idle in transaction does: no row deleted or updated
after that snapshot can be vacuumed until it ends. Autovacuum is left to the server's
settings (on this machine: off, so the "after" phase runs a plain VACUUM first, as
autovacuum would).

``--pin-in other`` holds the snapshot in another database of the same server
(``taskmill_pinned_app``), as the project's own work does when the jobs have a database
of their own (``TASKS[...]["OPTIONS"]["DATABASE"]``): since PostgreSQL 14 a snapshot
holds back the cleanup of its own database's tables only.

``--hold write`` makes the held transaction write first (it takes a transaction id, as
any that inserted or updated a row does). A running transaction id holds back every
database's cleanup, so with ``--pin-in other`` it shows what a write transaction left
open by the project's own work costs the jobs.

Printed per phase (before, each third of the held one, after): jobs done per second, the
backlog at the phase's end, pickup p50 / p99, and the job table's and its indexes' sizes
at the end. ``--against DIR`` runs a worker of the code in DIR in turn with this one
(the enqueues are this checkout's) and prints the medians' ratios last.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_PG_NAME", "taskmill_pinned")
os.environ.setdefault("BENCH_MYSQL_NAME", "taskmill_pinned")
os.environ.setdefault("BENCH_DB", "postgresql")
MYSQL = os.environ["BENCH_DB"] == "mysql"
os.environ["BENCH_ADMIN"] = ""

from bench.scale import execute, setup_database  # noqa: E402

BATCHES_PER_SECOND = 10
PICKUP_GAP = 0.25


def producer(rate: int, stop: threading.Event) -> None:
    """``rate`` no-op jobs a second, a batch each tenth of a second, on time."""
    from django.db import connection

    import taskmill
    from bench.tasks import noop

    batch = max(1, rate // BATCHES_PER_SECOND)
    due = time.monotonic()
    while not stop.is_set():
        taskmill.enqueue_many(noop, [()] * batch)
        due += 1 / BATCHES_PER_SECOND
        stop.wait(max(0.0, due - time.monotonic()))
    connection.close()


def pickups(samples: list[float], stop: threading.Event) -> None:
    """A stamp job every PICKUP_GAP seconds; each one's commit-to-start time, in ms."""
    from django.db import connection

    from bench.tasks import stamp

    while not stop.is_set():
        result = stamp.enqueue()
        committed = time.time()
        deadline = committed + 60
        while not result.is_finished and time.time() < deadline and not stop.is_set():
            time.sleep(0.002)
            result.refresh()
        if result.is_finished:
            samples.append((result.return_value - committed) * 1000)
        stop.wait(PICKUP_GAP)
    connection.close()


def snapshot() -> dict[str, Any]:
    from django.db import connection

    if MYSQL:
        return mysql_snapshot()
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT (SELECT COUNT(*) FROM taskmill_job WHERE status = 'SUCCESSFUL'),
                   (SELECT COUNT(*) FROM taskmill_job WHERE status = 'READY'),
                   pg_relation_size('taskmill_job'), pg_indexes_size('taskmill_job'),
                   pg_relation_size('taskmill_job_ready'),
                   (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'taskmill_job')""")
        return snapshot_figures(*cursor.fetchone())


def snapshot_figures(done: int, ready: int, heap: int, indexes: int, claim_index: int,
            dead: int) -> dict[str, Any]:
    """One snapshot's figures: jobs done and waiting, sizes in MB, dead rows, when."""
    return {"done": done, "ready": ready, "heap_mb": heap / 2**20,
            "indexes_mb": indexes / 2**20, "claim_index_mb": claim_index / 2**20,
            "dead": dead, "at": time.monotonic()}


def mysql_snapshot() -> dict[str, Any]:
    """As :func:`snapshot`, from InnoDB's own figures (sizes as of its last statistics)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT COUNT(*) FROM taskmill_job WHERE status = 'SUCCESSFUL'), "
                       "(SELECT COUNT(*) FROM taskmill_job WHERE status = 'READY')")
        done, ready = cursor.fetchone()
        cursor.execute("SELECT data_length, index_length FROM information_schema.tables "
                       "WHERE table_schema = DATABASE() AND table_name = 'taskmill_job'")
        heap, indexes = cursor.fetchone()
        cursor.execute("SELECT stat_value * @@innodb_page_size FROM mysql.innodb_index_stats "
                       "WHERE database_name = DATABASE() AND table_name = 'taskmill_job' "
                       "AND index_name = 'taskmill_job_ready_my' AND stat_name = 'size'")
        claim_index = (cursor.fetchone() or (0,))[0]
        cursor.execute("SELECT count FROM information_schema.innodb_metrics "
                       "WHERE name = 'trx_rseg_history_len'")
        dead = (cursor.fetchone() or (0,))[0]
    return snapshot_figures(done, ready, heap, indexes, claim_index, dead)


def create_database(name: str) -> None:
    """An empty database ``name`` on the jobs' server, made afresh."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')


def pin(seconds: float, database: str, write: bool, started: threading.Event) -> None:
    """Hold one snapshot open for ``seconds`` in ``database``, on a connection of its own;
    with ``write``, a transaction id too."""
    if MYSQL:
        import MySQLdb

        held = MySQLdb.connect(host="127.0.0.1", user="root", database=database)
        held.cursor().execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        started.set()
        time.sleep(seconds)
        held.rollback()
        held.close()
        return
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}") as c:
        c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        c.execute("SELECT COUNT(*) FROM pg_class")  # Takes the snapshot, and keeps it.
        if write:
            c.execute("SELECT txid_current()")  # As an INSERT or UPDATE would take one.
        started.set()
        time.sleep(seconds)
        c.rollback()


def phase(name: str, seconds: float, samples: list[float]) -> dict[str, float]:
    first, start = snapshot(), len(samples)
    time.sleep(seconds)
    last = snapshot()
    taken = samples[start:]
    rate = (last["done"] - first["done"]) / (last["at"] - first["at"])
    p50 = statistics.median(taken) if taken else float("nan")
    p99 = sorted(taken)[max(0, int(len(taken) * 0.99) - 1)] if taken else float("nan")
    print(f"{name:<8} done {rate:,.0f} jobs/s; backlog at end {last['ready']:,}; pickup p50 "
          f"{p50:.1f} ms, p99 {p99:.1f} ms ({len(taken)} samples); table {last['heap_mb']:.0f} MB, "
          f"indexes {last['indexes_mb']:.0f} MB (claim index {last['claim_index_mb']:.1f} MB); "
          f"dead rows {last['dead']:,}", flush=True)
    return {"rate": rate, "p50": p50, "p99": p99, "backlog": last["ready"]}


def run(args: argparse.Namespace, code: Path) -> dict[str, dict[str, float]]:
    """One run: a fresh database, a worker of the code in ``code``, the three phases (the
    held one in thirds: what the dead rows cost grows for as long as it is held)."""
    setup_database()
    database = os.environ["BENCH_MYSQL_NAME" if MYSQL else "BENCH_PG_NAME"]
    if args.pin_in == "other":
        database = f"{database}_app"
        create_database(database)
    with contextlib.ExitStack() as closing:
        log = (closing.enter_context(open(f"{args.worker_log}.{code.name}", "a"))
               if args.worker_log else subprocess.DEVNULL)
        return run_worker(args, code, database, log)


def run_worker(args: argparse.Namespace, code: Path, database: str, log: Any
               ) -> dict[str, dict[str, float]]:
    """The three phases, with a worker of the code in ``code`` writing to ``log``."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "taskmill", "worker", "--processes", "2",
         "--threads", "1"], env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
        stdout=log, stderr=log)
    stop, samples = threading.Event(), []
    threads = [threading.Thread(target=producer, args=(args.rate, stop), daemon=True),
               threading.Thread(target=pickups, args=(samples, stop), daemon=True)]
    figures = {}
    try:
        time.sleep(3)
        for thread in threads:
            thread.start()
        print(f"# {args.rate} jobs/s offered; phases of {args.phase:.0f} s, pinned "
              f"{args.pinned:.0f} s in database {database} ({args.hold}); worker: {code}",
              flush=True)
        figures["before"] = phase("before", args.phase, samples)
        pinned = threading.Event()
        holder = threading.Thread(target=pin, args=(args.pinned, database, args.hold == "write",
                                                    pinned), daemon=True)
        holder.start()
        pinned.wait()
        for third in ("held 1/3", "held 2/3", "held 3/3"):
            figures[third] = phase(third, args.pinned / 3, samples)
        holder.join()
        if not MYSQL:  # InnoDB purges by itself once the snapshot is gone.
            execute("VACUUM taskmill_job")  # What autovacuum would do then.
        figures["after"] = phase("after", args.phase, samples)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        worker.terminate()
        worker.wait()
        from django.db import connections

        connections.close_all()  # The next run drops the database.
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="jobs enqueued per second")
    parser.add_argument("--phase", type=float, default=120, help="seconds before and after")
    parser.add_argument("--pinned", type=float, default=600, help="seconds the snapshot is held")
    parser.add_argument("--pin-in", choices=["jobs", "other"], default="jobs",
                        help="the database the snapshot is held in: the jobs' own, or another")
    parser.add_argument("--hold", choices=["snapshot", "write"], default="snapshot",
                        help="what the held transaction holds: a snapshot, or a write's id too")
    parser.add_argument("--against", type=Path, default=None,
                        help="a checkout of other code (git worktree add DIR COMMIT): its "
                             "worker and this one take turns, --rounds each")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, interleaved")
    parser.add_argument("--worker-log", default=None,
                        help="append each worker's output to this path, with its "
                             "checkout's folder name after a dot (it says when a window "
                             "of claims from the starts opens and ends)")
    args = parser.parse_args()
    codes = {"this": ROOT, **({"other": args.against.resolve()} if args.against else {})}
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in codes}
    for _ in range(args.rounds):
        for name, code in codes.items():
            results[name].append(run(args, code))
    if len(codes) < 2:
        return
    print(f"\n# medians of {args.rounds} round(s); ratio: this / other (lower is better)")
    for part in results["this"][0]:
        line = []
        for figure in ("p50", "p99"):
            this, other = (statistics.median(r[part][figure] for r in results[name])
                           for name in ("this", "other"))
            line.append(f"{figure} {this:.1f} / {other:.1f} ms = {this / other:.2f}x")
        print(f"{part:<9} pickup " + "; ".join(line))


if __name__ == "__main__":
    main()
