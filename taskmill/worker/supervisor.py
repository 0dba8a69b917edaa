"""The supervisor: starts worker processes, replaces the ones that die, stops them cleanly.

The supervisor forks its children with no database connection open, so no child ever
inherits a socket of its parent's. A child that dies — killed, out of memory, segfault —
is replaced at once and the jobs it held are recovered right away, without waiting for
its lease to run out. SIGTERM or SIGINT is passed on to the children, which stop
claiming, let running jobs finish within ``--shutdown-timeout`` and hand back the rest;
a child still alive after that is killed and its jobs recovered.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from django.db import connections

from ..ids import new_worker_id
from ..store import get_store
from .banner import banner
from .config import WorkerConfig
from .process import EXIT_RECYCLE, WorkerProcess

logger = logging.getLogger("taskmill.worker")

#: A child that dies this soon after starting counts as crashing; restarts back off.
CRASH_WINDOW = 10.0


@dataclass
class Child:
    process: multiprocessing.process.BaseProcess
    worker_id: str
    started: float
    #: Monotonic time the child last showed it works (shared memory it writes to).
    alive_at: ctypes.c_double


#: Signals held back while a child is forked and registered (see Supervisor._start_child).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _child_main(config: WorkerConfig, worker_id: str, alive_at: ctypes.c_double) -> None:
    """Entry point of a forked worker process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    worker = WorkerProcess(config, worker_id, alive_at)
    worker.install_signal_handlers()
    # Forked with the stop signals held back: one sent meanwhile arrives now, handled.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    code = worker.run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: executor threads stuck in a job must not hold up the exit.
    os._exit(code)


class Supervisor:
    def __init__(self, config: WorkerConfig, processes: int) -> None:
        self.config = config
        self.processes = max(1, processes)
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.context = multiprocessing.get_context("fork")
        self.hostname = socket.gethostname()
        self.crashes: list[float] = []

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for line in banner(self.config, self.processes):
            logger.info("%s", line)
        for _ in range(self.processes):
            self._start_child()
        stop_deadline: float | None = None
        while self.children:
            self._report_health()
            sentinels = {child.process.sentinel: pid for pid, child in self.children.items()}
            ready = wait(list(sentinels), timeout=1.0)
            for sentinel in ready:
                assert isinstance(sentinel, int)  # process sentinels are file descriptors
                pid = sentinels[sentinel]
                self._on_child_exit(self.children.pop(pid))
            if self.stopping:
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.config.shutdown_timeout + 5
                elif time.monotonic() > stop_deadline:
                    self._kill_stragglers()
        logger.info("taskmill supervisor %d stopped.", os.getpid())
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            logger.info("Supervisor: %s received; stopping workers (they finish running jobs "
                        "within %.0fs).", signal.Signals(signum).name,
                        self.config.shutdown_timeout)
        self.stopping = True
        for child in self.children.values():
            if child.process.is_alive() and child.process.pid is not None:
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _start_child(self) -> None:
        close_everything()  # Never fork with a connection open.
        worker_id = new_worker_id(self.hostname, os.getpid())
        # A stop signal that came between the fork and the registration would be passed
        # on to every child but this one, which would run on until killed at the deadline
        # (its job charged an attempt): hold the signals back until it is registered.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            alive_at = self.context.RawValue(ctypes.c_double, 0.0)
            process = self._spawn(worker_id, alive_at)
            assert process.pid is not None  # started
            self.children[process.pid] = Child(process, worker_id, time.monotonic(), alive_at)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _spawn(self, worker_id: str,
               alive_at: ctypes.c_double) -> multiprocessing.process.BaseProcess:
        # What the supervisor loaded (Django, the project) is shared with the child until
        # either writes to it. The garbage collector would: a child's collections walk
        # every object and write to each, copying nearly all the shared pages. Frozen,
        # these objects are never walked again, in the supervisor or in its children.
        gc.freeze()
        process = self.context.Process(target=_child_main,
                                       args=(self.config, worker_id, alive_at),
                                       name=f"taskmill-worker-{len(self.children) + 1}",
                                       daemon=False)
        process.start()
        return process

    def _report_health(self) -> None:
        """Touch the health file while every child renews its lease and claims (each
        reports after a renewal, see WorkerProcess.report_alive)."""
        path = self.config.health_file
        if path is None or self.stopping or not self.children:
            return
        stale_after = self.config.lease_seconds * 0.75
        now = time.monotonic()
        if all(now - child.alive_at.value < stale_after for child in self.children.values()):
            Path(path).write_text(json.dumps({
                "supervisor": os.getpid(), "processes": len(self.children),
                "workers": [child.worker_id for child in self.children.values()]}))

    def _on_child_exit(self, child: Child) -> None:
        process = child.process
        process.join()
        code = process.exitcode
        if code == EXIT_RECYCLE:
            logger.info("Worker %s recycled; starting a fresh one.", child.worker_id)
        elif code == 0:
            logger.debug("Worker %s exited.", child.worker_id)
        else:
            how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exited with status {code}")
            logger.error("Worker %s %s; recovering its jobs and starting a new one.",
                         child.worker_id, how)
            self._recover(child.worker_id)
            now = time.monotonic()
            if now - child.started < CRASH_WINDOW:
                self.crashes = [t for t in self.crashes if now - t < 60] + [now]
        if self.stopping or (self.config.burst and code == 0):
            return
        if len(self.crashes) >= 3:
            delay = min(30.0, 2.0 ** (len(self.crashes) - 2))
            logger.error("Workers keep crashing; waiting %.0fs before the next start.", delay)
            time.sleep(delay)
        self._start_child()

    def _recover(self, worker_id: str) -> None:
        """Give back a dead child's jobs now rather than after its lease runs out."""
        try:
            store = get_store(self.config.database)
            store.unregister_worker(worker_id)
            count = store.recover_orphans(worker_id=worker_id)
            if count:
                logger.warning("Recovered %d job(s) of worker %s.", count, worker_id)
        except Exception as exc:  # The heartbeat-based recovery will get them later.
            logger.error("Could not recover jobs of %s now (%s); they are recovered once its "
                         "lease expires.", worker_id, exc)
        finally:
            close_everything()

    def _kill_stragglers(self) -> None:
        for child in self.children.values():
            if child.process.is_alive():
                logger.error("Worker %s did not stop in time; killing it.", child.worker_id)
                child.process.kill()


def close_everything() -> None:
    """Close this process's connections, and connection pools (Django 5.1+ psycopg pool)."""
    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


def run_worker(config: WorkerConfig, processes: int) -> int:
    """Run a supervisor with ``processes`` children (the ``taskmill worker`` command)."""
    return Supervisor(config, processes).run()
