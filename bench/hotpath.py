"""The worker's hot path on a big table: does a worker of one queue pay for the history,
for another queue's backlog, or for its own queue's blocked jobs?

    .venv/bin/python bench/hotpath.py                          # 10,000,000 finished, 1,000,000 elsewhere
    .venv/bin/python bench/hotpath.py --history 200000 --elsewhere 100000 --full-key 20000 --paused 20000 --rate-key 20000

PostgreSQL (database ``taskmill_hotpath``, made afresh). The table grows in steps, and
each step is measured the same way, its ratio to the empty table printed:

1. ``empty``: nothing but the measurement's own jobs;
2. ``+history``: ``--history`` finished jobs of the served queue, over the past week;
3. ``+elsewhere``: ``--elsewhere`` due READY jobs on a queue no worker here serves;
4. ``+full key``: ``--full-key`` due jobs of the served queue behind a saturated
   concurrency key (limit 1, its one job running), parked first as an idle worker
   parks them (the time it takes is printed);
5. ``+paused task``: ``--paused`` due jobs of the served queue of a paused task, parked
   first in the same way;
6. ``+full rate key``: ``--rate-key`` due jobs of the served queue whose rate key's
   window is full for the next hour, parked first in the same way.

Figures, for a worker of queue ``default``: a claim that finds nothing, ``next_wake`` (what
every idle wait asks, and a ``--burst`` worker before it exits), the claim of one due
job, pickup latency of a live one-process
worker (enqueue commit to task start, ``--samples`` jobs 20 ms apart), and the drain
rate of ``--drain`` no-op jobs by ``taskmill worker --processes 2 --threads 1`` (first
start to last finish). The statements are timed in this process through the store, as
the worker calls them (its claim prepared); medians of ``--runs``.

    .venv/bin/python bench/hotpath.py --side-by-side 5 --drain 20000

``--side-by-side ROUNDS`` measures two tables in alternate rounds instead of one grown in
steps, as this machine's speed drifts over the minutes a big table takes to build: an
empty one (``taskmill_hotpath``) and one holding the history and the other queue's
backlog (``taskmill_hotpath_big``); medians over the rounds, the ratio big / empty last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_PG_NAME", "taskmill_hotpath")
os.environ["BENCH_DB"] = "postgresql"
os.environ["BENCH_ADMIN"] = ""  # bench.scale would add the admin, which the worker needs not

from bench.scale import (  # noqa: E402
    HISTORY,
    WEEK,
    analyze,
    execute,
    median_ms,
    recreate_postgresql_database,
    setup_database,
)

WORKER = "bench:hotpath:claims"
HOLDER = "bench:hotpath:holder"  # owns the running job that saturates the key


_store: Any = None


def store() -> Any:
    """A store as a worker's: a connection of its own, its claim prepared."""
    global _store
    if _store is None:
        from taskmill.store import private_store

        _store = private_store("default")
        _store.prepare_for_worker()
    return _store


def claim_nothing() -> None:
    assert store().claim(["default"], 10, WORKER) == []


def next_wake() -> None:
    store().next_wake(["default"])


def claim_one(runs: int) -> float:
    """One due job enqueued, then claimed (timed) and deleted again, ``runs`` times."""
    from bench.tasks import noop

    times = []
    for _ in range(runs + 1):
        result = noop.enqueue()
        started = time.perf_counter()
        claimed = store().claim(["default"], 1, WORKER)
        times.append((time.perf_counter() - started) * 1000)
        assert [str(job.id) for job in claimed] == [str(result.id)], claimed
        execute("DELETE FROM taskmill_job WHERE id = %s", [result.id])
    return statistics.median(times[1:])


def worker(*extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "django", "taskmill", "worker",
                             "--queues", "default", "--threads", "1", *extra],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pickup(samples: int) -> float:
    """Median ms from an enqueue's commit to its task's start, a live idle worker."""
    from bench.tasks import stamp

    proc = worker("--processes", "1")
    try:
        time.sleep(3)
        latencies = []
        for _ in range(samples):
            result = stamp.enqueue()
            committed = time.time()
            deadline = committed + 10
            while not result.is_finished:
                if time.time() > deadline:
                    raise RuntimeError("a job was not picked up within 10 s")
                time.sleep(0.001)
                result.refresh()
            latencies.append((result.return_value - committed) * 1000)
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait()
    return statistics.median(latencies)


def drain(jobs: int) -> float:
    """Jobs/s of a 2-process worker over ``jobs`` no-op jobs (first start to last finish)."""
    from django.db import connection

    import taskmill
    from bench.tasks import noop

    results = taskmill.enqueue_many(noop, [()] * jobs)
    ids = [result.id for result in results]
    proc = worker("--processes", "2")
    try:
        deadline = time.monotonic() + 60 + jobs / 200
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT COUNT(*), EXTRACT(EPOCH FROM MAX(finished_at) - "
                               "MIN(started_at)) FROM taskmill_job WHERE id = ANY(%s) "
                               "AND status = 'SUCCESSFUL'", [ids])
                done, seconds = cursor.fetchone()
                if done == jobs:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drain: {done} of {jobs} done in time")
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()
    execute("DELETE FROM taskmill_job WHERE id = ANY(%s)", [ids])
    return jobs / float(seconds)


def measure(args: argparse.Namespace) -> dict[str, float]:
    analyze()
    figures = {
        "claim, nothing due (ms)": median_ms(claim_nothing, args.runs),
        "next_wake, each idle wait (ms)": median_ms(next_wake, args.runs),
        "claim of one due job (ms)": claim_one(args.runs),
        "pickup p50, live worker (ms)": pickup(args.samples),
        "drain, 2 processes (jobs/s)": drain(args.drain),
    }
    for name, value in figures.items():
        print(f"    {name}: {value:,.2f}", flush=True)
    return figures


def add_history(rows: int) -> None:
    from django.db import transaction

    with transaction.atomic():
        execute(HISTORY["postgresql"] % {"n": rows, "step": WEEK / rows})


def add_waiting(rows: int, queue: str, task: str, key: str | None = None,
                rate_key: str | None = None) -> None:
    """``rows`` due READY jobs, made in the server (uuid ids: the claim orders by id last);
    with ``key`` a concurrency key of limit 1, with ``rate_key`` a rate of 10 a second."""
    execute("""
        INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args,
            kwargs, enqueued_at, run_after, attempts, max_attempts, retry_backoff,
            transactional, worker_ids, cancel_force, concurrency_key, concurrency_limit,
            rate_key, rate_limit, rate_period)
        SELECT gen_random_uuid(), 'default', %s, %s, 0, 'READY', '[]', '{}',
            now() - interval '1 hour', now() - interval '1 hour', 0, 1, 2.0, false, '',
            false, %s, %s, %s, %s, %s
        FROM generate_series(1, %s)""", [task, queue, key, 1 if key else None, rate_key,
                                         10 if rate_key else None,
                                         1.0 if rate_key else None, rows])


def add_full_key(rows: int) -> float:
    """``rows`` due jobs behind a saturated concurrency key (limit 1, its one job
    running); returns the ms an idle worker then takes to park them, once."""
    from django.utils import timezone

    from taskmill.models import Job, JobStatus, Worker

    now = timezone.now()
    # The holder's heartbeat is far ahead: no recovery takes its running job back.
    Worker.objects.create(id=HOLDER, hostname="bench", pid=1, queues=["default"], threads=1,
                          started_at=now, last_heartbeat=now + dt.timedelta(days=1))
    Job.objects.create(task_path="bench.tasks.stamp", queue_name="default",
                       status=JobStatus.RUNNING, enqueued_at=now, run_after=now,
                       started_at=now, last_attempted_at=now, attempts=1,
                       lease_owner=HOLDER, worker_ids=HOLDER, concurrency_key="k",
                       concurrency_limit=1)
    add_waiting(rows, "default", "bench.tasks.stamp", key="k")
    return park_as_idle_workers_do()


def add_paused_task(rows: int) -> float:
    """``rows`` due jobs of a paused task on the served queue; returns the ms an idle
    worker then takes to park them, once."""
    import taskmill

    add_waiting(rows, "default", "bench.tasks.held")
    taskmill.pause(task="bench.tasks.held")
    return park_as_idle_workers_do()


def add_full_rate_key(rows: int) -> float:
    """``rows`` due jobs whose rate key's window is full for the next hour; returns the
    ms an idle worker then takes to park them, once."""
    add_waiting(rows, "default", "bench.tasks.noop", rate_key="bench-rate")
    execute("INSERT INTO taskmill_ratekey (rate_key, full_until, parked) "
            "VALUES ('bench-rate', now() + interval '1 hour', false)")
    return park_as_idle_workers_do()


def park_as_idle_workers_do() -> float:
    """Park what may not start, as the first idle waits do; the ms it took."""
    analyze()
    started = time.perf_counter()
    while store().park_blocked(["default"]):
        pass
    return (time.perf_counter() - started) * 1000


def use_database(name: str) -> None:
    """Point this process's connection, its store, and the workers it starts at ``name``."""
    global _store
    from django.db import connection

    from taskmill.store import close_store

    close_store(_store)
    _store = None
    connection.close()
    connection.settings_dict["NAME"] = name
    os.environ["BENCH_PG_NAME"] = name


def side_by_side(args: argparse.Namespace) -> None:
    from django.core.management import call_command

    empty = os.environ["BENCH_PG_NAME"]
    big = f"{empty}_big"
    for name in (empty, big):
        recreate_postgresql_database(name)
    import django

    django.setup()
    for name in (empty, big):
        use_database(name)
        call_command("migrate", verbosity=0)
        analyze()
    started = time.perf_counter()
    add_history(args.history)
    add_waiting(args.elsewhere, "elsewhere", "bench.tasks.noop")
    analyze()
    print(f"# {big}: {args.history:,} finished + {args.elsewhere:,} due on another queue, "
          f"built in {time.perf_counter() - started:.1f} s", flush=True)
    figures: dict[str, dict[str, list[float]]] = {empty: {}, big: {}}
    for round_no in range(args.side_by_side):
        for name in (empty, big) if round_no % 2 == 0 else (big, empty):
            use_database(name)
            print(f"# round {round_no + 1}, {name}", flush=True)
            for key, value in measure(args).items():
                figures[name].setdefault(key, []).append(value)
    print(f"# medians of {args.side_by_side} rounds: empty / big (ratio big / empty)")
    for key in figures[empty]:
        low, high = (statistics.median(figures[name][key]) for name in (empty, big))
        print(f"{key}: {low:,.2f} / {high:,.2f} ({high / low:.2f}×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--history", type=int, default=10_000_000, help="finished jobs")
    parser.add_argument("--elsewhere", type=int, default=1_000_000,
                        help="due jobs of a queue nobody here serves")
    parser.add_argument("--full-key", type=int, default=100_000,
                        help="due jobs of the served queue behind a saturated concurrency key")
    parser.add_argument("--paused", type=int, default=100_000,
                        help="due jobs of the served queue of a paused task")
    parser.add_argument("--rate-key", type=int, default=100_000,
                        help="due jobs of the served queue behind a full rate key")
    parser.add_argument("--runs", type=int, default=21, help="timed runs per statement")
    parser.add_argument("--samples", type=int, default=50, help="pickup samples")
    parser.add_argument("--drain", type=int, default=5_000, help="jobs in each drain")
    parser.add_argument("--side-by-side", type=int, default=0, metavar="ROUNDS",
                        help="an empty table and one with the history and the other "
                             "queue's backlog, measured in alternate rounds")
    args = parser.parse_args()
    if args.side_by_side:
        side_by_side(args)
        return
    setup_database()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("empty", lambda: None),
        (f"+history ({args.history:,} finished)", lambda: add_history(args.history)),
        (f"+elsewhere ({args.elsewhere:,} due on another queue)",
         lambda: add_waiting(args.elsewhere, "elsewhere", "bench.tasks.noop")),
        (f"+full key ({args.full_key:,} due behind a saturated concurrency key)",
         lambda: print(f"    parked by an idle worker in {add_full_key(args.full_key):,.0f} ms",
                       flush=True)),
        (f"+paused task ({args.paused:,} due of a paused task)",
         lambda: print(f"    parked by an idle worker in {add_paused_task(args.paused):,.0f} ms",
                       flush=True)),
        (f"+full rate key ({args.rate_key:,} due behind a full rate key)",
         lambda: print(f"    parked by an idle worker in {add_full_rate_key(args.rate_key):,.0f} ms",
                       flush=True)),
    ]
    first: dict[str, float] = {}
    for name, build in steps:
        started = time.perf_counter()
        build()
        print(f"# {name}: built in {time.perf_counter() - started:.1f} s", flush=True)
        figures = measure(args)
        first = first or figures
        print("  ratio to empty: " + "; ".join(
            f"{key.split(' (')[0]} {value / first[key]:.2f}×" for key, value in figures.items()),
            flush=True)


if __name__ == "__main__":
    main()
