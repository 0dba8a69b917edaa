"""Flow control's cost on the drain: each feature on against off, in the same run.

    python bench/flow.py                       # PostgreSQL, 20,000 jobs, 3 rounds
    BENCH_DB=sqlite python bench/flow.py --jobs 5000 --rounds 3

Each round drains the same number of no-op jobs once per mode, the modes in an order
that rotates from round to round (so the machine's drift hits them alike); the medians
and each mode's ratio to ``off`` come last.

- ``off``: plain jobs, no pause, rate or fairness anywhere.
- ``paused-elsewhere``: a pause of another queue and of another task are in force (so
  every claim runs the pause probes), the drained jobs are not paused.
- ``rate-limited``: every drained job has a rate limit that never binds (10,000,000/h):
  each claim counts the key's window and adds its starts to the current slice.
- ``fair-10-keys``: the jobs are spread over 10 fairness keys (turns taken at enqueue,
  the queue's clock moved per claim).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.drain import clear, setup_database, worker_command  # noqa: E402

MODES = ["off", "paused-elsewhere", "rate-limited", "fair-10-keys"]


def reset() -> None:
    from taskmill.models import FairnessClock, Pause, RateKey, RateSlice

    clear()
    for model in (Pause, RateSlice, RateKey, FairnessClock):
        model.objects.all().delete()


def enqueue(mode: str, jobs: int) -> None:
    import taskmill
    from bench.tasks import noop

    if mode == "paused-elsewhere":
        taskmill.pause(queue="elsewhere")
        taskmill.pause(task="bench.tasks.stamp")
    if mode == "fair-10-keys":
        for key in range(10):
            taskmill.enqueue_many(noop.using(fairness_key=f"tenant-{key}"),
                                  [()] * (jobs // 10))
        return
    task = noop.using(rate_limit="10000000/h") if mode == "rate-limited" else noop
    for offset in range(0, jobs, 10_000):
        taskmill.enqueue_many(task, [()] * min(10_000, jobs - offset))


def drain(mode: str, jobs: int, processes: int) -> float:
    """Jobs per second from the first start to the last finish."""
    from django.db.models import Max, Min

    from taskmill.models import Job

    reset()
    enqueue(mode, jobs)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(worker_command(processes, "--burst", "--threads", "1"), env=env, cwd=ROOT,
                   check=True)
    done = Job.objects.filter(status="SUCCESSFUL").count()
    if done != jobs:
        raise RuntimeError(f"{mode}: only {done} of {jobs} jobs succeeded")
    span = Job.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
    return done / (span["last"] - span["first"]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    modes = args.modes.split(",")
    setup_database()
    from django.db import connection

    print(f"# flow control on the drain: {connection.vendor}, {args.jobs:,} no-op jobs, "
          f"{args.processes} processes x 1 thread, {args.rounds} rounds", flush=True)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(modes)  # Each mode takes each place in a round in turn.
        for mode in modes[shift:] + modes[:shift]:
            started = time.perf_counter()
            rate = drain(mode, args.jobs, args.processes)
            rates[mode].append(rate)
            print(f"round {round_no} {mode}: {rate:,.0f} jobs/s "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
    reset()
    base = statistics.median(rates["off"]) if "off" in rates else None
    print("\nmode: median jobs/s (ratio to off)")
    for mode in modes:
        median = statistics.median(rates[mode])
        ratio = f" ({median / base:.2f}x)" if base else ""
        print(f"{mode}: {median:,.0f} jobs/s{ratio}", flush=True)


if __name__ == "__main__":
    main()
