"""What a backlog costs a worker's claims, on any database: a full concurrency key's and
jobs due later, before and after idle workers park them, and a queue's, to a worker of
several queues.

    .venv/bin/python bench/backlog.py                      # PostgreSQL, 100,000 jobs
    BENCH_DB=mysql .venv/bin/python bench/backlog.py
    BENCH_DB=sqlite .venv/bin/python bench/backlog.py --backlog 20000
    .venv/bin/python bench/backlog.py --cases deferred    # key, rate, queues, deferred

A full key: one job of the key runs (its one slot taken) and ``--backlog`` due jobs of
it wait; then the same behind a full rate key, their concurrency key with room. A claim
finds nothing to start and an idle wait's ``next_wake`` nothing due: before the park
each steps over the whole backlog. After the park (the store's own
``park_blocked``, as an idle worker calls it, until nothing is left) the database is
let settle as it would by itself (PostgreSQL: the ``VACUUM`` autovacuum runs; MySQL:
InnoDB's purge of the old index entries; SQLite: nothing), and both are timed again,
against an empty table.

Several queues: ``--backlog`` due jobs wait on one queue, and a claim of one job by a
worker of that queue alone is timed against one by a worker of it and another (each
claim takes a job).

Deferred jobs: ``--backlog`` jobs due in an hour (scheduled, retrying, snoozed) wait on
one queue, and nothing is due: an idle wait's ``next_wake`` and a claim that finds
nothing, by a worker of that queue and by one of it and another, on an empty table,
then before and after the park. Medians of ``--runs`` calls; the ratios come last on
each line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.drain import clear, median_ms, setup_database  # noqa: E402

WORKER = "bench:1:backlog"
KEY = "bench.backlog"
TASK = "bench.tasks.noop"


def settle() -> None:
    """What the database does by itself between the park and the next look."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE taskmill_job")
        elif connection.vendor == "mysql":
            cursor.execute("ANALYZE TABLE taskmill_job")
            cursor.fetchall()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Until purge has caught up,
                cursor.execute("SHOW ENGINE INNODB STATUS")
                status = cursor.fetchone()[2]
                length = next(int(line.split()[-1]) for line in status.splitlines()
                              if line.startswith("History list length"))
                if length == 0:
                    break
                time.sleep(0.2)
            time.sleep(2)  # and removed the last entries (a claim still took 2 ms at 0).


def add_jobs(count: int, due_in: float = -60.0, **fields: Any) -> None:
    """``count`` jobs due in ``due_in`` seconds (past: due now), written straight to the
    table."""
    from django.utils import timezone

    from taskmill.ids import new_job_id
    from taskmill.models import Job, JobStatus

    now = timezone.now()
    due = now + dt.timedelta(seconds=due_in)
    for start in range(0, count, 5000):
        Job.objects.bulk_create([
            Job(id=new_job_id(), task_path=TASK, queue_name="default", status=JobStatus.READY,
                args=[], kwargs={}, enqueued_at=min(now, due), run_after=due, **fields)
            for _ in range(min(5000, count - start))])


def build(backlog: int, held_by: str) -> None:
    """``backlog`` due jobs that may not start: ``key``, one job of their concurrency key
    (limit 1) runs; ``rate``, their rate key's window is full for the next hour and
    their concurrency key (limit 5) has room."""
    from django.utils import timezone

    from taskmill.models import RateKey
    from taskmill.store import get_store

    clear()
    RateKey.objects.all().delete()
    store = get_store("default")
    store.register_worker(WORKER, "bench", os.getpid(), ["default"], 1)
    if held_by == "key":
        add_jobs(1, concurrency_key=KEY, concurrency_limit=1)
        (running,) = store.claim(["default"], 1, WORKER)
        assert running.concurrency_key == KEY
        add_jobs(backlog, concurrency_key=KEY, concurrency_limit=1)
    else:
        RateKey.objects.create(rate_key=KEY, full_until=timezone.now() + dt.timedelta(hours=1))
        add_jobs(backlog, concurrency_key=KEY, concurrency_limit=5, rate_key=KEY,
                 rate_limit=10, rate_period=1.0)
    settle()


def several_queues(backlog: int, runs: int) -> dict[str, float]:
    """A claim of one job beside ``backlog`` due ones, by a worker of their queue alone
    and by one of it and another."""
    from taskmill.store import get_store

    clear()
    store = get_store("default")
    store.register_worker(WORKER, "bench", os.getpid(), ["default", "elsewhere"], 1)
    add_jobs(backlog + 2 * runs)
    settle()
    return {"one queue": median_ms(lambda: store.claim(["default"], 1, WORKER), runs),
            "two queues": median_ms(
                lambda: store.claim(["default", "elsewhere"], 1, WORKER), runs)}


def idle_calls(runs: int) -> dict[str, float]:
    """An idle worker's two calls, by a worker of queue ``default`` alone and by one of it
    and another."""
    from taskmill.store import get_store

    store = get_store("default")
    both = ["default", "elsewhere"]
    return {"next_wake, one queue": median_ms(lambda: store.next_wake(["default"]), runs),
            "next_wake, two queues": median_ms(lambda: store.next_wake(both), runs),
            "claim, one queue": median_ms(lambda: store.claim(["default"], 1, WORKER), runs),
            "claim, two queues": median_ms(lambda: store.claim(both, 1, WORKER), runs)}


def deferred(backlog: int, runs: int) -> tuple[dict[str, float], ...]:
    """An idle worker's calls on an empty table, then beside ``backlog`` jobs due in an
    hour before and after the park; and how many were parked, in how long."""
    clear()
    empty = idle_calls(runs)
    add_jobs(backlog, due_in=3600)
    settle()
    before = idle_calls(runs)
    parked, took = park()
    settle()
    return empty, before, idle_calls(runs), {"parked": parked, "took": took}


def measure(runs: int) -> dict[str, float]:
    from taskmill.store import get_store

    store = get_store("default")
    return {
        "claim": median_ms(lambda: store.claim(["default"], 1, WORKER), runs),
        "next_wake": median_ms(lambda: store.next_wake(["default"]), runs),
    }


def park() -> tuple[int, float]:
    from taskmill.store import get_store

    store = get_store("default")
    started = time.perf_counter()
    parked = 0
    while found := store.park_blocked(["default"]):
        parked += found
    return parked, time.perf_counter() - started


CASES = ("key", "rate", "queues", "deferred")


def print_table(empty: dict[str, float], before: dict[str, float],
                after: dict[str, float]) -> None:
    width = max(len(name) for name in empty)
    print(f"{'call':<{width}} {'empty':>9} {'before park':>13} {'after park':>12} "
          f"{'ratios to empty':>20}")
    for name in empty:
        print(f"{name:<{width}} {empty[name]:>7.2f}ms {before[name]:>11.2f}ms "
              f"{after[name]:>10.2f}ms {before[name] / empty[name]:>8.1f}× "
              f"{after[name] / empty[name]:>6.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=100_000, help="due jobs held back")
    parser.add_argument("--runs", type=int, default=21, help="timed calls per figure")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES,
                        help="which backlogs (all by default)")
    args = parser.parse_args()
    setup_database()
    from django.db import connection

    build(0, "key")
    empty = measure(args.runs)
    for held_by, what in [("key", "a full concurrency key"),
                          ("rate", "a full rate key (their concurrency key has room)")]:
        if held_by not in args.cases:
            continue
        build(args.backlog, held_by)
        before = measure(args.runs)
        parked, took = park()
        settle()
        after = measure(args.runs)
        print(f"{connection.vendor}, {args.backlog:,} due jobs held back by {what}; "
              f"parked {parked:,} in {took:.1f} s")
        print_table(empty, before, after)
    if "queues" in args.cases:
        claims = several_queues(args.backlog, args.runs)
        print(f"claim beside {args.backlog:,} due jobs: by a worker of their queue "
              f"{claims['one queue']:.2f} ms, of it and another {claims['two queues']:.2f} "
              f"ms ({claims['two queues'] / claims['one queue']:.2f}×)")
    if "deferred" in args.cases:
        idle_empty, before, after, parking = deferred(args.backlog, args.runs)
        print(f"{connection.vendor}, {args.backlog:,} jobs due in an hour, nothing due; "
              f"parked {parking['parked']:,.0f} in {parking['took']:.1f} s")
        print_table(idle_empty, before, after)
    clear()


if __name__ == "__main__":
    main()
