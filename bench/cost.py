"""What one job costs PostgreSQL: WAL bytes, transactions and rows written, CPU.

    .venv/bin/python bench/cost.py                  # 2,000 single enqueues, 20,000 in bulk, a drain of 20,000
    .venv/bin/python bench/cost.py --jobs 50000

PostgreSQL (database ``taskmill_cost``, made afresh). Each phase is measured by the
server's own counters, read before and after it: WAL written (``pg_current_wal_lsn``),
transactions committed (``pg_stat_database``), rows inserted / updated (HOT or not) /
deleted in ``taskmill_job`` (``pg_stat_user_tables``), and CPU time of every server
process of the database and of the client or worker (``/proc``), each divided by the
jobs. The phases: single ``enqueue()`` calls from this process (autocommit), one
``enqueue_many``, and a drain by ``taskmill worker --burst --processes 2 --threads 1``.

What it implies for one server is printed last: the jobs a second the server's CPU
allows at this cost, per core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_PG_NAME", "taskmill_cost")
os.environ["BENCH_DB"] = "postgresql"
os.environ["BENCH_ADMIN"] = ""

from bench.scale import setup_database  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their reaped children, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def server_pids() -> list[int]:
    """Every PostgreSQL process: backends, the WAL writer, the checkpointer."""
    out = subprocess.run(["pgrep", "-f", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def counters() -> dict[str, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("""
            SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),
                   (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                   n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
            FROM pg_stat_user_tables WHERE relname = 'taskmill_job'""")
        wal, commits, ins, upd, hot, dele = cursor.fetchone()
    return {"wal": float(wal), "commits": commits, "inserted": ins, "updated": upd,
            "hot": hot, "deleted": dele, "server_cpu": cpu_seconds(server_pids())}


class Phase:
    """Counters around a block of work; ``client_cpu`` is the work's own CPU."""

    def __init__(self, name: str, jobs: int) -> None:
        self.name, self.jobs = name, jobs

    def __enter__(self) -> Phase:
        time.sleep(1.1)  # Other backends flush their statistics at most once a second.
        self.before = counters()
        self.started = time.perf_counter()
        self.client_cpu = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self.started
        time.sleep(1.1)
        after = counters()
        per = {key: (after[key] - self.before[key]) / self.jobs for key in after}
        print(f"{self.name} ({self.jobs:,} jobs, {seconds:.2f} s): "
              f"WAL {per['wal']:,.0f} B/job; {per['commits']:.3f} commits/job; rows "
              f"inserted {per['inserted']:.2f}, updated {per['updated']:.2f} "
              f"(HOT {per['hot']:.2f}), deleted {per['deleted']:.2f} per job; CPU "
              f"server {per['server_cpu'] * 1e6:,.0f} µs/job, client "
              f"{self.client_cpu / self.jobs * 1e6:,.0f} µs/job", flush=True)
        self.per = per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--single", type=int, default=2_000, help="single enqueues")
    parser.add_argument("--jobs", type=int, default=20_000, help="bulk enqueue and drain")
    args = parser.parse_args()
    setup_database()
    import taskmill
    from bench.tasks import noop

    noop.enqueue()  # Connect and warm up outside the counts.
    with Phase("single enqueue()", args.single) as phase:
        started = time.process_time()
        for _ in range(args.single):
            noop.enqueue()
        phase.client_cpu = time.process_time() - started
    with Phase("enqueue_many()", args.jobs) as phase:
        started = time.process_time()
        taskmill.enqueue_many(noop, [()] * args.jobs)
        phase.client_cpu = time.process_time() - started
    bulk_server_cpu = phase.per["server_cpu"]
    total = args.single + args.jobs + 1
    with Phase("drain (claim, run, complete)", total) as drain:
        before = os.times()
        subprocess.run([sys.executable, "-m", "django", "taskmill", "worker", "--burst",
                        "--processes", "2", "--threads", "1"],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        after = os.times()  # The worker's whole tree, reaped: our children's times.
        drain.client_cpu = (after.children_user - before.children_user
                            + after.children_system - before.children_system)
    per_job = drain.per["server_cpu"] + bulk_server_cpu
    if per_job > 0:
        print(f"\nserver CPU per job, bulk enqueue + drain: {per_job * 1e6:,.0f} µs: one core "
              f"of this machine's PostgreSQL carries at most {1 / per_job:,.0f} jobs/s "
              f"({os.cpu_count()} cores here, shared with the workers)")


if __name__ == "__main__":
    main()
