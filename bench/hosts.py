"""Throughput of 1, 2 and 3 worker hosts on one PostgreSQL, and who uses the CPU.

    .venv/bin/python bench/hosts.py                      # 1-3 hosts, no-op and 5 ms jobs (~2 min)
    .venv/bin/python bench/hosts.py --repeat 1           # one drain per figure (~35 s)
    .venv/bin/python bench/hosts.py --hosts 2 --jobs 10000 --sleep-jobs 2000
    .venv/bin/python bench/hosts.py --bouncer            # through PgBouncer (transaction mode)

As root (network namespaces), from the repository root, with PostgreSQL 15's binaries
installed (/usr/lib/postgresql/15/bin) and PgBouncer for ``--bouncer``.

Each host is a network namespace with its own address and host name (tests/hosts.py);
all of them reach a private PostgreSQL 15 (never the shared server) over a bridge. Each
host runs ``taskmill worker --processes 2`` (one thread each). For each job kind and
host count: the workers start and register first, then every job is enqueued in one
``enqueue_many`` (COPY), and the drain is timed from the first job's start to the last
one's finish (the database's timestamps). Jobs: ``tests.project.tasks.noop`` (taskmill's
own cost per job) and ``tests.parallel_helpers.batch_child_slow(0.005)`` (5 ms of
sleep: waiting work, where more hosts should help).

CPU is sampled from /proc every 50 ms and read over the same interval: PostgreSQL (its
postmaster, the backends it forked and reaped), the workers (supervisors and their
processes), PgBouncer, and the whole machine (/proc/stat, which counts anything else
running on it too). When the machine's cores are all busy, the CPU is the limit, and
the split says whose. Each drain runs ``--repeat`` times (3) and the fastest is
reported: other processes on a shared machine only ever slow a drain down, and the
"other processes" line says how much of the machine they still took in that run.

Hazards of the figures: everything shares the same 2 cores, so more hosts mean more
processes competing for them, not more hardware; the private server runs with
``fsync=off`` and ``synchronous_commit=off`` (see tests/servers.py), which spares the
drain nothing (claims and completions commit asynchronously anyway) but is not the
shared server bench/drain.py measures. One line per figure: ``name: value unit``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import hosts  # noqa: E402  (after the path: run as a script from anywhere)
from tests.hosts import HostNetwork, HostWorker  # noqa: E402

DB = "taskmill_hosts_bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = {"noop": ("tests.project.tasks", "noop", ()),
         "5ms": ("tests.parallel_helpers", "batch_child_slow", (0.005,))}


def report(name: str, value: float, unit: str, digits: int = 1) -> None:
    print(f"{name}: {value:,.{digits}f} {unit}", flush=True)


# -- CPU from /proc -------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, of its live children, and of the children it reaped: a
    sum that does not drop when a backend or a worker process exits."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat (11-14 after the name).
    ticks = sum(int(f) for f in fields[11:15])
    for child in _children(pid):
        child_fields = _stat(child)
        if child_fields is not None:
            ticks += sum(int(f) for f in child_fields[11:13])
    return ticks / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSampler:
    """Cumulative CPU seconds of each group every ``every`` seconds, on a thread."""

    groups: dict[str, Callable[[], float]]
    every: float = 0.05
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        busy, total = machine_cpu()
        values = {name: read() for name, read in self.groups.items()}
        values.update(machine_busy=busy, machine_total=total)
        self.samples.append((time.time(), values))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._take()

    def start(self) -> None:
        self._take()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def at(self, when: float, name: str) -> float:
        """The cumulative value of ``name`` at ``when``, interpolated between samples."""
        before = [s for s in self.samples if s[0] <= when] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= when] or self.samples[-1:]
        (t0, v0), (t1, v1) = before[-1], after[0]
        if t1 == t0:
            return v0[name]
        return v0[name] + (v1[name] - v0[name]) * (when - t0) / (t1 - t0)

    def cores(self, start: float, end: float, name: str) -> float:
        return (self.at(end, name) - self.at(start, name)) / (end - start)


# -- one drain ------------------------------------------------------------------------


@dataclass
class Drain:
    kind: str
    hosts: int
    jobs: int
    rate: float
    cores: dict[str, float]


def postmaster_pid(server: Any) -> int:
    return int((server.data / "postmaster.pid").read_text().split("\n", 1)[0])


def drain(net: HostNetwork, server: Any, bouncer: Any, port: int, kind: str, count: int,
          n_hosts: int, log_dir: Path) -> Drain:
    import importlib

    from django.db import connection
    from django.db.models import Max, Min

    import taskmill
    from taskmill.models import Job, Worker

    module, name, args = KINDS[kind]
    task = getattr(importlib.import_module(module), name)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE taskmill_job, taskmill_joberror, taskmill_worker, "
                       "taskmill_service")
    env = hosts.worker_env(net.gateway, port, DB)
    worker_args = ["--processes", "2", "--threads", "1", "--queues", "default"]
    if bouncer is not None:
        worker_args += ["--poll-interval", "0.1"]  # No LISTEN through PgBouncer.
    workers = [HostWorker(net, host, worker_args, env, log_dir) for host in net.hosts[:n_hosts]]
    try:
        deadline = time.monotonic() + 120
        while Worker.objects.count() < 2 * n_hosts:
            if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
                raise RuntimeError("workers did not start:\n" +
                                   "\n".join(w.output() for w in workers))
            time.sleep(0.1)
        groups: dict[str, Callable[[], float]] = {
            "postgresql": lambda: tree_cpu(postmaster_pid(server)),
            "workers": lambda: sum(tree_cpu(w.pid) for w in workers),
            "bench": lambda: sum(os.times()[:2]),
        }
        if bouncer is not None:
            groups["pgbouncer"] = lambda: tree_cpu(bouncer.process.pid)
        sampler = CpuSampler(groups)
        sampler.start()
        for offset in range(0, count, 10_000):
            taskmill.enqueue_many(task, [args] * min(10_000, count - offset))
        deadline = time.monotonic() + 600
        waiting = Job.objects.filter(status__in=["READY", "RUNNING"])  # cheap: the claim index
        while waiting.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the drain did not finish: {waiting.count()} jobs left")
            time.sleep(0.1)
        sampler.stop()
        done = Job.objects.filter(status="SUCCESSFUL").count()
        if done != count:
            print(f"WARNING: only {done} of {count} jobs succeeded", flush=True)
        span = Job.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
        start, end = span["first"].timestamp(), span["last"].timestamp()
        cores = {group: sampler.cores(start, end, group)
                 for group in [*groups, "machine_busy", "machine_total"]}
        return Drain(kind, n_hosts, count, count / (end - start), cores)
    finally:
        hosts.stop_all(workers)


def describe(result: Drain, base: Drain | None, runs: list[Drain]) -> None:
    label = (f"drain {result.jobs} {result.kind} jobs, {result.hosts} host(s) x 2 processes")
    if len(runs) > 1:
        print(f"{label}, each run: {', '.join(f'{r.rate:,.0f}' for r in runs)} jobs/s",
              flush=True)
    report(f"{label}, first start to last finish{', best run' if len(runs) > 1 else ''}",
           result.rate, "jobs/s")
    if base is not None:
        report(f"{label}, ratio to 1 host", result.rate / base.rate, "x", 2)
    cores = result.cores
    for group in ("postgresql", "workers", "pgbouncer", "bench"):
        if group in cores:
            report(f"{label}, CPU {group}", cores[group], "cores", 2)
            report(f"{label}, CPU {group} per job", cores[group] / result.rate * 1e6, "us")
    report(f"{label}, CPU other processes on the machine", others(result), "cores", 2)
    report(f"{label}, CPU whole machine busy", cores["machine_busy"], "of "
           f"{cores['machine_total']:.0f} cores", 2)


def ours(result: Drain) -> float:
    """Cores the drain used: PostgreSQL, PgBouncer, the workers and this process."""
    return sum(result.cores.get(g, 0.0) for g in ("postgresql", "pgbouncer", "workers", "bench"))


def others(result: Drain) -> float:
    """Cores the rest of the machine used meanwhile (other test runs, say)."""
    return max(0.0, result.cores["machine_busy"] - ours(result))


def verdict(result: Drain) -> str:
    cores = result.cores
    total, busy = cores["machine_total"], cores["machine_busy"]
    split = (f"PostgreSQL {cores['postgresql']:.2f}, workers {cores['workers']:.2f}, "
             f"other processes {others(result):.2f} cores")
    if busy < 0.9 * total:
        return (f"not CPU-bound ({busy:.2f} of {total:.0f} cores busy: {split}): the jobs' "
                "own waiting and the round trips set the pace")
    if others(result) > ours(result):
        return (f"CPU-bound, mostly by other processes on this machine ({split}): "
                "taskmill got what was left; measure on a quiet machine")
    who = "PostgreSQL" if cores["postgresql"] > cores["workers"] else "the workers"
    return f"CPU-bound: {busy:.2f} of {total:.0f} cores busy ({split}); {who} use most"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3, help="largest host count (from 1)")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per drain")
    parser.add_argument("--sleep-jobs", type=int, default=3_000, help="5 ms jobs per drain")
    parser.add_argument("--bouncer", action="store_true", help="through PgBouncer")
    parser.add_argument("--repeat", type=int, default=3, help="drains per figure; the best "
                        "is reported")
    options = parser.parse_args()
    reason = hosts.can_run()
    if reason:
        sys.exit(f"bench/hosts.py cannot run here: {reason}")
    import tempfile

    log_dir = Path(tempfile.mkdtemp(prefix="taskmill-bench-hosts-"))
    with HostNetwork(options.hosts) as net:
        server = net.start_postgres(DB)
        bouncer = net.start_pgbouncer(server) if options.bouncer else None
        port = bouncer.port if bouncer is not None else server.port
        # This process is the application: it enqueues from the root namespace.
        os.environ.update(hosts.worker_env("127.0.0.1", port, DB))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        load = os.getloadavg()[0]
        print(f"# taskmill across hosts: {options.hosts} network namespaces on a bridge, "
              f"PostgreSQL 15 (private){' behind PgBouncer' if bouncer else ''}, "
              f"{os.cpu_count()} CPUs, load average {load:.2f} at start; logs in {log_dir}",
              flush=True)
        for kind, count in (("noop", options.jobs), ("5ms", options.sleep_jobs)):
            base = None
            last = None
            for n in range(1, options.hosts + 1):
                runs = [drain(net, server, bouncer, port, kind, count, n, log_dir)
                        for _ in range(options.repeat)]
                last = max(runs, key=lambda r: r.rate)
                describe(last, base, runs)
                base = base or last
            assert last is not None
            print(f"limit, {kind} drain at {last.hosts} host(s): {verdict(last)}", flush=True)
        from django.db import connections

        connections.close_all()


if __name__ == "__main__":
    main()
