"""Core benchmark: enqueue rates, drain rate, pickup latency and worker memory.

    python bench/drain.py                      # PostgreSQL (database taskmill_bench)
    BENCH_DB=sqlite python bench/drain.py      # SQLite file in the temp dir
    python bench/drain.py --jobs 20000 --processes 2 --latency-samples 300

Each figure is printed as one line ``name: value unit``; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def setup_database() -> None:
    import django

    vendor = os.environ.get("BENCH_DB", "postgresql")
    if vendor == "postgresql":
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            name = os.environ.get("BENCH_PG_NAME", "taskmill_bench")
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                c.execute(f'CREATE DATABASE "{name}"')
    elif vendor == "mysql":
        import MySQLdb

        c = MySQLdb.connect(host="127.0.0.1", user="root")
        c.cursor().execute("CREATE DATABASE IF NOT EXISTS taskmill_bench CHARACTER SET utf8mb4")
        c.close()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def clear() -> None:
    from django.db import connection

    from taskmill.models import Job, JobError, Worker

    with connection.cursor() as cursor:
        for model in (JobError, Job, Worker):
            if connection.vendor == "sqlite":
                cursor.execute(f"DELETE FROM {model._meta.db_table}")
            else:
                cursor.execute(f"TRUNCATE TABLE {model._meta.db_table}")


def report(name: str, value: float, unit: str) -> None:
    print(f"{name}: {value:,.1f} {unit}", flush=True)


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """The median of ``runs`` timed calls, in milliseconds, after one untimed call."""
    call()  # Warm: the connection, the plan cache, the pages.
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bench_enqueue(n_single: int, n_many: int) -> None:
    import taskmill
    from bench.tasks import noop

    clear()
    start = time.perf_counter()
    for _ in range(n_single):
        noop.enqueue()
    report("enqueue (single, autocommit)", n_single / (time.perf_counter() - start), "jobs/s")
    clear()
    threads, per_thread = 4, n_single // 4

    def enqueue_in_thread() -> None:
        from django.db import connection

        for _ in range(per_thread):
            noop.enqueue()
        connection.close()

    workers = [threading.Thread(target=enqueue_in_thread) for _ in range(threads)]
    start = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    report(f"enqueue (single, autocommit, {threads} threads like a web server's)",
           threads * per_thread / (time.perf_counter() - start), "jobs/s")
    clear()
    items = [()] * n_many
    start = time.perf_counter()
    taskmill.enqueue_many(noop, items)
    report("enqueue_many", n_many / (time.perf_counter() - start), "jobs/s")


def worker_command(processes: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "django", "taskmill", "worker", "--processes", str(processes),
            *extra]


def child_rss_mb(supervisor_pid: int) -> list[float]:
    out = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True)
    sizes = []
    for pid in out.stdout.split():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return sizes


def bench_drain(n_jobs: int, processes: int, threads: int) -> None:
    from django.db.models import Max, Min

    import taskmill
    from bench.tasks import noop
    from taskmill.models import Job

    clear()
    for offset in range(0, n_jobs, 10_000):
        taskmill.enqueue_many(noop, [()] * min(10_000, n_jobs - offset))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peak: list[float] = []
    start = time.perf_counter()
    proc = subprocess.Popen(worker_command(processes, "--burst", "--threads", str(threads)),
                            env=env, cwd=ROOT)

    def sample() -> None:
        while proc.poll() is None:
            sizes = child_rss_mb(proc.pid)
            if sizes and max(sizes) > (max(peak) if peak else 0):
                peak[:] = sizes
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    wall = time.perf_counter() - start
    sampler.join()
    span = Job.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
    done = Job.objects.filter(status="SUCCESSFUL").count()
    busy = (span["last"] - span["first"]).total_seconds()
    report(f"drain {n_jobs} no-op jobs, {processes} processes x {threads} thread(s), "
           "first start to last finish", done / busy, "jobs/s")
    report("drain, whole command incl. start-up and exit", done / wall, "jobs/s")
    if done != n_jobs:
        print(f"WARNING: only {done} of {n_jobs} jobs succeeded")
    if peak:
        report("worker RSS (peak, largest process)", max(peak), "MB")


def bench_latency(samples: int, gap: float) -> None:
    from bench.tasks import stamp

    clear()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(worker_command(1), env=env, cwd=ROOT)
    try:
        time.sleep(3)  # start-up, LISTEN, first idle wait
        latencies = []
        for _ in range(samples):
            result = stamp.enqueue()
            committed = time.time()
            deadline = time.time() + 10
            while True:
                result.refresh()
                if result.is_finished:
                    break
                if time.time() > deadline:
                    raise RuntimeError("job not picked up within 10 s")
                time.sleep(0.002)
            latencies.append((result.return_value - committed) * 1000)
            time.sleep(gap)
    finally:
        proc.terminate()
        proc.wait()
    latencies.sort()
    report("pickup latency p50 (idle worker, enqueue commit to task start)",
           statistics.median(latencies), "ms")
    report("pickup latency p99", latencies[int(len(latencies) * 0.99) - 1], "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=3_000, help="single enqueues to time")
    parser.add_argument("--many", type=int, default=50_000, help="jobs in one enqueue_many")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--only", choices=["enqueue", "drain", "latency"])
    args = parser.parse_args()
    setup_database()
    from django.db import connection

    print(f"# taskmill benchmark on {connection.vendor}, {os.cpu_count()} CPUs", flush=True)
    if args.only in (None, "enqueue"):
        bench_enqueue(args.single, args.many)
    if args.only in (None, "drain"):
        bench_drain(args.jobs, args.processes, args.threads)
    if args.only in (None, "latency"):
        bench_latency(args.latency_samples, gap=0.01)


if __name__ == "__main__":
    main()
