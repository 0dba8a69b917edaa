"""What one of MySQL's indexes of parked jobs costs the enqueues: of the jobs parked for
a rate key (migration 0015, the default) or for their due time (0016).

    BENCH_DB=mysql .venv/bin/python bench/mysql_index.py --rounds 4 [--migration 0016]

Each round times ``--single`` single enqueues and one ``enqueue_many`` of ``--many``
jobs with the index dropped and with it, the order alternating from round to round (the
machine's speed drifts); medians and the ratio "with / without" come last. The index is
left in place at the end, as the migration made it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["BENCH_DB"] = "mysql"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.drain import clear, setup_database  # noqa: E402

#: Each migration's index: its name and its columns.
INDEXES = {
    "0015": ("taskmill_job_parked_rate_my",
             "(rate_key, parked, parked_for_rate, priority DESC, fair_rank, run_after, id)"),
    "0016": ("taskmill_job_parked_time_my", "(parked_for_time, queue_name, run_after)"),
}


def set_index(migration: str, present: bool) -> None:
    from django.db import connection

    name, columns = INDEXES[migration]
    with connection.cursor() as cursor:
        cursor.execute("SHOW INDEX FROM taskmill_job WHERE Key_name = %s", [name])
        there = bool(cursor.fetchall())
        if present and not there:
            cursor.execute(f"CREATE INDEX {name} ON taskmill_job {columns}")
        elif there and not present:
            cursor.execute(f"DROP INDEX {name} ON taskmill_job")


def rates(single: int, many: int) -> tuple[float, float]:
    """Single enqueues a second, and jobs a second of one enqueue_many."""
    import taskmill
    from bench.tasks import noop

    started = time.perf_counter()
    for _ in range(single):
        noop.enqueue()
    single_rate = single / (time.perf_counter() - started)
    started = time.perf_counter()
    taskmill.enqueue_many(noop, [[] for _ in range(many)])
    return single_rate, many / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--single", type=int, default=1_000, help="single enqueues a round")
    parser.add_argument("--many", type=int, default=30_000, help="jobs in one enqueue_many")
    parser.add_argument("--migration", choices=sorted(INDEXES), default="0015",
                        help="whose index to time")
    args = parser.parse_args()
    setup_database()
    found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for round_no in range(args.rounds):
        for present in ((False, True) if round_no % 2 == 0 else (True, False)):
            clear()
            set_index(args.migration, present)
            found[present].append(rates(args.single, args.many))
    set_index(args.migration, True)
    clear()
    for column, name in enumerate(("single enqueue", "enqueue_many")):
        without = statistics.median(rate[column] for rate in found[False])
        with_index = statistics.median(rate[column] for rate in found[True])
        print(f"{name}: {without:,.0f}/s without the index, {with_index:,.0f}/s with it: "
              f"{with_index / without:.3f}×")


if __name__ == "__main__":
    main()
