"""Side-by-side benchmark of taskmill and its peer pgqueuer 1.6, in one run.

From the repository root, with the taskmill virtualenv:

    .venv/bin/python bench/compare.py                    # 3 rounds, drain of 20,000 jobs
    .venv/bin/python bench/compare.py --big              # drain of 200,000 jobs
    .venv/bin/python bench/compare.py --rounds 1 --jobs 2000 --latency-samples 50   # a quick look
    .venv/bin/python bench/compare.py --only drain       # or single, bulk, latency, memory
    .venv/bin/python bench/compare.py --big --only drain --analyze   # statistics before drains

Why one run: the machine's speed drifts from run to run, so figures of two runs do not
compare. Rounds alternate (taskmill, pgqueuer, taskmill, pgqueuer, ...), each peer on a
fresh database of its own per round (``bench_taskmill``, ``bench_pgqueuer``, dropped
after), and the table at the end compares medians over the rounds, ratio
taskmill/pgqueuer last. ``--baseline REV`` adds taskmill as of an earlier commit (from a
temporary git worktree, on its own database) to the same rounds, its ratio printed too.

pgqueuer (``pgqueuer[asyncpg]==1.6.*``) lives in its own virtualenv, ``bench/.venvs/pgqueuer``,
made here on first use; its side runs as that python's subprocesses
(``bench/peers/pgqueuer/``) and its schema comes from its own CLI (``pgq install``). Its
worker is started through its API, ``pgqueuer.run``, because ``pgq run`` of 1.6.0 fails at
start with the typer pip installs beside it (see ``peers/pgqueuer/pgq_worker.py``).
taskmill's side runs with this python if it can import taskmill, else ``.venv/bin/python``
(``bench/peers/taskmill/``, ``bench/settings.py``, ``bench/tasks.py``).

The figures, measured the same way for both, as an outside harness measured them:

- single enqueue/s: 2,000 enqueues in a loop from a process of their own (taskmill: a
  Django process, CONN_MAX_AGE 0, autocommit, ``noop.enqueue()``; pgqueuer:
  ``Queries.enqueue("noop", None)``), after one untimed warm-up enqueue.
- bulk enqueue/s: one call of 50,000 (``taskmill.enqueue_many``; pgqueuer's enqueue of lists).
- drain: ``--jobs`` no-op jobs enqueued, then the worker started (taskmill: ``taskmill worker
  --processes 2 --threads 1``, no ``--burst``; pgqueuer: 2 processes of what ``pgq run``
  runs, each one event loop with pgqueuer's defaults: batches of 10, no cap; it has no
  supervisor). "Cold start": from the worker command's start until polling the table
  finds no job left to do. "Steady": jobs finished between the 10% and 90% marks over
  that time, from the finish times the database stamped (taskmill ``finished_at``,
  pgqueuer ``pgqueuer_log.created``). Nothing ANALYZEs the filled table unless
  ``--analyze`` says so: the outside harness did not, and this machine's PostgreSQL runs
  with autovacuum off.
- memory: PSS summed over each worker's whole process tree (``/proc/PID/smaps_rollup`` of
  the supervisor and every descendant), idle one second after the drain.
- pickup latency: ``--latency-samples`` jobs enqueued 20 ms apart from a process of their
  own, each recording when it started (taskmill: its return value; pgqueuer: a row in
  ``bench_stamp``). Measured from the clock read just before the enqueue call, and from
  the one read just after it returned (committed). Three workers: the drain's (2
  processes) right after the drain, and fresh idle workers of 1 and 2 processes that
  have run nothing yet (given 3 s to start).

Every process started here is in a process group of its own, stopped (SIGTERM, then
SIGKILL to the group) when done or on exit, and the databases are dropped on exit.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
PGQ_VENV = BENCH / ".venvs" / "pgqueuer"
PGQ_REQUIREMENT = "pgqueuer[asyncpg]==1.6.*"
SERVER = "host=127.0.0.1 port=5432 user=postgres"

SINGLE_JOBS = 2_000
BULK_JOBS = 50_000
BIG_JOBS = 200_000
DRAIN_PROCESSES = 2
LATENCY_GAP = 0.020  # seconds between the latency samples' enqueues
SETTLE = 3.0  # seconds a fresh worker is given to start before it is measured
IDLE_BEFORE_MEMORY = 1.0
POLL = 0.01  # seconds between looks at a draining queue


# -- processes and databases: everything started here is undone on exit -----------------

_children: list[subprocess.Popen[bytes]] = []
_databases: set[str] = set()


def spawn(command: list[str], env: dict[str, str], cwd: Path, *, log: IO[bytes] | int,
          stdout: IO[bytes] | int | None = None) -> subprocess.Popen[bytes]:
    """A child in a session (so a process group) of its own, so its descendants can be
    stopped with it whatever the child does with its signals."""
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=log if stdout is None else stdout, stderr=log,
                            start_new_session=True)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to the leader, for a clean shutdown; then SIGKILL to whatever is left of
    its process group (a supervisor's children it did not reap, or all of them)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc in _children:
        _children.remove(proc)


def admin_execute(sql: str) -> None:
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as connection:
        connection.execute(sql)


def drop_database(name: str) -> None:
    admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _databases.discard(name)


def cleanup() -> None:
    """At exit, however it comes: no process left running, no database left behind."""
    for proc in list(_children):
        stop(proc, timeout=5)
    for name in list(_databases):
        with suppress(psycopg.Error):
            drop_database(name)


def exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# -- the two peers -------------------------------------------------------------------------


class Peer(ABC):
    """What differs between the two: how to install, enqueue, run and look at jobs."""

    name: str
    database: str
    table_pattern: str  # LIKE pattern of the tables emptied between measurements
    pending_sql: str  # true while a drained job is not done
    finish_sql: str  # successful drained jobs: count, 10% / 90% / last finish (epoch s)

    def __init__(self, python: Path) -> None:
        self.python = python

    @property
    def dsn(self) -> str:
        return f"{SERVER} dbname={self.database}"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    @abstractmethod
    def env(self) -> dict[str, str]: ...

    @abstractmethod
    def install(self) -> None:
        """The schema, by the peer's own means."""

    @abstractmethod
    def driver(self) -> tuple[list[str], Path]:
        """The client-side command (as in peers/*/…_driver.py) and where to run it."""

    @abstractmethod
    def worker_commands(self, processes: int) -> tuple[list[list[str]], Path]:
        """The commands that make one worker of ``processes`` processes."""

    def create_database(self) -> None:
        drop_database(self.database)
        admin_execute(f'CREATE DATABASE "{self.database}"')
        _databases.add(self.database)
        self.install()

    def empty_tables(self, connection: psycopg.Connection[Any]) -> None:
        """A clean slate between measurements: TRUNCATE gives each table new files."""
        names = [row[0] for row in connection.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE %s", [self.table_pattern])]
        connection.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")

    def run_driver(self, *args: object, timeout: float = 600.0) -> dict[str, Any]:
        """One driver command in a process of its own (a client apart from the worker)."""
        command, cwd = self.driver()
        proc = spawn([*command, *map(str, args)], self.env(), cwd, log=subprocess.PIPE,
                     stdout=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} driver {args} failed:\n{err.decode()[-3000:]}")
        result: dict[str, Any] = json.loads(out)
        return result


class Taskmill(Peer):
    """taskmill from ``root``: this checkout, or (``--baseline``) a worktree of an earlier
    commit, which then runs the same rounds under a name and database of its own."""

    name = "taskmill"
    database = "bench_taskmill"
    table_pattern = "taskmill\\_%"
    pending_sql = ("SELECT EXISTS (SELECT FROM taskmill_job WHERE status = 'READY') "
                   "OR EXISTS (SELECT FROM taskmill_job WHERE status = 'RUNNING')")
    finish_sql = """
        SELECT count(*),
            extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY finished_at)),
            extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY finished_at)),
            extract(epoch FROM max(finished_at))
        FROM taskmill_job WHERE status = 'SUCCESSFUL'"""

    def __init__(self, python: Path, root: Path = ROOT, revision: str = "") -> None:
        super().__init__(python)
        self.root = root
        if revision:
            self.name = f"taskmill@{revision}"
            self.database = f"bench_taskmill_{re.sub(r'[^a-z0-9]', '_', revision.lower())}"

    def env(self) -> dict[str, str]:
        # PYTHONPATH first on sys.path: a baseline worktree's taskmill shadows the installed one.
        return {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": "postgresql",
                "BENCH_PG_NAME": self.database, "PYTHONPATH": str(self.root)}

    def install(self) -> None:
        subprocess.run([str(self.python), "-m", "django", "migrate", "--verbosity", "0"],
                       env=self.env(), cwd=self.root, check=True)

    def driver(self) -> tuple[list[str], Path]:
        return [str(self.python), str(self.root / "bench" / "peers" / "taskmill" / "tm_driver.py")
                ], self.root

    def worker_commands(self, processes: int) -> tuple[list[list[str]], Path]:
        # The outside harness's command: a long-running worker, not --burst.
        return [[str(self.python), "-m", "django", "taskmill", "worker",
                 "--processes", str(processes), "--threads", "1"]], self.root


class Pgqueuer(Peer):
    name = "pgqueuer"
    database = "bench_pgqueuer"
    table_pattern = "%"  # its own tables and bench_stamp: the database holds nothing else
    # Finished jobs are deleted from the queue table (and logged in the same statement).
    pending_sql = "SELECT EXISTS (SELECT FROM pgqueuer)"
    finish_sql = """
        SELECT count(*),
            extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY created)),
            extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY created)),
            extract(epoch FROM max(created))
        FROM pgqueuer_log WHERE status = 'successful' AND entrypoint = 'noop'"""

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGDSN": self.url}

    def install(self) -> None:
        subprocess.run([str(self.python), "-m", "pgqueuer", "install"], env=self.env(),
                       cwd=PEERS / "pgqueuer", check=True, stderr=subprocess.DEVNULL)
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute("CREATE TABLE bench_stamp "
                               "(job_id bigint PRIMARY KEY, started double precision NOT NULL)")

    def driver(self) -> tuple[list[str], Path]:
        return [str(self.python), "pgq_driver.py"], PEERS / "pgqueuer"

    def worker_commands(self, processes: int) -> tuple[list[list[str]], Path]:
        # pgqueuer has no multi-process supervisor: one `pgq run` equivalent per process.
        return [[str(self.python), "pgq_worker.py"]] * processes, PEERS / "pgqueuer"


def taskmill_python() -> Path:
    """This python when it is taskmill's, else the repository's .venv."""
    if importlib.util.find_spec("taskmill") and importlib.util.find_spec("django"):
        return Path(sys.executable)
    return ROOT / ".venv" / "bin" / "python"


def pgqueuer_python() -> Path:
    """pgqueuer's own virtualenv, made or brought to 1.6.x on first use."""
    python = PGQ_VENV / "bin" / "python"
    if not python.exists():
        print(f"# creating {PGQ_VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PGQ_VENV)], check=True)
    if not version_of(python, "pgqueuer").startswith("1.6."):
        print(f"# installing {PGQ_REQUIREMENT}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", PGQ_REQUIREMENT], check=True)
    return python


def baseline_worktree(revision: str) -> Path:
    """A detached worktree of ``revision``, removed at exit. Its code runs with this
    checkout's virtualenv, so a baseline whose dependencies differ needs its own run."""
    path = Path(tempfile.mkdtemp(prefix="taskmill-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(path),
                    revision], check=True)
    atexit.register(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                     str(path)], check=False)
    return path


def version_of(python: Path, distribution: str) -> str:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys; "
                          f"print(m.version({distribution!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


# -- a worker and what is measured of it ----------------------------------------------------


@dataclass(frozen=True)
class Memory:
    processes: int
    pss_mb: float
    rss_mb: float  # counts shared pages in full for every process
    private_mb: float  # pages no other process maps


@dataclass
class Worker:
    """One worker (of one or more processes) and the log its processes write."""

    procs: list[subprocess.Popen[bytes]]
    log: Path
    started: float  # time.time() just before the first process was started

    @classmethod
    def start(cls, peer: Peer, processes: int, logs: Path) -> Worker:
        commands, cwd = peer.worker_commands(processes)
        log = logs / f"{peer.name}-worker-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            started = time.time()
            procs = [spawn(command, peer.env(), cwd, log=out) for command in commands]
        return cls(procs, log, started)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"a worker process exited ({proc.returncode}):\n{tail}")

    def memory(self) -> Memory:
        """PSS, RSS and private memory of every process of the worker: each root and all
        its descendants, from ``/proc/PID/smaps_rollup``."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError, ValueError, IndexError):
                # The command name may hold spaces and parentheses: split after the last ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
        tree = {proc.pid for proc in self.procs}
        while found := {pid for pid, parent in parents.items() if parent in tree} - tree:
            tree |= found
        kb: dict[str, int] = defaultdict(int)
        for pid in tree:
            with suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    name, _, rest = line.partition(":")
                    if name in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
                        kb[name] += int(rest.split()[0])
        return Memory(processes=len(tree), pss_mb=kb["Pss"] / 1024, rss_mb=kb["Rss"] / 1024,
                      private_mb=(kb["Private_Clean"] + kb["Private_Dirty"]) / 1024)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


def commit_ceiling(peer: Taskmill, slices: int = 4, seconds: int = 2) -> dict[str, float]:
    """The server's rate for taskmill's own enqueue statement, one client, one commit per
    row (pgbench, no Python in the way): with the insert trigger's NOTIFY, and without.
    Short runs of each, alternating, medians: the machine's speed drifts in between."""
    sql = peer.run_driver("insert_sql")["sql"]
    rates: dict[str, list[float]] = defaultdict(list)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script, \
            psycopg.connect(peer.dsn, autocommit=True) as connection:
        script.write(sql + ";\n")
        script.flush()
        for _ in range(slices):
            for key, trigger in (("ceiling", "ENABLE"), ("ceiling_silent", "DISABLE")):
                connection.execute(f"ALTER TABLE taskmill_job {trigger} TRIGGER "
                                   "taskmill_job_notify_insert")
                done = subprocess.run(
                    ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", "1",
                     "-T", str(seconds), "-f", script.name, peer.database],
                    capture_output=True, text=True, check=True)
                found = re.search(r"tps = ([\d.]+)", done.stdout)
                assert found, done.stdout
                rates[key].append(float(found.group(1)))
        connection.execute("ALTER TABLE taskmill_job ENABLE TRIGGER taskmill_job_notify_insert")
        peer.empty_tables(connection)
    return {key: statistics.median(values) for key, values in rates.items()}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank, as bench/drain.py takes its p99."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- the figures ----------------------------------------------------------------------------

LATENCY_SCENARIOS = [("after drain, 2 proc", "drained"), ("idle, 1 proc", "idle1"),
                     ("idle, 2 proc", "idle2")]
LATENCY_METHODS = [("before enqueue", "before_ms"), ("after commit", "after_ms")]


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    group: str  # what --only selects


def figures(jobs: int) -> list[Figure]:
    found = [
        Figure("single", f"single enqueue ({SINGLE_JOBS:,} one by one)", "jobs/s", True, "single"),
        Figure("single_psycopg", "the same INSERT through psycopg alone", "rows/s", True,
               "single"),
        Figure("single_libpq", "the same INSERT through libpq's PQexec", "rows/s", True,
               "single"),
        Figure("ceiling", "the same INSERT by pgbench (server's commit ceiling)", "rows/s", True,
               "single"),
        Figure("ceiling_silent", "the same INSERT by pgbench, insert trigger (NOTIFY) off",
               "rows/s", True, "single"),
        Figure("bulk", f"bulk enqueue ({BULK_JOBS:,} in one call)", "jobs/s", True, "bulk"),
        Figure("cold", f"drain {jobs:,}: cold start to last done", "s", False, "drain"),
        Figure("steady", f"drain {jobs:,}: steady rate, 10% to 90%", "jobs/s", True, "drain"),
        Figure("memory", "worker PSS, idle after drain (2 proc, whole tree)", "MB", False,
               "memory"),
    ]
    for scenario, scenario_key in LATENCY_SCENARIOS:
        for method, method_key in LATENCY_METHODS:
            for name, _ in (("p50", 0.5), ("p99", 0.99)):
                found.append(Figure(f"{scenario_key}:{method_key}:{name}",
                                    f"pickup {scenario}, from {method}, {name}", "ms", False,
                                    "latency"))
    return found


class Results:
    """Values by figure and peer; each printed as it comes."""

    def __init__(self, jobs: int, only: str | None) -> None:
        self.figures = {f.key: f for f in figures(jobs) if only in (None, f.group)}
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def wants(self, group: str) -> bool:
        return any(f.group == group for f in self.figures.values())

    def add(self, round_no: int, peer: Peer, key: str, value: float, note: str = "") -> None:
        if key not in self.figures:
            return
        figure = self.figures[key]
        self.values[key][peer.name].append(value)
        print(f"round {round_no}  {peer.name:<8}  {figure.label}: {value:,.2f} {figure.unit}"
              f"{'  (' + note + ')' if note else ''}", flush=True)

    def add_latency(self, round_no: int, peer: Peer, scenario: str,
                    samples: dict[str, list[float]]) -> None:
        for _, method_key in LATENCY_METHODS:
            for name, fraction in (("p50", 0.5), ("p99", 0.99)):
                self.add(round_no, peer, f"{scenario}:{method_key}:{name}",
                         percentile(samples[method_key], fraction))

    def ceiling_note(self) -> str:
        """taskmill's single enqueue against the server's ceiling for its statement."""
        values = {key: self.values[key].get("taskmill") for key in
                  ("single", "single_psycopg", "single_libpq", "ceiling", "ceiling_silent")}
        if not all(values.values()):
            return ""
        single, alone, libpq, ceiling, silent = (statistics.median(v or [0.0])
                                                 for v in values.values())
        return (f"\ntaskmill single enqueue / pgbench ceiling of its INSERT: {single / ceiling:.2f}"
                f"\n  libpq's PQexec / pgbench: {libpq / ceiling:.2f}; psycopg alone / PQexec: "
                f"{alone / libpq:.2f}; taskmill / psycopg alone: {single / alone:.2f}"
                f"\nthat INSERT with its NOTIFY / without: {ceiling / silent:.2f}")

    def table(self, peers: list[Peer]) -> str:
        """Medians of each peer, and the first peer's ratio to each of the others."""
        names = [peer.name for peer in peers]
        first, others = names[0], names[1:]
        lines = ["| figure | " + " | ".join(f"{name} median" for name in names) + " | "
                 + " | ".join(f"ratio {first}/{other}" for other in others) + " |",
                 "|---|" + "---|" * (len(names) + len(others))]
        for key, figure in self.figures.items():
            found = [self.values[key].get(name) for name in names]
            if not all(found):
                continue
            medians = [statistics.median(values or [0.0]) for values in found]
            direction = "higher" if figure.higher_is_better else "lower"
            ratios = []
            for other, median in zip(others, medians[1:], strict=True):
                ratio = medians[0] / median if median else math.inf
                ahead = (ratio > 1) == figure.higher_is_better
                verdict = "even" if ratio == 1 else f"{first if ahead else other} ahead"
                ratios.append(f"{ratio:.2f} ({direction} is better: {verdict})")
            lines.append(f"| {figure.label} ({figure.unit}) | "
                         + " | ".join(f"{m:,.2f}" for m in medians) + " | "
                         + " | ".join(ratios) + " |")
        return "\n".join(lines)


# -- one round of one peer -------------------------------------------------------------------


def drain(peer: Peer, connection: psycopg.Connection[Any], args: argparse.Namespace,
          logs: Path, results: Results, round_no: int) -> Worker:
    """Fill, start the worker, time it to the last job done; the worker is left running."""
    jobs = args.jobs
    peer.run_driver("fill", jobs)
    if args.analyze:
        connection.execute("ANALYZE")
    time.sleep(1.0)  # the filler's exit and writes settle before the clock starts
    worker = Worker.start(peer, DRAIN_PROCESSES, logs)
    # Generous: without statistics a large backlog drains at a few hundred jobs/s (--analyze).
    deadline = time.monotonic() + 120 + jobs / 100
    try:
        while connection.execute(peer.pending_sql).fetchone() == (True,):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name}: drain of {jobs} jobs not done in time"
                                   f"{'' if args.analyze else ' (try --analyze)'}")
            time.sleep(POLL)
        done_at = time.time()
        row = connection.execute(peer.finish_sql).fetchone()
        if row is None or not row[0]:
            raise RuntimeError(f"{peer.name}: the drain ended with no successful job")
        done, p10, p90, last = int(row[0]), *(float(v) for v in row[1:])
    except BaseException:
        worker.stop()
        raise
    note = f"{done:,}/{jobs:,} successful; last finish stamped at {last - worker.started:.3f} s"
    results.add(round_no, peer, "cold", done_at - worker.started, note)
    if p90 > p10:
        results.add(round_no, peer, "steady", (math.ceil(0.9 * done) - math.ceil(0.1 * done))
                    / (p90 - p10))
    return worker


def pickup(peer: Peer, samples: int) -> dict[str, list[float]]:
    return peer.run_driver("latency", samples, LATENCY_GAP, 30)


def run_round(peer: Peer, round_no: int, args: argparse.Namespace, results: Results,
              logs: Path) -> None:
    peer.create_database()
    try:
        with psycopg.connect(peer.dsn, autocommit=True) as connection:
            if results.wants("single"):
                seconds = peer.run_driver("single", SINGLE_JOBS)["seconds"]
                results.add(round_no, peer, "single", SINGLE_JOBS / seconds)
                peer.empty_tables(connection)
                if isinstance(peer, Taskmill):
                    for floor in ("single_psycopg", "single_libpq"):
                        seconds = peer.run_driver(floor, SINGLE_JOBS)["seconds"]
                        results.add(round_no, peer, floor, SINGLE_JOBS / seconds)
                        peer.empty_tables(connection)
                    for key, rate in commit_ceiling(peer).items():
                        results.add(round_no, peer, key, rate)
            if results.wants("bulk"):
                seconds = peer.run_driver("bulk", BULK_JOBS)["seconds"]
                results.add(round_no, peer, "bulk", BULK_JOBS / seconds)
                peer.empty_tables(connection)
            if results.wants("drain") or results.wants("memory") or results.wants("latency"):
                worker = drain(peer, connection, args, logs, results, round_no)
                try:
                    time.sleep(IDLE_BEFORE_MEMORY)
                    worker.check_alive()
                    memory = worker.memory()
                    results.add(round_no, peer, "memory", memory.pss_mb,
                                f"{memory.processes} processes; RSS {memory.rss_mb:.1f} MB, "
                                f"private {memory.private_mb:.1f} MB")
                    if results.wants("latency"):
                        results.add_latency(round_no, peer, "drained",
                                            pickup(peer, args.latency_samples))
                finally:
                    worker.stop()
                peer.empty_tables(connection)
            if results.wants("latency"):
                for processes in (1, 2):
                    worker = Worker.start(peer, processes, logs)
                    try:
                        time.sleep(SETTLE)
                        worker.check_alive()
                        samples = pickup(peer, args.latency_samples)
                    finally:
                        worker.stop()
                    results.add_latency(round_no, peer, f"idle{processes}", samples)
                    peer.empty_tables(connection)
    finally:
        drop_database(peer.database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the drain")
    parser.add_argument("--big", action="store_true", help=f"drain {BIG_JOBS:,} jobs")
    parser.add_argument("--only", choices=["single", "bulk", "drain", "latency", "memory"],
                        help="one figure (latency and memory still run the drain they need)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--baseline", metavar="REV",
                        help="also run taskmill as of this git revision (a temporary worktree), "
                             "in the same interleaved rounds: is a change a regression?")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE the filled tables before a drain (not what the outside "
                             "harness did; with autovacuum off, nothing else does)")
    args = parser.parse_args()
    if args.big:
        args.jobs = BIG_JOBS

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)

    tm_python, pgq_python = taskmill_python(), pgqueuer_python()
    peers: list[Peer] = [Taskmill(tm_python), Pgqueuer(pgq_python)]
    if args.baseline:
        peers.append(Taskmill(tm_python, baseline_worktree(args.baseline), args.baseline))
    atexit.register(cleanup)  # after the worktree's removal was registered: runs before it
    with psycopg.connect(f"{SERVER} dbname=postgres") as connection:
        server = connection.execute(
            "SELECT current_setting('server_version'), current_setting('autovacuum')").fetchone()
    version, autovacuum = server or ("?", "?")
    print(f"# taskmill {version_of(tm_python, 'django-taskmill')} ({tm_python}) vs "
          f"pgqueuer {version_of(pgq_python, 'pgqueuer')} ({pgq_python}); "
          f"PostgreSQL {version}, autovacuum {autovacuum}"
          f"{', ANALYZE before drains' if args.analyze else ''}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if autovacuum == "off" and args.jobs > 50_000 and not args.analyze:
        print("# warning: with autovacuum off nothing ANALYZEs the filled tables; with no "
              "statistics both peers' claim queries sort the whole backlog on each claim, so "
              "a large drain takes many minutes. --analyze avoids it.", flush=True)
    results = Results(args.jobs, args.only)
    with tempfile.TemporaryDirectory(prefix="taskmill-compare-") as logs:
        for round_no in range(1, args.rounds + 1):
            for peer in peers:
                run_round(peer, round_no, args, results, Path(logs))
    print(f"\n# medians of {args.rounds} round(s); load average now {os.getloadavg()[0]:.2f}")
    print(results.table(peers))
    print(results.ceiling_note())


if __name__ == "__main__":
    main()
