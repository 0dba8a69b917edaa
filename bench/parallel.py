"""Parallel work: parallel_map overhead and speedup, batch fan-out throughput.

    python bench/parallel.py                     # PostgreSQL (database taskmill_bench_parallel)
    BENCH_DB=sqlite python bench/parallel.py     # SQLite file in the temp dir
    python bench/parallel.py --children 10000 --cpu-items 8 --cpu-n 3000000

Each figure is printed as one line ``name: value unit``; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_PG_NAME", "taskmill_bench_parallel")
os.environ.setdefault("BENCH_SQLITE_NAME", os.path.join("/tmp", "taskmill-bench-parallel.sqlite3"))


def report(name: str, value: float, unit: str) -> None:
    print(f"{name}: {value:,.2f} {unit}", flush=True)


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_overhead(items: int) -> None:
    from bench.parallel_tasks import tiny
    from taskmill import parallel_map

    data = list(range(items))
    assert parallel_map(tiny, data, processes=2) == [tiny(x) for x in data]
    serial = best_of(5, lambda: [tiny(x) for x in data])
    one_by_one = best_of(5, lambda: parallel_map(tiny, data, processes=2))
    chunked = best_of(5, lambda: parallel_map(tiny, data, processes=2, chunksize=50))
    start_only = best_of(10, lambda: parallel_map(tiny, [1], processes=1))
    report(f"parallel_map {items} tiny items, 2 processes, chunksize=1", one_by_one * 1000, "ms")
    report("  per item", (one_by_one - serial) / items * 1e6, "us")
    report(f"parallel_map {items} tiny items, 2 processes, chunksize=50", chunked * 1000, "ms")
    report("parallel_map fixed cost (fork, 1 item, reap)", start_only * 1000, "ms")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spawn = best_of(3, lambda: subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, check=True))
    report("for comparison: a fresh interpreter + django.setup() (spawn's cost per child)",
           spawn * 1000, "ms")


def bench_speedup(count: int, n: int, runs: int = 3) -> None:
    from bench.parallel_tasks import cpu_work
    from taskmill import parallel_map

    items = [n] * count
    serial = parallel = float("inf")
    for _ in range(runs):  # Interleaved, best of each: the machine's load hits both alike.
        serial = min(serial, best_of(1, lambda: [cpu_work(x) for x in items]))
        parallel = min(parallel, best_of(1, lambda: parallel_map(cpu_work, items, processes=2)))
    report(f"CPU-bound work ({count} x cpu_work({n:,})), serial", serial, "s")
    report("same work, parallel_map with 2 processes", parallel, "s")
    report("speedup (goal >= 1.8)", serial / parallel, "x")
    report("load average during the run (2 CPUs)", os.getloadavg()[0], "")


def bench_batch(children: int, processes: int) -> None:
    from bench.parallel_tasks import child, finished
    from taskmill import enqueue_batch, get_batch

    clear()
    start = time.perf_counter()
    batch = enqueue_batch(child, range(children), then=finished)
    enqueued = time.perf_counter() - start
    report(f"enqueue_batch of {children:,} children (one transaction)", children / enqueued,
           "children/s")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "django", "taskmill", "worker", "--burst",
                    "--processes", str(processes)], env=env, cwd=ROOT, check=True)
    status = get_batch(batch.id)
    wall = time.perf_counter() - start
    from django.db.models import Max, Min

    from taskmill.models import Job

    span = Job.objects.filter(batch_id=batch.id).aggregate(first=Min("started_at"),
                                                           last=Max("finished_at"))
    busy = (span["last"] - span["first"]).total_seconds()
    assert status.succeeded == children and status.then_result_id, status
    then = Job.objects.get(id=status.then_result_id)
    report(f"batch of {children:,} drained by {processes} processes, first start to last "
           "finish", children / busy, "children/s")
    report("batch, whole worker command incl. start-up", children / wall, "children/s")
    print(f"then job: {then.status}, enqueued "
          f"{(then.enqueued_at - span['last']).total_seconds() * 1000:.1f} ms after the last "
          "child finished", flush=True)


def clear() -> None:
    from django.db import connection

    from taskmill.models import Batch, Job, JobError, Worker

    with connection.cursor() as cursor:
        for model in (JobError, Job, Worker, Batch):
            verb = "DELETE FROM" if connection.vendor == "sqlite" else "TRUNCATE TABLE"
            cursor.execute(f"{verb} {model._meta.db_table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--cpu-items", type=int, default=8)
    parser.add_argument("--cpu-n", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3, help="speedup: interleaved runs")
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", choices=["overhead", "speedup", "batch"])
    args = parser.parse_args()
    from bench.drain import setup_database

    setup_database()
    from django.db import connection

    print(f"# taskmill parallel benchmark on {connection.vendor}, {os.cpu_count()} CPUs",
          flush=True)
    if args.only in (None, "overhead"):
        bench_overhead(args.items)
    if args.only in (None, "speedup"):
        bench_speedup(args.cpu_items, args.cpu_n, args.runs)
    if args.only in (None, "batch"):
        bench_batch(args.children, args.processes)


if __name__ == "__main__":
    main()
