"""What draining a backlog behind a binding rate limit writes: row updates per job.

    .venv/bin/python bench/rate_backlog.py                       # 3,000 jobs at 300/s
    .venv/bin/python bench/rate_backlog.py --rate 50/s --jobs 2000 --baseline e69de7b

``--jobs`` no-op jobs of one rate key are enqueued at once, then ``taskmill worker
--processes 2 --threads 4`` drains them; the rate and the updates of ``taskmill_job``
rows (PostgreSQL's ``n_tup_upd``, read before and after) per job are printed. A job
needs 2 (its claim, its completion); one that waits parked 2 more (its park, its
unpark); every other is churn: jobs put back in line that the claims then step over
and the next idle look parks again, claims given back. ``--baseline REV`` runs taskmill
as of that revision too (a temporary git worktree, a database of its own), the rounds
interleaved; medians and the ratio come last. PostgreSQL only (the counter is its own).
"""

from __future__ import annotations

import argparse
import atexit
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("TASKMILL_ROOT", Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def one_drain(jobs: int, rate: str) -> tuple[float, float]:
    """In a process running ``ROOT``'s taskmill: jobs a second, and row updates a job."""
    from bench.drain import clear, setup_database, worker_command

    setup_database()
    from django.db import connection

    import taskmill
    from bench.tasks import noop
    from taskmill.models import Job, RateKey, RateSlice

    def updates() -> int:
        time.sleep(1.0)  # Backends report their counts within a second, and on exit.
        with connection.cursor() as cursor:
            cursor.execute("SELECT n_tup_upd FROM pg_stat_user_tables "
                           "WHERE relname = 'taskmill_job'")
            return int(cursor.fetchone()[0])

    clear()
    RateSlice.objects.all().delete()
    RateKey.objects.all().delete()
    taskmill.enqueue_many(noop.using(rate_limit=rate), [[] for _ in range(jobs)])
    before = updates()
    started = time.monotonic()
    worker = subprocess.Popen(worker_command(2, "--threads", "4"), cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while Job.objects.filter(status="SUCCESSFUL").count() < jobs:
            time.sleep(0.1)
        took = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    written = updates() - before
    clear()
    return jobs / took, written / jobs


def worktree(revision: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="taskmill-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach",
                    str(path), revision], check=True)
    atexit.register(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                     str(path)], check=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rate", default="300/s", help="the key's rate_limit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also taskmill as of REV")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(*one_drain(args.jobs, args.rate))
        return
    trees = {"taskmill": (ROOT, "taskmill_bench")}
    if args.baseline:
        trees[f"taskmill@{args.baseline}"] = (worktree(args.baseline), "taskmill_bench_baseline")
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for round_no in range(args.rounds):
        names = list(trees) if round_no % 2 == 0 else list(reversed(trees))
        for name in names:
            root, database = trees[name]
            out = subprocess.run(
                [sys.executable, __file__, "--one", "--jobs", str(args.jobs), "--rate", args.rate],
                env={**os.environ, "TASKMILL_ROOT": str(root), "PYTHONPATH": str(root),
                     "BENCH_PG_NAME": database},
                capture_output=True, text=True, check=True).stdout.split()
            rate, updates = float(out[-2]), float(out[-1])
            found[name].append((rate, updates))
            print(f"round {round_no + 1} {name}: {rate:,.0f} jobs/s, {updates:.2f} row "
                  f"updates a job", flush=True)
    medians = {name: (statistics.median(r for r, _ in runs), statistics.median(u for _, u in runs))
               for name, runs in found.items()}
    for name, (rate, updates) in medians.items():
        print(f"{name}: {rate:,.0f} jobs/s, {updates:.2f} row updates a job (medians)")
    if args.baseline:
        (rate, updates), (base_rate, base_updates) = medians.values()
        print(f"ratio taskmill / baseline: jobs/s {rate / base_rate:.2f}×, "
              f"row updates a job {updates / base_updates:.2f}×")


if __name__ == "__main__":
    main()
